"""Routing keeps the customer records it read and forgets one as soon as the profiles change
log names it, so a decision is fast without being made on an old record."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from google.protobuf import field_mask_pb2
from switchboard.profiles.v1 import profiles_pb2 as ppb

from services.core.errors import NotFound, Unavailable
from services.core.server import RunningServer
from services.routing.customers import CustomerDirectory, KnownCustomer, SegmentsClient
from services.segments.profiles_client import ProfilesClient
from tests.integration.routing_setup import (
    MONDAY,
    Profiles,
    Segments,
    create_customer,
    create_segment,
)
from tests.support.access import keyed_channel
from tests.support.faults import stalled_service

GET_CUSTOMER = "/switchboard.profiles.v1.ProfileService/GetCustomer"
LIST_CHANGES = "/switchboard.profiles.v1.ProfileService/ListCustomerChanges"


@contextmanager
def directories(
    profiles_address: str, segments_address: str, admin_key: str
) -> Iterator[Callable[..., CustomerDirectory]]:
    """Makes directories (with the given options) over channels to these two services."""
    with (
        keyed_channel(profiles_address, admin_key) as profiles,
        keyed_channel(segments_address, admin_key) as segments,
    ):

        def directory(**options: Any) -> CustomerDirectory:
            return CustomerDirectory(ProfilesClient(profiles), SegmentsClient(segments), **options)

        yield directory


@pytest.fixture
def new_directory(
    profiles_server: RunningServer, segments_server: RunningServer, admin_key: str
) -> Iterator[Callable[..., CustomerDirectory]]:
    with directories(
        f"127.0.0.1:{profiles_server.port}", f"127.0.0.1:{segments_server.port}", admin_key
    ) as directory:
        yield directory


@pytest.fixture
def directory(new_directory: Callable[..., CustomerDirectory]) -> CustomerDirectory:
    return new_directory(refresh_seconds=0, customer_refresh_seconds=0)


def reads_of_the_record(profiles_server: RunningServer, code: str = "OK") -> float:
    value = profiles_server.metrics.registry.get_sample_value(
        "switchboard_rpc_calls_total", {"method": GET_CUSTOMER, "code": code}
    )
    return value or 0.0


def test_an_unchanged_customer_is_read_from_profiles_once(
    directory: CustomerDirectory, profiles: Profiles, profiles_server: RunningServer
) -> None:
    create_customer(profiles, "acme", plan="enterprise", seats=120)

    for _ in range(3):
        assert directory.lookup("acme", MONDAY).attributes["seats"] == 120

    assert reads_of_the_record(profiles_server) == 1


def test_a_changed_customer_is_read_again_on_the_next_decision(
    directory: CustomerDirectory, profiles: Profiles, profiles_server: RunningServer
) -> None:
    create_customer(profiles, "acme", plan="growth", seats=20)
    create_customer(profiles, "bloom", plan="starter", seats=2)
    directory.lookup("acme", MONDAY)
    directory.lookup("bloom", MONDAY)

    profiles.UpdateCustomer(
        ppb.UpdateCustomerRequest(
            customer=ppb.Customer(customer_id="acme", seats=80),
            update_mask=field_mask_pb2.FieldMask(paths=["seats"]),
        )
    )

    assert directory.lookup("acme", MONDAY).attributes["seats"] == 80
    assert directory.lookup("bloom", MONDAY).attributes["seats"] == 2
    # acme twice, bloom once: the change log named only acme.
    assert reads_of_the_record(profiles_server) == 3


def test_an_erased_customer_is_no_longer_found(
    directory: CustomerDirectory, profiles: Profiles
) -> None:
    create_customer(profiles, "acme", plan="growth", seats=20)
    directory.lookup("acme", MONDAY)

    profiles.DeleteCustomer(ppb.DeleteCustomerRequest(customer_id="acme"))

    with pytest.raises(NotFound):
        directory.lookup("acme", MONDAY)


def test_the_kept_records_stay_within_the_cache_size(
    new_directory: Callable[..., CustomerDirectory],
    profiles_server: RunningServer,
    profiles: Profiles,
) -> None:
    for customer_id in ("a1", "a2", "a3"):
        create_customer(profiles, customer_id, seats=1)
    small = new_directory(refresh_seconds=0, customer_refresh_seconds=0, cache_size=2)
    for customer_id in ("a1", "a2", "a3", "a3", "a1"):
        small.lookup(customer_id, MONDAY)

    # a1 was dropped for a3 (oldest first) and read again; a3 stayed.
    assert reads_of_the_record(profiles_server) == 4


def test_with_the_segments_service_gone_customers_keep_the_segments_last_defined(
    new_directory: Callable[..., CustomerDirectory],
    segments_server: RunningServer,
    profiles: Profiles,
    segments: Segments,
) -> None:
    create_customer(profiles, "acme", plan="enterprise", seats=120)
    create_segment(segments, "enterprise", {"seats": {"$gte": 50}})
    never_read = new_directory(refresh_seconds=0)
    directory = new_directory(refresh_seconds=0)
    assert directory.lookup("acme", MONDAY).segment_ids == {"enterprise"}

    segments_server.stop(grace=0)

    # A conversation is still routed on the definitions read before the outage...
    assert directory.lookup("acme", MONDAY).segment_ids == {"enterprise"}
    # ...but a process that never read them cannot guess them.
    with pytest.raises(Unavailable):
        never_read.lookup("acme", MONDAY)


def test_a_slow_change_log_read_holds_up_one_lookup_not_the_others(
    segments_server: RunningServer, admin_key: str
) -> None:
    acme = ppb.GetCustomerResponse(customer=ppb.Customer(customer_id="acme", seats=120))
    no_changes = ppb.ListCustomerChangesResponse().SerializeToString()
    answers = {GET_CUSTOMER: acme.SerializeToString(), LIST_CHANGES: no_changes}
    with (
        stalled_service(answers) as profiles,
        directories(
            profiles.address, f"127.0.0.1:{segments_server.port}", admin_key
        ) as new_directory,
    ):
        profiles.release()
        directory = new_directory(refresh_seconds=60, customer_refresh_seconds=0.05)
        assert directory.lookup("acme", MONDAY).attributes["seats"] == 120
        reads_so_far = profiles.arrived.count(LIST_CHANGES)

        profiles.hold()
        time.sleep(0.1)
        reading = threading.Thread(target=directory.lookup, args=("acme", MONDAY))
        reading.start()
        profiles.wait_for_call(LIST_CHANGES, count=reads_so_far + 1)

        # The read is stuck in profiles; another lookup answers from the kept record.
        answered: list[KnownCustomer] = []
        meanwhile = threading.Thread(
            target=lambda: answered.append(directory.lookup("acme", MONDAY))
        )
        meanwhile.start()
        meanwhile.join(timeout=5)
        answered_while_stuck = [customer.attributes["seats"] for customer in answered]
        still_reading = reading.is_alive()
        profiles.release()
        meanwhile.join(timeout=10)
        reading.join(timeout=10)
        assert still_reading
        assert answered_while_stuck == [120]
