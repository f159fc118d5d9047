"""Per-segment reports through gRPC: the gap a blended figure hides, figures kept by the
segment a customer was in at routing, migration from the membership history, and bad
input refused with field paths."""

from __future__ import annotations

from datetime import datetime, timedelta

import grpc
import pytest
from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.reports.v1 import reports_pb2 as rpb
from switchboard.reports.v1 import reports_pb2_grpc
from switchboard.routing.v1 import routing_pb2 as pb
from switchboard.segments.v1 import segments_pb2 as spb

from tests.integration.conftest import ManualClock
from tests.integration.routing_setup import (
    MONDAY,
    Desk,
    Profiles,
    Routing,
    Segments,
    action,
    create_agent,
    create_customer,
    create_policy,
    create_queue,
    create_segment,
    create_tier_segments,
    rule,
    set_rules,
    sla_policy,
    timestamp,
)
from tests.support.rpc import call_error, field_violations

Reports = reports_pb2_grpc.ReportServiceStub
START = MONDAY - timedelta(days=1)
END = MONDAY + timedelta(days=2)


@pytest.fixture
def desk(routing: Routing, segments_clock: ManualClock) -> Desk:
    segments_clock.now = MONDAY
    return Desk(routing, segments_clock)


def recompute(segments: Segments) -> None:
    segments.RecomputeMemberships(spb.RecomputeMembershipsRequest(scope=spb.RECOMPUTE_SCOPE_ALL))


def support_desk(desk: Desk, segments: Segments, profiles: Profiles) -> None:
    """Tiers by seats and a churn segment; one queue with a 30-minute first response and a
    4-hour resolution around the clock; starters meet the bot first; Ada is online."""
    create_tier_segments(segments)
    create_segment(
        segments, "lifecycle_churned", {"lifecycle_stage": "churned"}, family="lifecycle"
    )
    routing = desk.routing
    create_policy(
        routing,
        sla_policy("standard", first_response=timedelta(minutes=30), resolution=timedelta(hours=4)),
    )
    create_queue(routing, "general")
    create_agent(routing, "ada", chats=20, online=True)
    set_rules(
        routing,
        [
            rule(
                "starters_meet_the_bot",
                {"$inSegment": "tier_starter"},
                action("general", policy="standard", bot_first=True),
            )
        ],
        action("general", policy="standard"),
    )
    create_customer(profiles, "acme", seats=80, display_name="Acme")
    create_customer(profiles, "tiny-1", seats=2, display_name="Tiny One")
    create_customer(profiles, "tiny-2", seats=3, display_name="Tiny Two")
    recompute(segments)


def served(
    desk: Desk,
    conversation_id: str,
    customer_id: str,
    *,
    reply_after: timedelta,
    resolve_after: timedelta,
    csat: int,
    escalate_after: timedelta | None = None,
) -> None:
    """A conversation routed now: (escalated from the bot,) answered by Ada, resolved and
    rated; the clock ends where it started."""
    began = desk.now
    desk.route(conversation_id, customer_id=customer_id)
    if escalate_after is not None:
        desk.at(began + escalate_after)
        desk.record(conversation_id, pb.CONVERSATION_EVENT_KIND_ESCALATE)
    desk.at(began + reply_after)
    desk.record(conversation_id, pb.CONVERSATION_EVENT_KIND_AGENT_REPLY, agent_id="ada")
    desk.at(began + resolve_after)
    desk.record(conversation_id, pb.CONVERSATION_EVENT_KIND_RESOLVE)
    desk.record(conversation_id, pb.CONVERSATION_EVENT_KIND_CSAT, csat_rating=csat)
    desk.at(began)


def scorecard(
    reports: Reports, start: datetime = START, end: datetime = END
) -> rpb.GetScorecardResponse:
    request = rpb.GetScorecardRequest(
        family="tier", start_time=timestamp(start), end_time=timestamp(end)
    )
    return reports.GetScorecard(request)


def row(response: rpb.GetScorecardResponse, segment_id: str) -> rpb.SegmentScore:
    return next(r for r in response.segments if r.segment_id == segment_id)


def flagged(score: rpb.SegmentScore) -> set[str]:
    return {rpb.Metric.Name(gap.metric) for gap in score.gaps}


