"""Per-process resources for tasks, created lazily so that each forked worker child opens
its own database connections instead of sharing its parent's sockets."""

from __future__ import annotations

from functools import cache

from celery import Celery
from sqlalchemy import Engine

from services.core.db import create_db_engine
from services.core.settings import Settings


def settings_of(app: Celery) -> Settings:
    settings: Settings = app.conf.switchboard_settings
    return settings


@cache
def _engine(url: str) -> Engine:
    return create_db_engine(url)


def engine_of(app: Celery) -> Engine:
    return _engine(settings_of(app).effective_database_url)
