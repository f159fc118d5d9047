"""The segment rule language: GrowthBook conditions plus segment references and dates.

A rule is a JSON condition document with MongoDB-style operators. Evaluation follows the
GrowthBook SDKs' ``evalCondition`` and passes all 248 cases of their shared conformance suite
(``tests/conformance``). Pure logic: no gRPC, SQL, Celery or clock.

Usage::

    rule = compile_rule({"$and": [{"seats": {"$gte": 5}}, {"seats": {"$lt": 50}}]})
    context = EvaluationContext(now=now)
    in_segment = rule.matches(customer_attributes, context)
    why = explain(rule, customer_attributes, context)
    problems = validate_rule(document, field_types={"seats": "integer"})

Conditions. Each key of a condition object must hold. ``$and`` / ``$or`` / ``$nor`` take
arrays of conditions (an empty ``$or`` is true, so an empty ``$nor`` is false), ``$not`` takes
one condition. ``{"$inSegment": "at_risk"}`` / ``{"$notInSegment": ...}`` test membership in
another segment through ``EvaluationContext.segments``; ``referenced_segments``,
``find_segment_cycle`` and ``segment_evaluation_order`` let the caller evaluate those first.
Any other key is a dotted path into the attributes (``traits.logins_wow_change``); a
missing value reads as null.

Field values. A plain value means equality: strings and numbers match as in JavaScript
(``{"seats": "10"}`` matches 10) but never a missing value, ``true``/``false`` test
truthiness of a present value, ``null`` matches missing, arrays and objects compare
structurally. An object whose keys all start with ``$`` is a set of operators:

- ``$eq $ne``: strict equality (no coercion; arrays and objects structurally).
- ``$gt $gte $lt $lte``: JavaScript comparison: numeric strings compare as numbers against
  numbers, strings against strings by code unit, missing counts as 0 next to a number.
- ``$in $nin``: the value (or, for an array value, any item) is in the list; ``$ini $nini``
  ignore case. A non-array argument never matches, for ``$nin`` too.
- ``$all $alli``: an array value has a matching item for every entry; ``$size``: array length
  (a number or nested operators); ``$elemMatch``: some item matches (operators, or a
  condition on object items).
- ``$exists`` (bool), ``$type`` (string number boolean object array null), ``$not``.
- ``$regex $regexi``: search, bounded by ``REGEX_TIMEOUT_SECONDS`` and
  ``MAX_REGEX_INPUT_LENGTH`` (a search that runs out of time counts as no match, and lets
  other threads run meanwhile); a pattern that fails to compile never matches.
- ``$veq $vne $vgt $vgte $vlt $vlte``: semver-like versions (``v1.2.3-rc.1+build``).
- ``$inGroup $notInGroup``: membership in ``EvaluationContext.saved_groups[id]``.
- ``$withinLast "30d"``: the timestamp is at or after ``now - 30 days`` (future included);
  ``$olderThan "14d"``: strictly before ``now - 14 days``. Durations are a positive whole
  number of ``s m h d w``. ``$before``/``$after`` take an absolute ISO-8601 timestamp.
  Values may be ISO-8601 strings or datetimes; naive means UTC; missing or unreadable
  values satisfy none of these.

Unknown operators never match at evaluation time; ``validate_rule`` reports them, with bad
regexes, malformed durations, wrong value kinds for known fields and size limits (nesting,
nodes, array items, JSON bytes, regex operators), at save time. ``compile_rule`` refuses
rules over the nesting, node and array limits with ``RuleTooLargeError``; the byte and regex
limits apply to saving only, so rules stored before them keep evaluating.
"""

from ._compile import (
    CompiledRule,
    EvaluationContext,
    Predicate,
    RuleTooLargeError,
    compile_rule,
)
from ._explain import Explanation, explain
from ._graph import (
    SegmentCycleError,
    find_segment_cycle,
    referenced_segments,
    segment_evaluation_order,
)
from ._limits import (
    MAX_DOCUMENT_BYTES,
    MAX_LIST_ITEMS,
    MAX_REGEX_INPUT_LENGTH,
    MAX_REGEX_OPERATORS,
    MAX_REGEX_PATTERN_LENGTH,
    MAX_RULE_BYTES,
    MAX_RULE_DEPTH,
    MAX_RULE_NODES,
    MAX_TOTAL_LIST_ITEMS,
    REGEX_TIMEOUT_SECONDS,
    document_bytes,
    document_size_problem,
    documents_within,
)
from ._time import parse_duration, parse_timestamp
from ._validate import FieldKind, RuleViolation, validate_rule

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_LIST_ITEMS",
    "MAX_REGEX_INPUT_LENGTH",
    "MAX_REGEX_OPERATORS",
    "MAX_REGEX_PATTERN_LENGTH",
    "MAX_RULE_BYTES",
    "MAX_RULE_DEPTH",
    "MAX_RULE_NODES",
    "MAX_TOTAL_LIST_ITEMS",
    "REGEX_TIMEOUT_SECONDS",
    "CompiledRule",
    "EvaluationContext",
    "Explanation",
    "FieldKind",
    "Predicate",
    "RuleTooLargeError",
    "RuleViolation",
    "SegmentCycleError",
    "compile_rule",
    "document_bytes",
    "document_size_problem",
    "documents_within",
    "explain",
    "find_segment_cycle",
    "parse_duration",
    "parse_timestamp",
    "referenced_segments",
    "segment_evaluation_order",
    "validate_rule",
]
