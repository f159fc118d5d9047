"""Tables of the sync runs: one row per run, and the rows a run rejected."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Index
from sqlmodel import Field, SQLModel

from services.core.db import JsonDocument, UTCDateTime


class SyncRunRow(SQLModel, table=True):
    __tablename__ = "sync_runs"
    __table_args__ = (Index("ix_sync_runs_create_time", "create_time"),)

    run_id: str = Field(primary_key=True, max_length=64)
    source: str = Field(max_length=32)
    # The connector declaration the run was created with, so that a resumed run maps rows
    # exactly as the first attempt did even if the mapping file changed since.
    connector: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JsonDocument))
    file_path: str = Field(max_length=4096)
    file_size: int = Field(sa_type=BigInteger)
    file_sha256: str = Field(max_length=64)
    file_format: str = Field(max_length=16)
    status: str = Field(max_length=16)
    rows_total: int | None = Field(default=None, sa_type=BigInteger)
    rows_done: int = Field(default=0, sa_type=BigInteger)
    created_count: int = Field(default=0, sa_type=BigInteger)
    updated_count: int = Field(default=0, sa_type=BigInteger)
    unchanged_count: int = Field(default=0, sa_type=BigInteger)
    rejected_count: int = Field(default=0, sa_type=BigInteger)
    error: str = Field(default="", max_length=2000)
    lease_owner: str = Field(default="", max_length=128)
    lease_expire_time: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    create_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    start_time: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    finish_time: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class SyncRejectionRow(SQLModel, table=True):
    __tablename__ = "sync_rejections"

    run_id: str = Field(
        primary_key=True, foreign_key="sync_runs.run_id", ondelete="CASCADE", max_length=64
    )
    row_number: int = Field(primary_key=True, sa_type=BigInteger)
    key: str = Field(default="", max_length=255)
    reasons: list[str] = Field(default_factory=list, sa_column=Column(JsonDocument))
