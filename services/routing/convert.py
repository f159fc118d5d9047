"""Translation between routing protobuf messages and domain values.

Reading a request only parses: text that cannot become a domain value ("HH:MM" times,
dates, weekdays, channels) is reported here, every problem of a message at once, with its
path in the request. Whether the values make sense (ranges, overlaps, references) is the
app's to judge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from itertools import repeat
from typing import Any, TypeVar

from google.protobuf import duration_pb2, timestamp_pb2
from switchboard.routing.v1 import routing_pb2 as pb

from services.core.errors import FieldViolation, InvalidArgument
from services.core.validation import too_many
from services.routing.business_hours import (
    BusinessCalendar,
    OpenInterval,
    format_clock_time,
    parse_clock_time,
    parse_day,
)
from services.routing.domain import (
    Agent,
    AgentStatus,
    Assignment,
    AssignmentChange,
    Calendar,
    Channel,
    Conversation,
    Decision,
    Overflow,
    Queue,
    RevisionAction,
    RouteRequest,
    RouteStep,
    RoutingAction,
    RoutingRule,
    RoutingRules,
    RulesRevision,
    SlaEscalation,
    SlaPolicy,
    SlaTarget,
    Strategy,
    TargetClock,
)
from services.routing.lifecycle import ConversationEvent, ConversationState, EventKind
from services.routing.logic import MAX_RULES
from services.routing.sla import ClockReport, Metric, SlaStatus
from services.segments.convert import dict_to_struct, optional_time, struct_to_dict, timestamp
from services.segments.logic import normalize_rule
from services.segments.rules import MAX_DOCUMENT_BYTES, document_bytes

_Domain = TypeVar("_Domain")
_Proto = TypeVar("_Proto", bound=int)

# Sizes of repeated fields, checked before anything in them is read: a million entries
# (which fit in one 8 MiB request) are refused at once, not read, checked and listed one
# by one. The app's own limits on what it stores are stricter where it has them.
MAX_WEEKLY_INTERVALS = 70
MAX_HOLIDAYS = 1000
MAX_FALLBACK_STEPS = 10
# JSON bytes of all routing rule conditions together: the rules are one document, read
# back whole by GetRoutingRules and by every revision of ListRoutingRuleRevisions.
MAX_RULES_CONDITION_BYTES = 1_048_576


def inverse(mapping: Mapping[_Domain, _Proto]) -> dict[_Proto, _Domain]:
    return {proto: domain for domain, proto in mapping.items()}


# OpenInterval.weekday counts from 0 = Monday; the proto enum from 1 = WEEKDAY_MONDAY.
_WEEKDAYS = {
    0: pb.WEEKDAY_MONDAY,
    1: pb.WEEKDAY_TUESDAY,
    2: pb.WEEKDAY_WEDNESDAY,
    3: pb.WEEKDAY_THURSDAY,
    4: pb.WEEKDAY_FRIDAY,
    5: pb.WEEKDAY_SATURDAY,
    6: pb.WEEKDAY_SUNDAY,
}
CHANNELS = {
    Channel.CHAT: pb.CHANNEL_CHAT,
    Channel.EMAIL: pb.CHANNEL_EMAIL,
    Channel.PHONE: pb.CHANNEL_PHONE,
    Channel.SMS: pb.CHANNEL_SMS,
    Channel.SOCIAL: pb.CHANNEL_SOCIAL,
}
_TARGET_CLOCKS = {
    TargetClock.DEFAULT: pb.TARGET_CLOCK_UNSPECIFIED,
    TargetClock.BUSINESS_HOURS: pb.TARGET_CLOCK_BUSINESS_HOURS,
    TargetClock.CALENDAR_TIME: pb.TARGET_CLOCK_CALENDAR_TIME,
}
_STATES = {
    ConversationState.BOT: pb.CONVERSATION_STATE_BOT,
    ConversationState.QUEUED: pb.CONVERSATION_STATE_QUEUED,
    ConversationState.ASSIGNED: pb.CONVERSATION_STATE_ASSIGNED,
    ConversationState.WAITING_ON_CUSTOMER: pb.CONVERSATION_STATE_WAITING_ON_CUSTOMER,
    ConversationState.RESOLVED: pb.CONVERSATION_STATE_RESOLVED,
}
_STRATEGIES = {
    Strategy.ROUND_ROBIN: pb.ASSIGNMENT_STRATEGY_ROUND_ROBIN,
    Strategy.LEAST_BUSY: pb.ASSIGNMENT_STRATEGY_LEAST_BUSY,
}
_AGENT_STATUSES = {
    AgentStatus.ONLINE: pb.AGENT_STATUS_ONLINE,
    AgentStatus.AWAY: pb.AGENT_STATUS_AWAY,
    AgentStatus.OFFLINE: pb.AGENT_STATUS_OFFLINE,
}
_REVISION_ACTIONS = {
    RevisionAction.UPDATED: pb.REVISION_ACTION_UPDATED,
    RevisionAction.ROLLED_BACK: pb.REVISION_ACTION_ROLLED_BACK,
}
_EVENT_KINDS = {
    EventKind.ROUTED: pb.CONVERSATION_EVENT_KIND_ROUTED,
    EventKind.AGENT_REPLY: pb.CONVERSATION_EVENT_KIND_AGENT_REPLY,
    EventKind.BOT_REPLY: pb.CONVERSATION_EVENT_KIND_BOT_REPLY,
    EventKind.CUSTOMER_REPLY: pb.CONVERSATION_EVENT_KIND_CUSTOMER_REPLY,
    EventKind.WAITING_ON_CUSTOMER: pb.CONVERSATION_EVENT_KIND_WAITING_ON_CUSTOMER,
    EventKind.TRANSFERRED: pb.CONVERSATION_EVENT_KIND_TRANSFER,
    EventKind.ESCALATED: pb.CONVERSATION_EVENT_KIND_ESCALATE,
    EventKind.RESOLVED: pb.CONVERSATION_EVENT_KIND_RESOLVE,
    EventKind.REOPENED: pb.CONVERSATION_EVENT_KIND_REOPEN,
    EventKind.CSAT_RATED: pb.CONVERSATION_EVENT_KIND_CSAT,
    EventKind.ASSIGNED: pb.CONVERSATION_EVENT_KIND_ASSIGNED,
    EventKind.UNASSIGNED: pb.CONVERSATION_EVENT_KIND_UNASSIGNED,
    EventKind.POLICY_CHANGED: pb.CONVERSATION_EVENT_KIND_POLICY_CHANGED,
    EventKind.SLA_WARNING: pb.CONVERSATION_EVENT_KIND_SLA_WARNING,
    EventKind.SLA_BREACHED: pb.CONVERSATION_EVENT_KIND_SLA_BREACHED,
}
_METRICS = {
    Metric.FIRST_RESPONSE: pb.SLA_METRIC_FIRST_RESPONSE,
    Metric.NEXT_RESPONSE: pb.SLA_METRIC_NEXT_RESPONSE,
    Metric.RESOLUTION: pb.SLA_METRIC_RESOLUTION,
}
_SLA_STATUSES = {
    SlaStatus.ON_TRACK: pb.SLA_STATUS_ON_TRACK,
    SlaStatus.WARNING: pb.SLA_STATUS_WARNING,
    SlaStatus.BREACHED: pb.SLA_STATUS_BREACHED,
    SlaStatus.MET: pb.SLA_STATUS_MET,
}
_ASSIGNMENT_CHANGES = {
    AssignmentChange.CURRENT: pb.ASSIGNMENT_CHANGE_CURRENT,
    AssignmentChange.ASSIGNED: pb.ASSIGNMENT_CHANGE_ASSIGNED,
    AssignmentChange.RELEASED: pb.ASSIGNMENT_CHANGE_RELEASED,
}

_WEEKDAYS_FROM_PROTO = inverse(_WEEKDAYS)
CHANNELS_FROM_PROTO = inverse(CHANNELS)
_TARGET_CLOCKS_FROM_PROTO = inverse(_TARGET_CLOCKS)
_STATES_FROM_PROTO = inverse(_STATES)
# The contract makes an unspecified strategy LEAST_BUSY rather than an error.
_STRATEGIES_FROM_PROTO = {
    pb.ASSIGNMENT_STRATEGY_UNSPECIFIED: Strategy.LEAST_BUSY,
    **inverse(_STRATEGIES),
}
_AGENT_STATUSES_FROM_PROTO = inverse(_AGENT_STATUSES)
_EVENT_KINDS_FROM_PROTO = inverse(_EVENT_KINDS)

_Parsed = TypeVar("_Parsed")


class _Problems:
    """The unreadable fields of one message, gathered so the caller hears of all at once."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def parse(
        self, parse: Callable[[str], _Parsed], text: str, field: str, fallback: _Parsed
    ) -> _Parsed:
        """``parse(text)``, or ``fallback`` with the error recorded against ``field``."""
        try:
            return parse(text)
        except ValueError as error:
            self.add(field, str(error))
            return fallback

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)


