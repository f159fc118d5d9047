"""A small demo data set, loaded through the public gRPC API so it shows real answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from switchboard.profiles.v1 import profiles_pb2 as pb
from switchboard.profiles.v1 import profiles_pb2_grpc
from switchboard.routing.v1 import routing_pb2 as rpb
from switchboard.routing.v1 import routing_pb2_grpc, widgets_pb2_grpc
from switchboard.routing.v1 import widgets_pb2 as wpb
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

# Enterprise accounts' named owners, read by the routing demo's fallback chain.
ACCOUNT_OWNERS = {"cus_acme": "ana.silva", "cus_globex": "ana.silva"}


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
        if billing_id in ACCOUNT_OWNERS:
            customer.attributes.update({"account_owner": ACCOUNT_OWNERS[billing_id]})
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
    with open_channel(
        settings.profiles_address, settings, deadline_seconds=settings.call_deadline_seconds
    ) as channel:
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
    memberships, and describe the result. Every customer, not the changed ones: with workers
    running, their rounds may already have read the customers' changes before these
    segments existed."""
    channel = open_channel(settings.segments_address, settings, deadline_seconds=60)
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
        spb.RecomputeMembershipsRequest(scope=spb.RECOMPUTE_SCOPE_ALL)
    )
    lines = [
        f"segments: {created} created, {len(DEMO_SEGMENTS) - created} already there",
        f"recomputed: {summary.evaluated_count} customers evaluated, "
        f"{summary.entered_count} entries, {summary.exited_count} exits",
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


def _target(minutes: int) -> rpb.SlaTarget:
    target = rpb.SlaTarget(clock=rpb.TARGET_CLOCK_BUSINESS_HOURS)
    target.duration.FromSeconds(minutes * 60)
    return target


def _action(
    queue_id: str, policy_id: str, priority: int, owner_minutes: int = 0
) -> rpb.RoutingAction:
    action = rpb.RoutingAction(queue_id=queue_id, sla_policy_id=policy_id, priority=priority)
    if owner_minutes:
        step = action.fallback_chain.add(owner_attribute="account_owner")
        step.timeout.FromSeconds(owner_minutes * 60)
    return action


def routing_demo_configuration() -> tuple[
    list[rpb.Calendar], list[rpb.SlaPolicy], list[rpb.Queue], list[rpb.Agent], rpb.RoutingRules
]:
    """The issue's first team: Enterprise to its named senior agent with a 30-minute first
    response, Growth to the priority queue with 2 hours, Starter to the general queue with 4,
    and the at-risk overlay to the priority queue whatever the tier; business hours in Berlin
    with a lunch break."""
    weekdays = [
        rpb.WEEKDAY_MONDAY,
        rpb.WEEKDAY_TUESDAY,
        rpb.WEEKDAY_WEDNESDAY,
        rpb.WEEKDAY_THURSDAY,
        rpb.WEEKDAY_FRIDAY,
    ]
    office = rpb.Calendar(
        calendar_id="berlin-office",
        display_name="Berlin office hours",
        time_zone="Europe/Berlin",
        weekly_hours=[
            rpb.OpenInterval(weekday=day, start_time=start, end_time=end)
            for day in weekdays
            for start, end in (("09:00", "12:30"), ("13:30", "17:30"))
        ],
        holidays=["2026-12-24", "2026-12-25", "2026-12-26", "2027-01-01"],
    )
    waiting = [rpb.CONVERSATION_STATE_WAITING_ON_CUSTOMER]
    policies = [
        rpb.SlaPolicy(
            policy_id=policy_id,
            display_name=name,
            calendar_id="berlin-office",
            first_response=_target(first),
            next_response=_target(first * 2),
            resolution=_target(resolution),
            warning_percent=75,
            pause_states=waiting,
        )
        for policy_id, name, first, resolution in (
            ("enterprise-30m", "Enterprise: 30 minutes", 30, 8 * 60),
            ("growth-2h", "Growth: 2 hours", 2 * 60, 16 * 60),
            ("starter-4h", "Starter: 4 hours", 4 * 60, 24 * 60),
        )
    ]
    senior_overflow = rpb.Overflow(queue_id="priority", when_no_agent_online=True)
    senior_overflow.after.FromSeconds(15 * 60)
    queues = [
        rpb.Queue(queue_id="general", display_name="General", calendar_id="berlin-office"),
        rpb.Queue(queue_id="priority", display_name="Priority", calendar_id="berlin-office"),
        rpb.Queue(
            queue_id="senior",
            display_name="Senior desk",
            required_skills=["senior"],
            calendar_id="berlin-office",
            overflow=senior_overflow,
        ),
    ]
    agents = [
        rpb.Agent(
            agent_id=agent_id,
            display_name=name,
            skills=skills,
            languages=["en", "de"],
            capacity=[
                rpb.ChannelCapacity(channel=rpb.CHANNEL_CHAT, max_open=3),
                rpb.ChannelCapacity(channel=rpb.CHANNEL_EMAIL, max_open=10),
            ],
            teams=["support"],
        )
        for agent_id, name, skills in (
            ("ana.silva", "Ana Silva", ["senior", "billing"]),
            ("ben.okafor", "Ben Okafor", ["billing"]),
            ("chloe.martin", "Chloé Martin", []),
        )
    ]
    rules = rpb.RoutingRules(
        rules=[
            rpb.RoutingRule(
                rule_id="at-risk",
                display_name="At risk: priority queue whatever the tier",
                action=_action("priority", "growth-2h", 80),
            ),
            rpb.RoutingRule(
                rule_id="enterprise",
                display_name="Enterprise: the named senior agent, 30 minutes",
                action=_action("senior", "enterprise-30m", 90, owner_minutes=10),
            ),
            rpb.RoutingRule(
                rule_id="growth",
                display_name="Growth: priority queue, 2 hours",
                action=_action("priority", "growth-2h", 50),
            ),
        ],
        default_action=_action("general", "starter-4h", 10),
    )
    rules.rules[0].condition.update({"$inSegment": "at_risk"})
    rules.rules[1].condition.update({"$inSegment": "tier_enterprise"})
    rules.rules[2].condition.update({"$inSegment": "tier_growth"})
    return [office], policies, queues, agents, rules


def _create_missing(creations: list[tuple[Any, Any]]) -> int:
    """Make each (create call, request), skipping what exists; how many were created."""
    created = 0
    for call, request in creations:
        try:
            call(request)
            created += 1
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
    return created


def load_routing_demo(settings: Settings) -> str:
    """Create the first team's routing (skipping what exists), put two agents online and
    describe it."""
    calendars, policies, queues, agents, rules = routing_demo_configuration()
    channel = open_channel(settings.routing_address, settings, deadline_seconds=30)
    stub = routing_pb2_grpc.RoutingServiceStub(channel)
    creations: list[tuple[Any, Any]] = [
        *((stub.CreateCalendar, rpb.CreateCalendarRequest(calendar=c)) for c in calendars),
        *((stub.CreateSlaPolicy, rpb.CreateSlaPolicyRequest(policy=p)) for p in policies),
        *((stub.CreateQueue, rpb.CreateQueueRequest(queue=q)) for q in queues),
        *((stub.CreateAgent, rpb.CreateAgentRequest(agent=a)) for a in agents),
    ]
    created = _create_missing(creations)
    current = stub.GetRoutingRules(rpb.GetRoutingRulesRequest()).rules
    if not current.revision:
        current = stub.UpdateRoutingRules(
            rpb.UpdateRoutingRulesRequest(rules=rules, actor="switchboard demo")
        ).rules
    for agent_id in ("ana.silva", "ben.okafor"):
        stub.SetAgentStatus(
            rpb.SetAgentStatusRequest(agent_id=agent_id, status=rpb.AGENT_STATUS_ONLINE)
        )
    channel.close()
    return (
        f"routing: {created} calendars, policies, queues and agents created; "
        f"rules at revision {current.revision} ({len(current.rules)} rules and a default); "
        "ana.silva and ben.okafor online"
    )


def widgets_demo_configuration() -> tuple[
    rpb.SlaPolicy, list[wpb.Persona], list[wpb.EscalationPolicy], wpb.WidgetPolicies
]:
    """The widget issue's cases on the first team: Enterprise chats with a detailed persona
    that hands over fast; Starter is bot-first and offered email with 24 business hours;
    at-risk customers are handed to people at once; anonymous visitors get a default."""
    email_policy = rpb.SlaPolicy(
        policy_id="email-24h",
        display_name="Email: 24 business hours",
        calendar_id="berlin-office",
        first_response=_target(24 * 60),
        pause_states=[rpb.CONVERSATION_STATE_WAITING_ON_CUSTOMER],
    )
    personas = [
        wpb.Persona(
            persona_id=persona_id,
            display_name=name,
            tone=tone,
            answer_length=length,
            greeting=greeting,
            languages=["en", "de"],
        )
        for persona_id, name, tone, length, greeting in (
            (
                "enterprise-concierge",
                "Ada, your support concierge",
                wpb.TONE_FORMAL,
                wpb.ANSWER_LENGTH_DETAILED,
                "Good to see you, {first_name}. How can we help {company_name} today?",
            ),
            (
                "growth-guide",
                "Sam from support",
                wpb.TONE_FRIENDLY,
                wpb.ANSWER_LENGTH_CONCISE,
                "Hi {first_name}! What can we do for you?",
            ),
            (
                "starter-bot",
                "Switchboard helper",
                wpb.TONE_PLAYFUL,
                wpb.ANSWER_LENGTH_CONCISE,
                "Hey {first_name}, ask me anything.",
            ),
            (
                "visitor-bot",
                "Switchboard helper",
                wpb.TONE_FRIENDLY,
                wpb.ANSWER_LENGTH_CONCISE,
                "Hi {first_name}! How can we help?",
            ),
        )
    ]
    keywords = ["cancel", "refund", "legal", "outage"]
    escalations = [
        wpb.EscalationPolicy(
            policy_id="enterprise-fast",
            display_name="Enterprise: a person after one bot answer",
            max_bot_turns=1,
            min_sentiment=-0.2,
            keywords=keywords,
            on_human_request=True,
            queue_id="senior",
            handover_channel=rpb.CHANNEL_CHAT,
            sla_policy_id="enterprise-30m",
            after_hours=wpb.AFTER_HOURS_CALLBACK,
        ),
        wpb.EscalationPolicy(
            policy_id="growth-standard",
            display_name="Growth: three bot turns",
            max_bot_turns=3,
            min_sentiment=-0.4,
            keywords=keywords,
            on_human_request=True,
            queue_id="priority",
            handover_channel=rpb.CHANNEL_CHAT,
            sla_policy_id="growth-2h",
            after_hours=wpb.AFTER_HOURS_EMAIL,
            after_hours_sla_policy_id="email-24h",
        ),
        wpb.EscalationPolicy(
            policy_id="starter-email",
            display_name="Starter: bot first, then email",
            max_bot_turns=5,
            min_confidence=0.3,
            on_human_request=True,
            queue_id="general",
            handover_channel=rpb.CHANNEL_EMAIL,
            sla_policy_id="email-24h",
        ),
        wpb.EscalationPolicy(
            policy_id="at-risk-now",
            display_name="At risk: a person at once",
            immediately=True,
            queue_id="priority",
            handover_channel=rpb.CHANNEL_CHAT,
            sla_policy_id="enterprise-30m",
            after_hours=wpb.AFTER_HOURS_CALLBACK,
        ),
    ]
    policies = wpb.WidgetPolicies(
        assignments=[
            wpb.WidgetAssignment(segment_id="at_risk", escalation_policy_id="at-risk-now"),
            wpb.WidgetAssignment(
                segment_id="tier_enterprise",
                persona_id="enterprise-concierge",
                escalation_policy_id="enterprise-fast",
            ),
            wpb.WidgetAssignment(
                segment_id="tier_growth",
                persona_id="growth-guide",
                escalation_policy_id="growth-standard",
            ),
            wpb.WidgetAssignment(
                segment_id="tier_starter",
                persona_id="starter-bot",
                escalation_policy_id="starter-email",
            ),
        ],
        default_persona_id="visitor-bot",
        default_escalation_policy_id="starter-email",
    )
    return email_policy, personas, escalations, policies


def load_widgets_demo(settings: Settings) -> str:
    """Create the widget personas, escalation policies and their assignment (skipping what
    exists) and describe them."""
    email_policy, personas, escalations, policies = widgets_demo_configuration()
    channel = open_channel(settings.routing_address, settings, deadline_seconds=30)
    routing = routing_pb2_grpc.RoutingServiceStub(channel)
    widgets = widgets_pb2_grpc.WidgetServiceStub(channel)
    creations: list[tuple[Any, Any]] = [
        (routing.CreateSlaPolicy, rpb.CreateSlaPolicyRequest(policy=email_policy)),
        *((widgets.CreatePersona, wpb.CreatePersonaRequest(persona=p)) for p in personas),
        *(
            (widgets.CreateEscalationPolicy, wpb.CreateEscalationPolicyRequest(policy=p))
            for p in escalations
        ),
    ]
    created = _create_missing(creations)
    current = widgets.GetWidgetPolicies(wpb.GetWidgetPoliciesRequest()).policies
    if not current.revision:
        current = widgets.UpdateWidgetPolicies(
            wpb.UpdateWidgetPoliciesRequest(policies=policies, actor="switchboard demo")
        ).policies
    channel.close()
    return (
        f"widgets: {created} personas, escalation policies and SLA policies created; "
        f"policies at revision {current.revision} ({len(current.assignments)} lines)"
    )
