"""Translation between segments protobuf messages and domain values."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from switchboard.profiles.v1 import profiles_pb2
from switchboard.segments.v1 import segments_pb2 as pb

from services.core.errors import FieldViolation, InvalidArgument
from services.core.validation import too_many
from services.segments.domain import (
    EDITABLE_FIELDS,
    ChangeKind,
    Membership,
    MembershipChange,
    RevisionAction,
    Segment,
    SegmentRevision,
)
from services.segments.logic import LintWarning, normalize_rule
from services.segments.rules import Explanation

_ACTIONS = {
    RevisionAction.CREATED: pb.REVISION_ACTION_CREATED,
    RevisionAction.UPDATED: pb.REVISION_ACTION_UPDATED,
    RevisionAction.ROLLED_BACK: pb.REVISION_ACTION_ROLLED_BACK,
}
_KINDS = {
    ChangeKind.ENTERED: pb.MEMBERSHIP_CHANGE_KIND_ENTERED,
    ChangeKind.EXITED: pb.MEMBERSHIP_CHANGE_KIND_EXITED,
}
_LINT_KINDS = {
    "too_many_segments": pb.LINT_WARNING_KIND_TOO_MANY_SEGMENTS,
    "shadowed": pb.LINT_WARNING_KIND_SHADOWED,
    "matches_nobody": pb.LINT_WARNING_KIND_MATCHES_NOBODY,
    "duplicate_overlays": pb.LINT_WARNING_KIND_DUPLICATE_OVERLAYS,
}
_OUTPUT_ONLY = frozenset({"segment_id", "revision", "create_time", "update_time"})
# Paths in one update mask: a Segment has a dozen fields, so a longer mask is never meant.
MAX_MASK_PATHS = 100
# Encoded bytes of any Struct a request carries (a rule, attributes): four times what a
# saved rule may hold as JSON, so every rule within the rule limits passes.
MAX_STRUCT_BYTES = 1_048_576
# The instants a request may name: any business date, and far enough from datetime's
# limits that look-backs, leases and relative-date rules cannot overflow.
EARLIEST_REQUEST_TIME = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_REQUEST_TIME = datetime(3000, 1, 1, tzinfo=UTC)


def struct_to_dict(
    struct: struct_pb2.Struct, field: str, max_bytes: int = MAX_STRUCT_BYTES
) -> dict[str, Any]:
    """A request's Struct as plain JSON values; INVALID_ARGUMENT naming ``field`` when it
    holds a number JSON has no spelling for (NaN, Infinity), or when it is larger than
    ``max_bytes`` encoded: measuring is nearly free, converting megabytes takes seconds."""
    size = struct.ByteSize()
    if size > max_bytes:
        raise InvalidArgument.field(field, f"is {size} bytes as protobuf; the limit is {max_bytes}")
    try:
        converted: dict[str, Any] = json_format.MessageToDict(struct)
    except ValueError as error:
        raise InvalidArgument.field(field, "numbers must be finite (no NaN or Infinity)") from error
    return converted


def dict_to_struct(document: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(_jsonable(document))
    return struct


def to_value(value: Any) -> struct_pb2.Value:
    message = struct_pb2.Value()
    json_format.ParseDict(_jsonable(value), message)
    return message


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp:
    """``moment`` (naive means UTC) as a Timestamp; the empty one for None.

    Computed from the distance to the epoch rather than with ``FromDatetime``, which goes
    through a time tuple and cost a routing decision about as much as its due times."""
    if moment is None:
        return timestamp_pb2.Timestamp()
    since = moment - (_EPOCH if moment.tzinfo is not None else _NAIVE_EPOCH)
    return timestamp_pb2.Timestamp(
        seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)


def optional_time(
    message: Any, name: str, field: str = "", *, any_year: bool = False
) -> datetime | None:
    """A request's timestamp field as an aware datetime, None when unset, INVALID_ARGUMENT
    naming the field (``field``, its path in the request, else ``name``) for a value no
    calendar has or one outside the years 1900-2999. ``any_year`` lifts the range for a
    field the service only reads back (``create_time``) and never computes with."""
    if not message.HasField(name):
        return None
    if any_year:
        return _to_datetime(getattr(message, name), field or name)
    return _request_time(getattr(message, name), field or name)


def times_from_proto(timestamps: Sequence[timestamp_pb2.Timestamp], field: str) -> list[datetime]:
    """Repeated timestamps as datetimes; every impossible one is reported by index."""
    problems: list[FieldViolation] = []
    converted: list[datetime] = []
    for index, message in enumerate(timestamps):
        try:
            converted.append(_request_time(message, f"{field}[{index}]"))
        except InvalidArgument as error:
            problems.extend(error.violations)
    if problems:
        raise InvalidArgument(problems)
    return converted


def _to_datetime(message: timestamp_pb2.Timestamp, field: str) -> datetime:
    try:
        return message.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as error:
        raise InvalidArgument.field(field, "not a valid timestamp") from error


def _request_time(message: timestamp_pb2.Timestamp, field: str) -> datetime:
    moment = _to_datetime(message, field)
    if not EARLIEST_REQUEST_TIME <= moment < LATEST_REQUEST_TIME:
        raise InvalidArgument.field(field, "must be in the years 1900 to 2999")
    return moment


def segment_to_proto(segment: Segment) -> pb.Segment:
    message = pb.Segment(
        segment_id=segment.segment_id,
        display_name=segment.display_name,
        description=segment.description,
        family=segment.family,
        priority=segment.priority,
        enabled=segment.enabled,
        revision=segment.revision,
    )
    message.rule.CopyFrom(dict_to_struct(segment.rule))
    if segment.create_time:
        message.create_time.FromDatetime(segment.create_time)
    if segment.update_time:
        message.update_time.FromDatetime(segment.update_time)
    return message


def definition_from_proto(
    message: pb.Segment, fields: Sequence[str] = EDITABLE_FIELDS
) -> dict[str, Any]:
    """The named editable fields of ``message`` as domain values."""
    values: dict[str, Any] = {}
    for name in fields:
        if name == "rule":
            values["rule"] = normalize_rule(struct_to_dict(message.rule, "segment.rule"))
        else:
            values[name] = getattr(message, name)
    return values


def parse_update_mask(paths: Sequence[str]) -> list[str]:
    too_many("update_mask.paths", len(paths), MAX_MASK_PATHS, "paths")
    problems = []
    for index, path in enumerate(paths):
        if path in _OUTPUT_ONLY:
            problems.append(
                FieldViolation(f"update_mask.paths[{index}]", f"{path!r} cannot be updated")
            )
        elif path not in EDITABLE_FIELDS:
            problems.append(
                FieldViolation(f"update_mask.paths[{index}]", f"{path!r} is not a Segment field")
            )
    if problems:
        raise InvalidArgument(problems)
    return list(dict.fromkeys(paths))


def revision_to_proto(revision: SegmentRevision) -> pb.SegmentRevision:
    return pb.SegmentRevision(
        segment=segment_to_proto(revision.segment),
        actor=revision.actor,
        action=_ACTIONS[revision.action],
        changed_fields=revision.changed_fields,
        restored_revision=revision.restored_revision,
    )


def explanation_to_proto(explanation: Explanation) -> pb.Explanation:
    return pb.Explanation(
        path=explanation.path,
        operator=explanation.operator,
        passed=explanation.passed,
        field=explanation.field or "",
        expected=to_value(explanation.expected),
        actual=to_value(explanation.actual),
        children=[explanation_to_proto(child) for child in explanation.children],
    )


def customer_record(message: profiles_pb2.Customer) -> dict[str, Any]:
    """A profiles Customer as plain values by contract name; unset fields are absent.
    A value no calendar or JSON has (a request's draft customer) is INVALID_ARGUMENT."""
    record: dict[str, Any] = {}
    for descriptor, value in message.ListFields():
        name = descriptor.name
        if isinstance(value, timestamp_pb2.Timestamp):
            record[name] = _to_datetime(value, f"customer.{name}")
        elif isinstance(value, struct_pb2.Struct):
            record[name] = normalize_rule(struct_to_dict(value, f"customer.{name}"))
        elif name == "field_sources":
            record[name] = {
                key: {
                    "source": origin.source,
                    "refresh_time": _to_datetime(
                        origin.refresh_time, f"customer.field_sources.{key}.refresh_time"
                    ),
                }
                for key, origin in value.items()
            }
        elif descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            record[name] = dict(value)
        elif descriptor.is_repeated:
            record[name] = list(value)
        else:
            record[name] = value
    return record


def membership_to_proto(membership: Membership) -> pb.Membership:
    return pb.Membership(
        customer_id=membership.customer_id,
        segment_id=membership.segment_id,
        family=membership.family,
        enter_time=timestamp(membership.enter_time),
        rule_revision=membership.rule_revision,
    )


def change_to_proto(change: MembershipChange) -> pb.MembershipChange:
    return pb.MembershipChange(
        change_id=change.change_id,
        customer_id=change.customer_id,
        segment_id=change.segment_id,
        family=change.family,
        kind=_KINDS[change.kind],
        previous_winner_segment_id=change.previous_winner,
        change_time=timestamp(change.change_time),
        rule_revision=change.rule_revision,
        trigger=change.trigger.value,
    )


def lint_warning_to_proto(warning: LintWarning) -> pb.LintWarning:
    return pb.LintWarning(
        kind=_LINT_KINDS[warning.kind], segment_ids=warning.segment_ids, message=warning.message
    )
