"""Adding up conversation facts in SQL: one aggregate per group, never a loop over rows.

Reports are the read side of routing: they run in the routing server over routing's own
tables (the facts folded at every write, and the segments each conversation was routed
in). Whatever belongs to other services (memberships, field sources) comes through their
APIs, in ``services.reports.sources``.

Percentiles are nearest-rank (the value at rank ceil(p x n) in ascending order): on
PostgreSQL its ``percentile_disc``, in the same pass as the counts; on SQLite, which has no
ordered-set aggregates, window functions. Tests run both against the same expectations.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    and_,
    case,
    func,
    literal,
    not_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql

from services.core.db import is_postgresql, read_session
from services.reports.domain import Tally
from services.routing.repository import conversation_facts as facts
from services.routing.repository import conversation_segments as routed_in

# A scope yields (bucket, conversation_id) pairs: the conversations each group counts.
Scope = Select[Any]

_PERCENTILES = ((50, "p50"), (90, "p90"))
_TIMED = ("first_response", "resolution")
_SORT_MEMORY = "64MB"
# The fact columns the figures read (the conversation id only joins).
_FIGURES = [column for column in facts.c if column.name != "conversation_id"]


class ReportRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgresql = is_postgresql(engine)

    def tally_by_segment(
        self, segment_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, Tally]:
        """Each segment's conversations routed in [start, end), by the segments they were
        routed in."""
        scope = (
            select(routed_in.c.segment_id.label("bucket"), *_FIGURES)
            .join(facts, facts.c.conversation_id == routed_in.c.conversation_id)
            .where(
                routed_in.c.segment_id.in_(list(segment_ids)),
                routed_in.c.route_time >= start,
                routed_in.c.route_time < end,
            )
        )
        return self._tally(scope)

    def tally_all(self, start: datetime, end: datetime) -> Tally:
        """Every conversation routed in [start, end), anonymous visitors included."""
        scope = select(literal("").label("bucket"), *_FIGURES).where(
            facts.c.route_time >= start, facts.c.route_time < end
        )
        return self._tally(scope).get("", Tally())

    def tally_cohort(
        self, customer_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, Tally]:
        """Known customers' conversations routed in [start, end), split into "entered" (one
        of ``customer_ids``) and "others"."""
        entered = facts.c.customer_id.in_(list(customer_ids)) if customer_ids else literal(False)
        scope = select(
            case((entered, literal("entered")), else_=literal("others")).label("bucket"),
            *_FIGURES,
        ).where(facts.c.route_time >= start, facts.c.route_time < end, facts.c.customer_id != "")
        return self._tally(scope)

    def _tally(self, scope: Scope) -> dict[str, Tally]:
        rows = scope.cte("scoped")
        counts = select(rows.c.bucket, *_counts(rows)).group_by(rows.c.bucket)
        with read_session(self.engine) as session:
            if self.postgresql:
                # One pass: PostgreSQL's percentile_disc is the nearest rank. Sorting a
                # million values wants more memory than the 4 MB default to stay off disk.
                session.execute(text(f"SET LOCAL work_mem = '{_SORT_MEMORY}'"))
                found = {}
                for row in session.execute(counts.add_columns(*_ordered_percentiles(rows))):
                    values = dict(row._mapping)
                    for column in _TIMED:
                        picked = values.pop(f"{column}_percentiles") or [None, None]
                        for (_, name), value in zip(_PERCENTILES, picked, strict=True):
                            values[f"{column}_{name}"] = value
                    found[row.bucket] = values
            else:
                found = {row.bucket: dict(row._mapping) for row in session.execute(counts)}
                for column in _TIMED:
                    for row in session.execute(_ranked_percentiles(rows, f"{column}_seconds")):
                        for _, name in _PERCENTILES:
                            found[row.bucket][f"{column}_{name}"] = row._mapping[name]
        return {bucket: _tally_of(values) for bucket, values in found.items()}


def _counts(rows: Any) -> list[ColumnElement[Any]]:
    return [
        func.count().label("conversations"),
        func.count(func.distinct(func.nullif(rows.c.customer_id, ""))).label("customers"),
        func.count(rows.c.first_response_seconds).label("first_responses"),
        func.count(rows.c.resolution_seconds).label("resolutions"),
        func.count(rows.c.first_response_met).label("first_response_decided"),
        _count_where(rows.c.first_response_met.is_(True)).label("first_response_met"),
        func.count(rows.c.resolution_met).label("resolution_decided"),
        _count_where(rows.c.resolution_met.is_(True)).label("resolution_met"),
        _count_where(rows.c.csat_rating > 0).label("csat_count"),
        func.coalesce(func.sum(rows.c.csat_rating), 0).label("csat_sum"),
        _count_where(rows.c.bot_first.is_(True)).label("bot_conversations"),
        _count_where(
            and_(
                rows.c.bot_first.is_(True),
                rows.c.resolution_seconds.is_not(None),
                not_(rows.c.human_involved),
                not_(rows.c.escalated),
            )
        ).label("bot_contained"),
        _count_where(and_(rows.c.bot_first.is_(True), rows.c.escalated.is_(True))).label(
            "bot_escalated"
        ),
        _count_where(rows.c.reopened.is_(True)).label("reopened"),
        func.coalesce(func.sum(rows.c.handling_seconds), 0.0).label("handling_seconds"),
    ]


def _ordered_percentiles(rows: Any) -> list[ColumnElement[Any]]:
    fractions = postgresql.array([literal(percent / 100) for percent, _ in _PERCENTILES])
    return [
        func.percentile_disc(fractions)
        .within_group(rows.c[f"{column}_seconds"])
        .label(f"{column}_percentiles")
        for column in _TIMED
    ]


def _tally_of(values: dict[str, Any]) -> Tally:
    """A Tally from one result row; drivers return sums as int, float or Decimal."""
    numbers: dict[str, Any] = {}
    for name, kind in Tally.__annotations__.items():
        numbers[name] = (float if kind == "float" else int)(values.get(name) or 0)
    return Tally(**numbers)


def _count_where(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _ranked_percentiles(rows: Any, column: str) -> Select[Any]:
    """Per group, the nearest-rank percentiles of ``column`` over its non-null values."""
    value = rows.c[column]
    ranked = (
        select(
            rows.c.bucket,
            value.label("value"),
            func.row_number().over(partition_by=rows.c.bucket, order_by=value).label("rank"),
            func.count().over(partition_by=rows.c.bucket).label("size"),
        )
        .where(value.is_not(None))
        .subquery("ranked")
    )
    # ceil(p x n / 100) in integer arithmetic, which both databases agree on.
    picks = [
        func.min(
            case(
                (
                    ranked.c.rank == (ranked.c.size * percent + 99) // 100,
                    ranked.c.value,
                )
            )
        ).label(name)
        for percent, name in _PERCENTILES
    ]
    return select(ranked.c.bucket, *picks).group_by(ranked.c.bucket)
