"""Safe arithmetic expressions of the model language: ``:=`` definitions and constraints.

:class:`Expr` parses an expression over parameter labels (``+ - * / ^``, numbers and a few
functions) with Python's ``ast`` under a whitelist, and evaluates it on floats, complex numbers
(complex-step derivatives, as lavaan's ``lav_func_jacobian_complex``) or numpy arrays (one value
per SNP).  :class:`Defined` (``name := expr``) and :class:`Constraint` (``lhs ==|<|> rhs``) are
the parsed statements :func:`polgen.gsem.syntax.parse_model` keeps on its table.
"""

from __future__ import annotations

import ast
import cmath
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polgen.errors import ModelError, ModelSyntaxError

__all__ = ["ARRAY_FUNCS", "Constraint", "Defined", "Expr", "evaluate_array", "syntax_error"]


def syntax_error(message: str, *, row: int | None = None, col: int | None = None) -> ModelSyntaxError:
    """ModelSyntaxError whose message ends with 'at line L, column C'; ``.line``/``.col`` set."""
    where = ""
    if row is not None:
        where = f" at line {row}" + (f", column {col}" if col is not None else "")
    err = ModelSyntaxError(message + where, line=row, col=col)
    err.line, err.col = row, col
    return err


# --------------------------------------------------------------------------------------------
# safe arithmetic expressions (for := and constraints)
# --------------------------------------------------------------------------------------------
def _cabs(z):
    return z if (z.real if isinstance(z, complex) else z) >= 0 else -z


_FUNCS: dict[str, Callable] = {
    "sqrt": lambda z: cmath.sqrt(z) if isinstance(z, complex) else math.sqrt(z),
    "exp": lambda z: cmath.exp(z) if isinstance(z, complex) else math.exp(z),
    "log": lambda z: cmath.log(z) if isinstance(z, complex) else math.log(z),
    "log10": lambda z: cmath.log10(z) if isinstance(z, complex) else math.log10(z),
    "abs": _cabs,
    "sin": lambda z: cmath.sin(z) if isinstance(z, complex) else math.sin(z),
    "cos": lambda z: cmath.cos(z) if isinstance(z, complex) else math.cos(z),
    "tan": lambda z: cmath.tan(z) if isinstance(z, complex) else math.tan(z),
    "tanh": lambda z: cmath.tanh(z) if isinstance(z, complex) else math.tanh(z),
    "atanh": lambda z: cmath.atanh(z) if isinstance(z, complex) else math.atanh(z),
}


