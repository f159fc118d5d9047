"""What the SLA watch records and when it looks again, decided from the clocks alone."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from services.routing import documents
from services.routing.business_hours import BusinessCalendar, OpenInterval
from services.routing.domain import SlaEscalation, SlaTarget
from services.routing.domain import SlaPolicy as DomainPolicy
from services.routing.lifecycle import (
    ConversationEvent,
    ConversationState,
    EventKind,
    Situation,
    advance,
)
from services.routing.logic import policy_problems
from services.routing.sla import (
    Metric,
    PolicyPeriod,
    SlaPolicy,
    Target,
    Threshold,
    WatchPlan,
    sla_report,
    watch_plan,
)

MONDAY_9 = datetime(2025, 6, 2, 9, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
# Weekdays 09:00-17:00 UTC.
OFFICE_HOURS = BusinessCalendar(
    weekly_hours=tuple(OpenInterval(weekday, 9 * 60, 17 * 60) for weekday in range(5))
)
FIRST_RESPONSE_30M = SlaPolicy(
    first_response=Target(30 * MINUTE, business_hours=False), warning_fraction=0.75
)
NEXT_RESPONSE_10M = SlaPolicy(
    first_response=Target(30 * MINUTE, business_hours=False),
    next_response=Target(10 * MINUTE, business_hours=False),
    warning_fraction=0.5,
)

Key = tuple[Metric, Threshold, int]


def at(minutes: float) -> datetime:
    return MONDAY_9 + timedelta(minutes=minutes)


def routed(time: datetime) -> ConversationEvent:
    return ConversationEvent(EventKind.ROUTED, time)


def plan(
    events: list[ConversationEvent],
    policy: SlaPolicy,
    now: datetime,
    recorded: Collection[Key] = (),
) -> WatchPlan:
    reports = sla_report(events, [PolicyPeriod(events[0].time, policy)], now)
    return watch_plan(reports, recorded, now)


def due(found: WatchPlan) -> list[tuple[Key, datetime]]:
    return [(alert.key, alert.time) for alert in found.due]


FR_WARNING = (Metric.FIRST_RESPONSE, Threshold.WARNING, 0)
FR_BREACH = (Metric.FIRST_RESPONSE, Threshold.BREACH, 0)


def test_nothing_is_due_before_the_warning_and_the_watch_comes_back_at_the_warning() -> None:
    found = plan([routed(at(0))], FIRST_RESPONSE_30M, at(20))

    assert found.due == ()
    assert found.next_check == at(22.5)


def test_the_warning_is_due_at_the_moment_it_was_reached_then_the_breach_is_next() -> None:
    found = plan([routed(at(0))], FIRST_RESPONSE_30M, at(23))

    assert due(found) == [(FR_WARNING, at(22.5))]
    # Until the warning is recorded, the watch must come back for it as well.
    assert found.next_check == at(30)


def test_a_recorded_warning_is_not_due_again_and_a_breach_follows_at_the_due_time() -> None:
    assert plan([routed(at(0))], FIRST_RESPONSE_30M, at(25), [FR_WARNING]).due == ()

    found = plan([routed(at(0))], FIRST_RESPONSE_30M, at(31), [FR_WARNING])
    assert due(found) == [(FR_BREACH, at(30))]
    assert found.next_check is None, "nothing is left ahead of this clock"


def test_a_watch_that_was_down_records_both_thresholds_in_the_order_they_happened() -> None:
    found = plan([routed(at(0))], FIRST_RESPONSE_30M, at(90))

    assert due(found) == [(FR_WARNING, at(22.5)), (FR_BREACH, at(30))]
    assert all(alert.report.running for alert in found.due)


def test_everything_recorded_leaves_nothing_due_and_nothing_to_check() -> None:
    found = plan([routed(at(0))], FIRST_RESPONSE_30M, at(90), [FR_WARNING, FR_BREACH])

    assert found == WatchPlan((), None)


def test_a_clock_paused_while_waiting_on_the_customer_is_not_flagged_nor_scheduled() -> None:
    events = [routed(at(0)), ConversationEvent(EventKind.WAITING_ON_CUSTOMER, at(10))]

    found = plan(events, FIRST_RESPONSE_30M, at(120))

    assert found.due == ()
    assert found.next_check is None, "the customer's reply will make the watch look again"


def test_a_warning_reached_before_the_pause_is_still_recorded() -> None:
    events = [routed(at(0)), ConversationEvent(EventKind.WAITING_ON_CUSTOMER, at(25))]

    found = plan(events, FIRST_RESPONSE_30M, at(120))

    assert due(found) == [(FR_WARNING, at(22.5))]
    assert found.next_check is None


def test_a_reply_after_the_breach_that_the_watch_missed_still_records_the_breach() -> None:
    events = [routed(at(0)), ConversationEvent(EventKind.AGENT_REPLY, at(31), agent_id="ana")]

    found = plan(events, FIRST_RESPONSE_30M, at(32), [FR_WARNING])

    assert due(found) == [(FR_BREACH, at(30))]
    assert not found.due[0].report.running, "the clock stopped: no escalation is owed"


def test_a_reply_exactly_at_the_target_met_it() -> None:
    events = [routed(at(0)), ConversationEvent(EventKind.AGENT_REPLY, at(30), agent_id="ana")]

    assert plan(events, FIRST_RESPONSE_30M, at(40), [FR_WARNING]).due == ()


def test_business_hours_are_not_flagged_over_the_weekend() -> None:
    friday_16_50 = datetime(2025, 6, 6, 16, 50, tzinfo=UTC)
    saturday_noon = datetime(2025, 6, 7, 12, tzinfo=UTC)
    policy = SlaPolicy(first_response=Target(30 * MINUTE), calendar=OFFICE_HOURS)

    found = plan([routed(friday_16_50)], policy, saturday_noon)

    assert found.due == ()
    # 10 minutes counted on Friday; 12.5 more on Monday reach the 75% warning.
    assert found.next_check == datetime(2025, 6, 9, 9, 12, 30, tzinfo=UTC)


def test_business_hours_are_flagged_at_the_business_moment_they_are_reached() -> None:
    friday_16_50 = datetime(2025, 6, 6, 16, 50, tzinfo=UTC)
    monday_10 = datetime(2025, 6, 9, 10, tzinfo=UTC)
    policy = SlaPolicy(first_response=Target(30 * MINUTE), calendar=OFFICE_HOURS)

    found = plan([routed(friday_16_50)], policy, monday_10)

    assert due(found) == [
        (FR_WARNING, datetime(2025, 6, 9, 9, 12, 30, tzinfo=UTC)),
        (FR_BREACH, datetime(2025, 6, 9, 9, 20, tzinfo=UTC)),
    ]


def test_each_next_response_cycle_is_flagged_on_its_own() -> None:
    replied = ConversationEvent(EventKind.AGENT_REPLY, at(5), agent_id="ana")
    first_cycle = [routed(at(0)), replied, ConversationEvent(EventKind.CUSTOMER_REPLY, at(10))]

    found = plan(first_cycle, NEXT_RESPONSE_10M, at(21))
    assert [alert.key for alert in found.due] == [
        (Metric.NEXT_RESPONSE, Threshold.WARNING, 1),
        (Metric.NEXT_RESPONSE, Threshold.BREACH, 1),
    ]
    assert [alert.time for alert in found.due] == [at(15), at(20)]

    second_cycle = [
        *first_cycle,
        ConversationEvent(EventKind.AGENT_REPLY, at(22), agent_id="ana"),
        ConversationEvent(EventKind.CUSTOMER_REPLY, at(30)),
    ]
    recorded = [key for key, _ in due(found)]
    found = plan(second_cycle, NEXT_RESPONSE_10M, at(36), recorded)
    assert due(found) == [((Metric.NEXT_RESPONSE, Threshold.WARNING, 2), at(35))]
    assert found.next_check == at(40)


def test_sla_events_in_the_history_change_no_clock() -> None:
    flagged = ConversationEvent(
        EventKind.SLA_WARNING, at(22.5), sla_metric=Metric.FIRST_RESPONSE.value
    )
    waiting = ConversationEvent(EventKind.WAITING_ON_CUSTOMER, at(22.5))

    with_flag = plan([routed(at(0)), flagged, waiting], FIRST_RESPONSE_30M, at(40), [FR_WARNING])
    without = plan([routed(at(0)), waiting], FIRST_RESPONSE_30M, at(40), [FR_WARNING])

    assert with_flag == without
    assert with_flag.due == () and with_flag.next_check is None


def test_an_sla_event_is_allowed_in_any_state() -> None:
    for state in ConversationState:
        situation = Situation(state, "ana" if state is ConversationState.ASSIGNED else "", at(1))
        flagged = ConversationEvent(EventKind.SLA_BREACHED, at(1))
        assert advance(situation, flagged) == situation


# ---- escalations in policies -----------------------------------------------------------------


def test_a_policy_stored_before_escalations_existed_reads_without_them() -> None:
    escalating = DomainPolicy(
        "first_30m",
        first_response=SlaTarget(30 * MINUTE),
        on_breach=SlaEscalation(move_to_overflow=True, notify_endpoint_id="cs_alerts"),
    )
    stored = documents.policy_document(escalating)
    assert documents.policy_from("first_30m", stored) == escalating

    older = {key: value for key, value in stored.items() if not key.startswith("on_")}
    assert documents.policy_from("first_30m", older) == replace(escalating, on_breach=None)


def test_an_escalation_moves_to_the_overflow_or_to_a_named_queue_not_both() -> None:
    both = SlaEscalation(move_to_overflow=True, move_to_queue_id="overflow")
    policy = DomainPolicy("p", first_response=SlaTarget(MINUTE), on_warning=both)

    assert [v.field for v in policy_problems(policy)] == ["policy.on_warning.move_to_queue_id"]


def test_an_escalation_raises_priority_within_the_routing_range_and_names_ids() -> None:
    bad = SlaEscalation(raise_priority_to=101, move_to_queue_id="Bad Queue", notify_endpoint_id="-")
    policy = DomainPolicy("p", first_response=SlaTarget(MINUTE), on_breach=bad)

    assert [v.field for v in policy_problems(policy)] == [
        "policy.on_breach.raise_priority_to",
        "policy.on_breach.move_to_queue_id",
        "policy.on_breach.notify_endpoint_id",
    ]
