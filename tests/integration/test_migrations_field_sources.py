"""Migration 0011 moves each customer's field sources from a row per field into one document
on the customer's row, and back on downgrade, without losing a source, a refresh time or a
run, nor anything else of the customer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, column, select, table

from services.core.db import MIGRATIONS_DIR, UTCDateTime
from services.profiles.domain import ExternalIdKey, SyncRecord
from services.profiles.repository import CustomerRepository, FieldFreshness

MONDAY = datetime(2025, 5, 5, 2, 0, tzinfo=UTC)
TUESDAY = MONDAY + timedelta(days=1)
# The per-field rows as revision 0010 stores them.
field_source_rows = table(
    "customer_field_sources",
    column("customer_id"),
    column("field"),
    column("source"),
    column("refresh_time", UTCDateTime()),
    column("run_id"),
)


def migrate(url: str, *, to: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    if to == "head":
        command.upgrade(config, to)
    else:
        command.downgrade(config, to)


def sync(
    engine: Engine, source: str, rows: list[tuple[str, dict[str, Any]]], now: datetime
) -> None:
    CustomerRepository(engine).apply_sync_chunk(
        source=source,
        system="billing",
        records=[
            SyncRecord(number, key, values, {"tier": "gold"}, {})
            for number, (key, values) in enumerate(rows, start=1)
        ],
        run_id=f"{source}-{now:%Y%m%d}",
        now=now,
        also=lambda _session, _result: None,
    )


def freshness(engine: Engine) -> list[FieldFreshness]:
    return CustomerRepository(engine).field_freshness(stale_before=TUESDAY, source="")


def test_field_sources_survive_a_downgrade_and_an_upgrade(
    database_url: str, engine: Engine
) -> None:
    repository = CustomerRepository(engine)
    # Acme: billing on Monday, then on Tuesday its plan refreshed by a second billing run
    # and its seats taken over by an agent: three groups of sources. Bolt: billing only.
    sync(engine, "billing", [("cus_acme", {"plan": "growth", "seats": 5})], MONDAY)
    sync(engine, "billing", [("cus_bolt", {"plan": "starter"})], MONDAY)
    sync(engine, "billing", [("cus_acme", {"plan": "growth"})], TUESDAY)
    acme = repository.get_by_external_id(key=_billing("cus_acme"), now=TUESDAY)
    repository.update(
        customer_id=acme.customer_id,
        values={"seats": 6},
        attribute_patch={},
        removed_attributes=(),
        expected_etag="",
        now=TUESDAY + timedelta(hours=1),
    )
    customers_before = {
        key: repository.get_by_external_id(key=_billing(key), now=TUESDAY)
        for key in ("cus_acme", "cus_bolt")
    }
    freshness_before = freshness(engine)
    assert customers_before["cus_acme"].field_sources["seats"].source == "api"
    engine.dispose()

    migrate(database_url, to="0010")
    with engine.connect() as connection:
        rows = {tuple(row) for row in connection.execute(select(field_source_rows))}
    acme_id, bolt_id = (customers_before[key].customer_id for key in ("cus_acme", "cus_bolt"))
    assert rows == {
        (acme_id, "plan", "billing", TUESDAY, "billing-20250506"),
        (acme_id, "attributes.tier", "billing", TUESDAY, "billing-20250506"),
        (acme_id, "seats", "api", TUESDAY + timedelta(hours=1), ""),
        (bolt_id, "plan", "billing", MONDAY, "billing-20250505"),
        (bolt_id, "attributes.tier", "billing", MONDAY, "billing-20250505"),
    }
    engine.dispose()

    migrate(database_url, to="head")
    customers_after = {
        key: repository.get_by_external_id(key=_billing(key), now=TUESDAY)
        for key in ("cus_acme", "cus_bolt")
    }
    assert customers_after == customers_before
    assert freshness(engine) == freshness_before
    # A sync after the round trip still refreshes the converted document in place.
    sync(engine, "billing", [("cus_bolt", {"plan": "starter"})], TUESDAY)
    bolt = repository.get_by_external_id(key=_billing("cus_bolt"), now=TUESDAY)
    assert {name: origin.refresh_time for name, origin in bolt.field_sources.items()} == {
        "plan": TUESDAY,
        "attributes.tier": TUESDAY,
    }


def test_customers_without_field_sources_migrate_both_ways(
    database_url: str, engine: Engine
) -> None:
    repository = CustomerRepository(engine)
    created = repository.create(customer_id="", values={"tags": ("vip",)}, now=MONDAY)
    assert created.field_sources == {}
    engine.dispose()

    migrate(database_url, to="0010")
    migrate(database_url, to="head")

    assert repository.get(customer_id=created.customer_id, now=MONDAY) == created


def _billing(key: str) -> ExternalIdKey:
    return ExternalIdKey("billing", key)
