"""Segment re-evaluation: the customers that changed, every second or so, and everyone
nightly (rules such as "signed up within the last 30 days" change with no data change).

A coordinator task claims the one round in progress and splits its customers into chunks;
a small round runs in the coordinator (the usual case: a few customers changed, and they
should change segment within seconds), a large one fans out to chunk tasks that any worker
on the ``segments`` queue takes. Transitions fire outreach (stored with them) and ask the
widget answers to refresh.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from functools import cache
from typing import Any

from celery import Celery
from celery.schedules import crontab

from services.core.channels import open_channel
from services.core.settings import Settings
from services.segments.app import RecomputeSummary, RoundKind, RoundPlan, Segments
from services.segments.profiles_client import ProfilesClient
from services.segments.repository import SegmentRepository
from workers.context import engine_of, settings_of

log = logging.getLogger("switchboard.workers.segments")


def beat_entries(settings: Settings) -> Iterator[tuple[str, dict[str, Any]]]:
    every = settings.reevaluate_seconds
    yield (
        "reevaluate-changed",
        {
            "task": "switchboard.segments.reevaluate_changed",
            "schedule": timedelta(seconds=every),
            # A backlog of ticks is worth one run, not hundreds.
            "options": {"expires": max(every * 5, 5.0)},
        },
    )
    yield (
        "reevaluate-everyone",
        {
            "task": "switchboard.segments.reevaluate_all",
            "schedule": crontab(minute=0, hour=settings.nightly_recompute_hour),
        },
    )


def register(app: Celery) -> None:
    @cache
    def segments() -> Segments:
        settings = settings_of(app)
        channel = open_channel(
            settings.profiles_address, settings, deadline_seconds=settings.call_deadline_seconds
        )
        return Segments(SegmentRepository(engine_of(app)), ProfilesClient(channel))

    def start(kind: RoundKind) -> int:
        planned = segments().begin_round(kind)
        if planned is None:
            return 0
        if len(planned.chunks) == 1 and kind is RoundKind.CHANGED:
            finished(segments().run_chunk(planned, 0, planned.chunks[0]))
            return len(planned.chunks[0])
        for index, customer_ids in enumerate(planned.chunks):
            reevaluate_chunk.delay(
                planned.round_id, planned.kind.value, planned.upto_sequence, index, customer_ids
            )
        log.info(
            "re-evaluation round started",
            extra={
                "round": planned.round_id,
                "kind": planned.kind.value,
                "chunks": len(planned.chunks),
            },
        )
        return sum(len(chunk) for chunk in planned.chunks)

    def finished(summary: RecomputeSummary) -> None:
        if summary.entered or summary.exited:
            log.info(
                "segment transitions stored",
                extra={"entered": summary.entered, "exited": summary.exited},
            )
            # Outreach for these transitions is already stored with them: send it now rather
            # than at the next dispatch tick.
            app.send_task("switchboard.outreach.dispatch_due")
            if settings_of(app).redis_url:
                app.send_task("switchboard.routing.refresh_widget_configs")

    @app.task(  # type: ignore[untyped-decorator]
        name="switchboard.segments.reevaluate_changed",
        autoretry_for=(Exception,),
        retry_backoff=True,
        max_retries=3,
    )
    def reevaluate_changed(**_: Any) -> int:
        """Re-evaluate the customers the profiles change log names after the cursor.
        Idempotent: a no-op while another round runs, and a rerun finds nothing new."""
        return start(RoundKind.CHANGED)

    @app.task(  # type: ignore[untyped-decorator]
        name="switchboard.segments.reevaluate_all",
        autoretry_for=(Exception,),
        retry_backoff=True,
        max_retries=3,
    )
    def reevaluate_all(**_: Any) -> int:
        """Re-evaluate every customer, for rules that change with time alone."""
        return start(RoundKind.ALL)

    @app.task(  # type: ignore[untyped-decorator]
        name="switchboard.segments.reevaluate_chunk",
        autoretry_for=(Exception,),
        retry_backoff=True,
        max_retries=5,
    )
    def reevaluate_chunk(
        round_id: str, kind: str, upto_sequence: int, index: int, customer_ids: list[str], **_: Any
    ) -> int:
        """One chunk of a round. Idempotent: customers are re-read and compared with their
        stored memberships, so a redelivered chunk stores no transition twice."""
        planned = RoundPlan(round_id, RoundKind(kind), upto_sequence, [])
        summary = segments().run_chunk(planned, index, customer_ids)
        finished(summary)
        return summary.evaluated + summary.removed
