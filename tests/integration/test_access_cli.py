"""Keys managed from the command line, the audit log read from it, and TLS as one setting."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine
from switchboard.profiles.v1 import profiles_pb2 as pb
from switchboard.profiles.v1 import profiles_pb2_grpc

from services.cli import main
from services.core.channels import open_channel
from services.core.server import create_server
from services.core.settings import Settings
from services.core.tls import server_credentials
from services.profiles.server import profiles_spec
from tests.support.access import gate, keyed_channel
from tests.support.rpc import call_error


def switchboard(database_url: str, *args: str) -> str:
    result = CliRunner().invoke(
        main, list(args), env={"SWITCHBOARD_DATABASE_URL": database_url}, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_keys_are_made_listed_rotated_and_revoked_from_the_cli(
    database_url: str, engine: Engine
) -> None:
    made = switchboard(
        database_url, "keys", "create", "--name", "nightly billing", "--role", "sync"
    )
    described, token = made.strip().splitlines()
    key_id = described.split()[0]
    assert token.startswith(f"sb_{key_id}_")

    listed = switchboard(database_url, "keys", "list")
    assert key_id in listed and "sync" in listed and "nightly billing" in listed
    assert token.split("_", 2)[2] not in listed, "the secret is shown once, at creation"

    rotated = switchboard(database_url, "keys", "rotate", key_id).strip().splitlines()[-1]
    assert rotated != token and rotated.startswith(f"sb_{key_id}_")

    switchboard(database_url, "keys", "revoke", key_id)
    assert key_id not in switchboard(database_url, "keys", "list")
    assert "revoked" in switchboard(database_url, "keys", "list", "--all")


def test_a_console_key_must_name_its_agent(database_url: str) -> None:
    result = CliRunner().invoke(
        main,
        ["keys", "create", "--name", "ann's console", "--role", "console"],
        env={"SWITCHBOARD_DATABASE_URL": database_url},
    )
    assert result.exit_code != 0 and "agent" in result.output


def test_the_audit_log_reads_writes_by_key_from_the_cli(database_url: str, engine: Engine) -> None:
    token = switchboard(database_url, "keys", "create", "--name", "crm", "--role", "sync")
    key_id, token = token.split()[0], token.strip().splitlines()[-1]
    running = create_server(
        [profiles_spec(engine)], address="127.0.0.1:0", gate=gate(engine), max_workers=2
    )
    try:
        with keyed_channel(f"127.0.0.1:{running.port}", token) as channel:
            profiles_pb2_grpc.ProfileServiceStub(channel).CreateCustomer(
                pb.CreateCustomerRequest(customer=pb.Customer(customer_id="cust-9")), timeout=5
            )
    finally:
        running.stop(grace=1)
    lines = switchboard(database_url, "audit", "--key", key_id, "--since", "1h").splitlines()
    assert len(lines) == 1
    assert "ProfileService/CreateCustomer" in lines[0] and " OK " in lines[0]


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 and its key, in one PEM file."""
    pem = tmp_path / "switchboard.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "1", "-subj", "/CN=switchboard-test",
            "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    pem.write_bytes((tmp_path / "key.pem").read_bytes() + (tmp_path / "cert.pem").read_bytes())
    return pem


def test_with_a_certificate_set_the_port_speaks_only_tls(
    engine: Engine, certificate: Path, admin_key: str
) -> None:
    running = create_server(
        [profiles_spec(engine)],
        address="127.0.0.1:0",
        gate=gate(engine),
        max_workers=2,
        tls=server_credentials(certificate),
    )
    address = f"127.0.0.1:{running.port}"
    request = pb.GetCustomerRequest(customer_id="nobody")
    try:
        with keyed_channel(address, admin_key) as plain:
            error = call_error(
                lambda: profiles_pb2_grpc.ProfileServiceStub(plain).GetCustomer(request, timeout=3)
            )
            assert error.code() == grpc.StatusCode.UNAVAILABLE
        settings = Settings(api_key=admin_key, tls_cert_file=certificate)
        with open_channel(address, settings, deadline_seconds=5) as secure:
            error = call_error(
                lambda: profiles_pb2_grpc.ProfileServiceStub(secure).GetCustomer(request)
            )
            assert error.code() == grpc.StatusCode.NOT_FOUND, "over TLS the call is answered"
    finally:
        running.stop(grace=1)
