"""Rules of segmentation: what a valid segment is, what a customer looks like to a rule,
who wins a family, which transitions a new evaluation makes, and what lint warns about.

Pure functions: no I/O, no gRPC, no SQL, no clock (callers pass ``now``), so they are tested
in isolation and shared by the gRPC service, recomputation and workers.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from types import CodeType
from typing import Any

from services.core.errors import FieldViolation, InvalidArgument
from services.segments.domain import ChangeKind, MembershipChange, Segment
from services.segments.rules import (
    CompiledRule,
    EvaluationContext,
    FieldKind,
    Predicate,
    compile_rule,
    find_segment_cycle,
    referenced_segments,
    segment_evaluation_order,
    validate_rule,
)

SEGMENT_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
FAMILY_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
MAX_DISPLAY_NAME = 200
MAX_DESCRIPTION = 2000
PRIORITY_RANGE = (-1_000_000, 1_000_000)
# Teams stop trusting segmentation past this many live segments (issue 3).
MAX_TRUSTWORTHY_SEGMENTS = 10

# The customer fields rules can name, with their kinds, so that a rule comparing seats
# with "lots" is refused when saved. ``attributes.*`` and ``traits.*`` are free-form.
RULE_FIELD_TYPES: dict[str, FieldKind] = {
    "customer_id": "string",
    "email": "string",
    "display_name": "string",
    "company_name": "string",
    "plan": "string",
    "seats": "integer",
    "arr": "number",
    "employee_count": "integer",
    "annual_revenue": "number",
    "industry": "string",
    "country": "string",
    "region": "string",
    "timezone": "string",
    "language": "string",
    "signup_time": "timestamp",
    "lifecycle_stage": "string",
    "health_score": "number",
    "nps": "integer",
    "channel_preference": "string",
    "tags": "string_list",
    "attributes": "object",
    "traits": "object",
    "field_sources": "object",
    "create_time": "timestamp",
    "update_time": "timestamp",
}
# Customer fields that carry no meaning for a rule.
_NOT_ATTRIBUTES = frozenset({"etag", "external_ids"})


# ---- validation ------------------------------------------------------------------------------


def validate_segment_id(segment_id: str, field: str = "segment.segment_id") -> list[FieldViolation]:
    if not SEGMENT_ID_PATTERN.match(segment_id):
        return [
            FieldViolation(
                field, "must be 1-64 lowercase letters, digits, '_' or '-', starting with a letter"
            )
        ]
    return []


def validate_definition(
    values: Mapping[str, Any], prefix: str = "segment."
) -> list[FieldViolation]:
    """Every problem with the given editable fields, named ``prefix + field`` (rule problems
    at their JSON path inside the rule, e.g. ``segment.rule.$and[1].seats.$gt``)."""
    problems: list[FieldViolation] = []
    if len(values.get("display_name", "")) > MAX_DISPLAY_NAME:
        problems.append(
            FieldViolation(prefix + "display_name", f"at most {MAX_DISPLAY_NAME} characters")
        )
    if len(values.get("description", "")) > MAX_DESCRIPTION:
        problems.append(
            FieldViolation(prefix + "description", f"at most {MAX_DESCRIPTION} characters")
        )
    family = values.get("family", "")
    if family and not FAMILY_PATTERN.match(family):
        problems.append(
            FieldViolation(
                prefix + "family", "1-64 lowercase letters, digits, '_' or '-', or empty"
            )
        )
    priority = values.get("priority", 0)
    if not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
        problems.append(
            FieldViolation(
                prefix + "priority", f"must be between {PRIORITY_RANGE[0]} and {PRIORITY_RANGE[1]}"
            )
        )
    if "rule" in values:
        problems += validate_rule_document(values["rule"], prefix + "rule")
    return problems


def validate_rule_document(rule: Any, field: str) -> list[FieldViolation]:
    """A rule's problems with their paths rebased onto the request field."""
    return [
        FieldViolation(field + violation.path.removeprefix("$"), violation.description)
        for violation in validate_rule(rule, field_types=RULE_FIELD_TYPES)
    ]


