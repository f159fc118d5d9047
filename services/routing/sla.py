"""SLA clocks of a conversation: how long the customer has waited, against which target.

The report is recomputed from the history on every read, so it is a pure function of the
events, the policy periods and ``now``: one pass over the events, with each stretch between
two moments (an event or a policy change) measured at once, never minute by minute.

The clocks:

- FIRST_RESPONSE starts when a human phase begins: at ROUTED, or for a bot-first
  conversation when it leaves the bot for a human (ESCALATED, a transfer, or a human reply).
  The first AGENT_REPLY stops it, and so does RESOLVED (solving the problem answers it). A
  BOT_REPLY never stops it. It runs once: reopening does not restart it.
- NEXT_RESPONSE runs in cycles. A CUSTOMER_REPLY after the first human reply starts a cycle
  when none runs; the next AGENT_REPLY or RESOLVED finishes it. The report shows the latest
  cycle, the one an agent can still act on; earlier cycles that breached are counted in
  ``ClockReport.earlier_breaches`` so a breach stays visible after a prompt later reply.
- RESOLUTION starts with FIRST_RESPONSE, stops at RESOLVED and resumes where it left off
  when the conversation reopens (REOPENED, or a customer reply to a resolved conversation).

Decisions the rules leave open:

- Time counts only while a clock runs, is not paused by the policy in effect, and that
  policy has a target for the metric: time spent with no target does not count when a
  target later applies, so a transfer into an SLA queue does not arrive already late.
- A running clock is judged by the policy in effect at ``now``; a stopped one by the policy
  in effect when it stopped, so editing a policy later does not rewrite a verdict.
- A running clock is BREACHED from its due moment on (elapsed >= target): a business-hours
  clock due at Friday's closing shows breached all weekend. A stopped clock is MET when its
  elapsed time is at most the target.
- ``due_time`` and ``warning_time`` are the moments the threshold was reached, if it was;
  otherwise, for a running and unpaused clock, when it will be if nothing changes; else None.
- Events after ``now`` have not happened yet, so a report can be asked for a past moment.
- Metrics whose governing policy has no target, and clocks that never started (a
  conversation still with the bot, a next response nobody owes yet), are not reported.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from services.routing.business_hours import (
    ALWAYS_OPEN,
    BusinessCalendar,
    NeverOpen,
    add_business_time,
    business_time_between,
)
from services.routing.lifecycle import (
    ConversationEvent,
    ConversationState,
    EventKind,
    Situation,
    advance,
    start,
)


class Metric(StrEnum):
    FIRST_RESPONSE = "first_response"
    NEXT_RESPONSE = "next_response"
    RESOLUTION = "resolution"


class SlaStatus(StrEnum):
    ON_TRACK = "on_track"
    WARNING = "warning"
    BREACHED = "breached"
    MET = "met"


@dataclass(frozen=True)
class Target:
    """How long a metric may take; counted in the policy's business hours unless told not to."""

    duration: timedelta
    business_hours: bool = True

    def __post_init__(self) -> None:
        if self.duration <= timedelta(0):
            raise ValueError(f"an SLA target must be a positive duration, not {self.duration}")


@dataclass(frozen=True)
class SlaPolicy:
    """The targets a queue promises, and the states in which its clocks stand still."""

    first_response: Target | None = None
    next_response: Target | None = None
    resolution: Target | None = None
    warning_fraction: float = 0.75
    pause_states: frozenset[ConversationState] = frozenset({ConversationState.WAITING_ON_CUSTOMER})
    calendar: BusinessCalendar = ALWAYS_OPEN

    def __post_init__(self) -> None:
        if not 0 < self.warning_fraction <= 1:
            raise ValueError(
                f"the warning fraction must be above 0 and at most 1, not {self.warning_fraction}"
            )

    def target_for(self, metric: Metric) -> Target | None:
        match metric:
            case Metric.FIRST_RESPONSE:
                return self.first_response
            case Metric.NEXT_RESPONSE:
                return self.next_response
            case Metric.RESOLUTION:
                return self.resolution


