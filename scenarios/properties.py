"""Properties of a case's metrics: ``"breaches == 0 and max_bridge_um <= 20"``.

What ``micromill falsify`` searches against, what a regression in ``scenarios/regressions/``
keeps, and what the pytest plugin's users assert. A property is a boolean expression over the
metric names of a job (``scenarios.jobs.JOBS[job].metrics``):

- comparisons ``== != < <= > >=`` (chained ones too: ``0 <= x < 1``) between metric names,
  numbers and arithmetic (``+ - * /``, unary ``-``, ``abs(...)``, ``min(...)``, ``max(...)``);
- ``and``, ``or``, ``not`` and parentheses.

Nothing else is allowed (no attribute access, calls other than the three above, subscripts,
strings or other names), so a property can never run code: it is parsed with Python's own
``ast`` and walked here, never ``eval``-ed. (Written by hand: the expressions are tiny and the
margin below needs the tree, which a generic safe evaluator does not expose.) An unknown metric
or bad syntax is refused with a ``PropertyError`` naming it and what is allowed (with a "did you
mean" for a near miss), before any case runs.

Margin (for a search guided by how close a case came): for each comparison ``a op b`` it is
``b - a`` for ``<, <=``, ``a - b`` for ``>, >=``, ``-|a - b|`` for ``==`` and ``|a - b|`` for
``!=``, divided by ``max(1, |b|)`` so that comparisons on different scales mix; ``and`` takes the
minimum, ``or`` the maximum, ``not`` the negation. A property that holds has margin >= 0 (> 0 for
the strict comparisons except at the boundary); a violated one has margin <= 0, and the more
negative, the clearer the violation. A NaN metric (a case that could not measure it) makes every
comparison that reads it false and its margin -inf: a property holds only on measured values.
"""
from __future__ import annotations

import ast
import difflib
import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: the longest property text accepted (characters)
MAX_PROPERTY_CHARS = 2000
#: the deepest expression tree accepted
MAX_DEPTH = 50

_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}
_ARITH = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_FUNCTIONS = {"abs": abs, "min": min, "max": max}


class PropertyError(ValueError):
    """A property that cannot be evaluated: bad syntax, an unknown metric, a construct not allowed."""


@dataclass(frozen=True)
class Verdict:
    """A property evaluated on one case's metrics."""

    holds: bool
    margin: float            # >= 0 when it holds; <= 0 when violated (module docstring)


@dataclass(frozen=True)
class Property:
    """A parsed, checked property; ``text`` as given, ``metrics`` the names it reads."""

    text: str
    metrics: tuple[str, ...]
    _tree: ast.Expression = field(repr=False, compare=False)

    def evaluate(self, values: Mapping[str, float]) -> Verdict:
        """The verdict on a case's ``values`` (metric name -> number; every name in ``metrics`` must
        be there: a missing one raises ``PropertyError``)."""
        missing = [m for m in self.metrics if m not in values]
        if missing:
            raise PropertyError(f"property {self.text!r}: the case has no value for {', '.join(missing)}")
        holds, margin = _truth(self._tree.body, values)
        return Verdict(bool(holds), float(margin))

    def holds(self, values: Mapping[str, float]) -> bool:
        return self.evaluate(values).holds


