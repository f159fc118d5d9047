"""What an admin is told when saving a segment rule that cannot work as written."""

from __future__ import annotations

from typing import Any

from services.segments.rules import (
    MAX_LIST_ITEMS,
    MAX_RULE_DEPTH,
    MAX_RULE_NODES,
    FieldKind,
    RuleViolation,
    validate_rule,
)

FIELDS: dict[str, FieldKind] = {
    "seats": "integer",
    "country": "string",
    "signup_time": "timestamp",
    "tags": "string_list",
    "is_partner": "bool",
}


def violations(rule: Any) -> list[RuleViolation]:
    return validate_rule(rule, field_types=FIELDS)


def paths(rule: Any) -> list[str]:
    return [violation.path for violation in violations(rule)]


def test_typical_segment_rules_are_accepted() -> None:
    for rule in [
        {"seats": {"$gte": 50}},
        {"seats": {"$in": [1, 2]}},
        {"$and": [{"country": {"$in": ["DE", "FR"]}}, {"tags": {"$all": ["vip"]}}]},
        {"signup_time": {"$withinLast": "30d"}},
        {"traits.logins_wow_change": {"$lte": -0.5}},
        {"$or": [{"$inSegment": "at_risk"}, {"is_partner": True}]},
        {"tags": {"$size": {"$gt": 2}}},
    ]:
        assert violations(rule) == [], rule


def test_wrong_value_type_for_known_field_is_reported_at_its_path() -> None:
    assert violations({"$and": [{"country": "DE"}, {"seats": {"$gt": "lots"}}]}) == [
        RuleViolation("$.$and[1].seats.$gt", "\"lots\" is not a valid integer for field 'seats'")
    ]


def test_each_bad_in_item_is_reported() -> None:
    assert paths({"seats": {"$in": [1, "two", 3, "four"]}}) == [
        "$.seats.$in[1]",
        "$.seats.$in[3]",
    ]


def test_free_form_fields_are_not_type_checked() -> None:
    assert violations({"attributes.contract_type": {"$gt": 5}}) == []
    assert violations({"traits.score": {"$in": ["a", 1]}}) == []


def test_dotted_field_names_get_bracketed_paths() -> None:
    assert paths({"traits.logins": {"$gt": 1, "$bogus": 2}}) == ['$["traits.logins"].$bogus']


def test_unknown_operator_is_named() -> None:
    [violation] = violations({"name": {"$regx": "hello"}})
    assert violation.path == "$.name.$regx"
    assert "unknown operator $regx" in violation.description


def test_operator_that_does_not_fit_the_field_kind() -> None:
    [violation] = violations({"seats": {"$regex": "^1"}})
    assert violation == RuleViolation(
        "$.seats.$regex", "$regex does not apply to integer field 'seats'"
    )


def test_regex_that_does_not_compile() -> None:
    [violation] = violations({"$or": [{"name": {"$regex": "/???***[)"}}]})
    assert violation.path == "$.$or[0].name.$regex"
    assert violation.description.startswith("regex does not compile")


def test_malformed_duration() -> None:
    [violation] = violations({"signup_time": {"$withinLast": "30 days"}})
    assert violation.path == "$.signup_time.$withinLast"
    assert "malformed duration" in violation.description


def test_logic_operators_need_arrays_and_segments_need_ids() -> None:
    assert paths({"$and": {"seats": 1}, "$inSegment": 7}) == ["$.$and", "$.$inSegment"]


def test_field_operator_at_condition_level_is_reported() -> None:
    assert paths({"$gt": 5}) == ["$.$gt"]


def test_nesting_past_the_limit_is_reported_with_the_limit() -> None:
    rule: dict[str, Any] = {"seats": 1}
    for _ in range(MAX_RULE_DEPTH):
        rule = {"$not": rule}
    [violation] = violations(rule)
    assert violation.path == "$"
    assert str(MAX_RULE_DEPTH) in violation.description


def test_oversized_in_list_is_reported_with_the_limit() -> None:
    [violation] = violations({"account_id": {"$in": list(range(MAX_LIST_ITEMS + 1))}})
    assert f"{MAX_LIST_ITEMS}" in violation.description


def test_too_many_nodes_is_reported_with_the_limit() -> None:
    rule = {"$or": [{"seats": index} for index in range(MAX_RULE_NODES)]}
    [violation] = violations(rule)
    assert f"{MAX_RULE_NODES}" in violation.description


def test_elem_match_conditions_check_operators_but_not_customer_field_kinds() -> None:
    rule = {"hobbies": {"$elemMatch": {"seats": "many", "name": {"$nope": 1}}}}
    assert paths(rule) == ["$.hobbies.$elemMatch.name.$nope"]
