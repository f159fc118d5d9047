"""Strict checks for a rule at save time, each reported at its JSON path.

Evaluation forgives (an unknown operator just never matches) because stored rules must keep
working; saving is where an admin can still fix a typo, so here every doubt is reported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import regex

from ._compile import CONDITION_OPERATORS, FIELD_OPERATORS, is_operator_object
from ._js import is_real_number
from ._limits import MAX_REGEX_PATTERN_LENGTH, measure_rule, storage_problems
from ._paths import child_path, index_path
from ._time import parse_duration, parse_timestamp

FieldKind = Literal["string", "number", "integer", "timestamp", "string_list", "object", "bool"]


@dataclass(frozen=True, slots=True)
class RuleViolation:
    """A problem in a rule: where (``$.$and[1].seats.$gt``) and what, for an admin to read."""

    path: str
    description: str


_COMPARISONS = frozenset({"$gt", "$gte", "$lt", "$lte"})
_MEMBERSHIP = frozenset({"$in", "$nin", "$ini", "$nini"})
_VERSIONS = frozenset({"$veq", "$vne", "$vgt", "$vgte", "$vlt", "$vlte"})
_DATES = frozenset({"$withinLast", "$olderThan", "$before", "$after"})
_ANY_KIND = frozenset({"$eq", "$ne", "$in", "$nin", "$exists", "$type", "$not"}) | {
    "$inGroup",
    "$notInGroup",
}
_APPLICABLE: dict[str, frozenset[str]] = {
    "string": _ANY_KIND | _COMPARISONS | _MEMBERSHIP | _VERSIONS | {"$regex", "$regexi"},
    "number": _ANY_KIND | _COMPARISONS,
    "integer": _ANY_KIND | _COMPARISONS,
    "timestamp": _ANY_KIND | _COMPARISONS | _DATES,
    "bool": _ANY_KIND,
    "string_list": _ANY_KIND | _MEMBERSHIP | {"$all", "$alli", "$size", "$elemMatch"},
    "object": _ANY_KIND,
}
_TYPE_NAMES = frozenset({"string", "number", "boolean", "object", "array", "null", "undefined"})


def _fits(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return is_real_number(value)
    if kind == "integer":
        return type(value) is int or (type(value) is float and value.is_integer())
    if kind == "timestamp":
        return isinstance(value, datetime) or parse_timestamp(value) is not None
    if kind == "bool":
        return type(value) is bool
    if kind == "string_list":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if kind == "object":
        return isinstance(value, dict)
    return True


def _item_kind(kind: str | None) -> str | None:
    # Membership on a list field tests its items, which are strings.
    return "string" if kind == "string_list" else kind


def _show(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def validate_rule(
    condition: Any, *, field_types: Mapping[str, FieldKind] | None = None
) -> list[RuleViolation]:
    """Every problem found in a rule; an empty list means it can be saved.

    ``field_types`` names the customer fields Switchboard knows and their kinds, so
    ``{"seats": {"$gt": "lots"}}`` is caught; other fields (``attributes.*``, ``traits.*``)
    are free-form and only checked for operator syntax. Segment cycles are the caller's to
    check with ``find_segment_cycle``, since they involve other rules.
    """
    size = measure_rule(condition)
    problems = size.problems() or storage_problems(condition, size)
    if problems:
        # Walking a rule over the limits could itself be costly; the sizes say enough.
        return [RuleViolation("$", problem) for problem in problems]
    validator = _Validator(field_types or {})
    validator.condition(condition, "$")
    return validator.violations


class _Validator:
    def __init__(
        self, field_types: Mapping[str, str], violations: list[RuleViolation] | None = None
    ):
        self.field_types = field_types
        self.violations: list[RuleViolation] = [] if violations is None else violations

    def report(self, path: str, description: str) -> None:
        self.violations.append(RuleViolation(path, description))

    def condition(self, condition: Any, path: str) -> None:
        if not isinstance(condition, dict):
            self.report(path, f"expected a condition object, got {_show(condition)}")
            return
        for key, value in condition.items():
            here = child_path(path, str(key))
            if key in ("$and", "$or", "$nor"):
                if not isinstance(value, list):
                    self.report(here, f"{key} takes an array of conditions")
                    continue
                for index, item in enumerate(value):
                    self.condition(item, index_path(here, index))
            elif key == "$not":
                self.condition(value, here)
            elif key in ("$inSegment", "$notInSegment"):
                if not isinstance(value, str) or not value:
                    self.report(here, f"{key} takes a segment id string")
            elif str(key).startswith("$"):
                where = "on a field" if key in FIELD_OPERATORS else "operator"
                self.report(here, f"unknown condition {where}: {key}")
            else:
                self.field_value(str(key), value, here, self.field_types.get(str(key)))

    def field_value(self, field: str, value: Any, path: str, kind: str | None) -> None:
        if is_operator_object(value):
            for name, argument in value.items():
                self.operator(field, str(name), argument, child_path(path, str(name)), kind)
        elif isinstance(value, dict) and any(str(key).startswith("$") for key in value):
            self.report(path, "mixes operators with plain keys; use only operators")
        elif kind is not None and value is not None and not _fits(kind, value):
            self.report(path, f"{_show(value)} is not a valid {kind} for field '{field}'")

    def operator(self, field: str, name: str, argument: Any, path: str, kind: str | None) -> None:
        if name not in FIELD_OPERATORS:
            hint = (
                " (it combines conditions, not field values)" if name in CONDITION_OPERATORS else ""
            )
            self.report(path, f"unknown operator {name}{hint}")
            return
        if kind is not None and name not in _APPLICABLE.get(kind, FIELD_OPERATORS):
            self.report(path, f"{name} does not apply to {kind} field '{field}'")
            return
        check = getattr(self, "_check" + name.replace("$", "_"), None)
        if check is not None:
            check(field, argument, path, kind)
        elif name in _MEMBERSHIP:
            self._check_list(field, argument, path, _item_kind(kind), name)
        elif name in _VERSIONS:
            if not isinstance(argument, str | int | float) or isinstance(argument, bool):
                self.report(path, f'{name} takes a version string such as "1.2.3"')
        elif name in ("$eq", "$ne", *_COMPARISONS):
            if kind is not None and argument is not None and not _fits(kind, argument):
                self.report(path, f"{_show(argument)} is not a valid {kind} for field '{field}'")
            elif name in _COMPARISONS and isinstance(argument, list | dict):
                self.report(path, f"{name} compares with a single value, not {_show(argument)}")

    def _check_list(
        self, field: str, argument: Any, path: str, kind: str | None, name: str
    ) -> None:
        if not isinstance(argument, list):
            self.report(path, f"{name} takes an array, got {_show(argument)}")
            return
        for index, item in enumerate(argument):
            if kind is not None and item is not None and not _fits(kind, item):
                self.report(
                    index_path(path, index),
                    f"{_show(item)} is not a valid {kind} for field '{field}'",
                )

    def _check_all(self, field: str, argument: Any, path: str, kind: str | None) -> None:
        if not isinstance(argument, list):
            self.report(path, f"$all takes an array, got {_show(argument)}")
            return
        for index, item in enumerate(argument):
            self.field_value(field, item, index_path(path, index), _item_kind(kind))

    _check_alli = _check_all

    def _check_size(self, field: str, argument: Any, path: str, _kind: str | None) -> None:
        if is_operator_object(argument):
            self.field_value(f"{field} size", argument, path, "integer")
        elif type(argument) is not int or argument < 0:
            self.report(path, '$size takes a whole number or an operator object such as {"$gt": 2}')

    def _check_elemMatch(self, field: str, argument: Any, path: str, kind: str | None) -> None:
        if not isinstance(argument, dict) or not argument:
            self.report(path, "$elemMatch takes a condition object")
        elif is_operator_object(argument):
            self.field_value(field, argument, path, _item_kind(kind))
        else:
            # Item fields are not customer fields, so the known field kinds do not apply.
            _Validator({}, self.violations).condition(argument, path)

    def _check_exists(self, _field: str, argument: Any, path: str, _kind: str | None) -> None:
        if type(argument) is not bool:
            self.report(path, "$exists takes true or false")

    def _check_type(self, _field: str, argument: Any, path: str, _kind: str | None) -> None:
        if argument not in _TYPE_NAMES:
            self.report(path, f"$type takes one of {', '.join(sorted(_TYPE_NAMES))}")

    def _check_not(self, field: str, argument: Any, path: str, kind: str | None) -> None:
        self.field_value(field, argument, path, kind)

    def _check_regex(self, _field: str, argument: Any, path: str, _kind: str | None) -> None:
        if not isinstance(argument, str):
            self.report(path, "a regex must be a string")
        elif len(argument) > MAX_REGEX_PATTERN_LENGTH:
            self.report(
                path, f"regex is longer than the limit of {MAX_REGEX_PATTERN_LENGTH} characters"
            )
        else:
            try:
                regex.compile(argument)
            except (regex.error, ValueError, OverflowError) as error:
                self.report(path, f"regex does not compile: {error}")

    _check_regexi = _check_regex

    def _check_inGroup(self, _field: str, argument: Any, path: str, _kind: str | None) -> None:
        if not isinstance(argument, str) or not argument:
            self.report(path, "saved group operators take a group id string")

    _check_notInGroup = _check_inGroup

    def _check_withinLast(self, _field: str, argument: Any, path: str, _kind: str | None) -> None:
        if parse_duration(argument) is None:
            self.report(
                path,
                f"malformed duration {_show(argument)}: use a whole number and one of"
                ' s, m, h, d, w, such as "30d", of at most 100 years',
            )

    _check_olderThan = _check_withinLast

    def _check_before(self, _field: str, argument: Any, path: str, _kind: str | None) -> None:
        if not isinstance(argument, str) or parse_timestamp(argument) is None:
            self.report(path, f"{_show(argument)} is not an ISO-8601 timestamp")

    _check_after = _check_before
