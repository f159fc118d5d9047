"""Builders for the widget integration tests: the support team of the issue, set up through
the services' gRPC APIs as an admin console would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from switchboard.routing.v1 import routing_pb2 as pb
from switchboard.routing.v1 import routing_pb2_grpc, widgets_pb2_grpc
from switchboard.routing.v1 import widgets_pb2 as wpb

from services.core.clock import Clock, utc_now
from services.core.server import RunningServer, create_server
from services.core.settings import Settings
from services.routing.server import routing_specs
from tests.integration.routing_setup import (
    Profiles,
    Routing,
    Segments,
    action,
    create_calendar,
    create_customer,
    create_policy,
    create_queue,
    create_segment,
    create_tier_segments,
    office_hours,
    set_rules,
    sla_policy,
    struct,
)
from tests.support.access import gate, keyed_channel

Widgets = widgets_pb2_grpc.WidgetServiceStub


def persona(persona_id: str, **fields: Any) -> wpb.Persona:
    defaults: dict[str, Any] = {
        "display_name": f"{persona_id.title()} from Acme support",
        "tone": wpb.TONE_FRIENDLY,
        "greeting": "Hi {first_name}, how can we help?",
        "languages": ["en"],
    }
    return wpb.Persona(persona_id=persona_id, **(defaults | fields))


def escalation(policy_id: str, queue_id: str = "billing", **fields: Any) -> wpb.EscalationPolicy:
    return wpb.EscalationPolicy(
        policy_id=policy_id,
        display_name=policy_id.replace("_", " ").capitalize(),
        queue_id=queue_id,
        on_human_request=True,
        **fields,
    )


def line(
    segment_id: str, persona_id: str = "", escalation_policy_id: str = ""
) -> wpb.WidgetAssignment:
    return wpb.WidgetAssignment(
        segment_id=segment_id, persona_id=persona_id, escalation_policy_id=escalation_policy_id
    )


def set_up_team(
    routing: Routing, segments: Segments, profiles: Profiles, widgets: Widgets
) -> Widgets:
    """Tiers by seats and an at-risk overlay by health; Enterprise chats with a detailed
    persona that hands over fast, Starter is bot-first and offered email with 24 business
    hours; at-risk customers are handed over at once; anonymous visitors get a default."""
    create_tier_segments(segments)
    # A visitor with no health score is not at risk: missing reads as 0 next to a number.
    create_segment(segments, "at_risk", {"health_score": {"$exists": True, "$lt": 40}})

    create_calendar(routing, office_hours("berlin_office"))
    create_policy(routing, sla_policy("enterprise_30m", first_response=timedelta(minutes=30)))
    create_policy(
        routing,
        sla_policy(
            "growth_2h", first_response=timedelta(hours=2), business_hours_of="berlin_office"
        ),
    )
    create_policy(
        routing,
        sla_policy(
            "email_24h", first_response=timedelta(hours=24), business_hours_of="berlin_office"
        ),
    )
    create_queue(routing, "senior", calendar_id="berlin_office")
    create_queue(routing, "priority", calendar_id="berlin_office")
    create_queue(routing, "email", calendar_id="berlin_office")
    set_rules(routing, [], default=action("email", bot_first=True))

    create_customer(
        profiles,
        "acme",
        seats=120,
        health_score=85,
        display_name="Ada Lovelace",
        company_name="Acme",
    )
    create_customer(profiles, "bloom", seats=12, health_score=70, display_name="Ben")
    create_customer(profiles, "cleo", seats=3, health_score=90, company_name="Cleo Ltd")
    create_customer(
        profiles,
        "globex",
        seats=200,
        health_score=20,
        display_name="Grace Hopper",
        company_name="Globex",
        external_ids={"billing": "cus_globex"},
    )

    for created in (
        persona(
            "detailed",
            greeting="Good morning {first_name}, welcome back to {company_name} support.",
            tone=wpb.TONE_FORMAL,
            answer_length=wpb.ANSWER_LENGTH_DETAILED,
        ),
        persona("friendly", greeting="Hi {first_name}! What can we do for you?"),
        persona(
            "starter_bot",
            greeting="Hello from {company_name}'s helper, {first_name}.",
            tone=wpb.TONE_PLAYFUL,
            emoji=wpb.EMOJI_USE_SPARING,
        ),
        persona("visitor", greeting="Hi {first_name}! How can we help?"),
    ):
        widgets.CreatePersona(wpb.CreatePersonaRequest(persona=created))
    for created_policy in (
        escalation(
            "enterprise_fast",
            "senior",
            max_bot_turns=1,
            keywords=["cancel", "refund", "legal", "outage"],
            sla_policy_id="enterprise_30m",
            after_hours=wpb.AFTER_HOURS_CALLBACK,
        ),
        escalation(
            "growth_standard",
            "priority",
            max_bot_turns=3,
            min_sentiment=-0.3,
            sla_policy_id="growth_2h",
        ),
        escalation(
            "starter_email",
            "email",
            max_bot_turns=5,
            min_confidence=0.4,
            handover_channel=pb.CHANNEL_EMAIL,
            sla_policy_id="email_24h",
        ),
        escalation("at_risk_now", "senior", immediately=True, sla_policy_id="enterprise_30m"),
        escalation("visitor_email", "email", handover_channel=pb.CHANNEL_EMAIL),
    ):
        widgets.CreateEscalationPolicy(wpb.CreateEscalationPolicyRequest(policy=created_policy))
    widgets.UpdateWidgetPolicies(
        wpb.UpdateWidgetPoliciesRequest(
            policies=wpb.WidgetPolicies(
                assignments=[
                    line("at_risk", escalation_policy_id="at_risk_now"),
                    line("tier_enterprise", "detailed", "enterprise_fast"),
                    line("tier_growth", "friendly", "growth_standard"),
                    line("tier_starter", "starter_bot", "starter_email"),
                ],
                default_persona_id="visitor",
                default_escalation_policy_id="visitor_email",
            ),
            actor="lead@example.com",
        )
    )
    return widgets


def config_of(widgets: Widgets, **visitor: object) -> wpb.GetWidgetConfigResponse:
    attributes = visitor.pop("attributes", None)
    message = wpb.Visitor(**visitor)  # type: ignore[arg-type]
    if attributes is not None:
        message.attributes.CopyFrom(struct(attributes))  # type: ignore[arg-type]
    return widgets.GetWidgetConfig(wpb.GetWidgetConfigRequest(visitor=message))


def serve_widgets(
    engine: Engine,
    profiles_server: RunningServer,
    segments_server: RunningServer,
    redis_url: str,
    api_key: str,
    *,
    clock: Clock = utc_now,
    refresh_seconds: float = 0.0,
    edge: bool = False,
) -> RunningServer:
    """A routing server (and with ``edge`` its widget port) keeping widget answers in
    ``redis_url``, re-reading customers and segments after ``refresh_seconds``."""
    settings = Settings(
        profiles_address=f"127.0.0.1:{profiles_server.port}",
        segments_address=f"127.0.0.1:{segments_server.port}",
        redis_url=redis_url,
        segment_refresh_seconds=refresh_seconds,
        customer_refresh_seconds=refresh_seconds,
        api_key=api_key,
    )
    return create_server(
        routing_specs(engine, settings, clock),
        address="127.0.0.1:0",
        gate=gate(engine),
        max_workers=8,
        edge_address="127.0.0.1:0" if edge else None,
    )


@contextmanager
def team_served(
    engine: Engine,
    profiles_server: RunningServer,
    segments_server: RunningServer,
    redis_url: str,
    api_key: str,
    team: tuple[Segments, Profiles],
    **serving: Any,
) -> Iterator[RunningServer]:
    """``serve_widgets`` (``serving`` are its keyword arguments) with the team set up through
    its main port; stopped at the end."""
    running = serve_widgets(engine, profiles_server, segments_server, redis_url, api_key, **serving)
    try:
        set_up_team_on(running, api_key, *team)
        yield running
    finally:
        running.stop(grace=1)


def set_up_team_on(
    running: RunningServer, api_key: str, segments: Segments, profiles: Profiles
) -> None:
    """``set_up_team`` through ``running``'s main port, as an admin."""
    with keyed_channel(f"127.0.0.1:{running.port}", api_key) as channel:
        set_up_team(
            routing_pb2_grpc.RoutingServiceStub(channel),
            segments,
            profiles,
            widgets_pb2_grpc.WidgetServiceStub(channel),
        )
