"""report_facts: each conversation's figures and the segments it was routed in, and the
membership history indexed for sizes over time

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.core.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "routing_conversation_facts",
        sa.Column("conversation_id", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("route_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("bot_first", sa.Boolean(), nullable=False),
        sa.Column("first_response_seconds", sa.Float(), nullable=True),
        sa.Column("resolution_seconds", sa.Float(), nullable=True),
        sa.Column("first_response_met", sa.Boolean(), nullable=True),
        sa.Column("resolution_met", sa.Boolean(), nullable=True),
        sa.Column("csat_rating", sa.Integer(), nullable=False),
        sa.Column("human_involved", sa.Boolean(), nullable=False),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.Column("reopened", sa.Boolean(), nullable=False),
        sa.Column("handling_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id"),
    )
    op.create_index(
        "ix_routing_conversation_facts_route_time",
        "routing_conversation_facts",
        ["route_time"],
        unique=False,
    )
    op.create_table(
        "routing_conversation_segments",
        sa.Column("segment_id", sa.String(length=64), nullable=False),
        sa.Column("route_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("conversation_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("segment_id", "route_time", "conversation_id"),
    )
    _index_membership_changes(["segment_id", "change_time", "kind"])


def downgrade() -> None:
    _index_membership_changes(["segment_id", "change_time"])
    op.drop_table("routing_conversation_segments")
    op.drop_index("ix_routing_conversation_facts_route_time", "routing_conversation_facts")
    op.drop_table("routing_conversation_facts")


def _index_membership_changes(columns: list[str]) -> None:
    with op.batch_alter_table("segment_membership_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_segment_membership_changes_segment")
        batch_op.create_index("ix_segment_membership_changes_segment", columns, unique=False)
