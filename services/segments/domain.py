"""Segments, revisions and memberships as the rest of the code sees them, free of gRPC and SQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

# Fields an admin edits; everything else about a segment is kept by the service.
EDITABLE_FIELDS: tuple[str, ...] = (
    "display_name",
    "description",
    "rule",
    "family",
    "priority",
    "enabled",
)


@dataclass(frozen=True)
class Segment:
    segment_id: str
    display_name: str = ""
    description: str = ""
    rule: dict[str, Any] = field(default_factory=dict)
    family: str = ""
    priority: int = 0
    enabled: bool = True
    revision: int = 0
    create_time: datetime | None = None
    update_time: datetime | None = None

    def definition(self) -> dict[str, Any]:
        """The editable fields by name."""
        return {name: getattr(self, name) for name in EDITABLE_FIELDS}


class RevisionAction(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class SegmentRevision:
    segment: Segment
    actor: str
    action: RevisionAction
    changed_fields: tuple[str, ...]
    restored_revision: int = 0


class ChangeKind(StrEnum):
    ENTERED = "entered"
    EXITED = "exited"


class Trigger(StrEnum):
    CUSTOMER_CHANGED = "customer_changed"
    FULL_RECOMPUTE = "full_recompute"
    CUSTOMER_DELETED = "customer_deleted"
    SEGMENT_DELETED = "segment_deleted"
    # A segment was created or its definition changed: everyone was evaluated again.
    SEGMENT_CHANGED = "segment_changed"


@dataclass(frozen=True)
class Membership:
    customer_id: str
    segment_id: str
    family: str
    enter_time: datetime
    rule_revision: int


@dataclass(frozen=True)
class MembershipChange:
    customer_id: str
    segment_id: str
    family: str
    kind: ChangeKind
    previous_winner: str
    change_time: datetime
    rule_revision: int
    trigger: Trigger
    change_id: int = 0
