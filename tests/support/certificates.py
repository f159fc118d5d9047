"""Certificates made with the openssl command for TLS tests: a private authority and the
certificates it signs, each written as the one PEM file (key, then chain) Switchboard reads."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

_NEW_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class Authority:
    """A certificate authority: ``certificate`` is what a server or client is told to trust."""

    directory: Path
    name: str

    @property
    def certificate(self) -> Path:
        return self.directory / f"{self.name}-ca.pem"

    @property
    def key(self) -> Path:
        return self.directory / f"{self.name}-ca.key"

    @classmethod
    def create(cls, directory: Path, name: str) -> Authority:
        authority = cls(directory, name)
        _openssl(
            "req", "-x509", *_NEW_KEY, "-days", "1", "-subj", f"/CN={name} test CA",
            "-keyout", str(authority.key), "-out", str(authority.certificate),
        )  # fmt: skip
        return authority

    def issue(self, name: str, *alternative_names: str) -> Path:
        """A certificate for ``name`` usable by servers and clients alike, with its key, in one
        PEM file; ``alternative_names`` as openssl writes them (``URI:…``, ``IP:…``)."""
        key, request, signed = (self.directory / f"{name}.{kind}" for kind in ("key", "csr", "crt"))
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(
            f"subjectAltName={','.join(alternative_names)}\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
        )
        _openssl(
            "req", *_NEW_KEY, "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(request)
        )
        _openssl(
            "x509", "-req", "-in", str(request), "-CA", str(self.certificate),
            "-CAkey", str(self.key), "-set_serial", str(abs(hash(name)) + 1), "-days", "1",
            "-extfile", str(extensions), "-out", str(signed),
        )  # fmt: skip
        pem = self.directory / f"{name}.pem"
        pem.write_bytes(key.read_bytes() + signed.read_bytes() + self.certificate.read_bytes())
        return pem
