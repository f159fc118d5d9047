"""Why a customer is or is not in a segment, node by node.

The explanation reuses the compiled operator tests, so each leaf agrees with evaluation by
construction; only the and/or/not combination is recomputed here from the children.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._compile import (
    CompiledRule,
    ConditionNode,
    EvaluationContext,
    FieldNode,
    OperatorNode,
    compile_rule,
)


@dataclass(frozen=True, slots=True)
class Explanation:
    """One rule node's verdict for one customer.

    ``path`` is the JSON path of the node in the rule; ``operator`` is the rule operator, or
    ``=`` for a plain value; ``actual`` is the customer's value at ``field`` (None when
    missing); ``children`` explain the parts of ``$and``/``$or``/``$nor``/``$not``.
    """

    path: str
    operator: str
    passed: bool
    field: str | None = None
    expected: Any = None
    actual: Any = None
    children: tuple[Explanation, ...] = ()


def explain(
    rule: CompiledRule | Any, attributes: Mapping[str, Any], context: EvaluationContext
) -> Explanation:
    """Explain a compiled rule (or a condition document, compiled on the spot)."""
    compiled = rule if isinstance(rule, CompiledRule) else compile_rule(rule)
    return _explain_condition(compiled.root, attributes, context)


def _explain_condition(
    node: ConditionNode, attributes: Any, context: EvaluationContext
) -> Explanation:
    if isinstance(node, FieldNode):
        actual = node.get(attributes)
        parts = tuple(_explain_operator(op, node.field, actual, context) for op in node.operators)
        if len(parts) == 1:
            return parts[0]
        passed = all(part.passed for part in parts)
        return Explanation(node.path, "$and", passed, node.field, None, actual, parts)
    children = tuple(_explain_condition(child, attributes, context) for child in node.children)
    verdicts = [child.passed for child in children]
    if node.operator == "$and":
        passed = all(verdicts)
    elif node.operator == "$or":
        passed = any(verdicts) or not verdicts
    elif node.operator == "$nor":
        passed = bool(verdicts) and not any(verdicts)
    elif node.operator == "$not":
        passed = not verdicts[0]
    else:
        # Segment references and unusable conditions have no parts to combine.
        passed = node.predicate(attributes, context)
    return Explanation(node.path, node.operator, passed, None, node.expected, None, children)


def _explain_operator(
    node: OperatorNode, field: str, actual: Any, context: EvaluationContext
) -> Explanation:
    children = tuple(_explain_operator(child, field, actual, context) for child in node.children)
    if node.operator == "$not":
        passed = not all(child.passed for child in children)
    else:
        passed = node.test(actual, context)
    return Explanation(node.path, node.operator, passed, field, node.expected, actual, children)
