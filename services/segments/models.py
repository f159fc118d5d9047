"""Tables of the segments service.

``segment_customers`` is this service's own projection of each customer's rule attributes,
refreshed from the ProfileService during recomputation: preview and lint read it instead of
another service's tables, and its typed columns let simple rules run as SQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Index
from sqlmodel import Field, SQLModel

from services.core.db import AutoIncrementId, JsonDocument, UTCDateTime


class SegmentRow(SQLModel, table=True):
    __tablename__ = "segments"

    segment_id: str = Field(primary_key=True, max_length=64)
    display_name: str = Field(default="", max_length=200)
    description: str = Field(default="", max_length=2000)
    rule: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JsonDocument))
    family: str = Field(default="", max_length=64, index=True)
    priority: int = 0
    enabled: bool = True
    revision: int = Field(default=1, sa_type=BigInteger)
    create_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    update_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class SegmentRevisionRow(SQLModel, table=True):
    """Every revision's full definition, so any of them can be read or restored."""

    __tablename__ = "segment_revisions"

    segment_id: str = Field(primary_key=True, max_length=64)
    revision: int = Field(primary_key=True, sa_type=BigInteger)
    display_name: str = Field(default="", max_length=200)
    description: str = Field(default="", max_length=2000)
    rule: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JsonDocument))
    family: str = Field(default="", max_length=64)
    priority: int = 0
    enabled: bool = True
    actor: str = Field(default="", max_length=200)
    action: str = Field(max_length=32)
    changed_fields: list[str] = Field(default_factory=list, sa_column=Column(JsonDocument))
    restored_revision: int = Field(default=0, sa_type=BigInteger)
    create_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    revise_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class MembershipRow(SQLModel, table=True):
    """A customer's current membership: an overlay it matches or its family's winner."""

    __tablename__ = "segment_memberships"
    __table_args__ = (Index("ix_segment_memberships_segment", "segment_id", "customer_id"),)

    customer_id: str = Field(primary_key=True, max_length=64)
    segment_id: str = Field(primary_key=True, max_length=64)
    family: str = Field(default="", max_length=64)
    enter_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    rule_revision: int = Field(default=0, sa_type=BigInteger)


class MembershipChangeRow(SQLModel, table=True):
    __tablename__ = "segment_membership_changes"
    __table_args__ = (
        Index("ix_segment_membership_changes_customer", "customer_id", "change_time"),
        # With the kind, sizes over time sum entries and exits from the index alone.
        Index("ix_segment_membership_changes_segment", "segment_id", "change_time", "kind"),
        Index("ix_segment_membership_changes_family", "family", "change_time"),
    )

    change_id: int | None = Field(default=None, primary_key=True, sa_type=AutoIncrementId)
    customer_id: str = Field(max_length=64)
    segment_id: str = Field(max_length=64)
    family: str = Field(default="", max_length=64)
    kind: str = Field(max_length=16)
    previous_winner: str = Field(default="", max_length=64)
    change_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    rule_revision: int = Field(default=0, sa_type=BigInteger)
    trigger: str = Field(default="", max_length=32)


class CustomerProjectionRow(SQLModel, table=True):
    """A customer's rule attributes as of the last recomputation that read it."""

    __tablename__ = "segment_customers"

    customer_id: str = Field(primary_key=True, max_length=64)
    document: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JsonDocument))
    plan: str | None = Field(default=None, max_length=100)
    country: str | None = Field(default=None, max_length=2)
    region: str | None = Field(default=None, max_length=100)
    industry: str | None = Field(default=None, max_length=100)
    lifecycle_stage: str | None = Field(default=None, max_length=100)
    language: str | None = Field(default=None, max_length=35)
    channel_preference: str | None = Field(default=None, max_length=32)
    seats: float | None = None
    arr: float | None = None
    employee_count: float | None = None
    annual_revenue: float | None = None
    health_score: float | None = None
    nps: float | None = None
    signup_time: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    refresh_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class RecomputeCursorRow(SQLModel, table=True):
    """How far into the profiles change log memberships have been recomputed."""

    __tablename__ = "segment_recompute_cursors"

    name: str = Field(primary_key=True, max_length=64)
    sequence: int = Field(default=0, sa_type=BigInteger)
    update_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class RecomputeRoundRow(SQLModel, table=True):
    """The one re-evaluation round in progress (at most one row). Rounds never overlap, so
    two workers never evaluate the same customer at once and store its transitions twice."""

    __tablename__ = "segment_recompute_rounds"

    name: str = Field(primary_key=True, max_length=16)
    round_id: str = Field(max_length=64)
    kind: str = Field(max_length=16)
    # For a "changed" round: the change-log position the cursor moves to when it finishes.
    upto_sequence: int = Field(default=0, sa_type=BigInteger)
    chunk_count: int = -1
    lease_until: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    start_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class RecomputeChunkRow(SQLModel, table=True):
    """Chunks of a round that are done; inserting twice is a no-op, so a redelivered chunk
    counts once."""

    __tablename__ = "segment_recompute_chunks"

    round_id: str = Field(primary_key=True, max_length=64)
    chunk_index: int = Field(primary_key=True)
