"""What a client of the routing API sends and reads back: resources survive the trip through
the wire format unchanged, and unreadable input is refused with the path of every bad field."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from hypothesis import example, given
from hypothesis import strategies as st
from switchboard.routing.v1 import routing_pb2 as pb

from services.core.errors import InvalidArgument
from services.routing.business_hours import BusinessCalendar, OpenInterval
from services.routing.convert import (
    agent_from_proto,
    agent_status_from_proto,
    agent_to_proto,
    assignment_change_to_proto,
    assignment_to_proto,
    calendar_from_proto,
    calendar_to_proto,
    conversation_to_proto,
    decision_to_proto,
    event_kind_from_proto,
    policy_from_proto,
    policy_to_proto,
    queue_from_proto,
    queue_to_proto,
    route_request_from_proto,
    rules_from_proto,
    rules_revision_to_proto,
    rules_to_proto,
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
    RouteStep,
    RoutingAction,
    RoutingRule,
    RoutingRules,
    RulesRevision,
    SlaPolicy,
    SlaTarget,
    Strategy,
    TargetClock,
)
from services.routing.lifecycle import ConversationEvent, ConversationState, EventKind
from services.routing.sla import ClockReport, Metric, SlaStatus
from services.segments.convert import timestamp

CREATED = datetime(2025, 3, 3, 8, 15, 30, 123456, tzinfo=UTC)
UPDATED = datetime(2025, 3, 4, 17, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def field_paths(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    assert error.value.code is grpc.StatusCode.INVALID_ARGUMENT
    return [violation.field for violation in error.value.violations]


def minutes(clock_time: str) -> int:
    hours, mins = clock_time.split(":")
    return int(hours) * 60 + int(mins)


# ---- round trips -----------------------------------------------------------------------------

BERLIN_OFFICE = Calendar(
    calendar_id="berlin",
    display_name="Berlin office hours",
    hours=BusinessCalendar(
        time_zone="Europe/Berlin",
        weekly_hours=(
            OpenInterval(0, minutes("09:00"), minutes("12:00")),
            OpenInterval(0, minutes("13:00"), minutes("17:30")),
            # A night shift: Sunday to midnight, and Monday from it.
            OpenInterval(6, minutes("22:00"), minutes("24:00")),
            OpenInterval(0, 0, minutes("06:00")),
        ),
        holidays=frozenset({date(2025, 12, 25), date(2025, 1, 1)}),
    ),
    revision=3,
    create_time=CREATED,
    update_time=UPDATED,
)


def test_a_calendar_with_split_and_night_shifts_and_holidays_reads_back_unchanged() -> None:
    assert calendar_from_proto(calendar_to_proto(BERLIN_OFFICE)) == BERLIN_OFFICE


def test_calendar_hours_travel_as_clock_times_with_monday_as_the_first_weekday() -> None:
    message = calendar_to_proto(BERLIN_OFFICE)
    night_end = message.weekly_hours[2]
    assert (night_end.weekday, night_end.start_time, night_end.end_time) == (
        pb.WEEKDAY_SUNDAY,
        "22:00",
        "24:00",
    )
    assert message.weekly_hours[0].weekday == pb.WEEKDAY_MONDAY
    assert list(message.holidays) == ["2025-01-01", "2025-12-25"]


def test_an_always_open_calendar_without_timestamps_leaves_them_unset() -> None:
    always = Calendar("support-24-7", hours=BusinessCalendar(always_open=True))
    message = calendar_to_proto(always)
    assert not message.HasField("create_time")
    assert calendar_from_proto(message) == always


open_intervals = st.builds(
    lambda weekday, start, length: OpenInterval(weekday, start, min(start + length, 1440)),
    st.integers(0, 6),
    st.integers(0, 1439),
    st.integers(1, 1440),
)
calendars = st.builds(
    Calendar,
    calendar_id=st.from_regex(r"[a-z][a-z0-9_-]{0,20}", fullmatch=True),
    display_name=st.text(max_size=20),
    hours=st.builds(
        BusinessCalendar,
        time_zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]),
        always_open=st.booleans(),
        weekly_hours=st.lists(open_intervals, max_size=6).map(tuple),
        holidays=st.frozensets(st.dates(date(1970, 1, 1), date(9999, 12, 31)), max_size=5),
    ),
    revision=st.integers(0, 2**40),
    create_time=st.none() | st.datetimes(timezones=st.just(UTC)),
)


@given(calendars)
def test_every_calendar_reads_back_unchanged(calendar: Calendar) -> None:
    assert calendar_from_proto(calendar_to_proto(calendar)) == calendar


ENTERPRISE = SlaPolicy(
    policy_id="enterprise",
    display_name="Enterprise 30 minutes",
    calendar_id="berlin",
    first_response=SlaTarget(timedelta(minutes=30), TargetClock.BUSINESS_HOURS),
    next_response=SlaTarget(timedelta(hours=2)),
    resolution=SlaTarget(timedelta(days=2, microseconds=5), TargetClock.CALENDAR_TIME),
    warning_percent=60,
    pause_states=frozenset({ConversationState.WAITING_ON_CUSTOMER, ConversationState.BOT}),
    revision=2,
    create_time=CREATED,
    update_time=UPDATED,
)


def test_an_sla_policy_with_every_kind_of_target_reads_back_unchanged() -> None:
    assert policy_from_proto(policy_to_proto(ENTERPRISE)) == ENTERPRISE


def test_an_sla_policy_without_targets_reads_back_without_targets() -> None:
    bare = SlaPolicy("no-sla")
    message = policy_to_proto(bare)
    assert not message.HasField("first_response")
    assert policy_from_proto(message) == bare


PRIORITY = Queue(
    queue_id="priority",
    display_name="Priority",
    required_skills=("billing", "senior"),
    languages=("de", "en"),
    calendar_id="berlin",
    strategy=Strategy.ROUND_ROBIN,
    overflow=Overflow("general", after=timedelta(minutes=15), when_no_agent_online=True),
    revision=7,
    create_time=CREATED,
    update_time=UPDATED,
)


@pytest.mark.parametrize(
    "queue",
    [
        PRIORITY,
        Queue("general"),
        Queue("night", overflow=Overflow("general", when_no_agent_online=True)),
    ],
    ids=["full", "bare", "overflow-without-timeout"],
)
def test_a_queue_reads_back_unchanged(queue: Queue) -> None:
    assert queue_from_proto(queue_to_proto(queue)) == queue


def test_a_queue_without_overflow_sends_none() -> None:
    assert not queue_to_proto(Queue("general")).HasField("overflow")


ANA = Agent(
    agent_id="ana.silva",
    display_name="Ana Silva",
    skills=("billing",),
    languages=("pt", "en"),
    capacity={Channel.EMAIL: 10, Channel.CHAT: 3, Channel.PHONE: 0},
    teams=("emea-success",),
    status=AgentStatus.AWAY,
    status_time=UPDATED,
    open_conversations=2,
    revision=4,
    create_time=CREATED,
    update_time=UPDATED,
)


def test_an_agent_with_capacity_per_channel_reads_back_unchanged() -> None:
    assert agent_from_proto(agent_to_proto(ANA)) == ANA


def test_an_agents_capacity_is_listed_in_channel_order() -> None:
    channels = [entry.channel for entry in agent_to_proto(ANA).capacity]
    assert channels == [pb.CHANNEL_CHAT, pb.CHANNEL_EMAIL, pb.CHANNEL_PHONE]


ENTERPRISE_RULES = RoutingRules(
    rules=(
        RoutingRule(
            rule_id="enterprise",
            display_name="Enterprise to the senior desk",
            condition={"$and": [{"seats": {"$gte": 50}}, {"conversation.channel": "chat"}]},
            action=RoutingAction(
                queue_id="priority",
                sla_policy_id="enterprise",
                priority=90,
                required_skills=("senior",),
                fallback_chain=(
                    RouteStep(timedelta(minutes=5), owner_attribute="success_manager"),
                    RouteStep(timedelta(minutes=2), agent_id="ana.silva"),
                    RouteStep(timedelta(minutes=10), queue_id="emea-success"),
                ),
            ),
        ),
        RoutingRule("bots", RoutingAction("general", bot_first=True)),
    ),
    default_action=RoutingAction("general", sla_policy_id="standard"),
    revision=12,
    update_time=UPDATED,
    actor="lead@example.com",
)


def test_routing_rules_with_fallback_chains_and_conditions_read_back_unchanged() -> None:
    assert rules_from_proto(rules_to_proto(ENTERPRISE_RULES)) == ENTERPRISE_RULES


def test_rules_without_a_default_action_read_back_without_one() -> None:
    rules = RoutingRules(rules=ENTERPRISE_RULES.rules)
    assert not rules_to_proto(rules).HasField("default_action")
    assert rules_from_proto(rules_to_proto(rules)).default_action is None


def test_each_fallback_step_sends_exactly_its_own_target() -> None:
    steps = rules_to_proto(ENTERPRISE_RULES).rules[0].action.fallback_chain
    assert [step.WhichOneof("target") for step in steps] == [
        "owner_attribute",
        "agent_id",
        "queue_id",
    ]


def test_a_rollback_revision_names_the_revision_it_restored() -> None:
    revision = RulesRevision(ENTERPRISE_RULES, RevisionAction.ROLLED_BACK, restored_revision=9)
    message = rules_revision_to_proto(revision)
    assert (message.action, message.restored_revision) == (pb.REVISION_ACTION_ROLLED_BACK, 9)
    assert rules_from_proto(message.rules) == ENTERPRISE_RULES


# ---- unreadable input ------------------------------------------------------------------------


def test_every_unreadable_time_weekday_and_holiday_is_reported_at_once() -> None:
    message = pb.Calendar(
        calendar_id="berlin",
        weekly_hours=[
            pb.OpenInterval(weekday=pb.WEEKDAY_MONDAY, start_time="9:00", end_time="17:00"),
            pb.OpenInterval(weekday=pb.WEEKDAY_TUESDAY, start_time="09:00", end_time="17:00"),
            pb.OpenInterval(weekday=pb.WEEKDAY_FRIDAY, start_time="09:00", end_time="24:30"),
            pb.OpenInterval(start_time="09:00", end_time="17:00"),
        ],
        holidays=["2025-12-25", "2025-02-30", "25.12.2025"],
    )
    with pytest.raises(InvalidArgument) as raised:
        calendar_from_proto(message)
    assert field_paths(raised) == [
        "calendar.weekly_hours[0].start_time",
        "calendar.weekly_hours[2].end_time",
        "calendar.weekly_hours[3].weekday",
        "calendar.holidays[1]",
        "calendar.holidays[2]",
    ]


def test_the_refusal_quotes_the_unreadable_text() -> None:
    message = pb.Calendar(
        weekly_hours=[pb.OpenInterval(weekday=pb.WEEKDAY_MONDAY, start_time="9am", end_time="")]
    )
    with pytest.raises(InvalidArgument) as raised:
        calendar_from_proto(message)
    assert "'9am'" in raised.value.violations[0].description


def test_an_unknown_weekday_number_is_refused_like_an_unset_one() -> None:
    message = pb.Calendar(
        weekly_hours=[pb.OpenInterval(weekday=8, start_time="09:00", end_time="17:00")]  # type: ignore[arg-type]
    )
    with pytest.raises(InvalidArgument) as raised:
        calendar_from_proto(message)
    assert field_paths(raised) == ["calendar.weekly_hours[0].weekday"]


def test_capacity_without_a_channel_or_with_a_channel_twice_is_refused() -> None:
    message = pb.Agent(
        agent_id="ana.silva",
        capacity=[
            pb.ChannelCapacity(channel=pb.CHANNEL_CHAT, max_open=3),
            pb.ChannelCapacity(max_open=5),
            pb.ChannelCapacity(channel=pb.CHANNEL_CHAT, max_open=4),
        ],
    )
    with pytest.raises(InvalidArgument) as raised:
        agent_from_proto(message)
    assert field_paths(raised) == ["agent.capacity[1].channel", "agent.capacity[2].channel"]


def test_capacity_out_of_range_is_passed_on_for_the_app_to_judge() -> None:
    message = pb.Agent(capacity=[pb.ChannelCapacity(channel=pb.CHANNEL_SMS, max_open=-1)])
    assert agent_from_proto(message).capacity == {Channel.SMS: -1}


def test_an_unset_pause_state_is_refused_with_its_position() -> None:
    message = pb.SlaPolicy(
        policy_id="standard",
        pause_states=[
            pb.CONVERSATION_STATE_WAITING_ON_CUSTOMER,
            pb.CONVERSATION_STATE_UNSPECIFIED,
        ],
    )
    with pytest.raises(InvalidArgument) as raised:
        policy_from_proto(message)
    assert field_paths(raised) == ["policy.pause_states[1]"]


# ---- defaults of the contract ----------------------------------------------------------------


def test_a_policy_with_warning_percent_zero_warns_at_the_default_75() -> None:
    assert policy_from_proto(pb.SlaPolicy(policy_id="standard")).warning_percent == 75


def test_a_target_without_a_duration_is_no_target() -> None:
    message = pb.SlaPolicy(first_response=pb.SlaTarget(clock=pb.TARGET_CLOCK_BUSINESS_HOURS))
    assert policy_from_proto(message).first_response is None


def test_a_target_with_an_unspecified_clock_uses_the_default_clock() -> None:
    message = pb.SlaPolicy(
        resolution=pb.SlaTarget(duration=duration_pb2.Duration(seconds=3600)),
    )
    assert policy_from_proto(message).resolution == SlaTarget(HOUR, TargetClock.DEFAULT)


def test_a_queue_with_an_unspecified_strategy_is_least_busy() -> None:
    assert queue_from_proto(pb.Queue(queue_id="general")).strategy is Strategy.LEAST_BUSY


def test_a_fallback_step_without_target_or_timeout_reaches_the_app_empty() -> None:
    rules = pb.RoutingRules(default_action=pb.RoutingAction(fallback_chain=[pb.RouteStep()]))
    action = rules_from_proto(rules).default_action
    assert action is not None
    assert action.fallback_chain == (RouteStep(timedelta(0)),)


def test_unspecified_or_unknown_enums_in_requests_reach_the_app_as_none() -> None:
    assert agent_status_from_proto(pb.AGENT_STATUS_UNSPECIFIED) is None
    assert agent_status_from_proto(pb.AGENT_STATUS_ONLINE) is AgentStatus.ONLINE
    assert event_kind_from_proto(pb.CONVERSATION_EVENT_KIND_UNSPECIFIED) is None
    assert event_kind_from_proto(99) is None  # type: ignore[arg-type]
    request = route_request_from_proto(pb.RouteConversationRequest(conversation_id="c-1"))
    assert request.channel is None


def test_a_route_request_carries_visitor_attributes_with_whole_numbers_as_ints() -> None:
    message = pb.RouteConversationRequest(
        conversation_id="web:42",
        channel=pb.CHANNEL_CHAT,
        language="de",
        topic="billing",
        priority_hint="urgent",
        validate_only=True,
    )
    message.visitor_attributes.update({"country": "DE", "seats": 12})
    message.time.FromDatetime(CREATED)
    request = route_request_from_proto(message)
    assert request.visitor_attributes == {"country": "DE", "seats": 12}
    assert (request.channel, request.time, request.validate_only) == (Channel.CHAT, CREATED, True)
    assert (request.language, request.topic, request.priority_hint) == ("de", "billing", "urgent")


# ---- what clients read -----------------------------------------------------------------------

DECISION = Decision(
    conversation_id="web:42",
    queue_id="priority",
    priority=90,
    sla_policy_id="enterprise",
    first_response_due=None,
    resolution_due=UPDATED,
    agent_id="",
    segment_ids=("enterprise", "eu"),
    rule_id="enterprise",
    rules_revision=12,
    explanation="rule 'enterprise' matched",
    bot_first=True,
    required_skills=("senior",),
    route_time=CREATED,
    reserved_agent_id="ana.silva",
)
FIRST_RESPONSE_CLOCK = ClockReport(
    metric=Metric.FIRST_RESPONSE,
    status=SlaStatus.WARNING,
    target=timedelta(minutes=30),
    elapsed=timedelta(minutes=25),
    paused=False,
    running=True,
    due_time=UPDATED,
    warning_time=CREATED,
    stop_time=None,
)


def test_a_bot_first_decision_has_no_first_response_due_until_the_handover() -> None:
    message = decision_to_proto(DECISION)
    assert not message.HasField("first_response_due")
    assert message.resolution_due.ToDatetime(tzinfo=UTC) == UPDATED
    assert message.route_time.ToDatetime(tzinfo=UTC) == CREATED
    assert message.reserved_agent_id == "ana.silva"


@given(
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())).filter(
        lambda moment: moment.utcoffset() is None or 1 < moment.year < 9999
    )
)
# Found by CI: a wall-clock time that Adelaide skipped when its clocks went forward.
@example(datetime(2000, 10, 29, 2, 0, tzinfo=ZoneInfo("Australia/South")))
def test_every_moment_travels_as_protobufs_own_conversion_sends_it(moment: datetime) -> None:
    # Naive means UTC, as for FromDatetime; a zone's offset is taken off.
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(moment)

    sent = timestamp(moment)

    assert sent == expected
    # Through UTC on both sides: an aware moment in a DST gap or fold never equals one in
    # another zone (PEP 495), though it names one instant.
    assert sent.ToDatetime(tzinfo=UTC) == (
        moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment.astimezone(UTC)
    )


@pytest.mark.parametrize("kind", list(EventKind))
def test_every_event_kind_the_service_records_reads_back_as_itself(kind: EventKind) -> None:
    conversation = Conversation(
        conversation_id="web:42",
        customer_id="cus-1",
        channel=Channel.CHAT,
        language="de",
        topic="billing",
        state=ConversationState.ASSIGNED,
        queue_id="priority",
        agent_id="ana.silva",
        priority=90,
        sla_policy_id="enterprise",
        decision=DECISION,
        events=(ConversationEvent(kind, CREATED, policy_id="enterprise", rating=4),),
        sla=(FIRST_RESPONSE_CLOCK,),
        csat_rating=4,
    )
    event = conversation_to_proto(conversation).events[0]
    assert event_kind_from_proto(event.kind) is kind
    assert (event.sla_policy_id, event.csat_rating) == ("enterprise", 4)


def test_a_transfer_is_sent_under_the_contracts_name() -> None:
    assert event_kind_from_proto(pb.CONVERSATION_EVENT_KIND_TRANSFER) is EventKind.TRANSFERRED
    assert event_kind_from_proto(pb.CONVERSATION_EVENT_KIND_CSAT) is EventKind.CSAT_RATED


def test_an_assignment_shows_its_sla_clock_as_the_console_needs_it() -> None:
    assignment = Assignment(
        conversation_id="web:42",
        customer_id="cus-1",
        queue_id="priority",
        channel=Channel.EMAIL,
        priority=90,
        state=ConversationState.WAITING_ON_CUSTOMER,
        assign_time=None,
        sla=(FIRST_RESPONSE_CLOCK,),
        segment_ids=("enterprise",),
        topic="billing",
    )
    message = assignment_to_proto(assignment)
    assert (message.channel, message.state) == (
        pb.CHANNEL_EMAIL,
        pb.CONVERSATION_STATE_WAITING_ON_CUSTOMER,
    )
    assert not message.HasField("assign_time")
    clock = message.sla[0]
    assert (clock.metric, clock.status, clock.running) == (
        pb.SLA_METRIC_FIRST_RESPONSE,
        pb.SLA_STATUS_WARNING,
        True,
    )
    assert clock.elapsed.ToTimedelta() == timedelta(minutes=25)
    assert clock.due_time.ToDatetime(tzinfo=UTC) == UPDATED
    assert not clock.HasField("stop_time")


def test_assignment_changes_keep_their_meaning() -> None:
    assert [assignment_change_to_proto(change) for change in AssignmentChange] == [
        pb.ASSIGNMENT_CHANGE_CURRENT,
        pb.ASSIGNMENT_CHANGE_ASSIGNED,
        pb.ASSIGNMENT_CHANGE_RELEASED,
    ]


def _rules(condition: float, timeout: duration_pb2.Duration) -> pb.RoutingRules:
    rule = pb.RoutingRule(
        rule_id="vip",
        action=pb.RoutingAction(queue_id="desk", fallback_chain=[pb.RouteStep(timeout=timeout)]),
    )
    rule.condition.update({"seats": {"$gte": condition}})
    return pb.RoutingRules(rules=[rule])


@pytest.mark.parametrize(
    ("convert", "message", "field"),
    [
        (
            agent_from_proto,
            pb.Agent(agent_id="ana.silva", status_time=timestamp_pb2.Timestamp(nanos=10**9)),
            "agent.status_time",
        ),
        (
            calendar_from_proto,
            pb.Calendar(
                calendar_id="office", create_time=timestamp_pb2.Timestamp(seconds=-(2**62))
            ),
            "calendar.create_time",
        ),
        (
            queue_from_proto,
            pb.Queue(
                queue_id="desk",
                overflow=pb.Overflow(queue_id="spill", after=duration_pb2.Duration(seconds=2**62)),
            ),
            "queue.overflow.after",
        ),
        (
            rules_from_proto,
            _rules(math.nan, duration_pb2.Duration(seconds=60)),
            "rules.rules[0].condition",
        ),
        (
            rules_from_proto,
            _rules(50, duration_pb2.Duration(seconds=2**62)),
            "rules.rules[0].action.fallback_chain[0].timeout",
        ),
        (
            # 9999-12-31 is a real instant, but no date arithmetic near it is safe.
            route_request_from_proto,
            pb.RouteConversationRequest(time=timestamp_pb2.Timestamp(seconds=253402300799)),
            "time",
        ),
    ],
)
def test_times_durations_and_numbers_no_calendar_or_json_has_are_refused_by_path(
    convert: Callable[[Any], object], message: Any, field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        convert(message)
    assert field_paths(raised) == [field]
