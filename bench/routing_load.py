"""RouteConversation beside a bare echo service, and AssignNext contention, with profiles,
segments and routing each in its own process the way production runs them.

Run from a checkout with the virtualenv active (h2load on PATH, see ``bench/grpc_load.py``)::

    python bench/routing_load.py --database sqlite
    python bench/routing_load.py --database postgresql [--postgres-url ADMIN_URL]

Every run works on throwaway databases (``bench/stack.py``). Steps:

1. Start ``serve profiles``, ``serve segments`` and ``serve routing`` on a fresh database and
   set up a desk through their APIs: one known customer, ten segments (a tier family, a size
   family and four overlays, one with ``$inSegment``), three calendars, five SLA policies,
   nine queues, twelve agents (eight of them ONLINE) and twenty routing rules whose first
   match for the customer is rule 17, plus a default action.
2. Load RouteConversation for that customer with h2load at each concurrency: with
   ``validate_only`` (the whole decision every call, nothing stored: the figure held against
   the target) and replayed (one conversation routed for real once, then sent again: the
   stored decision a retrying widget gets). In the same loop, load the echo service
   (``bench/echo_server.py``, same server settings) with a body of the same size, and the
   profiles GetCustomer every decision makes (the ceiling of any routing figure).
3. Route fresh conversations (a new id per call, stored and assigned), and validate_only
   with distinct ids, from a Python client in several processes: h2load repeats one body,
   so it cannot. The client saturates before the service does, so these figures are floors.
4. Unless ``--skip-contention``: on a second fresh database with the same desk, route 10,000
   conversations into one queue while nobody is ONLINE, put 32 consoles ONLINE and start 32
   h2load processes together, each pulling with its own AssignNext body. Afterwards every
   conversation must be held by exactly one console, with exactly one ASSIGNED event, and
   the queue must be empty; only then is "double assignments: 0" printed.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2, struct_pb2

# Run as a script from a checkout, where the project is not necessarily installed.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from switchboard.profiles.v1 import profiles_pb2 as ppb  # noqa: E402
from switchboard.profiles.v1 import profiles_pb2_grpc  # noqa: E402
from switchboard.routing.v1 import routing_pb2 as pb  # noqa: E402
from switchboard.routing.v1 import routing_pb2_grpc  # noqa: E402
from switchboard.segments.v1 import segments_pb2 as spb  # noqa: E402
from switchboard.segments.v1 import segments_pb2_grpc  # noqa: E402

from bench.grpc_load import (  # noqa: E402
    ECHO_METHOD,
    LoadResult,
    _percentile,
    check_call,
    echo_server_process,
    format_table,
    grpc_frame,
    run_h2load,
)
from bench.stack import (  # noqa: E402
    DEFAULT_ADMIN_URL,
    SERVICE_NAMES,
    Databases,
    RunningStack,
    rpc_calls,
    running_services,
)
from services.core.settings import Settings  # noqa: E402
from tests.support.access import keyed_channel  # noqa: E402

_SERVICE = pb.DESCRIPTOR.services_by_name["RoutingService"].full_name
ROUTE_METHOD = f"/{_SERVICE}/RouteConversation"
ASSIGN_NEXT_METHOD = f"/{_SERVICE}/AssignNext"
GET_CUSTOMER_METHOD = f"/{ppb.DESCRIPTOR.services_by_name['ProfileService'].full_name}/GetCustomer"
CALL_TIMEOUT_SECONDS = 30.0
ACTOR = "bench@example.com"

CUSTOMER_ID = "acme-industrial"
# The customer's first matching rule, 17th of 20: sixteen conditions fail before it.
MATCHING_RULE = "emea_enterprise_at_risk"
ORDERS_QUEUE = "orders"
ORDERS_RULE = "order_status"
# The target of the issue, held at this concurrency.
TARGET_CONCURRENCY = 16
TARGET_SHARE_OF_ECHO = 0.40
TARGET_P99_MS = 25.0
# AssignNext calls per console beyond an even share, so the queue drains even when some
# consoles are slower than others; the surplus calls find the queue empty.
CONSOLE_CALL_MARGIN = 1.05


# ---- the desk ----------------------------------------------------------------------------------


def _struct(document: Mapping[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(document)
    return message


def _duration(delta: timedelta) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromTimedelta(delta)
    return message


def known_customer() -> ppb.Customer:
    """Enterprise, large, at risk, in EMEA, high ARR, not new, with a named account owner."""
    customer = ppb.Customer(
        customer_id=CUSTOMER_ID,
        email="ops@acme-industrial.example",
        display_name="Greta Hoffmann",
        company_name="Acme Industrial GmbH",
        plan="enterprise",
        seats=240,
        arr=186_000.0,
        employee_count=1_800,
        industry="manufacturing",
        country="DE",
        region="EMEA",
        timezone="Europe/Berlin",
        language="de",
        lifecycle_stage="active",
        health_score=34.0,
        nps=6,
        channel_preference="chat",
        tags=["key-account", "renewal-q1"],
    )
    customer.signup_time.FromDatetime(datetime(2023, 4, 17, 8, 30, tzinfo=UTC))
    customer.attributes.update(
        {
            "account_owner": "ana.owner",
            "contract_type": "annual",
            "sso_enabled": True,
            "csm": "Jonas Weber",
        }
    )
    return customer


# (segment id, family, priority in its family, rule); referenced segments come first.
SEGMENTS: list[tuple[str, str, int, dict[str, Any]]] = [
    (
        "tier_enterprise",
        "tier",
        10,
        {"$or": [{"plan": "enterprise"}, {"seats": {"$gte": 100}}]},
    ),
    ("tier_growth", "tier", 20, {"seats": {"$gte": 10}}),
    ("tier_starter", "tier", 30, {"seats": {"$gte": 1}}),
    ("size_large", "size", 10, {"employee_count": {"$gte": 1000}}),
    ("size_mid", "size", 20, {"employee_count": {"$gte": 100}}),
    ("size_small", "size", 30, {"employee_count": {"$lt": 100}}),
    ("at_risk", "", 0, {"$or": [{"health_score": {"$lt": 40}}, {"nps": {"$lte": 3}}]}),
    (
        "emea",
        "",
        0,
        {"country": {"$in": ["DE", "AT", "CH", "FR", "GB", "IE", "NL", "ES", "IT", "SE", "PL"]}},
    ),
    ("high_arr", "", 0, {"$inSegment": "tier_enterprise", "arr": {"$gte": 100_000}}),
    ("new_signup", "", 0, {"signup_time": {"$withinLast": "30d"}}),
]


def segments() -> list[spb.Segment]:
    return [
        spb.Segment(
            segment_id=segment_id,
            display_name=segment_id.replace("_", " ").title(),
            family=family,
            priority=priority,
            rule=_struct(rule),
            enabled=True,
        )
        for segment_id, family, priority, rule in SEGMENTS
    ]


def calendars() -> list[pb.Calendar]:
    """Berlin office hours with a lunch break and holidays, New York office hours, 24/7."""
    workdays = [
        pb.WEEKDAY_MONDAY,
        pb.WEEKDAY_TUESDAY,
        pb.WEEKDAY_WEDNESDAY,
        pb.WEEKDAY_THURSDAY,
        pb.WEEKDAY_FRIDAY,
    ]
    return [
        pb.Calendar(
            calendar_id="berlin_office",
            display_name="Berlin office hours",
            time_zone="Europe/Berlin",
            weekly_hours=[
                pb.OpenInterval(weekday=day, start_time=start, end_time=end)
                for day in workdays
                for start, end in (("08:00", "12:30"), ("13:30", "18:00"))
            ],
            holidays=["2026-12-24", "2026-12-25", "2026-12-26", "2026-12-31", "2027-01-01"],
        ),
        pb.Calendar(
            calendar_id="new_york_office",
            display_name="New York office hours",
            time_zone="America/New_York",
            weekly_hours=[
                pb.OpenInterval(weekday=day, start_time="09:00", end_time="17:00")
                for day in workdays
            ],
            holidays=["2026-11-26", "2026-12-25"],
        ),
        pb.Calendar(
            calendar_id="around_the_clock", display_name="24/7", time_zone="UTC", always_open=True
        ),
    ]


def sla_policies() -> list[pb.SlaPolicy]:
    def target(delta: timedelta, business: bool) -> pb.SlaTarget:
        clock = pb.TARGET_CLOCK_BUSINESS_HOURS if business else pb.TARGET_CLOCK_CALENDAR_TIME
        return pb.SlaTarget(duration=_duration(delta), clock=clock)

    paused = [pb.CONVERSATION_STATE_WAITING_ON_CUSTOMER]
    hour = timedelta(hours=1)
    return [
        pb.SlaPolicy(
            policy_id=policy_id,
            display_name=policy_id.replace("_", " "),
            calendar_id=calendar_id,
            first_response=target(first, bool(calendar_id)),
            next_response=target(first * 2, bool(calendar_id)),
            resolution=target(resolution, bool(calendar_id)),
            warning_percent=75,
            pause_states=paused,
        )
        for policy_id, calendar_id, first, resolution in (
            ("enterprise_1h", "berlin_office", hour, 8 * hour),
            ("us_enterprise_1h", "new_york_office", hour, 8 * hour),
            ("priority_2h", "berlin_office", 2 * hour, 16 * hour),
            ("standard_8h", "", 8 * hour, 72 * hour),
            ("orders_24h", "", 24 * hour, 96 * hour),
        )
    ]


def queues() -> list[pb.Queue]:
    overflow = pb.Overflow(queue_id="general", after=_duration(timedelta(hours=2)))
    definitions = [
        ("general", (), (), "berlin_office", None),
        ("senior", ("senior",), ("en", "de"), "berlin_office", overflow),
        ("us_senior", ("senior",), ("en",), "new_york_office", None),
        ("billing", ("billing",), ("en", "de"), "berlin_office", None),
        ("onboarding", (), ("en", "de"), "berlin_office", None),
        ("retention", ("retention",), ("en", "de"), "berlin_office", None),
        ("emea_desk", (), ("en", "de", "fr"), "berlin_office", None),
        ("apac", (), ("en",), "around_the_clock", None),
        (ORDERS_QUEUE, ("orders",), ("en", "de"), "around_the_clock", None),
    ]
    return [
        pb.Queue(
            queue_id=queue_id,
            display_name=queue_id.replace("_", " ").title(),
            required_skills=skills,
            languages=languages,
            calendar_id=calendar_id,
            strategy=pb.ASSIGNMENT_STRATEGY_LEAST_BUSY,
            overflow=queue_overflow,
        )
        for queue_id, skills, languages, calendar_id, queue_overflow in definitions
    ]


def agent(
    agent_id: str, skills: Sequence[str], languages: Sequence[str] = ("en", "de")
) -> pb.Agent:
    """An agent taking up to 1,000 chats (the most the API allows) and 100 emails."""
    return pb.Agent(
        agent_id=agent_id,
        display_name=agent_id.replace(".", " ").title(),
        skills=skills,
        languages=languages,
        capacity=[
            pb.ChannelCapacity(channel=pb.CHANNEL_CHAT, max_open=1000),
            pb.ChannelCapacity(channel=pb.CHANNEL_EMAIL, max_open=100),
        ],
        teams=["support"],
    )


def desk_agents() -> list[tuple[pb.Agent, bool]]:
    """(agent, put ONLINE for the routing measurements): eight senior billing agents can take
    the known customer's conversations; the others cannot or are offline."""
    seniors = [(agent(f"senior.{n:02d}", ["senior", "billing"]), True) for n in range(1, 9)]
    return [
        *seniors,
        (agent("ana.owner", ["senior", "billing", "retention"]), False),
        (agent("ben.billing", ["billing"]), False),
        (agent("chloe.general", [], ["en", "fr"]), False),
        (agent("dev.us", ["senior"], ["en"]), False),
    ]


