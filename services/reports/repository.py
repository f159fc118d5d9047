"""Adding up conversation facts in SQL: one aggregate per group, never a loop over rows.

Reports are the read side of routing: they run in the routing server over routing's own
tables (the facts folded at every write, repeated on the rows of the segments each
conversation was routed in). Whatever belongs to other services (memberships, field
sources) comes through their APIs, in ``services.reports.sources``.

A scope is the rows of one table, each in one bucket (a segment, "" for everyone, a
cohort). Its tally is shaped so PostgreSQL never sorts or hashes a million rows more than
it must: one statement adds up the counts and sums of every bucket, distinct customers
included (each row knows when its customer's previous conversation in that table was
routed, so a customer is the one row whose previous conversation is outside the range);
then one statement per bucket sorts only that bucket's values for its percentiles. On
PostgreSQL the statements run at once on several connections that share one snapshot, so
the figures agree with each other as if one statement had read them all; SQLite runs them
in turn in one transaction.

Percentiles are nearest-rank (the value at rank ceil(p x n) in ascending order): on
PostgreSQL its ``percentile_disc``; on SQLite, which has no ordered-set aggregates, window
functions. Tests run both against the same expectations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Row,
    Select,
    Table,
    and_,
    case,
    func,
    literal,
    not_,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql

from services.core.db import is_postgresql, read_session
from services.reports.domain import Tally
from services.routing.repository import FIGURES
from services.routing.repository import conversation_facts as facts
from services.routing.repository import conversation_segments as routed_in

_PERCENTILES = ((50, "p50"), (90, "p90"))
_TIMED = ("first_response", "resolution")
# At most this many statements of one tally run at once on PostgreSQL, each on its own
# connection: enough to keep a few cores busy, few enough that scorecards asked at once
# leave the engine's pool (16, and 16 more) to routing.
_CONCURRENCY = 4
# Per statement: sorts and hash tables of a million rows stay in memory; JIT compiling
# costs more than it saves on these plans.
_STATEMENT_SETTINGS = ("SET LOCAL work_mem = '64MB'", "SET LOCAL jit = off")


@dataclass(frozen=True)
class _Scope:
    """The rows of ``table`` routed in [start, end) that ``where`` keeps, each in the
    bucket ``bucket`` names; ``buckets`` lists every bucket it can yield."""

    table: Table
    bucket: ColumnElement[str]
    buckets: tuple[str, ...]
    start: datetime
    end: datetime
    where: tuple[ColumnElement[bool], ...] = ()

    def rows(self, *columns: ColumnElement[Any], bucket: str | None = None) -> Select[Any]:
        """``columns`` of the scope's rows (of one bucket only, when given)."""
        kept = [
            self.table.c.route_time >= self.start,
            self.table.c.route_time < self.end,
            *self.where,
        ]
        if bucket is not None:
            kept.append(self.bucket == bucket)
        return select(*columns).where(*kept)


class ReportRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgresql = is_postgresql(engine)

    def tally_scorecard(
        self, segment_ids: Sequence[str], start: datetime, end: datetime
    ) -> tuple[dict[str, Tally], Tally]:
        """Each segment's conversations routed in [start, end), by the segments they were
        routed in; and every conversation of the range, anonymous visitors included."""
        by_segment = _Scope(
            routed_in,
            routed_in.c.segment_id,
            tuple(segment_ids),
            start,
            end,
            (routed_in.c.segment_id.in_(list(segment_ids)),),
        )
        everyone = _Scope(facts, literal(""), ("",), start, end)
        found = self._tally([by_segment, everyone])
        blended = found.pop("", Tally())
        return found, blended

    def tally_cohort(
        self, customer_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, Tally]:
        """Known customers' conversations routed in [start, end), split into "entered" (one
        of ``customer_ids``) and "others"."""
        entered = facts.c.customer_id.in_(list(customer_ids)) if customer_ids else literal(False)
        bucket = case((entered, literal("entered")), else_=literal("others"))
        scope = _Scope(
            facts, bucket, ("entered", "others"), start, end, (facts.c.customer_id != "",)
        )
        return self._tally([scope])

    def _tally(self, scopes: Sequence[_Scope]) -> dict[str, Tally]:
        """The tallies of every bucket of ``scopes`` that has rows, by bucket."""
        statements = [_counts(scope) for scope in scopes]
        for scope in scopes:
            if self.postgresql:
                statements += [_ordered_percentiles(scope, bucket) for bucket in scope.buckets]
            else:
                statements += [_ranked_percentiles(scope, column) for column in _TIMED]
        found: dict[str, dict[str, Any]] = {}
        for rows in self._run(statements):
            for row in rows:
                values = dict(row._mapping)
                if values.pop("conversations_present", 1):
                    found.setdefault(values.pop("bucket"), {}).update(_spread(values))
        return {bucket: _tally_of(values) for bucket, values in found.items()}

    def _run(self, statements: Sequence[Select[Any]]) -> list[Sequence[Row[Any]]]:
        """Every statement's rows, all read from one snapshot of the database."""
        if not self.postgresql:
            with read_session(self.engine) as session:
                return [session.execute(statement).all() for statement in statements]
        with self.engine.connect() as lead:
            lead = lead.execution_options(isolation_level="REPEATABLE READ")
            with lead.begin():
                # Held open until every statement has imported the snapshot (and ran).
                snapshot = lead.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
                with ThreadPoolExecutor(min(len(statements), _CONCURRENCY)) as pool:
                    return list(pool.map(self._in_snapshot(snapshot), statements))

    def _in_snapshot(self, snapshot: str) -> Callable[[Select[Any]], Sequence[Row[Any]]]:
        def run(statement: Select[Any]) -> Sequence[Row[Any]]:
            with self.engine.connect() as connection:
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
                with connection.begin():
                    # The identifier comes from the server itself, never from a caller.
                    connection.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                    for setting in _STATEMENT_SETTINGS:
                        connection.exec_driver_sql(setting)
                    return connection.execute(statement).all()

        return run


