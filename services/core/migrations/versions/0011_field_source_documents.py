"""field_source_documents: each customer's field sources as one JSON document on its row,
grouped by source, refresh time and run, instead of a row per customer and field

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27 17:30:00
"""

from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import services.core.db

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
# Customers converted per statement, either way; the rows read are streamed, so a large
# store is never held in memory at once.
_BATCH = 1000
# The stamp format of services.profiles.domain.refresh_stamp, frozen here as of this
# revision: fixed-width UTC text that sorts as time.
_STAMP = "%Y-%m-%dT%H:%M:%S.%fZ"

_rows = sa.table(
    "customer_field_sources",
    sa.column("customer_id", sa.String()),
    sa.column("field", sa.String()),
    sa.column("source", sa.String()),
    sa.column("refresh_time", services.core.db.UTCDateTime()),
    sa.column("run_id", sa.String()),
)
_customers = sa.table(
    "customers", sa.column("customer_id", sa.String()), sa.column("field_sources", _JSON)
)


def upgrade() -> None:
    # Plain ALTER TABLE on both backends. Batch mode would rebuild ``customers`` on SQLite,
    # and dropping the old copy cascades to every table that references it.
    op.add_column(
        "customers",
        sa.Column("field_sources", _JSON, nullable=False, server_default=sa.text("'[]'")),
    )
    connection = op.get_bind()
    for batch in _batches(_documents(connection)):
        connection.execute(
            _customers.update()
            .where(_customers.c.customer_id == sa.bindparam("b_customer_id"))
            .values(field_sources=sa.bindparam("b_field_sources")),
            [{"b_customer_id": owner, "b_field_sources": document} for owner, document in batch],
        )
    op.drop_table("customer_field_sources")


def downgrade() -> None:
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
    connection = op.get_bind()
    stored = connection.execute(
        sa.select(_customers.c.customer_id, _customers.c.field_sources).order_by(
            _customers.c.customer_id
        ),
        execution_options={"stream_results": True},
    )
    for batch in _batches(iter(stored)):
        rows = [
            {
                "customer_id": owner,
                "field": name,
                "source": group["source"],
                "refresh_time": datetime.strptime(group["refresh_time"], _STAMP).replace(
                    tzinfo=UTC
                ),
                "run_id": group["run_id"],
            }
            for owner, document in batch
            for group in document or ()
            for name in group["fields"]
        ]
        if rows:
            connection.execute(_rows.insert(), rows)
    op.drop_column("customers", "field_sources")


def _documents(connection: sa.Connection) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Each customer's rows as one document, a customer at a time in id order."""
    rows = connection.execute(
        sa.select(_rows).order_by(_rows.c.customer_id, _rows.c.source, _rows.c.field),
        execution_options={"stream_results": True},
    )
    owner = None
    groups: dict[tuple[str, datetime, str], list[str]] = defaultdict(list)
    for row in rows:
        if row.customer_id != owner:
            if owner is not None:
                yield owner, _grouped(groups)
            owner, groups = row.customer_id, defaultdict(list)
        groups[(row.source, row.refresh_time, row.run_id)].append(row.field)
    if owner is not None:
        yield owner, _grouped(groups)


def _grouped(groups: dict[tuple[str, datetime, str], list[str]]) -> list[dict[str, Any]]:
    return [
        {
            "source": source,
            "refresh_time": refresh_time.astimezone(UTC).strftime(_STAMP),
            "run_id": run_id,
            "fields": fields,
        }
        for (source, refresh_time, run_id), fields in groups.items()
    ]


def _batches(items: Iterator[Any]) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
