"""Would a set-based nightly billing load come within 5x of a raw COPY (issue 6)? A probe.

Run from a checkout with the virtualenv active, on an empty PostgreSQL database::

    python bench/sync_set_based_probe.py --rows 1000000 --rounds 2 \\
        --database-url postgresql://root@127.0.0.1:5432/bench_probe

It creates ``--rows`` customers with the real sync (``SyncRuns``, as ``bench/sync_billing.py``
does) and writes the night's export (every 20th customer has one more seat). Then, each
round, it times a raw COPY of that export and three set-based loads written by hand in SQL
for the billing connector's mapping, each in a transaction it rolls back:

- ``split``: COPY the file into a staging table of text, map and validate every row into a
  second table, resolve the billing ids and keep the rows that differ from the stored
  customer, update those customers and log their changes. Then one refresh stamp written on
  every delivered customer's row, which today's model of field freshness needs.
- ``fused``: the same in one pass: map, validate, resolve and compare in one statement whose
  full join also finds the customers the file no longer delivers (what a freshness recorded
  per run would need), with ``work_mem`` large enough for the joins to stay in memory.
- ``digest``: skip the mapping of unchanged rows. Each billing id keeps a digest of the row
  last applied (built, untimed, from the first export); only rows whose digest differs are
  mapped, applied and logged, and their digests replaced.

None of them is a sync. They leave out what the product needs besides: the rejected rows and
their reasons, per-field source precedence, new customers, links and the run's bookkeeping.
So their figures are lower bounds for such designs, not results of them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

# Run as a script from a checkout, where the project is not necessarily installed.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from bench.sync_billing import raw_copy_seconds, write_export  # noqa: E402
from services.core.db import create_db_engine, upgrade_database  # noqa: E402
from services.profiles.repository import CustomerRepository  # noqa: E402
from services.sync.app import SyncRuns  # noqa: E402
from services.sync.repository import SyncRunRepository  # noqa: E402

Cursor = Any
COPY_FILE = "COPY {table} FROM STDIN WITH (FORMAT csv, HEADER true)"
STAGING = (
    "CREATE TEMP TABLE {table} (id text, email text, name text, currency text, status text, "
    "quantity text, plan text, unit_amount text, interval text)"
)
SEATS_VALID = r"quantity ~ '^[0-9]+$'"
AMOUNT_VALID = r"unit_amount ~ '^-?[0-9]+(\.[0-9]+)?$'"
EMAIL_VALID = r"(email IS NULL OR email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$')"

# The billing connector's mapping (services/sync/connectors/billing.toml) as SQL columns.
MAPPED_COLUMNS = f"""
       id AS key,
       nullif(trim(email), '') AS email,
       nullif(trim(name), '') AS display_name,
       nullif(trim(plan), '') AS plan,
       CASE WHEN {SEATS_VALID} THEN quantity::bigint END AS seats,
       CASE WHEN {SEATS_VALID} AND {AMOUNT_VALID} THEN
           round(unit_amount::numeric * quantity::numeric
                 * CASE interval WHEN 'day' THEN 365 WHEN 'week' THEN 52
                                 WHEN 'month' THEN 12 WHEN 'year' THEN 1 END
                 * 0.01, 6)::float8 END AS arr,
       CASE status WHEN 'active' THEN 'active' WHEN 'trialing' THEN 'trial'
                   WHEN 'past_due' THEN 'past_due' WHEN 'unpaid' THEN 'unpaid'
                   WHEN 'canceled' THEN 'canceled' WHEN 'incomplete' THEN 'incomplete'
                   WHEN 'incomplete_expired' THEN 'canceled' WHEN 'paused' THEN 'paused'
       END AS billing_status,
       nullif(trim(currency), '') AS currency,
       ({SEATS_VALID} AND {AMOUNT_VALID} AND {EMAIL_VALID}) AS valid
"""

# The stored customer differs from the mapped row ``m`` (a blank leaves a text field as is).
DIFFERS = """
   c.email IS DISTINCT FROM coalesce(m.email, c.email)
   OR c.display_name IS DISTINCT FROM coalesce(m.display_name, c.display_name)
   OR c.plan IS DISTINCT FROM coalesce(m.plan, c.plan)
   OR c.seats IS DISTINCT FROM m.seats
   OR c.arr IS DISTINCT FROM m.arr
   OR c.attributes->>'billing_status' IS DISTINCT FROM m.billing_status
   OR c.attributes->>'currency' IS DISTINCT FROM m.currency
