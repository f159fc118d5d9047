"""TLS for the gRPC ports from one PEM file holding a private key and its certificate chain."""

from __future__ import annotations

import re
from pathlib import Path

import grpc

_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----\s*", re.DOTALL)


def _split(path: Path) -> tuple[bytes, bytes]:
    """(private key, certificate chain) from the file, each as PEM."""
    key = b""
    chain = b""
    for block in _BLOCK.finditer(path.read_bytes()):
        if block.group(1).endswith(b"PRIVATE KEY"):
            key = block.group(0)
        elif block.group(1) == b"CERTIFICATE":
            chain += block.group(0)
    if not key or not chain:
        raise ValueError(f"{path} must hold a private key and at least one certificate")
    return key, chain


def server_credentials(path: Path) -> grpc.ServerCredentials:
    key, chain = _split(path)
    return grpc.ssl_server_credentials([(key, chain)])


def channel_credentials(path: Path) -> grpc.ChannelCredentials:
    """Trust the certificates in the file: a self-signed one works, and so does a private
    CA whose certificate is in the chain."""
    _key, chain = _split(path)
    return grpc.ssl_channel_credentials(root_certificates=chain)
