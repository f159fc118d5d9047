"""Builders for the routing integration tests.

Everything is created through the services' gRPC APIs, the way an admin console would, so a
test reads as a support team setting up its desk. Time comes from the ManualClock shared by
the segments and routing servers: ``Desk`` stamps every conversation and event with the
clock's now, so due times, SLA status and timeouts all agree on one timeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.profiles.v1 import profiles_pb2_grpc
from switchboard.routing.v1 import routing_pb2 as pb
from switchboard.routing.v1 import routing_pb2_grpc
from switchboard.segments.v1 import segments_pb2 as spb
from switchboard.segments.v1 import segments_pb2_grpc

from tests.integration.conftest import ManualClock

Routing = routing_pb2_grpc.RoutingServiceStub
Segments = segments_pb2_grpc.SegmentServiceStub
Profiles = profiles_pb2_grpc.ProfileServiceStub

# A working Monday in winter time: 09:00 UTC is 10:00 in Berlin.
MONDAY = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
WORKDAYS = (
    pb.WEEKDAY_MONDAY,
    pb.WEEKDAY_TUESDAY,
    pb.WEEKDAY_WEDNESDAY,
    pb.WEEKDAY_THURSDAY,
    pb.WEEKDAY_FRIDAY,
)


def struct(document: Mapping[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(document)
    return message


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


def duration(delta: timedelta) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromTimedelta(delta)
    return message


def moment(message: timestamp_pb2.Timestamp) -> datetime:
    return message.ToDatetime(tzinfo=UTC)


# ---- configuration ---------------------------------------------------------------------------


def office_hours(
    calendar_id: str = "berlin_office",
    *,
    time_zone: str = "Europe/Berlin",
    opens: str = "09:00",
    closes: str = "17:00",
) -> pb.Calendar:
    """A Monday-to-Friday calendar, as most teams' first calendar is."""
    return pb.Calendar(
        calendar_id=calendar_id,
        display_name=calendar_id.replace("_", " ").title(),
        time_zone=time_zone,
        weekly_hours=[
            pb.OpenInterval(weekday=day, start_time=opens, end_time=closes) for day in WORKDAYS
        ],
    )


def create_calendar(routing: Routing, calendar: pb.Calendar) -> pb.Calendar:
    return routing.CreateCalendar(pb.CreateCalendarRequest(calendar=calendar)).calendar


def sla_policy(
    policy_id: str,
    *,
    first_response: timedelta | None = None,
    resolution: timedelta | None = None,
    business_hours_of: str = "",
    warning_percent: int = 0,
) -> pb.SlaPolicy:
    """A policy that pauses while the team waits on the customer, as helpdesks usually do.

    Targets count business hours on ``business_hours_of`` when it is given, else every hour.
    """
    clock = pb.TARGET_CLOCK_BUSINESS_HOURS if business_hours_of else pb.TARGET_CLOCK_CALENDAR_TIME
    policy = pb.SlaPolicy(
        policy_id=policy_id,
        display_name=policy_id.replace("_", " "),
        calendar_id=business_hours_of,
        warning_percent=warning_percent,
        pause_states=[pb.CONVERSATION_STATE_WAITING_ON_CUSTOMER],
    )
    if first_response is not None:
        policy.first_response.CopyFrom(pb.SlaTarget(duration=duration(first_response), clock=clock))
    if resolution is not None:
        policy.resolution.CopyFrom(pb.SlaTarget(duration=duration(resolution), clock=clock))
    return policy


def create_policy(routing: Routing, policy: pb.SlaPolicy) -> pb.SlaPolicy:
    return routing.CreateSlaPolicy(pb.CreateSlaPolicyRequest(policy=policy)).policy


def create_queue(
    routing: Routing,
    queue_id: str,
    *,
    required_skills: Sequence[str] = (),
    languages: Sequence[str] = (),
    calendar_id: str = "",
    overflow: pb.Overflow | None = None,
) -> pb.Queue:
    queue = pb.Queue(
        queue_id=queue_id,
        display_name=queue_id.replace("_", " ").title(),
        required_skills=required_skills,
        languages=languages,
        calendar_id=calendar_id,
        overflow=overflow,
    )
    return routing.CreateQueue(pb.CreateQueueRequest(queue=queue)).queue


