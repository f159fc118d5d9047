"""What the profiles service does, independent of how it is called (gRPC, workers, CLI).

Each method validates its input completely before touching the store, so a bad request
never writes anything, and reports every problem at once with the field it concerns.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.core.clock import Clock, utc_now
from services.core.errors import FieldViolation, InvalidArgument
from services.core.validation import page_limit
from services.profiles.domain import Customer, CustomerChange, ExternalIdKey, UsageEvent
from services.profiles.logic import (
    EXTERNAL_SYSTEM_PATTERN,
    METRIC_PATTERN,
    normalize_values,
    validate_customer_id,
    validate_tags,
    validate_values,
)
from services.profiles.repository import (
    CustomerFilter,
    CustomerRepository,
    FieldFreshness,
    UpsertOutcome,
    UpsertRecord,
    UsageRecordResult,
)

MAX_BATCH_GET = 1000
MAX_UPSERT_BATCH = 1000
MAX_USAGE_BATCH = 5000
MAX_CHANGES_PAGE = 10_000
# Systems a customer is known by (billing, CRM, help desk...): each is a stored row.
MAX_EXTERNAL_IDS = 20
DEFAULT_CHANGES_PAGE = 1000
# Events dated further ahead than this are a client clock or unit bug, not usage.
MAX_EVENT_CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class UpsertInput:
    """One record of an upsert batch as the caller sent it."""

    values: Mapping[str, Any]
    customer_id: str = ""


class Profiles:
    def __init__(self, repository: CustomerRepository, clock: Clock = utc_now) -> None:
        self.repository = repository
        self.clock = clock

    def create(self, *, customer_id: str, values: Mapping[str, Any]) -> Customer:
        problems = validate_customer_id(customer_id, "customer.customer_id") if customer_id else []
        problems += _record_problems(values, "customer.")
        _raise_if(problems)
        return self.repository.create(
            customer_id=customer_id, values=normalize_values(values), now=self.clock()
        )

    def get(self, *, customer_id: str) -> Customer:
        _raise_if(_required_id(customer_id, "customer_id"))
        return self.repository.get(customer_id=customer_id, now=self.clock())

    def get_by_external_id(self, *, key: ExternalIdKey) -> Customer:
        problems = []
        if not EXTERNAL_SYSTEM_PATTERN.match(key.system):
            problems.append(FieldViolation("external_id.system", "not a valid system name"))
        if not key.external_id:
            problems.append(FieldViolation("external_id.id", "is required"))
        _raise_if(problems)
        return self.repository.get_by_external_id(key=key, now=self.clock())

    def batch_get(self, *, customer_ids: Sequence[str]) -> list[Customer]:
        if len(customer_ids) > MAX_BATCH_GET:
            raise InvalidArgument.field(
                "customer_ids", f"at most {MAX_BATCH_GET} ids per call, got {len(customer_ids)}"
            )
        problems = [
            violation
            for index, customer_id in enumerate(customer_ids)
            for violation in _required_id(customer_id, f"customer_ids[{index}]")
        ]
        _raise_if(problems)
        return self.repository.batch_get(customer_ids=customer_ids, now=self.clock())

    def list_page(
        self, *, where: CustomerFilter, after_id: str, page_size: int
    ) -> tuple[list[Customer], str]:
        return self.repository.list_page(
            where=where, after_id=after_id, limit=page_limit(page_size), now=self.clock()
        )

    def update(
        self,
        *,
        customer_id: str,
        values: Mapping[str, Any],
        attribute_patch: Mapping[str, Any],
        removed_attributes: Collection[str],
        expected_etag: str,
    ) -> Customer:
        problems = _required_id(customer_id, "customer.customer_id")
        problems += _record_problems(values, "customer.")
        _raise_if(problems)
        return self.repository.update(
            customer_id=customer_id,
            values=normalize_values(values),
            attribute_patch=attribute_patch,
            removed_attributes=removed_attributes,
            expected_etag=expected_etag,
            now=self.clock(),
        )

    def delete(self, *, customer_id: str, expected_etag: str) -> None:
        _raise_if(_required_id(customer_id, "customer_id"))
        self.repository.delete(
            customer_id=customer_id, expected_etag=expected_etag, now=self.clock()
        )

    def change_tags(
        self, *, customer_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> Customer:
        problems = _required_id(customer_id, "customer_id")
        problems += validate_tags(add or remove, "tags")
        if not add and not remove:
            problems.append(FieldViolation("tags", "give at least one tag"))
        _raise_if(problems)
        return self.repository.change_tags(
            customer_id=customer_id, add=add, remove=remove, now=self.clock()
        )

    def upsert(self, *, system: str, records: Sequence[UpsertInput]) -> list[UpsertOutcome]:
        """Validate each record on its own; store the good ones, report the bad ones."""
        if not EXTERNAL_SYSTEM_PATTERN.match(system):
            raise InvalidArgument.field(
                "external_id_system", "required: 1-32 lowercase letters, digits, '_' or '-'"
            )
        if len(records) > MAX_UPSERT_BATCH:
            raise InvalidArgument.field(
                "customers", f"at most {MAX_UPSERT_BATCH} records per batch, got {len(records)}"
            )
        rejected: dict[int, UpsertOutcome] = {}
        accepted: list[UpsertRecord] = []
        for index, record in enumerate(records):
            problems = _record_problems(record.values)
            if record.customer_id:
                problems += validate_customer_id(record.customer_id)
            if not record.values.get("external_ids", {}).get(system):
                problems.append(
                    FieldViolation(f"external_ids[{system!r}]", "the batch's key is missing")
                )
            if problems:
                rejected[index] = UpsertOutcome(index, "rejected", violations=problems)
            else:
                accepted.append(
                    UpsertRecord(index, normalize_values(record.values), record.customer_id)
                )
        stored = self.repository.upsert(system=system, records=accepted, now=self.clock())
        by_index = {outcome.index: outcome for outcome in stored} | rejected
        return [by_index[index] for index in range(len(records))]

    def record_usage(self, *, events: Sequence[UsageEvent]) -> UsageRecordResult:
        _raise_if(usage_batch_problems(len(events)))
        now = self.clock()
        problems: list[FieldViolation] = []
        for index, event in enumerate(events):
            prefix = f"events[{index}]."
            problems += _required_id(event.customer_id, prefix + "customer_id")
            if not METRIC_PATTERN.match(event.metric):
                problems.append(
                    FieldViolation(
                        prefix + "metric", "1-64 lowercase letters, digits or '_', e.g. logins"
                    )
                )
            if not math.isfinite(event.value) or event.value < 0:
                problems.append(FieldViolation(prefix + "value", "must be zero or more"))
            if event.occur_time > now + MAX_EVENT_CLOCK_SKEW:
                problems.append(FieldViolation(prefix + "time", "is in the future"))
            if event.event_id is not None and len(event.event_id) > 128:
                problems.append(FieldViolation(prefix + "event_id", "at most 128 characters"))
        _raise_if(problems)
        return self.repository.record_usage(events=events, now=now)

    def list_changes(self, *, after_sequence: int, page_size: int) -> list[CustomerChange]:
        problems = []
        if after_sequence < 0:
            problems.append(FieldViolation("after_sequence", "must be zero or more"))
        if page_size < 0 or page_size > MAX_CHANGES_PAGE:
            problems.append(
                FieldViolation("page_size", f"must be between 0 and {MAX_CHANGES_PAGE}")
            )
        _raise_if(problems)
        return self.repository.list_changes(
            after_sequence=after_sequence, limit=page_size or DEFAULT_CHANGES_PAGE
        )

    def field_freshness(
        self, *, stale_before: datetime | None, source: str
    ) -> list[FieldFreshness]:
        """How many customers' values each source has not refreshed since ``stale_before``,
        per field: a segment rule may be relying on out-of-date data."""
        problems = []
        if stale_before is None:
            problems.append(FieldViolation("stale_before", "is required"))
        if source and not EXTERNAL_SYSTEM_PATTERN.match(source):
            problems.append(
                FieldViolation("source", "1-32 lowercase letters, digits, '_' or '-', e.g. billing")
            )
        _raise_if(problems)
        assert stale_before is not None
        return self.repository.field_freshness(stale_before=stale_before, source=source)

    def prune_usage_events(self, *, retention: timedelta) -> int:
        return self.repository.prune_usage_events(older_than=self.clock() - retention)


def usage_batch_problems(count: int) -> list[FieldViolation]:
    """A usage batch over the limit, checked before its events are read one by one."""
    if count > MAX_USAGE_BATCH:
        return [FieldViolation("events", f"at most {MAX_USAGE_BATCH} events per call, got {count}")]
    return []


def _record_problems(values: Mapping[str, Any], prefix: str = "") -> list[FieldViolation]:
    # The count first: a record naming 100,000 systems is refused without checking each.
    external_ids = values.get("external_ids", {})
    if len(external_ids) > MAX_EXTERNAL_IDS:
        return [
            FieldViolation(
                prefix + "external_ids",
                f"at most {MAX_EXTERNAL_IDS} systems per customer, got {len(external_ids)}",
            )
        ]
    return validate_values(values, prefix)


def _required_id(customer_id: str, field: str) -> list[FieldViolation]:
    if not customer_id:
        return [FieldViolation(field, "is required")]
    return validate_customer_id(customer_id, field)


def _raise_if(problems: list[FieldViolation]) -> None:
    if problems:
        raise InvalidArgument(problems)
