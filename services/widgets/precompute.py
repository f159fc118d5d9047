"""Keeping Redis's widget answers current from the workers, whichever server serves them.

A refresh recomputes everyone when the configuration version or the segment definitions
moved since the last one (or an hour passed, as rules on relative dates drift), and
otherwise only the customers the profiles change log names since the last refresh. Its
progress lives in Redis beside the entries, under a lock, so two workers never run it at
once and a restarted worker goes on where the last one stopped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from services.widgets.app import Widgets
from services.widgets.cache import PRECOMPUTED_KEY, PREFIX, RedisWidgetCache, entry_name

log = logging.getLogger("switchboard.widgets.precompute")

SYNC_KEY = PREFIX + "sync"
# What the last refresh did, for operators and tests.
REFRESHED_KEY = PREFIX + "refreshed"
LOCK_KEY = PREFIX + "sync-lock"
FULL_EVERY = timedelta(hours=1)


@dataclass(frozen=True)
class Refreshed:
    # "full", "changed", or "busy" when another refresh held the lock.
    kind: str
    count: int
    seconds: float


class WidgetRefresher:
    def __init__(self, widgets: Widgets, cache: RedisWidgetCache) -> None:
        self.widgets = widgets
        self.cache = cache

    def precompute(self, customer_ids: Sequence[str] | None = None) -> Refreshed:
        """Everyone (``None``) or the named customers, now; the outcome is left at
        ``PRECOMPUTED_KEY`` for operators and benchmarks."""
        profiles = self.widgets.routing.customers.profiles
        started = time.perf_counter()
        if customer_ids is None:
            count = self.widgets.precompute(profiles.all_customers())
        else:
            records = profiles.existing(list(customer_ids))
            count = self.widgets.precompute(records.values())
            # Erased customers are answered as anonymous from now on.
            self.cache.forget([entry_name(c) for c in customer_ids if c not in records])
        seconds = time.perf_counter() - started
        outcome = {"version": self.widgets.stored_version(), "count": count, "seconds": seconds}
        self.cache.set_status(PRECOMPUTED_KEY, json.dumps(outcome))
        return Refreshed("full" if customer_ids is None else "changed", count, seconds)

    def refresh(self) -> Refreshed:
        lock = self.cache.client.lock(LOCK_KEY, timeout=900)
        if not lock.acquire(blocking=False):
            return Refreshed("busy", 0, 0.0)
        try:
            return self._refresh()
        finally:
            lock.release()

    def _refresh(self) -> Refreshed:
        customers = self.widgets.routing.customers
        now = self.widgets.routing.clock()
        raw = self.cache.client.get(SYNC_KEY)
        state = json.loads(raw) if raw else {}
        version = self.widgets.stored_version()
        fingerprint = customers.segments_fingerprint()
        # Where the change log ends before this run: changes during it are picked up next.
        changed = customers.profiles.changed_since(int(state.get("sequence", 0)))
        full = (
            state.get("version") != version
            or state.get("segments") != fingerprint
            or now - datetime.fromisoformat(state["full_time"]) >= FULL_EVERY
        )
        if full:
            refreshed = self.precompute()
            state["full_time"] = now.isoformat()
        elif changed.customer_ids:
            refreshed = self.precompute(changed.customer_ids)
        else:
            refreshed = Refreshed("changed", 0, 0.0)
        state.update(version=version, segments=fingerprint, sequence=changed.last_sequence)
        self.cache.set_status(SYNC_KEY, json.dumps(state))
        self.cache.set_status(REFRESHED_KEY, json.dumps(asdict(refreshed)))
        if refreshed.count:
            log.info(
                "widget answers precomputed",
                extra={
                    "kind": refreshed.kind,
                    "count": refreshed.count,
                    "seconds": refreshed.seconds,
                },
            )
        return refreshed