@dataclass(frozen=True)
class PolicyPeriod:
    """A policy in effect from ``start`` until the next period; None means no SLA."""

    start: datetime
    policy: SlaPolicy | None


@dataclass(frozen=True)
class ClockReport:
    """Where one clock stands; see the module docstring for how each field is decided."""

    metric: Metric
    status: SlaStatus
    target: timedelta
    elapsed: timedelta
    paused: bool
    running: bool
    due_time: datetime | None
    warning_time: datetime | None
    stop_time: datetime | None
    earlier_breaches: int = 0  # next-response cycles before the reported one that breached
    cycle: int = 0  # which next-response cycle, counting from 1; 0 for the other clocks


def sla_report(
    events: Sequence[ConversationEvent], policies: Sequence[PolicyPeriod], now: datetime
) -> list[ClockReport]:
    """The started clocks with a target, in ``Metric`` order, as they stand at ``now``.

    ``events`` is the conversation's history, oldest first, starting with ROUTED; a history
    the lifecycle refuses raises ``InvalidTransition``. ``policies`` may come in any order;
    of two periods with the same start the later one in the sequence wins.
    """
    if now.utcoffset() is None:
        raise ValueError("now must carry a time zone")
    happened = [event for event in events if event.time <= now]
    if not happened:
        return []
    walk = _Walk(policies, happened[0])
    for event in happened[1:]:
        walk.step(event)
    walk.count_until(now)
    current_policy = walk.policies.at(now)
    reports = []
    for clock in (walk.first_response, walk.next_response, walk.resolution):
        policy = current_policy if clock.running else clock.policy_at_stop
        report = _report(clock, policy, walk.situation.state, now)
        if report is not None:
            reports.append(report)
    return reports


class Threshold(StrEnum):
    WARNING = "warning"
    BREACH = "breach"


@dataclass(frozen=True)
class Alert:
    """A threshold a clock reached that the SLA watch has not recorded yet."""

    metric: Metric
    threshold: Threshold
    cycle: int
    time: datetime  # when it was reached, not when the watch noticed
    report: ClockReport

    @property
    def key(self) -> tuple[Metric, Threshold, int]:
        return (self.metric, self.threshold, self.cycle)


@dataclass(frozen=True)
class WatchPlan:
    """What the SLA watch records now, and when it must look at the conversation again
    (None: not until something happens to it)."""

    due: tuple[Alert, ...]
    next_check: datetime | None


def watch_plan(
    reports: Sequence[ClockReport],
    recorded: Collection[tuple[Metric, Threshold, int]],
    now: datetime,
) -> WatchPlan:
    """The thresholds reached by ``now`` and not in ``recorded``, in the order they were
    reached, and the earliest threshold still ahead of a clock that is counting.

    A stopped clock's thresholds are reported only if they were reached before it stopped
    (the watch may run after the reply that stopped it); a clock stopped exactly at its
    target met it. A paused clock has no future threshold: the event that resumes it makes
    the caller look again. Business-hour clocks project their thresholds on the calendar,
    so a clock due after a weekend is looked at again on Monday, not before.
    """
    due: list[Alert] = []
    upcoming: list[datetime] = []
    for report in reports:
        thresholds = (
            (Threshold.WARNING, report.warning_time),
            (Threshold.BREACH, report.due_time),
        )
        for threshold, moment in thresholds:
            if moment is None or (report.metric, threshold, report.cycle) in recorded:
                continue
            if moment > now:
                if report.running and not report.paused:
                    upcoming.append(moment)
            elif threshold is Threshold.WARNING or report.status is SlaStatus.BREACHED:
                due.append(Alert(report.metric, threshold, report.cycle, moment, report))
    due.sort(key=lambda alert: (alert.time, alert.threshold is Threshold.BREACH))
    return WatchPlan(tuple(due), min(upcoming, default=None))


