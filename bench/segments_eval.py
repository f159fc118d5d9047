"""The demo segments at scale: evaluation throughput and PreviewSegment latency.

Run: ``python bench/segments_eval.py [--customers 100000] [--backend sqlite|postgresql]``.

1. Every enabled demo segment (families decided, ``$inSegment`` resolved) for N customers:
   the bulk path (``logic.compile_plan(...).evaluator``) and the explain path
   (``logic.evaluate_customer``, every rule) against hand-written Python for the same
   twelve segments. Results are checked to agree before timing.
   Beside them, in the same run, the GrowthBook Python SDK's ``evalCondition`` and
   ``flagsmith-flag-engine`` on equivalent segments (each skipped, with a line saying so,
   when its package is not installed; see bench/README.md).
2. PreviewSegment through a real gRPC server over N projected customers on the chosen
   backend (PostgreSQL: a throwaway database next to SWITCHBOARD_TEST_POSTGRES_URL).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gen"))

from switchboard.segments.v1 import segments_pb2 as pb
from switchboard.segments.v1 import segments_pb2_grpc

from services.core.db import create_db_engine, upgrade_database
from services.core.server import create_server
from services.core.settings import Settings
from services.demo import DEMO_SEGMENTS
from services.segments.domain import Segment
from services.segments.logic import (
    compile_plan,
    compile_segments,
    evaluate_customer,
    rule_attributes,
)
from services.segments.repository import SegmentRepository
from services.segments.server import segments_spec
from tests.support.access import gate, keyed_channel, new_key

NOW = datetime(2025, 6, 1, tzinfo=UTC)
THIRTY_DAYS_AGO = (NOW - timedelta(days=30)).isoformat()


def make_customers(count: int, seed: int = 11) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    customers = []
    for index in range(count):
        record: dict[str, Any] = {
            "customer_id": f"cu_{index:07d}",
            "seats": rng.choice([1, 2, 4, 5, 12, 30, 49, 50, 120, 400]),
            "arr": float(rng.choice([500, 5_000, 25_000, 30_000, 90_000, 250_000])),
            "lifecycle_stage": rng.choice(["active", "active", "active", "churned"]),
            "signup_time": NOW - timedelta(days=rng.randint(0, 900)),
            "country": rng.choice(["US", "DE", "FR", "GB", "JP"]),
            "attributes": {"contract_type": rng.choice(["annual", "monthly"])},
            "traits": {"logins_7d": float(rng.randint(0, 300))},
        }
        if rng.random() < 0.8:
            record["traits"]["logins_wow_change"] = round(rng.uniform(-1, 1), 2)
        customers.append(rule_attributes(record))
    return customers


def hand_written(customer: dict[str, Any]) -> frozenset[str]:
    """The demo segments as plain Python: the floor for the same decisions."""
    members = []
    seats = customer.get("seats", 0)
    if seats >= 50:
        members.append("tier_enterprise")
    elif seats >= 5:
        members.append("tier_growth")
    elif seats >= 1:
        members.append("tier_starter")
    traits = customer.get("traits", {})
    change = traits.get("logins_wow_change")
    at_risk = change is not None and change <= -0.5
    if at_risk:
        members.append("at_risk")
    stage = customer.get("lifecycle_stage")
    # ISO-8601 UTC strings of one format order like the instants they name.
    if stage == "churned":
        members.append("lifecycle_churned")
    elif customer.get("signup_time", "") >= THIRTY_DAYS_AGO:
        members.append("lifecycle_new")
    elif at_risk:
        members.append("lifecycle_at_risk")
    elif stage == "active":
        members.append("lifecycle_active")
    arr = customer.get("arr", 0)
    logins = traits.get("logins_7d", 0)
    if arr >= 30_000 and logins >= 100:
        members.append("value_champions")
    elif arr >= 30_000:
        members.append("value_at_risk")
    elif logins >= 100:
        members.append("value_promising")
    else:
        members.append("value_dormant")
    return frozenset(members)


def demo_segments() -> list[Segment]:
    return [
        Segment(segment_id=sid, display_name=name, family=family, priority=priority, rule=rule)
        for sid, name, family, priority, rule in DEMO_SEGMENTS
    ]


def bench_evaluation(customers: list[dict[str, Any]], rounds: int) -> None:
    compiled = compile_segments(demo_segments())
    members_of = compile_plan(demo_segments()).evaluator(NOW)
    for customer in customers[:5000]:
        expected = hand_written(customer)
        assert evaluate_customer(compiled, customer, NOW).members == expected, customer
        assert members_of(customer) == expected, customer
    # label -> (what it is evaluated on, the function), all checked against the floor.
    contenders: dict[str, tuple[list[Any], Callable[[Any], Any]]] = {
        "hand-written Python (the floor)": (customers, hand_written),
        "segment plan (bulk path)": (customers, members_of),
        "every rule, no short-circuit (explain path)": (
            customers,
            lambda customer: evaluate_customer(compiled, customer, NOW),
        ),
    }
    growthbook = _growthbook_members()
    if growthbook is not None:
        _agree("growthbook", customers, customers, growthbook)
        contenders["GrowthBook SDK evalCondition"] = (customers, growthbook)
    flagsmith = _flagsmith_members()
    if flagsmith is not None:
        identities = [_flagsmith_context(customer) for customer in customers]
        _agree("flagsmith", customers, identities, flagsmith)
        contenders["flagsmith-flag-engine"] = (identities, flagsmith)
    sys.stdout.write(
        f"{len(compiled)} demo segments x {len(customers):,} customers, "
        f"best of {rounds} interleaved rounds:\n"
    )
    # Interleaved rounds, best kept: a noisy neighbour slows one pass, not one contender.
    best = dict.fromkeys(contenders, 0.0)
    for _ in range(rounds):
        for label, (inputs, evaluate) in contenders.items():
            best[label] = max(best[label], _rate(inputs, evaluate))
    hand = best["hand-written Python (the floor)"]
    ours = best["segment plan (bulk path)"]
    for label, rate in best.items():
        sys.stdout.write(
            f"  {label:<44} {rate:>10,.0f} customers/s  {hand / rate:>5.2f}x the floor's time\n"
        )
    for label, rate in best.items():
        if "SDK" in label or "flagsmith" in label:
            sys.stdout.write(f"  segment plan is {ours / rate:.2f}x faster than {label}\n")


def _rate(inputs: list[Any], evaluate: Callable[[Any], Any]) -> float:
    started = time.perf_counter()
    for item in inputs:
        evaluate(item)
    return len(inputs) / (time.perf_counter() - started)


# ---- the SDKs on the same conditions ---------------------------------------------------------
#
# Neither SDK has families, segment references or relative dates, so the harness gives both
# the same help the hand-written code has: families decided in Python, first match by
# priority wins; "$inSegment: at_risk" becomes at_risk's own condition; "signed up within
# the last 30 days" becomes "signup_time >= the ISO string 30 days before NOW", which orders
# correctly because the documents hold ISO-8601 UTC strings of one format.

SdkStep = tuple[str, Any]


def _sdk_segments(
    translate: Callable[[str, dict[str, Any]], Any],
) -> tuple[list[SdkStep], list[list[SdkStep]]]:
    """(overlays, families) in precedence order, each segment's rule passed through
    ``translate(segment_id, rule)`` after the substitutions above."""
    at_risk_rule = next(s.rule for s in demo_segments() if s.segment_id == "at_risk")
    overlays: list[SdkStep] = []
    families: dict[str, list[SdkStep]] = {}
    for segment in sorted(demo_segments(), key=lambda s: (s.family, s.priority)):
        rule = segment.rule
        if rule == {"$inSegment": "at_risk"}:
            rule = at_risk_rule
        elif rule == {"signup_time": {"$withinLast": "30d"}}:
            rule = {"signup_time": {"$gte": THIRTY_DAYS_AGO}}
        step = (segment.segment_id, translate(segment.segment_id, rule))
        if segment.family:
            families.setdefault(segment.family, []).append(step)
        else:
            overlays.append(step)
    return overlays, list(families.values())


def _first_matches(
    overlays: list[SdkStep], families: list[list[SdkStep]], matches: Callable[[Any, Any], bool]
) -> Callable[[Any], frozenset[str]]:
    def members(customer: Any) -> frozenset[str]:
        found = [sid for sid, rule in overlays if matches(customer, rule)]
        for family in families:
            for segment_id, rule in family:
                if matches(customer, rule):
                    found.append(segment_id)
                    break
        return frozenset(found)

    return members


def _growthbook_members() -> Callable[[Any], frozenset[str]] | None:
    try:
        # growthbook 1.x exported evalCondition from the package; later versions keep it
        # in growthbook.core.
        from growthbook.core import evalCondition  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        sys.stdout.write(
            "  GrowthBook SDK: skipped, `growthbook` is not installed (see bench/README.md)\n"
        )
        return None
    overlays, families = _sdk_segments(lambda _segment_id, rule: rule)
    return _first_matches(overlays, families, evalCondition)


_FLAGSMITH_OPERATORS = {
    "$gte": "GREATER_THAN_INCLUSIVE",
    "$gt": "GREATER_THAN",
    "$lte": "LESS_THAN_INCLUSIVE",
    "$lt": "LESS_THAN",
}


def _flagsmith_rule(segment_id: str, rule: dict[str, Any]) -> dict[str, Any]:
    """The demo rules as a Flagsmith segment: one ALL rule of trait conditions. Traits are
    flat, so ``traits.logins_7d`` is the trait ``logins_7d``; values are strings, cast by
    the engine to the trait's type."""
    conditions = []
    for path, test in rule.items():
        trait = path.removeprefix("traits.")
        if not isinstance(test, dict):
            conditions.append({"property": trait, "operator": "EQUAL", "value": str(test)})
            continue
        for name, value in test.items():
            operator = _FLAGSMITH_OPERATORS[name]
            conditions.append({"property": trait, "operator": operator, "value": str(value)})
    # An ALL rule without conditions matches everyone, like the empty GrowthBook condition.
    return {
        "key": segment_id,
        "name": segment_id,
        "rules": [{"type": "ALL", "conditions": conditions}],
    }


