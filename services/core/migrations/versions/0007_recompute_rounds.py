"""segments: re-evaluation rounds and their finished chunks

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.core.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "segment_recompute_rounds",
        sa.Column("name", sa.String(length=16), nullable=False),
        sa.Column("round_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("upto_sequence", sa.BigInteger(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("lease_until", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("start_time", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "segment_recompute_chunks",
        sa.Column("round_id", sa.String(length=64), nullable=False),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("round_id", "chunk_index"),
    )


def downgrade() -> None:
    op.drop_table("segment_recompute_chunks")
    op.drop_table("segment_recompute_rounds")
