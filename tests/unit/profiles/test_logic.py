"""Validation and traits of the customer record, without a server or a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.profiles.logic import (
    MetricWindows,
    normalize_values,
    trait_window_bounds,
    traits_from_windows,
    validate_values,
)


def problems(**values: object) -> set[str]:
    return {violation.field for violation in validate_values(values)}


@pytest.mark.parametrize("language", ["en", "en-GB", "zh-Hant-TW", "es-419", "de-CH-1996"])
def test_well_formed_language_tags_are_accepted(language: str) -> None:
    assert problems(language=language) == set()


@pytest.mark.parametrize("language", ["english", "e", "en_GB", "en-", "12"])
def test_malformed_language_tags_are_refused(language: str) -> None:
    assert problems(language=language) == {"language"}


def test_time_zones_must_exist_in_the_tz_database() -> None:
    assert problems(timezone="America/Sao_Paulo") == set()
    assert problems(timezone="America/Atlantis") == {"timezone"}
    assert problems(timezone="../../etc/passwd") == {"timezone"}
    assert problems(timezone="a" * 300) == {"timezone"}  # too long a file name for zoneinfo


def test_lowercase_country_codes_are_normalized_before_validation() -> None:
    assert normalize_values({"country": "de"})["country"] == "DE"
    assert problems(**normalize_values({"country": "de"})) == set()


def test_numbers_must_be_finite_and_not_negative() -> None:
    assert problems(seats=0, arr=0.0) == set()
    assert problems(arr=float("nan")) == {"arr"}
    assert problems(annual_revenue=float("inf")) == {"annual_revenue"}
    assert problems(health_score=101) == {"health_score"}
    assert problems(nps=11) == {"nps"}


def test_external_id_systems_are_simple_names() -> None:
    assert problems(external_ids={"billing": "cus_1"}) == set()
    assert problems(external_ids={"Billing System": "x"}) == {"external_ids['Billing System']"}
    assert problems(external_ids={"crm": ""}) == {"external_ids['crm']"}


def test_custom_fields_have_a_size_limit() -> None:
    assert problems(attributes={"notes": "x" * 20_000}) == {"attributes"}


def test_week_over_week_change_is_a_fraction_of_the_previous_week() -> None:
    traits = traits_from_windows([MetricWindows("logins", last_7d=15, prev_7d=30)])
    assert traits == {"logins_7d": 15, "logins_prev_7d": 30, "logins_wow_change": -0.5}


def test_growth_from_zero_has_no_fraction() -> None:
    traits = traits_from_windows([MetricWindows("tickets", last_7d=4, prev_7d=0)])
    assert "tickets_wow_change" not in traits and traits["tickets_7d"] == 4


def test_trait_windows_are_the_two_weeks_before_now() -> None:
    now = datetime(2026, 3, 29, 12, tzinfo=UTC)
    prev_start, week_start = trait_window_bounds(now)
    assert week_start == now - timedelta(days=7)
    assert prev_start == now - timedelta(days=14)
