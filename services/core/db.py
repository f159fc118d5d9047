"""Engines and sessions for the store: SQLite embedded, PostgreSQL in production."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Engine,
    Integer,
    Table,
    TypeDecorator,
    create_engine,
    event,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlmodel import Session

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# How long SQLite lets a writer wait for the one before it (PRAGMA busy_timeout).
SQLITE_BUSY_SECONDS = 30


def create_db_engine(url: str) -> Engine:
    """Build an engine tuned for concurrent gRPC handlers on either backend."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_SECONDS},
            pool_size=16,
        )
        event.listen(engine, "connect", _configure_sqlite)
        # pysqlite's own transaction handling is switched off so that a write transaction
        # can start with BEGIN IMMEDIATE: a deferred one that upgrades to writing can fail
        # with "database is locked" instead of waiting for the other writer.
        event.listen(engine, "begin", _begin)
        return engine
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    # No server-side prepared statements: psycopg prepares a query after five runs, and
    # PostgreSQL may then keep a generic plan made while tables were nearly empty. During a
    # bulk sync that plan scanned whole tables per batch (5x slower upserts at 100k rows).
    return create_engine(
        parsed,
        pool_size=16,
        max_overflow=16,
        pool_pre_ping=True,
        connect_args={"prepare_threshold": None},
    )


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
    cursor.close()


def _begin(connection: Any) -> None:
    mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


# Stay well inside SQLite's bound-parameter limit when filtering by many keys.
IN_LIST_CHUNK = 500


def in_chunks(items: Sequence[Any], size: int = IN_LIST_CHUNK) -> Iterator[Sequence[Any]]:
    """Slices of ``items`` small enough for one ``IN (...)`` list on either backend."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Session]:
    """A session whose writes commit together or not at all."""
    if not is_sqlite(engine):
        with Session(engine, expire_on_commit=False) as session, session.begin():
            yield session
        return
    bind = engine.execution_options(sqlite_begin="IMMEDIATE")
    with (
        _sqlite_writer_turn(engine),
        Session(bind, expire_on_commit=False) as session,
        session.begin(),
    ):
        yield session


# Each SQLite database's lock, by the path an engine names it with (and by its real path,
# which is looked up once: engines naming one file by two paths share the lock).
_sqlite_writers: dict[str, threading.RLock] = {}
_sqlite_writers_guard = threading.Lock()


def _writers_of(database: str) -> threading.RLock:
    with _sqlite_writers_guard:
        real = str(Path(database or ":memory:").resolve())
        turn = _sqlite_writers.setdefault(real, threading.RLock())
        _sqlite_writers[database] = turn
        return turn


@contextmanager
def _sqlite_writer_turn(engine: Engine) -> Iterator[None]:
    """Queue this process's writers to one SQLite database on a lock of their own.

    SQLite takes one writer at a time, and a writer that finds the database locked sleeps
    and tries again (after 1, 2, 5 ... then 100 ms), so under many concurrent writes some
    waited far longer than the writes ahead of them took: fresh routes at 16 concurrent had
    a p99 of 1.5 s. Here each waiter is woken as soon as the one before commits. Writers in
    other processes still meet in SQLite's busy wait. A turn not had within that same
    timeout is taken anyway: a writer stuck in its transaction delays the others, but
    cannot hold them for good.
    """
    database = engine.url.database or ""
    turn = _sqlite_writers.get(database) or _writers_of(database)
    acquired = turn.acquire(timeout=SQLITE_BUSY_SECONDS)
    try:
        yield
    finally:
        if acquired:
            turn.release()


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A session for reads; readers never wait for each other."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def upgrade_database(url: str) -> None:
    """Bring the schema at ``url`` to the newest migration."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    command.upgrade(config, "head")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on both backends (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSON documents: JSONB on PostgreSQL (indexable, compact), JSON text on SQLite.
JsonDocument = JSON().with_variant(JSONB(), "postgresql")

# 64-bit auto-increment keys; SQLite only auto-increments a column declared INTEGER.
AutoIncrementId = BigInteger().with_variant(Integer(), "sqlite")


def bulk_insert(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert many rows with one driver-level executemany (COPY on PostgreSQL)."""
    if rows:
        insert_columns(session, table, {name: [row[name] for row in rows] for name in rows[0]})


def insert_columns(session: Session, table: Table, columns: Mapping[str, Sequence[Any]]) -> None:
    """Insert rows given column by column (equal-length value lists), the cheaper shape to
    build for thousands of rows, with one executemany (COPY on PostgreSQL).

    SQLAlchemy's executemany re-processes every parameter of every row through its generic
    machinery, which costs several times the database's own work for large batches. Here
    each column's bind processor (timestamps, JSON) is looked up once and applied directly,
    so the values stored are exactly those SQLAlchemy would store; a value object that
    recurs in a column (one timestamp for a whole batch) is processed once.
    """
    if not columns or not len(next(iter(columns.values()))):
        return
    connection = session.connection()
    dialect = connection.dialect
    names = list(columns)
    copy = dialect.name == "postgresql"
    processed = []
    for name in names:
        column_type = table.c[name].type.dialect_impl(dialect)
        process: Callable[[Any], Any] | None = column_type.bind_processor(dialect)
        if copy and isinstance(column_type, JSON):
            # COPY's text format takes a document as its JSON text, so a document that
            # recurs is encoded once rather than once per row by psycopg's Jsonb.
            process = json.dumps
        processed.append(_processed(columns[name], process))
    parameters = list(zip(*processed, strict=True))
    preparer = dialect.identifier_preparer
    column_list = ", ".join(preparer.quote(name) for name in names)
    if copy:
        # COPY is PostgreSQL's bulk path, several times faster than even pipelined inserts;
        # it runs on this session's connection, so it commits or rolls back with the rest.
        driver_connection: Any = connection.connection.driver_connection
        with (
            driver_connection.cursor() as cursor,
            cursor.copy(f"COPY {preparer.format_table(table)} ({column_list}) FROM STDIN") as out,
        ):
            for row in parameters:
                out.write_row(row)
        return
    placeholder = "?" if dialect.paramstyle == "qmark" else "%s"
    statement = (
        f"INSERT INTO {preparer.format_table(table)} ({column_list}) "
        f"VALUES ({', '.join([placeholder] * len(names))})"
    )
    connection.exec_driver_sql(statement, parameters)


def _processed(values: Sequence[Any], process: Callable[[Any], Any] | None) -> Sequence[Any]:
    if process is None:
        return values
    distinct = {id(value): value for value in values}
    if len(distinct) == len(values):
        return [None if value is None else process(value) for value in values]
    # Ids are stable here: every object stays referenced by ``values`` meanwhile.
    done = {key: None if value is None else process(value) for key, value in distinct.items()}
    return [done[id(value)] for value in values]
