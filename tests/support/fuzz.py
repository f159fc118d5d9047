"""Hypothesis strategies for any protobuf request, built from its descriptor.

``requests(descriptor, hints)`` draws well-formed messages of the type full of what careless or
hostile callers send: empty and huge strings, odd unicode, edge and overflowing integers, NaN
and infinities, unknown enum numbers, impossible timestamps and durations, deep JSON in
``Struct`` fields, update masks naming fields that exist and fields that do not, forged page
tokens. ``Hints`` mixes in what exists in the store under test (seeded ids, real records
to start from and alter, rule operators), so a share of the requests gets past "not found"
and "invalid" into the code behind them.

``malformed_bodies(descriptor)`` draws bytes that are not a valid message of the type (or
only barely are): random bytes, truncated messages, invalid UTF-8 in a string field, a
length running past the end. Both are generic, so a new RPC is covered without a line here.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf import descriptor as pb_descriptor
from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2, text_format, timestamp_pb2
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

FD = pb_descriptor.FieldDescriptor

# Message fields nest at most this deep; deeper ones stay unset (recursive types end).
MAX_DEPTH = 4
# Repeated fields and maps hold at most this many items: content is fuzzed here, not the
# size limits of batches.
MAX_ITEMS = 4

_INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}

# Strings that have broken services elsewhere: SQL and LIKE metacharacters, NUL (PostgreSQL
# refuses it in text), right-to-left and zero-width marks, JSON-path and template syntax.
_NASTY_STRINGS = (
    "\x00",
    "a\x00b",
    " ",
    "\t\n",
    "'; DROP TABLE customers; --",
    "%",
    "_",
    "\\",
    "..",
    "../../etc/passwd",
    "a.b.c",
    "$regex",
    "{first_name}",
    "{",
    "}}",
    "\u202egnp.exe",
    "\u200b",
    "e\u0301",
    "\U0001f600",
    "\ufeff",
    "null",
    "NaN",
    "-1",
    "9" * 40,
    "1970-01-01T00:00:00Z",
    "P1D",
    "Europe/Berlin",
    "Mars/Olympus_Mons",
)

# Page tokens as a caller could forge them: the services' tokens are base64 of JSON like
# {"after": <position>}, so these carry positions of every JSON type and edge.
_FORGED_TOKENS = tuple(
    base64.urlsafe_b64encode(document.encode()).decode()
    for document in (
        '{"after": null}',
        '{"after": 1e400}',
        '{"after": NaN}',
        f'{{"after": {2**64}}}',
        '{"after": -1}',
        '{"after": [1, "a"]}',
        '{"after": {"a": 1}}',
        '{"after": "\\u0000"}',
        '{"after": true}',
        '{"before": "a"}',
        "[]",
        "not json",
    )
)

# Seconds and nanos of Timestamp and Duration that the protobuf runtime refuses to convert
# (out of range, nanos of the wrong sign) next to valid edges.
_TIMESTAMP_MIN_SECONDS = -62135596800  # 0001-01-01T00:00:00Z
_TIMESTAMP_MAX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
_DURATION_MAX_SECONDS = 315576000000  # 10,000 years
_TIMESTAMP_EDGES = (
    _TIMESTAMP_MIN_SECONDS,
    _TIMESTAMP_MAX_SECONDS,
    _TIMESTAMP_MIN_SECONDS - 1,
    _TIMESTAMP_MAX_SECONDS + 1,
    0,
    -1,
    2**63 - 1,
    -(2**63),
)
_DURATION_EDGES = (
    _DURATION_MAX_SECONDS,
    -_DURATION_MAX_SECONDS,
    _DURATION_MAX_SECONDS + 1,
    2**63 - 1,
    -(2**63),
)


@dataclass(frozen=True)
class Hints:
    """Values worth sending besides random ones.

    ``strings`` maps a field name (``customer_id``; a repeated ``customer_ids`` also finds
    ``customer_id``) to values that exist in the store under test; the key ``""`` holds
    values any string field may get. ``struct_keys`` are keys worth using in ``Struct``
    fields (rule operators, customer fields). Timestamps cluster around ``anchor``.
    ``seeds`` holds valid messages by full type name (``seeds_from`` collects them from
    answers): a message of such a type is sent as it is, or with a field or two replaced
    by random values, as often as it is drawn from scratch.
    """

    strings: Mapping[str, Sequence[str]] = field(default_factory=dict)
    struct_keys: Sequence[str] = ()
    seeds: Mapping[str, Sequence[Message]] = field(default_factory=dict)
    anchor: datetime = datetime(2025, 1, 1, tzinfo=UTC)

    def strings_for(self, name: str) -> Sequence[str]:
        singular = name[:-1] if name.endswith("s") else name
        return self.strings.get(name) or self.strings.get(singular) or ()


def seeds_from(answers: Iterable[Message], per_type: int = 8) -> dict[str, list[Message]]:
    """Every message inside ``answers`` (nested ones too), by full type name, at most
    ``per_type`` of each: real records make the best starting points for requests."""
    found: dict[str, list[Message]] = {}

    def visit(message: Message) -> None:
        kept = found.setdefault(message.DESCRIPTOR.full_name, [])
        if len(kept) < per_type:
            kept.append(message)
        for member, value in message.ListFields():
            if member.type != FD.TYPE_MESSAGE:
                continue
            if _is_map(member):
                items = list(value.values()) if _is_message_map(member) else []
            else:
                items = list(value) if member.is_repeated else [value]
            for item in items:
                visit(item)

    for answer in answers:
        visit(answer)
    return found


def requests(descriptor: pb_descriptor.Descriptor, hints: Hints) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor``'s type, every field set or not, nested to ``MAX_DEPTH``."""
    return _Builder(hints).message(descriptor, 0)