def optional_timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    # None leaves the field unset; an empty Timestamp would read back as 1970.
    return None if moment is None else timestamp(moment)


def duration_message(delta: timedelta) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromTimedelta(delta)
    return message


def _optional_duration(delta: timedelta | None) -> duration_pb2.Duration | None:
    return None if delta is None else duration_message(delta)


def read_duration(message: Any, name: str, field: str = "") -> timedelta | None:
    """A duration field as a timedelta, None when unset, INVALID_ARGUMENT naming the field
    (``field``, its path in the request, else ``name``) for one beyond what a timedelta holds."""
    if not message.HasField(name):
        return None
    try:
        delta: timedelta = getattr(message, name).ToTimedelta()
    except (ValueError, OverflowError) as error:
        raise InvalidArgument.field(field or name, "not a valid duration") from error
    return delta


# ---- calendars -------------------------------------------------------------------------------


def calendar_to_proto(calendar: Calendar) -> pb.Calendar:
    hours = calendar.hours
    return pb.Calendar(
        calendar_id=calendar.calendar_id,
        display_name=calendar.display_name,
        time_zone=hours.time_zone,
        always_open=hours.always_open,
        weekly_hours=[
            pb.OpenInterval(
                weekday=_WEEKDAYS[interval.weekday],
                start_time=format_clock_time(interval.start_minute),
                end_time=format_clock_time(interval.end_minute),
            )
            for interval in hours.weekly_hours
        ],
        holidays=sorted(day.isoformat() for day in hours.holidays),
        revision=calendar.revision,
        create_time=optional_timestamp(calendar.create_time),
        update_time=optional_timestamp(calendar.update_time),
    )


