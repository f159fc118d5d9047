"""Widget answers precomputed into Redis, where every routing server reads them.

With the embedded defaults there is no Redis: the routing process keeps its own answers and
these tasks have nothing to fill, so beat does not schedule them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from functools import cache
from typing import Any

from celery import Celery

from services.core.settings import Settings
from services.routing.server import routing_app
from services.widgets.app import Widgets
from services.widgets.cache import RedisWidgetCache
from services.widgets.precompute import WidgetRefresher
from services.widgets.servicer import encode_config
from workers.context import engine_of, settings_of

log = logging.getLogger("switchboard.workers.widgets")


def beat_entries(settings: Settings) -> Iterator[tuple[str, dict[str, Any]]]:
    """Widget answers live in Redis only: with the embedded defaults nothing is scheduled."""
    if settings.redis_url:
        yield (
            "widget-configs",
            {
                "task": "switchboard.routing.refresh_widget_configs",
                "schedule": timedelta(seconds=settings.widget_refresh_seconds),
            },
        )


def register(app: Celery) -> None:
    @cache
    def refresher() -> WidgetRefresher | None:
        # One per worker process: it keeps the compiled catalog and segment plan between runs.
        settings = settings_of(app)
        if not settings.redis_url:
            return None
        redis_cache = RedisWidgetCache(settings.redis_url, timeout_seconds=30)
        widgets = Widgets(routing_app(engine_of(app), settings), redis_cache, encode_config)
        return WidgetRefresher(widgets, redis_cache)

    @app.task(  # type: ignore[untyped-decorator]
        name="switchboard.routing.precompute_widget_configs",
        autoretry_for=(Exception,),
        retry_backoff=True,
        max_retries=3,
    )
    def precompute_widget_configs(customer_ids: list[str] | None = None, **_: Any) -> int:
        """Compute and store the widget answers of ``customer_ids`` (None: everyone).
        Idempotent: it writes what the configuration in force says."""
        found = refresher()
        if found is None:
            log.info("no Redis configured: widget answers are kept by the routing process")
            return 0
        return found.precompute(customer_ids).count

    @app.task(  # type: ignore[untyped-decorator]
        name="switchboard.routing.refresh_widget_configs",
        autoretry_for=(Exception,),
        retry_backoff=True,
        max_retries=3,
    )
    def refresh_widget_configs(**_: Any) -> int:
        """Recompute what changed since the last refresh (everyone after a policy or
        segment change). Idempotent, and a no-op while another refresh runs."""
        found = refresher()
        return 0 if found is None else found.refresh().count
