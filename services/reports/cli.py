"""``switchboard report ...``: the per-segment reports of the routing server, in a terminal.

Every command asks the ReportService (served by the routing server) and prints its answer
as a table for people, CSV for spreadsheets (proto field names, raw numbers) or JSON (the
response itself), so a figure never differs between the three.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click
from google.protobuf import json_format
from google.protobuf.message import Message
from switchboard.reports.v1 import reports_pb2 as pb
from switchboard.reports.v1 import reports_pb2_grpc
from switchboard.segments.v1 import segments_pb2 as spb

from services.cli_support import call_rpc, connected
from services.core.settings import Settings
from services.segments.rules import parse_duration, parse_timestamp

FORMATS = ("table", "csv", "json")
NO_DATA = "-"
GAP_MARK = "!"
_Value = TypeVar("_Value")
_Response = TypeVar("_Response", bound=Message)


class _Parsed(click.ParamType[_Value, Any]):
    """An option value read by one of the rule parsers, so the CLI accepts exactly what
    segment rules accept (``30d``, ISO-8601 instants without an offset taken as UTC)."""

    def __init__(self, name: str, parse: Callable[[object], _Value | None], example: str) -> None:
        self.name = name
        self.parse = parse
        self.example = example

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        parsed = self.parse(value)
        if parsed is None:
            self.fail(f"{value!r} is not {self.example}", param, ctx)
        return parsed


SPAN = _Parsed("span", parse_duration, "a span like 30d or 12h")
INSTANT = _Parsed("instant", parse_timestamp, "an ISO-8601 instant like 2025-03-01T00:00Z")


def _range_options(default_since: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``--since`` / ``--start`` / ``--end`` and ``--format``, shared by every report."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        options = (
            click.option(
                "--since",
                type=SPAN,
                help=f"Look back this far from --end (or now): 30d, 12h, ... "
                f"(default {default_since} when --start is not given).",
            ),
            click.option("--start", type=INSTANT, help="Start instant (instead of --since)."),
            click.option("--end", type=INSTANT, help="End instant (default: now)."),
            click.option(
                "--format",
                "output_format",
                type=click.Choice(FORMATS),
                default="table",
                show_default=True,
            ),
        )
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


@dataclass(frozen=True)
class _Range:
    start: datetime
    end: datetime | None

    def fill(
        self,
        request: pb.GetScorecardRequest
        | pb.CompareCohortRequest
        | pb.GetMigrationMatrixRequest
        | pb.GetSegmentHealthRequest,
    ) -> None:
        """Sets ``start_time`` and, when given, ``end_time`` of a report request."""
        request.start_time.FromDatetime(self.start)
        if self.end is not None:
            request.end_time.FromDatetime(self.end)


def _range(
    since: timedelta | None, start: datetime | None, end: datetime | None, default_since: str
) -> _Range:
    if since is not None and start is not None:
        raise click.UsageError("give --since or --start, not both")
    if start is None:
        span = since or parse_duration(default_since)
        assert span is not None
        start = (end or datetime.now(UTC)) - span
    return _Range(start, end)


def _reports() -> AbstractContextManager[reports_pb2_grpc.ReportServiceStub]:
    settings = Settings()
    return connected(
        reports_pb2_grpc.ReportServiceStub,
        settings.routing_address,
        settings,
        settings.report_deadline_seconds,
    )


@click.group()
def report() -> None:
    """Per-segment service reports (through the routing server)."""


# ---- figures ---------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """``250`` -> ``4m 10s``, ``7500`` -> ``2h 05m``, ``97200`` -> ``1d 03h``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"


def _percent(share: float) -> str:
    return f"{share * 100:.1f}%"


def _decimal(value: float) -> str:
    return f"{value:,.2f}"


@dataclass(frozen=True)
class _Figure:
    """One figure of ``Figures`` as a column: shown only when ``present`` (a count) is not
    zero, since a rate or percentile of nothing would read as a real 0."""

    label: str
    field: str
    present: str | None
    show: Callable[[float], str]
    metric: int = pb.METRIC_UNSPECIFIED
    # Whether the table shows the count beside the figure, as in "4.20 (130)".
    counted: bool = False

    def cell(self, figures: pb.Figures) -> str:
        count = getattr(figures, self.present) if self.present else None
        if count == 0:
            return NO_DATA
        shown = self.show(getattr(figures, self.field))
        return f"{shown} ({count:,})" if self.counted else shown


