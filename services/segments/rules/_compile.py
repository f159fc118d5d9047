"""Compile a rule once into nested closures, so evaluating a customer is only function calls.

Every condition becomes a small node (kept for ``explain``) holding a predicate closure; the
predicates call each other directly, with operator arguments, dotted paths and ``$in`` sets
prepared at compile time. Fast paths cover what segment rules mostly are (a number against a
number, a string in a set) and fall back to the JavaScript coercion in ``_js``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import regex

from ._js import (
    is_real_number,
    js_less_than,
    js_type_name,
    number_to_string,
    strict_equals,
    strict_member,
    string_to_number,
    to_js_string,
    truthy,
)
from ._limits import (
    MAX_REGEX_INPUT_LENGTH,
    MAX_REGEX_PATTERN_LENGTH,
    REGEX_TIMEOUT_SECONDS,
    measure_rule,
)
from ._paths import child_path, index_path
from ._time import as_utc, parse_duration, parse_timestamp
from ._versions import padded_version

Attributes = Mapping[str, Any]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class EvaluationContext:
    """What a rule may depend on besides the customer's attributes.

    ``now`` is the instant relative-date operators measure from (naive means UTC);
    ``segments`` holds the ids of segments the customer is already known to belong to, for
    ``$inSegment``; ``saved_groups`` maps a saved group id to its values, for ``$inGroup``.
    """

    now: datetime
    segments: Container[str] = frozenset()
    saved_groups: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "now", as_utc(self.now))


Predicate = Callable[[Any, EvaluationContext], bool]
ValueTest = Callable[[Any, EvaluationContext], bool]


class RuleTooLargeError(ValueError):
    """A rule exceeds a size limit; ``validate_rule`` reports the same problems by path."""


@dataclass(frozen=True, slots=True, eq=False)
class OperatorNode:
    """One operator applied to the value at a field (``=`` for a plain value)."""

    path: str
    operator: str
    expected: Any
    test: ValueTest
    children: tuple[OperatorNode, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class FieldNode:
    """A field and the operators its value must all satisfy."""

    path: str
    field: str
    get: Callable[[Any], Any]
    operators: tuple[OperatorNode, ...]
    predicate: Predicate


@dataclass(frozen=True, slots=True, eq=False)
class LogicNode:
    """``$and``/``$or``/``$nor``/``$not``, a segment reference, or an unusable condition."""

    path: str
    operator: str
    expected: Any
    children: tuple[ConditionNode, ...]
    predicate: Predicate


ConditionNode = FieldNode | LogicNode


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    """A rule ready to evaluate many customers.

    ``matches(attributes, context)`` is the root closure itself rather than a method, which
    saves a call per customer in bulk evaluation. ``repeatable`` says whether the same
    attributes and segments always get the same verdict: no operator measures from
    ``context.now`` (``$withinLast``, ``$olderThan``) and no regular expression runs against
    a time limit (``$regex``, ``$regexi``: a search cut short counts as no match).
    """

    condition: Any
    root: ConditionNode
    matches: Predicate
    repeatable: bool


def compile_rule(condition: Any) -> CompiledRule:
    """Compile a condition document; raises ``RuleTooLargeError`` past the size limits.

    Like GrowthBook, compilation is lenient: an unknown operator or a broken regex compiles
    to "never matches" instead of failing, because stored rules must keep evaluating.
    ``validate_rule`` is the strict check to run when a rule is saved.
    """
    size = measure_rule(condition)
    problems = size.problems()
    if problems:
        raise RuleTooLargeError("; ".join(problems))
    root = compile_condition(condition, "$")
    return CompiledRule(
        condition=condition,
        root=root,
        matches=root.predicate,
        # Counted over the whole document, ``$elemMatch`` bodies included (they compile
        # into closures the node tree does not show).
        repeatable=not (size.regex_operators or size.clock_operators),
    )


def _always(_value: Any, _context: EvaluationContext) -> bool:
    return True


def _never(_value: Any, _context: EvaluationContext) -> bool:
    return False


def is_operator_object(value: Any) -> bool:
    """GrowthBook's rule: a non-empty object whose keys all start with ``$``."""
    return isinstance(value, dict) and bool(value) and all(str(k).startswith("$") for k in value)


def _all_of(predicates: Sequence[Predicate]) -> Predicate:
    if not predicates:
        return _always
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        first, second = predicates

        def both(value: Any, context: EvaluationContext) -> bool:
            return first(value, context) and second(value, context)

        return both
    frozen = tuple(predicates)

    # Plain loops, not all()/any() over generators: they are cheaper per call, and
    # these run once per customer per rule.
    def every(value: Any, context: EvaluationContext) -> bool:
        for predicate in frozen:  # noqa: SIM110
            if not predicate(value, context):
                return False
        return True

    return every


def _any_of(predicates: Sequence[Predicate]) -> Predicate:
    frozen = tuple(predicates)

    def some(value: Any, context: EvaluationContext) -> bool:
        for predicate in frozen:  # noqa: SIM110
            if predicate(value, context):
                return True
        return False

    return some


def _negate(predicate: Predicate) -> Predicate:
    def negated(value: Any, context: EvaluationContext) -> bool:
        return not predicate(value, context)

    return negated


def compile_condition(condition: Any, path: str) -> ConditionNode:
    """Compile a condition object (the root, an ``$and`` item, an ``$elemMatch`` body...)."""
    if not isinstance(condition, dict):
        return LogicNode(path, "$invalid", condition, (), _never)
    nodes = [_compile_entry(str(key), value, path) for key, value in condition.items()]
    if len(nodes) == 1:
        return nodes[0]
    # Several keys in one object must all hold: an implicit $and at the object's own path.
    return LogicNode(path, "$and", None, tuple(nodes), _all_of([n.predicate for n in nodes]))


def _compile_entry(key: str, value: Any, path: str) -> ConditionNode:
    here = child_path(path, key)
    if key in ("$and", "$or", "$nor"):
        if not isinstance(value, list):
            return LogicNode(here, key, value, (), _never)
        children = tuple(
            compile_condition(item, index_path(here, i)) for i, item in enumerate(value)
        )
        predicates = [child.predicate for child in children]
        if key == "$and":
            predicate = _all_of(predicates)
        elif key == "$or":
            predicate = _any_of(predicates) if predicates else _always
        else:
            # GrowthBook treats an empty $or as true, so an empty $nor is false.
            predicate = _negate(_any_of(predicates)) if predicates else _never
        return LogicNode(here, key, None, children, predicate)
    if key == "$not":
        child = compile_condition(value, here)
        return LogicNode(here, key, None, (child,), _negate(child.predicate))
    if key in ("$inSegment", "$notInSegment"):
        return LogicNode(here, key, value, (), _segment_predicate(key, value))
    return _compile_field(key, value, here)


def _segment_predicate(key: str, segment_id: Any) -> Predicate:
    if not isinstance(segment_id, str):
        return _never

    def in_segment(_attributes: Any, context: EvaluationContext) -> bool:
        return segment_id in context.segments

    return in_segment if key == "$inSegment" else _negate(in_segment)


def _step(current: Any, key: str) -> Any:
    if isinstance(current, Mapping):
        return current.get(key)
    # JS property access reaches array items by index ("tags.0").
    if isinstance(current, list) and key.isdigit() and int(key) < len(current):
        return current[int(key)]
    return None


def make_getter(field_path: str) -> Callable[[Any], Any]:
    """A reader for a dotted path; anything missing along the way reads as None (JS null)."""
    keys = tuple(field_path.split("."))
    if len(keys) == 1:
        only = keys[0]

        def get_one(attributes: Any) -> Any:
            return attributes.get(only) if type(attributes) is dict else _step(attributes, only)

        return get_one
    if len(keys) == 2:
        outer, inner = keys

        def get_two(attributes: Any) -> Any:
            current = (
                attributes.get(outer) if type(attributes) is dict else _step(attributes, outer)
            )
            return current.get(inner) if type(current) is dict else _step(current, inner)

        return get_two

    def get_many(attributes: Any) -> Any:
        current = attributes
        for key in keys:
            current = current.get(key) if type(current) is dict else _step(current, key)
            if current is None:
                return None
        return current

    return get_many


def _compile_field(field_path: str, value: Any, path: str) -> FieldNode:
    operators = compile_value_condition(value, path)
    get = make_getter(field_path)
    keys = field_path.split(".")
    fused = _fused(keys, operators[0]) if len(operators) == 1 and len(keys) <= 2 else None
    if fused is not None:
        return FieldNode(path, field_path, get, operators, fused)
    if len(operators) == 1 and len(keys) == 1:
        # The common case gets one closure that reads the attribute itself: no getter call.
        test = operators[0].test
        key = keys[0]

        def single(attributes: Any, context: EvaluationContext) -> bool:
            if type(attributes) is dict:
                return test(attributes.get(key), context)
            return test(_step(attributes, key), context)

        return FieldNode(path, field_path, get, operators, single)
    value_test = _all_of([op.test for op in operators])

    def predicate(attributes: Any, context: EvaluationContext) -> bool:
        return value_test(get(attributes), context)

    return FieldNode(path, field_path, get, operators, predicate)


_NUMERIC_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}


def _fused(keys: Sequence[str], node: OperatorNode) -> Predicate | None:
    """One closure that reads a one- or two-key path and decides the common cases inline
    (a number, or a missing value, which JS reads as 0, against a number; a string equal to
    a string), or None when the rule has no such shape. Any other value goes to the
    operator's own test, so results are unchanged; this only saves the calls that dominate
    bulk evaluation."""
    # The four closures below repeat the path read on purpose: a shared reader would be
    # the very call they exist to save.
    expected, fallback = node.expected, node.test
    outer, inner = (keys[0], None) if len(keys) == 1 else keys
    if node.operator in _NUMERIC_COMPARISONS and is_real_number(expected):
        compare = _NUMERIC_COMPARISONS[node.operator]
        if inner is None:

            def number_at_key(attributes: Any, context: EvaluationContext) -> bool:
                value = (
                    attributes.get(outer) if type(attributes) is dict else _step(attributes, outer)
                )
                if type(value) is int or type(value) is float:
                    return compare(value, expected)
                if value is None:
                    return compare(0, expected)
                return fallback(value, context)

            return number_at_key

        def number_at_path(attributes: Any, context: EvaluationContext) -> bool:
            current = (
                attributes.get(outer) if type(attributes) is dict else _step(attributes, outer)
            )
            value = current.get(inner) if type(current) is dict else _step(current, inner)
            if type(value) is int or type(value) is float:
                return compare(value, expected)
            if value is None:
                return compare(0, expected)
            return fallback(value, context)

        return number_at_path
    if node.operator == "=" and type(expected) is str:
        if inner is None:

            def string_at_key(attributes: Any, context: EvaluationContext) -> bool:
                value = (
                    attributes.get(outer) if type(attributes) is dict else _step(attributes, outer)
                )
                if type(value) is str:
                    return value == expected
                return fallback(value, context)

            return string_at_key

        def string_at_path(attributes: Any, context: EvaluationContext) -> bool:
            current = (
                attributes.get(outer) if type(attributes) is dict else _step(attributes, outer)
            )
            value = current.get(inner) if type(current) is dict else _step(current, inner)
            if type(value) is str:
                return value == expected
            return fallback(value, context)

        return string_at_path
    return None


def compile_value_condition(expected: Any, path: str) -> tuple[OperatorNode, ...]:
    """Operators for what a field (or array item, or size) must satisfy."""
    if is_operator_object(expected):
        return tuple(
            _compile_operator(str(name), argument, child_path(path, str(name)))
            for name, argument in expected.items()
        )
    return (OperatorNode(path, "=", expected, _literal_test(expected)),)


