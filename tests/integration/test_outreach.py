"""Outreach webhooks end to end: endpoints and subscriptions through the OutreachService,
a customer changed through the ProfileService and re-evaluated through the SegmentService,
and a real `switchboard worker` on a real Redis POSTing to a real HTTP receiver."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from google.protobuf import field_mask_pb2, struct_pb2
from sqlalchemy import Engine
from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.profiles.v1 import profiles_pb2_grpc
from switchboard.segments.v1 import outreach_pb2 as opb
from switchboard.segments.v1 import outreach_pb2_grpc, segments_pb2_grpc
from switchboard.segments.v1 import segments_pb2 as spb

from services.core.db import write_transaction
from services.core.server import RunningServer, create_server
from services.core.settings import Settings
from services.outreach.cli import outreach as outreach_cli
from services.outreach.delivery import Dispatcher, encode_body, webhook_headers
from services.outreach.outbox import NewDelivery, endpoint_exists, enqueue_deliveries
from services.outreach.repository import OutreachRepository
from services.outreach.signing import verify
from services.segments.server import segments_specs
from tests.support.access import gate, keyed_channel
from tests.support.processes import RunningCommand
from tests.support.rpc import call_error, error_info, field_violations, misses
from tests.support.stores import free_port
from tests.support.workers import (
    fresh_redis_database,
    running_worker,
    settings_of,
    wait_for,
    worker_environment,
)
from workers.app import create_celery_app

Outreach = outreach_pb2_grpc.OutreachServiceStub
Segments = segments_pb2_grpc.SegmentServiceStub
Profiles = profiles_pb2_grpc.ProfileServiceStub

CS_SECRET = "whsec_customer-success-0123456789"

# ---- a webhook receiver in the test process --------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


class _RoomyHTTPServer(ThreadingHTTPServer):
    # Dispatchers open up to 8 connections each; with the default backlog of 5 a connection
    # can wait out the webhook timeout on a busy machine and be retried a minute later.
    request_queue_size = 128


@dataclass
class Receiver:
    """An HTTP server that records every POST and answers the next scripted status (200
    once the script runs out, or ``fallback``)."""

    url: str = ""
    script: list[int] = field(default_factory=list)
    fallback: int = 200
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: Received) -> int:
        with self.lock:
            self.received.append(request)
            return self.script.pop(0) if self.script else self.fallback

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.received)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    recorder = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            code = recorder.answer(Received(dict(self.headers.items()), body))
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = _RoomyHTTPServer(("127.0.0.1", 0), Handler)
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/switchboard"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield recorder
    server.shutdown()
    server.server_close()


# ---- servers, stubs and a worker -------------------------------------------------------------


@pytest.fixture
def segments_server(
    engine: Engine, profiles_server: RunningServer, admin_key: str
) -> Iterator[RunningServer]:
    """The segments server as `switchboard serve segments` builds it: SegmentService and
    OutreachService side by side, on the wall clock the worker also uses."""
    settings = Settings(
        profiles_address=f"127.0.0.1:{profiles_server.port}",
        call_deadline_seconds=5,
        api_key=admin_key,
    )
    running = create_server(
        segments_specs(engine, settings), address="127.0.0.1:0", gate=gate(engine), max_workers=8
    )
    yield running
    running.stop(grace=1)


@pytest.fixture
def outreach(segments_server: RunningServer, admin_key: str) -> Iterator[Outreach]:
    with keyed_channel(f"127.0.0.1:{segments_server.port}", admin_key) as channel:
        yield Outreach(channel)


@pytest.fixture
def worker(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Settings]:
    """`switchboard worker` on the outreach queue, retrying after 0.2 s, 0.4 s... and giving
    up after 3 attempts."""
    for fresh in fresh_redis_database(redis_url, 5):
        env = worker_environment(tmp_path / "var", database_url, fresh)
        env |= {
            "SWITCHBOARD_OUTREACH_RETRY_BASE_SECONDS": "0.2",
            "SWITCHBOARD_OUTREACH_MAX_ATTEMPTS": "3",
            "SWITCHBOARD_OUTREACH_TIMEOUT_SECONDS": "3",
        }
        with running_worker(env, "--queues=outreach"):
            yield settings_of(env)


def dispatch_until(settings: Settings, check: Callable[[], Any], what: str) -> Any:
    """Send `switchboard.outreach.dispatch_due` the way beat does, until ``check`` holds."""
    app = create_celery_app(settings)
    last_sent = 0.0

    def tick() -> Any:
        nonlocal last_sent
        if time.monotonic() - last_sent > 0.3:
            app.send_task("switchboard.outreach.dispatch_due")
            last_sent = time.monotonic()
        return check()

    return wait_for(tick, what, timeout=60)


# ---- the scenario: customer success hears about enterprise customers at risk ------------------


def struct(document: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(document)
    return message


def create_segment(segments: Segments, segment_id: str, rule: dict[str, Any]) -> None:
    segments.CreateSegment(
        spb.CreateSegmentRequest(
            segment=spb.Segment(segment_id=segment_id, rule=struct(rule), enabled=True),
            actor="ada@example.com",
        )
    )


def create_endpoint(
    outreach: Outreach, endpoint_id: str, url: str, secret: str = ""
) -> opb.CreateWebhookEndpointResponse:
    return outreach.CreateWebhookEndpoint(
        opb.CreateWebhookEndpointRequest(
            endpoint=opb.WebhookEndpoint(endpoint_id=endpoint_id, url=url, enabled=True),
            secret=secret,
        )
    )


def set_up_alert(segments: Segments, outreach: Outreach, url: str) -> None:
    """Enterprise and at-risk segments; at-risk entries of enterprise customers go to CS."""
    create_segment(segments, "enterprise", {"plan": "enterprise"})
    create_segment(segments, "at_risk", {"health_score": {"$lt": 40}})
    create_endpoint(outreach, "cs-team", url, secret=CS_SECRET)
    outreach.CreateOutreachSubscription(
        opb.CreateOutreachSubscriptionRequest(
            subscription=opb.OutreachSubscription(
                subscription_id="enterprise-at-risk",
                segment_id="at_risk",
                transition=spb.MEMBERSHIP_CHANGE_KIND_ENTERED,
                endpoint_id="cs-team",
                require_segment_ids=["enterprise"],
            )
        )
    )


def create_customer(profiles: Profiles, billing_id: str, plan: str) -> str:
    customer = ppb.Customer(external_ids={"billing": billing_id}, plan=plan, health_score=80)
    created = profiles.CreateCustomer(ppb.CreateCustomerRequest(customer=customer))
    return str(created.customer.customer_id)


def set_health(profiles: Profiles, customer_id: str, score: float) -> None:
    profiles.UpdateCustomer(
        ppb.UpdateCustomerRequest(
            customer=ppb.Customer(customer_id=customer_id, health_score=score),
            update_mask=field_mask_pb2.FieldMask(paths=["health_score"]),
        )
    )


def recompute_changed(segments: Segments) -> spb.RecomputeMembershipsResponse:
    return segments.RecomputeMemberships(
        spb.RecomputeMembershipsRequest(scope=spb.RECOMPUTE_SCOPE_CHANGED)
    )


def turn_at_risk(segments: Segments, profiles: Profiles, plan: str, billing_id: str) -> str:
    """A healthy customer, re-evaluated, then its health drops and it is re-evaluated again."""
    customer_id = create_customer(profiles, billing_id, plan)
    recompute_changed(segments)
    set_health(profiles, customer_id, 20)
    assert recompute_changed(segments).entered_count >= 1
    return customer_id


def deliveries(outreach: Outreach, **filters: Any) -> list[opb.Delivery]:
    return list(outreach.ListDeliveries(opb.ListDeliveriesRequest(**filters)).deliveries)


def the_delivery(outreach: Outreach, customer_id: str) -> opb.Delivery:
    found = deliveries(outreach, customer_id=customer_id)
    assert len(found) == 1, found
    return outreach.GetDelivery(opb.GetDeliveryRequest(delivery_id=found[0].delivery_id)).delivery


def dispatch_until_status(
    settings: Settings, outreach: Outreach, customer_id: str, status: opb.DeliveryStatus.ValueType
) -> None:
    """Dispatch until the customer's one delivery reaches ``status``."""
    dispatch_until(
        settings,
        lambda: the_delivery(outreach, customer_id).status == status,
        f"{customer_id}'s delivery to be {opb.DeliveryStatus.Name(status)}",
    )


