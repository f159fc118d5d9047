"""A bare echo gRPC service with the server settings of every Switchboard service.

Run: ``python bench/echo_server.py --address 127.0.0.1:0``. The bound port is printed on
stdout as one line; the server runs until SIGTERM or Ctrl-C. With ``--edge 127.0.0.1:0`` the
echo is served on an asyncio edge too (``services/core/edge.py``, as routing serves the
widget port), answered by a fast path on its event loop, and the line holds both ports.

``bench.v1.EchoService/Echo`` returns the request bytes unchanged. It is the ceiling a
Switchboard RPC is measured against: the same ``create_server`` (interceptor with metrics and
request ids, health, reflection, thread pool of ``SWITCHBOARD_GRPC_MAX_WORKERS``), but no
protobuf parsing and no work, so whatever a real RPC costs beyond it is the service's own.
It checks no API key (a service's check is a SHA-256 and a lookup in keys it holds), so
that check counts as the service's own cost too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import grpc

# Run as a script from a checkout, where the project is not necessarily installed.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from services.core.edge import EdgeMethods  # noqa: E402
from services.core.logs import configure_logging  # noqa: E402
from services.core.server import ServiceSpec, create_server, serve_until_stopped  # noqa: E402
from services.core.settings import Settings  # noqa: E402

ECHO_SERVICE = "bench.v1.EchoService"


def _echo(request: bytes, _context: grpc.ServicerContext) -> bytes:
    return request


async def _echo_on_loop(request: bytes, _context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


def _register(server: grpc.Server) -> None:
    # No (de)serializers: grpc hands the handler the raw request bytes and sends its bytes back.
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo)
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ECHO_SERVICE, handlers),))
    server.add_registered_method_handlers(ECHO_SERVICE, handlers)


def echo_spec() -> ServiceSpec:
    """The echo service as a ``ServiceSpec``, so it is served exactly like a real service."""
    return ServiceSpec(
        full_name=ECHO_SERVICE, register=_register, edge=EdgeMethods(fast={"Echo": _echo_on_loop})
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--address", default="127.0.0.1:0", help="host:port to bind (port 0 picks a free one)"
    )
    parser.add_argument("--edge", help="host:port of an asyncio edge serving the echo too")
    arguments = parser.parse_args()
    settings = Settings()
    configure_logging("echo", settings.log_level)
    running = create_server(
        [echo_spec()],
        address=arguments.address,
        gate=None,
        max_workers=settings.grpc_max_workers,
        edge_address=arguments.edge,
    )
    edge_port = f" {running.edge.port}" if running.edge is not None else ""
    sys.stdout.write(f"{running.port}{edge_port}\n")
    sys.stdout.flush()
    serve_until_stopped(running, grace=settings.grpc_shutdown_grace_seconds)


if __name__ == "__main__":
    main()
