"""Customers per second: ``UpsertCustomers`` through a real profiles server against a raw
bulk insert of the same rows (SQLite ``executemany``, PostgreSQL ``COPY``), in one run.

Run from a checkout with the virtualenv active::

    python bench/upsert_customers.py --database sqlite
    python bench/upsert_customers.py --database postgresql   # uses SWITCHBOARD_BENCH_POSTGRES_URL

Every run works on throwaway databases: a temporary SQLite directory, or ``bench_<random>``
databases created through the admin URL (default ``postgresql://root@127.0.0.1:5432/test``)
and dropped at the end. Steps:

1. migrate a fresh database with ``switchboard db upgrade`` and start
   ``switchboard serve profiles`` on it in a separate process (free ports on 127.0.0.1);
2. send the generated customers in batches as new customers (all CREATED), then send the
   very same batches again (all UNCHANGED: the idempotent path);
3. migrate a second fresh database and bulk-insert the same customers into it directly:
   the ``customers`` row and the ``customer_external_ids`` row per customer, which are the
   rows the service writes minus its change-log entry, in one transaction.

``--profile`` instead runs the server's handler in this process under cProfile (no network)
and prints where the time goes. ``--floor`` instead times the database alone for the rows
the service writes, in transactions of one batch: the raw insert's two rows per customer,
then with the change-log row, then with each customer's field-source document on its row.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import sqlite3
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Run as a script from a checkout, where the project is not necessarily installed.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from switchboard.profiles.v1 import profiles_pb2 as pb  # noqa: E402
from switchboard.profiles.v1 import profiles_pb2_grpc  # noqa: E402

from bench.stack import DEFAULT_ADMIN_URL, Databases, RunningStack, running_services  # noqa: E402
from services.profiles.domain import (  # noqa: E402
    API_SOURCE,
    FieldSourceDocument,
    new_field_source_document,
    refresh_stamp,
)
from services.profiles.repository import (  # noqa: E402
    _EMPTY_ROW,
    changes,
    customers,
    external_ids,
    new_customer_ids,
)

SYSTEM = "billing"
CALL_DEADLINE_SECONDS = 120.0

PLANS = ["free", "starter", "growth", "enterprise"]
PLAN_WEIGHTS = [40, 30, 20, 10]
COUNTRIES = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "BR", "IN", "JP", "AU", "CA", "PL"]
INDUSTRIES = ["software", "retail", "finance", "healthcare", "education", "manufacturing"]
COMPANY_WORDS = ["Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay"]
COMPANY_SUFFIXES = ["Labs", "Systems", "GmbH", "Ltd", "Inc", "Group", "Partners", "Works"]
FIRST_NAMES = ["Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis"]
LAST_NAMES = ["Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov"]
CONTRACTS = ["monthly", "annual", "multi_year"]


@dataclass(frozen=True)
class GeneratedCustomer:
    """One customer as a billing sync would send it."""

    billing_id: str
    email: str
    display_name: str
    company_name: str
    plan: str
    seats: int
    arr: float
    country: str
    industry: str
    signup_time: datetime
    attributes: dict[str, Any]

    def to_proto(self) -> pb.Customer:
        message = pb.Customer(
            external_ids={SYSTEM: self.billing_id},
            email=self.email,
            display_name=self.display_name,
            company_name=self.company_name,
            plan=self.plan,
            seats=self.seats,
            arr=self.arr,
            country=self.country,
            industry=self.industry,
        )
        message.signup_time.FromDatetime(self.signup_time)
        message.attributes.update(self.attributes)
        return message

    def column_values(self) -> dict[str, Any]:
        """The scalar columns the service stores for this customer; the rest stay empty."""
        return {
            "email": self.email,
            "display_name": self.display_name,
            "company_name": self.company_name,
            "plan": self.plan,
            "seats": self.seats,
            "arr": self.arr,
            "country": self.country,
            "industry": self.industry,
            "signup_time": self.signup_time,
        }


def generate_customers(count: int, seed: int = 7) -> list[GeneratedCustomer]:
    rng = random.Random(seed)
    epoch = datetime(2022, 1, 1, tzinfo=UTC)
    generated = []
    for number in range(count):
        company = f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_SUFFIXES)} {number}"
        plan = rng.choices(PLANS, PLAN_WEIGHTS)[0]
        seats = 0 if plan == "free" else rng.randint(1, 2000)
        generated.append(
            GeneratedCustomer(
                billing_id=f"cus_{number:08d}{rng.getrandbits(32):08x}",
                email=f"{rng.choice(FIRST_NAMES).lower()}.{number}@customer{number}.example",
                display_name=f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
                company_name=company,
                plan=plan,
                seats=seats,
                arr=round(seats * rng.uniform(80, 400), 2),
                country=rng.choice(COUNTRIES),
                industry=rng.choice(INDUSTRIES),
                signup_time=epoch + timedelta(seconds=rng.randint(0, 3 * 365 * 86400)),
                attributes={
                    "contract_type": rng.choice(CONTRACTS),
                    "sso_enabled": rng.random() < 0.3,
                    "csm": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
                },
            )
        )
    return generated


# ---- counting what was stored ------------------------------------------------------------


def count_rows(url: str) -> tuple[int, int]:
    """Customers and external-id rows stored at ``url``, to check what was measured."""
    from sqlalchemy import create_engine, text

    engine = create_engine(_psycopg(url))
    with engine.connect() as connection:
        counted = tuple(
            int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in ("customers", "customer_external_ids")
        )
    engine.dispose()
    return counted[0], counted[1]


def _psycopg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


# ---- the service ---------------------------------------------------------------------------


def upsert_all(
    stack: RunningStack,
    requests: Sequence[pb.UpsertCustomersRequest],
    streams: int,
    expected: pb.UpsertOutcome.ValueType,
) -> float:
    """Send every batch to the stack's profiles; seconds until the last response. Fails
    unless every record got the ``expected`` outcome, so a fast wrong answer cannot pass for
    a fast one."""
    with stack.channel("profiles") as channel:
        stub = profiles_pb2_grpc.ProfileServiceStub(channel)

        def send(request: pb.UpsertCustomersRequest) -> pb.UpsertCustomersResponse:
            response: pb.UpsertCustomersResponse = stub.UpsertCustomers(
                request, timeout=CALL_DEADLINE_SECONDS
            )
            return response

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=streams) as pool:
            responses = list(pool.map(send, requests))
        elapsed = time.perf_counter() - started
    outcomes = [result.outcome for response in responses for result in response.results]
    wrong = sum(outcome != expected for outcome in outcomes)
    if wrong:
        raise RuntimeError(f"{wrong} records did not get outcome {pb.UpsertOutcome.Name(expected)}")
    return elapsed


def build_requests(
    generated: Sequence[GeneratedCustomer], batch: int
) -> list[pb.UpsertCustomersRequest]:
    return [
        pb.UpsertCustomersRequest(
            external_id_system=SYSTEM,
            customers=[c.to_proto() for c in generated[start : start + batch]],
        )
        for start in range(0, len(generated), batch)
    ]


# ---- the raw bulk insert ---------------------------------------------------------------------


def raw_rows(
    generated: Sequence[GeneratedCustomer], now: datetime, batch: int
) -> tuple[list[str], list[dict[str, Any]], list[tuple[str, str, str]]]:
    """The ``customers`` columns, one dict per customer, and the external-id rows, with the
    values the service stores (empty text columns as '', absent numbers as NULL). The
    field-source document is left to its column default: the raw side has no sources."""
    columns = [column.name for column in customers.columns if column.name != "field_sources"]
    customer_rows = []
    id_rows = []
    # Ids as the service draws them: one moment per call of ``batch`` customers, each a
    # millisecond after the last, so the ids of later calls sort after those of earlier
    # ones. (Drawn for one moment, the ids of 100,000 customers land in random order, which
    # made SQLite's raw insert take about 1.5 times as long as the service's rows would.)
    # Their 40 random bits can collide within a moment: a repeat is drawn again.
    customer_ids: dict[str, None] = {}
    for start in range(0, len(generated), batch):
        moment = now + timedelta(milliseconds=start // batch)
        wanted = start + min(batch, len(generated) - start)
        while len(customer_ids) < wanted:
            customer_ids.update(dict.fromkeys(new_customer_ids(moment, wanted - len(customer_ids))))
    for customer, customer_id in zip(generated, customer_ids, strict=True):
        # The service's own defaults for absent fields, so both sides store identical rows.
        row: dict[str, Any] = dict(_EMPTY_ROW)
        row.update(customer.column_values())
        row.update(
            customer_id=customer_id,
            attributes=customer.attributes,
            create_time=now,
            update_time=now,
            version=1,
        )
        customer_rows.append(row)
        id_rows.append((SYSTEM, customer.billing_id, customer_id))
    return columns, customer_rows, id_rows


def service_rows(
    generated: Sequence[GeneratedCustomer], customer_rows: Sequence[dict[str, Any]], now: datetime
) -> tuple[list[tuple[Any, ...]], list[FieldSourceDocument]]:
    """What the service writes per created customer besides the raw insert's rows: one
    change-log row, and on the customer's row the field-source document naming the API as
    the source of every field written."""
    change_rows: list[tuple[Any, ...]] = []
    documents: list[FieldSourceDocument] = []
    for customer, row in zip(generated, customer_rows, strict=True):
        written = [*customer.column_values(), *(f"attributes.{k}" for k in customer.attributes)]
        logged = sorted([*customer.column_values(), "attributes", "external_ids"])
        change_rows.append((row["customer_id"], "created", logged, now))
        documents.append(
            new_field_source_document(
                written, source=API_SOURCE, stamp=refresh_stamp(now), run_id=""
            )
        )
    return change_rows, documents


def _sqlite(url: str) -> sqlite3.Connection:
    """A connection with the pragmas the service's engine sets."""
    connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
        connection.execute(f"PRAGMA {pragma}")
    return connection


