"""The conversation lifecycle: where each event leads, and every event it refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.routing.lifecycle import (
    ConversationEvent,
    ConversationState,
    EventKind,
    InvalidTransition,
    Situation,
    advance,
    replay,
    start,
)

MONDAY_9 = datetime(2025, 6, 2, 9, tzinfo=UTC)
BOT = ConversationState.BOT
QUEUED = ConversationState.QUEUED
ASSIGNED = ConversationState.ASSIGNED
WAITING = ConversationState.WAITING_ON_CUSTOMER
RESOLVED = ConversationState.RESOLVED


def event(
    kind: EventKind,
    minute: int = 0,
    *,
    agent_id: str = "",
    queue_id: str = "",
    policy_id: str = "",
    to_bot: bool = False,
    rating: int = 0,
) -> ConversationEvent:
    time = MONDAY_9 + timedelta(minutes=minute)
    return ConversationEvent(kind, time, agent_id, queue_id, policy_id, to_bot, rating)


# Short histories that reach each state, every event at minute 0.
ROUTED_TO_BOT = [event(EventKind.ROUTED, to_bot=True)]
ROUTED_TO_QUEUE = [event(EventKind.ROUTED)]
HELD_BY_ANA = [*ROUTED_TO_QUEUE, event(EventKind.ASSIGNED, agent_id="ana")]
WAITING_WITH_ANA = [*HELD_BY_ANA, event(EventKind.WAITING_ON_CUSTOMER)]
RESOLVED_BY_ANA = [*HELD_BY_ANA, event(EventKind.RESOLVED)]
HISTORY_REACHING = {
    BOT: ROUTED_TO_BOT,
    QUEUED: ROUTED_TO_QUEUE,
    ASSIGNED: HELD_BY_ANA,
    WAITING: WAITING_WITH_ANA,
    RESOLVED: RESOLVED_BY_ANA,
}
OPEN_STATES = [BOT, QUEUED, ASSIGNED, WAITING]


def test_a_conversation_routed_to_the_bot_starts_with_the_bot() -> None:
    assert start(event(EventKind.ROUTED, to_bot=True)) == Situation(BOT, "")


def test_a_conversation_routed_to_a_queue_waits_there_for_an_agent() -> None:
    assert start(event(EventKind.ROUTED, queue_id="billing")) == Situation(QUEUED, "")


def test_a_typical_conversation_from_routing_to_reopening() -> None:
    history = [
        event(EventKind.ROUTED, 0),
        event(EventKind.ASSIGNED, 1, agent_id="ana"),
        event(EventKind.AGENT_REPLY, 2, agent_id="ana"),
        event(EventKind.WAITING_ON_CUSTOMER, 3),
        event(EventKind.CUSTOMER_REPLY, 30),
        event(EventKind.RESOLVED, 40),
        event(EventKind.CSAT_RATED, 41, rating=5),
    ]
    assert replay(history[:4]) == Situation(WAITING, "ana")
    assert replay(history[:5]) == Situation(ASSIGNED, "ana")
    assert replay(history) == Situation(RESOLVED, "ana")
    assert replay([*history, event(EventKind.REOPENED, 50)]) == Situation(ASSIGNED, "ana")


def test_the_bot_hands_over_to_the_queue_by_escalating() -> None:
    history = [*ROUTED_TO_BOT, event(EventKind.BOT_REPLY, 1), event(EventKind.ESCALATED, 2)]
    assert replay(history) == Situation(QUEUED, "")


def test_an_agent_replying_to_a_bot_conversation_takes_it_over() -> None:
    takeover = event(EventKind.AGENT_REPLY, 1, agent_id="ben")
    assert replay([*ROUTED_TO_BOT, takeover]) == Situation(ASSIGNED, "ben")


def test_a_reply_without_an_agent_takes_a_bot_conversation_to_the_queue() -> None:
    assert replay([*ROUTED_TO_BOT, event(EventKind.AGENT_REPLY, 1)]) == Situation(QUEUED, "")


def test_an_agent_reply_keeps_state_and_holder_elsewhere() -> None:
    for state in (QUEUED, ASSIGNED, WAITING, RESOLVED):
        before = replay(HISTORY_REACHING[state])
        reply = event(EventKind.AGENT_REPLY, 1, agent_id="ben")
        assert advance(before, reply) == before


def test_reassigning_while_waiting_on_the_customer_keeps_waiting_with_the_new_agent() -> None:
    reassigned = replay([*WAITING_WITH_ANA, event(EventKind.ASSIGNED, 1, agent_id="ben")])
    assert reassigned == Situation(WAITING, "ben")


def test_reassigning_an_assigned_conversation_changes_the_holder() -> None:
    reassigned = replay([*HELD_BY_ANA, event(EventKind.ASSIGNED, 1, agent_id="ben")])
    assert reassigned == Situation(ASSIGNED, "ben")


def test_unassigning_puts_the_conversation_back_in_the_queue() -> None:
    unassigned = replay([*HELD_BY_ANA, event(EventKind.UNASSIGNED, 1, agent_id="ana")])
    assert unassigned == Situation(QUEUED, "")


def test_unassigning_while_waiting_keeps_waiting_with_nobody_holding_it() -> None:
    assert replay([*WAITING_WITH_ANA, event(EventKind.UNASSIGNED, 1)]) == Situation(WAITING, "")


def test_a_customer_reply_to_a_waiting_conversation_goes_back_to_its_holder_or_queue() -> None:
    back_to_ana = replay([*WAITING_WITH_ANA, event(EventKind.CUSTOMER_REPLY, 1)])
    assert back_to_ana == Situation(ASSIGNED, "ana")
    nobody = [
        *ROUTED_TO_QUEUE,
        event(EventKind.WAITING_ON_CUSTOMER),
        event(EventKind.CUSTOMER_REPLY),
    ]
    assert replay(nobody) == Situation(QUEUED, "")


def test_a_customer_reply_reopens_a_resolved_conversation_for_its_last_holder() -> None:
    assert replay([*RESOLVED_BY_ANA, event(EventKind.CUSTOMER_REPLY, 1)]) == Situation(
        ASSIGNED, "ana"
    )


def test_a_customer_reply_changes_nothing_while_a_response_is_owed_anyway() -> None:
    for state in (BOT, QUEUED, ASSIGNED):
        before = replay(HISTORY_REACHING[state])
        assert advance(before, event(EventKind.CUSTOMER_REPLY, 1)) == before


@pytest.mark.parametrize("state", OPEN_STATES)
def test_a_transfer_sends_any_open_conversation_to_the_new_queue_unheld(
    state: ConversationState,
) -> None:
    transfer = event(EventKind.TRANSFERRED, 1, queue_id="tier-2")
    assert replay([*HISTORY_REACHING[state], transfer]) == Situation(QUEUED, "")


@pytest.mark.parametrize("state", OPEN_STATES)
def test_any_open_conversation_can_be_resolved_keeping_its_holder(
    state: ConversationState,
) -> None:
    before = replay(HISTORY_REACHING[state])
    assert advance(before, event(EventKind.RESOLVED, 1)) == Situation(RESOLVED, before.agent_id)


@pytest.mark.parametrize("state", [*OPEN_STATES, RESOLVED])
def test_ratings_and_policy_changes_never_move_a_conversation(state: ConversationState) -> None:
    before = replay(HISTORY_REACHING[state])
    assert advance(before, event(EventKind.CSAT_RATED, 1, rating=1)) == before
    assert advance(before, event(EventKind.POLICY_CHANGED, 1, policy_id="vip")) == before


@pytest.mark.parametrize("state", OPEN_STATES)
def test_bot_replies_never_move_an_open_conversation(state: ConversationState) -> None:
    before = replay(HISTORY_REACHING[state])
    assert advance(before, event(EventKind.BOT_REPLY, 1)) == before


REFUSALS = [
    *(
        (state, event(EventKind.ROUTED, 1), "a conversation is routed only once; transfer it")
        for state in HISTORY_REACHING
    ),
    (RESOLVED, event(EventKind.BOT_REPLY, 1), "cannot be answered by the bot; reopen it first"),
    (BOT, event(EventKind.WAITING_ON_CUSTOMER, 1), "with the bot cannot be set waiting"),
    (WAITING, event(EventKind.WAITING_ON_CUSTOMER, 1), "waiting on the customer; it already is"),
    (RESOLVED, event(EventKind.WAITING_ON_CUSTOMER, 1), "resolved conversation cannot be set"),
    *(
        (state, event(EventKind.ESCALATED, 1), "only a conversation with the bot can be")
        for state in (QUEUED, ASSIGNED, WAITING, RESOLVED)
    ),
    (BOT, event(EventKind.ASSIGNED, 1, agent_id="ben"), "cannot be assigned; escalate it first"),
    (RESOLVED, event(EventKind.ASSIGNED, 1, agent_id="ben"), "cannot be assigned; reopen it"),
    (QUEUED, event(EventKind.ASSIGNED, 1), "an assignment must name the agent"),
    (BOT, event(EventKind.UNASSIGNED, 1), "cannot be unassigned; nobody holds it"),
    (QUEUED, event(EventKind.UNASSIGNED, 1), "queued conversation cannot be unassigned; nobody"),
    (RESOLVED, event(EventKind.UNASSIGNED, 1), "cannot be unassigned; reopen it first"),
    (ASSIGNED, event(EventKind.UNASSIGNED, 1, agent_id="ben"), "held by 'ana'"),
    (RESOLVED, event(EventKind.TRANSFERRED, 1), "a resolved conversation cannot be transferred"),
    (RESOLVED, event(EventKind.RESOLVED, 1), "cannot be resolved; it already is"),
    *(
        (state, event(EventKind.REOPENED, 1), "only a resolved conversation can be")
        for state in OPEN_STATES
    ),
    (ASSIGNED, event(EventKind.CSAT_RATED, 1, rating=0), "a CSAT rating is 1 to 5, not 0"),
    (RESOLVED, event(EventKind.CSAT_RATED, 1, rating=6), "a CSAT rating is 1 to 5, not 6"),
]


@pytest.mark.parametrize(("state", "refused", "explanation"), REFUSALS)
def test_an_event_the_state_does_not_allow_is_refused_with_the_reason(
    state: ConversationState, refused: ConversationEvent, explanation: str
) -> None:
    with pytest.raises(InvalidTransition, match=explanation):
        advance(replay(HISTORY_REACHING[state]), refused)


def test_the_refusal_says_what_is_not_allowed_and_what_to_do() -> None:
    with pytest.raises(InvalidTransition) as refusal:
        advance(replay(RESOLVED_BY_ANA), event(EventKind.TRANSFERRED, 1))
    assert str(refusal.value) == "a resolved conversation cannot be transferred; reopen it first"


def test_a_history_must_start_with_routing() -> None:
    with pytest.raises(InvalidTransition, match="starts with a routed event, not assigned"):
        replay([event(EventKind.ASSIGNED, agent_id="ana")])
    with pytest.raises(InvalidTransition, match="starts with a routed event; there are none"):
        replay([])


def test_an_event_from_before_the_previous_one_is_refused() -> None:
    late_assignment = [event(EventKind.ROUTED, 10), event(EventKind.ASSIGNED, 9, agent_id="ana")]
    with pytest.raises(InvalidTransition, match="must not go back in time: assigned at"):
        replay(late_assignment)


def test_events_at_the_same_moment_are_in_order() -> None:
    assert replay([event(EventKind.ROUTED, 5), event(EventKind.RESOLVED, 5)]).state is RESOLVED


def test_an_event_time_without_a_time_zone_is_refused() -> None:
    naive = ConversationEvent(EventKind.ROUTED, datetime(2025, 6, 2, 9))
    with pytest.raises(InvalidTransition, match="must carry a time zone"):
        start(naive)


ANY_EVENT = st.builds(
    ConversationEvent,
    kind=st.sampled_from(EventKind),
    time=st.just(MONDAY_9),
    agent_id=st.sampled_from(["", "ana", "ben"]),
    to_bot=st.booleans(),
    rating=st.integers(0, 6),
)


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.lists(ANY_EVENT, max_size=30))
def test_whatever_happens_only_an_assigned_conversation_has_a_holder_among_the_active_ones(
    to_bot: bool, events: list[ConversationEvent]
) -> None:
    situation = start(event(EventKind.ROUTED, to_bot=to_bot))
    for happening in events:
        try:
            situation = advance(situation, happening)
        except InvalidTransition:
            continue
        if situation.state is ASSIGNED:
            assert situation.agent_id
        if situation.state in (BOT, QUEUED):
            assert situation.agent_id == ""
