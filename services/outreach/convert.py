"""Outreach messages <-> domain objects. Endpoints are converted without their secret:
there is no path from a stored secret to a message except the create and rotate answers."""

from __future__ import annotations

from switchboard.segments.v1 import outreach_pb2 as pb
from switchboard.segments.v1 import segments_pb2

from services.core.errors import FieldViolation, InvalidArgument
from services.outreach.domain import (
    Delivery,
    DeliveryStatus,
    Endpoint,
    Subscription,
    TransitionKind,
)
from services.segments.convert import dict_to_struct, timestamp

_STATUSES = {
    DeliveryStatus.PENDING: pb.DELIVERY_STATUS_PENDING,
    DeliveryStatus.DELIVERED: pb.DELIVERY_STATUS_DELIVERED,
    DeliveryStatus.DEAD: pb.DELIVERY_STATUS_DEAD,
}
_STATUS_FILTERS = {value: status for status, value in _STATUSES.items()}
_TRANSITIONS = {
    TransitionKind.ENTERED: segments_pb2.MEMBERSHIP_CHANGE_KIND_ENTERED,
    TransitionKind.EXITED: segments_pb2.MEMBERSHIP_CHANGE_KIND_EXITED,
}
_TRANSITIONS_BACK = {value: kind for kind, value in _TRANSITIONS.items()}
ENDPOINT_PATHS = ("url", "description", "enabled")


def endpoint_to_proto(endpoint: Endpoint) -> pb.WebhookEndpoint:
    return pb.WebhookEndpoint(
        endpoint_id=endpoint.endpoint_id,
        url=endpoint.url,
        description=endpoint.description,
        enabled=endpoint.enabled,
        create_time=timestamp(endpoint.create_time),
        update_time=timestamp(endpoint.update_time),
    )


def endpoint_from_proto(message: pb.WebhookEndpoint) -> Endpoint:
    return Endpoint(
        endpoint_id=message.endpoint_id,
        url=message.url,
        description=message.description,
        enabled=message.enabled,
    )


def endpoint_update_paths(paths: list[str]) -> list[str]:
    problems = [
        FieldViolation(f"update_mask.paths[{index}]", f"{path!r} cannot be updated")
        for index, path in enumerate(paths)
        if path not in ENDPOINT_PATHS
    ]
    if problems:
        raise InvalidArgument(problems)
    return list(dict.fromkeys(paths))


def subscription_to_proto(subscription: Subscription) -> pb.OutreachSubscription:
    return pb.OutreachSubscription(
        subscription_id=subscription.subscription_id,
        segment_id=subscription.segment_id,
        transition=_TRANSITIONS[subscription.transition],
        endpoint_id=subscription.endpoint_id,
        require_segment_ids=list(subscription.require_segments),
        create_time=timestamp(subscription.create_time),
    )


def subscription_from_proto(message: pb.OutreachSubscription) -> Subscription:
    kind = _TRANSITIONS_BACK.get(message.transition)
    if kind is None:
        raise InvalidArgument.field(
            "subscription.transition", "must be MEMBERSHIP_CHANGE_KIND_ENTERED or _EXITED"
        )
    return Subscription(
        subscription_id=message.subscription_id,
        segment_id=message.segment_id,
        transition=kind,
        endpoint_id=message.endpoint_id,
        require_segments=tuple(message.require_segment_ids),
    )


def status_filter(value: pb.DeliveryStatus.ValueType) -> DeliveryStatus | None:
    if value == pb.DELIVERY_STATUS_UNSPECIFIED:
        return None
    found = _STATUS_FILTERS.get(value)
    if found is None:
        raise InvalidArgument.field("status", "is not a known delivery status")
    return found


def delivery_to_proto(delivery: Delivery) -> pb.Delivery:
    message = pb.Delivery(
        delivery_id=delivery.delivery_id,
        endpoint_id=delivery.endpoint_id,
        event_type=delivery.event_type,
        customer_id=delivery.customer_id or "",
        payload=dict_to_struct(delivery.payload),
        status=_STATUSES[delivery.status],
        attempt_count=delivery.attempts,
        next_attempt_time=timestamp(delivery.next_attempt_time),
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        create_time=timestamp(delivery.create_time),
        attempts=[
            pb.DeliveryAttempt(
                attempt=attempt.attempt,
                attempt_time=timestamp(attempt.attempt_time),
                status_code=attempt.status_code,
                error=attempt.error,
                duration_ms=attempt.duration_ms,
            )
            for attempt in delivery.log
        ],
    )
    if delivery.deliver_time is not None:
        message.deliver_time.CopyFrom(timestamp(delivery.deliver_time))
    return message
