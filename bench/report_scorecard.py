"""Scorecard over a million conversations: GetScorecard(family=tier, the last 30 days) on
PostgreSQL, through a real ``serve routing`` process, against a target of 2 seconds.

    .venv/bin/python bench/report_scorecard.py
    .venv/bin/python bench/report_scorecard.py --conversations 1000000 --runs 5 --cold-runs 3
    .venv/bin/python bench/report_scorecard.py --reuse bench_scorecard_1m   # keep the fill

A throwaway ``bench_<random>`` database (created through ``SWITCHBOARD_BENCH_POSTGRES_URL``,
default ``postgresql://root@127.0.0.1:5432/test``, and dropped at the end) is filled with
COPY: the three tier segments, the at-risk overlay and the churn segment; customers'
membership history (tier entries long before the range, tier upgrades, at-risk entries and
churn within it) and current memberships; and N conversations spread over the 30 days, each
with its facts row and a row per segment its customer was in when it was routed, both as
routing writes them (the figures, and when the customer's previous conversation was routed).
Figures differ by tier (Enterprise answered fastest, Starter slowest) and at-risk customers
rate lower and reopen more, so the scorecard has gaps to flag. With ``--reuse NAME`` the
filled database is kept and used again by later runs with the same arguments and schema.

Then profiles, segments and routing run as ``python -m services.cli serve NAME`` processes.
A cold call is the first GetScorecard of a freshly started stack (new processes, new
database connections; the database's own caches are not dropped); warm calls follow on the
same stack.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Run as a script from a checkout, where the project is not necessarily installed.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from bench.stack import (  # noqa: E402
    DEFAULT_ADMIN_URL,
    Databases,
    RunningStack,
    running_services,
)
from bench.sync_billing import create_tiers  # noqa: E402

TARGET_SECONDS = 2.0
RANGE = timedelta(days=30)
CONVERSATIONS_PER_CUSTOMER = 10
ANONYMOUS_SHARE = 0.06
AT_RISK_SHARE = 0.08
UPGRADE_SHARE = 0.02
CHURN_SEGMENT = "lifecycle_churned"


@dataclass(frozen=True)
class Tier:
    """How a tier's customers and conversations behave."""

    segment_id: str
    customer_share: float
    # Conversations per customer, relative to the other tiers.
    activity: float
    first_response_median: float
    resolution_median: float
    first_response_target: float
    resolution_target: float
    csat_mean: float


TIERS = (
    Tier("tier_enterprise", 0.05, 6.0, 240, 3 * 3600, 1800, 8 * 3600, 4.5),
    Tier("tier_growth", 0.25, 2.0, 900, 8 * 3600, 7200, 24 * 3600, 4.2),
    Tier("tier_starter", 0.70, 1.0, 3600, 20 * 3600, 14400, 48 * 3600, 3.9),
)
TIER_BY_ID = {tier.segment_id: tier for tier in TIERS}


@dataclass
class Customer:
    customer_id: str
    tier: Tier
    signup: datetime
    # A tier upgrade within the range: (when, to which tier).
    upgrade: tuple[datetime, Tier] | None
    at_risk_since: datetime | None
    churned_at: datetime | None

    def tier_at(self, moment: datetime) -> Tier:
        if self.upgrade is not None and moment >= self.upgrade[0]:
            return self.upgrade[1]
        return self.tier

    def at_risk_at(self, moment: datetime) -> bool:
        return self.at_risk_since is not None and moment >= self.at_risk_since


def make_customers(
    count: int, start: datetime, end: datetime, rng: random.Random
) -> list[Customer]:
    span = (end - start).total_seconds()
    customers = []
    for n in range(count):
        tier = rng.choices(TIERS, weights=[t.customer_share for t in TIERS])[0]
        signup = start - timedelta(days=rng.uniform(1, 730))
        upgrade = None
        if tier is not TIERS[0] and rng.random() < UPGRADE_SHARE:
            higher = TIERS[TIERS.index(tier) - 1]
            upgrade = (start + timedelta(seconds=rng.uniform(0, span)), higher)
        at_risk_since = None
        if rng.random() < AT_RISK_SHARE:
            # Most at-risk accounts were already at risk; some turned so within the range.
            before = rng.random() < 0.7
            offset = -rng.uniform(1, 180) * 86400 if before else rng.uniform(0, span)
            at_risk_since = start + timedelta(seconds=offset)
        churned_at = None
        if rng.random() < (0.12 if at_risk_since else 0.01):
            earliest = max(start, at_risk_since or start)
            churned_at = earliest + timedelta(
                seconds=rng.uniform(0, (end - earliest).total_seconds())
            )
        customers.append(Customer(f"cus_{n:07d}", tier, signup, upgrade, at_risk_since, churned_at))
    return customers


