"""Rules run as SQL over the customer projection, where their operators allow.

``split_rule`` turns the part of a rule SQL can express exactly into a WHERE clause over
``segment_customers``. A rule is an AND of its keys, so the expressible keys always make a
safe prefilter; when every key is expressible the clause is the whole rule and no row has
to be read into Python. Each translation keeps the rule language's semantics: a missing
number counts as 0 next to a number, a missing value is never equal to anything, and NULLs
are guarded so that ``$not`` and ``$nor`` cannot turn an unknown into a match.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    Table,
    Text,
    and_,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    true,
)

from services.segments.models import CustomerProjectionRow
from services.segments.rules._time import parse_duration

projection: Table = CustomerProjectionRow.__table__  # type: ignore[attr-defined]

NUMBER_COLUMNS = frozenset(
    {"seats", "arr", "employee_count", "annual_revenue", "health_score", "nps"}
)
TEXT_COLUMNS = frozenset(
    {"plan", "country", "region", "industry", "lifecycle_stage", "language", "channel_preference"}
)
_TRAIT = re.compile(r"traits\.([a-z][a-z0-9_]{0,63})\Z")

Clause = ColumnElement[bool]


def split_rule(rule: Any, now: datetime) -> tuple[Clause | None, bool]:
    """A WHERE clause every match satisfies (None if nothing is expressible), and whether
    it is exactly the rule."""
    if not isinstance(rule, dict):
        return None, False
    parts: list[Clause] = []
    exact = True
    for key, value in rule.items():
        if key == "$and" and isinstance(value, list):
            # Conjuncts of a top-level $and are as good as top-level keys.
            for item in value:
                clause, item_exact = split_rule(item, now)
                if clause is not None:
                    parts.append(clause)
                exact = exact and item_exact
            continue
        clause = _condition_entry(key, value, now)
        if clause is None:
            exact = False
        else:
            parts.append(clause)
    if not parts:
        return (true(), True) if exact else (None, False)
    return and_(*parts), exact


def split_references(rule: Any) -> tuple[Any, list[tuple[str, bool]]]:
    """The rule without its top-level segment references, and those references as
    ``(segment_id, wanted)`` (True for ``$inSegment``, False for ``$notInSegment``).

    A rule is an AND of its keys (and of a top-level ``$and``'s items), so a customer
    matches it exactly when it matches the rest and is (or is not) in each referenced
    segment: set operations on customer ids, which need no document read.
    """
    if not isinstance(rule, dict):
        return rule, []
    rest: dict[str, Any] = {}
    references: list[tuple[str, bool]] = []
    for key, value in rule.items():
        if key in ("$inSegment", "$notInSegment") and isinstance(value, str):
            references.append((value, key == "$inSegment"))
        elif key == "$and" and isinstance(value, list):
            items = []
            for item in value:
                item_rest, item_references = split_references(item)
                items.append(item_rest)
                references += item_references
            rest[key] = items
        else:
            rest[key] = value
    return rest, references


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


def document_parts(rule: Any, dialect: str) -> list[tuple[str, ColumnElement[Any]]] | None:
    """The top-level document keys a rule reads, each with a SQL expression for its JSON
    text (NULL when absent), so per-row evaluation reads those parts instead of whole
    documents. None when a key is not a plain identifier: the whole document is read then.

    Field paths sit only at condition level (``$elemMatch`` bodies read inside an item of
    a field already counted), so walking conditions finds every key the rule can read.
    """
    keys: set[str] = set()
    pending = [rule]
    while pending:
        condition = pending.pop()
        if not isinstance(condition, dict):
            continue
        for key, value in condition.items():
            if key in ("$and", "$or", "$nor") and isinstance(value, list):
                pending.extend(value)
            elif key == "$not":
                pending.append(value)
            elif not str(key).startswith("$"):
                keys.add(str(key).split(".")[0])
    if not all(_PLAIN_KEY.match(key) for key in keys):
        return None
    document = projection.c.document
    if dialect == "postgresql":
        return [(key, cast(document.op("->")(literal(key, String)), Text)) for key in sorted(keys)]
    # SQLite's -> returns the JSON text of the value at a path; the key is a plain
    # identifier, so "$.key" needs no quoting. Typed as text so nothing decodes it early.
    arrow = document.op("->", return_type=Text)
    return [(key, arrow(literal(f"$.{key}", String))) for key in sorted(keys)]


def _condition(rule: Any, now: datetime) -> Clause | None:
    clause, exact = split_rule(rule, now)
    return clause if exact else None


def _condition_entry(key: str, value: Any, now: datetime) -> Clause | None:
    if key in ("$and", "$or", "$nor"):
        if not isinstance(value, list):
            return None
        clauses = [_condition(item, now) for item in value]
        if any(clause is None for clause in clauses):
            return None
        present = [c for c in clauses if c is not None]
        if key == "$and":
            return and_(true(), *present)
        if key == "$or":
            return or_(*present) if present else true()
        return not_(or_(*present)) if present else false()
    if key == "$not":
        inner = _condition(value, now)
        return None if inner is None else not_(inner)
    if key.startswith("$"):
        return None
    return _field(key, value, now)


def _column(path: str) -> tuple[Any, str] | None:
    if path in NUMBER_COLUMNS:
        return projection.c[path], "number"
    if path in TEXT_COLUMNS:
        return projection.c[path], "text"
    if path == "signup_time":
        return projection.c.signup_time, "time"
    trait = _TRAIT.match(path)
    if trait:
        # Traits are always numbers (computed by the ProfileService), so a cast is exact.
        return projection.c.document[("traits", trait.group(1))].as_float(), "number"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fits(kind: str, value: Any) -> bool:
    if kind == "number":
        return _is_number(value)
    if kind == "text":
        # An empty string would equal the "unset" of a text field in SQL but not in rules.
        return isinstance(value, str) and value != ""
    return False


def _field(path: str, value: Any, now: datetime) -> Clause | None:
    found = _column(path)
    if found is None:
        return None
    column, kind = found
    if isinstance(value, dict) and value and all(str(k).startswith("$") for k in value):
        clauses = [_operator(column, kind, name, argument, now) for name, argument in value.items()]
        if any(clause is None for clause in clauses):
            return None
        return and_(*[c for c in clauses if c is not None])
    return _equals(column, kind, value)


def _equals(column: Any, kind: str, value: Any) -> Clause | None:
    if not _fits(kind, value):
        return None
    return and_(column.is_not(None), column == value)


def _operator(column: Any, kind: str, name: str, argument: Any, now: datetime) -> Clause | None:
    if name == "$eq":
        return _equals(column, kind, argument)
    if name == "$ne":
        equal = _equals(column, kind, argument)
        return None if equal is None else not_(equal)
    if name in ("$gt", "$gte", "$lt", "$lte"):
        if kind != "number" or not _is_number(argument):
            return None
        value = func.coalesce(column, 0)
        comparisons: dict[str, Clause] = {
            "$gt": value > argument,
            "$gte": value >= argument,
            "$lt": value < argument,
            "$lte": value <= argument,
        }
        return comparisons[name]
    if name in ("$in", "$nin"):
        if not isinstance(argument, list) or not all(_fits(kind, item) for item in argument):
            return None
        member = and_(column.is_not(None), column.in_(argument)) if argument else false()
        return member if name == "$in" else not_(member)
    if name == "$exists" and isinstance(argument, bool):
        present: Clause = column.is_not(None) if argument else column.is_(None)
        return present
    if name in ("$withinLast", "$olderThan") and kind == "time":
        duration = parse_duration(argument)
        if duration is None:
            return None
        bound = now - duration
        if name == "$withinLast":
            return and_(column.is_not(None), column >= bound)
        return and_(column.is_not(None), column < bound)
    return None
