"""Wiring of the routing service into a gRPC server."""

from __future__ import annotations

import grpc
from sqlalchemy import Engine
from switchboard.routing.v1 import routing_pb2, routing_pb2_grpc

from services.core.server import ServiceSpec

SERVICE_NAME = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name


def routing_spec(engine: Engine) -> ServiceSpec:
    servicer = routing_pb2_grpc.RoutingServiceServicer()

    def register(server: grpc.Server) -> None:
        routing_pb2_grpc.add_RoutingServiceServicer_to_server(servicer, server)

    return ServiceSpec(SERVICE_NAME, register)
