"""Hostile input through the real servers: rules built to hurt, and requests too big.

Issue 8, "Bad input": a rule nested 10,000 deep, an ``$in`` list of a million items, a rule
of thousands of nodes or dozens of regexes, a regex that backtracks for ever on a long
customer value, segments that reference each other in a loop, a request over the 8 MiB
message limit and batches over their limits. Each is either refused, naming the field and
the limit it broke, or evaluated within a bound (``REGEX_TIMEOUT_SECONDS`` per search) with
a clean answer while the server keeps answering other calls.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2
from google.protobuf.message import Message
from sqlalchemy import Engine
from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.profiles.v1 import profiles_pb2_grpc
from switchboard.reports.v1 import reports_pb2 as rpt
from switchboard.reports.v1 import reports_pb2_grpc
from switchboard.routing.v1 import routing_pb2 as rpb
from switchboard.routing.v1 import routing_pb2_grpc, widgets_pb2_grpc
from switchboard.routing.v1 import widgets_pb2 as wpb
from switchboard.segments.v1 import outreach_pb2 as opb
from switchboard.segments.v1 import outreach_pb2_grpc, segments_pb2_grpc
from switchboard.segments.v1 import segments_pb2 as spb

from services.core.server import MAX_MESSAGE_BYTES, RunningServer, create_server
from services.segments.convert import MAX_STRUCT_BYTES
from services.segments.rules import (
    MAX_DOCUMENT_BYTES,
    MAX_LIST_ITEMS,
    MAX_REGEX_OPERATORS,
    MAX_RULE_BYTES,
    MAX_RULE_DEPTH,
    MAX_RULE_NODES,
    MAX_TOTAL_LIST_ITEMS,
)
from services.segments.server import outreach_spec
from services.widgets.convert import MAX_GREETING_VALUES
from tests.integration.conftest import ManualClock
from tests.integration.routing_setup import (
    Desk,
    action,
    create_customer,
    create_queue,
    create_segment,
    rule,
    set_rules,
    struct,
)
from tests.support.access import gate, keyed_channel
from tests.support.rpc import call_error, field_violations

Profiles = profiles_pb2_grpc.ProfileServiceStub
Segments = segments_pb2_grpc.SegmentServiceStub
Routing = routing_pb2_grpc.RoutingServiceStub
Widgets = widgets_pb2_grpc.WidgetServiceStub

# Entries of a repeated field far past every limit, in a request far under 8 MiB.
HUGE = 100_000
# Protobuf itself refuses messages nested deeper than this when parsing a request.
PROTOBUF_NESTING_LIMIT = 100

# (a+)+$ backtracks exponentially on "aaaa...!"; the "|!" alternative means the pattern
# does match such a value: a search given all the time it needs would find the "!". So a
# long value answering "no match" shows the time bound ended the search, while a short
# one, searched at once, matches.
CATASTROPHIC = "(a+)+$|!"
LONG_NOTE = "a" * 2000 + "!"
SHORT_NOTE = "aaaa!"


# ---- reading refusals --------------------------------------------------------------------------


def limit_misses(cases: Mapping[str, tuple[Callable[[], object], str, int]]) -> dict[str, str]:
    """The cases not refused with INVALID_ARGUMENT whose violation names their field and
    states their limit, each with what happened instead; empty when all were."""
    wrong: dict[str, str] = {}
    for name, (call, field, limit) in cases.items():
        try:
            call()
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                wrong[name] = f"{error.code()}: {(error.details() or '')[:200]}"
                continue
            violations = field_violations(error)
            if field not in violations:
                wrong[name] = f"violations name {sorted(violations)[:5]}, not {field}"
            elif str(limit) not in violations[field]:
                wrong[name] = f"{field}: {violations[field]!r} does not state {limit}"
            continue
        wrong[name] = "accepted"
    return wrong


# ---- rules built to hurt -----------------------------------------------------------------------


def nested_lists(levels: int) -> dict[str, Any]:
    """``{"tags": {"$in": [[[...]]]}}``, nested ``levels`` deep in all. Arrays nest in
    fewer protobuf levels than objects, so this reaches past the rule depth limit and still
    parses inside any request, even UpdateRoutingRules'."""
    items: list[Any] = ["vip"]
    for _ in range(levels - 3):
        items = [items]
    return {"tags": {"$in": items}}


