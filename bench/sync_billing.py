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
import tempfile
import time
from pathlib import Path

from services.core.db import create_db_engine, is_postgresql, upgrade_database
from services.profiles.repository import CustomerRepository
from services.sync.app import SyncRuns
from services.sync.repository import SyncRunRepository

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


def write_export(path: Path, rows: int) -> None:
    with path.open("w", newline="") as stream:
        out = csv.writer(stream)
        out.writerow(HEADER)
        for n in range(rows):
            out.writerow(
                [
                    f"cus_{n:08d}",
                    f"owner{n}@example.com",
                    f"Owner {n}",
                    "usd",
                    "active" if n % 5 else "past_due",
                    1 + n % 80,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--chunk-rows", type=int, default=5000)
    parser.add_argument("--database-url", default="")
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
    for label in ("first run (creates)", "second run (unchanged)"):
        started = time.perf_counter()
        run = syncs.process(syncs.create(source="billing", file=export).run_id, "bench").run
        elapsed = time.perf_counter() - started
        print(
            f"{label}: {arguments.rows} rows in {elapsed:.1f} s = {arguments.rows / elapsed:,.0f} "
            f"rows/s ({run.created_count} created, {run.updated_count} updated, "
            f"{run.unchanged_count} unchanged, {run.rejected_count} rejected)"
        )
    if is_postgresql(engine):
        copy = raw_copy_seconds(url, export)
        print(f"raw COPY of the same rows: {copy:.2f} s = {arguments.rows / copy:,.0f} rows/s")
    engine.dispose()


if __name__ == "__main__":
    main()
