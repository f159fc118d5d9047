"""Webhook signatures: what Switchboard sends and what a receiver checks.

``Switchboard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.
Signing the timestamp with the body lets a receiver refuse a captured request replayed
later; the receiver checks the exact bytes it received, before parsing them.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

SIGNATURE_HEADER = "Switchboard-Signature"
DEFAULT_TOLERANCE = timedelta(seconds=300)


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>." + body`` under ``secret``."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: datetime) -> str:
    """The ``Switchboard-Signature`` header value for ``body`` sent at ``timestamp``."""
    seconds = int(timestamp.timestamp())
    return f"t={seconds},v1={signature(secret, body, seconds)}"


def verify(
    secret: str,
    body: bytes,
    header: str,
    now: datetime,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` at a time within ``tolerance`` of
    ``now`` (either side, for clock skew). Any ``v1`` entry may match, so a sender can sign
    with an old and a new secret while a rotation is under way."""
    timestamps: list[str] = []
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            candidates.append(value)
    if len(timestamps) != 1 or not timestamps[0].isdigit() or not candidates:
        return False
    seconds = int(timestamps[0])
    if abs(now.timestamp() - seconds) > tolerance.total_seconds():
        return False
    expected = signature(secret, body, seconds)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
