"""The segments service's view of the ProfileService: customers and the change log, read
over gRPC with the deadline and request id of ``services.core.channels``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from switchboard.profiles.v1 import profiles_pb2 as pb
from switchboard.profiles.v1 import profiles_pb2_grpc

from services.core.errors import NotFound, Unavailable
from services.segments.convert import customer_record

_PAGE = 1000
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass(frozen=True)
class ChangedCustomers:
    customer_ids: tuple[str, ...]
    last_sequence: int


class ProfilesClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = profiles_pb2_grpc.ProfileServiceStub(channel)

    def get(self, customer_id: str) -> dict[str, Any]:
        """One customer's record; NotFound when the ProfileService has none."""
        return customer_record(self.fetch(customer_id))

    def fetch(self, customer_id: str) -> pb.Customer:
        """One customer as the ProfileService sends it; NotFound when it has none."""
        try:
            response = self.stub.GetCustomer(pb.GetCustomerRequest(customer_id=customer_id))
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound("customer", customer_id) from error
            raise _unavailable(error) from error
        return response.customer

    def find_by_external_id(self, system: str, external_id: str) -> dict[str, Any] | None:
        """The customer carrying ``system:external_id``; None when nobody does."""
        lookup = pb.ExternalId(system=system, id=external_id)
        try:
            response = self.stub.GetCustomer(pb.GetCustomerRequest(external_id=lookup))
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise _unavailable(error) from error
        return customer_record(response.customer)

    def existing(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Records of those of ``customer_ids`` that still exist."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(customer_ids), _PAGE):
            chunk = list(customer_ids[start : start + _PAGE])
            try:
                response = self.stub.BatchGetCustomers(
                    pb.BatchGetCustomersRequest(customer_ids=chunk)
                )
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise _unavailable(error) from error
                # Some were erased since they changed: read the rest one by one.
                for customer_id in chunk:
                    try:
                        found[customer_id] = self.get(customer_id)
                    except NotFound:
                        continue
                continue
            for customer in response.customers:
                found[customer.customer_id] = customer_record(customer)
        return found

    def all_customers(self) -> Iterator[dict[str, Any]]:
        token = ""
        while True:
            try:
                page = self.stub.ListCustomers(
                    pb.ListCustomersRequest(page_size=_PAGE, page_token=token)
                )
            except grpc.RpcError as error:
                raise _unavailable(error) from error
            for customer in page.customers:
                yield customer_record(customer)
            token = page.next_page_token
            if not token:
                return

    def changed_since(self, sequence: int) -> ChangedCustomers:
        """Customers in the change log after ``sequence``, and the last sequence read."""
        changed: dict[str, None] = {}
        while True:
            try:
                page = self.stub.ListCustomerChanges(
                    pb.ListCustomerChangesRequest(after_sequence=sequence, page_size=10_000)
                )
            except grpc.RpcError as error:
                raise _unavailable(error) from error
            for change in page.changes:
                changed[change.customer_id] = None
            if not page.changes:
                return ChangedCustomers(tuple(changed), sequence)
            sequence = page.last_sequence


def _unavailable(error: grpc.RpcError) -> Exception:
    code = error.code()
    detail = error.details()
    if code in _RETRYABLE:
        return Unavailable(f"the profiles service did not answer: {code.name} {detail}")
    return Unavailable(f"the profiles service failed: {code.name} {detail}")
