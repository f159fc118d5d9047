"""gRPC adapter of the segments service: convert, call ``Segments``, convert back."""

from __future__ import annotations

import grpc
from switchboard.segments.v1 import segments_pb2 as pb
from switchboard.segments.v1 import segments_pb2_grpc

from services.core.errors import InvalidArgument
from services.segments.app import SegmentRetention, Segments
from services.segments.convert import (
    change_to_proto,
    customer_record,
    definition_from_proto,
    explanation_to_proto,
    lint_warning_to_proto,
    membership_to_proto,
    optional_time,
    parse_update_mask,
    revision_to_proto,
    segment_to_proto,
    struct_to_dict,
    times_from_proto,
)
from services.segments.domain import Segment
from services.segments.logic import normalize_rule
from services.segments.repository import ChangeFilter


def _segment_from_proto(message: pb.Segment) -> Segment:
    return Segment(segment_id=message.segment_id, **definition_from_proto(message))


class SegmentServicer(segments_pb2_grpc.SegmentServiceServicer):
    def __init__(self, segments: Segments) -> None:
        self.segments = segments

    def CreateSegment(
        self, request: pb.CreateSegmentRequest, context: grpc.ServicerContext
    ) -> pb.CreateSegmentResponse:
        created = self.segments.create(
            segment=_segment_from_proto(request.segment), actor=request.actor
        )
        return pb.CreateSegmentResponse(segment=segment_to_proto(created))

    def GetSegment(
        self, request: pb.GetSegmentRequest, context: grpc.ServicerContext
    ) -> pb.GetSegmentResponse:
        found = self.segments.get(segment_id=request.segment_id, revision=request.revision)
        return pb.GetSegmentResponse(segment=segment_to_proto(found))

    def ListSegments(
        self, request: pb.ListSegmentsRequest, context: grpc.ServicerContext
    ) -> pb.ListSegmentsResponse:
        found, token = self.segments.list_page(
            family=request.family, page_token=request.page_token, page_size=request.page_size
        )
        return pb.ListSegmentsResponse(
            segments=[segment_to_proto(s) for s in found], next_page_token=token
        )

    def UpdateSegment(
        self, request: pb.UpdateSegmentRequest, context: grpc.ServicerContext
    ) -> pb.UpdateSegmentResponse:
        fields = parse_update_mask(list(request.update_mask.paths))
        updated = self.segments.update(
            segment_id=request.segment.segment_id,
            values=definition_from_proto(request.segment, fields),
            expected_revision=request.segment.revision,
            actor=request.actor,
        )
        return pb.UpdateSegmentResponse(segment=segment_to_proto(updated))

    def DeleteSegment(
        self, request: pb.DeleteSegmentRequest, context: grpc.ServicerContext
    ) -> pb.DeleteSegmentResponse:
        self.segments.delete(segment_id=request.segment_id, expected_revision=request.revision)
        return pb.DeleteSegmentResponse()

    def ListSegmentRevisions(
        self, request: pb.ListSegmentRevisionsRequest, context: grpc.ServicerContext
    ) -> pb.ListSegmentRevisionsResponse:
        found, token = self.segments.list_revisions(
            segment_id=request.segment_id,
            page_token=request.page_token,
            page_size=request.page_size,
        )
        return pb.ListSegmentRevisionsResponse(
            revisions=[revision_to_proto(r) for r in found], next_page_token=token
        )

    def RollbackSegment(
        self, request: pb.RollbackSegmentRequest, context: grpc.ServicerContext
    ) -> pb.RollbackSegmentResponse:
        restored = self.segments.rollback(
            segment_id=request.segment_id,
            target_revision=request.target_revision,
            expected_revision=request.revision,
            actor=request.actor,
        )
        return pb.RollbackSegmentResponse(segment=segment_to_proto(restored))

    def EvaluateCustomer(
        self, request: pb.EvaluateCustomerRequest, context: grpc.ServicerContext
    ) -> pb.EvaluateCustomerResponse:
        now = optional_time(request, "evaluate_time")
        if request.WhichOneof("subject") == "customer":
            result = self.segments.evaluate(record=customer_record(request.customer), now=now)
        else:
            result = self.segments.evaluate(customer_id=request.customer_id, now=now)
        verdicts = result.verdicts
        return pb.EvaluateCustomerResponse(
            customer_id=result.customer_id,
            member_segment_ids=sorted(verdicts.members),
            winners=[
                pb.FamilyWinner(family=family, segment_id=winner)
                for family, winner in sorted(verdicts.winners.items())
            ],
            evaluations=[
                pb.SegmentEvaluation(
                    segment_id=item.segment.segment_id,
                    family=item.segment.family,
                    revision=item.segment.revision,
                    matched=item.segment.segment_id in verdicts.matched,
                    member=item.segment.segment_id in verdicts.members,
                    explanation=explanation_to_proto(result.explanations[item.segment.segment_id]),
                )
                for item in result.compiled
            ],
        )

    def TestRule(
        self, request: pb.TestRuleRequest, context: grpc.ServicerContext
    ) -> pb.TestRuleResponse:
        explanation = self.segments.test_rule(
            rule=normalize_rule(struct_to_dict(request.rule, "rule")),
            attributes=normalize_rule(struct_to_dict(request.attributes, "attributes")),
            member_segment_ids=frozenset(request.member_segment_ids),
            now=optional_time(request, "evaluate_time"),
        )
        return pb.TestRuleResponse(
            matched=explanation.passed, explanation=explanation_to_proto(explanation)
        )

    def PreviewSegment(
        self, request: pb.PreviewSegmentRequest, context: grpc.ServicerContext
    ) -> pb.PreviewSegmentResponse:
        preview = self.segments.preview(
            draft=_segment_from_proto(request.segment),
            sample_size=request.sample_size,
            now=optional_time(request, "evaluate_time"),
        )
        return pb.PreviewSegmentResponse(
            customer_count=preview.customer_count,
            matching_count=preview.matching_count,
            sample_customer_ids=preview.sample,
            entering_count=preview.entering_count,
            leaving_count=preview.leaving_count,
            winner_shifts=[
                pb.WinnerShift(from_segment_id=a, to_segment_id=b, customer_count=n)
                for a, b, n in preview.winner_shifts
            ],
        )

    def RecomputeMemberships(
        self, request: pb.RecomputeMembershipsRequest, context: grpc.ServicerContext
    ) -> pb.RecomputeMembershipsResponse:
        if request.scope == pb.RECOMPUTE_SCOPE_UNSPECIFIED:
            raise InvalidArgument.field("scope", "choose CHANGED or ALL")
        summary = self.segments.recompute(
            all_customers=request.scope == pb.RECOMPUTE_SCOPE_ALL,
            now=optional_time(request, "evaluate_time"),
        )
        return pb.RecomputeMembershipsResponse(
            evaluated_count=summary.evaluated,
            removed_count=summary.removed,
            entered_count=summary.entered,
            exited_count=summary.exited,
            last_sequence=summary.last_sequence,
        )

    def ListMemberships(
        self, request: pb.ListMembershipsRequest, context: grpc.ServicerContext
    ) -> pb.ListMembershipsResponse:
        found, token = self.segments.list_memberships(
            customer_id=request.customer_id,
            segment_id=request.segment_id,
            page_token=request.page_token,
            page_size=request.page_size,
        )
        return pb.ListMembershipsResponse(
            memberships=[membership_to_proto(m) for m in found], next_page_token=token
        )

    def ListMembershipChanges(
        self, request: pb.ListMembershipChangesRequest, context: grpc.ServicerContext
    ) -> pb.ListMembershipChangesResponse:
        where = ChangeFilter(
            customer_id=request.customer_id,
            segment_id=request.segment_id,
            start_time=optional_time(request, "start_time"),
            end_time=optional_time(request, "end_time"),
        )
        found, token = self.segments.list_changes(
            where=where, page_token=request.page_token, page_size=request.page_size
        )
        return pb.ListMembershipChangesResponse(
            changes=[change_to_proto(c) for c in found], next_page_token=token
        )

    def GetMigrationReport(
        self, request: pb.GetMigrationReportRequest, context: grpc.ServicerContext
    ) -> pb.GetMigrationReportResponse:
        report = self.segments.migration_report(
            family=request.family,
            start=optional_time(request, "start_time"),
            end=optional_time(request, "end_time"),
        )
        return pb.GetMigrationReportResponse(
            migrations=[
                pb.Migration(from_segment_id=a, to_segment_id=b, customer_count=n)
                for a, b, n in report.migrations
            ],
            unchanged_counts=report.unchanged,
        )

    def LintSegments(
        self, request: pb.LintSegmentsRequest, context: grpc.ServicerContext
    ) -> pb.LintSegmentsResponse:
        warnings, count = self.segments.lint(now=optional_time(request, "evaluate_time"))
        return pb.LintSegmentsResponse(
            warnings=[lint_warning_to_proto(w) for w in warnings], customer_count=count
        )

    def GetSegmentSizes(
        self, request: pb.GetSegmentSizesRequest, context: grpc.ServicerContext
    ) -> pb.GetSegmentSizesResponse:
        segment_ids = list(request.segment_ids)
        sizes = self.segments.segment_sizes(
            segment_ids=segment_ids, times=times_from_proto(request.times, "times")
        )
        return pb.GetSegmentSizesResponse(
            series=[
                pb.SegmentSizeSeries(segment_id=segment_id, members=members)
                for segment_id, members in zip(segment_ids, sizes, strict=True)
            ]
        )

    def GetRetention(
        self, request: pb.GetRetentionRequest, context: grpc.ServicerContext
    ) -> pb.GetRetentionResponse:
        report = self.segments.retention(
            segment_ids=list(request.segment_ids),
            churn_segment_id=request.churn_segment_id,
            start=optional_time(request, "start_time"),
            end=optional_time(request, "end_time"),
        )
        return pb.GetRetentionResponse(
            segments=[_retention_to_proto(r) for r in report.segments],
            all=_retention_to_proto(report.everyone),
        )


def _retention_to_proto(retention: SegmentRetention) -> pb.SegmentRetention:
    return pb.SegmentRetention(
        segment_id=retention.segment_id, base=retention.base, retained=retention.retained
    )
