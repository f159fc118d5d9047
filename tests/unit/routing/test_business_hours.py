"""When a business-hours SLA target falls due, as a support team would check it on the clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.errors import FieldViolation
from services.routing.business_hours import (
    ALWAYS_OPEN,
    SEARCH_HORIZON,
    BusinessCalendar,
    NeverOpen,
    OpenInterval,
    add_business_time,
    business_time_between,
    calendar_problems,
    format_clock_time,
    is_open,
    next_open_time,
    open_windows,
    parse_clock_time,
    parse_day,
)

NEW_YORK = "America/New_York"
BERLIN = "Europe/Berlin"
WEEKDAYS = range(5)
HOURS = timedelta(hours=1)


def at(text: str, zone: str = NEW_YORK) -> datetime:
    """A local wall-clock moment, e.g. ``at("2024-01-05 16:00")`` (a Friday)."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


def weekday_hours(*spans: tuple[str, str], days: range = WEEKDAYS) -> tuple[OpenInterval, ...]:
    return tuple(
        OpenInterval(day, parse_clock_time(start), parse_clock_time(end))
        for day in days
        for start, end in spans
    )


NINE_TO_FIVE = BusinessCalendar(NEW_YORK, weekly_hours=weekday_hours(("09:00", "17:00")))
SPLIT_SHIFT = BusinessCalendar(
    NEW_YORK, weekly_hours=weekday_hours(("09:00", "12:00"), ("13:00", "17:30"))
)
NIGHT_SHIFT = BusinessCalendar(
    NEW_YORK, weekly_hours=(OpenInterval(0, 22 * 60, 1440), OpenInterval(1, 0, 6 * 60))
)


def open_all_day(zone: str, weekday: int) -> BusinessCalendar:
    return BusinessCalendar(zone, weekly_hours=(OpenInterval(weekday, 0, 1440),))


def early_shift(zone: str) -> BusinessCalendar:
    """Open 00:00-06:00 every Sunday, the day both DST transitions happen in these zones."""
    return BusinessCalendar(zone, weekly_hours=(OpenInterval(6, 0, 6 * 60),))


# ---- nights, weekends, holidays --------------------------------------------------------------


def test_friday_afternoon_target_skips_the_night_and_weekend_to_monday_noon() -> None:
    assert add_business_time(NINE_TO_FIVE, at("2024-01-05 16:00"), 4 * HOURS) == at(
        "2024-01-08 12:00"
    )


def test_weekday_afternoon_target_continues_next_morning() -> None:
    assert add_business_time(NINE_TO_FIVE, at("2024-01-09 15:00"), 4 * HOURS) == at(
        "2024-01-10 11:00"
    )


def test_weekend_counts_no_business_time() -> None:
    assert business_time_between(NINE_TO_FIVE, at("2024-01-05 17:00"), at("2024-01-08 09:00")) == (
        timedelta(0)
    )
    assert not is_open(NINE_TO_FIVE, at("2024-01-06 12:00"))


def test_conversation_arriving_on_saturday_is_due_counting_from_monday_morning() -> None:
    assert add_business_time(NINE_TO_FIVE, at("2024-01-06 10:00"), 2 * HOURS) == at(
        "2024-01-08 11:00"
    )


def test_full_business_week_is_forty_hours() -> None:
    assert business_time_between(NINE_TO_FIVE, at("2024-01-08 00:00"), at("2024-01-15 00:00")) == (
        40 * HOURS
    )


def test_midweek_holiday_is_skipped() -> None:
    calendar = BusinessCalendar(
        NEW_YORK, weekly_hours=NINE_TO_FIVE.weekly_hours, holidays=frozenset({date(2024, 7, 4)})
    )
    assert add_business_time(calendar, at("2024-07-03 16:00"), 2 * HOURS) == at("2024-07-05 10:00")
    assert not is_open(calendar, at("2024-07-04 12:00"))


