"""Channels for calls from one Switchboard service to another.

Every call made through them carries the current request id (so one user action can be
followed across services in the logs) and a deadline (so a slow service slows its callers
down by a bounded amount instead of hanging them). Made while serving a call whose caller set
a deadline, it gets no more than the time that call has left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc

from services.core.interceptors import REQUEST_ID_HEADER, answer_due_var
from services.core.logs import request_id_var
from services.core.settings import Settings
from services.core.tls import channel_credentials

AUTHORIZATION_HEADER = "authorization"


class _ClientCallDetails(grpc.ClientCallDetails):
    def __init__(
        self,
        method: str,
        timeout: float | None,
        metadata: tuple[tuple[str, str | bytes], ...],
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
    ) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


class _PropagatingInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, deadline_seconds: float | None, api_key: str) -> None:
        self.deadline_seconds = deadline_seconds
        self.authorization = ((AUTHORIZATION_HEADER, f"Bearer {api_key}"),) if api_key else ()

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = tuple(details.metadata or ())
        if not any(key == AUTHORIZATION_HEADER for key, _ in metadata):
            metadata += self.authorization
        request_id = request_id_var.get()
        if request_id and not any(key == REQUEST_ID_HEADER for key, _ in metadata):
            metadata += ((REQUEST_ID_HEADER, request_id),)
        timeout = details.timeout if details.timeout is not None else self.deadline_seconds
        due = answer_due_var.get()
        if due is not None:
            left = max(due - time.monotonic(), 0.0)
            timeout = left if timeout is None else min(timeout, left)
        return _ClientCallDetails(
            details.method,
            timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        return continuation(self._details(client_call_details), request)


def open_channel(
    address: str,
    settings: Settings,
    *,
    deadline_seconds: float | None,
    present_key: bool = True,
) -> grpc.Channel:
    """A channel to a Switchboard service: TLS (mutual when configured) and the settings' API
    key when there is one (unless ``present_key`` is false: each call then brings its own),
    request-id propagation and a default deadline on every call (a call may pass a shorter
    ``timeout`` of its own; None sets none, for long-lived streams)."""
    channel = (
        grpc.secure_channel(
            address, channel_credentials(settings.tls_cert_file, settings.tls_client_ca_file)
        )
        if settings.tls_cert_file
        else grpc.insecure_channel(address)
    )
    return grpc.intercept_channel(
        channel,
        _PropagatingInterceptor(deadline_seconds, settings.client_api_key if present_key else ""),
    )
