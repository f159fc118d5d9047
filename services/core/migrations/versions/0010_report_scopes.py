"""report_scopes: each conversation's figures also on the rows of the segments it was routed
in, and each customer's conversations linked in routing order, so a scorecard reads each
scope in one scan with neither a join nor a distinct count over a million rows

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.core.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FACTS = "routing_conversation_facts"
SEGMENTS = "routing_conversation_segments"
# The figures, as 0008 made them on the facts, with what rows that exist already hold until
# the backfill below.
FIGURES = (
    ("customer_id", sa.String(length=64), False, sa.text("''")),
    ("bot_first", sa.Boolean(), False, sa.false()),
    ("first_response_seconds", sa.Float(), True, None),
    ("resolution_seconds", sa.Float(), True, None),
    ("first_response_met", sa.Boolean(), True, None),
    ("resolution_met", sa.Boolean(), True, None),
    ("csat_rating", sa.Integer(), False, sa.text("0")),
    ("human_involved", sa.Boolean(), False, sa.false()),
    ("escalated", sa.Boolean(), False, sa.false()),
    ("reopened", sa.Boolean(), False, sa.false()),
    ("handling_seconds", sa.Float(), False, sa.text("0")),
)


def upgrade() -> None:
    for table in (FACTS, SEGMENTS):
        op.add_column(
            table,
            sa.Column(
                "previous_route_time", services.core.db.UTCDateTime(timezone=True), nullable=True
            ),
        )
    for name, kind, nullable, default in FIGURES:
        op.add_column(SEGMENTS, sa.Column(name, kind, nullable=nullable, server_default=default))
    # Rows routed before this revision: the figures as they stand, and each customer's
    # conversations in (route_time, conversation_id) order, per segment on segment rows.
    op.execute(
        f"UPDATE {FACTS} SET previous_route_time = ordered.previous "
        "FROM (SELECT conversation_id, lag(route_time) OVER ("
        "PARTITION BY customer_id ORDER BY route_time, conversation_id) AS previous "
        f"FROM {FACTS} WHERE customer_id <> '') AS ordered "
        f"WHERE ordered.conversation_id = {FACTS}.conversation_id"
    )
    figures = ", ".join(f"{name} = ordered.{name}" for name, *_ in FIGURES)
    selected = ", ".join(f"facts.{name}" for name, *_ in FIGURES)
    op.execute(
        f"UPDATE {SEGMENTS} SET {figures}, previous_route_time = CASE "
        "WHEN ordered.customer_id <> '' THEN ordered.previous END "
        f"FROM (SELECT routed.segment_id, routed.conversation_id, {selected}, "
        "lag(routed.route_time) OVER (PARTITION BY routed.segment_id, facts.customer_id "
        "ORDER BY routed.route_time, routed.conversation_id) AS previous "
        f"FROM {SEGMENTS} AS routed JOIN {FACTS} AS facts "
        "ON facts.conversation_id = routed.conversation_id) AS ordered "
        f"WHERE ordered.segment_id = {SEGMENTS}.segment_id "
        f"AND ordered.conversation_id = {SEGMENTS}.conversation_id"
    )
    # The defaults only filled the rows that existed; the application writes every column.
    with op.batch_alter_table(SEGMENTS, schema=None) as batch_op:
        for name, _, _, default in FIGURES:
            if default is not None:
                batch_op.alter_column(name, server_default=None)
    op.create_index(f"ix_{FACTS}_customer", FACTS, ["customer_id", "route_time"])
    op.create_index(f"ix_{SEGMENTS}_conversation", SEGMENTS, ["conversation_id"])
    op.create_index(
        f"ix_{SEGMENTS}_customer", SEGMENTS, ["customer_id", "segment_id", "route_time"]
    )


def downgrade() -> None:
    op.drop_index(f"ix_{SEGMENTS}_customer", SEGMENTS)
    op.drop_index(f"ix_{SEGMENTS}_conversation", SEGMENTS)
    op.drop_index(f"ix_{FACTS}_customer", FACTS)
    with op.batch_alter_table(SEGMENTS, schema=None) as batch_op:
        for name, *_ in reversed(FIGURES):
            batch_op.drop_column(name)
        batch_op.drop_column("previous_route_time")
    with op.batch_alter_table(FACTS, schema=None) as batch_op:
        batch_op.drop_column("previous_route_time")
