"""The one place that reads the wall clock; everything else takes ``now`` or a ``Clock``."""

from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def time_zone_named(name: str) -> ZoneInfo | None:
    """The IANA time zone ``name``, or None when there is none by that name."""
    if name.startswith("/") or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    # zoneinfo signals a bad key in several ways: unknown, malformed, too long, a directory.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