def calendar_from_proto(message: pb.Calendar) -> Calendar:
    """The calendar of a request's ``calendar`` field; InvalidArgument names every weekday,
    time and holiday that cannot be read."""
    # Overlaps are found by comparing intervals pairwise: the count must be small first.
    too_many("calendar.weekly_hours", len(message.weekly_hours), MAX_WEEKLY_INTERVALS, "intervals")
    too_many("calendar.holidays", len(message.holidays), MAX_HOLIDAYS, "holidays")
    problems = _Problems()
    weekly_hours = []
    for index, interval in enumerate(message.weekly_hours):
        field = f"calendar.weekly_hours[{index}]"
        weekday = _WEEKDAYS_FROM_PROTO.get(interval.weekday)
        if weekday is None:
            problems.add(f"{field}.weekday", "choose a weekday, MONDAY to SUNDAY")
        start = problems.parse(parse_clock_time, interval.start_time, f"{field}.start_time", 0)
        end = problems.parse(parse_clock_time, interval.end_time, f"{field}.end_time", 0)
        if weekday is not None:
            weekly_hours.append(OpenInterval(weekday, start, end))
    holidays = {
        problems.parse(parse_day, text, f"calendar.holidays[{index}]", None)
        for index, text in enumerate(message.holidays)
    }
    problems.raise_if_any()
    return Calendar(
        calendar_id=message.calendar_id,
        display_name=message.display_name,
        hours=BusinessCalendar(
            time_zone=message.time_zone,
            always_open=message.always_open,
            weekly_hours=tuple(weekly_hours),
            holidays=frozenset(day for day in holidays if day is not None),
        ),
        revision=message.revision,
        create_time=optional_time(message, "create_time", "calendar.create_time", any_year=True),
        update_time=optional_time(message, "update_time", "calendar.update_time", any_year=True),
    )


# ---- SLA policies ----------------------------------------------------------------------------


