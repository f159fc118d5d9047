"""The Celery application, built from ``Settings`` by whoever starts it (CLI or tests).

Tasks are thin: they take ids, re-read state through the owning service's code, and are
idempotent, which is what makes ``acks_late`` safe (a task redelivered after a worker
died simply runs again).

Each concern has its own queue, so that a long sync cannot starve the SLA watch: ``switchboard
up`` runs one worker for ``sync`` and another for everything else.
"""

from __future__ import annotations

from celery import Celery

from services.core.settings import Settings

# Queue names, in the order a worker serving all of them lists them.
QUEUES = ("sla", "outreach", "segments", "routing", "sync", "maintenance")

# Task names are "switchboard.<concern>.<verb>": the concern picks the queue.
_ROUTES = {f"switchboard.{queue}.*": {"queue": queue} for queue in QUEUES}

# Whoever sends a task (beat, a task sending the next one, `switchboard sync run`) rides out
# a broker outage of up to a minute instead of failing at once: it tries again at once, then
# after 0.5 s, 1 s, 1.5 s and every 2 s. Kombu bounds that reconnecting by time
# (connect_retries_timeout, 4 s unless set) whatever the retry policy says.
PUBLISH_RETRY_SECONDS = 60
PUBLISH_RETRY_POLICY = {
    "max_retries": 60,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 2,
}


def create_celery_app(settings: Settings) -> Celery:
    app = Celery("switchboard")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    from workers.tasks import maintenance, outreach, routing, segments, sla, sync, widgets

    modules = (maintenance, routing, widgets, sync, segments, sla, outreach)
    app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        # A worker whose broker went away keeps trying to reconnect however long the outage
        # lasts (Celery's default gives up after 100 attempts and exits).
        broker_connection_max_retries=None,
        task_publish_retry_policy=PUBLISH_RETRY_POLICY,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=600,
        task_soft_time_limit=540,
        task_default_queue="maintenance",
        task_routes=_ROUTES,
        beat_schedule={
            name: entry for module in modules for name, entry in module.beat_entries(settings)
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        timezone="UTC",
        # Keep Switchboard's JSON log lines instead of Celery's own format.
        worker_hijack_root_logger=False,
        **_redis_broker(settings),
        **_beat_lock(settings),
    )
    app.conf.switchboard_settings = settings
    for module in modules:
        module.register(app)
    return app


def _redis_broker(settings: Settings) -> dict[str, object]:
    """Kombu's Redis transport takes the time a sender spends reconnecting from its transport
    options. The embedded SQLite broker hands those to SQLAlchemy, which refuses what it does
    not know (and a local file has no outage to ride out)."""
    if not settings.redis_url:
        return {}
    return {"broker_transport_options": {"connect_retries_timeout": PUBLISH_RETRY_SECONDS}}


def _beat_lock(settings: Settings) -> dict[str, object]:
    """With Redis, beat keeps its schedule there under a lock (celery-redbeat), so a second
    beat started by mistake waits instead of enqueueing every task twice; it outlives a Redis
    outage (workers/beat.py). Embedded, the one beat ``switchboard up`` starts uses Celery's
    file scheduler."""
    if not settings.redis_url:
        return {}
    return {
        "beat_scheduler": "workers.beat:ResilientRedBeatScheduler",
        "redbeat_redis_url": settings.redis_url,
        "redbeat_key_prefix": "sb:beat",
        "redbeat_lock_timeout": 30,
        "beat_max_loop_interval": 5,
    }
