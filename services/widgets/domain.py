"""Chat-widget personas, escalation policies and who gets which, free of gRPC and SQL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from services.routing.domain import Channel


class Tone(StrEnum):
    FORMAL = "formal"
    FRIENDLY = "friendly"
    PLAYFUL = "playful"


class AnswerLength(StrEnum):
    CONCISE = "concise"
    DETAILED = "detailed"


class EmojiUse(StrEnum):
    NONE = "none"
    SPARING = "sparing"
    FREQUENT = "frequent"


class Offer(StrEnum):
    """What the widget offers the visitor."""

    LIVE_CHAT = "live_chat"
    BOT_FIRST = "bot_first"
    EMAIL = "email"
    CALLBACK = "callback"


class AfterHours(StrEnum):
    EMAIL = "email"
    CALLBACK = "callback"


class HandoverReason(StrEnum):
    # Declaration order is the order a Verdict lists its reasons in.
    IMMEDIATE = "immediate"
    BOT_TURNS = "bot_turns"
    LOW_SENTIMENT = "low_sentiment"
    LOW_CONFIDENCE = "low_confidence"
    KEYWORD = "keyword"
    ASKED_FOR_HUMAN = "asked_for_human"


@dataclass(frozen=True)
class Persona:
    persona_id: str
    display_name: str = ""
    tone: Tone = Tone.FRIENDLY
    answer_length: AnswerLength = AnswerLength.CONCISE
    emoji: EmojiUse = EmojiUse.NONE
    # A template: {first_name} and {company_name} are filled in; {{ and }} are literal braces.
    greeting: str = ""
    languages: tuple[str, ...] = ()
    guardrails: str = ""
    revision: int = 0
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True)
class EscalationPolicy:
    """When the bot hands a conversation to people, and what the visitor is promised then."""

    policy_id: str
    display_name: str = ""
    # Hand over before the bot says anything.
    immediately: bool = False
    # Hand over after this many bot turns without resolution; 0 = no limit.
    max_bot_turns: int = 0
    # Hand over when the visitor's last sentiment (-1..1) is below this.
    min_sentiment: float | None = None
    # Hand over when the bot's confidence in its last answer (0..1) is below this.
    min_confidence: float | None = None
    # Whole words or phrases, e.g. ("cancel", "refund", "legal", "outage").
    keywords: tuple[str, ...] = ()
    on_human_request: bool = True
    # The routing queue that takes the handed-over conversation.
    queue_id: str = ""
    # CHAT (live chat with an agent) or EMAIL only.
    handover_channel: Channel = Channel.CHAT
    # The routing SLA policy promised on handover; "" = nothing is promised.
    sla_policy_id: str = ""
    # Offered when the queue's calendar is closed.
    after_hours: AfterHours = AfterHours.EMAIL
    # The SLA policy promised after hours; "" = the same as sla_policy_id.
    after_hours_sla_policy_id: str = ""
    revision: int = 0
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True)
class WidgetAssignment:
    """One line of the precedence list: customers in ``segment_id`` get this persona and/or
    escalation policy, unless an earlier line already set that part."""

    segment_id: str
    # "" = this line does not set the persona.
    persona_id: str = ""
    # "" = this line does not set the escalation policy.
    escalation_policy_id: str = ""


@dataclass(frozen=True)
class WidgetPolicies:
    """The assignment document; stored with revisions like routing rules."""

    assignments: tuple[WidgetAssignment, ...] = ()
    # For anonymous visitors and customers that match no line.
    default_persona_id: str = ""
    default_escalation_policy_id: str = ""
    revision: int = 0
    update_time: datetime | None = None
    actor: str = ""


@dataclass(frozen=True)
class BotTurn:
    """Where a bot conversation stands after the bot's latest answer."""

    # Bot turns so far in this conversation without resolution.
    turn_count: int
    # The visitor's last sentiment, -1..1; None = unknown.
    sentiment: float | None = None
    # The bot's confidence in its last answer, 0..1; None = unknown.
    confidence: float | None = None
    message: str = ""
    asked_for_human: bool = False


@dataclass(frozen=True)
class Verdict:
    hand_over: bool
    # Every trigger that fired, in HandoverReason's order.
    reasons: tuple[HandoverReason, ...]
    # Human-readable, e.g. "the visitor wrote 'refund'"; "no trigger fired" when none did.
    explanation: str


@dataclass(frozen=True)
class Choice:
    persona_id: str
    escalation_policy_id: str
    # The segment whose line chose each part; "" = the default applied.
    persona_segment_id: str = ""
    escalation_segment_id: str = ""


@dataclass(frozen=True)
class Visitor:
    """Who a widget is talking to; known when an id is given and the customer exists."""

    customer_id: str = ""
    # An external id, split from the request's "system:id".
    external_system: str = ""
    external_id: str = ""
    # What the widget knows of an anonymous visitor (country, language, ...).
    attributes: Mapping[str, Any] = field(default_factory=dict)
    # Greeting values the widget knows, e.g. {"first_name": "Ana"}; they win over the record.
    greeting_values: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WidgetConfig:
    """What a widget shows a visitor: nothing about the customer beyond the greeting."""

    # With ``greeting`` already filled in.
    persona: Persona
    escalation: EscalationPolicy
    offer: Offer
    handover_offer: Offer
    expectation: str
    queue_open: bool
    policies_revision: int
