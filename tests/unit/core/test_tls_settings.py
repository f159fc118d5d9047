"""Mutual TLS settings that cannot work are refused when the process starts, not at the
first call."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.core.settings import Settings


def test_client_authorities_without_a_certificate_of_our_own_are_refused() -> None:
    with pytest.raises(ValidationError, match="needs SWITCHBOARD_TLS_CERT_FILE"):
        Settings(tls_client_ca_file=Path("ca.pem"))


def test_service_identities_without_client_authorities_are_refused() -> None:
    with pytest.raises(ValidationError, match="needs SWITCHBOARD_TLS_CLIENT_CA_FILE"):
        Settings(tls_cert_file=Path("tls.pem"), tls_service_identities="spiffe://sb/service")


def test_service_identities_are_read_as_a_comma_separated_list() -> None:
    settings = Settings(
        tls_cert_file=Path("tls.pem"),
        tls_client_ca_file=Path("ca.pem"),
        tls_service_identities=" spiffe://sb/routing, spiffe://sb/workers ,",
    )
    assert settings.service_identities == {"spiffe://sb/routing", "spiffe://sb/workers"}
