from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import Engine
from switchboard.profiles.v1 import profiles_pb2_grpc
from switchboard.reports.v1 import reports_pb2_grpc
from switchboard.routing.v1 import routing_pb2_grpc, widgets_pb2_grpc
from switchboard.segments.v1 import segments_pb2_grpc

from services.core.server import RunningServer, create_server
from services.core.settings import Settings
from services.profiles.server import profiles_spec
from services.routing.server import routing_specs
from services.segments.server import segments_specs
from tests.support.access import gate, keyed_channel, new_key


@pytest.fixture
def admin_key(engine: Engine) -> str:
    """The key the test's clients and the services calling each other present."""
    return new_key(engine)


@pytest.fixture
def profiles_server(engine: Engine) -> Iterator[RunningServer]:
    running = create_server(
        [profiles_spec(engine)], address="127.0.0.1:0", gate=gate(engine), max_workers=8
    )
    yield running
    running.stop(grace=1)


@pytest.fixture
def profiles_channel(profiles_server: RunningServer, admin_key: str) -> Iterator[grpc.Channel]:
    with keyed_channel(f"127.0.0.1:{profiles_server.port}", admin_key) as channel:
        yield channel


@pytest.fixture
def profiles(profiles_channel: grpc.Channel) -> profiles_pb2_grpc.ProfileServiceStub:
    return profiles_pb2_grpc.ProfileServiceStub(profiles_channel)


class ManualClock:
    """A clock tests move by hand, so time-based rules are tested without sleeping."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def segments_clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def segments_server(
    engine: Engine, profiles_server: RunningServer, segments_clock: ManualClock, admin_key: str
) -> Iterator[RunningServer]:
    """The segments server as `switchboard serve segments` builds it (OutreachService beside
    SegmentService), reading customers from the real profiles server over gRPC."""
    settings = Settings(
        profiles_address=f"127.0.0.1:{profiles_server.port}",
        call_deadline_seconds=5,
        api_key=admin_key,
    )
    running = create_server(
        segments_specs(engine, settings, segments_clock),
        address="127.0.0.1:0",
        gate=gate(engine),
        max_workers=8,
    )
    yield running
    running.stop(grace=1)


@pytest.fixture
def segments(
    segments_server: RunningServer, admin_key: str
) -> Iterator[segments_pb2_grpc.SegmentServiceStub]:
    with keyed_channel(f"127.0.0.1:{segments_server.port}", admin_key) as channel:
        yield segments_pb2_grpc.SegmentServiceStub(channel)


@pytest.fixture
def preview_desk_seconds() -> float:
    """The routing server's ``preview_desk_seconds``: the default setting, unless a test
    parametrizes this name."""
    default = Settings.model_fields["preview_desk_seconds"].default
    assert isinstance(default, float)
    return default


@pytest.fixture
def routing_server(
    engine: Engine,
    profiles_server: RunningServer,
    segments_server: RunningServer,
    segments_clock: ManualClock,
    admin_key: str,
    preview_desk_seconds: float,
) -> Iterator[RunningServer]:
    """A routing server reading customers and segment definitions from the real profiles
    and segments servers over gRPC, on the segments clock, with no segment cache."""
    settings = Settings(
        profiles_address=f"127.0.0.1:{profiles_server.port}",
        segments_address=f"127.0.0.1:{segments_server.port}",
        call_deadline_seconds=5,
        segment_refresh_seconds=0,
        customer_refresh_seconds=0,
        preview_desk_seconds=preview_desk_seconds,
        api_key=admin_key,
    )
    running = create_server(
        routing_specs(engine, settings, segments_clock),
        address="127.0.0.1:0",
        gate=gate(engine),
        max_workers=16,
    )
    yield running
    running.stop(grace=1)


@pytest.fixture
def routing(
    routing_server: RunningServer, admin_key: str
) -> Iterator[routing_pb2_grpc.RoutingServiceStub]:
    with keyed_channel(f"127.0.0.1:{routing_server.port}", admin_key) as channel:
        yield routing_pb2_grpc.RoutingServiceStub(channel)


@pytest.fixture
def reports(
    routing_server: RunningServer, admin_key: str
) -> Iterator[reports_pb2_grpc.ReportServiceStub]:
    with keyed_channel(f"127.0.0.1:{routing_server.port}", admin_key) as channel:
        yield reports_pb2_grpc.ReportServiceStub(channel)


@pytest.fixture
def widgets(
    routing_server: RunningServer, admin_key: str
) -> Iterator[widgets_pb2_grpc.WidgetServiceStub]:
    """The widget service, served by the routing server (in-process cache: no Redis)."""
    with keyed_channel(f"127.0.0.1:{routing_server.port}", admin_key) as channel:
        yield widgets_pb2_grpc.WidgetServiceStub(channel)