def test_an_enterprise_customer_turning_at_risk_sends_customer_success_a_signed_webhook(
    segments: Segments, profiles: Profiles, outreach: Outreach, receiver: Receiver, worker: Settings
) -> None:
    set_up_alert(segments, outreach, receiver.url)
    acme = turn_at_risk(segments, profiles, "enterprise", "cus_acme")
    bloom = turn_at_risk(segments, profiles, "starter", "cus_bloom")

    [webhook] = dispatch_until(worker, receiver.requests, "the webhook to arrive")

    assert verify(
        CS_SECRET, webhook.body, webhook.headers["Switchboard-Signature"], datetime.now(UTC)
    )
    assert webhook.headers["Content-Type"] == "application/json"
    assert webhook.headers["Switchboard-Event"] == "segment.entered"
    assert webhook.headers["Switchboard-Delivery-Attempt"] == "1"
    payload = webhook.payload
    assert payload["customer_id"] == acme
    assert payload["segment_id"] == "at_risk"
    assert payload["transition"] == "entered"
    assert payload["segments"] == ["at_risk", "enterprise"]
    assert payload["trigger"] == "customer_changed"
    assert payload["event_id"] == webhook.headers["Idempotency-Key"]

    # The dispatcher records the outcome once the receiver's answer is back, a moment after
    # the receiver has the request.
    dispatch_until_status(worker, outreach, acme, opb.DELIVERY_STATUS_DELIVERED)
    delivered = the_delivery(outreach, acme)
    assert delivered.delivery_id == webhook.headers["Idempotency-Key"]
    assert [(a.attempt, a.status_code) for a in delivered.attempts] == [(1, 200)]
    assert delivered.HasField("deliver_time")
    # Bloom is at risk too, but not an enterprise customer: nobody is alerted.
    assert deliveries(outreach, customer_id=bloom) == []
    # Re-evaluating again finds nothing new, so nothing more is made to send.
    assert recompute_changed(segments).entered_count == 0
    assert len(deliveries(outreach)) == 1


