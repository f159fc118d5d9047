"""The SLA watch end to end: a desk configured through gRPC on the manual clock, the watch
run the way the worker runs it, and what a support lead then sees on the conversation."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import Engine
from switchboard.routing.v1 import routing_pb2 as pb

from services.core.server import RunningServer
from services.core.settings import Settings
from services.outreach.app import Outreach
from services.outreach.domain import DeliveryStatus, Endpoint
from services.outreach.repository import OutreachRepository
from services.routing.app import Routing
from services.routing.repository import RoutingRepository
from services.routing.server import routing_app
from tests.integration.conftest import ManualClock
from tests.integration.routing_setup import (
    MONDAY,
    Desk,
    action,
    create_agent,
    create_calendar,
    create_policy,
    create_queue,
    duration,
    moment,
    moves_by_the_service,
    office_hours,
    rule,
    set_rules,
    sla_policy,
)
from tests.integration.routing_setup import Routing as RoutingStub
from tests.support.rpc import call_error, field_violations

WARNING = pb.CONVERSATION_EVENT_KIND_SLA_WARNING
BREACHED = pb.CONVERSATION_EVENT_KIND_SLA_BREACHED
FIRST_RESPONSE = pb.SLA_METRIC_FIRST_RESPONSE


@pytest.fixture
def desk(routing: RoutingStub, segments_clock: ManualClock) -> Desk:
    segments_clock.now = MONDAY
    return Desk(routing, segments_clock)


@pytest.fixture
def watcher(
    engine: Engine,
    profiles_server: RunningServer,
    segments_server: RunningServer,
    segments_clock: ManualClock,
    admin_key: str,
) -> Routing:
    """The routing core the worker task calls, on the desk's clock and database."""
    settings = Settings(
        api_key=admin_key,
        profiles_address=f"127.0.0.1:{profiles_server.port}",
        segments_address=f"127.0.0.1:{segments_server.port}",
    )
    return routing_app(engine, settings, segments_clock)


@pytest.fixture
def outreach(engine: Engine) -> Outreach:
    return Outreach(OutreachRepository(engine))


def escalating_desk(desk: Desk, outreach: Outreach) -> None:
    """First reply within 30 minutes (warning at 75%): at the warning the priority goes up
    to 60; at the breach the conversation moves to the overflow queue and the customer
    success team's webhook is called. Topic "hours" counts Berlin office hours instead."""
    outreach.create_endpoint(
        endpoint=Endpoint("cs_alerts", "http://127.0.0.1:9/sla", "customer success"), secret=""
    )
    routing = desk.routing
    create_calendar(routing, office_hours("berlin_office"))
    escalations = {
        "on_warning": pb.SlaEscalation(raise_priority_to=60),
        "on_breach": pb.SlaEscalation(move_to_overflow=True, notify_endpoint_id="cs_alerts"),
    }
    policy = sla_policy("first_30m", first_response=timedelta(minutes=30), warning_percent=75)
    office = sla_policy(
        "office_30m", first_response=timedelta(minutes=30), business_hours_of="berlin_office"
    )
    for each in (policy, office):
        each.on_warning.CopyFrom(escalations["on_warning"])
        each.on_breach.CopyFrom(escalations["on_breach"])
        create_policy(routing, each)
    create_queue(routing, "overflow")
    # Overflow by time only after a week: here only the SLA escalation moves conversations.
    week = duration(timedelta(days=7))
    create_queue(routing, "general", overflow=pb.Overflow(queue_id="overflow", after=week))
    set_rules(
        routing,
        [rule("office", {"conversation.topic": "hours"}, action("general", policy="office_30m"))],
        default=action("general", policy="first_30m", priority=10),
    )


def sla_events(conversation: pb.Conversation) -> list[pb.ConversationEvent]:
    return [event for event in conversation.events if event.kind in (WARNING, BREACHED)]