def _target_to_proto(target: SlaTarget | None) -> pb.SlaTarget | None:
    if target is None:
        return None
    return pb.SlaTarget(
        duration=duration_message(target.duration), clock=_TARGET_CLOCKS[target.clock]
    )


def _target_from_proto(message: pb.SlaPolicy, name: str, problems: _Problems) -> SlaTarget | None:
    # A target without a duration is no target, the same as leaving the field out.
    target: pb.SlaTarget = getattr(message, name)
    duration = read_duration(target, "duration", f"policy.{name}.duration")
    if duration is None:
        return None
    clock = _TARGET_CLOCKS_FROM_PROTO.get(target.clock)
    if clock is None:
        problems.add(f"policy.{name}.clock", "choose BUSINESS_HOURS or CALENDAR_TIME")
        return None
    return SlaTarget(duration, clock)


def policy_to_proto(policy: SlaPolicy) -> pb.SlaPolicy:
    return pb.SlaPolicy(
        policy_id=policy.policy_id,
        display_name=policy.display_name,
        calendar_id=policy.calendar_id,
        first_response=_target_to_proto(policy.first_response),
        next_response=_target_to_proto(policy.next_response),
        resolution=_target_to_proto(policy.resolution),
        warning_percent=policy.warning_percent,
        pause_states=sorted(_STATES[state] for state in policy.pause_states),
        revision=policy.revision,
        create_time=optional_timestamp(policy.create_time),
        update_time=optional_timestamp(policy.update_time),
        on_warning=_escalation_to_proto(policy.on_warning),
        on_breach=_escalation_to_proto(policy.on_breach),
    )


def _escalation_to_proto(escalation: SlaEscalation | None) -> pb.SlaEscalation | None:
    if escalation is None:
        return None
    return pb.SlaEscalation(
        raise_priority_to=escalation.raise_priority_to,
        move_to_overflow=escalation.move_to_overflow,
        move_to_queue_id=escalation.move_to_queue_id,
        notify_endpoint_id=escalation.notify_endpoint_id,
    )


def _escalation_from_proto(message: pb.SlaEscalation) -> SlaEscalation | None:
    # An escalation that does nothing is no escalation, the same as leaving the field out.
    escalation = SlaEscalation(
        raise_priority_to=message.raise_priority_to,
        move_to_overflow=message.move_to_overflow,
        move_to_queue_id=message.move_to_queue_id,
        notify_endpoint_id=message.notify_endpoint_id,
    )
    return None if escalation == SlaEscalation() else escalation


def policy_from_proto(message: pb.SlaPolicy) -> SlaPolicy:
    """The policy of a request's ``policy`` field; InvalidArgument names every pause state
    and target clock that is not set to a known value."""
    problems = _Problems()
    first_response = _target_from_proto(message, "first_response", problems)
    next_response = _target_from_proto(message, "next_response", problems)
    resolution = _target_from_proto(message, "resolution", problems)
    pause_states = set()
    for index, value in enumerate(message.pause_states):
        state = _STATES_FROM_PROTO.get(value)
        if state is None:
            problems.add(f"policy.pause_states[{index}]", "choose a conversation state")
        else:
            pause_states.add(state)
    problems.raise_if_any()
    return SlaPolicy(
        policy_id=message.policy_id,
        display_name=message.display_name,
        calendar_id=message.calendar_id,
        first_response=first_response,
        next_response=next_response,
        resolution=resolution,
        # 0 is the contract's way of asking for the default threshold.
        warning_percent=message.warning_percent or SlaPolicy.warning_percent,
        pause_states=frozenset(pause_states),
        on_warning=_escalation_from_proto(message.on_warning),
        on_breach=_escalation_from_proto(message.on_breach),
        revision=message.revision,
        create_time=optional_time(message, "create_time", "policy.create_time", any_year=True),
        update_time=optional_time(message, "update_time", "policy.update_time", any_year=True),
    )


# ---- queues ----------------------------------------------------------------------------------


