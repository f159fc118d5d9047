"""How compiled segment rules decide membership for customers."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from services.segments.rules import (
    MAX_REGEX_INPUT_LENGTH,
    MAX_RULE_DEPTH,
    EvaluationContext,
    RuleTooLargeError,
    compile_rule,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def matches(rule: Any, customer: dict[str, Any], **context: Any) -> bool:
    return compile_rule(rule).matches(customer, EvaluationContext(now=NOW, **context))


def test_enterprise_rule_matches_50_seats_not_49() -> None:
    enterprise = {"seats": {"$gte": 50}}
    assert matches(enterprise, {"seats": 50})
    assert not matches(enterprise, {"seats": 49})


def test_mid_market_range_excludes_both_neighbours() -> None:
    mid_market = {"$and": [{"seats": {"$gte": 5}}, {"seats": {"$lt": 50}}]}
    assert [matches(mid_market, {"seats": n}) for n in (4, 5, 49, 50)] == [
        False,
        True,
        True,
        False,
    ]


def test_dotted_path_reads_nested_traits() -> None:
    dropping = {"traits.logins_wow_change": {"$lte": -0.5}}
    assert matches(dropping, {"traits": {"logins_wow_change": -0.6}})
    assert not matches(dropping, {"traits": {"logins_wow_change": -0.4}})
    assert not matches(dropping, {"traits": "not an object"})


def test_missing_seats_counts_as_zero_like_growthbook() -> None:
    # JS compares null as 0 against a number; GrowthBook's suite depends on it.
    assert matches({"seats": {"$lt": 5}}, {})
    assert not matches({"seats": {"$gte": 1}}, {})


def test_numeric_string_attribute_compares_as_number() -> None:
    assert matches({"seats": {"$gte": 50}}, {"seats": "120"})
    assert not matches({"seats": {"$gte": 50}}, {"seats": "many"})


def test_in_list_on_array_attribute_matches_any_shared_item() -> None:
    rule = {"tags": {"$in": ["vip", "beta"]}}
    assert matches(rule, {"tags": ["new", "beta"]})
    assert not matches(rule, {"tags": ["new"]})


def test_in_list_does_not_confuse_true_with_1() -> None:
    assert not matches({"flag": {"$in": [1]}}, {"flag": True})
    assert matches({"flag": {"$in": [True]}}, {"flag": True})
    assert matches({"seats": {"$in": [1, 2]}}, {"seats": 2.0})


def test_plain_value_never_matches_a_missing_attribute() -> None:
    assert not matches({"seats": 0}, {})
    assert not matches({"industry": "null"}, {})
    assert matches({"seats": "10"}, {"seats": 10})


def test_elem_match_tests_zero_items() -> None:
    assert matches({"scores": {"$elemMatch": {"$eq": 0}}}, {"scores": [3, 0]})


def test_in_segment_reads_memberships_from_context() -> None:
    rule = {"$and": [{"$inSegment": "at_risk"}, {"seats": {"$gte": 50}}]}
    assert matches(rule, {"seats": 60}, segments={"at_risk"})
    assert not matches(rule, {"seats": 60}, segments={"churned"})
    assert not matches(rule, {"seats": 60})


def test_not_in_segment_works_inside_or_and_not() -> None:
    rule = {"$or": [{"$notInSegment": "enterprise"}, {"$not": {"$inSegment": "vip"}}]}
    assert matches(rule, {}, segments={"vip"})
    assert not matches(rule, {}, segments={"enterprise", "vip"})


@pytest.mark.parametrize(
    ("signup", "expected"),
    [
        (NOW - timedelta(days=29, hours=23), True),
        (NOW - timedelta(days=30), True),
        (NOW - timedelta(days=30, seconds=1), False),
        (NOW + timedelta(minutes=5), True),
    ],
)
def test_signed_up_within_last_30_days(signup: datetime, expected: bool) -> None:
    assert matches({"signup_time": {"$withinLast": "30d"}}, {"signup_time": signup}) is expected


def test_within_last_follows_now_as_time_passes() -> None:
    rule = compile_rule({"signup_time": {"$withinLast": "30d"}})
    customer = {"signup_time": "2025-05-20T00:00:00Z"}
    assert rule.matches(customer, EvaluationContext(now=NOW))
    assert not rule.matches(customer, EvaluationContext(now=NOW + timedelta(days=30)))


def test_no_login_for_14_days_reads_iso_strings_and_naive_means_utc() -> None:
    rule = {"last_login_time": {"$olderThan": "14d"}}
    assert matches(rule, {"last_login_time": "2025-05-01T09:00:00+00:00"})
    assert not matches(rule, {"last_login_time": "2025-05-31T09:00:00"})
    # 2025-05-18T13:00+02:00 is 11:00 UTC, one hour older than the 14-day cutoff.
    offset = timezone(timedelta(hours=2))
    assert matches(rule, {"last_login_time": datetime(2025, 5, 18, 13, 0, tzinfo=offset)})


@pytest.mark.parametrize("operator", ["$withinLast", "$olderThan"])
def test_relative_dates_are_false_for_missing_or_unreadable_values(operator: str) -> None:
    rule = {"last_login_time": {operator: "14d"}}
    assert not matches(rule, {})
    assert not matches(rule, {"last_login_time": "last tuesday"})


def test_malformed_duration_never_matches() -> None:
    assert not matches({"signup_time": {"$withinLast": "30 days"}}, {"signup_time": NOW})


def test_before_and_after_compare_absolute_timestamps() -> None:
    customer = {"signup_time": "2024-03-01T00:00:00Z"}
    assert matches({"signup_time": {"$after": "2024-01-01"}}, customer)
    assert not matches({"signup_time": {"$before": "2024-01-01T00:00:00Z"}}, customer)


def test_catastrophic_regex_gives_up_instead_of_hanging() -> None:
    # A hang guard, not a benchmark: plain `re` takes longer than the universe here.
    started = time.monotonic()
    assert not matches({"name": {"$regex": "^(a+)+$"}}, {"name": "a" * 5000 + "b"})
    assert time.monotonic() - started < 5


def test_regex_skips_values_longer_than_the_input_cap() -> None:
    rule = {"bio": {"$regex": "^x"}}
    assert matches(rule, {"bio": "x" * MAX_REGEX_INPUT_LENGTH})
    assert not matches(rule, {"bio": "x" * (MAX_REGEX_INPUT_LENGTH + 1)})


def test_regexi_ignores_case() -> None:
    assert matches({"email": {"$regexi": "@ACME\\.com$"}}, {"email": "Ann@acme.com"})


def test_unknown_operator_never_matches_rather_than_failing() -> None:
    assert not matches({"seats": {"$greaterThan": 5}}, {"seats": 10})


def test_compile_refuses_rules_nested_past_the_limit() -> None:
    rule: dict[str, Any] = {"seats": 1}
    for _ in range(MAX_RULE_DEPTH):
        rule = {"$and": [rule]}
    with pytest.raises(RuleTooLargeError, match=str(MAX_RULE_DEPTH)):
        compile_rule(rule)


def test_saved_group_membership_is_strict_about_types() -> None:
    groups = {"pilot_accounts": [101, "102"]}
    assert matches(
        {"account_id": {"$inGroup": "pilot_accounts"}}, {"account_id": 101}, saved_groups=groups
    )
    assert not matches(
        {"account_id": {"$inGroup": "pilot_accounts"}}, {"account_id": "101"}, saved_groups=groups
    )
