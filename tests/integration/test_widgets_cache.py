"""Widget answers in a real Redis, precomputed by a real Celery worker: filled ahead of the
widgets' calls, never stale after a policy change, refreshed when a customer moves, and
still answered when Redis is gone."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine
from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.routing.v1 import widgets_pb2 as wpb
from switchboard.routing.v1 import widgets_pb2_grpc

from services.core.clock import utc_now
from services.core.server import RunningServer
from services.core.settings import Settings
from services.widgets.cache import PRECOMPUTED_KEY, VERSION_KEY
from services.widgets.precompute import REFRESHED_KEY
from tests.integration.conftest import ManualClock
from tests.integration.routing_setup import Profiles, Segments
from tests.integration.widgets_setup import (
    Widgets,
    config_of,
    serve_widgets,
    set_up_team_on,
    team_served,
)
from tests.support.access import keyed_channel
from tests.support.stores import redis_server
from tests.support.workers import (
    fresh_redis_database,
    running_worker,
    settings_of,
    wait_for,
    worker_environment,
)
from workers.app import create_celery_app


@pytest.fixture
def fresh_redis(redis_url: str) -> Iterator[str]:
    yield from fresh_redis_database(redis_url, 3)


@pytest.fixture
def serve_team(
    engine: Engine,
    profiles_server: RunningServer,
    segments_server: RunningServer,
    segments_clock: ManualClock,
    fresh_redis: str,
    profiles: Profiles,
    segments: Segments,
    admin_key: str,
) -> Iterator[Callable[[bool], Widgets]]:
    """Serves the team with its widget answers in Redis; called with ``widget_port``, gives
    a client of the widget port (which remembers the answers it reads), else of the main."""
    # The worker computes on the wall clock, so the servers use it too.
    segments_clock.now = utc_now()
    with ExitStack() as running_ones:

        def serve(widget_port: bool) -> Widgets:
            running = running_ones.enter_context(
                team_served(
                    engine,
                    profiles_server,
                    segments_server,
                    fresh_redis,
                    admin_key,
                    (segments, profiles),
                    clock=segments_clock,
                    # On the widget port, long enough that no refresh falls due: warm calls
                    # are then answered on its event loop, from what it remembers.
                    refresh_seconds=600.0 if widget_port else 0.0,
                    edge=widget_port,
                )
            )
            port = running.edge.port if running.edge is not None else running.port
            channel = running_ones.enter_context(keyed_channel(f"127.0.0.1:{port}", admin_key))
            return widgets_pb2_grpc.WidgetServiceStub(channel)

        yield serve


@pytest.fixture
def widgets_on_redis(serve_team: Callable[[bool], Widgets]) -> Widgets:
    return serve_team(False)


@pytest.fixture
def widget_port_on_redis(serve_team: Callable[[bool], Widgets]) -> Widgets:
    return serve_team(True)


@pytest.fixture
def worker(
    tmp_path: Path,
    database_url: str,
    fresh_redis: str,
    profiles_server: RunningServer,
    segments_server: RunningServer,
    admin_key: str,
) -> Iterator[Settings]:
    ports = {"profiles": profiles_server.port, "segments": segments_server.port}
    env = worker_environment(tmp_path / "var", database_url, fresh_redis, ports, admin_key)
    with running_worker(env):
        yield settings_of(env)


def run_task(settings: Settings, name: str, done_key: str, **kwargs: Any) -> dict[str, Any]:
    """Send a task to the worker and wait for the Redis key it writes when done."""
    client = redis.Redis.from_url(settings.redis_url)
    client.delete(done_key)
    create_celery_app(settings).send_task(name, kwargs=kwargs)
    found = wait_for(lambda: client.get(done_key), f"{name} to finish")
    return dict(json.loads(found))


def stored_answer(redis_url: str, customer_id: str) -> wpb.WidgetConfig | None:
    """The customer's entry as the workers left it, if it is at the version in force."""
    client = redis.Redis.from_url(redis_url)
    version, value = client.mget(VERSION_KEY, f"sb:widget:c:{customer_id}")
    if value is None:
        return None
    stamp, _, config = value.partition(b":")
    return wpb.WidgetConfig.FromString(config) if stamp == version else None


def test_the_worker_precomputes_every_customer_before_any_widget_asks(
    widgets_on_redis: Widgets, worker: Settings
) -> None:
    outcome = run_task(worker, "switchboard.routing.precompute_widget_configs", PRECOMPUTED_KEY)

    assert outcome["count"] == 4
    first = config_of(widgets_on_redis, customer_id="acme")
    assert first.cached, "the first call found the worker's answer"
    assert first.config.persona.greeting == "Good morning Ada, welcome back to Acme support."
    at_risk = config_of(widgets_on_redis, customer_id="globex")
    assert at_risk.cached and at_risk.config.escalation.policy_id == "at_risk_now"