def queue_to_proto(queue: Queue) -> pb.Queue:
    overflow = queue.overflow
    return pb.Queue(
        queue_id=queue.queue_id,
        display_name=queue.display_name,
        required_skills=queue.required_skills,
        languages=queue.languages,
        calendar_id=queue.calendar_id,
        strategy=_STRATEGIES[queue.strategy],
        overflow=None
        if overflow is None
        else pb.Overflow(
            queue_id=overflow.queue_id,
            after=_optional_duration(overflow.after),
            when_no_agent_online=overflow.when_no_agent_online,
        ),
        revision=queue.revision,
        create_time=optional_timestamp(queue.create_time),
        update_time=optional_timestamp(queue.update_time),
    )


def queue_from_proto(message: pb.Queue) -> Queue:
    """The queue of a request's ``queue`` field; an unspecified strategy is LEAST_BUSY."""
    strategy = _STRATEGIES_FROM_PROTO.get(message.strategy)
    if strategy is None:
        raise InvalidArgument.field("queue.strategy", "choose ROUND_ROBIN or LEAST_BUSY")
    overflow = None
    if message.HasField("overflow"):
        overflow = Overflow(
            queue_id=message.overflow.queue_id,
            after=read_duration(message.overflow, "after", "queue.overflow.after"),
            when_no_agent_online=message.overflow.when_no_agent_online,
        )
    return Queue(
        queue_id=message.queue_id,
        display_name=message.display_name,
        required_skills=tuple(message.required_skills),
        languages=tuple(message.languages),
        calendar_id=message.calendar_id,
        strategy=strategy,
        overflow=overflow,
        revision=message.revision,
        create_time=optional_time(message, "create_time", "queue.create_time", any_year=True),
        update_time=optional_time(message, "update_time", "queue.update_time", any_year=True),
    )


# ---- agents ----------------------------------------------------------------------------------


def agent_to_proto(agent: Agent) -> pb.Agent:
    return pb.Agent(
        agent_id=agent.agent_id,
        display_name=agent.display_name,
        skills=agent.skills,
        languages=agent.languages,
        capacity=[
            pb.ChannelCapacity(channel=CHANNELS[channel], max_open=max_open)
            for channel, max_open in sorted(
                agent.capacity.items(), key=lambda item: CHANNELS[item[0]]
            )
        ],
        teams=agent.teams,
        status=_AGENT_STATUSES[agent.status],
        status_time=optional_timestamp(agent.status_time),
        open_conversations=agent.open_conversations,
        revision=agent.revision,
        create_time=optional_timestamp(agent.create_time),
        update_time=optional_timestamp(agent.update_time),
    )


def agent_from_proto(message: pb.Agent) -> Agent:
    """The agent of a request's ``agent`` field; InvalidArgument names every capacity entry
    without a channel, or with a channel already given."""
    problems = _Problems()
    capacity: dict[Channel, int] = {}
    for index, entry in enumerate(message.capacity):
        channel = CHANNELS_FROM_PROTO.get(entry.channel)
        field = f"agent.capacity[{index}].channel"
        if channel is None:
            problems.add(field, "choose a channel")
        elif channel in capacity:
            # A second entry would silently replace the first; the sender meant one of them.
            problems.add(field, f"the capacity for {channel} is already given")
        else:
            capacity[channel] = entry.max_open
    problems.raise_if_any()
    return Agent(
        agent_id=message.agent_id,
        display_name=message.display_name,
        skills=tuple(message.skills),
        languages=tuple(message.languages),
        capacity=capacity,
        teams=tuple(message.teams),
        # Output only: an unspecified status reads as the status of a new agent.
        status=_AGENT_STATUSES_FROM_PROTO.get(message.status, Agent.status),
        status_time=optional_time(message, "status_time", "agent.status_time", any_year=True),
        open_conversations=message.open_conversations,
        revision=message.revision,
        create_time=optional_time(message, "create_time", "agent.create_time", any_year=True),
        update_time=optional_time(message, "update_time", "agent.update_time", any_year=True),
    )


def agent_status_from_proto(status: pb.AgentStatus.ValueType) -> AgentStatus | None:
    """None for an unspecified or unknown status, which the app reports."""
    return _AGENT_STATUSES_FROM_PROTO.get(status)


# ---- routing rules ---------------------------------------------------------------------------