def create_agent(
    routing: Routing,
    agent_id: str,
    *,
    skills: Sequence[str] = (),
    languages: Sequence[str] = ("en",),
    chats: int = 3,
    emails: int = 0,
    online: bool = False,
) -> pb.Agent:
    """An agent taking ``chats`` chats and ``emails`` emails at once; OFFLINE unless told."""
    capacity = [pb.ChannelCapacity(channel=pb.CHANNEL_CHAT, max_open=chats)]
    if emails:
        capacity.append(pb.ChannelCapacity(channel=pb.CHANNEL_EMAIL, max_open=emails))
    agent = pb.Agent(
        agent_id=agent_id,
        display_name=agent_id.replace(".", " ").title(),
        skills=skills,
        languages=languages,
        capacity=capacity,
    )
    created = routing.CreateAgent(pb.CreateAgentRequest(agent=agent)).agent
    if online:
        return set_status(routing, agent_id, pb.AGENT_STATUS_ONLINE).agent
    return created


def set_status(
    routing: Routing, agent_id: str, status: pb.AgentStatus.ValueType
) -> pb.SetAgentStatusResponse:
    return routing.SetAgentStatus(pb.SetAgentStatusRequest(agent_id=agent_id, status=status))


def action(
    queue_id: str,
    *,
    policy: str = "",
    priority: int = 0,
    skills: Sequence[str] = (),
    owner_attribute: str = "",
    owner_timeout: timedelta = timedelta(minutes=10),
    bot_first: bool = False,
) -> pb.RoutingAction:
    """What a rule does; with ``owner_attribute`` the customer's named owner is tried first."""
    chain = []
    if owner_attribute:
        chain.append(pb.RouteStep(owner_attribute=owner_attribute, timeout=duration(owner_timeout)))
    return pb.RoutingAction(
        queue_id=queue_id,
        sla_policy_id=policy,
        priority=priority,
        required_skills=skills,
        fallback_chain=chain,
        bot_first=bot_first,
    )


def rule(rule_id: str, condition: Mapping[str, Any], then: pb.RoutingAction) -> pb.RoutingRule:
    return pb.RoutingRule(
        rule_id=rule_id,
        display_name=rule_id.replace("_", " ").capitalize(),
        condition=struct(condition),
        action=then,
    )


def set_rules(
    routing: Routing,
    rules: Iterable[pb.RoutingRule],
    default: pb.RoutingAction,
    *,
    revision: int = 0,
    actor: str = "lead@example.com",
) -> pb.RoutingRules:
    request = pb.UpdateRoutingRulesRequest(
        rules=pb.RoutingRules(rules=rules, default_action=default, revision=revision),
        actor=actor,
    )
    return routing.UpdateRoutingRules(request).rules


# ---- customers and segments ------------------------------------------------------------------


def create_customer(profiles: Profiles, customer_id: str, **fields: Any) -> ppb.Customer:
    """A stored customer; ``attributes`` may be given as a plain dict."""
    attributes = fields.pop("attributes", None)
    customer = ppb.Customer(customer_id=customer_id, **fields)
    if attributes is not None:
        customer.attributes.CopyFrom(struct(attributes))
    return profiles.CreateCustomer(ppb.CreateCustomerRequest(customer=customer)).customer


def create_segment(
    segments: Segments,
    segment_id: str,
    condition: Mapping[str, Any],
    *,
    family: str = "",
    priority: int = 0,
) -> spb.Segment:
    segment = spb.Segment(
        segment_id=segment_id,
        display_name=segment_id.replace("_", " ").title(),
        rule=struct(condition),
        family=family,
        priority=priority,
        enabled=True,
    )
    request = spb.CreateSegmentRequest(segment=segment, actor="lead@example.com")
    return segments.CreateSegment(request).segment


def create_tier_segments(segments: Segments) -> None:
    """The seat tiers of the issue as one family: Enterprise 50+, Growth 5-49, Starter 1-4."""
    create_segment(segments, "tier_enterprise", {"seats": {"$gte": 50}}, family="tier", priority=10)
    create_segment(
        segments, "tier_growth", {"seats": {"$gte": 5, "$lt": 50}}, family="tier", priority=20
    )
    create_segment(
        segments, "tier_starter", {"seats": {"$gte": 1, "$lt": 5}}, family="tier", priority=30
    )


