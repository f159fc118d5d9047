"""Storage of segments and their revisions, memberships and transitions, the customer
projection and the change-log cursor."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Engine,
    Integer,
    Table,
    and_,
    case,
    column,
    delete,
    func,
    insert,
    literal,
    select,
    tuple_,
    union_all,
    update,
    values,
)
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from services.core.db import (
    UTCDateTime,
    in_chunks,
    is_postgresql,
    read_session,
    write_transaction,
)
from services.core.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from services.outreach.repository import subscriptions_naming, watching_subscriptions
from services.outreach.transitions import enqueue_transition_webhooks
from services.segments.domain import (
    ChangeKind,
    Membership,
    MembershipChange,
    RevisionAction,
    Segment,
    SegmentRevision,
    Trigger,
)
from services.segments.logic import Transition
from services.segments.models import (
    CustomerProjectionRow,
    MembershipChangeRow,
    MembershipRow,
    RecomputeCursorRow,
    SegmentRevisionRow,
    SegmentRow,
)
from services.segments.rules import CompiledRule, EvaluationContext
from services.segments.rules._time import parse_timestamp
from services.segments.sql_rules import (
    NUMBER_COLUMNS,
    TEXT_COLUMNS,
    document_parts,
    split_references,
    split_rule,
)

segments: Table = SegmentRow.__table__  # type: ignore[attr-defined]
revisions: Table = SegmentRevisionRow.__table__  # type: ignore[attr-defined]
memberships: Table = MembershipRow.__table__  # type: ignore[attr-defined]
membership_changes: Table = MembershipChangeRow.__table__  # type: ignore[attr-defined]
projection: Table = CustomerProjectionRow.__table__  # type: ignore[attr-defined]
cursors: Table = RecomputeCursorRow.__table__  # type: ignore[attr-defined]

PROFILES_CHANGES_CURSOR = "profiles_changes"
# The segment definitions (as a fingerprint) that a round of everyone evaluated: the one
# running now (pending) and the last one that ended (evaluated).
DEFINITIONS_PENDING = "definitions_pending"
DEFINITIONS_EVALUATED = "definitions_evaluated"
# Lower bound of the first span of GetSegmentSizes: before any transition can be dated.
_BEGINNING_OF_TIME = datetime(1, 1, 1, tzinfo=UTC)
# +1 for an entry, -1 for an exit. Per customer and segment the store writes an entry only
# when the customer is not a member and an exit only when it is (both diffed against the
# memberships table in the transaction that writes them; a family switch is an exit of the
# old winner plus an entry of the new one), so the sum up to T is 1 exactly when the
# customer is a member at T, and sums need no per-customer ordering.
_MEMBERSHIP_DELTA = case((membership_changes.c.kind == ChangeKind.ENTERED.value, 1), else_=-1)
_DEFINITION = ("display_name", "description", "rule", "family", "priority", "enabled")


@dataclass(frozen=True)
class ChangeFilter:
    customer_id: str = ""
    segment_id: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True)
class CustomerOutcome:
    """A recomputed customer: its new memberships (segment id -> family) and the
    transitions that lead there from the stored ones."""

    customer_id: str
    members: Mapping[str, str]
    transitions: Sequence[Transition]
    trigger: Trigger


class SegmentRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ---- segments ----------------------------------------------------------------------

    def get(self, *, segment_id: str, revision: int = 0) -> Segment:
        with read_session(self.engine) as session:
            if revision:
                row = session.execute(
                    select(revisions).where(
                        revisions.c.segment_id == segment_id, revisions.c.revision == revision
                    )
                ).first()
                if row is None:
                    raise NotFound("segment revision", f"{segment_id}@{revision}")
                return _segment(row, update_time=row.revise_time)
            found = session.execute(
                select(segments).where(segments.c.segment_id == segment_id)
            ).first()
        if found is None:
            raise NotFound("segment", segment_id)
        return _segment(found)

    def list_all(self) -> list[Segment]:
        with read_session(self.engine) as session:
            rows = session.execute(select(segments).order_by(segments.c.segment_id)).all()
        return [_segment(row) for row in rows]

    def list_page(self, *, family: str, offset: int, limit: int) -> tuple[list[Segment], bool]:
        query = select(segments).order_by(
            segments.c.family, segments.c.priority, segments.c.segment_id
        )
        if family:
            query = query.where(segments.c.family == family)
        with read_session(self.engine) as session:
            rows = session.execute(query.offset(offset).limit(limit + 1)).all()
        return [_segment(row) for row in rows[:limit]], len(rows) > limit

    def list_revisions(
        self, *, segment_id: str, before_revision: int, limit: int
    ) -> list[SegmentRevision]:
        query = (
            select(revisions)
            .where(revisions.c.segment_id == segment_id)
            .order_by(revisions.c.revision.desc())
            .limit(limit)
        )
        if before_revision:
            query = query.where(revisions.c.revision < before_revision)
        with read_session(self.engine) as session:
            if not session.execute(
                select(segments.c.segment_id).where(segments.c.segment_id == segment_id)
            ).first():
                raise NotFound("segment", segment_id)
            rows = session.execute(query).all()
        return [
            SegmentRevision(
                segment=_segment(row, update_time=row.revise_time),
                actor=row.actor,
                action=RevisionAction(row.action),
                changed_fields=tuple(row.changed_fields or ()),
                restored_revision=row.restored_revision,
            )
            for row in rows
        ]

    def create(self, *, segment: Segment, actor: str, now: datetime) -> Segment:
        created = Segment(**{**segment.__dict__, "revision": 1, "create_time": now})
        created = Segment(**{**created.__dict__, "update_time": now})
        try:
            with write_transaction(self.engine) as session:
                if session.execute(
                    select(segments.c.segment_id).where(segments.c.segment_id == segment.segment_id)
                ).first():
                    raise AlreadyExists("segment", segment.segment_id)
                session.execute(insert(segments), [_segment_values(created)])
                _insert_revision(
                    session, created, actor, RevisionAction.CREATED, list(_DEFINITION), 0, now
                )
        except IntegrityError as error:
            raise AlreadyExists("segment", segment.segment_id) from error
        return created

    def update(
        self,
        *,
        segment_id: str,
        change: Callable[[Segment], tuple[dict[str, Any], int]],
        expected_revision: int,
        actor: str,
        action: RevisionAction,
        now: datetime,
    ) -> Segment:
        """Apply ``change`` (stored segment -> new editable values and, for a rollback, the
        restored revision) as a new revision; nothing is written when nothing differs."""
        with write_transaction(self.engine) as session:
            stored = _load_for_update(session, segment_id)
            _check_revision(stored, expected_revision)
            values, restored = change(stored)
            before = stored.definition()
            changed = [
                name for name in _DEFINITION if name in values and values[name] != before[name]
            ]
            if not changed:
                return stored
            updated = Segment(
                **{
                    **stored.__dict__,
                    **values,
                    "revision": stored.revision + 1,
                    "update_time": now,
                }
            )
            session.execute(
                update(segments)
                .where(segments.c.segment_id == segment_id)
                .values(**{k: v for k, v in _segment_values(updated).items() if k != "segment_id"})
            )
            _insert_revision(session, updated, actor, action, changed, restored, now)
        return updated

    def delete(
        self,
        *,
        segment_id: str,
        expected_revision: int,
        referenced_by: Callable[[list[Segment]], list[str]],
        now: datetime,
    ) -> int:
        """Delete a segment unless ``referenced_by(all segments)`` names some; its members
        exit with a transition each. Returns how many members it had."""
        with write_transaction(self.engine) as session:
            stored = _load_for_update(session, segment_id)
            _check_revision(stored, expected_revision)
            others = [_segment(row) for row in session.execute(select(segments)).all()]
            users = referenced_by(others)
            if users:
                raise FailedPrecondition(
                    f"segment {segment_id!r} is referenced by {', '.join(users)}; "
                    "change their rules first",
                    reason="SEGMENT_IN_USE",
                )
            watchers = subscriptions_naming(session, segment_id)
            if watchers:
                raise FailedPrecondition(
                    f"segment {segment_id!r} is used by outreach subscriptions "
                    f"{', '.join(watchers)}; delete them first",
                    reason="SEGMENT_IN_USE",
                )
            members = session.execute(
                select(memberships).where(memberships.c.segment_id == segment_id)
            ).all()
            exits = [
                {
                    "customer_id": row.customer_id,
                    "segment_id": segment_id,
                    "family": row.family,
                    "kind": ChangeKind.EXITED.value,
                    "previous_winner": segment_id if row.family else "",
                    "change_time": now,
                    "rule_revision": stored.revision,
                    "trigger": Trigger.SEGMENT_DELETED.value,
                }
                for row in members
            ]
            if exits:
                session.execute(insert(membership_changes), exits)
            session.execute(delete(memberships).where(memberships.c.segment_id == segment_id))
            session.execute(delete(revisions).where(revisions.c.segment_id == segment_id))
            session.execute(delete(segments).where(segments.c.segment_id == segment_id))
        return len(members)

    # ---- projection and memberships ----------------------------------------------------

    def current_memberships(self, customer_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Stored memberships (segment id -> family) of the given customers."""
        found: dict[str, dict[str, str]] = {customer_id: {} for customer_id in customer_ids}
        with read_session(self.engine) as session:
            for chunk in in_chunks(list(customer_ids)):
                for row in session.execute(
                    select(memberships).where(memberships.c.customer_id.in_(chunk))
                ):
                    found[row.customer_id][row.segment_id] = row.family
        return found

    def projected_customer_ids(self) -> set[str]:
        with read_session(self.engine) as session:
            return set(session.execute(select(projection.c.customer_id)).scalars())

    def store_outcomes(
        self,
        *,
        documents: Mapping[str, Mapping[str, Any]],
        outcomes: Sequence[CustomerOutcome],
        removed: Collection[str],
        revisions_by_segment: Mapping[str, int],
        now: datetime,
    ) -> None:
        """Write refreshed projections, memberships and transitions in one transaction;
        ``removed`` customers leave the projection (their exits are in ``outcomes``)."""
        with write_transaction(self.engine) as session:
            ids = [*documents, *removed]
            for chunk in in_chunks(ids):
                session.execute(delete(projection).where(projection.c.customer_id.in_(chunk)))
            if documents:
                session.execute(
                    insert(projection),
                    [_projection_values(cid, doc, now) for cid, doc in documents.items()],
                )
            # A few statements for the whole batch, never a pair per customer: a nightly
            # round moves tens of thousands of customers.
            exits = [
                (outcome.customer_id, t.segment_id)
                for outcome in outcomes
                for t in outcome.transitions
                if t.kind is ChangeKind.EXITED
            ]
            member = tuple_(memberships.c.customer_id, memberships.c.segment_id)
            for chunk in in_chunks(exits):
                session.execute(delete(memberships).where(member.in_(chunk)))
            entries = [
                {
                    "customer_id": outcome.customer_id,
                    "segment_id": t.segment_id,
                    "family": t.family,
                    "enter_time": now,
                    "rule_revision": revisions_by_segment.get(t.segment_id, 0),
                }
                for outcome in outcomes
                for t in outcome.transitions
                if t.kind is ChangeKind.ENTERED
            ]
            if entries:
                session.execute(insert(memberships), entries)
            changes = [
                {
                    "customer_id": outcome.customer_id,
                    "segment_id": t.segment_id,
                    "family": t.family,
                    "kind": t.kind.value,
                    "previous_winner": t.previous_winner,
                    "change_time": now,
                    "rule_revision": revisions_by_segment.get(t.segment_id, 0),
                    "trigger": outcome.trigger.value,
                }
                for outcome in outcomes
                for t in outcome.transitions
            ]
            if changes:
                _insert_changes(session, changes, outcomes, now)

    def replace_projection(self, documents: Mapping[str, Mapping[str, Any]], now: datetime) -> None:
        """Store projections without evaluating (for loading large data sets)."""
        self.store_outcomes(
            documents=documents,
            outcomes=[],
            removed=[],
            revisions_by_segment={},
            now=now,
        )

    def cursor(self, name: str = PROFILES_CHANGES_CURSOR) -> int:
        with read_session(self.engine) as session:
            found = session.execute(
                select(cursors.c.sequence).where(cursors.c.name == name)
            ).scalar_one_or_none()
        return int(found or 0)

    def save_cursor(
        self, sequence: int, now: datetime, name: str = PROFILES_CHANGES_CURSOR
    ) -> None:
        with write_transaction(self.engine) as session:
            save_cursor(session, sequence, now, name)

    def list_memberships(
        self, *, customer_id: str, segment_id: str, after: tuple[str, str] | None, limit: int
    ) -> tuple[list[Membership], tuple[str, str] | None]:
        query = (
            select(memberships)
            .order_by(memberships.c.customer_id, memberships.c.segment_id)
            .limit(limit + 1)
        )
        if customer_id:
            query = query.where(memberships.c.customer_id == customer_id)
        if segment_id:
            query = query.where(memberships.c.segment_id == segment_id)
        if after:
            query = query.where(
                (memberships.c.customer_id > after[0])
                | and_(memberships.c.customer_id == after[0], memberships.c.segment_id > after[1])
            )
        with read_session(self.engine) as session:
            rows = session.execute(query).all()
        found = [
            Membership(r.customer_id, r.segment_id, r.family, r.enter_time, r.rule_revision)
            for r in rows[:limit]
        ]
        more = len(rows) > limit
        return found, ((found[-1].customer_id, found[-1].segment_id) if more else None)

    def list_changes(
        self, *, where: ChangeFilter, before_id: int, limit: int
    ) -> tuple[list[MembershipChange], int]:
        """Transitions newest first, and the id to continue before when more may follow."""
        query = (
            select(membership_changes)
            .order_by(membership_changes.c.change_id.desc())
            .limit(limit + 1)
        )
        if where.customer_id:
            query = query.where(membership_changes.c.customer_id == where.customer_id)
        if where.segment_id:
            query = query.where(membership_changes.c.segment_id == where.segment_id)
        if where.start_time:
            query = query.where(membership_changes.c.change_time >= where.start_time)
        if where.end_time:
            query = query.where(membership_changes.c.change_time < where.end_time)
        if before_id:
            query = query.where(membership_changes.c.change_id < before_id)
        with read_session(self.engine) as session:
            rows = session.execute(query).all()
        found = [_change(row) for row in rows[:limit]]
        return found, (found[-1].change_id if len(rows) > limit else 0)

    def family_changes(self, *, family: str, until: datetime) -> list[MembershipChange]:
        """A family's transitions up to ``until``, oldest first."""
        query = (
            select(membership_changes)
            .where(
                membership_changes.c.family == family,
                membership_changes.c.change_time <= until,
            )
            .order_by(membership_changes.c.change_time, membership_changes.c.change_id)
        )
        with read_session(self.engine) as session:
            return [_change(row) for row in session.execute(query)]

    # ---- history -----------------------------------------------------------------------

    def net_entries(
        self, *, segment_ids: Collection[str], bounds: Sequence[datetime]
    ) -> dict[tuple[str, int], int]:
        """Members each segment gained (negative: lost) in each span between ``bounds``
        (ascending): span 0 is everything up to ``bounds[0]``, span k is (bounds[k-1],
        bounds[k]]. Absent keys are zero.

        One aggregate: the spans are joined to the transitions by time range, so each
        transition is read once through the (segment_id, change_time) index, whatever the
        number of spans, and at most spans x segments rows come back."""
        spans = _spans(bounds, postgresql=is_postgresql(self.engine))
        changes = membership_changes
        query = (
            select(spans.c.span, changes.c.segment_id, func.sum(_MEMBERSHIP_DELTA))
            .select_from(
                spans.join(
                    changes,
                    and_(
                        changes.c.change_time > spans.c.lower,
                        changes.c.change_time <= spans.c.upper,
                    ),
                )
            )
            .where(changes.c.segment_id.in_(sorted(set(segment_ids))))
            .group_by(spans.c.span, changes.c.segment_id)
        )
        with read_session(self.engine) as session:
            rows = session.execute(query).all()
        return {(segment_id, int(span)): int(total) for span, segment_id, total in rows}

    def retention_counts(
        self,
        *,
        segment_ids: Collection[str],
        churn_segment_id: str,
        start: datetime,
        end: datetime,
    ) -> tuple[dict[str, tuple[int, int]], tuple[int, int]]:
        """(members at ``start``, of those churned at ``end``) per segment (absent: no
        members), and the same over the union of their members, in one statement so both
        read the same snapshot."""
        changes = membership_changes
        base = (
            select(changes.c.segment_id, changes.c.customer_id)
            .where(
                changes.c.segment_id.in_(sorted(set(segment_ids))),
                changes.c.change_time <= start,
            )
            .group_by(changes.c.segment_id, changes.c.customer_id)
            .having(func.sum(_MEMBERSHIP_DELTA) > 0)
            .cte("base")
        )
        churned = (
            select(changes.c.customer_id)
            .where(changes.c.segment_id == churn_segment_id, changes.c.change_time <= end)
            .group_by(changes.c.customer_id)
            .having(func.sum(_MEMBERSHIP_DELTA) > 0)
            .cte("churned")
        )
        everyone = select(base.c.customer_id).distinct().subquery("everyone")
        per_segment = (
            select(
                literal(False).label("is_union"),
                base.c.segment_id,
                func.count().label("base"),
                func.count(churned.c.customer_id).label("churned"),
            )
            .select_from(base.outerjoin(churned, base.c.customer_id == churned.c.customer_id))
            .group_by(base.c.segment_id)
        )
        union = select(
            literal(True).label("is_union"),
            literal("").label("segment_id"),
            func.count().label("base"),
            func.count(churned.c.customer_id).label("churned"),
        ).select_from(everyone.outerjoin(churned, everyone.c.customer_id == churned.c.customer_id))
        with read_session(self.engine) as session:
            rows = session.execute(union_all(per_segment, union)).all()
        by_segment: dict[str, tuple[int, int]] = {}
        overall = (0, 0)
        for is_union, segment_id, members, gone in rows:
            if is_union:
                overall = (int(members), int(gone))
            else:
                by_segment[segment_id] = (int(members), int(gone))
        return by_segment, overall

    # ---- rules over the projection -----------------------------------------------------

    def projection_count(self) -> int:
        with read_session(self.engine) as session:
            return int(session.execute(select(func.count()).select_from(projection)).scalar_one())

    def matching_customers(
        self,
        *,
        rule: CompiledRule,
        now: datetime,
        segment_matches: Mapping[str, frozenset[str]] | None = None,
    ) -> frozenset[str]:
        """Ids of the projected customers the rule matches. ``segment_matches`` gives the
        customers each segment the rule references matches, for ``$inSegment``.

        Top-level segment references become set operations on ids; when the rest of the
        rule can be expressed in SQL exactly, no document is read. Otherwise the
        expressible part filters in SQL and the compiled rule decides each remaining row.
        """
        references = segment_matches or {}
        rest, pulled = split_references(rule.condition)
        where, exact = split_rule(rest, now)
        if exact:
            query = select(projection.c.customer_id)
            if where is not None:
                query = query.where(where)
            with read_session(self.engine) as session:
                found = set(session.execute(query).scalars())
            for segment_id, wanted in pulled:
                ids = references.get(segment_id, frozenset())
                found = found & ids if wanted else found - ids
            return frozenset(found)
        # ``where`` filters for the rest of the rule, so it filters for the whole rule too.
        parts = document_parts(rule.condition, self.engine.dialect.name)
        if parts is None:
            return self._matching_documents(rule, now, where, references)
        keys = [key for key, _ in parts]
        query = select(projection.c.customer_id, *[expression for _, expression in parts])
        if where is not None:
            query = query.where(where)
        with read_session(self.engine) as session:
            rows = session.execute(query).all()
        # The verdict depends only on the parts read (and the segments), so each distinct
        # combination is evaluated once: a field with a few values costs a few evaluations.
        verdicts: dict[tuple[Any, ...], bool] = {}
        matching = []
        plain_context = EvaluationContext(now=now)
        for customer_id, *texts in rows:
            segments = _segments_of(customer_id, references) if references else frozenset()
            key = (*texts, segments)
            verdict = verdicts.get(key)
            if verdict is None:
                document = {
                    k: json.loads(t) for k, t in zip(keys, texts, strict=True) if t is not None
                }
                context = (
                    EvaluationContext(now=now, segments=segments) if segments else plain_context
                )
                verdict = verdicts[key] = rule.matches(document, context)
            if verdict:
                matching.append(customer_id)
        return frozenset(matching)

    def _matching_documents(
        self,
        rule: CompiledRule,
        now: datetime,
        where: Any,
        references: Mapping[str, frozenset[str]],
    ) -> frozenset[str]:
        query = select(projection.c.customer_id, projection.c.document)
        if where is not None:
            query = query.where(where)
        with read_session(self.engine) as session:
            rows = session.execute(query).all()
        return frozenset(
            customer_id
            for customer_id, document in rows
            if rule.matches(
                document,
                EvaluationContext(now=now, segments=_segments_of(customer_id, references)),
            )
        )


