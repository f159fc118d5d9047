"""Many callers at once: nothing lost, nothing applied twice, the change log stays in order."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf import field_mask_pb2
from switchboard.profiles.v1 import profiles_pb2 as pb
from switchboard.profiles.v1 import profiles_pb2_grpc

Stub = profiles_pb2_grpc.ProfileServiceStub


def test_parallel_creates_are_all_stored_and_logged_once(profiles: Stub) -> None:
    def create(index: int) -> str:
        customer = pb.Customer(external_ids={"billing": f"cus_{index}"}, plan="starter")
        request = pb.CreateCustomerRequest(customer=customer)
        return str(profiles.CreateCustomer(request, timeout=30).customer.customer_id)

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(create, range(40)))

    assert len(set(ids)) == 40
    log = profiles.ListCustomerChanges(pb.ListCustomerChangesRequest(), timeout=10).changes
    assert sorted(c.customer_id for c in log) == sorted(ids)
    assert [c.sequence for c in log] == sorted(c.sequence for c in log)


def test_of_two_writers_holding_the_same_etag_exactly_one_wins(profiles: Stub) -> None:
    created = profiles.CreateCustomer(
        pb.CreateCustomerRequest(customer=pb.Customer(plan="growth")), timeout=10
    ).customer

    def update(plan: str) -> grpc.StatusCode:
        request = pb.UpdateCustomerRequest(
            customer=pb.Customer(customer_id=created.customer_id, plan=plan, etag=created.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["plan"]),
        )
        try:
            profiles.UpdateCustomer(request, timeout=30)
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(update, [f"plan-{i}" for i in range(6)]))

    assert outcomes.count(grpc.StatusCode.OK) == 1
    assert outcomes.count(grpc.StatusCode.ABORTED) == 5


def test_parallel_upserts_of_overlapping_batches_create_each_customer_once(
    profiles: Stub,
) -> None:
    def upsert(offset: int) -> None:
        customers = [
            pb.Customer(external_ids={"billing": f"cus_{i}"}, seats=i)
            for i in range(offset, offset + 30)
        ]
        request = pb.UpsertCustomersRequest(external_id_system="billing", customers=customers)
        for _attempt in range(5):
            try:
                profiles.UpsertCustomers(request, timeout=30)
                return
            except grpc.RpcError as error:
                # ABORTED is the documented answer to a concurrent write: retry the batch.
                assert error.code() == grpc.StatusCode.ABORTED
        raise AssertionError("batch never went through")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(upsert, [0, 10, 20, 30]))

    listed = profiles.ListCustomers(pb.ListCustomersRequest(page_size=1000), timeout=10).customers
    assert sorted(c.external_ids["billing"] for c in listed) == sorted(
        f"cus_{i}" for i in range(60)
    )
