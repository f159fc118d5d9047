"""Billing and CRM syncs run from the CLI by a real worker on a real Redis: counts and
rejections as the user sees them, each source writing only its own fields, field sources
readable through the API and usable by segment rules, and a second run of the same file
changing nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import Engine, func, select
from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.segments.v1 import segments_pb2 as spb

from services.core.server import RunningServer
from services.demo import demo_customers
from services.profiles.repository import changes, customers, external_ids, tags, usage_events
from tests.integration.routing_setup import Profiles, Segments, create_segment, create_tier_segments
from tests.support.workers import fresh_redis_database, running_worker, worker_environment

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture
def fresh_redis(redis_url: str) -> Iterator[str]:
    yield from fresh_redis_database(redis_url, 6)


@pytest.fixture
def sync_env(tmp_path: Path, database_url: str, fresh_redis: str) -> dict[str, str]:
    return worker_environment(tmp_path / "var", database_url, fresh_redis)


@pytest.fixture
def sync_worker(sync_env: dict[str, str]) -> Iterator[dict[str, str]]:
    with running_worker(sync_env, "--queues=sync"):
        yield sync_env


def switchboard(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """A ``switchboard`` command as a user runs it, with its output."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def customer(profiles: Profiles, system: str, external_id: str) -> ppb.Customer:
    request = ppb.GetCustomerRequest(external_id=ppb.ExternalId(system=system, id=external_id))
    return profiles.GetCustomer(request).customer


def change_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(changes)).scalar_one())


def load_demo_customers(profiles: Profiles) -> None:
    profiles.UpsertCustomers(
        ppb.UpsertCustomersRequest(
            external_id_system="billing", customers=demo_customers(datetime.now(UTC))
        )
    )
    hooli = customer(profiles, "billing", "cus_hooli")
    profiles.AddTags(ppb.AddTagsRequest(customer_id=hooli.customer_id, tags=["vip-escalation"]))
    acme = customer(profiles, "billing", "cus_acme")
    acme.attributes.update({"contract_type": "msa"})
    profiles.UpdateCustomer(
        ppb.UpdateCustomerRequest(
            customer=acme, update_mask=field_mask_pb2.FieldMask(paths=["attributes.contract_type"])
        )
    )


def test_billing_and_crm_syncs_write_their_own_fields_and_a_rerun_changes_nothing(
    sync_worker: dict[str, str], engine: Engine, profiles: Profiles, segments: Segments
) -> None:
    load_demo_customers(profiles)
    create_tier_segments(segments)

    billing = switchboard(sync_worker, "sync", "run", "billing", str(EXAMPLES / "billing.jsonl"))
    assert billing.returncode == 0, billing.stderr
    # Every demo customer gains billing_status and currency; Oscorp is new; Bluth is bad.
    assert "succeeded: 1 created, 10 updated, 0 unchanged, 1 rejected" in billing.stdout
    assert "row 12 cus_bluth: seats: 'ten' is not an integer" in billing.stdout

    hooli = customer(profiles, "billing", "cus_hooli")
    assert (hooli.plan, hooli.seats, hooli.arr) == ("enterprise", 60, 90_000.0)
    assert list(hooli.tags) == ["vip-escalation"]
    assert hooli.field_sources["seats"].source == "billing"
    assert dict(hooli.attributes) == {"billing_status": "active", "currency": "usd"}
    acme = customer(profiles, "billing", "cus_acme")
    assert dict(acme.attributes) == {
        "account_owner": "ana.silva",
        "contract_type": "msa",
        "billing_status": "active",
        "currency": "usd",
    }
    assert acme.field_sources["attributes.contract_type"].source == "api"
    verdict = segments.EvaluateCustomer(spb.EvaluateCustomerRequest(customer_id=hooli.customer_id))
    assert "tier_enterprise" in verdict.member_segment_ids

    before = change_count(engine)
    again = switchboard(sync_worker, "sync", "run", "billing", str(EXAMPLES / "billing.jsonl"))
    assert again.returncode == 0, again.stderr
    assert "succeeded: 0 created, 0 updated, 11 unchanged, 1 rejected" in again.stdout
    assert change_count(engine) == before
    assert customer(profiles, "billing", "cus_hooli").etag == hooli.etag

    crm = switchboard(sync_worker, "sync", "run", "crm", str(EXAMPLES / "crm.csv"))
    assert crm.returncode == 0, crm.stderr
    # Six accounts link to billing customers by their Stripe id; Cyberdyne is new.
    assert "succeeded: 1 created, 6 updated, 0 unchanged, 1 rejected" in crm.stdout
    assert "row 8 0015g00000INGN01: employee_count: 'lots' is not an integer" in crm.stdout
    umbrella = customer(profiles, "crm", "0015g00000UMBR01")
    assert dict(umbrella.external_ids) == {"billing": "cus_umbrella", "crm": "0015g00000UMBR01"}
    assert umbrella.lifecycle_stage == "churned"
    assert umbrella.field_sources["lifecycle_stage"].source == "crm"
    assert (umbrella.plan, umbrella.seats) == ("growth", 12)
    assert umbrella.field_sources["seats"].source == "billing"
    assert customer(profiles, "billing", "cus_hooli").tags == ["vip-escalation"]

    status = switchboard(sync_worker, "sync", "status")
    assert status.returncode == 0, status.stderr
    assert [line.split()[1:3] for line in status.stdout.splitlines()[1:]] == [
        ["crm", "succeeded"],
        ["billing", "succeeded"],
        ["billing", "succeeded"],
    ]