def test_a_policy_change_is_never_answered_from_old_entries_and_workers_refill_them(
    widgets_on_redis: Widgets, worker: Settings
) -> None:
    run_task(worker, "switchboard.routing.precompute_widget_configs", PRECOMPUTED_KEY)
    assert config_of(widgets_on_redis, customer_id="bloom").cached

    stored = widgets_on_redis.GetPersona(wpb.GetPersonaRequest(persona_id="friendly")).persona
    stored.greeting = "Hey {first_name}, good to see you."
    widgets_on_redis.UpdatePersona(wpb.UpdatePersonaRequest(persona=stored))

    right_after = config_of(widgets_on_redis, customer_id="bloom")
    assert not right_after.cached
    assert right_after.config.persona.greeting == "Hey Ben, good to see you."

    refreshed = run_task(worker, "switchboard.routing.refresh_widget_configs", REFRESHED_KEY)
    assert refreshed["kind"] == "full", "a new version means everyone is recomputed"
    # Nobody asked for Cleo since the change: the worker's refresh put her answer back.
    cleo = config_of(widgets_on_redis, customer_id="cleo")
    assert cleo.cached and cleo.config.persona.persona_id == "starter_bot"


def test_a_customer_who_moves_tier_is_recomputed_by_the_workers_refresh(
    widgets_on_redis: Widgets, worker: Settings, profiles: Profiles
) -> None:
    run_task(worker, "switchboard.routing.refresh_widget_configs", REFRESHED_KEY)
    before = stored_answer(worker.redis_url, "cleo")
    assert before is not None and before.persona.persona_id == "starter_bot"

    profiles.UpdateCustomer(
        ppb.UpdateCustomerRequest(
            customer=ppb.Customer(customer_id="cleo", seats=80),
            update_mask={"paths": ["seats"]},
        )
    )
    refreshed = run_task(worker, "switchboard.routing.refresh_widget_configs", REFRESHED_KEY)

    assert (refreshed["kind"], refreshed["count"]) == ("changed", 1)
    after = stored_answer(worker.redis_url, "cleo")
    assert after is not None and after.persona.persona_id == "detailed"
    answer = config_of(widgets_on_redis, customer_id="cleo")
    assert answer.cached and answer.config.escalation.policy_id == "enterprise_fast"


def test_the_widget_port_answers_what_the_workers_refresh_not_what_it_remembered(
    widget_port_on_redis: Widgets, worker: Settings, profiles: Profiles
) -> None:
    run_task(worker, "switchboard.routing.refresh_widget_configs", REFRESHED_KEY)
    for _ in range(3):
        remembered = config_of(widget_port_on_redis, customer_id="cleo")
        assert remembered.cached and remembered.config.persona.persona_id == "starter_bot"

    profiles.UpdateCustomer(
        ppb.UpdateCustomerRequest(
            customer=ppb.Customer(customer_id="cleo", seats=80),
            update_mask={"paths": ["seats"]},
        )
    )
    run_task(worker, "switchboard.routing.refresh_widget_configs", REFRESHED_KEY)

    # Redis reports the rewritten entry to the widget port on a connection of its own: it
    # lands a moment after the write, not necessarily before the next call.
    answer = wait_for(
        lambda: _if_enterprise(config_of(widget_port_on_redis, customer_id="cleo")),
        "the widget port to answer cleo's new tier",
    )
    assert answer.cached and answer.config.escalation.policy_id == "enterprise_fast"
    for _ in range(5):  # and from then on, whichever way the port answers
        again = config_of(widget_port_on_redis, customer_id="cleo")
        assert again.config.persona.persona_id == "detailed"


def _if_enterprise(answer: wpb.GetWidgetConfigResponse) -> wpb.GetWidgetConfigResponse | None:
    return answer if answer.config.persona.persona_id == "detailed" else None


def test_with_redis_gone_widgets_are_still_answered_and_the_metric_says_so(
    engine: Engine,
    profiles_server: RunningServer,
    segments_server: RunningServer,
    segments_clock: ManualClock,
    profiles: Profiles,
    segments: Segments,
    admin_key: str,
) -> None:
    segments_clock.now = utc_now()
    with redis_server() as doomed_redis:
        running = serve_widgets(
            engine, profiles_server, segments_server, doomed_redis, admin_key, clock=segments_clock
        )
        set_up_team_on(running, admin_key, segments, profiles)
        channel = keyed_channel(f"127.0.0.1:{running.port}", admin_key)
        widgets = widgets_pb2_grpc.WidgetServiceStub(channel)
        config_of(widgets, customer_id="acme")
        assert config_of(widgets, customer_id="acme").cached
    try:
        answer = config_of(widgets, customer_id="acme")

        assert not answer.cached
        assert answer.config.persona.greeting == "Good morning Ada, welcome back to Acme support."
        down = running.metrics.registry.get_sample_value(
            "switchboard_widget_cache_lookups_total", {"result": "down"}
        )
        assert down is not None and down >= 1
    finally:
        channel.close()
        running.stop(grace=1)