def malformed_bodies(
    descriptor: pb_descriptor.Descriptor, hints: Hints
) -> st.SearchStrategy[bytes]:
    """Request bodies that are not (or only barely) a valid message of the type."""
    serialized = requests(descriptor, hints).map(lambda message: message.SerializeToString())
    choices: list[st.SearchStrategy[bytes]] = [
        st.binary(max_size=256),
        st.tuples(serialized, st.integers(min_value=1)).map(_truncated),
        # A field whose declared length runs far past the end of the body.
        st.integers(1, 64).map(lambda number: _tag(number, 2) + _varint(2**31) + b"x"),
        # An unterminated varint.
        st.just(b"\x08" + b"\xff" * 11),
    ]
    strings = [f.number for f in descriptor.fields if f.type == FD.TYPE_STRING]
    if strings:
        choices.append(
            st.tuples(st.sampled_from(strings), _invalid_utf8()).map(
                lambda drawn: _tag(drawn[0], 2) + _varint(len(drawn[1])) + drawn[1]
            )
        )
    return st.one_of(choices)


def describe(request: Message | bytes, limit: int = 600) -> str:
    """A request as a person reads it in a failure report, cut at ``limit`` characters."""
    if isinstance(request, bytes):
        text = f"raw bytes {request[:limit]!r}" + (" ..." if len(request) > limit else "")
    else:
        text = text_format.MessageToString(request, as_one_line=True, as_utf8=True)
        text = text or "(empty message)"
    # A 20,000-character string reads better as its length.
    text = re.sub(r"(.)\1{19,}", lambda run: f"<{run.group(1)!r} x {len(run.group(0))}>", text)
    return text if len(text) <= limit else f"{text[:limit]} ... ({len(text)} characters)"


