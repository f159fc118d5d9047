"""Faults a production deployment meets, made to happen to real processes and servers:

- Redis stops under routing (its widget cache), a worker and beat: routing and widget calls
  keep answering; a customer change and a task sent during the outage are not lost; when
  Redis comes back empty on the same port, memberships, webhooks and the widget cache catch
  up with no process restarted
  (``test_with_redis_stopped_calls_are_answered_and_everything_catches_up_when_it_returns``);
  beat started while Redis is down waits for it
  (``test_beat_started_while_redis_is_down_waits_for_it_instead_of_exiting``).
- A worker is SIGKILLed halfway through a chunked re-evaluation: once its round's lease runs
  out and the next round runs, memberships and their history are what a clean run leaves,
  and a receiver honouring the idempotency key gets each transition once
  (``test_a_worker_killed_halfway_through_a_reevaluation_leaves_what_a_clean_run_leaves``).
  The SIGKILLed sync is tests/integration/test_sync_resume.py.
- PostgreSQL restarts (``pg_ctl restart -m fast``, a cluster of the test's own) under calls to
  ``switchboard serve profiles`` and ``segments``: calls in flight fail with UNAVAILABLE,
  later ones succeed with the same processes
  (``test_postgresql_restarting_under_load_costs_calls_in_flight_unavailable_only``).
- ``switchboard serve segments`` gets SIGTERM under calls: health turns NOT_SERVING first,
  every call it accepted completes OK (a slow one included), then it exits 0
  (``test_sigterm_under_load_turns_health_first_and_cuts_no_accepted_call``).
- Routing and segments call services that take calls and never answer: every call returns
  with a status Switchboard made (UNAVAILABLE) or a degraded answer, never hangs
  (``test_a_downstream_that_never_answers_costs_callers_deadlines_not_a_hang``).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import redis
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Engine, select, update
from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.profiles.v1 import profiles_pb2_grpc
from switchboard.routing.v1 import routing_pb2 as rpb
from switchboard.routing.v1 import routing_pb2_grpc, widgets_pb2_grpc
from switchboard.routing.v1 import widgets_pb2 as wpb
from switchboard.segments.v1 import outreach_pb2 as opb
from switchboard.segments.v1 import outreach_pb2_grpc, segments_pb2_grpc
from switchboard.segments.v1 import segments_pb2 as spb

from services.access.models import AuditEntryRow
from services.core.clock import utc_now
from services.core.db import create_db_engine, upgrade_database
from services.core.errors import ERROR_DOMAIN
from services.core.server import create_server
from services.core.settings import Settings
from services.registry import SERVICES
from services.segments.app import RECOMPUTE_BATCH
from services.segments.rounds import RoundRepository, chunks, rounds
from tests.integration.routing_setup import (
    action,
    create_queue,
    create_tier_segments,
    set_rules,
    struct,
)
from tests.integration.test_outreach import Receiver, create_endpoint, dispatch_until
from tests.integration.test_outreach import receiver as receiver
from tests.integration.test_reevaluation import segments_of
from tests.integration.test_stack import stack_env
from tests.integration.test_widgets_cache import stored_answer
from tests.integration.widgets_setup import config_of, escalation, persona, set_up_team
from tests.support.access import gate, keyed_channel, new_key, serve_all
from tests.support.faults import restartable_redis, stalled_service, throwaway_postgres
from tests.support.processes import RunningCommand
from tests.support.rpc import error_info
from tests.support.workers import (
    fresh_redis_database,
    running_worker,
    settings_of,
    wait_for,
    worker_environment,
)
from workers.app import create_celery_app

Profiles = profiles_pb2_grpc.ProfileServiceStub
Segments = segments_pb2_grpc.SegmentServiceStub

OK = grpc.StatusCode.OK
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
# A client's own timeout, far beyond anything a bounded call takes: a call that needs it has
# hung, and fails with a DEADLINE_EXCEEDED that carries none of Switchboard's error details.
PATIENCE = 60.0
# How long anything that should happen may take on a loaded machine before the test fails.
EVENTUALLY = 120.0
GET_CUSTOMER = "/switchboard.profiles.v1.ProfileService/GetCustomer"


# ---- servers, clients and what they saw -------------------------------------------------------


@dataclass
class Stubs:
    profiles: Profiles
    segments: Segments
    outreach: outreach_pb2_grpc.OutreachServiceStub
    routing: routing_pb2_grpc.RoutingServiceStub
    widgets: widgets_pb2_grpc.WidgetServiceStub


@contextmanager
def every_service(engine: Engine, settings: Settings) -> Iterator[tuple[dict[str, int], Stubs]]:
    """profiles, segments (with outreach) and routing (with widgets) in this process, wired
    to each other, with clients presenting ``settings.api_key``."""
    running = serve_all(engine, settings)
    ports = {name: server.port for name, server in running.items()}
    key = settings.api_key.get_secret_value()
    try:
        with (
            keyed_channel(f"127.0.0.1:{ports['profiles']}", key) as profiles,
            keyed_channel(f"127.0.0.1:{ports['segments']}", key) as segments,
            keyed_channel(f"127.0.0.1:{ports['routing']}", key) as routing,
        ):
            yield (
                ports,
                Stubs(
                    Profiles(profiles),
                    Segments(segments),
                    outreach_pb2_grpc.OutreachServiceStub(segments),
                    routing_pb2_grpc.RoutingServiceStub(routing),
                    widgets_pb2_grpc.WidgetServiceStub(routing),
                ),
            )
    finally:
        for server in running.values():
            server.stop(grace=1)


def alert_on_entering(
    outreach: outreach_pb2_grpc.OutreachServiceStub, url: str, segment: str
) -> None:
    """A webhook to ``url`` whenever a customer enters ``segment``."""
    create_endpoint(outreach, "cs-team", url, secret="whsec_faults-0123456789abcdef")
    outreach.CreateOutreachSubscription(
        opb.CreateOutreachSubscriptionRequest(
            subscription=opb.OutreachSubscription(
                subscription_id="entered",
                segment_id=segment,
                transition=spb.MEMBERSHIP_CHANGE_KIND_ENTERED,
                endpoint_id="cs-team",
            )
        )
    )


def keys_by_customer(receiver: Receiver) -> dict[str, set[str]]:
    """The idempotency keys of the webhooks received, by the customer they are about. A
    receiver that honours the key acts once per key, so one key per customer is one action."""
    keys: dict[str, set[str]] = {}
    for webhook in receiver.requests():
        keys.setdefault(webhook.payload["customer_id"], set()).add(
            webhook.headers["Idempotency-Key"]
        )
    return keys


def outcome(call: Callable[[], Any]) -> Any:
    """The answer of ``call``, or the error it failed with."""
    try:
        return call()
    except grpc.RpcError as error:
        return error


def made_by_switchboard(error: grpc.RpcError) -> bool:
    """Whether the status came from a Switchboard server (its errors carry ErrorInfo), not
    from the client giving up or the transport."""
    try:
        return bool(error_info(error).domain == ERROR_DOMAIN)
    except AssertionError:
        return False


def health_of(address: str) -> int | None:
    """The server's overall health status; None when it does not answer."""
    with grpc.insecure_channel(address) as channel:
        try:
            return int(
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(), timeout=2)
                .status
            )
        except grpc.RpcError:
            return None


