"""Configuration as stored JSON documents and back: durations in seconds, enums by value.

Identity and bookkeeping (ids, revisions, times) live in table columns, not documents, so
two revisions with equal documents are the same definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from services.routing.business_hours import BusinessCalendar, OpenInterval, parse_day
from services.routing.domain import (
    Agent,
    Calendar,
    Channel,
    Decision,
    Overflow,
    Queue,
    RouteStep,
    RoutingAction,
    RoutingRule,
    RoutingRules,
    SlaEscalation,
    SlaPolicy,
    SlaTarget,
    Strategy,
    TargetClock,
)
from services.routing.lifecycle import ConversationState


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _duration(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def calendar_document(calendar: Calendar) -> dict[str, Any]:
    hours = calendar.hours
    return {
        "display_name": calendar.display_name,
        "time_zone": hours.time_zone,
        "always_open": hours.always_open,
        "weekly_hours": [
            [interval.weekday, interval.start_minute, interval.end_minute]
            for interval in hours.weekly_hours
        ],
        "holidays": sorted(day.isoformat() for day in hours.holidays),
    }


def calendar_from(key: str, document: Mapping[str, Any], **stamps: Any) -> Calendar:
    hours = BusinessCalendar(
        time_zone=document["time_zone"],
        always_open=document["always_open"],
        weekly_hours=tuple(OpenInterval(*interval) for interval in document["weekly_hours"]),
        holidays=frozenset(parse_day(day) for day in document["holidays"]),
    )
    return Calendar(key, document["display_name"], hours, **stamps)


def _target_document(target: SlaTarget | None) -> dict[str, Any] | None:
    if target is None:
        return None
    return {"seconds": target.duration.total_seconds(), "clock": target.clock.value}


def _target_from(document: Mapping[str, Any] | None) -> SlaTarget | None:
    if document is None:
        return None
    return SlaTarget(timedelta(seconds=document["seconds"]), TargetClock(document["clock"]))


def policy_document(policy: SlaPolicy) -> dict[str, Any]:
    return {
        "display_name": policy.display_name,
        "calendar_id": policy.calendar_id,
        "first_response": _target_document(policy.first_response),
        "next_response": _target_document(policy.next_response),
        "resolution": _target_document(policy.resolution),
        "warning_percent": policy.warning_percent,
        "pause_states": sorted(state.value for state in policy.pause_states),
        "on_warning": _escalation_document(policy.on_warning),
        "on_breach": _escalation_document(policy.on_breach),
        # Queues the escalations move conversations to may not be deleted under them.
        "references": [["queue", key] for key in sorted(escalation_queues(policy))],
    }


def escalation_queues(policy: SlaPolicy) -> set[str]:
    """The queues a policy's escalations name explicitly."""
    return {
        escalation.move_to_queue_id
        for escalation in (policy.on_warning, policy.on_breach)
        if escalation is not None and escalation.move_to_queue_id
    }


def _escalation_document(escalation: SlaEscalation | None) -> dict[str, Any] | None:
    if escalation is None:
        return None
    return {
        "raise_priority_to": escalation.raise_priority_to,
        "move_to_overflow": escalation.move_to_overflow,
        "move_to_queue_id": escalation.move_to_queue_id,
        "notify_endpoint_id": escalation.notify_endpoint_id,
    }


def _escalation_from(document: Mapping[str, Any] | None) -> SlaEscalation | None:
    if document is None:
        return None
    return SlaEscalation(
        raise_priority_to=document["raise_priority_to"],
        move_to_overflow=document["move_to_overflow"],
        move_to_queue_id=document["move_to_queue_id"],
        notify_endpoint_id=document["notify_endpoint_id"],
    )


def policy_from(key: str, document: Mapping[str, Any], **stamps: Any) -> SlaPolicy:
    return SlaPolicy(
        policy_id=key,
        display_name=document["display_name"],
        calendar_id=document["calendar_id"],
        first_response=_target_from(document["first_response"]),
        next_response=_target_from(document["next_response"]),
        resolution=_target_from(document["resolution"]),
        warning_percent=document["warning_percent"],
        pause_states=frozenset(ConversationState(state) for state in document["pause_states"]),
        # Revisions stored before escalations existed have none.
        on_warning=_escalation_from(document.get("on_warning")),
        on_breach=_escalation_from(document.get("on_breach")),
        **stamps,
    )


def queue_document(queue: Queue) -> dict[str, Any]:
    overflow = queue.overflow
    return {
        "display_name": queue.display_name,
        "required_skills": list(queue.required_skills),
        "languages": list(queue.languages),
        "calendar_id": queue.calendar_id,
        "strategy": queue.strategy.value,
        "overflow": None
        if overflow is None
        else {
            "queue_id": overflow.queue_id,
            "after_seconds": _seconds(overflow.after),
            "when_no_agent_online": overflow.when_no_agent_online,
        },
    }


