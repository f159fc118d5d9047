"""GetWidgetConfig from the precomputed cache beside a bare echo service, cold and with Redis
down, and the workers' precomputation of every customer's widget configuration.

Run from a checkout with the virtualenv active (h2load and redis-server on PATH)::

    python bench/widgets_load.py [--customers 100000] [--duration 10] [--database sqlite]

Every run works on a throwaway database (``bench/stack.py``) and a throwaway redis-server
(``tests/support/stores.py``). Steps:

1. Start ``serve profiles``, ``serve segments`` and ``serve routing`` with Redis, create a
   tier family (enterprise, growth, starter) and an ``at_risk`` overlay, load the customers
   with UpsertCustomers (about 10% enterprise, 30% growth, 60% starter, 5% tagged at_risk),
   the routing desk (calendars, SLA policies, queues) and, through WidgetService, four
   personas, three escalation policies and the widget policies.
2. Start a Celery worker and send ``switchboard.routing.precompute_widget_configs``: configs
   per second and the wall time from sending to the worker's "done" key in Redis.
3. Ask every customer once on the widget port, as widgets would over a day, so its memory
   holds every entry. Load GetWidgetConfig for one known customer with h2load at each
   concurrency, interleaved with the echo service (same server settings, same body size);
   then from a Python client with a random customer per call, to show the random case, and
   count the entries Redis was asked for meanwhile.
4. Delete the cache (``sb:widget:*``) and ask customers the random run did not, each once:
   every call a miss that computes and fills. Then stop Redis and load GetWidgetConfig
   again.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import redis
from google.protobuf import json_format

# Run as a script from a checkout, where the project is not necessarily installed.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from switchboard.profiles.v1 import profiles_pb2 as ppb  # noqa: E402
from switchboard.routing.v1 import routing_pb2 as pb  # noqa: E402
from switchboard.routing.v1 import routing_pb2_grpc, widgets_pb2_grpc  # noqa: E402
from switchboard.routing.v1 import widgets_pb2 as wpb  # noqa: E402
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
from bench.routing_load import (  # noqa: E402
    ACTOR,
    CALL_TIMEOUT_SECONDS,
    _not_ok,
    calendars,
    calls_by_code,
    queues,
    sla_policies,
)
from bench.stack import (  # noqa: E402
    DEFAULT_ADMIN_URL,
    SERVICE_NAMES,
    Databases,
    RunningStack,
    counted,
    running_services,
    stack_environment,
    switchboard_process,
)
from bench.upsert_customers import build_requests, generate_customers, upsert_all  # noqa: E402
from services.core.settings import Settings  # noqa: E402
from tests.support.access import keyed_channel  # noqa: E402
from tests.support.stores import redis_server  # noqa: E402
from workers.app import create_celery_app  # noqa: E402

_SERVICE = wpb.DESCRIPTOR.services_by_name["WidgetService"].full_name
WIDGET_CONFIG_METHOD = f"/{_SERVICE}/GetWidgetConfig"
PRECOMPUTE_TASK = "switchboard.routing.precompute_widget_configs"
PRECOMPUTED_KEY = "sb:widget:precomputed"
CACHE_PATTERN = "sb:widget:*"
UPSERT_BATCH = 1000

# The targets of the issue.
TARGET_CONCURRENCY = 16
TARGET_SHARE_OF_ECHO = 0.70
TARGET_P99_MS = 10.0
TARGET_PRECOMPUTE_SECONDS = 60.0
# Long enough for the Python client to ask every customer once.
REMEMBER_SECONDS = 600.0
# A Python client reaching less than this share of h2load's figure for the same work is
# the limit itself, not the service.
CLIENT_BOUND_SHARE = 0.8

AT_RISK = "at_risk"
AT_RISK_SHARE = 0.05
# (tier segment id, share of customers, fewest seats, most seats); the family's priority is
# the order, so a customer is in the first tier whose seats it reaches.
TIERS = [("enterprise", 0.10, 50, 2000), ("growth", 0.30, 5, 49), ("starter", 0.60, 1, 4)]
PERSONA_OF_TIER = {"enterprise": "enterprise_detailed", "growth": "growth", "starter": "starter"}
ENTERPRISE_ESCALATION = "enterprise_fast"
AT_RISK_ESCALATION = "at_risk_immediate"
DEFAULT_PERSONA = "anonymous"
DEFAULT_ESCALATION = "starter_email"


# ---- the population ----------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownCustomer:
    """A loaded customer and the widget configuration the policies must give it."""

    customer_id: str
    persona_id: str
    escalation_policy_id: str


def population_requests(
    count: int, seed: int = 11
) -> tuple[list[ppb.UpsertCustomersRequest], list[KnownCustomer]]:
    """``upsert_customers``' generated customers, re-tiered to the issue's mix, with ids of
    our own (so no listing is needed to know them) and an ``at_risk`` tag on about 5%."""
    rng = random.Random(seed)
    generated = []
    known = []
    at_risk: list[bool] = []
    for number, customer in enumerate(generate_customers(count, seed=seed)):
        tier, fewest_seats, most_seats = _draw_tier(rng)
        generated.append(replace(customer, plan=tier, seats=rng.randint(fewest_seats, most_seats)))
        at_risk.append(rng.random() < AT_RISK_SHARE)
        if at_risk[-1]:
            escalation = AT_RISK_ESCALATION
        elif tier == "enterprise":
            escalation = ENTERPRISE_ESCALATION
        else:
            escalation = DEFAULT_ESCALATION
        known.append(KnownCustomer(f"widget-{number:06d}", PERSONA_OF_TIER[tier], escalation))
    requests = build_requests(generated, UPSERT_BATCH)
    records = (record for request in requests for record in request.customers)
    for record, known_customer, tagged in zip(records, known, at_risk, strict=True):
        record.customer_id = known_customer.customer_id
        if tagged:
            record.tags.append(AT_RISK)
    return requests, known


def _draw_tier(rng: random.Random) -> tuple[str, int, int]:
    """A tier by the shares in ``TIERS``, with its seat range."""
    draw = rng.random()
    for tier, share, fewest_seats, most_seats in TIERS:
        if draw < share:
            return tier, fewest_seats, most_seats
        draw -= share
    tier, _, fewest_seats, most_seats = TIERS[-1]
    return tier, fewest_seats, most_seats


def segments() -> list[spb.Segment]:
    """The tier family by seats and the at-risk overlay by tag."""
    definitions: list[dict[str, Any]] = [
        {
            "segmentId": tier,
            "family": "tier",
            "priority": priority,
            "rule": {"seats": {"$gte": fewest}},
        }
        for priority, (tier, _, fewest, _) in enumerate(TIERS, start=1)
    ]
    definitions.append({"segmentId": AT_RISK, "rule": {"tags": {"$in": [AT_RISK]}}})
    return [
        json_format.ParseDict(
            {
                **definition,
                "displayName": definition["segmentId"].replace("_", " ").title(),
                "enabled": True,
            },
            spb.Segment(),
        )
        for definition in definitions
    ]


def personas() -> list[wpb.Persona]:
    greeting = "Hi {first_name}, how can we help {company_name} today?"
    return [
        wpb.Persona(
            persona_id=PERSONA_OF_TIER["enterprise"],
            display_name="Ada, your enterprise support specialist",
            tone=wpb.TONE_FORMAL,
            answer_length=wpb.ANSWER_LENGTH_DETAILED,
            emoji=wpb.EMOJI_USE_NONE,
            greeting="Hello {first_name}, welcome back to {company_name}'s priority support.",
            languages=["en", "de"],
            guardrails="Cite the contract's terms; never promise credits.",
        ),
        wpb.Persona(
            persona_id=PERSONA_OF_TIER["growth"],
            display_name="Grace from support",
            tone=wpb.TONE_FRIENDLY,
            emoji=wpb.EMOJI_USE_SPARING,
            greeting=greeting,
            languages=["en", "de"],
        ),
        wpb.Persona(
            persona_id=PERSONA_OF_TIER["starter"],
            display_name="Linus the helper bot",
            tone=wpb.TONE_PLAYFUL,
            emoji=wpb.EMOJI_USE_FREQUENT,
            greeting=greeting,
            languages=["en"],
        ),
        wpb.Persona(
            persona_id=DEFAULT_PERSONA,
            display_name="Support",
            greeting="Hi, how can we help?",
            languages=["en"],
        ),
    ]


def escalation_policies() -> list[wpb.EscalationPolicy]:
    """Enterprise hands over fast to live chat, starter by email on a 24-hour SLA (routing
    bench's ``orders_24h``, calendar time), at-risk customers at once to retention."""
    return [
        wpb.EscalationPolicy(
            policy_id=ENTERPRISE_ESCALATION,
            display_name="Enterprise: a human after two bot turns",
            max_bot_turns=2,
            min_confidence=0.6,
            min_sentiment=-0.3,
            keywords=["cancel", "refund", "legal", "outage"],
            on_human_request=True,
            queue_id="senior",
            handover_channel=pb.CHANNEL_CHAT,
            sla_policy_id="enterprise_1h",
            after_hours=wpb.AFTER_HOURS_CALLBACK,
        ),
        wpb.EscalationPolicy(
            policy_id=DEFAULT_ESCALATION,
            display_name="Starter: email follow-up within a day",
            max_bot_turns=6,
            keywords=["cancel", "refund"],
            on_human_request=True,
            queue_id="general",
            handover_channel=pb.CHANNEL_EMAIL,
            sla_policy_id="orders_24h",
            after_hours=wpb.AFTER_HOURS_EMAIL,
        ),
        wpb.EscalationPolicy(
            policy_id=AT_RISK_ESCALATION,
            display_name="At risk: straight to retention",
            immediately=True,
            queue_id="retention",
            handover_channel=pb.CHANNEL_CHAT,
            sla_policy_id="priority_2h",
            after_hours=wpb.AFTER_HOURS_CALLBACK,
        ),
    ]


def widget_policies() -> wpb.WidgetPolicies:
    """At-risk first sets only the escalation, so the tier still chooses the persona; growth
    sets only the persona and escalates by the default."""
    return wpb.WidgetPolicies(
        assignments=[
            wpb.WidgetAssignment(segment_id=AT_RISK, escalation_policy_id=AT_RISK_ESCALATION),
            wpb.WidgetAssignment(
                segment_id="enterprise",
                persona_id=PERSONA_OF_TIER["enterprise"],
                escalation_policy_id=ENTERPRISE_ESCALATION,
            ),
            wpb.WidgetAssignment(segment_id="growth", persona_id=PERSONA_OF_TIER["growth"]),
            wpb.WidgetAssignment(
                segment_id="starter",
                persona_id=PERSONA_OF_TIER["starter"],
                escalation_policy_id=DEFAULT_ESCALATION,
            ),
        ],
        default_persona_id=DEFAULT_PERSONA,
        default_escalation_policy_id=DEFAULT_ESCALATION,
    )


def set_up(stack: RunningStack, requests: Sequence[ppb.UpsertCustomersRequest]) -> float:
    """Segments, customers, the routing desk and the widget definitions, through the APIs;
    returns the seconds UpsertCustomers took."""
    timeout = CALL_TIMEOUT_SECONDS
    with stack.channel("segments") as channel:
        segment_service = segments_pb2_grpc.SegmentServiceStub(channel)
        for segment in segments():
            segment_service.CreateSegment(
                spb.CreateSegmentRequest(segment=segment, actor=ACTOR), timeout=timeout
            )
    upsert_seconds = upsert_all(stack, requests, streams=2, expected=ppb.UPSERT_OUTCOME_CREATED)
    with stack.channel("routing") as channel:
        routing = routing_pb2_grpc.RoutingServiceStub(channel)
        widgets = widgets_pb2_grpc.WidgetServiceStub(channel)
        for calendar in calendars():
            routing.CreateCalendar(pb.CreateCalendarRequest(calendar=calendar), timeout=timeout)
        for sla_policy in sla_policies():
            routing.CreateSlaPolicy(pb.CreateSlaPolicyRequest(policy=sla_policy), timeout=timeout)
        for queue in queues():
            routing.CreateQueue(pb.CreateQueueRequest(queue=queue), timeout=timeout)
        for persona in personas():
            widgets.CreatePersona(wpb.CreatePersonaRequest(persona=persona), timeout=timeout)
        for escalation in escalation_policies():
            widgets.CreateEscalationPolicy(
                wpb.CreateEscalationPolicyRequest(policy=escalation), timeout=timeout
            )
        widgets.UpdateWidgetPolicies(
            wpb.UpdateWidgetPoliciesRequest(policies=widget_policies(), actor=ACTOR),
            timeout=timeout,
        )
    return upsert_seconds


def widget_config_body(customer: KnownCustomer) -> bytes:
    return grpc_frame(
        wpb.GetWidgetConfigRequest(visitor=wpb.Visitor(customer_id=customer.customer_id))
    )


def config_problem(
    response: wpb.GetWidgetConfigResponse, customer: KnownCustomer, *, cached: bool
) -> str:
    """Why ``response`` is not what ``customer`` must get (empty when it is)."""
    config = response.config
    if (config.persona.persona_id, config.escalation.policy_id) != (
        customer.persona_id,
        customer.escalation_policy_id,
    ):
        return "UNEXPECTED_CONFIG"
    return "" if response.cached == cached else f"CACHED_{response.cached}"


def ask_once(stack: RunningStack, customer: KnownCustomer) -> wpb.GetWidgetConfigResponse:
    """One call with the very body the load sends, through a real channel."""
    body = widget_config_body(customer)
    return wpb.GetWidgetConfigResponse.FromString(
        check_call(stack.addresses["widgets"], WIDGET_CONFIG_METHOD, body, api_key=stack.api_key)
    )


def check_widget_config(stack: RunningStack, customer: KnownCustomer, *, cached: bool) -> None:
    """Refuses a wrong or wrongly cached answer to ``customer``'s body."""
    response = ask_once(stack, customer)
    problem = config_problem(response, customer, cached=cached)
    if problem:
        config = response.config
        raise RuntimeError(
            f"{customer} expected cached={cached}, got {problem}: {config.persona.persona_id} / "
            f"{config.escalation.policy_id}, cached={response.cached}"
        )


# ---- precomputation by a real worker ----------------------------------------------------------


@dataclass(frozen=True)
class Precompute:
    count: int
    worker_seconds: float
    wall_seconds: float
    version: str

    @property
    def configs_per_second(self) -> float:
        return self.count / self.worker_seconds if self.worker_seconds else 0.0


def precompute(
    stack: RunningStack, *, database_url: str, data_dir: str, redis_url: str, timeout: float
) -> Precompute:
    """Send the precompute task for all customers to a fresh worker (with the servers'
    environment) once it answers a ping, and wait for its done key in Redis."""
    environment = stack_environment(stack, database_url, data_dir)
    app = create_celery_app(
        Settings(database_url=database_url, data_dir=Path(data_dir), redis_url=redis_url)
    )
    store = redis.Redis.from_url(redis_url)
    with switchboard_process(environment, "worker", "--concurrency=2"):
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=1.0):
            if time.monotonic() > deadline:
                raise RuntimeError("the Celery worker did not answer a ping within 60 s")
        store.delete(PRECOMPUTED_KEY)
        started = time.perf_counter()
        app.send_task(PRECOMPUTE_TASK)
        deadline = time.monotonic() + timeout
        while (done := store.get(PRECOMPUTED_KEY)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{PRECOMPUTE_TASK} did not finish within {timeout:g} s")
            time.sleep(0.1)
        wall_seconds = time.perf_counter() - started
    store.close()
    report = json.loads(done)
    return Precompute(
        count=int(report["count"]),
        worker_seconds=float(report["seconds"]),
        wall_seconds=wall_seconds,
        version=str(report["version"]),
    )


def clear_cache(redis_url: str) -> int:
    """SCAN + UNLINK every ``sb:widget:*`` key; returns how many went."""
    store = redis.Redis.from_url(redis_url)
    removed = 0
    batch: list[bytes] = []
    for key in store.scan_iter(match=CACHE_PATTERN, count=1000):
        batch.append(key)
        if len(batch) == 1000:
            removed += store.unlink(*batch)
            batch.clear()
    if batch:
        removed += store.unlink(*batch)
    left = sum(1 for _ in store.scan_iter(match=CACHE_PATTERN, count=1000))
    store.close()
    if left:
        raise RuntimeError(f"{left} {CACHE_PATTERN} keys were left after clearing the cache")
    return removed


# ---- h2load: one customer, beside echo ---------------------------------------------------------


@dataclass(frozen=True)
class WarmLevel:
    """One concurrency: each server model's echo beside the widget call it serves."""

    echo: LoadResult  # the thread-pool server, as every service's main port
    main: LoadResult  # GetWidgetConfig on routing's main port
    edge_echo: LoadResult  # the asyncio edge, as routing's widget port
    edge: LoadResult  # GetWidgetConfig on the widget port


def measure_warm(
    stack: RunningStack,
    customer: KnownCustomer,
    *,
    concurrencies: Sequence[int],
    duration_seconds: float,
    threads: int,
) -> tuple[list[WarmLevel], dict[str, int], Counter[str]]:
    """Echo and GetWidgetConfig on both ports at each concurrency in turn, so machine noise
    hits all alike; and the calls the routing server answered other than OK meanwhile."""
    body = widget_config_body(customer)
    check_widget_config(stack, customer, cached=True)
    echo_payload = bytes(index % 251 for index in range(len(body) - 5))
    echo_body = grpc_frame(echo_payload)
    levels = []
    before = calls_by_code(stack.metrics_urls["routing"], WIDGET_CONFIG_METHOD)
    where_before = answered_where(stack)
    with (
        echo_server_process() as echo_address,
        echo_server_process(edge=True) as edge_echo_address,
    ):
        for address in (echo_address, edge_echo_address):
            if check_call(address, ECHO_METHOD, echo_body) != echo_payload:
                raise RuntimeError("the echo service did not return the request bytes")
        for concurrency in concurrencies:
            results = [
                run_h2load(
                    address=target,
                    method=method,
                    body=target_body,
                    concurrency=concurrency,
                    duration_seconds=duration_seconds,
                    threads=threads,
                    # Echo too, so both carry the same request headers.
                    api_key=stack.api_key,
                )
                for target, method, target_body in (
                    (echo_address, ECHO_METHOD, echo_body),
                    (stack.addresses["routing"], WIDGET_CONFIG_METHOD, body),
                    (edge_echo_address, ECHO_METHOD, echo_body),
                    (stack.addresses["widgets"], WIDGET_CONFIG_METHOD, body),
                )
            ]
            levels.append(WarmLevel(*results))
    after = calls_by_code(stack.metrics_urls["routing"], WIDGET_CONFIG_METHOD)
    where = answered_where(stack)
    where.subtract(where_before)
    return levels, _without_stop_cancels(_not_ok(before, after), sum(concurrencies)), where


def answered_where(stack: RunningStack) -> Counter[str]:
    """GetWidgetConfig calls the widget port answered so far, on its event loop ("loop") and
    in a thread ("thread"): how often the fast path held."""
    counts = counted(stack.metrics_urls["routing"], "switchboard_edge_answers", ("method", "where"))
    return Counter(
        {
            where: count
            for (method, where), count in counts.items()
            if method == WIDGET_CONFIG_METHOD
        }
    )


def _without_stop_cancels(not_ok: dict[str, int], in_flight_at_stop: int) -> dict[str, int]:
    """The answers other than OK, less the calls h2load cancels when a run ends: up to one
    per connection still waiting. The asyncio edge counts those as CANCELLED (the
    thread-pool server finishes them anyway), so more than that is a failure."""
    if not_ok.get("CANCELLED", 0) <= in_flight_at_stop:
        not_ok.pop("CANCELLED", None)
    return not_ok


def measure_redis_down(
    stack: RunningStack, customer: KnownCustomer, *, duration_seconds: float, threads: int
) -> tuple[LoadResult, dict[str, int]]:
    """GetWidgetConfig on the widget port at the target concurrency while Redis is gone:
    computed every call."""
    address = stack.addresses["widgets"]
    check_widget_config(stack, customer, cached=False)
    before = calls_by_code(stack.metrics_urls["routing"], WIDGET_CONFIG_METHOD)
    result = run_h2load(
        address=address,
        method=WIDGET_CONFIG_METHOD,
        body=widget_config_body(customer),
        concurrency=TARGET_CONCURRENCY,
        duration_seconds=duration_seconds,
        threads=threads,
        api_key=stack.api_key,
    )
    after = calls_by_code(stack.metrics_urls["routing"], WIDGET_CONFIG_METHOD)
    return result, _without_stop_cancels(_not_ok(before, after), TARGET_CONCURRENCY)


# ---- a Python client: a different customer per call --------------------------------------------


@dataclass(frozen=True)
class ClientLoad:
    result: LoadResult
    failures: dict[str, int]
    asked: frozenset[str]
    client_cpu_seconds: float


@dataclass
class CallerReport:
    """What one calling thread saw."""

    latencies_ms: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    asked: list[str] = field(default_factory=list)
    good: int = 0
    first_start: float = 0.0
    last_end: float = 0.0


def ask_widget_configs(
    stack: RunningStack,
    plans: Sequence[Sequence[KnownCustomer]],
    *,
    processes: int,
    duration_seconds: float,
    cached: bool,
) -> ClientLoad:
    """One caller per plan (``len(plans)`` callers spread over ``processes`` processes, each
    with its own channel), each asking its customers in order until ``duration_seconds`` are
    up or its plan runs out; every answer must have ``cached`` and the expected config."""
    context = multiprocessing.get_context("spawn")
    with (
        context.Manager() as manager,
        ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool,
    ):
        # Every process has started and warmed up its channel before any caller starts.
        start_together = manager.Barrier(processes)
        outcomes = list(
            pool.map(
                _ask_in_process,
                [stack.addresses["widgets"]] * processes,
                [stack.api_key] * processes,
                [plans[index::processes] for index in range(processes)],
                [duration_seconds] * processes,
                [cached] * processes,
                [start_together] * processes,
                timeout=duration_seconds + 180,
            )
        )
    reports = [report for process_reports, _ in outcomes for report in process_reports]
    latencies = sorted(latency for report in reports for latency in report.latencies_ms)
    failures = sum((report.failures for report in reports), Counter[str]())
    good = sum(report.good for report in reports)
    seconds = max(r.last_end for r in reports) - min(r.first_start for r in reports)
    return ClientLoad(
        result=LoadResult(
            concurrency=len(plans),
            requests=good + failures.total(),
            succeeded=good,
            failed=failures.total(),
            seconds=seconds,
            requests_per_second=len(latencies) / seconds if seconds else 0.0,
            p50_ms=_percentile(latencies, 50),
            p99_ms=_percentile(latencies, 99),
        ),
        failures=dict(failures),
        asked=frozenset(asked for report in reports for asked in report.asked),
        client_cpu_seconds=sum(cpu_seconds for _, cpu_seconds in outcomes),
    )


def _ask_in_process(
    address: str,
    api_key: str,
    plans: Sequence[Sequence[KnownCustomer]],
    duration_seconds: float,
    cached: bool,
    start_together: Any,
) -> tuple[list[CallerReport], float]:
    """One client process: a thread per plan on one channel; returns what each thread saw
    and the CPU seconds the process spent calling."""
    with keyed_channel(address, api_key) as channel:
        widgets = widgets_pb2_grpc.WidgetServiceStub(channel)
        # Warm the channel up anonymously, so no customer of any plan is asked before its turn.
        widgets.GetWidgetConfig(wpb.GetWidgetConfigRequest(), timeout=CALL_TIMEOUT_SECONDS)
        start_together.wait(timeout=120)
        cpu_started = time.process_time()
        deadline = time.monotonic() + duration_seconds

        def caller(plan: Sequence[KnownCustomer]) -> CallerReport:
            report = CallerReport(first_start=time.monotonic())
            report.last_end = report.first_start
            for customer in plan:
                if time.monotonic() >= deadline:
                    break
                request = wpb.GetWidgetConfigRequest(
                    visitor=wpb.Visitor(customer_id=customer.customer_id)
                )
                report.asked.append(customer.customer_id)
                started = time.monotonic()
                try:
                    response = widgets.GetWidgetConfig(request, timeout=CALL_TIMEOUT_SECONDS)
                except grpc.RpcError as error:
                    code = error.code().name if isinstance(error, grpc.Call) else "UNKNOWN"
                    report.failures[code] += 1
                    continue
                report.last_end = time.monotonic()
                report.latencies_ms.append((report.last_end - started) * 1000)
                problem = config_problem(response, customer, cached=cached)
                if problem:
                    report.failures[problem] += 1
                else:
                    report.good += 1
            return report

        with ThreadPoolExecutor(max_workers=len(plans)) as threads:
            reports = list(threads.map(caller, plans))
        return reports, time.process_time() - cpu_started


# ---- report -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    customers: int
    body_bytes: int
    upsert_seconds: float
    precompute: Precompute
    warm: list[WarmLevel]
    warm_where: Counter[str]
    remembered: ClientLoad
    warm_random: ClientLoad
    random_entry_reads: int
    cold: ClientLoad
    cold_available: int
    refilled: bool
    redis_down: LoadResult
    not_ok: dict[str, dict[str, int]]


def print_report(run: Run, *, duration_seconds: float, client_processes: int) -> bool:
    """The table, the precomputation and the targets; returns whether every call was OK."""
    print(
        f"{run.customers:,} customers loaded by UpsertCustomers in {run.upsert_seconds:.1f} s; "
        f"h2load {duration_seconds:g} s per level after 1 s warm-up, one call per connection, "
        f"{run.body_bytes}-byte request bodies (echo body the same size)\n"
    )
    warm_h2load = {level.edge.concurrency: level.edge for level in run.warm}
    random_result = run.warm_random.result
    reference = warm_h2load.get(random_result.concurrency)
    client_bound = (
        reference is not None
        and random_result.requests_per_second < CLIENT_BOUND_SHARE * reference.requests_per_second
    )
    client = f"Python client, {client_processes} processes"
    rows: list[tuple[str, LoadResult]] = []
    for level in run.warm:
        rows += [
            ("echo, thread-pool server", level.echo),
            ("GetWidgetConfig, warm, one customer, routing port (h2load)", level.main),
            ("echo, asyncio edge", level.edge_echo),
            ("GetWidgetConfig, warm, one customer, widget port (h2load)", level.edge),
        ]
    rows += [
        (
            f"GetWidgetConfig, warm, random customer ({client}"
            + (", client-bound)" if client_bound else ")"),
            random_result,
        ),
        (
            f"GetWidgetConfig, cold, each customer once ({client}, every call a miss)",
            run.cold.result,
        ),
        ("GetWidgetConfig, Redis down, one customer (h2load)", run.redis_down),
    ]
    print(format_table(rows))
    print(
        "\n| concurrency | routing port / its echo | p99 ms | widget port / its echo | p99 ms |"
        "\n|---:|---:|---:|---:|---:|"
    )
    for level in run.warm:
        print(
            f"| {level.echo.concurrency} "
            f"| {level.main.requests_per_second / level.echo.requests_per_second:.0%} "
            f"| {level.main.p99_ms:.2f} "
            f"| {level.edge.requests_per_second / level.edge_echo.requests_per_second:.0%} "
            f"| {level.edge.p99_ms:.2f} |"
        )
    print(
        f"\nwidget port, warm h2load runs: {run.warm_where['loop']:,} calls answered on the "
        f"event loop, {run.warm_where['thread']:,} in a thread"
    )
    remembered = run.remembered.result
    print(
        f"\nbefore the warm runs, every customer asked once on the widget port: "
        f"{remembered.succeeded:,} answers checked in {remembered.seconds:.1f} s"
    )
    for label, load in (("warm random", run.warm_random), ("cold", run.cold)):
        print(
            f"\n{label}: {load.result.succeeded:,} answers checked (persona, escalation, cached), "
            f"client CPU {load.client_cpu_seconds:.1f} s over {load.result.seconds:.1f} s"
        )
        if load is run.warm_random:
            print(
                f"warm random: Redis was asked for {run.random_entry_reads:,} entries (MGET) "
                f"during the run; the other answers came from the widget port's memory"
            )
    print(
        f"cold: {run.cold_available:,} customers the random run did not ask were available"
        + (" and all were asked" if len(run.cold.asked) >= run.cold_available else "")
        + "; a customer asked once after the cache was cleared is then answered "
        + ("from the cache" if run.refilled else "WITHOUT the cache (the miss did not fill it)")
    )
    pre = run.precompute
    print(
        f"\nprecompute by a Celery worker (2 processes): {pre.count:,} configs in "
        f"{pre.worker_seconds:.1f} s by the worker's clock = {pre.configs_per_second:,.0f} "
        f"configs/s; {pre.wall_seconds:.1f} s from sending the task to its done key "
        f"(version {pre.version})"
    )

    at_target = [level for level in run.warm if level.echo.concurrency == TARGET_CONCURRENCY]
    if at_target:
        echo, widget = at_target[0].edge_echo, at_target[0].edge
        share = widget.requests_per_second / echo.requests_per_second
        held = share >= TARGET_SHARE_OF_ECHO and widget.p99_ms < TARGET_P99_MS
        print(
            f"\ntarget at {TARGET_CONCURRENCY} concurrent, warm GetWidgetConfig on the widget "
            "port against echo on the same (asyncio) server: "
            f">= {TARGET_SHARE_OF_ECHO:.0%} of echo and p99 < {TARGET_P99_MS:g} ms: "
            f"{'MET' if held else 'MISSED'} ({share:.0%}, p99 {widget.p99_ms:.2f} ms)"
        )
    else:
        print(f"\ntarget not evaluated: {TARGET_CONCURRENCY} is not among the concurrencies")
    whole = pre.count >= run.customers and pre.wall_seconds < TARGET_PRECOMPUTE_SECONDS
    print(
        f"target precompute of {run.customers:,} customers in < {TARGET_PRECOMPUTE_SECONDS:g} s "
        f"(send to done): {'MET' if whole else 'MISSED'} "
        f"({pre.count:,} in {pre.wall_seconds:.1f} s)"
    )

    failures = {
        "remembering client": run.remembered.failures,
        "warm random client": run.warm_random.failures,
        "cold client": run.cold.failures,
        **run.not_ok,
    }
    failed = {label: counts for label, counts in failures.items() if counts}
    print(
        "calls not OK or not as expected: "
        + ("; ".join(f"{label}: {counts}" for label, counts in failed.items()) or "none")
    )
    h2load_failed = any(
        result.failed
        for level in run.warm
        for result in (level.echo, level.main, level.edge_echo, level.edge)
    )
    return run.refilled and not failed and not h2load_failed and not run.redis_down.failed


# ---- main ---------------------------------------------------------------------------------------


def entry_reads(redis_url: str) -> int:
    """How many MGETs (the version and an entry) Redis has answered since it started."""
    store = redis.Redis.from_url(redis_url)
    stats = store.info("commandstats")
    store.close()
    return int(stats.get("cmdstat_mget", {}).get("calls", 0))


def random_plans(
    customers: Sequence[KnownCustomer], callers: int, calls_each: int, rng: random.Random
) -> list[list[KnownCustomer]]:
    return [rng.choices(customers, k=calls_each) for _ in range(callers)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL),
        help="admin connection that creates and drops the throwaway database",
    )
    parser.add_argument("--threads", type=int, default=1, help="h2load threads")
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument(
        "--precompute-timeout", type=float, default=300.0, help="seconds to wait for the worker"
    )
    args = parser.parse_args()
    callers = TARGET_CONCURRENCY
    if callers % args.client_processes:
        parser.error(f"--client-processes must divide {callers}")

    settings = Settings()
    print(
        f"{args.database} and Redis: profiles, segments, routing, a Celery worker and echo in "
        f"separate processes, SWITCHBOARD_GRPC_MAX_WORKERS={settings.grpc_max_workers} for "
        f"every server, {os.cpu_count()} CPUs\n"
    )
    rng = random.Random(5)
    requests, known = population_requests(args.customers)
    databases = Databases(args.database, args.postgres_url)
    try:
        with ExitStack() as redis_running:
            redis_url = redis_running.enter_context(redis_server())
            # service_environment passes this process's environment on to every server.
            os.environ["SWITCHBOARD_REDIS_URL"] = redis_url
            database_url = databases.fresh()
            with running_services(
                SERVICE_NAMES, database_url=database_url, data_dir=databases.tempdir.name
            ) as stack:
                upsert_seconds = set_up(stack, requests)
                precomputed = precompute(
                    stack,
                    database_url=database_url,
                    data_dir=databases.tempdir.name,
                    redis_url=redis_url,
                    timeout=args.precompute_timeout,
                )
                remembered = ask_widget_configs(
                    stack,
                    [known[index::callers] for index in range(callers)],
                    processes=args.client_processes,
                    duration_seconds=REMEMBER_SECONDS,
                    cached=True,
                )
                one = rng.choice(known)
                warm, warm_not_ok, warm_where = measure_warm(
                    stack,
                    one,
                    concurrencies=args.concurrency,
                    duration_seconds=args.duration,
                    threads=args.threads,
                )
                # More calls than a caller can make in the time, so none runs out.
                calls_each = max(1000, round(args.duration * 1000))
                reads_before = entry_reads(redis_url)
                warm_random = ask_widget_configs(
                    stack,
                    random_plans(known, callers, calls_each, rng),
                    processes=args.client_processes,
                    duration_seconds=args.duration,
                    cached=True,
                )
                random_entry_reads = entry_reads(redis_url) - reads_before

                clear_cache(redis_url)
                never_asked = [
                    c for c in known if c.customer_id not in warm_random.asked and c != one
                ]
                if len(never_asked) <= callers:
                    # A small population the random run has asked through: any customer's
                    # call is a miss now that the cache is cleared.
                    never_asked = [c for c in known if c != one]
                rng.shuffle(never_asked)
                probe, never_asked = never_asked[0], never_asked[1:]
                check_widget_config(stack, probe, cached=False)
                cold = ask_widget_configs(
                    stack,
                    [never_asked[index::callers] for index in range(callers)],
                    processes=args.client_processes,
                    duration_seconds=args.duration,
                    cached=False,
                )
                # A miss fills the cache, so the probe is answered from it now.
                refilled = not config_problem(ask_once(stack, probe), probe, cached=True)

                redis_running.close()
                redis_down, down_not_ok = measure_redis_down(
                    stack, one, duration_seconds=args.duration, threads=args.threads
                )
        ok = print_report(
            Run(
                customers=args.customers,
                body_bytes=len(widget_config_body(one)),
                upsert_seconds=upsert_seconds,
                precompute=precomputed,
                warm=warm,
                warm_where=warm_where,
                remembered=remembered,
                warm_random=warm_random,
                random_entry_reads=random_entry_reads,
                cold=cold,
                cold_available=len(never_asked),
                refilled=refilled,
                redis_down=redis_down,
                not_ok={"warm h2load (server)": warm_not_ok, "Redis down (server)": down_not_ok},
            ),
            duration_seconds=args.duration,
            client_processes=args.client_processes,
        )
    finally:
        databases.drop_all()
    if not ok:
        sys.exit("some calls failed; the figures above are not a valid measurement")


if __name__ == "__main__":
    main()
