"""Setting up routing through gRPC: calendars, SLA policies, queues, agents and rules, and
what an admin is told when the input is wrong or the change would break something."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

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
    create_calendar,
    create_customer,
    create_policy,
    create_queue,
    office_hours,
    rule,
    set_rules,
    sla_policy,
)
from tests.support.rpc import call_error, error_info, field_violations, misses


@pytest.fixture
def desk(routing: Routing, segments_clock: ManualClock) -> Desk:
    segments_clock.now = MONDAY
    return Desk(routing, segments_clock)


# ---- create, read, list, update, delete ------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of configuration resource, seen through its RPCs."""

    make: Callable[[str], Any]
    create: Callable[[Routing, Any], Any]
    get: Callable[[Routing, str], Any]
    list_page: Callable[[Routing, int, str], tuple[list[Any], str]]
    update: Callable[[Routing, Any], Any]
    delete: Callable[[Routing, str, int], object] | None
    id_of: Callable[[Any], str]


CALENDARS = Kind(
    make=lambda calendar_id: office_hours(calendar_id),
    create=create_calendar,
    get=lambda r, i: r.GetCalendar(pb.GetCalendarRequest(calendar_id=i)).calendar,
    list_page=lambda r, size, token: _page(
        r.ListCalendars(pb.ListCalendarsRequest(page_size=size, page_token=token)), "calendars"
    ),
    update=lambda r, c: r.UpdateCalendar(pb.UpdateCalendarRequest(calendar=c)).calendar,
    delete=lambda r, i, rev: r.DeleteCalendar(
        pb.DeleteCalendarRequest(calendar_id=i, revision=rev)
    ),
    id_of=lambda c: str(c.calendar_id),
)
POLICIES = Kind(
    make=lambda policy_id: sla_policy(policy_id, first_response=timedelta(hours=1)),
    create=create_policy,
    get=lambda r, i: r.GetSlaPolicy(pb.GetSlaPolicyRequest(policy_id=i)).policy,
    list_page=lambda r, size, token: _page(
        r.ListSlaPolicies(pb.ListSlaPoliciesRequest(page_size=size, page_token=token)),
        "policies",
    ),
    update=lambda r, p: r.UpdateSlaPolicy(pb.UpdateSlaPolicyRequest(policy=p)).policy,
    delete=lambda r, i, rev: r.DeleteSlaPolicy(
        pb.DeleteSlaPolicyRequest(policy_id=i, revision=rev)
    ),
    id_of=lambda p: str(p.policy_id),
)
QUEUES = Kind(
    make=lambda queue_id: pb.Queue(queue_id=queue_id, display_name="Priority", languages=["en"]),
    create=lambda r, q: r.CreateQueue(pb.CreateQueueRequest(queue=q)).queue,
    get=lambda r, i: r.GetQueue(pb.GetQueueRequest(queue_id=i)).queue,
    list_page=lambda r, size, token: _page(
        r.ListQueues(pb.ListQueuesRequest(page_size=size, page_token=token)), "queues"
    ),
    update=lambda r, q: r.UpdateQueue(pb.UpdateQueueRequest(queue=q)).queue,
    delete=lambda r, i, rev: r.DeleteQueue(pb.DeleteQueueRequest(queue_id=i, revision=rev)),
    id_of=lambda q: str(q.queue_id),
)
AGENTS = Kind(
    make=lambda agent_id: pb.Agent(
        agent_id=agent_id,
        display_name="Ana Silva",
        skills=["billing"],
        languages=["en", "pt"],
        capacity=[pb.ChannelCapacity(channel=pb.CHANNEL_CHAT, max_open=3)],
        teams=["emea-success"],
    ),
    create=lambda r, a: r.CreateAgent(pb.CreateAgentRequest(agent=a)).agent,
    get=lambda r, i: r.GetAgent(pb.GetAgentRequest(agent_id=i)).agent,
    list_page=lambda r, size, token: _page(
        r.ListAgents(pb.ListAgentsRequest(page_size=size, page_token=token)), "agents"
    ),
    update=lambda r, a: r.UpdateAgent(pb.UpdateAgentRequest(agent=a)).agent,
    delete=None,
    id_of=lambda a: str(a.agent_id),
)
KINDS = [
    pytest.param(CALENDARS, id="calendar"),
    pytest.param(POLICIES, id="sla-policy"),
    pytest.param(QUEUES, id="queue"),
    pytest.param(AGENTS, id="agent"),
]


