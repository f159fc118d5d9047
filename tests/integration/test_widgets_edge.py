"""The widget port: the routing process's asyncio edge, where widgets' calls are answered
from Redis on the event loop, with the same checks, errors and freshness as the main port."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import redis
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import Engine
from switchboard.routing.v1 import widgets_pb2 as wpb
from switchboard.routing.v1 import widgets_pb2_grpc

from services.access.domain import Role
from services.core.clock import utc_now
from services.core.edge import FastPath
from services.core.server import RunningServer
from services.routing.server import WIDGET_SERVICE_NAME
from services.widgets.cache import VERSION_KEY, CacheDown, RedisWidgetCache
from tests.integration.conftest import ManualClock
from tests.integration.routing_setup import Profiles, Segments
from tests.integration.widgets_setup import (
    Widgets,
    config_of,
    serve_widgets,
    set_up_team_on,
    team_served,
)
from tests.support.access import keyed_channel, new_key
from tests.support.stores import redis_server
from tests.support.workers import fresh_redis_database

# With its edge, and no refresh falling due during a test (long enough): the edge then
# answers warm calls itself, which is what these tests are about.
EDGE_SERVING: dict[str, Any] = {"refresh_seconds": 600.0, "edge": True}


@pytest.fixture
def fresh_redis(redis_url: str) -> Iterator[str]:
    yield from fresh_redis_database(redis_url, 4)


@pytest.fixture
def served(
    engine: Engine,
    profiles_server: RunningServer,
    segments_server: RunningServer,
    segments_clock: ManualClock,
    fresh_redis: str,
    profiles: Profiles,
    segments: Segments,
    admin_key: str,
) -> Iterator[tuple[RunningServer, Widgets]]:
    """The team set up through the main port, and that server (with its edge)."""
    segments_clock.now = utc_now()
    with (
        team_served(
            engine,
            profiles_server,
            segments_server,
            fresh_redis,
            admin_key,
            (segments, profiles),
            **EDGE_SERVING,
        ) as running,
        keyed_channel(f"127.0.0.1:{running.port}", admin_key) as channel,
    ):
        yield running, widgets_pb2_grpc.WidgetServiceStub(channel)


@pytest.fixture
def widget_key(engine: Engine) -> str:
    return new_key(engine, Role.WIDGET)


@pytest.fixture
def edge(served: tuple[RunningServer, Widgets], widget_key: str) -> Iterator[Widgets]:
    """A chat widget's client of the edge."""
    running, _admin = served
    assert running.edge is not None
    with keyed_channel(f"127.0.0.1:{running.edge.port}", widget_key) as channel:
        yield widgets_pb2_grpc.WidgetServiceStub(channel)


def fast_path(running: RunningServer) -> FastPath:
    """What the edge runs on its loop for GetWidgetConfig before any thread."""
    assert running.edge is not None
    return running.edge.fast_paths[f"/{WIDGET_SERVICE_NAME}/GetWidgetConfig"]


def test_a_warm_widget_call_on_the_edge_is_answered_from_the_cache(
    served: tuple[RunningServer, Widgets], edge: Widgets
) -> None:
    first = config_of(edge, customer_id="acme")
    again, call = edge.GetWidgetConfig.with_call(
        wpb.GetWidgetConfigRequest(visitor=wpb.Visitor(customer_id="acme")),
        metadata=(("x-request-id", "widget-42"),),
    )

    assert not first.cached and again.cached
    assert again.config == first.config
    assert again.config.persona.greeting == "Good morning Ada, welcome back to Acme support."
    assert ("x-request-id", "widget-42") in call.trailing_metadata()
    # The first call computed in a thread; warm ones are answered on the event loop (but for
    # one that finds the cache's version check due, every second, and runs it in a thread).
    for _ in range(2):
        assert config_of(edge, customer_id="acme").cached
    answered = {
        where: served[0].metrics.registry.get_sample_value(
            "switchboard_edge_answers_total",
            {"method": f"/{WIDGET_SERVICE_NAME}/GetWidgetConfig", "where": where},
        )
        for where in ("loop", "thread")
    }
    assert answered["loop"] is not None and answered["thread"] is not None
    assert answered["loop"] >= 1 and answered["loop"] + answered["thread"] == 4


def test_the_event_loop_read_answers_only_what_needs_nothing_more(
    served: tuple[RunningServer, Widgets], edge: Widgets
) -> None:
    fast = fast_path(served[0])

    def read(**visitor: Any) -> bytes | None:
        request = wpb.GetWidgetConfigRequest(visitor=wpb.Visitor(**visitor))
        answer: bytes | None = asyncio.run(fast(request, None))  # type: ignore[arg-type]
        if answer is None:
            return None
        response = wpb.GetWidgetConfigResponse.FromString(answer)
        assert response.cached
        return response.config.SerializeToString()

    assert read(customer_id="acme") is None, "nothing cached yet: the thread computes"
    computed = config_of(edge, customer_id="acme").config
    assert read(customer_id="acme") == computed.SerializeToString()
    # The widget's own values change the greeting, and an external id needs a lookup.
    assert read(customer_id="acme", greeting_values={"first_name": "Ada"}) is None
    assert read(external_id="billing:cus_globex") is None