def _combined_test(operators: tuple[OperatorNode, ...]) -> ValueTest:
    return _all_of([op.test for op in operators])


def _compile_operator(name: str, expected: Any, path: str) -> OperatorNode:
    if name == "$not":
        inner = compile_value_condition(expected, path)
        return OperatorNode(path, name, expected, _negate(_combined_test(inner)), inner)
    factory = _FACTORIES.get(name)
    # Unknown operators never match (GrowthBook logs and returns false); validate_rule
    # rejects them at save time.
    test = factory(expected, path) if factory is not None else _never
    return OperatorNode(path, name, expected, test)


# --- plain values -------------------------------------------------------------------------


def _literal_test(expected: Any) -> ValueTest:
    """``{"field": value}``: JS-style equality for scalars, structural for arrays/objects.

    A string or number condition matches a number or string that converts to it
    (``{"seats": "10"}`` matches 10), as in JS, but never a missing value: JS would turn
    null into "null" or 0, which no rule author means.
    """
    if expected is None:
        return lambda value, _context: value is None
    if type(expected) is bool:
        return lambda value, _context: value is not None and truthy(value) is expected
    if type(expected) is str:

        def equals_string(value: Any, _context: EvaluationContext) -> bool:
            if type(value) is str:
                return value == expected
            if type(value) in (int, float, bool):
                return to_js_string(value) == expected
            return False

        return equals_string
    if is_real_number(expected):

        def equals_number(value: Any, _context: EvaluationContext) -> bool:
            if type(value) is int or type(value) is float:
                return bool(value == expected)
            if type(value) is bool:
                return bool((1 if value else 0) == expected)
            if type(value) is str and value.strip():
                return bool(string_to_number(value) == expected)
            return False

        return equals_number
    return lambda value, _context: strict_equals(value, expected)


# --- operator factories -------------------------------------------------------------------

Factory = Callable[[Any, str], ValueTest]


def _eq(expected: Any, _path: str) -> ValueTest:
    if type(expected) is str:
        return lambda value, _context: type(value) is str and value == expected
    return lambda value, _context: strict_equals(value, expected)


def _ne(expected: Any, path: str) -> ValueTest:
    return _negate(_eq(expected, path))


def _relational(fast: Callable[[Any, Any], bool], slow: Callable[[Any, Any], bool]) -> Factory:
    """``$gt`` and friends: plain Python comparison when both sides are real numbers."""

    def factory(expected: Any, _path: str) -> ValueTest:
        if is_real_number(expected):

            def numeric(value: Any, _context: EvaluationContext) -> bool:
                if type(value) is int or type(value) is float:
                    return fast(value, expected)
                return slow(value, expected)

            return numeric
        return lambda value, _context: slow(value, expected)

    return factory


class _Membership:
    """An ``$in`` list split for fast lookup while keeping JS ``includes`` semantics.

    bools live apart from numbers because Python says ``True == 1`` and JS does not.
    """

    __slots__ = ("bools", "others", "scalars")

    def __init__(self, candidates: list[Any], fold: Callable[[Any], Any]) -> None:
        folded = [fold(candidate) for candidate in candidates]
        self.scalars = frozenset(c for c in folded if c is None or type(c) in (str, int, float))
        self.bools = frozenset(c for c in folded if type(c) is bool)
        self.others = [c for c in folded if isinstance(c, list | dict)]

    def __contains__(self, value: Any) -> bool:
        kind = type(value)
        if value is None or kind is str or kind is int or kind is float:
            return value in self.scalars
        if kind is bool:
            return value in self.bools
        return bool(self.others) and strict_member(value, self.others)


def _identity(value: Any) -> Any:
    return value


def _lower(value: Any) -> Any:
    return value.lower() if type(value) is str else value


