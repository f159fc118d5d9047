"""Reports: what each segment's customers really get, beside the blended figure.

Conversation figures come from routing's facts, grouped by the segments the customer was
in at routing; memberships, history and field sources come from the services that own
them. Every request is checked whole before anything is read, so bad input never costs a
query.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.core.clock import Clock, time_zone_named, utc_now
from services.core.errors import FailedPrecondition, FieldViolation, NotFound
from services.core.validation import raise_if, required
from services.reports import logic
from services.reports.domain import (
    CohortComparison,
    MigrationMatrix,
    ReportOptions,
    Retention,
    Scorecard,
    SegmentHealth,
    SegmentInfo,
    SegmentScore,
    SizeSeries,
    Tally,
)
from services.reports.repository import ReportRepository
from services.reports.sources import ProfilesSource, SegmentsSource
from services.routing.logic import resource_id_problems

MAX_SEGMENTS = 100
# Entrants are matched by id in one query; beyond this the comparison is refused rather
# than sent as a statement the database may reject.
MAX_COHORT_CUSTOMERS = 20_000
# A staleness threshold beyond ten years means "never stale"; longer ones overflow dates.
MAX_STALE_AFTER = timedelta(days=3650)


@dataclass(frozen=True)
class ReportDefaults:
    hourly_cost: float
    gap_margin: float
    churn_segment_id: str
    stale_after: timedelta


class Reports:
    def __init__(
        self,
        repository: ReportRepository,
        segments: SegmentsSource,
        profiles: ProfilesSource,
        defaults: ReportDefaults,
        clock: Clock = utc_now,
    ) -> None:
        self.repository = repository
        self.segments = segments
        self.profiles = profiles
        self.defaults = defaults
        self.clock = clock

    def scorecard(
        self,
        *,
        family: str,
        segment_ids: Sequence[str],
        start: datetime | None,
        end: datetime | None,
        hourly_cost: float,
        gap_margin: float,
        churn_segment_id: str,
    ) -> Scorecard:
        problems = _selection_problems(family, segment_ids, required_one=True)
        problems += _cost_problems(hourly_cost, gap_margin)
        if churn_segment_id:
            problems += resource_id_problems(churn_segment_id, "churn_segment_id")
        options = self._options(start, end, hourly_cost, gap_margin, churn_segment_id, problems)
        chosen = self._chosen(family, segment_ids)
        ids = [s.segment_id for s in chosen]
        # Memberships are the segments server's work: it counts while the store adds up.
        with ThreadPoolExecutor(1) as pool:
            asked = pool.submit(
                self.segments.retention,
                ids,
                options.churn_segment_id,
                options.start,
                options.end,
            )
            tallies, all_tally = self.repository.tally_scorecard(ids, options.start, options.end)
            retention, everyone = asked.result()
        blended = logic.figures_from(all_tally, everyone, options.hourly_cost)
        rows = []
        for segment in chosen:
            figures = logic.figures_from(
                tallies.get(segment.segment_id, Tally()),
                retention.get(segment.segment_id, Retention()),
                options.hourly_cost,
            )
            found = logic.gaps(figures, blended, options.gap_margin)
            rows.append(SegmentScore(segment.segment_id, segment.display_name, figures, found))
        return Scorecard(tuple(rows), blended, options)

    def compare_cohort(
        self,
        *,
        segment_id: str,
        start: datetime | None,
        end: datetime | None,
        hourly_cost: float,
    ) -> CohortComparison:
        problems = resource_id_problems(segment_id, "segment_id")
        problems += _cost_problems(hourly_cost, 0.0)
        options = self._options(start, end, hourly_cost, 0.0, "", problems)
        entrants = self.segments.entrants(segment_id, options.start, options.end)
        if len(entrants) > MAX_COHORT_CUSTOMERS:
            raise FailedPrecondition(
                f"{len(entrants)} customers entered {segment_id!r} in the range; a cohort "
                f"comparison takes at most {MAX_COHORT_CUSTOMERS}: shorten the range",
                reason="COHORT_TOO_LARGE",
            )
        tallies = self.repository.tally_cohort(sorted(entrants), options.start, options.end)
        figures = {
            name: logic.figures_from(tallies.get(name, Tally()), Retention(), options.hourly_cost)
            for name in ("entered", "others")
        }
        return CohortComparison(figures["entered"], figures["others"], options)

    def migration_matrix(
        self, *, family: str, start: datetime | None, end: datetime | None
    ) -> MigrationMatrix:
        problems = required("family", family)
        options = self._options(start, end, 0.0, 0.0, "", problems)
        order = [s.segment_id for s in self._chosen(family, ())]
        moves, stayed = self.segments.migration(family, options.start, options.end)
        rows, cells = logic.migration_cells(order, moves, stayed)
        return MigrationMatrix(rows, cells, options.start, options.end)

    def segment_health(
        self,
        *,
        family: str,
        segment_ids: Sequence[str],
        start: datetime | None,
        end: datetime | None,
        time_zone: str,
        stale_after: timedelta | None,
    ) -> SegmentHealth:
        problems = _selection_problems(family, segment_ids, required_one=False)
        if time_zone and time_zone_named(time_zone) is None:
            problems.append(FieldViolation("time_zone", "not an IANA time zone name"))
        if stale_after is not None and not timedelta(0) < stale_after <= MAX_STALE_AFTER:
            problems.append(
                FieldViolation(
                    "stale_after", f"must be positive, at most {MAX_STALE_AFTER.days} days"
                )
            )
        options = self._options(start, end, 0.0, 0.0, "", problems)
        if options.end - options.start > timedelta(days=logic.MAX_DAYS):
            raise_if([FieldViolation("end_time", f"at most {logic.MAX_DAYS} days after start")])
        chosen = (
            self._chosen(family, segment_ids) if family or segment_ids else self.segments.segments()
        )
        ends = logic.day_ends(options.start, options.end, time_zone)
        sizes = self.segments.sizes([s.segment_id for s in chosen], ends) if chosen else {}
        threshold = stale_after or self.defaults.stale_after
        now = self.clock()
        return SegmentHealth(
            day_ends=ends,
            sizes=tuple(
                SizeSeries(s.segment_id, s.display_name, tuple(sizes.get(s.segment_id, [])))
                for s in chosen
            ),
            lint_warnings=tuple(self.segments.lint(now)),
            stale_fields=tuple(self.profiles.stale_fields(now - threshold)),
            stale_after=threshold,
        )

    def _options(
        self,
        start: datetime | None,
        end: datetime | None,
        hourly_cost: float,
        gap_margin: float,
        churn_segment_id: str,
        problems: list[FieldViolation],
    ) -> ReportOptions:
        """The range and tunables with defaults filled in; raises for every problem found
        so far plus the range's own."""
        end = end or self.clock()
        if start is None:
            problems.append(FieldViolation("start_time", "is required"))
        elif end <= start:
            problems.append(FieldViolation("end_time", "must be after start_time"))
        raise_if(problems)
        assert start is not None
        return ReportOptions(
            start=start,
            end=end,
            hourly_cost=hourly_cost or self.defaults.hourly_cost,
            gap_margin=gap_margin or self.defaults.gap_margin,
            churn_segment_id=churn_segment_id or self.defaults.churn_segment_id,
        )

    def _chosen(self, family: str, segment_ids: Sequence[str]) -> list[SegmentInfo]:
        """The family's segments in precedence order, or the named ones in the order asked
        (with their names where they still exist)."""
        if family:
            found = self.segments.segments(family)
            if not found:
                raise NotFound("segment family", family)
            return found
        known = {s.segment_id: s for s in self.segments.segments()}
        return [known.get(i) or SegmentInfo(i, i, "", 0) for i in segment_ids]