_FIGURES = (
    _Figure("CONVERSATIONS", "conversations", None, lambda n: f"{n:,.0f}"),
    _Figure(
        "FRT P50",
        "first_response_p50_seconds",
        "first_responses",
        human_duration,
        pb.METRIC_FIRST_RESPONSE_P50,
    ),
    _Figure(
        "FRT P90",
        "first_response_p90_seconds",
        "first_responses",
        human_duration,
        pb.METRIC_FIRST_RESPONSE_P90,
    ),
    _Figure(
        "RES P50", "resolution_p50_seconds", "resolutions", human_duration, pb.METRIC_RESOLUTION_P50
    ),
    _Figure(
        "RES P90", "resolution_p90_seconds", "resolutions", human_duration, pb.METRIC_RESOLUTION_P90
    ),
    _Figure(
        "FR SLA",
        "first_response_sla_attainment",
        "first_response_sla_decided",
        _percent,
        pb.METRIC_FIRST_RESPONSE_SLA_ATTAINMENT,
    ),
    _Figure(
        "RES SLA",
        "resolution_sla_attainment",
        "resolution_sla_decided",
        _percent,
        pb.METRIC_RESOLUTION_SLA_ATTAINMENT,
    ),
    _Figure("CSAT", "csat_average", "csat_count", _decimal, pb.METRIC_CSAT_AVERAGE, counted=True),
    _Figure(
        "CONTAINED",
        "bot_containment_rate",
        "bot_conversations",
        _percent,
        pb.METRIC_BOT_CONTAINMENT_RATE,
    ),
    _Figure(
        "ESCALATED", "escalation_rate", "bot_conversations", _percent, pb.METRIC_ESCALATION_RATE
    ),
    _Figure("REOPENED", "reopen_rate", "conversations", _percent, pb.METRIC_REOPEN_RATE),
    _Figure(
        "HANDLING/CONV",
        "handling_seconds_per_conversation",
        "conversations",
        human_duration,
        pb.METRIC_HANDLING_TIME,
    ),
    _Figure(
        "COST/CUSTOMER",
        "support_cost_per_customer",
        "customers",
        _decimal,
        pb.METRIC_SUPPORT_COST_PER_CUSTOMER,
    ),
    _Figure("RETENTION", "retention_rate", "retention_base", _percent, pb.METRIC_RETENTION_RATE),
)
_BY_METRIC = {figure.metric: figure for figure in _FIGURES if figure.metric}
# Every field of Figures, in proto order: the CSV columns.
FIGURE_FIELDS = tuple(field.name for field in pb.Figures.DESCRIPTOR.fields)


def _cells(figures: pb.Figures, flagged: Collection[int] = ()) -> list[str]:
    """The table cells of ``figures``, the ``flagged`` metrics marked."""
    return [
        figure.cell(figures) + (GAP_MARK if figure.metric in flagged else "") for figure in _FIGURES
    ]


def _raw(figures: pb.Figures) -> list[int | float]:
    return [getattr(figures, name) for name in FIGURE_FIELDS]


# ---- output ----------------------------------------------------------------------------------


def _echo_table(rows: Sequence[Sequence[str]]) -> None:
    """The first row is the header; the first column is left-aligned, the figures right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        click.echo("  ".join(cells).rstrip())


def _echo_csv(rows: Sequence[Sequence[object]]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerows(rows)


def _echo_json(response: Message) -> None:
    click.echo(json_format.MessageToJson(response, preserving_proto_field_name=True))


def _moment(moment: datetime, zone: ZoneInfo | None = None) -> str:
    if zone is None:
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def _range_line(title: str, response: Any) -> str:
    start = response.start_time.ToDatetime(tzinfo=UTC)
    end = response.end_time.ToDatetime(tzinfo=UTC)
    return f"{title}, {_moment(start)} to {_moment(end)}"


def _show(
    ask: Callable[[reports_pb2_grpc.ReportServiceStub], _Response],
    output_format: str,
    csv_rows: Callable[[_Response], list[list[object]]],
    table: Callable[[_Response], None],
) -> None:
    """Asks the ReportService and prints its answer in the format chosen."""
    with _reports() as reports:
        response = call_rpc(lambda: ask(reports))
    if output_format == "json":
        _echo_json(response)
    elif output_format == "csv":
        _echo_csv(csv_rows(response))
    else:
        table(response)


# ---- scorecard -------------------------------------------------------------------------------


@report.command()
@click.option("--family", default="", help="The family whose segments to compare, e.g. tier.")
@click.option("--segment", "segment_ids", multiple=True, help="A segment to compare (repeatable).")
@_range_options("30d")
@click.option(
    "--hourly-cost", type=float, default=0.0, help="Cost of an agent hour (default: server's)."
)
@click.option(
    "--gap-margin",
    type=float,
    default=0.0,
    help="Flag figures worse than blended by more than this fraction (default: server's).",
)
@click.option("--churn-segment", default="", help="Members count as churned (default: server's).")
def scorecard(
    family: str,
    segment_ids: tuple[str, ...],
    since: timedelta | None,
    start: datetime | None,
    end: datetime | None,
    output_format: str,
    hourly_cost: float,
    gap_margin: float,
    churn_segment: str,
) -> None:
    """Each segment's service figures beside the blended ones, worse ones flagged."""
    request = pb.GetScorecardRequest(
        family=family,
        segment_ids=segment_ids,
        hourly_cost=hourly_cost,
        gap_margin=gap_margin,
        churn_segment_id=churn_segment,
    )
    _range(since, start, end, "30d").fill(request)
    _show(
        lambda reports: reports.GetScorecard(request),
        output_format,
        scorecard_csv_rows,
        _echo_scorecard,
    )


