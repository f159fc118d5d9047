"""Tables of outreach webhooks: endpoints, subscriptions, the outbox of deliveries and the
log of every attempt to deliver them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, String
from sqlmodel import Field, SQLModel

from services.core.db import JsonDocument, UTCDateTime

# Idempotency keys are made by their producers from the cause (a transition id and a
# subscription id, a conversation and an SLA stage), so they are longer than plain ids.
MAX_KEY_LENGTH = 200


class OutreachEndpointRow(SQLModel, table=True):
    """Where webhooks go. ``secret`` signs every body and is never shown again after the
    response that created or rotated it."""

    __tablename__ = "outreach_endpoints"

    endpoint_id: str = Field(primary_key=True, max_length=64)
    url: str = Field(max_length=2048)
    secret: str = Field(max_length=200)
    description: str = Field(default="", max_length=2000)
    enabled: bool = True
    create_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    update_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class OutreachSubscriptionRow(SQLModel, table=True):
    """Send a webhook to an endpoint when a customer enters or exits a segment, if the
    customer is then also in every one of ``require_segments``."""

    __tablename__ = "outreach_subscriptions"

    subscription_id: str = Field(primary_key=True, max_length=64)
    segment_id: str = Field(max_length=64, index=True)
    transition: str = Field(max_length=16)
    # RESTRICT: an endpoint cannot disappear under a subscription, even in a race with
    # the check DeleteWebhookEndpoint makes first.
    endpoint_id: str = Field(
        sa_column=Column(
            String(64),
            ForeignKey("outreach_endpoints.endpoint_id", ondelete="RESTRICT"),
            nullable=False,
            index=True,
        )
    )
    require_segments: list[str] = Field(default_factory=list, sa_column=Column(JsonDocument))
    create_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class OutreachDeliveryRow(SQLModel, table=True):
    """One webhook to send (the outbox): pending until a 2xx answer (delivered) or until
    its attempts run out (dead, replayable). ``delivery_id`` is the idempotency key."""

    __tablename__ = "outreach_deliveries"
    __table_args__ = (
        Index("ix_outreach_deliveries_due", "status", "next_attempt_time"),
        Index("ix_outreach_deliveries_created", "create_time", "delivery_id"),
    )

    delivery_id: str = Field(primary_key=True, max_length=MAX_KEY_LENGTH)
    endpoint_id: str = Field(max_length=64, index=True)
    event_type: str = Field(max_length=64)
    customer_id: str | None = Field(default=None, max_length=64, index=True)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JsonDocument))
    status: str = Field(max_length=16)
    attempts: int = 0
    # Attempts made before the last replay: a replay gets a fresh retry budget while the
    # attempt numbers keep counting.
    attempts_before_replay: int = 0
    next_attempt_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    # Set while a dispatcher is sending it; another dispatcher leaves it alone until then.
    lease_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    last_status_code: int = 0
    last_error: str = Field(default="", max_length=1000)
    create_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    deliver_time: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class OutreachAttemptRow(SQLModel, table=True):
    """The delivery log: one row per POST made."""

    __tablename__ = "outreach_attempts"

    delivery_id: str = Field(primary_key=True, max_length=MAX_KEY_LENGTH)
    attempt: int = Field(primary_key=True)
    attempt_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    status_code: int = 0
    error: str = Field(default="", max_length=1000)
    duration_ms: int = 0
