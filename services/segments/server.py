"""Wiring of the segments service into a gRPC server."""

from __future__ import annotations

import grpc
from sqlalchemy import Engine
from switchboard.segments.v1 import (
    outreach_pb2,
    outreach_pb2_grpc,
    segments_pb2,
    segments_pb2_grpc,
)

from services.core.channels import open_channel
from services.core.clock import Clock, utc_now
from services.core.server import ServiceSpec
from services.core.settings import Settings
from services.outreach.app import Outreach
from services.outreach.repository import OutreachRepository
from services.outreach.servicer import OutreachServicer
from services.segments.app import Segments
from services.segments.profiles_client import ProfilesClient
from services.segments.repository import SegmentRepository
from services.segments.servicer import SegmentServicer

SERVICE_NAME = segments_pb2.DESCRIPTOR.services_by_name["SegmentService"].full_name
OUTREACH_SERVICE_NAME = outreach_pb2.DESCRIPTOR.services_by_name["OutreachService"].full_name


def segments_spec(engine: Engine, settings: Settings, clock: Clock = utc_now) -> ServiceSpec:
    """The segments service, reading customers from ``settings.profiles_address`` with
    ``settings.call_deadline_seconds`` on every call."""
    channel = open_channel(
        settings.profiles_address, settings, deadline_seconds=settings.call_deadline_seconds
    )
    segments = Segments(SegmentRepository(engine), ProfilesClient(channel), clock)
    servicer = SegmentServicer(segments)

    def register(server: grpc.Server) -> None:
        segments_pb2_grpc.add_SegmentServiceServicer_to_server(servicer, server)

    return ServiceSpec(SERVICE_NAME, register)


def outreach_spec(engine: Engine, clock: Clock = utc_now) -> ServiceSpec:
    """The outreach service: webhook endpoints, subscriptions to segment transitions and
    the delivery log, over the segments store."""
    servicer = OutreachServicer(Outreach(OutreachRepository(engine), clock))

    def register(server: grpc.Server) -> None:
        outreach_pb2_grpc.add_OutreachServiceServicer_to_server(servicer, server)

    return ServiceSpec(OUTREACH_SERVICE_NAME, register)


def segments_specs(engine: Engine, settings: Settings, clock: Clock = utc_now) -> list[ServiceSpec]:
    """The segments service and the outreach service it serves beside it."""
    return [segments_spec(engine, settings, clock), outreach_spec(engine, clock)]
