"""Alembic environment: the URL comes from the caller (``upgrade_database``), never a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

from services.core.db import create_db_engine
from services.models import import_all_models

import_all_models()
config = context.config
url: str = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url") or ""
connection: Connection | None = config.attributes.get("connection")


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:
    engine = create_db_engine(url)
    with engine.connect() as conn:
        run(conn)
    engine.dispose()
