"""Values to learn: a name the evaluation returns, or an arithmetic expression of those names.

``"cls_obs"`` reads that value; ``"log(cls_obs) - log(cls_exp)"`` computes one.  Expressions
allow numbers, names, ``+ - * / **``, parentheses and the functions in ``FUNCTIONS``; they are
parsed once, checked, and evaluated without ``eval``.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from typing import Any

FUNCTIONS: dict[str, Callable[..., float]] = {
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sqrt": math.sqrt,
    "abs": abs,
    "min": min,
    "max": max,
}
_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}


class Expression:
    """A compiled value expression; ``names`` are the values it reads."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"value: {text!r} is not a value name or expression")
        self.text = text.strip()
        try:
            self.tree = ast.parse(self.text, mode="eval").body
        except SyntaxError as exc:
            raise ValueError(f"value {text!r}: not a valid expression ({exc.msg})") from None
        self.names: set[str] = set()
        self._check(self.tree)

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            if node.id not in FUNCTIONS:
                self.names.add(node.id)
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ValueError(f"value {self.text!r}: {node.value!r} is not a number")
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            self._check(node.operand)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FUNCTIONS
            and not node.keywords
        ):
            for a in node.args:
                self._check(a)
        else:
            allowed = ", ".join(FUNCTIONS)
            raise ValueError(
                f"value {self.text!r}: only numbers, names, + - * / **, parentheses and "
                f"{allowed} are allowed"
            )

    def __call__(self, values: Mapping[str, Any]) -> float:
        """The expression's value; ``ValueError`` naming a missing or non-numeric input."""
        return float(self._eval(self.tree, values))

    def _eval(self, node: ast.AST, values: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Name):
            if node.id not in values:
                have = ", ".join(sorted(values)) or "nothing"
                raise ValueError(f"the evaluation returned no {node.id!r} (it returned {have})")
            v = values[node.id]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{node.id} = {v!r} is not a number")
            return float(v)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](
                self._eval(node.left, values), self._eval(node.right, values)
            )
        if isinstance(node, ast.UnaryOp):
            v = self._eval(node.operand, values)
            return -v if isinstance(node.op, ast.USub) else v
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        return FUNCTIONS[node.func.id](*(self._eval(a, values) for a in node.args))
