"""Widget definitions as stored JSON documents and back, beside routing's own definitions.

Personas, escalation policies and the assignment list live in ``routing_definitions`` under
their own kinds, so they share routing's revisions and its configuration version: any
change to them, or to a queue, calendar or SLA policy a widget promises from, moves the one
version the widget cache is keyed by.

An escalation policy's document lists what it ``references``; routing refuses to delete a
queue or SLA policy a stored document still references.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from services.routing.domain import Channel
from services.widgets.domain import (
    AfterHours,
    AnswerLength,
    EmojiUse,
    EscalationPolicy,
    Persona,
    Tone,
    WidgetAssignment,
    WidgetPolicies,
)
from services.widgets.logic import escalation_references, policies_references

PERSONA = "persona"
ESCALATION = "escalation"
POLICIES = "widgets"
# The assignment list is one document, like the routing rules.
POLICIES_KEY = "widgets"
# Stored kind names for what a definition points at; segments live in their own service.
STORED_KIND = {
    "queue": "queue",
    "sla_policy": "policy",
    "persona": PERSONA,
    "escalation_policy": ESCALATION,
}


def stored_references(references: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """``logic``'s (kind, id, field) references, with routing's stored kind names."""
    return [
        (STORED_KIND[kind], key, field) for kind, key, field in references if kind in STORED_KIND
    ]


def _references_document(references: list[tuple[str, str, str]]) -> list[list[str]]:
    pairs = {(kind, key) for kind, key, _ in stored_references(references)}
    return [[kind, key] for kind, key in sorted(pairs)]


def persona_document(persona: Persona) -> dict[str, Any]:
    return {
        "display_name": persona.display_name,
        "tone": persona.tone.value,
        "answer_length": persona.answer_length.value,
        "emoji": persona.emoji.value,
        "greeting": persona.greeting,
        "languages": list(persona.languages),
        "guardrails": persona.guardrails,
    }


def persona_from(key: str, document: Mapping[str, Any], **stamps: Any) -> Persona:
    return Persona(
        persona_id=key,
        display_name=document["display_name"],
        tone=Tone(document["tone"]),
        answer_length=AnswerLength(document["answer_length"]),
        emoji=EmojiUse(document["emoji"]),
        greeting=document["greeting"],
        languages=tuple(document["languages"]),
        guardrails=document["guardrails"],
        **stamps,
    )


def escalation_document(policy: EscalationPolicy) -> dict[str, Any]:
    return {
        "display_name": policy.display_name,
        "immediately": policy.immediately,
        "max_bot_turns": policy.max_bot_turns,
        "min_sentiment": policy.min_sentiment,
        "min_confidence": policy.min_confidence,
        "keywords": list(policy.keywords),
        "on_human_request": policy.on_human_request,
        "queue_id": policy.queue_id,
        "handover_channel": policy.handover_channel.value,
        "sla_policy_id": policy.sla_policy_id,
        "after_hours": policy.after_hours.value,
        "after_hours_sla_policy_id": policy.after_hours_sla_policy_id,
        "references": _references_document(escalation_references(policy)),
    }


def escalation_from(key: str, document: Mapping[str, Any], **stamps: Any) -> EscalationPolicy:
    return EscalationPolicy(
        policy_id=key,
        display_name=document["display_name"],
        immediately=document["immediately"],
        max_bot_turns=document["max_bot_turns"],
        min_sentiment=document["min_sentiment"],
        min_confidence=document["min_confidence"],
        keywords=tuple(document["keywords"]),
        on_human_request=document["on_human_request"],
        queue_id=document["queue_id"],
        handover_channel=Channel(document["handover_channel"]),
        sla_policy_id=document["sla_policy_id"],
        after_hours=AfterHours(document["after_hours"]),
        after_hours_sla_policy_id=document["after_hours_sla_policy_id"],
        **stamps,
    )


def policies_document(policies: WidgetPolicies) -> dict[str, Any]:
    return {
        "assignments": [
            {
                "segment_id": line.segment_id,
                "persona_id": line.persona_id,
                "escalation_policy_id": line.escalation_policy_id,
            }
            for line in policies.assignments
        ],
        "default_persona_id": policies.default_persona_id,
        "default_escalation_policy_id": policies.default_escalation_policy_id,
        "references": _references_document(policies_references(policies)),
    }


def policies_from(
    document: Mapping[str, Any], revision: int, update_time: datetime | None, actor: str
) -> WidgetPolicies:
    return WidgetPolicies(
        assignments=tuple(
            WidgetAssignment(line["segment_id"], line["persona_id"], line["escalation_policy_id"])
            for line in document["assignments"]
        ),
        default_persona_id=document["default_persona_id"],
        default_escalation_policy_id=document["default_escalation_policy_id"],
        revision=revision,
        update_time=update_time,
        actor=actor,
    )
