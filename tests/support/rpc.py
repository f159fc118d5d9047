"""Reading gRPC errors the way a client would: status code plus google.rpc details."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def call_error(call: Callable[[], Any]) -> grpc.RpcError:
    """Run ``call`` and return the error it must raise."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def field_violations(error: grpc.RpcError) -> dict[str, str]:
    """The BadRequest field violations of an error, by field path."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "the error carries no google.rpc.Status details"
    violations: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.update({v.field: v.description for v in bad_request.field_violations})
    return violations


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "the error carries no google.rpc.Status details"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo in the error details")


def misses(cases: Mapping[str, tuple[Callable[[], object], str]]) -> dict[str, str]:
    """The cases that were not refused with INVALID_ARGUMENT naming their field (the field
    itself or an item of it), each with what happened instead; empty when all were."""
    wrong: dict[str, str] = {}
    for name, (call, field) in cases.items():
        try:
            call()
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                wrong[name] = f"{error.code()}: {error.details()}"
                continue
            violations = field_violations(error)
            if not any(path == field or path.startswith(f"{field}[") for path in violations):
                wrong[name] = f"violations name {sorted(violations)}, not {field}"
            continue
        wrong[name] = "accepted"
    return wrong