def _membership(fold: Callable[[Any], Any], negate: bool) -> Factory:
    """``$in``/``$nin``/``$ini``/``$nini``: an array value matches if any item is listed."""

    def factory(expected: Any, _path: str) -> ValueTest:
        if not isinstance(expected, list):
            return _never
        members = _Membership(expected, fold)
        scalars = members.scalars
        # Strings are most attribute values; without folding they go straight to the set.
        plain_strings = fold is _identity

        def is_in(value: Any, _context: EvaluationContext) -> bool:
            if plain_strings and type(value) is str:
                return value in scalars
            if type(value) is list:
                return any(fold(item) in members for item in value)
            return fold(value) in members

        return _negate(is_in) if negate else is_in

    return factory


def _all(fold: Callable[[Any], Any]) -> Factory:
    """``$all``: every expected entry (a value or operator object) matches some array item."""

    def factory(expected: Any, path: str) -> ValueTest:
        if not isinstance(expected, list):
            return _never
        tests = [
            _combined_test(compile_value_condition(fold(item), index_path(path, i)))
            for i, item in enumerate(expected)
        ]

        def has_all(value: Any, context: EvaluationContext) -> bool:
            if type(value) is not list:
                return False
            items = [fold(item) for item in value]
            return all(any(test(item, context) for item in items) for test in tests)

        return has_all

    return factory


def _size(expected: Any, path: str) -> ValueTest:
    test = _combined_test(compile_value_condition(expected, path))
    return lambda value, context: type(value) is list and test(len(value), context)


def _as_attributes(item: Any) -> Any:
    # A nested condition reads item fields; non-objects have none, like JS property access.
    if isinstance(item, Mapping | list):
        return item
    return {}


def _elem_match(expected: Any, path: str) -> ValueTest:
    """Some array item matches: operators test the item, other objects are conditions on it.

    Unlike the JS SDK, falsy items (0, "") are tested too, so ``{"$elemMatch": {"$eq": 0}}``
    matches ``[0]``, as the Python SDK does.
    """
    if is_operator_object(expected):
        item_test = _combined_test(compile_value_condition(expected, path))
    else:
        condition = compile_condition(expected, path).predicate

        def item_test(item: Any, context: EvaluationContext) -> bool:
            return condition(_as_attributes(item), context)

    return lambda value, context: (
        type(value) is list and any(item_test(item, context) for item in value)
    )


def _exists(expected: Any, _path: str) -> ValueTest:
    if truthy(expected):
        return lambda value, _context: value is not None
    return lambda value, _context: value is None


def _type(expected: Any, _path: str) -> ValueTest:
    return lambda value, _context: js_type_name(value) == expected


def _regex(flags: int) -> Factory:
    """``$regex``: a search (not a full match), bounded in input length and time.

    The ``regex`` package is used instead of ``re`` for its per-search ``timeout``: a
    catastrophic pattern such as ``(a+)+$`` costs at most the timeout and counts as no
    match. RE2 would rule backtracking out entirely, but it rejects lookarounds and
    backreferences that JS (and so GrowthBook rules) allow.
    """

    def factory(expected: Any, _path: str) -> ValueTest:
        if not isinstance(expected, str) or len(expected) > MAX_REGEX_PATTERN_LENGTH:
            return _never
        try:
            search = regex.compile(expected, flags).search
        except (regex.error, ValueError, OverflowError):
            return _never

        def matches(value: Any, _context: EvaluationContext) -> bool:
            if type(value) is not str:
                if type(value) is not int and type(value) is not float:
                    return False
                value = number_to_string(value)
            if len(value) > MAX_REGEX_INPUT_LENGTH:
                return False
            try:
                # concurrent: the search lets go of the GIL, so a slow one stalls only
                # its own call, not every other call the server is answering.
                return search(value, timeout=REGEX_TIMEOUT_SECONDS, concurrent=True) is not None
            except TimeoutError:
                return False

        return matches

    return factory


def _version(compare: Callable[[str, str], bool]) -> Factory:
    def factory(expected: Any, _path: str) -> ValueTest:
        target = padded_version(expected)
        return lambda value, _context: compare(padded_version(value), target)

    return factory