def validate_references(
    segment_id: str, rule: Any, others: Mapping[str, Any], field: str = "segment.rule"
) -> list[FieldViolation]:
    """Unknown segments named by ``$inSegment`` and reference cycles, given the other
    segments' rules by id."""
    problems = [
        FieldViolation(field, f"references unknown segment {name!r}")
        for name in sorted(referenced_segments(rule))
        if name not in others and name != segment_id
    ]
    cycle = find_segment_cycle({**others, segment_id: rule})
    if cycle is not None:
        problems.append(
            FieldViolation(field, "segments reference each other in a cycle: " + " -> ".join(cycle))
        )
    return problems


def normalize_rule(value: Any) -> Any:
    """Whole floats become ints: a rule sent as a protobuf Struct carries every number as a
    double, and ``{"seats": {"$gte": 50}}`` should read back the way it was written."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: normalize_rule(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalize_rule(item) for item in value]
    return value


def changed_fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Names of the fields of ``after`` whose value differs from ``before``."""
    return [name for name, value in after.items() if before.get(name) != value]


def definitions_fingerprint(segments: Iterable[Segment]) -> int:
    """A number that changes whenever a segment is created, revised or deleted (0 for none),
    so the workers can tell that memberships no longer reflect the definitions."""
    revisions = sorted(f"{segment.segment_id}:{segment.revision}" for segment in segments)
    if not revisions:
        return 0
    digest = hashlib.sha256("\n".join(revisions).encode()).digest()
    # 62 bits: a positive BIGINT on every backend, never the 0 of "no segments".
    return int.from_bytes(digest[:8], "big") >> 2 or 1


# ---- the customer as rules see it ------------------------------------------------------------


def rule_attributes(record: Mapping[str, Any]) -> dict[str, Any]:
    """The document rules evaluate: Customer fields by contract name, unset ones absent,
    timestamps as ISO-8601 UTC strings (so the document is plain JSON and can be stored as
    the projection), tags a list, ``attributes`` and ``traits`` objects."""
    document: dict[str, Any] = {}
    for name, value in record.items():
        if name in _NOT_ATTRIBUTES or value is None or value == "":
            continue
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat()
        elif isinstance(value, tuple):
            value = list(value)
        elif name == "field_sources":
            # {"plan": {"source": "billing", "refresh_time": "<iso>"}}, so that a rule can
            # require fresh data: {"field_sources.plan.refresh_time": {"$withinLast": "2d"}}.
            value = {
                field: {
                    **origin,
                    "refresh_time": origin["refresh_time"].astimezone(UTC).isoformat(),
                }
                if isinstance(origin.get("refresh_time"), datetime)
                else origin
                for field, origin in value.items()
            }
        document[name] = value
    return document


# ---- evaluation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledSegment:
    segment: Segment
    rule: CompiledRule


def compile_segments(segments: Iterable[Segment]) -> list[CompiledSegment]:
    """The enabled segments compiled once, each after the segments its rule references."""
    enabled = {segment.segment_id: segment for segment in segments if segment.enabled}
    order = segment_evaluation_order({sid: segment.rule for sid, segment in enabled.items()})
    return [CompiledSegment(enabled[sid], compile_rule(enabled[sid].rule)) for sid in order]


def precedence(segments: Iterable[Segment]) -> list[Segment]:
    """Segments in the order families are decided: family, then priority, then id."""
    return sorted(segments, key=lambda s: (s.family, s.priority, s.segment_id))


@dataclass(frozen=True)
class Verdicts:
    """One customer's evaluation: rules that matched, each family's winner ("" for none),
    and the resulting memberships (matched overlays plus winners)."""

    matched: frozenset[str]
    winners: dict[str, str]
    members: frozenset[str]


def family_winners(segments: Iterable[Segment], matched: Iterable[str]) -> dict[str, str]:
    """Each family's first matching segment by priority; "" when none of it matched."""
    matched_ids = set(matched)
    winners: dict[str, str] = {}
    for segment in precedence(s for s in segments if s.family and s.enabled):
        winners.setdefault(segment.family, "")
        if not winners[segment.family] and segment.segment_id in matched_ids:
            winners[segment.family] = segment.segment_id
    return winners


