"""Outreach webhooks: signed deliveries with retries and a dead-letter log.

Deliveries are made by their causes in the causes' own transactions (the outbox); this task
only sends what is due. It runs every ``outreach_dispatch_seconds`` and right after a
re-evaluation stores transitions; any number of runs may overlap, since each delivery is
leased by the run that sends it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from functools import cache
from typing import Any

from celery import Celery

from services.core.settings import Settings
from services.outreach.delivery import Dispatcher
from services.outreach.repository import OutreachRepository
from workers.context import engine_of, settings_of

log = logging.getLogger("switchboard.workers.outreach")


def beat_entries(settings: Settings) -> Iterator[tuple[str, dict[str, Any]]]:
    every = settings.outreach_dispatch_seconds
    yield (
        "outreach-dispatch",
        {
            "task": "switchboard.outreach.dispatch_due",
            "schedule": timedelta(seconds=every),
            # A backlog of ticks is worth one run, not hundreds.
            "options": {"expires": max(every * 5, 5.0)},
        },
    )


def register(app: Celery) -> None:
    @cache
    def dispatcher() -> Dispatcher:
        settings = settings_of(app)
        return Dispatcher(
            OutreachRepository(engine_of(app)),
            max_attempts=settings.outreach_max_attempts,
            retry_base_seconds=settings.outreach_retry_base_seconds,
            timeout_seconds=settings.outreach_timeout_seconds,
        )

    @app.task(  # type: ignore[untyped-decorator]
        name="switchboard.outreach.dispatch_due",
        autoretry_for=(Exception,),
        retry_backoff=True,
        max_retries=3,
        soft_time_limit=240,
        time_limit=300,
    )
    def dispatch_due(**_: Any) -> int:
        """Send every pending webhook that is due. Idempotent: a delivery is sent by the
        run holding its lease, and its result recorded once."""
        summary = dispatcher().dispatch_due()
        sent = summary.delivered + summary.retrying + summary.dead
        if sent or summary.lost_lease:
            log.info("webhooks sent", extra=dict(summary.__dict__))
        return sent
