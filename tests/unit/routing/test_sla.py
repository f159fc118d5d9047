"""SLA clocks as a support lead reads them: what is due when, and what is late."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.routing.business_hours import BusinessCalendar, OpenInterval
from services.routing.lifecycle import (
    ConversationEvent,
    ConversationState,
    EventKind,
    InvalidTransition,
)
from services.routing.sla import (
    ClockReport,
    Metric,
    PolicyPeriod,
    SlaPolicy,
    SlaStatus,
    Target,
    first_response_due,
    resolution_due,
    sla_report,
)

MONDAY_9 = datetime(2025, 6, 2, 9, tzinfo=UTC)
FRIDAY_18 = datetime(2025, 6, 6, 18, tzinfo=UTC)
NEXT_MONDAY_9 = datetime(2025, 6, 9, 9, tzinfo=UTC)
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)
# Weekdays 09:00-17:00 UTC.
OFFICE_HOURS = BusinessCalendar(
    weekly_hours=tuple(OpenInterval(weekday, 9 * 60, 17 * 60) for weekday in range(5))
)
MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)


def at(minutes: float = 0, hours: float = 0) -> datetime:
    return MONDAY_9 + timedelta(minutes=minutes, hours=hours)


def event(kind: EventKind, time: datetime, *, agent_id: str = "") -> ConversationEvent:
    return ConversationEvent(kind, time, agent_id=agent_id)


def routed(time: datetime, *, to_bot: bool = False) -> ConversationEvent:
    return ConversationEvent(EventKind.ROUTED, time, to_bot=to_bot)


def wall(duration: timedelta) -> Target:
    return Target(duration, business_hours=False)


def throughout(policy: SlaPolicy | None) -> list[PolicyPeriod]:
    return [PolicyPeriod(LONG_AGO, policy)]


def clock(
    metric: Metric,
    events: list[ConversationEvent],
    now: datetime,
    policies: list[PolicyPeriod],
) -> ClockReport:
    (report,) = [report for report in sla_report(events, policies, now) if report.metric is metric]
    return report


def metrics(
    events: list[ConversationEvent], policies: list[PolicyPeriod], now: datetime
) -> set[Metric]:
    return {report.metric for report in sla_report(events, policies, now)}


ONE_HOUR_FIRST_RESPONSE = throughout(SlaPolicy(first_response=wall(HOUR)))
EIGHT_HOUR_RESOLUTION = throughout(SlaPolicy(resolution=wall(8 * HOUR)))
ALL_METRICS = SlaPolicy(
    first_response=wall(HOUR), next_response=wall(30 * MINUTE), resolution=wall(8 * HOUR)
)


# ---- first response ---------------------------------------------------------------------------


def test_a_bot_reply_does_not_count_as_the_first_response() -> None:
    history = [routed(at()), event(EventKind.BOT_REPLY, at(5))]
    report = clock(Metric.FIRST_RESPONSE, history, at(30), ONE_HOUR_FIRST_RESPONSE)
    assert (report.status, report.running, report.elapsed) == (
        SlaStatus.ON_TRACK,
        True,
        30 * MINUTE,
    )
    assert report.due_time == at(60)
    assert report.stop_time is None


def test_the_first_agent_reply_meets_the_first_response_target() -> None:
    history = [
        routed(at()),
        event(EventKind.BOT_REPLY, at(5)),
        event(EventKind.AGENT_REPLY, at(40), agent_id="ana"),
    ]
    report = clock(Metric.FIRST_RESPONSE, history, at(hours=5), ONE_HOUR_FIRST_RESPONSE)
    assert (report.status, report.running) == (SlaStatus.MET, False)
    assert (report.elapsed, report.stop_time, report.due_time) == (40 * MINUTE, at(40), None)


def test_a_late_first_reply_is_breached_and_shows_when_it_fell_due() -> None:
    history = [routed(at()), event(EventKind.AGENT_REPLY, at(90))]
    report = clock(Metric.FIRST_RESPONSE, history, at(hours=5), ONE_HOUR_FIRST_RESPONSE)
    assert (report.status, report.due_time, report.stop_time) == (
        SlaStatus.BREACHED,
        at(60),
        at(90),
    )


def test_resolving_without_a_reply_fulfils_the_first_response() -> None:
    history = [routed(at()), event(EventKind.RESOLVED, at(20))]
    report = clock(Metric.FIRST_RESPONSE, history, at(hours=2), ONE_HOUR_FIRST_RESPONSE)
    assert (report.status, report.stop_time) == (SlaStatus.MET, at(20))


def test_a_bot_first_conversation_has_no_clock_until_it_is_escalated() -> None:
    policies = throughout(ALL_METRICS)
    history = [routed(at(), to_bot=True), event(EventKind.BOT_REPLY, at(1))]
    assert sla_report(history, policies, at(30)) == []

    escalated = [*history, event(EventKind.ESCALATED, at(40))]
    first_response = clock(Metric.FIRST_RESPONSE, escalated, at(60), policies)
    resolution = clock(Metric.RESOLUTION, escalated, at(60), policies)
    assert first_response.elapsed == resolution.elapsed == 20 * MINUTE
    assert first_response.due_time == at(100)


def test_an_agent_taking_over_from_the_bot_answers_at_once() -> None:
    policies = throughout(ALL_METRICS)
    history = [routed(at(), to_bot=True), event(EventKind.AGENT_REPLY, at(40), agent_id="ben")]
    first_response = clock(Metric.FIRST_RESPONSE, history, at(60), policies)
    assert (first_response.status, first_response.elapsed) == (SlaStatus.MET, timedelta(0))
    assert clock(Metric.RESOLUTION, history, at(60), policies).elapsed == 20 * MINUTE


def test_a_conversation_the_bot_resolves_alone_never_starts_a_clock() -> None:
    history = [routed(at(), to_bot=True), event(EventKind.RESOLVED, at(10))]
    assert sla_report(history, throughout(ALL_METRICS), at(60)) == []


# ---- status and thresholds --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minutes", "status"),
    [
        (44, SlaStatus.ON_TRACK),
        (45, SlaStatus.WARNING),
        (59, SlaStatus.WARNING),
        (60, SlaStatus.BREACHED),
        (61, SlaStatus.BREACHED),
    ],
)
def test_an_unanswered_conversation_warns_at_three_quarters_and_breaches_at_the_due_time(
    minutes: int, status: SlaStatus
) -> None:
    report = clock(Metric.FIRST_RESPONSE, [routed(at())], at(minutes), ONE_HOUR_FIRST_RESPONSE)
    assert report.status is status
    assert (report.warning_time, report.due_time) == (at(45), at(60))


def test_the_warning_fraction_comes_from_the_policy() -> None:
    policies = throughout(SlaPolicy(first_response=wall(HOUR), warning_fraction=0.5))
    report = clock(Metric.FIRST_RESPONSE, [routed(at())], at(31), policies)
    assert (report.status, report.warning_time) == (SlaStatus.WARNING, at(30))


def test_a_reply_exactly_at_the_due_time_is_met() -> None:
    history = [routed(at()), event(EventKind.AGENT_REPLY, at(60))]
    report = clock(Metric.FIRST_RESPONSE, history, at(90), ONE_HOUR_FIRST_RESPONSE)
    assert report.status is SlaStatus.MET


def test_a_business_hours_clock_due_at_closing_shows_breached_all_weekend() -> None:
    policies = throughout(SlaPolicy(first_response=Target(2 * HOUR), calendar=OFFICE_HOURS))
    friday_15 = FRIDAY_18 - 3 * HOUR
    report = clock(Metric.FIRST_RESPONSE, [routed(friday_15)], FRIDAY_18 + 24 * HOUR, policies)
    assert (report.status, report.due_time) == (SlaStatus.BREACHED, FRIDAY_18 - HOUR)


# ---- business hours ---------------------------------------------------------------------------


def test_a_business_hours_target_routed_on_friday_evening_is_due_monday() -> None:
    policy = SlaPolicy(
        first_response=Target(2 * HOUR), resolution=Target(8 * HOUR), calendar=OFFICE_HOURS
    )
    assert first_response_due(policy, FRIDAY_18, to_bot=False) == NEXT_MONDAY_9 + 2 * HOUR
    assert resolution_due(policy, FRIDAY_18, to_bot=False) == NEXT_MONDAY_9 + 8 * HOUR
    saturday = FRIDAY_18 + 18 * HOUR
    report = clock(Metric.FIRST_RESPONSE, [routed(FRIDAY_18)], saturday, throughout(policy))
    assert (report.status, report.elapsed) == (SlaStatus.ON_TRACK, timedelta(0))
    assert report.due_time == NEXT_MONDAY_9 + 2 * HOUR


def test_a_wall_clock_target_ignores_the_calendar() -> None:
    policy = SlaPolicy(first_response=wall(2 * HOUR), calendar=OFFICE_HOURS)
    assert first_response_due(policy, FRIDAY_18, to_bot=False) == FRIDAY_18 + 2 * HOUR


def test_nothing_is_due_at_routing_for_a_bot_conversation_or_a_missing_target() -> None:
    assert first_response_due(ALL_METRICS, MONDAY_9, to_bot=True) is None
    assert resolution_due(SlaPolicy(first_response=wall(HOUR)), MONDAY_9, to_bot=False) is None


# ---- pauses -----------------------------------------------------------------------------------


def test_waiting_on_the_customer_pauses_and_shifts_the_due_time_by_the_pause() -> None:
    held = [routed(at()), event(EventKind.ASSIGNED, at(5), agent_id="ana")]
    waiting = [*held, event(EventKind.WAITING_ON_CUSTOMER, at(10))]
    answered = [*waiting, event(EventKind.CUSTOMER_REPLY, at(50))]

    unpaused = clock(Metric.RESOLUTION, held, at(60), EIGHT_HOUR_RESOLUTION)
    paused = clock(Metric.RESOLUTION, waiting, at(30), EIGHT_HOUR_RESOLUTION)
    resumed = clock(Metric.RESOLUTION, answered, at(60), EIGHT_HOUR_RESOLUTION)

    assert (paused.paused, paused.running, paused.elapsed) == (True, True, 10 * MINUTE)
    assert paused.due_time is None
    assert unpaused.due_time is not None
    assert resumed.due_time == unpaused.due_time + 40 * MINUTE
    assert resumed.elapsed == unpaused.elapsed - 40 * MINUTE


def test_a_pause_over_a_closed_night_gives_back_only_the_open_hours_it_covered() -> None:
    policies = throughout(SlaPolicy(resolution=Target(4 * HOUR), calendar=OFFICE_HOURS))
    monday_15 = at(hours=6)
    tuesday_10 = at(hours=25)
    history = [
        routed(monday_15),
        event(EventKind.ASSIGNED, monday_15, agent_id="ana"),
        event(EventKind.WAITING_ON_CUSTOMER, monday_15 + HOUR),
        event(EventKind.CUSTOMER_REPLY, tuesday_10),
    ]
    without_pause = clock(Metric.RESOLUTION, history[:2], tuesday_10, policies)
    with_pause = clock(Metric.RESOLUTION, history, tuesday_10, policies)
    assert without_pause.due_time == at(hours=26)
    # 16:00-17:00 Monday and 09:00-10:00 Tuesday were open while paused: due 2 hours later.
    assert (with_pause.elapsed, with_pause.due_time) == (HOUR, at(hours=28))


def test_a_clock_that_breached_before_pausing_still_shows_when_it_fell_due() -> None:
    history = [
        routed(at()),
        event(EventKind.WAITING_ON_CUSTOMER, at(90)),
    ]
    report = clock(Metric.FIRST_RESPONSE, history, at(120), ONE_HOUR_FIRST_RESPONSE)
    assert (report.status, report.paused, report.due_time) == (SlaStatus.BREACHED, True, at(60))


def test_the_policy_decides_which_states_pause_its_clocks() -> None:
    policies = throughout(SlaPolicy(first_response=wall(HOUR), pause_states=frozenset()))
    history = [routed(at()), event(EventKind.WAITING_ON_CUSTOMER, at(10))]
    report = clock(Metric.FIRST_RESPONSE, history, at(30), policies)
    assert (report.paused, report.elapsed, report.due_time) == (False, 30 * MINUTE, at(60))


@settings(max_examples=100, deadline=None)
@given(
    pause_start=st.integers(0, 300),
    pause_length=st.integers(0, 600),
    read_after=st.integers(0, 120),
)
def test_any_pause_moves_the_resolution_due_time_by_exactly_its_length(
    pause_start: int, pause_length: int, read_after: int
) -> None:
    pause_end = pause_start + pause_length
    history = [
        routed(at()),
        event(EventKind.ASSIGNED, at(), agent_id="ana"),
        event(EventKind.WAITING_ON_CUSTOMER, at(pause_start)),
        event(EventKind.CUSTOMER_REPLY, at(pause_end)),
    ]
    report = clock(Metric.RESOLUTION, history, at(pause_end + read_after), EIGHT_HOUR_RESOLUTION)
    assert report.due_time == at(pause_length, hours=8)


# ---- policy changes ---------------------------------------------------------------------------


def switched_after_an_hour(new_target: timedelta) -> ClockReport:
    """A conversation that spent its first hour under a 4-hour resolution policy."""
    policies = [
        PolicyPeriod(LONG_AGO, SlaPolicy(resolution=wall(4 * HOUR))),
        PolicyPeriod(at(60), SlaPolicy(resolution=wall(new_target))),
    ]
    return clock(Metric.RESOLUTION, [routed(at())], at(65), policies)


def test_a_tighter_policy_applied_after_an_hour_breaches_at_once() -> None:
    report = switched_after_an_hour(30 * MINUTE)
    assert (report.status, report.target, report.elapsed) == (
        SlaStatus.BREACHED,
        30 * MINUTE,
        65 * MINUTE,
    )
    assert report.due_time == at(30)


def test_a_two_hour_policy_applied_after_an_hour_leaves_an_hour() -> None:
    report = switched_after_an_hour(2 * HOUR)
    assert (report.status, report.elapsed) == (SlaStatus.ON_TRACK, 65 * MINUTE)
    assert report.due_time == at(120)


def test_time_spent_is_measured_by_the_calendar_of_the_policy_in_effect_then() -> None:
    # Friday 16:00-18:00 under office hours counts 1 hour; the weekend under a 24/7 policy all.
    friday_16 = FRIDAY_18 - 2 * HOUR
    policies = [
        PolicyPeriod(LONG_AGO, SlaPolicy(resolution=Target(4 * HOUR), calendar=OFFICE_HOURS)),
        PolicyPeriod(FRIDAY_18, SlaPolicy(resolution=wall(8 * HOUR))),
    ]
    report = clock(Metric.RESOLUTION, [routed(friday_16)], FRIDAY_18 + 2 * HOUR, policies)
    assert report.elapsed == 3 * HOUR
    assert report.due_time == FRIDAY_18 + 7 * HOUR


def test_time_with_no_policy_does_not_count_when_a_policy_arrives() -> None:
    policies = [PolicyPeriod(LONG_AGO, None), PolicyPeriod(at(180), ALL_METRICS)]
    history = [routed(at())]
    assert sla_report(history, policies, at(120)) == []
    report = clock(Metric.FIRST_RESPONSE, history, at(200), policies)
    assert (report.elapsed, report.due_time) == (20 * MINUTE, at(240))


def test_only_metrics_with_a_target_are_reported() -> None:
    history = [routed(at())]
    assert metrics(history, ONE_HOUR_FIRST_RESPONSE, at(10)) == {Metric.FIRST_RESPONSE}
    assert metrics(history, [], at(10)) == set()


def test_a_met_first_response_stays_met_when_the_policy_is_tightened_later() -> None:
    policies = [
        PolicyPeriod(LONG_AGO, SlaPolicy(first_response=wall(HOUR))),
        PolicyPeriod(at(60), SlaPolicy(first_response=wall(10 * MINUTE))),
    ]
    history = [routed(at()), event(EventKind.AGENT_REPLY, at(30))]
    report = clock(Metric.FIRST_RESPONSE, history, at(90), policies)
    assert (report.status, report.target) == (SlaStatus.MET, HOUR)


def test_policy_periods_may_arrive_in_any_order() -> None:
    policies = [
        PolicyPeriod(at(60), SlaPolicy(resolution=wall(2 * HOUR))),
        PolicyPeriod(LONG_AGO, SlaPolicy(resolution=wall(4 * HOUR))),
    ]
    assert clock(Metric.RESOLUTION, [routed(at())], at(65), policies).target == 2 * HOUR


# ---- next response ----------------------------------------------------------------------------


def conversation_with_replies(*moments: tuple[EventKind, float]) -> list[ConversationEvent]:
    return [routed(at()), *(event(kind, at(minute), agent_id="ana") for kind, minute in moments)]


def test_a_customer_reply_before_any_human_reply_owes_no_next_response() -> None:
    history = conversation_with_replies((EventKind.CUSTOMER_REPLY, 5))
    assert Metric.NEXT_RESPONSE not in metrics(history, throughout(ALL_METRICS), at(50))


def test_a_customer_reply_after_an_agent_reply_starts_a_next_response_cycle() -> None:
    history = conversation_with_replies((EventKind.AGENT_REPLY, 5), (EventKind.CUSTOMER_REPLY, 10))
    report = clock(Metric.NEXT_RESPONSE, history, at(20), throughout(ALL_METRICS))
    assert (report.status, report.elapsed, report.due_time) == (
        SlaStatus.ON_TRACK,
        10 * MINUTE,
        at(40),
    )


def test_more_customer_messages_do_not_restart_a_running_cycle() -> None:
    history = conversation_with_replies(
        (EventKind.AGENT_REPLY, 5), (EventKind.CUSTOMER_REPLY, 10), (EventKind.CUSTOMER_REPLY, 30)
    )
    report = clock(Metric.NEXT_RESPONSE, history, at(45), throughout(ALL_METRICS))
    assert (report.status, report.due_time) == (SlaStatus.BREACHED, at(40))


def test_the_agent_reply_ends_the_cycle_and_the_latest_cycle_is_reported() -> None:
    history = conversation_with_replies(
        (EventKind.AGENT_REPLY, 5),
        (EventKind.CUSTOMER_REPLY, 10),
        (EventKind.AGENT_REPLY, 20),
        (EventKind.CUSTOMER_REPLY, 60),
    )
    finished = clock(Metric.NEXT_RESPONSE, history[:4], at(30), throughout(ALL_METRICS))
    assert (finished.status, finished.elapsed, finished.stop_time) == (
        SlaStatus.MET,
        10 * MINUTE,
        at(20),
    )
    latest = clock(Metric.NEXT_RESPONSE, history, at(70), throughout(ALL_METRICS))
    assert (latest.running, latest.elapsed, latest.earlier_breaches) == (True, 10 * MINUTE, 0)


def test_an_earlier_breached_cycle_stays_visible_while_the_current_one_is_on_track() -> None:
    history = conversation_with_replies(
        (EventKind.AGENT_REPLY, 5),
        (EventKind.CUSTOMER_REPLY, 10),
        (EventKind.AGENT_REPLY, 50),
        (EventKind.CUSTOMER_REPLY, 60),
    )
    report = clock(Metric.NEXT_RESPONSE, history, at(70), throughout(ALL_METRICS))
    assert (report.status, report.earlier_breaches) == (SlaStatus.ON_TRACK, 1)


def test_resolving_ends_a_next_response_cycle() -> None:
    history = conversation_with_replies(
        (EventKind.AGENT_REPLY, 5), (EventKind.CUSTOMER_REPLY, 10), (EventKind.RESOLVED, 25)
    )
    report = clock(Metric.NEXT_RESPONSE, history, at(90), throughout(ALL_METRICS))
    assert (report.status, report.stop_time) == (SlaStatus.MET, at(25))


def test_a_customer_writing_back_after_resolution_is_owed_a_next_response() -> None:
    history = conversation_with_replies(
        (EventKind.AGENT_REPLY, 5), (EventKind.RESOLVED, 10), (EventKind.CUSTOMER_REPLY, 100)
    )
    report = clock(Metric.NEXT_RESPONSE, history, at(110), throughout(ALL_METRICS))
    assert (report.running, report.elapsed) == (True, 10 * MINUTE)


# ---- resolution -------------------------------------------------------------------------------


@pytest.mark.parametrize("reopening", [EventKind.REOPENED, EventKind.CUSTOMER_REPLY])
def test_reopening_resumes_the_resolution_clock_with_the_time_already_spent(
    reopening: EventKind,
) -> None:
    history = [routed(at()), event(EventKind.RESOLVED, at(60)), event(reopening, at(180))]
    resolved = clock(Metric.RESOLUTION, history[:2], at(120), EIGHT_HOUR_RESOLUTION)
    assert (resolved.status, resolved.running, resolved.stop_time) == (SlaStatus.MET, False, at(60))
    reopened = clock(Metric.RESOLUTION, history, at(210), EIGHT_HOUR_RESOLUTION)
    assert (reopened.running, reopened.elapsed, reopened.stop_time) == (True, 90 * MINUTE, None)
    assert reopened.due_time == at(180 + 7 * 60)


def test_reopening_does_not_restart_the_first_response_clock() -> None:
    history = [
        routed(at()),
        event(EventKind.AGENT_REPLY, at(10)),
        event(EventKind.RESOLVED, at(60)),
        event(EventKind.REOPENED, at(180)),
    ]
    report = clock(Metric.FIRST_RESPONSE, history, at(400), throughout(ALL_METRICS))
    assert (report.status, report.stop_time) == (SlaStatus.MET, at(10))


# ---- the history itself -----------------------------------------------------------------------


def test_events_out_of_order_are_rejected() -> None:
    history = [routed(at(10)), event(EventKind.AGENT_REPLY, at(5))]
    with pytest.raises(InvalidTransition, match="must not go back in time"):
        sla_report(history, ONE_HOUR_FIRST_RESPONSE, at(60))


def test_an_impossible_history_is_rejected() -> None:
    history = [routed(at()), event(EventKind.REOPENED, at(5))]
    with pytest.raises(InvalidTransition, match="only a resolved conversation can be"):
        sla_report(history, ONE_HOUR_FIRST_RESPONSE, at(60))


def test_a_report_for_a_past_moment_ignores_what_happened_after_it() -> None:
    history = [routed(at()), event(EventKind.AGENT_REPLY, at(50))]
    report = clock(Metric.FIRST_RESPONSE, history, at(20), ONE_HOUR_FIRST_RESPONSE)
    assert (report.running, report.elapsed) == (True, 20 * MINUTE)
    assert sla_report(history, ONE_HOUR_FIRST_RESPONSE, at(-1)) == []


def test_clocks_are_reported_in_metric_order() -> None:
    history = conversation_with_replies((EventKind.AGENT_REPLY, 5), (EventKind.CUSTOMER_REPLY, 10))
    reports = sla_report(history, throughout(ALL_METRICS), at(20))
    assert [report.metric for report in reports] == list(Metric)


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_a_warning_fraction_outside_zero_to_one_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="warning fraction"):
        SlaPolicy(warning_fraction=fraction)


def test_a_target_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Target(timedelta(0))


def test_waiting_states_are_the_default_pause() -> None:
    assert SlaPolicy().pause_states == {ConversationState.WAITING_ON_CUSTOMER}
