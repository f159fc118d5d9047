"""What routing knows about a customer: the record from the ProfileService and the segments
it is in, evaluated at routing time on segment definitions read from the SegmentService.

Definitions change rarely and are read on every routing call, so they are kept for
``refresh_seconds`` and compiled once per set. Records are kept too, and the profiles change
log says which to forget: it is read at most every ``customer_refresh_seconds`` (0: before
every lookup), so a decision never uses a record older than that (plus the one read in
flight). Evaluating here rather
than reading stored memberships means a conversation is routed on what the customer is now,
not at the last recomputation.

When the SegmentService cannot be reached, routing keeps deciding on the definitions it
last read (and logs it) rather than failing every conversation: definitions change rarely,
and a chat routed on minutes-old rules beats a chat not routed at all. Only a process that
never read them fails.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc
from switchboard.segments.v1 import segments_pb2 as pb
from switchboard.segments.v1 import segments_pb2_grpc

from services.core.errors import Unavailable
from services.segments.convert import definition_from_proto
from services.segments.domain import Segment
from services.segments.logic import SegmentPlan, compile_plan, rule_attributes
from services.segments.profiles_client import ProfilesClient

_PAGE = 1000
# After a failed read of the definitions, how long the last ones serve before another try.
RETRY_SECONDS = 5.0

log = logging.getLogger("switchboard.routing")


class SegmentsClient:
    """The routing service's view of the SegmentService: segment definitions."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = segments_pb2_grpc.SegmentServiceStub(channel)

    def all_segments(self) -> list[Segment]:
        found: list[Segment] = []
        token = ""
        while True:
            try:
                page = self.stub.ListSegments(
                    pb.ListSegmentsRequest(page_size=_PAGE, page_token=token)
                )
            except grpc.RpcError as error:
                raise Unavailable(
                    f"the segments service failed: {error.code().name} {error.details()}"
                ) from error
            found += [
                Segment(segment_id=message.segment_id, **definition_from_proto(message))
                for message in page.segments
            ]
            token = page.next_page_token
            if not token:
                return found


@dataclass(frozen=True)
class KnownCustomer:
    customer_id: str
    # The record as rules read it (``segments.logic.rule_attributes``).
    attributes: Mapping[str, Any]
    segment_ids: frozenset[str]