def _page(response: Any, field: str) -> tuple[list[Any], str]:
    return list(getattr(response, field)), str(response.next_page_token)


@pytest.mark.parametrize("kind", KINDS)
def test_resource_is_created_read_listed_updated_and_deleted_under_revision_checks(
    routing: Routing, kind: Kind
) -> None:
    created = [kind.create(routing, kind.make(resource_id)) for resource_id in ("b-2", "a-1")]

    assert [c.revision for c in created] == [1, 1]
    assert all(c.HasField("create_time") for c in created)
    assert created[0].display_name == kind.make("b-2").display_name
    assert kind.get(routing, "b-2") == created[0]
    first, token = kind.list_page(routing, 1, "")
    rest, last_token = kind.list_page(routing, 1, token)
    assert [kind.id_of(r) for r in first + rest] == ["a-1", "b-2"]
    assert token != "" and last_token == ""
    duplicate = call_error(lambda: kind.create(routing, kind.make("b-2")))
    assert duplicate.code() == grpc.StatusCode.ALREADY_EXISTS

    change = kind.make("b-2")
    change.display_name = "Renamed"
    change.revision = 1
    updated = kind.update(routing, change)
    assert (updated.revision, updated.display_name) == (2, "Renamed")
    assert kind.get(routing, "b-2").display_name == "Renamed"
    stale = call_error(lambda: kind.update(routing, change))
    assert stale.code() == grpc.StatusCode.ABORTED
    change.revision = 0
    change.display_name = "Renamed again"
    assert kind.update(routing, change).revision == 3, "revision 0 skips the check"

    assert call_error(lambda: kind.get(routing, "nope")).code() == grpc.StatusCode.NOT_FOUND
    unknown = call_error(lambda: kind.update(routing, kind.make("nope")))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    if kind.delete is None:
        return  # agents are never deleted, only set OFFLINE
    delete = kind.delete
    assert call_error(lambda: delete(routing, "b-2", 2)).code() == grpc.StatusCode.ABORTED
    delete(routing, "b-2", 3)
    assert call_error(lambda: kind.get(routing, "b-2")).code() == grpc.StatusCode.NOT_FOUND
    assert [kind.id_of(r) for r in kind.list_page(routing, 0, "")[0]] == ["a-1"]


def test_agent_status_is_set_only_through_set_agent_status(routing: Routing) -> None:
    created = AGENTS.create(routing, AGENTS.make("ana"))
    assert created.status == pb.AGENT_STATUS_OFFLINE

    online = routing.SetAgentStatus(
        pb.SetAgentStatusRequest(agent_id="ana", status=pb.AGENT_STATUS_ONLINE)
    ).agent
    renamed = AGENTS.make("ana")
    renamed.display_name = "Ana S."
    updated = AGENTS.update(routing, renamed)

    assert online.status == pb.AGENT_STATUS_ONLINE
    assert online.HasField("status_time")
    assert updated.status == pb.AGENT_STATUS_ONLINE


# ---- bad input -------------------------------------------------------------------------------


def interval(start: str, end: str) -> pb.OpenInterval:
    return pb.OpenInterval(weekday=pb.WEEKDAY_MONDAY, start_time=start, end_time=end)


def test_bad_calendars_are_refused_naming_the_field(routing: Routing) -> None:
    berlin = "Europe/Berlin"
    monday = [interval("09:00", "17:00")]
    bad = {
        "overlapping intervals": (
            pb.Calendar(
                time_zone=berlin,
                weekly_hours=[interval("09:00", "12:00"), interval("11:00", "13:00")],
            ),
            "calendar.weekly_hours[1]",
        ),
        "inverted interval": (
            pb.Calendar(time_zone=berlin, weekly_hours=[interval("17:00", "09:00")]),
            "calendar.weekly_hours[0]",
        ),
        "unknown time zone": (
            pb.Calendar(time_zone="Mars/Base", weekly_hours=monday),
            "calendar.time_zone",
        ),
        "start not HH:MM": (
            pb.Calendar(time_zone=berlin, weekly_hours=[interval("9am", "17:00")]),
            "calendar.weekly_hours[0].start_time",
        ),
        "end not a time": (
            pb.Calendar(time_zone=berlin, weekly_hours=[interval("09:00", "17:60")]),
            "calendar.weekly_hours[0].end_time",
        ),
        "holiday not a date": (
            pb.Calendar(time_zone=berlin, weekly_hours=monday, holidays=["2025-02-30"]),
            "calendar.holidays[0]",
        ),
    }
    for number, (calendar, _) in enumerate(bad.values()):
        calendar.calendar_id = f"calendar-{number}"

    attempts = {name: (partial(create_calendar, routing, c), f) for name, (c, f) in bad.items()}
    assert misses(attempts) == {}
    assert CALENDARS.list_page(routing, 0, "") == ([], "")