def evaluate_customer(
    compiled: Sequence[CompiledSegment], attributes: Mapping[str, Any], now: datetime
) -> Verdicts:
    """Evaluate every compiled segment for one customer, the explanation path: every rule
    runs, so losers in a family are known too. ``$inSegment`` sees the segments whose rule
    matched so far (``compile_segments`` orders references first). For many customers use
    ``SegmentPlan.evaluator``, which stops each family at its winner."""
    matched: set[str] = set()
    context = EvaluationContext(now=now, segments=matched)
    for item in compiled:
        if item.rule.matches(attributes, context):
            matched.add(item.segment.segment_id)
    segments = [item.segment for item in compiled]
    winners = family_winners(segments, matched)
    overlays = {s.segment_id for s in segments if not s.family and s.segment_id in matched}
    members = overlays | {winner for winner in winners.values() if winner}
    return Verdicts(frozenset(matched), winners, frozenset(members))


# A segment and its rule, or None for a segment already decided with the referenced ones.
Step = tuple[str, Predicate | None]


@dataclass(frozen=True)
class SegmentPlan:
    """The enabled segments compiled once into the order bulk evaluation runs them.

    ``$inSegment`` means "the referenced segment's rule matched" (family winner or not), so
    segments other rules reference are evaluated first, in dependency order, into the
    context's segment set; every other family member is only evaluated until its family has
    a winner, exactly as a hand-written ``if/elif`` chain would.
    """

    compiled: tuple[CompiledSegment, ...]
    family_of: Mapping[str, str]
    referenced: tuple[tuple[str, Predicate], ...]
    overlays: tuple[Step, ...]
    families: tuple[tuple[Step, ...], ...]

    def evaluator(self, now: datetime) -> Callable[[Mapping[str, Any]], frozenset[str]]:
        """A function from one customer's rule document to its memberships (matched overlays
        and family winners) at ``now``; the same answer as ``evaluate_customer(...).members``.

        The returned function reuses one context, so it belongs to one thread.
        """
        matched: set[str] = set()
        context = EvaluationContext(now=now, segments=matched)
        code, steps = self.straight_line
        namespace: dict[str, Any] = {
            **steps,
            "context": context,
            "clear": matched.clear,
            "add": matched.add,
            "matched": matched,
            "frozenset": frozenset,
        }
        exec(code, namespace)
        members: Callable[[Mapping[str, Any]], frozenset[str]] = namespace["members"]
        return members

    @cached_property
    def straight_line(self) -> tuple[CodeType, dict[str, Any]]:
        """The plan compiled once (see ``_straight_line``): routing asks for an evaluator
        per decision, and generating and compiling the source each time cost 150 us."""
        return _straight_line(self)


def _straight_line(plan: SegmentPlan) -> tuple[CodeType, dict[str, Any]]:
    """The plan written out as one function: an ``if`` per step and a run of ``if ... break``
    per family, the code one would write by hand. A loop over step tuples costs as much as
    the rules themselves on the demo segments (issue 3 wants within 3x of hand-written).

    The source names only generated variables (``m3``, ``s3``); rules and segment ids reach
    it through the namespace, never as text, so nothing a user wrote is compiled here.
    """
    # The rules (``m3``) and segment ids (``s3``) the source names; each evaluator adds its
    # own context and matched set.
    namespace: dict[str, Any] = {}
    lines = ["def members(attributes):"]

    def step(segment_id: str, matches: Predicate | None) -> tuple[str, str]:
        index = len(namespace)
        namespace[f"m{index}"], namespace[f"s{index}"] = matches, segment_id
        if matches is None:
            return f"s{index} in matched", f"s{index}"
        return f"m{index}(attributes, context)", f"s{index}"

    if plan.referenced:
        lines.append("    clear()")
    for segment_id, rule_matches in plan.referenced:
        test, name = step(segment_id, rule_matches)
        lines.append(f"    if {test}: add({name})")
    lines.append("    found = []")
    for segment_id, matches in plan.overlays:
        test, name = step(segment_id, matches)
        lines.append(f"    if {test}: found.append({name})")
    for family in plan.families:
        # A flat run of breaks rather than an elif chain, which the parser nests.
        lines.append("    while True:")
        for segment_id, matches in family:
            test, name = step(segment_id, matches)
            lines += [
                f"        if {test}:",
                f"            found.append({name})",
                "            break",
            ]
        lines.append("        break")
    lines.append("    return frozenset(found)")
    return compile("\n".join(lines), "<segment plan>", "exec"), namespace


def compile_plan(segments: Iterable[Segment]) -> SegmentPlan:
    """Compile the enabled segments once for bulk evaluation (see ``SegmentPlan``)."""
    compiled = tuple(compile_segments(segments))
    references = set().union(*(referenced_segments(item.segment.rule) for item in compiled))
    steps: dict[str, Step] = {}
    referenced: list[tuple[str, Predicate]] = []
    # ``compiled`` is in dependency order, so a referenced segment's own references are
    # already in the set when its rule runs.
    for item in compiled:
        segment_id = item.segment.segment_id
        if segment_id in references:
            referenced.append((segment_id, item.rule.matches))
            steps[segment_id] = (segment_id, None)
        else:
            steps[segment_id] = (segment_id, item.rule.matches)
    ordered = precedence(item.segment for item in compiled)
    families: dict[str, list[Step]] = {}
    for segment in ordered:
        if segment.family:
            families.setdefault(segment.family, []).append(steps[segment.segment_id])
    return SegmentPlan(
        compiled=compiled,
        family_of={item.segment.segment_id: item.segment.family for item in compiled},
        referenced=tuple(referenced),
        overlays=tuple(steps[s.segment_id] for s in ordered if not s.family),
        families=tuple(tuple(steps) for steps in families.values()),
    )


@dataclass(frozen=True)
class Transition:
    """One entry or exit a new evaluation makes, with the family's winner before it."""

    segment_id: str
    family: str
    kind: ChangeKind
    previous_winner: str


def membership_transitions(before: Mapping[str, str], after: Mapping[str, str]) -> list[Transition]:
    """Exits then entries turning memberships ``before`` into ``after`` (both map segment id
    to family)."""
    previous_winner = {family: sid for sid, family in before.items() if family}
    exits = [
        Transition(sid, family, ChangeKind.EXITED, previous_winner.get(family, ""))
        for sid, family in sorted(before.items())
        if sid not in after
    ]
    entries = [
        Transition(
            sid, family, ChangeKind.ENTERED, previous_winner.get(family, "") if family else ""
        )
        for sid, family in sorted(after.items())
        if sid not in before
    ]
    return exits + entries


# ---- over many customers ---------------------------------------------------------------------


def winners_by_customer(
    ordered_segment_ids: Sequence[str], matches: Mapping[str, Iterable[str]]
) -> dict[str, str]:
    """Each customer's winner among one family's segments, given who each segment matches
    (``ordered_segment_ids`` highest precedence first)."""
    winners: dict[str, str] = {}
    # Lowest precedence first, so a higher segment overwrites.
    for segment_id in reversed(ordered_segment_ids):
        for customer_id in matches[segment_id]:
            winners[customer_id] = segment_id
    return winners


def shifts(before: Mapping[str, str], after: Mapping[str, str]) -> Counter[tuple[str, str]]:
    """How many customers went from one value to another ("" for none), unchanged left out."""
    moved: Counter[tuple[str, str]] = Counter()
    for customer_id in before.keys() | after.keys():
        old, new = before.get(customer_id, ""), after.get(customer_id, "")
        if old != new:
            moved[(old, new)] += 1
    return moved


def winners_at(
    changes: Iterable[MembershipChange], start: datetime, end: datetime
) -> tuple[dict[str, str], dict[str, str]]:
    """Replay one family's transitions (oldest first) into each customer's winner at
    ``start`` and at ``end`` (both inclusive)."""
    state: dict[str, str] = {}
    at_start: dict[str, str] | None = None
    for change in changes:
        if change.change_time > end:
            break
        if at_start is None and change.change_time > start:
            at_start = dict(state)
        if change.kind is ChangeKind.ENTERED:
            state[change.customer_id] = change.segment_id
        elif state.get(change.customer_id) == change.segment_id:
            del state[change.customer_id]
    return (dict(state) if at_start is None else at_start), state


