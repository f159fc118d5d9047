"""Wiring of the segments service into a gRPC server."""

from __future__ import annotations

import grpc
from sqlalchemy import Engine
from switchboard.segments.v1 import segments_pb2, segments_pb2_grpc

from services.core.server import ServiceSpec

SERVICE_NAME = segments_pb2.DESCRIPTOR.services_by_name["SegmentService"].full_name


def segments_spec(engine: Engine) -> ServiceSpec:
    # Until the servicer lands every RPC answers UNIMPLEMENTED, as the generated base does.
    servicer = segments_pb2_grpc.SegmentServiceServicer()  # type: ignore[abstract]

    def register(server: grpc.Server) -> None:
        segments_pb2_grpc.add_SegmentServiceServicer_to_server(servicer, server)

    return ServiceSpec(SERVICE_NAME, register)
