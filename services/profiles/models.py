"""Tables of the profiles service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from services.core.db import AutoIncrementId, JsonDocument, UTCDateTime


class CustomerRow(SQLModel, table=True):
    __tablename__ = "customers"
    __table_args__ = (
        Index("ix_customers_plan", "plan"),
        Index("ix_customers_update_time", "update_time"),
    )

    customer_id: str = Field(primary_key=True, max_length=64)
    email: str = Field(default="", max_length=254)
    display_name: str = Field(default="", max_length=200)
    company_name: str = Field(default="", max_length=200)
    plan: str = Field(default="", max_length=100)
    seats: int | None = Field(default=None, sa_type=BigInteger)
    arr: float | None = None
    employee_count: int | None = Field(default=None, sa_type=BigInteger)
    annual_revenue: float | None = None
    industry: str = Field(default="", max_length=100)
    country: str = Field(default="", max_length=2)
    region: str = Field(default="", max_length=100)
    timezone: str = Field(default="", max_length=64)
    language: str = Field(default="", max_length=35)
    signup_time: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    lifecycle_stage: str = Field(default="", max_length=100)
    health_score: float | None = None
    nps: int | None = None
    channel_preference: str = Field(default="", max_length=32)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JsonDocument))
    # Where each field's value came from and when: see ``FieldSourceDocument``.
    field_sources: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=Column(JsonDocument, nullable=False, server_default=text("'[]'")),
    )
    create_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    update_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    version: int = 1


class ExternalIdRow(SQLModel, table=True):
    """An id in another system; (system, external_id) points at exactly one customer."""

    __tablename__ = "customer_external_ids"
    __table_args__ = (UniqueConstraint("customer_id", "system"),)

    system: str = Field(primary_key=True, max_length=32)
    external_id: str = Field(primary_key=True, max_length=255)
    customer_id: str = Field(foreign_key="customers.customer_id", ondelete="CASCADE", index=True)


class TagRow(SQLModel, table=True):
    __tablename__ = "customer_tags"

    customer_id: str = Field(
        primary_key=True, foreign_key="customers.customer_id", ondelete="CASCADE"
    )
    tag: str = Field(primary_key=True, max_length=64)


class UsageEventRow(SQLModel, table=True):
    __tablename__ = "usage_events"
    __table_args__ = (
        Index("ix_usage_events_customer_time", "customer_id", "occur_time"),
        # Sources that send an event id get exactly-once recording per customer.
        UniqueConstraint("customer_id", "event_id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=AutoIncrementId)
    customer_id: str = Field(foreign_key="customers.customer_id", ondelete="CASCADE")
    metric: str = Field(max_length=64)
    value: float
    occur_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    event_id: str | None = Field(default=None, max_length=128)


class CustomerChangeRow(SQLModel, table=True):
    """The change log. Holds ids and field names only, never values, so erasure leaves
    nothing personal behind in it."""

    __tablename__ = "customer_changes"

    sequence: int | None = Field(default=None, primary_key=True, sa_type=AutoIncrementId)
    customer_id: str = Field(max_length=64, index=True)
    kind: str = Field(max_length=32)
    changed_fields: list[str] = Field(default_factory=list, sa_column=Column(JsonDocument))
    change_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
