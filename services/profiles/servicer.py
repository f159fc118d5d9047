"""gRPC adapter of the profiles service: convert, call ``Profiles``, convert back."""

from __future__ import annotations

import grpc
from switchboard.profiles.v1 import profiles_pb2 as pb
from switchboard.profiles.v1 import profiles_pb2_grpc

from services.profiles.app import Profiles, UpsertInput
from services.profiles.convert import (
    change_to_proto,
    customer_to_proto,
    freshness_to_proto,
    parse_update_mask,
    timestamp_to_datetime,
    usage_events_from_proto,
    values_from_proto,
)
from services.profiles.domain import ExternalIdKey
from services.profiles.repository import (
    CustomerFilter,
    decode_page_token,
    encode_page_token,
)

_OUTCOMES = {
    "created": pb.UPSERT_OUTCOME_CREATED,
    "updated": pb.UPSERT_OUTCOME_UPDATED,
    "unchanged": pb.UPSERT_OUTCOME_UNCHANGED,
    "rejected": pb.UPSERT_OUTCOME_REJECTED,
}


class ProfileServicer(profiles_pb2_grpc.ProfileServiceServicer):
    def __init__(self, profiles: Profiles) -> None:
        self.profiles = profiles

    def CreateCustomer(
        self, request: pb.CreateCustomerRequest, context: grpc.ServicerContext
    ) -> pb.CreateCustomerResponse:
        values = values_from_proto(request.customer)
        customer = self.profiles.create(customer_id=request.customer.customer_id, values=values)
        return pb.CreateCustomerResponse(customer=customer_to_proto(customer))

    def GetCustomer(
        self, request: pb.GetCustomerRequest, context: grpc.ServicerContext
    ) -> pb.GetCustomerResponse:
        if request.WhichOneof("lookup") == "external_id":
            key = ExternalIdKey(request.external_id.system, request.external_id.id)
            customer = self.profiles.get_by_external_id(key=key)
        else:
            customer = self.profiles.get(customer_id=request.customer_id)
        return pb.GetCustomerResponse(customer=customer_to_proto(customer))

    def BatchGetCustomers(
        self, request: pb.BatchGetCustomersRequest, context: grpc.ServicerContext
    ) -> pb.BatchGetCustomersResponse:
        found = self.profiles.batch_get(customer_ids=list(request.customer_ids))
        return pb.BatchGetCustomersResponse(customers=[customer_to_proto(c) for c in found])

    def ListCustomers(
        self, request: pb.ListCustomersRequest, context: grpc.ServicerContext
    ) -> pb.ListCustomersResponse:
        where = CustomerFilter(
            plan=request.plan,
            tag=request.tag,
            updated_since=(
                timestamp_to_datetime(request.updated_since, "updated_since")
                if request.HasField("updated_since")
                else None
            ),
        )
        page, last_id = self.profiles.list_page(
            where=where,
            after_id=decode_page_token(request.page_token),
            page_size=request.page_size,
        )
        return pb.ListCustomersResponse(
            customers=[customer_to_proto(c) for c in page],
            next_page_token=encode_page_token(last_id) if last_id else "",
        )

    def UpdateCustomer(
        self, request: pb.UpdateCustomerRequest, context: grpc.ServicerContext
    ) -> pb.UpdateCustomerResponse:
        fields, attribute_keys = parse_update_mask(list(request.update_mask.paths))
        incoming_attributes = values_from_proto(request.customer, ["attributes"])["attributes"]
        customer = self.profiles.update(
            customer_id=request.customer.customer_id,
            values=values_from_proto(request.customer, fields),
            attribute_patch={
                k: incoming_attributes[k] for k in attribute_keys if k in incoming_attributes
            },
            removed_attributes=[k for k in attribute_keys if k not in incoming_attributes],
            expected_etag=request.customer.etag,
        )
        return pb.UpdateCustomerResponse(customer=customer_to_proto(customer))

    def DeleteCustomer(
        self, request: pb.DeleteCustomerRequest, context: grpc.ServicerContext
    ) -> pb.DeleteCustomerResponse:
        self.profiles.delete(customer_id=request.customer_id, expected_etag=request.etag)
        return pb.DeleteCustomerResponse()

    def UpsertCustomers(
        self, request: pb.UpsertCustomersRequest, context: grpc.ServicerContext
    ) -> pb.UpsertCustomersResponse:
        records = [
            UpsertInput(values=values_from_proto(message), customer_id=message.customer_id)
            for message in request.customers
        ]
        outcomes = self.profiles.upsert(system=request.external_id_system, records=records)
        response = pb.UpsertCustomersResponse()
        # Added in place: half the cost of building a thousand results and copying them in.
        add_result = response.results.add
        for outcome in outcomes:
            result = add_result(
                index=outcome.index,
                customer_id=outcome.customer_id,
                outcome=_OUTCOMES[outcome.outcome],
            )
            for violation in outcome.violations:
                result.violations.add(field=violation.field, description=violation.description)
        return response

    def AddTags(
        self, request: pb.AddTagsRequest, context: grpc.ServicerContext
    ) -> pb.AddTagsResponse:
        customer = self.profiles.change_tags(customer_id=request.customer_id, add=request.tags)
        return pb.AddTagsResponse(customer=customer_to_proto(customer))

    def RemoveTags(
        self, request: pb.RemoveTagsRequest, context: grpc.ServicerContext
    ) -> pb.RemoveTagsResponse:
        customer = self.profiles.change_tags(customer_id=request.customer_id, remove=request.tags)
        return pb.RemoveTagsResponse(customer=customer_to_proto(customer))

    def RecordUsageEvents(
        self, request: pb.RecordUsageEventsRequest, context: grpc.ServicerContext
    ) -> pb.RecordUsageEventsResponse:
        result = self.profiles.record_usage(events=usage_events_from_proto(request.events))
        return pb.RecordUsageEventsResponse(
            recorded_count=result.recorded, duplicate_count=result.duplicates
        )

    def ListCustomerChanges(
        self, request: pb.ListCustomerChangesRequest, context: grpc.ServicerContext
    ) -> pb.ListCustomerChangesResponse:
        found = self.profiles.list_changes(
            after_sequence=request.after_sequence, page_size=request.page_size
        )
        return pb.ListCustomerChangesResponse(
            changes=[change_to_proto(change) for change in found],
            last_sequence=found[-1].sequence if found else request.after_sequence,
        )

    def GetFieldFreshness(
        self, request: pb.GetFieldFreshnessRequest, context: grpc.ServicerContext
    ) -> pb.GetFieldFreshnessResponse:
        stale_before = (
            timestamp_to_datetime(request.stale_before, "stale_before")
            if request.HasField("stale_before")
            else None
        )
        found = self.profiles.field_freshness(stale_before=stale_before, source=request.source)
        return pb.GetFieldFreshnessResponse(fields=[freshness_to_proto(f) for f in found])