def test_monday_holiday_after_a_weekend_pushes_friday_target_to_tuesday() -> None:
    calendar = BusinessCalendar(
        NEW_YORK, weekly_hours=NINE_TO_FIVE.weekly_hours, holidays=frozenset({date(2024, 1, 15)})
    )
    assert add_business_time(calendar, at("2024-01-12 16:00"), 4 * HOURS) == at("2024-01-16 12:00")


def test_holiday_closes_its_whole_local_date_even_for_a_night_shift() -> None:
    calendar = BusinessCalendar(
        NEW_YORK, weekly_hours=NIGHT_SHIFT.weekly_hours, holidays=frozenset({date(2024, 1, 9)})
    )
    assert business_time_between(calendar, at("2024-01-08 00:00"), at("2024-01-10 00:00")) == (
        2 * HOURS
    )


def test_holiday_is_a_local_date_not_a_utc_date() -> None:
    tokyo_new_year = BusinessCalendar(
        "Asia/Tokyo",
        always_open=True,
        holidays=frozenset({date(2024, 1, 1)}),
    )
    # 2023-12-31 16:00 UTC is already New Year's Day in Tokyo.
    assert not is_open(tokyo_new_year, datetime(2023, 12, 31, 16, 0, tzinfo=UTC))
    assert is_open(tokyo_new_year, datetime(2023, 12, 31, 14, 59, tzinfo=UTC))


# ---- split shifts, boundaries, continuity ----------------------------------------------------


def test_lunch_break_is_skipped() -> None:
    assert add_business_time(SPLIT_SHIFT, at("2024-01-08 11:00"), 2 * HOURS) == at(
        "2024-01-08 14:00"
    )
    assert not is_open(SPLIT_SHIFT, at("2024-01-08 12:30"))


def test_split_shift_day_counts_both_shifts() -> None:
    assert business_time_between(SPLIT_SHIFT, at("2024-01-08 00:00"), at("2024-01-09 00:00")) == (
        timedelta(hours=7, minutes=30)
    )


def test_target_arriving_during_lunch_starts_counting_after_lunch() -> None:
    assert add_business_time(SPLIT_SHIFT, at("2024-01-08 12:10"), 30 * timedelta(minutes=1)) == (
        at("2024-01-08 13:30")
    )


def test_start_before_opening_counts_from_opening() -> None:
    assert add_business_time(NINE_TO_FIVE, at("2024-01-09 07:00"), HOURS) == at("2024-01-09 10:00")
    assert next_open_time(NINE_TO_FIVE, at("2024-01-09 07:00")) == at("2024-01-09 09:00")


def test_open_at_opening_minute_and_closed_at_closing_minute() -> None:
    assert is_open(NINE_TO_FIVE, at("2024-01-09 09:00"))
    assert not is_open(NINE_TO_FIVE, at("2024-01-09 17:00"))
    assert is_open(NINE_TO_FIVE, at("2024-01-09 16:59:59.999999"))


def test_start_exactly_at_closing_counts_from_next_opening() -> None:
    assert add_business_time(NINE_TO_FIVE, at("2024-01-09 17:00"), HOURS) == at("2024-01-10 10:00")


def test_start_exactly_at_opening_counts_immediately() -> None:
    assert add_business_time(NINE_TO_FIVE, at("2024-01-09 09:00"), HOURS) == at("2024-01-09 10:00")


def test_target_used_up_exactly_at_closing_is_due_at_closing() -> None:
    assert add_business_time(NINE_TO_FIVE, at("2024-01-09 16:00"), HOURS) == at("2024-01-09 17:00")


def test_next_open_time_is_the_moment_itself_while_open() -> None:
    assert next_open_time(NINE_TO_FIVE, at("2024-01-09 10:15")) == at("2024-01-09 10:15")


def test_night_shift_over_midnight_is_continuous_open_time() -> None:
    assert add_business_time(NIGHT_SHIFT, at("2024-01-08 23:00"), 3 * HOURS) == at(
        "2024-01-09 02:00"
    )
    assert is_open(NIGHT_SHIFT, at("2024-01-09 00:00"))
    assert list(open_windows(NIGHT_SHIFT, at("2024-01-08 00:00"), at("2024-01-10 00:00"))) == [
        (at("2024-01-08 22:00"), at("2024-01-09 06:00"))
    ]


def test_back_to_back_intervals_form_one_open_window() -> None:
    calendar = BusinessCalendar(
        NEW_YORK, weekly_hours=weekday_hours(("09:00", "12:00"), ("12:00", "17:00"))
    )
    assert list(open_windows(calendar, at("2024-01-08 00:00"), at("2024-01-09 00:00"))) == [
        (at("2024-01-08 09:00"), at("2024-01-08 17:00"))
    ]


def test_open_windows_are_clipped_to_the_range_and_keep_lunch_apart() -> None:
    assert list(open_windows(SPLIT_SHIFT, at("2024-01-08 10:00"), at("2024-01-09 10:00"))) == [
        (at("2024-01-08 10:00"), at("2024-01-08 12:00")),
        (at("2024-01-08 13:00"), at("2024-01-08 17:30")),
        (at("2024-01-09 09:00"), at("2024-01-09 10:00")),
    ]


# ---- daylight saving -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "spring_forward", "fall_back"),
    [
        (NEW_YORK, date(2024, 3, 10), date(2024, 11, 3)),
        (BERLIN, date(2024, 3, 31), date(2024, 10, 27)),
    ],
)
def test_six_local_hours_last_five_real_hours_in_spring_and_seven_in_autumn(
    zone: str, spring_forward: date, fall_back: date
) -> None:
    calendar = early_shift(zone)

    def open_time_on(day: date) -> timedelta:
        midnight = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone))
        return business_time_between(calendar, midnight, midnight + timedelta(days=1))

    assert open_time_on(spring_forward) == 5 * HOURS
    assert open_time_on(fall_back) == 7 * HOURS
    assert open_time_on(spring_forward + timedelta(days=7)) == 6 * HOURS


@pytest.mark.parametrize(
    ("zone", "spring_forward", "fall_back"),
    [(NEW_YORK, "2024-03-10", "2024-11-03"), (BERLIN, "2024-03-31", "2024-10-27")],
)
def test_target_across_a_dst_change_is_due_after_real_elapsed_hours(
    zone: str, spring_forward: str, fall_back: str
) -> None:
    calendar = early_shift(zone)
    # Six hours of open time end at 06:00 on an ordinary Sunday; across the spring gap the
    # team is open one real hour less, so the sixth hour runs into the next Sunday.
    assert add_business_time(calendar, at(f"{spring_forward} 00:00", zone), 5 * HOURS) == at(
        f"{spring_forward} 06:00", zone
    )
    assert add_business_time(calendar, at(f"{spring_forward} 00:00", zone), 6 * HOURS) == (
        at(f"{spring_forward} 00:00", zone) + timedelta(days=7, hours=1)
    )
    # In autumn the repeated hour is open time too: six real hours end at local 05:00.
    assert add_business_time(calendar, at(f"{fall_back} 00:00", zone), 6 * HOURS) == at(
        f"{fall_back} 05:00", zone
    )


def test_monday_target_after_spring_forward_weekend_is_due_at_local_noon() -> None:
    due = add_business_time(NINE_TO_FIVE, at("2024-03-08 16:00"), 4 * HOURS)
    assert due == datetime(2024, 3, 11, 16, 0, tzinfo=UTC)
    assert due == at("2024-03-11 12:00")


def test_nonexistent_local_start_lands_one_hour_later_in_real_time() -> None:
    # 02:30 does not exist on 2024-03-10 in New York; read with fold=0 it is 03:30 EDT.
    calendar = BusinessCalendar(NEW_YORK, weekly_hours=(OpenInterval(6, 150, 240),))
    assert list(open_windows(calendar, at("2024-03-10 00:00"), at("2024-03-11 00:00"))) == [
        (at("2024-03-10 03:30"), at("2024-03-10 04:00"))
    ]
    assert list(open_windows(calendar, at("2024-03-17 00:00"), at("2024-03-18 00:00"))) == [
        (at("2024-03-17 02:30"), at("2024-03-17 04:00"))
    ]


