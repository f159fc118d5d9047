"""Rules of the customer record: what a valid value is, and how usage becomes traits.

Pure functions: no I/O, no clock (callers pass ``now``), so they are tested in isolation
and shared by the gRPC service and the sync workers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.core.clock import time_zone_named
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
    """Every problem with the given fields, each named as ``prefix + field``.

    Only the fields present are checked, each by its own rule: a record sets a dozen of
    the customer's fields, and upserts and syncs check thousands of records at a time."""
    found: list[_Problem] = []
    for name, value in values.items():
        rule = _RULES.get(name)
        if rule is not None:
            found += rule(value)
    if len(found) > 1:
        found.sort(key=lambda problem: problem[0])
    return [FieldViolation(prefix + field, description) for _, field, description in found]


# One problem: its rank (problems are reported in the order of the rules below, whatever
# the order of the fields), the field and what is wrong with it.
_Problem = tuple[int, str, str]
_FINE: tuple[_Problem, ...] = ()


def _text_rule(field: str, limit: int, rank: int) -> Callable[[Any], Sequence[_Problem]]:
    def rule(text: Any) -> Sequence[_Problem]:
        if isinstance(text, str) and len(text) > limit:
            return [(rank, field, f"must be at most {limit} characters")]
        return _FINE

    return rule


def _email_rule(email: Any) -> Sequence[_Problem]:
    problems = list(_EMAIL_LENGTH(email))
    if email and not EMAIL_PATTERN.match(email):
        problems.append((20, "email", f"{email!r} is not an email address"))
    return problems


def _country_rule(country: Any) -> Sequence[_Problem]:
    if country and country not in COUNTRY_CODES:
        return [(21, "country", f"{country!r} is not an ISO 3166-1 alpha-2 country code")]
    return _FINE


def _timezone_rule(timezone: Any) -> Sequence[_Problem]:
    if timezone and time_zone_named(timezone) is None:
        return [(22, "timezone", f"{timezone!r} is not an IANA time zone")]
    return _FINE


def _language_rule(language: Any) -> Sequence[_Problem]:
    if language and (len(language) > 35 or not LANGUAGE_PATTERN.match(language)):
        return [(23, "language", f"{language!r} is not a BCP 47 language tag")]
    return _FINE


def _amount_rule(field: str, rank: int) -> Callable[[Any], Sequence[_Problem]]:
    def rule(number: Any) -> Sequence[_Problem]:
        if number is not None and (not math.isfinite(number) or number < 0):
            return [(rank, field, "must be a finite number, zero or more")]
        return _FINE

    return rule


def _range_rule(field: str, low: int, high: int, rank: int) -> Callable[[Any], Sequence[_Problem]]:
    def rule(number: Any) -> Sequence[_Problem]:
        if number is not None and not (low <= number <= high):
            return [(rank, field, f"must be between {low} and {high}")]
        return _FINE

    return rule


def _tags_rule(tags: Any) -> Sequence[_Problem]:
    return [(40, problem.field, problem.description) for problem in validate_tags(tags)]


def _external_ids_rule(external_ids: Mapping[str, str]) -> Sequence[_Problem]:
    problems: list[_Problem] = []
    for system, external_id in external_ids.items():
        if not EXTERNAL_SYSTEM_PATTERN.match(system):
            why = "system names are 1-32 lowercase letters, digits, '_' or '-'"
        elif not external_id or len(external_id) > MAX_EXTERNAL_ID_LENGTH:
            why = f"the id must be 1-{MAX_EXTERNAL_ID_LENGTH} characters"
        else:
            continue
        problems.append((41, f"external_ids[{system!r}]", why))
    return problems


def _attributes_rule(attributes: Any) -> Sequence[_Problem]:
    if attributes and not _json_fits(attributes, MAX_ATTRIBUTES_BYTES):
        return [(42, "attributes", f"must be at most {MAX_ATTRIBUTES_BYTES} bytes as JSON")]
    return _FINE


def _json_fits(document: Mapping[str, Any], limit: int) -> bool:
    """Whether ``document`` is at most ``limit`` characters as JSON. A few short scalars, the
    usual custom fields, fit by an upper bound without being encoded: a character takes at
    most 12 (a surrogate pair's two escapes), a float's repr at most 24, each entry 6 more
    for quotes and separators."""
    bound = 2
    for key, value in document.items():
        if isinstance(value, str):
            bound += 12 * len(value) + 2
        elif value is None or isinstance(value, bool | float):
            bound += 24
        else:
            bound = limit + 1
            break
        bound += 12 * len(key) + 6
    return bound <= limit or len(json.dumps(document)) <= limit


_EMAIL_LENGTH = _text_rule("email", MAX_TEXT_LENGTH["email"], 0)
_RULES: dict[str, Callable[[Any], Sequence[_Problem]]] = {
    **{
        field: _text_rule(field, limit, rank)
        for rank, (field, limit) in enumerate(MAX_TEXT_LENGTH.items())
    },
    "email": _email_rule,
    "country": _country_rule,
    "timezone": _timezone_rule,
    "language": _language_rule,
    **{
        field: _amount_rule(field, rank)
        for rank, field in enumerate(("seats", "employee_count", "arr", "annual_revenue"), 30)
    },
    "health_score": _range_rule("health_score", 0, 100, 34),
    "nps": _range_rule("nps", 0, 10, 35),
    "tags": _tags_rule,
    "external_ids": _external_ids_rule,
    "attributes": _attributes_rule,
}


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
