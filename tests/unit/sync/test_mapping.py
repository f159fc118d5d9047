"""Connectors as data: loading, ownership, and what a row becomes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.core.errors import InvalidArgument
from services.profiles.domain import SyncRecord, SyncRejection
from services.sync.files import UnreadableRow, count_rows, detect_format, read_rows
from services.sync.mapping import connector_from_document, load_connector, map_row

STRIPE_ROW = {
    "id": "cus_acme",
    "email": " ada@acme.example ",
    "name": "Ada Moss",
    "currency": "usd",
    "subscription": {
        "status": "trialing",
        "items": [
            {
                "quantity": 120,
                "price": {
                    "nickname": "enterprise",
                    "unit_amount": 12500,
                    "recurring": {"interval": "month"},
                },
            }
        ],
    },
}


def test_billing_turns_a_monthly_price_per_seat_in_cents_into_arr() -> None:
    mapped = map_row(load_connector("billing"), 1, STRIPE_ROW)
    assert isinstance(mapped, SyncRecord)
    assert mapped.key == "cus_acme"
    assert mapped.values == {
        "email": "ada@acme.example",
        "display_name": "Ada Moss",
        "plan": "enterprise",
        "seats": 120,
        "arr": 180_000.0,
    }
    assert mapped.attributes == {"billing_status": "trial", "currency": "usd"}


def test_a_yearly_price_is_not_multiplied_by_twelve() -> None:
    row = json.loads(json.dumps(STRIPE_ROW))
    row["subscription"]["items"][0]["price"]["recurring"]["interval"] = "year"
    mapped = map_row(load_connector("billing"), 1, row)
    assert isinstance(mapped, SyncRecord)
    assert mapped.values["arr"] == 15_000.0


def test_csv_columns_named_by_path_read_like_nested_json() -> None:
    row = {
        "id": "cus_acme",
        "subscription.items.0.quantity": "12",
        "subscription.items.0.price.unit_amount": "999",
        "subscription.items.0.price.recurring.interval": "month",
        "subscription.status": "active",
        "email": "",
    }
    mapped = map_row(load_connector("billing"), 3, row)
    assert isinstance(mapped, SyncRecord)
    # An empty cell delivers nothing: email is neither cleared nor refreshed.
    assert mapped.values == {"seats": 12, "arr": 1438.56}
    assert mapped.delivered == ["seats", "arr", "attributes.billing_status"]


def test_a_bad_row_is_rejected_with_a_reason_per_field() -> None:
    row = {"Name": "Ingen", "NumberOfEmployees": "lots", "LifecycleStage": "Dormant"}
    mapped = map_row(load_connector("crm"), 7, row)
    assert isinstance(mapped, SyncRejection)
    assert mapped.row_number == 7
    assert mapped.reasons == (
        "missing Id (the crm id)",
        "employee_count: 'lots' is not an integer",
        "lifecycle_stage: 'Dormant' is not one of Active, Churned, Onboarding, Renewal, Trial",
    )


def test_profile_validation_applies_to_synced_values() -> None:
    mapped = map_row(load_connector("billing"), 2, {**STRIPE_ROW, "email": "not-an-email"})
    assert isinstance(mapped, SyncRejection)
    assert mapped.reasons == ("email: 'not-an-email' is not an email address",)


def test_crm_rows_carry_the_billing_id_to_link_accounts() -> None:
    row = {"Id": "001A", "Stripe_Customer_Id__c": "cus_acme", "Owner.Alias": "ana.silva"}
    mapped = map_row(load_connector("crm"), 1, row)
    assert isinstance(mapped, SyncRecord)
    assert mapped.links == {"billing": "cus_acme"}
    assert mapped.attributes == {"account_owner": "ana.silva"}


def test_a_connector_cannot_write_a_field_another_source_owns(tmp_path: Path) -> None:
    mapping = tmp_path / "hubspot.toml"
    mapping.write_text(
        'source = "hubspot"\nkey = {system = "hubspot", path = "vid"}\n'
        '[fields.seats]\npath = "licenses"\ntype = "integer"\n'
    )
    with pytest.raises(InvalidArgument) as error:
        load_connector("hubspot", mapping)
    assert error.value.violations[0].description == (
        "seats is owned by the billing source; hubspot cannot write it"
    )


def test_a_custom_json_mapping_loads_by_its_source_name(tmp_path: Path) -> None:
    mapping = tmp_path / "zendesk.json"
    document = {
        "source": "zendesk",
        "key": {"system": "zendesk", "path": "org_id"},
        "owns": ["attributes.support_tier"],
        "fields": {
            "attributes.support_tier": {"path": "tier", "type": "enum", "values": {"P": "premium"}},
            "signup_time": {"path": "created_at", "type": "timestamp"},
        },
    }
    mapping.write_text(json.dumps(document))
    connector = load_connector("zendesk", mapping)
    mapped = map_row(connector, 1, {"org_id": 42, "tier": "P", "created_at": "2024-03-01"})
    assert isinstance(mapped, SyncRecord)
    assert mapped.key == "42"
    assert mapped.values == {"signup_time": datetime(2024, 3, 1, tzinfo=UTC)}
    assert mapped.attributes == {"support_tier": "premium"}
    with pytest.raises(InvalidArgument, match="declares source 'zendesk', not 'crm'"):
        load_connector("crm", mapping)


def test_a_declaration_reports_every_problem_at_once() -> None:
    with pytest.raises(InvalidArgument) as error:
        connector_from_document(
            {
                "source": "Bad Name",
                "key": {"system": "x"},
                "fields": {
                    "seats": {"path": "n", "type": "text"},
                    "favourite_colour": {"path": "c"},
                },
            }
        )
    fields = [v.field for v in error.value.violations]
    assert fields == ["source", "key.path", "fields.seats.type", "fields.favourite_colour"]


def test_files_number_rows_and_skip_committed_ones(tmp_path: Path) -> None:
    export = tmp_path / "accounts.jsonl"
    export.write_text('{"Id": "1"}\n\n[1]\n{"Id": "3"}\n{broken\n')
    assert detect_format(export) == "jsonl"
    assert count_rows(export, "jsonl") == 4
    rows = list(read_rows(export, "jsonl", skip=1))
    assert [number for number, _ in rows] == [2, 3, 4]
    assert isinstance(rows[0][1], UnreadableRow)
    assert rows[1][1] == {"Id": "3"}
    table = tmp_path / "accounts.csv"
    table.write_text("Id,Name\n1,Acme\n2\n3,Initech\n")
    assert count_rows(table, "csv") == 3
    assert [(n, r if isinstance(r, dict) else "bad") for n, r in read_rows(table, "csv")] == [
        (1, {"Id": "1", "Name": "Acme"}),
        (2, "bad"),
        (3, {"Id": "3", "Name": "Initech"}),
    ]


def test_a_connector_survives_its_stored_form_field_order_included() -> None:
    connector = load_connector("billing")
    stored = json.loads(json.dumps(connector.to_document()))
    assert connector_from_document(stored) == connector
