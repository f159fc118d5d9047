"""How fresh each source's synced values are, read through a real profiles server after
billing and CRM sync chunks written at chosen times and a value later written through the
API."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from sqlalchemy import Engine
from switchboard.profiles.v1 import profiles_pb2 as ppb

from services.profiles.domain import SyncRecord
from services.profiles.repository import CustomerRepository
from tests.integration.routing_setup import Profiles, moment, timestamp
from tests.support.rpc import call_error, field_violations, misses

MONDAY = datetime(2025, 5, 5, 2, 0, tzinfo=UTC)


def sync(
    engine: Engine,
    source: str,
    records: Sequence[tuple[str, dict[str, Any], dict[str, Any], dict[str, str]]],
    now: datetime,
) -> None:
    """One sync chunk of ``source`` keyed by its own ids: (key, values, custom fields,
    other systems' ids) per row."""
    CustomerRepository(engine).apply_sync_chunk(
        source=source,
        system=source,
        records=[
            SyncRecord(row, key, values, attributes, links)
            for row, (key, values, attributes, links) in enumerate(records, start=1)
        ],
        run_id=f"{source}-{now:%Y%m%d}",
        now=now,
        also=lambda _session, _result: None,
    )


def freshness(
    profiles: Profiles, stale_before: datetime, source: str = ""
) -> list[tuple[str, str, int, int, datetime]]:
    response = profiles.GetFieldFreshness(
        ppb.GetFieldFreshnessRequest(stale_before=timestamp(stale_before), source=source)
    )
    return [
        (f.source, f.field, f.customers, f.stale_customers, moment(f.oldest_refresh_time))
        for f in response.fields
    ]


@pytest.fixture
def synced(engine: Engine, profiles: Profiles) -> None:
    """Billing syncs Acme, Bolt and Cove on Monday and only Acme on Wednesday (a refresh,
    nothing changed); the CRM syncs Acme and Bolt on Tuesday; then an agent sets Cove's
    plan through the API, which takes that value over from billing."""
    billing = [
        ("cus_acme", {"plan": "enterprise", "seats": 60}, {}, {}),
        ("cus_bolt", {"plan": "growth", "seats": 10}, {}, {}),
        ("cus_cove", {"plan": "starter", "seats": 2}, {}, {}),
    ]
    sync(engine, "billing", billing, MONDAY)
    crm = [
        ("crm_acme", {"industry": "retail"}, {"account_owner": "ana"}, {"billing": "cus_acme"}),
        ("crm_bolt", {"industry": "saas"}, {"account_owner": "ben"}, {"billing": "cus_bolt"}),
    ]
    sync(engine, "crm", crm, MONDAY + timedelta(days=1))
    sync(engine, "billing", billing[:1], MONDAY + timedelta(days=2))

    cove = profiles.GetCustomer(
        ppb.GetCustomerRequest(external_id=ppb.ExternalId(system="billing", id="cus_cove"))
    ).customer
    profiles.UpdateCustomer(
        ppb.UpdateCustomerRequest(
            customer=ppb.Customer(customer_id=cove.customer_id, plan="growth"),
            update_mask=field_mask_pb2.FieldMask(paths=["plan"]),
        )
    )


def test_each_synced_field_counts_customers_not_refreshed_since_the_cutoff(
    profiles: Profiles, synced: None
) -> None:
    tuesday = MONDAY + timedelta(days=1)
    wednesday = MONDAY + timedelta(days=2)

    found = freshness(profiles, stale_before=MONDAY + timedelta(days=1, hours=12))

    # Ordered by source then field; the API's own writes are left out. Cove's plan now
    # comes from the API, so billing holds two plans but three seat counts.
    assert found == [
        ("billing", "plan", 2, 1, MONDAY),
        ("billing", "seats", 3, 2, MONDAY),
        ("crm", "attributes.account_owner", 2, 2, tuesday),
        ("crm", "industry", 2, 2, tuesday),
    ]
    # A refresh that changed nothing still makes the value fresh.
    assert freshness(profiles, stale_before=wednesday)[:2] == [
        ("billing", "plan", 2, 1, MONDAY),
        ("billing", "seats", 3, 2, MONDAY),
    ]
    # The cutoff is exclusive: refreshed exactly at it is fresh.
    assert [row[3] for row in freshness(profiles, stale_before=MONDAY)] == [0, 0, 0, 0]


def test_one_source_on_request_including_the_api(profiles: Profiles, synced: None) -> None:
    cutoff = MONDAY + timedelta(days=3)

    assert [row[:4] for row in freshness(profiles, cutoff, source="crm")] == [
        ("crm", "attributes.account_owner", 2, 2),
        ("crm", "industry", 2, 2),
    ]
    # The API's write happened now, long after the cutoff in 2025.
    assert [row[:4] for row in freshness(profiles, cutoff, source="api")] == [("api", "plan", 1, 0)]
    assert freshness(profiles, cutoff, source="erp") == []


def test_nothing_synced_yet_reads_as_no_fields(profiles: Profiles) -> None:
    assert freshness(profiles, stale_before=MONDAY) == []


def test_bad_freshness_requests_name_the_field(profiles: Profiles) -> None:
    def ask(**fields: Any) -> Any:
        return lambda: profiles.GetFieldFreshness(ppb.GetFieldFreshnessRequest(**fields))

    impossible = timestamp_pb2.Timestamp(seconds=10**12)
    assert not misses(
        {
            "no cutoff": (ask(source="billing"), "stale_before"),
            "impossible cutoff": (ask(stale_before=impossible), "stale_before"),
            "malformed source": (ask(stale_before=timestamp(MONDAY), source="Bill ing"), "source"),
        }
    )
    error = call_error(ask(source="Bill ing"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"stale_before", "source"}