def _action(
    queue_id: str,
    policy_id: str,
    priority: int,
    *,
    skills: Sequence[str] = (),
    owner_minutes: int = 0,
    bot_first: bool = False,
) -> pb.RoutingAction:
    action = pb.RoutingAction(
        queue_id=queue_id,
        sla_policy_id=policy_id,
        priority=priority,
        required_skills=skills,
        bot_first=bot_first,
    )
    if owner_minutes:
        action.fallback_chain.add(
            owner_attribute="account_owner", timeout=_duration(timedelta(minutes=owner_minutes))
        )
    return action


def routing_rules() -> pb.RoutingRules:
    """Twenty rules mixing ``$inSegment``, customer fields and the conversation; the known
    customer's chat about billing fails the first sixteen and matches rule 17."""
    enterprise = {"$inSegment": "tier_enterprise"}
    rules: list[tuple[str, dict[str, Any], pb.RoutingAction]] = [
        (
            "enterprise_phone",
            {**enterprise, "conversation.channel": "phone"},
            _action("senior", "enterprise_1h", 100, owner_minutes=10),
        ),
        ("new_signups", {"$inSegment": "new_signup"}, _action("onboarding", "priority_2h", 60)),
        (
            "starter_email",
            {"$inSegment": "tier_starter", "conversation.channel": "email"},
            _action("general", "standard_8h", 10),
        ),
        (
            "growth_billing",
            {"$inSegment": "tier_growth", "conversation.topic": "billing"},
            _action("billing", "priority_2h", 50),
        ),
        (
            "security",
            {"conversation.topic": {"$in": ["security", "gdpr", "data_request"]}},
            _action("senior", "enterprise_1h", 90, skills=["retention"]),
        ),
        (
            ORDERS_RULE,
            {"conversation.topic": "order_status"},
            _action(ORDERS_QUEUE, "orders_24h", 20),
        ),
        (
            "small_at_risk",
            {"$and": [{"$inSegment": "at_risk"}, {"$inSegment": "size_small"}]},
            _action("retention", "priority_2h", 70),
        ),
        (
            "us_enterprise",
            {**enterprise, "country": {"$in": ["US", "CA"]}},
            _action("us_senior", "us_enterprise_1h", 95, owner_minutes=10),
        ),
        (
            "apac",
            {"country": {"$in": ["JP", "AU", "NZ", "SG", "IN"]}},
            _action("apac", "standard_8h", 30),
        ),
        ("free_plan", {"plan": "free"}, _action("general", "", 0, bot_first=True)),
        (
            "social",
            {"conversation.channel": "social"},
            _action("general", "standard_8h", 10),
        ),
        ("sms", {"conversation.channel": "sms"}, _action("general", "standard_8h", 10)),
        ("trials", {"lifecycle_stage": "trial"}, _action("onboarding", "priority_2h", 40)),
        (
            "unhappy_growth",
            {"$inSegment": "tier_growth", "nps": {"$lte": 6}},
            _action("retention", "priority_2h", 60),
        ),
        (
            "mid_size_billing",
            {"$inSegment": "size_mid", "conversation.topic": "billing"},
            _action("billing", "priority_2h", 50),
        ),
        (
            "high_arr_email",
            {"$inSegment": "high_arr", "conversation.channel": "email"},
            _action("senior", "enterprise_1h", 90),
        ),
        (
            MATCHING_RULE,
            {
                "$inSegment": "emea",
                "$and": [
                    {"$inSegment": "at_risk"},
                    {"$or": [{"$inSegment": "high_arr"}, enterprise]},
                ],
                "conversation.channel": {"$in": ["chat", "phone"]},
                "conversation.topic": {"$in": ["billing", "renewal", "cancellation"]},
                "attributes.account_owner": {"$exists": True},
                "health_score": {"$lt": 50},
            },
            _action("senior", "enterprise_1h", 95, skills=["billing"]),
        ),
        ("emea", {"$inSegment": "emea"}, _action("emea_desk", "standard_8h", 30)),
        ("enterprise", enterprise, _action("senior", "enterprise_1h", 90)),
        ("chat", {"conversation.channel": "chat"}, _action("general", "standard_8h", 10)),
    ]
    return pb.RoutingRules(
        rules=[
            pb.RoutingRule(
                rule_id=rule_id,
                display_name=rule_id.replace("_", " ").capitalize(),
                condition=_struct(condition),
                action=action,
            )
            for rule_id, condition, action in rules
        ],
        default_action=_action("general", "standard_8h", 0),
    )


