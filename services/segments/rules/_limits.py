"""Size limits that keep saving and evaluating a rule cheap and bounded.

They are shared by ``validate_rule`` (which reports them) and ``compile_rule`` (which refuses
rules over them), and one pass over the document measures them without recursion, so even a
hostile 100,000-deep document cannot crash the measurement itself. The limits a rule must meet
only when it is saved (its JSON size, its regex count) are checked by ``storage_problems``:
rules stored before those limits existed keep evaluating.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

MAX_RULE_DEPTH = 32
"""Nesting of JSON objects and arrays; real segment rules stay under 10."""

MAX_RULE_NODES = 5_000
"""Objects, arrays and object keys in one rule; array scalars are counted by the next two."""

MAX_LIST_ITEMS = 10_000
"""Items in one array, such as an ``$in`` list of account ids."""

MAX_TOTAL_LIST_ITEMS = 50_000
"""Array items across a whole rule."""

MAX_RULE_BYTES = 262_144
"""JSON text of one saved rule (compact, UTF-8): room for 10,000 account ids of 20
characters; every read of the segments (routing reads them all) carries it."""

MAX_REGEX_OPERATORS = 20
"""``$regex``/``$regexi`` operators in one saved rule: each search of a value may cost up to
``REGEX_TIMEOUT_SECONDS``, so this bounds what one rule costs per value."""

MAX_REGEX_PATTERN_LENGTH = 1_000
"""Characters in a ``$regex`` pattern."""

MAX_REGEX_INPUT_LENGTH = 10_000
"""Longer attribute values never match a ``$regex`` (scanning them is the cost we bound)."""

REGEX_TIMEOUT_SECONDS = 0.01
"""Budget for one regex search; a search that runs out counts as no match."""

MAX_DOCUMENT_BYTES = 65_536
"""Size of a document a request sends to be evaluated (a visitor's attributes, measured as
protobuf before they are read; the attributes of TestRule, as JSON): every rule reads it, so
its size bounds what one request costs. A stored customer is smaller."""

_REGEX_OPERATORS = ("$regex", "$regexi")
# Operators measured from the evaluation's ``now``.
_CLOCK_OPERATORS = ("$withinLast", "$olderThan")


@dataclass(frozen=True, slots=True)
class RuleSize:
    """What ``measure_rule`` found: deepest nesting, node count, longest and total arrays,
    and how many regex operators and operators measured from now the rule holds."""

    depth: int
    nodes: int
    longest_list: int
    total_list_items: int
    regex_operators: int = 0
    clock_operators: int = 0

    def problems(self) -> list[str]:
        """Human descriptions of every limit this size exceeds."""
        found = []
        if self.depth > MAX_RULE_DEPTH:
            found.append(f"rule nests deeper than the limit of {MAX_RULE_DEPTH} levels")
        if self.nodes > MAX_RULE_NODES:
            found.append(f"rule has more than the limit of {MAX_RULE_NODES} nodes")
        if self.longest_list > MAX_LIST_ITEMS:
            found.append(f"an array has {self.longest_list} items; the limit is {MAX_LIST_ITEMS}")
        if self.total_list_items > MAX_TOTAL_LIST_ITEMS:
            found.append(
                f"rule arrays hold {self.total_list_items} items in all;"
                f" the limit is {MAX_TOTAL_LIST_ITEMS}"
            )
        return found


def measure_rule(rule: object) -> RuleSize:
    """Measure a JSON document iteratively; stops descending once the depth limit is passed."""
    depth = nodes = longest = total_items = regexes = clock_reads = 0
    stack: list[tuple[object, int]] = [(rule, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            nodes += 1 + len(value)
            regexes += sum(1 for name in _REGEX_OPERATORS if name in value)
            clock_reads += sum(1 for name in _CLOCK_OPERATORS if name in value)
            children: list[object] = list(value.values())
        elif isinstance(value, list | tuple):
            nodes += 1
            longest = max(longest, len(value))
            total_items += len(value)
            children = [item for item in value if isinstance(item, dict | list | tuple)]
        else:
            continue
        depth = max(depth, level)
        if level <= MAX_RULE_DEPTH and nodes <= MAX_RULE_NODES:
            stack.extend((child, level + 1) for child in children)
    return RuleSize(depth, nodes, longest, total_items, regexes, clock_reads)


def document_bytes(document: object) -> int:
    """Length of a JSON document as compact UTF-8 text (values JSON lacks, such as
    datetimes, count as their text), as it would be stored or sent back."""
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str)
    return len(text.encode())


def documents_within(documents: Sequence[object], budget: int) -> int:
    """How many of ``documents``, taken in order, fit in ``budget`` bytes of JSON; at least
    one, so a page of them always makes progress."""
    total = 0
    for index, document in enumerate(documents):
        total += document_bytes(document)
        if total > budget and index > 0:
            return index
    return len(documents)


def document_size_problem(document: object) -> str | None:
    """What is wrong with the size of a document sent to be evaluated, or None."""
    length = document_bytes(document)
    if length > MAX_DOCUMENT_BYTES:
        return f"is {length} bytes as JSON; the limit is {MAX_DOCUMENT_BYTES}"
    return None


def storage_problems(rule: object, size: RuleSize) -> list[str]:
    """The limits only a rule being saved must meet, for a rule within ``size.problems()``
    (so measuring its text is cheap)."""
    found = []
    if size.regex_operators > MAX_REGEX_OPERATORS:
        found.append(
            f"rule has {size.regex_operators} regex operators; the limit is {MAX_REGEX_OPERATORS}"
        )
    length = document_bytes(rule)
    if length > MAX_RULE_BYTES:
        found.append(f"rule is {length} bytes as JSON; the limit is {MAX_RULE_BYTES}")
    return found