def test_a_receiver_failing_twice_gets_the_third_attempt_with_the_same_key(
    segments: Segments, profiles: Profiles, outreach: Outreach, receiver: Receiver, worker: Settings
) -> None:
    receiver.script = [500, 503]
    set_up_alert(segments, outreach, receiver.url)
    acme = turn_at_risk(segments, profiles, "enterprise", "cus_acme")

    dispatch_until_status(worker, outreach, acme, opb.DELIVERY_STATUS_DELIVERED)

    webhooks = receiver.requests()
    assert [w.headers["Switchboard-Delivery-Attempt"] for w in webhooks] == ["1", "2", "3"]
    assert len({w.headers["Idempotency-Key"] for w in webhooks}) == 1
    assert len({w.body for w in webhooks}) == 1, "every attempt sends the same body"
    log = the_delivery(outreach, acme).attempts
    assert [(a.attempt, a.status_code) for a in log] == [(1, 500), (2, 503), (3, 200)]
    assert log[0].error.startswith("HTTP 500")


def test_a_receiver_always_failing_leaves_the_delivery_dead_and_a_replay_delivers_it(
    segments: Segments,
    profiles: Profiles,
    outreach: Outreach,
    receiver: Receiver,
    worker: Settings,
    segments_server: RunningServer,
    admin_key: str,
) -> None:
    receiver.fallback = 500
    set_up_alert(segments, outreach, receiver.url)
    acme = turn_at_risk(segments, profiles, "enterprise", "cus_acme")

    dispatch_until_status(worker, outreach, acme, opb.DELIVERY_STATUS_DEAD)
    dead = the_delivery(outreach, acme)
    assert dead.attempt_count == 3
    assert dead.last_status_code == 500
    assert len(receiver.requests()) == 3

    # The on-call engineer fixes the receiver and replays from the command line.
    receiver.fallback = 200
    cli = CliRunner(
        env={
            "SWITCHBOARD_SEGMENTS_ADDRESS": f"127.0.0.1:{segments_server.port}",
            "SWITCHBOARD_API_KEY": admin_key,
        }
    )
    listed = cli.invoke(outreach_cli, ["deliveries", "--status", "dead"])
    assert listed.exit_code == 0, listed.output
    assert dead.delivery_id in listed.output and "attempts=3" in listed.output
    replayed = cli.invoke(outreach_cli, ["replay", dead.delivery_id])
    assert replayed.exit_code == 0, replayed.output

    dispatch_until_status(worker, outreach, acme, opb.DELIVERY_STATUS_DELIVERED)
    last = receiver.requests()[-1]
    assert last.headers["Idempotency-Key"] == dead.delivery_id
    assert last.headers["Switchboard-Delivery-Attempt"] == "4"
    assert verify(CS_SECRET, last.body, last.headers["Switchboard-Signature"], datetime.now(UTC))
    assert [a.status_code for a in the_delivery(outreach, acme).attempts] == [500, 500, 500, 200]


