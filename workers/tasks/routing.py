"""Routing's clock-driven moves: fallback steps and queue overflow that time out.

Reads (AssignNext, queue listings, GetConversation) also apply due moves, so nothing waits
for this task to be correct; it makes moves happen on time when nobody is asking, so that
watching consoles see them.
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

log = logging.getLogger("switchboard.workers.routing")


def beat_entries(_settings: Settings) -> Iterator[tuple[str, dict[str, Any]]]:
    yield (
        "routing-timers",
        {
            "task": "switchboard.routing.advance_timers",
            "schedule": timedelta(seconds=30),
        },
    )


def register(app: Celery) -> None:
    @cache
    def routing() -> Routing:
        # One per worker process: it keeps the compiled configuration between runs.
        return routing_app(engine_of(app), settings_of(app))

    @app.task(  # type: ignore[untyped-decorator]
        name="switchboard.routing.advance_timers",
        autoretry_for=(Exception,),
        retry_backoff=True,
        max_retries=3,
    )
    def advance_timers(**_: Any) -> int:
        """Apply every fallback step and overflow that has timed out. Idempotent: a moved
        conversation's timer is cleared or pushed forward in the same transaction."""
        moved = routing().advance_timers()
        if moved:
            log.info("routing timers applied", extra={"moved": moved})
        return moved
