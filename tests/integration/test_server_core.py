"""What every Switchboard server does, whatever its service: health, reflection, metrics,
request ids, and clean statuses for bad bytes and unexpected failures."""

from __future__ import annotations

import io
import json
import logging
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from sqlalchemy import Engine
from switchboard.profiles.v1 import profiles_pb2 as pb
from switchboard.profiles.v1 import profiles_pb2_grpc

from services.core.logs import JsonFormatter
from services.core.server import RunningServer, ServiceSpec, create_server
from services.core.settings import Settings
from services.registry import SERVICES
from tests.support.access import gate
from tests.support.rpc import call_error, error_info, field_violations

GET_CUSTOMER = "/switchboard.profiles.v1.ProfileService/GetCustomer"


@pytest.fixture
def all_services(engine: Engine) -> Iterator[RunningServer]:
    specs = [spec for entry in SERVICES.values() for spec in entry.build(engine, Settings())]
    # Credentials are checked, yet health and reflection answer without a key.
    running = create_server(specs, address="127.0.0.1:0", gate=gate(engine), max_workers=4)
    yield running
    running.stop(grace=1)


def test_each_service_reports_serving_by_name(all_services: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{all_services.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", *all_services.service_names):
            response = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        error = call_error(
            lambda: health.Check(health_pb2.HealthCheckRequest(service="nope.v1.Nope"), timeout=5)
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND


def test_health_turns_not_serving_when_the_server_stops(engine: Engine) -> None:
    running = create_server(
        SERVICES["profiles"].build(engine, Settings()),
        address="127.0.0.1:0",
        gate=gate(engine),
        max_workers=2,
    )
    running.health.enter_graceful_shutdown()
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
    running.stop(grace=1)


def test_reflection_describes_every_rpc_without_proto_files(all_services: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{all_services.port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert set(all_services.service_names) <= services
        assert "grpc.health.v1.Health" in services
        descriptor = database.FindFileContainingSymbol("switchboard.profiles.v1.ProfileService")
        methods = {m.name for m in descriptor.service[0].method}
    assert {"CreateCustomer", "UpsertCustomers", "ListCustomerChanges"} <= methods


def test_bytes_that_are_not_a_message_are_invalid_argument(
    profiles_channel: grpc.Channel,
) -> None:
    raw = profiles_channel.unary_unary(GET_CUSTOMER)
    error = call_error(lambda: raw(b"\xff\xff\xff\xff", timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_strings_holding_nul_are_invalid_argument_naming_each_field(
    profiles: profiles_pb2_grpc.ProfileServiceStub,
) -> None:
    customer = pb.Customer(customer_id="c\x00", tags=["ok", "\x00"], external_ids={"crm": "x"})
    error = call_error(
        lambda: profiles.CreateCustomer(pb.CreateCustomerRequest(customer=customer), timeout=5)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(field_violations(error)) == ["customer.customer_id", "customer.tags[1]"]
    assert profiles.ListCustomers(pb.ListCustomersRequest(), timeout=5).customers == []


def test_zero_bytes_outside_strings_are_not_taken_for_nul(
    profiles: profiles_pb2_grpc.ProfileServiceStub,
) -> None:
    # An empty timestamp encodes as a zero length: the request bytes hold 0x00, no string NUL.
    request = pb.ListCustomersRequest(updated_since=timestamp_pb2.Timestamp())
    assert b"\x00" in request.SerializeToString()
    profiles.CreateCustomer(
        pb.CreateCustomerRequest(customer=pb.Customer(customer_id="c1")), timeout=5
    )
    listed = profiles.ListCustomers(request, timeout=5)
    assert [customer.customer_id for customer in listed.customers] == ["c1"]


def test_a_handler_of_raw_bytes_gets_them_unchecked(engine: Engine) -> None:
    """The benchmarks' echo service takes the request bytes as they came: no parser, so no
    fields to check, NUL bytes included."""

    def register(server: grpc.Server) -> None:
        echo = grpc.unary_unary_rpc_method_handler(lambda request, _context: request)
        handlers = grpc.method_handlers_generic_handler("bench.v1.EchoService", {"Echo": echo})
        server.add_generic_rpc_handlers((handlers,))

    spec = ServiceSpec("bench.v1.EchoService", register)
    running = create_server([spec], address="127.0.0.1:0", gate=None, max_workers=2)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            echo = channel.unary_unary("/bench.v1.EchoService/Echo")
            answers = [echo(body, timeout=5) for body in (b"hello", b"\x00\xff\x00")]
    finally:
        running.stop(grace=1)
    assert answers == [b"hello", b"\x00\xff\x00"]


def test_unexpected_failures_are_internal_with_an_id_found_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(profiles_pb2_grpc.ProfileServiceServicer):
        def GetCustomer(self, request: object, context: object) -> object:
            raise ZeroDivisionError("a bug")

    spec = ServiceSpec(
        "switchboard.profiles.v1.ProfileService",
        lambda server: profiles_pb2_grpc.add_ProfileServiceServicer_to_server(Broken(), server),
    )
    running = create_server([spec], address="127.0.0.1:0", gate=None, max_workers=2)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = profiles_pb2_grpc.ProfileServiceStub(channel)
            with caplog.at_level(logging.ERROR):
                error = call_error(
                    lambda: stub.GetCustomer(pb.GetCustomerRequest(customer_id="c"), timeout=5)
                )
    finally:
        running.stop(grace=1)
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "a bug" not in (error.details() or "")
    error_id = error_info(error).metadata["error_id"]
    assert any(error_id in record.getMessage() and record.exc_info for record in caplog.records)


def test_request_id_is_echoed_and_stamped_on_log_lines(
    profiles: profiles_pb2_grpc.ProfileServiceStub,
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("profiles"))
    rpc_log = logging.getLogger("switchboard.rpc")
    rpc_log.addHandler(handler)
    rpc_log.setLevel(logging.INFO)
    try:
        error = call_error(
            lambda: profiles.GetCustomer.with_call(
                pb.GetCustomerRequest(customer_id="bad id!"),
                metadata=(("x-request-id", "req-1234"),),
                timeout=5,
            )
        )
    finally:
        rpc_log.removeHandler(handler)
    assert ("x-request-id", "req-1234") in error.trailing_metadata()  # type: ignore[attr-defined]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any(line["request_id"] == "req-1234" and line["service"] == "profiles" for line in lines)


def test_metrics_count_calls_by_method_and_code(
    profiles_server: RunningServer, profiles: profiles_pb2_grpc.ProfileServiceStub
) -> None:
    port = profiles_server.metrics.serve("127.0.0.1", 0)
    profiles.ListCustomers(pb.ListCustomersRequest(), timeout=5)
    call_error(lambda: profiles.GetCustomer(pb.GetCustomerRequest(customer_id="x"), timeout=5))
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    list_customers = "/switchboard.profiles.v1.ProfileService/ListCustomers"
    assert f'switchboard_rpc_calls_total{{code="OK",method="{list_customers}"}} 1.0' in page
    assert f'switchboard_rpc_errors_total{{code="NOT_FOUND",method="{GET_CUSTOMER}"}} 1.0' in page
    assert f'switchboard_rpc_latency_seconds_count{{method="{GET_CUSTOMER}"}} 1.0' in page