"""

UPDATE_CHANGED = """
UPDATE customers c
SET seats = d.seats, arr = d.arr, plan = coalesce(d.plan, c.plan),
    version = c.version + 1, update_time = now()
FROM {table} d
WHERE c.customer_id = d.customer_id {only}
"""

LOG_CHANGES = """
INSERT INTO customer_changes (customer_id, kind, changed_fields, change_time)
SELECT customer_id, 'updated', '["arr", "seats"]'::jsonb, now() FROM {table} {only}
"""

SPLIT = (
    (
        "map and validate every row",
        f"CREATE TEMP TABLE mapped AS SELECT {MAPPED_COLUMNS} FROM staging",
    ),
    (
        "resolve ids, keep what differs",
        "CREATE TEMP TABLE changed AS SELECT c.customer_id, m.* FROM mapped m "
        "JOIN customer_external_ids x ON x.system = 'billing' AND x.external_id = m.key "
        f"JOIN customers c ON c.customer_id = x.customer_id WHERE m.valid AND ({DIFFERS})",
    ),
    ("update the changed customers", UPDATE_CHANGED.format(table="changed", only="")),
    ("log their changes", LOG_CHANGES.format(table="changed", only="")),
)

# Today's freshness model: every delivered customer's row gets a new refresh stamp.
STAMP_EVERY_DELIVERED = (
    "+ a refresh stamp on every delivered customer",
    """
UPDATE customers c
SET field_sources = jsonb_set(c.field_sources, '{0,refresh_time}', to_jsonb(now()::text))
FROM mapped m
JOIN customer_external_ids x ON x.system = 'billing' AND x.external_id = m.key
WHERE c.customer_id = x.customer_id
""",
)

FUSED = (
    ("analyze the staging table", "ANALYZE staging"),
    (
        "one pass: map, resolve, compare",
        f"""
CREATE TEMP TABLE work AS
WITH mapped AS (SELECT {MAPPED_COLUMNS} FROM staging),
     billing AS (SELECT external_id, customer_id
                 FROM customer_external_ids WHERE system = 'billing')
SELECT coalesce(b.customer_id, c.customer_id) AS customer_id, m.*,
       CASE WHEN m.key IS NULL THEN 'undelivered' WHEN NOT m.valid THEN 'rejected'
            WHEN b.customer_id IS NULL THEN 'new' ELSE 'changed' END AS action
