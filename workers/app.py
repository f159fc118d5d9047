"""The Celery application, built from ``Settings`` by whoever starts it (CLI or tests).

Tasks are thin: they take ids, re-read state through the owning service's code, and are
idempotent, which is what makes ``acks_late`` safe (a task redelivered after a worker
died simply runs again).
"""

from __future__ import annotations

from datetime import timedelta

from celery import Celery

from services.core.settings import Settings

QUEUES = ("maintenance", "routing")


def create_celery_app(settings: Settings) -> Celery:
    app = Celery("switchboard")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=600,
        task_soft_time_limit=540,
        task_default_queue="maintenance",
        task_routes={
            "switchboard.maintenance.*": {"queue": "maintenance"},
            "switchboard.routing.*": {"queue": "routing"},
        },
        beat_schedule={
            "prune-usage-events": {
                "task": "switchboard.maintenance.prune_usage_events",
                "schedule": timedelta(hours=1),
            },
            "routing-timers": {
                "task": "switchboard.routing.advance_timers",
                "schedule": timedelta(seconds=30),
            },
            **_widget_schedule(settings),
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        timezone="UTC",
        # Keep Switchboard's JSON log lines instead of Celery's own format.
        worker_hijack_root_logger=False,
    )
    app.conf.switchboard_settings = settings
    from workers.tasks import maintenance, routing, widgets

    maintenance.register(app)
    routing.register(app)
    widgets.register(app)
    return app


def _widget_schedule(settings: Settings) -> dict[str, dict[str, object]]:
    """Widget answers live in Redis only: with the embedded defaults nothing is scheduled."""
    if not settings.redis_url:
        return {}
    return {
        "widget-configs": {
            "task": "switchboard.routing.refresh_widget_configs",
            "schedule": timedelta(seconds=settings.widget_refresh_seconds),
        }
    }
