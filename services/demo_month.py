"""A month of demo conversations, so the reports have something true to show.

Every conversation goes through the public routing API with its real past times: routed,
handed over by the bot where the rules say bot first, answered, resolved, rated. Tiers are
served differently on purpose, as under-staffed teams serve them: Enterprise answered in
minutes and happy, Starter waiting hours after the bot and unhappy. The blended figures
look fine; the scorecard shows the gap. Seeded, so two runs tell the same story.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.profiles.v1 import profiles_pb2_grpc
from switchboard.routing.v1 import routing_pb2 as rpb
from switchboard.routing.v1 import routing_pb2_grpc

from services.core.channels import open_channel
from services.core.clock import utc_now
from services.core.settings import Settings
from services.segments.convert import timestamp

REPLYING_AGENT = "ana.silva"


@dataclass(frozen=True)
class Service:
    """How a tier is served: minutes to the first reply and to the resolution after it,
    the CSAT ratings it gives, and how often a resolved conversation comes back."""

    reply_minutes: tuple[float, float]
    resolve_minutes: tuple[float, float]
    ratings: tuple[int, ...]
    reopen_share: float


SERVICE_BY_TIER = {
    "tier_enterprise": Service((2, 12), (20, 90), (5, 5, 4), 0.02),
    "tier_growth": Service((10, 70), (30, 180), (5, 4, 4, 3), 0.05),
    "tier_starter": Service((60, 400), (60, 600), (4, 3, 2, 2, 1), 0.15),
}
# Customers in no tier (no seats yet) are served like growth.
DEFAULT_SERVICE = SERVICE_BY_TIER["tier_growth"]
BOT_CONTAINED_SHARE = 0.35


def load_conversation_month(settings: Settings, *, days: int = 30, seed: int = 7) -> str:
    """Route and play out ``days`` of conversations for every stored customer, ending an
    hour ago; conversations already there are left as they are (their ids are fixed)."""
    deadline = settings.call_deadline_seconds * 6
    profiles = profiles_pb2_grpc.ProfileServiceStub(
        open_channel(settings.profiles_address, settings, deadline_seconds=deadline)
    )
    routing = routing_pb2_grpc.RoutingServiceStub(
        open_channel(settings.routing_address, settings, deadline_seconds=deadline)
    )
    customer_ids = _customer_ids(profiles)
    randomness = random.Random(seed)
    end = utc_now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    start = end - timedelta(days=days)
    plans = []
    for day in range(days):
        for customer_id in customer_ids:
            for _ in range(randomness.choice((0, 1))):
                minute = randomness.uniform(7 * 60, 17 * 60)
                plans.append((start + timedelta(days=day, minutes=minute), customer_id))
    plans.sort()
    played = 0
    for number, (routed_at, customer_id) in enumerate(plans):
        conversation_id = f"demo-{routed_at:%Y%m%d}-{number:05d}"
        if _play(routing, randomness, conversation_id, customer_id, routed_at):
            played += 1
    return (
        f"conversations: {played} new over {days} days for {len(customer_ids)} customers "
        f"({start:%Y-%m-%d} to {end:%Y-%m-%d})"
    )


def _play(
    routing: routing_pb2_grpc.RoutingServiceStub,
    randomness: random.Random,
    conversation_id: str,
    customer_id: str,
    routed_at: datetime,
) -> bool:
    routed = routing.RouteConversation(
        rpb.RouteConversationRequest(
            conversation_id=conversation_id,
            customer_id=customer_id,
            channel=rpb.CHANNEL_CHAT,
            time=timestamp(routed_at),
        )
    )
    if routed.replayed:
        return False
    decision = routed.decision
    tier = next((s for s in decision.segment_ids if s in SERVICE_BY_TIER), "")
    service = SERVICE_BY_TIER.get(tier, DEFAULT_SERVICE)
    moment = routed_at

    def record(
        kind: rpb.ConversationEventKind.ValueType,
        after: float,
        *,
        agent_id: str = "",
        csat_rating: int = 0,
    ) -> None:
        nonlocal moment
        moment += timedelta(minutes=after)
        routing.RecordConversationEvent(
            rpb.RecordConversationEventRequest(
                conversation_id=conversation_id,
                kind=kind,
                time=timestamp(moment),
                agent_id=agent_id,
                csat_rating=csat_rating,
            )
        )

    if decision.bot_first:
        record(rpb.CONVERSATION_EVENT_KIND_BOT_REPLY, randomness.uniform(0.2, 1))
        if randomness.random() < BOT_CONTAINED_SHARE:
            record(rpb.CONVERSATION_EVENT_KIND_RESOLVE, randomness.uniform(2, 8))
            record(rpb.CONVERSATION_EVENT_KIND_CSAT, 1, csat_rating=randomness.choice((4, 5, 3)))
            return True
        record(rpb.CONVERSATION_EVENT_KIND_ESCALATE, randomness.uniform(2, 6))
    record(
        rpb.CONVERSATION_EVENT_KIND_AGENT_REPLY,
        randomness.uniform(*service.reply_minutes),
        agent_id=decision.agent_id or REPLYING_AGENT,
    )
    record(rpb.CONVERSATION_EVENT_KIND_RESOLVE, randomness.uniform(*service.resolve_minutes))
    if randomness.random() < service.reopen_share:
        record(rpb.CONVERSATION_EVENT_KIND_REOPEN, randomness.uniform(60, 600))
        record(rpb.CONVERSATION_EVENT_KIND_RESOLVE, randomness.uniform(*service.resolve_minutes))
    record(rpb.CONVERSATION_EVENT_KIND_CSAT, 5, csat_rating=randomness.choice(service.ratings))
    return True


def _customer_ids(profiles: profiles_pb2_grpc.ProfileServiceStub) -> list[str]:
    found: list[str] = []
    token = ""
    while True:
        page = profiles.ListCustomers(ppb.ListCustomersRequest(page_size=1000, page_token=token))
        found += [customer.customer_id for customer in page.customers]
        token = page.next_page_token
        if not token:
            return sorted(found)
