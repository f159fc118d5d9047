"""Wiring of the reports into a gRPC server (the routing server serves them)."""

from __future__ import annotations

from datetime import timedelta

import grpc
from sqlalchemy import Engine
from switchboard.reports.v1 import reports_pb2, reports_pb2_grpc

from services.core.channels import open_channel
from services.core.clock import Clock, utc_now
from services.core.server import ServiceSpec
from services.core.settings import Settings
from services.reports.app import ReportDefaults, Reports
from services.reports.repository import ReportRepository
from services.reports.servicer import ReportServicer
from services.reports.sources import ProfilesSource, SegmentsSource

SERVICE_NAME = reports_pb2.DESCRIPTOR.services_by_name["ReportService"].full_name


def reports_spec(engine: Engine, settings: Settings, clock: Clock = utc_now) -> ServiceSpec:
    """Reports over routing's store, reading memberships from ``settings.segments_address``
    and field sources from ``settings.profiles_address``."""
    deadline = settings.call_deadline_seconds
    reports = Reports(
        ReportRepository(engine),
        SegmentsSource(
            open_channel(settings.segments_address, settings, deadline_seconds=deadline)
        ),
        ProfilesSource(
            open_channel(settings.profiles_address, settings, deadline_seconds=deadline)
        ),
        ReportDefaults(
            hourly_cost=settings.report_hourly_cost,
            gap_margin=settings.report_gap_margin,
            churn_segment_id=settings.report_churn_segment,
            stale_after=timedelta(seconds=settings.report_stale_after_seconds),
        ),
        clock,
    )
    servicer = ReportServicer(reports)

    def register(server: grpc.Server) -> None:
        reports_pb2_grpc.add_ReportServiceServicer_to_server(servicer, server)

    return ServiceSpec(SERVICE_NAME, register)
