"""TLS for the gRPC ports from one PEM file holding a private key and its certificate chain,
and mutual TLS when a file of client certificate authorities is given too.

gRPC's Python API can require a client certificate or not ask for one, nothing between: so
with mutual TLS on, every caller of every port presents a certificate, and the certificate
of one of Switchboard's own services stands in for an API key (``services.access``).
"""

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


def _authorities(path: Path) -> bytes:
    """The certificates in a file of certificate authorities, as PEM."""
    found = b"".join(
        block.group(0)
        for block in _BLOCK.finditer(path.read_bytes())
        if block.group(1) == b"CERTIFICATE"
    )
    if not found:
        raise ValueError(f"{path} must hold at least one certificate")
    return found


def server_credentials(path: Path, client_ca_file: Path | None = None) -> grpc.ServerCredentials:
    """Serve with the key and chain in ``path``; with ``client_ca_file``, refuse every
    connection whose client certificate those authorities did not sign."""
    key, chain = _split(path)
    if client_ca_file is None:
        return grpc.ssl_server_credentials([(key, chain)])
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=_authorities(client_ca_file), require_client_auth=True
    )


def channel_credentials(path: Path, client_ca_file: Path | None = None) -> grpc.ChannelCredentials:
    """Trust the certificates in the file (a self-signed one works, and so does a private CA
    whose certificate is in the chain) and those of ``client_ca_file``; with mutual TLS,
    present the file's own key and chain as this process's client certificate."""
    key, chain = _split(path)
    if client_ca_file is None:
        return grpc.ssl_channel_credentials(root_certificates=chain)
    return grpc.ssl_channel_credentials(
        root_certificates=chain + _authorities(client_ca_file),
        private_key=key,
        certificate_chain=chain,
    )
