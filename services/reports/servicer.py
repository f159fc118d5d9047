"""gRPC adapter of the reports: convert, call ``Reports``, convert back."""

from __future__ import annotations

import grpc
from switchboard.reports.v1 import reports_pb2 as pb
from switchboard.reports.v1 import reports_pb2_grpc

from services.reports.app import Reports
from services.reports.convert import (
    cohort_to_proto,
    health_to_proto,
    migration_to_proto,
    scorecard_to_proto,
)
from services.routing.convert import read_duration
from services.segments.convert import optional_time


class ReportServicer(reports_pb2_grpc.ReportServiceServicer):
    def __init__(self, reports: Reports) -> None:
        self.reports = reports

    def GetScorecard(
        self, request: pb.GetScorecardRequest, context: grpc.ServicerContext
    ) -> pb.GetScorecardResponse:
        scorecard = self.reports.scorecard(
            family=request.family,
            segment_ids=list(request.segment_ids),
            start=optional_time(request, "start_time"),
            end=optional_time(request, "end_time"),
            hourly_cost=request.hourly_cost,
            gap_margin=request.gap_margin,
            churn_segment_id=request.churn_segment_id,
        )
        return scorecard_to_proto(scorecard)

    def CompareCohort(
        self, request: pb.CompareCohortRequest, context: grpc.ServicerContext
    ) -> pb.CompareCohortResponse:
        comparison = self.reports.compare_cohort(
            segment_id=request.segment_id,
            start=optional_time(request, "start_time"),
            end=optional_time(request, "end_time"),
            hourly_cost=request.hourly_cost,
        )
        return cohort_to_proto(comparison)

    def GetMigrationMatrix(
        self, request: pb.GetMigrationMatrixRequest, context: grpc.ServicerContext
    ) -> pb.GetMigrationMatrixResponse:
        matrix = self.reports.migration_matrix(
            family=request.family,
            start=optional_time(request, "start_time"),
            end=optional_time(request, "end_time"),
        )
        return migration_to_proto(matrix)

    def GetSegmentHealth(
        self, request: pb.GetSegmentHealthRequest, context: grpc.ServicerContext
    ) -> pb.GetSegmentHealthResponse:
        health = self.reports.segment_health(
            family=request.family,
            segment_ids=list(request.segment_ids),
            start=optional_time(request, "start_time"),
            end=optional_time(request, "end_time"),
            time_zone=request.time_zone,
            stale_after=read_duration(request, "stale_after"),
        )
        return health_to_proto(health)
