"""One error model for every service.

Domain code raises a ``SwitchboardError`` subclass; the server interceptor turns it into a
gRPC status with ``google.rpc`` details. Each class fixes its status code, so a caller's
retry logic can trust the code:

- ``InvalidArgument``   INVALID_ARGUMENT   + BadRequest.field_violations (bad input)
- ``NotFound``          NOT_FOUND          + ResourceInfo
- ``AlreadyExists``     ALREADY_EXISTS     + ResourceInfo
- ``Conflict``          ABORTED            (stale etag or revision; re-read and retry)
- ``FailedPrecondition`` FAILED_PRECONDITION (the system is not in a state that allows it)
- ``PermissionDenied``  PERMISSION_DENIED
- ``Unauthenticated``   UNAUTHENTICATED
- ``Unavailable``       UNAVAILABLE        (a dependency is down; retryable)
- ``ResourceExhausted`` RESOURCE_EXHAUSTED (a size limit; the message names it)

Every status also carries ``ErrorInfo`` with a machine-readable ``reason``. Anything else
raised by a handler becomes INTERNAL with an error id that is logged with the traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "switchboard"
# A status travels in trailing metadata, which clients refuse past 16 KiB and may refuse past
# 8 KiB (gRPC's defaults): a refusal that grew past that would reach the caller as
# RESOURCE_EXHAUSTED with no details. So the violations sent stop at MAX_DETAILS_BYTES (the
# trailer carries them in base64, a third larger), and every text that may echo a caller's
# input is cut at MAX_ECHO_CHARACTERS.
MAX_DETAILS_BYTES = 3072
MAX_ECHO_CHARACTERS = 200


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path in the request (``customer.email``) and why."""

    field: str
    description: str


class SwitchboardError(Exception):
    """Base of every error a caller is meant to see."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN)
        return [_pack(info)]

    def to_status(self) -> grpc.Status:
        status = status_pb2.Status(
            code=self.code.value[0], message=self.message, details=self.details()
        )
        converted: grpc.Status = rpc_status.to_status(status)
        return converted


class InvalidArgument(SwitchboardError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Iterable[FieldViolation], *, reason: str | None = None) -> None:
        self.violations = list(violations)
        summary = "; ".join(f"{_cut(v.field)}: {_cut(v.description)}" for v in self.violations[:5])
        if len(self.violations) > 5:
            summary += f"; and {len(self.violations) - 5} more"
        super().__init__(f"invalid request: {summary}", reason=reason)

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])

    def details(self) -> list[any_pb2.Any]:
        bad_request = error_details_pb2.BadRequest()
        for index, violation in enumerate(self.violations):
            bad_request.field_violations.add(
                field=_cut(violation.field), description=_cut(violation.description)
            )
            if bad_request.ByteSize() > MAX_DETAILS_BYTES:
                del bad_request.field_violations[-1]
                bad_request.field_violations.add(
                    field="request",
                    description=f"and {len(self.violations) - index} more problems, not"
                    f" listed: an error lists at most {MAX_DETAILS_BYTES} bytes of them",
                )
                break
        return [_pack(bad_request), *super().details()]


class _ResourceError(SwitchboardError):
    verb = ""

    def __init__(self, resource_type: str, name: str, *, reason: str | None = None) -> None:
        self.resource_type = resource_type
        self.resource_name = name
        super().__init__(f"{resource_type} {name!r} {self.verb}", reason=reason)

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ResourceInfo(
            resource_type=self.resource_type, resource_name=self.resource_name
        )
        return [_pack(info), *super().details()]


class NotFound(_ResourceError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"
    verb = "not found"


class AlreadyExists(_ResourceError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"
    verb = "already exists"


class Conflict(SwitchboardError):
    code = grpc.StatusCode.ABORTED
    default_reason = "CONFLICT"


class FailedPrecondition(SwitchboardError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class PermissionDenied(SwitchboardError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(SwitchboardError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class Unavailable(SwitchboardError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class ResourceExhausted(SwitchboardError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "LIMIT_EXCEEDED"


def _cut(text: str) -> str:
    if len(text) <= MAX_ECHO_CHARACTERS:
        return text
    return f"{text[:MAX_ECHO_CHARACTERS]}... ({len(text)} characters)"


def internal_status(error_id: str) -> grpc.Status:
    """The status for an unexpected failure: no internals, just an id to find the log line."""
    info = error_details_pb2.ErrorInfo(
        reason="INTERNAL", domain=ERROR_DOMAIN, metadata={"error_id": error_id}
    )
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error {error_id}; it has been logged",
        details=[_pack(info)],
    )
    converted: grpc.Status = rpc_status.to_status(status)
    return converted


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed
