"""What a dashboard URL asks for: the family, the range and the time zone of a report.

Kept apart from HTTP and gRPC so the rules for a query string read in one place. Only the
shape of the query is checked here; whether a family or zone exists is the ReportService's
call, so the dashboard never holds a second opinion about it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.core.errors import FieldViolation, InvalidArgument

# The ranges the page offers; any whole number of days up to a year is accepted in a URL.
DEFAULT_SINCE = "30d"
MAX_SINCE_DAYS = 366
_SINCE_PATTERN = re.compile(r"(?P<days>[0-9]{1,3})d")


@dataclass(frozen=True)
class ReportQuery:
    """One report request as the page asked for it, with the range resolved to instants."""

    family: str
    start_time: datetime
    end_time: datetime
    time_zone: str


def parse_report_query(
    parameters: Mapping[str, Sequence[str]], *, allowed: frozenset[str], now: datetime
) -> ReportQuery:
    """The query of ``parameters`` (as ``urllib.parse.parse_qs`` gives them).

    A range is ``since=<n>d`` (ending now) or ``start`` and optionally ``end`` as ISO 8601
    instants with an offset; neither means the last 30 days. Raises ``InvalidArgument``
    naming the offending parameters.
    """
    violations = [
        FieldViolation(name, "unknown parameter; expected one of " + ", ".join(sorted(allowed)))
        for name in sorted(parameters)
        if name not in allowed
    ]
    violations += [
        FieldViolation(name, "given more than once")
        for name, values in sorted(parameters.items())
        if len(values) > 1
    ]
    single = {name: values[0] for name, values in parameters.items() if values}
    start_time, end_time, range_violations = _resolve_range(single, now)
    violations += range_violations
    if violations:
        raise InvalidArgument(violations)
    return ReportQuery(
        family=single.get("family", "").strip(),
        start_time=start_time,
        end_time=end_time,
        time_zone=single.get("time_zone", "").strip(),
    )


def _resolve_range(
    single: Mapping[str, str], now: datetime
) -> tuple[datetime, datetime, list[FieldViolation]]:
    if "since" in single and ("start" in single or "end" in single):
        violation = FieldViolation("since", "give either since or start/end, not both")
        return now, now, [violation]
    if "start" not in single:
        if "end" in single:
            return now, now, [FieldViolation("start", "required when end is given")]
        since = single.get("since", DEFAULT_SINCE)
        match = _SINCE_PATTERN.fullmatch(since)
        if match is None or not 1 <= int(match["days"]) <= MAX_SINCE_DAYS:
            description = f"a number of days from 1 to {MAX_SINCE_DAYS}, like 30d; got {since!r}"
            return now, now, [FieldViolation("since", description)]
        return now - timedelta(days=int(match["days"])), now, []
    violations: list[FieldViolation] = []
    start_time = _instant(single, "start", violations) or now
    end_time = _instant(single, "end", violations) if "end" in single else now
    return start_time, end_time or now, violations


def _instant(
    single: Mapping[str, str], name: str, violations: list[FieldViolation]
) -> datetime | None:
    text = single[name]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        violations.append(FieldViolation(name, f"an ISO 8601 instant, got {text!r}"))
        return None
    if parsed.tzinfo is None:
        violations.append(FieldViolation(name, "needs an offset, like 2025-03-01T00:00:00Z"))
        return None
    return parsed