# ---- conversations ---------------------------------------------------------------------------


@dataclass
class Desk:
    """The routing service on the shared manual clock: conversations start and events happen
    at the clock's now, and tests move time with ``advance``."""

    routing: Routing
    clock: ManualClock

    @property
    def now(self) -> datetime:
        return self.clock.now

    def at(self, when: datetime) -> None:
        self.clock.now = when

    def advance(self, **delta: float) -> None:
        self.clock.advance(timedelta(**delta))

    def route(
        self,
        conversation_id: str,
        *,
        customer_id: str = "",
        visitor: Mapping[str, Any] | None = None,
        channel: pb.Channel.ValueType = pb.CHANNEL_CHAT,
        language: str = "",
        topic: str = "",
        validate_only: bool = False,
    ) -> pb.RouteConversationResponse:
        request = pb.RouteConversationRequest(
            conversation_id=conversation_id,
            customer_id=customer_id,
            channel=channel,
            language=language,
            topic=topic,
            time=timestamp(self.now),
            validate_only=validate_only,
        )
        if visitor is not None:
            request.visitor_attributes.CopyFrom(struct(visitor))
        return self.routing.RouteConversation(request)

    def record(
        self,
        conversation_id: str,
        kind: pb.ConversationEventKind.ValueType,
        *,
        agent_id: str = "",
        queue_id: str = "",
        sla_policy_id: str = "",
        csat_rating: int = 0,
    ) -> pb.Conversation:
        request = pb.RecordConversationEventRequest(
            conversation_id=conversation_id,
            kind=kind,
            time=timestamp(self.now),
            agent_id=agent_id,
            queue_id=queue_id,
            sla_policy_id=sla_policy_id,
            csat_rating=csat_rating,
        )
        return self.routing.RecordConversationEvent(request).conversation

    def conversation(self, conversation_id: str) -> pb.Conversation:
        request = pb.GetConversationRequest(conversation_id=conversation_id)
        return self.routing.GetConversation(request).conversation

    def assign_next(self, agent_id: str, queue_id: str = "") -> pb.Assignment | None:
        """The conversation the agent pulled, or None when nothing was left for them."""
        request = pb.AssignNextRequest(agent_id=agent_id, queue_id=queue_id)
        response = self.routing.AssignNext(request)
        return response.assignment if response.HasField("assignment") else None

    def waiting(self, queue_id: str) -> list[str]:
        """Conversation ids waiting in a queue, in serving order, across all pages."""
        found: list[str] = []
        token = ""
        while True:
            page = self.routing.ListQueueConversations(
                pb.ListQueueConversationsRequest(queue_id=queue_id, page_size=50, page_token=token)
            )
            found.extend(item.conversation_id for item in page.conversations)
            token = page.next_page_token
            if not token:
                return found

    def holding(self, agent_id: str) -> list[str]:
        request = pb.GetAgentAssignmentsRequest(agent_id=agent_id)
        return [a.conversation_id for a in self.routing.GetAgentAssignments(request).assignments]


def sla_clock(clocks: Iterable[pb.SlaClock], metric: pb.SlaMetric.ValueType) -> pb.SlaClock:
    """The clock of one metric; a missing clock fails the test with what was there."""
    clocks = list(clocks)
    for clock in clocks:
        if clock.metric == metric:
            return clock
    shown = [pb.SlaMetric.Name(c.metric) for c in clocks]
    raise AssertionError(f"no {pb.SlaMetric.Name(metric)} clock among {shown}")


def event_kinds(conversation: pb.Conversation) -> list[str]:
    return [pb.ConversationEventKind.Name(e.kind) for e in conversation.events]


def moves_by_the_service(conversation: pb.Conversation) -> list[pb.ConversationEvent]:
    """Transfers the service made itself (overflow, a fallback step timing out): they carry
    a note saying why, which a transfer an agent records does not."""
    return [
        event
        for event in conversation.events
        if event.kind == pb.CONVERSATION_EVENT_KIND_TRANSFER and event.note
    ]
