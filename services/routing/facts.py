"""What reports need to know about one conversation, folded from its history.

A pure function of the events and the SLA clocks, recomputed whenever a write adds events,
so the figures always agree with the history and a scorecard never replays events.

Decisions the figures rest on:

- First response is the wait for a human: from ROUTED for a conversation routed to people,
  or from when a bot-first conversation first left the bot (an escalation or a transfer) to
  the first human reply after that. A human taking over from the bot by replying waited 0.
- Resolution time runs from ROUTED to the last RESOLVED; a reopened conversation that is
  open again has none until it is resolved again.
- A bot-first conversation was escalated when it left the bot for people in any way (an
  escalation, a transfer, a human taking over); it was contained when it was resolved
  with no human ever taking part.
- Handling time is the time a human agent held the conversation while it was not resolved.
- The SLA verdicts are the clocks' own, judged at the latest event: met, breached, or
  undecided (None) while a clock still runs on track or there is no target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.routing.lifecycle import (
    SLA_EVENT_KINDS,
    ConversationEvent,
    ConversationState,
    EventKind,
    Situation,
    advance,
    start,
)
from services.routing.sla import ClockReport, Metric, SlaStatus

_HUMAN_PHASE_STARTS = frozenset({EventKind.ESCALATED, EventKind.TRANSFERRED})
_BOT_OR_DONE = frozenset({ConversationState.BOT, ConversationState.RESOLVED})


@dataclass(frozen=True)
class ConversationFacts:
    route_time: datetime
    bot_first: bool
    first_response_seconds: float | None
    resolution_seconds: float | None
    first_response_met: bool | None
    resolution_met: bool | None
    csat_rating: int
    human_involved: bool
    escalated: bool
    reopened: bool
    handling_seconds: float


def conversation_facts(
    history: Sequence[ConversationEvent], clocks: Sequence[ClockReport]
) -> ConversationFacts:
    """The facts of a conversation whose ``history`` (oldest first, starting with ROUTED)
    produced the SLA ``clocks`` as they stood at its latest event."""
    routed = history[0]
    moves = [event for event in history if event.kind not in SLA_EVENT_KINDS]
    situation = start(routed)
    wait_start: datetime | None = None if routed.to_bot else routed.time
    first_response: timedelta | None = None
    resolved_at: datetime | None = None
    handling = timedelta(0)
    human_involved = escalated = reopened = False
    csat = 0
    for event in moves[1:]:
        if _held_by_human(situation):
            handling += event.time - (situation.last_event_time or event.time)
        before = situation
        situation = advance(situation, event)
        if event.kind in _HUMAN_PHASE_STARTS and wait_start is None:
            wait_start = event.time
        if before.state == ConversationState.BOT and situation.state not in _BOT_OR_DONE:
            escalated = True
        if event.kind == EventKind.AGENT_REPLY:
            human_involved = True
            if first_response is None:
                first_response = event.time - (wait_start or event.time)
        if event.kind == EventKind.ASSIGNED:
            human_involved = True
        if event.kind == EventKind.CSAT_RATED:
            csat = event.rating
        resolved_now = situation.state == ConversationState.RESOLVED
        if resolved_now and before.state != ConversationState.RESOLVED:
            resolved_at = event.time
        elif before.state == ConversationState.RESOLVED and not resolved_now:
            reopened, resolved_at = True, None
    verdicts = {clock.metric: _verdict(clock) for clock in clocks}
    return ConversationFacts(
        route_time=routed.time,
        bot_first=routed.to_bot,
        first_response_seconds=_seconds(first_response),
        resolution_seconds=_seconds(resolved_at - routed.time if resolved_at else None),
        first_response_met=verdicts.get(Metric.FIRST_RESPONSE),
        resolution_met=verdicts.get(Metric.RESOLUTION),
        csat_rating=csat,
        human_involved=human_involved,
        escalated=escalated,
        reopened=reopened,
        handling_seconds=handling.total_seconds(),
    )


def _held_by_human(situation: Situation) -> bool:
    return bool(situation.agent_id) and situation.state != ConversationState.RESOLVED


def _verdict(clock: ClockReport) -> bool | None:
    if clock.status == SlaStatus.MET:
        return True
    if clock.status == SlaStatus.BREACHED:
        return False
    return None


def _seconds(duration: timedelta | None) -> float | None:
    return None if duration is None else duration.total_seconds()
