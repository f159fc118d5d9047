"""The SLA watch on one conversation: record the warnings and breaches its clocks reached and
apply the escalations of the policy in force when they did.

It works inside the caller's write transaction, on a conversation row the caller locked, so
two watchers (or a rerun after a crash) record each threshold once: the second one finds the
first one's events in the history it reads. A unique index on the events backs that up.

Which conversations to look at comes from ``sla_next_check_time``: every event brings it
forward (``Store.add_events``), and this module sets it to the next threshold still ahead of
a counting clock once it has recorded what was due, so a run of the watch reads only the
conversations whose clocks changed or reach a threshold, never every open one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from services.outreach.outbox import NewDelivery
from services.routing import placement, views
from services.routing.config import Config
from services.routing.domain import SlaEscalation, SlaPolicy
from services.routing.lifecycle import ConversationEvent, ConversationState, EventKind
from services.routing.repository import Store
from services.routing.sla import Alert, Metric, Threshold, WatchPlan, watch_plan

_KINDS = {Threshold.WARNING: EventKind.SLA_WARNING, Threshold.BREACH: EventKind.SLA_BREACHED}
# How webhooks and notes name each threshold.
_STATUS = {Threshold.WARNING: "warning", Threshold.BREACH: "breached"}
_NOTE_LENGTH = 500  # the events table's note column


def check(store: Store, config: Config, row: dict[str, Any], now: datetime) -> list[Alert]:
    """Record what is due on the conversation ``row`` (locked by the caller) by ``now``,
    escalate, and set when to look again; returns the thresholds recorded."""
    conversation_id = row["conversation_id"]
    if not row["sla_policy_id"]:
        # Never measured by a policy: a transfer can change the policy but not drop it.
        store.update_conversation(conversation_id, sla_next_check_time=None)
        return []
    history, policies, plan = _plan(store, config, row, now)
    recorded = plan.due
    moved = False
    for alert in recorded:
        policy = views.policy_in_force(history, policies, alert.time)
        moved |= _record(store, config, row, alert, policy, now)
    if moved:
        # The clocks may count on the new queue's calendar.
        _, _, plan = _plan(store, config, row, now)
    next_check = now if plan.due else plan.next_check
    store.update_conversation(conversation_id, sla_next_check_time=next_check)
    return list(recorded)


def _plan(
    store: Store, config: Config, row: Mapping[str, Any], now: datetime
) -> tuple[list[ConversationEvent], Mapping[str, Sequence[Any]], WatchPlan]:
    events = store.events_of([row["conversation_id"]])
    history = [event for event, _ in events[row["conversation_id"]]]
    policies = store.policy_histories(sorted({e.policy_id for e in history if e.policy_id}))
    reports = views.clock_reports(config, row, history, policies, now)
    recorded = {
        (Metric(event.sla_metric), _threshold(event.kind), event.sla_cycle)
        for event in history
        if event.sla_metric
    }
    return history, policies, watch_plan(reports, recorded, now)


def _threshold(kind: EventKind) -> Threshold:
    return Threshold.WARNING if kind is EventKind.SLA_WARNING else Threshold.BREACH


def _record(
    store: Store,
    config: Config,
    row: dict[str, Any],
    alert: Alert,
    policy: SlaPolicy | None,
    now: datetime,
) -> bool:
    """Record one threshold and apply its escalation; whether the conversation moved."""
    status = _STATUS[alert.threshold]
    queue_id, holder = row["queue_id"], row["agent_id"]
    notes = [f"{alert.metric.value.replace('_', ' ')} {status} ({_target_text(alert)})"]
    escalation = None
    if policy is not None:
        escalation = policy.on_warning if alert.threshold is Threshold.WARNING else policy.on_breach
    raised, moved_to, notified = 0, "", ""
    if escalation is not None:
        if alert.report.running:
            raised = _raise_priority(store, row, escalation, notes)
            moved_to = _move(store, config, row, escalation, now, notes, status)
        elif (
            escalation.raise_priority_to
            or escalation.move_to_overflow
            or escalation.move_to_queue_id
        ):
            # The watch ran after the reply that stopped the clock: nothing left to hurry,
            # but whoever is notified still hears that the threshold was reached.
            notes.append("the clock had already stopped: priority and queue left as they are")
        notified = _notify(store, row, alert, policy, escalation, now, notes)
    event = ConversationEvent(
        _KINDS[alert.threshold],
        alert.time,
        agent_id=holder,
        queue_id=queue_id,
        policy_id=policy.policy_id if policy is not None else row["sla_policy_id"],
        sla_metric=alert.metric.value,
        sla_cycle=alert.cycle,
        raised_priority=raised,
        moved_to_queue_id=moved_to,
        notified_endpoint_id=notified,
    )
    store.add_sla_event(row["conversation_id"], event, "; ".join(notes)[:_NOTE_LENGTH])
    return bool(moved_to)


def _target_text(alert: Alert) -> str:
    target = alert.report.target
    minutes = int(target.total_seconds() // 60)
    text = f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"
    if alert.threshold is Threshold.WARNING:
        return f"warning threshold of the {text} target"
    return f"{text} target"


def _raise_priority(
    store: Store, row: dict[str, Any], escalation: SlaEscalation, notes: list[str]
) -> int:
    wanted = escalation.raise_priority_to
    if not wanted:
        return 0
    if row["priority"] >= wanted:
        notes.append(f"priority {row['priority']} kept (at least {wanted})")
        return 0
    notes.append(f"priority raised from {row['priority']} to {wanted}")
    row["priority"] = wanted
    store.update_conversation(row["conversation_id"], priority=wanted)
    return wanted


def _move(
    store: Store,
    config: Config,
    row: dict[str, Any],
    escalation: SlaEscalation,
    now: datetime,
    notes: list[str],
    status: str,
) -> str:
    if not (escalation.move_to_overflow or escalation.move_to_queue_id):
        return ""
    target = escalation.move_to_queue_id
    if escalation.move_to_overflow:
        overflow = config.queues[row["queue_id"]].overflow
        if overflow is None:
            notes.append(f"queue {row['queue_id']!r} has no overflow queue: not moved")
            return ""
        target = overflow.queue_id
    state = ConversationState(row["state"])
    if state is not ConversationState.QUEUED or row["agent_id"]:
        holder = f"held by {row['agent_id']}" if row["agent_id"] else state.value.replace("_", " ")
        notes.append(f"{holder}: not moved to {target!r}")
        return ""
    if target == row["queue_id"]:
        notes.append(f"already in queue {target!r}")
        return ""
    if target not in config.queues:
        notes.append(f"queue {target!r} no longer exists: not moved")
        return ""
    # The move happens now, after every event recorded so far.
    moment = max(now, row["last_event_time"])
    source = row["queue_id"]
    placement.move(store, config, row, target, moment, f"SLA {status}: escalated from {source!r}")
    notes.append(f"moved to queue {target!r}")
    return target


def _notify(
    store: Store,
    row: Mapping[str, Any],
    alert: Alert,
    policy: SlaPolicy | None,
    escalation: SlaEscalation,
    now: datetime,
    notes: list[str],
) -> str:
    endpoint_id = escalation.notify_endpoint_id
    if not endpoint_id:
        return ""
    if not store.outreach_endpoint_exists(endpoint_id):
        notes.append(f"outreach endpoint {endpoint_id!r} no longer exists: not notified")
        return ""
    status = _STATUS[alert.threshold]
    conversation_id = row["conversation_id"]
    due = alert.report.due_time
    payload = {
        "conversation_id": conversation_id,
        "customer_id": row["customer_id"],
        "queue_id": row["queue_id"],
        "agent_id": row["agent_id"],
        "metric": alert.metric.value,
        "status": status,
        "reached_time": alert.time.isoformat(),
        "due_time": due.isoformat() if due else None,
        # False when the clock had already stopped (met late) before the watch ran.
        "clock_running": alert.report.running,
        "policy_id": policy.policy_id if policy is not None else row["sla_policy_id"],
        "priority": row["priority"],
    }
    delivery = NewDelivery(
        endpoint_id=endpoint_id,
        event_type=f"sla.{status}",
        idempotency_key=(f"sla:{conversation_id}:{alert.metric.value}:{status}:{alert.cycle}"),
        payload=payload,
        customer_id=row["customer_id"] or None,
    )
    store.enqueue_webhook(delivery, now)
    notes.append(f"notified outreach endpoint {endpoint_id!r}")
    return endpoint_id
