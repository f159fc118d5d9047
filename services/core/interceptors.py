"""The server interceptor every service runs: request ids, metrics, errors, access logs."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import grpc
from sqlalchemy.exc import InterfaceError, OperationalError

from services.core.errors import (
    FieldViolation,
    InvalidArgument,
    SwitchboardError,
    Unavailable,
    internal_status,
)
from services.core.logs import request_id_var
from services.core.metrics import RpcMetrics
from services.core.validation import nul_problems

REQUEST_ID_HEADER = "x-request-id"

# When the call being served must be answered (on ``time.monotonic()``), if its caller set a
# deadline: what it asks of other services while serving it gets no longer than that, so a
# hung neighbour holds a server thread only as long as someone still waits for the answer.
answer_due_var: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "answer_due", default=None
)
# grpc reports a call without a deadline as due in about 292 years.
_NO_DEADLINE_SECONDS = 1e9

log = logging.getLogger("switchboard.rpc")


class _RequestIds:
    """32 hex digits like a uuid4's, unique without a system call per call: a random prefix
    drawn per process (again in a forked child), then a counter. Ids are only compared."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self.prefix = secrets.token_hex(8)
        self.numbers = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.numbers):016x}"


new_request_id = _RequestIds().next


class Gatekeeper(Protocol):
    """Decides whether a call may run (services.access implements it)."""

    def admit(
        self,
        method: str,
        metadata: Mapping[str, str],
        peer: Callable[[], str],
        request_id: str,
        identities: Callable[[], Sequence[str]],
    ) -> Callable[[str], None]:
        """Raise a SwitchboardError to refuse; else return what to call with the final code.
        ``peer`` gives the caller's address and ``identities`` the identities in its verified
        client certificate; both are asked only when needed (an audit, a keyless call)."""
        ...

    def admit_from_memory(
        self, method: str, metadata: Mapping[str, str], request_id: str
    ) -> Callable[[str], None] | None:
        """``admit`` decided without waiting on anything (no store, no audit); None when
        ``admit`` must decide. An event loop asks this first."""
        ...


# How deep upb, protobuf's parser, lets messages nest; past it a request does not parse.
PROTOBUF_MAX_DEPTH = 100


