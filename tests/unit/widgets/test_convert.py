"""What a widget client or admin sends and reads back: personas, escalation policies and the
assignment list survive the wire format, unset enums mean the contract's defaults, and an
unreadable visitor is refused with the path of every bad field."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import grpc
import pytest
from switchboard.routing.v1 import routing_pb2 as pb
from switchboard.routing.v1 import widgets_pb2 as wpb

from services.core.errors import InvalidArgument
from services.routing.domain import Channel
from services.widgets.convert import (
    bot_turn_from_proto,
    cached_response,
    escalation_from_proto,
    escalation_to_proto,
    offer_to_proto,
    persona_from_proto,
    persona_to_proto,
    policies_from_proto,
    policies_to_proto,
    reason_to_proto,
    visitor_from_proto,
    widget_config_to_proto,
)
from services.widgets.domain import (
    AfterHours,
    AnswerLength,
    BotTurn,
    EmojiUse,
    EscalationPolicy,
    HandoverReason,
    Offer,
    Persona,
    Tone,
    Visitor,
    WidgetAssignment,
    WidgetConfig,
    WidgetPolicies,
)

CREATED = datetime(2025, 3, 3, 8, 15, 30, 123456, tzinfo=UTC)
UPDATED = datetime(2025, 3, 4, 17, 0, tzinfo=UTC)


def field_paths(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    assert error.value.code is grpc.StatusCode.INVALID_ARGUMENT
    return [violation.field for violation in error.value.violations]


CONCIERGE = Persona(
    persona_id="concierge",
    display_name="Ada from Acme support",
    tone=Tone.PLAYFUL,
    answer_length=AnswerLength.DETAILED,
    emoji=EmojiUse.SPARING,
    greeting="Hi {first_name}, welcome back to {company_name}!",
    languages=("en", "de"),
    guardrails="Never promise refunds.",
    revision=4,
)
SAVE_DESK = EscalationPolicy(
    policy_id="save-desk",
    display_name="Save desk",
    immediately=True,
    max_bot_turns=3,
    min_sentiment=-0.25,
    min_confidence=0.5,
    keywords=("cancel", "refund"),
    on_human_request=False,
    queue_id="retention",
    handover_channel=Channel.EMAIL,
    sla_policy_id="gold",
    after_hours=AfterHours.CALLBACK,
    after_hours_sla_policy_id="gold-after-hours",
    revision=2,
)
POLICIES = WidgetPolicies(
    assignments=(
        WidgetAssignment("at-risk", escalation_policy_id="save-desk"),
        WidgetAssignment("enterprise", persona_id="concierge", escalation_policy_id="vip"),
        WidgetAssignment("german", persona_id="berater"),
    ),
    default_persona_id="helper",
    default_escalation_policy_id="standard",
    revision=7,
    actor="ops@example.com",
)


# ---- round trips -----------------------------------------------------------------------------


def test_a_persona_reads_back_with_every_field_and_its_expected_revision() -> None:
    assert persona_from_proto(persona_to_proto(CONCIERGE)) == CONCIERGE


def test_an_escalation_policy_reads_back_with_every_field() -> None:
    assert escalation_from_proto(escalation_to_proto(SAVE_DESK)) == SAVE_DESK


def test_the_assignment_list_reads_back_in_order_with_its_revision_and_actor() -> None:
    assert policies_from_proto(policies_to_proto(POLICIES)) == POLICIES


def test_stored_times_are_sent_but_a_request_cannot_set_them() -> None:
    stored = replace(CONCIERGE, create_time=CREATED, update_time=UPDATED)
    message = persona_to_proto(stored)
    assert message.create_time.ToDatetime(tzinfo=UTC) == CREATED
    assert message.update_time.ToDatetime(tzinfo=UTC) == UPDATED
    assert persona_from_proto(message) == CONCIERGE

    policy_message = escalation_to_proto(replace(SAVE_DESK, create_time=CREATED))
    assert policy_message.HasField("create_time")
    assert escalation_from_proto(policy_message).create_time is None

    policies_message = policies_to_proto(replace(POLICIES, update_time=UPDATED))
    assert policies_message.update_time.ToDatetime(tzinfo=UTC) == UPDATED
    assert policies_from_proto(policies_message) == POLICIES


def test_unstored_resources_leave_their_times_unset() -> None:
    assert not persona_to_proto(CONCIERGE).HasField("create_time")
    assert not escalation_to_proto(SAVE_DESK).HasField("update_time")
    assert not policies_to_proto(POLICIES).HasField("update_time")


def test_a_bot_turn_carries_every_field() -> None:
    message = wpb.BotTurn(
        turn_count=3,
        sentiment=-0.5,
        confidence=0.0,
        message="I want a refund",
        asked_for_human=True,
    )
    assert bot_turn_from_proto(message) == BotTurn(3, -0.5, 0.0, "I want a refund", True)


# ---- defaults --------------------------------------------------------------------------------


def test_a_persona_with_unspecified_enums_is_friendly_concise_and_without_emoji() -> None:
    persona = persona_from_proto(wpb.Persona(persona_id="helper"))
    assert (persona.tone, persona.answer_length, persona.emoji) == (
        Tone.FRIENDLY,
        AnswerLength.CONCISE,
        EmojiUse.NONE,
    )


def test_a_policy_with_unspecified_enums_hands_over_to_chat_and_emails_after_hours() -> None:
    policy = escalation_from_proto(wpb.EscalationPolicy(policy_id="standard"))
    assert (policy.handover_channel, policy.after_hours) == (Channel.CHAT, AfterHours.EMAIL)


def test_unset_thresholds_stay_none_while_zero_is_a_threshold() -> None:
    policy = escalation_from_proto(wpb.EscalationPolicy(policy_id="standard"))
    assert (policy.min_sentiment, policy.min_confidence) == (None, None)
    message = escalation_to_proto(replace(SAVE_DESK, min_sentiment=None, min_confidence=0.0))
    assert not message.HasField("min_sentiment")
    assert escalation_from_proto(message).min_confidence == 0.0


def test_an_unknown_sentiment_or_confidence_stays_none() -> None:
    turn = bot_turn_from_proto(wpb.BotTurn(turn_count=1))
    assert (turn.sentiment, turn.confidence) == (None, None)


def test_a_channel_no_handover_can_use_is_passed_on_for_logic_to_refuse() -> None:
    message = wpb.EscalationPolicy(policy_id="standard", handover_channel=pb.CHANNEL_SMS)
    assert escalation_from_proto(message).handover_channel is Channel.SMS


# ---- refusals --------------------------------------------------------------------------------


def test_every_enum_value_from_a_newer_client_is_refused_at_once() -> None:
    persona = wpb.Persona(persona_id="helper", tone=9, answer_length=9, emoji=9)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as raised:
        persona_from_proto(persona)
    assert field_paths(raised) == ["persona.tone", "persona.answer_length", "persona.emoji"]
    assert "choose FORMAL, FRIENDLY or PLAYFUL" in raised.value.violations[0].description

    policy = wpb.EscalationPolicy(policy_id="standard", handover_channel=42, after_hours=42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as raised:
        escalation_from_proto(policy)
    assert field_paths(raised) == ["policy.handover_channel", "policy.after_hours"]


@pytest.mark.parametrize("external_id", ["cus_123", "billing:", ":cus_123", ":"])
def test_an_external_id_that_is_not_system_colon_id_is_refused(external_id: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        visitor_from_proto(wpb.Visitor(external_id=external_id))
    assert field_paths(raised) == ["visitor.external_id"]
    assert raised.value.violations[0].description == "must be system:id, e.g. billing:cus_123"


def test_an_external_id_splits_at_the_first_colon() -> None:
    visitor = visitor_from_proto(wpb.Visitor(external_id="crm:acct:42"))
    assert (visitor.external_system, visitor.external_id) == ("crm", "acct:42")


def test_a_visitor_with_both_ids_is_refused() -> None:
    with pytest.raises(InvalidArgument) as raised:
        visitor_from_proto(wpb.Visitor(customer_id="c-1", external_id="billing:cus_123"))
    assert field_paths(raised) == ["visitor"]


def test_more_than_50_attributes_are_refused_and_50_are_read() -> None:
    fifty = wpb.Visitor()
    fifty.attributes.update({f"key_{index}": index for index in range(50)})
    assert len(visitor_from_proto(fifty).attributes) == 50

    fifty.attributes["one_more"] = True
    with pytest.raises(InvalidArgument) as raised:
        visitor_from_proto(fifty)
    assert field_paths(raised) == ["visitor.attributes"]


def test_greeting_values_for_no_placeholder_are_each_named() -> None:
    message = wpb.Visitor(
        greeting_values={"first_name": "Ana", "last_name": "Silva", "email": "ana@example.com"}
    )
    with pytest.raises(InvalidArgument) as raised:
        visitor_from_proto(message)
    assert field_paths(raised) == [
        "visitor.greeting_values['email']",
        "visitor.greeting_values['last_name']",
    ]


def test_every_problem_of_a_visitor_is_reported_at_once() -> None:
    message = wpb.Visitor(customer_id="c-1", external_id="cus_123", greeting_values={"x": "y"})
    message.attributes.update({f"key_{index}": index for index in range(51)})
    with pytest.raises(InvalidArgument) as raised:
        visitor_from_proto(message)
    assert field_paths(raised) == [
        "visitor",
        "visitor.external_id",
        "visitor.attributes",
        "visitor.greeting_values['x']",
    ]


def test_a_known_visitor_arrives_with_attributes_and_greeting_values() -> None:
    message = wpb.Visitor(
        external_id="billing:cus_123",
        greeting_values={"first_name": "Ana", "company_name": "Acme"},
    )
    message.attributes.update({"country": "DE", "seats": 12})
    assert visitor_from_proto(message) == Visitor(
        external_system="billing",
        external_id="cus_123",
        attributes={"country": "DE", "seats": 12},
        greeting_values={"first_name": "Ana", "company_name": "Acme"},
    )


# ---- what widgets read -----------------------------------------------------------------------


def test_a_widget_config_carries_the_rendered_greeting_and_every_field() -> None:
    rendered = replace(CONCIERGE, greeting="Hi Ana, welcome back to Acme!")
    config = WidgetConfig(
        persona=rendered,
        escalation=SAVE_DESK,
        offer=Offer.BOT_FIRST,
        handover_offer=Offer.CALLBACK,
        expectation="a specialist usually replies within 30 minutes",
        queue_open=False,
        policies_revision=7,
    )
    message = widget_config_to_proto(config)
    assert message.persona.greeting == "Hi Ana, welcome back to Acme!"
    assert persona_from_proto(message.persona) == rendered
    assert escalation_from_proto(message.escalation) == SAVE_DESK
    assert (message.offer, message.handover_offer) == (wpb.OFFER_BOT_FIRST, wpb.OFFER_CALLBACK)
    assert message.expectation == "a specialist usually replies within 30 minutes"
    assert (message.queue_open, message.policies_revision) == (False, 7)


def test_every_offer_and_handover_reason_has_its_own_wire_value() -> None:
    offers = {offer_to_proto(offer) for offer in Offer}
    reasons = {reason_to_proto(reason) for reason in HandoverReason}
    assert len(offers) == len(Offer) and wpb.OFFER_UNSPECIFIED not in offers
    assert len(reasons) == len(HandoverReason)
    assert wpb.HANDOVER_REASON_UNSPECIFIED not in reasons
    assert offer_to_proto(Offer.LIVE_CHAT) == wpb.OFFER_LIVE_CHAT
    assert reason_to_proto(HandoverReason.KEYWORD) == wpb.HANDOVER_REASON_KEYWORD


@pytest.mark.parametrize("size", [0, 127, 128, 16_384, 300_000])
def test_a_cached_answer_is_sent_as_the_response_it_stands_for(size: int) -> None:
    config = wpb.WidgetConfig(expectation="x" * size)
    stored = config.SerializeToString()

    response = wpb.GetWidgetConfigResponse.FromString(cached_response(stored))

    assert response == wpb.GetWidgetConfigResponse(config=config, cached=True)