@contextmanager
def serving(service: str, env: Mapping[str, str]) -> Iterator[RunningCommand]:
    """``switchboard serve SERVICE``, answering SERVING; stopped with SIGTERM if still up."""
    process = RunningCommand(["serve", service], env)
    address = env[f"SWITCHBOARD_{service.upper()}_ADDRESS"]
    try:
        wait_for(
            lambda: (
                process.process.poll() is not None
                or health_of(address) == health_pb2.HealthCheckResponse.SERVING
            ),
            f"{service} to serve",
            EVENTUALLY,
        )
        assert process.process.poll() is None, "".join(process.output)
        yield process
    finally:
        process.stop(signal.SIGTERM)


@dataclass(frozen=True)
class Call:
    what: str
    request_id: str
    started: float
    ended: float
    code: grpc.StatusCode
    details: str


class Load:
    """Threads calling continuously, one per kind of call, every call recorded. A call gets
    its request id (send it as x-request-id). With ``until_refused`` a thread stops at its
    first failure, else it goes on until the load stops."""

    def __init__(
        self, calls: Mapping[str, Callable[[str], object]], *, until_refused: bool = False
    ) -> None:
        self.until_refused = until_refused
        self.kinds = list(calls)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._threads = [
            threading.Thread(target=self._run, args=(name, call), daemon=True)
            for name, call in calls.items()
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=PATIENCE + 10)

    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def answered(self, what: str, *, after: float = 0.0) -> int:
        return sum(1 for c in self.calls() if c.what == what and c.code == OK and c.started > after)

    def wait_until_each_answered(self, count: int, *, after: float = 0.0) -> None:
        """Until every kind of call has been answered OK ``count`` times (started after
        ``after``, a ``time.monotonic()`` reading)."""
        for what in self.kinds:
            wait_for(
                partial(self._answered_at_least, what, count, after),
                f"{count} {what} answers",
                EVENTUALLY,
            )

    def _answered_at_least(self, what: str, count: int, after: float) -> bool:
        return self.answered(what, after=after) >= count

    def _run(self, what: str, call: Callable[[str], object]) -> None:
        for number in itertools.count():
            if self.stopping.is_set():
                return
            request_id = f"{what}-{number}"
            started = time.monotonic()
            code, details = OK, ""
            try:
                call(request_id)
            except grpc.RpcError as error:
                code, details = error.code(), str(error.details())
            with self._lock:
                self._calls.append(Call(what, request_id, started, time.monotonic(), code, details))
            if code != OK and self.until_refused:
                return


