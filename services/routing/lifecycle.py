"""The life of a conversation: which events may happen in which state, and where they lead.

Pure functions over immutable values: the routing service, the SLA clocks and the workers
replay the same history and must agree on every state it passes through.

Transitions (``holder`` is the agent holding the conversation, "" for nobody; "per holder"
means ASSIGNED when someone holds it, QUEUED otherwise; "-" means refused)::

    event                BOT           QUEUED        ASSIGNED      WAITING_ON_C.  RESOLVED
    ROUTED               -             -             -             -              -
    BOT_REPLY            =             =             =             =              -
    AGENT_REPLY          takeover (1)  =             =             =              = (2)
    CUSTOMER_REPLY       =             =             =             per holder     per holder
    WAITING_ON_CUSTOMER  -             WAITING       WAITING       -              -
    ESCALATED            QUEUED        -             -             -              -
    ASSIGNED (3)         -             ASSIGNED      ASSIGNED      = new holder   -
    UNASSIGNED (4)       -             -             QUEUED        = no holder    -
    TRANSFERRED          QUEUED (5)    QUEUED (5)    QUEUED (5)    QUEUED (5)     -
    RESOLVED             RESOLVED      RESOLVED      RESOLVED      RESOLVED       -
    REOPENED             -             -             -             -              per holder
    CSAT_RATED (6)       =             =             =             =              =
    POLICY_CHANGED       =             =             =             =              =
    SLA_WARNING (7)      =             =             =             =              =
    SLA_BREACHED (7)     =             =             =             =              =

``=`` keeps state and holder. ROUTED only starts a conversation (see ``start``); moving it
to another queue is a transfer.

1. A human replying to a conversation the bot holds has taken it over: it becomes ASSIGNED to
   the replying agent (QUEUED if the event names no agent).
2. A follow-up from an agent does not reopen a resolved conversation; a customer reply does.
3. Names the new holder. Refused for the bot (escalate first) so that a human phase always
   begins with an escalation, a transfer or a human reply.
4. Refused when nobody holds the conversation, or when the event names an agent other than
   the holder (a stale event).
5. The holder is cleared: the receiving queue decides who takes it.
6. The rating must be 1 to 5.
7. Recorded by the SLA watch at the moment a clock reached its threshold, which may come
   before events the watch found already recorded: such an event is slotted into the
   history by its time and changes nothing.

Events must not go back in time; equal times are fine. The holder survives resolution, so
a reopened conversation returns to the agent who had it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class ConversationState(StrEnum):
    BOT = "bot"
    QUEUED = "queued"
    ASSIGNED = "assigned"
    WAITING_ON_CUSTOMER = "waiting_on_customer"
    RESOLVED = "resolved"


class EventKind(StrEnum):
    ROUTED = "routed"
    BOT_REPLY = "bot_reply"
    AGENT_REPLY = "agent_reply"
    CUSTOMER_REPLY = "customer_reply"
    WAITING_ON_CUSTOMER = "waiting_on_customer"
    ESCALATED = "escalated"
    ASSIGNED = "assigned"
    UNASSIGNED = "unassigned"
    TRANSFERRED = "transferred"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    CSAT_RATED = "csat_rated"
    POLICY_CHANGED = "policy_changed"
    SLA_WARNING = "sla_warning"
    SLA_BREACHED = "sla_breached"


# Events the SLA watch records about the clocks; they never move the conversation.
SLA_EVENT_KINDS = frozenset({EventKind.SLA_WARNING, EventKind.SLA_BREACHED})


@dataclass(frozen=True)
class ConversationEvent:
    """Something that happened to a conversation; only the fields its kind uses are set."""

    kind: EventKind
    time: datetime
    agent_id: str = ""
    queue_id: str = ""
    policy_id: str = ""
    to_bot: bool = False
    rating: int = 0
    # SLA_WARNING and SLA_BREACHED: which clock (an ``sla.Metric`` value) and which of its
    # cycles (next response counts from 1; the other clocks have one, 0), then what the
    # escalation did.
    sla_metric: str = ""
    sla_cycle: int = 0
    raised_priority: int = 0
    moved_to_queue_id: str = ""
    notified_endpoint_id: str = ""


class InvalidTransition(ValueError):
    """An event that cannot happen in the conversation's current state, or out of order."""


@dataclass(frozen=True)
class Situation:
    """Where a conversation stands and who holds it ("" for nobody).

    ``last_event_time`` lets ``advance`` refuse an event from the past; it takes no part in
    equality, so two situations are the same when state and holder are.
    """

    state: ConversationState
    agent_id: str
    last_event_time: datetime | None = field(default=None, compare=False)


_DESCRIPTIONS = {
    ConversationState.BOT: "a conversation with the bot",
    ConversationState.QUEUED: "a queued conversation",
    ConversationState.ASSIGNED: "an assigned conversation",
    ConversationState.WAITING_ON_CUSTOMER: "a conversation waiting on the customer",
    ConversationState.RESOLVED: "a resolved conversation",
}
_LOWEST_RATING, _HIGHEST_RATING = 1, 5


def start(event: ConversationEvent) -> Situation:
    """The situation a routed conversation starts in: with the bot, or queued for a human."""
    _require_time_zone(event)
    if event.kind is not EventKind.ROUTED:
        raise InvalidTransition(f"a conversation starts with a routed event, not {event.kind}")
    state = ConversationState.BOT if event.to_bot else ConversationState.QUEUED
    return Situation(state, "", event.time)