def scorecard_csv_rows(response: pb.GetScorecardResponse) -> list[list[object]]:
    """A row per segment, then the blended one (empty ``segment_id``); ``gaps`` lists the
    flagged figures as ``field:relative_gap`` separated by ``;``."""
    rows: list[list[object]] = [["segment_id", "display_name", *FIGURE_FIELDS, "gaps"]]
    for score in response.segments:
        gaps = ";".join(
            f"{_BY_METRIC[gap.metric].field}:{gap.relative_gap!r}"
            for gap in score.gaps
            if gap.metric in _BY_METRIC
        )
        rows.append([score.segment_id, score.display_name, *_raw(score.figures), gaps])
    rows.append(["", "Blended", *_raw(response.blended), ""])
    return rows


def _echo_scorecard(response: pb.GetScorecardResponse) -> None:
    click.echo(
        f"{_range_line('Scorecard', response)} (hourly cost {_decimal(response.hourly_cost)}, "
        f"gap margin {_percent(response.gap_margin)}, churn segment "
        f"{response.churn_segment_id or NO_DATA})"
    )
    rows = [["SEGMENT", *(figure.label for figure in _FIGURES)]]
    for score in response.segments:
        flagged = {gap.metric for gap in score.gaps}
        rows.append([score.display_name or score.segment_id, *_cells(score.figures, flagged)])
    rows.append(["Blended", *_cells(response.blended)])
    _echo_table(rows)
    flagged_scores = [score for score in response.segments if score.gaps]
    if not flagged_scores:
        return
    click.echo(f"\n{GAP_MARK} worse than blended by more than {_percent(response.gap_margin)}:")
    for score in flagged_scores:
        for gap in score.gaps:
            figure = _BY_METRIC.get(gap.metric)
            if figure is None:
                continue
            click.echo(
                f"  {score.display_name or score.segment_id} {figure.label}: "
                f"{figure.show(gap.value)} vs {figure.show(gap.blended)} blended "
                f"({_percent(gap.relative_gap)} worse)"
            )


# ---- cohort ----------------------------------------------------------------------------------


@report.command()
@click.option("--segment", "segment_id", required=True, help="The segment entered, e.g. at_risk.")
@_range_options("90d")
@click.option(
    "--hourly-cost", type=float, default=0.0, help="Cost of an agent hour (default: server's)."
)
def cohort(
    segment_id: str,
    since: timedelta | None,
    start: datetime | None,
    end: datetime | None,
    output_format: str,
    hourly_cost: float,
) -> None:
    """Customers who entered a segment in the range against every other customer."""
    request = pb.CompareCohortRequest(segment_id=segment_id, hourly_cost=hourly_cost)
    _range(since, start, end, "90d").fill(request)
    _show(
        lambda reports: reports.CompareCohort(request),
        output_format,
        _cohort_csv_rows,
        partial(_echo_cohort, segment_id),
    )


def _cohort_csv_rows(response: pb.CompareCohortResponse) -> list[list[object]]:
    return [
        ["group", *FIGURE_FIELDS],
        ["entered", *_raw(response.entered)],
        ["others", *_raw(response.others)],
    ]


def _echo_cohort(segment_id: str, response: pb.CompareCohortResponse) -> None:
    click.echo(_range_line(f"Customers who entered {segment_id} against the others", response))
    rows = [["FIGURE", "ENTERED", "OTHERS"]]
    rows.append(["CUSTOMERS", f"{response.entered.customers:,}", f"{response.others.customers:,}"])
    for label, entered, others in zip(
        (figure.label for figure in _FIGURES),
        _cells(response.entered),
        _cells(response.others),
        strict=True,
    ):
        # Cohorts have no retention: memberships at the start are known per segment only.
        if label != _BY_METRIC[pb.METRIC_RETENTION_RATE].label:
            rows.append([label, entered, others])
    _echo_table(rows)


# ---- migration -------------------------------------------------------------------------------


@report.command()
@click.option("--family", required=True, help="The family, e.g. tier.")
@_range_options("30d")
def migration(
    family: str,
    since: timedelta | None,
    start: datetime | None,
    end: datetime | None,
    output_format: str,
) -> None:
    """How many customers moved from each segment of a family to each other one."""
    request = pb.GetMigrationMatrixRequest(family=family)
    _range(since, start, end, "30d").fill(request)
    _show(
        lambda reports: reports.GetMigrationMatrix(request),
        output_format,
        _migration_csv_rows,
        partial(_echo_migration, family),
    )


