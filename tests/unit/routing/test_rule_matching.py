"""Which routing rule a conversation matches, when matches are remembered per kept record.

A kept customer record is the same object until the customer changes, so routing remembers
its match; these tests hold what must still be decided afresh on every call.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.routing.domain import Channel, RouteRequest, RoutingAction, RoutingRule, RoutingRules
from services.routing.logic import compile_rules, match
from services.segments.rules import compile_rule

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
NEW_CUSTOMERS = {"signup_time": {"$withinLast": "30d"}}
BILLING = {"conversation.topic": "billing"}


def rules(*conditions: dict[str, Any]) -> RoutingRules:
    return RoutingRules(
        rules=tuple(
            RoutingRule(f"rule-{number}", RoutingAction(f"queue-{number}"), condition=condition)
            for number, condition in enumerate(conditions, start=1)
        ),
        default_action=RoutingAction("general"),
        revision=1,
    )


def chat(topic: str = "billing") -> RouteRequest:
    return RouteRequest("conversation-1", Channel.CHAT, customer_id="cus-1", topic=topic)


def test_a_kept_record_matched_again_gets_the_same_rule() -> None:
    compiled = compile_rules(rules(BILLING))
    record = {"plan": "growth"}

    first = match(compiled, record, chat(), frozenset(), NOW, kept_record=True)
    again = match(compiled, record, chat(), frozenset(), NOW, kept_record=True)

    assert first.rule is not None and first.rule.rule_id == "rule-1"
    assert again is first, "remembered, not matched again"


def test_the_conversation_and_the_segments_decide_afresh_for_the_same_record() -> None:
    compiled = compile_rules(rules(BILLING, {"$inSegment": "at_risk"}))
    record = {"plan": "growth"}

    billing = match(compiled, record, chat("billing"), frozenset(), NOW, kept_record=True)
    at_risk = match(compiled, record, chat("login"), frozenset({"at_risk"}), NOW, kept_record=True)
    neither = match(compiled, record, chat("login"), frozenset(), NOW, kept_record=True)

    assert [m.rule.rule_id if m.rule else None for m in (billing, at_risk, neither)] == [
        "rule-1",
        "rule-2",
        None,
    ]


def test_a_changed_record_is_matched_on_what_it_says_now() -> None:
    compiled = compile_rules(rules({"plan": "enterprise"}))

    before = match(compiled, {"plan": "growth"}, chat(), frozenset(), NOW, kept_record=True)
    after = match(compiled, {"plan": "enterprise"}, chat(), frozenset(), NOW, kept_record=True)

    assert before.rule is None
    assert after.rule is not None and after.rule.rule_id == "rule-1"


def test_a_rule_that_reads_the_clock_stops_matching_as_time_passes() -> None:
    compiled = compile_rules(rules(NEW_CUSTOMERS))
    record = {"signup_time": (NOW - timedelta(days=29)).isoformat()}

    today = match(compiled, record, chat(), frozenset(), NOW, kept_record=True)
    in_a_week = match(
        compiled, record, chat(), frozenset(), NOW + timedelta(days=7), kept_record=True
    )

    assert today.rule is not None and today.rule.rule_id == "rule-1"
    assert in_a_week.rule is None


def test_a_rule_with_a_regular_expression_is_matched_afresh_every_time() -> None:
    # A search cut short by its time limit counts as no match: that verdict must not stick.
    compiled = compile_rules(rules({"email": {"$regex": "@acme\\.com$"}}))
    record = {"email": "ana@acme.com"}

    match(compiled, record, chat(), frozenset(), NOW, kept_record=True)

    assert not compiled.repeatable
    assert compiled.remembered == {}


def test_rules_that_can_vary_are_known_wherever_they_sit() -> None:
    nested = {"invoices": {"$elemMatch": {"paid_time": {"$olderThan": "14d"}}}}

    assert not compile_rule(NEW_CUSTOMERS).repeatable
    assert not compile_rule({"$or": [BILLING, {"$not": nested}]}).repeatable
    assert not compile_rule({"email": {"$regexi": "acme"}}).repeatable
    assert compile_rule({"signup_time": {"$after": "2026-01-01T00:00:00Z"}}).repeatable
    assert compile_rule(BILLING).repeatable
