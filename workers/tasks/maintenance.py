"""Housekeeping tasks that keep the store small."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from celery import Celery

from services.core.settings import Settings
from services.profiles.app import Profiles
from services.profiles.repository import CustomerRepository
from workers.context import engine_of, settings_of

log = logging.getLogger("switchboard.workers.maintenance")


def beat_entries(_settings: Settings) -> Iterator[tuple[str, dict[str, Any]]]:
    yield (
        "prune-usage-events",
        {
            "task": "switchboard.maintenance.prune_usage_events",
            "schedule": timedelta(hours=1),
        },
    )


def register(app: Celery) -> None:
    @app.task(  # type: ignore[untyped-decorator]
        name="switchboard.maintenance.prune_usage_events",
        autoretry_for=(Exception,),
        retry_backoff=True,
        max_retries=5,
    )
    def prune_usage_events(**_: Any) -> int:
        """Delete raw usage events older than the retention. Idempotent: a rerun finds
        nothing left to delete. Traits only look back 14 days, so retention >= 15 days
        never changes a trait."""
        retention = timedelta(days=settings_of(app).usage_retention_days)
        deleted = Profiles(CustomerRepository(engine_of(app))).prune_usage_events(
            retention=retention
        )
        log.info("pruned usage events", extra={"deleted": deleted})
        return deleted
