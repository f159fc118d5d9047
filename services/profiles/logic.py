"""Rules of the customer record: what a valid value is, and how usage becomes traits.

Pure functions: no I/O, no clock (callers pass ``now``), so they are tested in isolation
and shared by the gRPC service and the sync workers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.core.errors import FieldViolation
from services.profiles.countries import COUNTRY_CODES

CUSTOMER_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
EXTERNAL_SYSTEM_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
METRIC_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Deliberately permissive: one @, no spaces, a dot in the domain. Deliverability is the
# mail system's business; this catches typos and pasted junk.
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
# Well-formed BCP 47: language, optional script, optional region, optional variants.
LANGUAGE_PATTERN = re.compile(
    r"^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-(?:[A-Za-z]{2}|[0-9]{3}))?(-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*$"
)

MAX_TAG_LENGTH = 64
MAX_TAGS = 200
MAX_TEXT_LENGTH = {
    "email": 254,
    "display_name": 200,
    "company_name": 200,
    "plan": 100,
    "industry": 100,
    "region": 100,
    "lifecycle_stage": 100,
    "channel_preference": 32,
}
MAX_EXTERNAL_ID_LENGTH = 255
MAX_ATTRIBUTES_BYTES = 16_384
TRAIT_WINDOW = timedelta(days=7)


def validate_customer_id(customer_id: str, field: str = "customer_id") -> list[FieldViolation]:
    if not CUSTOMER_ID_PATTERN.match(customer_id):
        return [
            FieldViolation(
                field,
                "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            )
        ]
    return []


def normalize_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical forms so that equal data compares equal (and upserts stay idempotent)."""
    normalized = dict(values)
    if isinstance(normalized.get("country"), str):
        normalized["country"] = normalized["country"].upper()
    if isinstance(normalized.get("email"), str):
        normalized["email"] = normalized["email"].strip()
    if "tags" in normalized:
        normalized["tags"] = tuple(sorted(set(normalized["tags"])))
    return normalized


def validate_values(values: Mapping[str, Any], prefix: str = "") -> list[FieldViolation]:
    """Every problem with the given fields, each named as ``prefix + field``."""
    problems: list[FieldViolation] = []

    def bad(field: str, description: str) -> None:
        problems.append(FieldViolation(prefix + field, description))

    for field, limit in MAX_TEXT_LENGTH.items():
        text = values.get(field)
        if isinstance(text, str) and len(text) > limit:
            bad(field, f"must be at most {limit} characters")
    email = values.get("email")
    if email and not EMAIL_PATTERN.match(email):
        bad("email", f"{email!r} is not an email address")
    country = values.get("country")
    if country and country not in COUNTRY_CODES:
        bad("country", f"{country!r} is not an ISO 3166-1 alpha-2 country code")
    timezone = values.get("timezone")
    if timezone and not _is_time_zone(timezone):
        bad("timezone", f"{timezone!r} is not an IANA time zone")
    language = values.get("language")
    if language and (len(language) > 35 or not LANGUAGE_PATTERN.match(language)):
        bad("language", f"{language!r} is not a BCP 47 language tag")
    for field in ("seats", "employee_count", "arr", "annual_revenue"):
        number = values.get(field)
        if number is not None and (not math.isfinite(number) or number < 0):
            bad(field, "must be a finite number, zero or more")
    health_score = values.get("health_score")
    if health_score is not None and not (0 <= health_score <= 100):
        bad("health_score", "must be between 0 and 100")
    nps = values.get("nps")
    if nps is not None and not (0 <= nps <= 10):
        bad("nps", "must be between 0 and 10")
    if "tags" in values:
        problems.extend(validate_tags(values["tags"], prefix + "tags"))
    for system, external_id in values.get("external_ids", {}).items():
        if not EXTERNAL_SYSTEM_PATTERN.match(system):
            bad(
                f"external_ids[{system!r}]",
                "system names are 1-32 lowercase letters, digits, '_' or '-'",
            )
        elif not external_id or len(external_id) > MAX_EXTERNAL_ID_LENGTH:
            bad(
                f"external_ids[{system!r}]",
                f"the id must be 1-{MAX_EXTERNAL_ID_LENGTH} characters",
            )
    attributes = values.get("attributes")
    if attributes and len(json.dumps(attributes)) > MAX_ATTRIBUTES_BYTES:
        bad("attributes", f"must be at most {MAX_ATTRIBUTES_BYTES} bytes as JSON")
    return problems


def validate_tags(tags: Iterable[str], field: str = "tags") -> list[FieldViolation]:
    problems = []
    tags = list(tags)
    if len(tags) > MAX_TAGS:
        problems.append(FieldViolation(field, f"at most {MAX_TAGS} tags per customer"))
    for index, tag in enumerate(tags):
        if not tag.strip():
            problems.append(FieldViolation(f"{field}[{index}]", "a tag cannot be empty"))
        elif len(tag) > MAX_TAG_LENGTH:
            problems.append(
                FieldViolation(f"{field}[{index}]", f"a tag is at most {MAX_TAG_LENGTH} characters")
            )
    return problems


def _is_time_zone(name: str) -> bool:
    if name.startswith("/") or ".." in name:
        return False
    try:
        ZoneInfo(name)
    # zoneinfo signals a bad key in several ways: unknown, malformed, too long, a directory.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


@dataclass(frozen=True)
class MetricWindows:
    """Usage totals of one metric around ``now``: (now-7d, now] and (now-14d, now-7d]."""

    metric: str
    last_7d: float
    prev_7d: float


def traits_from_windows(windows: Iterable[MetricWindows]) -> dict[str, float]:
    """The computed traits for a customer: ``M_7d``, ``M_prev_7d`` and ``M_wow_change``.

    ``M_wow_change`` is left out when the previous week was zero: a change from nothing has
    no meaningful fraction, and a rule such as "fell by half" must not fire on it.
    """
    traits: dict[str, float] = {}
    for window in windows:
        traits[f"{window.metric}_7d"] = window.last_7d
        traits[f"{window.metric}_prev_7d"] = window.prev_7d
        if window.prev_7d > 0:
            traits[f"{window.metric}_wow_change"] = (
                window.last_7d - window.prev_7d
            ) / window.prev_7d
    return traits


def trait_window_bounds(now: datetime) -> tuple[datetime, datetime]:
    """Start of the previous week and start of the current week of the trait windows."""
    return now - 2 * TRAIT_WINDOW, now - TRAIT_WINDOW
