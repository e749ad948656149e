"""lavaan model syntax as Genomic SEM users write it, parsed into a lavaan-style parameter table.

:func:`parse_model` turns a model string into a :class:`ParTable`, applying the defaults of
lavaan's ``sem()`` as GenomicSEM calls it.  Supported syntax:

* operators ``=~`` (loadings), ``~`` (regressions), ``~~`` (variances / covariances),
  ``:=`` (defined parameters), ``==`` / ``<`` / ``>`` (constraints);
* several left-hand sides (``F1 + F2 ~ SNP``) and right-hand side terms joined by ``+``;
* modifiers before a variable, chained with ``*``: a number (fixed value), ``NA`` (free), a label
  (``a*x`` or ``label("a")*x`` or ``"a"*x``), ``start(0.5)``, ``lower(0)``, ``upper(1)``,
  ``equal("a")``, and single-group ``c(...)``;
* statements separated by newlines or ``;``; ``#`` and ``!`` start comments; a line without an
  operator, or a line following one that ends in ``+`` / ``*``, continues the previous statement.

Defaults (lavaan ``sem()``; the names are lavaan's options):

* ``auto.var``: every observed variable that is not a fixed exogenous covariate, and every latent
  variable, gets a free (residual) variance unless the syntax mentions it;
* ``auto.fix.first`` (unless ``std_lv``): the first loading of every factor is fixed to 1 unless
  the syntax gives it a value or ``NA*``;
* ``std.lv``: with ``std_lv=True`` every latent (residual) variance is fixed to 1 (user modifiers
  still win) and loadings are left free;
* ``auto.fix.single``: the residual variance of the only indicator of a one-indicator factor is
  fixed to 0 (unless written in the syntax);
* ``auto.cov.lv.x``: covariances among exogenous latent variables (latent variables that are neither
  indicators nor outcomes of ``~``) are free;
* ``auto.cov.y``: residual covariances among pure outcomes (observed or latent variables that are
  the left side of ``~`` but never a predictor nor an indicator) are free;
* observed variables that only ever predict (right side of ``~``; e.g. ``SNP``) get default
  variance and covariance rows (after the other defaults, as lavaan).  With ``fixed_x=True``
  (lavaan's resolved default for ML) they are exogenous covariates: those rows are *fixed* at the
  sample values (``exo=1``, ``ustart`` NaN until the data are known), are not counted as
  parameters and their moments are not counted as data in ``df``.  lavaan resolves
  ``fixed.x="default"`` to FALSE for DWLS, so GenomicSEM's DWLS fits estimate them as free
  parameters (``fixed_x=False``; :func:`polgen.gsem.fit_models` passes ``fixed_x = estimation ==
  "ML"``).  A covariate mentioned in a user ``~~`` row is treated as random either way.
* Parameters sharing a label are equal (lavaan's ``ceq.simple = FALSE`` layout: each keeps its own
  free index and an implicit ``==`` constraint ties them; a label shared with a fixed parameter
  fixes all of them).  ``label > number`` / ``label < number`` become bounds (``lower``/``upper``);
  other constraints are kept as expressions in :attr:`ParTable.constraints`.

No mean structure: ``~1`` intercepts are rejected (GenomicSEM fits covariance structures only).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl

from polgen.errors import ModelError
from polgen.gsem.expr import Constraint, Defined, Expr
from polgen.gsem.expr import syntax_error as _syntax_error
from polgen.gsem.statements import FlatRow, parse_syntax

__all__ = ["Expr", "FlatRow", "ParRow", "ParTable", "Constraint", "Defined", "parse_model", "parse_syntax"]


# --------------------------------------------------------------------------------------------
# the full parameter table
# --------------------------------------------------------------------------------------------
@dataclass
class ParRow:
    """One row of the parameter table (lavaan partable columns)."""

    id: int
    lhs: str
    op: str
    rhs: str
    user: int  # 1 written in the syntax, 0 added by a default, 2 implied constraint
    free: int  # 0 fixed, else 1-based index into the free parameter vector
    ustart: float  # fixed value or user start value; NaN if none
    exo: int = 0
    label: str = ""
    plabel: str = ""
    lower: float = -math.inf
    upper: float = math.inf
    start: float = math.nan  # starting value used by the optimiser (filled by the model)


@dataclass
class ParTable:
    """lavaan-style parameter table with defaults applied.

    ``rows`` are the parameter rows (``=~``, ``~``, ``~~``) in lavaan's order: user rows first, then
    defaults.  ``observed`` / ``latent`` list the variables in lavaan's order (indicators, outcomes,
    covariates, others) which is the row/column order of the model-implied covariance matrix.
    ``defined`` (``:=``) and ``constraints`` (``==``, ``<``, ``>``) are kept as parsed expressions;
    ``equal_groups`` lists rows (0-based) tied by shared labels.
    """

    rows: list[ParRow]
    observed: list[str]
    latent: list[str]
    defined: list[Defined] = field(default_factory=list)
    constraints: list[Constraint] = field(default_factory=list)
    exogenous: list[str] = field(default_factory=list)  # fixed.x covariates (ov.x)
    std_lv: bool = False
    model: str = ""

    # -- convenience --------------------------------------------------------------------
    @property
    def n_free(self) -> int:
        return max((r.free for r in self.rows), default=0)

    @property
    def free_rows(self) -> list[ParRow]:
        out = [r for r in self.rows if r.free > 0]
        out.sort(key=lambda r: r.free)
        return out

    @property
    def labels(self) -> dict[str, list[int]]:
        """label -> indices of the rows carrying it."""
        out: dict[str, list[int]] = {}
        for i, r in enumerate(self.rows):
            if r.label:
                out.setdefault(r.label, []).append(i)
        return out

    @property
    def equal_groups(self) -> list[list[int]]:
        """Groups of free rows (0-based row indices) constrained equal by a shared label."""
        return [idx for idx in self.labels.values() if len(idx) > 1 and self.rows[idx[0]].free > 0]

    @property
    def n_data(self) -> int:
        """Number of sample moments lavaan counts: p(p+1)/2 minus the fixed.x block."""
        p = len(self.observed)
        nx = len(self.exogenous)
        return p * (p + 1) // 2 - nx * (nx + 1) // 2

    def index(self, lhs: str, op: str, rhs: str) -> int | None:
        for i, r in enumerate(self.rows):
            if r.op == op and ((r.lhs == lhs and r.rhs == rhs) or (op == "~~" and r.lhs == rhs and r.rhs == lhs)):
                return i
        return None

    def copy(self) -> ParTable:
        return replace(
            self,
            rows=[replace(r) for r in self.rows],
            observed=list(self.observed),
            latent=list(self.latent),
            defined=list(self.defined),
            constraints=list(self.constraints),
            exogenous=list(self.exogenous),
        )

    def to_frame(self) -> pl.DataFrame:
        """lavaan's ``parTable()`` columns as a Polars frame (defined/constraint rows last)."""
        schema = {
            "id": pl.Int64,
            "lhs": pl.String,
            "op": pl.String,
            "rhs": pl.String,
            "user": pl.Int64,
            "block": pl.Int64,
            "group": pl.Int64,
            "free": pl.Int64,
            "ustart": pl.Float64,
            "exo": pl.Int64,
            "label": pl.String,
            "plabel": pl.String,
            "lower": pl.Float64,
            "upper": pl.Float64,
            "start": pl.Float64,
        }
        cols: dict[str, list] = {k: [] for k in schema}

        def add(i, lhs, op, rhs, user, free, ustart, exo, label, plabel, lower, upper, start):
            cols["id"].append(i)
            cols["lhs"].append(lhs)
            cols["op"].append(op)
            cols["rhs"].append(rhs)
            cols["user"].append(user)
            cols["block"].append(1)
            cols["group"].append(1)
            cols["free"].append(free)
            cols["ustart"].append(ustart)
            cols["exo"].append(exo)
            cols["label"].append(label)
            cols["plabel"].append(plabel)
            cols["lower"].append(lower)
            cols["upper"].append(upper)
            cols["start"].append(start)

        for r in self.rows:
            add(r.id, r.lhs, r.op, r.rhs, r.user, r.free, r.ustart, r.exo, r.label, r.plabel, r.lower, r.upper, r.start)
        nid = len(self.rows)
        for d in self.defined:
            nid += 1
            add(nid, d.name, ":=", d.expr.text, 1, 0, math.nan, 0, d.name, f".p{nid}.", -math.inf, math.inf, math.nan)
        for c in self.constraints:
            nid += 1
            add(nid, c.lhs.text, c.op, c.rhs.text, 1, 0, math.nan, 0, "", f".p{nid}.", -math.inf, math.inf, math.nan)
        return pl.DataFrame(cols, schema=schema)

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"ParTable({len(self.rows)} rows, {self.n_free} free, observed={self.observed}, latent={self.latent})"


