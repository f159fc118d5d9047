"""Calendars, SLA policies, queues, agents, routing rules and conversations as the rest of
the code sees them, free of gRPC and SQL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from services.routing.business_hours import ALWAYS_OPEN, BusinessCalendar
from services.routing.lifecycle import ConversationEvent, ConversationState
from services.routing.sla import ClockReport


class Channel(StrEnum):
    CHAT = "chat"
    EMAIL = "email"
    PHONE = "phone"
    SMS = "sms"
    SOCIAL = "social"


class Strategy(StrEnum):
    ROUND_ROBIN = "round_robin"
    LEAST_BUSY = "least_busy"


class AgentStatus(StrEnum):
    ONLINE = "online"
    AWAY = "away"
    OFFLINE = "offline"


class TargetClock(StrEnum):
    # Business hours when a calendar applies (the policy's or the queue's), else wall time.
    DEFAULT = "default"
    BUSINESS_HOURS = "business_hours"
    CALENDAR_TIME = "calendar_time"


class RevisionAction(StrEnum):
    UPDATED = "updated"
    ROLLED_BACK = "rolled_back"


class AssignmentChange(StrEnum):
    CURRENT = "current"
    ASSIGNED = "assigned"
    RELEASED = "released"


@dataclass(frozen=True)
class Calendar:
    calendar_id: str
    display_name: str = ""
    hours: BusinessCalendar = ALWAYS_OPEN
    revision: int = 0
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True)
class SlaTarget:
    duration: timedelta
    clock: TargetClock = TargetClock.DEFAULT


@dataclass(frozen=True)
class SlaEscalation:
    """What the SLA watch does to a conversation when one of its clocks reaches a threshold."""

    raise_priority_to: int = 0  # 0 leaves the priority; a higher one is kept
    move_to_overflow: bool = False
    move_to_queue_id: str = ""
    notify_endpoint_id: str = ""  # an outreach webhook endpoint


@dataclass(frozen=True)
class SlaPolicy:
    policy_id: str
    display_name: str = ""
    calendar_id: str = ""
    first_response: SlaTarget | None = None
    next_response: SlaTarget | None = None
    resolution: SlaTarget | None = None
    warning_percent: int = 75
    pause_states: frozenset[ConversationState] = frozenset()
    on_warning: SlaEscalation | None = None
    on_breach: SlaEscalation | None = None
    revision: int = 0
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True)
class Overflow:
    queue_id: str
    after: timedelta | None = None
    when_no_agent_online: bool = False


@dataclass(frozen=True)
class Queue:
    queue_id: str
    display_name: str = ""
    required_skills: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    calendar_id: str = ""
    strategy: Strategy = Strategy.LEAST_BUSY
    overflow: Overflow | None = None
    revision: int = 0
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True)
class Agent:
    agent_id: str
    display_name: str = ""
    skills: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    capacity: Mapping[Channel, int] = field(default_factory=dict)
    teams: tuple[str, ...] = ()
    status: AgentStatus = AgentStatus.OFFLINE
    status_time: datetime | None = None
    open_conversations: int = 0
    revision: int = 0
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True)
class RouteStep:
    """One step of a fallback chain; exactly one of the three targets is set."""

    timeout: timedelta
    agent_id: str = ""
    owner_attribute: str = ""
    queue_id: str = ""


@dataclass(frozen=True)
class RoutingAction:
    queue_id: str
    sla_policy_id: str = ""
    priority: int = 0
    required_skills: tuple[str, ...] = ()
    fallback_chain: tuple[RouteStep, ...] = ()
    bot_first: bool = False


@dataclass(frozen=True)
class RoutingRule:
    rule_id: str
    action: RoutingAction
    display_name: str = ""
    condition: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RoutingRules:
    rules: tuple[RoutingRule, ...] = ()
    default_action: RoutingAction | None = None
    revision: int = 0
    update_time: datetime | None = None
    actor: str = ""


@dataclass(frozen=True)
class RulesRevision:
    rules: RoutingRules
    action: RevisionAction
    restored_revision: int = 0


@dataclass(frozen=True)
class Handover:
    """A bot handing a conversation to people: the queue and SLA policy its escalation
    policy names take the place of the matched rule's."""

    queue_id: str
    sla_policy_id: str
    explanation: str


@dataclass(frozen=True)
class RouteRequest:
    conversation_id: str
    channel: Channel | None
    customer_id: str = ""
    visitor_attributes: Mapping[str, Any] = field(default_factory=dict)
    language: str = ""
    topic: str = ""
    priority_hint: str = ""
    time: datetime | None = None
    validate_only: bool = False
    handover: Handover | None = None


@dataclass(frozen=True)
class Decision:
    conversation_id: str
    queue_id: str
    priority: int
    sla_policy_id: str
    first_response_due: datetime | None
    resolution_due: datetime | None
    agent_id: str
    segment_ids: tuple[str, ...]
    rule_id: str
    rules_revision: int
    explanation: str
    bot_first: bool
    required_skills: tuple[str, ...]
    route_time: datetime
    reserved_agent_id: str = ""


@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    customer_id: str
    channel: Channel
    language: str
    topic: str
    state: ConversationState
    queue_id: str
    agent_id: str
    priority: int
    sla_policy_id: str
    decision: Decision
    events: tuple[ConversationEvent, ...]
    sla: tuple[ClockReport, ...]
    csat_rating: int = 0
    # Why the service recorded each event (overflow, fallback timeout, ...), by position.
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Assignment:
    conversation_id: str
    customer_id: str
    queue_id: str
    channel: Channel
    priority: int
    state: ConversationState
    assign_time: datetime | None
    sla: tuple[ClockReport, ...]
    segment_ids: tuple[str, ...]
    topic: str = ""