class _Builder:
    """Builds (and caches) the strategy of each message type at each depth."""

    def __init__(self, hints: Hints) -> None:
        self.hints = hints
        self.cache: dict[tuple[str, int], st.SearchStrategy[Message]] = {}
        self.well_known: dict[str, Callable[[int], st.SearchStrategy[Any]]] = {
            timestamp_pb2.Timestamp.DESCRIPTOR.full_name: lambda _depth: self.timestamp(),
            duration_pb2.Duration.DESCRIPTOR.full_name: lambda _depth: self.duration(),
            struct_pb2.Struct.DESCRIPTOR.full_name: self.struct,
            struct_pb2.Value.DESCRIPTOR.full_name: self.value_message,
            struct_pb2.ListValue.DESCRIPTOR.full_name: self.list_value,
        }

    def message(self, descriptor: pb_descriptor.Descriptor, depth: int) -> st.SearchStrategy[Any]:
        key = (descriptor.full_name, depth)
        if key in self.cache:
            return self.cache[key]
        special = self.well_known.get(descriptor.full_name)
        if special is not None:
            strategy: st.SearchStrategy[Any] = special(depth)
        elif depth > MAX_DEPTH:
            strategy = st.builds(GetMessageClass(descriptor))
        else:
            strategy = self._fields(descriptor, depth)
        self.cache[key] = strategy
        return strategy

    def _fields(self, descriptor: pb_descriptor.Descriptor, depth: int) -> st.SearchStrategy[Any]:
        message_class = GetMessageClass(descriptor)
        siblings = _sibling_paths(descriptor)
        every = {member.name: self.field(member, depth, siblings) for member in descriptor.fields}
        optional: dict[str, st.SearchStrategy[Any]] = {}
        oneofs: list[st.SearchStrategy[tuple[str, Any] | None]] = []
        for oneof in descriptor.oneofs:
            if _is_synthetic(oneof):
                continue  # proto3 `optional`: an ordinary field with presence
            members = [
                st.tuples(st.just(member.name), every[member.name]) for member in oneof.fields
            ]
            oneofs.append(st.one_of(st.none(), *members))
        for member in descriptor.fields:
            oneof = member.containing_oneof
            if oneof is None or _is_synthetic(oneof):
                optional[member.name] = every[member.name]

        def assemble(drawn: tuple[dict[str, Any], list[tuple[str, Any] | None]]) -> Message:
            values, chosen = drawn
            message = message_class()
            for name, value in [*values.items(), *(c for c in chosen if c is not None)]:
                _assign(message, descriptor.fields_by_name[name], value)
            return message

        fresh = st.tuples(
            st.fixed_dictionaries({}, optional=optional), st.tuples(*oneofs).map(list)
        ).map(assemble)
        seeds = self.hints.seeds.get(descriptor.full_name)
        if not seeds or not every:
            return fresh

        def mutate(drawn: tuple[Message, list[tuple[str, Any]]]) -> Message:
            seed, changes = drawn
            message = message_class()
            message.CopyFrom(seed)
            for name, value in changes:
                message.ClearField(name)
                _assign(message, descriptor.fields_by_name[name], value)
            return message

        change = st.one_of([st.tuples(st.just(name), value) for name, value in every.items()])
        return st.one_of(
            fresh,
            st.sampled_from(seeds),
            st.tuples(st.sampled_from(seeds), st.lists(change, min_size=1, max_size=2)).map(mutate),
        )

    def field(
        self, member: pb_descriptor.FieldDescriptor, depth: int, siblings: Sequence[str]
    ) -> st.SearchStrategy[Any]:
        if _is_map(member):
            key_field = member.message_type.fields_by_name["key"]
            value_field = member.message_type.fields_by_name["value"]
            return st.dictionaries(
                self.single(key_field, depth, siblings, name=member.name),
                self.single(value_field, depth, siblings, name=member.name),
                max_size=MAX_ITEMS,
            )
        single = self.single(member, depth, siblings)
        if member.is_repeated:
            return st.lists(single, max_size=MAX_ITEMS)
        return single

    def single(
        self,
        member: pb_descriptor.FieldDescriptor,
        depth: int,
        siblings: Sequence[str],
        *,
        name: str | None = None,
    ) -> st.SearchStrategy[Any]:
        """One value of the field's type (an item, for repeated fields and maps)."""
        kind = member.type
        if kind == FD.TYPE_MESSAGE:
            if member.message_type.full_name == field_mask_pb2.FieldMask.DESCRIPTOR.full_name:
                return self.field_mask(siblings)
            return self.message(member.message_type, depth + 1)
        if kind == FD.TYPE_STRING:
            return self.string(name or member.name)
        if kind == FD.TYPE_BYTES:
            return st.binary(max_size=64)
        if kind == FD.TYPE_BOOL:
            return st.booleans()
        if kind in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
            return _floats(single_precision=kind == FD.TYPE_FLOAT)
        if kind == FD.TYPE_ENUM:
            known = [value.number for value in member.enum_type.values]
            return st.one_of(st.sampled_from(known), st.integers(-(2**31), 2**31 - 1))
        low, high = _INT_RANGES[kind]
        return _integers(low, high)

    def string(self, name: str) -> st.SearchStrategy[str]:
        known = [*self.hints.strings_for(name), *self.hints.strings.get("", ())]
        choices: list[st.SearchStrategy[str]] = [
            st.just(""),
            st.from_regex(r"[a-z][a-z0-9_-]{0,20}", fullmatch=True),
            st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
            st.sampled_from(_NASTY_STRINGS),
            # Long strings cost one draw, not one per character.
            st.tuples(st.sampled_from("aé\U0001f600 "), st.integers(65, 20_000)).map(
                lambda drawn: drawn[0] * drawn[1]
            ),
        ]
        if known:
            choices.insert(0, st.sampled_from(known))
        if "token" in name:
            choices.append(st.sampled_from(_FORGED_TOKENS))
        return st.one_of(choices)

    def field_mask(self, siblings: Sequence[str]) -> st.SearchStrategy[Message]:
        path = st.one_of(
            st.sampled_from(siblings) if siblings else st.nothing(),
            st.sampled_from(siblings).map(lambda p: f"{p}.x") if siblings else st.nothing(),
            st.from_regex(r"attributes\.[a-z_]{1,10}", fullmatch=True),
            self.string("update_mask"),
        )
        return st.lists(path, max_size=MAX_ITEMS).map(
            lambda paths: field_mask_pb2.FieldMask(paths=paths)
        )

    def timestamp(self) -> st.SearchStrategy[Message]:
        anchor = int(self.hints.anchor.timestamp())
        seconds = st.one_of(
            st.integers(anchor - 400 * 86400, anchor + 30 * 86400),
            st.integers(0, 4_102_444_800),  # 1970 to 2100
            st.sampled_from(_TIMESTAMP_EDGES),
        )
        nanos = st.one_of(st.just(0), st.integers(0, 999_999_999), st.sampled_from([-1, 10**9]))
        return st.builds(timestamp_pb2.Timestamp, seconds=seconds, nanos=nanos)

    def duration(self) -> st.SearchStrategy[Message]:
        seconds = st.one_of(
            st.integers(0, 90 * 86400),
            st.integers(-86400, 0),
            st.sampled_from(_DURATION_EDGES),
        )
        nanos = st.one_of(st.just(0), st.integers(-999_999_999, 999_999_999), st.just(10**9))
        return st.builds(duration_pb2.Duration, seconds=seconds, nanos=nanos)

    def json(self, depth: int) -> st.SearchStrategy[Any]:
        """A JSON-like document as ``Struct`` holds it (numbers are doubles)."""
        keys = st.one_of(
            st.sampled_from(self.hints.struct_keys) if self.hints.struct_keys else st.nothing(),
            self.string("key"),
        )
        scalars = st.one_of(
            st.none(), st.booleans(), _floats(single_precision=False), self.string("value")
        )
        if depth > MAX_DEPTH:
            return scalars
        return st.recursive(
            scalars,
            lambda inner: st.one_of(
                st.lists(inner, max_size=MAX_ITEMS),
                st.dictionaries(keys, inner, max_size=MAX_ITEMS),
            ),
            max_leaves=12,
        )

    def struct(self, depth: int) -> st.SearchStrategy[Message]:
        keys = st.one_of(
            st.sampled_from(self.hints.struct_keys) if self.hints.struct_keys else st.nothing(),
            self.string("key"),
        )
        return st.dictionaries(keys, self.json(depth + 1), max_size=MAX_ITEMS).map(_to_struct)

    def value_message(self, depth: int) -> st.SearchStrategy[Message]:
        return self.json(depth + 1).map(_to_value)

    def list_value(self, depth: int) -> st.SearchStrategy[Message]:
        return st.lists(self.json(depth + 1), max_size=MAX_ITEMS).map(
            lambda items: _to_value(items).list_value
        )


