"""Genomic SEM GWAS: ``user_gwas`` and ``commonfactor_gwas``, streamed in SNP batches.

These reproduce R GenomicSEM's ``userGWAS`` and ``commonfactorGWAS`` per SNP:

* ``S_full = [[v, v b'], [v b, S_LD]]`` with ``v = 2 MAF (1 - MAF)`` (``HSQ`` for TWAS),
  ``V_full = blockdiag(varSNPSE^2, V_SNP, V_LD)`` (``varSNPSE = 0.0005`` unless ``SNPSE``),
  ``diag(I) <- max(diag(I), 1)``, ``V_SNP`` for ``GC`` = standard / conserv / none, nearPD
  smoothing when either matrix is not positive definite;
* lavaan's model as GenomicSEM calls it (``sample.cov`` input, so the SNP variance is a free
  parameter and ``df = (p (p + 1) / 2) - npar``); DWLS with weights ``diag(V_full)^-1`` or ML;
* ``fix_measurement`` as R does it: the model without its SNP lines is fit once to ``S_LD``,
  every parameter that is not a (residual) variance is fixed at that estimate, variances stay
  free per SNP together with the SNP rows of the full model;
* sandwich SEs with ``V_full``; ``chisq = eta' V_full^-1 eta``, ``AIC = chisq + 2 npar``,
  ``Q_SNP`` per factor with a ``F ~ SNP`` path, ``Z_smooth`` (``smooth_check``);
* commonfactorGWAS's model (first loading fixed to 1, ``F1 ~ SNP``, ``trait ~ 0*SNP``), its SE
  (the sandwich SE of ``F1 ~ SNP``) and its ``Q``: the Wald statistic of the direct SNP effects
  freed in a second model whose loadings, ``F1 ~ SNP``, factor and SNP variances are fixed at the
  first model's estimates, ``Q_df = k - 1``.

The model language is lavaan's, parsed by :func:`polgen.gsem.syntax.parse_model` (the one parser
of the project) and laid out by :func:`polgen.gsem.model.compile_model`:

* labels shared by several parameters and ``a == b`` / ``a == number`` constraints are one
  parameter (reparametrisation; lavaan's df and npar count it once);
* bounds (``a > 0.001``, ``a < 1``, ``lower()`` / ``upper()``) as lavaan's constrained solution:
  a SNP whose estimate would leave the interval is refit with the parameter held at the bound
  (active set); its SE is NaN (lavaan's NA) and the other SEs are the sandwich on the remaining
  free parameters (lavaan's constrained information: active constraints restrict the bread to
  their null space);
* defined parameters (``h := a*b``): the expression at the estimates, SE by the delta method
  (Jacobian by complex step, as lavaan) with the sandwich covariance (DWLS; NaN for ML, as R's
  userGWAS); ``sub=`` selects them by name or by ``name:=expression``.

The model is parsed and compiled once per run; per-SNP fits run in numba
(:mod:`polgen.kernels.gwas`) over batches of rows read from parquet / a LazyFrame, through
:func:`polgen.engine.run_to_sink` when ``out=`` is given (resumable, one parquet part per batch).
A SNP that fails (bad input, no convergence) gets ``converged = False`` and a ``warning``; the run
goes on.

Where the fit surface has several local minima (commonfactorGWAS's marker-indicator model with
free factor variance; ``fix_measurement=False``), the lowest objective wins. For commonfactor_gwas
under DWLS the SNP variance, the SNP effect times the factor variance and the factor variance are
solved in closed form for given loadings (variable projection), so only the k-1 free loadings are
iterated (Gauss-Newton or Newton, whichever is better per step), from the no-SNP solution and the
best-scoring of the sign patterns and fixed loading directions; SNPs whose minimum lies on a ridge
(a loading or a variance running off to infinity) are flagged ``converged=False``. lavaan's
``nlminb`` reaches the same minimum on the reference fixtures and on the SNPs where R converges
(R can stop at a higher local minimum because it starts every SNP from the first SNP's estimates).
ML fits use multiple starts over the full parameter vector.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

from polgen.errors import InputError, ModelError, ModelSyntaxError, SchemaError

log = logging.getLogger("polgen")

__all__ = ["user_gwas", "commonfactor_gwas", "lavaanify", "ParTable", "ParRow"]

# ==============================================================================================
# model syntax -> numbered parameter table -> RAM arrays
#
# The syntax is parsed by polgen.gsem.syntax.parse_model (lavaan sem() defaults, GenomicSEM's
# fixed.x = FALSE: the SNP variance is a free parameter) and the RAM layout (variable order, cells,
# vech order, structural checks) comes from polgen.gsem.model.compile_model.  What is GWAS-specific
# is kept here: a parameter table whose rows carry a parameter *number* shared by rows that are
# constrained equal (labels, ``a == b``: the reparametrisation the kernels fit), values that
# fix_measurement overwrites, and the flat per-row entry arrays of polgen.kernels.gwas.
# ==============================================================================================
@dataclass
class ParRow:
    lhs: str
    op: str
    rhs: str
    free: bool
    value: float            # fixed value, or start value when free (nan: no start)
    label: str = ""
    user: bool = True
    par: int = -1           # parameter number (rows sharing one are equal); -1 fixed
    lower: float = -math.inf
    upper: float = math.inf


@dataclass
class ParTable:
    rows: list[ParRow]
    lv: list[str]
    ov: list[str]
    defined: list = field(default_factory=list)       # polgen.gsem.syntax.Defined (name := expr)
    constraints: list = field(default_factory=list)   # polgen.gsem.syntax.Constraint (==, <, >)

    def copy(self) -> "ParTable":
        return ParTable([ParRow(**r.__dict__) for r in self.rows], list(self.lv), list(self.ov),
                        list(self.defined), list(self.constraints))


def lavaanify(text: str, *, std_lv: bool = False) -> ParTable:
    """Parameter table of lavaan ``sem()`` for ``sample.cov`` input as GenomicSEM calls it
    (:func:`polgen.gsem.syntax.parse_model` with ``fixed_x=False``), as GWAS rows."""
    from polgen.gsem.syntax import parse_model

    table = parse_model(text, std_lv=std_lv, fixed_x=False)
    rows = []
    for r in table.rows:
        free = r.free > 0
        rows.append(ParRow(r.lhs, r.op, r.rhs, free, float(r.ustart) if not (free and math.isnan(r.ustart))
                           else np.nan, r.label, bool(r.user), -1, float(r.lower), float(r.upper)))
    return ParTable(rows, list(table.latent), list(table.observed), list(table.defined),
                    list(table.constraints))


def _label_groups(pt: ParTable) -> dict[str, str]:
    """label -> representative label: labels tied by ``a == b`` constraints are one group."""
    parent = {r.label: r.label for r in pt.rows if r.label}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for c in pt.constraints:
        if c.op == "==" and _single_name(c.lhs) in parent and _single_name(c.rhs) in parent:
            a, b = find(_single_name(c.lhs)), find(_single_name(c.rhs))
            if a != b:
                parent[b] = a
    return {lab: find(lab) for lab in parent}


def _single_name(e) -> str | None:
    import ast

    return e.tree.id if isinstance(e.tree, ast.Name) else None


def _const_value(e) -> float | None:
    if e.names:
        return None
    try:
        v = e.evaluate({})
    except (ModelError, ZeroDivisionError, ValueError, OverflowError):
        return None
    v = complex(v).real if isinstance(v, complex) else float(v)
    return v if math.isfinite(v) else None


def _check_constraints(pt: ParTable) -> None:
    """user_gwas fits equality constraints by reparametrisation (one shared parameter) and simple
    bounds by an active set; other constraint forms are rejected with a clear error."""
    labels = {r.label for r in pt.rows if r.label}
    for c in pt.constraints:
        txt = f"{c.lhs.text} {c.op} {c.rhs.text}"
        for nm in c.lhs.names + c.rhs.names:
            if nm not in labels:
                raise ModelError(f"constraint '{txt}' uses {nm!r}, which labels no parameter of the "
                                 "model (user_gwas constraints must name parameter labels)", row=c.line)
        if c.op == "==":
            a, b = _single_name(c.lhs), _single_name(c.rhs)
            if a is not None and (b is not None or _const_value(c.rhs) is not None):
                continue
            if b is not None and _const_value(c.lhs) is not None:
                continue
        raise ModelError(f"constraint '{txt}' is not supported by user_gwas: use 'label == label', "
                         "'label == number', or bounds 'label > number' / 'label < number'", row=c.line)


def number_parameters(pt: ParTable) -> int:
    """Give each free row a parameter number; rows constrained equal (a shared label, or labels
    tied by ``a == b``) share one, a group with a fixed member (or ``a == number``) is fixed.
    Bounds of a group are intersected.  Fixed rows get -1."""
    _check_constraints(pt)
    group = _label_groups(pt)
    fixed_at: dict[str, float] = {}

    def fix(g: str, v: float) -> None:
        old = fixed_at.setdefault(g, v)
        if abs(old - v) > 1e-12 * (1.0 + abs(v)):
            raise ModelError(f"the constraints on label {g!r} (and the labels tied to it) ask for "
                             f"two values, {old!r} and {v!r}")

    for r in pt.rows:
        if r.label and not r.free:
            fix(group[r.label], float(r.value))
    for c in pt.constraints:
        if c.op != "==":
            continue
        a, b = _single_name(c.lhs), _single_name(c.rhs)
        if a is not None and b is None:
            fix(group[a], _const_value(c.rhs))
        elif b is not None and a is None:
            fix(group[b], _const_value(c.lhs))
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for r in pt.rows:
        if r.label:
            g = group[r.label]
            lo[g] = max(lo.get(g, -math.inf), r.lower)
            hi[g] = min(hi.get(g, math.inf), r.upper)
    nums: dict[str, int] = {}
    n = 0
    for r in pt.rows:
        g = group.get(r.label) if r.label else None
        if g is not None and g in fixed_at:
            r.free, r.value = False, fixed_at[g]
        if not r.free:
            r.par = -1
            continue
        if g is not None:
            r.lower, r.upper = lo[g], hi[g]
            if r.lower > r.upper:
                raise ModelError(f"the bounds of parameter label {r.label!r} exclude every value")
            if g not in nums:
                nums[g] = n
                n += 1
            r.par = nums[g]
        else:
            r.par = n
            n += 1
    return n


@dataclass
class CompiledModel:
    """RAM arrays for :func:`polgen.kernels.gwas.gwas_batch` plus naming of parameters."""

    nv: int
    p: int
    var_names: list[str]            # observed first (SNP at 0), then latent
    obs_map: np.ndarray             # observed index -> S_full index (0 = SNP, 1 + trait)
    ma: np.ndarray
    mb: np.ndarray
    vidx: np.ndarray                # moment -> index in vech(S_full) (V_full row)
    ent_kind: np.ndarray
    ent_r: np.ndarray
    ent_c: np.ndarray
    ent_par: np.ndarray
    ent_val: np.ndarray
    par_ptr: np.ndarray
    par_ent: np.ndarray
    npar: int
    rows: list[ParRow] = field(default_factory=list)

    def arrays(self) -> dict:
        return {k: getattr(self, k) for k in ("nv", "p", "obs_map", "ma", "mb", "vidx", "ent_kind",
                                              "ent_r", "ent_c", "ent_par", "ent_val", "par_ptr",
                                              "par_ent")}

    @property
    def nmom(self) -> int:
        return len(self.ma)


def vech_index(r: int, c: int, n: int) -> int:
    """Position of (r, c) in vech of an n x n matrix (lower triangle stacked column-wise)."""
    if r < c:
        r, c = c, r
    return c * n - c * (c - 1) // 2 + (r - c)


def compile_ram(pt: ParTable, traits: list[str], snp_name: str = "SNP",
                observed: list[str] | None = None) -> CompiledModel:
    """RAM arrays of a numbered parameter table.  Every row must have ``par`` set (>= 0 for
    parameters, -1 for fixed values held in ``value``).  The layout comes from
    :func:`polgen.gsem.model.compile_model` (which also rejects duplicated parameters and
    self-regressions); the observed variables are ordered SNP first, then the traits in covstruc
    order."""
    from polgen.gsem import syntax as sx
    from polgen.gsem.model import compile_model

    tset = set(traits)
    if observed is None:
        observed = [v for v in pt.ov if v != snp_name]
    unknown = [v for v in observed if v not in tset]
    if unknown:
        raise ModelError(f"model variables {unknown} are neither traits of the covstruc "
                         f"({traits}) nor latent variables nor {snp_name}")
    has_snp = snp_name in pt.ov
    obs = ([snp_name] if has_snp else []) + [t for t in traits if t in set(observed)]
    # every row its own cell: a table with each row free once gives the cell of each row
    srows = [sx.ParRow(i + 1, r.lhs, r.op, r.rhs, int(r.user), i + 1, math.nan)
             for i, r in enumerate(pt.rows)]
    table = sx.ParTable(rows=srows, observed=list(obs), latent=list(pt.lv))
    cm = compile_model(table, observed_order=list(obs))
    names = cm.variables
    index = {v: i for i, v in enumerate(names)}
    p = cm.p
    K1 = len(traits) + 1
    obs_map = np.array([0 if v == snp_name else 1 + traits.index(v) for v in obs], np.int64)
    ma = np.ascontiguousarray(cm.vech_row, np.int64)
    mb = np.ascontiguousarray(cm.vech_col, np.int64)
    vidx = [vech_index(int(obs_map[a]), int(obs_map[b]), K1) for a, b in zip(ma, mb)]
    kind, er, ec, epar, evals = [], [], [], [], []
    npar = 1 + max([r.par for r in pt.rows] + [-1])
    for t, r in enumerate(pt.rows):
        kind.append(int(cm.par_kind[t]))
        if r.op == "=~":
            er.append(index[r.rhs]); ec.append(index[r.lhs])
        else:  # '~' and '~~' (a symmetric S cell, kept in the written order)
            er.append(index[r.lhs]); ec.append(index[r.rhs])
        epar.append(r.par)
        evals.append(0.0 if r.par >= 0 else float(r.value))
    epar_a = np.array(epar, np.int64)
    order = np.argsort(epar_a, kind="stable")
    par_ent = np.array([e for e in order if epar_a[e] >= 0], np.int64)
    counts = np.bincount(epar_a[epar_a >= 0], minlength=npar) if npar else np.zeros(0, np.int64)
    par_ptr = np.zeros(npar + 1, np.int64)
    par_ptr[1:] = np.cumsum(counts)
    return CompiledModel(
        nv=len(names), p=p, var_names=names, obs_map=obs_map,
        ma=ma, mb=mb, vidx=np.array(vidx, np.int64),
        ent_kind=np.array(kind, np.int64), ent_r=np.array(er, np.int64), ent_c=np.array(ec, np.int64),
        ent_par=epar_a, ent_val=np.array(evals, np.float64), par_ptr=par_ptr, par_ent=par_ent,
        npar=npar, rows=pt.rows,
    )


# ==============================================================================================
# run plan
# ==============================================================================================
_GC = {"standard": 0, "conserv": 1, "conservative": 1, "none": 2}
DEFAULT_BATCH = 200_000
MULTISTART_MAX_ITER = 300   # per start when several starts compete (the best converged one wins)


@dataclass
class _Stage:
    """One per-SNP fit: compiled model, free parameters, start vectors."""

    model: dict
    fidx: np.ndarray
    starts: np.ndarray              # (n_starts, npar)
    snpvar_par: int
    wald_idx: np.ndarray | None = None
    fast: dict | None = None        # fast-path structure (see kernels.gwas.fast_structure)
    cf: dict | None = None          # commonfactor DWLS: reduced-problem starts (see _cf_stage1)


@dataclass
class _Plan:
    kind: str                       # "user" | "commonfactor"
    traits: list[str]
    beta_cols: list[str]
    se_cols: list[str]
    id_cols: list[str]
    var_col: str                    # MAF (var = 2 MAF (1-MAF)) or HSQ (TWAS)
    twas: bool
    pred: str                       # "SNP" or "Gene"
    S_LD: np.ndarray
    V_LD: np.ndarray
    I_LD: np.ndarray
    gc: int
    varse2: float
    v_pd_known: bool
    ml: bool
    toler: float
    smooth_check: bool
    stage1: _Stage
    stage2: _Stage | None
    out_rows: list[tuple[str, str, str, int, float]]   # lhs, op, rhs, par (-1 fixed), value
    q_ptr: np.ndarray | None
    q_obs: np.ndarray | None
    q_trait: np.ndarray | None
    q_rows: dict[int, int]          # out_rows index -> Q_SNP group
    q_df: list[int]
    df: int
    npar: int
    est_row: int = -1               # commonfactor: par of F1 ~ SNP
    ml_wmode: int = 0
    bounds: tuple | None = None     # (lower, upper) per parameter when the model has bounds
    defined: list = field(default_factory=list)       # [(name, Expr)] of ':=' parameters
    label_src: dict = field(default_factory=dict)     # label -> (par, value) (par -1: fixed)
    eliminate: bool = True          # solve indicator residual variances in closed form (their SEs
                                    # are then not computed: off for long= / sub= output)


def _is_pd(a: np.ndarray) -> bool:
    try:
        return bool(np.linalg.eigvalsh(a)[0] > 0)
    except np.linalg.LinAlgError:
        return False


def _near_pd(a: np.ndarray) -> np.ndarray:
    from polgen.kernels.gwas import near_pd

    out = np.empty_like(a)
    if not near_pd(np.ascontiguousarray(a, np.float64), out):
        from polgen.errors import NotPositiveDefiniteError

        raise NotPositiveDefiniteError("matrix seems negative semidefinite: nearPD failed")
    return out


def _v_snp_pd_constant(I: np.ndarray, gc: int) -> bool:
    """V_SNP = v^2 Dse M Dse with M fixed by I and GC: PD for every SNP iff M is PD."""
    d = np.diag(I)
    if gc == 1:
        M = I * np.outer(d, d)
        np.fill_diagonal(M, d * d)
    elif gc == 0:
        M = I * np.sqrt(np.outer(d, d))
        np.fill_diagonal(M, d)
    else:
        M = I.copy()
        np.fill_diagonal(M, 1.0)
    return _is_pd(M)


def _as_covstruc(covstruc):
    from polgen.gsem.covstruc import as_covstruc

    return as_covstruc(covstruc)


def _model_text(model: str) -> str:
    if isinstance(model, os.PathLike) or (isinstance(model, str) and "\n" not in model
                                          and not re.search(r"[~=]", model) and Path(model).is_file()):
        return Path(model).read_text()
    if not isinstance(model, str):
        raise ModelSyntaxError(f"model must be lavaan-style text, got {type(model).__name__}")
    return model


def _start_values(pt: ParTable, S_LD: np.ndarray, traits: list[str], npar: int,
                  baseline: dict | None = None) -> np.ndarray:
    """lavaan-like starts: loadings 1 (or from a baseline fit), observed variances S_ii / 2,
    latent variances 0.05, regressions and covariances 0; baseline estimates where given."""
    th = np.zeros(npar)
    tidx = {t: i for i, t in enumerate(traits)}
    for r in pt.rows:
        if r.par < 0:
            continue
        key = (r.lhs, r.op, r.rhs)
        if baseline is not None and key in baseline:
            th[r.par] = baseline[key]
        elif np.isfinite(r.value):
            th[r.par] = r.value
        elif r.op == "=~":
            th[r.par] = 1.0
        elif r.op == "~~" and r.lhs == r.rhs:
            th[r.par] = 0.5 * S_LD[tidx[r.lhs], tidx[r.lhs]] if r.lhs in tidx else 0.05
        else:
            th[r.par] = 0.0
    return th


def _sign_starts(pt: ParTable, th: np.ndarray, max_starts: int = 16,
                 scales: tuple[float, ...] = (1.0, 0.5)) -> np.ndarray:
    """Start vectors with sign patterns of the free loadings (the first free loading of each
    factor keeps its sign: flipping all of a factor's loadings gives a mirror solution), each at
    the given loading scales."""
    seen_first: set[str] = set()
    flips = []
    for r in pt.rows:
        if r.op == "=~" and r.par >= 0:
            if r.lhs not in seen_first and not any(
                    x.op == "=~" and x.lhs == r.lhs and x.par < 0 for x in pt.rows):
                seen_first.add(r.lhs)
                continue
            seen_first.add(r.lhs)
            if r.par not in flips:
                flips.append(r.par)
    base = np.abs(th.copy())
    for r in pt.rows:  # only loadings take absolute values
        if r.par >= 0 and r.op != "=~":
            base[r.par] = th[r.par]
    if not flips:
        return th[None, :].copy()
    if 2 ** len(flips) <= max_starts:
        patterns = list(itertools.product([1.0, -1.0], repeat=len(flips)))
    else:
        patterns = [tuple([1.0] * len(flips))]
        for j in range(len(flips)):
            pat = [1.0] * len(flips)
            pat[j] = -1.0
            patterns.append(tuple(pat))
        patterns.append(tuple([-1.0] * len(flips)))
    out = np.empty((len(patterns) * len(scales), len(th)))
    s = 0
    for sc in scales:
        for pat in patterns:
            out[s] = base
            for q, sg in zip(flips, pat):
                out[s, q] = sg * sc * abs(base[q])
            s += 1
    return out


def _par_bounds(pt: ParTable, npar: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-parameter bounds (lower(), upper(), ``label > number``, ``label < number``)."""
    lo = np.full(npar, -np.inf)
    hi = np.full(npar, np.inf)
    for r in pt.rows:
        if r.par >= 0:
            lo[r.par] = max(lo[r.par], r.lower)
            hi[r.par] = min(hi[r.par], r.upper)
    return lo, hi


def _fit_cov_bounded(s, w, arrays, npar, start, lo, hi, ml):
    """fit_cov with bounds by an active set (as lavaan's solution: parameters that would leave
    their interval are held at the bound, one is released when it moves back inside)."""
    from polgen.kernels.gwas import ST_OK, fit_cov

    at = np.zeros(npar, np.int8)          # 0 free, 1 at lower, 2 at upper
    th0 = np.array(start, dtype=np.float64, copy=True)
    for _ in range(2 * npar + 2):
        th0[at == 1] = lo[at == 1]
        th0[at == 2] = hi[at == 2]
        fidx = np.nonzero(at == 0)[0].astype(np.int64)
        th, st, _, sig = fit_cov(s, w, arrays, fidx, th0, ml=ml)
        if st != ST_OK:
            return th, st, sig
        viol = np.where(th < lo, 1, np.where(th > hi, 2, 0)).astype(np.int8)
        viol[at != 0] = 0
        if not viol.any():
            return th, st, sig
        at = np.where(viol != 0, viol, at)
        th0 = np.where(viol != 0, th0, th)
    return th, st, sig


def _no_snp_text(text: str, pred: str) -> str:
    """The model without its SNP lines, as R's userGWAS writes it for fix_measurement (lines
    naming the SNP and ':=' lines dropped); constraint lines left naming labels of dropped rows
    are dropped too (R's lavaan call fails on them)."""
    from polgen.gsem.syntax import parse_syntax

    lines = [ln for ln in text.split("\n") if pred not in ln and ":=" not in ln]
    try:
        flat, _, _ = parse_syntax("\n".join(lines))
    except ModelSyntaxError:
        return "\n".join(lines)
    labels = {r.label for r in flat if r.label}
    keep = []
    for ln in lines:
        try:
            f, _, cons = parse_syntax(ln)
        except ModelSyntaxError:
            keep.append(ln)
            continue
        if cons and not f and any(n not in labels for c in cons for n in c.lhs.names + c.rhs.names):
            continue
        keep.append(ln)
    return "\n".join(keep)


def _fit_baseline(text: str, S_LD: np.ndarray, V_LD: np.ndarray, traits: list[str], *, std_lv: bool,
                  ml: bool) -> tuple[ParTable, dict]:
    """Fit the model without its SNP lines to S_LD (DWLS weights diag(V_LD)^-1, or ML)."""
    from polgen.kernels.gwas import ST_OK, fit_cov

    pt0 = lavaanify(text, std_lv=std_lv)
    missing = [v for v in pt0.ov if v not in traits]
    if missing:
        raise ModelError(f"model variables {missing} are not traits of the covstruc {traits}")
    npar = number_parameters(pt0)
    cm = compile_ram(pt0, traits, snp_name="\0none", observed=pt0.ov)
    k = len(traits)
    tix = [int(j) - 1 for j in cm.obs_map]
    s = np.array([S_LD[tix[a], tix[b]] for a, b in zip(cm.ma, cm.mb)])
    w = np.array([1.0 / V_LD[vech_index(tix[a], tix[b], k), vech_index(tix[a], tix[b], k)]
                  for a, b in zip(cm.ma, cm.mb)])
    th0 = _start_values(pt0, S_LD, traits, npar)
    lo, hi = _par_bounds(pt0, npar)
    best = None
    for start in _sign_starts(pt0, th0):
        th, st, sig = _fit_cov_bounded(s, w, cm.arrays(), npar, start, lo, hi, ml)
        if st != ST_OK:
            continue
        if ml:
            f = float(np.sum((s - sig) ** 2))
        else:
            f = float(np.sum(w * (s - sig) ** 2))
        if best is None or f < best[0] - 1e-12 * abs(best[0]):
            best = (f, th)
    if best is None:
        from polgen.errors import ConvergenceError

        raise ConvergenceError("the model without SNP effects (fix_measurement) did not converge")
    th = best[1]
    est = {}
    for r in pt0.rows:
        est[(r.lhs, r.op, r.rhs)] = float(th[r.par]) if r.par >= 0 else float(r.value)
    return pt0, est


def _resolve_columns(schema: dict, traits: list[str], twas: bool) -> tuple[list[str], list[str], list[str], str]:
    names = list(schema)
    beta_cols, se_cols = [], []
    for t in traits:
        b, s = f"beta.{t}", f"se.{t}"
        beta_cols.append(b if b in schema else None)
        se_cols.append(s if s in schema else None)
    if None in beta_cols or None in se_cols:
        # R takes the beta.* / se.* columns by position
        bpos = [c for c in names if c.startswith("beta.")]
        spos = [c for c in names if c.startswith("se.")]
        if len(bpos) == len(traits) and len(spos) == len(traits):
            log.warning("sumstats columns do not name the covstruc traits %s; using beta.*/se.* by "
                        "position as R does", traits)
            beta_cols, se_cols = bpos, spos
        else:
            miss = [f"beta.{t}" for t, c in zip(traits, beta_cols) if c is None] + \
                   [f"se.{t}" for t, c in zip(traits, se_cols) if c is None]
            raise SchemaError(f"sumstats lack columns {miss} for covstruc traits {traits}",
                              column=miss[0])
    if twas:
        need = ["Gene", "Panel", "HSQ"]
        var_col = "HSQ"
    else:
        need = ["SNP", "MAF"]
        var_col = "MAF"
    miss = [c for c in need if c not in schema]
    if miss:
        raise SchemaError(f"sumstats lack column(s) {miss}", column=miss[0])
    idc = ["Gene", "Panel", "HSQ"] if twas else [c for c in ("SNP", "CHR", "BP", "MAF", "A1", "A2") if c in schema]
    return beta_cols, se_cols, idc, var_col


def _common_setup(covstruc, GC, SNPSE, toler, estimation):
    cs = _as_covstruc(covstruc)
    if estimation not in ("DWLS", "ML"):
        raise InputError(f"estimation must be 'DWLS' or 'ML', got {estimation!r}")
    if GC not in _GC:
        raise InputError(f"GC must be 'standard', 'conserv' or 'none', got {GC!r}")
    gc = _GC[GC]
    if SNPSE is None or SNPSE is False:
        varse2 = 0.0005 ** 2
    else:
        if not (isinstance(SNPSE, (int, float)) and not isinstance(SNPSE, bool) and 0 < SNPSE < np.inf):
            raise InputError(f"SNPSE must be a positive finite number, got {SNPSE!r}")
        varse2 = float(SNPSE) ** 2
    if toler in (None, False):
        tol = 0.0
    elif isinstance(toler, (int, float)) and not isinstance(toler, bool) and 0 <= toler < np.inf:
        tol = float(toler)
    else:
        raise InputError(f"toler must be None/False or a non-negative finite number, got {toler!r}")
    I = np.array(cs.I, dtype=np.float64, copy=True)
    d = np.diag(I).copy()
    d[d <= 1.0] = 1.0
    np.fill_diagonal(I, d)
    return cs, gc, varse2, tol, I


def _plan_user(schema, covstruc, model, estimation, GC, fix_measurement, std_lv, Q_SNP, smooth_check,
               SNPSE, TWAS, toler, sub, long, ml_se="R") -> _Plan:
    cs, gc, varse2, tol, I = _common_setup(covstruc, GC, SNPSE, toler, estimation)
    traits = list(cs.trait_names)
    pred = "Gene" if TWAS else "SNP"
    text = _model_text(model)
    ml = estimation == "ML"
    S_LD = np.array(cs.S, dtype=np.float64)
    V_LD = np.array(cs.V, dtype=np.float64)
    pt_full = lavaanify(text, std_lv=std_lv)
    if not any(r.op == "~" and r.rhs == pred for r in pt_full.rows) and not any(
            r.op == "~" and r.lhs == pred for r in pt_full.rows):
        raise ModelError(f"the model has no '~ {pred}' regression: nothing to estimate per SNP")
    bad = [v for v in pt_full.ov if v != pred and v not in traits]
    if bad:
        raise ModelError(f"model variables {bad} are not traits of the covstruc {traits} "
                         f"(nor latent variables, nor {pred})", column=bad[0])
    if fix_measurement:
        if not _is_pd(S_LD):
            log.warning("S_LD is not positive definite: smoothing with nearPD (as R's userGWAS)")
            S_LD = _near_pd(S_LD)
        if not _is_pd(V_LD):
            log.warning("V_LD is not positive definite: smoothing with nearPD (as R's userGWAS)")
            V_LD = _near_pd(V_LD)
        pt0, est0 = _fit_baseline(_no_snp_text(text, pred), S_LD, V_LD, traits, std_lv=std_lv, ml=ml)
        rows = []
        for r in pt0.rows:
            rr = ParRow(**r.__dict__)
            rr.value = est0[(r.lhs, r.op, r.rhs)]
            rr.free = bool(r.free and r.op == "~~" and r.lhs == r.rhs)
            # a fixed labelled row keeps its label: parameters tied to it are fixed with it
            rows.append(rr)
        for r in pt_full.rows:
            if r.lhs == pred or r.rhs == pred:
                rows.append(ParRow(**r.__dict__))
        pt = ParTable(rows, pt_full.lv, pt_full.ov, pt_full.defined, pt_full.constraints)
        npar = number_parameters(pt)
        cm = compile_ram(pt, traits, snp_name=pred)
        th = _start_values(pt, S_LD, traits, npar)
        starts = th[None, :]
    else:
        pt = pt_full
        npar = number_parameters(pt)
        cm = compile_ram(pt, traits, snp_name=pred)
        base = None
        try:
            _, base = _fit_baseline(_no_snp_text(text, pred), S_LD, V_LD, traits, std_lv=std_lv, ml=ml)
        except Exception as exc:  # noqa: BLE001 - starts only: fall back to lavaan-like defaults
            log.info("no baseline starts (%s); using default start values", exc)
        th = _start_values(pt, S_LD, traits, npar, baseline=base)
        starts = _sign_starts(pt, th)
    snpvar = [r.par for r in pt.rows if r.op == "~~" and r.lhs == pred and r.rhs == pred and r.par >= 0]
    arrays = cm.arrays()
    if ml and ml_se == "R":
        arrays["vidx_meat"] = _r_ml_meat(cm, pt_full.ov, pred, traits)
    stage = _Stage(arrays, np.arange(npar, dtype=np.int64), starts, snpvar[0] if snpvar else -1)
    if not ml and starts.shape[0] == 1:
        from polgen.kernels.gwas import fast_structure

        stage.fast = fast_structure(arrays, stage.fidx, starts[0])
    # output rows: parameters (par >= 0 free, -1 fixed) and defined parameters (par -2)
    rows_all = [(r.lhs, r.op, r.rhs, r.par, float(r.value) if r.par < 0 else np.nan) for r in pt.rows]
    rows_def = [(d.name, ":=", d.expr.text, -2, np.nan) for d in pt.defined]
    if long:
        out_rows = rows_all + rows_def
    elif sub:
        subs = [sub] if isinstance(sub, str) else list(sub)
        subs = ["".join(str(x).split()) for x in subs]
        out_rows = []
        for x in subs:
            out_rows += [r for r in rows_all + rows_def
                         if f"{r[0]}{r[1]}{r[2]}" == x or (r[1] == ":=" and r[0] == x)]
        found = {f"{r[0]}{r[1]}{r[2]}" for r in out_rows} | {r[0] for r in out_rows if r[1] == ":="}
        miss = [x for x in subs if x not in found]
        if miss:
            raise ModelError(f"sub= names parameters not in the model: {miss}")
    else:
        out_rows = [r for r in rows_all if r[3] >= 0 and r[1] == "~" and pred in (r[0], r[2])]
        if not out_rows:
            raise ModelError(f"the model has no free '~ {pred}' parameter to report")
        out_rows += rows_def
    if pt.defined and ml:
        log.warning("user_gwas: standard errors of defined (:=) parameters are not available for "
                    "ML (as R's userGWAS); their se is NaN")
    label_src: dict[str, tuple[int, float]] = {}
    for r in pt.rows:
        if r.label and r.label not in label_src:
            label_src[r.label] = (r.par, float(r.value))
    lo, hi = _par_bounds(pt, npar)
    bounds = (lo, hi) if (np.isfinite(lo).any() or np.isfinite(hi).any()) else None
    # Q_SNP groups: factors with a 'F ~ SNP' line, indicators that are observed traits
    q_ptr = q_obs = q_trait = None
    q_rows: dict[int, int] = {}
    q_df: list[int] = []
    if Q_SNP:
        snp_lines = [ln.replace(" ", "") for ln in text.split("\n") if pred in ln]
        heads = {re.sub(r"~.*", "", ln) for ln in snp_lines}
        lvq = [v for v in pt.lv if v in heads]
        ptr, obs_i, tr_i = [0], [], []
        obs_names = cm.var_names[:cm.p]
        for g, f in enumerate(lvq):
            ind = [r.rhs for r in pt.rows if r.op == "=~" and r.lhs == f]
            if ind and ind[0] in traits:
                for x in ind:
                    obs_i.append(obs_names.index(x))
                    tr_i.append(traits.index(x))
            ptr.append(len(obs_i))
            q_df.append(len(ind) - 1)
            for j, (lhs, op, rhs, _, _) in enumerate(out_rows):
                if lhs == f and op == "~" and rhs == pred:
                    q_rows[j] = g
        q_ptr = np.array(ptr, np.int64)
        q_obs = np.array(obs_i, np.int64)
        q_trait = np.array(tr_i, np.int64)
    nmom = len(cm.ma)
    elim = not (long or sub)
    return _Plan(
        eliminate=elim,
        kind="user", traits=traits, beta_cols=[], se_cols=[], id_cols=[], var_col="", twas=TWAS,
        pred=pred, S_LD=S_LD, V_LD=V_LD, I_LD=I, gc=gc, varse2=varse2,
        v_pd_known=_is_pd(V_LD) and _v_snp_pd_constant(I, gc), ml=ml, toler=tol,
        smooth_check=smooth_check, stage1=stage, stage2=None, out_rows=out_rows, q_ptr=q_ptr,
        q_obs=q_obs, q_trait=q_trait, q_rows=q_rows, q_df=q_df, df=nmom - npar, npar=npar,
        bounds=bounds, defined=[(d.name, d.expr) for d in pt.defined], label_src=label_src,
    )


def _r_ml_meat(cm: CompiledModel, ov_order: list[str], pred: str, traits: list[str]) -> np.ndarray:
    """vech(V_full) positions that R's ML sandwich multiplies with each model moment.

    R reorders V_full for the variable order of a DWLS fit of the model (the SNP first) but
    lavaan's ML fit lists the SNP last, so R's ML "meat" pairs moment (a, b) of the ML model with
    the V_full entries of the variables at the same positions in the DWLS order (reproduces the
    R fixtures; ``ml_se="aligned"`` uses the consistent sandwich instead)."""
    obs_names = cm.var_names[:cm.p]
    tr = [v for v in ov_order if v != pred and v in obs_names]
    o_ml = tr + [pred]
    o_dwls = [pred] + tr
    K1 = len(traits) + 1
    sidx = {v: (0 if v == pred else 1 + traits.index(v)) for v in obs_names}
    perm = [sidx[o_dwls[o_ml.index(v)]] for v in obs_names]
    return np.array([vech_index(perm[a], perm[b], K1) for a, b in zip(cm.ma, cm.mb)], np.int64)


def commonfactor_model(traits: Sequence[str], pred: str = "SNP") -> str:
    """The model R's commonfactorGWAS writes: F1 =~ all traits, F1 ~ SNP, trait ~ 0*SNP."""
    lines = ["F1 =~ " + " + ".join(traits), f"F1 ~ {pred}"]
    lines += [f"{t} ~ 0*{pred}" for t in traits]
    return "\n".join(lines)


CF_DIRECTIONS = 256   # loading directions scored per SNP (commonfactor_gwas, DWLS)
CF_LM_RUNS = 6        # fits per SNP: the warm start and the best-scoring others


def _cf_structure(pt: ParTable, traits: list[str], pred: str, S_LD: np.ndarray,
                  base: dict | None) -> dict:
    """Starts and parameter numbers for :func:`polgen.kernels.gwas.commonfactor_fit`.

    The per-SNP surface can have several local minima (they differ in the signs and the relative
    sizes of the loadings).  The kernel scores every start by its objective (``phi`` and
    ``c = b v`` projected out) and fits from the warm start (the no-SNP common-factor loadings)
    and the ``CF_LM_RUNS - 1`` best-scoring others; the lowest objective wins.  Starts: the
    warm start, its sign patterns at scales 1, 0.3 and 3, lavaan's default (loadings 1) and a
    fixed set of loading directions."""
    k = len(traits)
    key = {(r.lhs, r.op, r.rhs): r.par for r in pt.rows}
    pidx = ([key[("F1", "=~", t)] for t in traits[1:]] + [key[("F1", "~", pred)]]
            + [key[(t, "~~", t)] for t in traits] + [key[("F1", "~~", "F1")], key[(pred, "~~", pred)]])
    if base is not None:
        lam = np.array([base[("F1", "=~", t)] for t in traits[1:]], dtype=np.float64)
        phi = float(base[("F1", "~~", "F1")])
    else:
        lam, phi = np.ones(k - 1), 0.05
    if not (np.all(np.isfinite(lam)) and np.isfinite(phi)):
        lam, phi = np.ones(k - 1), 0.05
    rows = []
    flips = list(itertools.product([1.0, -1.0], repeat=k - 1)) if k - 1 <= 4 else (
        [tuple([1.0] * (k - 1))] + [tuple(-1.0 if i == j else 1.0 for i in range(k - 1))
                                    for j in range(k - 1)])
    for sc in (1.0, 0.3, 3.0):
        for pat in flips:
            rows.append(np.r_[np.abs(lam) * np.array(pat) * sc, phi / sc ** 2])
    rows.append(np.r_[np.ones(k - 1), 0.05])
    # directions of the loading vector (the objective depends on its direction only): a fixed
    # set, in the l_1 = 1 chart
    u = np.random.default_rng(20240601).normal(size=(CF_DIRECTIONS, k))
    u *= np.sign(u[:, :1])
    u = u[np.abs(u[:, 0]) >= 0.05 * np.abs(u).max(axis=1)]
    for row in u:
        rows.append(np.r_[row[1:] / row[0], phi])
    return {"starts": np.ascontiguousarray(np.array([np.r_[lam, phi]] + rows)),
            "pidx": np.array(pidx, np.int64), "n_always": CF_LM_RUNS}


def _cf_stage1(plan: "_Plan", beta, se, var) -> dict:
    """commonfactorGWAS stage 1 under DWLS: the estimates from the reduced problem
    (:func:`polgen.kernels.gwas.commonfactor_fit`), then SEs, smoothing flags and ``Z_smooth``
    at those estimates from the general kernel (``max_iter=0``: no further iterations)."""
    from polgen.kernels.gwas import ST_OK, commonfactor_fit, gwas_batch

    st = plan.stage1
    theta, fmin, status, iters = commonfactor_fit(
        beta, se, var, plan.S_LD, plan.V_LD, plan.I_LD, plan.gc, plan.varse2, plan.v_pd_known,
        st.cf["starts"], st.cf["pidx"], st.starts.shape[1], n_always=st.cf["n_always"])
    ok = status == ST_OK
    th0 = np.where(ok[:, None], theta, st.starts[0][None, :])
    res = gwas_batch(beta, se, var, plan.S_LD, plan.V_LD, plan.I_LD, plan.gc, plan.varse2,
                     plan.v_pd_known, st.model, st.fidx, np.ascontiguousarray(th0), st.snpvar_par,
                     max_iter=0, toler=plan.toler, smooth_check=plan.smooth_check)
    # the reduced fit checks the input as the general kernel does: its status stands where it did
    # not converge; where it did, a singular information matrix still fails the SNP
    res["status"] = np.where(ok, res["status"], status)
    res["est"][~ok] = np.nan
    res["se"][~ok] = np.nan
    res["fmin"] = np.where(ok, fmin, np.nan)
    res["iters"] = iters
    return res


def _cf_q_start(plan: "_Plan", est: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Start of the direct SNP effects in commonfactorGWAS's Q model: the values that fit the
    SNP-trait covariances exactly, ``beta_i - l_i b``."""
    pidx = plan.stage1.cf["pidx"]
    k = len(plan.traits)
    lam = np.ones((est.shape[0], k))
    lam[:, 1:] = est[:, pidx[:k - 1]]
    g = beta - lam * est[:, pidx[k - 1]][:, None]
    return np.nan_to_num(g)


def _plan_commonfactor(schema, covstruc, estimation, GC, smooth_check, SNPSE, TWAS, toler,
                       ml_se="R") -> _Plan:
    cs, gc, varse2, tol, I = _common_setup(covstruc, GC, SNPSE, toler, estimation)
    traits = list(cs.trait_names)
    pred = "Gene" if TWAS else "SNP"
    ml = estimation == "ML"
    S_LD = np.array(cs.S, dtype=np.float64)
    V_LD = np.array(cs.V, dtype=np.float64)
    text = commonfactor_model(traits, pred)
    pt = lavaanify(text)
    npar = number_parameters(pt)
    cm = compile_ram(pt, traits, snp_name=pred)
    base = None
    try:
        _, base = _fit_baseline("F1 =~ " + " + ".join(traits), S_LD, V_LD, traits, std_lv=False, ml=ml)
    except Exception as exc:  # noqa: BLE001 - starts only
        log.info("no baseline starts (%s); using default start values", exc)
    th = _start_values(pt, S_LD, traits, npar, baseline=base)
    # lavaan's start for residual variances / factor variance (not the baseline's Heywood values)
    for r in pt.rows:
        if r.par >= 0 and r.op == "~~" and r.lhs == r.rhs:
            th[r.par] = 0.5 * S_LD[traits.index(r.lhs), traits.index(r.lhs)] if r.lhs in traits else 0.05
    starts = _sign_starts(pt, th)
    snpvar = [r.par for r in pt.rows if r.op == "~~" and r.lhs == pred and r.rhs == pred][0]
    arrays = cm.arrays()
    if ml and ml_se == "R":
        arrays["vidx_meat"] = _r_ml_meat(cm, pt.ov, pred, traits)
    stage1 = _Stage(arrays, np.arange(npar, dtype=np.int64), starts, snpvar)
    if not ml:
        stage1.cf = _cf_structure(pt, traits, pred, S_LD, base)
    # stage 2 (Q): direct effects free (new parameters), residual variances free, rest fixed
    rows = []
    dq = []
    nq = npar
    for r in pt.rows:
        rr = ParRow(**r.__dict__)
        if r.op == "~" and r.rhs == pred and r.lhs in traits:
            rr.par = nq
            dq.append(nq)
            nq += 1
        rows.append(rr)
    rv = [r.par for r in pt.rows if r.op == "~~" and r.lhs == r.rhs and r.lhs in traits]
    ptq = ParTable(rows, pt.lv, pt.ov)
    cmq = compile_ram(ptq, traits, snp_name=pred)
    arrays_q = cmq.arrays()
    if ml and ml_se == "R":
        arrays_q["vidx_meat"] = _r_ml_meat(cmq, pt.ov, pred, traits)
    stage2 = _Stage(arrays_q, np.array(dq + rv, np.int64), np.zeros((1, nq)), -1,
                    np.arange(len(dq), dtype=np.int64))
    bpar = [r.par for r in pt.rows if r.op == "~" and r.lhs == "F1" and r.rhs == pred][0]
    return _Plan(
        kind="commonfactor", traits=traits, beta_cols=[], se_cols=[], id_cols=[], var_col="",
        twas=TWAS, pred=pred, S_LD=S_LD, V_LD=V_LD, I_LD=I, gc=gc, varse2=varse2,
        v_pd_known=_is_pd(V_LD) and _v_snp_pd_constant(I, gc), ml=ml, toler=tol,
        smooth_check=smooth_check, stage1=stage1, stage2=stage2,
        out_rows=[("F1", "~", pred, bpar, np.nan)], q_ptr=None, q_obs=None, q_trait=None, q_rows={},
        q_df=[], df=len(cm.ma) - npar, npar=npar, est_row=bpar,
    )


# ==============================================================================================
# per-batch computation
# ==============================================================================================
def _run_stage(plan: _Plan, stage: _Stage, beta, se, var, theta0=None, q=False, max_iter=None):
    from polgen.kernels.gwas import ST_OK, gwas_batch

    starts = stage.starts if theta0 is None else None
    common = dict(ml=plan.ml, ml_wmode=plan.ml_wmode, toler=plan.toler,
                  smooth_check=plan.smooth_check,
                  q_ptr=plan.q_ptr if q else None, q_obs=plan.q_obs if q else None,
                  q_trait=plan.q_trait if q else None, wald_idx=stage.wald_idx)
    if max_iter is not None:
        common["max_iter"] = max_iter
    elif theta0 is None and stage.starts.shape[0] > 1:
        common["max_iter"] = MULTISTART_MAX_ITER
    if starts is not None and starts.shape[0] == 1 and stage.fast is not None and not plan.ml:
        common["fast"] = stage.fast
        common["eliminate"] = plan.eliminate
    if starts is None:
        return gwas_batch(beta, se, var, plan.S_LD, plan.V_LD, plan.I_LD, plan.gc, plan.varse2,
                          plan.v_pd_known, stage.model, stage.fidx, theta0, stage.snpvar_par, **common)
    best = None
    for s in range(starts.shape[0]):
        res = gwas_batch(beta, se, var, plan.S_LD, plan.V_LD, plan.I_LD, plan.gc, plan.varse2,
                         plan.v_pd_known, stage.model, stage.fidx, starts[s:s + 1], stage.snpvar_par,
                         **common)
        if best is None:
            best = res
            continue
        ok_new = res["status"] == ST_OK
        ok_old = best["status"] == ST_OK
        better = ok_new & (~ok_old | (res["fmin"] < best["fmin"] - 1e-10 * np.abs(best["fmin"])))
        if better.any():
            for key, arr in res.items():
                best[key][better] = arr[better]
    return best


def _apply_bounds(plan: _Plan, beta, se, var, res) -> np.ndarray:
    """Bounds (``label > number``, ``lower()`` ...) by an active set, as lavaan's constrained
    solution: SNPs whose estimate leaves an interval are refit with that parameter held at the
    bound (the others free), until no free parameter leaves its interval; a held parameter is
    released when, refit free, it stays inside and the objective does not increase.  ``res`` is
    updated in place; returns the per-SNP mask of parameters that are free (n x npar)."""
    from polgen.kernels.gwas import ST_OK

    lo, hi = plan.bounds
    est = res["est"]
    n, npar = est.shape
    bpar = np.nonzero(np.isfinite(lo) | np.isfinite(hi))[0]
    state = np.zeros((n, bpar.size), np.int8)   # 0 free, 1 held at lower, 2 held at upper

    def refit(rows, st_rows):
        pats, inv = np.unique(st_rows, axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        outs = []
        for g, pat in enumerate(pats):
            sub = rows[inv == g]
            held = bpar[pat != 0]
            fidx = np.array([q for q in range(npar) if q not in set(held.tolist())], np.int64)
            theta0 = np.nan_to_num(res["est"][sub].copy())
            for q, code in zip(bpar, pat):
                if code:
                    theta0[:, q] = lo[q] if code == 1 else hi[q]
            stage = _Stage(plan.stage1.model, fidx, theta0[:1], plan.stage1.snpvar_par)
            outs.append((sub, _run_stage(plan, stage, beta[sub], se[sub], var[sub], theta0=theta0,
                                         q=plan.q_ptr is not None)))
        return outs

    def leaves(e):
        v = np.where(e < lo[bpar], 1, np.where(e > hi[bpar], 2, 0)).astype(np.int8)
        return v

    for _ in range(2 * bpar.size + 2):
        v = leaves(res["est"][:, bpar])
        v[state != 0] = 0
        v[res["status"] != ST_OK] = 0
        rows = np.nonzero(v.any(axis=1))[0]
        if rows.size == 0:
            break
        state[rows] = np.where(v[rows] != 0, v[rows], state[rows])
        for sub, r2 in refit(rows, state[rows]):
            for key, arr in r2.items():
                res[key][sub] = arr
    # release pass: a held parameter whose free refit stays inside with no higher objective
    for j in range(bpar.size):
        rows = np.nonzero((state[:, j] != 0) & (res["status"] == ST_OK))[0]
        if rows.size == 0:
            continue
        trial = state[rows].copy()
        trial[:, j] = 0
        for sub, r2 in refit(rows, trial):
            inside = (leaves(r2["est"][:, bpar]) == 0).all(axis=1)
            better = (r2["status"] == ST_OK) & inside & (r2["fmin"] <= res["fmin"][sub] * (1 + 1e-10) + 1e-300)
            if better.any():
                upd = sub[better]
                for key, arr in r2.items():
                    res[key][upd] = arr[better]
                state[upd, j] = 0
    free = np.ones((n, npar), bool)
    free[:, bpar] = state == 0
    return free


_NP_FUNCS = {
    "sqrt": np.sqrt, "exp": np.exp, "log": np.log, "log10": np.log10, "sin": np.sin, "cos": np.cos,
    "tan": np.tan, "tanh": np.tanh, "atanh": np.arctanh,
    "abs": lambda z: np.where(np.real(z) >= 0, z, -z),
}


def _eval_np(expr, env: dict):
    """Vectorised (numpy, real or complex) value of a parsed :class:`polgen.gsem.syntax.Expr`."""
    with np.errstate(all="ignore"):
        return expr.evaluate(env, funcs=_NP_FUNCS)


def _defined_params(plan: _Plan, se, var, res, free, ok):
    """Estimates (the expressions at the per-SNP estimates) and delta-method SEs (Jacobian by
    complex step, as lavaan's lav_func_jacobian_complex, with the sandwich covariance) of the
    defined parameters: (n x n_defined) each."""
    est = res["est"]
    n, npar = est.shape
    nd = len(plan.defined)

    def values(step_par=-1, h=0.0):
        env = {}
        for lab, (par, val) in plan.label_src.items():
            if par >= 0:
                col = est[:, par]
                env[lab] = col + 1j * h if par == step_par else col
            else:
                env[lab] = np.full(n, val)
        out = []
        for name, expr in plan.defined:
            v = _eval_np(expr, env)
            v = np.broadcast_to(np.asarray(v), (n,))
            env[name] = v
            out.append(v)
        return out

    d_est = np.column_stack([np.real(v) for v in values()]).astype(np.float64) if nd else np.zeros((n, 0))
    d_est[~ok] = np.nan
    if plan.ml:
        return d_est, np.full((n, nd), np.nan)
    used = sorted({par for par, _ in plan.label_src.values() if par >= 0})
    jd = np.zeros((n, nd, npar))
    h = 1e-20
    for q in used:
        for d, v in enumerate(values(q, h)):
            jd[:, d, q] = np.imag(v) / h
    jbad = ~np.isfinite(jd).all(axis=2)          # (n, n_defined): no derivative there
    jd[~np.isfinite(jd)] = 0.0
    if free is None:
        free = np.ones((n, npar), bool)
    from polgen.kernels.gwas_defined import defined_se_batch

    d_se = defined_se_batch(se, var, plan.V_LD, plan.I_LD, plan.gc, plan.varse2, plan.v_pd_known,
                            plan.stage1.model, np.nan_to_num(est), free, jd, ok)
    d_se[jbad | ~np.isfinite(d_est)] = np.nan
    return d_est, d_se


def _extract(plan: _Plan, df: pl.DataFrame):
    n = df.height
    k = len(plan.traits)
    beta = np.empty((n, k))
    se = np.empty((n, k))
    for j, (b, s) in enumerate(zip(plan.beta_cols, plan.se_cols)):
        beta[:, j] = df.get_column(b).cast(pl.Float64).fill_null(np.nan).to_numpy()
        se[:, j] = df.get_column(s).cast(pl.Float64).fill_null(np.nan).to_numpy()
    x = df.get_column(plan.var_col).cast(pl.Float64).fill_null(np.nan).to_numpy()
    var = x.copy() if plan.twas else 2.0 * x * (1.0 - x)
    return beta, se, var


def _pvals(z: np.ndarray):
    from scipy.special import log_ndtr

    az = np.abs(z)
    lp = np.log(2.0) + log_ndtr(-az)          # log p
    p = np.exp(lp)
    return p, -lp / np.log(10.0)


def _chi2_sf(x, df):
    """chi2.sf(x, df) with scipy.special (scipy.stats costs ~1.3 s to import in every worker):
    NaN where df <= 0, 1 for x < 0, NaN for NaN x."""
    from scipy.special import chdtrc

    x = np.asarray(x, dtype=np.float64)
    if np.isscalar(df) or np.ndim(df) == 0:
        if df is None or df <= 0:
            return np.full(x.shape, np.nan)
    d = np.broadcast_to(np.asarray(df, dtype=np.float64), x.shape)
    with np.errstate(invalid="ignore"):
        out = chdtrc(d, np.where(x < 0.0, 0.0, x))
    return np.where(d > 0.0, out, np.nan)


def _warnings(status: np.ndarray, flags: np.ndarray) -> pl.Series:
    """Per-SNP warning text ("" when fine), built from the few distinct (status, flags) codes."""
    from polgen.kernels.gwas import FLAG_S_SMOOTHED, FLAG_V_SMOOTHED, STATUS_REASONS

    code = status.astype(np.int64) * 4 + flags.astype(np.int64)
    uniq, inv = np.unique(code, return_inverse=True)
    texts = []
    for c in uniq.tolist():
        st, fl = divmod(c, 4)
        parts = []
        if st:
            parts.append(STATUS_REASONS.get(st, f"status {st}"))
        if fl & FLAG_S_SMOOTHED:
            parts.append("S_full smoothed to nearPD")
        if fl & FLAG_V_SMOOTHED:
            parts.append("V_full smoothed to nearPD")
        texts.append("; ".join(parts))
    return pl.Series("warning", texts, dtype=pl.String).gather(inv.reshape(-1))


def _compute_batch(plan: _Plan, df: pl.DataFrame) -> pl.DataFrame:
    from polgen.kernels.gwas import ST_OK

    beta, se, var = _extract(plan, df)
    n = df.height
    if plan.kind == "commonfactor" and plan.stage1.cf is not None:
        res = _cf_stage1(plan, beta, se, var)
    else:
        res = _run_stage(plan, plan.stage1, beta, se, var, q=plan.kind == "user" and plan.q_ptr is not None)
    free = None
    if plan.kind == "user" and plan.bounds is not None:
        free = _apply_bounds(plan, beta, se, var, res)
    ok = res["status"] == ST_OK
    ids = df.select(plan.id_cols)
    warn = _warnings(res["status"], res["flags"])
    # A fit that "converged" to non-finite estimates or SEs (overflow from extreme inputs such as
    # SE = 1e300) is a failed SNP, never a silent NaN.
    if plan.kind == "commonfactor":
        report = np.array([plan.est_row], dtype=np.int64)
    else:
        report = np.array([r[3] for r in plan.out_rows if r[3] >= 0], dtype=np.int64)
    se_fin = np.isfinite(res["se"][:, report])
    if free is not None:  # a parameter held at its bound has no SE (NaN, as lavaan's NA)
        se_fin |= ~free[:, report]
    finite = np.isfinite(res["est"][:, report]).all(axis=1) & se_fin.all(axis=1)
    overflow = ok & ~finite
    if overflow.any():
        ok = ok & finite
        msg = "non-finite estimate or standard error (extreme input values)"
        warn = pl.select(pl.when(pl.lit(pl.Series(overflow))).then(pl.lit(msg))
                         .otherwise(pl.lit(warn)).alias("warning")).to_series()
    if plan.kind == "commonfactor":
        theta0 = np.zeros((n, plan.stage2.starts.shape[1]))
        theta0[:, :plan.npar] = np.nan_to_num(res["est"])
        if plan.stage1.cf is not None:
            theta0[:, plan.npar:] = _cf_q_start(plan, res["est"], beta)
        # the Q model only where stage 1 converged (its fixed values are stage 1's estimates)
        sub = np.flatnonzero(ok)
        res2 = {"status": np.full(n, -1, np.int64), "wald": np.full(n, np.nan)}
        if sub.size:
            r2 = _run_stage(plan, plan.stage2, beta[sub], se[sub], var[sub], theta0=theta0[sub])
            res2["status"][sub] = r2["status"]
            res2["wald"][sub] = r2["wald"]
        est = np.where(ok, res["est"][:, plan.est_row], np.nan)
        sev = np.where(ok, res["se"][:, plan.est_row], np.nan)
        z = est / sev
        p, l10 = _pvals(z)
        Q = np.where(ok & (res2["status"] == ST_OK), res2["wald"], np.nan)
        cols = {
            "lhs": pl.Series(["F1"] * n, dtype=pl.String), "op": pl.Series(["~"] * n, dtype=pl.String),
            "rhs": pl.Series([plan.pred] * n, dtype=pl.String),
            "est": est, "se": sev, "z": z, "p": p, "log10p": l10,
            "Q": Q, "Q_df": np.full(n, len(plan.traits) - 1, np.int64),
            "Q_p": _chi2_sf(Q, len(plan.traits) - 1),
        }
        if plan.smooth_check:
            cols["Z_smooth"] = res["zsmooth"]
        cols["converged"] = ok
        cols["warning"] = warn
        return pl.concat([ids, pl.DataFrame(cols)], how="horizontal")
    nr = len(plan.out_rows)
    est = np.empty((n, nr))
    sev = np.empty((n, nr))
    if plan.defined:
        d_est, d_se = _defined_params(plan, se, var, res, free, ok)
        d_names = [d[0] for d in plan.defined]
        bad_def = ok & ~(np.isfinite(d_est).all(axis=1) & (plan.ml | np.isfinite(d_se).all(axis=1)))
        if bad_def.any():   # e.g. a ratio whose denominator is 0 at this SNP's estimates
            names_txt = ", ".join(d_names)
            msg = f"a defined parameter ({names_txt}) or its standard error is not finite"
            warn = pl.select(pl.when(pl.lit(pl.Series(bad_def)) & (pl.lit(warn) != ""))
                             .then(pl.lit(warn) + pl.lit("; " + msg))
                             .when(pl.lit(pl.Series(bad_def))).then(pl.lit(msg))
                             .otherwise(pl.lit(warn)).alias("warning")).to_series()
    for j, (lhs, _, _, par, val) in enumerate(plan.out_rows):
        if par == -2:
            est[:, j] = d_est[:, d_names.index(lhs)]
            sev[:, j] = d_se[:, d_names.index(lhs)]
        elif par >= 0:
            est[:, j] = res["est"][:, par]
            sev[:, j] = res["se"][:, par]
        else:
            est[:, j] = val
            sev[:, j] = np.nan
    est[~ok] = np.nan
    sev[~ok] = np.nan
    est = est.reshape(-1)
    sev = sev.reshape(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = est / sev
    p, l10 = _pvals(z)
    chisq = np.where(ok, res["chisq"], np.nan)
    rep = lambda a: np.repeat(a, nr)  # noqa: E731
    cols = {
        "lhs": pl.Series([r[0] for r in plan.out_rows] * n, dtype=pl.String),
        "op": pl.Series([r[1] for r in plan.out_rows] * n, dtype=pl.String),
        "rhs": pl.Series([r[2] for r in plan.out_rows] * n, dtype=pl.String),
        "est": est, "se": sev, "z": z, "p": p, "log10p": l10,
        "chisq": rep(chisq), "chisq_df": np.full(n * nr, plan.df, np.int64),
        "chisq_p": rep(_chi2_sf(chisq, plan.df) if plan.df > 0 else np.full(n, np.nan)),
        "AIC": rep(chisq + 2.0 * plan.npar),
    }
    if plan.q_ptr is not None:
        qv = np.full((n, nr), np.nan)
        qd = np.full(nr, -1, np.int64)
        for j, g in plan.q_rows.items():
            qv[:, j] = np.where(ok, res["qsnp"][:, g], np.nan)
            qd[j] = plan.q_df[g]
        qv = qv.reshape(-1)
        qdf = np.tile(qd, n)
        qp = np.full(n * nr, np.nan)
        m = qdf > 0
        if m.any():
            qp[m] = _chi2_sf(qv[m], qdf[m])
        cols["Q_SNP"] = qv
        cols["Q_SNP_df"] = pl.Series(np.where(qdf >= 0, qdf, 0), dtype=pl.Int64).set(
            pl.Series(qdf < 0), None) if (qdf < 0).any() else qdf
        cols["Q_SNP_p"] = qp
    if plan.smooth_check:
        cols["Z_smooth"] = rep(res["zsmooth"])
    cols["converged"] = rep(ok)
    cols["warning"] = warn.gather(np.repeat(np.arange(n), nr)) if nr > 1 else warn
    idx = np.repeat(np.arange(n), nr)
    return pl.concat([ids[idx], pl.DataFrame(cols)], how="horizontal")


# ==============================================================================================
# sources, tasks, driver
# ==============================================================================================
@dataclass
class _Task:
    plan: _Plan
    source: Any              # str path/glob | pl.LazyFrame | pl.DataFrame (the slice itself)
    offset: int
    length: int
    label: str = ""


def _load(task: _Task) -> pl.DataFrame:
    src = task.source
    if isinstance(src, pl.DataFrame):
        return src
    if isinstance(src, str):
        lf = pl.scan_parquet(src)
    else:
        lf = src
    return lf.slice(task.offset, task.length).collect()


def _gwas_task(task: _Task) -> pl.DataFrame:
    """Module-level batch function (picklable for process / Dask executors)."""
    return _compute_batch(task.plan, _load(task))


def _source(snps) -> tuple[Any, dict, int]:
    """(source for tasks, schema, number of rows) without materialising a lazy / file input."""
    if isinstance(snps, (str, os.PathLike)):
        path = os.fspath(snps)
        if os.path.isdir(path):
            path = os.path.join(path, "*.parquet")
        try:
            lf = pl.scan_parquet(path)
            schema = dict(lf.collect_schema())
            n = int(lf.select(pl.len()).collect().item())
        except Exception as exc:  # noqa: BLE001 - polars raises several kinds
            raise InputError(f"cannot read sumstats parquet: {exc}", path=path) from exc
        return path, schema, n
    if isinstance(snps, pl.LazyFrame):
        schema = dict(snps.collect_schema())
        n = int(snps.select(pl.len()).collect().item())
        return snps, schema, n
    if isinstance(snps, pl.DataFrame):
        return snps, dict(snps.schema), snps.height
    try:
        df = pl.DataFrame(snps)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"snps must be a polars frame, a parquet path or a table, got "
                         f"{type(snps).__name__}") from exc
    return df, dict(df.schema), df.height


def _run(plan: _Plan, snps, *, batch_size, out, resume, overwrite, executor, progress, params,
         description):
    src, schema, n = _source(snps)
    plan.beta_cols, plan.se_cols, plan.id_cols, plan.var_col = _resolve_columns(schema, plan.traits, plan.twas)
    if batch_size is None:
        batch_size = DEFAULT_BATCH
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    tasks = []
    for b, off in enumerate(range(0, n, batch_size)):
        ln = min(batch_size, n - off)
        s = src.slice(off, ln) if isinstance(src, pl.DataFrame) else src
        tasks.append(_Task(plan, s, off, ln, f"{description} rows {off}-{off + ln - 1}"))
    if not tasks:  # no rows: one empty batch, so the output still has its schema
        tasks.append(_Task(plan, src.slice(0, 0) if isinstance(src, pl.DataFrame) else src, 0, 0,
                           f"{description} (no rows)"))
    if out is not None:
        from polgen.engine import run_to_sink

        sink = run_to_sink(_gwas_task, tasks, out, params, resume=resume, overwrite=overwrite,
                           executor=executor, progress=progress, description=description,
                           metadata={"polgen.method": f"gsem.{plan.kind}_gwas"})
        return sink.scan()
    from polgen.engine import run_tasks

    parts = list(run_tasks(_gwas_task, tasks, executor=executor, progress=progress,
                           description=description))
    return pl.concat(parts, how="vertical")


def _params(kind, covstruc, **kw) -> dict:
    cs = _as_covstruc(covstruc)
    out = {"method": f"gsem.{kind}_gwas", "traits": list(cs.trait_names),
           "S": cs.S.tolist(), "V": cs.V.tolist(), "I": cs.I.tolist()}
    out.update({k: v for k, v in kw.items()})
    return out


def user_gwas(
    snps,
    covstruc,
    model: str,
    *,
    estimation: str = "DWLS",
    GC: str = "standard",
    fix_measurement: bool = True,
    std_lv: bool = False,
    Q_SNP: bool = False,
    smooth_check: bool = False,
    SNPSE: float | None = None,
    TWAS: bool = False,
    toler: float | None = None,
    sub: str | Sequence[str] | None = None,
    long: bool = False,
    batch_size: int | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    executor=None,
    progress: bool | None = None,
    ml_se: str = "R",
) -> pl.DataFrame | pl.LazyFrame:
    """Multivariate GWAS with a user-specified Genomic SEM model (R ``userGWAS``).

    ``snps``: the output of ``sumstats()`` as a LazyFrame, DataFrame or parquet path/glob with
    ``SNP, CHR, BP, MAF, A1, A2, beta.<trait>, se.<trait>`` (``Gene, Panel, HSQ`` with
    ``TWAS=True``).  ``covstruc``: LDSC output (:class:`~polgen.gsem.covstruc.CovStruc`, mapping or
    path).  ``model``: lavaan syntax (text or a file) with at least one ``~ SNP`` regression.

    The model may use labels (``a*x``; shared labels are one parameter), ``a == b`` and
    ``a == number``, bounds (``a > 0.001``, ``a < 1``) and defined parameters (``h := a*b``),
    as lavaan (see the module docstring); other constraint forms raise :class:`ModelError`.

    Returns one row per SNP and reported parameter (``F1 ~ SNP`` ... and every ``:=`` parameter;
    ``sub=["F1~SNP", "h"]`` picks parameters, ``long=True`` gives every parameter of the model)
    with ``est, se, z, p, log10p,
    chisq, chisq_df, chisq_p, AIC``, ``Q_SNP, Q_SNP_df, Q_SNP_p`` (``Q_SNP=True``), ``Z_smooth``
    (``smooth_check=True``), ``converged`` and ``warning``.  With ``out=`` the rows are written in
    batches of ``batch_size`` SNPs to a resumable parquet directory and a LazyFrame over it is
    returned; otherwise a DataFrame.

    ``ml_se`` (ML only): ``"R"`` reproduces R GenomicSEM's ML sandwich SEs, which pair the ML
    model's moments with ``V_full`` entries in the variable order of a DWLS fit (the SNP moved
    from last to first); ``"aligned"`` uses the consistently ordered sandwich.
    """
    if ml_se not in ("R", "aligned"):
        raise InputError(f"ml_se must be 'R' or 'aligned', got {ml_se!r}")
    if toler is not None and toler is not False and not (isinstance(toler, (int, float)) and toler >= 0):
        raise InputError(f"toler must be a non-negative number, got {toler!r}")
    src_schema = None
    plan = _plan_user(src_schema, covstruc, model, estimation, GC, fix_measurement, std_lv, Q_SNP,
                      smooth_check, SNPSE, TWAS, toler, sub, long, ml_se=ml_se)
    params = _params("user", covstruc, model=_model_text(model), estimation=estimation, GC=GC,
                     fix_measurement=fix_measurement, std_lv=std_lv, Q_SNP=Q_SNP,
                     smooth_check=smooth_check, SNPSE=SNPSE, TWAS=TWAS, toler=toler, sub=sub,
                     long=long, batch_size=batch_size or DEFAULT_BATCH, ml_se=ml_se)
    return _run(plan, snps, batch_size=batch_size, out=out, resume=resume, overwrite=overwrite,
                executor=executor, progress=progress, params=params, description="user_gwas")


def commonfactor_gwas(
    snps,
    covstruc,
    *,
    estimation: str = "DWLS",
    GC: str = "standard",
    smooth_check: bool = False,
    SNPSE: float | None = None,
    TWAS: bool = False,
    toler: float | None = None,
    batch_size: int | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    executor=None,
    progress: bool | None = None,
    ml_se: str = "R",
) -> pl.DataFrame | pl.LazyFrame:
    """Common-factor GWAS (R ``commonfactorGWAS``): ``F1 =~ traits`` (first loading 1),
    ``F1 ~ SNP``, ``trait ~ 0*SNP``; one row per SNP with ``est, se`` (sandwich SE of
    ``F1 ~ SNP``), ``z, p, log10p``, ``Q, Q_df = k - 1, Q_p`` (heterogeneity: the direct SNP
    effects freed), ``Z_smooth`` with ``smooth_check``, ``converged``, ``warning``."""
    if ml_se not in ("R", "aligned"):
        raise InputError(f"ml_se must be 'R' or 'aligned', got {ml_se!r}")
    plan = _plan_commonfactor(None, covstruc, estimation, GC, smooth_check, SNPSE, TWAS, toler,
                              ml_se=ml_se)
    params = _params("commonfactor", covstruc, estimation=estimation, GC=GC,
                     smooth_check=smooth_check, SNPSE=SNPSE, TWAS=TWAS, toler=toler,
                     batch_size=batch_size or DEFAULT_BATCH, ml_se=ml_se)
    return _run(plan, snps, batch_size=batch_size, out=out, resume=resume, overwrite=overwrite,
                executor=executor, progress=progress, params=params, description="commonfactor_gwas")
