"""Segment transitions -> outreach webhooks, inside the transaction that stores them.

Being in the same transaction is what makes this exactly-once: a re-evaluation killed
halfway stored either the transitions and their webhooks or neither, and its rerun finds
the memberships already stored, so no new transition and no second webhook.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session

from services.outreach.domain import Subscription
from services.outreach.logic import StoredTransition, transition_deliveries
from services.outreach.outbox import enqueue_deliveries


def enqueue_transition_webhooks(
    session: Session,
    *,
    subscriptions: Sequence[Subscription],
    changes: Sequence[Mapping[str, Any]],
    change_ids: Sequence[int],
    segments_after: Mapping[str, Collection[str]],
    now: datetime,
) -> int:
    """Enqueue the webhooks of stored transitions (``changes`` as inserted into the
    transitions table, ``change_ids`` in the same order) for ``subscriptions`` (those
    ``watching_subscriptions`` found); returns how many were enqueued."""
    stored = [
        StoredTransition(
            change_id=int(change_id),
            customer_id=change["customer_id"],
            segment_id=change["segment_id"],
            family=change["family"],
            kind=change["kind"],
            previous_winner=change["previous_winner"],
            change_time=change["change_time"],
            rule_revision=change["rule_revision"],
            trigger=change["trigger"],
        )
        for change, change_id in zip(changes, change_ids, strict=True)
    ]
    return enqueue_deliveries(
        session, transition_deliveries(stored, subscriptions, segments_after), now
    )