def _floats(*, single_precision: bool) -> st.SearchStrategy[float]:
    edges = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, -1e308, 5e-324, 2.0**63]
    return st.one_of(
        st.sampled_from(edges),
        st.floats(-1e6, 1e6, width=32 if single_precision else 64),
        st.floats(width=32 if single_precision else 64),
    )


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    candidates = (low, high, 0, 1, -1, 100, 1000, 1001, 2**31 - 1, 2**31, -(2**31) - 1, 2**53 + 1)
    edges = sorted({value for value in candidates if low <= value <= high})
    return st.one_of(
        st.sampled_from(edges),
        st.integers(max(low, -1000), min(high, 1000)),
        st.integers(low, high),
    )


def _invalid_utf8() -> st.SearchStrategy[bytes]:
    return st.sampled_from([b"\xff", b"\xc3", b"a\xed\xa0\x80b", b"\xf8\x88\x80\x80\x80"])


def _to_struct(document: dict[str, Any]) -> Message:
    message = struct_pb2.Struct()
    message.update(document)
    return message


def _to_value(document: Any) -> struct_pb2.Value:
    holder = struct_pb2.Struct()
    holder.update({"v": document})
    return holder.fields["v"]


def _assign(message: Message, member: pb_descriptor.FieldDescriptor, value: Any) -> None:
    target = getattr(message, member.name)
    if _is_map(member):
        value_field = member.message_type.fields_by_name["value"]
        for key, item in value.items():
            if value_field.type == FD.TYPE_MESSAGE:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif member.is_repeated:
        target.extend(value)
    elif member.type == FD.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(message, member.name, value)


def _is_map(member: pb_descriptor.FieldDescriptor) -> bool:
    return member.type == FD.TYPE_MESSAGE and member.message_type.GetOptions().map_entry


def _is_message_map(member: pb_descriptor.FieldDescriptor) -> bool:
    return member.message_type.fields_by_name["value"].type == FD.TYPE_MESSAGE


def _is_synthetic(oneof: pb_descriptor.OneofDescriptor) -> bool:
    # protoc names the oneof of a proto3 `optional` field "_<field>".
    return len(oneof.fields) == 1 and oneof.name == f"_{oneof.fields[0].name}"


def _sibling_paths(descriptor: pb_descriptor.Descriptor) -> list[str]:
    """Field names of the request's message fields: what an ``update_mask`` beside them names."""
    paths: list[str] = []
    for member in descriptor.fields:
        if member.type == FD.TYPE_MESSAGE and not _is_map(member):
            paths.extend(inner.name for inner in member.message_type.fields)
    return paths


def _truncated(drawn: tuple[bytes, int]) -> bytes:
    body, cut = drawn
    return body[: cut % len(body)] if len(body) > 1 else b"\x0a"


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
