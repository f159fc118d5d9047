"""Durations and timestamps for the relative- and absolute-date operators.

Nothing here reads the clock: callers pass ``now`` so a segment's membership is a pure
function of its inputs and can be recomputed (or tested) for any instant.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"([1-9][0-9]{0,6})([smhdw])\Z")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Longer windows mean nothing for a customer record, and subtracting one from ``now`` could
# fall before year 1 and raise instead of evaluating.
MAX_DURATION = timedelta(days=100 * 366)


def parse_duration(text: object) -> timedelta | None:
    """``"30d"`` -> 30 days; None unless a positive whole number of s, m, h, d or w, and
    at most ``MAX_DURATION`` (100 years)."""
    if not isinstance(text, str):
        return None
    match = _DURATION.match(text)
    if match is None:
        return None
    duration = timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    return duration if duration <= MAX_DURATION else None


def as_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken to be UTC, which is what our stores write."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def parse_timestamp(value: object) -> datetime | None:
    """An aware datetime from a datetime or an ISO-8601 string; None for anything else."""
    if isinstance(value, datetime):
        return as_utc(value)
    if not isinstance(value, str) or not 10 <= len(value) <= 64:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return as_utc(parsed)