@dataclass(frozen=True)
class LintWarning:
    kind: str  # too_many_segments | shadowed | matches_nobody | duplicate_overlays
    segment_ids: tuple[str, ...]
    message: str


def lint(segments: Sequence[Segment], matches: Mapping[str, frozenset[str]]) -> list[LintWarning]:
    """Warnings about enabled ``segments`` given the stored customers each one matches."""
    enabled = precedence(s for s in segments if s.enabled)
    warnings: list[LintWarning] = []
    if len(enabled) > MAX_TRUSTWORTHY_SEGMENTS:
        warnings.append(
            LintWarning(
                "too_many_segments",
                tuple(s.segment_id for s in enabled),
                f"{len(enabled)} segments are enabled; past {MAX_TRUSTWORTHY_SEGMENTS} teams "
                "stop trusting what they mean",
            )
        )
    families: dict[str, list[Segment]] = {}
    for segment in enabled:
        if segment.family:
            families.setdefault(segment.family, []).append(segment)
    for members in families.values():
        covered: set[str] = set()
        higher: list[str] = []
        for segment in members:
            own = matches[segment.segment_id]
            if own and own <= covered:
                warnings.append(
                    LintWarning(
                        "shadowed",
                        (segment.segment_id, *higher),
                        f"{segment.segment_id} never wins family {segment.family}: every "
                        f"customer it matches is won by {', '.join(higher)}",
                    )
                )
            covered |= own
            higher.append(segment.segment_id)
    for segment in enabled:
        if not matches[segment.segment_id]:
            warnings.append(
                LintWarning(
                    "matches_nobody",
                    (segment.segment_id,),
                    f"{segment.segment_id} matches none of the stored customers",
                )
            )
    overlays = [s for s in enabled if not s.family and matches[s.segment_id]]
    for index, first in enumerate(overlays):
        for second in overlays[index + 1 :]:
            if matches[first.segment_id] == matches[second.segment_id]:
                warnings.append(
                    LintWarning(
                        "duplicate_overlays",
                        (first.segment_id, second.segment_id),
                        f"{first.segment_id} and {second.segment_id} match exactly the same "
                        f"{len(matches[first.segment_id])} customers",
                    )
                )
    return warnings


# ---- page tokens -----------------------------------------------------------------------------

_BAD_TOKEN = "not a token from a previous page"
_BIGINT_LIMIT = 2**63


def token_position(decoded: Any, *kinds: type) -> tuple[Any, ...] | None:
    """Check what a page token decoded to (``repository.decode_token``) against the kinds
    of position its list issues: one value, or a list of several. None for no token.

    Tokens come back from callers, who can forge any JSON: anything but the issued shape is
    INVALID_ARGUMENT, and so is an int beyond a BIGINT or a string with NUL, which the
    store could not take."""
    if decoded is None:
        return None
    values = decoded if len(kinds) > 1 else [decoded]
    if (
        not isinstance(values, list)
        or len(values) != len(kinds)
        or not all(_token_part(value, kind) for value, kind in zip(values, kinds, strict=False))
    ):
        raise InvalidArgument.field("page_token", _BAD_TOKEN)
    return tuple(values)


def token_number(decoded: Any) -> int:
    """A token's position that is one number (a revision, an offset, an id); 0 for none."""
    position = token_position(decoded, int)
    return int(position[0]) if position else 0


def token_text(decoded: Any) -> str:
    """A token's position that is one string (the last id of the page); "" for none."""
    position = token_position(decoded, str)
    return str(position[0]) if position else ""


def _token_part(value: Any, kind: type) -> bool:
    if kind is int:
        # bool is an int to Python, but no position is True.
        return type(value) is int and -_BIGINT_LIMIT <= value < _BIGINT_LIMIT
    return kind is str and isinstance(value, str) and "\x00" not in value
