"""Customers per second: compiled segment rules against hand-written Python for the same rules.

Run: ``python bench/rules_eval.py [--customers 100000]``. The hand-written functions are the
floor any rule engine is measured against; GrowthBook's Python ``evalCondition`` is included
when the ``growthbook`` package is installed (bench/README.md). Results are checked to agree
before timing.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Run as a script from a checkout, where the project is not necessarily installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.segments.rules import EvaluationContext, compile_rule

NOW = datetime(2025, 6, 1, tzinfo=UTC)
COUNTRIES = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "BR", "IN", "JP", "AU", "CA"]
EUROPE = ["GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "PT", "IE", "BE", "AT", "DK", "FI"]
STAGES = ["trial", "active", "at_risk", "churned"]
INDUSTRIES = ["software", "retail", "finance", "health", "education"]

RULES: list[dict[str, Any]] = [
    {"seats": {"$gte": 50}},
    {"$and": [{"seats": {"$gte": 5}}, {"seats": {"$lt": 50}}]},
    {"traits.logins_wow_change": {"$lte": -0.5}},
    {"signup_time": {"$withinLast": "30d"}},
    {"lifecycle_stage": {"$in": ["churned"]}},
    {"country": {"$in": EUROPE}},
    {"industry": "software"},
    {"last_login_time": {"$olderThan": "14d"}},
    {"attributes.contract_type": {"$in": ["annual", "multi_year"]}},
    {"$or": [{"seats": {"$gte": 200}}, {"industry": "finance"}]},
]

EUROPE_SET = frozenset(EUROPE)
THIRTY_DAYS = timedelta(days=30)
FOURTEEN_DAYS = timedelta(days=14)


def _logins_drop(customer: dict[str, Any]) -> bool:
    change = customer.get("traits", {}).get("logins_wow_change")
    return change is not None and change <= -0.5


def _signed_up_recently(customer: dict[str, Any]) -> bool:
    signup = customer.get("signup_time")
    return signup is not None and signup >= NOW - THIRTY_DAYS


def _no_recent_login(customer: dict[str, Any]) -> bool:
    last_login = customer.get("last_login_time")
    return last_login is not None and last_login < NOW - FOURTEEN_DAYS


def _contract(customer: dict[str, Any]) -> bool:
    return customer.get("attributes", {}).get("contract_type") in ("annual", "multi_year")


HAND_WRITTEN: list[Callable[[dict[str, Any]], bool]] = [
    lambda c: c.get("seats", 0) >= 50,
    lambda c: 5 <= c.get("seats", 0) < 50,
    _logins_drop,
    _signed_up_recently,
    lambda c: c.get("lifecycle_stage") == "churned",
    lambda c: c.get("country") in EUROPE_SET,
    lambda c: c.get("industry") == "software",
    _no_recent_login,
    _contract,
    lambda c: c.get("seats", 0) >= 200 or c.get("industry") == "finance",
]


def make_customers(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Synthetic customers shaped like profile attributes, reproducible from the seed."""
    rng = random.Random(seed)
    customers = []
    for _ in range(count):
        customers.append(
            {
                "seats": rng.choice([1, 3, 5, 12, 49, 50, 120, 400]),
                "country": rng.choice(COUNTRIES),
                "industry": rng.choice(INDUSTRIES),
                "lifecycle_stage": rng.choice(STAGES),
                "signup_time": NOW - timedelta(days=rng.randint(0, 400)),
                "last_login_time": NOW - timedelta(hours=rng.randint(0, 24 * 60)),
                "traits": {"logins_wow_change": round(rng.uniform(-1, 1), 2)},
                "attributes": {"contract_type": rng.choice(["monthly", "annual", "multi_year"])},
            }
        )
    return customers


def _rate(label: str, customers: Sequence[Any], evaluate: Callable[[Any], int]) -> float:
    started = time.perf_counter()
    for customer in customers:
        evaluate(customer)
    elapsed = time.perf_counter() - started
    rate = len(customers) / elapsed
    sys.stdout.write(f"{label:<34} {rate:>12,.0f} customers/s  ({elapsed:.3f} s)\n")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    args = parser.parse_args()
    customers = make_customers(args.customers)
    context = EvaluationContext(now=NOW)
    compiled = [compile_rule(rule).matches for rule in RULES]

    for customer in customers[:2000]:
        expected = [rule(customer) for rule in HAND_WRITTEN]
        assert [match(customer, context) for match in compiled] == expected, customer

    # Plain loops in both harnesses, so shared overhead does not flatter the ratio.
    def run_hand_written(customer: dict[str, Any]) -> int:
        matched = 0
        for rule in HAND_WRITTEN:
            if rule(customer):
                matched += 1
        return matched

    def run_compiled(customer: dict[str, Any]) -> int:
        matched = 0
        for match in compiled:
            if match(customer, context):
                matched += 1
        return matched

    sys.stdout.write(f"{len(RULES)} rules x {len(customers):,} customers\n")
    hand = _rate("hand-written Python", customers, run_hand_written)
    ours = _rate("compiled rules", customers, run_compiled)
    sys.stdout.write(f"compiled is {hand / ours:.2f}x slower than hand-written\n")

    try:
        # growthbook 1.x exported evalCondition from the package; later versions keep it in
        # growthbook.core.
        from growthbook.core import evalCondition  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        sys.stdout.write("growthbook not installed (see bench/README.md): SDK comparison skipped\n")
        return
    # The SDK has no relative dates; give it ISO strings and absolute bounds instead.
    sdk_rules = [dict(rule) for rule in RULES]
    sdk_rules[3] = {"signup_time": {"$gte": (NOW - THIRTY_DAYS).isoformat()}}
    sdk_rules[7] = {"last_login_time": {"$lt": (NOW - FOURTEEN_DAYS).isoformat()}}
    sdk_customers = [
        {
            **customer,
            "signup_time": customer["signup_time"].isoformat(),
            "last_login_time": customer["last_login_time"].isoformat(),
        }
        for customer in customers
    ]

    def run_sdk(customer: dict[str, Any]) -> int:
        matched = 0
        for rule in sdk_rules:
            if evalCondition(customer, rule):
                matched += 1
        return matched

    sdk = _rate("growthbook evalCondition", sdk_customers, run_sdk)
    sys.stdout.write(f"growthbook is {hand / sdk:.2f}x slower than hand-written\n")


if __name__ == "__main__":
    main()