def _sqlite_value(name: str, value: Any) -> Any:
    """The text forms SQLAlchemy's SQLite dialect stores, so the rows are identical."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if name in ("attributes", "changed_fields", "field_sources"):
        return json.dumps(value)
    return value


def _sqlite_row(names: Sequence[str], row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(_sqlite_value(name, value) for name, value in zip(names, row, strict=True))


def raw_insert_sqlite(url: str, generated: Sequence[GeneratedCustomer], batch: int) -> float:
    """executemany in one transaction, with the pragmas the service's engine sets. The
    clock starts once the row tuples are built: the baseline is the database's work only."""
    connection = _sqlite(url)
    columns, customer_rows, id_rows = raw_rows(generated, datetime.now(UTC), batch)
    values = [tuple(_sqlite_value(name, row[name]) for name in columns) for row in customer_rows]
    started = time.perf_counter()
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(
        f"INSERT INTO customers ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        values,
    )
    connection.executemany(
        f"INSERT INTO {external_ids.name} (system, external_id, customer_id) VALUES (?, ?, ?)",
        id_rows,
    )
    connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def raw_insert_postgresql(url: str, generated: Sequence[GeneratedCustomer], batch: int) -> float:
    """COPY FROM STDIN of both tables in one transaction; rows are built before the clock
    starts, but psycopg's per-row adaptation inside ``write_row`` is counted."""
    import psycopg
    from psycopg.types.json import Jsonb

    columns, customer_rows, id_rows = raw_rows(generated, datetime.now(UTC), batch)
    with psycopg.connect(url) as connection:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            with cursor.copy(f"COPY customers ({', '.join(columns)}) FROM STDIN") as copy:
                for row in customer_rows:
                    copy.write_row(
                        [Jsonb(row[n]) if n == "attributes" else row[n] for n in columns]
                    )
            copy_ids = f"COPY {external_ids.name} (system, external_id, customer_id) FROM STDIN"
            with cursor.copy(copy_ids) as copy:
                for id_row in id_rows:
                    copy.write_row(id_row)
        connection.commit()
        return time.perf_counter() - started