def _unique(seq: Iterable[str]) -> list[str]:
    out: list[str] = []
    for s in seq:
        if s not in out:
            out.append(s)
    return out


def _vnames(rows: Sequence[FlatRow]) -> dict[str, list[str]]:
    lv = _unique(r.lhs for r in rows if r.op == "=~")
    eqs_y = _unique(r.lhs for r in rows if r.op == "~")
    eqs_x = _unique(r.rhs for r in rows if r.op == "~")
    v_ind = _unique(r.rhs for r in rows if r.op == "=~")
    ov_ind = [v for v in v_ind if v not in lv]
    ov_y = [v for v in eqs_y if v not in lv and v not in ov_ind]
    ov_x = [v for v in eqs_x if v not in lv and v not in ov_ind and v not in ov_y]
    ov_cov = [r.lhs for r in rows if r.op == "~~" and r.lhs not in lv] + [
        r.rhs for r in rows if r.op == "~~" and r.rhs not in lv
    ]
    base = ov_ind + ov_y + ov_x
    ov = base + [v for v in _unique(ov_cov) if v not in base]
    # fixed.x: covariates mentioned in a user ~~ row are random
    in_cov = {r.lhs for r in rows if r.op == "~~"} | {r.rhs for r in rows if r.op == "~~"}
    ov_x_fixed = [v for v in ov_x if v not in in_cov]
    lv_x = [v for v in lv if v not in v_ind and v not in eqs_y]
    pure_y = [v for v in eqs_y if v not in v_ind and v not in eqs_x]
    ov_yy = [v for v in ov if v in pure_y and v not in lv]
    lv_y = [v for v in lv if v in pure_y]
    return {"lv": lv, "ov": ov, "ov_x": ov_x_fixed, "lv_x": lv_x, "ov_y": ov_yy, "lv_y": lv_y}


