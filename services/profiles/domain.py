"""The customer record as the rest of the code sees it, free of gRPC and SQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
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
