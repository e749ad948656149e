"""The statement parser of the model language: lavaan syntax text -> rows as written.

:func:`parse_syntax` splits a model string into logical statements (newlines, ``;``, comments,
continuation lines), finds each statement's operator, and parses the terms and their modifiers
into :class:`FlatRow` objects (lavaan's FLAT table), ``:=`` definitions and constraints.  No
defaults are added here: :func:`polgen.gsem.syntax.parse_model` builds the parameter table from
these rows.  Errors are :class:`~polgen.errors.ModelSyntaxError` with the line and column.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from polgen.gsem.expr import Constraint, Defined, Expr
from polgen.gsem.expr import syntax_error as _syntax_error

__all__ = ["FlatRow", "parse_syntax"]

_PAR_OPS = ("=~", "~~", "~")
_CON_OPS = ("==", "<", ">")
_VAR_RE = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$")
_NUM_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


# --------------------------------------------------------------------------------------------
# flat syntax rows
# --------------------------------------------------------------------------------------------
@dataclass
class FlatRow:
    """One element as written in the syntax (lavaan's FLAT table) with its modifiers."""

    lhs: str
    op: str
    rhs: str
    fixed: float | None = None  # value; NaN means NA* (explicitly free)
    start: float | None = None
    label: str = ""
    lower: float | None = None
    upper: float | None = None
    line: int | None = None
    col: int | None = None


class _Stmt:
    """A logical statement with a map from character offset to (line, column)."""

    def __init__(self) -> None:
        self.chars: list[str] = []
        self.pos: list[tuple[int, int]] = []

    def add(self, text: str, line: int, col0: int) -> None:
        for i, ch in enumerate(text):
            self.chars.append(ch)
            self.pos.append((line, col0 + i))

    @property
    def text(self) -> str:
        return "".join(self.chars)

    def where(self, offset: int) -> tuple[int, int]:
        if not self.pos:
            return (0, 0)
        offset = min(max(offset, 0), len(self.pos) - 1)
        return self.pos[offset]


def _strip_comment(line: str) -> str:
    out = []
    quote = None
    for ch in line:
        if quote:
            out.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "#!":
            break
        out.append(ch)
    return "".join(out)


def _find_op(text: str) -> tuple[str, int] | None:
    """First top-level operator in ``text``: (op, offset)."""
    depth = 0
    quote = None
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if quote:
            if ch == quote:
                quote = None
            i += 1
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0:
            two = text[i : i + 2]
            if two in (":=", "=~", "~~", "<~", "==", "~*", "|~", "%~"):
                return (two, i)
            if ch == "~":
                return ("~", i)
            if ch in "<>|":
                # '<=' / '>=' behave like '<' / '>' in lavaan
                if text[i : i + 2] in ("<=", ">="):
                    return (ch + "=", i)
                return (ch, i)
            if ch == "=":
                return ("=", i)
        i += 1
    return None


def _split_top(text: str, sep: str) -> list[tuple[str, int]]:
    """Split at top-level ``sep`` characters; returns (piece, offset of piece)."""
    parts: list[tuple[str, int]] = []
    depth = 0
    quote = None
    start = 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append((text[start:i], start))
            start = i + 1
    parts.append((text[start:], start))
    return parts


def _logical_statements(model: str) -> list[_Stmt]:
    lines = model.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    stmts: list[_Stmt] = []
    for lineno, raw in enumerate(lines, start=1):
        body = _strip_comment(raw)
        # split on ';' outside quotes/parentheses
        for piece, off in _split_top(body, ";"):
            if not piece.strip():
                continue
            lead = len(piece) - len(piece.lstrip())
            piece_s = piece.strip()
            has_op = _find_op(piece_s) is not None
            prev = stmts[-1].text.rstrip() if stmts else ""
            continues = bool(stmts) and (
                not has_op
                or prev.endswith(("+", "*", "=~", "~", ":=", "==", "<", ">", "("))
                or piece_s.startswith(("+", "*"))
            )
            if continues:
                stmts[-1].add(" ", lineno, off + lead)
                stmts[-1].add(piece_s, lineno, off + lead + 1)
            else:
                st = _Stmt()
                st.add(piece_s, lineno, off + lead + 1)
                stmts.append(st)
    return stmts


def _num(text: str) -> float | None:
    t = text.strip()
    if _NUM_RE.match(t):
        return float(t)
    if t in ("Inf", "+Inf"):
        return math.inf
    if t == "-Inf":
        return -math.inf
    return None


def _parse_modifier(mod: str, row: FlatRow, where: tuple[int, int]) -> None:
    line, col = where
    m = mod.strip()
    if not m:
        raise _syntax_error("empty modifier before '*'", row=line, col=col)
    # c(...) single-group vectors
    cm = re.fullmatch(r"c\((.*)\)", m, flags=re.S)
    if cm:
        items = [s for s, _ in _split_top(cm.group(1), ",")]
        if len(items) != 1:
            raise _syntax_error(f"modifier {m!r} has {len(items)} values but there is one group", row=line, col=col)
        _parse_modifier(items[0], row, where)
        return
    fm = re.fullmatch(r"([A-Za-z_.][A-Za-z0-9_.]*)\s*\((.*)\)", m, flags=re.S)
    if fm:
        fname, arg = fm.group(1), fm.group(2).strip()
        arg_c = re.fullmatch(r"c\((.*)\)", arg, flags=re.S)
        if arg_c:
            items = [s.strip() for s, _ in _split_top(arg_c.group(1), ",")]
            if len(items) != 1:
                raise _syntax_error(f"modifier {m!r} has {len(items)} values but there is one group", row=line, col=col)
            arg = items[0]
        if fname in ("start", "lower", "upper"):
            v = _num(arg)
            if v is None:
                raise _syntax_error(f"{fname}() needs a number, got {arg!r}", row=line, col=col)
            setattr(row, fname, v)
            return
        if fname in ("label", "equal"):
            lab = arg.strip().strip("\"'")
            if not _VAR_RE.match(lab):
                raise _syntax_error(f"bad label {arg!r} in {fname}()", row=line, col=col)
            row.label = lab
            return
        raise _syntax_error(f"unknown modifier function {fname!r}()", row=line, col=col)
    v = _num(m)
    if v is not None:
        row.fixed = v
        return
    if m == "NA":
        row.fixed = math.nan
        return
    if len(m) >= 2 and m[0] == m[-1] and m[0] in "\"'":
        lab = m[1:-1]
        if not _VAR_RE.match(lab):
            raise _syntax_error(f"bad label {m!r}", row=line, col=col)
        row.label = lab
        return
    if _VAR_RE.match(m):
        if m in ("TRUE", "FALSE", "NULL"):
            raise _syntax_error(f"{m} is not a valid modifier", row=line, col=col)
        row.label = m
        return
    raise _syntax_error(f"cannot understand modifier {m!r}", row=line, col=col)


def _expr_col(st: _Stmt, base: int, text: str) -> tuple[int, int]:
    return st.where(base + len(text) - len(text.lstrip()))


def parse_syntax(model: str) -> tuple[list[FlatRow], list[Defined], list[Constraint]]:
    """Parse lavaan syntax into flat rows (as written), definitions and constraints.

    No defaults are added here; see :func:`parse_model`.  Raises :class:`ModelSyntaxError` with
    the line (``row``) and column (``col``) of the offending text.
    """
    if not isinstance(model, str):
        raise _syntax_error(f"model must be a string of lavaan syntax, got {type(model).__name__}")
    rows: list[FlatRow] = []
    defined: list[Defined] = []
    constraints: list[Constraint] = []
    seen: dict[tuple[str, str, str], FlatRow] = {}
    for st in _logical_statements(model):
        text = st.text
        found = _find_op(text)
        if found is None:
            line, col = st.where(0)
            raise _syntax_error(f"no operator in statement {text!r}", row=line, col=col)
        op, at = found
        line, col = st.where(at)
        lhs_text, rhs_text = text[:at], text[at + len(op) :]
        if op in ("<=", ">="):
            op = op[0]
            rhs_text = text[at + 2 :]
        if op in ("<~", "~*", "|~", "%~", "|"):
            raise _syntax_error(f"operator {op!r} is not supported by Genomic SEM models", row=line, col=col)
        if op == "=":
            raise _syntax_error("unknown operator '=' (did you mean '=~' or '==' or ':=')", row=line, col=col)
        if not lhs_text.strip():
            raise _syntax_error(f"nothing left of {op!r}", row=line, col=col)
        if not rhs_text.strip():
            raise _syntax_error(f"nothing right of {op!r}", row=line, col=col)
        # a second operator on the right side is an error (except inside expressions)
        if op in _PAR_OPS:
            again = _find_op(rhs_text)
            if again is not None:
                l2, c2 = st.where(at + len(op) + again[1])
                raise _syntax_error(f"unexpected operator {again[0]!r}", row=l2, col=c2)
        if op == ":=":
            name = lhs_text.strip()
            if not _VAR_RE.match(name):
                raise _syntax_error(f"bad name {name!r} left of ':='", row=line, col=col)
            expr = Expr.parse(rhs_text, line=line, col=_expr_col(st, at + len(op), rhs_text)[1])
            defined.append(Defined(name, expr, line))
            continue
        if op in _CON_OPS:
            constraints.append(
                Constraint(
                    Expr.parse(lhs_text, line=line, col=_expr_col(st, 0, lhs_text)[1]),
                    op,
                    Expr.parse(rhs_text, line=line, col=_expr_col(st, at + len(op), rhs_text)[1]),
                    line,
                )
            )
            continue
        # parameter rows
        lhs_vars = []
        for piece, off in _split_top(lhs_text, "+"):
            name = piece.strip()
            if not _VAR_RE.match(name):
                l2, c2 = st.where(off + len(piece) - len(piece.lstrip()))
                raise _syntax_error(f"bad variable name {name!r} left of {op!r}", row=l2, col=c2)
            lhs_vars.append(name)
        base = at + len(op)
        terms = _split_top(rhs_text, "+")
        parsed_terms = []
        for piece, off in terms:
            if not piece.strip():
                l2, c2 = st.where(base + off + len(piece))
                raise _syntax_error(f"empty term right of {op!r} (stray '+')", row=l2, col=c2)
            factors = _split_top(piece, "*")
            var_piece, voff = factors[-1]
            var = var_piece.strip()
            vwhere = st.where(base + off + voff + len(var_piece) - len(var_piece.lstrip()))
            if var == "1" and op == "~":
                raise _syntax_error(
                    "intercepts ('~ 1') are not supported: Genomic SEM models have no mean structure",
                    row=vwhere[0],
                    col=vwhere[1],
                )
            if not _VAR_RE.match(var):
                raise _syntax_error(f"bad variable name {var!r}", row=vwhere[0], col=vwhere[1])
            proto = FlatRow("", op, var, line=vwhere[0], col=vwhere[1])
            for mod, moff in factors[:-1]:
                _parse_modifier(mod, proto, st.where(base + off + moff + len(mod) - len(mod.lstrip())))
            parsed_terms.append(proto)
        for lhs in lhs_vars:  # lavaan: left-hand sides outer, terms inner
            for proto in parsed_terms:
                row = replace(proto, lhs=lhs)
                key = (lhs, op, row.rhs)
                alt = (row.rhs, op, lhs) if op == "~~" else key
                prev = seen.get(key) or seen.get(alt)
                if prev is not None:
                    # lavaan merges modifiers of a repeated element
                    for attr in ("fixed", "start", "lower", "upper"):
                        if getattr(row, attr) is not None:
                            setattr(prev, attr, getattr(row, attr))
                    if row.label:
                        prev.label = row.label
                    continue
                seen[key] = row
                rows.append(row)
    return rows, defined, constraints
