"""Where a conversation waits and which agent gets it.

Routing, transfers, reopening, escalation and the fallback and overflow timers all end here,
so a conversation is placed by one set of rules whichever way it arrives. Each function works
inside the caller's write transaction: it updates the conversation ``row`` it is given and
the table together, so the caller can keep deciding on the row without reading it again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from services.routing import documents
from services.routing.config import Config
from services.routing.domain import AgentStatus, Channel, RouteStep, Strategy
from services.routing.lifecycle import ConversationEvent, ConversationState, EventKind
from services.routing.logic import Candidate, Need, can_serve, has_room, pick_agent
from services.routing.repository import PlacementStore

# A conversation moved by overflow more often than this stays where it is: a loop of
# overflowing queues must not spin.
MAX_OVERFLOW_HOPS = 5
# Stand-in for "no first-response due time" in the serving order: after every real one.
NO_DUE_TIME = datetime(9999, 1, 1, tzinfo=UTC)


def enter(
    store: PlacementStore,
    config: Config,
    row: dict[str, Any],
    steps: list[dict[str, Any]],
    attributes: Mapping[str, Any],
    now: datetime,
) -> list[str]:
    """Place a conversation that needs a human: through the fallback steps, else into its
    queue (and on through overflow), assigning an agent when one is free. Updates ``row``
    and the table; returns what happened, in words."""
    notes: list[str] = []
    final_queue = row["queue_id"]
    remaining = list(steps)
    while remaining:
        step = documents.step_from(remaining.pop(0))
        deadline = now + step.timeout
        if step.queue_id:
            row["queue_id"] = step.queue_id
            if _try_assign(store, config, row, now):
                notes.append(f"assigned to {row['agent_id']} from queue {step.queue_id!r}")
                return notes
            _wait(store, row, remaining, final_queue, deadline)
            notes.append(f"waiting in queue {step.queue_id!r} until {deadline.isoformat()}")
            return notes
        agent_id = step.agent_id or _owner(attributes, step.owner_attribute)
        agent = config.agents.get(agent_id)
        if agent is None:
            notes.append(f"no named agent for step {_step_name(step)}: skipped")
            continue
        presence = store.presence(agent_id, lock=True)
        need = need_of(config, row)
        if presence.status != AgentStatus.ONLINE.value or not can_serve(agent, need):
            notes.append(f"named agent {agent_id} is {presence.status}: skipped")
            continue
        counts = store.open_counts([agent_id]).get(agent_id, {})
        candidate = Candidate(agent, counts.get(row["channel"], 0), sum(counts.values()), None)
        if has_room(candidate, need.channel) and claim(store, row, agent_id, now):
            notes.append(f"assigned to named agent {agent_id}")
            return notes
        row["queue_id"] = final_queue
        row["reserved_agent_id"] = agent_id
        _wait(store, row, remaining, final_queue, deadline)
        notes.append(f"held for named agent {agent_id} (at capacity) until {deadline.isoformat()}")
        return notes
    row["queue_id"] = final_queue
    row["reserved_agent_id"] = ""
    notes += settle_in_queue(store, config, row, now)
    return notes


def settle_in_queue(
    store: PlacementStore, config: Config, row: dict[str, Any], now: datetime
) -> list[str]:
    """Assign from the row's queue, follow overflow when nobody could ever take it, and
    set the overflow timer otherwise."""
    notes: list[str] = []
    for _ in range(MAX_OVERFLOW_HOPS):
        queue = config.queues[row["queue_id"]]
        if _try_assign(store, config, row, now):
            notes.append(f"assigned to {row['agent_id']} in queue {queue.queue_id!r}")
            return notes
        overflow = queue.overflow
        if overflow and overflow.when_no_agent_online and not _anyone_online(store, config, row):
            notes.append(
                f"no online agent can serve queue {queue.queue_id!r}: "
                f"overflow to {overflow.queue_id!r}"
            )
            _move(store, row, overflow.queue_id, now, notes[-1])
            continue
        break
    queue = config.queues[row["queue_id"]]
    timer = None
    if queue.overflow is not None and queue.overflow.after:
        timer = row["enqueue_time"] + queue.overflow.after
    row["pending_steps"], row["timer_time"] = [], timer
    store.update_conversation(
        row["conversation_id"],
        queue_id=row["queue_id"],
        reserved_agent_id="",
        pending_steps=[],
        timer_time=timer,
    )
    notes.append(f"waiting in queue {queue.queue_id!r}")
    return notes


def apply_timer(
    store: PlacementStore,
    config: Config,
    row: dict[str, Any],
    now: datetime,
    attributes_for_steps: Callable[[Mapping[str, Any]], Mapping[str, Any]],
) -> bool:
    """Act on a conversation whose fallback step or queue overflow timed out: on to the
    remaining steps, or over to the overflow queue. ``False`` when it no longer waits (an
    agent has it, or it left the queue) and the stale timer is only cleared.

    ``attributes_for_steps`` reads the customer again for steps that name the account owner;
    it is called only when steps remain."""
    if row["state"] != ConversationState.QUEUED.value or row["agent_id"]:
        store.update_conversation(row["conversation_id"], timer_time=None, pending_steps=[])
        return False
    steps = list(row["pending_steps"])
    if steps:
        final = steps.pop()["final_queue"]
        note = f"fallback step timed out in {row['queue_id']!r}"
        if row["reserved_agent_id"]:
            note = f"named agent {row['reserved_agent_id']} did not take it in time"
        row["reserved_agent_id"] = ""
        row["queue_id"] = final
        store.add_events(
            row["conversation_id"],
            [ConversationEvent(EventKind.TRANSFERRED, now, queue_id=final)],
            note=note,
        )
        row["enqueue_time"] = now
        store.update_conversation(row["conversation_id"], enqueue_time=now)
        enter(store, config, row, steps, attributes_for_steps(row), now)
        return True
    queue = config.queues.get(row["queue_id"])
    if queue is None or queue.overflow is None:
        store.update_conversation(row["conversation_id"], timer_time=None)
        return True
    move(
        store,
        config,
        row,
        queue.overflow.queue_id,
        now,
        f"overflow after {queue.overflow.after} unassigned in {queue.queue_id!r}",
    )
    return True


def move(
    store: PlacementStore,
    config: Config,
    row: dict[str, Any],
    queue_id: str,
    now: datetime,
    note: str,
) -> list[str]:
    """Move a waiting conversation to another queue the way overflow does (a TRANSFERRED
    event with ``note``, its fallback steps dropped) and place it there."""
    _move(store, row, queue_id, now, note)
    return settle_in_queue(store, config, row, now)


def need_of(config: Config, row: Mapping[str, Any]) -> Need:
    """What an agent must offer to take this conversation in its current queue."""
    queue = config.queues[row["queue_id"]]
    return Need(
        channel=Channel(row["channel"]),
        skills=frozenset(queue.required_skills) | frozenset(row["required_skills"]),
        language=row["language"],
        queue_languages=queue.languages,
    )


def claim(store: PlacementStore, row: dict[str, Any], agent_id: str, now: datetime) -> bool:
    """Assign the conversation to ``agent_id`` unless someone else got it first."""
    values = store.claim(row["conversation_id"], agent_id, row["queue_id"], now)
    if values is None:
        return False
    row.update(values)
    store.add_events(
        row["conversation_id"], [ConversationEvent(EventKind.ASSIGNED, now, agent_id=agent_id)]
    )
    return True


def release(store: PlacementStore, row: dict[str, Any], now: datetime, note: str) -> None:
    """Take a conversation from its agent and put it back in its queue, keeping its
    place (it does not go behind conversations that came later)."""
    agent_id = row["agent_id"]
    state = (
        ConversationState.QUEUED.value
        if row["state"] == ConversationState.ASSIGNED.value
        else row["state"]
    )
    store.update_conversation(row["conversation_id"], agent_id="", state=state, assign_time=None)
    store.add_events(
        row["conversation_id"],
        [ConversationEvent(EventKind.UNASSIGNED, now, agent_id=agent_id)],
        note=note,
    )
    row.update(agent_id="", state=state, assign_time=None)


def _wait(
    store: PlacementStore,
    row: dict[str, Any],
    remaining: list[dict[str, Any]],
    final_queue: str,
    deadline: datetime,
) -> None:
    # The final queue rides along as the last step without a timeout.
    row["pending_steps"] = [*remaining, {"final_queue": final_queue}]
    row["timer_time"] = deadline
    store.update_conversation(
        row["conversation_id"],
        queue_id=row["queue_id"],
        reserved_agent_id=row["reserved_agent_id"],
        pending_steps=row["pending_steps"],
        timer_time=deadline,
    )


def _move(
    store: PlacementStore, row: dict[str, Any], queue_id: str, now: datetime, note: str
) -> None:
    row["queue_id"] = queue_id
    row["enqueue_time"] = now
    store.update_conversation(row["conversation_id"], queue_id=queue_id, enqueue_time=now)
    store.add_events(
        row["conversation_id"],
        [ConversationEvent(EventKind.TRANSFERRED, now, queue_id=queue_id)],
        note=note,
    )


def _try_assign(store: PlacementStore, config: Config, row: dict[str, Any], now: datetime) -> bool:
    queue = config.queues[row["queue_id"]]
    need = need_of(config, row)
    candidates = _candidates(store, config, need)
    last = store.queue_cursor(queue.queue_id)
    chosen = pick_agent(candidates, need, queue.strategy, last)
    if chosen is None:
        return False
    if queue.strategy == Strategy.ROUND_ROBIN:
        store.save_queue_cursor(queue.queue_id, chosen.agent_id)
    return claim(store, row, chosen.agent_id, now)


def _candidates(store: PlacementStore, config: Config, need: Need) -> list[Candidate]:
    presences = store.presences()
    online = AgentStatus.ONLINE.value
    able = [
        agent
        for agent in config.able_agents(need)
        if agent.agent_id in presences and presences[agent.agent_id].status == online
    ]
    if not able:
        return []
    store.lock_agents([agent.agent_id for agent in able])
    counts = store.open_counts([agent.agent_id for agent in able])
    return [
        Candidate(
            agent,
            counts.get(agent.agent_id, {}).get(need.channel.value, 0),
            sum(counts.get(agent.agent_id, {}).values()),
            presences[agent.agent_id].last_assign_time,
        )
        for agent in able
    ]


def _anyone_online(store: PlacementStore, config: Config, row: Mapping[str, Any]) -> bool:
    presences = store.presences()
    online = AgentStatus.ONLINE.value
    return any(
        agent.agent_id in presences and presences[agent.agent_id].status == online
        for agent in config.able_agents(need_of(config, row))
    )


def _owner(attributes: Mapping[str, Any], key: str) -> str:
    custom = attributes.get("attributes")
    value = custom.get(key) if isinstance(custom, Mapping) else None
    return value if isinstance(value, str) else ""


def _step_name(step: RouteStep) -> str:
    if step.owner_attribute:
        return f"owner from attributes.{step.owner_attribute}"
    return step.agent_id or step.queue_id
