from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import Engine
from switchboard.profiles.v1 import profiles_pb2_grpc

from services.core.server import RunningServer, create_server
from services.profiles.server import profiles_spec


@pytest.fixture
def profiles_server(engine: Engine) -> Iterator[RunningServer]:
    running = create_server([profiles_spec(engine)], address="127.0.0.1:0", max_workers=8)
    yield running
    running.stop(grace=1)


@pytest.fixture
def profiles_channel(profiles_server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{profiles_server.port}") as channel:
        yield channel


@pytest.fixture
def profiles(profiles_channel: grpc.Channel) -> profiles_pb2_grpc.ProfileServiceStub:
    return profiles_pb2_grpc.ProfileServiceStub(profiles_channel)