def _flagsmith_context(customer: dict[str, Any]) -> dict[str, Any]:
    """A Flagsmith evaluation context for one customer, built before timing like our
    documents are: the identity's traits are the document's scalar fields and traits."""
    traits = {k: v for k, v in customer.items() if not isinstance(v, dict | list)}
    traits.update(customer.get("traits", {}))
    return {
        "environment": {"key": "bench", "name": "bench"},
        "identity": {
            "identifier": customer["customer_id"],
            "key": customer["customer_id"],
            "traits": traits,
        },
    }


def _flagsmith_members() -> Callable[[Any], frozenset[str]] | None:
    try:
        from flag_engine.segments.evaluator import (  # type: ignore[import-not-found,unused-ignore]
            is_context_in_segment,
        )
    except ImportError:
        sys.stdout.write(
            "  flagsmith-flag-engine: skipped, `flagsmith-flag-engine` is not installed "
            "(see bench/README.md)\n"
        )
        return None
    overlays, families = _sdk_segments(_flagsmith_rule)
    return _first_matches(overlays, families, is_context_in_segment)


def _agree(
    label: str,
    customers: list[dict[str, Any]],
    inputs: list[Any],
    members_of: Callable[[Any], frozenset[str]],
) -> None:
    """``members_of`` (given each customer as its SDK takes it) agrees with the floor."""
    for customer, item in zip(customers[:5000], inputs, strict=False):
        assert members_of(item) == hand_written(customer), (label, customer)


