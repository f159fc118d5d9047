"""sync tables: runs, rejected rows, and each customer field's source

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import services.core.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "customer_field_sources",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("field", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("refresh_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.customer_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("customer_id", "field"),
    )
    op.create_table(
        "sync_runs",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("connector", _JSON, nullable=True),
        sa.Column("file_path", sa.String(length=4096), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("file_format", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("rows_total", sa.BigInteger(), nullable=True),
        sa.Column("rows_done", sa.BigInteger(), nullable=False),
        sa.Column("created_count", sa.BigInteger(), nullable=False),
        sa.Column("updated_count", sa.BigInteger(), nullable=False),
        sa.Column("unchanged_count", sa.BigInteger(), nullable=False),
        sa.Column("rejected_count", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.String(length=2000), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=False),
        sa.Column("lease_expire_time", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("create_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("start_time", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finish_time", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("run_id"),
    )
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.create_index("ix_sync_runs_create_time", ["create_time"], unique=False)
    op.create_table(
        "sync_rejections",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("row_number", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("reasons", _JSON, nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["sync_runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "row_number"),
    )


def downgrade() -> None:
    op.drop_table("sync_rejections")
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_runs_create_time")
    op.drop_table("sync_runs")
    op.drop_table("customer_field_sources")