def with_id(request_id: str) -> dict[str, Any]:
    """Call options: the request id (the audit log keeps it) and the client's patience."""
    return {"metadata": (("x-request-id", request_id),), "timeout": PATIENCE}


# ---- Redis stops and comes back ---------------------------------------------------------------


def test_with_redis_stopped_calls_are_answered_and_everything_catches_up_when_it_returns(
    engine: Engine, database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    admin = new_key(engine)
    with restartable_redis() as redis_store:
        settings = Settings(
            api_key=admin,
            redis_url=redis_store.url,
            segment_refresh_seconds=0,
            customer_refresh_seconds=0,
        )
        with every_service(engine, settings) as (ports, stubs):
            set_up_team(stubs.routing, stubs.segments, stubs.profiles, stubs.widgets)
            alert_on_entering(stubs.outreach, receiver.url, "tier_enterprise")
            env = worker_environment(
                tmp_path / "var", database_url, redis_store.url, ports, admin
            ) | {
                "SWITCHBOARD_REEVALUATE_SECONDS": "0.5",
                "SWITCHBOARD_OUTREACH_DISPATCH_SECONDS": "0.5",
                "SWITCHBOARD_WIDGET_REFRESH_SECONDS": "1",
            }
            beat = RunningCommand(["beat"], env)
            try:
                beat.wait_for_line("Acquired lock", timeout=EVENTUALLY)
                with running_worker(env, "--queues=segments,outreach,routing") as worker:
                    # Up and running: the first round alerted on acme and globex, and the
                    # worker filled the widget cache.
                    wait_for(
                        lambda: set(keys_by_customer(receiver)) == {"acme", "globex"},
                        "the first webhooks",
                        EVENTUALLY,
                    )
                    wait_for(
                        lambda: _stored_persona(redis_store.url, "cleo") == "starter_bot",
                        "the widget cache to be filled",
                        EVENTUALLY,
                    )

                    redis_store.stop()
                    during = _during_the_outage(stubs)
                    # (A beat caught sending a task retries that first, for up to a minute.)
                    beat.wait_for_line("beat cannot reach Redis", timeout=EVENTUALLY)
                    sender = _Sender(
                        settings_of(env),
                        "switchboard.routing.precompute_widget_configs",
                        customer_ids=["bloom"],
                    )
                    redis_store.start()

                    worker.wait_for_line(f"[{sender.task_id()}] succeeded", timeout=EVENTUALLY)
                    wait_for(
                        lambda: "tier_enterprise" in segments_of(stubs.segments, "cleo"),
                        "cleo's move to be re-evaluated",
                        EVENTUALLY,
                    )
                    wait_for(
                        lambda: "cleo" in keys_by_customer(receiver), "cleo's webhook", EVENTUALLY
                    )
                    wait_for(
                        lambda: _stored_persona(redis_store.url, "cleo") == "detailed",
                        "the widget cache to catch up",
                        EVENTUALLY,
                    )
                    assert worker.process.poll() is None
                    assert beat.process.poll() is None
            finally:
                beat.stop(signal.SIGTERM)

    assert during.widget.config.persona.persona_id == "detailed"
    assert not during.widget.cached, "computed directly while the cache is down"
    assert during.moved.config.persona.persona_id == "detailed", "cleo's move was seen at once"
    assert during.routed.decision.queue_id == "email"
    keys = keys_by_customer(receiver)
    assert {customer: len(found) for customer, found in keys.items()} == {
        "acme": 1,
        "globex": 1,
        "cleo": 1,
    }


@dataclass
class _Outage:
    """What the services answered while Redis was down."""

    widget: wpb.GetWidgetConfigResponse
    moved: wpb.GetWidgetConfigResponse
    routed: rpb.RouteConversationResponse


def _during_the_outage(stubs: Stubs) -> _Outage:
    """Widget and routing calls, and cleo growing to 80 seats, while Redis is down."""
    widget = config_of(stubs.widgets, customer_id="acme")
    routed = stubs.routing.RouteConversation(
        rpb.RouteConversationRequest(
            conversation_id="during-outage", customer_id="acme", channel=rpb.CHANNEL_CHAT
        )
    )
    stubs.profiles.UpdateCustomer(
        ppb.UpdateCustomerRequest(
            customer=ppb.Customer(customer_id="cleo", seats=80),
            update_mask=field_mask_pb2.FieldMask(paths=["seats"]),
        )
    )
    moved = config_of(stubs.widgets, customer_id="cleo")
    return _Outage(widget, moved, routed)


class _Sender:
    """A task sent to the workers while Redis is down, as `switchboard sync run` sends one,
    its sender retrying in a thread of its own. Returns once the sender failed seven times:
    Celery's own defaults would have given up after three (kombu's after five)."""

    def __init__(self, settings: Settings, name: str, **kwargs: Any) -> None:
        self.failures: list[str] = []
        self.sent: list[str] = []
        app = create_celery_app(settings)
        self.thread = threading.Thread(
            target=lambda: self.sent.append(
                app.send_task(
                    name,
                    kwargs=kwargs,
                    # Called at every failed attempt, before the next.
                    retry_policy={
                        "errback": lambda error, _wait: self.failures.append(repr(error))
                    },
                ).id
            ),
            daemon=True,
        )
        self.thread.start()
        wait_for(
            lambda: len(self.failures) >= 7, "seven attempts to send the task to fail", EVENTUALLY
        )

    def task_id(self) -> str:
        """The task's id, once the sender got it to Redis."""
        self.thread.join(timeout=PATIENCE)
        assert self.sent, f"the task was dropped after {len(self.failures)} attempts"
        return self.sent[0]


def _stored_persona(redis_url: str, customer_id: str) -> str:
    """The persona of the customer's widget answer the workers left in Redis, if current."""
    try:
        stored = stored_answer(redis_url, customer_id)
    except redis.RedisError:
        return ""
    return stored.persona.persona_id if stored is not None else ""


def test_beat_started_while_redis_is_down_waits_for_it_instead_of_exiting(
    database_url: str, tmp_path: Path
) -> None:
    with restartable_redis(started=False) as redis_store:
        beat = RunningCommand(
            ["beat"], worker_environment(tmp_path / "var", database_url, redis_store.url)
        )
        try:
            beat.wait_for_line("beat cannot reach Redis", timeout=EVENTUALLY)
            assert beat.process.poll() is None
            redis_store.start()
            beat.wait_for_line("Acquired lock", timeout=EVENTUALLY)
            beat.wait_for_line("Sending due task", timeout=EVENTUALLY)
        finally:
            beat.stop(signal.SIGTERM)


# ---- a worker killed halfway through a re-evaluation --------------------------------------------


@pytest.fixture
def fresh_redis(redis_url: str) -> Iterator[str]:
    yield from fresh_redis_database(redis_url, 9)


def test_a_worker_killed_halfway_through_a_reevaluation_leaves_what_a_clean_run_leaves(
    engine: Engine, database_url: str, fresh_redis: str, tmp_path: Path, receiver: Receiver
) -> None:
    admin = new_key(engine)
    with every_service(engine, Settings(api_key=admin)) as (ports, stubs):
        create_tier_segments(stubs.segments)
        alert_on_entering(stubs.outreach, receiver.url, "tier_enterprise")
        tiers = create_customers(stubs.profiles, 4 * RECOMPUTE_BATCH)
        env = worker_environment(tmp_path / "var", database_url, fresh_redis, ports, admin)
        settings = settings_of(env)
        app = create_celery_app(settings)
        round_store = RoundRepository(engine)
        # Webhooks are sent by a worker of their own, which nothing kills.
        with running_worker(env, "--queues=outreach"):
            doomed = killable_worker(env, "--queues=segments")
            try:
                app.send_task("switchboard.segments.reevaluate_changed")
                wait_for(lambda: partly_done(round_store), "a first chunk to be stored", EVENTUALLY)
            finally:
                os.killpg(doomed.pid, signal.SIGKILL)
                doomed.wait()
            killed = round_store.current()
            assert killed is not None and 0 < killed.chunks_done < killed.chunk_count
            # Chunks run in order, one at a time: the first not done was under way.
            under_way = min(set(range(killed.chunk_count)) - chunks_done(engine, killed.round_id))

            with running_worker(env, "--queues=segments"):
                # The chunks still queued run; the one under way is not redelivered (Redis
                # keeps it unacknowledged), so the round holds until its lease runs out
                # (ten minutes). Make it run out, then the next round starts as beat starts
                # one every second.
                wait_for(
                    lambda: stuck_without(engine, round_store, killed.chunk_count, under_way),
                    "every other chunk to run",
                    EVENTUALLY,
                )
                with engine.begin() as connection:
                    connection.execute(
                        update(rounds).values(lease_until=utc_now() - timedelta(seconds=1))
                    )
                app.send_task("switchboard.segments.reevaluate_changed")
                wait_for(lambda: round_store.current() is None, "the next round to end", EVENTUALLY)
                left = stubs.segments.RecomputeMemberships(
                    spb.RecomputeMembershipsRequest(scope=spb.RECOMPUTE_SCOPE_CHANGED)
                )
            enterprise = {customer for customer, tier in tiers.items() if tier == "tier_enterprise"}
            dispatch_until(
                settings, lambda: set(keys_by_customer(receiver)) == enterprise, "every webhook"
            )

        assert left.evaluated_count == 0, "the cursor is past every change"
        assert memberships(stubs.segments) == {customer: {tier} for customer, tier in tiers.items()}
        history = Counter(
            (change.customer_id, change.segment_id, change.kind)
            for change in membership_changes(stubs.segments)
        )
        entered_once = {
            (customer, tier, spb.MEMBERSHIP_CHANGE_KIND_ENTERED): 1
            for customer, tier in tiers.items()
        }
        assert history == entered_once, "each customer entered its tier once, and that is all"
    keys = keys_by_customer(receiver)
    assert {customer: len(found) for customer, found in keys.items()} == dict.fromkeys(
        enterprise, 1
    )


def create_customers(profiles: Profiles, count: int) -> dict[str, str]:
    """``count`` customers of every tier, one in forty of them Enterprise (each Enterprise
    customer is a webhook); returns each one's tier."""
    tiers: dict[str, str] = {}
    for start in range(0, count, 1000):
        batch = [
            ppb.Customer(
                external_ids={"billing": f"cus_{n}"},
                plan="starter",
                seats=50 + n % 7 if n % 40 == 0 else 1 + n % 49,
            )
            for n in range(start, min(count, start + 1000))
        ]
        results = profiles.UpsertCustomers(
            ppb.UpsertCustomersRequest(external_id_system="billing", customers=batch)
        ).results
        for result, customer in zip(results, batch, strict=True):
            assert result.outcome == ppb.UPSERT_OUTCOME_CREATED, result
            seats = customer.seats
            tier = "enterprise" if seats >= 50 else "growth" if seats >= 5 else "starter"
            tiers[result.customer_id] = f"tier_{tier}"
    return tiers


def killable_worker(env: Mapping[str, str], *args: str) -> subprocess.Popen[bytes]:
    """``switchboard worker`` in a process group of its own, so that SIGKILL takes its pool
    children too."""
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "worker", "--concurrency=1", *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def partly_done(round_store: RoundRepository) -> bool:
    state = round_store.current()
    return state is not None and state.chunk_count > 1 and state.chunks_done >= 1


def chunks_done(engine: Engine, round_id: str) -> set[int]:
    with engine.connect() as connection:
        found = connection.execute(
            select(chunks.c.chunk_index).where(chunks.c.round_id == round_id)
        ).scalars()
        return set(found)


def stuck_without(
    engine: Engine, round_store: RoundRepository, chunk_count: int, missing: int
) -> bool:
    """Whether the round ended, or has every chunk done but ``missing``."""
    state = round_store.current()
    if state is None:
        return True
    return chunks_done(engine, state.round_id) == set(range(chunk_count)) - {missing}


def memberships(segments: Segments) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    token = ""
    while True:
        page = segments.ListMemberships(
            spb.ListMembershipsRequest(page_size=1000, page_token=token)
        )
        for membership in page.memberships:
            found.setdefault(membership.customer_id, set()).add(membership.segment_id)
        token = page.next_page_token
        if not token:
            return found


def membership_changes(segments: Segments) -> list[spb.MembershipChange]:
    found: list[spb.MembershipChange] = []
    token = ""
    while True:
        page = segments.ListMembershipChanges(
            spb.ListMembershipChangesRequest(page_size=1000, page_token=token)
        )
        found.extend(page.changes)
        token = page.next_page_token
        if not token:
            return found


# ---- PostgreSQL restarts under load -------------------------------------------------------------


def test_postgresql_restarting_under_load_costs_calls_in_flight_unavailable_only(
    tmp_path: Path,
) -> None:
    with throwaway_postgres() as cluster:
        url = cluster.create_database("switchboard")
        upgrade_database(url)
        engine = create_db_engine(url)
        try:
            admin = new_key(engine)
            env = stack_env(tmp_path / "var", url) | {
                "SWITCHBOARD_DATABASE_URL": url,
                "SWITCHBOARD_API_KEY": admin,
            }
            with (
                serving("profiles", env) as profiles_process,
                serving("segments", env) as segments_process,
                keyed_channel(env["SWITCHBOARD_PROFILES_ADDRESS"], admin) as to_profiles,
                keyed_channel(env["SWITCHBOARD_SEGMENTS_ADDRESS"], admin) as to_segments,
            ):
                profiles, segments = Profiles(to_profiles), Segments(to_segments)
                profiles.CreateCustomer(
                    ppb.CreateCustomerRequest(customer=ppb.Customer(customer_id="acme", seats=9))
                )
                create_tier_segments(segments)
                load = Load(
                    {
                        "GetCustomer": lambda rid: profiles.GetCustomer(
                            ppb.GetCustomerRequest(customer_id="acme"), **with_id(rid)
                        ),
                        "ListCustomers": lambda rid: profiles.ListCustomers(
                            ppb.ListCustomersRequest(), **with_id(rid)
                        ),
                        "AddTags": lambda rid: profiles.AddTags(
                            ppb.AddTagsRequest(customer_id="acme", tags=[rid]), **with_id(rid)
                        ),
                        "EvaluateCustomer": lambda rid: segments.EvaluateCustomer(
                            spb.EvaluateCustomerRequest(customer_id="acme"), **with_id(rid)
                        ),
                        "ListSegments": lambda rid: segments.ListSegments(
                            spb.ListSegmentsRequest(), **with_id(rid)
                        ),
                    }
                )
                with load:
                    load.wait_until_each_answered(3)
                    with update_held_on_a_row_lock(url, profiles) as held_update:
                        cluster.restart()
                    restarted = time.monotonic()
                    load.wait_until_each_answered(5, after=restarted)
                    held = held_update()
                assert profiles_process.process.poll() is None
                assert segments_process.process.poll() is None
        finally:
            engine.dispose()

    calls = load.calls()
    assert isinstance(held, grpc.RpcError), "the update in flight survived a restart?"
    assert held.code() == UNAVAILABLE and error_info(held).reason == "STORE_UNAVAILABLE"
    assert not [c for c in calls if c.code not in (OK, UNAVAILABLE)]
    # Calls that found the store restarting were refused as retryable, in both services...
    refused = {c.what for c in calls if c.code == UNAVAILABLE}
    assert refused & {"GetCustomer", "ListCustomers", "AddTags"}, "profiles never felt it"
    assert refused & {"EvaluateCustomer", "ListSegments"}, "segments never felt it"
    # ...and once it was back, every call was answered by the same processes.
    assert not [c for c in calls if c.started > restarted and c.code != OK]


@contextmanager
def update_held_on_a_row_lock(url: str, profiles: Profiles) -> Iterator[Callable[[], Any]]:
    """An UpdateCustomer that is certainly in flight: it waits in PostgreSQL for a row lock
    held by a session of this function's own; yields what waits for the call's outcome."""
    outcomes: list[Any] = []
    request = ppb.UpdateCustomerRequest(
        customer=ppb.Customer(customer_id="acme", seats=70),
        update_mask=field_mask_pb2.FieldMask(paths=["seats"]),
    )
    caller = threading.Thread(
        target=lambda: outcomes.append(
            outcome(lambda: profiles.UpdateCustomer(request, timeout=PATIENCE))
        ),
        daemon=True,
    )

    def waiting_on_lock() -> bool:
        with psycopg.connect(url, autocommit=True) as observer:
            found = observer.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            ).fetchone()
        return bool(found and found[0])

    def result() -> Any:
        caller.join(timeout=PATIENCE)
        return outcomes[0]

    # closing(), not the connection's own context: that would commit on a dead session.
    with closing(psycopg.connect(url)) as holder:
        holder.execute("SELECT 1 FROM customers WHERE customer_id = 'acme' FOR UPDATE")
        caller.start()
        wait_for(waiting_on_lock, "the update to wait on the row lock", EVENTUALLY)
        yield result


