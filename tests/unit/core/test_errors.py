"""The error table: each domain error reaches the caller as one fixed status with details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from services.core import errors


def unpacked(status: grpc.Status) -> status_pb2.Status:
    trailing = dict(status.trailing_metadata)
    return status_pb2.Status.FromString(trailing["grpc-status-details-bin"])


def detail(status: grpc.Status, kind: type) -> object:
    for packed in unpacked(status).details:
        if packed.Is(kind.DESCRIPTOR):  # type: ignore[attr-defined]
            message = kind()
            packed.Unpack(message)
            return message
    raise AssertionError(f"no {kind.__name__} detail")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument.field("customer.email", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("customer", "c1"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("customer", "c1"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.Conflict("stale etag"), grpc.StatusCode.ABORTED),
        (errors.FailedPrecondition("queue missing"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.PermissionDenied("widget key"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.Unauthenticated("no key"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.Unavailable("database restarting"), grpc.StatusCode.UNAVAILABLE),
        (errors.ResourceExhausted("at most 1000"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_every_domain_error_has_its_status_code_and_a_reason(
    error: errors.SwitchboardError, code: grpc.StatusCode
) -> None:
    status = error.to_status()
    assert status.code == code
    assert unpacked(status).code == code.value[0]
    info = detail(status, error_details_pb2.ErrorInfo)
    assert info.domain == "switchboard" and info.reason  # type: ignore[attr-defined]


def test_bad_input_lists_each_field_violation() -> None:
    error = errors.InvalidArgument(
        [errors.FieldViolation("a", "too long"), errors.FieldViolation("b", "missing")]
    )
    bad_request = detail(error.to_status(), error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [  # type: ignore[attr-defined]
        ("a", "too long"),
        ("b", "missing"),
    ]
    assert "a: too long" in error.message


def test_missing_resources_name_the_resource() -> None:
    info = detail(errors.NotFound("customer", "c9").to_status(), error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("customer", "c9")  # type: ignore[attr-defined]


def test_internal_errors_carry_only_an_id() -> None:
    status = errors.internal_status("abc123")
    assert status.code == grpc.StatusCode.INTERNAL
    assert "abc123" in status.details
    assert detail(status, error_details_pb2.ErrorInfo).metadata["error_id"] == "abc123"  # type: ignore[attr-defined]
