"""What reports read from other services, through their APIs with the call deadline.

Segments owns memberships and their history (sizes, retention, migration, lint, who
entered a segment); profiles owns where each field's value came from. Their failures reach
the caller as UNAVAILABLE naming the service, never as a half-filled report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TypeVar

import grpc
from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.profiles.v1 import profiles_pb2_grpc
from switchboard.segments.v1 import segments_pb2 as spb
from switchboard.segments.v1 import segments_pb2_grpc

from services.core.errors import Unavailable
from services.reports.domain import LintWarning, Retention, SegmentInfo, StaleField
from services.segments.convert import timestamp

_PAGE = 1000
Answer = TypeVar("Answer")
Request = TypeVar("Request")


class SegmentsSource:
    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = segments_pb2_grpc.SegmentServiceStub(channel)

    def segments(self, family: str = "") -> list[SegmentInfo]:
        """Every segment (of ``family`` when given), in precedence order."""
        found: list[SegmentInfo] = []
        token = ""
        while True:
            request = spb.ListSegmentsRequest(family=family, page_size=_PAGE, page_token=token)
            page = _call("segments", self.stub.ListSegments, request)
            found += [
                SegmentInfo(s.segment_id, s.display_name, s.family, s.priority)
                for s in page.segments
            ]
            token = page.next_page_token
            if not token:
                return sorted(found, key=lambda s: (s.family, s.priority, s.segment_id))

    def retention(
        self, segment_ids: Sequence[str], churn_segment_id: str, start: datetime, end: datetime
    ) -> tuple[dict[str, Retention], Retention]:
        """Each segment's retention, and the same over all of them."""
        request = spb.GetRetentionRequest(
            segment_ids=list(segment_ids),
            churn_segment_id=churn_segment_id,
            start_time=timestamp(start),
            end_time=timestamp(end),
        )
        answer = _call("segments", self.stub.GetRetention, request)
        each = {s.segment_id: Retention(s.base, s.retained) for s in answer.segments}
        return each, Retention(answer.all.base, answer.all.retained)

    def sizes(self, segment_ids: Sequence[str], times: Sequence[datetime]) -> dict[str, list[int]]:
        request = spb.GetSegmentSizesRequest(
            segment_ids=list(segment_ids), times=[timestamp(t) for t in times]
        )
        answer = _call("segments", self.stub.GetSegmentSizes, request)
        return {series.segment_id: list(series.members) for series in answer.series}

    def migration(
        self, family: str, start: datetime, end: datetime
    ) -> tuple[list[tuple[str, str, int]], dict[str, int]]:
        """Moves between different segments, and how many stayed in each."""
        request = spb.GetMigrationReportRequest(
            family=family, start_time=timestamp(start), end_time=timestamp(end)
        )
        answer = _call("segments", self.stub.GetMigrationReport, request)
        moves = [(m.from_segment_id, m.to_segment_id, m.customer_count) for m in answer.migrations]
        return moves, dict(answer.unchanged_counts)

    def lint(self, now: datetime) -> list[LintWarning]:
        request = spb.LintSegmentsRequest(evaluate_time=timestamp(now))
        answer = _call("segments", self.stub.LintSegments, request)
        return [
            LintWarning(
                spb.LintWarningKind.Name(w.kind).removeprefix("LINT_WARNING_KIND_"),
                tuple(w.segment_ids),
                w.message,
            )
            for w in answer.warnings
        ]

    def entrants(self, segment_id: str, start: datetime, end: datetime) -> set[str]:
        """Customers who entered ``segment_id`` in [start, end)."""
        return {
            change.customer_id
            for change in self._changes(segment_id, start, end)
            if change.kind == spb.MEMBERSHIP_CHANGE_KIND_ENTERED
        }

    def _changes(
        self, segment_id: str, start: datetime, end: datetime
    ) -> Iterator[spb.MembershipChange]:
        token = ""
        while True:
            request = spb.ListMembershipChangesRequest(
                segment_id=segment_id,
                start_time=timestamp(start),
                end_time=timestamp(end),
                page_size=_PAGE,
                page_token=token,
            )
            page = _call("segments", self.stub.ListMembershipChanges, request)
            yield from page.changes
            token = page.next_page_token
            if not token:
                return


class ProfilesSource:
    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = profiles_pb2_grpc.ProfileServiceStub(channel)

    def stale_fields(self, stale_before: datetime) -> list[StaleField]:
        request = ppb.GetFieldFreshnessRequest(stale_before=timestamp(stale_before))
        answer = _call("profiles", self.stub.GetFieldFreshness, request)
        return [
            StaleField(
                f.source,
                f.field,
                f.stale_customers,
                f.customers,
                f.oldest_refresh_time.ToDatetime(tzinfo=stale_before.tzinfo)
                if f.HasField("oldest_refresh_time")
                else None,
            )
            for f in answer.fields
            if f.stale_customers
        ]


def _call(service: str, method: Callable[[Request], Answer], request: Request) -> Answer:
    try:
        return method(request)
    except grpc.RpcError as error:
        code = error.code()
        raise Unavailable(
            f"the {service} service could not answer for this report: {code.name} {error.details()}"
        ) from error
