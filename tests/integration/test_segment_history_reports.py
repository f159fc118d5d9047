"""Segment sizes over time and retention, replayed from the transitions the segments server
stored while customers changed: built through the public RPCs at chosen clock times, then
read back the way the reports service reads them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.segments.v1 import segments_pb2 as pb

from tests.integration.conftest import ManualClock
from tests.integration.routing_setup import (
    Profiles,
    Segments,
    create_customer,
    create_segment,
    create_tier_segments,
    timestamp,
)
from tests.support.rpc import call_error, field_violations, misses

CHURNED = "lifecycle_churned"


@dataclass(frozen=True)
class History:
    """The instants of the story told by ``history``."""

    before: datetime
    signup: datetime
    switch: datetime
    comeback: datetime


def update(profiles: Profiles, customer_id: str, **fields: Any) -> None:
    profiles.UpdateCustomer(
        ppb.UpdateCustomerRequest(
            customer=ppb.Customer(customer_id=customer_id, **fields),
            update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
        )
    )


def recompute_at(segments: Segments, clock: ManualClock, moment: datetime) -> None:
    clock.now = moment
    segments.RecomputeMemberships(pb.RecomputeMembershipsRequest(scope=pb.RECOMPUTE_SCOPE_CHANGED))


@pytest.fixture
def history(segments: Segments, profiles: Profiles, segments_clock: ManualClock) -> History:
    """Four customers over three recomputations an hour apart:

    - signup: Acme (60 seats) is Enterprise; Bolt (10) and Dune (20) are Growth; Cove (2)
      is Starter.
    - switch: Bolt grows to 70 seats (Growth -> Enterprise, a family switch); Cove drops to
      0 seats and leaves Starter; Acme churns.
    - comeback: Cove is back on 3 seats (Starter again); Dune churns.
    """
    create_tier_segments(segments)
    create_segment(segments, CHURNED, {"lifecycle_stage": {"$in": ["churned"]}})
    signup = segments_clock.now
    for customer_id, seats in [("acme", 60), ("bolt", 10), ("cove", 2), ("dune", 20)]:
        create_customer(profiles, customer_id, seats=seats, lifecycle_stage="customer")
    recompute_at(segments, segments_clock, signup)

    switch = signup + timedelta(hours=1)
    update(profiles, "bolt", seats=70)
    update(profiles, "cove", seats=0)
    update(profiles, "acme", lifecycle_stage="churned")
    recompute_at(segments, segments_clock, switch)

    comeback = switch + timedelta(hours=1)
    update(profiles, "cove", seats=3)
    update(profiles, "dune", lifecycle_stage="churned")
    recompute_at(segments, segments_clock, comeback)
    return History(signup - timedelta(days=1), signup, switch, comeback)


def sizes(
    segments: Segments, segment_ids: Sequence[str], times: Sequence[datetime]
) -> dict[str, list[int]]:
    response = segments.GetSegmentSizes(
        pb.GetSegmentSizesRequest(segment_ids=segment_ids, times=[timestamp(t) for t in times])
    )
    assert [s.segment_id for s in response.series] == list(segment_ids)
    return {s.segment_id: list(s.members) for s in response.series}


def retention(
    segments: Segments, segment_ids: Sequence[str], start: datetime, end: datetime
) -> tuple[dict[str, tuple[int, int]], tuple[int, int]]:
    response = segments.GetRetention(
        pb.GetRetentionRequest(
            segment_ids=segment_ids,
            churn_segment_id=CHURNED,
            start_time=timestamp(start),
            end_time=timestamp(end),
        )
    )
    assert [r.segment_id for r in response.segments] == list(segment_ids)
    return (
        {r.segment_id: (r.base, r.retained) for r in response.segments},
        (response.all.base, response.all.retained),
    )


def test_sizes_replay_a_family_switch_and_a_customer_who_left_and_came_back(
    segments: Segments, history: History
) -> None:
    just_before_switch = history.switch - timedelta(seconds=1)
    times = [
        history.before,
        history.signup,
        just_before_switch,
        history.switch,
        history.comeback,
        history.signup,
    ]

    found = sizes(segments, ["tier_enterprise", "tier_growth", "tier_starter", CHURNED], times)

    # Each instant is inclusive: what was recomputed at it counts; asked twice, same answer.
    assert found == {
        "tier_enterprise": [0, 1, 1, 2, 2, 1],
        "tier_growth": [0, 2, 2, 1, 1, 2],
        "tier_starter": [0, 1, 1, 0, 1, 1],
        CHURNED: [0, 0, 0, 1, 2, 0],
    }


def test_a_deleted_segment_keeps_its_history_and_an_unknown_one_reads_zero(
    segments: Segments, history: History, segments_clock: ManualClock
) -> None:
    segments_clock.now = history.comeback + timedelta(hours=1)
    segments.DeleteSegment(pb.DeleteSegmentRequest(segment_id="tier_starter"))

    found = sizes(
        segments,
        ["tier_starter", "never_existed"],
        [history.signup, history.comeback, segments_clock.now],
    )

    # Its members exited when it was deleted; what happened before is still there.
    assert found == {"tier_starter": [1, 1, 0], "never_existed": [0, 0, 0]}


def test_retention_counts_the_start_members_not_churned_at_the_end(
    segments: Segments, history: History
) -> None:
    by_segment, everyone = retention(
        segments,
        ["tier_growth", "tier_enterprise", "tier_starter"],
        history.signup,
        history.comeback,
    )

    # Growth started with Bolt and Dune; Dune churned. Bolt left Growth for Enterprise but
    # did not churn, so it counts as retained by the segment it started in.
    assert by_segment["tier_growth"] == (2, 1)
    # Enterprise started with Acme alone, who churned.
    assert by_segment["tier_enterprise"] == (1, 0)
    assert by_segment["tier_starter"] == (1, 1)
    # All four customers once each; Acme and Dune churned.
    assert everyone == (4, 2)


def test_retention_over_one_instant_and_before_any_history(
    segments: Segments, history: History
) -> None:
    by_segment, everyone = retention(
        segments,
        ["tier_enterprise", "tier_enterprise", "tier_growth"],
        history.switch,
        history.switch,
    )
    # Enterprise at the switch: Acme (churned at that same instant) and Bolt. Asked twice,
    # counted once in the union.
    assert by_segment == {"tier_enterprise": (2, 1), "tier_growth": (1, 1)}
    assert everyone == (3, 2)

    nothing, nobody = retention(segments, ["tier_growth"], history.before, history.comeback)
    assert nothing == {"tier_growth": (0, 0)}
    assert nobody == (0, 0)


def test_bad_history_requests_name_the_field(segments: Segments) -> None:
    now = timestamp(datetime(2025, 1, 1, tzinfo=UTC))
    later = timestamp(datetime(2025, 2, 1, tzinfo=UTC))
    impossible = timestamp_pb2.Timestamp(seconds=10**12)

    def sizes_of(ids: Sequence[str], times: Sequence[timestamp_pb2.Timestamp]) -> Any:
        return lambda: segments.GetSegmentSizes(
            pb.GetSegmentSizesRequest(segment_ids=ids, times=times)
        )

    def retention_of(**fields: Any) -> Any:
        request: dict[str, Any] = {
            "segment_ids": ["tier_growth"],
            "churn_segment_id": CHURNED,
            "start_time": now,
            "end_time": later,
        }
        request.update(fields)
        return lambda: segments.GetRetention(
            pb.GetRetentionRequest(**{k: v for k, v in request.items() if v is not None})
        )

    too_many = [f"segment_{index}" for index in range(101)]
    assert not misses(
        {
            "no segments": (sizes_of([], [now]), "segment_ids"),
            "101 segments": (sizes_of(too_many, [now]), "segment_ids"),
            "malformed id": (sizes_of(["Tier Growth"], [now]), "segment_ids"),
            "no times": (sizes_of(["tier_growth"], []), "times"),
            "401 times": (sizes_of(["tier_growth"], [now] * 401), "times"),
            "impossible time": (sizes_of(["tier_growth"], [now, impossible]), "times"),
            "retention without segments": (retention_of(segment_ids=[]), "segment_ids"),
            "101 retention segments": (retention_of(segment_ids=too_many), "segment_ids"),
            "no churn segment": (retention_of(churn_segment_id=""), "churn_segment_id"),
            "no start": (retention_of(start_time=None), "start_time"),
            "no end": (retention_of(end_time=None), "end_time"),
            "end before start": (retention_of(start_time=later, end_time=now), "end_time"),
            "impossible start": (retention_of(start_time=impossible), "start_time"),
        }
    )

    # Each bad item under its own path, every problem of the request at once.
    error = call_error(sizes_of(["tier_growth", ""], []))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"segment_ids[1]", "times"}
    error = call_error(sizes_of(["tier_growth"], [now, impossible, now, impossible]))
    assert set(field_violations(error)) == {"times[1]", "times[3]"}
