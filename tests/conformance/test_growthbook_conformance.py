"""Every case of GrowthBook's evalCondition suite gives the SDKs' answer in our engine."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.segments.rules import EvaluationContext, compile_rule, explain

_CASES: list[list[Any]] = json.loads(
    (Path(__file__).parent / "growthbook-evalCondition.json").read_text(encoding="utf-8")
)
# Conformance conditions never use dates; a fixed instant keeps the run deterministic.
_NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _context(case: list[Any]) -> EvaluationContext:
    saved_groups = case[4] if len(case) > 4 else {}
    return EvaluationContext(now=_NOW, saved_groups=saved_groups)


def test_suite_is_complete() -> None:
    assert len(_CASES) == 248


@pytest.mark.parametrize("case", _CASES, ids=[f"{i}: {case[0]}" for i, case in enumerate(_CASES)])
def test_compiled_rule_agrees_with_growthbook(case: list[Any]) -> None:
    _name, condition, attributes, expected = case[:4]
    assert compile_rule(condition).matches(attributes, _context(case)) is expected


@pytest.mark.parametrize("case", _CASES, ids=[f"{i}: {case[0]}" for i, case in enumerate(_CASES)])
def test_explanation_agrees_with_growthbook(case: list[Any]) -> None:
    _name, condition, attributes, expected = case[:4]
    assert explain(condition, attributes, _context(case)).passed is expected
