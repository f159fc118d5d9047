"""The outbox: how any Switchboard code asks for a webhook to be sent.

A producer calls ``enqueue_deliveries`` inside the transaction that records the cause (a
segment transition, an SLA breach), so a webhook exists exactly when its cause was
committed. Workers send what is due afterwards; the idempotency key, made by the producer
from the cause, keeps a cause that is recorded twice from sending two webhooks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from services.outreach.domain import DeliveryStatus
from services.outreach.models import MAX_KEY_LENGTH, OutreachDeliveryRow, OutreachEndpointRow

delivery_table: Table = OutreachDeliveryRow.__table__  # type: ignore[attr-defined]
endpoint_table: Table = OutreachEndpointRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class NewDelivery:
    """A webhook to send to ``endpoint_id``."""

    endpoint_id: str
    event_type: str  # e.g. "segment.entered", "segment.exited", "sla.warning", "sla.breached"
    idempotency_key: str  # deterministic from the cause; a repeat is ignored
    payload: Mapping[str, Any]
    customer_id: str | None = None


def enqueue_deliveries(session: Session, deliveries: Sequence[NewDelivery], now: datetime) -> int:
    """Insert pending deliveries, due at ``now``, in the caller's transaction, ignoring
    keys already present (stored before or repeated in ``deliveries``); returns how many
    were new. Raises ``ValueError`` for an empty or over-long key."""
    rows: dict[str, dict[str, Any]] = {}
    for delivery in deliveries:
        key = delivery.idempotency_key
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"an idempotency key has 1 to {MAX_KEY_LENGTH} characters: {key!r}")
        rows.setdefault(
            key,
            {
                "delivery_id": key,
                "endpoint_id": delivery.endpoint_id,
                "event_type": delivery.event_type,
                "customer_id": delivery.customer_id,
                "payload": dict(delivery.payload),
                "status": DeliveryStatus.PENDING.value,
                "attempts": 0,
                "attempts_before_replay": 0,
                "next_attempt_time": now,
                "lease_until": None,
                "last_status_code": 0,
                "last_error": "",
                "create_time": now,
                "deliver_time": None,
            },
        )
    if not rows:
        return 0
    dialect = session.connection().dialect.name
    statement: Any
    if dialect == "postgresql":
        statement = postgresql.insert(delivery_table).on_conflict_do_nothing(
            index_elements=["delivery_id"]
        )
    elif dialect == "sqlite":
        statement = sqlite.insert(delivery_table).on_conflict_do_nothing(
            index_elements=["delivery_id"]
        )
    else:  # pragma: no cover - Switchboard runs on the two above
        statement = insert(delivery_table)
    inserted = session.execute(
        statement.returning(delivery_table.c.delivery_id), list(rows.values())
    )
    return len(inserted.all())


def endpoint_exists(session: Session, endpoint_id: str) -> bool:
    """Whether ``endpoint_id`` names a webhook endpoint (enabled or not)."""
    found = session.execute(
        select(endpoint_table.c.endpoint_id).where(endpoint_table.c.endpoint_id == endpoint_id)
    ).first()
    return found is not None
