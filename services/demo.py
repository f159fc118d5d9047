"""A small demo data set, loaded through the public gRPC API so it shows real answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from switchboard.profiles.v1 import profiles_pb2 as pb
from switchboard.profiles.v1 import profiles_pb2_grpc
from switchboard.segments.v1 import segments_pb2 as spb
from switchboard.segments.v1 import segments_pb2_grpc

from services.core.channels import open_channel
from services.core.clock import utc_now
from services.core.settings import Settings

# (billing id, company, contact, plan, seats, ARR, employees, industry, country, lifecycle,
#  days since signup, logins in the week before last, logins last week)
DEMO_ACCOUNTS = [
    (
        "cus_acme",
        "Acme Corp",
        "Ada Moss",
        "enterprise",
        120,
        180_000.0,
        2400,
        "manufacturing",
        "US",
        "active",
        900,
        410,
        395,
    ),
    (
        "cus_globex",
        "Globex",
        "Hank Scorpio",
        "enterprise",
        75,
        96_000.0,
        800,
        "energy",
        "US",
        "active",
        700,
        300,
        120,
    ),
    (
        "cus_initech",
        "Initech",
        "Bill Lumbergh",
        "growth",
        30,
        24_000.0,
        300,
        "software",
        "US",
        "active",
        400,
        150,
        160,
    ),
    (
        "cus_umbrella",
        "Umbrella GmbH",
        "Alice Abernathy",
        "growth",
        12,
        9_600.0,
        120,
        "healthcare",
        "DE",
        "active",
        200,
        80,
        30,
    ),
    (
        "cus_hooli",
        "Hooli",
        "Gavin Belson",
        "growth",
        45,
        36_000.0,
        450,
        "software",
        "US",
        "active",
        20,
        0,
        90,
    ),
    (
        "cus_soylent",
        "Soylent SA",
        "Sol Roth",
        "starter",
        3,
        1_080.0,
        20,
        "food",
        "FR",
        "active",
        300,
        12,
        14,
    ),
    (
        "cus_vandelay",
        "Vandelay Industries",
        "Art Vandelay",
        "starter",
        1,
        360.0,
        4,
        "logistics",
        "US",
        "active",
        10,
        0,
        6,
    ),
    (
        "cus_wonka",
        "Wonka Ltd",
        "Charlie Bucket",
        "starter",
        2,
        720.0,
        60,
        "food",
        "GB",
        "churned",
        500,
        5,
        0,
    ),
    (
        "cus_tyrell",
        "Tyrell Corp",
        "Eldon Tyrell",
        "enterprise",
        60,
        150_000.0,
        5000,
        "software",
        "JP",
        "active",
        1200,
        220,
        230,
    ),
    (
        "cus_stark",
        "Stark Industries",
        "Pepper Potts",
        "growth",
        8,
        6_000.0,
        90,
        "manufacturing",
        "US",
        "active",
        5,
        0,
        25,
    ),
]


def demo_customers(now: datetime) -> list[pb.Customer]:
    customers = []
    for (
        billing_id,
        company,
        contact,
        plan,
        seats,
        arr,
        employees,
        industry,
        country,
        lifecycle,
        days,
        _prev,
        _last,
    ) in DEMO_ACCOUNTS:
        customer = pb.Customer(
            external_ids={"billing": billing_id},
            email=f"{contact.split()[0].lower()}@{billing_id.removeprefix('cus_')}.example",
            display_name=contact,
            company_name=company,
            plan=plan,
            seats=seats,
            arr=arr,
            employee_count=employees,
            industry=industry,
            country=country,
            lifecycle_stage=lifecycle,
            language="en",
        )
        customer.signup_time.FromDatetime(now - timedelta(days=days))
        customers.append(customer)
    return customers


def demo_usage(now: datetime, ids: dict[str, str]) -> list[pb.UsageEvent]:
    """One event per day with the week's logins spread evenly: enough to make traits."""
    events = []
    for billing_id, *_rest, prev_week, last_week in DEMO_ACCOUNTS:
        for week_offset, total in ((8, prev_week), (1, last_week)):
            for day in range(7):
                event = pb.UsageEvent(
                    customer_id=ids[billing_id],
                    metric="logins",
                    value=total / 7,
                    event_id=f"demo-{billing_id}-{week_offset}-{day}",
                )
                event.time.FromDatetime(now - timedelta(days=week_offset + day, hours=1))
                events.append(event)
    return events


