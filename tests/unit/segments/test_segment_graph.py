"""Segments that reference segments: what to evaluate first, and loops to refuse."""

from __future__ import annotations

import pytest

from services.segments.rules import (
    SegmentCycleError,
    find_segment_cycle,
    referenced_segments,
    segment_evaluation_order,
)


def test_references_are_found_at_any_depth() -> None:
    rule = {
        "$and": [
            {"$inSegment": "at_risk"},
            {"$or": [{"$not": {"$notInSegment": "enterprise"}}, {"seats": {"$gte": 5}}]},
        ]
    }
    assert referenced_segments(rule) == {"at_risk", "enterprise"}


def test_no_references_in_plain_rules() -> None:
    assert referenced_segments({"seats": {"$gte": 50}}) == set()


def test_cycle_is_returned_as_a_path_back_to_its_start() -> None:
    segments = {
        "a": {"$inSegment": "b"},
        "b": {"$and": [{"seats": 1}, {"$notInSegment": "c"}]},
        "c": {"$inSegment": "a"},
        "d": {"seats": 2},
    }
    assert find_segment_cycle(segments) == ["a", "b", "c", "a"]


def test_segment_referencing_itself_is_a_cycle() -> None:
    assert find_segment_cycle({"loop": {"$inSegment": "loop"}}) == ["loop", "loop"]


def test_evaluation_order_puts_dependencies_first() -> None:
    segments = {
        "churn_risk_enterprise": {
            "$and": [{"$inSegment": "enterprise"}, {"$inSegment": "at_risk"}]
        },
        "at_risk": {"traits.logins_wow_change": {"$lte": -0.5}},
        "enterprise": {"seats": {"$gte": 50}},
        "unrelated": {"$inSegment": "deleted_segment"},
    }
    order = segment_evaluation_order(segments)
    assert sorted(order) == sorted(segments)
    assert order.index("churn_risk_enterprise") > order.index("enterprise")
    assert order.index("churn_risk_enterprise") > order.index("at_risk")
    assert find_segment_cycle(segments) is None


def test_evaluation_order_refuses_a_cycle_and_names_it() -> None:
    with pytest.raises(SegmentCycleError, match="a -> b -> a") as raised:
        segment_evaluation_order({"a": {"$inSegment": "b"}, "b": {"$inSegment": "a"}})
    assert raised.value.cycle == ["a", "b", "a"]
