"""Explanations show admins why a customer is or is not in a segment."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.segments.rules import EvaluationContext, Explanation, compile_rule, explain

CONTEXT = EvaluationContext(now=datetime(2025, 6, 1, tzinfo=UTC), segments={"vip"})


def test_explanation_shows_the_failing_condition_and_the_value_seen() -> None:
    rule = {"$and": [{"seats": {"$gte": 5}}, {"traits.logins_wow_change": {"$lte": -0.5}}]}
    customer = {"seats": 12, "traits": {"logins_wow_change": -0.2}}
    assert explain(rule, customer, CONTEXT) == Explanation(
        path="$.$and",
        operator="$and",
        passed=False,
        children=(
            Explanation("$.$and[0].seats.$gte", "$gte", True, "seats", 5, 12),
            Explanation(
                '$.$and[1]["traits.logins_wow_change"].$lte',
                "$lte",
                False,
                "traits.logins_wow_change",
                -0.5,
                -0.2,
            ),
        ),
    )


def test_plain_value_and_segment_reference_are_explained() -> None:
    explanation = explain({"industry": "software", "$inSegment": "vip"}, {}, CONTEXT)
    assert explanation.operator == "$and"
    assert explanation.passed is False
    assert explanation.children == (
        Explanation("$.industry", "=", False, "industry", "software", None),
        Explanation("$.$inSegment", "$inSegment", True, None, "vip", None),
    )


def test_value_level_not_explains_its_inner_operator() -> None:
    explanation = explain({"name": {"$not": {"$regex": "^test"}}}, {"name": "test-co"}, CONTEXT)
    assert explanation.passed is False
    assert [child.passed for child in explanation.children] == [True]
    assert explanation.children[0].path == "$.name.$not.$regex"


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.5, -0.5]),
    st.sampled_from(["", "a", "B", "2", "1.2.3", "2025-05-20T00:00:00Z"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("ab"), inner, max_size=2)
    ),
    max_leaves=5,
)
FIELDS = st.sampled_from(["a", "b", "a.b", "b.a"])
VALUE_OPERATORS = st.sampled_from(
    [
        "$eq",
        "$ne",
        "$gt",
        "$gte",
        "$lt",
        "$lte",
        "$in",
        "$nin",
        "$ini",
        "$all",
        "$size",
        "$exists",
        "$type",
        "$regex",
        "$veq",
        "$vgt",
        "$withinLast",
        "$olderThan",
        "$after",
    ]
)


def _operator_object(operator: str, value: Any) -> dict[str, Any]:
    return {operator: value}


OPERATOR_OBJECTS = st.builds(_operator_object, VALUE_OPERATORS, VALUES | st.just("30d"))
FIELD_CONDITIONS = st.dictionaries(FIELDS, OPERATOR_OBJECTS | VALUES, min_size=1, max_size=2)
CONDITIONS = st.recursive(
    FIELD_CONDITIONS | st.sampled_from([{"$inSegment": "vip"}, {"$notInSegment": "vip"}]),
    lambda inner: st.one_of(
        st.builds(lambda items: {"$and": items}, st.lists(inner, max_size=3)),
        st.builds(lambda items: {"$or": items}, st.lists(inner, max_size=3)),
        st.builds(lambda items: {"$nor": items}, st.lists(inner, max_size=3)),
        st.builds(lambda item: {"$not": item}, inner),
        st.builds(lambda field, item: {field: {"$elemMatch": item}}, FIELDS, inner),
        st.builds(lambda field, item: {field: {"$not": item}}, FIELDS, OPERATOR_OBJECTS),
    ),
    max_leaves=6,
)
ATTRIBUTES = st.dictionaries(st.sampled_from("ab"), VALUES, max_size=2)


@settings(max_examples=400, deadline=None)
@given(CONDITIONS, ATTRIBUTES)
def test_explanation_always_agrees_with_compiled_evaluation(
    condition: dict[str, Any], attributes: dict[str, Any]
) -> None:
    compiled = compile_rule(condition)
    assert explain(compiled, attributes, CONTEXT).passed == compiled.matches(attributes, CONTEXT)
