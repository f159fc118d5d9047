"""sla_watch: when each conversation's SLA clocks need a look, and the SLA events

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.core.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SLA_EVENT = sa.text("sla_metric <> ''")


def upgrade() -> None:
    with op.batch_alter_table("routing_conversations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "sla_next_check_time", services.core.db.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.create_index(
            "ix_routing_conversations_sla_check", ["sla_next_check_time"], unique=False
        )
    # Conversations open before the watch existed get a first look at its first run.
    op.execute(
        "UPDATE routing_conversations SET sla_next_check_time = last_event_time "
        "WHERE state <> 'resolved' AND sla_policy_id <> ''"
    )
    with op.batch_alter_table("routing_conversation_events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("sla_metric", sa.String(length=16), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("sla_cycle", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("raised_priority", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("moved_to_queue_id", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column(
                "notified_endpoint_id", sa.String(length=64), nullable=False, server_default=""
            )
        )
        batch_op.create_index(
            "ux_routing_conversation_events_sla",
            ["conversation_id", "kind", "sla_metric", "sla_cycle"],
            unique=True,
            sqlite_where=_SLA_EVENT,
            postgresql_where=_SLA_EVENT,
        )


def downgrade() -> None:
    with op.batch_alter_table("routing_conversation_events", schema=None) as batch_op:
        batch_op.drop_index("ux_routing_conversation_events_sla")
        batch_op.drop_column("notified_endpoint_id")
        batch_op.drop_column("moved_to_queue_id")
        batch_op.drop_column("raised_priority")
        batch_op.drop_column("sla_cycle")
        batch_op.drop_column("sla_metric")
    with op.batch_alter_table("routing_conversations", schema=None) as batch_op:
        batch_op.drop_index("ix_routing_conversations_sla_check")
        batch_op.drop_column("sla_next_check_time")
