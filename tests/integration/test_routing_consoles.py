"""What an agent's console sees: pulling the next conversation, the queue in serving order,
what they hold, the live stream of assignments, going offline, and many consoles at once."""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
import pytest
from switchboard.routing.v1 import routing_pb2 as pb

from tests.integration.conftest import ManualClock
from tests.integration.routing_setup import (
    MONDAY,
    Desk,
    Profiles,
    Routing,
    action,
    create_agent,
    create_customer,
    create_policy,
    create_queue,
    moment,
    rule,
    set_rules,
    set_status,
    sla_clock,
    sla_policy,
)
from tests.support.rpc import call_error

ONLINE, AWAY, OFFLINE = pb.AGENT_STATUS_ONLINE, pb.AGENT_STATUS_AWAY, pb.AGENT_STATUS_OFFLINE


@pytest.fixture
def desk(routing: Routing, segments_clock: ManualClock, profiles: Profiles) -> Desk:
    """One English and German queue; urgent topics first, refunds due in 30 minutes, billing
    needs the billing skill, everything else due in an hour."""
    segments_clock.now = MONDAY
    create_policy(routing, sla_policy("half_hour", first_response=timedelta(minutes=30)))
    create_policy(routing, sla_policy("one_hour", first_response=timedelta(hours=1)))
    create_policy(routing, sla_policy("four_hours", first_response=timedelta(hours=4)))
    create_queue(routing, "general", languages=["en", "de"])
    create_customer(profiles, "acme", seats=10)
    set_rules(
        routing,
        [
            rule(
                "urgent",
                {"conversation.topic": "urgent"},
                action("general", policy="four_hours", priority=90),
            ),
            rule(
                "refunds",
                {"conversation.topic": "refund"},
                action("general", policy="half_hour", priority=10),
            ),
            rule(
                "billing",
                {"conversation.topic": "billing"},
                action("general", policy="one_hour", priority=10, skills=["billing"]),
            ),
        ],
        default=action("general", policy="one_hour", priority=10),
    )
    return Desk(routing, segments_clock)


def route_one_minute_apart(desk: Desk, topics: dict[str, str], language: str = "") -> None:
    for conversation_id, topic in topics.items():
        desk.route(conversation_id, customer_id="acme", topic=topic, language=language)
        desk.advance(minutes=1)


def pull_all(desk: Desk, agent_id: str) -> list[str]:
    """Everything the agent can pull, in the order the service hands it out."""
    pulled = []
    while (assignment := desk.assign_next(agent_id)) is not None:
        pulled.append(assignment.conversation_id)
    return pulled


def test_next_conversation_is_the_highest_priority_then_the_earliest_due(desk: Desk) -> None:
    create_agent(desk.routing, "olga", chats=10)
    route_one_minute_apart(
        desk, {"old": "", "refund": "refund", "urgent": "urgent", "later": "question"}
    )
    # Due: old 10:00+1h, refund 10:01+30m, urgent 10:02+4h (priority 90), later 10:03+1h.
    expected = ["urgent", "refund", "old", "later"]

    assert desk.waiting("general") == expected
    set_status(desk.routing, "olga", ONLINE)
    assert pull_all(desk, "olga") == expected
    assert desk.waiting("general") == []


def test_queue_listing_pages_in_serving_order(desk: Desk) -> None:
    route_one_minute_apart(desk, {"a": "", "b": "urgent", "c": "refund"})

    first = desk.routing.ListQueueConversations(
        pb.ListQueueConversationsRequest(queue_id="general", page_size=2)
    )
    rest = desk.routing.ListQueueConversations(
        pb.ListQueueConversationsRequest(
            queue_id="general", page_size=2, page_token=first.next_page_token
        )
    )

    assert [c.conversation_id for c in first.conversations] == ["b", "c"]
    assert [c.conversation_id for c in rest.conversations] == ["a"]
    assert rest.next_page_token == ""
    refund = first.conversations[1]
    assert (refund.priority, refund.queue_id, refund.topic) == (10, "general", "refund")
    assert refund.state == pb.CONVERSATION_STATE_QUEUED
    due = sla_clock(refund.sla, pb.SLA_METRIC_FIRST_RESPONSE).due_time
    assert moment(due) == MONDAY + timedelta(minutes=32)