def test_shifts_around_the_spring_gap_join_without_counting_time_twice() -> None:
    # 00:00-02:30 runs to 03:30 EDT, past the 03:00 start of the next shift.
    calendar = BusinessCalendar(
        NEW_YORK, weekly_hours=(OpenInterval(6, 0, 150), OpenInterval(6, 180, 360))
    )
    assert list(open_windows(calendar, at("2024-03-10 00:00"), at("2024-03-11 00:00"))) == [
        (at("2024-03-10 00:00"), at("2024-03-10 06:00"))
    ]
    assert business_time_between(calendar, at("2024-03-10 00:00"), at("2024-03-11 00:00")) == (
        5 * HOURS
    )


def test_gap_just_before_midnight_does_not_count_the_night_twice() -> None:
    # Nuuk springs forward at 23:00 on Saturday, so 23:30 that evening does not exist; read with
    # fold=0 it would fall after midnight, inside the Sunday shift.
    zone = "America/Nuuk"
    calendar = BusinessCalendar(
        zone, weekly_hours=(OpenInterval(5, 22 * 60, 23 * 60 + 30), OpenInterval(6, 0, 120))
    )
    saturday, sunday = at("2024-03-30 00:00", zone), at("2024-03-31 00:00", zone)
    assert list(open_windows(calendar, saturday, sunday + timedelta(days=1))) == [
        (at("2024-03-30 22:00", zone), at("2024-03-31 02:00", zone))
    ]
    assert business_time_between(calendar, saturday, sunday + timedelta(days=1)) == 3 * HOURS


def test_a_local_date_that_never_happened_has_no_open_time() -> None:
    # Samoa skipped 2011-12-30 when it moved across the date line.
    zone = "Pacific/Apia"
    calendar = BusinessCalendar(zone, weekly_hours=weekday_hours(("09:00", "17:00"), days=range(7)))
    assert business_time_between(
        calendar, at("2011-12-29 00:00", zone), at("2012-01-01 00:00", zone)
    ) == (16 * HOURS)


def test_next_open_time_at_closing_is_the_next_opening() -> None:
    assert next_open_time(NINE_TO_FIVE, at("2024-01-09 17:00")) == at("2024-01-10 09:00")


# ---- always open -----------------------------------------------------------------------------


def test_always_open_is_wall_clock_arithmetic_even_across_dst() -> None:
    start = at("2024-03-09 12:00")
    # Real elapsed time: local wall-clock reads 37 hours later because a night was short.
    assert add_business_time(ALWAYS_OPEN, start, 36 * HOURS) == start.astimezone(UTC) + 36 * HOURS
    assert add_business_time(ALWAYS_OPEN, start, 36 * HOURS) == at("2024-03-11 01:00")
    assert business_time_between(ALWAYS_OPEN, start, at("2024-03-10 12:00")) == 23 * HOURS
    assert is_open(ALWAYS_OPEN, start)
    assert list(open_windows(ALWAYS_OPEN, start, at("2024-03-10 12:00"))) == [
        (start, at("2024-03-10 12:00"))
    ]


def test_always_open_calendar_still_closes_on_its_holidays() -> None:
    calendar = BusinessCalendar("UTC", always_open=True, holidays=frozenset({date(2024, 12, 25)}))
    start = datetime(2024, 12, 24, 23, 0, tzinfo=UTC)
    assert add_business_time(calendar, start, 2 * HOURS) == datetime(2024, 12, 26, 1, 0, tzinfo=UTC)


# ---- inputs and results ----------------------------------------------------------------------


def test_results_are_utc_whatever_zone_the_input_uses() -> None:
    start = at("2024-01-09 10:00", "Asia/Kolkata")
    due = add_business_time(NINE_TO_FIVE, start, HOURS)
    assert due.tzinfo is UTC
    assert due == at("2024-01-09 10:00")
    assert next_open_time(NINE_TO_FIVE, start).tzinfo is UTC
    assert all(
        edge.tzinfo is UTC
        for window in open_windows(NINE_TO_FIVE, start, start + timedelta(days=2))
        for edge in window
    )


