"""Families, transitions, migration replay, lint and the customer document, without I/O."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.core.errors import InvalidArgument
from services.demo import DEMO_SEGMENTS
from services.segments.domain import ChangeKind, MembershipChange, Segment, Trigger
from services.segments.logic import (
    compile_plan,
    compile_segments,
    definitions_fingerprint,
    evaluate_customer,
    lint,
    membership_transitions,
    rule_attributes,
    token_number,
    token_position,
    token_text,
    validate_definition,
    winners_at,
)

NOW = datetime(2025, 6, 1, tzinfo=UTC)
TIERS = [
    Segment("enterprise", rule={"seats": {"$gte": 50}}, family="tier", priority=1),
    Segment("growth", rule={"seats": {"$gte": 5}}, family="tier", priority=2),
    Segment("starter", rule={"seats": {"$gte": 1}}, family="tier", priority=3),
]


def test_first_matching_segment_by_priority_wins_the_family() -> None:
    verdicts = evaluate_customer(compile_segments(TIERS), {"seats": 49}, NOW)
    assert verdicts.matched == {"growth", "starter"}
    assert verdicts.winners == {"tier": "growth"}
    assert verdicts.members == {"growth"}


def test_a_customer_matching_nothing_has_no_winner_but_keeps_the_family() -> None:
    verdicts = evaluate_customer(compile_segments(TIERS), {}, NOW)
    assert verdicts.winners == {"tier": ""}
    assert verdicts.members == frozenset()


def test_disabled_segments_never_win() -> None:
    disabled = [Segment(**{**TIERS[0].__dict__, "enabled": False}), *TIERS[1:]]
    verdicts = evaluate_customer(compile_segments(disabled), {"seats": 80}, NOW)
    assert verdicts.winners == {"tier": "growth"}


def test_moving_up_a_tier_exits_the_old_and_enters_the_new_naming_the_old_winner() -> None:
    transitions = membership_transitions(
        {"starter": "tier", "eu": ""}, {"growth": "tier", "eu": ""}
    )
    assert [(t.segment_id, t.kind, t.previous_winner) for t in transitions] == [
        ("starter", ChangeKind.EXITED, "starter"),
        ("growth", ChangeKind.ENTERED, "starter"),
    ]


def test_migration_replay_reads_winners_at_two_instants() -> None:
    def change(customer: str, segment: str, kind: ChangeKind, days: int) -> MembershipChange:
        return MembershipChange(
            customer,
            segment,
            "tier",
            kind,
            "",
            NOW + timedelta(days=days),
            1,
            Trigger.CUSTOMER_CHANGED,
        )

    history = [
        change("a", "starter", ChangeKind.ENTERED, 0),
        change("b", "starter", ChangeKind.ENTERED, 0),
        change("a", "starter", ChangeKind.EXITED, 5),
        change("a", "growth", ChangeKind.ENTERED, 5),
        change("b", "starter", ChangeKind.EXITED, 20),
    ]
    at_start, at_end = winners_at(history, NOW + timedelta(days=1), NOW + timedelta(days=10))
    assert at_start == {"a": "starter", "b": "starter"}
    assert at_end == {"a": "growth", "b": "starter"}


def test_lint_finds_a_segment_shadowed_by_a_broader_higher_one() -> None:
    segments = [
        Segment("anyone", rule={}, family="tier", priority=0),
        *TIERS,
    ]
    matches = {
        "anyone": frozenset({"a", "b"}),
        "enterprise": frozenset({"a"}),
        "growth": frozenset({"a", "b"}),
        "starter": frozenset(),
    }
    kinds = {(w.kind, w.segment_ids[0]) for w in lint(segments, matches)}
    assert ("shadowed", "enterprise") in kinds
    assert ("shadowed", "growth") in kinds
    assert ("matches_nobody", "starter") in kinds


def test_eleven_enabled_segments_are_too_many_to_trust() -> None:
    segments = [Segment(f"s{i}") for i in range(11)]
    warnings = lint(segments, {s.segment_id: frozenset({"a"}) for s in segments})
    assert warnings[0].kind == "too_many_segments"


def test_rules_see_signup_time_as_an_iso_string_and_unset_fields_absent() -> None:
    document = rule_attributes(
        {
            "customer_id": "c1",
            "signup_time": datetime(2025, 1, 2, tzinfo=UTC),
            "plan": "",
            "tags": ("vip",),
            "etag": 'W/"1"',
        }
    )
    assert document == {
        "customer_id": "c1",
        "signup_time": "2025-01-02T00:00:00+00:00",
        "tags": ["vip"],
    }


def test_a_bad_rule_is_reported_at_its_path_under_the_request_field() -> None:
    problems = validate_definition({"rule": {"$and": [{}, {"seats": {"$gt": "x"}}]}})
    assert [p.field for p in problems] == ["segment.rule.$and[1].seats.$gt"]


def _varied_customers(count: int) -> list[dict[str, object]]:
    """Documents that reach every branch: missing fields, strings where numbers are
    expected, naive and malformed timestamps, traits that are not objects."""
    rng = random.Random(3)
    customers: list[dict[str, object]] = []
    for index in range(count):
        document: dict[str, object] = {"customer_id": f"c{index}"}
        if rng.random() < 0.9:
            document["seats"] = rng.choice([0, 1, 4, 5, 49, 50, 400, "12", "x", True, None])
        if rng.random() < 0.9:
            document["arr"] = rng.choice([0.0, 29_999.5, 30_000, 250_000.0, "30000"])
        document["lifecycle_stage"] = rng.choice(["active", "churned", "trial", 3])
        signup = NOW - timedelta(days=rng.randint(0, 60), hours=rng.randint(0, 23))
        document["signup_time"] = rng.choice(
            [signup.isoformat(), signup.replace(tzinfo=None).isoformat(), "not a date"]
        )
        document["traits"] = rng.choice(
            [
                {"logins_7d": rng.randint(0, 300), "logins_wow_change": rng.uniform(-1, 1)},
                {"logins_7d": "150"},
                {},
                "not an object",
            ]
        )
        customers.append(document)
    return customers


def test_bulk_evaluation_gives_the_same_memberships_as_the_explained_evaluation() -> None:
    segments = [
        Segment(sid, family=family, priority=priority, rule=rule)
        for sid, _name, family, priority, rule in DEMO_SEGMENTS
    ]
    # A reference to a segment that usually loses its family: $inSegment means its rule
    # matched, which the bulk path must know even after tier_enterprise has won.
    segments.append(
        Segment("growth_sized", rule={"$inSegment": "tier_growth", "arr": {"$lt": 30_000}})
    )
    compiled = compile_segments(segments)
    members_of = compile_plan(segments).evaluator(NOW)
    for customer in _varied_customers(500):
        assert members_of(customer) == evaluate_customer(compiled, customer, NOW).members


def test_page_tokens_give_back_the_position_they_were_issued_with() -> None:
    assert token_number(None) == 0
    assert token_number(42) == 42
    assert token_text("cus_9") == "cus_9"
    assert token_position(["acme", "tier_growth"], str, str) == ("acme", "tier_growth")


@pytest.mark.parametrize(
    "forged",
    [True, 2**63, 1.5, float("nan"), [1], {"after": 1}, ["a"], ["a", 1], ["a\x00", "b"]],
)
def test_a_forged_page_token_is_refused_as_such(forged: Any) -> None:
    """Callers hand tokens back and can forge any JSON; none may reach the store."""
    for read in (token_number, token_text, lambda v: token_position(v, str, str)):
        with pytest.raises(InvalidArgument) as raised:
            read(forged)
        assert [v.field for v in raised.value.violations] == ["page_token"]


def test_the_definitions_fingerprint_moves_with_any_revision_and_not_with_order() -> None:
    """Workers compare it with the one their last round of everyone evaluated."""
    revised = [*TIERS[:2], replace(TIERS[2], revision=TIERS[2].revision + 1)]
    fingerprints = {
        definitions_fingerprint(TIERS),
        definitions_fingerprint(revised),
        definitions_fingerprint(TIERS[:2]),
        definitions_fingerprint([]),
    }
    assert len(fingerprints) == 4
    assert definitions_fingerprint([]) == 0, "no segments: nothing for a round to do"
    assert definitions_fingerprint(reversed(TIERS)) == definitions_fingerprint(TIERS)
    assert all(0 <= f < 2**62 for f in fingerprints), "stored in a signed 64-bit column"
