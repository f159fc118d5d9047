"""The segments service through real gRPC servers: segments reading a real profiles server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.profiles.v1 import profiles_pb2_grpc
from switchboard.segments.v1 import segments_pb2 as pb
from switchboard.segments.v1 import segments_pb2_grpc

from tests.integration.conftest import ManualClock
from tests.support.rpc import call_error, error_info, field_violations

Segments = segments_pb2_grpc.SegmentServiceStub
Profiles = profiles_pb2_grpc.ProfileServiceStub

TIERS: list[tuple[str, int, dict[str, Any]]] = [
    ("tier_enterprise", 10, {"seats": {"$gte": 50}}),
    ("tier_growth", 20, {"seats": {"$gte": 5}}),
    ("tier_starter", 30, {"seats": {"$gte": 1}}),
]
AT_RISK = {"traits.logins_wow_change": {"$lte": -0.5}}


def struct(document: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(document)
    return message


def create_segment(
    segments: Segments, segment_id: str, rule: dict[str, Any], family: str = "", priority: int = 0
) -> pb.Segment:
    return segments.CreateSegment(
        pb.CreateSegmentRequest(
            segment=pb.Segment(
                segment_id=segment_id,
                display_name=segment_id.replace("_", " ").title(),
                rule=struct(rule),
                family=family,
                priority=priority,
                enabled=True,
            ),
            actor="ada@example.com",
        )
    ).segment


def create_tiers(segments: Segments) -> None:
    for segment_id, priority, rule in TIERS:
        create_segment(segments, segment_id, rule, family="tier", priority=priority)


def create_customer(profiles: Profiles, billing_id: str, **fields: Any) -> ppb.Customer:
    customer = ppb.Customer(external_ids={"billing": billing_id}, **fields)
    return profiles.CreateCustomer(ppb.CreateCustomerRequest(customer=customer)).customer


def set_seats(profiles: Profiles, customer_id: str, seats: int) -> None:
    profiles.UpdateCustomer(
        ppb.UpdateCustomerRequest(
            customer=ppb.Customer(customer_id=customer_id, seats=seats),
            update_mask=field_mask_pb2.FieldMask(paths=["seats"]),
        )
    )


def recompute(
    segments: Segments, scope: int = pb.RECOMPUTE_SCOPE_CHANGED
) -> pb.RecomputeMembershipsResponse:
    return segments.RecomputeMemberships(pb.RecomputeMembershipsRequest(scope=scope))


def members(segments: Segments, customer_id: str) -> set[str]:
    found = segments.ListMemberships(pb.ListMembershipsRequest(customer_id=customer_id))
    return {m.segment_id for m in found.memberships}


def leaves(explanation: pb.Explanation) -> list[pb.Explanation]:
    if not explanation.children:
        return [explanation]
    return [leaf for child in explanation.children for leaf in leaves(child)]


# ---- families and evaluation ---------------------------------------------------------------


def test_a_49_seat_customer_is_growth_not_enterprise(
    segments: Segments, profiles: Profiles
) -> None:
    create_tiers(segments)
    customer = create_customer(profiles, "cus_49", seats=49)

    result = segments.EvaluateCustomer(pb.EvaluateCustomerRequest(customer_id=customer.customer_id))

    assert {w.family: w.segment_id for w in result.winners} == {"tier": "tier_growth"}
    assert list(result.member_segment_ids) == ["tier_growth"]
    verdicts = {e.segment_id: (e.matched, e.member) for e in result.evaluations}
    # Starter's rule matches too, but Growth comes first in the family.
    assert verdicts["tier_starter"] == (True, False)
    assert verdicts["tier_enterprise"] == (False, False)
    enterprise = next(e for e in result.evaluations if e.segment_id == "tier_enterprise")
    assert enterprise.explanation.actual.number_value == 49
    assert enterprise.explanation.expected.number_value == 50


def test_overlays_all_match_alongside_the_family_winner(segments: Segments) -> None:
    create_tiers(segments)
    create_segment(segments, "eu", {"country": {"$in": ["DE", "FR"]}})
    create_segment(
        segments, "big_and_eu", {"$and": [{"$inSegment": "eu"}, {"seats": {"$gte": 50}}]}
    )

    result = segments.EvaluateCustomer(
        pb.EvaluateCustomerRequest(customer=ppb.Customer(customer_id="dry", seats=80, country="DE"))
    )

    assert set(result.member_segment_ids) == {"tier_enterprise", "eu", "big_and_eu"}
    assert result.customer_id == "dry"


def test_unknown_customer_is_not_found_through_the_profiles_service(segments: Segments) -> None:
    error = call_error(
        lambda: segments.EvaluateCustomer(pb.EvaluateCustomerRequest(customer_id="ghost"))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_rule_builder_sees_which_condition_failed_with_the_value_seen(segments: Segments) -> None:
    rule = {"$and": [{"plan": "enterprise"}, {"seats": {"$gt": 100}}]}
    result = segments.TestRule(
        pb.TestRuleRequest(
            rule=struct(rule), attributes=struct({"plan": "enterprise", "seats": 40})
        )
    )
    assert not result.matched
    failed = [leaf for leaf in leaves(result.explanation) if not leaf.passed]
    assert [(f.path, f.field, f.actual.number_value) for f in failed] == [
        ("$.$and[1].seats.$gt", "seats", 40)
    ]


# ---- definitions and revisions ---------------------------------------------------------------


def test_every_change_is_a_revision_saying_who_and_what_and_rollback_restores(
    segments: Segments,
) -> None:
    create_segment(segments, "vip", {"seats": {"$gte": 100}})
    updated = segments.UpdateSegment(
        pb.UpdateSegmentRequest(
            segment=pb.Segment(segment_id="vip", rule=struct({"seats": {"$gte": 200}}), revision=1),
            update_mask=field_mask_pb2.FieldMask(paths=["rule"]),
            actor="bob@example.com",
        )
    ).segment
    assert updated.revision == 2

    history = segments.ListSegmentRevisions(pb.ListSegmentRevisionsRequest(segment_id="vip"))
    newest = history.revisions[0]
    assert (newest.segment.revision, newest.actor, list(newest.changed_fields)) == (
        2,
        "bob@example.com",
        ["rule"],
    )
    first = segments.GetSegment(pb.GetSegmentRequest(segment_id="vip", revision=1)).segment
    assert first.rule == struct({"seats": {"$gte": 100}})

    rolled = segments.RollbackSegment(
        pb.RollbackSegmentRequest(segment_id="vip", target_revision=1, actor="carol")
    ).segment
    assert rolled.revision == 3
    assert rolled.rule == struct({"seats": {"$gte": 100}})
    latest = segments.ListSegmentRevisions(pb.ListSegmentRevisionsRequest(segment_id="vip"))
    assert latest.revisions[0].action == pb.REVISION_ACTION_ROLLED_BACK
    assert latest.revisions[0].restored_revision == 1


def test_an_update_based_on_a_stale_revision_is_aborted(segments: Segments) -> None:
    create_segment(segments, "vip", {"seats": {"$gte": 100}})
    request = pb.UpdateSegmentRequest(
        segment=pb.Segment(segment_id="vip", display_name="VIP", revision=1),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
    )
    segments.UpdateSegment(request)
    error = call_error(lambda: segments.UpdateSegment(request))
    assert error.code() == grpc.StatusCode.ABORTED
    assert error_info(error).reason == "STALE_REVISION"


def test_unknown_segment_is_not_found(segments: Segments) -> None:
    error = call_error(lambda: segments.GetSegment(pb.GetSegmentRequest(segment_id="nope")))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_invalid_rule_is_refused_naming_the_path_inside_it(segments: Segments) -> None:
    rule = {"$and": [{"plan": "growth"}, {"seats": {"$gt": "lots"}}]}
    error = call_error(lambda: create_segment(segments, "bad", rule))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "segment.rule.$and[1].seats.$gt" in field_violations(error)


def test_segments_referencing_each_other_in_a_cycle_are_refused(segments: Segments) -> None:
    create_segment(segments, "a", {"seats": {"$gte": 1}})
    create_segment(segments, "b", {"$inSegment": "a"})
    error = call_error(
        lambda: segments.UpdateSegment(
            pb.UpdateSegmentRequest(
                segment=pb.Segment(segment_id="a", rule=struct({"$inSegment": "b"})),
                update_mask=field_mask_pb2.FieldMask(paths=["rule"]),
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cycle" in field_violations(error)["segment.rule"]


def test_deleting_a_segment_others_build_on_names_them(segments: Segments) -> None:
    create_segment(segments, "eu", {"country": {"$in": ["DE"]}})
    create_segment(segments, "eu_vip", {"$inSegment": "eu"})
    error = call_error(lambda: segments.DeleteSegment(pb.DeleteSegmentRequest(segment_id="eu")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "eu_vip" in (error.details() or "")
    segments.DeleteSegment(pb.DeleteSegmentRequest(segment_id="eu_vip"))
    segments.DeleteSegment(pb.DeleteSegmentRequest(segment_id="eu"))
    assert segments.ListSegments(pb.ListSegmentsRequest()).segments == []


# ---- memberships and recomputation -----------------------------------------------------------


def test_customer_whose_logins_halved_enters_at_risk_with_explanation(
    segments: Segments, profiles: Profiles
) -> None:
    create_segment(segments, "at_risk", AT_RISK)
    # The new segment's own round of everyone (nobody yet), so the next is the customer's.
    assert recompute(segments).evaluated_count == 0
    customer = create_customer(profiles, "cus_fading", seats=10)
    now = datetime.now(UTC)
    events = []
    for days_ago, logins in ((10, 40), (3, 10)):
        event = ppb.UsageEvent(customer_id=customer.customer_id, metric="logins", value=logins)
        event.time.FromDatetime(now - timedelta(days=days_ago))
        events.append(event)
    profiles.RecordUsageEvents(ppb.RecordUsageEventsRequest(events=events))

    summary = recompute(segments)

    assert summary.evaluated_count == 1 and summary.entered_count == 1
    assert members(segments, customer.customer_id) == {"at_risk"}
    changes = segments.ListMembershipChanges(
        pb.ListMembershipChangesRequest(customer_id=customer.customer_id)
    ).changes
    assert [(c.segment_id, c.kind, c.trigger) for c in changes] == [
        ("at_risk", pb.MEMBERSHIP_CHANGE_KIND_ENTERED, "customer_changed")
    ]
    why = segments.EvaluateCustomer(pb.EvaluateCustomerRequest(customer_id=customer.customer_id))
    explanation = why.evaluations[0].explanation
    assert (explanation.field, explanation.passed) == ("traits.logins_wow_change", True)
    assert explanation.actual.number_value == pytest.approx(-0.75)


def test_growing_from_starter_to_growth_records_the_previous_winner_and_migration(
    segments: Segments, profiles: Profiles, segments_clock: ManualClock
) -> None:
    create_tiers(segments)
    growing = create_customer(profiles, "cus_grow", seats=3)
    create_customer(profiles, "cus_steady", seats=2)
    recompute(segments)
    before = segments_clock.now
    segments_clock.advance(timedelta(days=1))
    set_seats(profiles, growing.customer_id, 12)

    summary = recompute(segments)

    assert (summary.evaluated_count, summary.entered_count, summary.exited_count) == (1, 1, 1)
    latest = segments.ListMembershipChanges(
        pb.ListMembershipChangesRequest(
            customer_id=growing.customer_id, start_time=_ts(before + timedelta(hours=1))
        )
    ).changes
    assert {(c.segment_id, c.kind, c.previous_winner_segment_id) for c in latest} == {
        ("tier_starter", pb.MEMBERSHIP_CHANGE_KIND_EXITED, "tier_starter"),
        ("tier_growth", pb.MEMBERSHIP_CHANGE_KIND_ENTERED, "tier_starter"),
    }
    report = segments.GetMigrationReport(
        pb.GetMigrationReportRequest(
            family="tier", start_time=_ts(before), end_time=_ts(segments_clock.now)
        )
    )
    assert [(m.from_segment_id, m.to_segment_id, m.customer_count) for m in report.migrations] == [
        ("tier_starter", "tier_growth", 1)
    ]
    assert dict(report.unchanged_counts) == {"tier_starter": 1}


def test_new_customer_segment_lapses_after_30_days_on_a_full_recompute(
    segments: Segments, profiles: Profiles, segments_clock: ManualClock
) -> None:
    create_segment(segments, "new", {"signup_time": {"$withinLast": "30d"}}, family="lifecycle")
    customer = ppb.Customer(external_ids={"billing": "cus_new"})
    customer.signup_time.FromDatetime(segments_clock.now - timedelta(days=29))
    created = profiles.CreateCustomer(ppb.CreateCustomerRequest(customer=customer)).customer
    recompute(segments)
    assert members(segments, created.customer_id) == {"new"}

    segments_clock.advance(timedelta(days=2))
    assert recompute(segments).evaluated_count == 0  # no data changed...
    summary = recompute(segments, pb.RECOMPUTE_SCOPE_ALL)  # ...but time did

    assert summary.exited_count == 1
    assert members(segments, created.customer_id) == set()


def test_an_erased_customer_exits_everything(segments: Segments, profiles: Profiles) -> None:
    create_tiers(segments)
    customer = create_customer(profiles, "cus_gone", seats=60)
    recompute(segments)
    profiles.DeleteCustomer(ppb.DeleteCustomerRequest(customer_id=customer.customer_id))

    summary = recompute(segments)

    assert (summary.removed_count, summary.exited_count) == (1, 1)
    assert members(segments, customer.customer_id) == set()
    exit_change = segments.ListMembershipChanges(
        pb.ListMembershipChangesRequest(customer_id=customer.customer_id, page_size=1)
    ).changes[0]
    assert exit_change.trigger == "customer_deleted"


# ---- preview and lint ------------------------------------------------------------------------


def test_preview_of_a_changed_tier_counts_who_enters_leaves_and_moves(
    segments: Segments, profiles: Profiles
) -> None:
    create_tiers(segments)
    for index, seats in enumerate([2, 20, 40, 45, 60, 120]):
        create_customer(profiles, f"cus_{index}", seats=seats)
    recompute(segments)

    draft = pb.Segment(
        segment_id="tier_enterprise",
        rule=struct({"seats": {"$gte": 40}}),
        family="tier",
        priority=10,
        enabled=True,
    )
    preview = segments.PreviewSegment(pb.PreviewSegmentRequest(segment=draft, sample_size=5))

    assert (preview.customer_count, preview.matching_count) == (6, 4)
    assert (preview.entering_count, preview.leaving_count) == (2, 0)
    assert [
        (s.from_segment_id, s.to_segment_id, s.customer_count) for s in preview.winner_shifts
    ] == [("tier_growth", "tier_enterprise", 2)]
    assert len(preview.sample_customer_ids) == 4


def test_lint_flags_shadowed_empty_and_duplicate_segments(
    segments: Segments, profiles: Profiles
) -> None:
    create_segment(segments, "paid", {"seats": {"$gte": 1}}, family="value", priority=1)
    create_segment(segments, "big", {"seats": {"$gte": 50}}, family="value", priority=2)
    create_segment(segments, "martians", {"country": "MA"})
    create_segment(segments, "eu", {"country": {"$in": ["DE", "FR"]}})
    create_segment(segments, "europe", {"country": {"$nin": ["US"]}})
    create_customer(profiles, "cus_a", seats=60, country="DE")
    create_customer(profiles, "cus_b", seats=3, country="FR")
    recompute(segments)

    lint = segments.LintSegments(pb.LintSegmentsRequest())

    found = {(w.kind, tuple(w.segment_ids)) for w in lint.warnings}
    assert (pb.LINT_WARNING_KIND_SHADOWED, ("big", "paid")) in found
    assert (pb.LINT_WARNING_KIND_MATCHES_NOBODY, ("martians",)) in found
    assert (pb.LINT_WARNING_KIND_DUPLICATE_OVERLAYS, ("eu", "europe")) in found
    assert not any(w.kind == pb.LINT_WARNING_KIND_TOO_MANY_SEGMENTS for w in lint.warnings)


def _ts(moment: datetime) -> Any:
    from google.protobuf import timestamp_pb2

    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp
