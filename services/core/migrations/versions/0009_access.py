"""access: API keys (hashed) and the audit log of writes

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.core.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "access_api_keys",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("create_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("rotate_time", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoke_time", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_table(
        "access_audit_log",
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("key_name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=200), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("peer", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("entry_id"),
    )
    op.create_index("ix_access_audit_log_time", "access_audit_log", ["time"], unique=False)
    op.create_index(
        "ix_access_audit_log_key_time", "access_audit_log", ["key_id", "time"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_access_audit_log_key_time", "access_audit_log")
    op.drop_index("ix_access_audit_log_time", "access_audit_log")
    op.drop_table("access_audit_log")
    op.drop_table("access_api_keys")
