"""gRPC adapter of the widget service: convert, call ``Widgets``, convert back."""

from __future__ import annotations

from typing import Any

import grpc
from switchboard.routing.v1 import widgets_pb2 as wpb
from switchboard.routing.v1 import widgets_pb2_grpc

from services.access.domain import note_write
from services.routing.convert import decision_to_proto
from services.widgets.app import Answer, Widgets
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
from services.widgets.domain import WidgetConfig


def encode_config(config: WidgetConfig) -> bytes:
    """How ``Widgets`` keeps an answer: the wire form, served again without re-encoding."""
    return widget_config_to_proto(config).SerializeToString()


class WidgetServicer(widgets_pb2_grpc.WidgetServiceServicer):
    def __init__(self, widgets: Widgets) -> None:
        self.widgets = widgets

    # ---- personas ---------------------------------------------------------------------------

    def CreatePersona(
        self, request: wpb.CreatePersonaRequest, context: grpc.ServicerContext
    ) -> wpb.CreatePersonaResponse:
        created = self.widgets.create_persona(persona=persona_from_proto(request.persona))
        return wpb.CreatePersonaResponse(persona=persona_to_proto(created))

    def GetPersona(
        self, request: wpb.GetPersonaRequest, context: grpc.ServicerContext
    ) -> wpb.GetPersonaResponse:
        found = self.widgets.get_persona(persona_id=request.persona_id)
        return wpb.GetPersonaResponse(persona=persona_to_proto(found))

    def ListPersonas(
        self, request: wpb.ListPersonasRequest, context: grpc.ServicerContext
    ) -> wpb.ListPersonasResponse:
        found, token = self.widgets.list_personas(
            page_size=request.page_size, page_token=request.page_token
        )
        return wpb.ListPersonasResponse(
            personas=[persona_to_proto(p) for p in found], next_page_token=token
        )

    def UpdatePersona(
        self, request: wpb.UpdatePersonaRequest, context: grpc.ServicerContext
    ) -> wpb.UpdatePersonaResponse:
        updated = self.widgets.update_persona(persona=persona_from_proto(request.persona))
        return wpb.UpdatePersonaResponse(persona=persona_to_proto(updated))

    def DeletePersona(
        self, request: wpb.DeletePersonaRequest, context: grpc.ServicerContext
    ) -> wpb.DeletePersonaResponse:
        self.widgets.delete_persona(persona_id=request.persona_id, revision=request.revision)
        return wpb.DeletePersonaResponse()

    # ---- escalation policies ----------------------------------------------------------------

    def CreateEscalationPolicy(
        self, request: wpb.CreateEscalationPolicyRequest, context: grpc.ServicerContext
    ) -> wpb.CreateEscalationPolicyResponse:
        created = self.widgets.create_escalation(policy=escalation_from_proto(request.policy))
        return wpb.CreateEscalationPolicyResponse(policy=escalation_to_proto(created))

    def GetEscalationPolicy(
        self, request: wpb.GetEscalationPolicyRequest, context: grpc.ServicerContext
    ) -> wpb.GetEscalationPolicyResponse:
        found = self.widgets.get_escalation(policy_id=request.policy_id)
        return wpb.GetEscalationPolicyResponse(policy=escalation_to_proto(found))

    def ListEscalationPolicies(
        self, request: wpb.ListEscalationPoliciesRequest, context: grpc.ServicerContext
    ) -> wpb.ListEscalationPoliciesResponse:
        found, token = self.widgets.list_escalations(
            page_size=request.page_size, page_token=request.page_token
        )
        return wpb.ListEscalationPoliciesResponse(
            policies=[escalation_to_proto(p) for p in found], next_page_token=token
        )

    def UpdateEscalationPolicy(
        self, request: wpb.UpdateEscalationPolicyRequest, context: grpc.ServicerContext
    ) -> wpb.UpdateEscalationPolicyResponse:
        updated = self.widgets.update_escalation(policy=escalation_from_proto(request.policy))
        return wpb.UpdateEscalationPolicyResponse(policy=escalation_to_proto(updated))

    def DeleteEscalationPolicy(
        self, request: wpb.DeleteEscalationPolicyRequest, context: grpc.ServicerContext
    ) -> wpb.DeleteEscalationPolicyResponse:
        self.widgets.delete_escalation(policy_id=request.policy_id, revision=request.revision)
        return wpb.DeleteEscalationPolicyResponse()

    # ---- assignment to segments ---------------------------------------------------------------

    def GetWidgetPolicies(
        self, request: wpb.GetWidgetPoliciesRequest, context: grpc.ServicerContext
    ) -> wpb.GetWidgetPoliciesResponse:
        found = self.widgets.get_policies(revision=request.revision)
        return wpb.GetWidgetPoliciesResponse(policies=policies_to_proto(found))

    def UpdateWidgetPolicies(
        self, request: wpb.UpdateWidgetPoliciesRequest, context: grpc.ServicerContext
    ) -> wpb.UpdateWidgetPoliciesResponse:
        updated = self.widgets.update_policies(
            policies=policies_from_proto(request.policies), actor=request.actor
        )
        return wpb.UpdateWidgetPoliciesResponse(policies=policies_to_proto(updated))

    # ---- serving ------------------------------------------------------------------------------

    def GetWidgetConfig(
        self, request: wpb.GetWidgetConfigRequest, context: grpc.ServicerContext
    ) -> wpb.GetWidgetConfigResponse:
        return _response(self.widgets.widget_config(visitor=visitor_from_proto(request.visitor)))

    async def cached_widget_config(
        self, request: wpb.GetWidgetConfigRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes | None:
        """GetWidgetConfig's fast path on the asyncio edge: a cached answer, already
        serialized, or None."""
        answer = await self.widgets.cached_widget_config(
            visitor=visitor_from_proto(request.visitor)
        )
        return None if answer is None else cached_response(answer.encoded)

    def EvaluateEscalation(
        self, request: wpb.EvaluateEscalationRequest, context: grpc.ServicerContext
    ) -> wpb.EvaluateEscalationResponse:
        answer = self.widgets.evaluate_escalation(
            visitor=visitor_from_proto(request.visitor),
            turn=bot_turn_from_proto(request.turn),
            conversation_id=request.conversation_id,
        )
        verdict = answer.verdict
        if answer.decision is not None:
            note_write()  # the conversation was routed: audit this turn
        return wpb.EvaluateEscalationResponse(
            hand_over=verdict.hand_over,
            reasons=[reason_to_proto(reason) for reason in verdict.reasons],
            explanation=verdict.explanation,
            queue_id=answer.queue_id,
            handover_offer=offer_to_proto(answer.handover_offer),
            expectation=answer.expectation,
            decision=decision_to_proto(answer.decision) if answer.decision else None,
        )


def _response(answer: Answer) -> wpb.GetWidgetConfigResponse:
    return wpb.GetWidgetConfigResponse(
        config=wpb.WidgetConfig.FromString(answer.encoded), cached=answer.cached
    )
