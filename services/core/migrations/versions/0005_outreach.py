"""outreach tables

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import services.core.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "outreach_endpoints",
        sa.Column("endpoint_id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("create_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("update_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("endpoint_id"),
    )
    op.create_table(
        "outreach_subscriptions",
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("segment_id", sa.String(length=64), nullable=False),
        sa.Column("transition", sa.String(length=16), nullable=False),
        sa.Column("endpoint_id", sa.String(length=64), nullable=False),
        sa.Column("require_segments", _JSON, nullable=True),
        sa.Column("create_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"], ["outreach_endpoints.endpoint_id"], ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("subscription_id"),
    )
    with op.batch_alter_table("outreach_subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outreach_subscriptions_endpoint_id", ["endpoint_id"], unique=False
        )
        batch_op.create_index("ix_outreach_subscriptions_segment_id", ["segment_id"], unique=False)

    op.create_table(
        "outreach_deliveries",
        sa.Column("delivery_id", sa.String(length=200), nullable=False),
        sa.Column("endpoint_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=True),
        sa.Column("payload", _JSON, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("attempts_before_replay", sa.Integer(), nullable=False),
        sa.Column("next_attempt_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lease_until", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=1000), nullable=False),
        sa.Column("create_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deliver_time", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("delivery_id"),
    )
    with op.batch_alter_table("outreach_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outreach_deliveries_due", ["status", "next_attempt_time"], unique=False
        )
        batch_op.create_index(
            "ix_outreach_deliveries_created", ["create_time", "delivery_id"], unique=False
        )
        batch_op.create_index("ix_outreach_deliveries_endpoint_id", ["endpoint_id"], unique=False)
        batch_op.create_index("ix_outreach_deliveries_customer_id", ["customer_id"], unique=False)

    op.create_table(
        "outreach_attempts",
        sa.Column("delivery_id", sa.String(length=200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("attempt_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=1000), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("delivery_id", "attempt"),
    )


def downgrade() -> None:
    op.drop_table("outreach_attempts")
    with op.batch_alter_table("outreach_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_outreach_deliveries_customer_id")
        batch_op.drop_index("ix_outreach_deliveries_endpoint_id")
        batch_op.drop_index("ix_outreach_deliveries_created")
        batch_op.drop_index("ix_outreach_deliveries_due")
    op.drop_table("outreach_deliveries")
    with op.batch_alter_table("outreach_subscriptions", schema=None) as batch_op:
        batch_op.drop_index("ix_outreach_subscriptions_segment_id")
        batch_op.drop_index("ix_outreach_subscriptions_endpoint_id")
    op.drop_table("outreach_subscriptions")
    op.drop_table("outreach_endpoints")