def _combn(names: Sequence[str]) -> list[tuple[str, str]]:
    return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]


def parse_model(
    model: str,
    *,
    std_lv: bool = False,
    observed: Sequence[str] | None = None,
    auto_var: bool = True,
    auto_fix_first: bool | None = None,
    auto_fix_single: bool = True,
    auto_cov_lv_x: bool = True,
    auto_cov_y: bool = True,
    fixed_x: bool = True,
) -> ParTable:
    """Parse lavaan ``model`` syntax into a :class:`ParTable` with lavaan ``sem()`` defaults.

    ``observed``: the names the data provide (e.g. the covstruc trait names, plus ``"SNP"`` for a
    GWAS); a non-latent variable in the model that is not among them raises :class:`ModelError`.
    ``auto_fix_first`` defaults to ``not std_lv`` as in lavaan.  ``fixed_x`` defaults to True as
    ``lavaanify``; ``sem()`` resolves it to True for ML and False for DWLS.
    """
    flat, defined, constraints = parse_syntax(model)
    if not flat:
        raise _syntax_error("the model defines no parameters (no '=~', '~' or '~~' statements)")
    if auto_fix_first is None:
        auto_fix_first = not std_lv
    vn = _vnames(flat)
    lv, ov = vn["lv"], vn["ov"]
    for v in lv:
        if observed is not None and v in observed:
            raise ModelError(f"latent variable {v!r} has the name of an observed variable; rename the factor")
    if observed is not None:
        known = set(observed)
        unknown = [v for v in ov if v not in known]
        if unknown:
            raise ModelError(
                f"model variable(s) {', '.join(map(repr, unknown))} are neither latent "
                f"(left of '=~') nor among the observed variables "
                f"({', '.join(observed)})",
                column=unknown[0],
            )
    ov_x = vn["ov_x"]  # pure predictors; their (co)variances are fixed only with fixed_x
    ov_nox = [v for v in ov if v not in ov_x]

    # defaults (lavaan lav_pt_flat order)
    dflt: list[tuple[str, str, str]] = []
    for v in ov_nox + lv:
        dflt.append((v, "~~", v))
    if auto_cov_lv_x and len(vn["lv_x"]) > 1:
        dflt += [(a, "~~", b) for a, b in _combn(vn["lv_x"])]
    lvov_y = vn["lv_y"] + vn["ov_y"]
    if auto_cov_y and len(lvov_y) > 1:
        dflt += [(a, "~~", b) for a, b in _combn(lvov_y)]
    nx = len(ov_x)
    for j in range(nx):
        for i in range(j, nx):
            dflt.append((ov_x[j], "~~", ov_x[i]))

    user_keys = set()
    for fr in flat:
        user_keys.add((fr.lhs, fr.op, fr.rhs))
        if fr.op == "~~":
            user_keys.add((fr.rhs, fr.op, fr.lhs))
    dflt = [d for d in dflt if d not in user_keys]

    rows: list[ParRow] = []
    for fr in flat:
        rows.append(ParRow(0, fr.lhs, fr.op, fr.rhs, 1, 1, math.nan))
    for a, op, b in dflt:
        rows.append(ParRow(0, a, op, b, 0, 1, math.nan))

    # auto.var = FALSE: unspecified variances fixed to 0
    if not auto_var:
        for r in rows:
            if r.op == "~~" and r.lhs == r.rhs and r.user == 0:
                r.ustart, r.free = 0.0, 0
    if std_lv:
        for r in rows:
            if r.op == "~~" and r.lhs == r.rhs and r.lhs in lv:
                r.ustart, r.free = 1.0, 0
    if auto_fix_first:
        seen_lv: set[str] = set()
        for r in rows:
            if r.op == "=~" and r.lhs not in seen_lv:
                seen_lv.add(r.lhs)
                r.ustart, r.free = 1.0, 0
    if auto_var and auto_fix_single:
        counts: dict[str, int] = {}
        for r in rows:
            if r.op == "=~":
                counts[r.lhs] = counts.get(r.lhs, 0) + 1
        ind_count: dict[str, int] = {}
        for r in rows:
            if r.op == "=~":
                ind_count[r.rhs] = ind_count.get(r.rhs, 0) + 1
        singles = {
            r.rhs for r in rows if r.op == "=~" and counts[r.lhs] == 1 and r.lhs != r.rhs and ind_count[r.rhs] == 1
        }
        for r in rows:
            if r.op == "~~" and r.lhs == r.rhs and r.lhs in singles and r.user == 0:
                r.ustart, r.free = 0.0, 0
    if ov_x and fixed_x:
        xs = set(ov_x)
        for r in rows:
            if r.op == "~~" and r.lhs in xs and r.rhs in xs and r.user == 0:
                r.ustart, r.free, r.exo = math.nan, 0, 1

    # user modifiers
    for row, fr in zip(rows, flat):
        if fr.fixed is not None:
            if math.isnan(fr.fixed):
                row.free, row.ustart = 1, math.nan
            else:
                row.free, row.ustart = 0, fr.fixed
        if fr.start is not None:
            row.ustart = fr.start
        if fr.lower is not None:
            row.lower = fr.lower
        if fr.upper is not None:
            row.upper = fr.upper
        if fr.label:
            row.label = fr.label

    # shared labels: a fixed member fixes all
    by_label: dict[str, list[ParRow]] = {}
    for r in rows:
        if r.label:
            by_label.setdefault(r.label, []).append(r)
    for members in by_label.values():
        if len(members) < 2:
            continue
        fixed = [m for m in members if m.free == 0]
        lows = [m.lower for m in members if math.isfinite(m.lower)]
        ups = [m.upper for m in members if math.isfinite(m.upper)]
        for m in members:
            if lows:
                m.lower = min(lows)
            if ups:
                m.upper = max(ups)
        if fixed:
            for m in members:
                m.free, m.ustart = 0, fixed[0].ustart

    # names used in expressions must be labels (or earlier definitions)
    label_set = set(by_label)
    names_ok = set(label_set)
    for d in defined:
        missing = [n for n in d.expr.names if n not in names_ok]
        if missing:
            raise ModelError(
                f"defined parameter {d.name!r} uses unknown label(s) {', '.join(map(repr, missing))}", row=d.line
            )
        if d.name in label_set:
            raise ModelError(f"defined parameter {d.name!r} has the name of a parameter label", row=d.line)
        names_ok.add(d.name)

    # simple inequality constraints on one label become bounds
    kept: list[Constraint] = []
    for c in constraints:
        for nm in c.lhs.names + c.rhs.names:
            if nm not in names_ok:
                raise ModelError(f"constraint {c.lhs.text} {c.op} {c.rhs.text} uses unknown label {nm!r}", row=c.line)
        bound = _as_bound(c)
        if bound is not None and bound[0] in label_set:
            lab, kind, val = bound
            for m in by_label[lab]:
                if kind == "lower":
                    m.lower = max(m.lower, val)
                else:
                    m.upper = min(m.upper, val)
            continue
        kept.append(c)

    # ids, free indices, plabels
    k = 0
    for i, r in enumerate(rows, start=1):
        r.id = i
        r.plabel = f".p{i}."
        if r.free:
            k += 1
            r.free = k
        if r.free == 0 and r.exo == 0 and math.isnan(r.ustart):
            r.ustart = 0.0
    return ParTable(
        rows=rows,
        observed=ov,
        latent=lv,
        defined=defined,
        constraints=kept,
        exogenous=ov_x if fixed_x else [],
        std_lv=std_lv,
        model=model,
    )


def _as_bound(c: Constraint) -> tuple[str, str, float] | None:
    """``a > 0.001`` -> ("a", "lower", 0.001); ``a < 1`` -> upper; number on the left flips."""
    if c.op not in ("<", ">"):
        return None

    def single(e: Expr):
        return isinstance(e.tree, ast.Name)

    def number(e: Expr):
        try:
            v = e.evaluate({})
        except ModelError:
            return None
        return float(v.real if isinstance(v, complex) else v)

    if single(c.lhs) and not c.rhs.names:
        val = number(c.rhs)
        if val is None:
            return None
        return (c.lhs.tree.id, "lower" if c.op == ">" else "upper", val)
    if single(c.rhs) and not c.lhs.names:
        val = number(c.lhs)
        if val is None:
            return None
        return (c.rhs.tree.id, "upper" if c.op == ">" else "lower", val)
    return None


def label_values(table: ParTable, est_by_row: np.ndarray) -> dict[str, float]:
    """label -> value from per-row values (first row carrying each label)."""
    env: dict[str, float] = {}
    for r, v in zip(table.rows, est_by_row):
        if r.label and r.label not in env:
            env[r.label] = float(v)
    return env
