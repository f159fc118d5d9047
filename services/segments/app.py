"""What the segments service does, independent of how it is called (gRPC, workers, CLI).

Each method validates its input completely before touching the store or another service,
and reports every problem at once with the field it concerns.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol
from uuid import uuid4

from services.core.clock import Clock, utc_now
from services.core.errors import Conflict, FieldViolation, InvalidArgument
from services.core.validation import actor_problems, page_limit, raise_if, required
from services.profiles.logic import validate_customer_id
from services.segments.domain import (
    EDITABLE_FIELDS,
    Membership,
    MembershipChange,
    RevisionAction,
    Segment,
    SegmentRevision,
    Trigger,
)
from services.segments.logic import (
    CompiledSegment,
    LintWarning,
    SegmentPlan,
    Verdicts,
    compile_plan,
    compile_segments,
    definitions_fingerprint,
    evaluate_customer,
    lint,
    membership_transitions,
    precedence,
    rule_attributes,
    shifts,
    token_number,
    token_position,
    validate_definition,
    validate_references,
    validate_rule_document,
    validate_segment_id,
    winners_at,
    winners_by_customer,
)
from services.segments.profiles_client import ChangedCustomers
from services.segments.repository import (
    DEFINITIONS_EVALUATED,
    DEFINITIONS_PENDING,
    ChangeFilter,
    CustomerOutcome,
    SegmentRepository,
    decode_token,
    encode_token,
)
from services.segments.rounds import RoundRepository
from services.segments.rules import (
    EvaluationContext,
    Explanation,
    compile_rule,
    document_size_problem,
    documents_within,
    explain,
    referenced_segments,
)

MAX_SAMPLE = 100
DEFAULT_SAMPLE = 10
# Customers evaluated and stored per transaction during recomputation: one chunk of a round.
RECOMPUTE_BATCH = 1000
# How long a round may go without progress before another may start over (a coordinator or
# worker died); every finished chunk extends it.
ROUND_LEASE = timedelta(minutes=10)
# How long RecomputeMemberships waits for the workers' round before answering ABORTED.
ROUND_WAIT_SECONDS = 3.0
# Limits of the history reads (GetSegmentSizes, GetRetention): one report's worth.
MAX_HISTORY_SEGMENTS = 100
MAX_SIZE_INSTANTS = 400
# The segments TestRule may say the customer is in: more than any deployment has.
MAX_MEMBER_SEGMENTS = 1000
# JSON bytes of the rules on one page of segments or revisions: a page ends early past it,
# so that a client receiving gRPC's default 4 MiB (routing, reports) can always read one,
# whatever the protobuf encoding adds to the JSON (up to about 5x for short numbers).
MAX_PAGE_RULE_BYTES = 524_288


class CustomerSource(Protocol):
    """Where customers come from: the ProfileService, through ``ProfilesClient``."""

    def get(self, customer_id: str) -> dict[str, Any]: ...

    def existing(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def all_customers(self) -> Any: ...

    def changed_since(self, sequence: int) -> ChangedCustomers: ...


@dataclass(frozen=True)
class CustomerEvaluation:
    customer_id: str
    verdicts: Verdicts
    compiled: Sequence[CompiledSegment]
    explanations: Mapping[str, Explanation]


@dataclass(frozen=True)
class Preview:
    customer_count: int
    matching_count: int
    sample: list[str]
    entering_count: int
    leaving_count: int
    winner_shifts: list[tuple[str, str, int]]


@dataclass
class RecomputeSummary:
    evaluated: int = 0
    removed: int = 0
    entered: int = 0
    exited: int = 0
    last_sequence: int = 0

    def add(self, other: RecomputeSummary) -> None:
        self.evaluated += other.evaluated
        self.removed += other.removed
        self.entered += other.entered
        self.exited += other.exited


class RoundKind(StrEnum):
    # The customers the profiles change log names after the cursor.
    CHANGED = "changed"
    # Everyone, for rules that change with time alone (nightly, or asked for).
    ALL = "all"
    # Everyone, because a segment was created or redefined since the last such round; a
    # "changed" round becomes one, so a new segment has its members within a tick.
    REDEFINED = "redefined"


@dataclass(frozen=True)
class RoundPlan:
    """A claimed round: its customers in chunks that workers may run in parallel."""

    round_id: str
    kind: RoundKind
    upto_sequence: int
    chunks: list[list[str]]

    @property
    def cursor(self) -> int | None:
        """Where the change-log cursor moves when the round ends: a nightly round of everyone
        leaves it (the changed customers' rounds go on beside it); a redefined round read
        the log first, so the changes it read are evaluated too."""
        return None if self.kind is RoundKind.ALL else self.upto_sequence

    @property
    def everyone(self) -> bool:
        return self.kind is not RoundKind.CHANGED

    @property
    def trigger(self) -> Trigger:
        """What the transitions this round stores are recorded as triggered by."""
        return _ROUND_TRIGGERS[self.kind]


_ROUND_TRIGGERS = {
    RoundKind.CHANGED: Trigger.CUSTOMER_CHANGED,
    RoundKind.ALL: Trigger.FULL_RECOMPUTE,
    RoundKind.REDEFINED: Trigger.SEGMENT_CHANGED,
}


@dataclass(frozen=True)
class SegmentRetention:
    """Members at the start (``base``) and how many of them had not churned by the end."""

    segment_id: str
    base: int
    retained: int


@dataclass(frozen=True)
class RetentionReport:
    segments: list[SegmentRetention]
    # Over every customer in any of the segments at the start, each counted once.
    everyone: SegmentRetention


@dataclass(frozen=True)
class MigrationReport:
    migrations: list[tuple[str, str, int]]
    unchanged: dict[str, int] = field(default_factory=dict)


class Segments:
    def __init__(
        self,
        repository: SegmentRepository,
        customers: CustomerSource,
        clock: Clock = utc_now,
    ) -> None:
        self.repository = repository
        self.customers = customers
        self.clock = clock
        self.rounds = RoundRepository(repository.engine)

    # ---- definitions -------------------------------------------------------------------

    def create(self, *, segment: Segment, actor: str) -> Segment:
        problems = validate_segment_id(segment.segment_id) + actor_problems(actor)
        problems += validate_definition(segment.definition())
        raise_if(problems)
        others = {s.segment_id: s.rule for s in self.repository.list_all()}
        raise_if(validate_references(segment.segment_id, segment.rule, others))
        return self.repository.create(segment=segment, actor=actor, now=self.clock())

    def get(self, *, segment_id: str, revision: int = 0) -> Segment:
        raise_if(required("segment_id", segment_id))
        if revision < 0:
            raise InvalidArgument.field("revision", "must be zero or more")
        return self.repository.get(segment_id=segment_id, revision=revision)

    def list_page(
        self, *, family: str, page_token: str, page_size: int
    ) -> tuple[list[Segment], str]:
        offset = token_number(decode_token(page_token))
        if offset < 0:
            raise InvalidArgument.field("page_token", "not a token from a previous page")
        limit = page_limit(page_size)
        found, more = self.repository.list_page(family=family, offset=offset, limit=limit)
        kept = documents_within([segment.rule for segment in found], MAX_PAGE_RULE_BYTES)
        more = more or kept < len(found)
        return found[:kept], (encode_token(offset + kept) if more else "")

    def update(
        self, *, segment_id: str, values: Mapping[str, Any], expected_revision: int, actor: str
    ) -> Segment:
        problems = required("segment.segment_id", segment_id) + actor_problems(actor)
        problems += validate_definition(values)
        raise_if(problems)
        if "rule" in values:
            self._check_references(segment_id, values["rule"])
        return self.repository.update(
            segment_id=segment_id,
            change=lambda _stored: (dict(values), 0),
            expected_revision=expected_revision,
            actor=actor,
            action=RevisionAction.UPDATED,
            now=self.clock(),
        )

    def rollback(
        self, *, segment_id: str, target_revision: int, expected_revision: int, actor: str
    ) -> Segment:
        problems = required("segment_id", segment_id) + actor_problems(actor)
        if target_revision <= 0:
            problems.append(FieldViolation("target_revision", "must be a revision number"))
        raise_if(problems)
        target = self.repository.get(segment_id=segment_id, revision=target_revision)
        self._check_references(segment_id, target.rule, field="target_revision")
        return self.repository.update(
            segment_id=segment_id,
            change=lambda _stored: (target.definition(), target_revision),
            expected_revision=expected_revision,
            actor=actor,
            action=RevisionAction.ROLLED_BACK,
            now=self.clock(),
        )

    def delete(self, *, segment_id: str, expected_revision: int) -> None:
        raise_if(required("segment_id", segment_id))

        def referencing(all_segments: list[Segment]) -> list[str]:
            return sorted(
                s.segment_id
                for s in all_segments
                if s.segment_id != segment_id and segment_id in referenced_segments(s.rule)
            )

        self.repository.delete(
            segment_id=segment_id,
            expected_revision=expected_revision,
            referenced_by=referencing,
            now=self.clock(),
        )

    def list_revisions(
        self, *, segment_id: str, page_token: str, page_size: int
    ) -> tuple[list[SegmentRevision], str]:
        raise_if(required("segment_id", segment_id))
        before = token_number(decode_token(page_token))
        limit = page_limit(page_size)
        found = self.repository.list_revisions(
            segment_id=segment_id, before_revision=before, limit=limit
        )
        kept = documents_within([item.segment.rule for item in found], MAX_PAGE_RULE_BYTES)
        more = kept < len(found) or (len(found) == limit and found[-1].segment.revision > 1)
        found = found[:kept]
        return found, (encode_token(found[-1].segment.revision) if more else "")

    def _check_references(self, segment_id: str, rule: Any, field: str = "segment.rule") -> None:
        others = {
            s.segment_id: s.rule for s in self.repository.list_all() if s.segment_id != segment_id
        }
        raise_if(validate_references(segment_id, rule, others, field))

    # ---- evaluation --------------------------------------------------------------------

    def evaluate(
        self,
        *,
        customer_id: str = "",
        record: Mapping[str, Any] | None = None,
        now: datetime | None,
    ) -> CustomerEvaluation:
        """Evaluate every enabled segment for a stored customer (read from the profiles
        service) or an inline record; stores nothing."""
        inline = record is not None
        if record is None:
            # Checked here: the profiles service's refusal would read as its failure.
            raise_if(required("customer_id", customer_id) or validate_customer_id(customer_id))
            record = self.customers.get(customer_id)
        attributes = rule_attributes(record)
        if inline:
            raise_if(_document_problems("customer", attributes))
        moment = now or self.clock()
        compiled = compile_segments(self.repository.list_all())
        verdicts = evaluate_customer(compiled, attributes, moment)
        context = EvaluationContext(now=moment, segments=verdicts.matched)
        explanations = {
            item.segment.segment_id: explain(item.rule, attributes, context) for item in compiled
        }
        return CustomerEvaluation(
            str(record.get("customer_id", customer_id)), verdicts, compiled, explanations
        )

    def test_rule(
        self,
        *,
        rule: Any,
        attributes: Mapping[str, Any],
        member_segment_ids: Collection[str],
        now: datetime | None,
    ) -> Explanation:
        problems = validate_rule_document(rule, "rule")
        problems += _document_problems("attributes", attributes)
        if len(member_segment_ids) > MAX_MEMBER_SEGMENTS:
            problems.append(
                FieldViolation(
                    "member_segment_ids",
                    f"at most {MAX_MEMBER_SEGMENTS} segments, got {len(member_segment_ids)}",
                )
            )
        raise_if(problems)
        context = EvaluationContext(now=now or self.clock(), segments=member_segment_ids)
        return explain(compile_rule(rule), attributes, context)

    # ---- over the stored customers -----------------------------------------------------

    def preview(self, *, draft: Segment, sample_size: int, now: datetime | None) -> Preview:
        problems = validate_definition(draft.definition())
        if draft.segment_id:
            problems += validate_segment_id(draft.segment_id)
        if not 0 <= sample_size <= MAX_SAMPLE:
            problems.append(FieldViolation("sample_size", f"must be between 0 and {MAX_SAMPLE}"))
        raise_if(problems)
        moment = now or self.clock()
        live = {s.segment_id: s for s in self.repository.list_all()}
        draft_id = draft.segment_id or "(draft)"
        others = {sid: s.rule for sid, s in live.items() if sid != draft_id}
        raise_if(validate_references(draft_id, draft.rule, others))
        matcher = _Matcher(self.repository, live, moment)
        draft_matches = matcher.rule_matches(draft.rule)
        current = live.get(draft_id)
        live_matches = matcher.segment_matches(draft_id) if current else frozenset()
        moved: list[tuple[str, str, int]] = []
        family = draft.family or (current.family if current else "")
        if family:
            live_family = [s for s in precedence(live.values()) if s.family == family and s.enabled]
            draft_family = [s for s in live_family if s.segment_id != draft_id]
            if draft.enabled and draft.family:
                draft_family = precedence(
                    [*draft_family, Segment(**{**draft.__dict__, "segment_id": draft_id})]
                )
            matches = {s.segment_id: matcher.segment_matches(s.segment_id) for s in live_family}
            before = winners_by_customer([s.segment_id for s in live_family], matches)
            after = winners_by_customer(
                [s.segment_id for s in draft_family], {**matches, draft_id: draft_matches}
            )
            moved = [(a, b, n) for (a, b), n in shifts(before, after).most_common()]
        return Preview(
            customer_count=self.repository.projection_count(),
            matching_count=len(draft_matches),
            sample=sorted(draft_matches)[: sample_size or DEFAULT_SAMPLE],
            entering_count=len(draft_matches - live_matches),
            leaving_count=len(live_matches - draft_matches),
            winner_shifts=moved,
        )

    def lint(self, *, now: datetime | None) -> tuple[list[LintWarning], int]:
        live = {s.segment_id: s for s in self.repository.list_all()}
        matcher = _Matcher(self.repository, live, now or self.clock())
        enabled = [s for s in live.values() if s.enabled]
        matches = {s.segment_id: matcher.segment_matches(s.segment_id) for s in enabled}
        return lint(enabled, matches), self.repository.projection_count()

    # ---- memberships -------------------------------------------------------------------

    def recompute(self, *, all_customers: bool, now: datetime | None) -> RecomputeSummary:
        """Re-evaluate customers and store memberships, transitions and projections, in
        this process: either the customers changed since the last round (per the profiles
        change log, moving its cursor) or everyone. Fails with ABORTED when a round run by
        the workers holds on for more than ROUND_WAIT_SECONDS."""
        kind = RoundKind.ALL if all_customers else RoundKind.CHANGED
        planned = self.begin_round(kind, now=now)
        # Workers' rounds of changed customers take moments: wait one out rather than fail.
        give_up = time.monotonic() + ROUND_WAIT_SECONDS
        while planned is None and time.monotonic() < give_up:
            time.sleep(0.05)
            planned = self.begin_round(kind, now=now)
        if planned is None:
            raise Conflict(
                "memberships are being re-evaluated by the workers; retry in a moment",
                reason="RECOMPUTE_RUNNING",
            )
        summary = RecomputeSummary(last_sequence=planned.upto_sequence)
        for index, customer_ids in enumerate(planned.chunks):
            done = self.run_chunk(planned, index, customer_ids, now=now)
            summary.add(done)
        return summary

    def begin_round(self, kind: RoundKind, *, now: datetime | None = None) -> RoundPlan | None:
        """Claim the one re-evaluation round and split its customers into chunks; None while
        another round holds the lease. A round with no customers ends at once."""
        moment = now or self.clock()
        round_id = f"{moment:%Y%m%dT%H%M%S}-{uuid4().hex[:8]}"
        if not self.rounds.claim(round_id=round_id, kind=kind.value, now=moment, lease=ROUND_LEASE):
            return None
        try:
            # Read under the lease: a round that just ended may have evaluated these.
            definitions = definitions_fingerprint(self.repository.list_all())
            if kind is RoundKind.CHANGED and definitions != self.repository.cursor(
                DEFINITIONS_EVALUATED
            ):
                kind = RoundKind.REDEFINED
            ids: list[str] = []
            upto = self.repository.cursor()
            if kind is not RoundKind.ALL:
                changed = self.customers.changed_since(upto)
                ids, upto = list(changed.customer_ids), changed.last_sequence
            if kind is not RoundKind.CHANGED:
                self.repository.save_cursor(definitions, moment, DEFINITIONS_PENDING)
                known = self.repository.projected_customer_ids()
                known.update(ids)
                known.update(record["customer_id"] for record in self.customers.all_customers())
                ids = sorted(known)
            planned = RoundPlan(
                round_id,
                kind,
                upto,
                [
                    ids[start : start + RECOMPUTE_BATCH]
                    for start in range(0, len(ids), RECOMPUTE_BATCH)
                ],
            )
            if not planned.chunks:
                self.rounds.finish(
                    round_id, cursor=planned.cursor, now=moment, everyone=planned.everyone
                )
            else:
                self.rounds.plan(
                    round_id=round_id,
                    kind=kind.value,
                    upto_sequence=upto,
                    chunk_count=len(planned.chunks),
                    now=moment,
                    lease=ROUND_LEASE,
                )
        except BaseException:
            self.rounds.finish(round_id, cursor=None, now=moment)
            raise
        return planned

    def run_chunk(
        self,
        planned: RoundPlan,
        index: int,
        customer_ids: Sequence[str],
        *,
        now: datetime | None = None,
    ) -> RecomputeSummary:
        """Evaluate one chunk of a round and store what changed; the chunk that completes the
        round ends it. Running a chunk again (a redelivered task) stores nothing new."""
        moment = now or self.clock()
        summary = RecomputeSummary(last_sequence=planned.upto_sequence)
        if not self.rounds.is_current(planned.round_id):
            return summary
        plan = compile_plan(self.repository.list_all())
        revisions = {item.segment.segment_id: item.segment.revision for item in plan.compiled}
        trigger = planned.trigger
        found = self.customers.existing(customer_ids)
        gone = [cid for cid in customer_ids if cid not in found]
        records = [found[cid] for cid in customer_ids if cid in found]
        self._store(records, gone, plan, revisions, trigger, moment, summary)
        state = self.rounds.chunk_done(
            round_id=planned.round_id, chunk_index=index, now=moment, lease=ROUND_LEASE
        )
        if state is not None and state.finished:
            self.rounds.finish(
                planned.round_id, cursor=planned.cursor, now=moment, everyone=planned.everyone
            )
        return summary

    def _store(
        self,
        records: Sequence[Mapping[str, Any]],
        removed: Sequence[str],
        plan: SegmentPlan,
        revisions: Mapping[str, int],
        trigger: Trigger,
        now: datetime,
        summary: RecomputeSummary,
    ) -> None:
        if not records and not removed:
            return
        documents = {str(r["customer_id"]): rule_attributes(r) for r in records}
        stored = self.repository.current_memberships([*documents, *removed])
        families = plan.family_of
        members_of = plan.evaluator(now)
        outcomes = []
        for customer_id, document in documents.items():
            after = {sid: families[sid] for sid in members_of(document)}
            outcomes.append(
                CustomerOutcome(
                    customer_id, after, membership_transitions(stored[customer_id], after), trigger
                )
            )
        for customer_id in removed:
            transitions = membership_transitions(stored[customer_id], {})
            outcomes.append(CustomerOutcome(customer_id, {}, transitions, Trigger.CUSTOMER_DELETED))
        self.repository.store_outcomes(
            documents=documents,
            outcomes=outcomes,
            removed=removed,
            revisions_by_segment=revisions,
            now=now,
        )
        summary.evaluated += len(documents)
        summary.removed += len(removed)
        for outcome in outcomes:
            for transition in outcome.transitions:
                if transition.kind.value == "entered":
                    summary.entered += 1
                else:
                    summary.exited += 1

    def list_memberships(
        self, *, customer_id: str, segment_id: str, page_token: str, page_size: int
    ) -> tuple[list[Membership], str]:
        after = token_position(decode_token(page_token), str, str)
        found, last = self.repository.list_memberships(
            customer_id=customer_id,
            segment_id=segment_id,
            after=(after[0], after[1]) if after else None,
            limit=page_limit(page_size),
        )
        return found, (encode_token(list(last)) if last else "")

    def list_changes(
        self, *, where: ChangeFilter, page_token: str, page_size: int
    ) -> tuple[list[MembershipChange], str]:
        if where.start_time and where.end_time and where.start_time >= where.end_time:
            raise InvalidArgument.field("end_time", "must be after start_time")
        before = token_number(decode_token(page_token))
        found, last = self.repository.list_changes(
            where=where, before_id=before, limit=page_limit(page_size)
        )
        return found, (encode_token(last) if last else "")

    def migration_report(
        self, *, family: str, start: datetime | None, end: datetime | None
    ) -> MigrationReport:
        raise_if(required("family", family) + time_range_problems(start, end))
        assert start is not None and end is not None
        changes = self.repository.family_changes(family=family, until=end)
        at_start, at_end = winners_at(changes, start, end)
        moved = [(a, b, n) for (a, b), n in shifts(at_start, at_end).most_common()]
        unchanged: dict[str, int] = {}
        for customer_id, segment_id in at_end.items():
            if at_start.get(customer_id) == segment_id:
                unchanged[segment_id] = unchanged.get(segment_id, 0) + 1
        return MigrationReport(moved, unchanged)

    # ---- history -----------------------------------------------------------------------

    def segment_sizes(
        self, *, segment_ids: Sequence[str], times: Sequence[datetime]
    ) -> list[list[int]]:
        """Members of each segment at each instant (inclusive), in request order, replayed
        from the stored transitions; deleted or unknown segments read as their history
        (zeros when they have none)."""
        problems = segment_list_problems(segment_ids)
        if not 1 <= len(times) <= MAX_SIZE_INSTANTS:
            problems.append(FieldViolation("times", f"give 1-{MAX_SIZE_INSTANTS} instants"))
        raise_if(problems)
        bounds = sorted(set(times))
        net = self.repository.net_entries(segment_ids=segment_ids, bounds=bounds)
        return sizes_at(segment_ids, times, bounds, net)

    def retention(
        self,
        *,
        segment_ids: Sequence[str],
        churn_segment_id: str,
        start: datetime | None,
        end: datetime | None,
    ) -> RetentionReport:
        """Each segment's members at ``start`` and how many were not in the churn segment
        at ``end``, and the same over all of them together."""
        problems = segment_list_problems(segment_ids)
        if churn_segment_id:
            problems += validate_segment_id(churn_segment_id, "churn_segment_id")
        else:
            problems.append(FieldViolation("churn_segment_id", "is required"))
        problems += time_range_problems(start, end)
        raise_if(problems)
        assert start is not None and end is not None
        counts, (everyone, churned) = self.repository.retention_counts(
            segment_ids=segment_ids, churn_segment_id=churn_segment_id, start=start, end=end
        )
        by_segment = []
        for segment_id in segment_ids:
            base, gone = counts.get(segment_id, (0, 0))
            by_segment.append(SegmentRetention(segment_id, base, base - gone))
        return RetentionReport(by_segment, SegmentRetention("", everyone, everyone - churned))


class _Matcher:
    """Who each rule matches over the projection, with ``$inSegment`` references resolved
    to the referenced segments' own matches (computed once each)."""

    def __init__(self, repository: SegmentRepository, live: Mapping[str, Segment], now: datetime):
        self.repository = repository
        self.live = live
        self.now = now
        self.cache: dict[str, frozenset[str]] = {}

    def segment_matches(self, segment_id: str) -> frozenset[str]:
        if segment_id not in self.cache:
            self.cache[segment_id] = self.rule_matches(self.live[segment_id].rule)
        return self.cache[segment_id]

    def rule_matches(self, rule: Any) -> frozenset[str]:
        references = {ref: self.segment_matches(ref) for ref in referenced_segments(rule)}
        return self.repository.matching_customers(
            rule=compile_rule(rule), now=self.now, segment_matches=references
        )


def _document_problems(field: str, document: Any) -> list[FieldViolation]:
    problem = document_size_problem(document)
    return [FieldViolation(field, problem)] if problem else []


# ---- pure helpers of the history reads ---------------------------------------------------------


def segment_list_problems(segment_ids: Sequence[str]) -> list[FieldViolation]:
    """A history read names 1-100 segments, each a well-formed id (it may be deleted)."""
    if not 1 <= len(segment_ids) <= MAX_HISTORY_SEGMENTS:
        return [FieldViolation("segment_ids", f"give 1-{MAX_HISTORY_SEGMENTS} segment ids")]
    return [
        problem
        for index, segment_id in enumerate(segment_ids)
        for problem in validate_segment_id(segment_id, f"segment_ids[{index}]")
    ]


def time_range_problems(start: datetime | None, end: datetime | None) -> list[FieldViolation]:
    """Both ends given, the end not before the start."""
    problems = []
    if start is None:
        problems.append(FieldViolation("start_time", "is required"))
    if end is None:
        problems.append(FieldViolation("end_time", "is required"))
    elif start is not None and end < start:
        problems.append(FieldViolation("end_time", "must not be before start_time"))
    return problems


def sizes_at(
    segment_ids: Sequence[str],
    times: Sequence[datetime],
    bounds: Sequence[datetime],
    net: Mapping[tuple[str, int], int],
) -> list[list[int]]:
    """Each segment's size at each of ``times``: the running total of its net entries per
    span (``net[(segment, k)]`` for the span ending at ``bounds[k]``, the sorted distinct
    times), read back in the order the times were asked."""
    position = {moment: index for index, moment in enumerate(bounds)}
    series = []
    for segment_id in segment_ids:
        running = 0
        totals = []
        for index in range(len(bounds)):
            running += net.get((segment_id, index), 0)
            totals.append(running)
        series.append([totals[position[moment]] for moment in times])
    return series


__all__ = ["EDITABLE_FIELDS", "CustomerEvaluation", "Preview", "RecomputeSummary", "Segments"]