def test_bad_sla_policies_are_refused_naming_the_field(routing: Routing) -> None:
    negative = sla_policy("negative", first_response=timedelta(minutes=-30))
    too_long = sla_policy("too_long", first_response=timedelta(days=400))
    warning = sla_policy("warning", first_response=timedelta(hours=1), warning_percent=150)
    paused_when_resolved = sla_policy("paused", first_response=timedelta(hours=1))
    paused_when_resolved.pause_states.append(pb.CONVERSATION_STATE_RESOLVED)
    bad = {
        "negative target": (negative, "policy.first_response.duration"),
        "target over 366 days": (too_long, "policy.first_response.duration"),
        "warning at 150%": (warning, "policy.warning_percent"),
        "pause when resolved": (paused_when_resolved, "policy.pause_states"),
    }

    attempts = {name: (partial(create_policy, routing, p), f) for name, (p, f) in bad.items()}
    assert misses(attempts) == {}
    assert POLICIES.list_page(routing, 0, "") == ([], "")


def test_policy_on_an_unknown_calendar_is_refused(routing: Routing) -> None:
    policy = sla_policy("late", first_response=timedelta(hours=4), business_hours_of="nowhere")

    error = call_error(lambda: create_policy(routing, policy))

    # The contract names no code; either says "that calendar does not exist".
    assert error.code() in {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
    assert "nowhere" in (error.details() or "")
    assert call_error(lambda: POLICIES.get(routing, "late")).code() == grpc.StatusCode.NOT_FOUND


# ---- routing rules ---------------------------------------------------------------------------


@pytest.fixture
def general(routing: Routing) -> pb.Queue:
    create_policy(routing, sla_policy("one_hour", first_response=timedelta(hours=1)))
    create_queue(routing, "priority")
    return create_queue(routing, "general")


def test_rules_pointing_at_a_missing_queue_or_policy_are_a_failed_precondition(
    routing: Routing, general: pb.Queue
) -> None:
    for broken in (action("missing_queue"), action("general", policy="missing_policy")):
        vip = rule("vip", {"seats": {"$gte": 50}}, broken)

        error = call_error(partial(set_rules, routing, [vip], action("general")))

        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "missing_" in (error.details() or ""), "the message names what is missing"
    assert routing.GetRoutingRules(pb.GetRoutingRulesRequest()).rules.revision == 0


def test_rules_without_a_default_action_are_invalid(routing: Routing, general: pb.Queue) -> None:
    request = pb.UpdateRoutingRulesRequest(
        rules=pb.RoutingRules(rules=[rule("vip", {"seats": {"$gte": 50}}, action("general"))])
    )

    error = call_error(lambda: routing.UpdateRoutingRules(request))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rules.default_action" in field_violations(error)


def test_in_use_configuration_cannot_be_deleted(routing: Routing) -> None:
    create_calendar(routing, office_hours("berlin_office"))
    create_queue(routing, "general", calendar_id="berlin_office")
    create_policy(routing, sla_policy("one_hour", first_response=timedelta(hours=1)))
    set_rules(routing, [], action("general", policy="one_hour"))

    deletions = {
        "queue": lambda: routing.DeleteQueue(pb.DeleteQueueRequest(queue_id="general")),
        "policy": lambda: routing.DeleteSlaPolicy(pb.DeleteSlaPolicyRequest(policy_id="one_hour")),
        "calendar": lambda: routing.DeleteCalendar(
            pb.DeleteCalendarRequest(calendar_id="berlin_office")
        ),
    }
    codes = {name: call_error(delete).code() for name, delete in deletions.items()}

    assert codes == dict.fromkeys(deletions, grpc.StatusCode.FAILED_PRECONDITION)
    assert routing.GetQueue(pb.GetQueueRequest(queue_id="general")).queue.queue_id == "general"


def test_rule_revisions_are_listed_newest_first_and_rollback_restores_one(
    desk: Desk, general: pb.Queue, profiles: Profiles
) -> None:
    routing = desk.routing
    create_customer(profiles, "acme", seats=10)
    first = set_rules(routing, [], action("general", policy="one_hour"), actor="ada")
    second = set_rules(routing, [], action("priority"), revision=first.revision, actor="bob")
    stale = call_error(lambda: set_rules(routing, [], action("general"), revision=first.revision))
    assert stale.code() == grpc.StatusCode.ABORTED
    assert error_info(stale).reason != ""

    history = routing.ListRoutingRuleRevisions(pb.ListRoutingRuleRevisionsRequest()).revisions
    assert [(r.rules.revision, r.rules.actor) for r in history] == [(2, "bob"), (1, "ada")]
    assert {r.action for r in history} == {pb.REVISION_ACTION_UPDATED}
    assert routing.GetRoutingRules(pb.GetRoutingRulesRequest(revision=1)).rules == first
    assert desk.route("before", customer_id="acme").decision.queue_id == "priority"

    restored = routing.RollbackRoutingRules(
        pb.RollbackRoutingRulesRequest(target_revision=1, revision=second.revision, actor="cy")
    ).rules

    assert (restored.revision, restored.actor) == (3, "cy")
    assert restored.default_action == first.default_action
    newest = routing.ListRoutingRuleRevisions(pb.ListRoutingRuleRevisionsRequest()).revisions[0]
    assert (newest.action, newest.restored_revision) == (pb.REVISION_ACTION_ROLLED_BACK, 1)
    after = desk.route("after", customer_id="acme").decision
    assert (after.queue_id, after.sla_policy_id, after.rules_revision) == ("general", "one_hour", 3)


# ---- conversations ---------------------------------------------------------------------------


@pytest.fixture
def ready(desk: Desk, general: pb.Queue, profiles: Profiles) -> Desk:
    """Rules in place and one known customer."""
    create_customer(profiles, "acme", seats=10)
    set_rules(desk.routing, [], action("general", policy="one_hour"))
    return desk


def test_route_request_for_an_unknown_customer_or_without_a_channel_is_refused(
    ready: Desk,
) -> None:
    unknown = call_error(lambda: ready.route("c1", customer_id="ghost"))
    no_channel = call_error(
        lambda: ready.route("c1", customer_id="acme", channel=pb.CHANNEL_UNSPECIFIED)
    )

    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    assert no_channel.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "channel" in field_violations(no_channel)
    assert call_error(lambda: ready.conversation("c1")).code() == grpc.StatusCode.NOT_FOUND


def test_routing_before_any_rules_were_set_is_a_failed_precondition(
    desk: Desk, general: pb.Queue, profiles: Profiles
) -> None:
    create_customer(profiles, "acme", seats=10)

    error = call_error(lambda: desk.route("c1", customer_id="acme"))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_bad_conversation_events_and_agent_statuses_are_refused_naming_the_field(
    ready: Desk,
) -> None:
    ready.route("c1", customer_id="acme")
    create_agent(ready.routing, "ana")
    bad: dict[str, tuple[Callable[[], object], str]] = {
        "no kind": (partial(ready.record, "c1", pb.CONVERSATION_EVENT_KIND_UNSPECIFIED), "kind"),
        "rating of 9": (
            partial(ready.record, "c1", pb.CONVERSATION_EVENT_KIND_CSAT, csat_rating=9),
            "csat_rating",
        ),
        "no status": (
            partial(ready.routing.SetAgentStatus, pb.SetAgentStatusRequest(agent_id="ana")),
            "status",
        ),
    }

    assert misses(bad) == {}
    assert ready.conversation("c1").csat_rating == 0


def test_unknown_conversation_is_not_found(ready: Desk) -> None:
    assert call_error(lambda: ready.conversation("ghost")).code() == grpc.StatusCode.NOT_FOUND
    error = call_error(lambda: ready.record("ghost", pb.CONVERSATION_EVENT_KIND_RESOLVE))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_transferring_to_an_agent_at_capacity_is_a_failed_precondition(ready: Desk) -> None:
    create_agent(ready.routing, "full", chats=1, online=True)
    assert ready.route("c1", customer_id="acme").decision.agent_id == "full"
    ready.route("c2", customer_id="acme")

    error = call_error(
        lambda: ready.record("c2", pb.CONVERSATION_EVENT_KIND_TRANSFER, agent_id="full")
    )

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ready.conversation("c2").agent_id == ""
