"""Use cases of outreach webhooks: endpoints and their secrets, subscriptions to segment
transitions, and the delivery log with replays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.core.clock import Clock, utc_now
from services.core.errors import FieldViolation, InvalidArgument
from services.core.validation import page_limit, raise_if, required
from services.outreach.domain import Delivery, Endpoint, Subscription
from services.outreach.logic import (
    description_problems,
    id_problems,
    new_id,
    new_secret,
    required_segment_problems,
    secret_problems,
    url_problems,
)
from services.outreach.repository import DeliveryFilter, OutreachRepository
from services.segments.logic import token_position, token_text
from services.segments.repository import decode_token, encode_token


@dataclass(frozen=True)
class EndpointWithSecret:
    """An endpoint and its signing secret: only ever returned by create and rotation."""

    endpoint: Endpoint
    secret: str


class Outreach:
    def __init__(self, repository: OutreachRepository, clock: Clock = utc_now) -> None:
        self.repository = repository
        self.clock = clock

    # ---- endpoints ---------------------------------------------------------------------

    def create_endpoint(self, *, endpoint: Endpoint, secret: str) -> EndpointWithSecret:
        endpoint_id = endpoint.endpoint_id or new_id("ep")
        problems = id_problems(endpoint_id, "endpoint.endpoint_id")
        problems += url_problems(endpoint.url)
        problems += description_problems(endpoint.description)
        problems += secret_problems(secret)
        raise_if(problems)
        secret = secret or new_secret()
        created = self.repository.create_endpoint(
            endpoint=Endpoint(**{**endpoint.__dict__, "endpoint_id": endpoint_id}),
            secret=secret,
            now=self.clock(),
        )
        return EndpointWithSecret(created, secret)

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        raise_if(required("endpoint_id", endpoint_id))
        return self.repository.get_endpoint(endpoint_id)

    def list_endpoints(self, *, page_token: str, page_size: int) -> tuple[list[Endpoint], str]:
        after = token_text(decode_token(page_token))
        found, more = self.repository.list_endpoints(after=after, limit=page_limit(page_size))
        return found, (encode_token(found[-1].endpoint_id) if more else "")

    def update_endpoint(
        self,
        *,
        endpoint: Endpoint,
        fields: Sequence[str],
        rotate_secret: bool,
        secret: str,
    ) -> tuple[Endpoint, str]:
        """Change the named ``fields`` (url, description, enabled) and, when asked, the
        secret (to ``secret`` or a new one); returns the endpoint and the new secret ("" when
        not rotated)."""
        problems = required("endpoint.endpoint_id", endpoint.endpoint_id)
        if not fields and not rotate_secret:
            problems.append(FieldViolation("update_mask", "names no field and no rotation"))
        if "url" in fields:
            problems += url_problems(endpoint.url)
        if "description" in fields:
            problems += description_problems(endpoint.description)
        if secret and not rotate_secret:
            problems.append(FieldViolation("secret", "is only read with rotate_secret"))
        problems += secret_problems(secret)
        raise_if(problems)
        values: dict[str, Any] = {name: getattr(endpoint, name) for name in fields}
        rotated = ""
        if rotate_secret:
            rotated = values["secret"] = secret or new_secret()
        updated = self.repository.update_endpoint(
            endpoint_id=endpoint.endpoint_id, values=values, now=self.clock()
        )
        return updated, rotated

    def delete_endpoint(self, endpoint_id: str) -> None:
        raise_if(required("endpoint_id", endpoint_id))
        self.repository.delete_endpoint(endpoint_id)

    # ---- subscriptions -----------------------------------------------------------------

    def create_subscription(self, subscription: Subscription) -> Subscription:
        subscription_id = subscription.subscription_id or new_id("sub")
        problems = id_problems(subscription_id, "subscription.subscription_id")
        problems += required("subscription.segment_id", subscription.segment_id)
        problems += required("subscription.endpoint_id", subscription.endpoint_id)
        problems += required_segment_problems(subscription.require_segments)
        raise_if(problems)
        return self.repository.create_subscription(
            subscription=Subscription(
                **{
                    **subscription.__dict__,
                    "subscription_id": subscription_id,
                    "require_segments": tuple(sorted(set(subscription.require_segments))),
                }
            ),
            now=self.clock(),
        )

    def list_subscriptions(
        self, *, segment_id: str, endpoint_id: str, page_token: str, page_size: int
    ) -> tuple[list[Subscription], str]:
        after = token_text(decode_token(page_token))
        found, more = self.repository.list_subscriptions(
            segment_id=segment_id,
            endpoint_id=endpoint_id,
            after=after,
            limit=page_limit(page_size),
        )
        return found, (encode_token(found[-1].subscription_id) if more else "")

    def delete_subscription(self, subscription_id: str) -> None:
        raise_if(required("subscription_id", subscription_id))
        self.repository.delete_subscription(subscription_id)

    # ---- deliveries --------------------------------------------------------------------

    def list_deliveries(
        self, *, where: DeliveryFilter, page_token: str, page_size: int
    ) -> tuple[list[Delivery], str]:
        limit = page_limit(page_size)
        found, last = self.repository.list_deliveries(
            where=where, after=_delivery_position(decode_token(page_token)), limit=limit
        )
        return found, (encode_token([last[0].isoformat(), last[1]]) if last else "")

    def get_delivery(self, delivery_id: str) -> Delivery:
        raise_if(required("delivery_id", delivery_id))
        return self.repository.get_delivery(delivery_id)

    def replay_delivery(self, delivery_id: str) -> Delivery:
        """Send a dead or delivered webhook again, with the same idempotency key."""
        raise_if(required("delivery_id", delivery_id))
        return self.repository.replay_delivery(delivery_id, self.clock())


def _delivery_position(token: Any) -> tuple[datetime, str] | None:
    position = token_position(token, str, str)
    if position is None:
        return None
    moment, delivery_id = position
    try:
        return datetime.fromisoformat(moment), delivery_id
    except ValueError as error:
        raise InvalidArgument.field("page_token", "not a token from a previous page") from error
