"""Reports between the domain and the contract."""

from __future__ import annotations

from dataclasses import asdict

from switchboard.reports.v1 import reports_pb2 as pb
from switchboard.segments.v1 import segments_pb2 as spb

from services.reports.domain import (
    CohortComparison,
    Figures,
    Gap,
    LintWarning,
    MigrationMatrix,
    Scorecard,
    SegmentHealth,
    StaleField,
)
from services.routing.convert import duration_message
from services.segments.convert import timestamp


def scorecard_to_proto(scorecard: Scorecard) -> pb.GetScorecardResponse:
    options = scorecard.options
    return pb.GetScorecardResponse(
        segments=[
            pb.SegmentScore(
                segment_id=row.segment_id,
                display_name=row.display_name,
                figures=figures_to_proto(row.figures),
                gaps=[_gap(gap) for gap in row.gaps],
            )
            for row in scorecard.segments
        ],
        blended=figures_to_proto(scorecard.blended),
        start_time=timestamp(options.start),
        end_time=timestamp(options.end),
        hourly_cost=options.hourly_cost,
        gap_margin=options.gap_margin,
        churn_segment_id=options.churn_segment_id,
    )


def cohort_to_proto(comparison: CohortComparison) -> pb.CompareCohortResponse:
    return pb.CompareCohortResponse(
        entered=figures_to_proto(comparison.entered),
        others=figures_to_proto(comparison.others),
        start_time=timestamp(comparison.options.start),
        end_time=timestamp(comparison.options.end),
    )


def migration_to_proto(matrix: MigrationMatrix) -> pb.GetMigrationMatrixResponse:
    return pb.GetMigrationMatrixResponse(
        segment_ids=list(matrix.segment_ids),
        cells=[
            pb.MigrationCell(from_segment_id=source, to_segment_id=target, customer_count=count)
            for source, target, count in matrix.cells
        ],
        start_time=timestamp(matrix.start),
        end_time=timestamp(matrix.end),
    )


def health_to_proto(health: SegmentHealth) -> pb.GetSegmentHealthResponse:
    return pb.GetSegmentHealthResponse(
        day_ends=[timestamp(moment) for moment in health.day_ends],
        sizes=[
            pb.SegmentSizes(
                segment_id=series.segment_id,
                display_name=series.display_name,
                members=list(series.members),
            )
            for series in health.sizes
        ],
        lint_warnings=[_lint_warning(warning) for warning in health.lint_warnings],
        stale_fields=[_stale_field(field) for field in health.stale_fields],
        stale_after=duration_message(health.stale_after),
    )


def figures_to_proto(figures: Figures) -> pb.Figures:
    return pb.Figures(**asdict(figures))


def _gap(gap: Gap) -> pb.Gap:
    return pb.Gap(
        metric=pb.Metric.Value(f"METRIC_{gap.metric.name}"),
        value=gap.value,
        blended=gap.blended,
        relative_gap=gap.relative_gap,
    )


def _lint_warning(warning: LintWarning) -> spb.LintWarning:
    return spb.LintWarning(
        kind=spb.LintWarningKind.Value(f"LINT_WARNING_KIND_{warning.kind}"),
        segment_ids=list(warning.segment_ids),
        message=warning.message,
    )


def _stale_field(field: StaleField) -> pb.StaleField:
    message = pb.StaleField(
        source=field.source,
        field=field.field,
        stale_customers=field.stale_customers,
        customers=field.customers,
    )
    if field.oldest_refresh_time is not None:
        message.oldest_refresh_time.CopyFrom(timestamp(field.oldest_refresh_time))
    return message