# ---- the contract, without a worker ----------------------------------------------------------


def test_a_secret_is_shown_once_and_never_by_get_list_or_updates_that_keep_it(
    outreach: Outreach,
) -> None:
    created = create_endpoint(outreach, "", "https://hooks.example.com/a")
    secret = created.secret
    endpoint_id = created.endpoint.endpoint_id
    assert secret.startswith("whsec_") and len(secret) > 32
    assert endpoint_id

    answers: list[Any] = [
        outreach.GetWebhookEndpoint(opb.GetWebhookEndpointRequest(endpoint_id=endpoint_id)),
        outreach.ListWebhookEndpoints(opb.ListWebhookEndpointsRequest()),
        outreach.UpdateWebhookEndpoint(
            opb.UpdateWebhookEndpointRequest(
                endpoint=opb.WebhookEndpoint(endpoint_id=endpoint_id, description="renamed"),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            )
        ),
    ]
    for answer in answers:
        assert secret.encode() not in answer.SerializeToString()

    rotated = outreach.UpdateWebhookEndpoint(
        opb.UpdateWebhookEndpointRequest(
            endpoint=opb.WebhookEndpoint(endpoint_id=endpoint_id), rotate_secret=True
        )
    )
    assert rotated.secret and rotated.secret != secret
    again = outreach.GetWebhookEndpoint(opb.GetWebhookEndpointRequest(endpoint_id=endpoint_id))
    assert rotated.secret.encode() not in again.SerializeToString()
    assert again.endpoint.description == "renamed"


def test_bad_requests_name_the_field(outreach: Outreach) -> None:
    def endpoint(url: str, secret: str = "") -> Callable[[], object]:
        return lambda: create_endpoint(outreach, "", url, secret)

    def subscription(**fields: Any) -> Callable[[], object]:
        message = opb.OutreachSubscription(
            **{
                "segment_id": "at_risk",
                "endpoint_id": "cs-team",
                "transition": spb.MEMBERSHIP_CHANGE_KIND_ENTERED,
                **fields,
            }
        )
        return lambda: outreach.CreateOutreachSubscription(
            opb.CreateOutreachSubscriptionRequest(subscription=message)
        )

    assert (
        misses(
            {
                "no url": (endpoint(""), "endpoint.url"),
                "ftp url": (endpoint("ftp://example.com/x"), "endpoint.url"),
                "relative url": (endpoint("/hooks"), "endpoint.url"),
                "short secret": (endpoint("https://example.com/", "short"), "secret"),
                "no transition": (
                    subscription(transition=spb.MEMBERSHIP_CHANGE_KIND_UNSPECIFIED),
                    "subscription.transition",
                ),
                "bad id": (
                    subscription(subscription_id="Not An Id"),
                    "subscription.subscription_id",
                ),
                "bad required": (
                    subscription(require_segment_ids=["Bad!"]),
                    "subscription.require_segment_ids",
                ),
                "bad status filter": (
                    lambda: outreach.ListDeliveries(opb.ListDeliveriesRequest(status=99)),  # type: ignore[arg-type]
                    "status",
                ),
                "bad page token": (
                    lambda: outreach.ListDeliveries(opb.ListDeliveriesRequest(page_token="nope")),
                    "page_token",
                ),
            }
        )
        == {}
    )


