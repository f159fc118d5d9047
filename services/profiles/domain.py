"""The customer record as the rest of the code sees it, free of gRPC and SQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

# Fields stored as plain columns, in contract order. Empty string / None means "not set".
SCALAR_FIELDS: tuple[str, ...] = (
    "email",
    "display_name",
    "company_name",
    "plan",
    "seats",
    "arr",
    "employee_count",
    "annual_revenue",
    "industry",
    "country",
    "region",
    "timezone",
    "language",
    "signup_time",
    "lifecycle_stage",
    "health_score",
    "nps",
    "channel_preference",
)
# Fields a caller may write; ``customer_id`` is fixed at creation.
WRITABLE_FIELDS: tuple[str, ...] = (*SCALAR_FIELDS, "external_ids", "tags", "attributes")
OUTPUT_ONLY_FIELDS = frozenset(
    {"customer_id", "traits", "create_time", "update_time", "etag", "field_sources"}
)
# The field source of writes made through the profiles API rather than a sync.
API_SOURCE = "api"


class ChangeKind(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    TAGS_CHANGED = "tags_changed"
    USAGE_RECORDED = "usage_recorded"
    DELETED = "deleted"


@dataclass(frozen=True)
class FieldSource:
    """Where a field's value came from ("billing", "crm", "api") and when that source last
    wrote or confirmed it."""

    source: str
    refresh_time: datetime


FieldSourceDocument = list[dict[str, Any]]
"""A customer's field sources as stored with it: groups of fields that one source wrote or
confirmed at one time in one run, each field in exactly one group, e.g.
``[{"source": "billing", "refresh_time": "2025-05-07T02:00:00.000000Z", "run_id": "r1",
"fields": ["plan", "seats"]}]``. One document per customer rather than a row per field:
a write refreshes a dozen fields at once, and a row each was most of what it stored."""


def refresh_stamp(moment: datetime) -> str:
    """A refresh time as the document stores it: fixed-width UTC text, so that comparing
    two stamps as text (as the freshness query does in SQL) compares the times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def field_sources_from_document(document: FieldSourceDocument) -> dict[str, FieldSource]:
    """The source of each field, by field name."""
    sources: dict[str, FieldSource] = {}
    for group in document:
        origin = FieldSource(group["source"], datetime.fromisoformat(group["refresh_time"]))
        for name in group["fields"]:
            sources[name] = origin
    return sources


def new_field_source_document(
    fields: Sequence[str], *, source: str, stamp: str, run_id: str
) -> FieldSourceDocument:
    """The document of a new customer whose ``fields`` all came from ``source``."""
    if not fields:
        return []
    return [{"source": source, "refresh_time": stamp, "run_id": run_id, "fields": list(fields)}]


def refreshed_document(
    document: FieldSourceDocument,
    fields: Iterable[str],
    *,
    source: str,
    stamp: str,
    run_id: str,
) -> FieldSourceDocument:
    """``document`` with ``source`` now the origin of ``fields``, refreshed at ``stamp``;
    the other fields keep theirs."""
    refreshed = list(dict.fromkeys(fields))
    if not refreshed:
        return document
    taken = set(refreshed)
    kept: FieldSourceDocument = []
    for group in document:
        remaining = [name for name in group["fields"] if name not in taken]
        if len(remaining) == len(group["fields"]):
            kept.append(group)
        elif remaining:
            kept.append({**group, "fields": remaining})
    for position, group in enumerate(kept):
        if (group["source"], group["refresh_time"], group["run_id"]) == (source, stamp, run_id):
            kept[position] = {**group, "fields": [*group["fields"], *refreshed]}
            return kept
    return kept + new_field_source_document(refreshed, source=source, stamp=stamp, run_id=run_id)


@dataclass(frozen=True)
class Customer:
    customer_id: str
    create_time: datetime
    update_time: datetime
    version: int
    external_ids: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)
    traits: dict[str, float] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    """The scalar fields by name (see ``SCALAR_FIELDS``); unset ones are absent."""
    field_sources: dict[str, FieldSource] = field(default_factory=dict)
    """By field name (``plan``, ``attributes.account_owner``)."""

    @property
    def etag(self) -> str:
        return etag_for(self.version)


def etag_for(version: int) -> str:
    return f'W/"{version}"'


@dataclass(frozen=True)
class CustomerChange:
    sequence: int
    customer_id: str
    kind: ChangeKind
    changed_fields: tuple[str, ...]
    change_time: datetime


@dataclass(frozen=True)
class UsageEvent:
    customer_id: str
    metric: str
    value: float
    occur_time: datetime
    event_id: str | None = None


@dataclass(frozen=True)
class ExternalIdKey:
    system: str
    external_id: str


@dataclass(frozen=True)
class SyncRecord:
    """One row of a sync, mapped: the source's key, the fields it delivered (scalars in
    ``values``, custom fields in ``attributes``) and other systems' ids it carries."""

    row_number: int
    key: str
    values: dict[str, Any]
    attributes: dict[str, Any]
    links: dict[str, str]

    @property
    def delivered(self) -> list[str]:
        """The delivered fields as field sources name them."""
        return [*self.values, *(f"attributes.{name}" for name in self.attributes)]


@dataclass(frozen=True)
class SyncRejection:
    row_number: int
    key: str
    reasons: tuple[str, ...]


@dataclass
class SyncChunkResult:
    """What one chunk did, counted per row."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejections: list[SyncRejection] = field(default_factory=list)
