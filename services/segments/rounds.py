"""Re-evaluation rounds: at most one at a time, split into chunks that workers run in parallel.

A round is claimed with a lease. While it holds, no other round starts, so no customer is
evaluated by two workers at once (which would store its transitions, and fire its outreach,
twice). Each chunk marks itself done idempotently; the chunk that completes the round moves
the change-log cursor and ends the lease. A round whose coordinator died simply expires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, Table, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.core.db import read_session, write_transaction
from services.segments.models import RecomputeChunkRow, RecomputeRoundRow
from services.segments.repository import definitions_evaluated, save_cursor

rounds: Table = RecomputeRoundRow.__table__  # type: ignore[attr-defined]
chunks: Table = RecomputeChunkRow.__table__  # type: ignore[attr-defined]

_CURRENT = "current"


@dataclass(frozen=True)
class RoundState:
    round_id: str
    kind: str
    upto_sequence: int
    chunk_count: int
    chunks_done: int

    @property
    def finished(self) -> bool:
        return 0 <= self.chunk_count <= self.chunks_done


class RoundRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def claim(self, *, round_id: str, kind: str, now: datetime, lease: timedelta) -> bool:
        """Start ``round_id`` unless another round holds an unexpired lease."""
        with write_transaction(self.engine) as session:
            held = session.execute(
                select(rounds.c.round_id, rounds.c.lease_until)
                .where(rounds.c.name == _CURRENT)
                .with_for_update()
            ).first()
            if held is not None and held.lease_until > now:
                return False
            values = {
                "round_id": round_id,
                "kind": kind,
                "upto_sequence": 0,
                "chunk_count": -1,
                "lease_until": now + lease,
                "start_time": now,
            }
            if held is None:
                try:
                    with session.begin_nested():
                        session.execute(insert(rounds), [{"name": _CURRENT, **values}])
                except IntegrityError:
                    return False
            else:
                session.execute(update(rounds).where(rounds.c.name == _CURRENT).values(**values))
                session.execute(delete(chunks).where(chunks.c.round_id == held.round_id))
        return True

    def plan(
        self,
        *,
        round_id: str,
        kind: str,
        upto_sequence: int,
        chunk_count: int,
        now: datetime,
        lease: timedelta,
    ) -> bool:
        """Record what the round is (a "changed" round may have become a "redefined" one) and
        how many chunks it has; False when it lost its lease meanwhile."""
        with write_transaction(self.engine) as session:
            moved = session.execute(
                update(rounds)
                .where(rounds.c.name == _CURRENT, rounds.c.round_id == round_id)
                .values(
                    kind=kind,
                    upto_sequence=upto_sequence,
                    chunk_count=chunk_count,
                    lease_until=now + lease,
                )
            )
        return bool(moved.rowcount)  # type: ignore[attr-defined]

    def is_current(self, round_id: str) -> bool:
        with read_session(self.engine) as session:
            found = session.execute(
                select(rounds.c.round_id).where(rounds.c.name == _CURRENT)
            ).scalar_one_or_none()
        return found == round_id

    def chunk_done(
        self, *, round_id: str, chunk_index: int, now: datetime, lease: timedelta
    ) -> RoundState | None:
        """Mark a chunk done (once, however often it runs) and extend the lease; None when
        the round is no longer the current one."""
        with write_transaction(self.engine) as session:
            row = session.execute(
                select(rounds)
                .where(rounds.c.name == _CURRENT, rounds.c.round_id == round_id)
                .with_for_update()
            ).first()
            if row is None:
                return None
            already = session.execute(
                select(func.count())
                .select_from(chunks)
                .where(chunks.c.round_id == round_id, chunks.c.chunk_index == chunk_index)
            ).scalar_one()
            if not already:
                session.execute(
                    insert(chunks), [{"round_id": round_id, "chunk_index": chunk_index}]
                )
            session.execute(
                update(rounds).where(rounds.c.name == _CURRENT).values(lease_until=now + lease)
            )
            done = session.execute(
                select(func.count()).select_from(chunks).where(chunks.c.round_id == round_id)
            ).scalar_one()
        return RoundState(row.round_id, row.kind, row.upto_sequence, row.chunk_count, int(done))

    def finish(
        self, round_id: str, *, cursor: int | None, now: datetime, everyone: bool = False
    ) -> None:
        """End the round so the next one can start, in one transaction with what it
        achieved: a "changed" round moves the change-log cursor to where it read up to; a
        round of ``everyone`` that completed marks the definitions it began with evaluated."""
        with write_transaction(self.engine) as session:
            ended = session.execute(
                delete(rounds).where(rounds.c.name == _CURRENT, rounds.c.round_id == round_id)
            )
            session.execute(delete(chunks).where(chunks.c.round_id == round_id))
            if not ended.rowcount:  # type: ignore[attr-defined]
                return
            if cursor is not None:
                save_cursor(session, cursor, now)
            if everyone:
                definitions_evaluated(session, now)

    def current(self) -> RoundState | None:
        with read_session(self.engine) as session:
            row = session.execute(select(rounds).where(rounds.c.name == _CURRENT)).first()
            if row is None:
                return None
            done = session.execute(
                select(func.count()).select_from(chunks).where(chunks.c.round_id == row.round_id)
            ).scalar_one()
        return RoundState(row.round_id, row.kind, row.upto_sequence, row.chunk_count, int(done))