def _migration_csv_rows(response: pb.GetMigrationMatrixResponse) -> list[list[object]]:
    rows: list[list[object]] = [["from_segment_id", "to_segment_id", "customer_count"]]
    rows += [
        [cell.from_segment_id, cell.to_segment_id, cell.customer_count] for cell in response.cells
    ]
    return rows


def _echo_migration(family: str, response: pb.GetMigrationMatrixResponse) -> None:
    click.echo(_range_line(f"Customers of {family}, from (rows) to (columns)", response))
    names = [segment_id or "(none)" for segment_id in response.segment_ids]
    counts = {
        (cell.from_segment_id, cell.to_segment_id): cell.customer_count for cell in response.cells
    }
    table = [["FROM \\ TO", *names]]
    for from_id, name in zip(response.segment_ids, names, strict=True):
        table.append(
            [name, *(f"{counts.get((from_id, to_id), 0):,}" for to_id in response.segment_ids)]
        )
    _echo_table(table)


# ---- health ----------------------------------------------------------------------------------


@report.command()
@click.option("--family", default="", help="Only this family's segments (default: all).")
@click.option("--segment", "segment_ids", multiple=True, help="Only these segments (repeatable).")
@_range_options("14d")
@click.option("--time-zone", default="", help="IANA zone whose midnights end the days (UTC).")
@click.option("--stale-after", type=SPAN, help="Stale threshold, e.g. 2d (default: server's).")
def health(
    family: str,
    segment_ids: tuple[str, ...],
    since: timedelta | None,
    start: datetime | None,
    end: datetime | None,
    output_format: str,
    time_zone: str,
    stale_after: timedelta | None,
) -> None:
    """Segment sizes day by day, segment lint warnings and stale synced fields.

    CSV has the sizes only (one row per day and segment); JSON has everything."""
    request = pb.GetSegmentHealthRequest(
        family=family, segment_ids=segment_ids, time_zone=time_zone
    )
    _range(since, start, end, "14d").fill(request)
    if stale_after is not None:
        request.stale_after.FromTimedelta(stale_after)
    _show(
        lambda reports: reports.GetSegmentHealth(request),
        output_format,
        _health_csv_rows,
        partial(_echo_health, time_zone),
    )


def _day_ends(response: pb.GetSegmentHealthResponse) -> list[datetime]:
    return [moment.ToDatetime(tzinfo=UTC) for moment in response.day_ends]


def _health_csv_rows(response: pb.GetSegmentHealthResponse) -> list[list[object]]:
    rows: list[list[object]] = [["day_end", "segment_id", "display_name", "members"]]
    for sizes in response.sizes:
        rows += [
            [day_end.isoformat(), sizes.segment_id, sizes.display_name, members]
            for day_end, members in zip(_day_ends(response), sizes.members, strict=True)
        ]
    return rows


def _echo_health(time_zone: str, response: pb.GetSegmentHealthResponse) -> None:
    zone = ZoneInfo(time_zone) if time_zone else None
    click.echo(f"Members at the end of each day ({time_zone or 'UTC'}):")
    table = [["DAY", *(sizes.segment_id for sizes in response.sizes)]]
    for index, day_end in enumerate(_day_ends(response)):
        # The day a day-end closes: the next midnight, or the range's end for the last day.
        day = (day_end - timedelta(microseconds=1)).astimezone(zone or UTC).date()
        table.append([day.isoformat(), *(f"{sizes.members[index]:,}" for sizes in response.sizes)])
    _echo_table(table)
    click.echo("\nLint warnings:" if response.lint_warnings else "\nLint warnings: none")
    for warning in response.lint_warnings:
        kind = spb.LintWarningKind.Name(warning.kind).removeprefix("LINT_WARNING_KIND_")
        click.echo(f"  {kind.lower()} ({', '.join(warning.segment_ids)}): {warning.message}")
    threshold = human_duration(response.stale_after.ToTimedelta().total_seconds())
    if not response.stale_fields:
        click.echo(f"\nStale fields (not refreshed for {threshold}): none")
        return
    click.echo(f"\nStale fields (not refreshed for {threshold}):")
    stale = [["SOURCE.FIELD", "STALE", "CUSTOMERS", "OLDEST REFRESH"]]
    for field in response.stale_fields:
        oldest = field.oldest_refresh_time.ToDatetime(tzinfo=UTC)
        stale.append(
            [
                f"{field.source}.{field.field}",
                f"{field.stale_customers:,}",
                f"{field.customers:,}",
                _moment(oldest, zone),
            ]
        )
    _echo_table(stale)