FLOOR_STEPS = ("customers + external ids", "+ one change-log row each", "+ field-source documents")


def floor_insert(
    database: str, url: str, generated: Sequence[GeneratedCustomer], batch: int, step: int
) -> float:
    """The rows of ``FLOOR_STEPS[: step + 1]`` for every customer, one transaction per
    ``batch`` customers as the service commits them; executemany on SQLite, COPY on
    PostgreSQL, rows built before the clock as for the raw insert."""
    now = datetime.now(UTC)
    columns, customer_rows, id_rows = raw_rows(generated, now, batch)
    change_rows, documents = service_rows(generated, customer_rows, now)
    if step >= 2:
        for customer_row, document in zip(customer_rows, documents, strict=True):
            customer_row["field_sources"] = document
        columns = [*columns, "field_sources"]
    names = {
        customers.name: columns,
        external_ids.name: ["system", "external_id", "customer_id"],
        changes.name: ["customer_id", "kind", "changed_fields", "change_time"],
    }
    batches = []
    for start in range(0, len(generated), batch):
        end = start + batch
        tables: list[tuple[str, list[tuple[Any, ...]]]] = [
            (customers.name, [tuple(row[n] for n in columns) for row in customer_rows[start:end]]),
            (external_ids.name, id_rows[start:end]),
            (changes.name, change_rows[start:end]),
        ]
        del tables[2 + min(step, 1) :]
        batches.append(tables)
    if database == "sqlite":
        connection = _sqlite(url)
        batches = [
            [(table, [_sqlite_row(names[table], row) for row in rows]) for table, rows in tables]
            for tables in batches
        ]
        started = time.perf_counter()
        for tables in batches:
            connection.execute("BEGIN IMMEDIATE")
            for table, rows in tables:
                marks = ", ".join("?" * len(names[table]))
                connection.executemany(
                    f"INSERT INTO {table} ({', '.join(names[table])}) VALUES ({marks})", rows
                )
            connection.execute("COMMIT")
        elapsed = time.perf_counter() - started
        connection.close()
        return elapsed
    import psycopg
    from psycopg.types.json import Jsonb

    json_columns = {"attributes", "changed_fields", "field_sources"}
    with psycopg.connect(url) as pg:
        started = time.perf_counter()
        for tables in batches:
            with pg.cursor() as cursor:
                for table, rows in tables:
                    json_at = [i for i, n in enumerate(names[table]) if n in json_columns]
                    with cursor.copy(
                        f"COPY {table} ({', '.join(names[table])}) FROM STDIN"
                    ) as copy:
                        for row in rows:
                            copy.write_row(
                                [Jsonb(v) if i in json_at else v for i, v in enumerate(row)]
                            )
            pg.commit()
        return time.perf_counter() - started


