"""Server bootstrap shared by every service: health, reflection, interceptors, shutdown.

``create_server`` only builds and binds (tests call it with port 0); ``serve`` runs a
server until SIGTERM or Ctrl-C, turning health to NOT_SERVING before draining calls.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client.registry import Collector

from services.core.interceptors import ServerInterceptor
from services.core.metrics import RpcMetrics

log = logging.getLogger("switchboard.server")

# Requests above this size are refused by grpc itself with RESOURCE_EXHAUSTED.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ServiceSpec:
    """What a service contributes to a server: its full gRPC name and how to register it."""

    full_name: str
    register: Callable[[grpc.Server], None]
    # Metrics of its own, served beside the RPC metrics on the server's metrics port.
    collectors: tuple[Collector, ...] = ()


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    metrics: RpcMetrics
    service_names: tuple[str, ...]

    def stop(self, grace: float | None = None) -> None:
        """Say NOT_SERVING first so balancers move away, then let in-flight calls finish."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def create_server(
    specs: list[ServiceSpec], *, address: str, max_workers: int = 32
) -> RunningServer:
    """Build and start a server for ``specs`` on ``address`` (port 0 picks a free port)."""
    metrics = RpcMetrics()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[ServerInterceptor(metrics)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=max_workers * 8,
    )
    health_servicer = health.HealthServicer(
        experimental_non_blocking=True,
        experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=1),
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for spec in specs:
        spec.register(server)
        for collector in spec.collectors:
            metrics.registry.register(collector)
    names = tuple(spec.full_name for spec in specs)
    reflection.enable_server_reflection(
        (
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    server.start()
    for name in ("", *names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health_servicer, metrics, names)


def serve_until_stopped(running: RunningServer, *, grace: float) -> None:
    """Block until SIGTERM/SIGINT, then shut down gracefully."""
    stopping = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping on signal %s", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stopping.wait()
    running.stop(grace)
    log.info("stopped")
