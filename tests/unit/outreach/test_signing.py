"""What a webhook receiver relies on: a signature that verifies only for the exact body,
the endpoint's secret and a recent timestamp."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

from services.outreach.signing import sign, verify

SECRET = "whsec_test-secret-0123456789"
BODY = b'{"customer_id":"acme","event_type":"segment.entered"}'
SENT = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)


def test_a_receiver_can_recompute_the_signature_with_any_hmac_library() -> None:
    header = sign(SECRET, BODY, SENT)

    timestamp, signature = (part.split("=", 1)[1] for part in header.split(","))
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + BODY, hashlib.sha256)
    assert timestamp == str(int(SENT.timestamp()))
    assert signature == expected.hexdigest()
    assert verify(SECRET, BODY, header, SENT + timedelta(seconds=3))


def test_a_tampered_body_does_not_verify() -> None:
    header = sign(SECRET, BODY, SENT)

    assert not verify(SECRET, BODY.replace(b"acme", b"evil"), header, SENT)
    assert not verify(SECRET, BODY + b" ", header, SENT)


def test_another_secret_does_not_verify() -> None:
    header = sign("whsec_someone-elses-secret", BODY, SENT)

    assert not verify(SECRET, BODY, header, SENT)


def test_an_old_or_future_timestamp_is_refused_so_a_captured_request_cannot_be_replayed() -> None:
    header = sign(SECRET, BODY, SENT)

    assert verify(SECRET, BODY, header, SENT + timedelta(seconds=300))
    assert not verify(SECRET, BODY, header, SENT + timedelta(seconds=301))
    assert not verify(SECRET, BODY, header, SENT - timedelta(seconds=301))
    assert verify(SECRET, BODY, header, SENT + timedelta(hours=1), tolerance=timedelta(hours=2))


def test_a_changed_timestamp_breaks_the_signature() -> None:
    header = sign(SECRET, BODY, SENT)
    later = int(SENT.timestamp()) + 60
    forged = f"t={later}," + header.split(",", 1)[1]

    assert not verify(SECRET, BODY, forged, SENT + timedelta(seconds=60))


def test_malformed_headers_are_refused() -> None:
    good = sign(SECRET, BODY, SENT)
    signature_part = good.split(",", 1)[1]
    for header in [
        "",
        "garbage",
        signature_part,
        "t=abc," + signature_part,
        f"t=1,t=2,{signature_part}",
    ]:
        assert not verify(SECRET, BODY, header, SENT), header


def test_any_of_several_signatures_may_match_during_a_secret_rotation() -> None:
    old = sign("whsec_the-old-secret-xxxxxxx", BODY, SENT)
    new = sign(SECRET, BODY, SENT)
    both = f"{old},{new.split(',', 1)[1]}"

    assert verify(SECRET, BODY, both, SENT)
