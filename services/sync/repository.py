"""Storage of sync runs, their progress and rejected rows.

A run is worked on by one execution at a time: an execution claims it with a lease
(``lease_owner`` until ``lease_expire_time``) and renews the lease with every chunk it
commits. A second execution of the same run finds the lease held and waits; one whose
lease was taken over (it stalled past the lease) cannot commit another chunk.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, insert, or_, select, update
from sqlmodel import Session

from services.core.db import bulk_insert, read_session, write_transaction
from services.core.errors import NotFound
from services.profiles.domain import SyncRejection
from services.sync.models import SyncRejectionRow, SyncRunRow

runs: Table = SyncRunRow.__table__  # type: ignore[attr-defined]
rejections: Table = SyncRejectionRow.__table__  # type: ignore[attr-defined]

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"


@dataclass(frozen=True)
class SyncRun:
    run_id: str
    source: str
    connector: dict[str, Any]
    file_path: str
    file_size: int
    file_sha256: str
    file_format: str
    status: str
    rows_total: int | None
    rows_done: int
    created_count: int
    updated_count: int
    unchanged_count: int
    rejected_count: int
    error: str
    lease_owner: str
    lease_expire_time: datetime | None
    create_time: datetime
    start_time: datetime | None
    finish_time: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in (SUCCEEDED, FAILED)


class LeaseLost(Exception):
    """Another execution took the run over; this one must stop without writing."""


def new_run_id(now: datetime) -> str:
    """``run_`` + milliseconds in hex + randomness: ids sort by creation time."""
    return f"run_{int(now.timestamp() * 1000):012x}{secrets.token_hex(4)}"


class SyncRunRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, run: SyncRun) -> None:
        with write_transaction(self.engine) as session:
            session.execute(insert(runs).values(**run.__dict__))

    def get(self, run_id: str) -> SyncRun:
        with read_session(self.engine) as session:
            row = session.execute(select(runs).where(runs.c.run_id == run_id)).first()
        if row is None:
            raise NotFound("sync run", run_id)
        return SyncRun(**row._mapping)

    def recent(self, limit: int) -> list[SyncRun]:
        query = select(runs).order_by(runs.c.create_time.desc(), runs.c.run_id.desc())
        with read_session(self.engine) as session:
            return [SyncRun(**row._mapping) for row in session.execute(query.limit(limit))]

    def rejections(self, run_id: str, limit: int) -> list[SyncRejection]:
        query = (
            select(rejections)
            .where(rejections.c.run_id == run_id)
            .order_by(rejections.c.row_number)
            .limit(limit)
        )
        with read_session(self.engine) as session:
            return [
                SyncRejection(row.row_number, row.key, tuple(row.reasons or ()))
                for row in session.execute(query)
            ]

    def claim(self, run_id: str, owner: str, now: datetime, lease: timedelta) -> bool:
        """Take the run for ``owner`` unless it is finished or another live lease holds it."""
        with write_transaction(self.engine) as session:
            result = session.execute(
                update(runs)
                .where(
                    runs.c.run_id == run_id,
                    runs.c.status.in_((QUEUED, RUNNING)),
                    or_(
                        runs.c.status != RUNNING,
                        runs.c.lease_expire_time.is_(None),
                        runs.c.lease_expire_time < now,
                        runs.c.lease_owner == owner,
                    ),
                )
                .values(status=RUNNING, lease_owner=owner, lease_expire_time=now + lease)
            )
            claimed = bool(result.rowcount == 1)  # type: ignore[attr-defined]
            if claimed:
                session.execute(
                    update(runs)
                    .where(runs.c.run_id == run_id, runs.c.start_time.is_(None))
                    .values(start_time=now)
                )
        return claimed

    def record_chunk(
        self,
        session: Session,
        *,
        run_id: str,
        owner: str,
        rows_done: int,
        counts: tuple[int, int, int],
        rejected: list[SyncRejection],
        now: datetime,
        lease: timedelta,
    ) -> None:
        """In the chunk's own transaction: its rejected rows, the run's new position and
        counts, and a renewed lease. Raises ``LeaseLost`` (rolling the chunk back) when
        another execution holds the run."""
        created, updated, unchanged = counts
        result = session.execute(
            update(runs)
            .where(runs.c.run_id == run_id, runs.c.lease_owner == owner, runs.c.status == RUNNING)
            .values(
                rows_done=rows_done,
                created_count=runs.c.created_count + created,
                updated_count=runs.c.updated_count + updated,
                unchanged_count=runs.c.unchanged_count + unchanged,
                rejected_count=runs.c.rejected_count + len(rejected),
                lease_expire_time=now + lease,
            )
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise LeaseLost(run_id)
        if rejected:
            bulk_insert(
                session,
                rejections,
                [
                    {
                        "run_id": run_id,
                        "row_number": r.row_number,
                        "key": r.key[:255],
                        "reasons": list(r.reasons),
                    }
                    for r in rejected
                ],
            )

    def finish(self, run_id: str, owner: str, *, status: str, error: str, now: datetime) -> None:
        with write_transaction(self.engine) as session:
            session.execute(
                update(runs)
                .where(runs.c.run_id == run_id, runs.c.lease_owner == owner)
                .values(
                    status=status,
                    error=error[:2000],
                    finish_time=now,
                    lease_owner="",
                    lease_expire_time=None,
                )
            )

    def release(self, run_id: str, owner: str, now: datetime) -> None:
        """Let the lease lapse now, so a retry (or another worker) can continue at once."""
        with write_transaction(self.engine) as session:
            session.execute(
                update(runs)
                .where(runs.c.run_id == run_id, runs.c.lease_owner == owner)
                .values(lease_expire_time=now)
            )

    def requeue(self, run_id: str, *, expire_lease_of: str = "", now: datetime) -> SyncRun:
        """Make an unfinished or failed run runnable again; with ``expire_lease_of``, also
        end that (dead) holder's lease."""
        with write_transaction(self.engine) as session:
            session.execute(
                update(runs)
                .where(runs.c.run_id == run_id, runs.c.status == FAILED)
                .values(status=QUEUED, error="", finish_time=None)
            )
            if expire_lease_of:
                session.execute(
                    update(runs)
                    .where(runs.c.run_id == run_id, runs.c.lease_owner == expire_lease_of)
                    .values(lease_expire_time=now)
                )
        return self.get(run_id)
