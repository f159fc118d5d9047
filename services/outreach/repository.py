"""Storage of webhook endpoints, subscriptions, deliveries and their attempts, including
the lease that keeps two dispatchers from sending the same delivery at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from services.core.db import read_session, write_transaction
from services.core.errors import AlreadyExists, FailedPrecondition, NotFound
from services.outreach.domain import (
    Attempt,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Subscription,
    TransitionKind,
)
from services.outreach.logic import AttemptOutcome, NextStep
from services.outreach.models import (
    OutreachAttemptRow,
    OutreachDeliveryRow,
    OutreachEndpointRow,
    OutreachSubscriptionRow,
)
from services.segments.models import SegmentRow

endpoints: Table = OutreachEndpointRow.__table__  # type: ignore[attr-defined]
subscriptions: Table = OutreachSubscriptionRow.__table__  # type: ignore[attr-defined]
deliveries: Table = OutreachDeliveryRow.__table__  # type: ignore[attr-defined]
attempts: Table = OutreachAttemptRow.__table__  # type: ignore[attr-defined]
segments: Table = SegmentRow.__table__  # type: ignore[attr-defined]

MAX_ERROR_LENGTH = 1000


@dataclass(frozen=True)
class DeliveryFilter:
    status: DeliveryStatus | None = None
    endpoint_id: str = ""
    customer_id: str = ""


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a dispatcher holds a lease on, with what it needs to send it."""

    delivery_id: str
    event_type: str
    payload: dict[str, Any]
    attempt: int  # the number of the attempt about to be made
    failures_before: int  # failed attempts since creation or the last replay
    lease_until: datetime
    url: str | None  # None when the endpoint no longer exists
    secret: str


class OutreachRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ---- endpoints ---------------------------------------------------------------------

    def create_endpoint(self, *, endpoint: Endpoint, secret: str, now: datetime) -> Endpoint:
        created = Endpoint(**{**endpoint.__dict__, "create_time": now, "update_time": now})
        try:
            with write_transaction(self.engine) as session:
                if _endpoint_row(session, endpoint.endpoint_id) is not None:
                    raise AlreadyExists("webhook endpoint", endpoint.endpoint_id)
                session.execute(insert(endpoints), [{**created.__dict__, "secret": secret}])
        except IntegrityError as error:
            raise AlreadyExists("webhook endpoint", endpoint.endpoint_id) from error
        return created

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        with read_session(self.engine) as session:
            row = _endpoint_row(session, endpoint_id)
        if row is None:
            raise NotFound("webhook endpoint", endpoint_id)
        return _endpoint(row)

    def list_endpoints(self, *, after: str, limit: int) -> tuple[list[Endpoint], bool]:
        query = select(endpoints).order_by(endpoints.c.endpoint_id).limit(limit + 1)
        if after:
            query = query.where(endpoints.c.endpoint_id > after)
        with read_session(self.engine) as session:
            rows = session.execute(query).all()
        return [_endpoint(row) for row in rows[:limit]], len(rows) > limit

    def update_endpoint(
        self, *, endpoint_id: str, values: dict[str, Any], now: datetime
    ) -> Endpoint:
        """Set ``values`` (url, description, enabled, secret) on the endpoint."""
        with write_transaction(self.engine) as session:
            changed = session.execute(
                update(endpoints)
                .where(endpoints.c.endpoint_id == endpoint_id)
                .values(**values, update_time=now)
            )
            if not changed.rowcount:  # type: ignore[attr-defined]
                raise NotFound("webhook endpoint", endpoint_id)
            row = _endpoint_row(session, endpoint_id)
        return _endpoint(row)

    def delete_endpoint(self, endpoint_id: str) -> None:
        try:
            with write_transaction(self.engine) as session:
                if _endpoint_row(session, endpoint_id) is None:
                    raise NotFound("webhook endpoint", endpoint_id)
                users = (
                    session.execute(
                        select(subscriptions.c.subscription_id)
                        .where(subscriptions.c.endpoint_id == endpoint_id)
                        .order_by(subscriptions.c.subscription_id)
                    )
                    .scalars()
                    .all()
                )
                if users:
                    raise _endpoint_in_use(endpoint_id, users)
                session.execute(delete(endpoints).where(endpoints.c.endpoint_id == endpoint_id))
        except IntegrityError as error:
            # A subscription created meanwhile: the foreign key refused the delete.
            raise _endpoint_in_use(endpoint_id, []) from error

    # ---- subscriptions -----------------------------------------------------------------

    def create_subscription(self, *, subscription: Subscription, now: datetime) -> Subscription:
        created = Subscription(**{**subscription.__dict__, "create_time": now})
        try:
            with write_transaction(self.engine) as session:
                _require_segments(
                    session, [subscription.segment_id, *subscription.require_segments]
                )
                if _endpoint_row(session, subscription.endpoint_id) is None:
                    raise FailedPrecondition(
                        f"webhook endpoint {subscription.endpoint_id!r} does not exist; "
                        "create it first",
                        reason="ENDPOINT_NOT_FOUND",
                    )
                if session.execute(
                    select(subscriptions.c.subscription_id).where(
                        subscriptions.c.subscription_id == subscription.subscription_id
                    )
                ).first():
                    raise AlreadyExists("outreach subscription", subscription.subscription_id)
                session.execute(
                    insert(subscriptions),
                    [
                        {
                            **created.__dict__,
                            "transition": created.transition.value,
                            "require_segments": list(created.require_segments),
                        }
                    ],
                )
        except IntegrityError as error:
            raise AlreadyExists("outreach subscription", subscription.subscription_id) from error
        return created

    def list_subscriptions(
        self, *, segment_id: str, endpoint_id: str, after: str, limit: int
    ) -> tuple[list[Subscription], bool]:
        query = select(subscriptions).order_by(subscriptions.c.subscription_id).limit(limit + 1)
        if segment_id:
            query = query.where(subscriptions.c.segment_id == segment_id)
        if endpoint_id:
            query = query.where(subscriptions.c.endpoint_id == endpoint_id)
        if after:
            query = query.where(subscriptions.c.subscription_id > after)
        with read_session(self.engine) as session:
            rows = session.execute(query).all()
        return [subscription_from_row(row) for row in rows[:limit]], len(rows) > limit

    def delete_subscription(self, subscription_id: str) -> None:
        with write_transaction(self.engine) as session:
            gone = session.execute(
                delete(subscriptions).where(subscriptions.c.subscription_id == subscription_id)
            )
            if not gone.rowcount:  # type: ignore[attr-defined]
                raise NotFound("outreach subscription", subscription_id)

    # ---- deliveries --------------------------------------------------------------------

    def list_deliveries(
        self, *, where: DeliveryFilter, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[Delivery], tuple[datetime, str] | None]:
        """Deliveries newest first, and the position to continue after when more follow."""
        query = (
            select(deliveries)
            .order_by(deliveries.c.create_time.desc(), deliveries.c.delivery_id.desc())
            .limit(limit + 1)
        )
        if where.status is not None:
            query = query.where(deliveries.c.status == where.status.value)
        if where.endpoint_id:
            query = query.where(deliveries.c.endpoint_id == where.endpoint_id)
        if where.customer_id:
            query = query.where(deliveries.c.customer_id == where.customer_id)
        if after is not None:
            query = query.where(
                or_(
                    deliveries.c.create_time < after[0],
                    and_(
                        deliveries.c.create_time == after[0],
                        deliveries.c.delivery_id < after[1],
                    ),
                )
            )
        with read_session(self.engine) as session:
            rows = session.execute(query).all()
        found = [_delivery(row) for row in rows[:limit]]
        last = found[-1] if len(rows) > limit else None
        return found, (last.create_time, last.delivery_id) if last else None

    def get_delivery(self, delivery_id: str) -> Delivery:
        with read_session(self.engine) as session:
            row = session.execute(
                select(deliveries).where(deliveries.c.delivery_id == delivery_id)
            ).first()
            if row is None:
                raise NotFound("delivery", delivery_id)
            log = session.execute(
                select(attempts)
                .where(attempts.c.delivery_id == delivery_id)
                .order_by(attempts.c.attempt)
            ).all()
        return _delivery(row, log)

    def replay_delivery(self, delivery_id: str, now: datetime) -> Delivery:
        """Make a dead or delivered delivery pending again, due now, with a fresh retry
        budget; its key and attempt numbers stay."""
        with write_transaction(self.engine) as session:
            row = session.execute(
                select(deliveries).where(deliveries.c.delivery_id == delivery_id).with_for_update()
            ).first()
            if row is None:
                raise NotFound("delivery", delivery_id)
            if row.status == DeliveryStatus.PENDING.value:
                raise FailedPrecondition(
                    f"delivery {delivery_id!r} is still pending; only dead or delivered "
                    "deliveries can be replayed",
                    reason="DELIVERY_PENDING",
                )
            if _endpoint_row(session, row.endpoint_id) is None:
                raise FailedPrecondition(
                    f"webhook endpoint {row.endpoint_id!r} of delivery {delivery_id!r} "
                    "no longer exists",
                    reason="ENDPOINT_NOT_FOUND",
                )
            session.execute(
                update(deliveries)
                .where(deliveries.c.delivery_id == delivery_id)
                .values(
                    status=DeliveryStatus.PENDING.value,
                    attempts_before_replay=row.attempts,
                    next_attempt_time=now,
                    lease_until=None,
                )
            )
        return self.get_delivery(delivery_id)

    # ---- dispatching -------------------------------------------------------------------

    def claim_due(
        self, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` pending deliveries due by ``now`` whose endpoint is enabled
        (or gone, so that they can be declared dead). PostgreSQL skips rows another
        dispatcher is claiming; SQLite's single writer serializes claims."""
        due = (
            select(deliveries.c.delivery_id)
            .outerjoin(endpoints, endpoints.c.endpoint_id == deliveries.c.endpoint_id)
            .where(
                deliveries.c.status == DeliveryStatus.PENDING.value,
                deliveries.c.next_attempt_time <= now,
                or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until < now),
                or_(endpoints.c.enabled.is_(True), endpoints.c.endpoint_id.is_(None)),
            )
            .order_by(deliveries.c.next_attempt_time)
        )
        # Most ticks find nothing due: a read says so without taking SQLite's write lock.
        with read_session(self.engine) as session:
            if session.execute(due.limit(1)).first() is None:
                return []
        with write_transaction(self.engine) as session:
            claim = due.limit(limit).with_for_update(of=deliveries, skip_locked=True)
            ids = list(session.execute(claim).scalars())
            if not ids:
                return []
            session.execute(
                update(deliveries)
                .where(deliveries.c.delivery_id.in_(ids))
                .values(lease_until=lease_until)
            )
            rows = session.execute(
                select(
                    deliveries.c.delivery_id,
                    deliveries.c.event_type,
                    deliveries.c.payload,
                    deliveries.c.attempts,
                    deliveries.c.attempts_before_replay,
                    endpoints.c.url,
                    endpoints.c.secret,
                )
                .outerjoin(endpoints, endpoints.c.endpoint_id == deliveries.c.endpoint_id)
                .where(deliveries.c.delivery_id.in_(ids))
                .order_by(deliveries.c.next_attempt_time)
            ).all()
        return [
            ClaimedDelivery(
                delivery_id=row.delivery_id,
                event_type=row.event_type,
                payload=dict(row.payload or {}),
                attempt=row.attempts + 1,
                failures_before=row.attempts - row.attempts_before_replay,
                lease_until=lease_until,
                url=row.url,
                secret=row.secret or "",
            )
            for row in rows
        ]

    def record_attempt(
        self,
        claimed: ClaimedDelivery,
        outcome: AttemptOutcome,
        step: NextStep,
        now: datetime,
    ) -> bool:
        """Store an attempt and where the delivery goes next, if the dispatcher still holds
        the lease it claimed (False: the lease ran out and another dispatcher took over)."""
        error = outcome.error[:MAX_ERROR_LENGTH]
        with write_transaction(self.engine) as session:
            moved = session.execute(
                update(deliveries)
                .where(
                    deliveries.c.delivery_id == claimed.delivery_id,
                    deliveries.c.status == DeliveryStatus.PENDING.value,
                    deliveries.c.lease_until == claimed.lease_until,
                    deliveries.c.attempts == claimed.attempt - 1,
                )
                .values(
                    status=step.status.value,
                    attempts=claimed.attempt,
                    next_attempt_time=step.next_attempt_time,
                    lease_until=None,
                    last_status_code=outcome.status_code,
                    last_error=error,
                    deliver_time=now if step.status is DeliveryStatus.DELIVERED else None,
                )
            )
            if not moved.rowcount:  # type: ignore[attr-defined]
                return False
            session.execute(
                insert(attempts),
                [
                    {
                        "delivery_id": claimed.delivery_id,
                        "attempt": claimed.attempt,
                        "attempt_time": now,
                        "status_code": outcome.status_code,
                        "error": error,
                        "duration_ms": outcome.duration_ms,
                    }
                ],
            )
        return True


def watching_subscriptions(session: Session, segment_ids: Sequence[str]) -> list[Subscription]:
    """Subscriptions to any of ``segment_ids`` whose endpoint is enabled: one query, whatever
    the number of customers that moved."""
    if not segment_ids:
        return []
    rows = session.execute(
        select(subscriptions)
        .join(endpoints, endpoints.c.endpoint_id == subscriptions.c.endpoint_id)
        .where(subscriptions.c.segment_id.in_(sorted(set(segment_ids))), endpoints.c.enabled)
    ).all()
    return [subscription_from_row(row) for row in rows]


def subscriptions_naming(session: Session, segment_id: str) -> list[str]:
    """Ids of the subscriptions that watch ``segment_id`` or require it (a small table)."""
    return sorted(
        row.subscription_id
        for row in session.execute(select(subscriptions)).all()
        if row.segment_id == segment_id or segment_id in (row.require_segments or ())
    )


def subscription_from_row(row: Any) -> Subscription:
    return Subscription(
        subscription_id=row.subscription_id,
        segment_id=row.segment_id,
        transition=TransitionKind(row.transition),
        endpoint_id=row.endpoint_id,
        require_segments=tuple(row.require_segments or ()),
        create_time=row.create_time,
    )


def _endpoint_row(session: Session, endpoint_id: str) -> Any:
    return session.execute(select(endpoints).where(endpoints.c.endpoint_id == endpoint_id)).first()


def _endpoint(row: Any) -> Endpoint:
    """The endpoint as callers see it: never its secret."""
    return Endpoint(
        endpoint_id=row.endpoint_id,
        url=row.url,
        description=row.description,
        enabled=row.enabled,
        create_time=row.create_time,
        update_time=row.update_time,
    )


def _endpoint_in_use(endpoint_id: str, users: Sequence[str]) -> FailedPrecondition:
    named = f" ({', '.join(users)})" if users else ""
    return FailedPrecondition(
        f"webhook endpoint {endpoint_id!r} is used by outreach subscriptions{named}; "
        "delete them first",
        reason="ENDPOINT_IN_USE",
    )


def _require_segments(session: Session, segment_ids: Sequence[str]) -> None:
    wanted = sorted(set(segment_ids))
    found = set(
        session.execute(select(segments.c.segment_id).where(segments.c.segment_id.in_(wanted)))
        .scalars()
        .all()
    )
    missing = [segment_id for segment_id in wanted if segment_id not in found]
    if missing:
        raise FailedPrecondition(
            f"segment {', '.join(repr(m) for m in missing)} does not exist; create it first",
            reason="SEGMENT_NOT_FOUND",
        )


def _delivery(row: Any, log: Sequence[Any] = ()) -> Delivery:
    return Delivery(
        delivery_id=row.delivery_id,
        endpoint_id=row.endpoint_id,
        event_type=row.event_type,
        customer_id=row.customer_id,
        payload=dict(row.payload or {}),
        status=DeliveryStatus(row.status),
        attempts=row.attempts,
        next_attempt_time=row.next_attempt_time,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        create_time=row.create_time,
        deliver_time=row.deliver_time,
        log=tuple(
            Attempt(a.attempt, a.attempt_time, a.status_code, a.error, a.duration_ms) for a in log
        ),
    )
