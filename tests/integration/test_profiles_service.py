"""The profiles service through a real gRPC server on the backend under test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import Engine, func, select, text
from switchboard.profiles.v1 import profiles_pb2 as pb
from switchboard.profiles.v1 import profiles_pb2_grpc

from services.profiles.models import UsageEventRow
from tests.support.rpc import call_error, error_info, field_violations

Stub = profiles_pb2_grpc.ProfileServiceStub


def make_customer(billing_id: str = "cus_1", **fields: object) -> pb.Customer:
    values: dict[str, object] = {
        "external_ids": {"billing": billing_id},
        "email": f"{billing_id}@example.com",
        "display_name": "Ada Moss",
        "company_name": "Acme",
        "plan": "growth",
        "seats": 12,
        "country": "DE",
    }
    values.update(fields)
    return pb.Customer(**values)  # type: ignore[arg-type]


def create(profiles: Stub, **fields: object) -> pb.Customer:
    return profiles.CreateCustomer(
        pb.CreateCustomerRequest(customer=make_customer(**fields))
    ).customer


def usage(customer_id: str, days_ago: float, value: float = 1, event_id: str = "") -> pb.UsageEvent:
    event = pb.UsageEvent(customer_id=customer_id, metric="logins", value=value, event_id=event_id)
    event.time.FromDatetime(datetime.now(UTC) - timedelta(days=days_ago))
    return event


# ---- create and read -------------------------------------------------------------------------


def test_created_customer_reads_back_by_id_and_by_billing_id(profiles: Stub) -> None:
    created = create(
        profiles, billing_id="cus_42", seats=50, arr=60_000.0, timezone="Europe/Berlin"
    )

    assert created.customer_id.startswith("cu_")
    by_id = profiles.GetCustomer(pb.GetCustomerRequest(customer_id=created.customer_id)).customer
    by_billing = profiles.GetCustomer(
        pb.GetCustomerRequest(external_id=pb.ExternalId(system="billing", id="cus_42"))
    ).customer
    assert by_id == by_billing == created
    assert (by_id.seats, by_id.arr, by_id.timezone) == (50, 60_000.0, "Europe/Berlin")
    assert by_id.etag and by_id.HasField("create_time")


def test_caller_chosen_id_is_kept_and_cannot_be_taken_twice(profiles: Stub) -> None:
    create(profiles, customer_id="acme-main")
    error = call_error(lambda: create(profiles, customer_id="acme-main", billing_id="cus_other"))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


def test_an_external_id_belongs_to_one_customer_only(profiles: Stub) -> None:
    create(profiles, billing_id="cus_dup")
    error = call_error(lambda: create(profiles, billing_id="cus_dup"))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "billing:cus_dup" in (error.details() or "")


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"email": "not-an-email"}, "customer.email"),
        ({"country": "XX"}, "customer.country"),
        ({"timezone": "Mars/Olympus"}, "customer.timezone"),
        ({"seats": -1}, "customer.seats"),
        ({"arr": -5.0}, "customer.arr"),
        ({"language": "english please"}, "customer.language"),
        ({"tags": [""]}, "customer.tags[0]"),
        ({"tags": ["x" * 65]}, "customer.tags[0]"),
        ({"customer_id": "no spaces allowed"}, "customer.customer_id"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(
    profiles: Stub, fields: dict[str, object], bad_field: str
) -> None:
    error = call_error(lambda: create(profiles, **fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field in field_violations(error)
    assert profiles.ListCustomers(pb.ListCustomersRequest()).customers == []


def test_every_problem_of_a_request_is_reported_at_once(profiles: Stub) -> None:
    error = call_error(lambda: create(profiles, email="nope", country="ZZ", seats=-3))
    assert set(field_violations(error)) == {"customer.email", "customer.country", "customer.seats"}
    assert error_info(error).reason == "INVALID_ARGUMENT"


def test_missing_customer_is_not_found(profiles: Stub) -> None:
    error = call_error(lambda: profiles.GetCustomer(pb.GetCustomerRequest(customer_id="nobody")))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_batch_get_returns_customers_in_request_order_and_names_a_missing_one(
    profiles: Stub,
) -> None:
    first = create(profiles, billing_id="cus_a")
    second = create(profiles, billing_id="cus_b")
    found = profiles.BatchGetCustomers(
        pb.BatchGetCustomersRequest(customer_ids=[second.customer_id, first.customer_id])
    ).customers
    assert [c.customer_id for c in found] == [second.customer_id, first.customer_id]

    error = call_error(
        lambda: profiles.BatchGetCustomers(
            pb.BatchGetCustomersRequest(customer_ids=[first.customer_id, "ghost"])
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "ghost" in (error.details() or "")


def test_list_filters_by_plan_and_tag_and_pages_through_everything(profiles: Stub) -> None:
    for index in range(7):
        create(profiles, billing_id=f"cus_{index}", plan="starter" if index % 2 else "growth")
    tagged = create(profiles, billing_id="cus_vip", plan="enterprise", tags=["vip"])

    seen: list[str] = []
    token = ""
    while True:
        page = profiles.ListCustomers(pb.ListCustomersRequest(page_size=3, page_token=token))
        seen += [c.customer_id for c in page.customers]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 8
    assert seen == sorted(seen)

    starters = profiles.ListCustomers(pb.ListCustomersRequest(plan="starter")).customers
    assert {c.plan for c in starters} == {"starter"} and len(starters) == 3
    vip = profiles.ListCustomers(pb.ListCustomersRequest(tag="vip")).customers
    assert [c.customer_id for c in vip] == [tagged.customer_id]


def test_list_by_update_time_returns_only_recent_changes(profiles: Stub) -> None:
    old = create(profiles, billing_id="cus_old")
    since = datetime.now(UTC)
    recent = create(profiles, billing_id="cus_new")
    request = pb.ListCustomersRequest()
    request.updated_since.FromDatetime(since)
    found = [c.customer_id for c in profiles.ListCustomers(request).customers]
    assert recent.customer_id in found and old.customer_id not in found


def test_a_forged_page_token_is_invalid_argument(profiles: Stub) -> None:
    error = call_error(lambda: profiles.ListCustomers(pb.ListCustomersRequest(page_token="%%%")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in field_violations(error)


# ---- update and delete -----------------------------------------------------------------------


def test_update_writes_only_masked_fields_and_moves_the_etag(profiles: Stub) -> None:
    created = create(profiles, plan="growth", seats=12)
    changed = profiles.UpdateCustomer(
        pb.UpdateCustomerRequest(
            customer=pb.Customer(customer_id=created.customer_id, plan="enterprise", seats=99),
            update_mask=field_mask_pb2.FieldMask(paths=["plan"]),
        )
    ).customer
    assert (changed.plan, changed.seats) == ("enterprise", 12)
    assert changed.etag != created.etag


def test_update_with_a_stale_etag_is_aborted_and_changes_nothing(profiles: Stub) -> None:
    created = create(profiles)
    mask = field_mask_pb2.FieldMask(paths=["plan"])
    profiles.UpdateCustomer(
        pb.UpdateCustomerRequest(
            customer=pb.Customer(customer_id=created.customer_id, plan="a", etag=created.etag),
            update_mask=mask,
        )
    )
    error = call_error(
        lambda: profiles.UpdateCustomer(
            pb.UpdateCustomerRequest(
                customer=pb.Customer(customer_id=created.customer_id, plan="b", etag=created.etag),
                update_mask=mask,
            )
        )
    )
    assert error.code() == grpc.StatusCode.ABORTED
    stored = profiles.GetCustomer(pb.GetCustomerRequest(customer_id=created.customer_id)).customer
    assert stored.plan == "a"


def test_unknown_or_output_only_mask_paths_are_refused(profiles: Stub) -> None:
    created = create(profiles)
    error = call_error(
        lambda: profiles.UpdateCustomer(
            pb.UpdateCustomerRequest(
                customer=pb.Customer(customer_id=created.customer_id),
                update_mask=field_mask_pb2.FieldMask(paths=["plan", "favourite_colour", "etag"]),
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"update_mask.paths[1]", "update_mask.paths[2]"}


def test_update_can_set_and_clear_single_custom_fields(profiles: Stub) -> None:
    created = create(profiles)
    base = pb.Customer(customer_id=created.customer_id)
    base.attributes.update({"contract_type": "custom", "csm": "Jo"})
    profiles.UpdateCustomer(
        pb.UpdateCustomerRequest(
            customer=base, update_mask=field_mask_pb2.FieldMask(paths=["attributes"])
        )
    )
    patch = pb.Customer(customer_id=created.customer_id)
    patch.attributes.update({"contract_type": "standard"})
    updated = profiles.UpdateCustomer(
        pb.UpdateCustomerRequest(
            customer=patch,
            update_mask=field_mask_pb2.FieldMask(
                paths=["attributes.contract_type", "attributes.csm"]
            ),
        )
    ).customer
    assert dict(updated.attributes) == {"contract_type": "standard"}


def test_clearing_a_field_through_the_mask(profiles: Stub) -> None:
    created = create(profiles, seats=12, region="EMEA")
    updated = profiles.UpdateCustomer(
        pb.UpdateCustomerRequest(
            customer=pb.Customer(customer_id=created.customer_id),
            update_mask=field_mask_pb2.FieldMask(paths=["seats", "region"]),
        )
    ).customer
    assert not updated.HasField("seats") and updated.region == ""


def test_erasure_removes_the_record_its_usage_and_frees_its_ids(
    profiles: Stub, engine: Engine
) -> None:
    created = create(profiles, billing_id="cus_gone", email="secret@example.com", tags=["vip"])
    profiles.RecordUsageEvents(pb.RecordUsageEventsRequest(events=[usage(created.customer_id, 1)]))

    profiles.DeleteCustomer(pb.DeleteCustomerRequest(customer_id=created.customer_id))

    error = call_error(
        lambda: profiles.GetCustomer(pb.GetCustomerRequest(customer_id=created.customer_id))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    with engine.connect() as connection:
        events = connection.execute(select(func.count()).select_from(UsageEventRow)).scalar()
        dump = " ".join(
            str(row)
            for table in ("customers", "customer_external_ids", "customer_tags", "customer_changes")
            for row in connection.execute(text(f"SELECT * FROM {table}"))
        )
    assert events == 0
    assert "secret@example.com" not in dump and "cus_gone" not in dump
    changes = profiles.ListCustomerChanges(pb.ListCustomerChangesRequest()).changes
    assert changes[-1].kind == pb.CHANGE_KIND_DELETED
    assert changes[-1].customer_id == created.customer_id
    # The billing id can be given to a new customer again.
    create(profiles, billing_id="cus_gone")


def test_delete_of_a_missing_customer_is_not_found(profiles: Stub) -> None:
    error = call_error(lambda: profiles.DeleteCustomer(pb.DeleteCustomerRequest(customer_id="x")))
    assert error.code() == grpc.StatusCode.NOT_FOUND


# ---- upsert ----------------------------------------------------------------------------------


def upsert(profiles: Stub, customers: list[pb.Customer]) -> list[pb.UpsertResult]:
    request = pb.UpsertCustomersRequest(external_id_system="billing", customers=customers)
    return list(profiles.UpsertCustomers(request).results)


def test_upsert_creates_then_updates_then_reports_unchanged(profiles: Stub) -> None:
    first = upsert(profiles, [make_customer("cus_1", seats=5), make_customer("cus_2")])
    assert [r.outcome for r in first] == [pb.UPSERT_OUTCOME_CREATED] * 2

    second = upsert(profiles, [make_customer("cus_1", seats=50), make_customer("cus_2")])
    assert [r.outcome for r in second] == [pb.UPSERT_OUTCOME_UPDATED, pb.UPSERT_OUTCOME_UNCHANGED]
    assert [r.customer_id for r in second] == [r.customer_id for r in first]

    stored = profiles.GetCustomer(pb.GetCustomerRequest(customer_id=first[0].customer_id)).customer
    assert stored.seats == 50


def test_sending_the_same_batch_twice_changes_nothing_the_second_time(profiles: Stub) -> None:
    batch = [make_customer(f"cus_{i}", seats=i, attributes={"tier": "x"}) for i in range(20)]
    for customer in batch:
        customer.signup_time.FromDatetime(datetime(2024, 5, 1, tzinfo=UTC))
    upsert(profiles, batch)
    before = profiles.ListCustomerChanges(pb.ListCustomerChangesRequest()).last_sequence
    listing_before = profiles.ListCustomers(pb.ListCustomersRequest(page_size=100)).customers

    again = upsert(profiles, batch)

    assert {r.outcome for r in again} == {pb.UPSERT_OUTCOME_UNCHANGED}
    assert profiles.ListCustomerChanges(pb.ListCustomerChangesRequest()).last_sequence == before
    assert (
        profiles.ListCustomers(pb.ListCustomersRequest(page_size=100)).customers == listing_before
    )


def test_a_bad_record_is_rejected_without_failing_the_good_ones(profiles: Stub) -> None:
    results = upsert(
        profiles,
        [
            make_customer("cus_ok"),
            make_customer("cus_bad", email="broken", seats=-2),
            pb.Customer(email="nokey@example.com"),
            make_customer("cus_ok"),
        ],
    )
    assert [r.outcome for r in results] == [
        pb.UPSERT_OUTCOME_CREATED,
        pb.UPSERT_OUTCOME_REJECTED,
        pb.UPSERT_OUTCOME_REJECTED,
        pb.UPSERT_OUTCOME_REJECTED,
    ]
    assert {v.field for v in results[1].violations} == {"email", "seats"}
    assert results[2].violations[0].field == "external_ids['billing']"
    assert "twice" in results[3].violations[0].description
    assert len(profiles.ListCustomers(pb.ListCustomersRequest()).customers) == 1


def test_a_sync_keeps_agents_tags_and_other_systems_ids(profiles: Stub) -> None:
    created = create(profiles, billing_id="cus_7", external_ids={"billing": "cus_7", "crm": "001"})
    profiles.AddTags(pb.AddTagsRequest(customer_id=created.customer_id, tags=["exec-escalation"]))

    upsert(profiles, [pb.Customer(external_ids={"billing": "cus_7"}, plan="enterprise")])

    stored = profiles.GetCustomer(pb.GetCustomerRequest(customer_id=created.customer_id)).customer
    assert stored.plan == "enterprise"
    assert list(stored.tags) == ["exec-escalation"]
    assert dict(stored.external_ids) == {"billing": "cus_7", "crm": "001"}


def test_upsert_needs_a_key_system(profiles: Stub) -> None:
    error = call_error(
        lambda: profiles.UpsertCustomers(pb.UpsertCustomersRequest(customers=[make_customer()]))
    )
    assert "external_id_system" in field_violations(error)


# ---- tags ------------------------------------------------------------------------------------


def test_tags_behave_as_a_set(profiles: Stub) -> None:
    created = create(profiles)
    tagged = profiles.AddTags(
        pb.AddTagsRequest(
            customer_id=created.customer_id, tags=["sentiment-negative", "vip", "vip"]
        )
    ).customer
    assert list(tagged.tags) == ["sentiment-negative", "vip"]
    again = profiles.AddTags(pb.AddTagsRequest(customer_id=created.customer_id, tags=["vip"]))
    assert again.customer.etag == tagged.etag  # adding a present tag changes nothing
    removed = profiles.RemoveTags(
        pb.RemoveTagsRequest(customer_id=created.customer_id, tags=["vip", "never-there"])
    ).customer
    assert list(removed.tags) == ["sentiment-negative"]


def test_tag_limits(profiles: Stub) -> None:
    created = create(profiles)
    error = call_error(
        lambda: profiles.AddTags(
            pb.AddTagsRequest(customer_id=created.customer_id, tags=["ok", " ", "y" * 65])
        )
    )
    assert set(field_violations(error)) == {"tags[1]", "tags[2]"}
    error = call_error(lambda: profiles.AddTags(pb.AddTagsRequest(customer_id="ghost", tags=["a"])))
    assert error.code() == grpc.StatusCode.NOT_FOUND


# ---- usage and traits ------------------------------------------------------------------------


def test_logins_falling_by_half_show_as_minus_half_week_over_week(profiles: Stub) -> None:
    customer = create(profiles)
    events = [usage(customer.customer_id, days_ago=8 + day, value=10) for day in range(4)]
    events += [usage(customer.customer_id, days_ago=1 + day, value=10) for day in range(2)]
    events.append(usage(customer.customer_id, days_ago=20, value=1000))  # outside both windows
    profiles.RecordUsageEvents(pb.RecordUsageEventsRequest(events=events))

    traits = profiles.GetCustomer(
        pb.GetCustomerRequest(customer_id=customer.customer_id)
    ).customer.traits
    assert traits["logins_7d"] == 20
    assert traits["logins_prev_7d"] == 40
    assert traits["logins_wow_change"] == pytest.approx(-0.5)


def test_no_week_over_week_change_without_a_previous_week(profiles: Stub) -> None:
    customer = create(profiles)
    profiles.RecordUsageEvents(
        pb.RecordUsageEventsRequest(events=[usage(customer.customer_id, days_ago=1)])
    )
    traits = profiles.GetCustomer(
        pb.GetCustomerRequest(customer_id=customer.customer_id)
    ).customer.traits
    assert traits["logins_7d"] == 1 and traits["logins_prev_7d"] == 0
    assert "logins_wow_change" not in traits


def test_events_with_a_known_id_are_recorded_once(profiles: Stub) -> None:
    customer = create(profiles)
    event = usage(customer.customer_id, days_ago=1, event_id="evt-1")
    first = profiles.RecordUsageEvents(pb.RecordUsageEventsRequest(events=[event, event]))
    second = profiles.RecordUsageEvents(pb.RecordUsageEventsRequest(events=[event]))
    assert (first.recorded_count, first.duplicate_count) == (1, 1)
    assert (second.recorded_count, second.duplicate_count) == (0, 1)
    traits = profiles.GetCustomer(
        pb.GetCustomerRequest(customer_id=customer.customer_id)
    ).customer.traits
    assert traits["logins_7d"] == 1


def test_a_bad_event_rejects_the_whole_batch(profiles: Stub, engine: Engine) -> None:
    customer = create(profiles)
    good = usage(customer.customer_id, days_ago=1)
    future = usage(customer.customer_id, days_ago=-2)
    negative = usage(customer.customer_id, days_ago=1, value=-1)
    bad_metric = usage(customer.customer_id, days_ago=1)
    bad_metric.metric = "Log Ins"
    error = call_error(
        lambda: profiles.RecordUsageEvents(
            pb.RecordUsageEventsRequest(events=[good, future, negative, bad_metric])
        )
    )
    assert set(field_violations(error)) == {"events[1].time", "events[2].value", "events[3].metric"}
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(UsageEventRow)).scalar() == 0


def test_usage_for_an_unknown_customer_is_not_found(profiles: Stub) -> None:
    error = call_error(
        lambda: profiles.RecordUsageEvents(pb.RecordUsageEventsRequest(events=[usage("ghost", 1)]))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


# ---- change log ------------------------------------------------------------------------------


def test_change_log_lists_every_kind_of_change_in_order(profiles: Stub) -> None:
    customer = create(profiles)
    cid = customer.customer_id
    profiles.UpdateCustomer(
        pb.UpdateCustomerRequest(
            customer=pb.Customer(customer_id=cid, plan="enterprise"),
            update_mask=field_mask_pb2.FieldMask(paths=["plan"]),
        )
    )
    profiles.AddTags(pb.AddTagsRequest(customer_id=cid, tags=["vip"]))
    profiles.RecordUsageEvents(pb.RecordUsageEventsRequest(events=[usage(cid, 1)]))
    profiles.DeleteCustomer(pb.DeleteCustomerRequest(customer_id=cid))

    log = profiles.ListCustomerChanges(pb.ListCustomerChangesRequest())
    assert [c.kind for c in log.changes] == [
        pb.CHANGE_KIND_CREATED,
        pb.CHANGE_KIND_UPDATED,
        pb.CHANGE_KIND_TAGS_CHANGED,
        pb.CHANGE_KIND_USAGE_RECORDED,
        pb.CHANGE_KIND_DELETED,
    ]
    sequences = [c.sequence for c in log.changes]
    assert sequences == sorted(sequences) and len(set(sequences)) == 5
    assert list(log.changes[1].changed_fields) == ["plan"]
    assert log.last_sequence == sequences[-1]

    tail = profiles.ListCustomerChanges(
        pb.ListCustomerChangesRequest(after_sequence=sequences[2], page_size=1)
    )
    assert [c.sequence for c in tail.changes] == [sequences[3]]


def test_an_update_that_changes_nothing_is_not_logged(profiles: Stub) -> None:
    customer = create(profiles, plan="growth")
    before = profiles.ListCustomerChanges(pb.ListCustomerChangesRequest()).last_sequence
    same = profiles.UpdateCustomer(
        pb.UpdateCustomerRequest(
            customer=pb.Customer(customer_id=customer.customer_id, plan="growth"),
            update_mask=field_mask_pb2.FieldMask(paths=["plan"]),
        )
    ).customer
    assert same.etag == customer.etag
    assert profiles.ListCustomerChanges(pb.ListCustomerChangesRequest()).last_sequence == before


def test_usage_without_a_time_is_refused_rather_than_dated_1970(profiles: Stub) -> None:
    customer = create(profiles)
    undated = pb.UsageEvent(customer_id=customer.customer_id, metric="logins", value=1)
    error = call_error(
        lambda: profiles.RecordUsageEvents(pb.RecordUsageEventsRequest(events=[undated]))
    )
    assert field_violations(error) == {"events[0].time": "is required"}


def test_a_timestamp_no_calendar_has_is_invalid_argument(profiles: Stub) -> None:
    customer = make_customer()
    customer.signup_time.seconds = -(10**15)
    error = call_error(lambda: profiles.CreateCustomer(pb.CreateCustomerRequest(customer=customer)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "customer.signup_time" in field_violations(error)