def advance(situation: Situation, event: ConversationEvent) -> Situation:
    """The situation after ``event``; ``InvalidTransition`` says why it cannot happen."""
    _require_time_zone(event)
    last = situation.last_event_time
    if last is not None and event.time < last:
        raise InvalidTransition(
            f"events must not go back in time: {event.kind} at {event.time.isoformat()} "
            f"comes after an event at {last.isoformat()}"
        )
    state, holder = _next_state(situation, event)
    return Situation(state, holder, event.time)


def replay(events: Sequence[ConversationEvent]) -> Situation:
    """Where a conversation stands after its whole history, oldest event first."""
    if not events:
        raise InvalidTransition("a conversation starts with a routed event; there are none")
    situation = start(events[0])
    for event in events[1:]:
        situation = advance(situation, event)
    return situation


def _next_state(situation: Situation, event: ConversationEvent) -> tuple[ConversationState, str]:
    state, holder = situation.state, situation.agent_id
    unchanged = (state, holder)
    resolved = state is ConversationState.RESOLVED
    match event.kind:
        case EventKind.ROUTED:
            raise InvalidTransition(
                "a conversation is routed only once; transfer it to move it to another queue"
            )
        case EventKind.BOT_REPLY:
            if resolved:
                raise _refused(state, "answered by the bot", "reopen it first")
            return unchanged
        case EventKind.AGENT_REPLY:
            if state is ConversationState.BOT:
                return _open_state_for(event.agent_id), event.agent_id
            return unchanged
        case EventKind.CUSTOMER_REPLY:
            if resolved or state is ConversationState.WAITING_ON_CUSTOMER:
                return _open_state_for(holder), holder
            return unchanged
        case EventKind.WAITING_ON_CUSTOMER:
            if state in (ConversationState.QUEUED, ConversationState.ASSIGNED):
                return ConversationState.WAITING_ON_CUSTOMER, holder
            if state is ConversationState.WAITING_ON_CUSTOMER:
                raise _refused(state, "set waiting on the customer", "it already is")
            raise _refused(state, "set waiting on the customer", _first_step(state))
        case EventKind.ESCALATED:
            if state is ConversationState.BOT:
                return ConversationState.QUEUED, ""
            raise _refused(state, "escalated", "only a conversation with the bot can be")
        case EventKind.ASSIGNED:
            return _assign(state, event.agent_id)
        case EventKind.UNASSIGNED:
            return _unassign(state, holder, event.agent_id)
        case EventKind.TRANSFERRED:
            if resolved:
                raise _refused(state, "transferred", "reopen it first")
            return ConversationState.QUEUED, ""
        case EventKind.RESOLVED:
            if resolved:
                raise _refused(state, "resolved", "it already is")
            return ConversationState.RESOLVED, holder
        case EventKind.REOPENED:
            if resolved:
                return _open_state_for(holder), holder
            raise _refused(state, "reopened", "only a resolved conversation can be")
        case EventKind.CSAT_RATED:
            if not _LOWEST_RATING <= event.rating <= _HIGHEST_RATING:
                raise InvalidTransition(
                    f"a CSAT rating is {_LOWEST_RATING} to {_HIGHEST_RATING}, not {event.rating}"
                )
            return unchanged
        case EventKind.POLICY_CHANGED | EventKind.SLA_WARNING | EventKind.SLA_BREACHED:
            return unchanged


def _assign(state: ConversationState, agent_id: str) -> tuple[ConversationState, str]:
    if not agent_id:
        raise InvalidTransition("an assignment must name the agent")
    if state is ConversationState.WAITING_ON_CUSTOMER:
        return state, agent_id
    if state in (ConversationState.QUEUED, ConversationState.ASSIGNED):
        return ConversationState.ASSIGNED, agent_id
    raise _refused(state, "assigned", _first_step(state))


def _unassign(
    state: ConversationState, holder: str, agent_id: str
) -> tuple[ConversationState, str]:
    if state is ConversationState.RESOLVED:
        raise _refused(state, "unassigned", "reopen it first")
    if not holder:
        raise _refused(state, "unassigned", "nobody holds it")
    if agent_id and agent_id != holder:
        raise InvalidTransition(
            f"agent {agent_id!r} cannot be unassigned; the conversation is held by {holder!r}"
        )
    if state is ConversationState.WAITING_ON_CUSTOMER:
        return state, ""
    return ConversationState.QUEUED, ""


def _open_state_for(holder: str) -> ConversationState:
    return ConversationState.ASSIGNED if holder else ConversationState.QUEUED


def _first_step(state: ConversationState) -> str:
    """What must happen before a human can work on a conversation with the bot or resolved."""
    return "escalate it first" if state is ConversationState.BOT else "reopen it first"


def _refused(state: ConversationState, action: str, remedy: str) -> InvalidTransition:
    return InvalidTransition(f"{_DESCRIPTIONS[state]} cannot be {action}; {remedy}")


def _require_time_zone(event: ConversationEvent) -> None:
    # A naive time cannot be ordered against aware ones nor placed on a business calendar.
    if event.time.utcoffset() is None:
        raise InvalidTransition(f"the time of a {event.kind} event must carry a time zone")
