"""Conversations and assignments as callers see them, with their SLA clocks.

SLA clocks are never stored: each view replays the conversation's history against the
policies in force over its life, so a view is always as current as ``now``. Building views
reads but never writes, which keeps it apart from placement, which writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from services.routing import documents
from services.routing.config import Config
from services.routing.domain import Assignment, Channel, Conversation, SlaPolicy
from services.routing.lifecycle import ConversationEvent, ConversationState, EventKind
from services.routing.logic import clock_policy
from services.routing.placement import NO_DUE_TIME
from services.routing.repository import Store
from services.routing.sla import ClockReport, Metric, PolicyPeriod, sla_report


def conversation_view(
    store: Store, config: Config, row: Mapping[str, Any], now: datetime
) -> Conversation:
    """The whole conversation: its placement, history with notes, and SLA clocks."""
    events = store.events_of([row["conversation_id"]])
    sla = sla_reports(store, config, [row], events, now)[row["conversation_id"]]
    return Conversation(
        conversation_id=row["conversation_id"],
        customer_id=row["customer_id"],
        channel=Channel(row["channel"]),
        language=row["language"],
        topic=row["topic"],
        state=ConversationState(row["state"]),
        queue_id=row["queue_id"],
        agent_id=row["agent_id"],
        priority=row["priority"],
        sla_policy_id=row["sla_policy_id"],
        decision=documents.decision_from(row["conversation_id"], row["decision"]),
        events=tuple(event for event, _ in events[row["conversation_id"]]),
        notes=tuple(note for _, note in events[row["conversation_id"]]),
        sla=sla,
        csat_rating=row["csat_rating"],
    )


def assignments(
    store: Store, config: Config, rows: Sequence[Mapping[str, Any]], now: datetime
) -> list[Assignment]:
    """What a console shows for each conversation, in the order of ``rows``."""
    events = store.events_of([row["conversation_id"] for row in rows])
    sla = sla_reports(store, config, rows, events, now)
    return [
        Assignment(
            conversation_id=row["conversation_id"],
            customer_id=row["customer_id"],
            queue_id=row["queue_id"],
            channel=Channel(row["channel"]),
            priority=row["priority"],
            state=ConversationState(row["state"]),
            assign_time=row["assign_time"],
            sla=sla[row["conversation_id"]],
            segment_ids=tuple(row["segment_ids"]),
            topic=row["topic"],
        )
        for row in rows
    ]


def sla_reports(
    store: Store,
    config: Config,
    rows: Sequence[Mapping[str, Any]],
    events: Mapping[str, list[tuple[ConversationEvent, str]]],
    now: datetime | None,
) -> dict[str, tuple[ClockReport, ...]]:
    """The SLA clocks of each conversation by id, reading every policy's history once; as
    they stand at ``now``, or with None at each conversation's latest event."""
    policy_ids = {
        event.policy_id for history in events.values() for event, _ in history if event.policy_id
    }
    histories = store.policy_histories(sorted(policy_ids))
    reports = {}
    for row in rows:
        history = [event for event, _ in events[row["conversation_id"]]]
        moment = now or max((event.time for event in history), default=None)
        found = clock_reports(config, row, history, histories, moment) if moment else []
        reports[row["conversation_id"]] = tuple(found)
    return reports


def clock_reports(
    config: Config,
    row: Mapping[str, Any],
    history: Sequence[ConversationEvent],
    histories: Mapping[str, Sequence[Any]],
    now: datetime,
) -> list[ClockReport]:
    """One conversation's SLA clocks, given its history and its policies' revisions."""
    queue = config.queues.get(row["queue_id"])
    queue_calendar = queue.calendar_id if queue else ""
    return sla_report(history, _periods(history, histories, config, queue_calendar), now)


def due_time(reports: Sequence[ClockReport], metric: Metric) -> datetime | None:
    """When ``metric`` falls due, if the reports have a clock for it."""
    return next((r.due_time for r in reports if r.metric == metric), None)


def urgency(assignment: Assignment) -> tuple[int, datetime]:
    """Sort key for an agent's console: highest priority first, then the earliest first
    response due."""
    due = next(
        (c.due_time for c in assignment.sla if c.metric == Metric.FIRST_RESPONSE and c.due_time),
        NO_DUE_TIME,
    )
    return (-assignment.priority, due)


def policy_in_force(
    history: Sequence[ConversationEvent], histories: Mapping[str, Sequence[Any]], moment: datetime
) -> SlaPolicy | None:
    """The SLA policy, at its revision then, that measured the conversation at ``moment``."""
    found = None
    for start, policy in _policy_revisions(history, histories):
        if start > moment:
            break
        found = policy
    return found


def _periods(
    history: Sequence[ConversationEvent],
    histories: Mapping[str, Sequence[Any]],
    config: Config,
    queue_calendar: str,
) -> list[PolicyPeriod]:
    """The SLA policy in force over a conversation's life, as the clocks measure it."""
    return [
        PolicyPeriod(
            start,
            None if policy is None else clock_policy(policy, config.calendars, queue_calendar),
        )
        for start, policy in _policy_revisions(history, histories)
    ]


def _policy_revisions(
    history: Sequence[ConversationEvent], histories: Mapping[str, Sequence[Any]]
) -> list[tuple[datetime, SlaPolicy | None]]:
    """The policy it was routed with or changed to, each at the revision current at each
    moment (edits mid-conversation), from each moment on; None for no policy."""
    periods: list[tuple[datetime, SlaPolicy | None]] = []
    assigned = [
        (event.time, event.policy_id)
        for event in history
        if event.kind in (EventKind.ROUTED, EventKind.POLICY_CHANGED)
    ]
    for index, (start, policy_id) in enumerate(assigned):
        end = assigned[index + 1][0] if index + 1 < len(assigned) else None
        revisions = list(histories.get(policy_id, []))
        if not policy_id or not revisions:
            periods.append((start, None))
            continue
        in_force = [r for r in revisions if r.revise_time <= start] or revisions[:1]
        moments = [(start, in_force[-1])] + [
            (r.revise_time, r)
            for r in revisions
            if r.revise_time > start and (end is None or r.revise_time < end)
        ]
        for moment, revision in moments:
            policy = documents.policy_from(policy_id, revision.document, revision=revision.revision)
            periods.append((moment, policy))
    return periods
