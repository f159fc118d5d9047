"""What an admin is told when a persona, an escalation policy or the assignment list is wrong."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from services.core.errors import FieldViolation
from services.routing.domain import Channel
from services.widgets.domain import (
    BotTurn,
    EscalationPolicy,
    Persona,
    WidgetAssignment,
    WidgetPolicies,
)
from services.widgets.logic import (
    bot_turn_problems,
    escalation_problems,
    escalation_references,
    persona_problems,
    policies_problems,
    policies_references,
)

PERSONA = Persona(
    persona_id="concierge",
    display_name="Concierge",
    greeting="Hi {first_name}, welcome to {company_name}!",
    languages=("en", "de-CH"),
    guardrails="Never promise refunds.",
)
POLICY = EscalationPolicy(
    policy_id="enterprise",
    display_name="Enterprise",
    max_bot_turns=3,
    min_sentiment=-0.3,
    min_confidence=0.5,
    keywords=("cancel", "refund", "money back"),
    queue_id="tier2",
    sla_policy_id="gold",
    after_hours_sla_policy_id="gold-after-hours",
)
POLICIES = WidgetPolicies(
    assignments=(
        WidgetAssignment("at-risk", escalation_policy_id="save-desk"),
        WidgetAssignment("enterprise", persona_id="concierge", escalation_policy_id="enterprise"),
    ),
    default_persona_id="helper",
    default_escalation_policy_id="standard",
)


def fields(problems: list[FieldViolation]) -> list[str]:
    return [problem.field for problem in problems]


# ---- personas -------------------------------------------------------------------------------


def test_a_complete_persona_is_accepted() -> None:
    assert persona_problems(PERSONA) == []
    assert persona_problems(Persona("bare")) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"persona_id": "Concierge Bot"}, "persona.persona_id"),
        ({"display_name": "x" * 201}, "persona.display_name"),
        ({"greeting": "x" * 501}, "persona.greeting"),
        ({"greeting": "Hi {plan}"}, "persona.greeting"),
        ({"languages": ("en", "english")}, "persona.languages[1]"),
        ({"guardrails": "x" * 4001}, "persona.guardrails"),
    ],
)
def test_a_bad_persona_field_is_named(change: dict[str, Any], field: str) -> None:
    assert fields(persona_problems(replace(PERSONA, **change))) == [field]


def test_limits_are_inclusive() -> None:
    persona = replace(PERSONA, display_name="x" * 200, greeting="x" * 500, guardrails="x" * 4000)
    assert persona_problems(persona) == []


# ---- escalation policies --------------------------------------------------------------------


def test_a_complete_escalation_policy_is_accepted() -> None:
    assert escalation_problems(POLICY) == []
    assert escalation_problems(EscalationPolicy("minimal", queue_id="tier1")) == []


@pytest.mark.parametrize(
    "change",
    [
        {"max_bot_turns": 0},
        {"max_bot_turns": 100},
        {"min_sentiment": -1.0},
        {"min_sentiment": 1.0},
        {"min_confidence": 0.0},
        {"min_confidence": 1.0},
        {"keywords": tuple(f"word{i}" for i in range(50))},
        {"keywords": ("x" * 64,)},
        {"handover_channel": Channel.EMAIL},
    ],
)
def test_escalation_limits_are_inclusive(change: dict[str, Any]) -> None:
    assert escalation_problems(replace(POLICY, **change)) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"policy_id": ""}, "policy.policy_id"),
        ({"display_name": "x" * 201}, "policy.display_name"),
        ({"max_bot_turns": -1}, "policy.max_bot_turns"),
        ({"max_bot_turns": 101}, "policy.max_bot_turns"),
        ({"min_sentiment": -1.5}, "policy.min_sentiment"),
        ({"min_sentiment": float("nan")}, "policy.min_sentiment"),
        ({"min_confidence": 1.1}, "policy.min_confidence"),
        ({"min_confidence": -0.1}, "policy.min_confidence"),
        ({"keywords": tuple(f"word{i}" for i in range(51))}, "policy.keywords"),
        ({"keywords": ("cancel", "")}, "policy.keywords[1]"),
        ({"keywords": ("cancel", "   ")}, "policy.keywords[1]"),
        ({"keywords": ("x" * 65,)}, "policy.keywords[0]"),
        ({"queue_id": ""}, "policy.queue_id"),
        ({"handover_channel": Channel.PHONE}, "policy.handover_channel"),
        ({"sla_policy_id": "Gold SLA"}, "policy.sla_policy_id"),
        ({"after_hours_sla_policy_id": "-"}, "policy.after_hours_sla_policy_id"),
    ],
)
def test_a_bad_escalation_field_is_named(change: dict[str, Any], field: str) -> None:
    assert fields(escalation_problems(replace(POLICY, **change))) == [field]


def test_a_keyword_listed_twice_in_other_case_points_at_the_first() -> None:
    (problem,) = escalation_problems(replace(POLICY, keywords=("Refund", "cancel", " refund ")))
    assert problem.field == "policy.keywords[2]"
    assert problem.description == "repeats keywords[0] (ignoring case)"


def test_an_escalation_policy_names_its_queue_and_sla_policies() -> None:
    assert escalation_references(POLICY) == [
        ("queue", "tier2", "policy.queue_id"),
        ("sla_policy", "gold", "policy.sla_policy_id"),
        ("sla_policy", "gold-after-hours", "policy.after_hours_sla_policy_id"),
    ]
    assert escalation_references(EscalationPolicy("minimal", queue_id="tier1")) == [
        ("queue", "tier1", "policy.queue_id")
    ]


# ---- the assignment list --------------------------------------------------------------------


def test_a_well_formed_assignment_list_is_accepted() -> None:
    assert policies_problems(POLICIES) == []
    assert policies_problems(replace(POLICIES, assignments=())) == []


def test_a_line_that_sets_nothing_is_refused() -> None:
    policies = replace(POLICIES, assignments=(WidgetAssignment("enterprise"),))
    (problem,) = policies_problems(policies)
    assert problem == FieldViolation(
        "policies.assignments[0]", "sets neither a persona nor an escalation policy"
    )


def test_a_segment_listed_twice_points_at_its_first_line() -> None:
    policies = replace(
        POLICIES,
        assignments=(*POLICIES.assignments, WidgetAssignment("at-risk", persona_id="calm")),
    )
    (problem,) = policies_problems(policies)
    assert problem.field == "policies.assignments[2].segment_id"
    assert problem.description == "listed twice (first at assignments[0])"


@pytest.mark.parametrize(
    ("assignment", "field"),
    [
        (WidgetAssignment("At Risk", persona_id="calm"), "policies.assignments[0].segment_id"),
        (WidgetAssignment("at-risk", persona_id="Calm!"), "policies.assignments[0].persona_id"),
        (
            WidgetAssignment("at-risk", escalation_policy_id="9lives"),
            "policies.assignments[0].escalation_policy_id",
        ),
    ],
)
def test_malformed_ids_in_a_line_are_named(assignment: WidgetAssignment, field: str) -> None:
    assert fields(policies_problems(replace(POLICIES, assignments=(assignment,)))) == [field]


def test_both_defaults_are_required() -> None:
    policies = WidgetPolicies(default_persona_id="", default_escalation_policy_id="")
    assert fields(policies_problems(policies)) == [
        "policies.default_persona_id",
        "policies.default_escalation_policy_id",
    ]
    malformed = WidgetPolicies(default_persona_id="A", default_escalation_policy_id="b c")
    assert fields(policies_problems(malformed)) == [
        "policies.default_persona_id",
        "policies.default_escalation_policy_id",
    ]


def test_at_most_200_lines() -> None:
    lines = tuple(WidgetAssignment(f"segment-{i}", persona_id="calm") for i in range(201))
    assert fields(policies_problems(replace(POLICIES, assignments=lines))) == [
        "policies.assignments"
    ]
    assert policies_problems(replace(POLICIES, assignments=lines[:200])) == []


def test_the_assignment_list_names_every_segment_persona_and_policy() -> None:
    assert policies_references(POLICIES) == [
        ("segment", "at-risk", "policies.assignments[0].segment_id"),
        ("escalation_policy", "save-desk", "policies.assignments[0].escalation_policy_id"),
        ("segment", "enterprise", "policies.assignments[1].segment_id"),
        ("persona", "concierge", "policies.assignments[1].persona_id"),
        ("escalation_policy", "enterprise", "policies.assignments[1].escalation_policy_id"),
        ("persona", "helper", "policies.default_persona_id"),
        ("escalation_policy", "standard", "policies.default_escalation_policy_id"),
    ]


# ---- bot turns ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "turn",
    [
        BotTurn(0),
        BotTurn(10_000, sentiment=-1.0, confidence=1.0, message="x" * 4000),
        BotTurn(3, sentiment=1.0, confidence=0.0, asked_for_human=True),
    ],
)
def test_a_plausible_bot_turn_is_accepted(turn: BotTurn) -> None:
    assert bot_turn_problems(turn) == []


@pytest.mark.parametrize(
    ("turn", "field"),
    [
        (BotTurn(-1), "turn.turn_count"),
        (BotTurn(10_001), "turn.turn_count"),
        (BotTurn(1, sentiment=5.0), "turn.sentiment"),
        (BotTurn(1, sentiment=float("nan")), "turn.sentiment"),
        (BotTurn(1, confidence=1.01), "turn.confidence"),
        (BotTurn(1, confidence=-0.5), "turn.confidence"),
        (BotTurn(1, message="x" * 4001), "turn.message"),
    ],
)
def test_an_implausible_bot_turn_is_refused(turn: BotTurn, field: str) -> None:
    assert fields(bot_turn_problems(turn)) == [field]