@functools.cache
def hostile_rules() -> dict[str, tuple[struct_pb2.Struct, int]]:
    """Rules past each limit, as Structs (built once: a million items take a second), with
    the number the refusal must state."""
    regexes = {f"attributes.note_{n}": {"$regex": "^a"} for n in range(MAX_REGEX_OPERATORS + 1)}
    long_ids = [f"acct_{n:026d}" for n in range(MAX_LIST_ITEMS)]
    documents: dict[str, tuple[dict[str, Any], int]] = {
        "nested past the depth limit": (nested_lists(MAX_RULE_DEPTH + 1), MAX_RULE_DEPTH),
        "a million-item $in": ({"account_id": {"$in": ["a"] * 1_000_000}}, MAX_STRUCT_BYTES),
        "an $in one past its limit": (
            {"account_id": {"$in": ["a"] * (MAX_LIST_ITEMS + 1)}},
            MAX_LIST_ITEMS,
        ),
        "arrays past the total": (
            {"$or": [{f"id_{n}": {"$in": ["a"] * MAX_LIST_ITEMS}} for n in range(6)]},
            MAX_TOTAL_LIST_ITEMS,
        ),
        "too many nodes": (
            {"$or": [{"seats": n} for n in range(MAX_RULE_NODES // 2 + 1)]},
            MAX_RULE_NODES,
        ),
        "too many regexes": (regexes, MAX_REGEX_OPERATORS),
        "too many bytes": ({"account_id": {"$in": long_ids}}, MAX_RULE_BYTES),
    }
    return {name: (struct(document), limit) for name, (document, limit) in documents.items()}


@dataclass(frozen=True)
class Stubs:
    profiles: Profiles
    segments: Segments
    routing: Routing


@dataclass(frozen=True)
class RuleSurface:
    """An RPC that takes a rule in the rule language: how to send one, where its problems
    are reported, and the path from the request down to the rule's Struct."""

    send: Callable[[Stubs, struct_pb2.Struct], object]
    field: str
    request_type: type[Message]
    path: tuple[str, ...]
    method: str


def _segment(rule_struct: struct_pb2.Struct, segment_id: str = "hostile") -> spb.Segment:
    return spb.Segment(segment_id=segment_id, display_name="Hostile", rule=rule_struct)


def _routing_rules(condition: struct_pb2.Struct) -> rpb.RoutingRules:
    rules = [rpb.RoutingRule(rule_id="hostile", condition=condition, action=action("general"))]
    return rpb.RoutingRules(rules=rules, default_action=action("general"))


SURFACES: dict[str, RuleSurface] = {
    "CreateSegment": RuleSurface(
        lambda stubs, rule_struct: stubs.segments.CreateSegment(
            spb.CreateSegmentRequest(segment=_segment(rule_struct), actor="admin")
        ),
        "segment.rule",
        spb.CreateSegmentRequest,
        ("segment", "rule"),
        "/switchboard.segments.v1.SegmentService/CreateSegment",
    ),
    "UpdateSegment": RuleSurface(
        lambda stubs, rule_struct: stubs.segments.UpdateSegment(
            spb.UpdateSegmentRequest(
                segment=_segment(rule_struct, "existing"),
                update_mask=field_mask_pb2.FieldMask(paths=["rule"]),
            )
        ),
        "segment.rule",
        spb.UpdateSegmentRequest,
        ("segment", "rule"),
        "/switchboard.segments.v1.SegmentService/UpdateSegment",
    ),
    "TestRule": RuleSurface(
        lambda stubs, rule_struct: stubs.segments.TestRule(spb.TestRuleRequest(rule=rule_struct)),
        "rule",
        spb.TestRuleRequest,
        ("rule",),
        "/switchboard.segments.v1.SegmentService/TestRule",
    ),
    "PreviewSegment": RuleSurface(
        lambda stubs, rule_struct: stubs.segments.PreviewSegment(
            spb.PreviewSegmentRequest(segment=_segment(rule_struct))
        ),
        "segment.rule",
        spb.PreviewSegmentRequest,
        ("segment", "rule"),
        "/switchboard.segments.v1.SegmentService/PreviewSegment",
    ),
    "UpdateRoutingRules": RuleSurface(
        lambda stubs, rule_struct: stubs.routing.UpdateRoutingRules(
            rpb.UpdateRoutingRulesRequest(rules=_routing_rules(rule_struct), actor="admin")
        ),
        "rules.rules[0].condition",
        rpb.UpdateRoutingRulesRequest,
        ("rules", "rules", "condition"),
        "/switchboard.routing.v1.RoutingService/UpdateRoutingRules",
    ),
}


@pytest.fixture
def stubs(profiles: Profiles, segments: Segments, routing: Routing) -> Stubs:
    create_segment(segments, "existing", {"seats": {"$gte": 1}})
    create_queue(routing, "general")
    return Stubs(profiles, segments, routing)


@pytest.mark.parametrize("surface_name", sorted(SURFACES))
def test_hostile_rules_are_refused_naming_the_rule_and_the_limit(
    stubs: Stubs, surface_name: str
) -> None:
    surface = SURFACES[surface_name]
    cases = {
        name: (functools.partial(surface.send, stubs, rule_struct), surface.field, limit)
        for name, (rule_struct, limit) in hostile_rules().items()
    }
    assert limit_misses(cases) == {}
    # Nothing was saved: the segment keeps its rule, the routing rules were never set.
    existing = stubs.segments.GetSegment(spb.GetSegmentRequest(segment_id="existing")).segment
    assert dict(existing.rule) == dict(struct({"seats": {"$gte": 1}}))
    assert [
        s.segment_id for s in stubs.segments.ListSegments(spb.ListSegmentsRequest()).segments
    ] == ["existing"]
    assert not stubs.routing.GetRoutingRules(rpb.GetRoutingRulesRequest()).rules.rules


# ---- nesting deeper than protobuf parses -------------------------------------------------------


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    encoded = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        encoded.append(low | 0x80 if value else low)
        if not value:
            return bytes(encoded)


def deeply_nested_struct(levels: int) -> bytes:
    """The wire bytes of ``{"$not": {"$not": ... {"seats": null}}}``, ``levels`` deep: no
    protobuf library builds such a message, but any client can send its bytes."""
    fields, key, value = 1, 1, 2  # Struct.fields entries: key, value
    struct_value = 5  # Value.struct_value
    entry = _length_delimited(key, b"seats") + _length_delimited(value, b"")
    message = _length_delimited(fields, entry)
    for _ in range(levels):
        entry = _length_delimited(key, b"$not") + _length_delimited(
            value, _length_delimited(struct_value, message)
        )
        message = _length_delimited(fields, entry)
    return message


def request_carrying(request_type: type[Message], path: Sequence[str], payload: bytes) -> bytes:
    """Wire bytes of a ``request_type`` whose field at ``path`` holds ``payload``."""
    descriptors = []
    descriptor = request_type.DESCRIPTOR
    for name in path:
        field = descriptor.fields_by_name[name]
        descriptors.append(field)
        descriptor = field.message_type
    for field in reversed(descriptors):
        payload = _length_delimited(field.number, payload)
    return payload


def raw_refusal(channel: grpc.Channel, method: str, data: bytes) -> grpc.RpcError:
    """The error answering ``data`` sent as the request bytes of ``method``."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    return call_error(lambda: call(data))


@pytest.fixture
def raw_channels(
    segments_server: RunningServer, routing_server: RunningServer, admin_key: str
) -> Iterator[dict[str, grpc.Channel]]:
    """Channels that send bytes as they are, to the segments and the routing server."""
    with (
        keyed_channel(f"127.0.0.1:{segments_server.port}", admin_key) as segments_channel,
        keyed_channel(f"127.0.0.1:{routing_server.port}", admin_key) as routing_channel,
    ):
        yield {"segments": segments_channel, "routing": routing_channel}


def _deep_refusals(raw_channels: Mapping[str, grpc.Channel]) -> dict[str, grpc.RpcError]:
    payload = deeply_nested_struct(10_000)
    return {
        name: raw_refusal(
            raw_channels["routing" if "routing" in surface.method else "segments"],
            surface.method,
            request_carrying(surface.request_type, surface.path, payload),
        )
        for name, surface in SURFACES.items()
    }


def test_a_rule_nested_ten_thousand_deep_is_refused_as_a_malformed_request(
    raw_channels: dict[str, grpc.Channel], segments: Segments
) -> None:
    refused = _deep_refusals(raw_channels)
    assert {name: error.code() for name, error in refused.items()} == dict.fromkeys(
        SURFACES, grpc.StatusCode.INVALID_ARGUMENT
    )
    assert all("request" in field_violations(error) for error in refused.values())
    assert segments.ListSegments(spb.ListSegmentsRequest()).segments == []


def test_the_refusal_of_a_ten_thousand_deep_rule_states_the_nesting_limit(
    raw_channels: dict[str, grpc.Channel],
) -> None:
    for error in _deep_refusals(raw_channels).values():
        assert str(PROTOBUF_NESTING_LIMIT) in field_violations(error)["request"]


# ---- a regex that never finishes ---------------------------------------------------------------


@pytest.fixture
def noted_customers(profiles: Profiles) -> tuple[str, str]:
    """A customer whose note makes CATASTROPHIC backtrack, and one whose note it matches."""
    long = create_customer(profiles, "long-note", seats=3, attributes={"note": LONG_NOTE})
    short = create_customer(profiles, "short-note", seats=3, attributes={"note": SHORT_NOTE})
    return long.customer_id, short.customer_id


def _members(segments: Segments, customer_id: str) -> list[str]:
    answer = segments.EvaluateCustomer(spb.EvaluateCustomerRequest(customer_id=customer_id))
    return list(answer.member_segment_ids)


def test_a_catastrophic_regex_is_cut_off_by_its_time_bound_in_every_segment_call(
    segments: Segments, noted_customers: tuple[str, str]
) -> None:
    long_id, short_id = noted_customers
    condition = {"attributes.note": {"$regex": CATASTROPHIC}}

    def test_rule(note: str) -> bool:
        request = spb.TestRuleRequest(
            rule=struct(condition), attributes=struct({"attributes": {"note": note}})
        )
        return segments.TestRule(request).matched

    assert (test_rule(LONG_NOTE), test_rule(SHORT_NOTE)) == (False, True)

    # Saved (the pattern is valid), then evaluated for stored customers.
    create_segment(segments, "noted", condition)
    create_segment(segments, "later_noted", {"seats": {"$gte": 100}})
    segments.UpdateSegment(
        spb.UpdateSegmentRequest(
            segment=spb.Segment(segment_id="later_noted", rule=struct(condition)),
            update_mask=field_mask_pb2.FieldMask(paths=["rule"]),
        )
    )
    assert _members(segments, long_id) == []
    assert _members(segments, short_id) == ["later_noted", "noted"]

    segments.RecomputeMemberships(spb.RecomputeMembershipsRequest(scope=spb.RECOMPUTE_SCOPE_ALL))
    preview = segments.PreviewSegment(
        spb.PreviewSegmentRequest(segment=spb.Segment(rule=struct(condition)), sample_size=10)
    )
    assert (preview.customer_count, preview.matching_count) == (2, 1)
    assert list(preview.sample_customer_ids) == [short_id]


def test_a_routing_rule_with_a_catastrophic_regex_falls_through_for_the_long_value(
    routing: Routing, noted_customers: tuple[str, str], segments_clock: ManualClock
) -> None:
    long_id, short_id = noted_customers
    create_queue(routing, "general")
    create_queue(routing, "noted")
    condition = {"attributes.note": {"$regex": CATASTROPHIC}}
    set_rules(routing, [rule("noted_first", condition, action("noted"))], action("general"))
    desk = Desk(routing, segments_clock)
    long_decision = desk.route("conv-long", customer_id=long_id).decision
    short_decision = desk.route("conv-short", customer_id=short_id).decision
    assert (long_decision.queue_id, long_decision.rule_id) == ("general", "")
    assert (short_decision.queue_id, short_decision.rule_id) == ("noted", "noted_first")


def test_the_server_answers_other_calls_while_regexes_run_out_of_time(
    segments: Segments,
) -> None:
    create_segment(segments, "plain", {"seats": {"$gte": 1}})
    # As many regexes as a rule may hold, each on its own long value: every search runs
    # out of time.
    names = [f"note_{n}" for n in range(MAX_REGEX_OPERATORS)]
    request = spb.TestRuleRequest(
        rule=struct({"$or": [{f"attributes.{name}": {"$regex": CATASTROPHIC}} for name in names]}),
        attributes=struct({"attributes": dict.fromkeys(names, LONG_NOTE)}),
    )
    with ThreadPoolExecutor(max_workers=4) as pool:
        hostile = [pool.submit(segments.TestRule, request) for _ in range(4)]
        cheap = segments.GetSegment(spb.GetSegmentRequest(segment_id="plain"))
        answers = [future.result() for future in hostile]
    assert cheap.segment.segment_id == "plain"
    assert [answer.matched for answer in answers] == [False] * 4
    assert all(
        child.operator == "$regex" and not child.passed
        for answer in answers
        for child in answer.explanation.children
    )


# ---- segments that reference each other --------------------------------------------------------


def test_segment_reference_loops_are_refused_however_they_would_be_made(
    segments: Segments,
) -> None:
    def update(segment_id: str, condition: dict[str, Any]) -> spb.Segment:
        return segments.UpdateSegment(
            spb.UpdateSegmentRequest(
                segment=spb.Segment(segment_id=segment_id, rule=struct(condition)),
                update_mask=field_mask_pb2.FieldMask(paths=["rule"]),
            )
        ).segment

    create_segment(segments, "a", {"seats": {"$gte": 1}})
    create_segment(segments, "b", {"$inSegment": "a"})
    # Revision 2 of "c" references "b"; once "a" references "c", restoring it closes a loop.
    create_segment(segments, "c", {"seats": {"$gte": 1}})
    update("c", {"$inSegment": "b"})
    update("c", {"seats": {"$gte": 2}})
    update("a", {"$inSegment": "c"})

    def cycle(call: Callable[[], object], field: str = "segment.rule") -> str:
        error = call_error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        return field_violations(error)[field]

    refused = {
        "itself": cycle(lambda: create_segment(segments, "loop", {"$inSegment": "loop"})),
        "a -> b -> a": cycle(lambda: update("a", {"$inSegment": "b"})),
        "preview of itself": cycle(
            lambda: segments.PreviewSegment(
                spb.PreviewSegmentRequest(segment=_segment(struct({"$inSegment": "d"}), "d"))
            )
        ),
        "preview of a -> b -> a": cycle(
            lambda: segments.PreviewSegment(
                spb.PreviewSegmentRequest(segment=_segment(struct({"$inSegment": "b"}), "a"))
            )
        ),
        "rollback to c -> b": cycle(
            lambda: segments.RollbackSegment(
                spb.RollbackSegmentRequest(segment_id="c", target_revision=2, actor="admin")
            ),
            "target_revision",
        ),
    }
    assert refused == {
        "itself": "segments reference each other in a cycle: loop -> loop",
        "a -> b -> a": "segments reference each other in a cycle: a -> b -> a",
        "preview of itself": "segments reference each other in a cycle: d -> d",
        "preview of a -> b -> a": "segments reference each other in a cycle: a -> b -> a",
        "rollback to c -> b": "segments reference each other in a cycle: a -> c -> b -> a",
    }
    rules = {
        s.segment_id: s.revision for s in segments.ListSegments(spb.ListSegmentsRequest()).segments
    }
    assert rules == {"a": 2, "b": 1, "c": 3}


# ---- requests over the message limit -----------------------------------------------------------


def test_a_request_over_8_mib_is_resource_exhausted_stating_the_limit_and_the_servers_go_on(
    profiles: Profiles, segments: Segments, routing: Routing, widgets: Widgets
) -> None:
    blob = struct({"blob": "x" * (MAX_MESSAGE_BYTES + 1024)})
    oversized: dict[str, Callable[[], object]] = {
        "CreateCustomer": lambda: profiles.CreateCustomer(
            ppb.CreateCustomerRequest(customer=ppb.Customer(attributes=blob))
        ),
        "TestRule": lambda: segments.TestRule(
            spb.TestRuleRequest(rule=struct({"seats": 1}), attributes=blob)
        ),
        "RouteConversation": lambda: routing.RouteConversation(
            rpb.RouteConversationRequest(
                conversation_id="big", channel=rpb.CHANNEL_CHAT, visitor_attributes=blob
            )
        ),
        "GetWidgetConfig": lambda: widgets.GetWidgetConfig(
            wpb.GetWidgetConfigRequest(visitor=wpb.Visitor(attributes=blob))
        ),
    }
    refused = {name: call_error(call) for name, call in oversized.items()}
    assert {name: error.code() for name, error in refused.items()} == dict.fromkeys(
        oversized, grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert all(str(MAX_MESSAGE_BYTES) in (error.details() or "") for error in refused.values())
    # A million distinct account ids is past the limit too, before any rule limit applies.
    ids = struct({"account_id": {"$in": [f"acct_{n}" for n in range(1_000_000)]}})
    error = call_error(lambda: segments.TestRule(spb.TestRuleRequest(rule=ids)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(MAX_MESSAGE_BYTES) in (error.details() or "")

    created = profiles.CreateCustomer(ppb.CreateCustomerRequest(customer=ppb.Customer(seats=1)))
    assert created.customer.seats == 1
    assert segments.TestRule(spb.TestRuleRequest(rule=struct({"seats": 1}))).explanation
    assert not routing.ListQueues(rpb.ListQueuesRequest()).queues


# ---- batches and repeated fields over their limits ---------------------------------------------


def _now() -> timestamp_pb2.Timestamp:
    moment = timestamp_pb2.Timestamp()
    moment.GetCurrentTime()
    return moment


def test_profiles_batches_and_lists_over_their_limits_are_refused_stating_the_limit(
    profiles: Profiles,
) -> None:
    customer_id = profiles.CreateCustomer(
        ppb.CreateCustomerRequest(customer=ppb.Customer(seats=1))
    ).customer.customer_id
    tags = [f"tag_{n}" for n in range(201)]
    cases = {
        "upsert 1,001 records": (
            lambda: profiles.UpsertCustomers(
                ppb.UpsertCustomersRequest(
                    external_id_system="billing",
                    customers=[
                        ppb.Customer(external_ids={"billing": f"cus_{n}"}) for n in range(1001)
                    ],
                )
            ),
            "customers",
            1000,
        ),
        "get 1,001 customers": (
            lambda: profiles.BatchGetCustomers(
                ppb.BatchGetCustomersRequest(customer_ids=[customer_id] * 1001)
            ),
            "customer_ids",
            1000,
        ),
        # Events without a time: the count is refused before any event is read.
        "record 100,000 usage events": (
            lambda: profiles.RecordUsageEvents(
                ppb.RecordUsageEventsRequest(
                    events=[ppb.UsageEvent(customer_id=customer_id, metric="logins")] * HUGE
                )
            ),
            "events",
            5000,
        ),
        "list 1,001 customers": (
            lambda: profiles.ListCustomers(ppb.ListCustomersRequest(page_size=1001)),
            "page_size",
            1000,
        ),
        "list 10,001 changes": (
            lambda: profiles.ListCustomerChanges(ppb.ListCustomerChangesRequest(page_size=10_001)),
            "page_size",
            10_000,
        ),
        "add 201 tags": (
            lambda: profiles.AddTags(ppb.AddTagsRequest(customer_id=customer_id, tags=tags)),
            "tags",
            200,
        ),
        "create with 201 tags": (
            lambda: profiles.CreateCustomer(
                ppb.CreateCustomerRequest(customer=ppb.Customer(tags=tags))
            ),
            "customer.tags",
            200,
        ),
        "create with 100,000 external ids": (
            lambda: profiles.CreateCustomer(
                ppb.CreateCustomerRequest(
                    customer=ppb.Customer(external_ids={f"system_{n}": "x" for n in range(HUGE)})
                )
            ),
            "customer.external_ids",
            20,
        ),
        "create with 17 KB of attributes": (
            lambda: profiles.CreateCustomer(
                ppb.CreateCustomerRequest(
                    customer=ppb.Customer(attributes=struct({"blob": "x" * 17_000}))
                )
            ),
            "customer.attributes",
            16_384,
        ),
        "update through 100,000 mask paths": (
            lambda: profiles.UpdateCustomer(
                ppb.UpdateCustomerRequest(
                    customer=ppb.Customer(customer_id=customer_id),
                    update_mask=field_mask_pb2.FieldMask(paths=[f"bad_{n}" for n in range(HUGE)]),
                )
            ),
            "update_mask.paths",
            1000,
        ),
    }
    assert limit_misses(cases) == {}


def test_segments_lists_and_documents_over_their_limits_are_refused_stating_the_limit(
    segments: Segments,
) -> None:
    segment_ids = [f"s{n}" for n in range(101)]
    now = _now()
    big_attributes = struct({"attributes": {"blob": "x" * MAX_DOCUMENT_BYTES}})
    cases = {
        "list 1,001 segments": (
            lambda: segments.ListSegments(spb.ListSegmentsRequest(page_size=1001)),
            "page_size",
            1000,
        ),
        "list 1,001 memberships": (
            lambda: segments.ListMemberships(spb.ListMembershipsRequest(page_size=1001)),
            "page_size",
            1000,
        ),
        "sizes of 101 segments": (
            lambda: segments.GetSegmentSizes(
                spb.GetSegmentSizesRequest(segment_ids=segment_ids, times=[now])
            ),
            "segment_ids",
            100,
        ),
        "sizes at 401 instants": (
            lambda: segments.GetSegmentSizes(
                spb.GetSegmentSizesRequest(segment_ids=["s1"], times=[now] * 401)
            ),
            "times",
            400,
        ),
        "retention of 101 segments": (
            lambda: segments.GetRetention(
                spb.GetRetentionRequest(
                    segment_ids=segment_ids,
                    churn_segment_id="churned",
                    start_time=now,
                    end_time=now,
                )
            ),
            "segment_ids",
            100,
        ),
        "test a rule in 100,000 segments": (
            lambda: segments.TestRule(
                spb.TestRuleRequest(
                    rule=struct({"seats": 1}), member_segment_ids=[f"s{n}" for n in range(HUGE)]
                )
            ),
            "member_segment_ids",
            1000,
        ),
        "test a rule on 64 KiB of attributes": (
            lambda: segments.TestRule(
                spb.TestRuleRequest(rule=struct({"seats": 1}), attributes=big_attributes)
            ),
            "attributes",
            MAX_DOCUMENT_BYTES,
        ),
        "evaluate a draft customer of 100,000 tags": (
            lambda: segments.EvaluateCustomer(
                spb.EvaluateCustomerRequest(
                    customer=ppb.Customer(tags=[f"tag_{n}" for n in range(HUGE)])
                )
            ),
            "customer",
            MAX_DOCUMENT_BYTES,
        ),
        "update through 100,000 mask paths": (
            lambda: segments.UpdateSegment(
                spb.UpdateSegmentRequest(
                    segment=spb.Segment(segment_id="s1"),
                    update_mask=field_mask_pb2.FieldMask(paths=[f"bad_{n}" for n in range(HUGE)]),
                )
            ),
            "update_mask.paths",
            100,
        ),
    }
    assert limit_misses(cases) == {}


@pytest.fixture
def outreach(engine: Engine, admin_key: str) -> Iterator[outreach_pb2_grpc.OutreachServiceStub]:
    """The OutreachService, which ``switchboard serve segments`` serves beside segments."""
    running = create_server(
        [outreach_spec(engine)], address="127.0.0.1:0", gate=gate(engine), max_workers=4
    )
    with keyed_channel(f"127.0.0.1:{running.port}", admin_key) as channel:
        yield outreach_pb2_grpc.OutreachServiceStub(channel)
    running.stop(grace=1)


def test_outreach_and_report_lists_over_their_limits_are_refused_stating_the_limit(
    outreach: outreach_pb2_grpc.OutreachServiceStub,
    reports: reports_pb2_grpc.ReportServiceStub,
) -> None:
    now = _now()
    segment_ids = [f"s{n}" for n in range(101)]
    cases = {
        "a subscription requiring 100,000 segments": (
            lambda: outreach.CreateOutreachSubscription(
                opb.CreateOutreachSubscriptionRequest(
                    subscription=opb.OutreachSubscription(
                        segment_id="vip",
                        transition=spb.MEMBERSHIP_CHANGE_KIND_ENTERED,
                        endpoint_id="hook",
                        require_segment_ids=[f"s{n}" for n in range(HUGE)],
                    )
                )
            ),
            "subscription.require_segment_ids",
            20,
        ),
        "list 1,001 deliveries": (
            lambda: outreach.ListDeliveries(opb.ListDeliveriesRequest(page_size=1001)),
            "page_size",
            1000,
        ),
        "a scorecard of 101 segments": (
            lambda: reports.GetScorecard(
                rpt.GetScorecardRequest(segment_ids=segment_ids, start_time=now, end_time=now)
            ),
            "segment_ids",
            100,
        ),
        "the health of 101 segments": (
            lambda: reports.GetSegmentHealth(
                rpt.GetSegmentHealthRequest(segment_ids=segment_ids, start_time=now, end_time=now)
            ),
            "segment_ids",
            100,
        ),
    }
    assert limit_misses(cases) == {}


def test_routing_lists_and_documents_over_their_limits_are_refused_stating_the_limit(
    routing: Routing, widgets: Widgets
) -> None:
    create_queue(routing, "general")
    weekday = rpb.OpenInterval(weekday=rpb.WEEKDAY_MONDAY, start_time="09:00", end_time="17:00")
    big_attributes = struct({"blob": "x" * MAX_DOCUMENT_BYTES})
    names = [f"n{n}" for n in range(51)]
    # Five conditions within the rule limits that together pass the limit of them all.
    wide = struct({"account_id": {"$in": [f"acct_{n:018d}" for n in range(9000)]}})
    cases = {
        # Intervals are compared pairwise for overlaps: 100,000 of them would take hours.
        "a calendar of 100,000 intervals": (
            lambda: routing.CreateCalendar(
                rpb.CreateCalendarRequest(
                    calendar=rpb.Calendar(
                        calendar_id="busy", time_zone="UTC", weekly_hours=[weekday] * HUGE
                    )
                ),
                timeout=60,
            ),
            "calendar.weekly_hours",
            70,
        ),
        "a calendar of 100,000 holidays": (
            lambda: routing.CreateCalendar(
                rpb.CreateCalendarRequest(
                    calendar=rpb.Calendar(
                        calendar_id="off",
                        time_zone="UTC",
                        always_open=True,
                        holidays=["2030-01-01"] * HUGE,
                    )
                )
            ),
            "calendar.holidays",
            1000,
        ),
        "100,000 routing rules": (
            lambda: routing.UpdateRoutingRules(
                rpb.UpdateRoutingRulesRequest(
                    rules=rpb.RoutingRules(
                        rules=[rpb.RoutingRule(rule_id="r")] * HUGE,
                        default_action=action("general"),
                    )
                )
            ),
            "rules.rules",
            500,
        ),
        "a fallback chain of 100,000 steps": (
            lambda: routing.UpdateRoutingRules(
                rpb.UpdateRoutingRulesRequest(
                    rules=rpb.RoutingRules(
                        default_action=rpb.RoutingAction(
                            queue_id="general",
                            fallback_chain=[rpb.RouteStep(queue_id="general")] * HUGE,
                        )
                    )
                )
            ),
            "rules.default_action.fallback_chain",
            10,
        ),
        "rule conditions of 1.2 MB in all": (
            lambda: routing.UpdateRoutingRules(
                rpb.UpdateRoutingRulesRequest(
                    rules=rpb.RoutingRules(
                        rules=[
                            rpb.RoutingRule(
                                rule_id=f"wide_{n}", condition=wide, action=action("general")
                            )
                            for n in range(5)
                        ],
                        default_action=action("general"),
                    )
                )
            ),
            "rules.rules",
            1_048_576,
        ),
        "a queue needing 51 skills": (
            lambda: routing.CreateQueue(
                rpb.CreateQueueRequest(queue=rpb.Queue(queue_id="q", required_skills=names))
            ),
            "queue.required_skills",
            50,
        ),
        "an agent in 51 teams": (
            lambda: routing.CreateAgent(
                rpb.CreateAgentRequest(agent=rpb.Agent(agent_id="ada", teams=names))
            ),
            "agent.teams",
            50,
        ),
        "a visitor of 64 KiB": (
            lambda: routing.RouteConversation(
                rpb.RouteConversationRequest(
                    conversation_id="c", channel=rpb.CHANNEL_CHAT, visitor_attributes=big_attributes
                )
            ),
            "visitor_attributes",
            MAX_DOCUMENT_BYTES,
        ),
        "list 1,001 queues": (
            lambda: routing.ListQueues(rpb.ListQueuesRequest(page_size=1001)),
            "page_size",
            1000,
        ),
        "100,000 widget assignments": (
            lambda: widgets.UpdateWidgetPolicies(
                wpb.UpdateWidgetPoliciesRequest(
                    policies=wpb.WidgetPolicies(
                        assignments=[wpb.WidgetAssignment(segment_id="vip")] * HUGE
                    )
                )
            ),
            "policies.assignments",
            200,
        ),
        "a visitor with 100,000 greeting values": (
            lambda: widgets.GetWidgetConfig(
                wpb.GetWidgetConfigRequest(
                    visitor=wpb.Visitor(greeting_values={f"k{n}": "v" for n in range(HUGE)})
                )
            ),
            "visitor.greeting_values",
            MAX_GREETING_VALUES,
        ),
        "a widget visitor of 64 KiB": (
            lambda: widgets.GetWidgetConfig(
                wpb.GetWidgetConfigRequest(visitor=wpb.Visitor(attributes=big_attributes))
            ),
            "visitor.attributes",
            MAX_DOCUMENT_BYTES,
        ),
        "an escalation policy of 51 keywords": (
            lambda: widgets.CreateEscalationPolicy(
                wpb.CreateEscalationPolicyRequest(
                    policy=wpb.EscalationPolicy(policy_id="p", queue_id="general", keywords=names)
                )
            ),
            "policy.keywords",
            50,
        ),
    }
    assert limit_misses(cases) == {}


def test_refusals_that_would_say_megabytes_reach_the_client_readable(profiles: Profiles) -> None:
    """A refusal travels in trailing metadata, which clients refuse past 16 KiB: thousands
    of violations, or one that echoes a huge value, must be cut, not lost."""
    events = [ppb.UsageEvent(customer_id="", metric="Logins")] * 5000
    many = call_error(
        lambda: profiles.RecordUsageEvents(ppb.RecordUsageEventsRequest(events=events))
    )
    email = "x" * HUGE
    echoed = call_error(
        lambda: profiles.CreateCustomer(
            ppb.CreateCustomerRequest(customer=ppb.Customer(email=email))
        )
    )
    assert (many.code(), echoed.code()) == (grpc.StatusCode.INVALID_ARGUMENT,) * 2
    assert "events[0].time" in field_violations(many)
    assert "customer.email" in field_violations(echoed)


# ---- answers that stay readable ----------------------------------------------------------------


def test_routing_keeps_reading_segments_that_hold_megabytes_of_rules(
    profiles: Profiles,
    segments: Segments,
    routing: Routing,
    segments_clock: ManualClock,
) -> None:
    """Segments of 10,000 account ids each, more than a 4 MiB default gRPC client reads in
    one answer: segments pages them, so routing (which reads them all) keeps routing."""
    count = 18
    for n in range(count):
        ids = [f"acct_{n:02d}_{i:012d}" for i in range(MAX_LIST_ITEMS)]
        create_segment(segments, f"accounts_{n:02d}", {"attributes.account": {"$in": ids}})
    listed: list[spb.Segment] = []
    pages = 0
    token = ""
    while True:
        page = segments.ListSegments(spb.ListSegmentsRequest(page_size=1000, page_token=token))
        listed += page.segments
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert sum(segment.ByteSize() for segment in listed) > 4 * 1024 * 1024
    assert [s.segment_id for s in listed] == [f"accounts_{n:02d}" for n in range(count)]
    assert pages > 1

    create_queue(routing, "general")
    set_rules(routing, [], action("general"))
    customer = create_customer(
        profiles, "listed", seats=3, attributes={"account": "acct_17_000000009999"}
    )
    decision = Desk(routing, segments_clock).route("conv", customer_id=customer.customer_id)
    assert list(decision.decision.segment_ids) == ["accounts_17"]
