"""segments: definitions, revisions, memberships, transitions, customer projection

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 16:51:57.589042
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import services.core.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "segment_customers",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column(
            "document",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("plan", sa.String(length=100), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("region", sa.String(length=100), nullable=True),
        sa.Column("industry", sa.String(length=100), nullable=True),
        sa.Column("lifecycle_stage", sa.String(length=100), nullable=True),
        sa.Column("language", sa.String(length=35), nullable=True),
        sa.Column("channel_preference", sa.String(length=32), nullable=True),
        sa.Column("seats", sa.Float(), nullable=True),
        sa.Column("arr", sa.Float(), nullable=True),
        sa.Column("employee_count", sa.Float(), nullable=True),
        sa.Column("annual_revenue", sa.Float(), nullable=True),
        sa.Column("health_score", sa.Float(), nullable=True),
        sa.Column("nps", sa.Float(), nullable=True),
        sa.Column("signup_time", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("refresh_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_id"),
    )
    op.create_table(
        "segment_membership_changes",
        sa.Column(
            "change_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("segment_id", sa.String(length=64), nullable=False),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("previous_winner", sa.String(length=64), nullable=False),
        sa.Column("change_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("rule_revision", sa.BigInteger(), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("change_id"),
    )
    with op.batch_alter_table("segment_membership_changes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_segment_membership_changes_customer", ["customer_id", "change_time"], unique=False
        )
        batch_op.create_index(
            "ix_segment_membership_changes_family", ["family", "change_time"], unique=False
        )
        batch_op.create_index(
            "ix_segment_membership_changes_segment", ["segment_id", "change_time"], unique=False
        )

    op.create_table(
        "segment_memberships",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("segment_id", sa.String(length=64), nullable=False),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("enter_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("rule_revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "segment_id"),
    )
    with op.batch_alter_table("segment_memberships", schema=None) as batch_op:
        batch_op.create_index(
            "ix_segment_memberships_segment", ["segment_id", "customer_id"], unique=False
        )

    op.create_table(
        "segment_recompute_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("update_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "segment_revisions",
        sa.Column("segment_id", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=False),
        sa.Column(
            "rule",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column(
            "changed_fields",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("restored_revision", sa.BigInteger(), nullable=False),
        sa.Column("create_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revise_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("segment_id", "revision"),
    )
    op.create_table(
        "segments",
        sa.Column("segment_id", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=False),
        sa.Column(
            "rule",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("create_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("update_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("segment_id"),
    )
    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_segments_family"), ["family"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_segments_family"))

    op.drop_table("segments")
    op.drop_table("segment_revisions")
    op.drop_table("segment_recompute_cursors")
    with op.batch_alter_table("segment_memberships", schema=None) as batch_op:
        batch_op.drop_index("ix_segment_memberships_segment")

    op.drop_table("segment_memberships")
    with op.batch_alter_table("segment_membership_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_segment_membership_changes_segment")
        batch_op.drop_index("ix_segment_membership_changes_family")
        batch_op.drop_index("ix_segment_membership_changes_customer")

    op.drop_table("segment_membership_changes")
    op.drop_table("segment_customers")