def _segments_of(customer_id: str, references: Mapping[str, frozenset[str]]) -> frozenset[str]:
    return frozenset(ref for ref, ids in references.items() if customer_id in ids)


def _spans(bounds: Sequence[datetime], *, postgresql: bool) -> Any:
    """The table (span, lower, upper) of the spans between ``bounds``: a VALUES list on
    PostgreSQL (a 400-branch UNION ALL costs it more to plan and compile than to run), a
    UNION ALL of constant rows on SQLite (which cannot name a VALUES list's columns)."""
    rows = list(enumerate(zip([_BEGINNING_OF_TIME, *bounds[:-1]], bounds, strict=True)))
    if postgresql:
        columns = (
            column("span", Integer),
            column("lower", UTCDateTime()),
            column("upper", UTCDateTime()),
        )
        return values(*columns, name="spans").data(
            [(index, lower, upper) for index, (lower, upper) in rows]
        )
    return union_all(
        *[
            select(
                literal(index).label("span"),
                literal(lower, UTCDateTime()).label("lower"),
                literal(upper, UTCDateTime()).label("upper"),
            )
            for index, (lower, upper) in rows
        ]
    ).subquery("spans")


def _insert_changes(
    session: Session,
    changes: Sequence[dict[str, Any]],
    outcomes: Sequence[CustomerOutcome],
    now: datetime,
) -> None:
    """Store transitions and, in the same transaction, the outreach webhooks they make;
    their ids (the webhooks' keys) are read back only when some subscription watches."""
    watching = watching_subscriptions(session, [change["segment_id"] for change in changes])
    if not watching:
        session.execute(insert(membership_changes), changes)
        return
    change_ids = (
        session.execute(
            insert(membership_changes).returning(
                membership_changes.c.change_id, sort_by_parameter_order=True
            ),
            changes,
        )
        .scalars()
        .all()
    )
    enqueue_transition_webhooks(
        session,
        subscriptions=watching,
        changes=changes,
        change_ids=change_ids,
        segments_after={outcome.customer_id: outcome.members for outcome in outcomes},
        now=now,
    )


