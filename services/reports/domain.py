"""The values reports are made of; no grpc, no SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum


@dataclass(frozen=True)
class Tally:
    """What the store adds up over one group of conversations: counts, sums and the
    nearest-rank percentiles, before any division."""

    conversations: int = 0
    customers: int = 0
    first_responses: int = 0
    first_response_p50: float = 0.0
    first_response_p90: float = 0.0
    resolutions: int = 0
    resolution_p50: float = 0.0
    resolution_p90: float = 0.0
    first_response_decided: int = 0
    first_response_met: int = 0
    resolution_decided: int = 0
    resolution_met: int = 0
    csat_count: int = 0
    csat_sum: int = 0
    bot_conversations: int = 0
    bot_contained: int = 0
    bot_escalated: int = 0
    reopened: int = 0
    handling_seconds: float = 0.0


@dataclass(frozen=True)
class Retention:
    base: int = 0
    retained: int = 0


@dataclass(frozen=True)
class Figures:
    """One group's figures, as the contract's ``Figures`` message defines them."""

    conversations: int = 0
    customers: int = 0
    first_responses: int = 0
    first_response_p50_seconds: float = 0.0
    first_response_p90_seconds: float = 0.0
    resolutions: int = 0
    resolution_p50_seconds: float = 0.0
    resolution_p90_seconds: float = 0.0
    first_response_sla_decided: int = 0
    first_response_sla_attainment: float = 0.0
    resolution_sla_decided: int = 0
    resolution_sla_attainment: float = 0.0
    csat_count: int = 0
    csat_average: float = 0.0
    bot_conversations: int = 0
    bot_containment_rate: float = 0.0
    escalation_rate: float = 0.0
    reopen_rate: float = 0.0
    handling_seconds: float = 0.0
    handling_seconds_per_conversation: float = 0.0
    support_cost_per_customer: float = 0.0
    retention_base: int = 0
    retention_rate: float = 0.0


class Metric(Enum):
    """A scorecard figure that can be flagged: the field it reads, the count that says
    whether there is data behind it, and whether a higher value is worse."""

    FIRST_RESPONSE_P50 = ("first_response_p50_seconds", "first_responses", True)
    FIRST_RESPONSE_P90 = ("first_response_p90_seconds", "first_responses", True)
    RESOLUTION_P50 = ("resolution_p50_seconds", "resolutions", True)
    RESOLUTION_P90 = ("resolution_p90_seconds", "resolutions", True)
    FIRST_RESPONSE_SLA_ATTAINMENT = (
        "first_response_sla_attainment",
        "first_response_sla_decided",
        False,
    )
    RESOLUTION_SLA_ATTAINMENT = ("resolution_sla_attainment", "resolution_sla_decided", False)
    CSAT_AVERAGE = ("csat_average", "csat_count", False)
    BOT_CONTAINMENT_RATE = ("bot_containment_rate", "bot_conversations", False)
    ESCALATION_RATE = ("escalation_rate", "bot_conversations", True)
    REOPEN_RATE = ("reopen_rate", "conversations", True)
    HANDLING_TIME = ("handling_seconds_per_conversation", "conversations", True)
    SUPPORT_COST_PER_CUSTOMER = ("support_cost_per_customer", "customers", True)
    RETENTION_RATE = ("retention_rate", "retention_base", False)

    def __init__(self, figure: str, evidence: str, higher_is_worse: bool) -> None:
        self.figure = figure
        self.evidence = evidence
        self.higher_is_worse = higher_is_worse


@dataclass(frozen=True)
class Gap:
    metric: Metric
    value: float
    blended: float
    relative_gap: float


@dataclass(frozen=True)
class SegmentScore:
    segment_id: str
    display_name: str
    figures: Figures
    gaps: tuple[Gap, ...] = ()


@dataclass(frozen=True)
class ReportOptions:
    """What a caller may tune, with the server's defaults already filled in."""

    start: datetime
    end: datetime
    hourly_cost: float
    gap_margin: float = 0.0
    churn_segment_id: str = ""


@dataclass(frozen=True)
class Scorecard:
    segments: tuple[SegmentScore, ...]
    blended: Figures
    options: ReportOptions


@dataclass(frozen=True)
class CohortComparison:
    entered: Figures
    others: Figures
    options: ReportOptions


@dataclass(frozen=True)
class MigrationMatrix:
    segment_ids: tuple[str, ...]
    # (from, to, customers) for every pair, row by row.
    cells: tuple[tuple[str, str, int], ...]
    start: datetime
    end: datetime


@dataclass(frozen=True)
class SegmentInfo:
    segment_id: str
    display_name: str
    family: str
    priority: int


@dataclass(frozen=True)
class SizeSeries:
    segment_id: str
    display_name: str
    members: tuple[int, ...]


@dataclass(frozen=True)
class StaleField:
    source: str
    field: str
    stale_customers: int
    customers: int
    oldest_refresh_time: datetime | None


@dataclass(frozen=True)
class LintWarning:
    """A segments lint warning as that service reported it (``kind`` is its enum name)."""

    kind: str
    segment_ids: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class SegmentHealth:
    day_ends: tuple[datetime, ...]
    sizes: tuple[SizeSeries, ...]
    lint_warnings: tuple[LintWarning, ...]
    stale_fields: tuple[StaleField, ...]
    stale_after: timedelta