class Refused:
    """Stands in for a request refused before its handler runs, with the reasons; the
    caller is told only once admitted."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations


_MALFORMED = [FieldViolation("request", "the request bytes are not a valid message")]
# A rule of 10,000 nested conditions is valid protobuf that no parser reads: say so, with
# the limit, rather than call it garbage.
_TOO_DEEP = [
    FieldViolation(
        "request",
        f"the request nests messages deeper than protobuf's limit of {PROTOBUF_MAX_DEPTH} levels",
    )
]


class ServerInterceptor(grpc.ServerInterceptor):
    """Wraps every handler so that each call is measured, logged and answers a clean status.

    Domain errors become their status with details; a request that cannot be parsed
    becomes INVALID_ARGUMENT (grpc's own answer would be INTERNAL); any other exception
    becomes INTERNAL with an id that appears in the log next to the traceback.
    """

    def __init__(self, metrics: RpcMetrics, gate: Gatekeeper | None = None) -> None:
        self.metrics = metrics
        self.gate = gate
        # grpc asks for the handler on every call: each method's wrapped handler is built
        # once, beside the handler it wraps (a different one is wrapped anew).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], Any]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            wrapped: grpc.RpcMethodHandler[Any, Any] = known[1]
            return wrapped
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        deserialize = screened(handler.request_deserializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=deserialize,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream),
                request_deserializer=deserialize,
                response_serializer=handler.response_serializer,
            )
        return handler  # client streaming is not used by Switchboard

    def _unary(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            with CallScope(self.metrics, method, context, self.gate) as scope:
                scope.admit(request)
                return behaviour(request, context)

        return handle

    def _streaming(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with CallScope(self.metrics, method, context, self.gate) as scope:
                scope.admit(request)
                yield from behaviour(request, context)

        return handle


class _StatusWithMetadata(
    collections.namedtuple("_StatusWithMetadata", ("code", "details", "trailing_metadata")),
    grpc.Status,
):
    pass


# The context of a call on the thread-pool server or on the asyncio edge.
AnyContext = grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any]


class CallScope:
    """Context for one call: binds the request id, admits the caller and turns exceptions
    into statuses."""

    def __init__(
        self,
        metrics: RpcMetrics,
        method: str,
        context: AnyContext,
        gate: Gatekeeper | None,
    ) -> None:
        self.metrics = metrics
        self.method = method
        self.context = context
        self.gate = gate
        self.finish: Callable[[str], None] | None = None

    def __enter__(self) -> CallScope:
        return self.open()

    def open(self) -> CallScope:
        """Bind the request id and the answer's due time to the call (``close`` unbinds)."""
        self.metadata = {
            key: value
            for key, value in self.context.invocation_metadata() or ()
            if isinstance(value, str)
        }
        self.request_id = str(self.metadata.get(REQUEST_ID_HEADER) or new_request_id())
        self.token = request_id_var.set(self.request_id)
        self.context.set_trailing_metadata(((REQUEST_ID_HEADER, self.request_id),))
        self.started = time.perf_counter()
        remaining = self.context.time_remaining()
        self.due_token = answer_due_var.set(
            time.monotonic() + remaining
            if remaining is not None and remaining < _NO_DEADLINE_SECONDS
            else None
        )
        return self

    def admit(self, request: Any) -> None:
        """Admit the caller first (a stranger learns nothing, not even that its request was
        malformed), then refuse a request whose bytes did not parse or that holds a string
        no store of ours can keep (both found while parsing it)."""
        if self.gate is not None:
            self.finish = self.gate.admit(
                self.method, self.metadata, self.context.peer, self.request_id, self._identities
            )
        if isinstance(request, Refused):
            raise InvalidArgument(request.violations)

    def admit_from_memory(self) -> bool:
        """``admit`` when the gate can decide without waiting; False when it cannot (the
        call was neither admitted nor refused)."""
        if self.gate is None:
            return True
        finish = self.gate.admit_from_memory(self.method, self.metadata, self.request_id)
        self.finish = finish
        return finish is not None

    def _identities(self) -> list[str]:
        """The identities in the caller's verified client certificate (its subject alternative
        names, else its common name; none without mutual TLS). Asked only of a keyless call."""
        return [name.decode() for name in self.context.peer_identities() or ()]

    def __exit__(self, exc_type: Any, error: BaseException | None, _tb: Any) -> None:
        status = self.close(error)
        if status is not None:
            # abort raises, which is how grpc ends the call with this status (the thread-pool
            # server's context: the edge aborts on its loop).
            assert isinstance(self.context, grpc.ServicerContext)
            self.context.abort_with_status(status)

    def close(self, error: BaseException | None) -> grpc.Status | None:
        """End the call: measure it, let the gate finish it, unbind the request id; the
        status to abort with, if the call ended in ``error`` (None: it stands as it is)."""
        status: grpc.Status | None = None
        if isinstance(error, OperationalError | InterfaceError):
            # The store is down, restarting or locked: the caller should retry, and the
            # cause is logged for operators rather than sent to the caller.
            log.warning("store unavailable in %s: %s", self.method, error.orig)
            error = Unavailable(
                "the store is unavailable; retry shortly", reason="STORE_UNAVAILABLE"
            )
        if isinstance(error, SwitchboardError):
            status = error.to_status()
            log.info("rejected %s: %s", self.method, error.message, extra={"reason": error.reason})
        elif (
            error is not None
            # A client that stops reading a stream closes the generator, and one that goes
            # away cancels its asyncio task: not faults.
            and not isinstance(error, GeneratorExit | asyncio.CancelledError)
            and not _already_aborted(self.context)
        ):
            error_id = secrets.token_hex(6)
            log.error("unexpected error %s in %s", error_id, self.method, exc_info=error)
            status = internal_status(error_id)
        code = status.code if status is not None else (_code_of(self.context) or grpc.StatusCode.OK)
        if isinstance(error, asyncio.CancelledError):
            code = grpc.StatusCode.CANCELLED
        code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        self.metrics.observe(self.method, code_name, time.perf_counter() - self.started)
        if self.finish is not None:
            self.finish(code_name)
        self.unbind()
        if status is None:
            return None
        # abort replaces trailing metadata, so the request id travels inside the status.
        return _StatusWithMetadata(
            status.code,
            status.details,
            (*status.trailing_metadata, (REQUEST_ID_HEADER, self.request_id)),
        )

    def unbind(self) -> None:
        request_id_var.reset(self.token)
        answer_due_var.reset(self.due_token)


def _code_of(context: AnyContext) -> grpc.StatusCode | None:
    # The runtime context has code() (grpcio >= 1.38); the stubs do not declare it yet.
    code: grpc.StatusCode | None = getattr(context, "code")()  # noqa: B009
    return code


def _already_aborted(context: AnyContext) -> bool:
    code = _code_of(context)
    return code is not None and code != grpc.StatusCode.OK


def screened(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """The request parser, answering a ``Refused`` for bytes that do not parse or a
    message with a NUL in a string (PostgreSQL stores none; refused on every backend)."""
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            request = deserialize(data)
        except Exception as error:
            return Refused(_TOO_DEEP if "MaxDepth" in str(error) else _MALFORMED)
        # A NUL character is encoded as a 0x00 byte, so bytes without one hold no NUL in any
        # string and the walk over every field is spared.
        if b"\x00" in data:
            problems = nul_problems(request)
            if problems:
                return Refused(problems)
        return request

    return parse
