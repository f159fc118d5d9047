"""Mutual TLS: with client authorities set, no caller without a certificate they signed can
even connect, and Switchboard's own services call each other on their certificates alone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from sqlalchemy import Engine
from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.profiles.v1 import profiles_pb2_grpc
from switchboard.segments.v1 import segments_pb2 as spb
from switchboard.segments.v1 import segments_pb2_grpc

from services.access.domain import Role
from services.access.gate import CERTIFICATE_KEY_ID, AccessControl
from services.access.keys import KeyStore
from services.core.channels import open_channel
from services.core.server import RunningServer, create_server
from services.core.settings import Settings
from services.core.tls import server_credentials
from services.profiles.server import profiles_spec
from services.segments.server import segments_specs
from tests.support.access import new_key
from tests.support.certificates import Authority
from tests.support.rpc import call_error

SERVICE_IDENTITY = "spiffe://switchboard.test/service"


class Pki:
    """Our authority with a service certificate and a widget gateway's, and a stranger's
    certificate from an authority nobody configured."""

    def __init__(self, directory: Path) -> None:
        self.authority = Authority.create(directory, "ours")
        self.service = self.authority.issue("service", f"URI:{SERVICE_IDENTITY}", "IP:127.0.0.1")
        self.gateway = self.authority.issue(
            "gateway", "URI:spiffe://switchboard.test/widget-gateway"
        )
        self.stranger = Authority.create(directory, "theirs").issue(
            "stranger", f"URI:{SERVICE_IDENTITY}", "IP:127.0.0.1"
        )

    def settings(self, certificate: Path, data_dir: Path, **more: object) -> Settings:
        """A process's settings: its certificate, our authority, and no key of its own."""
        return Settings(
            tls_cert_file=certificate,
            tls_client_ca_file=self.authority.certificate,
            tls_service_identities=SERVICE_IDENTITY,
            data_dir=data_dir,
            **more,
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def serve(engine: Engine, pki: Pki, specs: list) -> RunningServer:  # type: ignore[type-arg]
    """A server as `switchboard serve` builds it with mutual TLS configured."""
    return create_server(
        specs,
        address="127.0.0.1:0",
        gate=AccessControl.of(engine, service_identities=frozenset({SERVICE_IDENTITY})),
        max_workers=4,
        tls=server_credentials(pki.service, pki.authority.certificate),
    )


@pytest.fixture
def profiles_port(engine: Engine, pki: Pki) -> Iterator[int]:
    running = serve(engine, pki, [profiles_spec(engine)])
    yield running.port
    running.stop(grace=1)


def profiles_stub(channel: grpc.Channel) -> profiles_pb2_grpc.ProfileServiceStub:
    return profiles_pb2_grpc.ProfileServiceStub(channel)


def get_customer(channel: grpc.Channel, customer_id: str) -> ppb.GetCustomerResponse:
    return profiles_stub(channel).GetCustomer(
        ppb.GetCustomerRequest(customer_id=customer_id), timeout=5
    )


def test_a_caller_without_a_certificate_from_our_authority_cannot_connect(
    profiles_port: int, pki: Pki, tmp_path: Path, admin_key: str
) -> None:
    address = f"127.0.0.1:{profiles_port}"
    # TLS that trusts the server, with a valid admin key, but no client certificate.
    server_only = grpc.ssl_channel_credentials(
        root_certificates=pki.authority.certificate.read_bytes()
    )
    with grpc.secure_channel(address, server_only) as channel:
        error = call_error(
            lambda: profiles_stub(channel).GetCustomer(
                ppb.GetCustomerRequest(customer_id="c1"),
                metadata=(("authorization", f"Bearer {admin_key}"),),
                timeout=5,
            )
        )
        assert error.code() == grpc.StatusCode.UNAVAILABLE
    # A certificate naming our service, signed by an authority we never configured.
    stranger = Settings(
        tls_cert_file=pki.stranger,
        tls_client_ca_file=pki.authority.certificate,
        data_dir=tmp_path,
        api_key=admin_key,
    )
    with open_channel(address, stranger, deadline_seconds=5) as channel:
        assert call_error(lambda: get_customer(channel, "c1")).code() == (
            grpc.StatusCode.UNAVAILABLE
        )


def test_a_service_certificate_stands_in_for_an_admin_key_and_its_writes_are_audited(
    profiles_port: int, pki: Pki, tmp_path: Path, engine: Engine
) -> None:
    started = datetime.now(UTC)
    settings = pki.settings(pki.service, tmp_path)
    assert settings.client_api_key == "", "the service presents its certificate, no key"
    with open_channel(f"127.0.0.1:{profiles_port}", settings, deadline_seconds=5) as channel:
        profiles_stub(channel).CreateCustomer(
            ppb.CreateCustomerRequest(
                customer=ppb.Customer(customer_id="c1", company_name="Hooli")
            ),
            timeout=5,
        )
        assert get_customer(channel, "c1").customer.company_name == "Hooli"
    [entry] = KeyStore(engine).audit(since=started)
    assert (entry.key_id, entry.key_name, entry.role, entry.code) == (
        CERTIFICATE_KEY_ID,
        SERVICE_IDENTITY,
        Role.ADMIN.value,
        "OK",
    )
    assert entry.method.endswith("/CreateCustomer")


def test_any_other_certificate_still_needs_a_key_and_a_key_always_decides(
    profiles_port: int, pki: Pki, tmp_path: Path, engine: Engine
) -> None:
    address = f"127.0.0.1:{profiles_port}"
    widget_key = new_key(engine, Role.WIDGET)
    with open_channel(address, pki.settings(pki.gateway, tmp_path), deadline_seconds=5) as gateway:
        assert call_error(lambda: get_customer(gateway, "c1")).code() == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    widget_gateway = pki.settings(pki.gateway, tmp_path, api_key=widget_key)
    with open_channel(address, widget_gateway, deadline_seconds=5) as gateway:
        assert call_error(lambda: get_customer(gateway, "c1")).code() == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    # A service sending a widget key acts as a widget: the key it chose to send decides.
    service_as_widget = pki.settings(pki.service, tmp_path, api_key=widget_key)
    with open_channel(address, service_as_widget, deadline_seconds=5) as service:
        assert call_error(lambda: get_customer(service, "c1")).code() == (
            grpc.StatusCode.PERMISSION_DENIED
        )


def test_services_call_each_other_on_their_certificates_with_no_key_anywhere(
    profiles_port: int, pki: Pki, tmp_path: Path, engine: Engine
) -> None:
    """Segments reads the customer from profiles over mutual TLS for EvaluateCustomer."""
    segments_settings = pki.settings(
        pki.service,
        tmp_path,
        profiles_address=f"127.0.0.1:{profiles_port}",
        call_deadline_seconds=5,
    )
    segments_server = serve(
        engine, pki, segments_specs(engine, segments_settings, lambda: datetime.now(UTC))
    )
    client = pki.settings(pki.service, tmp_path)
    try:
        with open_channel(f"127.0.0.1:{profiles_port}", client, deadline_seconds=5) as channel:
            profiles_stub(channel).CreateCustomer(
                ppb.CreateCustomerRequest(customer=ppb.Customer(customer_id="c1", seats=80)),
                timeout=5,
            )
        address = f"127.0.0.1:{segments_server.port}"
        with open_channel(address, client, deadline_seconds=5) as channel:
            segments = segments_pb2_grpc.SegmentServiceStub(channel)
            segments.CreateSegment(
                spb.CreateSegmentRequest(
                    segment=spb.Segment(
                        segment_id="enterprise",
                        display_name="Enterprise",
                        rule=json_format.ParseDict({"seats": {"$gte": 50}}, struct_pb2.Struct()),
                        enabled=True,
                    )
                ),
                timeout=5,
            )
            evaluated = segments.EvaluateCustomer(
                spb.EvaluateCustomerRequest(customer_id="c1"), timeout=5
            )
        assert list(evaluated.member_segment_ids) == ["enterprise"]
    finally:
        segments_server.stop(grace=1)
