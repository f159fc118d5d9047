"""Would gRPC's asyncio server meet the widget targets? A probe, not Switchboard code.

Run from a checkout with the virtualenv active (h2load and redis-server on PATH)::

    python bench/aio_probe.py [--duration 5] [--rounds 3]

The widget targets are relative to an echo service with the same server settings, so a
faster server model helps only if a widget call's own work stays small beside it. This
starts, in one process of its own, a ``grpc.aio`` server with two raw-bytes methods:

- ``Echo``: answers the request bytes;
- ``Widget``: the least a warm GetWidgetConfig could do on that server: parse the request,
  hash a token as the key check does, read a cached answer and the version in force from
  a throwaway redis-server in one MGET over an asyncio connection parsed by hiredis, and
  serialize the response. No interceptor, no metrics, no gate lookup: a lower bound on the
  real call's cost.

Then it loads both with h2load at 16 concurrent, alternating, beside the project's own
sync echo server (``bench/echo_server.py``) in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path

import grpc
import hiredis

# Run as a script from a checkout, where the project is not necessarily installed.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from switchboard.routing.v1 import widgets_pb2 as wpb  # noqa: E402

from bench.grpc_load import (  # noqa: E402
    ECHO_METHOD,
    echo_server_process,
    format_table,
    grpc_frame,
    run_h2load,
)
from services.widgets.cache import encode_command  # noqa: E402
from tests.support.stores import redis_server  # noqa: E402

ECHO_SERVICE = ECHO_METHOD.split("/")[1]
WIDGET_METHOD = f"/{ECHO_SERVICE}/Widget"
CACHED = wpb.WidgetConfig(expectation="a specialist usually replies within 5 minutes")
REQUEST = wpb.GetWidgetConfigRequest(visitor=wpb.Visitor(customer_id="c-000123"))


class _Redis:
    """One asyncio connection, one command at a time, replies parsed by hiredis."""

    async def open(self, host: str, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        self.replies = hiredis.Reader()
        self.turn = asyncio.Lock()

    async def call(self, *command: bytes) -> object:
        async with self.turn:
            self.writer.write(encode_command(command))
            reply = self.replies.gets()
            while reply is False:
                self.replies.feed(await self.reader.read(65536))
                reply = self.replies.gets()
        return reply


async def _serve(redis_port: int) -> None:
    redis = _Redis()
    await redis.open("127.0.0.1", redis_port)
    await redis.call(b"SET", b"sb:widget:version", b"1")
    await redis.call(b"SET", b"sb:widget:c:c-000123", b"1:" + CACHED.SerializeToString())

    async def echo(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def widget(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        context.invocation_metadata()
        hashlib.sha256(b"the caller's key").hexdigest()
        visitor = wpb.GetWidgetConfigRequest.FromString(request).visitor
        key = b"sb:widget:c:" + visitor.customer_id.encode()
        _version, value = await redis.call(b"MGET", b"sb:widget:version", key)  # type: ignore[misc]
        config = wpb.WidgetConfig.FromString(value.partition(b":")[2])
        return wpb.GetWidgetConfigResponse(config=config, cached=True).SerializeToString()

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Widget": grpc.unary_unary_rpc_method_handler(widget),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ECHO_SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return
    body = grpc_frame(REQUEST.SerializeToString())
    rows = []
    with redis_server() as redis_url, echo_server_process() as sync_echo:
        redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        probe = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(redis_port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert probe.stdout is not None
            aio = f"127.0.0.1:{int(probe.stdout.readline())}"
            for _ in range(args.rounds):
                for name, address, method in (
                    ("sync echo (bench/echo_server.py)", sync_echo, ECHO_METHOD),
                    ("aio echo", aio, ECHO_METHOD),
                    ("aio widget, lower bound", aio, WIDGET_METHOD),
                ):
                    result = run_h2load(
                        address=address,
                        method=method,
                        body=body,
                        concurrency=16,
                        duration_seconds=args.duration,
                    )
                    rows.append((name, result))
        finally:
            probe.terminate()
            probe.wait(timeout=10)
    print(format_table(rows))


if __name__ == "__main__":
    main()
