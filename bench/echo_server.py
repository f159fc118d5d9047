"""A bare echo gRPC service with the server settings of every Switchboard service.

Run: ``python bench/echo_server.py --address 127.0.0.1:0``. The bound port is printed on
stdout as one line; the server runs until SIGTERM or Ctrl-C.

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

import grpc

# Run as a script from a checkout, where the project is not necessarily installed.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from services.core.logs import configure_logging  # noqa: E402
from services.core.server import ServiceSpec, create_server, serve_until_stopped  # noqa: E402
from services.core.settings import Settings  # noqa: E402

ECHO_SERVICE = "bench.v1.EchoService"


def _echo(request: bytes, _context: grpc.ServicerContext) -> bytes:
    return request


def _register(server: grpc.Server) -> None:
    # No (de)serializers: grpc hands the handler the raw request bytes and sends its bytes back.
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo)
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ECHO_SERVICE, handlers),))


def echo_spec() -> ServiceSpec:
    """The echo service as a ``ServiceSpec``, so it is served exactly like a real service."""
    return ServiceSpec(full_name=ECHO_SERVICE, register=_register)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--address", default="127.0.0.1:0", help="host:port to bind (port 0 picks a free one)"
    )
    arguments = parser.parse_args()
    settings = Settings()
    configure_logging("echo", settings.log_level)
    running = create_server(
        [echo_spec()], address=arguments.address, gate=None, max_workers=settings.grpc_max_workers
    )
    sys.stdout.write(f"{running.port}\n")
    sys.stdout.flush()
    serve_until_stopped(running, grace=settings.grpc_shutdown_grace_seconds)


if __name__ == "__main__":
    main()