def first_response_due(policy: SlaPolicy, routed: datetime, to_bot: bool) -> datetime | None:
    """When a conversation routed now must get its first human reply; None when no clock
    runs yet (it goes to the bot, the policy sets no target or pauses it, or the calendar
    never opens)."""
    return _due_at_routing(policy, routed, to_bot, Metric.FIRST_RESPONSE)


def resolution_due(policy: SlaPolicy, routed: datetime, to_bot: bool) -> datetime | None:
    """When a conversation routed now must be resolved, with the same None cases as
    ``first_response_due``."""
    return _due_at_routing(policy, routed, to_bot, Metric.RESOLUTION)


def _due_at_routing(
    policy: SlaPolicy, routed: datetime, to_bot: bool, metric: Metric
) -> datetime | None:
    # Asking the full report keeps routing-time promises and later reports in agreement.
    routing = ConversationEvent(EventKind.ROUTED, routed, to_bot=to_bot)
    reports = sla_report([routing], [PolicyPeriod(routed, policy)], routed)
    return next((report.due_time for report in reports if report.metric is metric), None)


@dataclass(frozen=True)
class _Stretch:
    """A span that counted towards a clock, measured the way its policy said."""

    start: datetime
    elapsed_before: timedelta
    elapsed: timedelta
    calendar: BusinessCalendar | None  # None: wall time

    def moment_reaching(self, total: timedelta) -> datetime:
        needed = total - self.elapsed_before
        if self.calendar is None:
            return self.start + needed
        return add_business_time(self.calendar, self.start, needed)


@dataclass
class _Clock:
    """One clock's run so far, updated while the history is walked."""

    metric: Metric
    started: bool = False
    running: bool = False
    elapsed: timedelta = timedelta(0)
    stop_time: datetime | None = None
    policy_at_stop: SlaPolicy | None = None
    stretches: list[_Stretch] = field(default_factory=list)
    earlier_breaches: int = 0  # of the next-response cycles before this one
    cycle: int = 0

    def run(self) -> None:
        self.started = self.running = True
        self.stop_time = self.policy_at_stop = None

    def stop(self, moment: datetime, policy: SlaPolicy | None) -> None:
        self.running = False
        self.stop_time, self.policy_at_stop = moment, policy

    def count(
        self, begin: datetime, end: datetime, policy: SlaPolicy | None, state: ConversationState
    ) -> None:
        if not self.running or policy is None or state in policy.pause_states:
            return
        target = policy.target_for(self.metric)
        if target is None:
            return
        calendar = policy.calendar if target.business_hours else None
        spent = end - begin if calendar is None else business_time_between(calendar, begin, end)
        if spent > timedelta(0):
            self.stretches.append(_Stretch(begin, self.elapsed, spent, calendar))
            self.elapsed += spent

    def breached(self) -> bool:
        target = self.policy_at_stop.target_for(self.metric) if self.policy_at_stop else None
        return target is not None and self.elapsed > target.duration


class _PolicyTimeline:
    """The policy in effect at moments asked for in increasing order, found in one pass."""

    def __init__(self, periods: Sequence[PolicyPeriod]) -> None:
        self._periods = sorted(periods, key=lambda period: period.start)
        self._current = -1

    def at(self, moment: datetime) -> SlaPolicy | None:
        following = self._current + 1
        while following < len(self._periods) and self._periods[following].start <= moment:
            self._current, following = following, following + 1
        return self._periods[self._current].policy if self._current >= 0 else None

    def next_change_after(self, moment: datetime) -> datetime | None:
        self.at(moment)
        following = self._current + 1
        return self._periods[following].start if following < len(self._periods) else None