def set_up_desk(stack: RunningStack, *, agents_online: bool) -> None:
    """The customer, segments and routing configuration, through the services' APIs."""
    with (
        stack.channel("profiles") as profiles_channel,
        stack.channel("segments") as segments_channel,
        stack.channel("routing") as routing_channel,
    ):
        profiles = profiles_pb2_grpc.ProfileServiceStub(profiles_channel)
        segment_service = segments_pb2_grpc.SegmentServiceStub(segments_channel)
        routing = routing_pb2_grpc.RoutingServiceStub(routing_channel)
        timeout = CALL_TIMEOUT_SECONDS
        profiles.CreateCustomer(
            ppb.CreateCustomerRequest(customer=known_customer()), timeout=timeout
        )
        for segment in segments():
            segment_service.CreateSegment(
                spb.CreateSegmentRequest(segment=segment, actor=ACTOR), timeout=timeout
            )
        for calendar in calendars():
            routing.CreateCalendar(pb.CreateCalendarRequest(calendar=calendar), timeout=timeout)
        for policy in sla_policies():
            routing.CreateSlaPolicy(pb.CreateSlaPolicyRequest(policy=policy), timeout=timeout)
        for queue in queues():
            routing.CreateQueue(pb.CreateQueueRequest(queue=queue), timeout=timeout)
        for new_agent, online in desk_agents():
            routing.CreateAgent(pb.CreateAgentRequest(agent=new_agent), timeout=timeout)
            if online and agents_online:
                _set_status(routing, new_agent.agent_id, pb.AGENT_STATUS_ONLINE)
        routing.UpdateRoutingRules(
            pb.UpdateRoutingRulesRequest(rules=routing_rules(), actor=ACTOR), timeout=timeout
        )