FROM mapped m
FULL JOIN billing b ON b.external_id = m.key
LEFT JOIN customers c ON c.customer_id = b.customer_id AND m.key IS NOT NULL
WHERE m.key IS NULL OR NOT m.valid OR b.customer_id IS NULL OR {DIFFERS}
""",
    ),
    (
        "update the changed customers",
        UPDATE_CHANGED.format(table="work", only="AND d.action = 'changed'"),
    ),
    ("log their changes", LOG_CHANGES.format(table="work", only="WHERE action = 'changed'")),
)

DIGEST_SETUP = (
    STAGING.format(table="yesterday"),
    COPY_FILE.format(table="yesterday"),
    "CREATE TEMP TABLE digests AS SELECT x.external_id, x.customer_id, md5(y::text) AS digest "
    "FROM yesterday y JOIN customer_external_ids x "
    "ON x.system = 'billing' AND x.external_id = y.id",
    "ALTER TABLE digests ADD PRIMARY KEY (external_id)",
    "ANALYZE digests",
)

DIGEST = (
    ("analyze the staging table", "ANALYZE staging"),
    (
        "keep rows whose digest differs",
        "CREATE TEMP TABLE differing AS SELECT d.customer_id, md5(s::text) AS digest, s.* "
        "FROM staging s FULL JOIN digests d ON d.external_id = s.id "
        "WHERE s.id IS NULL OR d.external_id IS NULL OR d.digest <> md5(s::text)",
    ),
    ("analyze them", "ANALYZE differing"),
    (
        "map them and keep what differs",
        f"CREATE TEMP TABLE changed AS SELECT m.customer_id, m.digest, m.key, "
        f"m.email, m.display_name, m.plan, m.seats, m.arr, m.billing_status, m.currency "
        f"FROM (SELECT customer_id, digest, {MAPPED_COLUMNS} FROM differing) m "
        f"JOIN customers c ON c.customer_id = m.customer_id WHERE m.valid AND ({DIFFERS})",
    ),
    ("update the changed customers", UPDATE_CHANGED.format(table="changed", only="")),
    ("log their changes", LOG_CHANGES.format(table="changed", only="")),
    (
        "replace their digests",
        "UPDATE digests d SET digest = c.digest FROM changed c WHERE d.external_id = c.key",
    ),
)

DESIGNS = {"split": SPLIT, "fused": FUSED, "digest": DIGEST}


def copy_file(cursor: Cursor, table: str, export: Path) -> None:
    with export.open() as stream, cursor.copy(COPY_FILE.format(table=table)) as copying:
        copying.write(stream.read())


def timed_step(cursor: Cursor, sql: str) -> tuple[float, str]:
    """Seconds ``sql`` takes, and how many rows it touched (when the driver says)."""
    started = time.perf_counter()
    cursor.execute(sql)
    took = time.perf_counter() - started
    return took, f"  ({cursor.rowcount} rows)" if cursor.rowcount >= 0 else ""


def time_design(
    cursor: Cursor, name: str, export: Path, yesterday: Path, copy_seconds: float
) -> None:
    """Print how long the design's load of ``export`` takes, step by step, and as a multiple
    of ``copy_seconds``."""
    cursor.execute("SET LOCAL work_mem = '256MB'")
    if name == "digest":
        for statement in DIGEST_SETUP:
            if statement.startswith("COPY"):
                copy_file(cursor, "yesterday", yesterday)
            else:
                cursor.execute(statement)
    started = time.perf_counter()
    cursor.execute(STAGING.format(table="staging"))
    copy_file(cursor, "staging", export)
    total = time.perf_counter() - started
    print(f"    COPY into staging (text)          {total:6.2f} s")
    for step, sql in DESIGNS[name]:
        took, rows = timed_step(cursor, sql)
        total += took
        print(f"    {step:<33} {took:6.2f} s{rows}")
    print(f"  {name} core: {total:.2f} s = {total / copy_seconds:.1f}x the raw COPY")
    if name == "split":
        step, sql = STAMP_EVERY_DELIVERED
        took, rows = timed_step(cursor, sql)
        print(f"  {step}: {took:.2f} s{rows}, {(total + took) / copy_seconds:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--database-url", required=True, help="an empty PostgreSQL database")
    arguments = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sb-probe-"))
    upgrade_database(arguments.database_url)
    engine = create_db_engine(arguments.database_url)
    first = workdir / "billing.csv"
    write_export(first, arguments.rows)
    syncs = SyncRuns(SyncRunRepository(engine), CustomerRepository(engine), chunk_rows=5000)
    started = time.perf_counter()
    syncs.process(syncs.create(source="billing", file=first).run_id, "probe")
    print(
        f"{arguments.rows} customers created by the sync in {time.perf_counter() - started:.1f} s"
    )
    tonight = workdir / "billing-tonight.csv"
    write_export(tonight, arguments.rows, changed_every=20)
    # The first read after a bulk load sets every row's hint bits, which a night's load
    # would not pay: vacuum the tables before timing anything.
    with psycopg.connect(arguments.database_url, autocommit=True) as admin:
        admin.execute("VACUUM ANALYZE customers")
        admin.execute("VACUUM ANALYZE customer_external_ids")
    with engine.connect() as connection:
        driver = connection.connection.driver_connection
        assert driver is not None
        for round_number in range(1, arguments.rounds + 1):
            copy = raw_copy_seconds(arguments.database_url, tonight)
            print(f"round {round_number}: raw COPY of the night's rows: {copy:.2f} s")
            for name in DESIGNS:
                time_design(driver.cursor(), name, tonight, first, copy)
                driver.rollback()
    engine.dispose()


if __name__ == "__main__":
    main()