class _Walk:
    """One pass over a history, oldest event first, running the clocks as it goes."""

    def __init__(self, policies: Sequence[PolicyPeriod], routing: ConversationEvent) -> None:
        self.policies = _PolicyTimeline(policies)
        self.situation: Situation = start(routing)
        self.cursor = routing.time
        self.first_response = _Clock(Metric.FIRST_RESPONSE)
        self.next_response = _Clock(Metric.NEXT_RESPONSE)
        self.resolution = _Clock(Metric.RESOLUTION)
        self.human_has_replied = False
        self._follow(routing)

    def step(self, event: ConversationEvent) -> None:
        self.count_until(event.time)
        self.situation = advance(self.situation, event)
        self._follow(event)

    def count_until(self, moment: datetime) -> None:
        """Adds the time from the last event to ``moment``, a stretch per policy in effect."""
        while self.cursor < moment:
            policy = self.policies.at(self.cursor)
            change = self.policies.next_change_after(self.cursor)
            end = moment if change is None else min(change, moment)
            for clock in (self.first_response, self.next_response, self.resolution):
                clock.count(self.cursor, end, policy, self.situation.state)
            self.cursor = end

    def _follow(self, event: ConversationEvent) -> None:
        """Starts and stops the clocks for an event the situation already reflects."""
        moment, state = event.time, self.situation.state
        policy = self.policies.at(moment)
        with_a_human = state not in (ConversationState.BOT, ConversationState.RESOLVED)
        if with_a_human and not self.first_response.started:
            self.first_response.run()
        if with_a_human and not self.resolution.running:
            self.resolution.run()
        if state is ConversationState.RESOLVED and self.resolution.running:
            self.resolution.stop(moment, policy)
        if event.kind in (EventKind.AGENT_REPLY, EventKind.RESOLVED):
            for clock in (self.first_response, self.next_response):
                if clock.running:
                    clock.stop(moment, policy)
        if event.kind is EventKind.AGENT_REPLY:
            self.human_has_replied = True
        elif (
            event.kind is EventKind.CUSTOMER_REPLY
            and self.human_has_replied
            and not self.next_response.running
        ):
            self._start_next_response_cycle()

    def _start_next_response_cycle(self) -> None:
        previous = self.next_response
        earlier_breaches = previous.earlier_breaches + int(previous.breached())
        self.next_response = _Clock(
            Metric.NEXT_RESPONSE, earlier_breaches=earlier_breaches, cycle=previous.cycle + 1
        )
        self.next_response.run()


def _report(
    clock: _Clock, policy: SlaPolicy | None, state: ConversationState, now: datetime
) -> ClockReport | None:
    target = policy.target_for(clock.metric) if policy is not None else None
    if policy is None or target is None or not clock.started:
        return None
    warning = target.duration * policy.warning_fraction
    paused = clock.running and state in policy.pause_states
    # Only a clock that is counting now has a future: a stopped or paused one may never go on.
    projecting = clock.running and not paused

    def moment_reaching(total: timedelta) -> datetime | None:
        for stretch in clock.stretches:
            if stretch.elapsed_before + stretch.elapsed >= total:
                return stretch.moment_reaching(total)
        if not projecting:
            return None
        remaining = total - clock.elapsed
        if not target.business_hours:
            return now + remaining
        try:
            return add_business_time(policy.calendar, now, remaining)
        except NeverOpen:
            return None

    return ClockReport(
        metric=clock.metric,
        status=_status(clock, target.duration, warning),
        target=target.duration,
        elapsed=clock.elapsed,
        paused=paused,
        running=clock.running,
        due_time=moment_reaching(target.duration),
        warning_time=moment_reaching(warning),
        stop_time=clock.stop_time,
        earlier_breaches=clock.earlier_breaches,
        cycle=clock.cycle,
    )


def _status(clock: _Clock, target: timedelta, warning: timedelta) -> SlaStatus:
    if not clock.running:
        return SlaStatus.MET if clock.elapsed <= target else SlaStatus.BREACHED
    if clock.elapsed >= target:
        return SlaStatus.BREACHED
    if clock.elapsed >= warning:
        return SlaStatus.WARNING
    return SlaStatus.ON_TRACK