# ---- profiling -------------------------------------------------------------------------------


def profile_handler(url: str, requests: Sequence[pb.UpsertCustomersRequest], out: Path) -> None:
    """The server's handler for every batch, in this process under cProfile."""
    from services.core.db import create_db_engine
    from services.profiles.app import Profiles
    from services.profiles.repository import CustomerRepository
    from services.profiles.servicer import ProfileServicer

    engine = create_db_engine(url)
    servicer = ProfileServicer(Profiles(CustomerRepository(engine)))
    for label in ("created", "unchanged"):
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for request in requests:
            servicer.UpsertCustomers(request, None)  # type: ignore[arg-type]
        profiler.disable()
        elapsed = time.perf_counter() - started
        path = out.with_name(f"{out.stem}-{label}.prof")
        profiler.dump_stats(path)
        print(f"\n== {label}: {elapsed:.2f} s under cProfile, stats in {path}")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    engine.dispose()


# ---- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=1, help="Concurrent client calls.")
    parser.add_argument("--profile", action="store_true", help="cProfile the handler instead.")
    parser.add_argument(
        "--floor", action="store_true", help="Time the database alone for the rows written."
    )
    args = parser.parse_args()

    admin_url = os.environ.get("SWITCHBOARD_BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL)
    databases = Databases(args.database, admin_url)
    generated = generate_customers(args.customers)
    requests = build_requests(generated, args.batch)
    count = len(generated)
    try:
        if args.profile:
            out = ROOT / "bench" / "out" / f"upsert-{args.database}"
            out.parent.mkdir(parents=True, exist_ok=True)
            profile_handler(databases.fresh(), requests, out)
            return
        if args.floor:
            print_floor(args.database, databases, generated, args.batch)
            return

        service_url = databases.fresh()
        with running_services(
            ["profiles"], database_url=service_url, data_dir=databases.tempdir.name
        ) as stack:
            created = upsert_all(stack, requests, args.streams, pb.UPSERT_OUTCOME_CREATED)
            unchanged = upsert_all(stack, requests, args.streams, pb.UPSERT_OUTCOME_UNCHANGED)
        stored = count_rows(service_url)

        raw_url = databases.fresh()
        insert = raw_insert_sqlite if args.database == "sqlite" else raw_insert_postgresql
        raw = insert(raw_url, generated, args.batch)
        raw_stored = count_rows(raw_url)
        if stored != (count, count) or raw_stored != (count, count):
            raise RuntimeError(f"expected {count} rows each, got {stored} and {raw_stored}")
    finally:
        databases.drop_all()

    method = "executemany" if args.database == "sqlite" else "COPY"
    print(
        f"{args.database}: {count} customers, batches of {args.batch}, "
        f"{args.streams} client stream(s)"
    )
    print(
        f"  UpsertCustomers (all CREATED)    {count / created:>9,.0f} customers/s  {created:.2f} s"
    )
    print(
        f"  UpsertCustomers (all UNCHANGED)  {count / unchanged:>9,.0f} customers/s  "
        f"{unchanged:.2f} s"
    )
    print(f"  raw {method:<28} {count / raw:>9,.0f} customers/s  {raw:.2f} s")
    print(f"  CREATED / raw = {raw / created:.0%}   (target: at least 50%)")


def print_floor(
    database: str, databases: Databases, generated: Sequence[GeneratedCustomer], batch: int
) -> None:
    count = len(generated)
    insert = raw_insert_sqlite if database == "sqlite" else raw_insert_postgresql
    raw = insert(databases.fresh(), generated, batch)
    print(f"{database}: the database alone, {count} customers, {batch} per transaction")
    print(f"  {'raw insert (one transaction)':<36} {count / raw:>9,.0f} customers/s")
    for step, label in enumerate(FLOOR_STEPS):
        spent = floor_insert(database, databases.fresh(), generated, batch, step)
        print(f"  {label:<36} {count / spent:>9,.0f} customers/s  {spent / raw:.2f}x raw time")


if __name__ == "__main__":
    main()
