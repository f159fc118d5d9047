"""Would a set-based nightly billing load come within 5x of a raw COPY (issue 6)? A probe.

Run from a checkout with the virtualenv active, on an empty PostgreSQL database::

    python bench/sync_set_based_probe.py --rows 1000000 \\
        --database-url postgresql://root@127.0.0.1:5432/bench_probe

It creates ``--rows`` customers with the real sync (``SyncRuns``, as ``bench/sync_billing.py``
does), writes the night's export (every 20th customer has one more seat) and times a raw
COPY of it. Then, in one transaction that it rolls back, it times the core of a set-based
load written by hand in SQL for the billing connector's mapping: COPY the file into a
staging table of text, map and validate it in one statement, resolve the billing ids and
keep the rows that differ from the stored customer, update those customers and log their
changes. Last it times what today's model of field freshness would add, one refresh stamp
written on every delivered customer's row.

This is not a sync. It leaves out what the product needs besides: the rejected rows and
their reasons, per-field source precedence, new customers, links and the run's bookkeeping.
So its figure is a lower bound for such a design, not a result of one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# Run as a script from a checkout, where the project is not necessarily installed.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from bench.sync_billing import raw_copy_seconds, write_export  # noqa: E402
from services.core.db import create_db_engine, upgrade_database  # noqa: E402
from services.profiles.repository import CustomerRepository  # noqa: E402
from services.sync.app import SyncRuns  # noqa: E402
from services.sync.repository import SyncRunRepository  # noqa: E402

STAGING = (
    "CREATE TEMP TABLE staging (id text, email text, name text, currency text, status text, "
    "quantity text, plan text, unit_amount text, interval text)"
)

# The billing connector's mapping (services/sync/connectors/billing.toml) as SQL.
MAP_AND_VALIDATE = r"""
CREATE TEMP TABLE mapped AS
SELECT id AS key,
       nullif(trim(email), '') AS email,
       nullif(trim(name), '') AS display_name,
       nullif(trim(plan), '') AS plan,
       quantity::bigint AS seats,
       round(unit_amount::numeric * quantity::numeric
             * CASE interval WHEN 'day' THEN 365 WHEN 'week' THEN 52
                             WHEN 'month' THEN 12 WHEN 'year' THEN 1 END
             * 0.01, 6)::float8 AS arr,
       CASE status WHEN 'active' THEN 'active' WHEN 'trialing' THEN 'trial'
                   WHEN 'past_due' THEN 'past_due' WHEN 'unpaid' THEN 'unpaid'
                   WHEN 'canceled' THEN 'canceled' WHEN 'incomplete' THEN 'incomplete'
                   WHEN 'incomplete_expired' THEN 'canceled' WHEN 'paused' THEN 'paused'
       END AS billing_status,
       nullif(trim(currency), '') AS currency
FROM staging
WHERE quantity ~ '^[0-9]+$'
  AND unit_amount ~ '^-?[0-9]+(\.[0-9]+)?$'
  AND (email IS NULL OR email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$')
"""

RESOLVE_AND_DIFF = """
CREATE TEMP TABLE changed AS
SELECT c.customer_id, m.*
FROM mapped m
JOIN customer_external_ids x ON x.system = 'billing' AND x.external_id = m.key
JOIN customers c ON c.customer_id = x.customer_id
WHERE c.email IS DISTINCT FROM coalesce(m.email, c.email)
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
FROM changed d
WHERE c.customer_id = d.customer_id
"""

LOG_CHANGES = """
INSERT INTO customer_changes (customer_id, kind, changed_fields, change_time)
SELECT customer_id, 'updated', '["arr", "seats"]'::jsonb, now() FROM changed
"""

# Today's freshness model: every delivered customer's row gets a new refresh stamp.
STAMP_EVERY_DELIVERED = """
UPDATE customers c
SET field_sources = jsonb_set(coalesce(c.field_sources, '[]'::jsonb), '{0,refreshed}',
                              to_jsonb(now()::text))
FROM mapped m
JOIN customer_external_ids x ON x.system = 'billing' AND x.external_id = m.key
WHERE c.customer_id = x.customer_id
"""

STEPS = (
    ("map and validate in SQL", MAP_AND_VALIDATE),
    ("resolve ids, keep what differs", RESOLVE_AND_DIFF),
    ("update the changed customers", UPDATE_CHANGED),
    ("log their changes", LOG_CHANGES),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
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
    copy = raw_copy_seconds(arguments.database_url, tonight)
    print(f"raw COPY of the night's rows: {copy:.2f} s")
    with engine.connect() as connection:
        driver = connection.connection.driver_connection
        assert driver is not None
        cursor = driver.cursor()
        total = 0.0
        started = time.perf_counter()
        cursor.execute(STAGING)
        with (
            tonight.open() as stream,
            cursor.copy("COPY staging FROM STDIN WITH (FORMAT csv, HEADER true)") as copying,
        ):
            copying.write(stream.read())
        total += time.perf_counter() - started
        print(f"  COPY into staging (text)           {total:6.2f} s")
        for name, sql in STEPS:
            started = time.perf_counter()
            cursor.execute(sql)
            took = time.perf_counter() - started
            total += took
            print(f"  {name:<34} {took:6.2f} s  ({cursor.rowcount} rows)")
        print(f"set-based core: {total:.2f} s = {total / copy:.1f}x the raw COPY")
        started = time.perf_counter()
        cursor.execute(STAMP_EVERY_DELIVERED)
        stamped = time.perf_counter() - started
        print(
            f"  + a refresh stamp on every delivered customer: {stamped:.2f} s "
            f"({cursor.rowcount} rows), {(total + stamped) / copy:.1f}x the raw COPY"
        )
        driver.rollback()
    engine.dispose()


if __name__ == "__main__":
    main()