def _counts(scope: _Scope) -> Select[Any]:
    columns = (*FIGURES, "previous_route_time")
    rows = scope.rows(
        scope.bucket.label("bucket"), *(scope.table.c[name] for name in columns)
    ).subquery("scoped")
    # A customer counts once: on the conversation whose previous one (in the bucket's
    # table: theirs, or theirs in that segment) was routed before the range, or never.
    customers = _count_where(
        and_(
            rows.c.customer_id != "",
            or_(rows.c.previous_route_time.is_(None), rows.c.previous_route_time < scope.start),
        )
    )
    return select(rows.c.bucket, customers.label("customers"), *_sums(rows)).group_by(rows.c.bucket)


def _sums(rows: Any) -> list[ColumnElement[Any]]:
    return [
        func.count().label("conversations"),
        func.count(rows.c.first_response_seconds).label("first_responses"),
        func.count(rows.c.resolution_seconds).label("resolutions"),
        func.count(rows.c.first_response_met).label("first_response_decided"),
        _count_where(rows.c.first_response_met).label("first_response_met"),
        func.count(rows.c.resolution_met).label("resolution_decided"),
        _count_where(rows.c.resolution_met).label("resolution_met"),
        _count_where(rows.c.csat_rating > 0).label("csat_count"),
        func.coalesce(func.sum(rows.c.csat_rating), 0).label("csat_sum"),
        _count_where(rows.c.bot_first).label("bot_conversations"),
        _count_where(
            and_(
                rows.c.bot_first,
                rows.c.resolution_seconds.is_not(None),
                not_(rows.c.human_involved),
                not_(rows.c.escalated),
            )
        ).label("bot_contained"),
        _count_where(and_(rows.c.bot_first, rows.c.escalated)).label("bot_escalated"),
        _count_where(rows.c.reopened).label("reopened"),
        func.coalesce(func.sum(rows.c.handling_seconds), 0.0).label("handling_seconds"),
    ]


def _count_where(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.count().filter(condition)


def _ordered_percentiles(scope: _Scope, bucket: str) -> Select[Any]:
    """One bucket's percentiles, PostgreSQL's ``percentile_disc`` being the nearest rank;
    ``conversations_present`` is 0 when the bucket has no rows (and so no percentiles)."""
    fractions = postgresql.array([literal(percent / 100) for percent, _ in _PERCENTILES])
    return scope.rows(
        literal(bucket).label("bucket"),
        func.count().label("conversations_present"),
        *(
            func.percentile_disc(fractions)
            .within_group(scope.table.c[f"{column}_seconds"])
            .label(f"{column}_percentiles")
            for column in _TIMED
        ),
        bucket=bucket,
    )


def _spread(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with each array of ordered percentiles spread into one value each."""
    for column in _TIMED:
        if f"{column}_percentiles" in values:
            picked = values.pop(f"{column}_percentiles") or [None] * len(_PERCENTILES)
            for (_, name), value in zip(_PERCENTILES, picked, strict=True):
                values[f"{column}_{name}"] = value
    return values


def _ranked_percentiles(scope: _Scope, column: str) -> Select[Any]:
    """Per bucket, the nearest-rank percentiles of ``column`` over its non-null values."""
    value = scope.table.c[f"{column}_seconds"]
    ranked = (
        scope.rows(
            scope.bucket.label("bucket"),
            value.label("value"),
            func.row_number().over(partition_by=scope.bucket, order_by=value).label("rank"),
            func.count().over(partition_by=scope.bucket).label("size"),
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
        ).label(f"{column}_{name}")
        for percent, name in _PERCENTILES
    ]
    return select(ranked.c.bucket, *picks).group_by(ranked.c.bucket)


def _tally_of(values: dict[str, Any]) -> Tally:
    """A Tally from one bucket's columns; drivers return sums as int, float or Decimal."""
    numbers: dict[str, Any] = {}
    for name, kind in Tally.__annotations__.items():
        numbers[name] = (float if kind == "float" else int)(values.get(name) or 0)
    return Tally(**numbers)
