"""A sync worker killed with SIGKILL halfway through a run loses and duplicates nothing:
``switchboard sync resume`` on a new worker ends with the store a clean run produces."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from services.core.db import create_db_engine
from services.profiles.domain import field_sources_from_document
from services.profiles.repository import (
    CustomerRepository,
    changes,
    customers,
    external_ids,
)
from services.sync.app import SyncRuns
from services.sync.repository import SyncRun, SyncRunRepository
from tests.integration.test_sync import switchboard
from tests.support.stores import DatabaseFactory
from tests.support.workers import fresh_redis_database, running_worker, wait_for, worker_environment

ROWS = 24_000
CHUNK_ROWS = 500


@pytest.fixture
def fresh_redis(redis_url: str) -> Iterator[str]:
    yield from fresh_redis_database(redis_url, 7)


def write_billing_export(path: Path) -> set[str]:
    """Stripe-shaped CSV rows, with keys repeated in later chunks (the later row wins) and
    a bad row now and then; returns the keys of customers the file creates."""
    accepted = set()
    rows = []
    for n in range(ROWS):
        key = f"cus_{n - 7000 if n >= 20_000 else n:06d}"
        seats = "many" if n % 997 == 0 else str(1 + n % 80)
        if seats != "many":
            accepted.add(key)
        price = "subscription.items.0.price."
        rows.append(
            {
                "id": key,
                "name": f"Owner {n}",
                "subscription.items.0.quantity": seats,
                price + "nickname": ("starter", "growth", "enterprise")[n % 3],
                price + "unit_amount": str(1000 + n % 50),
                price + "recurring.interval": "month" if n % 2 else "year",
                "subscription.status": "active" if n % 5 else "past_due",
            }
        )
    with path.open("w", newline="") as stream:
        out = csv.DictWriter(stream, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows)
    return accepted


def store_of(url: str) -> dict[str, Any]:
    """Everything a sync writes, keyed by billing id (customer ids are random)."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            by_id = {
                row.customer_id: row.external_id
                for row in connection.execute(
                    select(external_ids).where(external_ids.c.system == "billing")
                )
            }
            stored = list(connection.execute(select(customers)))
            # Refresh times differ between the runs, so not their field-source documents.
            records = {
                by_id[row.customer_id]: {
                    k: v
                    for k, v in row._mapping.items()
                    if k not in ("customer_id", "create_time", "update_time", "field_sources")
                }
                for row in stored
            }
            sources = sorted(
                (by_id[row.customer_id], field, origin.source)
                for row in stored
                for field, origin in field_sources_from_document(row.field_sources).items()
            )
            created = Counter(
                by_id.get(row.customer_id)
                for row in connection.execute(select(changes).where(changes.c.kind == "created"))
            )
            id_count = len(list(connection.execute(select(external_ids))))
    finally:
        engine.dispose()
    return {
        "customers": records,
        "sources": sources,
        "created": created,
        "external_ids": id_count,
    }


def run_of(url: str, run_id: str) -> SyncRun:
    engine = create_db_engine(url)
    try:
        return SyncRunRepository(engine).get(run_id)
    finally:
        engine.dispose()


def test_a_killed_sync_resumes_to_the_store_a_clean_run_makes(
    tmp_path: Path, database_url: str, database_factory: DatabaseFactory, fresh_redis: str
) -> None:
    export = tmp_path / "billing.csv"
    created_keys = write_billing_export(export)
    env = {
        **worker_environment(tmp_path / "var", database_url, fresh_redis),
        "SWITCHBOARD_SYNC_CHUNK_ROWS": str(CHUNK_ROWS),
    }
    # The worker in a process group of its own, so that SIGKILL takes its pool children too.
    doomed = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "worker", "--concurrency=1", "--queues=sync"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        started = switchboard(env, "sync", "run", "billing", str(export), "--no-wait")
        assert started.returncode == 0, started.stderr
        run_id = started.stdout.split()[2].rstrip(":")
        wait_for(
            lambda: run_of(database_url, run_id).rows_done >= 4 * CHUNK_ROWS,
            "a few chunks to commit",
            timeout=120,
        )
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait()
    killed = run_of(database_url, run_id)
    assert killed.status == "running"
    assert 0 < killed.rows_done < ROWS

    with running_worker(env, "--queues=sync"):
        resumed = switchboard(env, "sync", "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from row {killed.rows_done + 1}" in resumed.stdout
    finished = run_of(database_url, run_id)

    clean_url = database_factory.new_database()
    try:
        engine = create_db_engine(clean_url)
        syncs = SyncRuns(
            SyncRunRepository(engine), CustomerRepository(engine), chunk_rows=CHUNK_ROWS
        )
        clean = syncs.process(syncs.create(source="billing", file=export).run_id, "clean").run
        engine.dispose()
        expected = store_of(clean_url)
    finally:
        database_factory.drop(clean_url)

    assert (finished.status, finished.rows_done) == ("succeeded", ROWS)
    counts = ("created_count", "updated_count", "unchanged_count", "rejected_count")
    assert [getattr(finished, c) for c in counts] == [getattr(clean, c) for c in counts]
    assert clean.rejected_count == len(range(0, ROWS, 997))
    actual = store_of(database_url)
    assert set(actual["customers"]) == created_keys
    assert actual == expected
    assert set(actual["created"].values()) == {1}