def _selection_problems(
    family: str, segment_ids: Sequence[str], *, required_one: bool
) -> list[FieldViolation]:
    problems: list[FieldViolation] = []
    if family and segment_ids:
        problems.append(FieldViolation("segment_ids", "give a family or segment ids, not both"))
    elif required_one and not family and not segment_ids:
        problems.append(FieldViolation("family", "give a family or segment ids"))
    if family:
        problems += resource_id_problems(family, "family")
    if len(segment_ids) > MAX_SEGMENTS:
        problems.append(FieldViolation("segment_ids", f"at most {MAX_SEGMENTS} segments"))
    for index, segment_id in enumerate(segment_ids[:MAX_SEGMENTS]):
        problems += resource_id_problems(segment_id, f"segment_ids[{index}]")
    if len(set(segment_ids)) != len(segment_ids):
        problems.append(FieldViolation("segment_ids", "each segment at most once"))
    return problems


def _cost_problems(hourly_cost: float, gap_margin: float) -> list[FieldViolation]:
    problems = []
    if not hourly_cost >= 0:
        problems.append(FieldViolation("hourly_cost", "must be 0 (the default) or positive"))
    if not gap_margin >= 0:
        problems.append(FieldViolation("gap_margin", "must be 0 (the default) or positive"))
    return problems
