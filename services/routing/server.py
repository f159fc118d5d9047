"""Wiring of the routing service, and the widget service it serves beside it, into a gRPC
server."""

from __future__ import annotations

import grpc
from sqlalchemy import Engine
from switchboard.routing.v1 import routing_pb2, routing_pb2_grpc, widgets_pb2, widgets_pb2_grpc

from services.core.channels import open_channel
from services.core.clock import Clock, utc_now
from services.core.edge import EdgeMethods
from services.core.server import ServiceSpec
from services.core.settings import Settings
from services.reports.server import reports_spec
from services.routing.app import Routing
from services.routing.customers import CustomerDirectory, SegmentsClient
from services.routing.repository import RoutingRepository
from services.routing.servicer import RoutingServicer
from services.segments.profiles_client import ProfilesClient
from services.widgets.app import Widgets
from services.widgets.cache import LocalWidgetCache, RedisWidgetCache, WidgetCache
from services.widgets.servicer import WidgetServicer, encode_config

SERVICE_NAME = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name
WIDGET_SERVICE_NAME = widgets_pb2.DESCRIPTOR.services_by_name["WidgetService"].full_name


def routing_app(engine: Engine, settings: Settings, clock: Clock = utc_now) -> Routing:
    """The routing core, reading customers from ``settings.profiles_address`` and segment
    definitions from ``settings.segments_address`` with ``settings.call_deadline_seconds`` on
    every call."""
    deadline = settings.call_deadline_seconds
    customers = CustomerDirectory(
        ProfilesClient(
            open_channel(settings.profiles_address, settings, deadline_seconds=deadline)
        ),
        SegmentsClient(
            open_channel(settings.segments_address, settings, deadline_seconds=deadline)
        ),
        refresh_seconds=settings.segment_refresh_seconds,
        customer_refresh_seconds=settings.customer_refresh_seconds,
    )
    repository = RoutingRepository(engine, preview_desk_seconds=settings.preview_desk_seconds)
    return Routing(repository, customers, clock)


def widget_cache(settings: Settings, clock: Clock = utc_now) -> WidgetCache:
    """Redis, shared with the workers that precompute, when configured; else in-process."""
    if settings.redis_url:
        return RedisWidgetCache(
            settings.redis_url, remembered_entries=settings.widget_memory_entries, clock=clock
        )
    return LocalWidgetCache(clock=clock)


def widgets_app(routing: Routing, settings: Settings) -> Widgets:
    return Widgets(routing, widget_cache(settings, routing.clock), encode_config)


def routing_specs(engine: Engine, settings: Settings, clock: Clock = utc_now) -> list[ServiceSpec]:
    """The routing service over ``routing_app``, the widget service over the same core, and
    the reports, which read routing's store."""
    routing = routing_app(engine, settings, clock)
    widgets = widgets_app(routing, settings)
    routing_servicer = RoutingServicer(routing)
    widget_servicer = WidgetServicer(widgets)

    def register_routing(server: grpc.Server) -> None:
        routing_pb2_grpc.add_RoutingServiceServicer_to_server(routing_servicer, server)

    def register_widgets(server: grpc.Server) -> None:
        widgets_pb2_grpc.add_WidgetServiceServicer_to_server(widget_servicer, server)

    return [
        ServiceSpec(SERVICE_NAME, register_routing),
        ServiceSpec(
            WIDGET_SERVICE_NAME,
            register_widgets,
            (widgets.metrics.lookups,),
            EdgeMethods(fast={"GetWidgetConfig": widget_servicer.cached_widget_config}),
        ),
        reports_spec(engine, settings, clock),
    ]