def test_a_policy_change_is_never_answered_from_old_entries_on_the_edge(
    served: tuple[RunningServer, Widgets], edge: Widgets
) -> None:
    _running, admin = served
    config_of(edge, customer_id="bloom")
    assert config_of(edge, customer_id="bloom").cached

    stored = admin.GetPersona(wpb.GetPersonaRequest(persona_id="friendly")).persona
    stored.greeting = "Hey {first_name}, good to see you."
    admin.UpdatePersona(wpb.UpdatePersonaRequest(persona=stored))

    right_after = config_of(edge, customer_id="bloom")
    assert not right_after.cached
    assert right_after.config.persona.greeting == "Hey Ben, good to see you."


def test_bad_input_and_strangers_get_the_same_statuses_as_on_the_main_port(
    served: tuple[RunningServer, Widgets], edge: Widgets
) -> None:
    running, _admin = served
    assert running.edge is not None

    with pytest.raises(grpc.RpcError) as malformed:
        config_of(edge, customer_id="not an id!")
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in _bad_request(malformed.value).field_violations]
    assert fields == ["visitor.customer_id"]

    with pytest.raises(grpc.RpcError) as not_allowed:
        edge.DeletePersona(wpb.DeletePersonaRequest(persona_id="friendly"))
    assert not_allowed.value.code() == grpc.StatusCode.PERMISSION_DENIED

    with grpc.insecure_channel(f"127.0.0.1:{running.edge.port}") as bare:
        stranger = widgets_pb2_grpc.WidgetServiceStub(bare)
        with pytest.raises(grpc.RpcError) as keyless:
            config_of(stranger, customer_id="acme")
    assert keyless.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_edge_serves_health_and_reflection(served: tuple[RunningServer, Widgets]) -> None:
    running, _admin = served
    assert running.edge is not None
    with grpc.insecure_channel(f"127.0.0.1:{running.edge.port}") as channel:
        checked = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=WIDGET_SERVICE_NAME), timeout=5
        )
        listed = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for reply in listed for s in reply.list_services_response.service}
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    assert WIDGET_SERVICE_NAME in names


def test_with_redis_gone_the_edge_still_answers(
    engine: Engine,
    profiles_server: RunningServer,
    segments_server: RunningServer,
    segments_clock: ManualClock,
    profiles: Profiles,
    segments: Segments,
    admin_key: str,
    widget_key: str,
) -> None:
    segments_clock.now = utc_now()
    with redis_server() as doomed_redis:
        running = serve_widgets(
            engine, profiles_server, segments_server, doomed_redis, admin_key, **EDGE_SERVING
        )
        set_up_team_on(running, admin_key, segments, profiles)
        assert running.edge is not None
        widget_channel = keyed_channel(f"127.0.0.1:{running.edge.port}", widget_key)
        edge = widgets_pb2_grpc.WidgetServiceStub(widget_channel)
        config_of(edge, customer_id="acme")
        assert config_of(edge, customer_id="acme").cached
    try:
        answered = config_of(edge, customer_id="acme")
        assert not answered.cached
        assert answered.config.persona.greeting == "Good morning Ada, welcome back to Acme support."
    finally:
        widget_channel.close()
        running.stop(grace=1)


def _bad_request(error: grpc.RpcError) -> error_details_pb2.BadRequest:
    status = status_pb2.Status.FromString(
        dict(error.trailing_metadata())["grpc-status-details-bin"]  # type: ignore[arg-type,index]
    )
    found = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(found)
    return found


def test_a_read_on_the_loop_gives_up_on_a_redis_that_stops_answering(fresh_redis: str) -> None:
    cache = RedisWidgetCache(fresh_redis, timeout_seconds=0.2)
    admin = redis.Redis.from_url(fresh_redis)
    admin.set(VERSION_KEY, b"7")

    async def scenario() -> None:
        assert await cache.read_async("c:acme") == (7, None)
        # Redis holds every client's commands for a second: the read must not wait it out
        # (it would then succeed), and the next read after the pause opens a new connection.
        admin.execute_command("CLIENT", "PAUSE", "1000", "ALL")  # type: ignore[no-untyped-call]
        with pytest.raises(CacheDown):
            await cache.read_async("c:acme")
        await asyncio.sleep(1.2)
        assert await cache.read_async("c:acme") == (7, None)

    try:
        asyncio.run(scenario())
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")  # type: ignore[no-untyped-call]
        admin.close()
