"""Billing and CRM syncs: file imports run as resumable chunks.

``switchboard.sync.run`` takes a run id and works on that run from its committed position.
It is safe to deliver twice: a second execution finds the run leased by the first and
waits for it (retrying until the lease lapses or the run is done), so one run is never
processed in parallel, and a run a killed worker left half done continues where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from celery import Celery, Task
from sqlalchemy.exc import InterfaceError, OperationalError

from services.core.clock import utc_now
from services.core.errors import FailedPrecondition
from services.core.settings import Settings
from services.profiles.repository import CustomerRepository
from services.sync.app import SyncRuns, execution_owner
from services.sync.repository import LeaseLost, SyncRunRepository
from workers.context import engine_of, settings_of

log = logging.getLogger("switchboard.workers.sync")

RUN_TASK = "switchboard.sync.run"
# Transient store errors (connection lost, lock timeout, failover) are retried with backoff.
_TRANSIENT = (OperationalError, InterfaceError)


def beat_entries(_settings: Settings) -> Iterator[tuple[str, dict[str, Any]]]:
    """Syncs start from a file someone exports; nothing runs on a schedule."""
    yield from ()


def register(app: Celery) -> None:
    @app.task(  # type: ignore[untyped-decorator]
        name=RUN_TASK,
        bind=True,
        max_retries=50,
        # A nightly 1,000,000-row billing file takes minutes; leave ample room.
        soft_time_limit=3000,
        time_limit=3600,
    )
    def run_sync(self: Task, run_id: str, **_: Any) -> str:
        """Process sync run ``run_id`` from its committed position to the end."""
        engine = engine_of(app)
        syncs = SyncRuns(
            SyncRunRepository(engine),
            CustomerRepository(engine),
            chunk_rows=settings_of(app).sync_chunk_rows,
        )
        owner = execution_owner()
        try:
            outcome = syncs.process(run_id, owner)
        except LeaseLost:
            log.warning("sync run taken over by another execution", extra={"run_id": run_id})
            return "lease lost"
        except FailedPrecondition as error:
            log.error("sync run failed", extra={"run_id": run_id, "error": error.message})
            return "failed"
        except _TRANSIENT as error:
            syncs.release(run_id, owner)
            raise self.retry(
                exc=error, countdown=min(60, 2 ** (self.request.retries + 1))
            ) from error
        except Exception as error:
            syncs.fail(run_id, owner, f"{type(error).__name__}: {error}")
            raise
        if outcome.kind == "busy" and outcome.busy_until is not None:
            # Another execution holds the run: come back when its lease would lapse.
            wait = max(1.0, (outcome.busy_until - utc_now()).total_seconds() + 1)
            raise self.retry(countdown=wait)
        return outcome.kind