def _lognormal(rng: random.Random, median: float, sigma: float = 1.0) -> float:
    return median * math.exp(rng.gauss(0, sigma))


@dataclass(frozen=True)
class Conversation:
    # The facts row, in ``FACT_COLUMNS`` order.
    facts: tuple[object, ...]
    segment_ids: list[str]


def conversation_rows(
    count: int, customers: list[Customer], start: datetime, end: datetime, rng: random.Random
) -> Iterator[Conversation]:
    """``count`` conversations of the customers, busier tiers more often."""
    weights = [c.tier.activity for c in customers]
    span = (end - start).total_seconds()
    picks = rng.choices(customers, weights=weights, k=count)
    for n, customer in enumerate(picks):
        route_time = start + timedelta(seconds=rng.uniform(0, span))
        anonymous = rng.random() < ANONYMOUS_SHARE
        tier = TIERS[2] if anonymous else customer.tier_at(route_time)
        at_risk = not anonymous and customer.at_risk_at(route_time)
        segments = [] if anonymous else [tier.segment_id] + (["at_risk"] if at_risk else [])
        bot_first = rng.random() < 0.35
        escalated = bot_first and rng.random() < 0.4
        human = escalated or (not bot_first and rng.random() < 0.97)
        answered = human and rng.random() < 0.96
        first_response = _lognormal(rng, tier.first_response_median) if answered else None
        age = (end - route_time).total_seconds()
        if first_response is not None:
            first_response_met: bool | None = first_response <= tier.first_response_target
        else:
            first_response_met = False if human and age > tier.first_response_target else None
        reopened = rng.random() < (0.09 if at_risk else 0.04)
        resolved = rng.random() < 0.85 and not (reopened and rng.random() < 0.5)
        resolution = None
        if resolved:
            base = first_response or _lognormal(rng, 120)
            resolution = min(base + _lognormal(rng, tier.resolution_median), age)
        resolution_met = None if resolution is None else resolution <= tier.resolution_target
        csat = 0
        if rng.random() < 0.3:
            mean = tier.csat_mean - (0.8 if at_risk else 0)
            csat = min(5, max(1, round(rng.gauss(mean, 0.9))))
        handling = _lognormal(rng, 480, 0.7) if human else 0.0
        conversation_id = f"conv_{n:07d}"
        facts = (
            conversation_id,
            "" if anonymous else customer.customer_id,
            route_time,
            bot_first,
            first_response,
            resolution,
            first_response_met,
            resolution_met,
            csat,
            human,
            escalated,
            reopened,
            handling,
        )
        yield Conversation(facts, segments)


FACT_COLUMNS = (
    "conversation_id",
    "customer_id",
    "route_time",
    "bot_first",
    "first_response_seconds",
    "resolution_seconds",
    "first_response_met",
    "resolution_met",
    "csat_rating",
    "human_involved",
    "escalated",
    "reopened",
    "handling_seconds",
)
CHANGE_COLUMNS = (
    "customer_id",
    "segment_id",
    "family",
    "kind",
    "previous_winner",
    "change_time",
    "rule_revision",
    "trigger",
)