def queue_from(key: str, document: Mapping[str, Any], **stamps: Any) -> Queue:
    overflow = document["overflow"]
    return Queue(
        queue_id=key,
        display_name=document["display_name"],
        required_skills=tuple(document["required_skills"]),
        languages=tuple(document["languages"]),
        calendar_id=document["calendar_id"],
        strategy=Strategy(document["strategy"]),
        overflow=None
        if overflow is None
        else Overflow(
            overflow["queue_id"],
            _duration(overflow["after_seconds"]),
            overflow["when_no_agent_online"],
        ),
        **stamps,
    )


def agent_document(agent: Agent) -> dict[str, Any]:
    return {
        "display_name": agent.display_name,
        "skills": list(agent.skills),
        "languages": list(agent.languages),
        "capacity": {channel.value: limit for channel, limit in sorted(agent.capacity.items())},
        "teams": list(agent.teams),
    }


def agent_from(key: str, document: Mapping[str, Any], **stamps: Any) -> Agent:
    return Agent(
        agent_id=key,
        display_name=document["display_name"],
        skills=tuple(document["skills"]),
        languages=tuple(document["languages"]),
        capacity={Channel(name): limit for name, limit in document["capacity"].items()},
        teams=tuple(document["teams"]),
        **stamps,
    )


def step_document(step: RouteStep) -> dict[str, Any]:
    return {
        "timeout_seconds": step.timeout.total_seconds(),
        "agent_id": step.agent_id,
        "owner_attribute": step.owner_attribute,
        "queue_id": step.queue_id,
    }


def step_from(document: Mapping[str, Any]) -> RouteStep:
    return RouteStep(
        timeout=timedelta(seconds=document["timeout_seconds"]),
        agent_id=document["agent_id"],
        owner_attribute=document["owner_attribute"],
        queue_id=document["queue_id"],
    )


def _action_document(action: RoutingAction) -> dict[str, Any]:
    return {
        "queue_id": action.queue_id,
        "sla_policy_id": action.sla_policy_id,
        "priority": action.priority,
        "required_skills": list(action.required_skills),
        "fallback_chain": [step_document(step) for step in action.fallback_chain],
        "bot_first": action.bot_first,
    }


def _action_from(document: Mapping[str, Any]) -> RoutingAction:
    return RoutingAction(
        queue_id=document["queue_id"],
        sla_policy_id=document["sla_policy_id"],
        priority=document["priority"],
        required_skills=tuple(document["required_skills"]),
        fallback_chain=tuple(step_from(step) for step in document["fallback_chain"]),
        bot_first=document["bot_first"],
    )


def rules_document(rules: RoutingRules) -> dict[str, Any]:
    assert rules.default_action is not None
    return {
        "rules": [
            {
                "rule_id": rule.rule_id,
                "display_name": rule.display_name,
                "condition": dict(rule.condition),
                "action": _action_document(rule.action),
            }
            for rule in rules.rules
        ],
        "default_action": _action_document(rules.default_action),
    }


def rules_from(
    document: Mapping[str, Any], revision: int, update_time: datetime, actor: str
) -> RoutingRules:
    return RoutingRules(
        rules=tuple(
            RoutingRule(
                rule_id=rule["rule_id"],
                display_name=rule["display_name"],
                condition=rule["condition"],
                action=_action_from(rule["action"]),
            )
            for rule in document["rules"]
        ),
        default_action=_action_from(document["default_action"]),
        revision=revision,
        update_time=update_time,
        actor=actor,
    )


def decision_document(decision: Decision) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "queue_id": decision.queue_id,
        "priority": decision.priority,
        "sla_policy_id": decision.sla_policy_id,
        "first_response_due": when(decision.first_response_due),
        "resolution_due": when(decision.resolution_due),
        "agent_id": decision.agent_id,
        "segment_ids": list(decision.segment_ids),
        "rule_id": decision.rule_id,
        "rules_revision": decision.rules_revision,
        "explanation": decision.explanation,
        "bot_first": decision.bot_first,
        "required_skills": list(decision.required_skills),
        "route_time": decision.route_time.isoformat(),
        "reserved_agent_id": decision.reserved_agent_id,
    }


def decision_from(conversation_id: str, document: Mapping[str, Any]) -> Decision:
    def when(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    route_time = datetime.fromisoformat(document["route_time"])
    return Decision(
        conversation_id=conversation_id,
        queue_id=document["queue_id"],
        priority=document["priority"],
        sla_policy_id=document["sla_policy_id"],
        first_response_due=when(document["first_response_due"]),
        resolution_due=when(document["resolution_due"]),
        agent_id=document["agent_id"],
        segment_ids=tuple(document["segment_ids"]),
        rule_id=document["rule_id"],
        rules_revision=document["rules_revision"],
        explanation=document["explanation"],
        bot_first=document["bot_first"],
        required_skills=tuple(document["required_skills"]),
        route_time=route_time,
        reserved_agent_id=document["reserved_agent_id"],
    )
