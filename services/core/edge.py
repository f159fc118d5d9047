"""The asyncio edge: a ``grpc.aio`` server beside a service's thread-pool server, on a
port of its own, for calls so cheap that the sync server's hand-offs between its threads
are most of their cost.

Every method of a service registered here is served on the edge, with the same checks,
metrics, logs and statuses as on the main port. A method may have a fast path, which runs
on the event loop and so must never wait on the store. It answers only when it can from
memory or one read of a cache, and returns None otherwise. The service's ordinary
handler then answers from a thread. Methods without a fast path run in a thread start to
finish, so they behave exactly as on the main port.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter

from services.core.interceptors import CallScope, Gatekeeper, Refused, screened
from services.core.metrics import RpcMetrics

# Answers the call from the event loop (a response, or its serialized bytes), or None to let
# the ordinary handler answer.
FastPath = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any | None]]


@dataclass(frozen=True)
class EdgeMethods:
    """What a service serves on the edge: every method it registers, these with a fast path
    (by method name, e.g. ``GetWidgetConfig``)."""

    fast: Mapping[str, FastPath] = field(default_factory=dict)


class _Captured:
    """Stands in for a server while generated code registers a servicer, to keep its
    method handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}

    def add_generic_rpc_handlers(self, _handlers: Sequence[Any]) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.handlers[service] = handlers


def captured_handlers(
    register: Callable[[Any], None],
) -> dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]]:
    """The handlers ``register`` adds to a server, by service and method name."""
    captured = _Captured()
    register(captured)
    return captured.handlers


class _Served:
    """One method on the edge: the ordinary handler in a thread, or the fast path first."""

    def __init__(
        self,
        method: str,
        behaviour: Callable[[Any, Any], Any],
        fast: FastPath | None,
        metrics: RpcMetrics,
        gate: Gatekeeper | None,
        threads: futures.Executor,
        answered: Counter,
    ) -> None:
        self.method = method
        self.behaviour = behaviour
        self.fast = fast
        self.metrics = metrics
        self.gate = gate
        self.threads = threads
        self._on_loop = answered.labels(method, "loop")
        self._in_a_thread = answered.labels(method, "thread")

    async def handle(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if self.fast is None or isinstance(request, Refused):
            return await self._in_thread(request, context)
        scope = CallScope(self.metrics, self.method, context, self.gate).open()
        if not scope.admit_from_memory():
            scope.unbind()
            return await self._in_thread(request, context)
        try:
            response = await self.fast(request, context)
            if response is None:
                # The thread sees the call's request id, due time and caller.
                self._in_a_thread.inc()
                response = await asyncio.get_running_loop().run_in_executor(
                    self.threads, contextvars.copy_context().run, self.behaviour, request, context
                )
            else:
                self._on_loop.inc()
        except BaseException as error:
            status = scope.close(error)
            if status is None:
                raise
            await context.abort_with_status(status)
        scope.close(None)
        return response

    async def _in_thread(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self._in_a_thread.inc()
        response, status = await asyncio.get_running_loop().run_in_executor(
            self.threads, contextvars.copy_context().run, self._scoped, request, context
        )
        if status is not None:
            await context.abort_with_status(status)
        return response

    def _scoped(self, request: Any, context: Any) -> tuple[Any, grpc.Status | None]:
        """The call as the main port serves it; the status to abort with, if any (an
        asyncio context aborts on its loop)."""
        scope = CallScope(self.metrics, self.method, context, self.gate).open()
        try:
            scope.admit(request)
            response = self.behaviour(request, context)
        except Exception as error:
            return None, scope.close(error)
        scope.close(None)
        return response, None


def _edge_handler(
    method: str,
    handler: grpc.RpcMethodHandler[Any, Any],
    fast: FastPath | None,
    metrics: RpcMetrics,
    gate: Gatekeeper | None,
    threads: futures.Executor,
    answered: Counter,
) -> grpc.RpcMethodHandler[Any, Any]:
    if handler.unary_unary is None:
        raise ValueError(f"the edge serves unary methods only, not {method}")
    serialize = handler.response_serializer

    def serialized(response: Any) -> bytes:
        """A fast path may answer bytes it already holds."""
        if serialize is None or type(response) is bytes:
            return response  # type: ignore[no-any-return]
        return serialize(response)

    return grpc.unary_unary_rpc_method_handler(
        _Served(method, handler.unary_unary, fast, metrics, gate, threads, answered).handle,
        request_deserializer=screened(handler.request_deserializer),
        response_serializer=serialized,
    )


class EdgeServer:
    """A ``grpc.aio`` server on its own thread and event loop, with health and reflection,
    sharing the main server's metrics, gate and credentials."""

    def __init__(
        self,
        services: Sequence[tuple[Callable[[Any], None], EdgeMethods]],
        *,
        address: str,
        metrics: RpcMetrics,
        gate: Gatekeeper | None,
        options: Sequence[tuple[str, Any]],
        max_workers: int,
        tls: grpc.ServerCredentials | None,
    ) -> None:
        self.address = address
        self.options = options
        self.tls = tls
        self.threads = futures.ThreadPoolExecutor(max_workers, thread_name_prefix="edge")
        answered = Counter(
            "switchboard_edge_answers",
            "Calls the asyncio edge answered, by method and where: on its event loop (a fast "
            "path) or in a thread (the ordinary handler)",
            ("method", "where"),
            registry=metrics.registry,
        )
        self.handlers: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
        # By full method name: what the loop tries before a thread.
        self.fast_paths: dict[str, FastPath] = {}
        for register, methods in services:
            for service, handlers in captured_handlers(register).items():
                self.fast_paths |= {
                    f"/{service}/{name}": fast for name, fast in methods.fast.items()
                }
                self.handlers[service] = {
                    name: _edge_handler(
                        f"/{service}/{name}",
                        handler,
                        methods.fast.get(name),
                        metrics,
                        gate,
                        self.threads,
                        answered,
                    )
                    for name, handler in handlers.items()
                }
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="edge", daemon=True)

    def start(self) -> EdgeServer:
        self._thread.start()
        self._started.wait()
        if self._failure is not None:
            raise self._failure
        return self

    def enter_graceful_shutdown(self) -> None:
        """Say NOT_SERVING on every name, still answering calls."""
        self._on_loop(self._health.enter_graceful_shutdown())

    def stop(self, grace: float | None) -> None:
        """Refuse new calls, let those in flight finish within ``grace``, end the thread."""
        if self._loop is None or not self._thread.is_alive():
            return
        assert self._server is not None and self._stopped is not None
        self._on_loop(self._server.stop(grace))
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join()
        self.threads.shutdown(wait=False)

    def _on_loop(self, work: Coroutine[Any, Any, Any]) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported to start(), which is waiting
            self._failure = error
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = grpc.aio.server(options=self.options)
        self._server = server
        for service, handlers in self.handlers.items():
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, handlers),)
            )
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = tuple(self.handlers)
        reflection.enable_server_reflection(
            (
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        tls = self.tls
        port = (
            server.add_secure_port(self.address, tls)
            if tls
            else server.add_insecure_port(self.address)
        )
        if port == 0:
            raise OSError(f"could not bind {self.address}")
        self.port = port
        await server.start()
        for name in ("", *names):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._started.set()
        await self._stopped.wait()
