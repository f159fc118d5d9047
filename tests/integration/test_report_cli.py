"""``switchboard report ...`` against a real routing server: the table, the CSV and the JSON
show the figures the ReportService answers, and bad input reads as a clean error."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner, Result
from google.protobuf import json_format
from google.protobuf.message import Message
from switchboard.reports.v1 import reports_pb2 as rpb
from switchboard.reports.v1 import reports_pb2_grpc
from switchboard.routing.v1 import routing_pb2 as pb
from switchboard.segments.v1 import segments_pb2 as spb

from services.core.server import RunningServer
from services.reports.cli import FIGURE_FIELDS, human_duration, report
from tests.integration.conftest import ManualClock
from tests.integration.routing_setup import (
    MONDAY,
    Desk,
    Profiles,
    Routing,
    Segments,
    action,
    create_agent,
    create_customer,
    create_policy,
    create_queue,
    create_tier_segments,
    set_rules,
    sla_policy,
    timestamp,
)

START = MONDAY - timedelta(hours=1)
END = MONDAY + timedelta(days=3)
RANGE = ["--start", START.isoformat(), "--end", END.isoformat()]


@pytest.fixture
def desk(routing: Routing, segments_clock: ManualClock) -> Desk:
    segments_clock.now = MONDAY
    return Desk(routing, segments_clock)


@pytest.fixture
def served(desk: Desk, segments: Segments, profiles: Profiles) -> None:
    """Tiers by seats and one queue with a 30-minute first response. Enterprise (Acme) is
    answered in 2 minutes and rates 5, Growth (Bloom) in 10 minutes and rates 4, Starter
    (Cleo) in 3 hours and rates 2, and one of Cleo's conversations is reopened. Everyone
    entered their tier on Monday morning."""
    create_tier_segments(segments)
    routing = desk.routing
    create_policy(routing, sla_policy("thirty", first_response=timedelta(minutes=30)))
    create_queue(routing, "general")
    create_agent(routing, "ana", chats=10, online=True)
    set_rules(routing, [], default=action("general", policy="thirty"))
    for customer_id, seats in [("acme", 120), ("bloom", 12), ("cleo", 3)]:
        create_customer(profiles, customer_id, seats=seats)
    segments.RecomputeMemberships(spb.RecomputeMembershipsRequest(scope=spb.RECOMPUTE_SCOPE_ALL))
    answered_after = {"acme": 2, "bloom": 10, "cleo": 180}
    rating = {"acme": 5, "bloom": 4, "cleo": 2}
    for number, customer_id in enumerate(["acme", "bloom", "cleo"] * 2):
        desk.at(MONDAY + timedelta(hours=8 * number))
        conversation_id = f"c{number}"
        desk.route(conversation_id, customer_id=customer_id)
        desk.advance(minutes=answered_after[customer_id])
        desk.record(conversation_id, pb.CONVERSATION_EVENT_KIND_AGENT_REPLY, agent_id="ana")
        desk.advance(minutes=20)
        desk.record(conversation_id, pb.CONVERSATION_EVENT_KIND_RESOLVE)
        desk.record(
            conversation_id, pb.CONVERSATION_EVENT_KIND_CSAT, csat_rating=rating[customer_id]
        )
        if number == 5:
            desk.advance(minutes=5)
            desk.record(conversation_id, pb.CONVERSATION_EVENT_KIND_REOPEN)


@pytest.fixture
def cli(routing_server: RunningServer, admin_key: str) -> CliRunner:
    return CliRunner(
        env={
            "SWITCHBOARD_API_KEY": admin_key,
            "SWITCHBOARD_ROUTING_ADDRESS": f"127.0.0.1:{routing_server.port}",
            "SWITCHBOARD_CALL_DEADLINE_SECONDS": "10",
        }
    )


def run(cli: CliRunner, *args: str) -> Result:
    result = cli.invoke(report, list(args))
    assert result.exit_code == 0, result.output
    return result


@dataclass(frozen=True)
class Shown:
    """One report in the three formats."""

    table: dict[str, list[str]]
    table_text: str
    csv_rows: list[dict[str, str]]
    json: Message


def shown_in_every_format(cli: CliRunner, args: list[str], response: Message) -> Shown:
    """The report of ``args`` as a table, as CSV, and its JSON parsed into ``response``."""
    table_text = run(cli, *args).output
    csv_text = run(cli, *args, "--format", "csv").output
    json_format.Parse(run(cli, *args, "--format", "json").output, response)
    return Shown(
        table_rows(table_text), table_text, list(csv.DictReader(io.StringIO(csv_text))), response
    )


def scorecard_rpc(reports: reports_pb2_grpc.ReportServiceStub) -> rpb.GetScorecardResponse:
    request = rpb.GetScorecardRequest(
        family="tier", start_time=timestamp(START), end_time=timestamp(END)
    )
    return reports.GetScorecard(request)


def table_rows(output: str) -> dict[str, list[str]]:
    """Table lines by their first cell, the cells split on runs of two spaces or more."""
    rows = {}
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) > 2:
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.usefixtures("served")
def test_scorecard_json_is_the_rpc_response(
    cli: CliRunner, reports: reports_pb2_grpc.ReportServiceStub
) -> None:
    expected = scorecard_rpc(reports)
    shown = run(cli, "scorecard", "--family", "tier", *RANGE, "--format", "json").output

    parsed = json_format.Parse(shown, rpb.GetScorecardResponse())
    assert parsed == expected
    assert "first_response_p50_seconds" in json.loads(shown)["blended"]


@pytest.mark.usefixtures("served")
def test_scorecard_csv_has_every_figure_of_every_segment_and_blended(
    cli: CliRunner, reports: reports_pb2_grpc.ReportServiceStub
) -> None:
    expected = scorecard_rpc(reports)
    shown = run(cli, "scorecard", "--family", "tier", *RANGE, "--format", "csv").output

    rows = list(csv.DictReader(io.StringIO(shown)))
    assert [row["segment_id"] for row in rows] == [
        "tier_enterprise",
        "tier_growth",
        "tier_starter",
        "",
    ]
    assert rows[-1]["display_name"] == "Blended"
    every_figures = [*(score.figures for score in expected.segments), expected.blended]
    for row, figures in zip(rows, every_figures, strict=True):
        # Raw numbers: a float printed by the CSV reads back as exactly the same float.
        assert {name: float(row[name]) for name in FIGURE_FIELDS} == {
            name: float(getattr(figures, name)) for name in FIGURE_FIELDS
        }
    starter = rows[2]
    assert "first_response_p50_seconds:" in starter["gaps"]
    assert rows[0]["gaps"] == ""


@pytest.mark.usefixtures("served")
def test_scorecard_table_shows_human_durations_and_flags_starters_slow_first_response(
    cli: CliRunner, reports: reports_pb2_grpc.ReportServiceStub
) -> None:
    expected = scorecard_rpc(reports)
    shown = run(cli, "scorecard", "--family", "tier", *RANGE).output
    rows = table_rows(shown)

    starter = next(s for s in expected.segments if s.segment_id == "tier_starter")
    assert rows["Tier Enterprise"][:2] == ["2", "2m 00s"]
    # Starter's median is 3 hours against 10 minutes blended; its p90 is the blended p90.
    assert rows["Tier Starter"][:3] == [
        "2",
        human_duration(starter.figures.first_response_p50_seconds) + "!",
        human_duration(starter.figures.first_response_p90_seconds),
    ]
    assert rows["Tier Starter"][1] == "3h 00m!"
    assert rows["Blended"][0] == "6"
    assert f"5.00 ({expected.segments[0].figures.csat_count})" in rows["Tier Enterprise"]
    assert "!" not in "".join(rows["Tier Enterprise"])
    legend = shown.split("worse than blended by more than", 1)[1]
    assert "Tier Starter FRT P50: 3h 00m vs" in legend
    gap = next(g for g in starter.gaps if g.metric == rpb.METRIC_FIRST_RESPONSE_P50)
    assert f"({gap.relative_gap * 100:.1f}% worse)" in legend


@pytest.mark.usefixtures("served")
def test_a_segment_without_conversations_shows_dashes_not_zeros(cli: CliRunner) -> None:
    shown = run(
        cli,
        "scorecard",
        "--segment",
        "tier_enterprise",
        "--start",
        (END + timedelta(days=1)).isoformat(),
        "--end",
        (END + timedelta(days=2)).isoformat(),
    ).output

    # Retention is left out: it reads memberships, not conversations.
    enterprise = table_rows(shown)["Tier Enterprise"]
    assert enterprise[0] == "0"
    assert set(enterprise[1:-1]) == {"-"}


def test_since_counts_back_from_now(cli: CliRunner, segments: Segments) -> None:
    create_tier_segments(segments)
    shown = run(cli, "scorecard", "--family", "tier", "--since", "12h", "--format", "json")

    response = json_format.Parse(shown.output, rpb.GetScorecardResponse())
    start = response.start_time.ToDatetime(tzinfo=UTC)
    assert abs(start - (datetime.now(UTC) - timedelta(hours=12))) < timedelta(minutes=1)


@pytest.mark.parametrize("since", ["30x", "d30", "0d", "-3d"])
def test_a_bad_since_is_a_usage_error(cli: CliRunner, since: str) -> None:
    result = cli.invoke(report, ["scorecard", "--family", "tier", "--since", since])

    assert result.exit_code == 2
    assert "--since" in result.output


def test_a_request_the_server_refuses_names_the_status_and_the_field(cli: CliRunner) -> None:
    result = cli.invoke(report, ["scorecard", *RANGE, "--gap-margin", "-1"])

    assert result.exit_code == 1
    assert result.output.startswith("Error: INVALID_ARGUMENT:")
    assert "gap_margin" in result.output
    assert "Traceback" not in result.output


@pytest.mark.usefixtures("served")
def test_cohort_shows_entered_beside_others(
    cli: CliRunner, reports: reports_pb2_grpc.ReportServiceStub
) -> None:
    request = rpb.CompareCohortRequest(
        segment_id="tier_starter", start_time=timestamp(START), end_time=timestamp(END)
    )
    expected = reports.CompareCohort(request)
    args = ["cohort", "--segment", "tier_starter", *RANGE]

    shown = shown_in_every_format(cli, args, rpb.CompareCohortResponse())
    table, rows = shown.table, shown.csv_rows

    assert shown.json == expected
    assert expected.entered.conversations == 2
    assert table["FIGURE"] == ["ENTERED", "OTHERS"]
    assert table["CONVERSATIONS"] == [
        str(expected.entered.conversations),
        str(expected.others.conversations),
    ]
    assert "RETENTION" not in table
    assert [row["group"] for row in rows] == ["entered", "others"]
    assert int(rows[1]["conversations"]) == expected.others.conversations


@pytest.mark.usefixtures("served")
def test_migration_matrix_counts_agree_in_every_format(
    cli: CliRunner, reports: reports_pb2_grpc.ReportServiceStub
) -> None:
    request = rpb.GetMigrationMatrixRequest(
        family="tier", start_time=timestamp(START), end_time=timestamp(END)
    )
    expected = reports.GetMigrationMatrix(request)
    args = ["migration", "--family", "tier", *RANGE]

    shown = shown_in_every_format(cli, args, rpb.GetMigrationMatrixResponse())
    table, rows = shown.table, shown.csv_rows

    assert shown.json == expected
    names = [segment_id or "(none)" for segment_id in expected.segment_ids]
    assert table["FROM \\ TO"] == names
    counts = {(c.from_segment_id, c.to_segment_id): c.customer_count for c in expected.cells}
    for from_id, name in zip(expected.segment_ids, names, strict=True):
        assert table[name] == [str(counts[from_id, to_id]) for to_id in expected.segment_ids]
    assert {(r["from_segment_id"], r["to_segment_id"]): int(r["customer_count"]) for r in rows} == (
        counts
    )


@pytest.mark.usefixtures("served")
def test_health_shows_a_row_per_day_in_the_time_zone(
    cli: CliRunner, reports: reports_pb2_grpc.ReportServiceStub
) -> None:
    request = rpb.GetSegmentHealthRequest(
        family="tier",
        start_time=timestamp(START),
        end_time=timestamp(END),
        time_zone="Europe/Berlin",
    )
    expected = reports.GetSegmentHealth(request)
    args = ["health", "--family", "tier", *RANGE, "--time-zone", "Europe/Berlin"]

    shown = shown_in_every_format(cli, args, rpb.GetSegmentHealthResponse())
    table, rows = shown.table, shown.csv_rows

    assert shown.json == expected
    assert table["DAY"] == [sizes.segment_id for sizes in expected.sizes]
    # 08:00 UTC on Monday is 09:00 in Berlin: Monday to Thursday.
    days = [day for day in table if day.startswith("2025-")]
    assert days == ["2025-03-03", "2025-03-04", "2025-03-05", "2025-03-06"]
    assert len(rows) == len(expected.day_ends) * len(expected.sizes)
    assert "Lint warnings" in shown.table_text
    assert "Stale fields" in shown.table_text