def test_starters_gap_shows_beside_a_blended_figure_that_hides_it(
    desk: Desk, segments: Segments, profiles: Profiles, reports: Reports
) -> None:
    support_desk(desk, segments, profiles)
    for index in range(3):
        served(
            desk,
            f"ent-{index}",
            "acme",
            reply_after=timedelta(minutes=5 + index),
            resolve_after=timedelta(hours=1),
            csat=5,
        )
    served(
        desk,
        "small-1",
        "tiny-1",
        escalate_after=timedelta(minutes=2),
        reply_after=timedelta(minutes=52),
        resolve_after=timedelta(hours=6),
        csat=2,
    )

    response = scorecard(reports)

    assert [r.segment_id for r in response.segments] == [
        "tier_enterprise",
        "tier_growth",
        "tier_starter",
    ]
    enterprise, starter = row(response, "tier_enterprise"), row(response, "tier_starter")
    assert enterprise.figures.conversations == 3
    assert enterprise.figures.first_response_p50_seconds == 6 * 60
    assert enterprise.figures.first_response_p90_seconds == 7 * 60
    assert enterprise.figures.first_response_sla_attainment == 1.0
    assert enterprise.figures.csat_average == 5.0
    # The starter waited 50 minutes for a human after the bot handed over: breached.
    assert starter.figures.first_response_p50_seconds == 50 * 60
    assert starter.figures.first_response_sla_decided == 1
    assert starter.figures.first_response_sla_attainment == 0.0
    assert starter.figures.resolution_sla_attainment == 0.0
    assert starter.figures.bot_conversations == 1
    assert starter.figures.escalation_rate == 1.0
    assert starter.figures.bot_containment_rate == 0.0
    blended = response.blended
    assert blended.conversations == 4
    assert blended.customers == 2
    assert blended.first_response_sla_attainment == 0.75
    assert blended.csat_average == pytest.approx(17 / 4)
    assert {
        "METRIC_FIRST_RESPONSE_SLA_ATTAINMENT",
        "METRIC_RESOLUTION_SLA_ATTAINMENT",
        "METRIC_CSAT_AVERAGE",
        "METRIC_FIRST_RESPONSE_P50",
        "METRIC_RESOLUTION_P50",
    } <= flagged(starter)
    assert flagged(enterprise) == set()
    gap = next(g for g in starter.gaps if g.metric == rpb.METRIC_FIRST_RESPONSE_SLA_ATTAINMENT)
    assert (gap.value, gap.blended) == (0.0, 0.75)
    assert gap.relative_gap == pytest.approx(1.0)
    # Ada held the starter's conversation from the escalation to the resolution.
    assert starter.figures.handling_seconds == pytest.approx((6 * 60 - 2) * 60)
    assert starter.figures.support_cost_per_customer == pytest.approx((6 - 2 / 60) * 40.0)


def test_a_segment_with_no_conversations_and_an_empty_range_give_zeros(
    desk: Desk, segments: Segments, profiles: Profiles, reports: Reports
) -> None:
    support_desk(desk, segments, profiles)
    served(
        desk,
        "ent-1",
        "acme",
        reply_after=timedelta(minutes=5),
        resolve_after=timedelta(hours=1),
        csat=4,
    )

    growth = row(scorecard(reports), "tier_growth")
    assert growth.figures == rpb.Figures()
    assert list(growth.gaps) == []

    later = scorecard(reports, END, END + timedelta(days=30))
    assert later.blended.conversations == 0
    assert all(r.figures.conversations == 0 and not r.gaps for r in later.segments)


def test_figures_stay_with_the_segment_the_customer_was_in_when_routed(
    desk: Desk, segments: Segments, profiles: Profiles, reports: Reports
) -> None:
    support_desk(desk, segments, profiles)
    served(
        desk,
        "small-1",
        "tiny-1",
        escalate_after=timedelta(minutes=1),
        reply_after=timedelta(minutes=11),
        resolve_after=timedelta(hours=1),
        csat=3,
    )
    before = scorecard(reports)

    # Tiny One grows into an enterprise account the next day.
    desk.advance(days=1)
    profiles.UpdateCustomer(
        ppb.UpdateCustomerRequest(
            customer=ppb.Customer(customer_id="tiny-1", seats=120),
            update_mask={"paths": ["seats"]},
        )
    )
    recompute(segments)

    after = scorecard(reports)
    assert row(after, "tier_starter").figures == row(before, "tier_starter").figures
    assert row(after, "tier_enterprise").figures.conversations == 0

    matrix = reports.GetMigrationMatrix(
        rpb.GetMigrationMatrixRequest(
            family="tier", start_time=timestamp(MONDAY), end_time=timestamp(desk.now)
        )
    )
    cells = {(c.from_segment_id, c.to_segment_id): c.customer_count for c in matrix.cells}
    assert list(matrix.segment_ids) == ["tier_enterprise", "tier_growth", "tier_starter", ""]
    assert len(matrix.cells) == 16
    assert cells[("tier_starter", "tier_enterprise")] == 1
    assert cells[("tier_starter", "tier_starter")] == 1
    assert cells[("tier_enterprise", "tier_enterprise")] == 1
    assert sum(cells.values()) == 3