def test_a_rule_can_require_fresh_billing_data_and_api_writes_are_sourced_api(
    sync_worker: dict[str, str], engine: Engine, profiles: Profiles, segments: Segments
) -> None:
    load_demo_customers(profiles)
    create_segment(
        segments, "fresh_billing", {"field_sources.plan.refresh_time": {"$withinLast": "2d"}}
    )
    result = switchboard(sync_worker, "sync", "run", "billing", str(EXAMPLES / "billing.jsonl"))
    assert result.returncode == 0, result.stderr
    globex = customer(profiles, "billing", "cus_globex")

    def fresh(at: datetime) -> bool:
        request = spb.EvaluateCustomerRequest(customer_id=globex.customer_id)
        request.evaluate_time.FromDatetime(at)
        return "fresh_billing" in segments.EvaluateCustomer(request).member_segment_ids

    assert fresh(datetime.now(UTC))
    assert not fresh(datetime.now(UTC) + timedelta(days=3))

    globex.plan = "growth"
    updated = profiles.UpdateCustomer(
        ppb.UpdateCustomerRequest(
            customer=globex, update_mask=field_mask_pb2.FieldMask(paths=["plan"])
        )
    ).customer
    assert updated.field_sources["plan"].source == "api"
    assert updated.field_sources["seats"].source == "billing"

    profiles.DeleteCustomer(ppb.DeleteCustomerRequest(customer_id=globex.customer_id))
    # Its field sources went with its row; nothing of the profiles store names it now.
    with engine.connect() as connection:
        left = {
            table.name: connection.execute(
                select(func.count())
                .select_from(table)
                .where(table.c.customer_id == globex.customer_id)
            ).scalar_one()
            for table in (customers, external_ids, tags, usage_events)
        }
    assert set(left.values()) == {0}


def test_a_new_source_is_a_mapping_file(
    sync_worker: dict[str, str], tmp_path: Path, profiles: Profiles, profiles_server: RunningServer
) -> None:
    load_demo_customers(profiles)
    mapping = tmp_path / "zendesk.toml"
    mapping.write_text(
        'source = "zendesk"\n'
        'key = { system = "zendesk", path = "organization_id" }\n'
        'links = { billing = "external_id" }\n'
        'owns = ["attributes.support_tier"]\n'
        '[fields."attributes.support_tier"]\n'
        'path = "tier"\n'
    )
    export = tmp_path / "organizations.csv"
    export.write_text("organization_id,external_id,tier\n901,cus_wonka,premium\n")
    result = switchboard(
        sync_worker, "sync", "run", "zendesk", str(export), "--mapping", str(mapping)
    )
    assert result.returncode == 0, result.stderr
    assert "succeeded: 0 created, 1 updated, 0 unchanged, 0 rejected" in result.stdout
    wonka = customer(profiles, "zendesk", "901")
    assert wonka.attributes["support_tier"] == "premium"
    assert wonka.field_sources["attributes.support_tier"].source == "zendesk"
    assert wonka.external_ids["billing"] == "cus_wonka"

    greedy = tmp_path / "greedy.toml"
    greedy.write_text(
        'source = "greedy"\nkey = { system = "greedy", path = "id" }\n'
        '[fields.lifecycle_stage]\npath = "stage"\n'
    )
    refused = switchboard(
        sync_worker, "sync", "run", "greedy", str(export), "--mapping", str(greedy)
    )
    assert refused.returncode == 1
    assert "lifecycle_stage is owned by the crm source; greedy cannot write it" in refused.stderr
