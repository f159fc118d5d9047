"""Rules run as SQL over the customer projection must match exactly what compiled rules say."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from services.segments.logic import rule_attributes
from services.segments.repository import SegmentRepository
from services.segments.rules import EvaluationContext, compile_rule
from services.segments.sql_rules import split_rule

NOW = datetime(2025, 6, 1, tzinfo=UTC)

RULES: list[dict[str, Any]] = [
    {"seats": {"$gte": 50}},
    {"seats": {"$lt": 5}},
    {"$and": [{"seats": {"$gte": 5}}, {"seats": {"$lt": 50}}]},
    {"seats": 12},
    {"traits.logins_wow_change": {"$lte": -0.5}},
    {"traits.logins_7d": {"$gt": -1}},
    {"signup_time": {"$withinLast": "30d"}},
    {"signup_time": {"$olderThan": "90d"}},
    {"plan": "enterprise"},
    {"plan": {"$ne": "enterprise"}},
    {"country": {"$in": ["DE", "FR"]}},
    {"country": {"$nin": ["DE", "FR"]}},
    {"arr": {"$exists": False}},
    {"$or": [{"arr": {"$gte": 50000}}, {"traits.logins_7d": {"$gte": 100}}]},
    {"$nor": [{"plan": "starter"}, {"seats": {"$lte": 2}}]},
    {"$not": {"lifecycle_stage": {"$in": ["churned"]}}},
    {"$or": []},
    # Not expressible in SQL: a prefilter plus compiled evaluation per row.
    {"seats": {"$gte": 5}, "tags": {"$all": ["vip"]}},
    {"attributes.contract_type": {"$regex": "^ann"}},
]


def random_record(rng: random.Random, index: int) -> dict[str, Any]:
    record: dict[str, Any] = {"customer_id": f"cu_{index:04d}"}
    if rng.random() < 0.9:
        record["seats"] = rng.choice([1, 2, 4, 5, 12, 49, 50, 200])
    if rng.random() < 0.7:
        record["arr"] = rng.choice([0.0, 999.5, 50000.0, 120000.0])
    if rng.random() < 0.8:
        record["plan"] = rng.choice(["starter", "growth", "enterprise"])
    if rng.random() < 0.8:
        record["country"] = rng.choice(["DE", "FR", "US", "JP"])
    if rng.random() < 0.8:
        record["lifecycle_stage"] = rng.choice(["active", "churned"])
    if rng.random() < 0.8:
        record["signup_time"] = NOW - timedelta(days=rng.randint(0, 200))
    if rng.random() < 0.5:
        record["tags"] = rng.sample(["vip", "beta", "legal"], rng.randint(1, 2))
    if rng.random() < 0.5:
        record["attributes"] = {"contract_type": rng.choice(["annual", "monthly"])}
    traits: dict[str, float] = {}
    if rng.random() < 0.7:
        traits["logins_7d"] = float(rng.randint(0, 200))
    if rng.random() < 0.5:
        traits["logins_wow_change"] = rng.choice([-1.0, -0.5, -0.2, 0.0, 0.5])
    if traits:
        record["traits"] = traits
    return record


@pytest.fixture
def projected(engine: Engine) -> tuple[SegmentRepository, dict[str, dict[str, Any]]]:
    rng = random.Random(3)
    documents = {
        record["customer_id"]: rule_attributes(record)
        for record in (random_record(rng, index) for index in range(400))
    }
    repository = SegmentRepository(engine)
    repository.replace_projection(documents, NOW)
    return repository, documents


@pytest.mark.parametrize("rule", RULES, ids=[str(rule) for rule in RULES])
def test_stored_customers_match_in_sql_exactly_as_compiled_rules_say(
    projected: tuple[SegmentRepository, dict[str, dict[str, Any]]], rule: dict[str, Any]
) -> None:
    repository, documents = projected
    compiled = compile_rule(rule)
    context = EvaluationContext(now=NOW)
    expected = {cid for cid, doc in documents.items() if compiled.matches(doc, context)}

    assert repository.matching_customers(rule=compiled, now=NOW) == expected


def test_simple_rules_need_no_python_evaluation() -> None:
    pushed = [rule for rule in RULES if split_rule(rule, NOW)[1]]
    assert len(pushed) == len(RULES) - 2


REFERENCING_RULES: list[dict[str, Any]] = [
    {"$inSegment": "big"},
    {"$inSegment": "big", "country": {"$in": ["DE", "FR"]}},
    {"$notInSegment": "big", "seats": {"$gte": 2}},
    {"$and": [{"$inSegment": "big"}, {"$notInSegment": "german"}, {"plan": "enterprise"}]},
    # The reference is under $or: no set operation, evaluated per row.
    {"$or": [{"$inSegment": "german"}, {"seats": {"$lt": 2}}]},
    {"$inSegment": "german", "attributes.contract_type": {"$regex": "^ann"}},
]


@pytest.mark.parametrize("rule", REFERENCING_RULES, ids=[str(r) for r in REFERENCING_RULES])
def test_segment_references_over_stored_customers_match_as_compiled_rules_say(
    projected: tuple[SegmentRepository, dict[str, dict[str, Any]]], rule: dict[str, Any]
) -> None:
    repository, documents = projected
    references = {"big": {"seats": {"$gte": 50}}, "german": {"country": "DE"}}
    matches = {
        name: frozenset(
            cid
            for cid, doc in documents.items()
            if compile_rule(condition).matches(doc, EvaluationContext(now=NOW))
        )
        for name, condition in references.items()
    }
    compiled = compile_rule(rule)
    expected = {
        cid
        for cid, doc in documents.items()
        if compiled.matches(
            doc,
            EvaluationContext(now=NOW, segments={n for n, ids in matches.items() if cid in ids}),
        )
    }

    assert expected
    assert repository.matching_customers(rule=compiled, now=NOW, segment_matches=matches) == (
        expected
    )