def test_retention_counts_members_at_the_start_not_churned_at_the_end(
    desk: Desk, segments: Segments, profiles: Profiles, reports: Reports
) -> None:
    support_desk(desk, segments, profiles)
    desk.advance(hours=1)
    profiles.UpdateCustomer(
        ppb.UpdateCustomerRequest(
            customer=ppb.Customer(customer_id="tiny-2", lifecycle_stage="churned"),
            update_mask={"paths": ["lifecycle_stage"]},
        )
    )
    recompute(segments)

    response = scorecard(reports, MONDAY + timedelta(minutes=30))

    starter = row(response, "tier_starter")
    assert starter.figures.retention_base == 2
    assert starter.figures.retention_rate == 0.5
    assert row(response, "tier_enterprise").figures.retention_rate == 1.0
    assert response.blended.retention_base == 3
    assert response.blended.retention_rate == pytest.approx(2 / 3)
    assert response.churn_segment_id == "lifecycle_churned"
    assert "METRIC_RETENTION_RATE" in flagged(starter)


def test_cohort_of_customers_who_entered_a_segment_against_the_others(
    desk: Desk, segments: Segments, profiles: Profiles, reports: Reports
) -> None:
    support_desk(desk, segments, profiles)
    served(
        desk,
        "ent-1",
        "acme",
        reply_after=timedelta(minutes=5),
        resolve_after=timedelta(hours=1),
        csat=5,
    )
    served(
        desk,
        "small-1",
        "tiny-1",
        escalate_after=timedelta(minutes=1),
        reply_after=timedelta(minutes=21),
        resolve_after=timedelta(hours=2),
        csat=2,
    )

    comparison = reports.CompareCohort(
        rpb.CompareCohortRequest(
            segment_id="tier_starter", start_time=timestamp(START), end_time=timestamp(END)
        )
    )

    assert comparison.entered.conversations == 1
    assert comparison.entered.csat_average == 2.0
    assert comparison.others.conversations == 1
    assert comparison.others.csat_average == 5.0


def test_bad_requests_name_the_field(reports: Reports, segments: Segments) -> None:
    create_tier_segments(segments)
    cases = {
        "family": rpb.GetScorecardRequest(start_time=timestamp(START)),
        "start_time": rpb.GetScorecardRequest(family="tier"),
        "end_time": rpb.GetScorecardRequest(
            family="tier", start_time=timestamp(END), end_time=timestamp(START)
        ),
        "segment_ids": rpb.GetScorecardRequest(
            family="tier", segment_ids=["tier_growth"], start_time=timestamp(START)
        ),
        "segment_ids[1]": rpb.GetScorecardRequest(
            segment_ids=["tier_growth", "Not An Id"], start_time=timestamp(START)
        ),
        "hourly_cost": rpb.GetScorecardRequest(
            family="tier", start_time=timestamp(START), hourly_cost=-1
        ),
    }
    for field, request in cases.items():
        error = call_error(lambda request=request: reports.GetScorecard(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in field_violations(error), (field, field_violations(error))

    missing = call_error(
        lambda: reports.GetScorecard(
            rpb.GetScorecardRequest(family="plans", start_time=timestamp(START))
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND

    too_long = call_error(
        lambda: reports.GetSegmentHealth(
            rpb.GetSegmentHealthRequest(
                start_time=timestamp(START),
                end_time=timestamp(START + timedelta(days=400)),
                time_zone="Mars/Olympus",
            )
        )
    )
    assert too_long.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "time_zone" in field_violations(too_long)