def test_zero_duration_is_due_at_the_start_even_when_closed() -> None:
    assert add_business_time(NINE_TO_FIVE, at("2024-01-06 10:00"), timedelta(0)) == at(
        "2024-01-06 10:00"
    )


def test_negative_duration_is_rejected() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        add_business_time(NINE_TO_FIVE, at("2024-01-08 10:00"), -HOURS)


def test_end_before_start_has_no_business_time_and_no_windows() -> None:
    assert business_time_between(NINE_TO_FIVE, at("2024-01-09 12:00"), at("2024-01-09 10:00")) == (
        timedelta(0)
    )
    assert list(open_windows(NINE_TO_FIVE, at("2024-01-09 12:00"), at("2024-01-09 10:00"))) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda moment: is_open(NINE_TO_FIVE, moment),
        lambda moment: next_open_time(NINE_TO_FIVE, moment),
        lambda moment: add_business_time(NINE_TO_FIVE, moment, HOURS),
        lambda moment: business_time_between(NINE_TO_FIVE, moment, at("2024-01-09 10:00")),
        lambda moment: business_time_between(NINE_TO_FIVE, at("2024-01-08 10:00"), moment),
        lambda moment: open_windows(NINE_TO_FIVE, moment, at("2024-01-09 10:00")),
        lambda moment: is_open(ALWAYS_OPEN, moment),
        lambda moment: add_business_time(ALWAYS_OPEN, moment, HOURS),
    ],
)
def test_naive_datetimes_are_rejected(call: object) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match="timezone-aware"):
        call(datetime(2024, 1, 8, 10, 0))


def test_arithmetic_on_an_invalid_calendar_names_the_problem() -> None:
    broken = BusinessCalendar("Mars/Base", weekly_hours=NINE_TO_FIVE.weekly_hours)
    with pytest.raises(ValueError, match=r"calendar\.time_zone: unknown time zone 'Mars/Base'"):
        add_business_time(broken, at("2024-01-08 10:00"), HOURS)


# ---- never open ------------------------------------------------------------------------------


def closed_by_holidays_for(weeks: int) -> BusinessCalendar:
    """Open Mondays only, with every Monday from 2024-01-01 on a holiday for ``weeks`` weeks."""
    first_monday = date(2024, 1, 1)
    return BusinessCalendar(
        "UTC",
        weekly_hours=(OpenInterval(0, 9 * 60, 17 * 60),),
        holidays=frozenset(first_monday + timedelta(weeks=week) for week in range(weeks)),
    )


def test_calendar_closed_beyond_the_horizon_is_never_open() -> None:
    calendar = closed_by_holidays_for(weeks=200)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(NeverOpen):
        next_open_time(calendar, start)
    with pytest.raises(NeverOpen):
        add_business_time(calendar, start, HOURS)
    assert not is_open(calendar, start)
    assert business_time_between(calendar, start, start + timedelta(days=30)) == timedelta(0)


def test_long_holiday_closure_within_the_horizon_still_finds_the_reopening() -> None:
    calendar = closed_by_holidays_for(weeks=100)
    reopening = datetime(2024, 1, 1, 9, tzinfo=UTC) + timedelta(weeks=100)
    assert next_open_time(calendar, datetime(2024, 1, 1, tzinfo=UTC)) == reopening


def test_target_beyond_the_horizon_is_never_reached() -> None:
    with pytest.raises(NeverOpen):
        add_business_time(ALWAYS_OPEN, at("2024-01-08 10:00"), SEARCH_HORIZON + HOURS)


# ---- validation ------------------------------------------------------------------------------


def test_a_sound_calendar_has_no_problems() -> None:
    assert calendar_problems(SPLIT_SHIFT) == []
    assert calendar_problems(NIGHT_SHIFT) == []
    assert calendar_problems(ALWAYS_OPEN) == []