def test_warning_then_breach_are_recorded_when_reached_and_escalated_once(
    desk: Desk, watcher: Routing, outreach: Outreach
) -> None:
    escalating_desk(desk, outreach)
    desk.route("chat-1")

    desk.advance(minutes=20)
    assert watcher.watch_sla() == []
    assert sla_events(desk.conversation("chat-1")) == []

    desk.advance(minutes=3)
    assert len(watcher.watch_sla()) == 1
    conversation = desk.conversation("chat-1")
    (warning,) = sla_events(conversation)
    assert (warning.kind, warning.sla_metric) == (WARNING, FIRST_RESPONSE)
    assert moment(warning.time) == MONDAY + timedelta(minutes=22, seconds=30)
    assert warning.raised_priority == 60 and "priority raised from 10 to 60" in warning.note
    assert conversation.priority == 60
    assert conversation.queue_id == "general"

    desk.advance(minutes=8)
    assert len(watcher.watch_sla()) == 1
    conversation = desk.conversation("chat-1")
    breach = sla_events(conversation)[1]
    assert (breach.kind, breach.sla_metric) == (BREACHED, FIRST_RESPONSE)
    assert moment(breach.time) == MONDAY + timedelta(minutes=30)
    assert (breach.moved_to_queue_id, breach.notified_endpoint_id) == ("overflow", "cs_alerts")
    assert conversation.queue_id == "overflow"
    assert desk.waiting("overflow") == ["chat-1"]
    (move,) = moves_by_the_service(conversation)
    assert move.queue_id == "overflow" and "SLA breached" in move.note
    assert [pb.ConversationEventKind.Name(e.kind) for e in conversation.events][-2:] == [
        "CONVERSATION_EVENT_KIND_SLA_BREACHED",
        "CONVERSATION_EVENT_KIND_TRANSFER",
    ], "events read oldest first: the breach at 30 minutes, the move when the watch ran"

    webhook = outreach.get_delivery("sla:chat-1:first_response:breached:0")
    assert (webhook.status, webhook.endpoint_id) == (DeliveryStatus.PENDING, "cs_alerts")
    assert webhook.event_type == "sla.breached"
    assert webhook.payload["conversation_id"] == "chat-1"
    assert webhook.payload["metric"] == "first_response"
    assert webhook.payload["queue_id"] == "overflow"
    assert webhook.payload["policy_id"] == "first_30m"
    assert webhook.payload["due_time"] == (MONDAY + timedelta(minutes=30)).isoformat()

    desk.advance(minutes=30)
    assert watcher.watch_sla() == []
    assert len(desk.conversation("chat-1").events) == len(conversation.events)


def test_a_conversation_waiting_on_the_customer_is_not_flagged_until_the_clock_runs_again(
    desk: Desk, watcher: Routing, outreach: Outreach
) -> None:
    escalating_desk(desk, outreach)
    desk.route("chat-1")
    desk.advance(minutes=5)
    desk.record("chat-1", pb.CONVERSATION_EVENT_KIND_WAITING_ON_CUSTOMER)

    desk.advance(hours=2)
    assert watcher.watch_sla() == []
    assert sla_events(desk.conversation("chat-1")) == []

    desk.record("chat-1", pb.CONVERSATION_EVENT_KIND_CUSTOMER_REPLY)
    desk.advance(minutes=18)
    assert len(watcher.watch_sla()) == 1
    (warning,) = sla_events(desk.conversation("chat-1"))
    # 5 minutes before the pause and 17.5 after it make the 22.5-minute warning.
    assert moment(warning.time) == MONDAY + timedelta(hours=2, minutes=22, seconds=30)


def test_business_hours_are_not_flagged_outside_hours_and_are_flagged_when_reached(
    desk: Desk, watcher: Routing, outreach: Outreach
) -> None:
    escalating_desk(desk, outreach)
    desk.at(datetime(2025, 3, 7, 15, 50, tzinfo=UTC))  # Friday 16:50 in Berlin
    desk.route("mail-1", topic="hours")

    desk.at(datetime(2025, 3, 8, 11, 0, tzinfo=UTC))  # Saturday noon in Berlin
    assert watcher.watch_sla() == []

    desk.at(datetime(2025, 3, 10, 9, 0, tzinfo=UTC))  # Monday 10:00 in Berlin
    assert len(watcher.watch_sla()) == 2
    warning, breach = sla_events(desk.conversation("mail-1"))
    # 10 minutes on Friday; the rest from Monday 09:00 in Berlin (08:00 UTC).
    assert moment(warning.time) == datetime(2025, 3, 10, 8, 12, 30, tzinfo=UTC)
    assert moment(breach.time) == datetime(2025, 3, 10, 8, 20, tzinfo=UTC)


def test_an_assigned_conversation_is_flagged_and_raised_but_not_moved(
    desk: Desk, watcher: Routing, outreach: Outreach
) -> None:
    escalating_desk(desk, outreach)
    create_agent(desk.routing, "ana", online=True)
    assert desk.route("chat-1").decision.agent_id == "ana"

    desk.advance(minutes=31)
    assert len(watcher.watch_sla()) == 2

    conversation = desk.conversation("chat-1")
    assert [e.kind for e in sla_events(conversation)] == [WARNING, BREACHED]
    breach = sla_events(conversation)[1]
    assert conversation.priority == 60
    assert (conversation.queue_id, conversation.agent_id) == ("general", "ana")
    assert breach.moved_to_queue_id == "" and "held by ana: not moved" in breach.note
    assert breach.notified_endpoint_id == "cs_alerts"
    assert moves_by_the_service(conversation) == []


