"""What reports learn from a conversation's history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.routing.facts import conversation_facts
from services.routing.lifecycle import ConversationEvent, EventKind
from services.routing.sla import PolicyPeriod, SlaPolicy, Target, sla_report

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
POLICY = SlaPolicy(
    first_response=Target(timedelta(minutes=30), business_hours=False),
    resolution=Target(timedelta(hours=4), business_hours=False),
)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def facts_of(*events: ConversationEvent):  # type: ignore[no-untyped-def]
    history = list(events)
    clocks = sla_report(history, [PolicyPeriod(T0, POLICY)], history[-1].time)
    return conversation_facts(history, clocks)


def routed(to_bot: bool = False) -> ConversationEvent:
    return ConversationEvent(EventKind.ROUTED, T0, queue_id="general", to_bot=to_bot)


def test_first_response_of_a_bot_conversation_counts_from_the_handover() -> None:
    facts = facts_of(
        routed(to_bot=True),
        ConversationEvent(EventKind.BOT_REPLY, at(1)),
        ConversationEvent(EventKind.ESCALATED, at(10)),
        ConversationEvent(EventKind.ASSIGNED, at(12), agent_id="ada"),
        ConversationEvent(EventKind.AGENT_REPLY, at(25), agent_id="ada"),
    )
    assert facts.first_response_seconds == 15 * 60
    assert facts.first_response_met is True
    assert facts.escalated and facts.human_involved and facts.bot_first
    assert facts.resolution_met is None  # still running on track
    assert facts.handling_seconds == 13 * 60


def test_a_human_taking_over_from_the_bot_waited_nothing_and_is_an_escalation() -> None:
    facts = facts_of(
        routed(to_bot=True),
        ConversationEvent(EventKind.AGENT_REPLY, at(3), agent_id="ada"),
    )
    assert facts.first_response_seconds == 0
    assert facts.escalated


def test_a_bot_conversation_resolved_alone_is_contained() -> None:
    facts = facts_of(
        routed(to_bot=True),
        ConversationEvent(EventKind.BOT_REPLY, at(1)),
        ConversationEvent(EventKind.RESOLVED, at(4)),
        ConversationEvent(EventKind.CSAT_RATED, at(5), rating=4),
    )
    assert (facts.escalated, facts.human_involved) == (False, False)
    assert facts.resolution_seconds == 4 * 60
    assert facts.first_response_seconds is None
    assert facts.csat_rating == 4


def test_a_reopened_conversation_has_no_resolution_until_resolved_again() -> None:
    history = [
        routed(),
        ConversationEvent(EventKind.ASSIGNED, at(0), agent_id="ada"),
        ConversationEvent(EventKind.AGENT_REPLY, at(40), agent_id="ada"),
        ConversationEvent(EventKind.RESOLVED, at(60), agent_id="ada"),
        ConversationEvent(EventKind.REOPENED, at(120), agent_id="ada"),
    ]
    reopened = facts_of(*history)
    assert reopened.reopened
    assert reopened.resolution_seconds is None
    assert reopened.first_response_met is False  # 40 minutes against 30

    resolved = facts_of(*history, ConversationEvent(EventKind.RESOLVED, at(150), agent_id="ada"))
    assert resolved.resolution_seconds == 150 * 60
    # Held from 0 to 60 and again from 120 to 150.
    assert resolved.handling_seconds == 90 * 60
    assert resolved.resolution_met is True


def test_sla_events_change_no_figure_but_the_verdict() -> None:
    facts = facts_of(
        routed(),
        ConversationEvent(EventKind.SLA_BREACHED, at(30), sla_metric="first_response", sla_cycle=0),
    )
    assert facts.first_response_met is False
    assert facts.first_response_seconds is None
