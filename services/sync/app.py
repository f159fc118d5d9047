"""What a sync does: create a run for a file, and process it in resumable chunks.

Each chunk's customer writes, field sources, change-log entries, rejected rows and the
run's position commit in one transaction, so a worker killed at any moment leaves the run at
a chunk boundary: processing it again skips the rows already committed and the result
equals a run that was never interrupted.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

from sqlmodel import Session

from services.core.clock import Clock, utc_now
from services.core.errors import FailedPrecondition, InvalidArgument
from services.profiles.domain import SyncChunkResult, SyncRecord, SyncRejection
from services.profiles.repository import CustomerRepository
from services.sync.files import (
    UnreadableRow,
    count_rows,
    detect_format,
    fingerprint,
    read_rows,
)
from services.sync.mapping import Connector, connector_from_document, load_connector, map_row
from services.sync.repository import (
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    SyncRun,
    SyncRunRepository,
    new_run_id,
)

log = logging.getLogger("switchboard.sync")

# How long a claim on a run lasts without a committed chunk. A chunk of the default 5000
# rows takes about a second, so only a dead or stalled execution lets it lapse.
LEASE = timedelta(seconds=30)


@dataclass(frozen=True)
class Outcome:
    """What an execution did: ``processed`` (finished the run), ``busy`` (another live
    execution holds it until ``busy_until``) or ``finished`` (nothing left to do)."""

    kind: str
    run: SyncRun
    busy_until: datetime | None = None


def execution_owner() -> str:
    """Names this process in a lease: host and pid, so a dead holder can be recognised."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def holder_is_dead_here(owner: str) -> bool:
    """Whether ``owner`` was a process on this machine that no longer exists."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class SyncRuns:
    def __init__(
        self,
        runs: SyncRunRepository,
        customers: CustomerRepository,
        *,
        chunk_rows: int,
        clock: Clock = utc_now,
    ) -> None:
        self.runs = runs
        self.customers = customers
        self.chunk_rows = chunk_rows
        self.clock = clock

    def create(
        self, *, source: str, file: Path, mapping_file: Path | None = None, file_format: str = ""
    ) -> SyncRun:
        """A queued run for ``file``, after checking the file and the connector."""
        connector = load_connector(source, mapping_file)
        if not file.is_file():
            raise InvalidArgument.field("file", f"{file} does not exist or is not a file")
        found_format = detect_format(file, file_format)
        if found_format not in connector.formats:
            raise InvalidArgument.field(
                "format", f"the {source} connector reads {', '.join(connector.formats)}"
            )
        stamp = fingerprint(file)
        now = self.clock()
        run = SyncRun(
            run_id=new_run_id(now),
            source=connector.source,
            connector=connector.to_document(),
            file_path=str(stamp.path),
            file_size=stamp.size,
            file_sha256=stamp.sha256,
            file_format=found_format,
            status=QUEUED,
            rows_total=count_rows(file, found_format),
            rows_done=0,
            created_count=0,
            updated_count=0,
            unchanged_count=0,
            rejected_count=0,
            error="",
            lease_owner="",
            lease_expire_time=None,
            create_time=now,
            start_time=None,
            finish_time=None,
        )
        self.runs.create(run)
        return run

    def resume(self, run_id: str) -> SyncRun:
        """Make a failed or interrupted run runnable again (a succeeded one stays as is).
        A lease held by a process of this machine that died is ended at once."""
        run = self.runs.get(run_id)
        dead = run.status == RUNNING and holder_is_dead_here(run.lease_owner)
        return self.runs.requeue(
            run_id, expire_lease_of=run.lease_owner if dead else "", now=self.clock()
        )

    def process(self, run_id: str, owner: str) -> Outcome:
        """Work on the run until it is done, from where it was left."""
        run = self.runs.get(run_id)
        if run.finished:
            return Outcome("finished", run)
        if not self.runs.claim(run_id, owner, self.clock(), LEASE):
            run = self.runs.get(run_id)
            if run.finished or run.status == QUEUED:
                return Outcome("finished", run)
            return Outcome("busy", run, run.lease_expire_time)
        run = self.runs.get(run_id)
        try:
            self._check_file(run)
            connector = connector_from_document(run.connector)
            rows_done = self._process_chunks(run, connector, owner)
        except FailedPrecondition as error:
            self.runs.finish(run_id, owner, status=FAILED, error=error.message, now=self.clock())
            raise
        self.runs.finish(run_id, owner, status=SUCCEEDED, error="", now=self.clock())
        log.info("sync run finished", extra={"run_id": run_id, "rows": rows_done})
        return Outcome("processed", self.runs.get(run_id))

    def fail(self, run_id: str, owner: str, error: str) -> None:
        self.runs.finish(run_id, owner, status=FAILED, error=error, now=self.clock())

    def release(self, run_id: str, owner: str) -> None:
        self.runs.release(run_id, owner, self.clock())

    def _check_file(self, run: SyncRun) -> None:
        path = Path(run.file_path)
        if not path.is_file():
            raise FailedPrecondition(
                f"{path} is not readable by this worker: the worker must see the file at the "
                "same path (same machine, or a shared volume)",
                reason="SYNC_FILE_MISSING",
            )
        if fingerprint(path).sha256 != run.file_sha256:
            raise FailedPrecondition(
                f"{path} changed since run {run.run_id} was created (sha256 differs); "
                "start a new run for the new file",
                reason="SYNC_FILE_CHANGED",
            )

    def _process_chunks(self, run: SyncRun, connector: Connector, owner: str) -> int:
        rows_done = run.rows_done
        rows = read_rows(Path(run.file_path), run.file_format, skip=rows_done)
        for chunk in _batched(rows, self.chunk_rows):
            records, rejected = _map_chunk(connector, chunk)
            rows_done = chunk[-1][0]
            also = partial(
                self._record_chunk,
                run_id=run.run_id,
                owner=owner,
                position=rows_done,
                parsed_out=rejected,
            )
            self.customers.apply_sync_chunk(
                source=connector.source,
                system=connector.key_system,
                records=records,
                run_id=run.run_id,
                now=self.clock(),
                also=also,
            )
        return rows_done

    def _record_chunk(
        self,
        session: Session,
        result: SyncChunkResult,
        *,
        run_id: str,
        owner: str,
        position: int,
        parsed_out: list[SyncRejection],
    ) -> None:
        """In the chunk's transaction: the run's position, counts and rejected rows (those
        the mapping refused and those the store could not place)."""
        result.rejections[:0] = parsed_out
        self.runs.record_chunk(
            session,
            run_id=run_id,
            owner=owner,
            rows_done=position,
            counts=(result.created, result.updated, result.unchanged),
            rejected=sorted(result.rejections, key=lambda r: r.row_number),
            now=self.clock(),
            lease=LEASE,
        )


def _map_chunk(
    connector: Connector, chunk: Sequence[tuple[int, Any]]
) -> tuple[list[SyncRecord], list[SyncRejection]]:
    records: list[SyncRecord] = []
    rejected: list[SyncRejection] = []
    for number, row in chunk:
        if isinstance(row, UnreadableRow):
            rejected.append(SyncRejection(number, "", (str(row),)))
            continue
        mapped = map_row(connector, number, row)
        if isinstance(mapped, SyncRejection):
            rejected.append(mapped)
        else:
            records.append(mapped)
    return records, rejected


def _batched(rows: Iterator[tuple[int, Any]], size: int) -> Iterator[list[tuple[int, Any]]]:
    while chunk := list(islice(rows, size)):
        yield chunk
