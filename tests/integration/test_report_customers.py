"""How many customers a scorecard counts: each customer once per range and segment, whatever
order their conversations were routed in (a caller may route one in the past)."""

from __future__ import annotations

import threading
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.reports.v1 import reports_pb2 as rpb

from services.reports.repository import ReportRepository
from services.routing.facts import conversation_facts
from services.routing.lifecycle import ConversationEvent, EventKind
from services.routing.repository import RoutingRepository
from tests.integration.conftest import ManualClock
from tests.integration.routing_setup import (
    MONDAY,
    Desk,
    Profiles,
    Routing,
    Segments,
    timestamp,
)
from tests.integration.test_reports import (
    END,
    START,
    Reports,
    recompute,
    row,
    scorecard,
    support_desk,
)


@pytest.fixture
def desk(routing: Routing, segments_clock: ManualClock) -> Desk:
    segments_clock.now = MONDAY
    return Desk(routing, segments_clock)


def route_at(desk: Desk, hours: float, conversation_id: str, customer_id: str = "") -> None:
    desk.at(MONDAY + timedelta(hours=hours))
    desk.route(conversation_id, customer_id=customer_id)


def customers(reports: Reports, start: datetime, end: datetime = END) -> dict[str, int]:
    """Customers by segment, and "" for the blended figure."""
    response = scorecard(reports, start, end)
    found = {score.segment_id: score.figures.customers for score in response.segments}
    return {**found, "": response.blended.customers}


def test_a_customer_counts_once_in_any_range_however_their_conversations_were_routed(
    desk: Desk, segments: Segments, profiles: Profiles, reports: Reports
) -> None:
    support_desk(desk, segments, profiles)
    # Acme's conversations reach routing out of order, two of them at the same instant.
    route_at(desk, 3, "acme-3b", "acme")
    route_at(desk, 1, "acme-1", "acme")
    route_at(desk, 2, "acme-2", "acme")
    route_at(desk, 3, "acme-3a", "acme")
    route_at(desk, 1.5, "tiny-1", "tiny-1")
    route_at(desk, 2, "visitor", "")

    assert customers(reports, START) == {
        "tier_enterprise": 1,
        "tier_growth": 0,
        "tier_starter": 1,
        "": 2,
    }
    # From between Acme's first and second conversation, and from the instant of the tie.
    assert customers(reports, MONDAY + timedelta(hours=1.5))[""] == 2
    assert customers(reports, MONDAY + timedelta(hours=1.5))["tier_enterprise"] == 1
    assert customers(reports, MONDAY + timedelta(hours=3))["tier_enterprise"] == 1
    assert customers(reports, MONDAY + timedelta(hours=3))[""] == 1
    # Ranges holding none of a customer's conversations, before or after them.
    assert customers(reports, START, MONDAY + timedelta(minutes=30))[""] == 0
    assert customers(reports, MONDAY + timedelta(hours=3, minutes=1))[""] == 0
    response = scorecard(reports)
    assert row(response, "tier_enterprise").figures.conversations == 4
    assert response.blended.conversations == 6


def test_a_customer_who_moved_segment_counts_in_each_and_once_blended(
    desk: Desk, segments: Segments, profiles: Profiles, reports: Reports
) -> None:
    support_desk(desk, segments, profiles)
    route_at(desk, 1, "small-1", "tiny-1")
    # Tiny One grows into an enterprise account, then writes again.
    profiles.UpdateCustomer(
        ppb.UpdateCustomerRequest(
            customer=ppb.Customer(customer_id="tiny-1", seats=120),
            update_mask={"paths": ["seats"]},
        )
    )
    recompute(segments)
    route_at(desk, 5, "big-1", "tiny-1")
    route_at(desk, 6, "acme-1", "acme")

    assert customers(reports, START) == {
        "tier_enterprise": 2,
        "tier_growth": 0,
        "tier_starter": 1,
        "": 2,
    }
    after_the_move = customers(reports, MONDAY + timedelta(hours=2))
    assert after_the_move["tier_starter"] == 0
    assert after_the_move["tier_enterprise"] == 2
    assert after_the_move[""] == 2


def test_cohorts_count_each_customer_once(
    desk: Desk, segments: Segments, profiles: Profiles, reports: Reports
) -> None:
    support_desk(desk, segments, profiles)
    route_at(desk, 2, "small-2", "tiny-1")
    route_at(desk, 1, "small-1", "tiny-1")
    route_at(desk, 1, "big-1", "acme")

    comparison = reports.CompareCohort(
        rpb.CompareCohortRequest(
            segment_id="tier_starter",
            start_time=timestamp(START),
            end_time=timestamp(END),
        )
    )
    assert (comparison.entered.customers, comparison.entered.conversations) == (1, 2)
    assert (comparison.others.customers, comparison.others.conversations) == (1, 1)


def facts_of(conversation_id: str, customer_id: str, route_time: datetime) -> dict[str, Any]:
    """A facts row as routing saves it for a conversation just routed to the bot."""
    return {
        "conversation_id": conversation_id,
        "customer_id": customer_id,
        **asdict(conversation_facts([ConversationEvent(EventKind.ROUTED, route_time)], [])),
    }


def test_two_conversations_of_a_customer_saved_at_once_count_once(engine: Engine) -> None:
    repository = RoutingRepository(engine)
    saved = threading.Event()

    def second_writer() -> None:
        with repository.write() as store:
            store.save_facts([facts_of("second", "acme", MONDAY + timedelta(hours=2))])
        saved.set()

    with repository.write() as store:
        store.save_facts([facts_of("first", "acme", MONDAY + timedelta(hours=1))])
        writer = threading.Thread(target=second_writer)
        writer.start()
        # Time for the second writer to save while this one has not committed.
        saved.wait(timeout=0.5)
    writer.join(timeout=30)

    everyone = ReportRepository(engine).tally_scorecard([], START, END)[1]
    assert (everyone.conversations, everyone.customers) == (2, 1)