def linked_rows(
    conversations: list[Conversation],
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The facts rows and the segment rows (the segment, then the facts), each ending with
    ``previous_route_time`` as routing sets it: when the customer's conversation before it
    (of that segment, on a segment row) was routed, in (route_time, conversation_id) order."""
    facts: list[tuple[object, ...]] = [()] * len(conversations)
    routed_in: list[tuple[object, ...]] = []
    last: dict[tuple[object, ...], object] = {}

    def routing_order(index: int) -> tuple[Any, ...]:
        row = conversations[index].facts
        return row[2], row[0]  # route_time, conversation_id

    for index in sorted(range(len(conversations)), key=routing_order):
        row = conversations[index].facts
        customer, route_time = row[1], row[2]
        previous = last.get((customer,)) if customer else None
        facts[index] = (*row, previous)
        for segment_id in conversations[index].segment_ids:
            routed_in.append((segment_id, *row, last.get((customer, segment_id))))
            last[(customer, segment_id)] = route_time
        last[(customer,)] = route_time
    return facts, routed_in


def membership_rows(
    customers: list[Customer],
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Every customer's transitions and current memberships, as recomputation stores them."""
    changes: list[tuple[object, ...]] = []
    current: list[tuple[object, ...]] = []
    for c in customers:
        cid = c.customer_id
        changes.append(
            (cid, c.tier.segment_id, "tier", "entered", "", c.signup, 1, "full_recompute")
        )
        tier, tier_since = c.tier, c.signup
        if c.upgrade is not None:
            when, higher = c.upgrade
            old = c.tier.segment_id
            changes.append((cid, old, "tier", "exited", old, when, 1, "customer_changed"))
            changes.append(
                (cid, higher.segment_id, "tier", "entered", old, when, 1, "customer_changed")
            )
            tier, tier_since = higher, when
        current.append((cid, tier.segment_id, "tier", tier_since, 1))
        if c.at_risk_since is not None:
            changes.append(
                (cid, "at_risk", "", "entered", "", c.at_risk_since, 1, "customer_changed")
            )
            current.append((cid, "at_risk", "", c.at_risk_since, 1))
        if c.churned_at is not None:
            changes.append(
                (
                    cid,
                    CHURN_SEGMENT,
                    "lifecycle",
                    "entered",
                    "",
                    c.churned_at,
                    1,
                    "customer_changed",
                )
            )
            current.append((cid, CHURN_SEGMENT, "lifecycle", c.churned_at, 1))
    return changes, current


def create_overlays(url: str) -> None:
    """The tiers (as the billing bench makes them), the at-risk overlay and churn."""
    from services.core.db import create_db_engine
    from services.segments.domain import Segment
    from services.segments.repository import SegmentRepository

    engine = create_db_engine(url)
    create_tiers(engine)
    repository = SegmentRepository(engine)
    now = datetime.now(UTC)
    for segment_id, rule, family in (
        ("at_risk", {"health_score": {"$lt": 40}}, ""),
        (CHURN_SEGMENT, {"lifecycle_stage": "churned"}, "lifecycle"),
    ):
        segment = Segment(
            segment_id=segment_id,
            display_name=segment_id.replace("_", " ").title(),
            rule=rule,
            family=family,
            priority=10,
            enabled=True,
        )
        repository.create(segment=segment, actor="bench", now=now)
    engine.dispose()


def load(url: str, conversations: int, start: datetime, end: datetime, seed: int) -> dict[str, int]:
    """Generates and COPYs everything; returns row counts by table."""
    import psycopg

    rng = random.Random(seed)
    customers = make_customers(max(1, conversations // CONVERSATIONS_PER_CUSTOMER), start, end, rng)
    changes, current = membership_rows(customers)
    counts = {"customers": len(customers)}
    with psycopg.connect(_libpq(url)) as connection, connection.cursor() as cursor:
        with cursor.copy(
            f"COPY segment_membership_changes ({', '.join(CHANGE_COLUMNS)}) FROM STDIN"
        ) as copy:
            for row in changes:
                copy.write_row(row)
        with cursor.copy(
            "COPY segment_memberships (customer_id, segment_id, family, enter_time, "
            "rule_revision) FROM STDIN"
        ) as copy:
            for row in current:
                copy.write_row(row)
        counts["segment_membership_changes"] = len(changes)
        counts["segment_memberships"] = len(current)
        facts, routed_in = linked_rows(
            list(conversation_rows(conversations, customers, start, end, rng))
        )
        columns = ", ".join((*FACT_COLUMNS, "previous_route_time"))
        with cursor.copy(f"COPY routing_conversation_facts ({columns}) FROM STDIN") as copy:
            for row in facts:
                copy.write_row(row)
        with cursor.copy(
            f"COPY routing_conversation_segments (segment_id, {columns}) FROM STDIN"
        ) as copy:
            for row in routed_in:
                copy.write_row(row)
        counts["routing_conversation_facts"] = conversations
        counts["routing_conversation_segments"] = len(routed_in)
        connection.commit()
    # What autovacuum would do soon after a bulk load; the planner needs the statistics.
    with psycopg.connect(_libpq(url), autocommit=True) as connection:
        for table in (
            "routing_conversation_facts",
            "routing_conversation_segments",
            "segment_membership_changes",
            "segment_memberships",
        ):
            connection.execute(f"VACUUM ANALYZE {table}")
    return counts


def _libpq(url: str) -> str:
    """A libpq URL from a SQLAlchemy one (``postgresql+psycopg://`` -> ``postgresql://``)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def time_scorecard(stack: RunningStack, start: datetime, end: datetime, runs: int) -> list[float]:
    """Seconds per GetScorecard(family=tier) call, ``runs`` calls in a row on one channel."""
    from switchboard.reports.v1 import reports_pb2 as pb
    from switchboard.reports.v1 import reports_pb2_grpc

    request = pb.GetScorecardRequest(family="tier", churn_segment_id=CHURN_SEGMENT)
    request.start_time.FromDatetime(start)
    request.end_time.FromDatetime(end)
    seconds = []
    with stack.channel("routing") as channel:
        stub = reports_pb2_grpc.ReportServiceStub(channel)
        for _ in range(runs):
            started = time.perf_counter()
            response = stub.GetScorecard(request, timeout=120)
            seconds.append(time.perf_counter() - started)
    total = sum(score.figures.conversations for score in response.segments)
    if response.blended.conversations == 0 or total == 0:
        raise RuntimeError(f"the scorecard saw no conversations: {response}")
    return seconds


def explain_statements(url: str, start: datetime, end: datetime) -> list[tuple[float, str]]:
    """The scorecard's conversation statements, run in-process through the reports
    repository: each one's seconds and its EXPLAIN ANALYZE, slowest first."""
    from sqlalchemy import event

    from services.core.db import create_db_engine
    from services.reports.repository import ReportRepository

    engine = create_db_engine(url)
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    repository = ReportRepository(engine)
    repository.tally_scorecard([t.segment_id for t in TIERS], start, end)
    event.remove(engine, "before_cursor_execute", capture)
    # Each read of the figures, one at a time, under the settings the repository gave it.
    settings = dict.fromkeys(sql for sql, _ in captured if sql.startswith("SET LOCAL"))
    plans = []
    for statement, parameters in captured:
        if "routing_conversation_" not in statement:
            continue
        with engine.connect() as connection, connection.begin():
            for setting in settings:
                connection.exec_driver_sql(setting)
            cursor = connection.exec_driver_sql(
                f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters
            )
            plan = "\n".join(row[0] for row in cursor)
        seconds = float(plan.rsplit("Execution Time: ", 1)[1].split()[0]) / 1000
        plans.append((seconds, plan))
    engine.dispose()
    return sorted(plans, key=lambda found: -found[0])


def time_retention(stack: RunningStack, start: datetime, end: datetime) -> float:
    """Seconds of the one cross-service call a scorecard makes that reads memberships."""
    from switchboard.segments.v1 import segments_pb2 as spb
    from switchboard.segments.v1 import segments_pb2_grpc

    request = spb.GetRetentionRequest(
        segment_ids=[t.segment_id for t in TIERS], churn_segment_id=CHURN_SEGMENT
    )
    request.start_time.FromDatetime(start)
    request.end_time.FromDatetime(end)
    with stack.channel("segments") as channel:
        started = time.perf_counter()
        segments_pb2_grpc.SegmentServiceStub(channel).GetRetention(request, timeout=120)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5, help="Warm calls after the cold one.")
    parser.add_argument("--cold-runs", type=int, default=3, help="Fresh stacks, one call each.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--explain", action="store_true", help="EXPLAIN ANALYZE even when the target is met."
    )
    parser.add_argument(
        "--reuse",
        metavar="NAME",
        help="Keep the filled database NAME between runs: fill it only when it is missing "
        "or was filled for other --conversations or --seed or an older schema, and never "
        "drop it. The range is then the 30 days up to the hour of its fill.",
    )
    arguments = parser.parse_args()
    admin_url = os.environ.get("SWITCHBOARD_BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL)
    databases = Databases("postgresql", admin_url)
    try:
        if arguments.reuse:
            url, start, end, counts = reused(admin_url, arguments)
        else:
            url = databases.fresh()
            start, end, counts = fill(url, arguments)
        cold: list[float] = []
        warm: list[float] = []
        retention = 0.0
        data_dir = tempfile.mkdtemp(prefix="sb-report-bench-")
        for attempt in range(arguments.cold_runs):
            with running_services(
                ("profiles", "segments", "routing"), database_url=url, data_dir=data_dir
            ) as stack:
                first, *rest = time_scorecard(
                    stack,
                    start,
                    end,
                    1 + (arguments.runs if attempt == 0 else 0),
                )
                cold.append(first)
                warm.extend(rest)
                if attempt == 0:
                    retention = time_retention(stack, start, end)
        print_results(arguments, counts, cold, warm)
        print(f"\nGetRetention alone (segments server, warm): {retention:.2f} s")
        if max(cold + warm) >= TARGET_SECONDS or arguments.explain:
            plans = explain_statements(url, start, end)
            print(
                f"\nThe scorecard's {len(plans)} conversation statements, run in-process: "
                + ", ".join(f"{seconds:.2f} s" for seconds, _ in plans)
                + f"\n\nEXPLAIN ANALYZE of the slowest:\n\n{plans[0][1]}"
            )
    finally:
        databases.drop_all()


def fill(url: str, arguments: argparse.Namespace) -> tuple[datetime, datetime, dict[str, int]]:
    """Fills the migrated, empty database at ``url`` for the 30 days up to this hour."""
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - RANGE
    create_overlays(url)
    started = time.perf_counter()
    counts = load(url, arguments.conversations, start, end, arguments.seed)
    print(
        f"generated and loaded in {time.perf_counter() - started:.0f} s: "
        + ", ".join(f"{k} {v:,}" for k, v in counts.items()),
        flush=True,
    )
    return start, end, counts


def reused(
    admin_url: str, arguments: argparse.Namespace
) -> tuple[str, datetime, datetime, dict[str, int]]:
    """The kept database ``arguments.reuse``, filled once for these arguments and this
    schema: its URL, the range of its fill and its row counts. A fill is recorded in
    ``bench_report_fill`` only once complete, so an interrupted one is redone from scratch,
    as is one made for other arguments or before a migration was added."""
    import psycopg
    from psycopg.types.json import Jsonb
    from sqlalchemy.engine import make_url

    from services.core.db import upgrade_database

    name = arguments.reuse
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    wanted = Jsonb(
        {
            "conversations": arguments.conversations,
            "seed": arguments.seed,
            "schema": _schema_digest(),
        }
    )
    recorded = None
    with psycopg.connect(admin_url, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            with psycopg.connect(_libpq(url)) as connection:
                kept = connection.execute("SELECT to_regclass('bench_report_fill') IS NOT NULL")
                if kept.fetchone() == (True,):
                    recorded = connection.execute(
                        "SELECT start_time, end_time, counts FROM bench_report_fill "
                        "WHERE parameters = %s",
                        [wanted],
                    ).fetchone()
        if recorded is not None:
            start, end, counts = recorded
            print(f"reusing database {name}, filled for {start:%Y-%m-%d %H:%M} to {end:%H:%M}")
            return url, start, end, counts
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    upgrade_database(url)
    start, end, counts = fill(url, arguments)
    with psycopg.connect(_libpq(url)) as connection:
        connection.execute(
            "CREATE TABLE bench_report_fill (parameters jsonb NOT NULL, "
            "start_time timestamptz NOT NULL, end_time timestamptz NOT NULL, "
            "counts jsonb NOT NULL)"
        )
        connection.execute(
            "INSERT INTO bench_report_fill VALUES (%s, %s, %s, %s)",
            [wanted, start, end, Jsonb(counts)],
        )
    return url, start, end, counts


def _schema_digest() -> str:
    """A digest of every migration's text: a fill is reused only on the schema it was made
    for, even while a migration is still being written."""
    from services.core.db import MIGRATIONS_DIR

    digest = hashlib.sha256()
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def print_results(
    arguments: argparse.Namespace, counts: dict[str, int], cold: list[float], warm: list[float]
) -> None:
    def cell(values: list[float]) -> tuple[str, str]:
        if not values:
            return "-", "-"
        return f"{statistics.median(values):.2f} s", f"{max(values):.2f} s"

    cold_p50, cold_max = cell(cold)
    warm_p50, warm_max = cell(warm)
    verdict = "met" if max(cold + warm) < TARGET_SECONDS else "missed"
    print(
        f"\n| GetScorecard(family=tier, 30 days), {counts['routing_conversation_facts']:,} "
        f"conversations | calls | p50 | max |\n|---|---|---|---|\n"
        f"| cold (first call of a fresh stack) | {len(cold)} | {cold_p50} | {cold_max} |\n"
        f"| warm | {len(warm)} | {warm_p50} | {warm_max} |\n\n"
        f"Target under {TARGET_SECONDS:.0f} s: {verdict}.\n\n"
        f"    .venv/bin/python bench/report_scorecard.py --conversations "
        f"{arguments.conversations} --runs {arguments.runs} --cold-runs {arguments.cold_runs} "
        f"--seed {arguments.seed}" + (f" --reuse {arguments.reuse}" if arguments.reuse else "")
    )


if __name__ == "__main__":
    main()