@dataclass(frozen=True)
class Expr:
    """A parsed arithmetic expression over parameter labels (``+ - * / ^``, numbers, functions).

    Safe: only numbers, names, the four operations, powers, unary signs and the functions in
    ``Expr.FUNCTIONS`` are accepted.  Evaluate with :meth:`evaluate`; works with complex values so
    derivatives can be taken by complex step.
    """

    text: str
    tree: Any = field(repr=False, compare=False)
    names: tuple[str, ...] = ()

    FUNCTIONS = tuple(sorted(_FUNCS))

    @classmethod
    def parse(cls, text: str, *, line: int | None = None, col: int | None = None) -> Expr:
        src = text.strip().replace("^", "**")
        if not src:
            raise syntax_error("empty expression", row=line, col=col)
        try:
            tree = ast.parse(src, mode="eval").body
        except SyntaxError as exc:
            if col is not None and exc.offset:
                col = col + max(exc.offset - 1, 0)
            raise syntax_error(f"cannot parse expression {text.strip()!r}: {exc.msg}", row=line, col=col) from None
        names: list[str] = []

        def check(node):
            if isinstance(node, ast.BinOp):
                if not isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)):
                    raise syntax_error(f"operator not allowed in {text.strip()!r}", row=line, col=col)
                check(node.left)
                check(node.right)
            elif isinstance(node, ast.UnaryOp):
                if not isinstance(node.op, (ast.USub, ast.UAdd)):
                    raise syntax_error(f"operator not allowed in {text.strip()!r}", row=line, col=col)
                check(node.operand)
            elif isinstance(node, ast.Constant):
                if not isinstance(node.value, (int, float)) or isinstance(node.value, bool):
                    raise syntax_error(f"only numbers allowed as constants in {text.strip()!r}", row=line, col=col)
            elif isinstance(node, ast.Name):
                if node.id not in names:
                    names.append(node.id)
            elif isinstance(node, ast.Attribute):
                # R names may contain dots (a.b): rebuild the dotted name
                raise syntax_error(
                    f"dotted names are not supported in expressions: {text.strip()!r}", row=line, col=col
                )
            elif isinstance(node, ast.Call):
                if (
                    not isinstance(node.func, ast.Name)
                    or node.func.id not in _FUNCS
                    or node.keywords
                    or len(node.args) != 1
                ):
                    raise syntax_error(
                        f"unknown function call in {text.strip()!r}; allowed: "
                        f"{', '.join(sorted(_FUNCS))} (one argument)",
                        row=line,
                        col=col,
                    )
                check(node.args[0])
            else:
                raise syntax_error(f"not allowed in an expression: {text.strip()!r}", row=line, col=col)

        check(tree)
        return cls(text="".join(text.split()), tree=tree, names=tuple(names))

    def evaluate(self, env: Mapping[str, Any], funcs: Mapping[str, Callable] | None = None):
        """Value of the expression with names looked up in ``env`` (floats, complex, or numpy arrays).

        ``funcs`` replaces the scalar functions (e.g. numpy ufuncs for vectorised evaluation over
        SNPs); with arrays, division follows numpy (inf/NaN under the caller's ``np.errstate``).
        """
        fns = _FUNCS if funcs is None else funcs

        def ev(node):
            if isinstance(node, ast.Constant):
                return float(node.value)
            if isinstance(node, ast.Name):
                try:
                    return env[node.id]
                except KeyError:
                    raise ModelError(f"unknown parameter label {node.id!r} in expression {self.text!r}") from None
            if isinstance(node, ast.UnaryOp):
                v = ev(node.operand)
                return -v if isinstance(node.op, ast.USub) else v
            if isinstance(node, ast.BinOp):
                a, b = ev(node.left), ev(node.right)
                op = node.op
                if isinstance(op, ast.Add):
                    return a + b
                if isinstance(op, ast.Sub):
                    return a - b
                if isinstance(op, ast.Mult):
                    return a * b
                if isinstance(op, ast.Div):
                    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                        return a / b
                    return (
                        a / b
                        if b != 0
                        else (math.copysign(math.inf, a.real if isinstance(a, complex) else a) if a != 0 else math.nan)
                    )
                return a**b
            return fns[node.func.id](ev(node.args[0]))

        return ev(self.tree)

    def __reduce__(self):
        return (Expr.parse, (self.text,))


@dataclass(frozen=True)
class Defined:
    """A ``name := expression`` definition."""

    name: str
    expr: Expr
    line: int | None = None


@dataclass(frozen=True)
class Constraint:
    """A ``lhs op rhs`` constraint (op one of ``==``, ``<``, ``>``) between expressions."""

    lhs: Expr
    op: str
    rhs: Expr
    line: int | None = None

    def residual(self, env: Mapping[str, Any]):
        """lhs - rhs (== : must be 0; > : must be >= 0; < : must be <= 0)."""
        return self.lhs.evaluate(env) - self.rhs.evaluate(env)


ARRAY_FUNCS: dict[str, Callable] = {
    "sqrt": np.sqrt,
    "exp": np.exp,
    "log": np.log,
    "log10": np.log10,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "tanh": np.tanh,
    "atanh": np.arctanh,
    "abs": lambda z: np.where(np.real(z) >= 0, z, -z),
}


def evaluate_array(expr: Expr, env: Mapping[str, Any]):
    """Vectorised (numpy, real or complex) value of ``expr`` with arrays in ``env`` (one value
    per SNP); invalid operations give inf/NaN instead of raising."""
    with np.errstate(all="ignore"):
        return expr.evaluate(env, funcs=ARRAY_FUNCS)
