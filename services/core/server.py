"""Server bootstrap shared by every service: health, reflection, interceptors, shutdown.

``create_server`` only builds and binds (tests call it with port 0); ``serve`` runs a
server until SIGTERM or Ctrl-C, turning health to NOT_SERVING before draining calls.
"""

from __future__ import annotations

import gc
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client.registry import Collector

from services.core.edge import EdgeMethods, EdgeServer
from services.core.interceptors import Gatekeeper, ServerInterceptor
from services.core.metrics import RpcMetrics

log = logging.getLogger("switchboard.server")

# Requests above this size are refused by grpc itself with RESOURCE_EXHAUSTED.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# How long a server stopped by a signal keeps answering after turning NOT_SERVING (at most
# half the grace): long enough for clients watching health to move to another instance.
DRAIN_SECONDS = 1.0
SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
)


@dataclass(frozen=True)
class ServiceSpec:
    """What a service contributes to a server: its full gRPC name and how to register it."""

    full_name: str
    register: Callable[[grpc.Server], None]
    # Metrics of its own, served beside the RPC metrics on the server's metrics port.
    collectors: tuple[Collector, ...] = ()
    # Served on the asyncio edge too (see services.core.edge), when the server has one.
    edge: EdgeMethods | None = None


class DrainingHealth(health.HealthServicer):  # type: ignore[misc]
    """gRPC's reference health service, whose Watch streams can be ended when the server
    stops (the reference one keeps them open until the client leaves)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._watches: set[_Watch] = set()
        self._watches_lock = threading.Lock()

    def Watch(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.ServicerContext,
        send_response_callback: Callable[[Any], None] | None = None,
    ) -> Any:
        # Behind the interceptor the call is a plain generator: it gets no callback, and
        # returns the stream of statuses instead.
        stream = None
        if send_response_callback is None:
            stream = _WatchStream()
            send_response_callback = stream.put
        watch = _Watch(send_response_callback)
        with self._watches_lock:
            self._watches.add(watch)
        context.add_callback(lambda: self._forget(watch))
        super().Watch(request, context, watch.send)
        return stream

    def end_watches(self) -> None:
        """End every open Watch stream with OK, after the last status it was sent."""
        with self._watches_lock:
            watches = list(self._watches)
        for watch in watches:
            watch.send(None)

    def _forget(self, watch: _Watch) -> None:
        with self._watches_lock:
            self._watches.discard(watch)


class _WatchStream:
    """The statuses of one Watch call, as the generator grpc streams; ``None`` ends it."""

    def __init__(self) -> None:
        self._statuses: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def put(self, status: Any) -> None:
        self._statuses.put(status)

    def __iter__(self) -> Iterator[Any]:
        while (status := self._statuses.get()) is not None:
            yield status


class _Watch:
    """One Watch stream's sender; ``send(None)`` ends the stream, once."""

    def __init__(self, send: Callable[[Any], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._ended = False

    def send(self, response: Any) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = response is None
            self._send(response)


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: DrainingHealth
    metrics: RpcMetrics
    service_names: tuple[str, ...]
    # The asyncio edge beside this server, if it serves one.
    edge: EdgeServer | None = None

    def stop(self, grace: float | None = None, *, drain: float = 0.0) -> None:
        """Say NOT_SERVING first and keep answering for ``drain`` seconds, so balancers and
        clients watching health move away; then refuse new calls and let in-flight calls
        finish within ``grace``."""
        self.health.enter_graceful_shutdown()
        if self.edge is not None:
            self.edge.enter_graceful_shutdown()
        if drain > 0:
            time.sleep(drain)
        # An open health watch is a call in flight too: it would hold the stop for the whole
        # grace, then be cut. It has said NOT_SERVING; end it now.
        self.health.end_watches()
        stopped = self.server.stop(grace)
        if self.edge is not None:
            self.edge.stop(grace)
        stopped.wait()


def create_server(
    specs: list[ServiceSpec],
    *,
    address: str,
    gate: Gatekeeper | None,
    max_workers: int = 32,
    tls: grpc.ServerCredentials | None = None,
    edge_address: str | None = None,
) -> RunningServer:
    """Build and start a server for ``specs`` on ``address`` (port 0 picks a free port).

    ``gate`` admits every call; None serves without credentials, which only tests of other
    concerns and the echo benchmark do: ``switchboard serve`` always passes one.
    ``edge_address`` also serves the specs that have ``edge`` on an asyncio server there.
    """
    metrics = RpcMetrics()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[ServerInterceptor(metrics, gate)],
        options=SERVER_OPTIONS,
        maximum_concurrent_rpcs=max_workers * 8,
    )
    health_servicer = DrainingHealth(
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
    port = server.add_secure_port(address, tls) if tls else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    edged = [(spec.register, spec.edge) for spec in specs if spec.edge is not None]
    edge = None
    if edge_address is not None and edged:
        edge = EdgeServer(
            edged,
            address=edge_address,
            metrics=metrics,
            gate=gate,
            options=SERVER_OPTIONS,
            max_workers=max_workers,
            tls=tls,
        ).start()
    server.start()
    for name in ("", *names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health_servicer, metrics, names, edge)


# CPython collects its youngest generation after every 700 new container objects, and a
# call makes hundreds (rows, messages, dicts), so a busy server collected every few calls.
# Almost all of them are freed by reference counting anyway; the collector is only for
# cycles, which a server makes few of. UpsertCustomers of 100,000 customers on SQLite:
# 17,912 and 17,703 -> 21,342 and 21,636 customers/s (docs/benchmarks.md, Profiles).
GC_THRESHOLDS = (100_000, 50, 100)


def settle_garbage_collector() -> None:
    """For a server that is built and about to serve: what it built so far (compiled rules,
    statements, caches) is frozen out of every later collection, and collections are rarer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve_until_stopped(running: RunningServer, *, grace: float) -> None:
    """Block until SIGTERM/SIGINT, then shut down gracefully within ``grace``: NOT_SERVING at
    once, calls still answered for a short drain, then refused while in-flight ones finish."""
    settle_garbage_collector()
    stopping = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping on signal %s", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stopping.wait()
    drain = min(DRAIN_SECONDS, grace / 2)
    running.stop(grace - drain, drain=drain)
    log.info("stopped")