def _step_to_proto(step: RouteStep) -> pb.RouteStep:
    message = pb.RouteStep(timeout=duration_message(step.timeout))
    # Only one target may be written: assigning any member of a oneof selects it.
    if step.agent_id:
        message.agent_id = step.agent_id
    elif step.owner_attribute:
        message.owner_attribute = step.owner_attribute
    elif step.queue_id:
        message.queue_id = step.queue_id
    return message


def _step_from_proto(message: pb.RouteStep, field: str) -> RouteStep:
    # The members of the oneof not chosen read as "", so a step without a target has all
    # three empty; a missing timeout reads as zero. The app reports both.
    return RouteStep(
        timeout=read_duration(message, "timeout", f"{field}.timeout") or timedelta(0),
        agent_id=message.agent_id,
        owner_attribute=message.owner_attribute,
        queue_id=message.queue_id,
    )


def _action_to_proto(action: RoutingAction) -> pb.RoutingAction:
    return pb.RoutingAction(
        queue_id=action.queue_id,
        sla_policy_id=action.sla_policy_id,
        priority=action.priority,
        required_skills=action.required_skills,
        fallback_chain=[_step_to_proto(step) for step in action.fallback_chain],
        bot_first=action.bot_first,
    )


def _action_from_proto(message: pb.RoutingAction, field: str) -> RoutingAction:
    too_many(f"{field}.fallback_chain", len(message.fallback_chain), MAX_FALLBACK_STEPS, "steps")
    return RoutingAction(
        queue_id=message.queue_id,
        sla_policy_id=message.sla_policy_id,
        priority=message.priority,
        required_skills=tuple(message.required_skills),
        fallback_chain=tuple(
            _step_from_proto(step, f"{field}.fallback_chain[{index}]")
            for index, step in enumerate(message.fallback_chain)
        ),
        bot_first=message.bot_first,
    )


def rules_to_proto(rules: RoutingRules) -> pb.RoutingRules:
    default_action = rules.default_action
    return pb.RoutingRules(
        rules=[
            pb.RoutingRule(
                rule_id=rule.rule_id,
                display_name=rule.display_name,
                condition=dict_to_struct(dict(rule.condition)),
                action=_action_to_proto(rule.action),
            )
            for rule in rules.rules
        ],
        default_action=None if default_action is None else _action_to_proto(default_action),
        revision=rules.revision,
        update_time=optional_timestamp(rules.update_time),
        actor=rules.actor,
    )


def rules_from_proto(message: pb.RoutingRules) -> RoutingRules:
    """The rules of a request's ``rules`` field; a missing default action is None."""
    too_many("rules.rules", len(message.rules), MAX_RULES, "rules")
    rules = tuple(
        RoutingRule(
            rule_id=rule.rule_id,
            display_name=rule.display_name,
            condition=normalize_rule(
                struct_to_dict(rule.condition, f"rules.rules[{index}].condition")
            ),
            action=_action_from_proto(rule.action, f"rules.rules[{index}].action"),
        )
        for index, rule in enumerate(message.rules)
    )
    condition_bytes = sum(document_bytes(rule.condition) for rule in rules)
    if condition_bytes > MAX_RULES_CONDITION_BYTES:
        raise InvalidArgument.field(
            "rules.rules",
            f"the conditions are {condition_bytes} bytes as JSON in all;"
            f" the limit is {MAX_RULES_CONDITION_BYTES}",
        )
    return RoutingRules(
        rules=rules,
        default_action=_action_from_proto(message.default_action, "rules.default_action")
        if message.HasField("default_action")
        else None,
        revision=message.revision,
        update_time=optional_time(message, "update_time", "rules.update_time", any_year=True),
        actor=message.actor,
    )


def rules_revision_to_proto(revision: RulesRevision) -> pb.RoutingRulesRevision:
    return pb.RoutingRulesRevision(
        rules=rules_to_proto(revision.rules),
        action=_REVISION_ACTIONS[revision.action],
        restored_revision=revision.restored_revision,
    )


# ---- conversations ---------------------------------------------------------------------------


