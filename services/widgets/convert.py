"""Translation between widget protobuf messages and domain values.

Reading a request only parses: enum numbers this server does not know (a newer client's),
external ids that are not "system:id" and greeting values for no placeholder are reported
here, every problem of a message at once, with its path in the request. Whether the values
make sense (ids, lengths, ranges, references) is services/widgets/logic.py's to judge.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import TypeVar

from switchboard.routing.v1 import routing_pb2 as pb
from switchboard.routing.v1 import widgets_pb2 as wpb

from services.core.errors import FieldViolation, InvalidArgument
from services.core.validation import too_many
from services.routing.convert import (
    CHANNELS,
    CHANNELS_FROM_PROTO,
    inverse,
    optional_timestamp,
)
from services.routing.domain import Channel
from services.segments.convert import struct_to_dict
from services.segments.logic import normalize_rule
from services.segments.rules import MAX_DOCUMENT_BYTES
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
from services.widgets.logic import MAX_ASSIGNMENTS, PLACEHOLDERS

_Domain = TypeVar("_Domain", bound=Enum)
_Proto = TypeVar("_Proto", bound=int)

MAX_ATTRIBUTES = 50
# A widget fills two placeholders: a few unknown values are each named, a flood is refused
# before it is read.
MAX_GREETING_VALUES = 20


_TONES = {
    Tone.FORMAL: wpb.TONE_FORMAL,
    Tone.FRIENDLY: wpb.TONE_FRIENDLY,
    Tone.PLAYFUL: wpb.TONE_PLAYFUL,
}
_ANSWER_LENGTHS = {
    AnswerLength.CONCISE: wpb.ANSWER_LENGTH_CONCISE,
    AnswerLength.DETAILED: wpb.ANSWER_LENGTH_DETAILED,
}
_EMOJI_USES = {
    EmojiUse.NONE: wpb.EMOJI_USE_NONE,
    EmojiUse.SPARING: wpb.EMOJI_USE_SPARING,
    EmojiUse.FREQUENT: wpb.EMOJI_USE_FREQUENT,
}
_AFTER_HOURS = {
    AfterHours.EMAIL: wpb.AFTER_HOURS_EMAIL,
    AfterHours.CALLBACK: wpb.AFTER_HOURS_CALLBACK,
}
_OFFERS = {
    Offer.LIVE_CHAT: wpb.OFFER_LIVE_CHAT,
    Offer.BOT_FIRST: wpb.OFFER_BOT_FIRST,
    Offer.EMAIL: wpb.OFFER_EMAIL,
    Offer.CALLBACK: wpb.OFFER_CALLBACK,
}
_REASONS = {
    HandoverReason.IMMEDIATE: wpb.HANDOVER_REASON_IMMEDIATE,
    HandoverReason.BOT_TURNS: wpb.HANDOVER_REASON_BOT_TURNS,
    HandoverReason.LOW_SENTIMENT: wpb.HANDOVER_REASON_LOW_SENTIMENT,
    HandoverReason.LOW_CONFIDENCE: wpb.HANDOVER_REASON_LOW_CONFIDENCE,
    HandoverReason.KEYWORD: wpb.HANDOVER_REASON_KEYWORD,
    HandoverReason.ASKED_FOR_HUMAN: wpb.HANDOVER_REASON_ASKED_FOR_HUMAN,
}

# The contract documents what an unspecified value means, so the default comes first.
_TONES_FROM_PROTO = {wpb.TONE_UNSPECIFIED: Tone.FRIENDLY, **inverse(_TONES)}
_ANSWER_LENGTHS_FROM_PROTO = {
    wpb.ANSWER_LENGTH_UNSPECIFIED: AnswerLength.CONCISE,
    **inverse(_ANSWER_LENGTHS),
}
_EMOJI_USES_FROM_PROTO = {wpb.EMOJI_USE_UNSPECIFIED: EmojiUse.NONE, **inverse(_EMOJI_USES)}
_AFTER_HOURS_FROM_PROTO = {
    wpb.AFTER_HOURS_UNSPECIFIED: AfterHours.EMAIL,
    **inverse(_AFTER_HOURS),
}
# Every channel is read here; logic refuses the ones a handover cannot use.
_HANDOVER_CHANNELS_FROM_PROTO = {
    pb.CHANNEL_UNSPECIFIED: Channel.CHAT,
    **CHANNELS_FROM_PROTO,
}


def _read_enum(
    table: Mapping[_Proto, _Domain],
    value: _Proto,
    field: str,
    violations: list[FieldViolation],
) -> _Domain:
    known = table.get(value)
    if known is not None:
        return known
    default = next(iter(table.values()))
    names = [member.name for member in type(default)]
    choices = ", ".join(names[:-1]) + " or " + names[-1]
    violations.append(FieldViolation(field, f"unknown value {value}; choose {choices}"))
    # The message is refused, so the stand-in is never used.
    return default


def _raise_if_any(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations)


# ---- personas --------------------------------------------------------------------------------


def persona_from_proto(message: wpb.Persona) -> Persona:
    """The persona of a request's ``persona`` field; ``revision`` is the one the sender
    expects, and the output-only times are not read."""
    violations: list[FieldViolation] = []
    tone = _read_enum(_TONES_FROM_PROTO, message.tone, "persona.tone", violations)
    answer_length = _read_enum(
        _ANSWER_LENGTHS_FROM_PROTO, message.answer_length, "persona.answer_length", violations
    )
    emoji = _read_enum(_EMOJI_USES_FROM_PROTO, message.emoji, "persona.emoji", violations)
    _raise_if_any(violations)
    return Persona(
        persona_id=message.persona_id,
        display_name=message.display_name,
        tone=tone,
        answer_length=answer_length,
        emoji=emoji,
        greeting=message.greeting,
        languages=tuple(message.languages),
        guardrails=message.guardrails,
        revision=message.revision,
    )


def persona_to_proto(persona: Persona) -> wpb.Persona:
    return wpb.Persona(
        persona_id=persona.persona_id,
        display_name=persona.display_name,
        tone=_TONES[persona.tone],
        answer_length=_ANSWER_LENGTHS[persona.answer_length],
        emoji=_EMOJI_USES[persona.emoji],
        greeting=persona.greeting,
        languages=persona.languages,
        guardrails=persona.guardrails,
        revision=persona.revision,
        create_time=optional_timestamp(persona.create_time),
        update_time=optional_timestamp(persona.update_time),
    )


# ---- escalation policies ---------------------------------------------------------------------


def escalation_from_proto(message: wpb.EscalationPolicy) -> EscalationPolicy:
    """The policy of a request's ``policy`` field; an unset threshold is None (never hand
    over on it), and an unspecified channel is CHAT."""
    violations: list[FieldViolation] = []
    handover_channel = _read_enum(
        _HANDOVER_CHANNELS_FROM_PROTO,
        message.handover_channel,
        "policy.handover_channel",
        violations,
    )
    after_hours = _read_enum(
        _AFTER_HOURS_FROM_PROTO, message.after_hours, "policy.after_hours", violations
    )
    _raise_if_any(violations)
    return EscalationPolicy(
        policy_id=message.policy_id,
        display_name=message.display_name,
        immediately=message.immediately,
        max_bot_turns=message.max_bot_turns,
        min_sentiment=message.min_sentiment if message.HasField("min_sentiment") else None,
        min_confidence=message.min_confidence if message.HasField("min_confidence") else None,
        keywords=tuple(message.keywords),
        on_human_request=message.on_human_request,
        queue_id=message.queue_id,
        handover_channel=handover_channel,
        sla_policy_id=message.sla_policy_id,
        after_hours=after_hours,
        after_hours_sla_policy_id=message.after_hours_sla_policy_id,
        revision=message.revision,
    )


def escalation_to_proto(policy: EscalationPolicy) -> wpb.EscalationPolicy:
    return wpb.EscalationPolicy(
        policy_id=policy.policy_id,
        display_name=policy.display_name,
        immediately=policy.immediately,
        max_bot_turns=policy.max_bot_turns,
        min_sentiment=policy.min_sentiment,
        min_confidence=policy.min_confidence,
        keywords=policy.keywords,
        on_human_request=policy.on_human_request,
        queue_id=policy.queue_id,
        handover_channel=CHANNELS[policy.handover_channel],
        sla_policy_id=policy.sla_policy_id,
        after_hours=_AFTER_HOURS[policy.after_hours],
        after_hours_sla_policy_id=policy.after_hours_sla_policy_id,
        revision=policy.revision,
        create_time=optional_timestamp(policy.create_time),
        update_time=optional_timestamp(policy.update_time),
    )


# ---- widget policies -------------------------------------------------------------------------


def policies_from_proto(message: wpb.WidgetPolicies) -> WidgetPolicies:
    """The assignment list of a request's ``policies`` field; ``revision`` is the one the
    sender expects, and the output-only update time is not read."""
    too_many("policies.assignments", len(message.assignments), MAX_ASSIGNMENTS, "assignments")
    return WidgetPolicies(
        assignments=tuple(
            WidgetAssignment(
                segment_id=line.segment_id,
                persona_id=line.persona_id,
                escalation_policy_id=line.escalation_policy_id,
            )
            for line in message.assignments
        ),
        default_persona_id=message.default_persona_id,
        default_escalation_policy_id=message.default_escalation_policy_id,
        revision=message.revision,
        actor=message.actor,
    )


def policies_to_proto(policies: WidgetPolicies) -> wpb.WidgetPolicies:
    return wpb.WidgetPolicies(
        assignments=[
            wpb.WidgetAssignment(
                segment_id=line.segment_id,
                persona_id=line.persona_id,
                escalation_policy_id=line.escalation_policy_id,
            )
            for line in policies.assignments
        ],
        default_persona_id=policies.default_persona_id,
        default_escalation_policy_id=policies.default_escalation_policy_id,
        revision=policies.revision,
        update_time=optional_timestamp(policies.update_time),
        actor=policies.actor,
    )


# ---- visitors and bot turns ------------------------------------------------------------------


def bot_turn_from_proto(message: wpb.BotTurn) -> BotTurn:
    """The turn of a request's ``turn`` field; an unknown sentiment or confidence is None."""
    return BotTurn(
        turn_count=message.turn_count,
        sentiment=message.sentiment if message.HasField("sentiment") else None,
        confidence=message.confidence if message.HasField("confidence") else None,
        message=message.message,
        asked_for_human=message.asked_for_human,
    )


