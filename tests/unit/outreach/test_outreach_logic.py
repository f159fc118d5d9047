"""Pure outreach rules: the retry schedule, when a webhook dies, which transitions make
webhooks and what they say, and which endpoint URLs are accepted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.outreach.domain import DeliveryStatus, Subscription, TransitionKind
from services.outreach.logic import (
    AttemptOutcome,
    StoredTransition,
    after_attempt,
    retry_delay,
    transition_deliveries,
    url_problems,
)

NOW = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)


def test_retries_wait_base_times_two_to_the_failures_so_far() -> None:
    waits = [retry_delay(failed, 30).total_seconds() for failed in range(1, 6)]

    assert waits == [30, 60, 120, 240, 480]


def test_retries_never_wait_more_than_six_hours_whatever_the_count() -> None:
    assert retry_delay(12, 30) == timedelta(hours=6)
    assert retry_delay(10_000, 30) == timedelta(hours=6)


def test_jitter_stretches_a_wait_by_at_most_ten_percent() -> None:
    assert retry_delay(3, 30, jitter=0.0).total_seconds() == 120
    assert retry_delay(3, 30, jitter=0.5).total_seconds() == pytest.approx(126)
    assert retry_delay(3, 30, jitter=1.0).total_seconds() == pytest.approx(132)


def failed(code: int = 500) -> AttemptOutcome:
    return AttemptOutcome(code, f"HTTP {code}", 12)


def test_a_2xx_answer_delivers() -> None:
    step = after_attempt(
        AttemptOutcome(204, "", 5), failures_in_budget=3, max_attempts=3, base_seconds=30, now=NOW
    )
    assert step.status is DeliveryStatus.DELIVERED


@pytest.mark.parametrize(
    "outcome", [failed(500), failed(302), failed(401), AttemptOutcome(0, "timed out", 5000)]
)
def test_anything_else_is_retried_later(outcome: AttemptOutcome) -> None:
    step = after_attempt(outcome, failures_in_budget=2, max_attempts=8, base_seconds=30, now=NOW)

    assert step.status is DeliveryStatus.PENDING
    assert step.next_attempt_time == NOW + timedelta(seconds=60)


def test_the_last_allowed_failure_leaves_the_delivery_dead() -> None:
    step = after_attempt(failed(), failures_in_budget=3, max_attempts=3, base_seconds=30, now=NOW)

    assert step.status is DeliveryStatus.DEAD


def at_risk_for_enterprise() -> Subscription:
    return Subscription(
        subscription_id="cs-alert",
        segment_id="at_risk",
        transition=TransitionKind.ENTERED,
        endpoint_id="cs-team",
        require_segments=("enterprise",),
    )


def entered(customer_id: str, change_id: int, segment_id: str = "at_risk") -> StoredTransition:
    return StoredTransition(
        change_id=change_id,
        customer_id=customer_id,
        segment_id=segment_id,
        family="",
        kind="entered",
        previous_winner="",
        change_time=NOW,
        rule_revision=2,
        trigger="customer_changed",
    )


def test_an_enterprise_customer_entering_at_risk_makes_one_webhook_naming_it_and_why() -> None:
    found = transition_deliveries(
        [entered("acme", 41)],
        [at_risk_for_enterprise()],
        {"acme": {"at_risk", "enterprise"}},
    )

    assert len(found) == 1
    delivery = found[0]
    assert delivery.endpoint_id == "cs-team"
    assert delivery.event_type == "segment.entered"
    assert delivery.customer_id == "acme"
    assert delivery.idempotency_key == "segment-transition-41-cs-alert"
    assert delivery.payload["event_id"] == delivery.idempotency_key
    assert delivery.payload["segments"] == ["at_risk", "enterprise"]
    assert delivery.payload["trigger"] == "customer_changed"
    assert delivery.payload["reason"] == "the customer's data changed"
    assert delivery.payload["transition_time"] == NOW.isoformat()


def test_no_webhook_without_the_required_segment_or_for_another_segment_or_kind() -> None:
    exited = StoredTransition(**{**entered("acme", 3).__dict__, "kind": "exited"})
    found = transition_deliveries(
        [entered("bloom", 1), entered("acme", 2, segment_id="vip"), exited],
        [at_risk_for_enterprise()],
        {"bloom": {"at_risk", "starter"}, "acme": {"vip", "enterprise"}},
    )

    assert found == []


def test_the_same_transition_makes_the_same_key_so_a_repeat_is_dropped() -> None:
    first = transition_deliveries(
        [entered("acme", 7)], [at_risk_for_enterprise()], {"acme": {"at_risk", "enterprise"}}
    )
    again = transition_deliveries(
        [entered("acme", 7)], [at_risk_for_enterprise()], {"acme": {"at_risk", "enterprise"}}
    )
    assert first[0].idempotency_key == again[0].idempotency_key


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/switchboard", "http://127.0.0.1:8099/", "http://[::1]:80/x"]
)
def test_http_and_https_urls_are_accepted(url: str) -> None:
    assert url_problems(url) == []


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://example.com/",
        "example.com/hook",
        "https://",
        "https://user:pass@example.com/",
        "http://example.com:port/",
        "https://example.com/" + "x" * 2048,
    ],
)
def test_other_urls_are_refused(url: str) -> None:
    assert [problem.field for problem in url_problems(url)] == ["endpoint.url"]
