"""Endpoints, subscriptions and deliveries as the rest of the code sees them, free of gRPC
and SQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class TransitionKind(StrEnum):
    ENTERED = "entered"
    EXITED = "exited"


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    url: str
    description: str = ""
    enabled: bool = True
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    segment_id: str
    transition: TransitionKind
    endpoint_id: str
    require_segments: tuple[str, ...] = ()
    create_time: datetime | None = None


@dataclass(frozen=True)
class Attempt:
    attempt: int
    attempt_time: datetime
    status_code: int
    error: str
    duration_ms: int


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    endpoint_id: str
    event_type: str
    customer_id: str | None
    payload: dict[str, Any]
    status: DeliveryStatus
    attempts: int
    next_attempt_time: datetime
    last_status_code: int
    last_error: str
    create_time: datetime
    deliver_time: datetime | None
    log: tuple[Attempt, ...] = field(default=())
