"""Relative dates with absurd windows are refused, never a crash at evaluation."""

from __future__ import annotations

from datetime import UTC, datetime

from services.segments.rules import EvaluationContext, compile_rule, explain, validate_rule

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def test_a_window_of_millions_of_weeks_is_refused_when_saved() -> None:
    violations = validate_rule({"signup_time": {"$withinLast": "9999999w"}})
    assert [v.path for v in violations] == ["$.signup_time.$withinLast"]
    assert "100 years" in violations[0].description


def test_a_window_of_millions_of_weeks_never_matches_instead_of_raising() -> None:
    condition = {"signup_time": {"$olderThan": "9999999w"}}
    customer = {"signup_time": "2020-01-01T00:00:00Z"}
    assert compile_rule(condition).matches(customer, EvaluationContext(now=NOW)) is False
    assert explain(condition, customer, EvaluationContext(now=NOW)).passed is False


def test_a_century_is_still_a_valid_window() -> None:
    assert validate_rule({"signup_time": {"$withinLast": "5200w"}}) == []
