"""Soak: a realistic mix of RPCs on every service at 80% of the mix's measured maximum, for
10 minutes, against PostgreSQL and Redis; errors, p99 over time and the memory of every
process.

Run from a checkout with the virtualenv active (h2load and redis-server on PATH)::

    python bench/soak.py                    # the full soak: 10 minutes at 80%
    python bench/soak.py --minutes 1        # a quicker try

Steps (see ``bench/README.md`` for what each figure means):

1. A fresh PostgreSQL database (``bench/stack.py``) and a throwaway redis-server; profiles,
   segments and routing each in its own process with ``SWITCHBOARD_REDIS_URL`` (so widget
   answers are cached in Redis), one Celery worker for every queue and beat.
2. Data, through the APIs: the demo (``services/demo.py``: ten customers with two weeks of
   logins, the demo segments, the first team's routing, the widget personas and policies, a
   month of conversations for the ten) and a few thousand generated customers (tiers by
   seats, two weeks of logins each, about 8% with logins more than halved, i.e. at risk);
   then every customer's memberships are recomputed.
3. The mix (``build_mix``): one h2load process per RPC, each repeating one prepared body
   that is first checked through a real channel; each gets clients in proportion to its
   share of the calls.
4. The maximum: first every client without a rate limit for ``--max-seconds`` (a closed
   loop, which over-weights the fast RPCs: a ceiling, not the mix's maximum); then
   ``--probes`` runs of ``--probe-seconds`` with every client rate-limited (``--rps``) so
   the mix runs in its own proportions, bisecting between nothing and that ceiling for the
   highest total rate it sustains (achieved at least 97% of offered).
5. The soak: the same rate limits at ``--share`` of that maximum, for ``--minutes``. Errors
   come from the servers' own ``/metrics`` (h2load sees HTTP 200 even for a failed gRPC
   call), p99 per minute from h2load's per-request logs, memory from ``/proc/PID/status``
   every ``--sample-seconds``, log lines from each process's log.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import grpc
import redis
from google.protobuf.message import Message

# Run as a script from a checkout, where the project is not necessarily installed.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from switchboard.profiles.v1 import profiles_pb2 as ppb  # noqa: E402
from switchboard.profiles.v1 import profiles_pb2_grpc  # noqa: E402
from switchboard.reports.v1 import reports_pb2 as rppb  # noqa: E402
from switchboard.routing.v1 import routing_pb2 as rpb  # noqa: E402
from switchboard.routing.v1 import widgets_pb2 as wpb  # noqa: E402
from switchboard.segments.v1 import segments_pb2 as spb  # noqa: E402
from switchboard.segments.v1 import segments_pb2_grpc  # noqa: E402

from bench.grpc_load import (  # noqa: E402
    _parse_summary,
    _percentile,
    check_call,
    grpc_frame,
    grpc_url,
    h2load_command,
)
from bench.stack import (  # noqa: E402
    DEFAULT_ADMIN_URL,
    SERVICE_NAMES,
    Databases,
    RunningStack,
    rpc_calls,
    running_services,
    stack_environment,
    switchboard_process,
)
from bench.upsert_customers import upsert_all  # noqa: E402
from bench.widgets_load import population_requests  # noqa: E402
from services.core.settings import Settings  # noqa: E402
from services.demo import (  # noqa: E402
    load_demo,
    load_routing_demo,
    load_segment_demo,
    load_widgets_demo,
)
from services.demo_month import load_conversation_month  # noqa: E402
from tests.support.stores import redis_server  # noqa: E402

CALL_TIMEOUT_SECONDS = 600.0
USAGE_BATCH = 5000
AT_RISK_SHARE = 0.08
# Weekly logins by tier: (fewest, most).
WEEKLY_LOGINS = {"enterprise": (150, 1500), "growth": (30, 300), "starter": (5, 60)}
# The demo's widget policies, for the customer whose widget the mix asks for.
GROWTH_PERSONA = "growth-guide"
ROUTED_CONVERSATION = "soak-chat-1"
BOT_CONVERSATION = "soak-bot-1"
AGENT = "ana.silva"
QUEUE = "priority"
# A probe sustains the mix when it achieves at least this share of the calls it offered.
SUSTAINED_SHARE = 0.97
# Rates are counted without a run's first and last seconds (at most a tenth of the run each).
RATE_EDGE_SECONDS = 2.0
# An RPC achieving more than this share of its offered calls/s is reported: h2load overshot.
OVERSHOOT_SHARE = 1.1
# Clients per RPC in rate-limited runs: this many times its rate times its latency, at most
# MAX_CLIENTS_PER_RPC.
CLIENT_HEADROOM = 4
MAX_CLIENTS_PER_RPC = 32
# Memory counts as flat when no process's RssAnon grew by more than this share of its start.
FLAT_GROWTH_SHARE = 0.10
_LEVEL = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b")

M = TypeVar("M", bound=Message)


def _method(message: type[Message], service: str, name: str) -> str:
    package = message.DESCRIPTOR.file.package
    return f"/{package}.{service}/{name}"


# ---- the data set --------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """A generated customer: its ids, the tier its seats put it in, and whether its logins
    were more than halved last week (so the demo's ``at_risk`` overlay takes it)."""

    customer_id: str
    billing_id: str
    tier: str
    at_risk: bool


def generated_customers(
    count: int, rng: random.Random
) -> tuple[list[ppb.UpsertCustomersRequest], list[Member]]:
    """``widgets_load``'s population (10% enterprise, 30% growth, 60% starter by seats),
    with its ``at_risk`` tags removed: here logins decide who is at risk."""
    requests, _widget_expectations = population_requests(count)
    members = []
    for request in requests:
        for record in request.customers:
            del record.tags[:]
            members.append(
                Member(
                    customer_id=record.customer_id,
                    billing_id=record.external_ids["billing"],
                    tier=record.plan,
                    at_risk=rng.random() < AT_RISK_SHARE,
                )
            )
    return requests, members


def usage_events(
    members: Sequence[Member], now: datetime, rng: random.Random
) -> list[ppb.UsageEvent]:
    """Two weeks of logins per customer, one event a day (as the demo records them): the
    week before last and last week, last week under half of the one before for the at-risk
    ones and within 20% of it for the others."""
    events = []
    for member in members:
        fewest, most = WEEKLY_LOGINS[member.tier]
        before = rng.randint(fewest, most)
        last = before * (rng.uniform(0.1, 0.45) if member.at_risk else rng.uniform(0.8, 1.2))
        for week_offset, total in ((8, before), (1, last)):
            for day in range(7):
                event = ppb.UsageEvent(
                    customer_id=member.customer_id,
                    metric="logins",
                    value=total / 7,
                    event_id=f"soak-{member.customer_id}-{week_offset}-{day}",
                )
                event.time.FromDatetime(now - timedelta(days=week_offset + day, hours=1))
                events.append(event)
    return events


def load_data(stack: RunningStack, customers: int, rng: random.Random) -> list[Member]:
    """The demo, then the generated customers and their logins, then every customer's
    memberships, all through the services' APIs. The month of conversations is played for
    the ten demo customers only (before the others exist), so the scorecard has data."""
    settings = Settings(
        profiles_address=stack.addresses["profiles"],
        segments_address=stack.addresses["segments"],
        routing_address=stack.addresses["routing"],
        api_key=stack.api_key,
    )
    for step in (load_demo, load_segment_demo, load_routing_demo, load_widgets_demo):
        _progress(step(settings).splitlines()[0])
    _progress(load_conversation_month(settings))
    requests, members = generated_customers(customers, rng)
    seconds = upsert_all(stack, requests, streams=1, expected=ppb.UPSERT_OUTCOME_CREATED)
    _progress(f"{len(members):,} generated customers upserted in {seconds:.0f} s")
    events = usage_events(members, datetime.now(UTC), rng)
    with stack.channel("profiles") as channel:
        profiles = profiles_pb2_grpc.ProfileServiceStub(channel)
        for start in range(0, len(events), USAGE_BATCH):
            batch = events[start : start + USAGE_BATCH]
            profiles.RecordUsageEvents(
                ppb.RecordUsageEventsRequest(events=batch), timeout=CALL_TIMEOUT_SECONDS
            )
    _progress(f"{len(events):,} usage events recorded")
    with stack.channel("segments") as channel:
        summary = _recompute_all(segments_pb2_grpc.SegmentServiceStub(channel))
    _progress(
        f"memberships recomputed: {summary.evaluated_count:,} customers, "
        f"{summary.entered_count:,} entries"
    )
    return members


def _recompute_all(
    segments: segments_pb2_grpc.SegmentServiceStub, timeout: float = 300
) -> spb.RecomputeMembershipsResponse:
    """Every customer's memberships, once the workers' own round (which holds the same lock
    and answers ABORTED meanwhile) has let go."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response: spb.RecomputeMembershipsResponse = segments.RecomputeMemberships(
                spb.RecomputeMembershipsRequest(scope=spb.RECOMPUTE_SCOPE_ALL),
                timeout=CALL_TIMEOUT_SECONDS,
            )
            return response
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.ABORTED or time.monotonic() > deadline:
                raise
            time.sleep(1)


# ---- the mix -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    """One RPC of the mix: the server it goes to, the body h2load repeats, its share of the
    mix's calls (percent) and what its reply must say (a problem, or "" when right)."""

    service: str
    method: str
    body: bytes
    weight: float
    expect: Callable[[bytes], str] | None = None

    @property
    def name(self) -> str:
        return self.method.rsplit("/", 1)[-1]

    def problem(self, reply: bytes) -> str:
        return self.expect(reply) if self.expect else ""


def _reply(message: type[M], wrong: Callable[[M], str]) -> Callable[[bytes], str]:
    """What is wrong with a serialized ``message`` reply, by ``wrong``."""
    return lambda reply: wrong(message.FromString(reply))


def build_mix(members: Sequence[Member], rng: random.Random) -> list[Rpc]:
    """Fifteen RPCs over the three servers, weighted as a support desk's traffic: the chat
    widget's calls dominate, consoles and CRM lookups follow, syncs and usage write
    steadily, the scorecard is opened rarely."""
    steady = [m for m in members if not m.at_risk]
    growth = next(m for m in steady if m.tier == "growth")
    starter = next(m for m in steady if m.tier == "starter")
    enterprise = next(m for m in steady if m.tier == "enterprise")
    at_risk = next(m for m in members if m.at_risk)
    asked = {growth, starter, enterprise, at_risk}
    others = [m for m in members if m not in asked]
    usage_time = datetime.now(UTC) - timedelta(hours=1)
    # A login each for 20 customers, without event ids: every call records new events, so
    # their traits change and the workers re-evaluate them and refresh their widget answers.
    usage = [
        ppb.UsageEvent(customer_id=m.customer_id, metric="logins", value=1)
        for m in rng.sample(others, 20)
    ]
    for event in usage:
        event.time.FromDatetime(usage_time)
    # A sync sending 100 records again, unchanged.
    sync_records, _ = generated_customers(100, random.Random(0))
    scorecard = rppb.GetScorecardRequest(family="tier")
    scorecard.start_time.FromDatetime(datetime.now(UTC) - timedelta(days=30))
    visitor = wpb.Visitor(customer_id=growth.customer_id)

    def rpc(
        service: str,
        message: Message,
        api: str,
        weight: float,
        expect: Callable[[bytes], str] | None = None,
    ) -> Rpc:
        name = type(message).__name__.removesuffix("Request")
        method = _method(type(message), api, name)
        return Rpc(service, method, grpc_frame(message), weight, expect)

    return [
        rpc(
            "routing",
            wpb.GetWidgetConfigRequest(visitor=visitor),
            "WidgetService",
            35,
            _reply(
                wpb.GetWidgetConfigResponse,
                lambda r: (
                    ""
                    if r.cached and r.config.persona.persona_id == GROWTH_PERSONA
                    else f"not the cached {GROWTH_PERSONA}: {r}"
                ),
            ),
        ),
        rpc(
            "routing",
            wpb.EvaluateEscalationRequest(
                visitor=wpb.Visitor(customer_id=starter.customer_id),
                turn=wpb.BotTurn(
                    turn_count=2, sentiment=0.3, confidence=0.8, message="How do I add a seat?"
                ),
                conversation_id=BOT_CONVERSATION,
            ),
            "WidgetService",
            12,
            _reply(
                wpb.EvaluateEscalationResponse,
                lambda r: f"handed over: {r}" if r.hand_over else "",
            ),
        ),
        rpc(
            "profiles",
            ppb.GetCustomerRequest(
                external_id=ppb.ExternalId(system="billing", id=enterprise.billing_id)
            ),
            "ProfileService",
            8,
        ),
        rpc(
            "profiles",
            ppb.BatchGetCustomersRequest(
                customer_ids=[m.customer_id for m in rng.sample(others, 50)]
            ),
            "ProfileService",
            3,
        ),
        rpc(
            "profiles",
            ppb.RecordUsageEventsRequest(events=usage),
            "ProfileService",
            6,
            _reply(
                ppb.RecordUsageEventsResponse,
                lambda r: "" if r.recorded_count == len(usage) else f"recorded {r}",
            ),
        ),
        rpc(
            "profiles",
            ppb.UpsertCustomersRequest(
                external_id_system="billing",
                customers=[c for request in sync_records for c in request.customers],
            ),
            "ProfileService",
            1,
            _reply(
                ppb.UpsertCustomersResponse,
                lambda r: (
                    ""
                    if all(x.outcome == ppb.UPSERT_OUTCOME_UNCHANGED for x in r.results)
                    else "a record changed"
                ),
            ),
        ),
        rpc(
            "segments",
            spb.EvaluateCustomerRequest(customer_id=at_risk.customer_id),
            "SegmentService",
            5,
            _reply(
                spb.EvaluateCustomerResponse,
                lambda r: (
                    ""
                    if "at_risk" in r.member_segment_ids
                    else f"not at risk: {list(r.member_segment_ids)}"
                ),
            ),
        ),
        rpc("segments", spb.ListSegmentsRequest(page_size=100), "SegmentService", 2),
        rpc(
            "segments",
            spb.ListMembershipsRequest(customer_id=at_risk.customer_id),
            "SegmentService",
            3,
        ),
        rpc(
            "routing",
            rpb.RouteConversationRequest(
                conversation_id=ROUTED_CONVERSATION,
                customer_id=enterprise.customer_id,
                channel=rpb.CHANNEL_CHAT,
                language="en",
                topic="billing",
            ),
            "RoutingService",
            6,
        ),
        rpc(
            "routing",
            rpb.GetConversationRequest(conversation_id=ROUTED_CONVERSATION),
            "RoutingService",
            7,
        ),
        rpc(
            "routing",
            rpb.GetConversationCustomerRequest(conversation_id=ROUTED_CONVERSATION),
            "RoutingService",
            3,
        ),
        rpc("routing", rpb.GetAgentAssignmentsRequest(agent_id=AGENT), "RoutingService", 6),
        rpc(
            "routing",
            rpb.ListQueueConversationsRequest(queue_id=QUEUE, page_size=50),
            "RoutingService",
            2.9,
        ),
        rpc("routing", scorecard, "ReportService", 0.1),
    ]


def check_mix(stack: RunningStack, mix: Sequence[Rpc], *, patience_seconds: float) -> None:
    """Every body once through a real channel before any load. RouteConversation routes the
    conversation the others read; GetWidgetConfig is asked until its answer is cached."""
    for rpc in mix:
        address = stack.addresses[rpc.service]
        deadline = time.monotonic() + patience_seconds
        while True:
            reply = check_call(address, rpc.method, rpc.body, api_key=stack.api_key, timeout=60)
            problem = rpc.problem(reply)
            if not problem:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{rpc.name}: {problem}")
            time.sleep(1)
    _progress(f"all {len(mix)} bodies answered as expected")


@dataclass(frozen=True)
class Plan:
    """How the mix is loaded: h2load clients per RPC, and each client's calls per second
    (None: as fast as it is answered)."""

    clients: dict[str, int]
    rps: dict[str, float | None]

    def offered(self, rpc: Rpc) -> float | None:
        rate = self.rps[rpc.name]
        return None if rate is None else rate * self.clients[rpc.name]


def clients_per_rpc(mix: Sequence[Rpc], total_clients: int) -> dict[str, int]:
    """Clients in proportion to each RPC's share, at least one each."""
    weights = sum(rpc.weight for rpc in mix)
    return {rpc.name: max(1, round(total_clients * rpc.weight / weights)) for rpc in mix}


def unlimited_plan(mix: Sequence[Rpc], total_clients: int) -> Plan:
    """No rate limit, except that RPCs too rare for a client of their own (the scorecard,
    the sync) stay at one call a second, so a closed loop on them does not skew the
    ceiling."""
    clients = clients_per_rpc(mix, total_clients)
    weights = sum(rpc.weight for rpc in mix)
    rare = {rpc.name for rpc in mix if total_clients * rpc.weight / weights < 0.5}
    return Plan(clients, {rpc.name: 1.0 if rpc.name in rare else None for rpc in mix})


def rate_limited_plan(
    mix: Sequence[Rpc], calls_per_second: float, latency_seconds: Mapping[str, float]
) -> Plan:
    """``calls_per_second`` over the mix in its proportions. An h2load client has one call in
    flight, so an RPC gets clients for its rate times its latency (Little's law, with the
    closed loop's mean latency and ``CLIENT_HEADROOM``): a slow RPC then keeps its rate
    unless the servers fall behind, instead of being held back by too few connections."""
    weights = sum(rpc.weight for rpc in mix)
    clients = {}
    rps: dict[str, float | None] = {}
    for rpc in mix:
        offered = calls_per_second * rpc.weight / weights
        needed = math.ceil(CLIENT_HEADROOM * offered * latency_seconds[rpc.name])
        clients[rpc.name] = min(MAX_CLIENTS_PER_RPC, max(1, needed))
        rps[rpc.name] = offered / clients[rpc.name]
    return Plan(clients, rps)


# ---- h2load, one process per RPC -------------------------------------------------------------


@dataclass(frozen=True)
class Calls:
    """What one h2load process saw: its summary and its per-request log (start in µs since
    the epoch, HTTP status, µs to the end of the response)."""

    rpc: Rpc
    done: int
    succeeded: int
    failed: int
    requests_per_second: float
    data_bytes: int
    log: list[tuple[int, int, int]]

    @property
    def mean_latency_seconds(self) -> float:
        """Mean of the answered calls (a second when none was)."""
        latencies = self.latencies_ms()
        return sum(latencies) / len(latencies) / 1000 if latencies else 1.0

    def latencies_ms(self, start_us: int = 0, end_us: int = 2**63) -> list[float]:
        return sorted(
            elapsed / 1000
            for started, status, elapsed in self.log
            if 200 <= status < 300 and start_us <= started < end_us
        )

    def rate(self, start_us: int, end_us: int) -> float:
        """Calls started in [start_us, end_us) and finished, per second."""
        started = sum(1 for begun, _, _ in self.log if start_us <= begun < end_us)
        return started / ((end_us - start_us) / 1e6)


@dataclass(frozen=True)
class MixRun:
    """Every RPC's h2load of one run, started together at ``start_us`` (µs since the epoch)
    for ``seconds``."""

    calls: list[Calls]
    start_us: int
    seconds: float

    @property
    def window(self) -> tuple[int, int]:
        """The run without its first and last seconds: clients still connecting, and calls
        still in flight when h2load stopped (which its log leaves out)."""
        edge = min(RATE_EDGE_SECONDS, self.seconds / 10) * 1e6
        return round(self.start_us + edge), round(self.start_us + self.seconds * 1e6 - edge)

    def achieved(self, calls: Calls) -> float:
        return calls.rate(*self.window)

    @property
    def achieved_total(self) -> float:
        return sum(self.achieved(calls) for calls in self.calls)


def run_mix(
    stack: RunningStack,
    mix: Sequence[Rpc],
    plan: Plan,
    *,
    seconds: float,
    workdir: Path,
    phase: str,
    warm_up_seconds: float = 0.0,
) -> MixRun:
    """Every RPC's h2load at once, for ``seconds`` (after ``warm_up_seconds``, not counted in
    h2load's summary); waits for all of them."""
    running = []
    start_us = time.time_ns() // 1000 + round(warm_up_seconds * 1e6)
    for rpc in mix:
        body = workdir / f"{rpc.name}.body"
        body.write_bytes(rpc.body)
        log = workdir / f"{phase}-{rpc.name}.tsv"
        output = workdir / f"{phase}-{rpc.name}.out"
        command = [
            *h2load_command(body, stack.api_key),
            f"--clients={plan.clients[rpc.name]}",
            f"--duration={round(seconds)}s",
            f"--log-file={log}",
        ]
        if warm_up_seconds:
            command.append(f"--warm-up-time={round(warm_up_seconds)}s")
        rate = plan.rps[rpc.name]
        if rate is not None:
            command.append(f"--rps={rate:.4f}")
        command.append(grpc_url(stack.addresses[rpc.service], rpc.method))
        with output.open("w") as stream:
            process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)
        running.append((rpc, process, log, output))
    results = []
    for rpc, process, log, output in running:
        try:
            code = process.wait(timeout=seconds + warm_up_seconds + 120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise RuntimeError(f"h2load for {rpc.name} did not finish") from None
        text = output.read_text()
        if code != 0:
            raise RuntimeError(f"h2load for {rpc.name} exited with {code}:\n{text}")
        summary = _parse_summary(text)
        results.append(
            Calls(
                rpc=rpc,
                done=summary.done,
                succeeded=summary.succeeded,
                failed=summary.failed,
                requests_per_second=summary.requests_per_second,
                data_bytes=summary.data_bytes,
                log=_read_log(log),
            )
        )
    return MixRun(results, start_us, seconds)


def _read_log(path: Path) -> list[tuple[int, int, int]]:
    rows = []
    for line in path.read_text().splitlines():
        columns = line.split("\t")
        if len(columns) >= 3:
            rows.append((int(columns[0]), int(columns[1]), int(columns[2])))
    return rows


@dataclass(frozen=True)
class Probe:
    """One rate-limited run of the mix in its proportions: calls/s offered and achieved."""

    offered: float
    achieved: float

    @property
    def sustained(self) -> bool:
        return self.achieved >= SUSTAINED_SHARE * self.offered


@dataclass(frozen=True)
class Maximum:
    """The closed-loop run, the probes, and the calls the servers answered other than OK
    during the whole search."""

    closed_loop: MixRun
    closed_loop_clients: int
    closed_loop_capped: list[str]
    probes: list[Probe]
    latency_seconds: dict[str, float]
    not_ok: Counter[tuple[str, str, str]]

    @property
    def closed_loop_rate(self) -> float:
        return sum(calls.requests_per_second for calls in self.closed_loop.calls)

    @property
    def rate(self) -> float:
        """The highest total rate the mix sustained in its proportions (0 if none did)."""
        return max((probe.offered for probe in self.probes if probe.sustained), default=0.0)


def find_maximum(
    stack: RunningStack,
    mix: Sequence[Rpc],
    *,
    clients: int,
    closed_loop_seconds: float,
    probe_seconds: float,
    probes: int,
    settle_seconds: float,
    workdir: Path,
) -> Maximum:
    """The closed loop gives a ceiling; the probes bisect between nothing and it. Before each
    probe the stack gets ``settle_seconds`` to work off what the run before left behind
    (the workers re-evaluating the customers the usage events changed), so one overloaded
    probe does not weigh on the next."""
    before = all_calls(stack)
    unlimited = unlimited_plan(mix, clients)
    closed_loop = run_mix(
        stack,
        mix,
        unlimited,
        seconds=closed_loop_seconds,
        workdir=workdir,
        phase="closed-loop",
        warm_up_seconds=5,
    )
    ceiling = sum(calls.requests_per_second for calls in closed_loop.calls)
    latency = {calls.rpc.name: calls.mean_latency_seconds for calls in closed_loop.calls}
    _progress(f"closed loop: {ceiling:,.0f} calls/s")
    low, high = 0.0, ceiling
    found = []
    for number in range(probes):
        offered = (low + high) / 2
        time.sleep(settle_seconds)
        run = run_mix(
            stack,
            mix,
            rate_limited_plan(mix, offered, latency),
            seconds=probe_seconds,
            workdir=workdir,
            phase=f"probe-{number}",
        )
        probe = Probe(offered, run.achieved_total)
        found.append(probe)
        _progress(
            f"probe {number + 1}: offered {probe.offered:,.0f}, achieved {probe.achieved:,.0f} "
            f"calls/s ({'sustained' if probe.sustained else 'not sustained'})"
        )
        if probe.sustained:
            low = offered
        else:
            high = offered
    capped = [name for name, rate in unlimited.rps.items() if rate is not None]
    return Maximum(
        closed_loop, clients, capped, found, latency, calls_between(before, all_calls(stack))
    )


# ---- the servers' count of calls --------------------------------------------------------------


def all_calls(stack: RunningStack) -> Counter[tuple[str, str, str]]:
    """Calls answered so far by every server, by (service, method, status code)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for service, url in stack.metrics_urls.items():
        for (method, code), count in rpc_calls(url).items():
            counts[service, method, code] += count
    return counts


def calls_between(
    before: Counter[tuple[str, str, str]], after: Counter[tuple[str, str, str]]
) -> Counter[tuple[str, str, str]]:
    return Counter({key: after[key] - before[key] for key in after if after[key] > before[key]})


# ---- memory ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rss:
    """Resident memory in KiB: all of it (VmRSS), and the anonymous part (RssAnon: the heap
    and stacks, where a leak shows; the rest is mapped files the kernel may drop and read
    back under memory pressure)."""

    total: int = 0
    anonymous: int = 0

    def __add__(self, other: Rss) -> Rss:
        return Rss(self.total + other.total, self.anonymous + other.anonymous)


def rss_of(pid: int) -> Rss:
    """``pid``'s resident memory from /proc (zero when it has gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return Rss()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return Rss(int(fields["VmRSS"].split()[0]), int(fields["RssAnon"].split()[0]))


def _just(pid: int) -> Callable[[], list[int]]:
    return lambda: [pid]


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (a Celery worker's pool)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # "pid (command) state ppid ...": the command may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


@dataclass
class MemorySamples:
    """RSS of each watched process, sampled every ``interval`` seconds from ``started``."""

    watched: dict[str, Callable[[], list[int]]]
    interval: float
    samples: list[tuple[float, dict[str, Rss]]] = field(default_factory=list)

    def sample(self, elapsed: float) -> None:
        self.samples.append(
            (
                elapsed,
                {
                    name: sum((rss_of(pid) for pid in pids()), Rss())
                    for name, pids in self.watched.items()
                },
            )
        )

    def at(self, elapsed: float) -> dict[str, Rss]:
        """The first sample taken at or after ``elapsed`` seconds (the last one if none)."""
        return next((s for t, s in self.samples if t >= elapsed), self.samples[-1][1])


@contextmanager
def sampling(memory: MemorySamples) -> Iterator[None]:
    """Samples at once, every ``memory.interval`` seconds meanwhile, and once at the end."""
    stop = threading.Event()
    started = time.monotonic()

    def loop() -> None:
        while not stop.wait(memory.interval - (time.monotonic() - started) % memory.interval):
            memory.sample(time.monotonic() - started)

    memory.sample(0.0)
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        memory.sample(time.monotonic() - started)


# ---- log lines ------------------------------------------------------------------------------


def log_lines(log_dir: Path) -> dict[str, int]:
    """How far each process's log has been written, to read only what a phase added."""
    return {path.stem: path.stat().st_size for path in log_dir.glob("*.log")}


def warnings_since(log_dir: Path, offsets: Mapping[str, int]) -> dict[str, Counter[str]]:
    """Warning-or-worse lines each process logged after ``offsets``, counted by
    "LEVEL: message" (JSON lines from Switchboard's logging, plain lines from Celery's)."""
    found: dict[str, Counter[str]] = {}
    for path in sorted(log_dir.glob("*.log")):
        with path.open("rb") as stream:
            stream.seek(offsets.get(path.stem, 0))
            text = stream.read().decode(errors="replace")
        counts: Counter[str] = Counter()
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                level = str(record.get("level", "")).upper()
                if level in ("WARNING", "ERROR", "CRITICAL"):
                    counts[f"{level}: {str(record.get('message', ''))[:140]}"] += 1
            elif match := _LEVEL.search(line):
                counts[f"{match[1]}: {line[match.end() :].strip(' ]:')[:140]}"] += 1
        found[path.stem] = counts
    return found


# ---- the store ------------------------------------------------------------------------------


def _libpq(database_url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


def table_sizes(database_url: str) -> dict[str, tuple[int, int]]:
    """(rows, bytes with indexes) of every table in the store."""
    import psycopg

    with psycopg.connect(_libpq(database_url)) as connection:
        names = [
            row[0]
            for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        ]
        sizes = {}
        for name in names:
            rows, size = connection.execute(
                f'SELECT count(*), pg_total_relation_size(\'"{name}"\') FROM "{name}"'
            ).fetchone() or (0, 0)
            sizes[name] = (int(rows), int(size))
    return sizes


def audited_since(database_url: str, since: datetime) -> Counter[str]:
    """Audit log entries (one per write call) written since ``since``, by method."""
    import psycopg

    with psycopg.connect(_libpq(database_url)) as connection:
        rows = connection.execute(
            "SELECT method, count(*) FROM access_audit_log WHERE time >= %s GROUP BY method",
            (since,),
        )
        return Counter({str(method).rsplit("/", 1)[-1]: int(count) for method, count in rows})


# ---- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Soak:
    command: str
    started: datetime
    customers: int
    maximum: Maximum
    share: float
    plan: Plan
    minutes: float
    run: MixRun
    server_calls: Counter[tuple[str, str, str]]
    memory: MemorySamples
    warm_up_seconds: float
    warnings: dict[str, Counter[str]]
    tables_before: dict[str, tuple[int, int]]
    tables_after: dict[str, tuple[int, int]]
    audited: Counter[str]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def report(soak: Soak) -> tuple[str, bool]:
    """The markdown summary, and whether the soak met its targets (no call other than OK,
    every process's memory flat)."""
    lines: list[str] = []
    out = lines.append
    calls_of_rpcs = soak.run.calls
    achieved_total = soak.run.achieved_total
    offered_total = sum(soak.plan.offered(c.rpc) or 0 for c in calls_of_rpcs)
    out(f"### Soak: {soak.started:%Y-%m-%d %H:%M} UTC, {soak.minutes:g} minutes")
    out("")
    out("    " + soak.command)
    out("")
    out(
        f"PostgreSQL (local server, a fresh database) and a throwaway redis-server; profiles, "
        f"segments and routing each in its own process, one Celery worker for every queue "
        f"(concurrency 2) and beat; {soak.customers:,} generated customers plus the demo's "
        f"ten. {os.cpu_count()} CPUs shared with the h2load processes and with whatever else "
        f"ran: load average {soak.load_before[0]:.1f} before, {soak.load_after[0]:.1f} after "
        "(1 minute)."
    )
    out("")
    maximum = soak.maximum
    probes = ", ".join(
        f"{p.offered:,.0f} -> {p.achieved:,.0f}{'' if p.sustained else ' (not sustained)'}"
        for p in maximum.probes
    )
    out(
        f"**Maximum of the mix**: {maximum.rate:,.0f} calls/s, the highest total rate the mix "
        f"sustained in its proportions (achieved at least {SUSTAINED_SHARE:.0%} of offered). "
        f"Probes, offered -> achieved calls/s: {probes}. Before them a closed loop (the "
        f"{maximum.closed_loop_clients} connections without rate limits, but "
        f"{' and '.join(maximum.closed_loop_capped)} at 1/s) reached "
        f"{maximum.closed_loop_rate:,.0f} calls/s, mostly GetWidgetConfig "
        "(column below): a ceiling, not the mix. Calls not OK during the search (server "
        "metrics): " + _not_ok_text(maximum.not_ok)
    )
    out("")
    sustained = achieved_total >= SUSTAINED_SHARE * offered_total
    out(
        f"**Soak at {soak.share:.0%} of the maximum**: offered {offered_total:,.1f} calls/s, "
        f"achieved {achieved_total:,.1f} calls/s"
        + (
            "."
            if sustained
            else " (not sustained: the machine had less to give than during the search)."
        )
    )
    out("")
    out(
        "| RPC | server | share | clients | closed loop/s | offered/s | achieved/s | p50 ms "
        "| p99 ms | worst minute p99 ms | h2load failed | not OK (server) |"
    )
    out("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    at_maximum = {c.rpc.name: c.requests_per_second for c in soak.maximum.closed_loop.calls}
    weights = sum(c.rpc.weight for c in calls_of_rpcs)
    per_minute = _minutes(soak)
    overshot = []
    for calls in calls_of_rpcs:
        offered = soak.plan.offered(calls.rpc) or 0
        achieved = soak.run.achieved(calls)
        if achieved > OVERSHOOT_SHARE * offered:
            overshot.append(f"{calls.rpc.name} ({achieved:,.1f}/s for {offered:,.1f}/s offered)")
        latencies = calls.latencies_ms()
        not_ok = {
            code: count
            for (service, method, code), count in soak.server_calls.items()
            if method == calls.rpc.method and code != "OK"
        }
        worst = max((p99 for p99 in per_minute[calls.rpc.name] if p99 == p99), default=float("nan"))
        out(
            f"| {calls.rpc.name} | {calls.rpc.service} | {calls.rpc.weight / weights:.1%} "
            f"| {soak.plan.clients[calls.rpc.name]} | {at_maximum[calls.rpc.name]:,.1f} "
            f"| {offered:,.2f} "
            f"| {achieved:,.2f} | {_percentile(latencies, 50):.1f} "
            f"| {_percentile(latencies, 99):.1f} | {worst:.1f} | {calls.failed} "
            f"| {', '.join(f'{n} {code}' for code, n in not_ok.items()) or '0'} |"
        )
    if overshot:
        out("")
        out(
            "h2load sent more than its rate limit for: "
            + ", ".join(overshot)
            + ". Its --rps (nghttp2 1.52) can stop limiting a client; the calls were made and "
            "answered, so they count in every figure here, but the mix was heavier in those "
            "RPCs than planned."
        )
    out("")
    minutes = len(next(iter(per_minute.values())))
    out("p99 (ms) per minute of the soak, by RPC, and of all calls; calls/s in the last row:")
    out("")
    out("| RPC | " + " | ".join(f"min {n + 1}" for n in range(minutes)) + " |")
    out("|---|" + "---:|" * minutes)
    for name, values in per_minute.items():
        out(f"| {name} | " + " | ".join(_cell(v) for v in values) + " |")
    rates = [
        sum(
            c.rate(soak.run.start_us + m * 60_000_000, soak.run.start_us + (m + 1) * 60_000_000)
            for c in calls_of_rpcs
        )
        for m in range(minutes)
    ]
    out("| calls/s (all) | " + " | ".join(f"{rate:,.0f}" for rate in rates) + " |")
    out("")
    mix_methods = {c.rpc.method for c in calls_of_rpcs}
    background = Counter(
        {key: n for key, n in soak.server_calls.items() if key[1] not in mix_methods}
    )
    failing = Counter({key: n for key, n in soak.server_calls.items() if key[2] != "OK"})
    out(
        f"**Errors** (every server's `switchboard_rpc_calls` before and after the soak): "
        f"{sum(soak.server_calls.values()):,} calls answered, of them "
        f"{sum(background.values()):,} by the worker and beat (methods outside the mix); "
        "not OK: " + _not_ok_text(failing)
    )
    out("")
    out(
        f"**Memory** (MiB; start = {soak.warm_up_seconds:g} s into the soak, sampled every "
        f"{soak.memory.interval:g} s; VmRSS is all resident memory, RssAnon its anonymous part, "
        "where a leak shows):"
    )
    out("")
    start = soak.memory.at(soak.warm_up_seconds)
    end = soak.memory.samples[-1][1]
    out(
        "| process | VmRSS start | VmRSS end | VmRSS growth | RssAnon start | RssAnon end "
        "| RssAnon growth | VmRSS min-max | RssAnon every minute |"
    )
    out("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    flat = True
    for name in soak.memory.watched:
        first, last = start[name], end[name]
        series = [sample[name] for t, sample in soak.memory.samples if t >= soak.warm_up_seconds]
        flat = flat and last.anonymous - first.anonymous <= FLAT_GROWTH_SHARE * first.anonymous
        minutely = [
            sample[name] for t, sample in soak.memory.samples if t % 60 < soak.memory.interval / 2
        ]
        out(
            f"| {name} | {_mib(first.total)} | {_mib(last.total)} "
            f"| {_growth(first.total, last.total)} | {_mib(first.anonymous)} "
            f"| {_mib(last.anonymous)} | {_growth(first.anonymous, last.anonymous)} "
            f"| {_mib(min(r.total for r in series))}-{_mib(max(r.total for r in series))} "
            f"| {' '.join(f'{r.anonymous / 1024:.0f}' for r in minutely)} |"
        )
    out("")
    out("**Log lines** (warning or worse) written during the soak:")
    out("")
    for process, counts in soak.warnings.items():
        if counts:
            top = "; ".join(f"{n}x {message}" for message, n in counts.most_common(3))
            out(f"- {process}: {sum(counts.values())} ({top})")
        else:
            out(f"- {process}: none")
    out("")
    out("**Store** (rows, PostgreSQL) of the tables that grew during the soak:")
    out("")
    out("| table | rows before | rows after | size after |")
    out("|---|---:|---:|---:|")
    for table, (rows, size) in sorted(
        soak.tables_after.items(),
        key=lambda item: -(item[1][0] - soak.tables_before.get(item[0], (0, 0))[0]),
    ):
        before = soak.tables_before.get(table, (0, 0))[0]
        if rows > before:
            out(f"| {table} | {before:,} | {rows:,} | {size / 2**20:.1f} MiB |")
    out("")
    out(
        "Audit log entries written during the soak, by method (every call the access policy "
        "counts as a write adds one): "
        + ", ".join(f"{method} {n:,}" for method, n in soak.audited.most_common())
        + "."
    )
    errors = sum(failing.values()) + sum(c.failed for c in calls_of_rpcs)
    out("")
    out(
        f"Targets: errors 0: {'MET' if not errors else f'MISSED ({errors})'}; memory flat "
        f"(no process's RssAnon grew more than {FLAT_GROWTH_SHARE:.0%} from start to end): "
        f"{'MET' if flat else 'MISSED'}."
    )
    return "\n".join(lines), not errors and flat


def _minutes(soak: Soak) -> dict[str, list[float]]:
    """p99 of each minute of the soak per RPC, then of all calls together."""
    count = max(1, round(soak.minutes))
    per_rpc: dict[str, list[float]] = {}
    everything: list[list[float]] = [[] for _ in range(count)]
    for calls in soak.run.calls:
        values = []
        for minute in range(count):
            start = soak.run.start_us + minute * 60_000_000
            latencies = calls.latencies_ms(start, start + 60_000_000)
            everything[minute] += latencies
            values.append(_percentile(latencies, 99))
        per_rpc[calls.rpc.name] = values
    per_rpc["all calls"] = [_percentile(sorted(minute), 99) for minute in everything]
    return per_rpc


def _not_ok_text(not_ok: Counter[tuple[str, str, str]]) -> str:
    bad = {key: n for key, n in not_ok.items() if key[2] != "OK"}
    if not bad:
        return "none."
    return (
        ", ".join(
            f"{n} {code} from {service} {method.rsplit('/', 1)[-1]}"
            for (service, method, code), n in sorted(bad.items(), key=lambda item: -item[1])
        )
        + "."
    )


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def _growth(start_kib: int, end_kib: int) -> str:
    growth = end_kib - start_kib
    return f"{growth / 1024:+.1f} ({growth / max(start_kib, 1):+.1%})"


def _cell(value: float) -> str:
    return "n/a" if value != value else f"{value:.1f}"


def _progress(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# ---- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument("--share", type=float, default=0.8, help="of the maximum, for the soak")
    parser.add_argument(
        "--max-seconds", type=float, default=30.0, help="the closed loop, before the probes"
    )
    parser.add_argument("--probes", type=int, default=5, help="rate-limited runs, bisecting")
    parser.add_argument("--probe-seconds", type=float, default=20.0)
    parser.add_argument(
        "--settle-seconds", type=float, default=15.0, help="pause before each probe and the soak"
    )
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument(
        "--clients", type=int, default=32, help="h2load connections of the closed loop, in all"
    )
    parser.add_argument("--sample-seconds", type=float, default=30.0, help="memory sampling")
    parser.add_argument(
        "--warm-up-seconds",
        type=float,
        default=30.0,
        help="into the soak, when memory's start is read",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "out",
        help="where the run's directory of logs goes",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL),
        help="admin connection that creates and drops the throwaway database",
    )
    args = parser.parse_args()
    if args.minutes * 60 <= args.warm_up_seconds:
        parser.error("--minutes must be longer than --warm-up-seconds")
    command = shlex.join(["python", "bench/soak.py", *sys.argv[1:]])
    started = datetime.now(UTC)
    rng = random.Random(17)
    databases = Databases("postgresql", args.postgres_url)
    try:
        with ExitStack() as running:
            work = args.out / f"soak-{started:%Y%m%d-%H%M%S}"
            work.mkdir(parents=True)
            _progress(f"h2load logs and every process's log in {work}")
            redis_url = running.enter_context(redis_server())
            # service_environment passes this process's environment on to every process.
            os.environ["SWITCHBOARD_REDIS_URL"] = redis_url
            redis_pid = int(redis.Redis.from_url(redis_url).info("server")["process_id"])
            database_url = databases.fresh()
            data_dir = databases.tempdir.name
            stack = running.enter_context(
                running_services(
                    SERVICE_NAMES, database_url=database_url, data_dir=data_dir, log_dir=work
                )
            )
            environment = stack_environment(stack, database_url, data_dir)
            worker = running.enter_context(
                switchboard_process(
                    environment, "worker", "--concurrency=2", log=work / "worker.log"
                )
            )
            beat = running.enter_context(
                switchboard_process(environment, "beat", log=work / "beat.log")
            )
            _progress(f"stack up on {database_url.rsplit('/', 1)[-1]} and {redis_url}")
            members = load_data(stack, args.customers, rng)
            mix = build_mix(members, rng)
            check_mix(stack, mix, patience_seconds=120)

            maximum = find_maximum(
                stack,
                mix,
                clients=args.clients,
                closed_loop_seconds=args.max_seconds,
                probe_seconds=args.probe_seconds,
                probes=args.probes,
                settle_seconds=args.settle_seconds,
                workdir=work,
            )
            if not maximum.rate:
                sys.exit("no probe sustained the mix; try more --probes")
            rate = args.share * maximum.rate
            _progress(f"maximum {maximum.rate:,.0f} calls/s; soaking at {rate:,.0f}")

            memory = MemorySamples(
                {
                    **{name: _just(pid) for name, pid in stack.pids.items()},
                    "worker": _just(worker),
                    "worker pool": lambda: children_of(worker),
                    "beat": _just(beat),
                    "redis": _just(redis_pid),
                },
                interval=args.sample_seconds,
            )
            plan = rate_limited_plan(mix, rate, maximum.latency_seconds)
            time.sleep(args.settle_seconds)
            tables_before = table_sizes(database_url)
            offsets = log_lines(work)
            load_before = os.getloadavg()
            before = all_calls(stack)
            soak_started = datetime.now(UTC)
            with sampling(memory):
                run = run_mix(
                    stack, mix, plan, seconds=args.minutes * 60, workdir=work, phase="soak"
                )
            server_calls = calls_between(before, all_calls(stack))
            soak = Soak(
                command=command,
                started=started,
                customers=args.customers,
                maximum=maximum,
                share=args.share,
                plan=plan,
                minutes=args.minutes,
                run=run,
                server_calls=server_calls,
                memory=memory,
                warm_up_seconds=args.warm_up_seconds,
                warnings=warnings_since(work, offsets),
                tables_before=tables_before,
                tables_after=table_sizes(database_url),
                audited=audited_since(database_url, soak_started),
                load_before=load_before,
                load_after=os.getloadavg(),
            )
    finally:
        databases.drop_all()
    text, met = report(soak)
    print(text)
    if not met:
        sys.exit("the soak missed a target; see above")


if __name__ == "__main__":
    main()
