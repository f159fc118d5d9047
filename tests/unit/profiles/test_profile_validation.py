"""Field checks of the customer record: the order problems are reported in, and the size
limit of custom fields, which short documents pass without being encoded."""

from __future__ import annotations

from services.profiles.logic import MAX_ATTRIBUTES_BYTES, validate_values


def reported(**values: object) -> list[str]:
    return [violation.field for violation in validate_values(values, "customer.")]


def test_problems_come_in_one_order_whatever_the_order_of_the_fields() -> None:
    expected = ["customer.display_name", "customer.email", "customer.country", "customer.nps"]
    assert reported(nps=11, country="XX", email="broken", display_name="x" * 201) == expected
    assert reported(display_name="x" * 201, email="broken", country="XX", nps=11) == expected


def test_an_email_too_long_and_malformed_is_reported_twice_in_rule_order() -> None:
    # Lengths first, then formats: the same order as before fields were checked one by one.
    problems = validate_values({"language": "english", "email": "x" * 255, "plan": "p" * 101})
    assert [(p.field, p.description.endswith("characters")) for p in problems] == [
        ("email", True),
        ("plan", True),
        ("email", False),
        ("language", False),
    ]


def test_custom_fields_are_measured_as_escaped_json() -> None:
    # Each "é" is six characters of JSON ("\u00e9"): 3,000 of them are over 16 KiB.
    assert reported(attributes={"note": "é" * 2700}) == []
    assert reported(attributes={"note": "é" * 3000}) == ["customer.attributes"]
    assert reported(attributes={"note": "x" * (MAX_ATTRIBUTES_BYTES - 12)}) == []
    assert reported(attributes={"note": "x" * MAX_ATTRIBUTES_BYTES}) == ["customer.attributes"]
    assert reported(attributes={"n": [1.5] * 4000}) == ["customer.attributes"]
