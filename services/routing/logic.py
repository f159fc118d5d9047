"""Routing decisions without I/O: validating configuration, matching the rules, resolving SLA
policies onto calendars and picking an agent. The app feeds it what it read from the store.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.core.errors import FieldViolation
from services.profiles.logic import CUSTOMER_ID_PATTERN, LANGUAGE_PATTERN
from services.routing.business_hours import ALWAYS_OPEN, calendar_problems
from services.routing.domain import (
    Agent,
    Calendar,
    Channel,
    Queue,
    RouteRequest,
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
from services.routing.sla import SlaPolicy as ClockPolicy
from services.routing.sla import Target
from services.segments.logic import validate_rule_document, validate_segment_id
from services.segments.rules import (
    CompiledRule,
    EvaluationContext,
    Explanation,
    compile_rule,
    explain,
)

RESOURCE_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
AGENT_ID_PATTERN = CUSTOMER_ID_PATTERN
CONVERSATION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
SKILL_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
ATTRIBUTE_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_DISPLAY_NAME = 200
MAX_TEXT = 200
MAX_RULES = 500
MAX_LIST = 50
MAX_CAPACITY = 1000
PRIORITY_RANGE = (0, 100)
MAX_TARGET = timedelta(days=366)
MAX_STEP_TIMEOUT = timedelta(days=30)
DEFAULT_WARNING_PERCENT = 75


def _id_problems(
    value: str, field: str, pattern: re.Pattern[str], shape: str
) -> list[FieldViolation]:
    return [] if pattern.match(value) else [FieldViolation(field, f"must be {shape}")]


def resource_id_problems(value: str, field: str) -> list[FieldViolation]:
    return _id_problems(
        value,
        field,
        RESOURCE_ID_PATTERN,
        "1-64 lowercase letters, digits, '_' or '-', starting with a letter",
    )


def agent_id_problems(value: str, field: str) -> list[FieldViolation]:
    return _id_problems(
        value,
        field,
        AGENT_ID_PATTERN,
        "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    )


def conversation_id_problems(value: str, field: str = "conversation_id") -> list[FieldViolation]:
    return _id_problems(
        value,
        field,
        CONVERSATION_ID_PATTERN,
        "1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
    )


def _text_problems(value: str, field: str, limit: int = MAX_DISPLAY_NAME) -> list[FieldViolation]:
    return [FieldViolation(field, f"at most {limit} characters")] if len(value) > limit else []


def _list_problems(
    values: Sequence[str], field: str, pattern: re.Pattern[str], shape: str
) -> list[FieldViolation]:
    problems = []
    if len(values) > MAX_LIST:
        problems.append(FieldViolation(field, f"at most {MAX_LIST} entries"))
    for index, value in enumerate(values):
        if not pattern.match(value):
            problems.append(FieldViolation(f"{field}[{index}]", f"must be {shape}"))
    if len(set(values)) != len(values):
        problems.append(FieldViolation(field, "lists an entry twice"))
    return problems


def skills_problems(skills: Sequence[str], field: str) -> list[FieldViolation]:
    return _list_problems(
        skills, field, SKILL_PATTERN, "1-64 lowercase letters, digits, '_', '.' or '-'"
    )


def languages_problems(languages: Sequence[str], field: str) -> list[FieldViolation]:
    return _list_problems(languages, field, LANGUAGE_PATTERN, "a BCP 47 language tag")


# ---- configuration -------------------------------------------------------------------------


def calendar_definition_problems(calendar: Calendar) -> list[FieldViolation]:
    return (
        resource_id_problems(calendar.calendar_id, "calendar.calendar_id")
        + _text_problems(calendar.display_name, "calendar.display_name")
        + calendar_problems(calendar.hours, "calendar")
    )


def _target_problems(target: SlaTarget | None, field: str) -> list[FieldViolation]:
    if target is None:
        return []
    if target.duration <= timedelta(0):
        return [FieldViolation(f"{field}.duration", "must be positive")]
    if target.duration > MAX_TARGET:
        return [FieldViolation(f"{field}.duration", "must be at most 366 days")]
    return []


def policy_problems(policy: SlaPolicy) -> list[FieldViolation]:
    problems = resource_id_problems(policy.policy_id, "policy.policy_id")
    problems += _text_problems(policy.display_name, "policy.display_name")
    if policy.calendar_id:
        problems += resource_id_problems(policy.calendar_id, "policy.calendar_id")
    for name in ("first_response", "next_response", "resolution"):
        problems += _target_problems(getattr(policy, name), f"policy.{name}")
    if not 1 <= policy.warning_percent <= 99:
        problems.append(FieldViolation("policy.warning_percent", "must be 1-99 (0 means 75)"))
    if ConversationState.RESOLVED in policy.pause_states:
        problems.append(
            FieldViolation("policy.pause_states", "RESOLVED cannot pause: its clocks have stopped")
        )
    problems += _escalation_problems(policy.on_warning, "policy.on_warning")
    problems += _escalation_problems(policy.on_breach, "policy.on_breach")
    return problems


def _escalation_problems(escalation: SlaEscalation | None, field: str) -> list[FieldViolation]:
    if escalation is None:
        return []
    problems = []
    low, high = PRIORITY_RANGE
    if not low <= escalation.raise_priority_to <= high:
        problems.append(
            FieldViolation(f"{field}.raise_priority_to", f"must be {low}-{high} (0 leaves it)")
        )
    if escalation.move_to_queue_id:
        problems += resource_id_problems(escalation.move_to_queue_id, f"{field}.move_to_queue_id")
        if escalation.move_to_overflow:
            problems.append(
                FieldViolation(
                    f"{field}.move_to_queue_id",
                    "name a queue or set move_to_overflow, not both",
                )
            )
    if escalation.notify_endpoint_id:
        # Outreach endpoint ids follow the segment id rules.
        problems += validate_segment_id(
            escalation.notify_endpoint_id, f"{field}.notify_endpoint_id"
        )
    return problems


def queue_problems(queue: Queue) -> list[FieldViolation]:
    problems = resource_id_problems(queue.queue_id, "queue.queue_id")
    problems += _text_problems(queue.display_name, "queue.display_name")
    problems += skills_problems(queue.required_skills, "queue.required_skills")
    problems += languages_problems(queue.languages, "queue.languages")
    if queue.calendar_id:
        problems += resource_id_problems(queue.calendar_id, "queue.calendar_id")
    overflow = queue.overflow
    if overflow is not None:
        problems += resource_id_problems(overflow.queue_id, "queue.overflow.queue_id")
        if overflow.queue_id == queue.queue_id:
            problems.append(FieldViolation("queue.overflow.queue_id", "cannot be the queue itself"))
        if overflow.after is not None and overflow.after < timedelta(0):
            problems.append(FieldViolation("queue.overflow.after", "must not be negative"))
        if not overflow.after and not overflow.when_no_agent_online:
            problems.append(
                FieldViolation(
                    "queue.overflow",
                    "set `after`, `when_no_agent_online` or both, or leave it unset",
                )
            )
    return problems


def agent_problems(agent: Agent) -> list[FieldViolation]:
    problems = agent_id_problems(agent.agent_id, "agent.agent_id")
    problems += _text_problems(agent.display_name, "agent.display_name")
    problems += skills_problems(agent.skills, "agent.skills")
    problems += languages_problems(agent.languages, "agent.languages")
    problems += _list_problems(
        agent.teams,
        "agent.teams",
        RESOURCE_ID_PATTERN,
        "1-64 lowercase letters, digits, '_' or '-'",
    )
    for channel, limit in agent.capacity.items():
        if not 0 <= limit <= MAX_CAPACITY:
            problems.append(
                FieldViolation(f"agent.capacity[{channel.value}]", f"must be 0-{MAX_CAPACITY}")
            )
    return problems


def _action_problems(action: RoutingAction, field: str) -> list[FieldViolation]:
    problems = resource_id_problems(action.queue_id, f"{field}.queue_id")
    if action.sla_policy_id:
        problems += resource_id_problems(action.sla_policy_id, f"{field}.sla_policy_id")
    if not PRIORITY_RANGE[0] <= action.priority <= PRIORITY_RANGE[1]:
        problems.append(FieldViolation(f"{field}.priority", "must be 0-100"))
    problems += skills_problems(action.required_skills, f"{field}.required_skills")
    if len(action.fallback_chain) > 10:
        problems.append(FieldViolation(f"{field}.fallback_chain", "at most 10 steps"))
    for index, step in enumerate(action.fallback_chain):
        where = f"{field}.fallback_chain[{index}]"
        targets = [name for name in (step.agent_id, step.owner_attribute, step.queue_id) if name]
        if len(targets) != 1:
            problems.append(
                FieldViolation(where, "set exactly one of agent_id, owner_attribute, queue_id")
            )
        elif step.agent_id:
            problems += agent_id_problems(step.agent_id, f"{where}.agent_id")
        elif step.owner_attribute:
            problems += _id_problems(
                step.owner_attribute,
                f"{where}.owner_attribute",
                ATTRIBUTE_KEY_PATTERN,
                "a custom attribute key (letters, digits, '_')",
            )
        else:
            problems += resource_id_problems(step.queue_id, f"{where}.queue_id")
        if not timedelta(0) < step.timeout <= MAX_STEP_TIMEOUT:
            problems.append(FieldViolation(f"{where}.timeout", "must be positive, at most 30 days"))
    return problems


def rules_problems(rules: RoutingRules) -> list[FieldViolation]:
    problems: list[FieldViolation] = []
    if len(rules.rules) > MAX_RULES:
        problems.append(FieldViolation("rules.rules", f"at most {MAX_RULES} rules"))
    seen: set[str] = set()
    for index, rule in enumerate(rules.rules):
        where = f"rules.rules[{index}]"
        problems += resource_id_problems(rule.rule_id, f"{where}.rule_id")
        if rule.rule_id in seen:
            problems.append(FieldViolation(f"{where}.rule_id", f"{rule.rule_id!r} is used twice"))
        seen.add(rule.rule_id)
        problems += _text_problems(rule.display_name, f"{where}.display_name")
        problems += validate_rule_document(dict(rule.condition), f"{where}.condition")
        problems += _action_problems(rule.action, f"{where}.action")
    if rules.default_action is None:
        problems.append(
            FieldViolation("rules.default_action", "required: where conversations go otherwise")
        )
    else:
        problems += _action_problems(rules.default_action, "rules.default_action")
    return problems


def rules_references(rules: RoutingRules) -> list[tuple[str, str, str]]:
    """Every (kind, id, field) the rules point at, for the existence check on save."""
    found: list[tuple[str, str, str]] = []
    actions = [(f"rules.rules[{i}].action", rule.action) for i, rule in enumerate(rules.rules)]
    if rules.default_action is not None:
        actions.append(("rules.default_action", rules.default_action))
    for field, action in actions:
        found.append(("queue", action.queue_id, f"{field}.queue_id"))
        if action.sla_policy_id:
            found.append(("policy", action.sla_policy_id, f"{field}.sla_policy_id"))
        for index, step in enumerate(action.fallback_chain):
            if step.agent_id:
                found.append(("agent", step.agent_id, f"{field}.fallback_chain[{index}].agent_id"))
            if step.queue_id:
                found.append(("queue", step.queue_id, f"{field}.fallback_chain[{index}].queue_id"))
    return found


def route_request_problems(request: RouteRequest) -> list[FieldViolation]:
    problems = conversation_id_problems(request.conversation_id)
    if request.customer_id:
        problems += agent_id_problems(request.customer_id, "customer_id")
        if request.visitor_attributes:
            problems.append(
                FieldViolation(
                    "visitor_attributes", "give either customer_id or visitor_attributes"
                )
            )
    if request.channel is None:
        problems.append(FieldViolation("channel", "required"))
    if request.language:
        problems += languages_problems([request.language], "language")
    problems += _text_problems(request.topic, "topic", MAX_TEXT)
    problems += _text_problems(request.priority_hint, "priority_hint", MAX_TEXT)
    return problems


# ---- matching -------------------------------------------------------------------------------


# How many matches one set of compiled rules remembers before it starts over.
MATCHES_REMEMBERED = 10_000


@dataclass(frozen=True)
class CompiledRules:
    revision: int
    rules: tuple[tuple[RoutingRule, CompiledRule], ...]
    default_action: RoutingAction
    # Whether every condition gives the same attributes the same verdict every time (see
    # ``CompiledRule.repeatable``): only then are matches remembered.
    repeatable: bool = True
    # Matches made for kept customer records, by the record's identity and the rest of the
    # key (see ``match``), each with the record it was made for.
    remembered: dict[tuple[Any, ...], tuple[Mapping[str, Any], Match]] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )


def compile_rules(rules: RoutingRules) -> CompiledRules:
    assert rules.default_action is not None, "stored rules always have a default action"
    compiled = tuple((rule, compile_rule(dict(rule.condition))) for rule in rules.rules)
    repeatable = all(condition.repeatable for _, condition in compiled)
    return CompiledRules(rules.revision, compiled, rules.default_action, repeatable)


def routing_document(attributes: Mapping[str, Any], request: RouteRequest) -> dict[str, Any]:
    """What rule conditions read: the customer's (or visitor's) fields plus `conversation`."""
    conversation = {
        "channel": request.channel.value if request.channel else "",
        "language": request.language,
        "topic": request.topic,
        "priority_hint": request.priority_hint,
    }
    return {
        **attributes,
        "conversation": {name: value for name, value in conversation.items() if value},
    }


@dataclass(frozen=True)
class Match:
    rule: RoutingRule | None
    action: RoutingAction
    explanation: str


def match(
    compiled: CompiledRules,
    attributes: Mapping[str, Any],
    request: RouteRequest,
    segment_ids: frozenset[str],
    now: datetime,
    *,
    kept_record: bool = False,
) -> Match:
    """The first rule whose condition holds, else the default action, with the reason.

    ``kept_record`` says ``attributes`` is a record the caller keeps, unchanged, for as long
    as the customer does not change (``CustomerDirectory``'s): its match is then remembered
    by the record's identity, the conversation's fields and the segments, as nothing else
    decides it unless a rule reads the clock or runs a regular expression against a time
    limit. Every rule after the first matching one, and the matched rule's explanation,
    then cost nothing on the next call."""
    if not kept_record or not compiled.repeatable:
        return _first_match(compiled, routing_document(attributes, request), segment_ids, now)
    key = (
        id(attributes),
        request.channel,
        request.language,
        request.topic,
        request.priority_hint,
        segment_ids,
    )
    remembered = compiled.remembered.get(key)
    # The entry holds its record, so no other record can have that identity meanwhile.
    if remembered is not None and remembered[0] is attributes:
        return remembered[1]
    found = _first_match(compiled, routing_document(attributes, request), segment_ids, now)
    if len(compiled.remembered) >= MATCHES_REMEMBERED:
        compiled.remembered.clear()
    compiled.remembered[key] = (attributes, found)
    return found


def _first_match(
    compiled: CompiledRules, document: Mapping[str, Any], segment_ids: frozenset[str], now: datetime
) -> Match:
    context = EvaluationContext(now=now, segments=segment_ids)
    for rule, condition in compiled.rules:
        if condition.matches(document, context):
            reason = _reason(explain(condition, document, context))
            return Match(rule, rule.action, f"rule {rule.rule_id!r} matched{reason}")
    skipped = len(compiled.rules)
    return Match(
        None,
        compiled.default_action,
        f"no rule matched ({skipped} tried): the default action applied",
    )


def _reason(explanation: Explanation) -> str:
    checks = [
        f"{item.field or item.path.removeprefix('$.')} {item.operator} {item.expected!r}"
        for item in _leaves(explanation)
        if item.passed and item.path != "$"
    ]
    return f": {'; '.join(checks[:6])}" if checks else " (it has no condition)"


def _leaves(node: Explanation) -> Iterable[Explanation]:
    if not node.children:
        yield node
        return
    for child in node.children:
        yield from _leaves(child)


# ---- SLA -------------------------------------------------------------------------------------


def clock_policy(
    policy: SlaPolicy, calendars: Mapping[str, Calendar], queue_calendar_id: str
) -> ClockPolicy:
    """An SLA policy as the clocks measure it: its calendar, else its queue's, else 24/7."""
    calendar_id = policy.calendar_id or queue_calendar_id
    calendar = calendars[calendar_id].hours if calendar_id in calendars else ALWAYS_OPEN

    def target(spec: SlaTarget | None) -> Target | None:
        if spec is None:
            return None
        business = spec.clock == TargetClock.BUSINESS_HOURS or (
            spec.clock == TargetClock.DEFAULT and calendar is not ALWAYS_OPEN
        )
        return Target(spec.duration, business_hours=business)

    return ClockPolicy(
        first_response=target(policy.first_response),
        next_response=target(policy.next_response),
        resolution=target(policy.resolution),
        warning_fraction=policy.warning_percent / 100,
        pause_states=policy.pause_states,
        calendar=calendar,
    )


# ---- agents ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """What a conversation asks of an agent."""

    channel: Channel
    skills: frozenset[str]
    language: str
    queue_languages: tuple[str, ...]


def speaks(agent_languages: Iterable[str], language: str) -> bool:
    """ "en" serves "en-GB" and the other way round: the primary subtag decides."""
    wanted = _primary_subtag(language)
    return any(_primary_subtag(spoken) == wanted for spoken in agent_languages)


@functools.lru_cache(maxsize=1024)
def _primary_subtag(language: str) -> str:
    return language.split("-")[0].lower()


def can_serve(agent: Agent, need: Need) -> bool:
    if not need.skills <= set(agent.skills):
        return False
    if need.language:
        return speaks(agent.languages, need.language)
    if need.queue_languages:
        return any(speaks(agent.languages, language) for language in need.queue_languages)
    return True


@dataclass(frozen=True)
class Candidate:
    agent: Agent
    open_in_channel: int
    open_total: int
    last_assign_time: datetime | None


def has_room(candidate: Candidate, channel: Channel) -> bool:
    return candidate.open_in_channel < candidate.agent.capacity.get(channel, 0)


def pick_agent(
    candidates: Sequence[Candidate], need: Need, strategy: Strategy, last_agent_id: str
) -> Agent | None:
    """The agent a queue's strategy gives the conversation to, among the candidates (agents
    online and able to serve ``need``) with room; None when nobody is."""
    able = sorted(
        (c for c in candidates if has_room(c, need.channel)), key=lambda c: c.agent.agent_id
    )
    if not able:
        return None
    if strategy == Strategy.ROUND_ROBIN:
        after = [c for c in able if c.agent.agent_id > last_agent_id]
        return (after or able)[0].agent
    never = datetime.min.replace(tzinfo=None)

    def busyness(candidate: Candidate) -> tuple[float, datetime, str]:
        capacity = sum(candidate.agent.capacity.values()) or 1
        idle_since = candidate.last_assign_time
        return (
            candidate.open_total / capacity,
            idle_since.replace(tzinfo=None) if idle_since else never,
            candidate.agent.agent_id,
        )

    return min(able, key=busyness).agent
