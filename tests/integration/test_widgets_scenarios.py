"""Chat widgets end to end through gRPC: the Enterprise, Growth, Starter, at-risk and
anonymous visitors of the issue, after hours, handing over, and answers that follow policy
changes at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.routing.v1 import routing_pb2 as pb
from switchboard.routing.v1 import widgets_pb2 as wpb

from services.access.keys import KeyStore
from tests.integration.conftest import ManualClock
from tests.integration.routing_setup import MONDAY, Profiles, Routing, Segments
from tests.integration.widgets_setup import Widgets, config_of, set_up_team


@pytest.fixture
def team(
    routing: Routing,
    segments: Segments,
    profiles: Profiles,
    widgets: Widgets,
    segments_clock: ManualClock,
) -> Widgets:
    segments_clock.now = MONDAY
    return set_up_team(routing, segments, profiles, widgets)


def test_enterprise_customer_gets_the_detailed_persona_that_hands_over_fast(team: Widgets) -> None:
    config = config_of(team, customer_id="acme").config

    assert config.persona.persona_id == "detailed"
    assert config.persona.answer_length == wpb.ANSWER_LENGTH_DETAILED
    assert config.persona.greeting == "Good morning Ada, welcome back to Acme support."
    assert config.escalation.policy_id == "enterprise_fast"
    assert (config.offer, config.handover_offer) == (wpb.OFFER_BOT_FIRST, wpb.OFFER_LIVE_CHAT)
    assert config.queue_open
    assert config.expectation == (
        "our assistant answers right away; if you need more, "
        "a specialist usually replies within 30 minutes"
    )
    assert config.policies_revision == 1


def test_growth_customer_is_promised_two_business_hours(team: Widgets) -> None:
    config = config_of(team, customer_id="bloom").config

    assert (config.persona.persona_id, config.escalation.policy_id) == (
        "friendly",
        "growth_standard",
    )
    assert config.persona.greeting == "Hi Ben! What can we do for you?"
    assert config.expectation.endswith("a specialist usually replies within 2 business hours")


def test_starter_customer_is_served_bot_first_and_offered_email_within_24_business_hours(
    team: Widgets,
) -> None:
    config = config_of(team, customer_id="cleo").config

    assert config.persona.persona_id == "starter_bot"
    # No first name on record: the greeting reads as if it never asked for one.
    assert config.persona.greeting == "Hello from Cleo Ltd's helper."
    assert (config.offer, config.handover_offer) == (wpb.OFFER_BOT_FIRST, wpb.OFFER_EMAIL)
    assert config.expectation == (
        "our assistant answers right away; if you need more, "
        "we will email you within 24 business hours"
    )


def test_at_risk_enterprise_customer_is_handed_over_at_once_but_keeps_the_tier_persona(
    team: Widgets,
) -> None:
    config = config_of(team, external_id="billing:cus_globex").config

    assert config.persona.persona_id == "detailed"
    assert config.persona.greeting == "Good morning Grace, welcome back to Globex support."
    assert config.escalation.policy_id == "at_risk_now"
    assert config.offer == wpb.OFFER_LIVE_CHAT
    assert config.expectation == "a specialist usually replies within 30 minutes"


def test_anonymous_and_unknown_visitors_get_the_default_and_nothing_breaks(
    team: Widgets,
) -> None:
    anonymous = config_of(team, attributes={"country": "DE"}).config
    unknown = config_of(team, customer_id="nobody").config
    unknown_external = config_of(team, external_id="billing:cus_nobody").config

    for config in (anonymous, unknown, unknown_external):
        assert (config.persona.persona_id, config.escalation.policy_id) == (
            "visitor",
            "visitor_email",
        )
        assert config.persona.greeting == "Hi! How can we help?"
        assert config.expectation == (
            "our assistant answers right away; "
            "if you need more, we will email you as soon as we can"
        )


def test_a_greeting_says_nothing_the_widget_did_not_send_or_the_greeting_needs(
    team: Widgets,
) -> None:
    config = config_of(team, customer_id="acme", greeting_values={"first_name": "Ada-Marie"})

    assert config.config.persona.greeting == "Good morning Ada-Marie, welcome back to Acme support."
    assert not config.cached
    serialized = config.SerializeToString()
    for private in (b"Lovelace", b"120", b"health"):
        assert private not in serialized


def test_second_ask_is_served_from_the_cache_and_a_policy_change_is_seen_at_once(
    team: Widgets,
) -> None:
    first = config_of(team, customer_id="acme")
    second = config_of(team, customer_id="acme")
    assert (first.cached, second.cached) == (False, True)
    assert second.config == first.config

    stored = team.GetPersona(wpb.GetPersonaRequest(persona_id="detailed")).persona
    stored.greeting = "Welcome, {first_name}."
    team.UpdatePersona(wpb.UpdatePersonaRequest(persona=stored))

    after = config_of(team, customer_id="acme")
    assert not after.cached
    assert after.config.persona.greeting == "Welcome, Ada."


def test_after_hours_the_enterprise_handover_offers_a_call_back(
    team: Widgets, segments_clock: ManualClock
) -> None:
    during = config_of(team, customer_id="acme").config
    segments_clock.advance(timedelta(hours=9))  # 19:00 in Berlin

    after = config_of(team, customer_id="acme")

    assert during.handover_offer == wpb.OFFER_LIVE_CHAT
    assert not after.cached, "the answer cached during office hours ended at closing"
    assert not after.config.queue_open
    assert after.config.handover_offer == wpb.OFFER_CALLBACK
    assert after.config.expectation.endswith("we will call you back within 30 minutes")


def test_keyword_hands_an_enterprise_chat_to_the_senior_queue(
    team: Widgets, routing: Routing, engine: Engine
) -> None:
    started = datetime.now(UTC)
    calm = team.EvaluateEscalation(
        wpb.EvaluateEscalationRequest(
            visitor=wpb.Visitor(customer_id="acme"),
            turn=wpb.BotTurn(turn_count=0, message="how do I export a report?", confidence=0.9),
            conversation_id="acme-chat-1",
        )
    )
    upset = team.EvaluateEscalation(
        wpb.EvaluateEscalationRequest(
            visitor=wpb.Visitor(customer_id="acme"),
            turn=wpb.BotTurn(turn_count=0, message="I want a REFUND now"),
            conversation_id="acme-chat-1",
        )
    )

    assert not calm.hand_over and not calm.HasField("decision")
    assert upset.hand_over
    assert list(upset.reasons) == [wpb.HANDOVER_REASON_KEYWORD]
    assert upset.explanation == "the visitor wrote 'refund'"
    assert (upset.queue_id, upset.decision.queue_id) == ("senior", "senior")
    assert upset.decision.sla_policy_id == "enterprise_30m"
    assert not upset.decision.bot_first
    conversation = routing.GetConversation(
        pb.GetConversationRequest(conversation_id="acme-chat-1")
    ).conversation
    assert conversation.state == pb.CONVERSATION_STATE_QUEUED
    # Only the turn that routed the conversation changed something: it alone is audited.
    audited = [entry.method.rsplit("/", 1)[-1] for entry in KeyStore(engine).audit(since=started)]
    assert audited == ["EvaluateEscalation"]


def test_a_chat_routed_to_the_bot_is_escalated_when_the_starter_bot_gives_up(
    team: Widgets, routing: Routing
) -> None:
    routed = routing.RouteConversation(
        pb.RouteConversationRequest(
            conversation_id="cleo-chat", customer_id="cleo", channel=pb.CHANNEL_CHAT
        )
    )
    assert routed.decision.bot_first

    verdict = team.EvaluateEscalation(
        wpb.EvaluateEscalationRequest(
            visitor=wpb.Visitor(customer_id="cleo"),
            turn=wpb.BotTurn(turn_count=2, confidence=0.2),
            conversation_id="cleo-chat",
        )
    )

    assert verdict.hand_over
    assert list(verdict.reasons) == [wpb.HANDOVER_REASON_LOW_CONFIDENCE]
    assert verdict.handover_offer == wpb.OFFER_EMAIL
    conversation = routing.GetConversation(
        pb.GetConversationRequest(conversation_id="cleo-chat")
    ).conversation
    assert conversation.state == pb.CONVERSATION_STATE_QUEUED


def test_a_customer_who_changes_tier_gets_the_new_answer_without_a_worker(
    team: Widgets, profiles: Profiles
) -> None:
    assert config_of(team, customer_id="bloom").config.persona.persona_id == "friendly"
    assert config_of(team, customer_id="bloom").cached

    profiles.UpdateCustomer(
        ppb.UpdateCustomerRequest(
            customer=ppb.Customer(customer_id="bloom", seats=80),
            update_mask={"paths": ["seats"]},
        )
    )

    answer = config_of(team, customer_id="bloom")
    assert not answer.cached
    assert answer.config.persona.persona_id == "detailed"


def test_a_visitor_named_by_external_id_shares_the_customers_cached_answer(
    team: Widgets,
) -> None:
    by_id = config_of(team, customer_id="globex")
    by_external_id = config_of(team, external_id="billing:cus_globex")

    assert not by_id.cached
    assert by_external_id.cached
    assert by_external_id.config == by_id.config
