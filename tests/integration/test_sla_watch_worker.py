"""The SLA watch as deployed: a real ``switchboard worker`` serving the ``sla`` queue on a
real Redis runs ``switchboard.sla.watch`` and the breach shows on the conversation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from switchboard.routing.v1 import routing_pb2 as pb
from switchboard.routing.v1 import routing_pb2_grpc

from services.core.clock import utc_now
from services.core.server import RunningServer, create_server
from services.core.settings import Settings
from services.routing.server import routing_specs
from tests.integration.routing_setup import (
    Routing,
    action,
    create_policy,
    create_queue,
    moment,
    set_rules,
    sla_policy,
    timestamp,
)
from tests.support.access import gate, keyed_channel
from tests.support.workers import (
    fresh_redis_database,
    running_worker,
    settings_of,
    wait_for,
    worker_environment,
)
from workers.app import create_celery_app


@pytest.fixture
def wall_clock_routing(
    engine: Engine, profiles_server: RunningServer, segments_server: RunningServer, admin_key: str
) -> Iterator[Routing]:
    # The worker watches on the wall clock, so the server reads on it too.
    settings = Settings(
        profiles_address=f"127.0.0.1:{profiles_server.port}",
        segments_address=f"127.0.0.1:{segments_server.port}",
        api_key=admin_key,
    )
    running = create_server(
        routing_specs(engine, settings, utc_now),
        address="127.0.0.1:0",
        gate=gate(engine),
        max_workers=8,
    )
    try:
        with keyed_channel(f"127.0.0.1:{running.port}", admin_key) as channel:
            yield routing_pb2_grpc.RoutingServiceStub(channel)
    finally:
        running.stop(grace=1)


@pytest.fixture
def sla_worker(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    profiles_server: RunningServer,
    segments_server: RunningServer,
    admin_key: str,
) -> Iterator[Settings]:
    ports = {"profiles": profiles_server.port, "segments": segments_server.port}
    for redis_database in fresh_redis_database(redis_url, 5):
        env = worker_environment(tmp_path / "var", database_url, redis_database, ports, admin_key)
        with running_worker(env, "--queues", "sla"):
            yield settings_of(env)


def test_the_worker_records_a_breach_of_a_conversation_routed_on_the_wall_clock(
    wall_clock_routing: Routing, sla_worker: Settings
) -> None:
    routing = wall_clock_routing
    create_policy(routing, sla_policy("first_1m", first_response=timedelta(minutes=1)))
    create_queue(routing, "general")
    set_rules(routing, [], default=action("general", policy="first_1m"))
    started = utc_now() - timedelta(minutes=5)
    request = pb.RouteConversationRequest(
        conversation_id="chat-1", channel=pb.CHANNEL_CHAT, time=timestamp(started)
    )
    routing.RouteConversation(request)

    create_celery_app(sla_worker).send_task("switchboard.sla.watch")

    def breaches() -> list[pb.ConversationEvent]:
        request = pb.GetConversationRequest(conversation_id="chat-1")
        events = routing.GetConversation(request).conversation.events
        return [e for e in events if e.kind == pb.CONVERSATION_EVENT_KIND_SLA_BREACHED]

    (recorded,) = wait_for(breaches, "the worker to record the breach", timeout=60)
    assert recorded.sla_metric == pb.SLA_METRIC_FIRST_RESPONSE
    assert moment(recorded.time) == started + timedelta(minutes=1)
