"""What the command groups share: a stub on a channel that closes, and gRPC refusals
turned into clean click errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import click
import grpc

from services.core.channels import open_channel
from services.core.settings import Settings

T = TypeVar("T")
Stub = TypeVar("Stub")


@contextmanager
def connected(
    stub_class: Callable[[grpc.Channel], Stub], address: str, settings: Settings, deadline: float
) -> Iterator[Stub]:
    """A stub for the service at ``address``, every call under ``deadline`` seconds."""
    channel = open_channel(address, settings, deadline_seconds=deadline)
    try:
        yield stub_class(channel)
    finally:
        channel.close()


def call_rpc(call: Callable[[], T]) -> T:
    """Run a gRPC call for a command; a refusal becomes a clean click error."""
    try:
        return call()
    except grpc.RpcError as error:
        raise click.ClickException(f"{error.code().name}: {error.details()}") from error
