"""validate_only previews decide on a snapshot of the desk that may be reused for a moment.

What a preview must still see: everything its own routing process committed before the
call, however long the reuse window, and what another process wrote once the window has
passed. Real gRPC against the real routing server, on both databases.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine
from switchboard.routing.v1 import routing_pb2 as pb

from services.core.settings import Settings
from services.routing.domain import AgentStatus
from services.routing.server import routing_app
from tests.integration.conftest import ManualClock
from tests.integration.routing_setup import (
    MONDAY,
    Desk,
    Routing,
    action,
    create_agent,
    create_queue,
    set_rules,
    set_status,
)

# A window no test outlasts: anything seen within it was not served from an old snapshot.
HOUR = 3600.0
SHORT = 0.2


@pytest.fixture
def desk(routing: Routing, segments_clock: ManualClock) -> Desk:
    """One general queue; Ana and Ben online, one chat each."""
    segments_clock.now = MONDAY
    create_queue(routing, "general")
    set_rules(routing, [], action("general"))
    create_agent(routing, "ana", chats=1, online=True)
    create_agent(routing, "ben", chats=1, online=True)
    return Desk(routing, segments_clock)


def preview(desk: Desk) -> str:
    """The agent a visitor's chat would get now, or "" for nobody."""
    decision = desk.route("preview", visitor={"country": "DE"}, validate_only=True).decision
    return decision.agent_id


@pytest.mark.parametrize("preview_desk_seconds", [HOUR])
def test_a_preview_sees_what_its_routing_process_committed_before_it(desk: Desk) -> None:
    first = preview(desk)
    desk.route("chat-1", visitor={"country": "DE"})
    after_a_route = preview(desk)
    set_status(desk.routing, after_a_route, pb.AGENT_STATUS_OFFLINE)
    after_going_offline = preview(desk)

    assert first in ("ana", "ben")
    assert after_a_route == ({"ana", "ben"} - {first}).pop()
    assert after_going_offline == ""


@pytest.mark.parametrize("preview_desk_seconds", [SHORT])
def test_a_preview_sees_another_processes_write_once_the_window_has_passed(
    desk: Desk, engine: Engine, segments_clock: ManualClock
) -> None:
    # The routing core a worker runs, in its own repository: nothing it commits reaches
    # the server's reader except through the database.
    worker = routing_app(engine, Settings(), segments_clock)
    assert preview(desk) != ""

    for agent_id in ("ana", "ben"):
        worker.set_agent_status(agent_id=agent_id, status=AgentStatus.OFFLINE)
    time.sleep(SHORT * 1.5)

    assert preview(desk) == ""
