"""Tables of API keys (hashed) and the audit log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index
from sqlmodel import Field, SQLModel

from services.core.db import UTCDateTime


class ApiKeyRow(SQLModel, table=True):
    """One API key. Only the SHA-256 of the secret is kept: keys are long random strings,
    so a fast hash is enough, and a stolen table holds nothing a caller could present."""

    __tablename__ = "access_api_keys"

    key_id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=200)
    role: str = Field(max_length=16)
    agent_id: str = Field(default="", max_length=64)
    secret_hash: str = Field(max_length=64)
    create_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    rotate_time: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    revoke_time: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class AuditEntryRow(SQLModel, table=True):
    """A write made through the API, or an attempt refused for lack of permission."""

    __tablename__ = "access_audit_log"
    __table_args__ = (Index("ix_access_audit_log_key_time", "key_id", "time"),)

    entry_id: int | None = Field(default=None, primary_key=True)
    time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))
    key_id: str = Field(max_length=32)
    key_name: str = Field(max_length=200)
    role: str = Field(max_length=16)
    method: str = Field(max_length=200)
    code: str = Field(max_length=32)
    request_id: str = Field(max_length=64)
    peer: str = Field(default="", max_length=200)