def test_every_calendar_problem_is_reported_at_once_with_its_field_path() -> None:
    calendar = BusinessCalendar(
        time_zone="Mars/Base",
        weekly_hours=(
            OpenInterval(1, 9 * 60, 17 * 60),
            OpenInterval(1, 8 * 60, 10 * 60),
            OpenInterval(2, 17 * 60, 9 * 60),
            OpenInterval(1, 16 * 60, 18 * 60),
            OpenInterval(7, 0, 60),
            OpenInterval(3, 1440, 0),
            OpenInterval(4, 600, 600),
        ),
    )
    assert calendar_problems(calendar, "policy.calendar") == [
        FieldViolation("policy.calendar.time_zone", "unknown time zone 'Mars/Base'"),
        FieldViolation("policy.calendar.weekly_hours[1]", "overlaps weekly_hours[0] on Tuesday"),
        FieldViolation("policy.calendar.weekly_hours[2]", "end 09:00 is not after start 17:00"),
        FieldViolation("policy.calendar.weekly_hours[3]", "overlaps weekly_hours[0] on Tuesday"),
        FieldViolation(
            "policy.calendar.weekly_hours[4].weekday",
            "weekday 7 is not between 0 (Monday) and 6 (Sunday)",
        ),
        FieldViolation(
            "policy.calendar.weekly_hours[5].start_minute",
            "start 1440 is not between 0 (00:00) and 1439 (23:59)",
        ),
        FieldViolation(
            "policy.calendar.weekly_hours[5].end_minute",
            "end 0 is not between 1 (00:01) and 1440 (24:00)",
        ),
        FieldViolation("policy.calendar.weekly_hours[6]", "end 10:00 is not after start 10:00"),
    ]


def test_always_open_calendar_with_weekly_hours_is_refused() -> None:
    calendar = BusinessCalendar(always_open=True, weekly_hours=NINE_TO_FIVE.weekly_hours)
    assert calendar_problems(calendar) == [
        FieldViolation("calendar.weekly_hours", "an always-open calendar takes no weekly hours")
    ]


def test_calendar_without_any_open_time_is_refused() -> None:
    assert calendar_problems(BusinessCalendar(NEW_YORK)) == [
        FieldViolation(
            "calendar.weekly_hours",
            "a calendar that is not always open needs at least one open interval",
        )
    ]


def test_touching_intervals_and_the_same_hours_on_other_days_do_not_overlap() -> None:
    calendar = BusinessCalendar(
        weekly_hours=(
            OpenInterval(0, 9 * 60, 12 * 60),
            OpenInterval(0, 12 * 60, 17 * 60),
            OpenInterval(0, 8 * 60, 9 * 60),
            OpenInterval(1, 9 * 60, 12 * 60),
        )
    )
    assert calendar_problems(calendar) == []


@pytest.mark.parametrize("zone", ["", "America", "../etc/passwd", "/etc/localtime", "utc "])
def test_malformed_time_zone_names_are_unknown(zone: str) -> None:
    [problem] = calendar_problems(BusinessCalendar(zone, always_open=True))
    assert problem == FieldViolation("calendar.time_zone", f"unknown time zone {zone!r}")


# ---- clock times and days --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "minute"), [("00:00", 0), ("09:30", 570), ("23:59", 1439), ("24:00", 1440)]
)
def test_clock_times_read_and_print_back(text: str, minute: int) -> None:
    assert parse_clock_time(text) == minute
    assert format_clock_time(minute) == text


@pytest.mark.parametrize(
    "text", ["9:30", "09:3", "09:60", "24:01", "25:00", "0930", " 09:30", "09:30 ", "٠٩:٣٠", ""]
)
def test_sloppy_clock_times_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a clock time HH:MM"):
        parse_clock_time(text)


@pytest.mark.parametrize("minute", [-1, 1441])
def test_minutes_outside_the_day_cannot_be_printed(minute: int) -> None:
    with pytest.raises(ValueError):
        format_clock_time(minute)


def test_days_are_read_from_strict_iso_dates() -> None:
    assert parse_day("2024-02-29") == date(2024, 2, 29)


@pytest.mark.parametrize(
    "text", ["2023-02-29", "2024-2-29", "20240229", "2024-W09-4", "2024-02-29T00:00", ""]
)
def test_other_date_forms_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a date YYYY-MM-DD"):
        parse_day(text)


