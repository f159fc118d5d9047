"""Size limits that keep saving and evaluating a rule cheap and bounded.

They are shared by ``validate_rule`` (which reports them) and ``compile_rule`` (which refuses
rules over them), and one pass over the document measures them without recursion, so even a
hostile 100,000-deep document cannot crash the measurement itself.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_RULE_DEPTH = 32
"""Nesting of JSON objects and arrays; real segment rules stay under 10."""

MAX_RULE_NODES = 5_000
"""Objects, arrays and object keys in one rule; array scalars are counted by the next two."""

MAX_LIST_ITEMS = 10_000
"""Items in one array, such as an ``$in`` list of account ids."""

MAX_TOTAL_LIST_ITEMS = 50_000
"""Array items across a whole rule."""

MAX_REGEX_PATTERN_LENGTH = 1_000
"""Characters in a ``$regex`` pattern."""

MAX_REGEX_INPUT_LENGTH = 10_000
"""Longer attribute values never match a ``$regex`` (scanning them is the cost we bound)."""

REGEX_TIMEOUT_SECONDS = 0.01
"""Budget for one regex search; a search that runs out counts as no match."""


@dataclass(frozen=True, slots=True)
class RuleSize:
    """What ``measure_rule`` found: deepest nesting, node count, longest and total arrays."""

    depth: int
    nodes: int
    longest_list: int
    total_list_items: int

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
    depth = nodes = longest = total_items = 0
    stack: list[tuple[object, int]] = [(rule, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            nodes += 1 + len(value)
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
    return RuleSize(depth, nodes, longest, total_items)
