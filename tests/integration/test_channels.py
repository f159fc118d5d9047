"""Cross-service calls carry the caller's request id and always have a deadline, and the
process's API key unless the caller brings its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from switchboard.profiles.v1 import profiles_pb2 as pb
from switchboard.profiles.v1 import profiles_pb2_grpc

from services.core.channels import open_channel
from services.core.logs import request_id_var
from services.core.server import RunningServer, ServiceSpec, create_server
from services.core.settings import Settings
from tests.support.rpc import call_error


class Recorder(profiles_pb2_grpc.ProfileServiceServicer):
    def __init__(self) -> None:
        self.seen_request_ids: list[str] = []
        self.seen_authorizations: list[str] = []
        self.release = threading.Event()

    def GetCustomer(self, request: pb.GetCustomerRequest, context: grpc.ServicerContext) -> object:
        metadata = dict(context.invocation_metadata())
        self.seen_request_ids.append(metadata.get("x-request-id", ""))
        self.seen_authorizations.append(metadata.get("authorization", ""))
        if request.customer_id == "slow":
            self.release.wait(10)
        return pb.GetCustomerResponse(customer=pb.Customer(customer_id=request.customer_id))


@pytest.fixture
def recorder() -> Iterator[tuple[Recorder, RunningServer]]:
    servicer = Recorder()
    spec = ServiceSpec(
        "switchboard.profiles.v1.ProfileService",
        lambda server: profiles_pb2_grpc.add_ProfileServiceServicer_to_server(servicer, server),
    )
    running = create_server([spec], address="127.0.0.1:0", gate=None, max_workers=4)
    yield servicer, running
    servicer.release.set()
    running.stop(grace=1)


def test_the_request_id_of_the_current_call_crosses_to_the_next_service(
    recorder: tuple[Recorder, RunningServer],
) -> None:
    servicer, running = recorder
    token = request_id_var.set("req-from-widget")
    try:
        with open_channel(f"127.0.0.1:{running.port}", Settings(), deadline_seconds=5) as channel:
            profiles_pb2_grpc.ProfileServiceStub(channel).GetCustomer(
                pb.GetCustomerRequest(customer_id="c1")
            )
    finally:
        request_id_var.reset(token)
    assert servicer.seen_request_ids == ["req-from-widget"]


def test_a_slow_service_costs_its_caller_the_deadline_not_a_hang(
    recorder: tuple[Recorder, RunningServer],
) -> None:
    _servicer, running = recorder
    with open_channel(f"127.0.0.1:{running.port}", Settings(), deadline_seconds=0.3) as channel:
        stub = profiles_pb2_grpc.ProfileServiceStub(channel)
        started = time.monotonic()
        error = call_error(lambda: stub.GetCustomer(pb.GetCustomerRequest(customer_id="slow")))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5


def test_a_channel_presents_the_process_key_unless_told_not_to_or_a_call_brings_one(
    recorder: tuple[Recorder, RunningServer],
) -> None:
    servicer, running = recorder
    settings = Settings(api_key="sb_process_key")
    address = f"127.0.0.1:{running.port}"
    request = pb.GetCustomerRequest(customer_id="c1")
    visitor = (("authorization", "Bearer sb_visitor_key"),)
    for present_key in (True, False):
        with open_channel(
            address, settings, deadline_seconds=5, present_key=present_key
        ) as channel:
            stub = profiles_pb2_grpc.ProfileServiceStub(channel)
            stub.GetCustomer(request)
            stub.GetCustomer(request, metadata=visitor)

    assert servicer.seen_authorizations == [
        "Bearer sb_process_key",
        "Bearer sb_visitor_key",
        "",
        "Bearer sb_visitor_key",
    ]
