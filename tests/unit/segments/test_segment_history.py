"""Sizes over time from net entries per span, and the checks of history requests, without
I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.segments.app import (
    MAX_HISTORY_SEGMENTS,
    segment_list_problems,
    sizes_at,
    time_range_problems,
)

MONDAY = datetime(2025, 6, 2, tzinfo=UTC)
TUESDAY = MONDAY + timedelta(days=1)
WEDNESDAY = MONDAY + timedelta(days=2)


def test_sizes_are_running_totals_read_back_in_the_order_asked() -> None:
    bounds = [MONDAY, TUESDAY, WEDNESDAY]
    net = {("growth", 0): 3, ("growth", 1): -1, ("growth", 2): 2, ("starter", 1): 1}

    series = sizes_at(["growth", "starter"], [WEDNESDAY, MONDAY, TUESDAY, MONDAY], bounds, net)

    assert series == [[4, 3, 2, 3], [1, 0, 1, 0]]


def test_a_segment_without_history_is_zero_at_every_instant() -> None:
    assert sizes_at(["gone"], [MONDAY, TUESDAY], [MONDAY, TUESDAY], {}) == [[0, 0]]


def test_a_segment_asked_twice_gets_two_equal_series() -> None:
    series = sizes_at(["growth", "growth"], [MONDAY], [MONDAY], {("growth", 0): 2})
    assert series == [[2], [2]]


def test_segment_lists_name_the_bad_item_or_the_bad_length() -> None:
    assert segment_list_problems(["growth", "enterprise"]) == []
    assert [p.field for p in segment_list_problems(["growth", "", "Big Ones"])] == [
        "segment_ids[1]",
        "segment_ids[2]",
    ]
    assert [p.field for p in segment_list_problems([])] == ["segment_ids"]
    too_many = [f"s{index}" for index in range(MAX_HISTORY_SEGMENTS + 1)]
    assert [p.field for p in segment_list_problems(too_many)] == ["segment_ids"]


def test_a_time_range_needs_both_ends_in_order() -> None:
    assert time_range_problems(MONDAY, MONDAY) == []
    assert [p.field for p in time_range_problems(None, None)] == ["start_time", "end_time"]
    assert [p.field for p in time_range_problems(TUESDAY, MONDAY)] == ["end_time"]