def route_request_from_proto(message: pb.RouteConversationRequest) -> RouteRequest:
    """The routing request; an unspecified channel is None, which the app reports."""
    return RouteRequest(
        conversation_id=message.conversation_id,
        channel=CHANNELS_FROM_PROTO.get(message.channel),
        customer_id=message.customer_id,
        # Every rule and segment reads these: their size bounds what one request costs.
        visitor_attributes=normalize_rule(
            struct_to_dict(message.visitor_attributes, "visitor_attributes", MAX_DOCUMENT_BYTES)
        ),
        language=message.language,
        topic=message.topic,
        priority_hint=message.priority_hint,
        time=optional_time(message, "time"),
        validate_only=message.validate_only,
    )


def event_kind_from_proto(kind: pb.ConversationEventKind.ValueType) -> EventKind | None:
    """None for an unspecified or unknown kind, which the app reports."""
    return _EVENT_KINDS_FROM_PROTO.get(kind)


def decision_to_proto(decision: Decision) -> pb.RoutingDecision:
    return pb.RoutingDecision(
        conversation_id=decision.conversation_id,
        queue_id=decision.queue_id,
        priority=decision.priority,
        sla_policy_id=decision.sla_policy_id,
        first_response_due=optional_timestamp(decision.first_response_due),
        resolution_due=optional_timestamp(decision.resolution_due),
        agent_id=decision.agent_id,
        segment_ids=decision.segment_ids,
        rule_id=decision.rule_id,
        rules_revision=decision.rules_revision,
        explanation=decision.explanation,
        bot_first=decision.bot_first,
        required_skills=decision.required_skills,
        route_time=timestamp(decision.route_time),
        reserved_agent_id=decision.reserved_agent_id,
    )


def _event_to_proto(event: ConversationEvent, note: str = "") -> pb.ConversationEvent:
    return pb.ConversationEvent(
        kind=_EVENT_KINDS[event.kind],
        time=timestamp(event.time),
        agent_id=event.agent_id,
        queue_id=event.queue_id,
        sla_policy_id=event.policy_id,
        csat_rating=event.rating,
        note=note,
        sla_metric=(
            _METRICS[Metric(event.sla_metric)] if event.sla_metric else pb.SLA_METRIC_UNSPECIFIED
        ),
        raised_priority=event.raised_priority,
        moved_to_queue_id=event.moved_to_queue_id,
        notified_endpoint_id=event.notified_endpoint_id,
    )


def _clock_to_proto(clock: ClockReport) -> pb.SlaClock:
    return pb.SlaClock(
        metric=_METRICS[clock.metric],
        status=_SLA_STATUSES[clock.status],
        target=duration_message(clock.target),
        elapsed=duration_message(clock.elapsed),
        running=clock.running,
        paused=clock.paused,
        due_time=optional_timestamp(clock.due_time),
        warning_time=optional_timestamp(clock.warning_time),
        stop_time=optional_timestamp(clock.stop_time),
    )


def conversation_to_proto(conversation: Conversation) -> pb.Conversation:
    return pb.Conversation(
        conversation_id=conversation.conversation_id,
        customer_id=conversation.customer_id,
        channel=CHANNELS[conversation.channel],
        language=conversation.language,
        topic=conversation.topic,
        state=_STATES[conversation.state],
        queue_id=conversation.queue_id,
        agent_id=conversation.agent_id,
        priority=conversation.priority,
        sla_policy_id=conversation.sla_policy_id,
        decision=decision_to_proto(conversation.decision),
        events=[
            _event_to_proto(event, note)
            for event, note in zip(
                conversation.events, conversation.notes or repeat(""), strict=False
            )
        ],
        sla=[_clock_to_proto(clock) for clock in conversation.sla],
        csat_rating=conversation.csat_rating,
    )


def assignment_to_proto(assignment: Assignment) -> pb.Assignment:
    return pb.Assignment(
        conversation_id=assignment.conversation_id,
        customer_id=assignment.customer_id,
        queue_id=assignment.queue_id,
        channel=CHANNELS[assignment.channel],
        priority=assignment.priority,
        state=_STATES[assignment.state],
        assign_time=optional_timestamp(assignment.assign_time),
        sla=[_clock_to_proto(clock) for clock in assignment.sla],
        segment_ids=assignment.segment_ids,
        topic=assignment.topic,
    )


def assignment_change_to_proto(change: AssignmentChange) -> pb.AssignmentChange.ValueType:
    return _ASSIGNMENT_CHANGES[change]
