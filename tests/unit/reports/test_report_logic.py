"""Figures, gaps and days of the reports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.reports.domain import Figures, Metric, Retention, Tally
from services.reports.logic import day_ends, figures_from, gaps, migration_cells


def test_figures_divide_what_the_store_added_up() -> None:
    figures = figures_from(
        Tally(
            conversations=4,
            customers=2,
            first_response_decided=4,
            first_response_met=3,
            csat_count=2,
            csat_sum=7,
            bot_conversations=2,
            bot_contained=1,
            bot_escalated=1,
            reopened=1,
            handling_seconds=7200,
        ),
        Retention(base=10, retained=9),
        hourly_cost=30.0,
    )
    assert figures.first_response_sla_attainment == 0.75
    assert figures.csat_average == 3.5
    assert (figures.bot_containment_rate, figures.escalation_rate) == (0.5, 0.5)
    assert figures.reopen_rate == 0.25
    assert figures.handling_seconds_per_conversation == 1800
    assert figures.support_cost_per_customer == 30.0  # 2 hours x 30 over 2 customers
    assert figures.retention_rate == 0.9


def test_nothing_to_divide_gives_zeros() -> None:
    assert figures_from(Tally(), Retention(), hourly_cost=40.0) == Figures()


def test_gaps_know_which_way_is_worse_and_ignore_missing_data() -> None:
    blended = Figures(
        conversations=10,
        first_responses=10,
        first_response_p50_seconds=600,
        csat_count=10,
        csat_average=4.0,
        first_response_sla_decided=10,
        first_response_sla_attainment=0.8,
    )
    segment = Figures(
        conversations=3,
        first_responses=3,
        first_response_p50_seconds=500,  # faster: not a gap
        csat_count=3,
        csat_average=3.0,  # 25% worse
        first_response_sla_decided=0,  # no verdict yet: never flagged
    )
    found = gaps(segment, blended, margin=0.1)
    assert [g.metric for g in found] == [Metric.CSAT_AVERAGE]
    assert found[0].relative_gap == pytest.approx(0.25)
    assert gaps(segment, blended, margin=0.3) == ()


def test_days_end_at_local_midnights_across_a_daylight_saving_change() -> None:
    start = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    end = datetime(2026, 3, 30, 12, 0, tzinfo=UTC)
    ends = day_ends(start, end, "Europe/Berlin")
    assert [e.astimezone(UTC).isoformat() for e in ends] == [
        "2026-03-28T23:00:00+00:00",  # midnight in winter time
        "2026-03-29T22:00:00+00:00",  # the 23-hour day
        "2026-03-30T12:00:00+00:00",
    ]


def test_migration_matrix_is_complete_and_keeps_deleted_segments() -> None:
    rows, cells = migration_cells(
        ["gold", "silver"], [("silver", "gold", 2), ("bronze", "", 1)], {"gold": 5}
    )
    assert rows == ("gold", "silver", "bronze", "")
    assert len(cells) == 16
    table = {(a, b): n for a, b, n in cells}
    assert table[("silver", "gold")] == 2
    assert table[("gold", "gold")] == 5
    assert table[("bronze", "")] == 1
    assert sum(table.values()) == 8
