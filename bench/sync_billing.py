"""Billing sync throughput: a generated Stripe-shaped CSV of N customers, loaded into a
fresh database twice (the first run creates everyone, the second finds everything
unchanged), beside a raw COPY of the same customer rows on PostgreSQL.

    .venv/bin/python bench/sync_billing.py --rows 100000 --database-url postgresql://127.0.0.1:5432/bench
    .venv/bin/python bench/sync_billing.py --rows 100000   # SQLite in a temp dir

The database must be empty and migrated (``switchboard db upgrade``) or absent (SQLite).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

# Run as a script from a checkout, where the project is not necessarily installed.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from services.core.db import create_db_engine, is_postgresql, upgrade_database  # noqa: E402
from services.profiles.repository import CustomerRepository  # noqa: E402
from services.sync.app import SyncRuns  # noqa: E402
from services.sync.repository import SyncRunRepository  # noqa: E402

HEADER = [
    "id",
    "email",
    "name",
    "currency",
    "subscription.status",
    "subscription.items.0.quantity",
    "subscription.items.0.price.nickname",
    "subscription.items.0.price.unit_amount",
    "subscription.items.0.price.recurring.interval",
]


def write_export(path: Path, rows: int, changed_every: int = 0) -> None:
    """The export; with ``changed_every`` N, every Nth customer has one more seat (the
    night's changes)."""
    with path.open("w", newline="") as stream:
        out = csv.writer(stream)
        out.writerow(HEADER)
        for n in range(rows):
            grown = 1 if changed_every and n % changed_every == 0 else 0
            out.writerow(
                [
                    f"cus_{n:08d}",
                    f"owner{n}@example.com",
                    f"Owner {n}",
                    "usd",
                    "active" if n % 5 else "past_due",
                    1 + n % 80 + grown,
                    ("starter", "growth", "enterprise")[n % 3],
                    1000 + n % 50,
                    "month" if n % 2 else "year",
                ]
            )


def raw_copy_seconds(url: str, export: Path) -> float:
    """COPY the same rows into an unindexed scratch table: the floor for loading them."""
    engine = create_db_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TEMP TABLE raw_billing (id text, email text, name text, currency text, "
            "status text, quantity bigint, plan text, unit_amount bigint, interval text)"
        )
        started = time.perf_counter()
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with (
            export.open() as stream,
            cursor.copy("COPY raw_billing FROM STDIN WITH (FORMAT csv, HEADER true)") as copy,
        ):
            copy.write(stream.read())
        elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def reevaluate_changed(url: str, engine: Engine) -> tuple[float, int]:
    """Re-evaluate the customers the change log names after the cursor, as a worker's round
    does, reading them from a real ``serve profiles`` process over gRPC."""
    from bench.stack import running_services
    from services.core.channels import open_channel
    from services.core.settings import Settings
    from services.segments.app import Segments
    from services.segments.profiles_client import ProfilesClient
    from services.segments.repository import SegmentRepository

    with running_services(("profiles",), database_url=url, data_dir=tempfile.mkdtemp()) as stack:
        settings = Settings(api_key=stack.api_key)
        channel = open_channel(stack.addresses["profiles"], settings, deadline_seconds=60)
        segments = Segments(SegmentRepository(engine), ProfilesClient(channel))
        started = time.perf_counter()
        summary = segments.recompute(all_customers=False, now=None)
        elapsed = time.perf_counter() - started
        channel.close()
    return elapsed, summary.evaluated


def create_tiers(engine: Engine) -> None:
    from services.segments.domain import Segment
    from services.segments.repository import SegmentRepository

    repository = SegmentRepository(engine)
    now = datetime.now(UTC)
    for segment_id, rule, priority in (
        ("tier_enterprise", {"seats": {"$gte": 50}}, 10),
        ("tier_growth", {"seats": {"$gte": 5, "$lt": 50}}, 20),
        ("tier_starter", {"seats": {"$lt": 5}}, 30),
    ):
        segment = Segment(
            segment_id=segment_id,
            display_name=segment_id,
            rule=rule,
            family="tier",
            priority=priority,
            enabled=True,
        )
        repository.create(segment=segment, actor="bench", now=now)


def skip_to_end_of_change_log(engine: Engine) -> None:
    """Yesterday's memberships count as evaluated, on today's definitions: tonight's round
    sees only tonight's changes (else the new tier family would make it a round of all)."""
    from services.segments.logic import definitions_fingerprint
    from services.segments.repository import DEFINITIONS_EVALUATED, SegmentRepository

    with engine.connect() as connection:
        last = connection.exec_driver_sql("SELECT max(sequence) FROM customer_changes").scalar()
    repository = SegmentRepository(engine)
    now = datetime.now(UTC)
    repository.save_cursor(int(last or 0), now)
    fingerprint = definitions_fingerprint(repository.list_all())
    repository.save_cursor(fingerprint, now, DEFINITIONS_EVALUATED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--chunk-rows", type=int, default=5000)
    parser.add_argument("--database-url", default="")
    parser.add_argument(
        "--nightly",
        action="store_true",
        help="after the first run, sync a file where every 20th customer changed and "
        "re-evaluate the changed customers' segments (instead of the unchanged re-run)",
    )
    arguments = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sb-sync-bench-"))
    url = arguments.database_url or f"sqlite:///{workdir / 'bench.db'}"
    upgrade_database(url)
    export = workdir / "billing.csv"
    write_export(export, arguments.rows)
    engine = create_db_engine(url)
    syncs = SyncRuns(
        SyncRunRepository(engine), CustomerRepository(engine), chunk_rows=arguments.chunk_rows
    )

    def sync(label: str, path: Path) -> float:
        started = time.perf_counter()
        run = syncs.process(syncs.create(source="billing", file=path).run_id, "bench").run
        elapsed = time.perf_counter() - started
        print(
            f"{label}: {arguments.rows} rows in {elapsed:.1f} s = {arguments.rows / elapsed:,.0f} "
            f"rows/s ({run.created_count} created, {run.updated_count} updated, "
            f"{run.unchanged_count} unchanged, {run.rejected_count} rejected)",
            flush=True,
        )
        return elapsed

    sync("first run (creates)", export)
    if arguments.nightly:
        create_tiers(engine)
        skip_to_end_of_change_log(engine)
        tonight = workdir / "billing-tonight.csv"
        write_export(tonight, arguments.rows, changed_every=20)
        load = sync("nightly run (every 20th changed)", tonight)
        seconds, evaluated = reevaluate_changed(url, engine)
        print(
            f"re-evaluation of the changed customers: {evaluated} in {seconds:.1f} s = "
            f"{evaluated / seconds:,.0f} customers/s\n"
            f"nightly total (sync + re-evaluation): {load + seconds:.1f} s",
            flush=True,
        )
    else:
        sync("second run (unchanged)", export)
    if is_postgresql(engine):
        copy = raw_copy_seconds(url, export)
        print(f"raw COPY of the same rows: {copy:.2f} s = {arguments.rows / copy:,.0f} rows/s")
    engine.dispose()


if __name__ == "__main__":
    main()
