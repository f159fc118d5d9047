"""The newcomer's path: ``switchboard up`` on embedded defaults, then ``switchboard demo``;
and the production shape's worker on a real Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Engine, func, select
from switchboard.profiles.v1 import profiles_pb2 as pb
from switchboard.profiles.v1 import profiles_pb2_grpc
from switchboard.routing.v1 import routing_pb2 as rpb
from switchboard.routing.v1 import routing_pb2_grpc

from services.core.settings import Settings
from services.profiles.app import Profiles
from services.profiles.domain import UsageEvent
from services.profiles.models import UsageEventRow
from services.profiles.repository import CustomerRepository
from services.routing.models import ConversationRow
from tests.support.access import keyed_channel
from tests.support.processes import RunningCommand
from tests.support.rpc import call_error
from tests.support.stores import backend_under_test, free_port
from workers.app import create_celery_app


def stack_env(data_dir: Path, database_url: str) -> dict[str, str]:
    env = {"SWITCHBOARD_DATA_DIR": str(data_dir), "SWITCHBOARD_LOG_LEVEL": "WARNING"}
    for service in ("profiles", "segments", "routing"):
        env[f"SWITCHBOARD_{service.upper()}_ADDRESS"] = f"127.0.0.1:{free_port()}"
        env[f"SWITCHBOARD_{service.upper()}_METRICS_PORT"] = str(free_port())
    env["SWITCHBOARD_WIDGETS_ADDRESS"] = f"127.0.0.1:{free_port()}"
    env["SWITCHBOARD_DASHBOARD_PORT"] = str(free_port())
    if backend_under_test() == "postgresql":
        env["SWITCHBOARD_DATABASE_URL"] = database_url
    return env


def test_up_serves_everything_loads_the_demo_and_stops_on_ctrl_c(
    tmp_path: Path, database_url: str
) -> None:
    env = stack_env(tmp_path / "var", database_url)
    stack = RunningCommand(["up"], env)
    try:
        stack.wait_for_line("Celery broker:", timeout=30)
        # It never runs open: the first start makes an admin key and says where it is.
        stack.wait_for_line("Admin API key", timeout=30)
        admin_key = stack.wait_for_line("sb_", timeout=5).strip()
        key_file = tmp_path / "var" / "admin.key"
        assert key_file.read_text().strip() == admin_key
        assert key_file.stat().st_mode & 0o077 == 0, "only its owner may read the key"
        stack.wait_for_line("Switchboard is up", timeout=90)
        for service in ("profiles", "segments", "routing"):
            stack.wait_for_line(env[f"SWITCHBOARD_{service.upper()}_ADDRESS"], timeout=5)

        demo = subprocess.run(
            [sys.executable, "-m", "services.cli", "demo"],
            env=_inherited() | env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert demo.returncode == 0, demo.stderr
        assert "demo loaded: 10 customers" in demo.stdout
        assert "routing:" in demo.stdout and "rules at revision 1" in demo.stdout

        with grpc.insecure_channel(env["SWITCHBOARD_PROFILES_ADDRESS"]) as channel:
            stub = profiles_pb2_grpc.ProfileServiceStub(channel)
            anonymous = call_error(
                lambda: stub.GetCustomer(pb.GetCustomerRequest(customer_id="x"), timeout=5)
            )
            assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
        with keyed_channel(env["SWITCHBOARD_PROFILES_ADDRESS"], admin_key) as channel:
            globex = (
                profiles_pb2_grpc.ProfileServiceStub(channel)
                .GetCustomer(
                    pb.GetCustomerRequest(
                        external_id=pb.ExternalId(system="billing", id="cus_globex")
                    ),
                    timeout=5,
                )
                .customer
            )
        assert globex.plan == "enterprise"
        assert globex.traits["logins_wow_change"] < -0.5

        # The dashboard is up beside the services, and reads the reports of the demo for a
        # visitor signed in with the admin key.
        dashboard = f"http://127.0.0.1:{env['SWITCHBOARD_DASHBOARD_PORT']}/"
        stack.wait_for_line(dashboard, timeout=5)
        with urllib.request.urlopen(dashboard, timeout=10) as page:
            assert "<table" in page.read().decode()
        visitor = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        sign_in = urllib.request.Request(
            f"{dashboard}api/session",
            data=json.dumps({"api_key": admin_key}).encode(),
            headers={"Content-Type": "application/json"},
        )
        visitor.open(sign_in, timeout=10).close()
        with visitor.open(f"{dashboard}api/scorecard?family=tier", timeout=30) as api:
            rows = json.load(api)["segments"]
        assert [row["segment_id"] for row in rows] == [
            "tier_enterprise",
            "tier_growth",
            "tier_starter",
        ]
    finally:
        code = stack.stop(signal.SIGINT)
    assert code == 0, "".join(stack.output)
    assert any("Switchboard stopped." in line for line in stack.output)
    if backend_under_test() == "sqlite":
        assert (tmp_path / "var" / "switchboard.db").exists()


def _inherited() -> dict[str, str]:
    return dict(os.environ)


@pytest.fixture
def worker(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Settings]:
    env = {
        "SWITCHBOARD_DATA_DIR": str(tmp_path / "var"),
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_REDIS_URL": redis_url,
    }
    process = RunningCommand(["worker", "--concurrency=1"], env)
    try:
        process.wait_for_line("ready", timeout=60)
        yield Settings(data_dir=tmp_path / "var", database_url=database_url, redis_url=redis_url)
    finally:
        process.stop(signal.SIGTERM)


def test_worker_on_redis_prunes_usage_older_than_the_retention(
    worker: Settings, engine: Engine
) -> None:
    now = datetime.now(UTC)
    profiles = Profiles(CustomerRepository(engine))
    customer = profiles.create(customer_id="c1", values={"plan": "growth"})
    profiles.record_usage(
        events=[
            UsageEvent(customer.customer_id, "logins", 1, now - timedelta(days=200)),
            UsageEvent(customer.customer_id, "logins", 1, now - timedelta(days=1)),
        ]
    )

    create_celery_app(worker).send_task("switchboard.maintenance.prune_usage_events")

    deadline = time.monotonic() + 60
    remaining = 2
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            remaining = connection.execute(
                select(func.count()).select_from(UsageEventRow)
            ).scalar_one()
        if remaining == 1:
            break
        time.sleep(0.2)
    assert remaining == 1
    assert profiles.get(customer_id="c1").traits["logins_7d"] == 1


def test_worker_on_redis_moves_an_overflowing_conversation_without_anyone_asking(
    worker: Settings, engine: Engine, routing: routing_pb2_grpc.RoutingServiceStub
) -> None:
    overflow = rpb.Overflow(queue_id="backup")
    overflow.after.FromSeconds(60)
    routing.CreateQueue(rpb.CreateQueueRequest(queue=rpb.Queue(queue_id="backup")))
    routing.CreateQueue(
        rpb.CreateQueueRequest(queue=rpb.Queue(queue_id="front", overflow=overflow))
    )
    routing.UpdateRoutingRules(
        rpb.UpdateRoutingRulesRequest(
            rules=rpb.RoutingRules(default_action=rpb.RoutingAction(queue_id="front"))
        )
    )
    started = rpb.RouteConversationRequest(
        conversation_id="late-1", channel=rpb.CHANNEL_CHAT, visitor_attributes={"country": "DE"}
    )
    started.time.FromDatetime(datetime.now(UTC) - timedelta(minutes=5))
    routing.RouteConversation(started)

    create_celery_app(worker).send_task("switchboard.routing.advance_timers")

    # Read the table directly: the service's own reads would apply the move themselves.
    deadline = time.monotonic() + 60
    queue = "front"
    while time.monotonic() < deadline and queue == "front":
        with engine.connect() as connection:
            queue = connection.execute(
                select(ConversationRow.queue_id).where(ConversationRow.conversation_id == "late-1")
            ).scalar_one()
        time.sleep(0.2)
    assert queue == "backup"