# ---- SIGTERM under load ------------------------------------------------------------------------


def test_sigterm_under_load_turns_health_first_and_cuts_no_accepted_call(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    admin = new_key(engine)
    grace = 30.0
    acme = ppb.GetCustomerResponse(customer=ppb.Customer(customer_id="acme", seats=120))
    with stalled_service({GET_CUSTOMER: acme.SerializeToString()}) as profiles:
        env = stack_env(tmp_path / "var", database_url) | {
            "SWITCHBOARD_DATABASE_URL": database_url,
            "SWITCHBOARD_API_KEY": admin,
            "SWITCHBOARD_PROFILES_ADDRESS": profiles.address,
            # The slow call below waits on profiles for as long as the test holds it.
            "SWITCHBOARD_CALL_DEADLINE_SECONDS": str(PATIENCE),
            "SWITCHBOARD_GRPC_SHUTDOWN_GRACE_SECONDS": str(grace),
        }
        address = env["SWITCHBOARD_SEGMENTS_ADDRESS"]
        with serving("segments", env) as process, keyed_channel(address, admin) as channel:
            segments = Segments(channel)
            create_tier_segments(segments)
            events: list[tuple[float, str]] = []

            def watch_health() -> None:
                stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
                try:
                    for status in stream:
                        events.append(
                            (
                                time.monotonic(),
                                health_pb2.HealthCheckResponse.ServingStatus.Name(status.status),
                            )
                        )
                    events.append((time.monotonic(), "watch ended OK"))
                except grpc.RpcError as error:
                    events.append((time.monotonic(), f"watch cut: {error.code().name}"))

            watcher = threading.Thread(target=watch_health, daemon=True)
            watcher.start()
            wait_for(lambda: events, "the health watch to start", EVENTUALLY)
            slow: dict[str, Any] = {}
            slow_call = threading.Thread(
                target=lambda: slow.update(
                    answer=outcome(
                        lambda: segments.EvaluateCustomer(
                            spb.EvaluateCustomerRequest(customer_id="acme"), timeout=PATIENCE
                        )
                    )
                ),
                daemon=True,
            )
            slow_call.start()
            profiles.wait_for_call(GET_CUSTOMER)  # in flight: segments is waiting on profiles

            def create_segment(request_id: str) -> object:
                segment = spb.Segment(
                    segment_id=request_id.replace("-", "_"), rule=struct({"seats": {"$gte": 1}})
                )
                return segments.CreateSegment(
                    spb.CreateSegmentRequest(segment=segment), **with_id(request_id)
                )

            writers = {f"load-{n}": create_segment for n in range(3)}
            with Load(writers, until_refused=True) as load:
                load.wait_until_each_answered(5)
                process.process.send_signal(signal.SIGTERM)
                wait_for(
                    lambda: all(
                        any(c.what == what and c.code != OK for c in load.calls())
                        for what in load.kinds
                    ),
                    "every load thread to be refused",
                    EVENTUALLY,
                )
            # Only now does the slow call get its answer: it was in flight all along.
            profiles.release()
            slow_call.join(timeout=PATIENCE)
            watcher.join(timeout=PATIENCE)
            exit_code = process.process.wait(timeout=grace)

    calls = load.calls()
    accepted = {
        request_id: code
        for request_id, code in _audited_calls(
            engine, "/switchboard.segments.v1.SegmentService/CreateSegment"
        ).items()
        if request_id.startswith("load-")
    }
    answered = {c.request_id for c in calls if c.code == OK}
    refused = [c for c in calls if c.code != OK]
    statuses = [what for _, what in events]
    assert exit_code == 0, "".join(process.output)
    assert statuses == ["SERVING", "NOT_SERVING", "watch ended OK"]
    not_serving_at = events[1][0]
    assert all(c.ended > not_serving_at for c in refused), "a call was refused before health said"
    # Refused: UNAVAILABLE, or CANCELLED for a call that reached grpc in the instant the
    # server stopped, before any handler took it (grpc's own shutdown does that).
    assert {c.code for c in refused} <= {UNAVAILABLE, grpc.StatusCode.CANCELLED}, refused
    # The server's audit log holds every call it accepted, with the code it ended with: each
    # ended OK and was answered OK, and no refused call had been accepted.
    assert set(accepted.values()) == {"OK"}, accepted
    assert set(accepted) == answered
    assert len(answered) >= 15
    assert not isinstance(slow["answer"], grpc.RpcError), slow["answer"].details()
    assert "tier_enterprise" in slow["answer"].member_segment_ids


def _audited_calls(engine: Engine, method: str) -> dict[str, str]:
    """Request id to final code of every call to ``method`` the audit log holds."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(AuditEntryRow.request_id, AuditEntryRow.code).where(  # type: ignore[call-overload]
                AuditEntryRow.method == method
            )
        ).all()
    return {row.request_id: row.code for row in rows}


# ---- a downstream service that never answers ---------------------------------------------------


def test_a_downstream_that_never_answers_costs_callers_deadlines_not_a_hang(
    engine: Engine,
) -> None:
    admin = new_key(engine)
    with stalled_service() as hung:
        settings = Settings(
            api_key=admin,
            profiles_address=hung.address,
            segments_address=hung.address,
            call_deadline_seconds=1,
            segment_refresh_seconds=0,
            customer_refresh_seconds=0,
        )
        servers = {
            name: create_server(
                SERVICES[name].build(engine, settings),
                address="127.0.0.1:0",
                gate=gate(engine),
                max_workers=4,
            )
            for name in ("segments", "routing")
        }
        try:
            with (
                keyed_channel(f"127.0.0.1:{servers['segments'].port}", admin) as to_segments,
                keyed_channel(f"127.0.0.1:{servers['routing'].port}", admin) as to_routing,
            ):
                segments = Segments(to_segments)
                routing = routing_pb2_grpc.RoutingServiceStub(to_routing)
                widgets = widgets_pb2_grpc.WidgetServiceStub(to_routing)
                # What routing and widgets need of their own, none of it from the hung ones.
                create_queue(routing, "email")
                set_rules(routing, [], default=action("email"))
                widgets.CreatePersona(wpb.CreatePersonaRequest(persona=persona("visitor")))
                widgets.CreateEscalationPolicy(
                    wpb.CreateEscalationPolicyRequest(policy=escalation("visitor_email", "email"))
                )
                widgets.UpdateWidgetPolicies(
                    wpb.UpdateWidgetPoliciesRequest(
                        policies=wpb.WidgetPolicies(
                            default_persona_id="visitor",
                            default_escalation_policy_id="visitor_email",
                        )
                    )
                )

                evaluated = outcome(
                    lambda: segments.EvaluateCustomer(
                        spb.EvaluateCustomerRequest(customer_id="acme"), timeout=PATIENCE
                    )
                )
                routed = outcome(
                    lambda: routing.RouteConversation(
                        rpb.RouteConversationRequest(
                            conversation_id="chat-1", customer_id="acme", channel=rpb.CHANNEL_CHAT
                        ),
                        timeout=PATIENCE,
                    )
                )
                widget = outcome(
                    lambda: widgets.GetWidgetConfig(
                        wpb.GetWidgetConfigRequest(visitor=wpb.Visitor(customer_id="acme")),
                        timeout=PATIENCE,
                    )
                )
        finally:
            for server in servers.values():
                server.stop(grace=1)

    # Each call reached the hung service and came back on its own deadline, with a status
    # made by Switchboard: the client's own timeout was never what ended it.
    assert GET_CUSTOMER in hung.arrived
    for name, failed in (("EvaluateCustomer", evaluated), ("RouteConversation", routed)):
        assert isinstance(failed, grpc.RpcError), f"{name} answered without its customer"
        assert failed.code() == UNAVAILABLE, (name, failed.code(), failed.details())
        assert made_by_switchboard(failed), (name, failed.details())
        assert error_info(failed).reason == "UNAVAILABLE"
    # A widget is answered without the customer: the default persona, degraded, not an error.
    assert not isinstance(widget, grpc.RpcError), widget.details()
    assert widget.config.persona.persona_id == "visitor"
    assert not widget.cached


def test_a_call_to_a_neighbour_gets_no_more_time_than_the_caller_left(engine: Engine) -> None:
    admin = new_key(engine)
    with stalled_service() as hung:
        settings = Settings(
            api_key=admin,
            profiles_address=hung.address,
            call_deadline_seconds=PATIENCE,
            customer_refresh_seconds=0,
        )
        server = create_server(
            SERVICES["segments"].build(engine, settings),
            address="127.0.0.1:0",
            gate=gate(engine),
            max_workers=4,
        )
        try:
            with keyed_channel(f"127.0.0.1:{server.port}", admin) as channel:
                segments = segments_pb2_grpc.SegmentServiceStub(channel)
                evaluate = spb.EvaluateCustomerRequest(customer_id="acme")
                hurried = outcome(lambda: segments.EvaluateCustomer(evaluate, timeout=2))
                hung.wait_for_call(GET_CUSTOMER)
                # The caller without a deadline of its own: the configured one applies.
                patient = threading.Thread(
                    target=lambda: outcome(lambda: segments.EvaluateCustomer(evaluate)),
                    daemon=True,
                )
                patient.start()
                hung.wait_for_call(GET_CUSTOMER, count=2)
                hung.release()
                patient.join(timeout=PATIENCE)
        finally:
            server.stop(grace=1)

    assert isinstance(hurried, grpc.RpcError)
    assert hurried.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    hurried_left, patient_left = hung.time_left
    # Profiles was asked to answer within what the hurried caller had left, not within the
    # configured minute that would have held a segments thread long after it gave up.
    # (grpc rounds a deadline up as it crosses the wire: a few milliseconds may come back.)
    assert hurried_left <= 2.1
    assert patient_left > PATIENCE - 10
