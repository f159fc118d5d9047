"""gRPC adapter of the outreach service: convert, call ``Outreach``, convert back."""

from __future__ import annotations

import grpc
from switchboard.segments.v1 import outreach_pb2 as pb
from switchboard.segments.v1 import outreach_pb2_grpc

from services.outreach.app import Outreach
from services.outreach.convert import (
    delivery_to_proto,
    endpoint_from_proto,
    endpoint_to_proto,
    endpoint_update_paths,
    status_filter,
    subscription_from_proto,
    subscription_to_proto,
)
from services.outreach.repository import DeliveryFilter


class OutreachServicer(outreach_pb2_grpc.OutreachServiceServicer):
    def __init__(self, outreach: Outreach) -> None:
        self.outreach = outreach

    def CreateWebhookEndpoint(
        self, request: pb.CreateWebhookEndpointRequest, context: grpc.ServicerContext
    ) -> pb.CreateWebhookEndpointResponse:
        created = self.outreach.create_endpoint(
            endpoint=endpoint_from_proto(request.endpoint), secret=request.secret
        )
        return pb.CreateWebhookEndpointResponse(
            endpoint=endpoint_to_proto(created.endpoint), secret=created.secret
        )

    def GetWebhookEndpoint(
        self, request: pb.GetWebhookEndpointRequest, context: grpc.ServicerContext
    ) -> pb.GetWebhookEndpointResponse:
        found = self.outreach.get_endpoint(request.endpoint_id)
        return pb.GetWebhookEndpointResponse(endpoint=endpoint_to_proto(found))

    def ListWebhookEndpoints(
        self, request: pb.ListWebhookEndpointsRequest, context: grpc.ServicerContext
    ) -> pb.ListWebhookEndpointsResponse:
        found, token = self.outreach.list_endpoints(
            page_token=request.page_token, page_size=request.page_size
        )
        return pb.ListWebhookEndpointsResponse(
            endpoints=[endpoint_to_proto(e) for e in found], next_page_token=token
        )

    def UpdateWebhookEndpoint(
        self, request: pb.UpdateWebhookEndpointRequest, context: grpc.ServicerContext
    ) -> pb.UpdateWebhookEndpointResponse:
        updated, secret = self.outreach.update_endpoint(
            endpoint=endpoint_from_proto(request.endpoint),
            fields=endpoint_update_paths(list(request.update_mask.paths)),
            rotate_secret=request.rotate_secret,
            secret=request.secret,
        )
        return pb.UpdateWebhookEndpointResponse(endpoint=endpoint_to_proto(updated), secret=secret)

    def DeleteWebhookEndpoint(
        self, request: pb.DeleteWebhookEndpointRequest, context: grpc.ServicerContext
    ) -> pb.DeleteWebhookEndpointResponse:
        self.outreach.delete_endpoint(request.endpoint_id)
        return pb.DeleteWebhookEndpointResponse()

    def CreateOutreachSubscription(
        self, request: pb.CreateOutreachSubscriptionRequest, context: grpc.ServicerContext
    ) -> pb.CreateOutreachSubscriptionResponse:
        created = self.outreach.create_subscription(subscription_from_proto(request.subscription))
        return pb.CreateOutreachSubscriptionResponse(subscription=subscription_to_proto(created))

    def ListOutreachSubscriptions(
        self, request: pb.ListOutreachSubscriptionsRequest, context: grpc.ServicerContext
    ) -> pb.ListOutreachSubscriptionsResponse:
        found, token = self.outreach.list_subscriptions(
            segment_id=request.segment_id,
            endpoint_id=request.endpoint_id,
            page_token=request.page_token,
            page_size=request.page_size,
        )
        return pb.ListOutreachSubscriptionsResponse(
            subscriptions=[subscription_to_proto(s) for s in found], next_page_token=token
        )

    def DeleteOutreachSubscription(
        self, request: pb.DeleteOutreachSubscriptionRequest, context: grpc.ServicerContext
    ) -> pb.DeleteOutreachSubscriptionResponse:
        self.outreach.delete_subscription(request.subscription_id)
        return pb.DeleteOutreachSubscriptionResponse()

    def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: grpc.ServicerContext
    ) -> pb.ListDeliveriesResponse:
        where = DeliveryFilter(
            status=status_filter(request.status),
            endpoint_id=request.endpoint_id,
            customer_id=request.customer_id,
        )
        found, token = self.outreach.list_deliveries(
            where=where, page_token=request.page_token, page_size=request.page_size
        )
        return pb.ListDeliveriesResponse(
            deliveries=[delivery_to_proto(d) for d in found], next_page_token=token
        )

    def GetDelivery(
        self, request: pb.GetDeliveryRequest, context: grpc.ServicerContext
    ) -> pb.GetDeliveryResponse:
        found = self.outreach.get_delivery(request.delivery_id)
        return pb.GetDeliveryResponse(delivery=delivery_to_proto(found))

    def ReplayDelivery(
        self, request: pb.ReplayDeliveryRequest, context: grpc.ServicerContext
    ) -> pb.ReplayDeliveryResponse:
        replayed = self.outreach.replay_delivery(request.delivery_id)
        return pb.ReplayDeliveryResponse(delivery=delivery_to_proto(replayed))
