"""gRPC adapter of the routing service: convert, call ``Routing``, convert back."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from switchboard.routing.v1 import routing_pb2 as pb
from switchboard.routing.v1 import routing_pb2_grpc

from services.access.domain import note_write
from services.routing.app import Routing
from services.routing.console import console_agent, require_held, require_own_agent
from services.routing.convert import (
    agent_from_proto,
    agent_status_from_proto,
    agent_to_proto,
    assignment_change_to_proto,
    assignment_to_proto,
    calendar_from_proto,
    calendar_to_proto,
    conversation_to_proto,
    decision_to_proto,
    event_kind_from_proto,
    policy_from_proto,
    policy_to_proto,
    queue_from_proto,
    queue_to_proto,
    route_request_from_proto,
    rules_from_proto,
    rules_revision_to_proto,
    rules_to_proto,
)
from services.segments.convert import optional_time


class RoutingServicer(routing_pb2_grpc.RoutingServiceServicer):
    def __init__(self, routing: Routing) -> None:
        self.routing = routing

    def _require_held(self, conversation_id: str) -> None:
        """A console key reaches only conversations its agent holds."""
        if console_agent() is not None:
            require_held(self.routing.conversation_holder(conversation_id=conversation_id))

    # ---- calendars ---------------------------------------------------------------------------

    def CreateCalendar(
        self, request: pb.CreateCalendarRequest, context: grpc.ServicerContext
    ) -> pb.CreateCalendarResponse:
        created = self.routing.create_calendar(calendar=calendar_from_proto(request.calendar))
        return pb.CreateCalendarResponse(calendar=calendar_to_proto(created))

    def GetCalendar(
        self, request: pb.GetCalendarRequest, context: grpc.ServicerContext
    ) -> pb.GetCalendarResponse:
        found = self.routing.get_calendar(calendar_id=request.calendar_id)
        return pb.GetCalendarResponse(calendar=calendar_to_proto(found))

    def ListCalendars(
        self, request: pb.ListCalendarsRequest, context: grpc.ServicerContext
    ) -> pb.ListCalendarsResponse:
        found, token = self.routing.list_calendars(
            page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListCalendarsResponse(
            calendars=[calendar_to_proto(c) for c in found], next_page_token=token
        )

    def UpdateCalendar(
        self, request: pb.UpdateCalendarRequest, context: grpc.ServicerContext
    ) -> pb.UpdateCalendarResponse:
        updated = self.routing.update_calendar(calendar=calendar_from_proto(request.calendar))
        return pb.UpdateCalendarResponse(calendar=calendar_to_proto(updated))

    def DeleteCalendar(
        self, request: pb.DeleteCalendarRequest, context: grpc.ServicerContext
    ) -> pb.DeleteCalendarResponse:
        self.routing.delete_calendar(calendar_id=request.calendar_id, revision=request.revision)
        return pb.DeleteCalendarResponse()

    # ---- SLA policies ------------------------------------------------------------------------

    def CreateSlaPolicy(
        self, request: pb.CreateSlaPolicyRequest, context: grpc.ServicerContext
    ) -> pb.CreateSlaPolicyResponse:
        created = self.routing.create_policy(policy=policy_from_proto(request.policy))
        return pb.CreateSlaPolicyResponse(policy=policy_to_proto(created))

    def GetSlaPolicy(
        self, request: pb.GetSlaPolicyRequest, context: grpc.ServicerContext
    ) -> pb.GetSlaPolicyResponse:
        found = self.routing.get_policy(policy_id=request.policy_id)
        return pb.GetSlaPolicyResponse(policy=policy_to_proto(found))

    def ListSlaPolicies(
        self, request: pb.ListSlaPoliciesRequest, context: grpc.ServicerContext
    ) -> pb.ListSlaPoliciesResponse:
        found, token = self.routing.list_policies(
            page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListSlaPoliciesResponse(
            policies=[policy_to_proto(p) for p in found], next_page_token=token
        )

    def UpdateSlaPolicy(
        self, request: pb.UpdateSlaPolicyRequest, context: grpc.ServicerContext
    ) -> pb.UpdateSlaPolicyResponse:
        updated = self.routing.update_policy(policy=policy_from_proto(request.policy))
        return pb.UpdateSlaPolicyResponse(policy=policy_to_proto(updated))

    def DeleteSlaPolicy(
        self, request: pb.DeleteSlaPolicyRequest, context: grpc.ServicerContext
    ) -> pb.DeleteSlaPolicyResponse:
        self.routing.delete_policy(policy_id=request.policy_id, revision=request.revision)
        return pb.DeleteSlaPolicyResponse()

    # ---- queues ------------------------------------------------------------------------------

    def CreateQueue(
        self, request: pb.CreateQueueRequest, context: grpc.ServicerContext
    ) -> pb.CreateQueueResponse:
        created = self.routing.create_queue(queue=queue_from_proto(request.queue))
        return pb.CreateQueueResponse(queue=queue_to_proto(created))

    def GetQueue(
        self, request: pb.GetQueueRequest, context: grpc.ServicerContext
    ) -> pb.GetQueueResponse:
        found = self.routing.get_queue(queue_id=request.queue_id)
        return pb.GetQueueResponse(queue=queue_to_proto(found))

    def ListQueues(
        self, request: pb.ListQueuesRequest, context: grpc.ServicerContext
    ) -> pb.ListQueuesResponse:
        found, token = self.routing.list_queues(
            page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListQueuesResponse(
            queues=[queue_to_proto(q) for q in found], next_page_token=token
        )

    def UpdateQueue(
        self, request: pb.UpdateQueueRequest, context: grpc.ServicerContext
    ) -> pb.UpdateQueueResponse:
        updated = self.routing.update_queue(queue=queue_from_proto(request.queue))
        return pb.UpdateQueueResponse(queue=queue_to_proto(updated))

    def DeleteQueue(
        self, request: pb.DeleteQueueRequest, context: grpc.ServicerContext
    ) -> pb.DeleteQueueResponse:
        self.routing.delete_queue(queue_id=request.queue_id, revision=request.revision)
        return pb.DeleteQueueResponse()

    # ---- routing rules -----------------------------------------------------------------------

    def GetRoutingRules(
        self, request: pb.GetRoutingRulesRequest, context: grpc.ServicerContext
    ) -> pb.GetRoutingRulesResponse:
        found = self.routing.get_rules(revision=request.revision)
        return pb.GetRoutingRulesResponse(rules=rules_to_proto(found))

    def UpdateRoutingRules(
        self, request: pb.UpdateRoutingRulesRequest, context: grpc.ServicerContext
    ) -> pb.UpdateRoutingRulesResponse:
        updated = self.routing.update_rules(
            rules=rules_from_proto(request.rules), actor=request.actor
        )
        return pb.UpdateRoutingRulesResponse(rules=rules_to_proto(updated))

    def ListRoutingRuleRevisions(
        self, request: pb.ListRoutingRuleRevisionsRequest, context: grpc.ServicerContext
    ) -> pb.ListRoutingRuleRevisionsResponse:
        found, token = self.routing.list_rule_revisions(
            page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListRoutingRuleRevisionsResponse(
            revisions=[rules_revision_to_proto(r) for r in found], next_page_token=token
        )

    def RollbackRoutingRules(
        self, request: pb.RollbackRoutingRulesRequest, context: grpc.ServicerContext
    ) -> pb.RollbackRoutingRulesResponse:
        restored = self.routing.rollback_rules(
            target_revision=request.target_revision,
            revision=request.revision,
            actor=request.actor,
        )
        return pb.RollbackRoutingRulesResponse(rules=rules_to_proto(restored))

    # ---- agents ------------------------------------------------------------------------------

    def CreateAgent(
        self, request: pb.CreateAgentRequest, context: grpc.ServicerContext
    ) -> pb.CreateAgentResponse:
        created = self.routing.create_agent(agent=agent_from_proto(request.agent))
        return pb.CreateAgentResponse(agent=agent_to_proto(created))

    def GetAgent(
        self, request: pb.GetAgentRequest, context: grpc.ServicerContext
    ) -> pb.GetAgentResponse:
        require_own_agent(request.agent_id)
        found = self.routing.get_agent(agent_id=request.agent_id)
        return pb.GetAgentResponse(agent=agent_to_proto(found))

    def ListAgents(
        self, request: pb.ListAgentsRequest, context: grpc.ServicerContext
    ) -> pb.ListAgentsResponse:
        found, token = self.routing.list_agents(
            page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListAgentsResponse(
            agents=[agent_to_proto(a) for a in found], next_page_token=token
        )

    def UpdateAgent(
        self, request: pb.UpdateAgentRequest, context: grpc.ServicerContext
    ) -> pb.UpdateAgentResponse:
        updated = self.routing.update_agent(agent=agent_from_proto(request.agent))
        return pb.UpdateAgentResponse(agent=agent_to_proto(updated))

    def SetAgentStatus(
        self, request: pb.SetAgentStatusRequest, context: grpc.ServicerContext
    ) -> pb.SetAgentStatusResponse:
        require_own_agent(request.agent_id)
        agent, returned = self.routing.set_agent_status(
            agent_id=request.agent_id, status=agent_status_from_proto(request.status)
        )
        return pb.SetAgentStatusResponse(
            agent=agent_to_proto(agent), returned_conversation_ids=returned
        )

    # ---- conversations -----------------------------------------------------------------------

    def RouteConversation(
        self, request: pb.RouteConversationRequest, context: grpc.ServicerContext
    ) -> pb.RouteConversationResponse:
        if not request.validate_only:
            note_write()  # a dry run changes nothing: only a real route is audited
        decision, replayed = self.routing.route(request=route_request_from_proto(request))
        if replayed:
            note_write(False)  # answered from the stored decision: nothing changed
        return pb.RouteConversationResponse(decision=decision_to_proto(decision), replayed=replayed)

    def GetConversation(
        self, request: pb.GetConversationRequest, context: grpc.ServicerContext
    ) -> pb.GetConversationResponse:
        self._require_held(request.conversation_id)
        found = self.routing.get_conversation(conversation_id=request.conversation_id)
        return pb.GetConversationResponse(conversation=conversation_to_proto(found))

    def GetConversationCustomer(
        self, request: pb.GetConversationCustomerRequest, context: grpc.ServicerContext
    ) -> pb.GetConversationCustomerResponse:
        self._require_held(request.conversation_id)
        customer = self.routing.conversation_customer(conversation_id=request.conversation_id)
        return pb.GetConversationCustomerResponse(customer=customer)

    def RecordConversationEvent(
        self, request: pb.RecordConversationEventRequest, context: grpc.ServicerContext
    ) -> pb.RecordConversationEventResponse:
        self._require_held(request.conversation_id)
        conversation = self.routing.record_event(
            conversation_id=request.conversation_id,
            kind=event_kind_from_proto(request.kind),
            time=optional_time(request, "time"),
            agent_id=request.agent_id,
            queue_id=request.queue_id,
            sla_policy_id=request.sla_policy_id,
            csat_rating=request.csat_rating,
        )
        return pb.RecordConversationEventResponse(conversation=conversation_to_proto(conversation))

    # ---- assignments -------------------------------------------------------------------------

    def GetAgentAssignments(
        self, request: pb.GetAgentAssignmentsRequest, context: grpc.ServicerContext
    ) -> pb.GetAgentAssignmentsResponse:
        require_own_agent(request.agent_id)
        held = self.routing.agent_assignments(agent_id=request.agent_id)
        return pb.GetAgentAssignmentsResponse(assignments=[assignment_to_proto(a) for a in held])

    def AssignNext(
        self, request: pb.AssignNextRequest, context: grpc.ServicerContext
    ) -> pb.AssignNextResponse:
        require_own_agent(request.agent_id)
        taken = self.routing.assign_next(agent_id=request.agent_id, queue_id=request.queue_id)
        return pb.AssignNextResponse(
            assignment=None if taken is None else assignment_to_proto(taken)
        )

    def WatchAssignments(
        self, request: pb.WatchAssignmentsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchAssignmentsResponse]:
        require_own_agent(request.agent_id)
        # context.is_active turns False when the console hangs up, which ends the watch.
        changes = self.routing.watch_assignments(
            agent_id=request.agent_id, active=context.is_active
        )
        for change, assignment in changes:
            yield pb.WatchAssignmentsResponse(
                change=assignment_change_to_proto(change),
                assignment=assignment_to_proto(assignment),
            )

    def ListQueueConversations(
        self, request: pb.ListQueueConversationsRequest, context: grpc.ServicerContext
    ) -> pb.ListQueueConversationsResponse:
        waiting, token = self.routing.queue_conversations(
            queue_id=request.queue_id, page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListQueueConversationsResponse(
            conversations=[assignment_to_proto(a) for a in waiting], next_page_token=token
        )
