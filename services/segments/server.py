"""Wiring of the segments service into a gRPC server."""

from __future__ import annotations

import grpc
from sqlalchemy import Engine
from switchboard.segments.v1 import segments_pb2, segments_pb2_grpc

from services.core.channels import open_channel
from services.core.clock import Clock, utc_now
from services.core.server import ServiceSpec
from services.core.settings import Settings
from services.segments.app import Segments
from services.segments.profiles_client import ProfilesClient
from services.segments.repository import SegmentRepository
from services.segments.servicer import SegmentServicer

SERVICE_NAME = segments_pb2.DESCRIPTOR.services_by_name["SegmentService"].full_name


def segments_spec(engine: Engine, settings: Settings, clock: Clock = utc_now) -> ServiceSpec:
    """The segments service, reading customers from ``settings.profiles_address`` with
    ``settings.call_deadline_seconds`` on every call."""
    channel = open_channel(
        settings.profiles_address, deadline_seconds=settings.call_deadline_seconds
    )
    segments = Segments(SegmentRepository(engine), ProfilesClient(channel), clock)
    servicer = SegmentServicer(segments)

    def register(server: grpc.Server) -> None:
        segments_pb2_grpc.add_SegmentServiceServicer_to_server(servicer, server)

    return ServiceSpec(SERVICE_NAME, register)