def visitor_from_proto(message: wpb.Visitor) -> Visitor:
    """The visitor of a request's ``visitor`` field; InvalidArgument names an external id
    that is not "system:id", both ids at once, too many attributes and every greeting value
    for no placeholder."""
    if not (message.external_id or message.greeting_values or message.HasField("attributes")):
        # The common call, a known customer by id, on the hottest path.
        return Visitor(customer_id=message.customer_id)
    too_many("visitor.greeting_values", len(message.greeting_values), MAX_GREETING_VALUES, "values")
    violations: list[FieldViolation] = []
    if message.customer_id and message.external_id:
        violations.append(FieldViolation("visitor", "set customer_id or external_id, not both"))
    external_system, external_id = "", ""
    if message.external_id:
        external_system, _, external_id = message.external_id.partition(":")
        if not (external_system and external_id):
            violations.append(
                FieldViolation("visitor.external_id", "must be system:id, e.g. billing:cus_123")
            )
    # Struct numbers are all doubles; whole ones read back as ints, as in routing requests.
    attributes = normalize_rule(
        struct_to_dict(message.attributes, "visitor.attributes", MAX_DOCUMENT_BYTES)
    )
    if len(attributes) > MAX_ATTRIBUTES:
        violations.append(FieldViolation("visitor.attributes", f"at most {MAX_ATTRIBUTES} keys"))
    violations.extend(
        FieldViolation(
            f"visitor.greeting_values[{key!r}]", "unknown; use first_name or company_name"
        )
        for key in sorted(message.greeting_values)
        if key not in PLACEHOLDERS
    )
    _raise_if_any(violations)
    return Visitor(
        customer_id=message.customer_id,
        external_system=external_system,
        external_id=external_id,
        attributes=attributes,
        greeting_values=dict(message.greeting_values),
    )


