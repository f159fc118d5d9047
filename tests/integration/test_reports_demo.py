"""The issue's finish line: the demo data plus a generated month of conversations, and the
scorecard shows the per-segment gap the blended figure hides; the migration matrix matches
the membership history."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.reports.v1 import reports_pb2 as rpb
from switchboard.reports.v1 import reports_pb2_grpc
from switchboard.segments.v1 import segments_pb2 as spb

from services.core.server import RunningServer
from services.core.settings import Settings
from services.demo import load_demo, load_routing_demo, load_segment_demo
from services.demo_month import load_conversation_month
from tests.integration.conftest import ManualClock
from tests.integration.routing_setup import Profiles, Segments, timestamp


def test_demo_month_scorecard_shows_the_starter_gap_and_migration_matches_history(
    profiles_server: RunningServer,
    segments_server: RunningServer,
    routing_server: RunningServer,
    reports: reports_pb2_grpc.ReportServiceStub,
    segments: Segments,
    profiles: Profiles,
    segments_clock: ManualClock,
    admin_key: str,
) -> None:
    settings = Settings(
        api_key=admin_key,
        profiles_address=f"127.0.0.1:{profiles_server.port}",
        segments_address=f"127.0.0.1:{segments_server.port}",
        routing_address=f"127.0.0.1:{routing_server.port}",
    )
    load_demo(settings)
    load_segment_demo(settings)
    load_routing_demo(settings)
    summary = load_conversation_month(settings, days=30)
    assert summary.startswith("conversations: ")
    start, end = segments_clock.now - timedelta(days=31), segments_clock.now

    card = reports.GetScorecard(
        rpb.GetScorecardRequest(family="tier", start_time=timestamp(start), end_time=timestamp(end))
    )

    rows = {row.segment_id: row for row in card.segments}
    starter, enterprise = rows["tier_starter"], rows["tier_enterprise"]
    blended = card.blended
    assert blended.conversations > 100
    assert sum(row.figures.conversations for row in card.segments) == blended.conversations
    # The blended figures look healthy...
    assert blended.csat_average > 3.3
    # ...while Starter customers wait far longer and rate far lower, and it is flagged.
    assert starter.figures.csat_average < blended.csat_average - 0.5
    assert starter.figures.first_response_p50_seconds > 3 * blended.first_response_p50_seconds
    flagged = {rpb.Metric.Name(gap.metric) for gap in starter.gaps}
    assert {"METRIC_CSAT_AVERAGE", "METRIC_FIRST_RESPONSE_P50"} <= flagged
    assert not {"METRIC_CSAT_AVERAGE", "METRIC_FIRST_RESPONSE_P50"} & {
        rpb.Metric.Name(gap.metric) for gap in enterprise.gaps
    }

    # A Starter account grows into Growth: the matrix shows the move, as the history does.
    first_starter = next(
        m.customer_id
        for m in segments.ListMemberships(
            spb.ListMembershipsRequest(segment_id="tier_starter", page_size=10)
        ).memberships
    )
    segments_clock.advance(timedelta(hours=1))
    profiles.UpdateCustomer(
        ppb.UpdateCustomerRequest(
            customer=ppb.Customer(customer_id=first_starter, seats=20),
            update_mask={"paths": ["seats"]},
        )
    )
    segments.RecomputeMemberships(
        spb.RecomputeMembershipsRequest(scope=spb.RECOMPUTE_SCOPE_CHANGED)
    )
    matrix = reports.GetMigrationMatrix(
        rpb.GetMigrationMatrixRequest(
            family="tier",
            start_time=timestamp(segments_clock.now - timedelta(minutes=30)),
            end_time=timestamp(segments_clock.now),
        )
    )
    shown = {(c.from_segment_id, c.to_segment_id): c.customer_count for c in matrix.cells}
    assert shown == replayed_matrix(segments, matrix)
    assert shown[("tier_starter", "tier_growth")] == 1


def replayed_matrix(
    segments: Segments, matrix: rpb.GetMigrationMatrixResponse
) -> dict[tuple[str, str], int]:
    """The matrix worked out independently from ListMembershipChanges: each customer's tier
    winner at both instants from its transitions, oldest first."""
    start = matrix.start_time.ToDatetime()
    end = matrix.end_time.ToDatetime()
    changes: list[spb.MembershipChange] = []
    token = ""
    while True:
        page = segments.ListMembershipChanges(
            spb.ListMembershipChangesRequest(page_size=1000, page_token=token)
        )
        changes += [c for c in page.changes if c.family == "tier"]
        token = page.next_page_token
        if not token:
            break
    winners: dict[str, str] = {}
    at_start: dict[str, str] = {}
    for change in sorted(changes, key=lambda c: c.change_id):
        moment = change.change_time.ToDatetime()
        if moment > end:
            break
        if change.kind == spb.MEMBERSHIP_CHANGE_KIND_ENTERED:
            winners[change.customer_id] = change.segment_id
        elif winners.get(change.customer_id) == change.segment_id:
            winners[change.customer_id] = ""
        if moment <= start:
            at_start[change.customer_id] = winners[change.customer_id]
    counted = Counter(
        (at_start.get(customer_id, ""), winner)
        for customer_id, winner in winners.items()
        if at_start.get(customer_id, "") or winner
    )
    return {
        (source, target): counted.get((source, target), 0)
        for source in matrix.segment_ids
        for target in matrix.segment_ids
    }
