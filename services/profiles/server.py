"""Wiring of the profiles service into a gRPC server."""

from __future__ import annotations

import grpc
from sqlalchemy import Engine
from switchboard.profiles.v1 import profiles_pb2, profiles_pb2_grpc

from services.core.clock import Clock, utc_now
from services.core.server import ServiceSpec
from services.profiles.app import Profiles
from services.profiles.repository import CustomerRepository
from services.profiles.servicer import ProfileServicer

SERVICE_NAME = profiles_pb2.DESCRIPTOR.services_by_name["ProfileService"].full_name


def profiles_spec(engine: Engine, clock: Clock = utc_now) -> ServiceSpec:
    servicer = ProfileServicer(Profiles(CustomerRepository(engine), clock))

    def register(server: grpc.Server) -> None:
        profiles_pb2_grpc.add_ProfileServiceServicer_to_server(servicer, server)

    return ServiceSpec(SERVICE_NAME, register)