def _saved_group(negate: bool) -> Factory:
    def factory(expected: Any, _path: str) -> ValueTest:
        def in_group(value: Any, context: EvaluationContext) -> bool:
            members = list(context.saved_groups.get(expected, ()))
            if type(value) is list:
                return any(strict_member(item, members) for item in value)
            return strict_member(value, members)

        return _negate(in_group) if negate else in_group

    return factory


def _relative_date(within: bool) -> Factory:
    """``$withinLast``/``$olderThan``: the value is at or after ``now - duration`` (or before).

    A timestamp in the future counts as within, so clock skew cannot drop a new signup from
    "signed up within the last 30 days"; a missing or unreadable value satisfies neither.
    """

    def factory(expected: Any, _path: str) -> ValueTest:
        duration = parse_duration(expected)
        if duration is None:
            return _never

        # (now, now - duration) for the last ``now`` seen: bulk evaluation shares one
        # context, so the boundary is computed once, not per customer. One tuple, replaced
        # whole, so a thread never sees a boundary for another ``now``.
        boundary: list[tuple[datetime | None, datetime]] = [(None, _EPOCH)]

        def test(value: Any, context: EvaluationContext) -> bool:
            if type(value) is str and 10 <= len(value) <= 64:
                # parse_timestamp inlined for the common case, the ISO string of a projection.
                try:
                    moment = datetime.fromisoformat(value)
                except ValueError:
                    return False
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
            else:
                parsed = parse_timestamp(value)
                if parsed is None:
                    return False
                moment = parsed
            now = context.now
            cached = boundary[0]
            if cached[0] is not now:
                cached = (now, now - duration)
                boundary[0] = cached
            return (moment >= cached[1]) is within

        return test

    return factory


def _absolute_date(compare: Callable[[datetime, datetime], bool]) -> Factory:
    def factory(expected: Any, _path: str) -> ValueTest:
        boundary = parse_timestamp(expected)
        if boundary is None:
            return _never

        def test(value: Any, _context: EvaluationContext) -> bool:
            moment = parse_timestamp(value)
            return moment is not None and compare(moment, boundary)

        return test

    return factory


_FACTORIES: dict[str, Factory] = {
    "$eq": _eq,
    "$ne": _ne,
    "$gt": _relational(operator.gt, lambda value, expected: js_less_than(expected, value) is True),
    "$gte": _relational(
        operator.ge, lambda value, expected: js_less_than(value, expected) is False
    ),
    "$lt": _relational(operator.lt, lambda value, expected: js_less_than(value, expected) is True),
    "$lte": _relational(
        operator.le, lambda value, expected: js_less_than(expected, value) is False
    ),
    "$in": _membership(_identity, negate=False),
    "$nin": _membership(_identity, negate=True),
    "$ini": _membership(_lower, negate=False),
    "$nini": _membership(_lower, negate=True),
    "$all": _all(_identity),
    "$alli": _all(_lower),
    "$size": _size,
    "$elemMatch": _elem_match,
    "$exists": _exists,
    "$type": _type,
    "$regex": _regex(0),
    "$regexi": _regex(regex.IGNORECASE),
    "$veq": _version(operator.eq),
    "$vne": _version(operator.ne),
    "$vgt": _version(operator.gt),
    "$vgte": _version(operator.ge),
    "$vlt": _version(operator.lt),
    "$vlte": _version(operator.le),
    "$inGroup": _saved_group(negate=False),
    "$notInGroup": _saved_group(negate=True),
    "$withinLast": _relative_date(within=True),
    "$olderThan": _relative_date(within=False),
    "$before": _absolute_date(operator.lt),
    "$after": _absolute_date(operator.gt),
}

FIELD_OPERATORS = frozenset([*_FACTORIES, "$not"])
"""Operators that apply to a field's value."""

CONDITION_OPERATORS = frozenset(["$and", "$or", "$nor", "$not", "$inSegment", "$notInSegment"])
"""Operators that combine conditions or test segment membership."""
