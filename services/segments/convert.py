"""Translation between segments protobuf messages and domain values."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from switchboard.profiles.v1 import profiles_pb2
from switchboard.segments.v1 import segments_pb2 as pb

from services.core.errors import FieldViolation, InvalidArgument
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


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    converted: dict[str, Any] = json_format.MessageToDict(struct)
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
    message = timestamp_pb2.Timestamp()
    if moment is not None:
        message.FromDatetime(moment)
    return message


def optional_time(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    moment: datetime = getattr(message, name).ToDatetime(tzinfo=UTC)
    return moment


def checked_time(message: Any, name: str) -> datetime | None:
    """A timestamp field as an aware datetime, None when unset, INVALID_ARGUMENT naming the
    field for a value no calendar has."""
    if not message.HasField(name):
        return None
    return _to_datetime(getattr(message, name), name)


def times_from_proto(timestamps: Sequence[timestamp_pb2.Timestamp], field: str) -> list[datetime]:
    """Repeated timestamps as datetimes; every impossible one is reported by index."""
    problems: list[FieldViolation] = []
    converted: list[datetime] = []
    for index, message in enumerate(timestamps):
        try:
            converted.append(_to_datetime(message, f"{field}[{index}]"))
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
            values["rule"] = normalize_rule(struct_to_dict(message.rule))
        else:
            values[name] = getattr(message, name)
    return values


def parse_update_mask(paths: Sequence[str]) -> list[str]:
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
    """A profiles Customer as plain values by contract name; unset fields are absent."""
    record: dict[str, Any] = {}
    for descriptor, value in message.ListFields():
        name = descriptor.name
        if isinstance(value, timestamp_pb2.Timestamp):
            record[name] = value.ToDatetime(tzinfo=UTC)
        elif isinstance(value, struct_pb2.Struct):
            record[name] = normalize_rule(struct_to_dict(value))
        elif name == "field_sources":
            record[name] = {
                field: {
                    "source": origin.source,
                    "refresh_time": origin.refresh_time.ToDatetime(UTC),
                }
                for field, origin in value.items()
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
