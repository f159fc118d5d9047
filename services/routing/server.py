"""Wiring of the routing service into a gRPC server."""

from __future__ import annotations

import grpc
from sqlalchemy import Engine
from switchboard.routing.v1 import routing_pb2, routing_pb2_grpc

from services.core.channels import open_channel
from services.core.clock import Clock, utc_now
from services.core.server import ServiceSpec
from services.core.settings import Settings
from services.routing.app import Routing
from services.routing.customers import CustomerDirectory, SegmentsClient
from services.routing.repository import RoutingRepository
from services.routing.servicer import RoutingServicer
from services.segments.profiles_client import ProfilesClient

SERVICE_NAME = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name


def routing_app(engine: Engine, settings: Settings, clock: Clock = utc_now) -> Routing:
    """The routing core, reading customers from ``settings.profiles_address`` and segment
    definitions from ``settings.segments_address`` with ``settings.call_deadline_seconds`` on
    every call."""
    deadline = settings.call_deadline_seconds
    customers = CustomerDirectory(
        ProfilesClient(open_channel(settings.profiles_address, deadline_seconds=deadline)),
        SegmentsClient(open_channel(settings.segments_address, deadline_seconds=deadline)),
        refresh_seconds=settings.segment_refresh_seconds,
        customer_refresh_seconds=settings.customer_refresh_seconds,
    )
    return Routing(RoutingRepository(engine), customers, clock)


def routing_spec(engine: Engine, settings: Settings, clock: Clock = utc_now) -> ServiceSpec:
    """The routing service over ``routing_app``."""
    servicer = RoutingServicer(routing_app(engine, settings, clock))

    def register(server: grpc.Server) -> None:
        routing_pb2_grpc.add_RoutingServiceServicer_to_server(servicer, server)

    return ServiceSpec(SERVICE_NAME, register)