class CustomerDirectory:
    def __init__(
        self,
        profiles: ProfilesClient,
        segments: SegmentsClient,
        *,
        refresh_seconds: float,
        customer_refresh_seconds: float = 0.0,
        cache_size: int = 100_000,
    ) -> None:
        self.profiles = profiles
        self.segments = segments
        self.refresh_seconds = refresh_seconds
        self.customer_refresh_seconds = customer_refresh_seconds
        self.cache_size = cache_size
        self._lock = threading.Lock()
        self._plan: SegmentPlan | None = None
        self._plan_read_at = 0.0
        self._records: dict[str, Mapping[str, Any]] = {}
        # Guards the kept records and the log position; never held over a call.
        self._sync_lock = threading.Lock()
        # Held by the one call reading the change log.
        self._reading_log = threading.Lock()
        # The change-log position the kept records are current to; None before the first read.
        self._sequence: int | None = None
        self._synced_at = -math.inf
        # Moves whenever the change log named a customer, so a record read from profiles
        # before that is not kept (it may predate the change).
        self._generation = 0
        self._plan_fingerprint: tuple[str, ...] = ()
        # Told which customers changed, and when segment definitions changed, so what was
        # derived from them (widget answers) can be dropped too.
        self.change_listeners: list[Callable[[Sequence[str]], None]] = []
        self.plan_listeners: list[Callable[[], None]] = []

    def lookup(self, customer_id: str, now: datetime) -> KnownCustomer:
        """The customer's record and segments at ``now``; NotFound for an unknown id."""
        self.catch_up()
        attributes = self._records.get(customer_id)
        if attributes is None:
            generation = self._generation
            attributes = rule_attributes(self.profiles.get(customer_id))
            self._keep(customer_id, attributes, generation)
        members = self.plan().evaluator(now)(attributes)
        return KnownCustomer(customer_id, attributes, members)

    def refresh_due(self) -> bool:
        """Whether ``catch_up`` or ``plan`` would read from another service now."""
        moment = time.monotonic()
        return (
            moment - self._synced_at >= self.customer_refresh_seconds
            or self._plan is None
            or moment - self._plan_read_at >= self.refresh_seconds
        )

    def catch_up(self) -> None:
        """Forget the records the change log says changed, when it was last read longer
        ago than ``customer_refresh_seconds``.

        One call reads the log; calls arriving meanwhile decide on the records kept rather
        than queue behind it (a record is then at most one log read older than the bound),
        so a slow profiles service delays one call, not all. With a bound of 0 every call
        waits for a read that started after it."""
        if time.monotonic() - self._synced_at < self.customer_refresh_seconds:
            return
        wait = self._sequence is None or self.customer_refresh_seconds == 0
        if not self._reading_log.acquire(blocking=wait):
            return
        try:
            started = time.monotonic()
            if started - self._synced_at < self.customer_refresh_seconds:
                return
            changed = self.profiles.changed_since(self._sequence or 0)
            with self._sync_lock:
                first_read = self._sequence is None
                if first_read:
                    # The first read only finds where the log ends: nothing is kept yet.
                    self._records.clear()
                elif changed.customer_ids:
                    self._generation += 1
                    for customer_id in changed.customer_ids:
                        self._records.pop(customer_id, None)
                self._sequence = changed.last_sequence
                self._synced_at = started
        finally:
            self._reading_log.release()
        if changed.customer_ids and not first_read:
            for listener in self.change_listeners:
                listener(changed.customer_ids)

    def _keep(self, customer_id: str, attributes: Mapping[str, Any], generation: int) -> None:
        with self._sync_lock:
            if generation != self._generation:
                return
            if len(self._records) >= self.cache_size:
                # Oldest first: dicts keep insertion order.
                del self._records[next(iter(self._records))]
            self._records[customer_id] = attributes

    def segments_of(self, attributes: Mapping[str, Any], now: datetime) -> frozenset[str]:
        """Segments an anonymous visitor's attributes fall in (country, language, ...)."""
        return self.plan().evaluator(now)(attributes)

    def segments_fingerprint(self) -> str:
        """Names the segment definitions in force: equal strings, equal definitions."""
        self.plan()
        return hashlib.sha256("\n".join(self._plan_fingerprint).encode()).hexdigest()[:16]

    def plan(self) -> SegmentPlan:
        plan = self._plan
        if plan is not None and time.monotonic() - self._plan_read_at < self.refresh_seconds:
            return plan
        # While one call reads the definitions, the others decide on the current ones
        # rather than queue behind it (a slow SegmentService would stall every call).
        if plan is not None and not self._lock.acquire(blocking=False):
            return plan
        if plan is None:
            self._lock.acquire()
        changed = False
        try:
            moment = time.monotonic()
            if self._plan is None or moment - self._plan_read_at >= self.refresh_seconds:
                changed = self._read_plan(moment)
            plan = self._plan
            assert plan is not None
        finally:
            self._lock.release()
        if changed:
            for listener in self.plan_listeners:
                listener()
        return plan

    def _read_plan(self, moment: float) -> bool:
        """Read and compile the definitions (the caller holds the lock); whether they
        changed. On failure the last ones stay and are tried again in RETRY_SECONDS."""
        try:
            segments = self.segments.all_segments()
        except Unavailable as error:
            if self._plan is None:
                raise
            log.warning("deciding on the segment definitions last read: %s", error.message)
            self._plan_read_at = moment - self.refresh_seconds + RETRY_SECONDS
            return False
        # The definitions themselves: the listing carries no revisions.
        fingerprint = tuple(sorted(repr(segment) for segment in segments))
        changed = self._plan is not None and fingerprint != self._plan_fingerprint
        self._plan = compile_plan(segments)
        self._plan_fingerprint = fingerprint
        self._plan_read_at = moment
        return changed
