"""Segments that reference other segments: who depends on whom, cycles, evaluation order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_REFERENCE_OPERATORS = ("$inSegment", "$notInSegment")


class SegmentCycleError(ValueError):
    """Segments reference each other in a loop; ``cycle`` is the loop, first id repeated."""

    def __init__(self, cycle: list[str]) -> None:
        super().__init__("segments reference each other in a cycle: " + " -> ".join(cycle))
        self.cycle = cycle


def referenced_segments(condition: Any) -> set[str]:
    """Ids named by ``$inSegment``/``$notInSegment`` anywhere in a rule."""
    found: set[str] = set()
    stack = [condition]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, child in value.items():
                if key in _REFERENCE_OPERATORS and isinstance(child, str):
                    found.add(child)
                else:
                    stack.append(child)
        elif isinstance(value, list):
            stack.extend(value)
    return found


def _dependencies(conditions: Mapping[str, Any]) -> dict[str, list[str]]:
    # Sorted so cycles and orders come out the same on every run; references to unknown
    # segments are the caller's to report and do not take part in ordering.
    return {
        segment_id: sorted(ref for ref in referenced_segments(condition) if ref in conditions)
        for segment_id, condition in conditions.items()
    }


def _depth_first(conditions: Mapping[str, Any]) -> tuple[list[str], list[str] | None]:
    """Post-order of the reference graph, and the first cycle met (if any)."""
    dependencies = _dependencies(conditions)
    finished: set[str] = set()
    order: list[str] = []
    for start in sorted(dependencies):
        if start in finished:
            continue
        trail = [start]
        on_trail = {start}
        pending = [iter(dependencies[start])]
        while pending:
            next_id = next(pending[-1], None)
            if next_id is None:
                done = trail.pop()
                on_trail.discard(done)
                pending.pop()
                finished.add(done)
                order.append(done)
            elif next_id in on_trail:
                return order, [*trail[trail.index(next_id) :], next_id]
            elif next_id not in finished:
                trail.append(next_id)
                on_trail.add(next_id)
                pending.append(iter(dependencies[next_id]))
    return order, None


def find_segment_cycle(conditions: Mapping[str, Any]) -> list[str] | None:
    """A reference loop such as ``["a", "b", "a"]`` among segment rules, or None."""
    return _depth_first(conditions)[1]


def segment_evaluation_order(conditions: Mapping[str, Any]) -> list[str]:
    """Segment ids with every segment after the segments it references.

    Raises ``SegmentCycleError`` when there is no such order.
    """
    order, cycle = _depth_first(conditions)
    if cycle is not None:
        raise SegmentCycleError(cycle)
    return order