def test_a_reply_before_the_watch_ran_records_the_breach_and_notifies_but_moves_nothing(
    desk: Desk, watcher: Routing, outreach: Outreach
) -> None:
    escalating_desk(desk, outreach)
    create_agent(desk.routing, "ana", online=True)
    desk.route("chat-1")
    desk.advance(minutes=31)
    desk.record("chat-1", pb.CONVERSATION_EVENT_KIND_AGENT_REPLY, agent_id="ana")

    assert len(watcher.watch_sla()) == 2

    conversation = desk.conversation("chat-1")
    warning, breach = sla_events(conversation)
    assert [warning.kind, breach.kind] == [WARNING, BREACHED]
    assert conversation.priority == 10 and warning.raised_priority == 0
    assert "already stopped" in warning.note
    assert (breach.moved_to_queue_id, breach.notified_endpoint_id) == ("", "cs_alerts")
    webhook = outreach.get_delivery("sla:chat-1:first_response:breached:0")
    assert webhook.payload["clock_running"] is False


def test_two_watchers_at_once_record_each_threshold_once(
    desk: Desk, engine: Engine, segments_clock: ManualClock, watcher: Routing, outreach: Outreach
) -> None:
    escalating_desk(desk, outreach)
    for number in range(20):
        desk.route(f"chat-{number}")
    desk.advance(minutes=31)
    other = Routing(RoutingRepository(engine), watcher.customers, segments_clock)
    results: list[int] = []
    start = threading.Barrier(2)

    def run(routing: Routing) -> None:
        start.wait()
        results.append(len(routing.watch_sla()))

    threads = [threading.Thread(target=run, args=(each,)) for each in (watcher, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(results) == 40
    for number in range(20):
        conversation = desk.conversation(f"chat-{number}")
        assert [e.kind for e in sla_events(conversation)] == [WARNING, BREACHED]
        assert len(moves_by_the_service(conversation)) == 1


def test_escalations_are_validated_and_read_back(desk: Desk, outreach: Outreach) -> None:
    escalating_desk(desk, outreach)
    stored = desk.routing.GetSlaPolicy(pb.GetSlaPolicyRequest(policy_id="first_30m")).policy
    assert stored.on_warning.raise_priority_to == 60
    assert stored.on_breach.move_to_overflow and stored.on_breach.notify_endpoint_id == "cs_alerts"

    both = sla_policy("both", first_response=timedelta(minutes=5))
    both.on_breach.CopyFrom(
        pb.SlaEscalation(move_to_overflow=True, move_to_queue_id="overflow", raise_priority_to=101)
    )
    error = call_error(lambda: create_policy(desk.routing, both))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {
        "policy.on_breach.move_to_queue_id",
        "policy.on_breach.raise_priority_to",
    }

    missing = sla_policy("missing", first_response=timedelta(minutes=5))
    missing.on_warning.CopyFrom(pb.SlaEscalation(move_to_queue_id="nowhere"))
    missing.on_breach.CopyFrom(pb.SlaEscalation(notify_endpoint_id="nobody"))
    error = call_error(lambda: create_policy(desk.routing, missing))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "nowhere" in (error.details() or "")

    missing.on_warning.CopyFrom(pb.SlaEscalation(move_to_queue_id="overflow"))
    error = call_error(lambda: create_policy(desk.routing, missing))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "nobody" in (error.details() or "")

    missing.on_breach.CopyFrom(pb.SlaEscalation(notify_endpoint_id="cs_alerts"))
    create_policy(desk.routing, missing)
    error = call_error(lambda: desk.routing.DeleteQueue(pb.DeleteQueueRequest(queue_id="overflow")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "missing" in (error.details() or ""), "the escalation's queue cannot be deleted"


def test_a_shorter_target_set_mid_conversation_is_flagged_at_the_next_run(
    desk: Desk, watcher: Routing, outreach: Outreach
) -> None:
    escalating_desk(desk, outreach)
    desk.route("chat-1")
    desk.advance(minutes=10)
    assert watcher.watch_sla() == []

    stored = desk.routing.GetSlaPolicy(pb.GetSlaPolicyRequest(policy_id="first_30m")).policy
    stored.first_response.duration.FromTimedelta(timedelta(minutes=8))
    desk.routing.UpdateSlaPolicy(pb.UpdateSlaPolicyRequest(policy=stored))

    assert len(watcher.watch_sla()) == 2
    assert desk.conversation("chat-1").queue_id == "overflow"
