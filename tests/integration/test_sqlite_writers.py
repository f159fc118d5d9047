"""Writers to one SQLite database in one process take turns instead of meeting SQLite's busy
wait (which sleeps up to 100 ms between tries, so under load some writes waited seconds).

SQLite is the embedded default on every backend under test, so this runs in both passes.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text

from services.core.db import create_db_engine, write_transaction


def impatient_engine(path: Path) -> Engine:
    """An engine whose connections fail at once on a locked database instead of waiting:
    a write that reaches SQLite while another is open fails, so none of these may."""
    engine = create_db_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE notes (body TEXT NOT NULL)"))
    return engine


def test_a_second_writer_waits_for_the_first_to_commit_instead_of_failing(tmp_path: Path) -> None:
    engine = impatient_engine(tmp_path / "store.db")
    first_open = threading.Event()
    first_may_commit = threading.Event()
    outcomes: dict[str, Any] = {}

    def first() -> None:
        with write_transaction(engine) as session:
            session.execute(text("INSERT INTO notes VALUES ('first')"))
            first_open.set()
            first_may_commit.wait(timeout=30)

    def second() -> None:
        try:
            with write_transaction(engine) as session:
                session.execute(text("INSERT INTO notes VALUES ('second')"))
            outcomes["second"] = "committed"
        except Exception as error:  # what the old behaviour raised: database is locked
            outcomes["second"] = error

    writer = threading.Thread(target=first)
    writer.start()
    assert first_open.wait(timeout=30)
    waiter = threading.Thread(target=second)
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive(), f"the second writer did not wait: {outcomes.get('second')!r}"
    first_may_commit.set()
    writer.join(timeout=30)
    waiter.join(timeout=30)

    assert outcomes["second"] == "committed"
    with engine.connect() as connection:
        bodies = connection.execute(text("SELECT body FROM notes ORDER BY rowid")).scalars()
        assert list(bodies) == ["first", "second"]
    engine.dispose()


def test_a_failed_write_leaves_the_turn_to_the_next_writer(tmp_path: Path) -> None:
    engine = impatient_engine(tmp_path / "store.db")
    try:
        with write_transaction(engine) as session:
            session.execute(text("INSERT INTO notes VALUES (NULL)"))  # NOT NULL: fails
    except Exception:
        pass
    done = threading.Event()

    def write() -> None:
        with write_transaction(engine) as session:
            session.execute(text("INSERT INTO notes VALUES ('after')"))
        done.set()

    threading.Thread(target=write, daemon=True).start()
    assert done.wait(timeout=10), "the turn was kept by the failed write"
    engine.dispose()
