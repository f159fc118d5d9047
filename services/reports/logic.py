"""Turning tallies into the figures the contract promises, and flagging the gaps.

Pure: the store adds up, this divides and compares, so every figure has one definition
whatever asks for it (the RPC, the CLI, the dashboard).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from services.reports.domain import Figures, Gap, Metric, Retention, Tally

MAX_DAYS = 366
_SECONDS_PER_HOUR = 3600.0


def figures_from(tally: Tally, retention: Retention, hourly_cost: float) -> Figures:
    """The figures of one group; a share with nothing to divide by is 0."""
    cost = tally.handling_seconds / _SECONDS_PER_HOUR * hourly_cost
    return Figures(
        conversations=tally.conversations,
        customers=tally.customers,
        first_responses=tally.first_responses,
        first_response_p50_seconds=tally.first_response_p50,
        first_response_p90_seconds=tally.first_response_p90,
        resolutions=tally.resolutions,
        resolution_p50_seconds=tally.resolution_p50,
        resolution_p90_seconds=tally.resolution_p90,
        first_response_sla_decided=tally.first_response_decided,
        first_response_sla_attainment=_share(
            tally.first_response_met, tally.first_response_decided
        ),
        resolution_sla_decided=tally.resolution_decided,
        resolution_sla_attainment=_share(tally.resolution_met, tally.resolution_decided),
        csat_count=tally.csat_count,
        csat_average=_share(tally.csat_sum, tally.csat_count),
        bot_conversations=tally.bot_conversations,
        bot_containment_rate=_share(tally.bot_contained, tally.bot_conversations),
        escalation_rate=_share(tally.bot_escalated, tally.bot_conversations),
        reopen_rate=_share(tally.reopened, tally.conversations),
        handling_seconds=tally.handling_seconds,
        handling_seconds_per_conversation=_share(tally.handling_seconds, tally.conversations),
        support_cost_per_customer=_share(cost, tally.customers),
        retention_base=retention.base,
        retention_rate=_share(retention.retained, retention.base),
    )


def gaps(figures: Figures, blended: Figures, margin: float) -> tuple[Gap, ...]:
    """The figures worse than blended by more than ``margin`` (a fraction of the blended
    value). A figure with no data on either side is never flagged, nor is any figure
    against a blended value of 0, where "worse by a fraction of it" means nothing."""
    found = []
    for metric in Metric:
        if not getattr(figures, metric.evidence) or not getattr(blended, metric.evidence):
            continue
        value, reference = getattr(figures, metric.figure), getattr(blended, metric.figure)
        if reference == 0:
            continue
        worse_by = (value - reference) if metric.higher_is_worse else (reference - value)
        relative = worse_by / abs(reference)
        if relative > margin:
            found.append(Gap(metric, value, reference, relative))
    return tuple(found)


def day_ends(start: datetime, end: datetime, time_zone: str) -> tuple[datetime, ...]:
    """The end of every day from ``start`` to ``end``: each next midnight in the time zone,
    and ``end`` itself for the last (partial) day. Midnights are local, so a day with a
    daylight-saving change is 23 or 25 hours long."""
    zone = ZoneInfo(time_zone or "UTC")
    local = start.astimezone(zone)
    ends: list[datetime] = []
    day = local.date()
    while True:
        day = day + timedelta(days=1)
        midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
        if midnight >= end:
            ends.append(end)
            return tuple(ends)
        ends.append(midnight)


def migration_cells(
    order: Sequence[str], moves: Iterable[tuple[str, str, int]], stayed: dict[str, int]
) -> tuple[tuple[str, ...], tuple[tuple[str, str, int], ...]]:
    """The full matrix over ``order`` then "" (in none), from the moves between different
    segments and the customers who stayed in each. Segments that appear only in the history
    (deleted since) join the order after the known ones."""
    counts: dict[tuple[str, str], int] = {}
    for source, target, customers in moves:
        counts[(source, target)] = counts.get((source, target), 0) + customers
    for segment_id, customers in stayed.items():
        counts[(segment_id, segment_id)] = counts.get((segment_id, segment_id), 0) + customers
    seen = {segment_id for pair in counts for segment_id in pair if segment_id}
    rows = [*order, *sorted(seen - set(order)), ""]
    cells = tuple(
        (source, target, counts.get((source, target), 0)) for source in rows for target in rows
    )
    return tuple(rows), cells


def _share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0