def save_cursor(
    session: Session, sequence: int, now: datetime, name: str = PROFILES_CHANGES_CURSOR
) -> None:
    """Move a cursor (by default the profiles change log's), inside the caller's transaction."""
    moved = session.execute(
        update(cursors).where(cursors.c.name == name).values(sequence=sequence, update_time=now)
    )
    if not moved.rowcount:  # type: ignore[attr-defined]
        session.execute(insert(cursors), [{"name": name, "sequence": sequence, "update_time": now}])


def definitions_evaluated(session: Session, now: datetime) -> None:
    """Record that the definitions pending at the start of a round of everyone are now
    reflected in every membership, inside the transaction that ends the round."""
    pending = session.execute(
        select(cursors.c.sequence).where(cursors.c.name == DEFINITIONS_PENDING)
    ).scalar_one_or_none()
    if pending is not None:
        save_cursor(session, int(pending), now, DEFINITIONS_EVALUATED)


# ---- page tokens -----------------------------------------------------------------------------


def encode_token(position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": position}).encode()).decode()


def decode_token(token: str) -> Any:
    if not token:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidArgument.field("page_token", "not a token from a previous page") from error


# ---- helpers ---------------------------------------------------------------------------------


def _segment(row: Any, *, update_time: datetime | None = None) -> Segment:
    """A segment from its table row or, with the revision's time, from a revision row."""
    return Segment(
        segment_id=row.segment_id,
        display_name=row.display_name,
        description=row.description,
        rule=dict(row.rule or {}),
        family=row.family,
        priority=row.priority,
        enabled=row.enabled,
        revision=row.revision,
        create_time=row.create_time,
        update_time=update_time or row.update_time,
    )


def _segment_values(segment: Segment) -> dict[str, Any]:
    return {
        "segment_id": segment.segment_id,
        **segment.definition(),
        "revision": segment.revision,
        "create_time": segment.create_time,
        "update_time": segment.update_time,
    }


def _insert_revision(
    session: Session,
    segment: Segment,
    actor: str,
    action: RevisionAction,
    changed: Sequence[str],
    restored: int,
    now: datetime,
) -> None:
    session.execute(
        insert(revisions),
        [
            {
                "segment_id": segment.segment_id,
                "revision": segment.revision,
                **segment.definition(),
                "actor": actor,
                "action": action.value,
                "changed_fields": list(changed),
                "restored_revision": restored,
                "create_time": segment.create_time,
                "revise_time": now,
            }
        ],
    )


def _load_for_update(session: Session, segment_id: str) -> Segment:
    row = session.execute(
        select(segments).where(segments.c.segment_id == segment_id).with_for_update()
    ).first()
    if row is None:
        raise NotFound("segment", segment_id)
    return _segment(row)


def _check_revision(stored: Segment, expected: int) -> None:
    if expected and expected != stored.revision:
        raise Conflict(
            f"segment {stored.segment_id!r} is at revision {stored.revision}, not {expected}; "
            "read it again and retry",
            reason="STALE_REVISION",
        )


def _change(row: Any) -> MembershipChange:
    return MembershipChange(
        customer_id=row.customer_id,
        segment_id=row.segment_id,
        family=row.family,
        kind=ChangeKind(row.kind),
        previous_winner=row.previous_winner,
        change_time=row.change_time,
        rule_revision=row.rule_revision,
        trigger=Trigger(row.trigger),
        change_id=row.change_id,
    )


def _projection_values(
    customer_id: str, document: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "customer_id": customer_id,
        "document": dict(document),
        "refresh_time": now,
        "signup_time": parse_timestamp(document.get("signup_time")),
    }
    for name in NUMBER_COLUMNS:
        number = document.get(name)
        values[name] = (
            float(number)
            if isinstance(number, int | float) and not isinstance(number, bool)
            else None
        )
    for name in TEXT_COLUMNS:
        text = document.get(name)
        values[name] = text if isinstance(text, str) and text else None
    return values
