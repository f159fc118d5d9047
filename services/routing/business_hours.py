"""Business-hours arithmetic: when a support team is open, and how much open time lies
between two instants, so that "first response within 4 business hours" has a due time.

A calendar is a time zone, open intervals per weekday in local wall-clock minutes, and holidays
by local date (a holiday closes the whole date). ``always_open`` means open around the clock;
holidays still close an always-open calendar, so "24/7 except Christmas" can be written, and
without holidays it is plain wall-clock arithmetic.

How local times become instants:

- Open time is half-open: open at an interval's start, closed again at its end.
- Each local date's intervals are turned into real (UTC) instants separately, so an interval
  lasts the real time elapsed between its local start and end on that date. On the day New York
  springs forward (02:00 -> 03:00) an interval 00:00-06:00 lasts 5 hours; on the day it falls
  back, 7 hours.
- A local time that does not exist (02:30 on a spring-forward day) is read the way zoneinfo
  reads it with ``fold=0``: with the offset in force before the jump, so it lands one hour later
  in real time (03:30). An ambiguous time (01:30 on a fall-back day) is its first occurrence.
- Minute 1440 is the midnight that starts the next local date, so Monday 22:00-24:00 followed by
  Tuesday 00:00-06:00 is one continuous night shift.
- Searching forward stops after ``SEARCH_HORIZON``: a calendar with weekly hours can still be
  closed for years by holidays, and then ``NeverOpen`` is raised instead of searching forever.

The walk goes one local date at a time and one interval at a time, never minute by minute. Each
calendar is compiled once (calendars are frozen, so they key a cache) and remembers the UTC
windows of the dates it has seen, because routing asks the same few days over and over.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import TypeVar
from zoneinfo import ZoneInfo

from services.core.clock import time_zone_named
from services.core.errors import FieldViolation

MINUTES_PER_DAY = 1440
SEARCH_HORIZON = timedelta(days=1096)
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

_CLOCK_TIME = re.compile(r"([0-9]{2}):([0-9]{2})")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ONE_DAY = timedelta(days=1)
_NO_TIME = timedelta(0)
# Routing revisits a few weeks; the bound keeps a years-long walk from growing memory.
_WINDOWS_REMEMBERED_PER_CALENDAR = 512

# An open stretch of real time as (start, end) UTC instants, end exclusive.
_Window = tuple[datetime, datetime]
# Local minutes or UTC instants: both kinds of span are merged the same way.
_Point = TypeVar("_Point", int, datetime)


@dataclass(frozen=True)
class OpenInterval:
    """Open time on one weekday, in local minutes after midnight (end 1440 = midnight)."""

    weekday: int
    start_minute: int
    end_minute: int


@dataclass(frozen=True)
class BusinessCalendar:
    """When a team is open: weekly local hours in ``time_zone`` minus holidays, or always."""

    time_zone: str = "UTC"
    always_open: bool = False
    weekly_hours: tuple[OpenInterval, ...] = ()
    holidays: frozenset[date] = frozenset()

    def __hash__(self) -> int:
        # A calendar keys the compiled-schedule cache on every due-time computation, and
        # hashing its intervals and holidays each time cost more than the lookup saved.
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = hash((self.time_zone, self.always_open, self.weekly_hours, self.holidays))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __getstate__(self) -> dict[str, object]:
        # String hashes differ between processes: a pickled calendar must hash afresh.
        return {name: value for name, value in self.__dict__.items() if name != "_hash"}


ALWAYS_OPEN = BusinessCalendar(always_open=True)


class NeverOpen(ValueError):
    """The calendar has no open time within the search horizon (see ``SEARCH_HORIZON``)."""


# ---- parsing and validation ------------------------------------------------------------------


def parse_clock_time(text: str) -> int:
    """Minutes after midnight for a strict ``HH:MM`` between 00:00 and 24:00."""
    match = _CLOCK_TIME.fullmatch(text)
    if match is not None:
        hours, minutes = int(match[1]), int(match[2])
        if minutes < 60 and (hours < 24 or (hours == 24 and minutes == 0)):
            return hours * 60 + minutes
    raise ValueError(f"{text!r} is not a clock time HH:MM between 00:00 and 24:00")


def format_clock_time(minute: int) -> str:
    """``HH:MM`` for minutes after midnight, 0 to 1440 ("24:00")."""
    if not 0 <= minute <= MINUTES_PER_DAY:
        raise ValueError(f"{minute} is not a minute of the day between 0 and {MINUTES_PER_DAY}")
    hours, minutes = divmod(minute, 60)
    return f"{hours:02d}:{minutes:02d}"


def parse_day(text: str) -> date:
    """A date from a strict ``YYYY-MM-DD`` (none of the other forms ``fromisoformat`` takes)."""
    if _DAY.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise ValueError(f"{text!r} is not a date YYYY-MM-DD")


def calendar_problems(calendar: BusinessCalendar, field: str = "calendar") -> list[FieldViolation]:
    """Every problem with a calendar at once, each at its field path under ``field``."""
    problems: list[FieldViolation] = []
    if time_zone_named(calendar.time_zone) is None:
        problems.append(
            FieldViolation(f"{field}.time_zone", f"unknown time zone {calendar.time_zone!r}")
        )
    hours_field = f"{field}.weekly_hours"
    if calendar.always_open and calendar.weekly_hours:
        problems.append(
            FieldViolation(hours_field, "an always-open calendar takes no weekly hours")
        )
    if not calendar.always_open and not calendar.weekly_hours:
        problems.append(
            FieldViolation(
                hours_field, "a calendar that is not always open needs at least one open interval"
            )
        )
    sound_intervals: list[tuple[int, OpenInterval]] = []
    for index, interval in enumerate(calendar.weekly_hours):
        interval_field = f"{hours_field}[{index}]"
        interval_problems = _interval_problems(interval, interval_field)
        if interval_problems:
            problems += interval_problems
            continue
        problems += [
            FieldViolation(
                interval_field,
                f"overlaps weekly_hours[{earlier_index}] on {WEEKDAY_NAMES[interval.weekday]}",
            )
            for earlier_index, earlier in sound_intervals
            if earlier.weekday == interval.weekday
            and earlier.start_minute < interval.end_minute
            and interval.start_minute < earlier.end_minute
        ]
        sound_intervals.append((index, interval))
    return problems


def _interval_problems(interval: OpenInterval, field: str) -> list[FieldViolation]:
    problems: list[FieldViolation] = []
    if not 0 <= interval.weekday <= 6:
        problems.append(
            FieldViolation(
                f"{field}.weekday",
                f"weekday {interval.weekday} is not between 0 (Monday) and 6 (Sunday)",
            )
        )
    start_fits = 0 <= interval.start_minute < MINUTES_PER_DAY
    end_fits = 0 < interval.end_minute <= MINUTES_PER_DAY
    if not start_fits:
        problems.append(
            FieldViolation(
                f"{field}.start_minute",
                f"start {interval.start_minute} is not between 0 (00:00) and 1439 (23:59)",
            )
        )
    if not end_fits:
        problems.append(
            FieldViolation(
                f"{field}.end_minute",
                f"end {interval.end_minute} is not between 1 (00:01) and 1440 (24:00)",
            )
        )
    if start_fits and end_fits and interval.end_minute <= interval.start_minute:
        problems.append(
            FieldViolation(
                field,
                f"end {format_clock_time(interval.end_minute)} is not after "
                f"start {format_clock_time(interval.start_minute)}",
            )
        )
    return problems


# ---- arithmetic ------------------------------------------------------------------------------


def is_open(calendar: BusinessCalendar, moment: datetime) -> bool:
    """Whether the team is open at ``moment`` (open at an interval's start, not at its end)."""
    instant = _as_utc(moment, "moment")
    schedule = _compile(calendar)
    if schedule.wall_clock:
        return True
    # A date's windows never leave that date, so only the moment's own date can hold it.
    windows = schedule.windows_on(schedule.local_date(instant))
    return any(start <= instant < end for start, end in windows)


def next_open_time(calendar: BusinessCalendar, moment: datetime) -> datetime:
    """The first open instant at or after ``moment`` (``moment`` itself when open), in UTC."""
    instant = _as_utc(moment, "moment")
    schedule = _compile(calendar)
    if schedule.wall_clock:
        return instant
    for start, _ in _windows_ending_after(schedule, instant, instant + SEARCH_HORIZON):
        return max(start, instant)
    raise NeverOpen(f"the calendar is not open within {SEARCH_HORIZON.days} days after {instant}")


def next_change_time(calendar: BusinessCalendar, moment: datetime) -> datetime | None:
    """When the calendar next opens or closes after ``moment``; None when it never changes
    (24/7, or closed for good within the horizon). What depends on "open now" is good until
    then."""
    instant = _as_utc(moment, "moment")
    schedule = _compile(calendar)
    if schedule.wall_clock:
        return None
    for start, end in _windows_ending_after(schedule, instant, instant + SEARCH_HORIZON):
        return start if start > instant else end
    return None


def business_time_between(calendar: BusinessCalendar, start: datetime, end: datetime) -> timedelta:
    """Open time inside ``[start, end)``; zero when ``end`` is not after ``start``."""
    start_instant, end_instant = _as_utc(start, "start"), _as_utc(end, "end")
    schedule = _compile(calendar)
    if end_instant <= start_instant:
        return _NO_TIME
    if schedule.wall_clock:
        return end_instant - start_instant
    total = _NO_TIME
    for window_start, window_end in _windows_ending_after(schedule, start_instant, end_instant):
        if window_start >= end_instant:
            break
        total += min(window_end, end_instant) - max(window_start, start_instant)
    return total


def add_business_time(calendar: BusinessCalendar, start: datetime, duration: timedelta) -> datetime:
    """The UTC instant at which ``duration`` of open time has passed since ``start``.

    A target that runs out exactly at closing time is due at closing, not at the next opening.
    ``NeverOpen`` when the instant lies beyond ``SEARCH_HORIZON`` after ``start``.
    """
    instant = _as_utc(start, "start")
    if duration < _NO_TIME:
        raise ValueError(f"duration must not be negative, got {duration}")
    schedule = _compile(calendar)
    if not duration:
        return instant
    if schedule.wall_clock:
        if duration > SEARCH_HORIZON:
            raise NeverOpen(f"{duration} of open time lies beyond the search horizon")
        return instant + duration
    remaining = duration
    for window_start, window_end in _windows_ending_after(
        schedule, instant, instant + SEARCH_HORIZON
    ):
        counted_from = max(window_start, instant)
        available = window_end - counted_from
        if remaining <= available:
            return counted_from + remaining
        remaining -= available
    raise NeverOpen(
        f"{duration} of open time is not reached within {SEARCH_HORIZON.days} days after {instant}"
    )


def open_windows(
    calendar: BusinessCalendar, start: datetime, end: datetime
) -> Iterator[tuple[datetime, datetime]]:
    """The open periods inside ``[start, end)`` as UTC pairs, in order, with periods that
    touch (a night shift over midnight, back-to-back intervals) merged into one."""
    start_instant, end_instant = _as_utc(start, "start"), _as_utc(end, "end")
    schedule = _compile(calendar)
    if end_instant <= start_instant:
        return iter(())
    if schedule.wall_clock:
        return iter([(start_instant, end_instant)])
    return _merged_windows(schedule, start_instant, end_instant)


def _merged_windows(schedule: _Schedule, start: datetime, end: datetime) -> Iterator[_Window]:
    pending: _Window | None = None
    for window_start, window_end in _windows_ending_after(schedule, start, end):
        if window_start >= end:
            break
        clipped = (max(window_start, start), min(window_end, end))
        if pending is None:
            pending = clipped
        elif clipped[0] <= pending[1]:
            pending = (pending[0], clipped[1])
        else:
            yield pending
            pending = clipped
    if pending is not None:
        yield pending


def _windows_ending_after(
    schedule: _Schedule, moment: datetime, until: datetime
) -> Iterator[_Window]:
    """Open windows that end after ``moment``, in order, from the local dates up to the one
    holding ``until``; the last may reach past ``until``, so callers clip."""
    day = schedule.local_date(moment)
    last_day = schedule.local_date(until)
    while day <= last_day:
        for window in schedule.windows_on(day):
            if window[1] > moment:
                yield window
        day += _ONE_DAY


def _as_utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


class _Schedule:
    """A validated calendar ready for arithmetic: merged local intervals per weekday, and the
    UTC windows of each local date already asked about."""

    __slots__ = ("_intervals_by_weekday", "_windows_by_day", "holidays", "wall_clock", "zone")

    def __init__(self, calendar: BusinessCalendar) -> None:
        self.zone = ZoneInfo(calendar.time_zone)
        self.holidays = calendar.holidays
        self.wall_clock = calendar.always_open and not calendar.holidays
        weekly_hours = calendar.weekly_hours
        if calendar.always_open:
            weekly_hours = tuple(OpenInterval(weekday, 0, MINUTES_PER_DAY) for weekday in range(7))
        self._intervals_by_weekday: tuple[tuple[tuple[int, int], ...], ...] = tuple(
            _merge_touching(
                (interval.start_minute, interval.end_minute)
                for interval in weekly_hours
                if interval.weekday == weekday
            )
            for weekday in range(7)
        )
        self._windows_by_day: dict[date, tuple[_Window, ...]] = {}

    def local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.zone).date()

    def windows_on(self, day: date) -> tuple[_Window, ...]:
        """The open windows of one local date as UTC instants, in order and disjoint."""
        remembered = self._windows_by_day.get(day)
        if remembered is not None:
            return remembered
        intervals = () if day in self.holidays else self._intervals_by_weekday[day.weekday()]
        windows = self._to_real_time(day, intervals) if intervals else ()
        if len(self._windows_by_day) >= _WINDOWS_REMEMBERED_PER_CALENDAR:
            self._windows_by_day.clear()
        self._windows_by_day[day] = windows
        return windows

    def _to_real_time(
        self, day: date, intervals: tuple[tuple[int, int], ...]
    ) -> tuple[_Window, ...]:
        day_start = self._instant(day, 0)
        day_end = self._instant(day + _ONE_DAY, 0)
        windows: list[_Window] = []
        for start_minute, end_minute in intervals:
            start = day_start if start_minute == 0 else self._instant(day, start_minute)
            end = day_end if end_minute == MINUTES_PER_DAY else self._instant(day, end_minute)
            # Clipped to the date, so that dates stay disjoint and in order even when a DST gap
            # sits next to midnight, and a moment's own date is the only one that can hold it.
            start, end = max(start, day_start), min(end, day_end)
            if start < end:
                windows.append((start, end))
        # Around a DST gap, intervals that are apart on the wall clock can overlap or touch in
        # real time (00:00-02:30 and 03:00-06:00 on a spring-forward day), or vanish.
        return _merge_touching(windows)

    def _instant(self, day: date, minute: int) -> datetime:
        hour, minute_of_hour = divmod(minute, 60)
        local = datetime(day.year, day.month, day.day, hour, minute_of_hour, tzinfo=self.zone)
        return local.astimezone(UTC)


def _merge_touching(spans: Iterable[tuple[_Point, _Point]]) -> tuple[tuple[_Point, _Point], ...]:
    """Sorted spans with overlapping or touching ones joined, since open time that touches is
    one stretch to the customer waiting through it."""
    merged: list[tuple[_Point, _Point]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


@lru_cache(maxsize=256)
def _compile(calendar: BusinessCalendar) -> _Schedule:
    problems = calendar_problems(calendar)
    if problems:
        details = "; ".join(f"{problem.field}: {problem.description}" for problem in problems)
        raise ValueError(f"invalid business calendar: {details}")
    return _Schedule(calendar)