def _database(backend: str, workdir: Path) -> tuple[str, Any]:
    if backend == "sqlite":
        return f"sqlite:///{workdir / 'bench.db'}", None
    import psycopg
    from sqlalchemy.engine import make_url

    from tests.support.stores import postgres_admin_url

    name = f"sbbench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_admin_url(), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]

    def drop() -> None:
        with psycopg.connect(postgres_admin_url(), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]

    url = make_url(postgres_admin_url()).set(database=name).render_as_string(False)
    return url, drop


def bench_preview(customers: list[dict[str, Any]], backend: str, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url, drop = _database(backend, Path(tmp))
        try:
            upgrade_database(url)
            engine = create_db_engine(url)
            repository = SegmentRepository(engine)
            for segment in demo_segments():
                repository.create(segment=segment, actor="bench", now=NOW)
            started = time.perf_counter()
            for start in range(0, len(customers), 10_000):
                chunk = customers[start : start + 10_000]
                repository.replace_projection({c["customer_id"]: c for c in chunk}, NOW)
            loaded = time.perf_counter() - started
            sys.stdout.write(
                f"PreviewSegment on {backend}, {len(customers):,} projected customers "
                f"(loaded in {loaded:.1f} s), median of {repeats}:\n"
            )
            # Credentials are checked as ``switchboard serve`` checks them.
            running = create_server(
                [segments_spec(engine, Settings(), lambda: NOW)],
                address="127.0.0.1:0",
                gate=gate(engine),
            )
            with keyed_channel(f"127.0.0.1:{running.port}", new_key(engine)) as channel:
                stub = segments_pb2_grpc.SegmentServiceStub(channel)
                for label, segment in _drafts():
                    request = pb.PreviewSegmentRequest(segment=segment)
                    timings = []
                    for _ in range(repeats):
                        started = time.perf_counter()
                        response = stub.PreviewSegment(request, timeout=120)
                        timings.append(time.perf_counter() - started)
                    sys.stdout.write(
                        f"  {label:<58} {statistics.median(timings) * 1000:>7.0f} ms  "
                        f"({response.matching_count:,} match, "
                        f"{sum(s.customer_count for s in response.winner_shifts):,} shift)\n"
                    )
            running.stop(grace=1)
            engine.dispose()
        finally:
            if drop:
                drop()


def _drafts() -> list[tuple[str, pb.Segment]]:
    def draft(
        segment_id: str, rule: dict[str, Any], family: str = "", priority: int = 0
    ) -> pb.Segment:
        message = pb.Segment(segment_id=segment_id, family=family, priority=priority, enabled=True)
        message.rule.update(rule)
        return message

    return [
        (
            "tier_enterprise at 40+ seats (SQL; 3-segment family shift)",
            draft("tier_enterprise", {"seats": {"$gte": 40}}, "tier", 10),
        ),
        (
            "value_champions at 150 logins (SQL; 4-segment family shift)",
            draft(
                "value_champions",
                {"arr": {"$gte": 30_000}, "traits.logins_7d": {"$gte": 150}},
                "value_engagement",
                10,
            ),
        ),
        (
            "new overlay, attributes.contract_type $regex (per value)",
            draft("annual_contracts", {"attributes.contract_type": {"$regex": "^ann"}}),
        ),
        (
            "lifecycle_at_risk, $inSegment + seats (SQL + id sets)",
            draft(
                "lifecycle_at_risk",
                {"$inSegment": "at_risk", "seats": {"$gte": 5}},
                "lifecycle",
                30,
            ),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "none"], default="sqlite")
    parser.add_argument("--repeats", type=int, default=5, help="PreviewSegment calls per draft")
    parser.add_argument("--rounds", type=int, default=3, help="evaluation passes per contender")
    args = parser.parse_args()
    customers = make_customers(args.customers)
    bench_evaluation(customers, args.rounds)
    if args.backend != "none":
        bench_preview(customers, args.backend, args.repeats)


if __name__ == "__main__":
    main()
