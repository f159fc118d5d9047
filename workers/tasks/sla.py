"""The SLA watch: warnings and breaches recorded on time, escalations applied.

Beat sends ``switchboard.sla.watch`` every ``sla_watch_seconds`` (at most a minute) to the
``sla`` queue, which no sync or re-evaluation shares. A run looks only at conversations
whose clocks changed or reach a threshold, so it stays short however many are open.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from functools import cache
from typing import Any

from celery import Celery

from services.core.settings import Settings
from services.routing.app import Routing
from services.routing.server import routing_app
from workers.context import engine_of, settings_of

log = logging.getLogger("switchboard.workers.sla")


def beat_entries(settings: Settings) -> Iterator[tuple[str, dict[str, Any]]]:
    yield (
        "sla-watch",
        {
            "task": "switchboard.sla.watch",
            "schedule": timedelta(seconds=settings.sla_watch_seconds),
            # A run that waited longer than the interval is superseded by the next one.
            "options": {"expires": settings.sla_watch_seconds},
        },
    )


def register(app: Celery) -> None:
    @cache
    def routing() -> Routing:
        # One per worker process: it keeps the compiled configuration between runs.
        return routing_app(engine_of(app), settings_of(app))

    @app.task(  # type: ignore[untyped-decorator]
        name="switchboard.sla.watch",
        autoretry_for=(Exception,),
        retry_backoff=True,
        max_retries=3,
        soft_time_limit=120,
        time_limit=150,
    )
    def watch(**_: Any) -> int:
        """Record every SLA warning and breach reached so far and apply the escalations;
        returns how many were recorded. Idempotent: a threshold already recorded is found
        in the conversation's history and skipped."""
        recorded = routing().watch_sla()
        for conversation_id, alert in recorded:
            log.info(
                "SLA threshold recorded",
                extra={
                    "conversation_id": conversation_id,
                    "metric": alert.metric.value,
                    "threshold": alert.threshold.value,
                    "reached_time": alert.time.isoformat(),
                },
            )
        return len(recorded)
