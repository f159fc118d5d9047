"""Sending webhooks: one signed POST per attempt, and the dispatcher that sends every due
delivery under a lease and records where each goes next."""

from __future__ import annotations

import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.core.clock import Clock, utc_now
from services.outreach.domain import DeliveryStatus
from services.outreach.logic import AttemptOutcome, NextStep, after_attempt
from services.outreach.repository import ClaimedDelivery, OutreachRepository
from services.outreach.signing import SIGNATURE_HEADER, sign

log = logging.getLogger("switchboard.outreach")

USER_AGENT = "Switchboard-Webhooks/1"
# Deliveries sent at once by one dispatcher; a slow receiver holds up only its own thread.
SEND_THREADS = 8
# A claimed delivery stays leased this long past the POST timeout, for recording it.
LEASE_MARGIN = timedelta(seconds=30)
# One dispatch run stops claiming after this long, so a task never nears its time limit;
# the next beat tick carries on.
RUN_BUDGET_SECONDS = 60.0
_ERROR_EXCERPT = 200

Post = Callable[[str, bytes, Mapping[str, str], float], AttemptOutcome]


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON with sorted keys."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def webhook_headers(
    *, secret: str, body: bytes, event_type: str, delivery_id: str, attempt: int, now: datetime
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Switchboard-Event": event_type,
        "Idempotency-Key": delivery_id,
        "Switchboard-Delivery-Attempt": str(attempt),
        SIGNATURE_HEADER: sign(secret, body, now),
    }


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer that is not 2xx: following it would resend the body to a
    URL nobody configured."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def post_webhook(
    url: str, body: bytes, headers: Mapping[str, str], timeout: float
) -> AttemptOutcome:
    """POST ``body`` to ``url``; never raises. Errors name what went wrong, never the URL
    (it may carry a token) or the headers (they carry the signature)."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        with _opener.open(request, timeout=timeout) as response:
            response.read(64 * 1024)
            return AttemptOutcome(int(response.status), "", elapsed())
    except urllib.error.HTTPError as error:
        excerpt = error.read(_ERROR_EXCERPT).decode("utf-8", "replace").strip()
        message = f"HTTP {error.code}" + (f": {excerpt}" if excerpt else "")
        return AttemptOutcome(int(error.code), message, elapsed())
    except urllib.error.URLError as error:
        return AttemptOutcome(0, _network_error(error.reason), elapsed())
    except TimeoutError:
        return AttemptOutcome(0, f"no answer within {timeout:g}s", elapsed())
    except (OSError, ValueError) as error:
        return AttemptOutcome(0, _network_error(error), elapsed())


def _network_error(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return f"network error: {reason.strerror}"
    return f"network error: {type(reason).__name__}"


@dataclass
class DispatchSummary:
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    # Sent, but another dispatcher had taken the delivery over when the result came back.
    lost_lease: int = 0


class Dispatcher:
    """Sends due deliveries. Safe to run in any number of workers at once: each delivery is
    leased by one of them, and a lease that runs out (a worker died) makes it due again."""

    def __init__(
        self,
        repository: OutreachRepository,
        *,
        max_attempts: int,
        retry_base_seconds: float,
        timeout_seconds: float,
        clock: Clock = utc_now,
        post: Post = post_webhook,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.repository = repository
        self.max_attempts = max_attempts
        self.retry_base_seconds = retry_base_seconds
        self.timeout_seconds = timeout_seconds
        self.clock = clock
        self.post = post
        self.jitter = jitter

    def dispatch_due(self, *, budget_seconds: float = RUN_BUDGET_SECONDS) -> DispatchSummary:
        """Send what is due, batch after batch, until nothing is or the budget is spent."""
        summary = DispatchSummary()
        started = time.monotonic()
        with ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="outreach") as pool:
            while time.monotonic() - started < budget_seconds:
                now = self.clock()
                lease = now + timedelta(seconds=self.timeout_seconds) + LEASE_MARGIN
                claimed = self.repository.claim_due(now=now, lease_until=lease, limit=SEND_THREADS)
                if not claimed:
                    break
                for step in pool.map(self._send, claimed):
                    if step is None:
                        summary.lost_lease += 1
                    elif step.status is DeliveryStatus.DELIVERED:
                        summary.delivered += 1
                    elif step.status is DeliveryStatus.DEAD:
                        summary.dead += 1
                    else:
                        summary.retrying += 1
        return summary

    def _send(self, claimed: ClaimedDelivery) -> NextStep | None:
        now = self.clock()
        if claimed.url is None:
            outcome = AttemptOutcome(0, "the webhook endpoint was deleted", 0)
            step = NextStep(DeliveryStatus.DEAD, now)
        else:
            body = encode_body(claimed.payload)
            headers = webhook_headers(
                secret=claimed.secret,
                body=body,
                event_type=claimed.event_type,
                delivery_id=claimed.delivery_id,
                attempt=claimed.attempt,
                now=now,
            )
            outcome = self.post(claimed.url, body, headers, self.timeout_seconds)
            now = self.clock()
            step = after_attempt(
                outcome,
                failures_in_budget=claimed.failures_before + 1,
                max_attempts=self.max_attempts,
                base_seconds=self.retry_base_seconds,
                now=now,
                jitter=self.jitter(),
            )
        recorded = self.repository.record_attempt(claimed, outcome, step, now)
        log.info(
            "webhook attempt",
            extra={
                "delivery_id": claimed.delivery_id,
                "attempt": claimed.attempt,
                "status_code": outcome.status_code,
                "error": outcome.error,
                "result": step.status.value if recorded else "lease lost",
            },
        )
        return step if recorded else None
