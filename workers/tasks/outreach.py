"""Outreach webhooks: signed deliveries with retries and a dead-letter log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from celery import Celery

from services.core.settings import Settings


def beat_entries(_settings: Settings) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from ()


def register(app: Celery) -> None:
    del app
