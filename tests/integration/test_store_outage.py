"""A store that cannot be reached makes calls fail with a retryable status, not INTERNAL."""

from __future__ import annotations

import grpc
from sqlalchemy import create_engine
from switchboard.profiles.v1 import profiles_pb2 as pb
from switchboard.profiles.v1 import profiles_pb2_grpc

from services.core.db import create_db_engine
from services.core.server import create_server
from services.profiles.server import profiles_spec
from tests.support.rpc import call_error, error_info
from tests.support.stores import backend_under_test, free_port


def test_calls_fail_with_unavailable_while_the_store_is_unreachable() -> None:
    if backend_under_test() == "postgresql":
        engine = create_db_engine(f"postgresql://127.0.0.1:{free_port()}/nothing_listens_here")
    else:
        # create_db_engine would create the directory; a plain engine cannot open the file.
        engine = create_engine("sqlite:////nonexistent-dir/cannot/open.db")
    running = create_server(
        [profiles_spec(engine)], address="127.0.0.1:0", gate=None, max_workers=2
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = profiles_pb2_grpc.ProfileServiceStub(channel)
            error = call_error(
                lambda: stub.GetCustomer(pb.GetCustomerRequest(customer_id="c1"), timeout=10)
            )
    finally:
        running.stop(grace=1)
        engine.dispose()
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(error).reason == "STORE_UNAVAILABLE"