def test_subscriptions_need_their_segments_and_endpoint_and_keep_the_endpoint_alive(
    segments: Segments, outreach: Outreach
) -> None:
    create_segment(segments, "at_risk", {"health_score": {"$lt": 40}})
    create_endpoint(outreach, "cs-team", "https://hooks.example.com/cs")

    def subscribe(segment_id: str, required: list[str], endpoint_id: str = "cs-team") -> Any:
        return outreach.CreateOutreachSubscription(
            opb.CreateOutreachSubscriptionRequest(
                subscription=opb.OutreachSubscription(
                    subscription_id="alert",
                    segment_id=segment_id,
                    transition=spb.MEMBERSHIP_CHANGE_KIND_ENTERED,
                    endpoint_id=endpoint_id,
                    require_segment_ids=required,
                )
            )
        )

    for call, named in [
        (lambda: subscribe("churned", []), "churned"),
        (lambda: subscribe("at_risk", ["enterprise"]), "enterprise"),
        (lambda: subscribe("at_risk", [], endpoint_id="nobody"), "nobody"),
    ]:
        error = call_error(call)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert named in (error.details() or "")
    assert field_violations(call_error(lambda: subscribe("", []))) == {
        "subscription.segment_id": "is required"
    }

    subscribe("at_risk", [])
    listed = outreach.ListOutreachSubscriptions(opb.ListOutreachSubscriptionsRequest())
    assert [s.subscription_id for s in listed.subscriptions] == ["alert"]
    in_use = call_error(
        lambda: outreach.DeleteWebhookEndpoint(
            opb.DeleteWebhookEndpointRequest(endpoint_id="cs-team")
        )
    )
    assert in_use.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(in_use).reason == "ENDPOINT_IN_USE"

    outreach.DeleteOutreachSubscription(
        opb.DeleteOutreachSubscriptionRequest(subscription_id="alert")
    )
    outreach.DeleteWebhookEndpoint(opb.DeleteWebhookEndpointRequest(endpoint_id="cs-team"))
    gone = call_error(
        lambda: outreach.GetWebhookEndpoint(opb.GetWebhookEndpointRequest(endpoint_id="cs-team"))
    )
    assert gone.code() == grpc.StatusCode.NOT_FOUND


