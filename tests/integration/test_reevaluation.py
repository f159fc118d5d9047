"""Segments follow the data without anyone asking: real beat and workers on a real Redis
re-evaluate the customers that changed within seconds, spread big rounds across chunks, and a
second beat never doubles the schedule."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.segments.v1 import segments_pb2 as spb

from services.core.server import RunningServer
from tests.integration.routing_setup import (
    Profiles,
    Segments,
    create_customer,
    create_segment,
    create_tier_segments,
    struct,
)
from tests.support.processes import RunningCommand
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
    yield from fresh_redis_database(redis_url, 4)


@pytest.fixture
def env(
    tmp_path: Path,
    database_url: str,
    fresh_redis: str,
    profiles_server: RunningServer,
    segments_server: RunningServer,
    admin_key: str,
) -> dict[str, str]:
    ports = {"profiles": profiles_server.port, "segments": segments_server.port}
    return {
        **worker_environment(tmp_path / "var", database_url, fresh_redis, ports, admin_key),
        "SWITCHBOARD_REEVALUATE_SECONDS": "0.5",
    }


@pytest.fixture
def beat(env: dict[str, str]) -> Iterator[RunningCommand]:
    process = RunningCommand(["beat"], env)
    try:
        process.wait_for_line("Acquired lock", timeout=60)
        yield process
    finally:
        process.stop(signal.SIGTERM)


def segments_of(segments: Segments, customer_id: str) -> set[str]:
    found = segments.ListMemberships(spb.ListMembershipsRequest(customer_id=customer_id))
    return {membership.segment_id for membership in found.memberships}


def logins(customer_id: str, count: int, days_ago: float) -> list[ppb.UsageEvent]:
    when = timestamp_pb2.Timestamp()
    when.FromDatetime(datetime.now(UTC) - timedelta(days=days_ago))
    return [
        ppb.UsageEvent(
            customer_id=customer_id,
            metric="logins",
            value=1,
            time=when,
            event_id=f"{customer_id}-{days_ago}-{n}",
        )
        for n in range(count)
    ]


def test_a_usage_drop_makes_the_customer_at_risk_without_anyone_recomputing(
    profiles: Profiles, segments: Segments, env: dict[str, str], beat: RunningCommand
) -> None:
    create_segment(segments, "at_risk", {"traits.logins_wow_change": {"$lte": -0.5}})
    create_tier_segments(segments)
    create_customer(profiles, "acme", plan="growth", seats=12)

    with running_worker(env, "--queues", "segments,outreach,routing"):
        wait_for(lambda: segments_of(segments, "acme") == {"tier_growth"}, "acme's first round")
        # Ten logins the week before last, three this week: down 70%.
        events = logins("acme", 10, days_ago=10) + logins("acme", 3, days_ago=1)
        profiles.RecordUsageEvents(ppb.RecordUsageEventsRequest(events=events))

        wait_for(lambda: "at_risk" in segments_of(segments, "acme"), "acme to become at-risk")

    changes = segments.ListMembershipChanges(
        spb.ListMembershipChangesRequest(customer_id="acme", segment_id="at_risk")
    ).changes
    assert [change.kind for change in changes] == [spb.MEMBERSHIP_CHANGE_KIND_ENTERED]


def test_a_new_or_redefined_segment_has_its_members_within_a_tick(
    profiles: Profiles, segments: Segments, env: dict[str, str], beat: RunningCommand
) -> None:
    """Customers who changed long ago are not in the change log's window any more: only a
    round of everyone can place them in a segment created or redefined afterwards."""
    for customer_id, seats in (("acme", 80), ("globex", 12), ("initech", 3)):
        create_customer(profiles, customer_id, seats=seats)
    create_segment(segments, "seated", {"seats": {"$gte": 1}})
    with running_worker(env, "--queues", "segments,outreach,routing"):
        # Once they are placed, nothing in the change log names them again.
        wait_for(lambda: len(_members(segments, "seated")) == 3, "the first round")
        create_segment(segments, "large", {"seats": {"$gte": 10}})
        wait_for(lambda: _members(segments, "large") == {"acme", "globex"}, "large's members")
        segments.UpdateSegment(
            spb.UpdateSegmentRequest(
                segment=spb.Segment(
                    segment_id="large", rule=struct({"seats": {"$gte": 50}}), revision=1
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["rule"]),
            )
        )
        wait_for(lambda: _members(segments, "large") == {"acme"}, "globex to leave large")
    changes = segments.ListMembershipChanges(
        spb.ListMembershipChangesRequest(segment_id="large")
    ).changes
    assert sorted((c.customer_id, c.kind, c.trigger, c.rule_revision) for c in changes) == [
        ("acme", spb.MEMBERSHIP_CHANGE_KIND_ENTERED, "segment_changed", 1),
        ("globex", spb.MEMBERSHIP_CHANGE_KIND_ENTERED, "segment_changed", 1),
        ("globex", spb.MEMBERSHIP_CHANGE_KIND_EXITED, "segment_changed", 2),
    ]


def _members(segments: Segments, segment_id: str) -> set[str]:
    found = segments.ListMemberships(spb.ListMembershipsRequest(segment_id=segment_id))
    return {membership.customer_id for membership in found.memberships}


def test_a_large_round_is_split_into_chunks_that_every_customer_passes_through_once(
    profiles: Profiles, segments: Segments, env: dict[str, str]
) -> None:
    create_tier_segments(segments)
    for batch in range(3):
        customers = [
            ppb.Customer(
                external_ids={"billing": f"cus_{batch}_{n}"}, plan="starter", seats=1 + n % 60
            )
            for n in range(1000)
        ]
        results = profiles.UpsertCustomers(
            ppb.UpsertCustomersRequest(external_id_system="billing", customers=customers)
        ).results
        assert {r.outcome for r in results} == {ppb.UPSERT_OUTCOME_CREATED}

    with running_worker(env, "--queues", "segments", concurrency=2) as worker:
        create_celery_app(settings_of(env)).send_task("switchboard.segments.reevaluate_changed")
        worker.wait_for_line("re-evaluation round started", timeout=60)
        # Once the last chunk ends the round, the cursor is past every change: an admin's
        # recompute finds nothing left (and is refused while the round still runs).
        done = wait_for(lambda: _recompute_when_idle(segments), "the round to end", 120)

    assert done.evaluated_count == 0
    assert _member_count(segments) == 3000
    entered = segments.ListMembershipChanges(
        spb.ListMembershipChangesRequest(segment_id="tier_enterprise", page_size=1000)
    )
    # Seats 50-60 of every hundred-ish: each such customer entered Enterprise exactly once.
    enterprise = [c.customer_id for c in entered.changes]
    assert (
        len(enterprise) == len(set(enterprise)) == 3 * sum(1 for n in range(1000) if n % 60 >= 49)
    )


def _recompute_when_idle(segments: Segments) -> spb.RecomputeMembershipsResponse | None:
    try:
        return segments.RecomputeMemberships(
            spb.RecomputeMembershipsRequest(scope=spb.RECOMPUTE_SCOPE_CHANGED)
        )
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.ABORTED:
            return None
        raise


def _member_count(segments: Segments) -> int:
    total, token = 0, ""
    while True:
        page = segments.ListMemberships(
            spb.ListMembershipsRequest(page_size=1000, page_token=token)
        )
        total += len(page.memberships)
        token = page.next_page_token
        if not token:
            return total


def test_a_second_beat_waits_for_the_first_instead_of_doubling_the_schedule(
    env: dict[str, str], beat: RunningCommand
) -> None:
    second = RunningCommand(["beat"], env)
    try:
        with pytest.raises(AssertionError, match="never printed"):
            second.wait_for_line("Acquired lock", timeout=5)
        beat.stop(signal.SIGTERM)
        second.wait_for_line("Acquired lock", timeout=60)
    finally:
        second.stop(signal.SIGTERM)