# ---- properties ------------------------------------------------------------------------------

# Zones with DST in both hemispheres, a half-hour DST shift (Lord Howe), a gap right after
# midnight (Santiago) and one right before it (Nuuk), so local dates do not always last 24 hours.
ZONES = [
    "UTC",
    NEW_YORK,
    BERLIN,
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/Nuuk",
    "Asia/Kolkata",
]


@st.composite
def calendars(draw: st.DrawFn) -> BusinessCalendar:
    """Random weekly hours drawn as stretches of one week, split at each local midnight, so
    stretches sometimes touch and night shifts run over midnight."""
    zone = draw(st.sampled_from(ZONES))
    holidays = frozenset(draw(st.lists(st.dates(date(2023, 12, 1), date(2027, 3, 1)), max_size=8)))
    if draw(st.integers(0, 3)) == 0:
        return BusinessCalendar(zone, always_open=True, holidays=holidays)
    edges = sorted(draw(st.lists(st.integers(0, 7 * 1440), min_size=2, max_size=14)))
    hours: list[OpenInterval] = []
    for start, end in zip(edges[::2], edges[1::2], strict=False):
        for weekday in range(start // 1440, 7):
            day_start, day_end = max(start - weekday * 1440, 0), min(end - weekday * 1440, 1440)
            if day_start < day_end:
                hours.append(OpenInterval(weekday, day_start, day_end))
    if not hours:
        hours.append(OpenInterval(draw(st.integers(0, 6)), 9 * 60, 17 * 60))
    return BusinessCalendar(zone, weekly_hours=tuple(hours), holidays=holidays)


moments = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
)
spans = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10))


@given(calendars(), moments, st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=80)))
def test_business_time_up_to_the_due_time_is_exactly_the_target(
    calendar: BusinessCalendar, start: datetime, target: timedelta
) -> None:
    try:
        due = add_business_time(calendar, start, target)
    except NeverOpen:
        # Only a calendar with too little open time ahead may give up.
        assert business_time_between(calendar, start, start + SEARCH_HORIZON) < target
        return
    assert due >= start
    assert business_time_between(calendar, start, due) == target
    if target:
        # Due no later than needed: the last instant before it is still counted.
        assert business_time_between(calendar, start, due - timedelta(microseconds=1)) < target


@given(calendars(), moments, spans, spans)
def test_business_time_adds_up_over_a_split_point(
    calendar: BusinessCalendar, start: datetime, first: timedelta, second: timedelta
) -> None:
    middle, end = start + first, start + first + second
    assert business_time_between(calendar, start, middle) + business_time_between(
        calendar, middle, end
    ) == business_time_between(calendar, start, end)


@given(calendars(), moments, spans)
def test_open_windows_are_ordered_separate_and_sum_to_business_time(
    calendar: BusinessCalendar, start: datetime, length: timedelta
) -> None:
    end = start + length
    windows = list(open_windows(calendar, start, end))
    assert all(start <= opened < closed <= end for opened, closed in windows)
    assert all(earlier[1] < later[0] for earlier, later in pairwise(windows))
    total = sum((closed - opened for opened, closed in windows), timedelta(0))
    assert total == business_time_between(calendar, start, end)
    assert all(is_open(calendar, opened) for opened, _ in windows)
    assert all(not is_open(calendar, closed) for _, closed in windows if closed < end)


@given(calendars(), moments)
def test_next_open_time_is_open_and_nothing_before_it_is(
    calendar: BusinessCalendar, moment: datetime
) -> None:
    opening = next_open_time(calendar, moment)
    assert is_open(calendar, opening)
    assert business_time_between(calendar, moment, opening) == timedelta(0)


@given(calendars(), moments)
def test_open_means_the_next_microsecond_counts_as_business_time(
    calendar: BusinessCalendar, moment: datetime
) -> None:
    tick = timedelta(microseconds=1)
    assert is_open(calendar, moment) == (
        business_time_between(calendar, moment, moment + tick) == tick
    )