def test_agents_only_get_conversations_they_have_the_skills_and_language_for(desk: Desk) -> None:
    create_agent(desk.routing, "eve", languages=["en"])
    create_agent(desk.routing, "max", languages=["en", "de"], skills=["billing"])
    route_one_minute_apart(desk, {"billing": "billing"})
    route_one_minute_apart(desk, {"german": ""}, language="de")
    route_one_minute_apart(desk, {"plain": ""})
    set_status(desk.routing, "eve", ONLINE)
    set_status(desk.routing, "max", ONLINE)

    assert pull_all(desk, "eve") == ["plain"]
    assert pull_all(desk, "max") == ["billing", "german"]


def test_agent_at_capacity_cannot_pull_more(desk: Desk) -> None:
    create_agent(desk.routing, "cap", chats=1, online=True)
    assert desk.route("c1", customer_id="acme").decision.agent_id == "cap"
    assert desk.route("c2", customer_id="acme").decision.agent_id == ""

    error = call_error(lambda: desk.assign_next("cap"))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert desk.waiting("general") == ["c2"]


def test_agent_who_is_away_or_offline_cannot_pull(desk: Desk) -> None:
    create_agent(desk.routing, "zoe", online=True)
    set_status(desk.routing, "zoe", AWAY)
    desk.route("c1", customer_id="acme")

    away = call_error(lambda: desk.assign_next("zoe"))
    set_status(desk.routing, "zoe", OFFLINE)
    offline = call_error(lambda: desk.assign_next("zoe"))

    assert (away.code(), offline.code()) == (grpc.StatusCode.FAILED_PRECONDITION,) * 2
    assert desk.waiting("general") == ["c1"]


def test_agent_sees_what_they_hold_most_urgent_first_with_due_times(desk: Desk) -> None:
    create_agent(desk.routing, "ana", chats=5, online=True)
    desk.route("late", customer_id="acme")
    desk.advance(minutes=1)
    desk.route("soon", customer_id="acme", topic="refund")

    held = desk.routing.GetAgentAssignments(
        pb.GetAgentAssignmentsRequest(agent_id="ana")
    ).assignments

    assert [a.conversation_id for a in held] == ["soon", "late"]
    due = [moment(sla_clock(a.sla, pb.SLA_METRIC_FIRST_RESPONSE).due_time) for a in held]
    assert due == [MONDAY + timedelta(minutes=31), MONDAY + timedelta(hours=1)]
    assert all(a.state == pb.CONVERSATION_STATE_ASSIGNED for a in held)
    assert [moment(a.assign_time) for a in held] == [MONDAY + timedelta(minutes=1), MONDAY]
    agent = desk.routing.GetAgent(pb.GetAgentRequest(agent_id="ana")).agent
    assert agent.open_conversations == 2


class Console:
    """An agent's console watching its assignments on a background thread."""

    def __init__(self, routing: Routing, agent_id: str) -> None:
        self._call = routing.WatchAssignments(pb.WatchAssignmentsRequest(agent_id=agent_id))
        self._received: queue.Queue[pb.WatchAssignmentsResponse] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for message in self._call:
                self._received.put(message)
        except grpc.RpcError:
            return  # the test cancelled the call

    def next_change(self, timeout: float = 5.0) -> tuple[str, str]:
        """The next change and its conversation; fails when none arrives in time."""
        try:
            message = self._received.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the console saw no change within {timeout} s") from None
        return pb.AssignmentChange.Name(message.change), message.assignment.conversation_id

    def close(self) -> None:
        self._call.cancel()
        self._reader.join(timeout=5)