def test_a_pending_delivery_cannot_be_replayed_and_deliveries_page_newest_first(
    segments: Segments, profiles: Profiles, outreach: Outreach
) -> None:
    set_up_alert(segments, outreach, "http://127.0.0.1:9/unused")
    customers = [turn_at_risk(segments, profiles, "enterprise", f"cus_{n}") for n in range(3)]

    first = outreach.ListDeliveries(opb.ListDeliveriesRequest(page_size=2))
    rest = outreach.ListDeliveries(
        opb.ListDeliveriesRequest(page_size=2, page_token=first.next_page_token)
    )
    listed = [d.customer_id for d in [*first.deliveries, *rest.deliveries]]
    assert listed == customers[::-1]
    assert not rest.next_page_token
    assert all(d.status == opb.DELIVERY_STATUS_PENDING for d in first.deliveries)
    assert deliveries(outreach, status=opb.DELIVERY_STATUS_DEAD) == []

    error = call_error(
        lambda: outreach.ReplayDelivery(
            opb.ReplayDeliveryRequest(delivery_id=first.deliveries[0].delivery_id)
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    missing = call_error(
        lambda: outreach.ReplayDelivery(opb.ReplayDeliveryRequest(delivery_id="nope"))
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


def test_the_outbox_makes_one_delivery_per_key_inside_the_callers_transaction(
    engine: Engine, outreach: Outreach
) -> None:
    create_endpoint(outreach, "pager", "https://hooks.example.com/p")
    breach = NewDelivery(
        endpoint_id="pager",
        event_type="sla.breached",
        idempotency_key="sla-breached-conv-1",
        payload={"conversation_id": "conv-1"},
        customer_id="acme",
    )
    now = datetime.now(UTC)

    with write_transaction(engine) as session:
        assert endpoint_exists(session, "pager") and not endpoint_exists(session, "nobody")
        assert enqueue_deliveries(session, [breach, breach], now) == 1
    with write_transaction(engine) as session:
        assert enqueue_deliveries(session, [breach], now) == 0
    with pytest.raises(RuntimeError), write_transaction(engine) as session:
        enqueue_deliveries(session, [replace(breach, idempotency_key="sla-warning-conv-1")], now)
        raise RuntimeError("the caller's transaction fails")

    [stored] = deliveries(outreach)
    assert stored.delivery_id == "sla-breached-conv-1"
    assert stored.event_type == "sla.breached" and stored.customer_id == "acme"
    assert stored.status == opb.DELIVERY_STATUS_PENDING


def test_the_local_receiver_checks_signatures_and_drops_repeats(tmp_path: Path) -> None:
    port = free_port()
    command = RunningCommand(
        ["outreach", "receive", "--port", str(port), "--secret", CS_SECRET],
        {"SWITCHBOARD_DATA_DIR": str(tmp_path)},
    )
    try:
        command.wait_for_line("listening", timeout=30)
        body = encode_body({"customer_id": "acme", "segments": ["at_risk", "enterprise"]})

        def post(secret: str, key: str) -> int:
            headers = webhook_headers(
                secret=secret,
                body=body,
                event_type="segment.entered",
                delivery_id=key,
                attempt=1,
                now=datetime.now(UTC),
            )
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/", data=body, headers=headers, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return int(response.status)
            except urllib.error.HTTPError as error:
                return error.code

        assert post(CS_SECRET, "key-1") == 200
        line = command.wait_for_line("segment.entered", timeout=10)
        assert "customer=acme" in line and "segments=at_risk,enterprise" in line
        assert post(CS_SECRET, "key-1") == 200
        command.wait_for_line("duplicate key-1: dropped", timeout=10)
        assert post("whsec_not-the-right-secret-000", "key-2") == 401
        command.wait_for_line("bad signature", timeout=10)
    finally:
        command.stop(signal.SIGINT)


def test_dispatchers_running_at_once_send_each_delivery_once(
    engine: Engine, outreach: Outreach, receiver: Receiver
) -> None:
    create_endpoint(outreach, "cs-team", receiver.url, secret=CS_SECRET)
    wanted = [
        NewDelivery("cs-team", "segment.entered", f"key-{n}", {"n": n}, f"cus-{n}")
        for n in range(40)
    ]
    with write_transaction(engine) as session:
        enqueue_deliveries(session, wanted, datetime.now(UTC))
    dispatchers = [
        Dispatcher(
            OutreachRepository(engine), max_attempts=3, retry_base_seconds=60, timeout_seconds=5
        )
        for _ in range(3)
    ]
    start = threading.Barrier(len(dispatchers))

    def run(dispatcher: Dispatcher) -> int:
        start.wait()
        return dispatcher.dispatch_due().delivered

    with ThreadPoolExecutor(len(dispatchers)) as pool:
        delivered = list(pool.map(run, dispatchers))

    keys = sorted(r.headers["Idempotency-Key"] for r in receiver.requests())
    assert keys == sorted(d.idempotency_key for d in wanted)
    assert sum(delivered) == 40
    assert deliveries(outreach, status=opb.DELIVERY_STATUS_PENDING, page_size=100) == []


def test_a_segment_that_outreach_watches_or_requires_cannot_be_deleted(
    segments: Segments, outreach: Outreach
) -> None:
    set_up_alert(segments, outreach, "https://hooks.example.com/cs")

    for segment_id in ("at_risk", "enterprise"):
        error = call_error(
            lambda segment_id=segment_id: segments.DeleteSegment(
                spb.DeleteSegmentRequest(segment_id=segment_id)
            )
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "enterprise-at-risk" in (error.details() or "")

    outreach.DeleteOutreachSubscription(
        opb.DeleteOutreachSubscriptionRequest(subscription_id="enterprise-at-risk")
    )
    segments.DeleteSegment(spb.DeleteSegmentRequest(segment_id="at_risk"))