def _set_status(
    routing: routing_pb2_grpc.RoutingServiceStub, agent_id: str, status: pb.AgentStatus.ValueType
) -> None:
    routing.SetAgentStatus(
        pb.SetAgentStatusRequest(agent_id=agent_id, status=status), timeout=CALL_TIMEOUT_SECONDS
    )


def route_request(
    conversation_id: str, *, topic: str = "billing", validate_only: bool = False
) -> pb.RouteConversationRequest:
    """The known customer opening a German chat; ``time`` unset, so the service's now."""
    return pb.RouteConversationRequest(
        conversation_id=conversation_id,
        customer_id=CUSTOMER_ID,
        channel=pb.CHANNEL_CHAT,
        language="de",
        topic=topic,
        validate_only=validate_only,
    )


def check_route(
    stack: RunningStack, body: bytes, *, replayed: bool, rule_id: str = MATCHING_RULE
) -> pb.RoutingDecision:
    """Send ``body`` once and refuse a decision other than the one the load must measure."""
    response = pb.RouteConversationResponse.FromString(
        check_call(stack.addresses["routing"], ROUTE_METHOD, body, api_key=stack.api_key)
    )
    decision = response.decision
    if response.replayed != replayed or decision.rule_id != rule_id:
        raise RuntimeError(
            f"expected rule {rule_id!r} (replayed={replayed}), got rule {decision.rule_id!r} "
            f"(replayed={response.replayed}): {decision.explanation}"
        )
    return decision


# ---- the service's own count of failed calls ------------------------------------------------


def calls_by_code(metrics_url: str, method: str) -> Counter[str]:
    """How many calls of ``method`` the server answered, by status code (its /metrics)."""
    calls = rpc_calls(metrics_url)
    return Counter({code: count for (called, code), count in calls.items() if called == method})