# ---- what widgets read -----------------------------------------------------------------------


def widget_config_to_proto(config: WidgetConfig) -> wpb.WidgetConfig:
    return wpb.WidgetConfig(
        persona=persona_to_proto(config.persona),
        escalation=escalation_to_proto(config.escalation),
        offer=_OFFERS[config.offer],
        handover_offer=_OFFERS[config.handover_offer],
        expectation=config.expectation,
        queue_open=config.queue_open,
        policies_revision=config.policies_revision,
    )


def offer_to_proto(offer: Offer) -> wpb.Offer.ValueType:
    return _OFFERS[offer]


def reason_to_proto(reason: HandoverReason) -> wpb.HandoverReason.ValueType:
    return _REASONS[reason]


# GetWidgetConfigResponse's fields on the wire: ``config`` (1, length-delimited) and
# ``cached`` (2, varint) set to true.
_CONFIG_TAG = b"\x0a"
_CACHED = wpb.GetWidgetConfigResponse(cached=True).SerializeToString()


def cached_response(config: bytes) -> bytes:
    """``GetWidgetConfigResponse(config=config, cached=True)`` serialized, around the stored
    config's bytes rather than by parsing and encoding them again: a message's encoding is
    its fields' encodings one after another."""
    return _CONFIG_TAG + _varint(len(config)) + config + _CACHED


def _varint(value: int) -> bytes:
    encoded = bytearray()
    while value > 0x7F:
        encoded.append(value & 0x7F | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)