def load_demo(settings: Settings) -> str:
    now = utc_now().astimezone(UTC)
    with grpc.insecure_channel(settings.profiles_address) as channel:
        profiles = profiles_pb2_grpc.ProfileServiceStub(channel)
        response = profiles.UpsertCustomers(
            pb.UpsertCustomersRequest(external_id_system="billing", customers=demo_customers(now)),
            timeout=settings.call_deadline_seconds,
        )
        ids = {
            account[0]: result.customer_id
            for account, result in zip(DEMO_ACCOUNTS, response.results, strict=True)
        }
        profiles.RecordUsageEvents(
            pb.RecordUsageEventsRequest(events=demo_usage(now, ids)),
            timeout=settings.call_deadline_seconds,
        )
    counts: dict[int, int] = {}
    for result in response.results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    created = counts.get(pb.UPSERT_OUTCOME_CREATED, 0)
    return f"demo loaded: {len(DEMO_ACCOUNTS)} customers ({created} new) with two weeks of logins"


# (segment id, display name, family, priority, rule): the worked examples.
DEMO_SEGMENTS: list[tuple[str, str, str, int, dict[str, Any]]] = [
    ("tier_enterprise", "Enterprise (50+ seats)", "tier", 10, {"seats": {"$gte": 50}}),
    ("tier_growth", "Growth (5-49 seats)", "tier", 20, {"seats": {"$gte": 5}}),
    ("tier_starter", "Starter (1-4 seats)", "tier", 30, {"seats": {"$gte": 1}}),
    ("at_risk", "At risk: logins halved", "", 0, {"traits.logins_wow_change": {"$lte": -0.5}}),
    ("lifecycle_churned", "Churned", "lifecycle", 10, {"lifecycle_stage": "churned"}),
    (
        "lifecycle_new",
        "New (first 30 days)",
        "lifecycle",
        20,
        {"signup_time": {"$withinLast": "30d"}},
    ),
    ("lifecycle_at_risk", "At risk", "lifecycle", 30, {"$inSegment": "at_risk"}),
    ("lifecycle_active", "Active", "lifecycle", 40, {"lifecycle_stage": "active"}),
    (
        "value_champions",
        "Champions (high value, engaged)",
        "value_engagement",
        10,
        {"arr": {"$gte": 30_000}, "traits.logins_7d": {"$gte": 100}},
    ),
    (
        "value_at_risk",
        "At Risk (high value, disengaged)",
        "value_engagement",
        20,
        {"arr": {"$gte": 30_000}},
    ),
    (
        "value_promising",
        "Promising (low value, engaged)",
        "value_engagement",
        30,
        {"traits.logins_7d": {"$gte": 100}},
    ),
    ("value_dormant", "Dormant (low value, disengaged)", "value_engagement", 40, {}),
]


def load_segment_demo(settings: Settings) -> str:
    """Create the demo segments (skipping ones that exist), recompute every customer's
    memberships from the profiles change log, and describe the result."""
    channel = open_channel(settings.segments_address, deadline_seconds=60)
    stub = segments_pb2_grpc.SegmentServiceStub(channel)
    created = 0
    for segment_id, display_name, family, priority, rule in DEMO_SEGMENTS:
        segment = spb.Segment(
            segment_id=segment_id,
            display_name=display_name,
            family=family,
            priority=priority,
            enabled=True,
        )
        segment.rule.update(rule)
        try:
            stub.CreateSegment(spb.CreateSegmentRequest(segment=segment, actor="switchboard demo"))
            created += 1
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
    summary = stub.RecomputeMemberships(
        spb.RecomputeMembershipsRequest(scope=spb.RECOMPUTE_SCOPE_CHANGED)
    )
    lines = [
        f"segments: {created} created, {len(DEMO_SEGMENTS) - created} already there",
        f"recomputed: {summary.evaluated_count} customers evaluated, "
        f"{summary.entered_count} entries, {summary.exited_count} exits, "
        f"change log read up to sequence {summary.last_sequence}",
    ]
    for segment_id, display_name, family, _priority, _rule in DEMO_SEGMENTS:
        found = stub.ListMemberships(
            spb.ListMembershipsRequest(segment_id=segment_id, page_size=1000)
        ).memberships
        where = f"[{family}]" if family else "[overlay]"
        lines.append(f"  {where:<19} {display_name:<34} {len(found):>3} customers")
    for warning in stub.LintSegments(spb.LintSegmentsRequest()).warnings:
        lines.append(f"  lint: {warning.message}")
    channel.close()
    return "\n".join(lines)
