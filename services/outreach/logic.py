"""Pure rules of outreach: request checks, which transitions make which webhooks, what a
webhook says, and when a failed one is tried again."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from services.core.errors import FieldViolation
from services.outreach.domain import DeliveryStatus, Subscription, TransitionKind
from services.outreach.outbox import NewDelivery
from services.segments.logic import validate_segment_id

MAX_RETRY_DELAY = timedelta(hours=6)
# Retries of many webhooks that failed together spread over this fraction of their wait.
RETRY_JITTER = 0.1
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 200
MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 2000
MAX_REQUIRED_SEGMENTS = 20

_REASONS = {
    "customer_changed": "the customer's data changed",
    "full_recompute": "the nightly re-evaluation of every customer (time-based rules)",
    "customer_deleted": "the customer was deleted",
    "segment_deleted": "the segment was deleted",
    "segment_changed": "the segment's definition changed",
}


# ---- requests ------------------------------------------------------------------------------


def new_secret() -> str:
    """A signing secret for an endpoint created or rotated without one."""
    return f"whsec_{secrets.token_urlsafe(32)}"


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def id_problems(value: str, field: str) -> list[FieldViolation]:
    """An endpoint or subscription id follows the segment id rules."""
    return validate_segment_id(value, field)


def url_problems(url: str, field: str = "endpoint.url") -> list[FieldViolation]:
    if not url:
        return [FieldViolation(field, "is required")]
    if len(url) > MAX_URL_LENGTH:
        return [FieldViolation(field, f"at most {MAX_URL_LENGTH} characters")]
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        return [FieldViolation(field, "is not a valid URL")]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [FieldViolation(field, "must be an absolute http:// or https:// URL")]
    if parts.username or parts.password:
        return [FieldViolation(field, "must not carry credentials; the signature authenticates")]
    return []


def secret_problems(secret: str, field: str = "secret") -> list[FieldViolation]:
    """An empty secret is fine (one is generated); a given one must be hard to guess."""
    if secret and not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
        return [
            FieldViolation(field, f"must be {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters")
        ]
    if secret and not secret.isprintable():
        return [FieldViolation(field, "must be printable characters")]
    return []


def description_problems(
    description: str, field: str = "endpoint.description"
) -> list[FieldViolation]:
    if len(description) > MAX_DESCRIPTION_LENGTH:
        return [FieldViolation(field, f"at most {MAX_DESCRIPTION_LENGTH} characters")]
    return []


def required_segment_problems(
    segment_ids: Sequence[str], field: str = "subscription.require_segment_ids"
) -> list[FieldViolation]:
    if len(segment_ids) > MAX_REQUIRED_SEGMENTS:
        return [FieldViolation(field, f"at most {MAX_REQUIRED_SEGMENTS} segments")]
    problems: list[FieldViolation] = []
    for index, segment_id in enumerate(segment_ids):
        problems += validate_segment_id(segment_id, f"{field}[{index}]")
    return problems


# ---- transitions -> webhooks ---------------------------------------------------------------


@dataclass(frozen=True)
class StoredTransition:
    """A segment transition as stored, with the id it was stored under."""

    change_id: int
    customer_id: str
    segment_id: str
    family: str
    kind: str
    previous_winner: str
    change_time: datetime
    rule_revision: int
    trigger: str


def event_type(kind: TransitionKind | str) -> str:
    return f"segment.{TransitionKind(kind).value}"


def transition_key(change_id: int, subscription_id: str) -> str:
    """The idempotency key of the webhook one stored transition makes for one subscription."""
    return f"segment-transition-{change_id}-{subscription_id}"


def transition_deliveries(
    transitions: Iterable[StoredTransition],
    subscriptions: Sequence[Subscription],
    segments_after: Mapping[str, Collection[str]],
) -> list[NewDelivery]:
    """One webhook per transition and subscription it matches: same segment and kind, and
    the customer is in every required segment after the change (``segments_after`` maps a
    customer to the ids of its segments then)."""
    by_cause: dict[tuple[str, str], list[Subscription]] = {}
    for subscription in subscriptions:
        cause = (subscription.segment_id, subscription.transition.value)
        by_cause.setdefault(cause, []).append(subscription)
    found: list[NewDelivery] = []
    for transition in transitions:
        matching = by_cause.get((transition.segment_id, transition.kind), ())
        if not matching:
            continue
        members = set(segments_after.get(transition.customer_id, ()))
        for subscription in matching:
            if not members.issuperset(subscription.require_segments):
                continue
            key = transition_key(transition.change_id, subscription.subscription_id)
            found.append(
                NewDelivery(
                    endpoint_id=subscription.endpoint_id,
                    event_type=event_type(transition.kind),
                    idempotency_key=key,
                    payload=transition_payload(key, transition, subscription, sorted(members)),
                    customer_id=transition.customer_id,
                )
            )
    return found


def transition_payload(
    event_id: str,
    transition: StoredTransition,
    subscription: Subscription,
    segments_after: Sequence[str],
) -> dict[str, Any]:
    """What a segment webhook tells its receiver: who moved, where to, and why."""
    return {
        "event_id": event_id,
        "event_type": event_type(transition.kind),
        "customer_id": transition.customer_id,
        "segment_id": transition.segment_id,
        "transition": transition.kind,
        "segments": list(segments_after),
        "family": transition.family,
        "previous_winner": transition.previous_winner,
        "trigger": transition.trigger,
        "reason": _REASONS.get(transition.trigger, transition.trigger),
        "transition_time": transition.change_time.isoformat(),
        "transition_id": transition.change_id,
        "rule_revision": transition.rule_revision,
        "subscription_id": subscription.subscription_id,
    }


# ---- retries -------------------------------------------------------------------------------


def retry_delay(failed_attempts: int, base_seconds: float, jitter: float = 0.0) -> timedelta:
    """The wait after ``failed_attempts`` failures in a row: ``base * 2**(failed - 1)``,
    capped at six hours, then stretched by ``jitter`` (0 to 1) times ``RETRY_JITTER``."""
    exponent = min(max(failed_attempts - 1, 0), 40)  # 2**40 * any base is past the cap
    delay = min(base_seconds * 2**exponent, MAX_RETRY_DELAY.total_seconds())
    return timedelta(seconds=delay * (1 + RETRY_JITTER * min(max(jitter, 0.0), 1.0)))


@dataclass(frozen=True)
class AttemptOutcome:
    """What one POST got back: an HTTP status (0 when none came) and an error, if any."""

    status_code: int
    error: str
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return 200 <= self.status_code < 300 and not self.error


@dataclass(frozen=True)
class NextStep:
    status: DeliveryStatus
    next_attempt_time: datetime


def after_attempt(
    outcome: AttemptOutcome,
    *,
    failures_in_budget: int,
    max_attempts: int,
    base_seconds: float,
    now: datetime,
    jitter: float = 0.0,
) -> NextStep:
    """Where a delivery goes after an attempt. ``failures_in_budget`` counts the failed
    attempts since the delivery was created or last replayed, this one included."""
    if outcome.delivered:
        return NextStep(DeliveryStatus.DELIVERED, now)
    if failures_in_budget >= max_attempts:
        return NextStep(DeliveryStatus.DEAD, now)
    return NextStep(
        DeliveryStatus.PENDING, now + retry_delay(failures_in_budget, base_seconds, jitter)
    )