def _not_ok(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    """Answers other than OK between two counts; refuses counts that saw no call at all, so
    a metric that stopped matching cannot pass for a clean run."""
    if after["OK"] <= before["OK"]:
        raise RuntimeError("the server's metrics counted no OK call of the loaded method")
    return {
        code: after[code] - before[code]
        for code in after
        if code != "OK" and after[code] > before[code]
    }


# ---- RouteConversation under h2load, beside echo ----------------------------------------------


@dataclass(frozen=True)
class RouteLoad:
    echo: list[LoadResult]
    validate_only: list[LoadResult]
    replay: list[LoadResult]
    get_customer: list[LoadResult]
    body_bytes: int
    failed_route_calls: dict[str, int]


def measure_routes(
    stack: RunningStack,
    *,
    concurrencies: Sequence[int],
    duration_seconds: float,
    threads: int,
    profile_dir: Path | None,
) -> RouteLoad:
    """Echo, validate_only, replay and the profiles lookup every decision makes
    (GetCustomer, a ceiling for routing) at each concurrency in turn, so machine noise hits
    them alike. With ``profile_dir``, py-spy records the routing server during each
    validate_only level (sampling costs the server a little throughput in those runs)."""
    address = stack.addresses["routing"]
    validate_body = grpc_frame(route_request("bench-validate", validate_only=True))
    decision = check_route(stack, validate_body, replayed=False)
    if not decision.agent_id:
        raise RuntimeError(f"validate_only picked no agent: {decision.explanation}")
    replay_body = grpc_frame(route_request("bench-replay"))
    check_route(stack, replay_body, replayed=False)
    check_route(stack, replay_body, replayed=True)
    echo_payload = bytes(index % 251 for index in range(len(validate_body) - 5))
    echo_body = grpc_frame(echo_payload)
    lookup_body = grpc_frame(ppb.GetCustomerRequest(customer_id=CUSTOMER_ID))
    check_call(stack.addresses["profiles"], GET_CUSTOMER_METHOD, lookup_body, api_key=stack.api_key)

    before = calls_by_code(stack.metrics_urls["routing"], ROUTE_METHOD)
    load: dict[str, list[LoadResult]] = {
        "echo": [],
        "validate_only": [],
        "replay": [],
        "get_customer": [],
    }
    with echo_server_process() as echo_address:
        if check_call(echo_address, ECHO_METHOD, echo_body) != echo_payload:
            raise RuntimeError("the echo service did not return the request bytes")
        for concurrency in concurrencies:
            for name, target, method, body in (
                ("echo", echo_address, ECHO_METHOD, echo_body),
                ("validate_only", address, ROUTE_METHOD, validate_body),
                ("replay", address, ROUTE_METHOD, replay_body),
                ("get_customer", stack.addresses["profiles"], GET_CUSTOMER_METHOD, lookup_body),
            ):
                recording = None
                if profile_dir is not None and name == "validate_only":
                    recording = profile_dir / f"routing-validate_only-c{concurrency}.txt"
                with _py_spy(stack.pids["routing"], recording, duration_seconds + 1):
                    load[name].append(
                        run_h2load(
                            address=target,
                            method=method,
                            body=body,
                            concurrency=concurrency,
                            duration_seconds=duration_seconds,
                            threads=threads,
                            # Echo too, so every contender's requests carry the same headers.
                            api_key=stack.api_key,
                        )
                    )
    after = calls_by_code(stack.metrics_urls["routing"], ROUTE_METHOD)
    return RouteLoad(
        echo=load["echo"],
        validate_only=load["validate_only"],
        replay=load["replay"],
        get_customer=load["get_customer"],
        body_bytes=len(validate_body),
        failed_route_calls=_not_ok(before, after),
    )


@contextmanager
def _py_spy(pid: int, output: Path | None, seconds: float) -> Iterator[None]:
    """py-spy recording process ``pid`` into ``output`` (collapsed stacks) meanwhile."""
    if output is None:
        yield
        return
    executable = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    output.parent.mkdir(parents=True, exist_ok=True)
    recorder = subprocess.Popen(
        [
            executable,
            "record",
            f"--pid={pid}",
            f"--duration={math.ceil(seconds)}",
            "--rate=200",
            "--format=raw",
            f"--output={output}",
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield
    finally:
        _, errors = recorder.communicate(timeout=seconds + 60)
        if recorder.returncode != 0:
            raise RuntimeError(f"py-spy failed ({recorder.returncode}): {errors.strip()}")


def print_profile(path: Path, top: int = 15) -> None:
    """Where the routing server's samples were, from py-spy's collapsed stacks: functions
    by own samples, then the project's functions by samples spent in them or below."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_function(frame) for frame in stack_text.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        print(f"no samples in {path}")
        return
    print(f"\npy-spy of the routing server, {path.name}: {total} samples of busy threads")
    print("  own samples:")
    for frame, count in own.most_common(top):
        print(f"    {count / total:6.1%}  {frame}")
    print("  samples in or below (project code):")
    project = [(f, c) for f, c in inclusive.most_common() if "services/" in f]
    for frame, count in project[:top]:
        print(f"    {count / total:6.1%}  {frame}")


def _function(frame: str) -> str:
    """``name (path/file.py:123)`` without the line number, relative to the checkout."""
    name, _, place = frame.partition(" (")
    place = place.rstrip(")").rsplit(":", 1)[0].replace(f"{ROOT}/", "")
    return f"{name} ({place})" if place else name


# ---- fresh routes from a Python client ------------------------------------------------------


@dataclass(frozen=True)
class ClientRun:
    processes: int
    threads: int
    calls: int
    assigned: int
    failures: dict[str, int]
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


def fresh_routes(
    stack: RunningStack,
    *,
    processes: int,
    threads: int,
    duration_seconds: float,
    validate_only: bool,
) -> ClientRun:
    """Route a new conversation id per call from ``processes`` x ``threads`` callers for
    ``duration_seconds`` (stored and assigned, or only decided with ``validate_only``); each
    process has its own channel and warms it up first."""
    context = multiprocessing.get_context("spawn")
    start_together = context.Barrier(processes + 1)
    results: Any = context.Queue()
    workers = [
        context.Process(
            target=_route_fresh_conversations,
            args=(
                stack.addresses["routing"],
                stack.api_key,
                index,
                threads,
                duration_seconds,
                validate_only,
                start_together,
                results,
            ),
        )
        for index in range(processes)
    ]
    for worker in workers:
        worker.start()
    start_together.wait(timeout=120)
    reports = [results.get(timeout=duration_seconds + 120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    latencies = sorted(latency for report in reports for latency in report["latencies_ms"])
    failures: Counter[str] = Counter()
    for report in reports:
        failures.update(report["failures"])
    first_start = min(report["first_start"] for report in reports)
    last_end = max(report["last_end"] for report in reports)
    return ClientRun(
        processes=processes,
        threads=threads,
        calls=len(latencies),
        assigned=sum(report["assigned"] for report in reports),
        failures=dict(failures),
        seconds=last_end - first_start,
        p50_ms=_percentile(latencies, 50),
        p99_ms=_percentile(latencies, 99),
    )


def _route_fresh_conversations(
    address: str,
    api_key: str,
    process_index: int,
    threads: int,
    duration_seconds: float,
    validate_only: bool,
    start_together: Any,
    results: Any,
) -> None:
    """One client process: ``threads`` callers, each routing new conversation ids."""
    with keyed_channel(address, api_key) as channel:
        routing = routing_pb2_grpc.RoutingServiceStub(channel)
        warm_up = route_request(f"warm-{process_index}", validate_only=True)
        routing.RouteConversation(warm_up, timeout=CALL_TIMEOUT_SECONDS)
        start_together.wait(timeout=120)
        deadline = time.monotonic() + duration_seconds

        def caller(thread_index: int) -> dict[str, Any]:
            latencies_ms: list[float] = []
            failures: Counter[str] = Counter()
            assigned = 0
            first_start = time.monotonic()
            last_end = first_start
            number = 0
            while time.monotonic() < deadline:
                number += 1
                request = route_request(
                    f"{'dry' if validate_only else 'new'}-{process_index}-{thread_index}-{number}",
                    validate_only=validate_only,
                )
                started = time.monotonic()
                try:
                    response = routing.RouteConversation(request, timeout=CALL_TIMEOUT_SECONDS)
                except grpc.RpcError as error:
                    code = error.code().name if isinstance(error, grpc.Call) else "UNKNOWN"
                    failures[code] += 1
                    continue
                last_end = time.monotonic()
                latencies_ms.append((last_end - started) * 1000)
                if response.replayed or response.decision.rule_id != MATCHING_RULE:
                    failures["UNEXPECTED_DECISION"] += 1
                elif response.decision.agent_id:
                    assigned += 1
            return {
                "latencies_ms": latencies_ms,
                "failures": failures,
                "assigned": assigned,
                "first_start": first_start,
                "last_end": last_end,
            }

        with ThreadPoolExecutor(max_workers=threads) as pool:
            reports = list(pool.map(caller, range(threads)))
    results.put(
        {
            "latencies_ms": [latency for report in reports for latency in report["latencies_ms"]],
            "failures": dict(sum((report["failures"] for report in reports), Counter())),
            "assigned": sum(report["assigned"] for report in reports),
            "first_start": min(report["first_start"] for report in reports),
            "last_end": max(report["last_end"] for report in reports),
        }
    )


# ---- AssignNext contention ------------------------------------------------------------------


@dataclass(frozen=True)
class ContentionRun:
    conversations: int
    consoles: int
    calls_per_console: int
    create_seconds: float
    drain_seconds: float
    wall_seconds: float
    calls: int
    answered_empty: int
    failed_calls: dict[str, int]
    p50_ms_median: float
    p99_ms_worst: float


def run_contention(
    stack: RunningStack, *, conversations: int, consoles: int, creators: int
) -> ContentionRun:
    """Fill one queue while nobody is ONLINE, then let ``consoles`` h2load processes pull
    from it together; verifies every conversation went to exactly one console."""
    address = stack.addresses["routing"]
    console_ids = [f"console.{number:02d}" for number in range(1, consoles + 1)]
    bodies = {
        console: grpc_frame(pb.AssignNextRequest(agent_id=console, queue_id=ORDERS_QUEUE))
        for console in console_ids
    }
    expected = [f"order-{number:05d}" for number in range(1, conversations + 1)]
    with stack.channel("routing") as channel:
        routing = routing_pb2_grpc.RoutingServiceStub(channel)
        for console in console_ids:
            routing.CreateAgent(
                pb.CreateAgentRequest(agent=agent(console, ["orders"])),
                timeout=CALL_TIMEOUT_SECONDS,
            )
            # The very body h2load will send, proven on the still empty queue.
            _set_status(routing, console, pb.AGENT_STATUS_ONLINE)
            reply = pb.AssignNextResponse.FromString(
                check_call(address, ASSIGN_NEXT_METHOD, bodies[console], api_key=stack.api_key)
            )
            if reply.HasField("assignment"):
                raise RuntimeError("the orders queue was not empty before it was filled")
            _set_status(routing, console, pb.AGENT_STATUS_OFFLINE)
        online = [a.agent_id for a in _all_agents(routing) if a.status == pb.AGENT_STATUS_ONLINE]
        if online:
            raise RuntimeError(f"agents online while the queue fills: {online}")

        def create(conversation_id: str) -> None:
            request = route_request(conversation_id, topic="order_status")
            decision = routing.RouteConversation(request, timeout=CALL_TIMEOUT_SECONDS).decision
            if (
                decision.rule_id != ORDERS_RULE
                or decision.queue_id != ORDERS_QUEUE
                or decision.agent_id
            ):
                raise RuntimeError(f"{conversation_id} did not wait in the queue: {decision}")

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=creators) as pool:
            list(pool.map(create, expected))
        create_seconds = time.perf_counter() - started

        for console in console_ids:
            _set_status(routing, console, pb.AGENT_STATUS_ONLINE)
        calls_per_console = math.ceil(conversations / consoles * CONSOLE_CALL_MARGIN)
        before = calls_by_code(stack.metrics_urls["routing"], ASSIGN_NEXT_METHOD)

        def pull(console: str) -> LoadResult:
            return run_h2load(
                address=address,
                method=ASSIGN_NEXT_METHOD,
                body=bodies[console],
                concurrency=1,
                requests=calls_per_console,
                api_key=stack.api_key,
            )

        start_time = datetime.now(UTC)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=consoles) as pool:
            results = list(pool.map(pull, console_ids))
        wall_seconds = time.perf_counter() - started
        after = calls_by_code(stack.metrics_urls["routing"], ASSIGN_NEXT_METHOD)

        last_assign = verify_one_holder_each(routing, console_ids, expected)
    calls = sum(result.succeeded + result.failed for result in results)
    failed = _not_ok(before, after)
    return ContentionRun(
        conversations=conversations,
        consoles=consoles,
        calls_per_console=calls_per_console,
        create_seconds=create_seconds,
        drain_seconds=(last_assign - start_time).total_seconds(),
        wall_seconds=wall_seconds,
        calls=calls,
        answered_empty=calls - conversations - sum(failed.values()),
        failed_calls=failed,
        p50_ms_median=sorted(r.p50_ms for r in results)[len(results) // 2],
        p99_ms_worst=max(r.p99_ms for r in results),
    )


def _all_agents(routing: routing_pb2_grpc.RoutingServiceStub) -> list[pb.Agent]:
    found: list[pb.Agent] = []
    token = ""
    while True:
        page = routing.ListAgents(
            pb.ListAgentsRequest(page_size=1000, page_token=token), timeout=CALL_TIMEOUT_SECONDS
        )
        found += page.agents
        token = page.next_page_token
        if not token:
            return found


def verify_one_holder_each(
    routing: routing_pb2_grpc.RoutingServiceStub,
    console_ids: Sequence[str],
    expected: Sequence[str],
) -> datetime:
    """Raise unless each expected conversation is held by exactly one console, was assigned
    exactly once (one ASSIGNED event, naming its holder) and the queue is empty; returns the
    last assignment's time."""
    holder: dict[str, str] = {}
    held_twice: list[str] = []
    last_assign = datetime.min.replace(tzinfo=UTC)
    for console in console_ids:
        response = routing.GetAgentAssignments(
            pb.GetAgentAssignmentsRequest(agent_id=console), timeout=CALL_TIMEOUT_SECONDS
        )
        for assignment in response.assignments:
            if assignment.conversation_id in holder:
                held_twice.append(assignment.conversation_id)
            holder[assignment.conversation_id] = console
            last_assign = max(last_assign, assignment.assign_time.ToDatetime(tzinfo=UTC))
    missing = sorted(set(expected) - set(holder))
    unexpected = sorted(set(holder) - set(expected))
    left = routing.ListQueueConversations(
        pb.ListQueueConversationsRequest(queue_id=ORDERS_QUEUE, page_size=1000),
        timeout=CALL_TIMEOUT_SECONDS,
    ).conversations
    if held_twice or missing or unexpected or left:
        raise RuntimeError(
            f"assignments do not add up: {len(held_twice)} held twice, {len(missing)} not held, "
            f"{len(unexpected)} unexpected, {len(left)} still waiting "
            f"(first few: {(held_twice + missing + unexpected)[:5]})"
        )

    def assigned_once(conversation_id: str) -> str | None:
        conversation = routing.GetConversation(
            pb.GetConversationRequest(conversation_id=conversation_id),
            timeout=CALL_TIMEOUT_SECONDS,
        ).conversation
        assigned_to = [
            event.agent_id
            for event in conversation.events
            if event.kind == pb.CONVERSATION_EVENT_KIND_ASSIGNED
        ]
        if assigned_to != [holder[conversation_id]] or conversation.agent_id != assigned_to[0]:
            return f"{conversation_id}: assigned to {assigned_to}, held by {conversation.agent_id}"
        return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        wrong = [problem for problem in pool.map(assigned_once, expected) if problem]
    if wrong:
        raise RuntimeError(
            f"{len(wrong)} conversations were not assigned exactly once: {wrong[:5]}"
        )
    return last_assign


# ---- report -----------------------------------------------------------------------------------


def print_route_report(
    load: RouteLoad, fresh: ClientRun, dry: ClientRun, duration_seconds: float
) -> None:
    print(
        f"h2load, {duration_seconds:g} s per level after 1 s warm-up, one call per connection, "
        f"{load.body_bytes}-byte request bodies (echo body the same size)\n"
    )
    levels = list(zip(load.echo, load.validate_only, load.replay, load.get_customer, strict=True))
    rows = []
    for echo, validate, replay, lookup in levels:
        rows += [
            ("echo", echo),
            ("route, validate_only", validate),
            ("route, replay", replay),
            ("profiles GetCustomer", lookup),
        ]
    print(format_table(rows))
    print(
        "\n| concurrency | validate_only / echo | replay / echo | GetCustomer / echo "
        "| validate_only p99 ms |\n|---:|---:|---:|---:|---:|"
    )
    for echo, validate, replay, lookup in levels:
        print(
            f"| {echo.concurrency} "
            f"| {validate.requests_per_second / echo.requests_per_second:.0%} "
            f"| {replay.requests_per_second / echo.requests_per_second:.0%} "
            f"| {lookup.requests_per_second / echo.requests_per_second:.0%} "
            f"| {validate.p99_ms:.2f} |"
        )
    at_target = [
        (echo, validate)
        for echo, validate in zip(load.echo, load.validate_only, strict=True)
        if echo.concurrency == TARGET_CONCURRENCY
    ]
    if at_target:
        echo, validate = at_target[0]
        share = validate.requests_per_second / echo.requests_per_second
        held = share >= TARGET_SHARE_OF_ECHO and validate.p99_ms < TARGET_P99_MS
        print(
            f"\ntarget at {TARGET_CONCURRENCY} concurrent, validate_only against echo: "
            f">= {TARGET_SHARE_OF_ECHO:.0%} of echo and p99 < {TARGET_P99_MS:g} ms: "
            f"{'MET' if held else 'MISSED'} ({share:.0%}, p99 {validate.p99_ms:.2f} ms)"
        )
    else:
        print(f"\ntarget not evaluated: {TARGET_CONCURRENCY} is not among the concurrencies")
    failed = load.failed_route_calls
    print(
        "RouteConversation calls the routing service answered other than OK during the load: "
        + (", ".join(f"{count} {code}" for code, count in failed.items()) if failed else "none")
    )
    print(
        f"\nPython client, {fresh.processes} processes x {fresh.threads} threads, a new "
        "conversation id per call (a floor: the client saturates first):"
    )
    for label, run, outcome in (
        ("fresh routes, stored and assigned", fresh, "assigned at routing time"),
        ("validate_only, distinct ids", dry, "with an agent picked"),
    ):
        print(
            f"  {label}: {run.calls:,} calls in {run.seconds:.1f} s = "
            f"{run.calls_per_second:,.0f}/s, p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, "
            f"{run.assigned:,} {outcome}"
            + (f", failures: {run.failures}" if run.failures else ", no failures")
        )


def print_contention_report(run: ContentionRun) -> None:
    print(
        f"\nAssignNext contention: {run.consoles} consoles pulling from one queue of "
        f"{run.conversations:,} waiting conversations, one h2load process each "
        f"(-c 1 -n {run.calls_per_console}), all started together"
    )
    print(
        f"  queue filled before the clock: {run.conversations:,} RouteConversation calls in "
        f"{run.create_seconds:.1f} s, nobody ONLINE"
    )
    print(
        f"  queue drained {run.drain_seconds:.2f} s after the start (last assign_time): "
        f"{run.conversations / run.drain_seconds:,.0f} assignments/s"
    )
    print(
        f"  all {run.consoles} h2load processes done after {run.wall_seconds:.2f} s: "
        f"{run.calls:,} calls, {run.conversations:,} assigned, {run.answered_empty:,} answered "
        f"empty once the queue had drained"
        + (f", not OK: {run.failed_calls}" if run.failed_calls else ", none failed")
    )
    print(
        f"  AssignNext latency per console: p50 {run.p50_ms_median:.2f} ms (median console), "
        f"p99 {run.p99_ms_worst:.2f} ms (worst console)"
    )
    print(
        f"  verified: each of the {run.conversations:,} conversations held by exactly one console "
        f"(union of {run.consoles} GetAgentAssignments, no id twice), one ASSIGNED event each, "
        "queue empty"
    )
    print("  double assignments: 0")


# ---- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL),
        help="admin connection that creates and drops the throwaway databases",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per h2load level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--threads", type=int, default=1, help="h2load threads")
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--client-threads", type=int, default=4)
    parser.add_argument("--skip-contention", action="store_true")
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--consoles", type=int, default=32)
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy the routing server during each validate_only level, collapsed stacks "
        "to DIR/routing-validate_only-c<N>.txt (needs py-spy)",
    )
    args = parser.parse_args()

    settings = Settings()
    print(
        f"{args.database}: profiles, segments, routing and echo in separate processes, "
        f"SWITCHBOARD_GRPC_MAX_WORKERS={settings.grpc_max_workers} for every server, "
        f"{os.cpu_count()} CPUs\n"
    )
    databases = Databases(args.database, args.postgres_url)
    try:
        with running_services(
            SERVICE_NAMES, database_url=databases.fresh(), data_dir=databases.tempdir.name
        ) as stack:
            set_up_desk(stack, agents_online=True)
            load = measure_routes(
                stack,
                concurrencies=args.concurrency,
                duration_seconds=args.duration,
                threads=args.threads,
                profile_dir=args.profile,
            )
            # Dry runs first: they then see the same stored state as the h2load runs.
            dry, fresh = (
                fresh_routes(
                    stack,
                    processes=args.client_processes,
                    threads=args.client_threads,
                    duration_seconds=args.duration,
                    validate_only=validate_only,
                )
                for validate_only in (True, False)
            )
        print_route_report(load, fresh, dry, args.duration)
        if args.profile is not None:
            for concurrency in args.concurrency:
                print_profile(args.profile / f"routing-validate_only-c{concurrency}.txt")
        if not args.skip_contention:
            with running_services(
                SERVICE_NAMES, database_url=databases.fresh(), data_dir=databases.tempdir.name
            ) as stack:
                set_up_desk(stack, agents_online=False)
                contention = run_contention(
                    stack,
                    conversations=args.conversations,
                    consoles=args.consoles,
                    creators=args.client_processes * args.client_threads,
                )
            print_contention_report(contention)
    finally:
        databases.drop_all()
    failed = any(
        result.failed for result in load.echo + load.validate_only + load.replay + load.get_customer
    )
    if failed or load.failed_route_calls or fresh.failures or dry.failures:
        sys.exit("some calls failed; the figures above are not a valid measurement")


if __name__ == "__main__":
    main()