@pytest.fixture
def console(desk: Desk) -> Iterator[Console]:
    create_agent(desk.routing, "ana", chats=5, online=True)
    desk.route("held", customer_id="acme")
    watching = Console(desk.routing, "ana")
    yield watching
    watching.close()


def test_console_stream_shows_held_conversations_then_new_and_released_ones(
    desk: Desk, console: Console
) -> None:
    assert console.next_change() == ("ASSIGNMENT_CHANGE_CURRENT", "held")

    desk.advance(minutes=1)
    assert desk.route("new", customer_id="acme").decision.agent_id == "ana"
    assert console.next_change() == ("ASSIGNMENT_CHANGE_ASSIGNED", "new")

    desk.record("held", pb.CONVERSATION_EVENT_KIND_RESOLVE)
    assert console.next_change() == ("ASSIGNMENT_CHANGE_RELEASED", "held")


def test_going_offline_returns_unanswered_conversations_and_keeps_started_ones(
    desk: Desk,
) -> None:
    create_agent(desk.routing, "ana", chats=5, online=True)
    desk.route("started", customer_id="acme")
    desk.route("untouched", customer_id="acme")
    desk.advance(minutes=3)
    desk.record("started", pb.CONVERSATION_EVENT_KIND_AGENT_REPLY, agent_id="ana")

    response = set_status(desk.routing, "ana", OFFLINE)

    assert list(response.returned_conversation_ids) == ["untouched"]
    assert response.agent.status == OFFLINE
    assert response.agent.open_conversations == 1
    returned = desk.conversation("untouched")
    assert (returned.state, returned.agent_id) == (pb.CONVERSATION_STATE_QUEUED, "")
    assert desk.waiting("general") == ["untouched"]
    assert desk.conversation("started").agent_id == "ana"
    assert desk.holding("ana") == ["started"]


AGENTS, CAPACITY, CONVERSATIONS = 24, 8, 200
RETRYABLE = {grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE}


def pull_until_full(desk: Desk, agent_id: str) -> list[str]:
    """Pull as a busy console does: until at capacity or the queue is empty, retrying the
    codes a client is told it may retry."""
    pulled: list[str] = []
    retries = 0
    while True:
        try:
            assignment = desk.assign_next(agent_id, "general")
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return pulled
            if error.code() in RETRYABLE and retries < 20:
                retries += 1
                continue
            raise
        if assignment is None:
            return pulled
        pulled.append(assignment.conversation_id)


def test_concurrent_consoles_never_get_the_same_conversation(desk: Desk) -> None:
    agent_ids = [f"agent.{n:02d}" for n in range(AGENTS)]
    for agent_id in agent_ids:
        create_agent(desk.routing, agent_id, chats=CAPACITY)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda n: desk.route(f"c{n:03d}", customer_id="acme"), range(CONVERSATIONS)))
    for agent_id in agent_ids:
        set_status(desk.routing, agent_id, ONLINE)

    with ThreadPoolExecutor(max_workers=AGENTS) as pool:
        pulls = pool.map(lambda agent_id: pull_until_full(desk, agent_id), agent_ids)
        pulled = dict(zip(agent_ids, pulls, strict=True))

    held = {agent_id: desk.holding(agent_id) for agent_id in agent_ids}
    everything = [c for conversations in held.values() for c in conversations]
    duplicates = [c for c, times in Counter(everything).items() if times > 1]
    assert duplicates == []
    assert len(everything) == min(AGENTS * CAPACITY, CONVERSATIONS)
    assert all(len(conversations) == CAPACITY for conversations in held.values())
    assert all(set(pulled[a]) <= set(held[a]) for a in agent_ids), "pulled yet not held"
    assert len(desk.waiting("general")) == CONVERSATIONS - AGENTS * CAPACITY
    for agent_id in agent_ids[:3]:
        for conversation_id in held[agent_id]:
            assert desk.conversation(conversation_id).agent_id == agent_id