def parse_property(text: str, metric_names: Iterable[str]) -> Property:
    """Parse and check ``text`` against the allowed ``metric_names``; ``PropertyError`` otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise PropertyError("the property is empty: give a condition on the job's metrics, e.g. "
                            "\"breaches == 0 and max_bridge_um <= 20\"")
    if len(text) > MAX_PROPERTY_CHARS:
        raise PropertyError(f"the property has {len(text)} characters; at most {MAX_PROPERTY_CHARS} are allowed")
    known = sorted(metric_names)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        caret = " " * max(0, (exc.offset or 1) - 1) + "^"
        raise PropertyError(f"property {text!r}: bad syntax ({exc.msg}):\n  {text.strip()}\n  {caret}") from None
    names: list[str] = []
    _check_boolean(tree.body, text, known, names, 0)
    return Property(text, tuple(dict.fromkeys(names)), tree)


# ---- checking ------------------------------------------------------------------------------

def _refuse(text: str, node: ast.AST, what: str) -> PropertyError:
    return PropertyError(f"property {text!r}: {what} is not allowed (column {getattr(node, 'col_offset', 0) + 1}); "
                         f"allowed: metric names, numbers, + - * /, abs/min/max, comparisons "
                         f"(== != < <= > >=), and, or, not, parentheses")


def _check_boolean(node: ast.AST, text: str, known: list[str], names: list[str], depth: int) -> None:
    """``node`` must give a truth value: a comparison, and/or/not of such."""
    if depth > MAX_DEPTH:
        raise PropertyError(f"property {text!r}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, ast.BoolOp):
        for v in node.values:
            _check_boolean(v, text, known, names, depth + 1)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        _check_boolean(node.operand, text, known, names, depth + 1)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise _refuse(text, node, f"the comparison {type(op).__name__}")
        for v in [node.left, *node.comparators]:
            _check_number(v, text, known, names, depth + 1)
    else:
        raise PropertyError(f"property {text!r}: {ast.unparse(node)!r} is not a condition: compare it, e.g. "
                            f"\"{ast.unparse(node)} == 0\"")


def _check_number(node: ast.AST, text: str, known: list[str], names: list[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise PropertyError(f"property {text!r}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise _refuse(text, node, f"the constant {node.value!r}")
    elif isinstance(node, ast.Name):
        if node.id not in known:
            close = difflib.get_close_matches(node.id, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise PropertyError(f"property {text!r}: unknown metric {node.id!r}{hint} (this job's metrics: "
                                f"{', '.join(known)})")
        names.append(node.id)
    elif isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        _check_number(node.left, text, known, names, depth + 1)
        _check_number(node.right, text, known, names, depth + 1)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        _check_number(node.operand, text, known, names, depth + 1)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if node.keywords or not node.args or (node.func.id == "abs" and len(node.args) != 1):
            raise _refuse(text, node, f"this call of {node.func.id}()")
        for a in node.args:
            _check_number(a, text, known, names, depth + 1)
    else:
        raise _refuse(text, node, repr(ast.unparse(node)))


# ---- evaluating ----------------------------------------------------------------------------

def _value(node: ast.AST, values: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(values[node.id])
    if isinstance(node, ast.BinOp):
        a, b = _value(node.left, values), _value(node.right, values)
        if isinstance(node.op, ast.Div) and b == 0.0:
            return math.nan
        return _ARITH[type(node.op)](a, b)
    if isinstance(node, ast.UnaryOp):
        v = _value(node.operand, values)
        return -v if isinstance(node.op, ast.USub) else v
    assert isinstance(node, ast.Call)
    return float(_FUNCTIONS[node.func.id](*(_value(a, values) for a in node.args)))


def _comparison_margin(op: ast.cmpop, a: float, b: float) -> float:
    scale = max(1.0, abs(b))
    if isinstance(op, (ast.Lt, ast.LtE)):
        return (b - a) / scale
    if isinstance(op, (ast.Gt, ast.GtE)):
        return (a - b) / scale
    if isinstance(op, ast.Eq):
        return -abs(a - b) / scale
    return abs(a - b) / scale


def _truth(node: ast.AST, values: Mapping[str, float]) -> tuple[bool, float]:
    if isinstance(node, ast.BoolOp):
        parts = [_truth(v, values) for v in node.values]
        if isinstance(node.op, ast.And):
            return all(p[0] for p in parts), min(p[1] for p in parts)
        return any(p[0] for p in parts), max(p[1] for p in parts)
    if isinstance(node, ast.UnaryOp):
        holds, margin = _truth(node.operand, values)
        return not holds, -margin
    assert isinstance(node, ast.Compare)
    left = _value(node.left, values)
    holds, margin = True, math.inf
    for op, right_node in zip(node.ops, node.comparators):
        right = _value(right_node, values)
        if math.isnan(left) or math.isnan(right):
            holds, margin = False, -math.inf
        else:
            holds = holds and _COMPARE[type(op)](left, right)
            margin = min(margin, _comparison_margin(op, left, right))
        left = right
    return holds, margin


__all__ = ["MAX_PROPERTY_CHARS", "Property", "PropertyError", "Verdict", "parse_property"]
