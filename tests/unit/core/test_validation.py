"""Checks every request goes through before its handler."""

from __future__ import annotations

from google.protobuf import struct_pb2
from switchboard.profiles.v1 import profiles_pb2 as pb

from services.core.validation import nul_problems


def test_nul_is_found_in_every_kind_of_string_with_its_path() -> None:
    customer = pb.Customer(
        customer_id="a\x00",
        external_ids={"bill\x00ing": "x", "crm": "y\x00"},
        tags=["ok", "\x00"],
    )
    customer.attributes.update({"plan": {"tier": "gold\x00"}})
    request = pb.CreateCustomerRequest(customer=customer)
    assert sorted(v.field for v in nul_problems(request)) == [
        "customer.attributes.fields['plan'].struct_value.fields['tier'].string_value",
        "customer.customer_id",
        "customer.external_ids['bill\\x00ing']",
        "customer.external_ids['crm']",
        "customer.tags[1]",
    ]


def test_requests_without_nul_pass() -> None:
    value = struct_pb2.Struct()
    value.update({"a": ["b", 1, None]})
    assert nul_problems(pb.CreateCustomerRequest(customer=pb.Customer(attributes=value))) == []
