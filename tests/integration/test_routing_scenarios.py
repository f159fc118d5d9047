"""The routing service end to end through gRPC: the two teams of the issue, fallback chains,
overflow and the SLA clocks through a conversation's life."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import Engine
from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.routing.v1 import routing_pb2 as pb

from services.access.keys import KeyStore
from tests.integration.conftest import ManualClock
from tests.integration.routing_setup import (
    MONDAY,
    Desk,
    Profiles,
    Routing,
    Segments,
    action,
    create_agent,
    create_calendar,
    create_customer,
    create_policy,
    create_queue,
    create_segment,
    create_tier_segments,
    duration,
    event_kinds,
    moment,
    moves_by_the_service,
    office_hours,
    rule,
    set_rules,
    set_status,
    sla_clock,
    sla_policy,
)
from tests.support.rpc import call_error

FIRST_RESPONSE = pb.SLA_METRIC_FIRST_RESPONSE
RESOLUTION = pb.SLA_METRIC_RESOLUTION


@pytest.fixture
def desk(routing: Routing, segments_clock: ManualClock) -> Desk:
    segments_clock.now = MONDAY
    return Desk(routing, segments_clock)


# ---- team 1: a 12-person SaaS team with tiers and an at-risk overlay -------------------------


def team_one(desk: Desk, segments: Segments, profiles: Profiles) -> pb.RoutingRules:
    """Tiers by seats, an at-risk overlay by health score, three queues, SLAs of 30 minutes
    (around the clock), 2 and 4 business hours in Berlin; agents start OFFLINE."""
    create_tier_segments(segments)
    create_segment(segments, "at_risk", {"health_score": {"$lt": 40}})

    routing = desk.routing
    create_calendar(routing, office_hours("berlin_office"))
    create_policy(routing, sla_policy("enterprise_30m", first_response=timedelta(minutes=30)))
    create_policy(
        routing,
        sla_policy(
            "growth_2h", first_response=timedelta(hours=2), business_hours_of="berlin_office"
        ),
    )
    create_policy(
        routing,
        sla_policy(
            "starter_4h", first_response=timedelta(hours=4), business_hours_of="berlin_office"
        ),
    )
    for queue_id in ("general", "priority"):
        create_queue(routing, queue_id)
    create_queue(routing, "senior", required_skills=["senior"])
    create_agent(routing, "ana.senior", skills=["senior"], chats=1)
    create_agent(routing, "ben.senior", skills=["senior"], chats=3)

    create_customer(
        profiles, "acme", seats=120, health_score=85, attributes={"account_owner": "ana.senior"}
    )
    create_customer(profiles, "bloom", seats=12, health_score=70)
    create_customer(profiles, "cleo", seats=3, health_score=90)
    create_customer(profiles, "dune", seats=2, health_score=25)

    return set_rules(
        routing,
        [
            rule(
                "at_risk",
                {"$inSegment": "at_risk"},
                action("priority", policy="growth_2h", priority=80),
            ),
            rule(
                "enterprise",
                {"$inSegment": "tier_enterprise"},
                action(
                    "senior",
                    policy="enterprise_30m",
                    priority=100,
                    owner_attribute="account_owner",
                    owner_timeout=timedelta(minutes=10),
                ),
            ),
            rule(
                "growth",
                {"$inSegment": "tier_growth"},
                action("priority", policy="growth_2h", priority=50),
            ),
            rule(
                "starter",
                {"$inSegment": "tier_starter"},
                action("general", policy="starter_4h", priority=10),
            ),
        ],
        default=action("general"),
    )


def test_enterprise_customer_goes_to_their_account_owner_with_30_minute_first_response(
    desk: Desk, segments: Segments, profiles: Profiles
) -> None:
    rules = team_one(desk, segments, profiles)
    set_status(desk.routing, "ana.senior", pb.AGENT_STATUS_ONLINE)
    set_status(desk.routing, "ben.senior", pb.AGENT_STATUS_ONLINE)

    response = desk.route("acme-1", customer_id="acme")

    decision = response.decision
    assert not response.replayed
    assert (decision.queue_id, decision.agent_id) == ("senior", "ana.senior")
    assert (decision.sla_policy_id, decision.priority) == ("enterprise_30m", 100)
    assert moment(decision.first_response_due) == MONDAY + timedelta(minutes=30)
    assert list(decision.segment_ids) == ["tier_enterprise"]
    assert (decision.rule_id, decision.rules_revision) == ("enterprise", rules.revision)
    assert "enterprise" in decision.explanation
    assert "senior" in decision.required_skills
    assert moment(decision.route_time) == MONDAY
    conversation = desk.conversation("acme-1")
    assert conversation.state == pb.CONVERSATION_STATE_ASSIGNED
    assert (conversation.agent_id, conversation.customer_id) == ("ana.senior", "acme")


@pytest.mark.parametrize(
    ("customer_id", "routed", "queue_id", "policy_id", "rule_id", "due"),
    [
        pytest.param(
            "bloom",
            datetime(2025, 3, 7, 15, 0, tzinfo=UTC),  # Friday 16:00 in Berlin
            "priority",
            "growth_2h",
            "growth",
            datetime(2025, 3, 10, 9, 0, tzinfo=UTC),  # 1 h on Friday, 1 h on Monday
            id="growth-on-friday-afternoon-is-due-monday-morning",
        ),
        pytest.param(
            "cleo",
            datetime(2025, 3, 6, 14, 0, tzinfo=UTC),  # Thursday 15:00 in Berlin
            "general",
            "starter_4h",
            "starter",
            datetime(2025, 3, 7, 10, 0, tzinfo=UTC),  # 2 h on Thursday, 2 h on Friday
            id="starter-on-thursday-afternoon-is-due-friday-morning",
        ),
    ],
)
def test_business_hour_targets_skip_the_night_and_the_weekend(
    desk: Desk,
    segments: Segments,
    profiles: Profiles,
    customer_id: str,
    routed: datetime,
    queue_id: str,
    policy_id: str,
    rule_id: str,
    due: datetime,
) -> None:
    rules = team_one(desk, segments, profiles)
    desk.at(routed)

    decision = desk.route(f"{customer_id}-1", customer_id=customer_id).decision

    assert (decision.queue_id, decision.sla_policy_id) == (queue_id, policy_id)
    assert (decision.rule_id, decision.rules_revision) == (rule_id, rules.revision)
    assert moment(decision.first_response_due) == due
    assert list(decision.segment_ids) == [f"tier_{rule_id}"]
    assert decision.agent_id == ""
    assert rule_id in decision.explanation
    assert desk.waiting(queue_id) == [f"{customer_id}-1"]


def test_at_risk_customer_goes_to_the_priority_queue_whatever_the_tier(
    desk: Desk, segments: Segments, profiles: Profiles
) -> None:
    team_one(desk, segments, profiles)

    decision = desk.route("dune-1", customer_id="dune").decision

    assert (decision.queue_id, decision.rule_id, decision.priority) == ("priority", "at_risk", 80)
    assert sorted(decision.segment_ids) == ["at_risk", "tier_starter"]
    # Monday 10:00 in Berlin plus 2 business hours.
    assert moment(decision.first_response_due) == MONDAY + timedelta(hours=2)


def test_owner_offline_sends_the_enterprise_conversation_straight_to_the_senior_queue(
    desk: Desk, segments: Segments, profiles: Profiles
) -> None:
    team_one(desk, segments, profiles)
    set_status(desk.routing, "ben.senior", pb.AGENT_STATUS_ONLINE)

    decision = desk.route("acme-1", customer_id="acme").decision

    assert (decision.queue_id, decision.agent_id) == ("senior", "ben.senior")
    assert decision.reserved_agent_id == ""


def test_busy_owner_holds_the_conversation_until_the_step_times_out_then_the_queue_takes_it(
    desk: Desk, segments: Segments, profiles: Profiles
) -> None:
    team_one(desk, segments, profiles)
    set_status(desk.routing, "ana.senior", pb.AGENT_STATUS_ONLINE)
    set_status(desk.routing, "ben.senior", pb.AGENT_STATUS_ONLINE)
    assert desk.route("acme-1", customer_id="acme").decision.agent_id == "ana.senior"
    desk.advance(minutes=1)

    held = desk.route("acme-2", customer_id="acme").decision

    assert (held.agent_id, held.reserved_agent_id) == ("", "ana.senior")
    desk.advance(minutes=9)
    assert desk.assign_next("ben.senior") is None, "ben took a conversation held for its owner"

    desk.advance(minutes=2)
    desk.waiting("senior")
    desk.assign_next("ben.senior")
    conversation = desk.conversation("acme-2")
    assert (conversation.queue_id, conversation.agent_id) == ("senior", "ben.senior")
    assert len(moves_by_the_service(conversation)) == 1


def test_routing_the_same_conversation_again_replays_the_stored_decision(
    desk: Desk, segments: Segments, profiles: Profiles
) -> None:
    team_one(desk, segments, profiles)
    first = desk.route("bloom-1", customer_id="bloom")
    desk.advance(minutes=5)

    again = desk.route("bloom-1", customer_id="bloom")

    assert (first.replayed, again.replayed) == (False, True)
    assert again.decision == first.decision
    assert desk.waiting("priority") == ["bloom-1"]
    assert event_kinds(desk.conversation("bloom-1")).count("CONVERSATION_EVENT_KIND_ROUTED") == 1


def test_validate_only_returns_the_decision_and_stores_nothing(
    desk: Desk, segments: Segments, profiles: Profiles
) -> None:
    team_one(desk, segments, profiles)

    dry = desk.route("bloom-1", customer_id="bloom", validate_only=True)

    assert (dry.decision.queue_id, dry.decision.rule_id) == ("priority", "growth")
    error = call_error(lambda: desk.conversation("bloom-1"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert desk.waiting("priority") == []
    assert not desk.route("bloom-1", customer_id="bloom").replayed


def test_a_real_route_is_audited_and_a_dry_run_or_a_replay_is_not(
    desk: Desk, segments: Segments, profiles: Profiles, engine: Engine
) -> None:
    team_one(desk, segments, profiles)
    started = datetime.now(UTC)

    desk.route("bloom-1", customer_id="bloom", validate_only=True)
    dry_run_audit = KeyStore(engine).audit(since=started)
    desk.route("bloom-1", customer_id="bloom")
    assert desk.route("bloom-1", customer_id="bloom").replayed
    refused = call_error(lambda: desk.route("bloom 2", customer_id="bloom"))

    assert dry_run_audit == []
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    audited = [
        (entry.method.rsplit("/", 1)[-1], entry.code)
        for entry in KeyStore(engine).audit(since=started)
    ]
    # Newest first: the refused attempt is kept, the replay (which changed nothing) is not.
    assert audited == [("RouteConversation", "INVALID_ARGUMENT"), ("RouteConversation", "OK")]


def test_conversation_keeps_the_segments_the_customer_had_when_routed(
    desk: Desk, segments: Segments, profiles: Profiles
) -> None:
    team_one(desk, segments, profiles)
    desk.route("bloom-1", customer_id="bloom")
    profiles.UpdateCustomer(
        ppb.UpdateCustomerRequest(
            customer=ppb.Customer(customer_id="bloom", seats=80),
            update_mask=field_mask_pb2.FieldMask(paths=["seats"]),
        )
    )
    desk.advance(minutes=1)

    later = desk.route("bloom-2", customer_id="bloom").decision

    assert (later.rule_id, list(later.segment_ids)) == ("enterprise", ["tier_enterprise"])
    kept = desk.conversation("bloom-1")
    assert list(kept.decision.segment_ids) == ["tier_growth"]
    queued = desk.routing.ListQueueConversations(
        pb.ListQueueConversationsRequest(queue_id="priority")
    ).conversations
    assert [(a.conversation_id, list(a.segment_ids)) for a in queued] == [
        ("bloom-1", ["tier_growth"])
    ]


# ---- team 2: success managers for custom contracts, a bot for the smallest -------------------


def team_two(desk: Desk, segments: Segments, profiles: Profiles) -> None:
    """Company size tiers; enterprise needs a custom contract too, and goes to its success
    manager (Sam, OFFLINE until a test needs him). Starters get the bot, then an email
    answer within 24 hours."""
    create_segment(
        segments,
        "enterprise",
        {"$and": [{"employee_count": {"$gt": 500}}, {"attributes.contract": "custom"}]},
        family="size",
        priority=10,
    )
    create_segment(
        segments,
        "growth",
        {"employee_count": {"$gte": 50, "$lte": 500}},
        family="size",
        priority=20,
    )
    create_segment(segments, "starter", {"employee_count": {"$lt": 50}}, family="size", priority=30)

    routing = desk.routing
    create_policy(routing, sla_policy("success_1h", first_response=timedelta(hours=1)))
    create_policy(routing, sla_policy("growth_4h", first_response=timedelta(hours=4)))
    create_policy(routing, sla_policy("email_24h", first_response=timedelta(hours=24)))
    for queue_id in ("success", "priority", "general"):
        create_queue(routing, queue_id)
    create_agent(routing, "sam.success", chats=3)

    create_customer(
        profiles,
        "globex",
        employee_count=900,
        attributes={"contract": "custom", "success_manager": "sam.success"},
    )
    create_customer(profiles, "initech", employee_count=900, attributes={"contract": "standard"})
    create_customer(profiles, "hooli", employee_count=120)
    create_customer(profiles, "piedpiper", employee_count=12)

    set_rules(
        routing,
        [
            rule(
                "enterprise",
                {"$inSegment": "enterprise"},
                action(
                    "success",
                    policy="success_1h",
                    priority=100,
                    owner_attribute="success_manager",
                    owner_timeout=timedelta(minutes=15),
                ),
            ),
            rule("growth", {"$inSegment": "growth"}, action("priority", policy="growth_4h")),
            rule(
                "starter",
                {"$inSegment": "starter"},
                action("general", policy="email_24h", bot_first=True),
            ),
        ],
        default=action("general"),
    )


def test_custom_contract_enterprise_gets_their_success_manager_within_an_hour(
    desk: Desk, segments: Segments, profiles: Profiles
) -> None:
    team_two(desk, segments, profiles)
    set_status(desk.routing, "sam.success", pb.AGENT_STATUS_ONLINE)

    decision = desk.route("globex-1", customer_id="globex").decision

    assert (decision.queue_id, decision.agent_id) == ("success", "sam.success")
    assert (decision.sla_policy_id, decision.rule_id) == ("success_1h", "enterprise")
    assert moment(decision.first_response_due) == MONDAY + timedelta(hours=1)
    assert list(decision.segment_ids) == ["enterprise"]


def test_large_company_without_a_custom_contract_is_not_enterprise(
    desk: Desk, segments: Segments, profiles: Profiles
) -> None:
    team_two(desk, segments, profiles)

    decision = desk.route("initech-1", customer_id="initech").decision

    assert (decision.queue_id, decision.rule_id, decision.sla_policy_id) == ("general", "", "")
    assert list(decision.segment_ids) == []
    assert not decision.HasField("first_response_due")
    assert decision.agent_id == ""


def test_growth_company_waits_in_priority_with_a_4_hour_first_response(
    desk: Desk, segments: Segments, profiles: Profiles
) -> None:
    team_two(desk, segments, profiles)

    decision = desk.route("hooli-1", customer_id="hooli").decision

    assert (decision.queue_id, decision.sla_policy_id, decision.rule_id) == (
        "priority",
        "growth_4h",
        "growth",
    )
    assert moment(decision.first_response_due) == MONDAY + timedelta(hours=4)
    assert list(decision.segment_ids) == ["growth"]


def test_starter_email_is_served_by_the_bot_and_the_24_hours_start_at_escalation(
    desk: Desk, segments: Segments, profiles: Profiles
) -> None:
    team_two(desk, segments, profiles)

    decision = desk.route("piedpiper-1", customer_id="piedpiper", channel=pb.CHANNEL_EMAIL).decision

    assert decision.bot_first
    assert (decision.queue_id, decision.sla_policy_id) == ("general", "email_24h")
    assert not decision.HasField("first_response_due")
    assert desk.conversation("piedpiper-1").state == pb.CONVERSATION_STATE_BOT
    assert desk.waiting("general") == []
    desk.advance(minutes=5)
    desk.record("piedpiper-1", pb.CONVERSATION_EVENT_KIND_BOT_REPLY)
    desk.advance(hours=2)

    escalated = desk.record("piedpiper-1", pb.CONVERSATION_EVENT_KIND_ESCALATE)

    assert escalated.state == pb.CONVERSATION_STATE_QUEUED
    first_response = sla_clock(escalated.sla, FIRST_RESPONSE)
    assert moment(first_response.due_time) == desk.now + timedelta(hours=24)
    assert first_response.running
    assert desk.waiting("general") == ["piedpiper-1"]


# ---- what rules can look at ------------------------------------------------------------------


def test_anonymous_visitor_is_routed_by_what_the_widget_knows(desk: Desk) -> None:
    create_queue(desk.routing, "dach", languages=["de"])
    create_queue(desk.routing, "general")
    set_rules(
        desk.routing,
        [rule("german_speaking", {"country": {"$in": ["DE", "AT", "CH"]}}, action("dach"))],
        default=action("general"),
    )

    austrian = desk.route("visit-1", visitor={"country": "AT", "language": "de"}).decision
    french = desk.route("visit-2", visitor={"country": "FR"}).decision

    assert (austrian.queue_id, austrian.rule_id) == ("dach", "german_speaking")
    assert (french.queue_id, french.rule_id) == ("general", "")
    assert desk.conversation("visit-1").customer_id == ""


def test_rules_read_the_conversation_channel_and_topic(desk: Desk, profiles: Profiles) -> None:
    for queue_id in ("phone", "billing", "general"):
        create_queue(desk.routing, queue_id)
    create_customer(profiles, "acme", seats=10)
    set_rules(
        desk.routing,
        [
            rule("calls", {"conversation.channel": "phone"}, action("phone")),
            rule("invoices", {"conversation.topic": "billing"}, action("billing")),
        ],
        default=action("general"),
    )

    chat_about_billing = desk.route("c1", customer_id="acme", topic="billing").decision
    call_about_billing = desk.route(
        "c2", customer_id="acme", channel=pb.CHANNEL_PHONE, topic="billing"
    ).decision
    email_about_shipping = desk.route(
        "c3", customer_id="acme", channel=pb.CHANNEL_EMAIL, topic="shipping"
    ).decision

    assert (chat_about_billing.queue_id, chat_about_billing.rule_id) == ("billing", "invoices")
    assert (call_about_billing.queue_id, call_about_billing.rule_id) == ("phone", "calls")
    assert (email_about_shipping.queue_id, email_about_shipping.rule_id) == ("general", "")


# ---- overflow --------------------------------------------------------------------------------


def test_unanswered_conversation_overflows_to_general_after_15_minutes(
    desk: Desk, profiles: Profiles
) -> None:
    create_queue(desk.routing, "general")
    overflow = pb.Overflow(queue_id="general", after=duration(timedelta(minutes=15)))
    create_queue(desk.routing, "priority", overflow=overflow)
    create_customer(profiles, "acme", seats=10)
    set_rules(desk.routing, [], default=action("priority"))
    desk.route("c1", customer_id="acme")

    desk.advance(minutes=14)
    assert (desk.waiting("priority"), desk.waiting("general")) == (["c1"], [])

    desk.advance(minutes=2)
    assert (desk.waiting("priority"), desk.waiting("general")) == ([], ["c1"])
    conversation = desk.conversation("c1")
    assert conversation.queue_id == "general"
    assert [e.queue_id for e in moves_by_the_service(conversation)] == ["general"]


def test_conversation_nobody_online_can_take_overflows_at_once(
    desk: Desk, profiles: Profiles
) -> None:
    create_queue(desk.routing, "general")
    overflow = pb.Overflow(queue_id="general", when_no_agent_online=True)
    create_queue(desk.routing, "german", languages=["de"], overflow=overflow)
    create_agent(desk.routing, "lena", languages=["de"])
    create_customer(profiles, "acme", seats=10)
    set_rules(desk.routing, [], default=action("german"))

    desk.route("c1", customer_id="acme", language="de")

    assert desk.conversation("c1").queue_id == "general"
    assert desk.waiting("general") == ["c1"]
    set_status(desk.routing, "lena", pb.AGENT_STATUS_ONLINE)
    desk.route("c2", customer_id="acme", language="de")
    assert (desk.conversation("c2").queue_id, desk.conversation("c2").agent_id) == (
        "german",
        "lena",
    )


# ---- SLA clocks through a conversation's life ------------------------------------------------


def support_desk(desk: Desk, profiles: Profiles, policy: pb.SlaPolicy) -> None:
    """One queue measured by ``policy``; Ana is online to take what comes."""
    create_policy(desk.routing, policy)
    create_policy(desk.routing, sla_policy("two_hours", first_response=timedelta(hours=2)))
    create_queue(desk.routing, "general")
    create_queue(desk.routing, "priority")
    create_agent(desk.routing, "ana", online=True)
    create_customer(profiles, "acme", seats=10)
    set_rules(desk.routing, [], default=action("general", policy=policy.policy_id))


ONE_HOUR = sla_policy("one_hour", first_response=timedelta(hours=1), resolution=timedelta(hours=8))


def test_bot_reply_leaves_first_response_running_and_agent_reply_meets_it(
    desk: Desk, profiles: Profiles
) -> None:
    support_desk(desk, profiles, ONE_HOUR)
    assert desk.route("c1", customer_id="acme").decision.agent_id == "ana"
    desk.advance(minutes=5)
    desk.record("c1", pb.CONVERSATION_EVENT_KIND_BOT_REPLY)
    desk.advance(minutes=5)

    after_bot = sla_clock(desk.conversation("c1").sla, FIRST_RESPONSE)
    assert (after_bot.status, after_bot.running) == (pb.SLA_STATUS_ON_TRACK, True)
    assert after_bot.elapsed.ToTimedelta() == timedelta(minutes=10)
    assert moment(after_bot.due_time) == MONDAY + timedelta(hours=1)

    desk.advance(minutes=10)
    replied = desk.record("c1", pb.CONVERSATION_EVENT_KIND_AGENT_REPLY, agent_id="ana")

    met = sla_clock(replied.sla, FIRST_RESPONSE)
    assert (met.status, met.running) == (pb.SLA_STATUS_MET, False)
    assert met.elapsed.ToTimedelta() == timedelta(minutes=20)
    assert moment(met.stop_time) == MONDAY + timedelta(minutes=20)


def test_waiting_on_the_customer_pauses_resolution_and_their_reply_moves_the_due_time(
    desk: Desk, profiles: Profiles
) -> None:
    support_desk(desk, profiles, ONE_HOUR)
    desk.route("c1", customer_id="acme")
    desk.advance(minutes=10)
    desk.record("c1", pb.CONVERSATION_EVENT_KIND_AGENT_REPLY, agent_id="ana")
    desk.record("c1", pb.CONVERSATION_EVENT_KIND_WAITING_ON_CUSTOMER)
    desk.advance(hours=2)

    waiting = desk.conversation("c1")
    assert waiting.state == pb.CONVERSATION_STATE_WAITING_ON_CUSTOMER
    paused = sla_clock(waiting.sla, RESOLUTION)
    assert paused.paused
    assert not paused.HasField("due_time")
    assert paused.elapsed.ToTimedelta() == timedelta(minutes=10)

    desk.record("c1", pb.CONVERSATION_EVENT_KIND_CUSTOMER_REPLY)
    desk.advance(minutes=5)

    resumed = sla_clock(desk.conversation("c1").sla, RESOLUTION)
    assert (resumed.paused, resumed.running) == (False, True)
    assert resumed.elapsed.ToTimedelta() == timedelta(minutes=15)
    assert moment(resumed.due_time) == MONDAY + timedelta(hours=8) + timedelta(hours=2)


def test_first_response_turns_warning_at_75_percent_and_breached_past_the_target(
    desk: Desk, profiles: Profiles
) -> None:
    support_desk(desk, profiles, ONE_HOUR)
    desk.route("c1", customer_id="acme")

    desk.advance(minutes=44)
    early = sla_clock(desk.conversation("c1").sla, FIRST_RESPONSE)
    desk.advance(minutes=2)
    late = sla_clock(desk.conversation("c1").sla, FIRST_RESPONSE)
    desk.advance(minutes=15)
    overdue = sla_clock(desk.conversation("c1").sla, FIRST_RESPONSE)

    assert early.status == pb.SLA_STATUS_ON_TRACK
    assert late.status == pb.SLA_STATUS_WARNING
    assert moment(late.warning_time) == MONDAY + timedelta(minutes=45)
    assert (overdue.status, overdue.running) == (pb.SLA_STATUS_BREACHED, True)
    assert moment(overdue.due_time) == MONDAY + timedelta(hours=1)


def test_shortening_the_policy_mid_conversation_counts_the_time_already_spent(
    desk: Desk, profiles: Profiles
) -> None:
    four_hours = sla_policy("four_hours", first_response=timedelta(hours=4))
    support_desk(desk, profiles, four_hours)
    desk.route("c1", customer_id="acme")
    desk.advance(hours=1)
    assert sla_clock(desk.conversation("c1").sla, FIRST_RESPONSE).status == pb.SLA_STATUS_ON_TRACK

    shorter = sla_policy("four_hours", first_response=timedelta(minutes=30))
    shorter.revision = 1
    desk.routing.UpdateSlaPolicy(pb.UpdateSlaPolicyRequest(policy=shorter))

    clock = sla_clock(desk.conversation("c1").sla, FIRST_RESPONSE)
    assert clock.status == pb.SLA_STATUS_BREACHED
    assert clock.target.ToTimedelta() == timedelta(minutes=30)
    assert clock.elapsed.ToTimedelta() == timedelta(hours=1)


def test_transfer_to_a_new_policy_keeps_the_time_already_spent(
    desk: Desk, profiles: Profiles
) -> None:
    four_hours = sla_policy("four_hours", first_response=timedelta(hours=4))
    support_desk(desk, profiles, four_hours)
    desk.route("c1", customer_id="acme")
    desk.advance(hours=1)

    moved = desk.record(
        "c1", pb.CONVERSATION_EVENT_KIND_TRANSFER, queue_id="priority", sla_policy_id="two_hours"
    )

    assert (moved.queue_id, moved.sla_policy_id) == ("priority", "two_hours")
    clock = sla_clock(moved.sla, FIRST_RESPONSE)
    assert clock.target.ToTimedelta() == timedelta(hours=2)
    assert clock.elapsed.ToTimedelta() == timedelta(hours=1)
    assert moment(clock.due_time) == MONDAY + timedelta(hours=2)
    changes = [e for e in moved.events if e.kind == pb.CONVERSATION_EVENT_KIND_POLICY_CHANGED]
    assert [e.sla_policy_id for e in changes] == ["two_hours"]


def test_resolving_stops_resolution_reopening_resumes_it_and_the_rating_is_kept(
    desk: Desk, profiles: Profiles
) -> None:
    support_desk(desk, profiles, ONE_HOUR)
    desk.route("c1", customer_id="acme")
    desk.advance(minutes=10)
    desk.record("c1", pb.CONVERSATION_EVENT_KIND_AGENT_REPLY, agent_id="ana")
    desk.advance(minutes=50)

    resolved = desk.record("c1", pb.CONVERSATION_EVENT_KIND_RESOLVE)

    assert resolved.state == pb.CONVERSATION_STATE_RESOLVED
    stopped = sla_clock(resolved.sla, RESOLUTION)
    assert (stopped.status, stopped.running) == (pb.SLA_STATUS_MET, False)
    assert moment(stopped.stop_time) == MONDAY + timedelta(hours=1)
    desk.advance(minutes=30)
    rated = desk.record("c1", pb.CONVERSATION_EVENT_KIND_CSAT, csat_rating=4)
    assert rated.csat_rating == 4
    assert [e.csat_rating for e in rated.events if e.kind == pb.CONVERSATION_EVENT_KIND_CSAT] == [4]

    desk.advance(hours=1, minutes=30)
    reopened = desk.record("c1", pb.CONVERSATION_EVENT_KIND_REOPEN)
    desk.advance(hours=1)

    assert reopened.state != pb.CONVERSATION_STATE_RESOLVED
    resumed = sla_clock(desk.conversation("c1").sla, RESOLUTION)
    assert resumed.running
    assert resumed.elapsed.ToTimedelta() == timedelta(hours=2)
    assert moment(resumed.due_time) == desk.now + timedelta(hours=6)
    assert desk.conversation("c1").csat_rating == 4
