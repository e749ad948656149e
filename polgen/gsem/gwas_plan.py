"""Genomic SEM GWAS, the run plan: from covstruc + model to what the per-SNP kernels take.

A :class:`Plan` holds the LD matrices (``S_LD``, ``V_LD``, ``I_LD`` with ``diag(I) >= 1``), the
GC mode, the compiled model(s) as :class:`~polgen.gsem.ram.KernelLayout` arrays with their
parameter numbering (:func:`polgen.gsem.constraints.number_parameters` over the one parameter
table of :func:`polgen.gsem.syntax.parse_model`), start vectors, the rows to report, the
``Q_SNP`` groups and the bounds / defined parameters.  :func:`plan_user` builds it for
``user_gwas`` (``fix_measurement`` as R: the model without its SNP lines fit once to ``S_LD``,
every parameter that is not a variance fixed at that estimate; constraints the kernels' numbering
cannot express - ``a == 2*b``, ``a > b``, ``a == b^2`` - are fitted there by
:func:`polgen.gsem.sem.fit_sem`, and hold per SNP since their rows are then fixed; such
constraints left on parameters estimated per SNP become linear rows (``Plan.lincon``) for
:mod:`polgen.kernels.gwas_constrained`; factors whose
sign the model leaves free keep lavaan's sign, first free loading positive, via
:meth:`Plan.canonical_signs`); the commonfactor plan is in
:mod:`polgen.gsem.gwas_commonfactor`.  Plans are picklable: the engine ships them to workers.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from polgen.errors import (
    InputError,
    ModelError,
    ModelSyntaxError,
    SchemaError,
)
from polgen.gsem.baseline_fit import fit_baseline
from polgen.gsem.constraints import (
    canonical_signs_rows,
    number_parameters,
    sign_flips,
    snp_linear_constraints,
    split_kernel_constraints,
)
from polgen.gsem.covstruc import as_covstruc as _as_covstruc
from polgen.gsem.gwas_starts import cfu_structure, sign_starts, start_values
from polgen.gsem.matrix import is_pd, near_pd
from polgen.gsem.ram import KernelLayout, Numbering, kernel_layout, vech_index
from polgen.gsem.syntax import ParTable, parse_model, parse_syntax

log = logging.getLogger("polgen")

__all__ = ["GC_CODES", "Plan", "Stage", "plan_user", "sign_starts", "start_values"]


# ==============================================================================================
GC_CODES = {"standard": 0, "conserv": 1, "conservative": 1, "none": 2}
DEFAULT_BATCH = 200_000


@dataclass
class Stage:
    """One per-SNP fit: compiled model, free parameters, start vectors."""

    model: dict
    fidx: np.ndarray
    starts: np.ndarray  # (n_starts, npar)
    snpvar_par: int
    wald_idx: np.ndarray | None = None
    fast: dict | None = None  # fast-path structure (see kernels.gwas.fast_structure)
    cf: dict | None = None  # commonfactor DWLS: reduced-problem starts (see _cf_stage1)
    cfu: dict | None = None  # user_gwas on the re-identified common-factor model (gwas_cfuser)


@dataclass
class Plan:
    kind: str  # "user" | "commonfactor"
    traits: list[str]
    beta_cols: list[str]
    se_cols: list[str]
    id_cols: list[str]
    var_col: str  # MAF (var = 2 MAF (1-MAF)) or HSQ (TWAS)
    twas: bool
    pred: str  # "SNP" or "Gene"
    S_LD: np.ndarray
    V_LD: np.ndarray
    I_LD: np.ndarray
    gc: int
    varse2: float
    v_pd_known: bool
    ml: bool
    toler: float
    smooth_check: bool
    stage1: Stage
    stage2: Stage | None
    out_rows: list[tuple[str, str, str, int, float]]  # lhs, op, rhs, par (-1 fixed), value
    q_ptr: np.ndarray | None
    q_obs: np.ndarray | None
    q_trait: np.ndarray | None
    q_rows: dict[int, int]  # out_rows index -> Q_SNP group
    q_df: list[int]
    df: int
    npar: int
    est_row: int = -1  # commonfactor: par of F1 ~ SNP
    ml_wmode: int = 0
    bounds: tuple | None = None  # (lower, upper) per parameter when the model has bounds
    defined: list = field(default_factory=list)  # [(name, Expr)] of ':=' parameters
    label_src: dict = field(default_factory=dict)  # label -> (par, value) (par -1: fixed)
    eliminate: bool = True  # solve indicator residual variances in closed form (their SEs
    # are then not computed: off for long= / sub= output)
    flips: list = field(default_factory=list)  # latents whose sign the data leave free (sign_flips)
    # linear constraints on per-SNP parameters (A_eq, b_eq, A_in, b_in; bounds folded in), fitted
    # by kernels.gwas_constrained; n_eq independent equalities (lavaan's npar = npar - n_eq)
    lincon: tuple | None = None
    n_eq: int = 0
    nlcon: list = field(default_factory=list)  # non-linear constraints (syntax Constraint), per SNP

    def canonical_signs(self, est: np.ndarray) -> None:
        """Flip, per SNP (row of ``est``, in place), every latent whose sign the model leaves free
        so that its first free loading is positive, as lavaan's starting values take it (mirror
        solutions have the same objective, SEs and chi-square)."""
        if not self.flips:
            return
        if self.bounds is None:
            lo, hi = np.full(est.shape[1], -np.inf), np.full(est.shape[1], np.inf)
        else:
            lo, hi = self.bounds
        canonical_signs_rows(self.flips, est, lo, hi)

    def ld_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, float, bool]:
        """The LD inputs every per-SNP kernel call takes after (beta, se, var)."""
        return (self.S_LD, self.V_LD, self.I_LD, self.gc, self.varse2, self.v_pd_known)


def v_snp_pd_constant(I: np.ndarray, gc: int) -> bool:
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
    return is_pd(M)


def plan_base(
    kind: str,
    traits: list[str],
    pred: str,
    twas: bool,
    S_LD: np.ndarray,
    V_LD: np.ndarray,
    I_LD: np.ndarray,
    gc: int,
    varse2: float,
    tol: float,
    ml: bool,
    smooth_check: bool,
) -> dict:
    """The fields every plan shares (LD inputs, GC, SNPSE^2, tolerance, estimator); the sumstats
    columns are resolved when the run sees its input."""
    return {
        "kind": kind,
        "traits": traits,
        "beta_cols": [],
        "se_cols": [],
        "id_cols": [],
        "var_col": "",
        "twas": twas,
        "pred": pred,
        "S_LD": S_LD,
        "V_LD": V_LD,
        "I_LD": I_LD,
        "gc": gc,
        "varse2": varse2,
        "v_pd_known": is_pd(V_LD) and v_snp_pd_constant(I_LD, gc),
        "ml": ml,
        "toler": tol,
        "smooth_check": smooth_check,
    }


def as_covstruc(covstruc):
    return _as_covstruc(covstruc)


def model_text(model: str) -> str:
    if isinstance(model, os.PathLike) or (
        isinstance(model, str) and "\n" not in model and not re.search(r"[~=]", model) and Path(model).is_file()
    ):
        return Path(model).read_text()
    if not isinstance(model, str):
        raise ModelSyntaxError(f"model must be lavaan-style text, got {type(model).__name__}")
    return model


def no_snp_text(text: str, pred: str) -> str:
    """The model without its SNP lines, as R's userGWAS writes it for fix_measurement (lines
    naming the SNP dropped); ':=' lines and constraint lines are kept only when every name they use
    labels a row of that model (or a kept ':=' parameter): R drops every ':=' line, and its lavaan
    call fails on constraints naming dropped rows, so a constraint on a measurement-only ':='
    parameter is kept here where R would stop."""
    lines = [ln for ln in text.split("\n") if pred not in ln]
    body = [ln for ln in lines if ":=" not in ln]
    try:
        flat, _, _ = parse_syntax("\n".join(body))
    except ModelSyntaxError:
        return "\n".join(ln for ln in lines if ":=" not in ln)
    known = {r.label for r in flat if r.label}
    keep = []
    for ln in lines:
        try:
            f, defs, cons = parse_syntax(ln)
        except ModelSyntaxError:
            if ":=" not in ln:
                keep.append(ln)
            continue
        if defs:
            if all(n in known for d in defs for n in d.expr.names):
                known.update(d.name for d in defs)
                keep.append(ln)
            continue
        if cons and not f and any(n not in known for c in cons for n in c.lhs.names + c.rhs.names):
            continue
        keep.append(ln)
    return "\n".join(keep)


def _expr_names(pt: ParTable, names: Sequence[str]) -> set[str]:
    """Parameter labels behind ``names``, ':=' parameters expanded to the labels they use."""
    defs = {d.name: d for d in pt.defined}
    out: set[str] = set()
    todo = list(names)
    while todo:
        n = todo.pop()
        if n in defs:
            todo.extend(m for m in defs[n].expr.names if m not in out)
        out.add(n)
    return out


def _drop_fixed_constraints(pt: ParTable) -> ParTable:
    """fix_measurement: constraints whose labels are all on fixed rows held at the no-SNP fit,
    which satisfied them; the per-SNP fits keep only constraints on per-SNP free rows."""
    free_labels = {r.label for r in pt.rows if r.label and r.free > 0}
    kept = [c for c in pt.constraints if _expr_names(pt, c.lhs.names + c.rhs.names) & free_labels]
    if len(kept) == len(pt.constraints):
        return pt
    return replace(pt, constraints=kept)


def resolve_columns(schema: dict, traits: list[str], twas: bool) -> tuple[list[str], list[str], list[str], str]:
    names = list(schema)
    beta_cols = [f"beta.{t}" for t in traits]
    se_cols = [f"se.{t}" for t in traits]
    if any(c not in schema for c in beta_cols + se_cols):
        # R takes the beta.* / se.* columns by position
        bpos = [c for c in names if c.startswith("beta.")]
        spos = [c for c in names if c.startswith("se.")]
        if len(bpos) == len(traits) and len(spos) == len(traits):
            log.warning(
                "sumstats columns do not name the covstruc traits %s; using beta.*/se.* by position as R does", traits
            )
            beta_cols, se_cols = bpos, spos
        else:
            miss = [c for c in beta_cols if c not in schema] + [c for c in se_cols if c not in schema]
            raise SchemaError(f"sumstats lack columns {miss} for covstruc traits {traits}", column=miss[0])
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


def common_setup(covstruc, GC, SNPSE, toler, estimation):
    cs = as_covstruc(covstruc)
    if estimation not in ("DWLS", "ML"):
        raise InputError(f"estimation must be 'DWLS' or 'ML', got {estimation!r}")
    if GC not in GC_CODES:
        raise InputError(f"GC must be 'standard', 'conserv' or 'none', got {GC!r}")
    gc = GC_CODES[GC]
    if SNPSE is None or SNPSE is False:
        varse2 = 0.0005**2
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


def plan_user(
    schema,
    covstruc,
    model,
    estimation,
    GC,
    fix_measurement,
    std_lv,
    Q_SNP,
    smooth_check,
    SNPSE,
    TWAS,
    toler,
    sub,
    long,
    ml_se="R",
) -> Plan:
    cs, gc, varse2, tol, I = common_setup(covstruc, GC, SNPSE, toler, estimation)
    traits = list(cs.trait_names)
    pred = "Gene" if TWAS else "SNP"
    text = model_text(model)
    ml = estimation == "ML"
    S_LD = np.array(cs.S, dtype=np.float64)
    V_LD = np.array(cs.V, dtype=np.float64)
    pt_full = parse_model(text, std_lv=std_lv, fixed_x=False)
    if not any(r.op == "~" and r.rhs == pred for r in pt_full.rows) and not any(
        r.op == "~" and r.lhs == pred for r in pt_full.rows
    ):
        raise ModelError(f"the model has no '~ {pred}' regression: nothing to estimate per SNP")
    bad = [v for v in pt_full.observed if v != pred and v not in traits]
    if bad:
        raise ModelError(
            f"model variables {bad} are not traits of the covstruc {traits} (nor latent variables, nor {pred})",
            column=bad[0],
        )
    if fix_measurement:
        if not is_pd(S_LD):
            log.warning("S_LD is not positive definite: smoothing with nearPD (as R's userGWAS)")
            S_LD = near_pd(S_LD)
        if not is_pd(V_LD):
            log.warning("V_LD is not positive definite: smoothing with nearPD (as R's userGWAS)")
            V_LD = near_pd(V_LD)
        pt0, num0, est0 = fit_baseline(no_snp_text(text, pred), S_LD, V_LD, traits, std_lv=std_lv, ml=ml)
        pt = _drop_fixed_constraints(_fixed_measurement_table(pt0, num0, est0, pt_full, pred))
        pt_k, general = split_kernel_constraints(pt)
        num = number_parameters(pt_k)
        npar = num.n
        cm = kernel_layout(pt_k, num, traits, snp_name=pred)
        th = start_values(pt, num, S_LD, traits)
        starts = th[None, :]
    else:
        pt = pt_full
        pt_k, general = split_kernel_constraints(pt)
        num = number_parameters(pt_k)
        npar = num.n
        cm = kernel_layout(pt_k, num, traits, snp_name=pred)
        base = None
        try:
            _, _, base = fit_baseline(no_snp_text(text, pred), S_LD, V_LD, traits, std_lv=std_lv, ml=ml)
        except Exception as exc:  # noqa: BLE001 - starts only: fall back to lavaan-like defaults
            log.info("no baseline starts (%s); using default start values", exc)
        th = start_values(pt, num, S_LD, traits, baseline=base)
        starts = sign_starts(pt, num, th)
    par = num.par.tolist()
    value = num.value.tolist()
    snpvar = [q for r, q in zip(pt.rows, par) if r.op == "~~" and r.lhs == pred and r.rhs == pred and q >= 0]
    arrays = cm.arrays()
    if ml and ml_se == "R":
        arrays["vidx_meat"] = r_ml_meat(cm, pt_full.observed, pred, traits)
    stage = Stage(arrays, np.arange(npar, dtype=np.int64), starts, snpvar[0] if snpvar else -1)
    lincon, n_eq, nlcon = _snp_constraints(pt, num, general, ml)
    if starts.shape[0] == 1 and lincon is None:
        from polgen.kernels.gwas import fast_structure

        stage.fast = fast_structure(arrays, stage.fidx, starts[0])
    # output rows: parameters (par >= 0 free, -1 fixed) and defined parameters (par -2)
    rows_all = [(r.lhs, r.op, r.rhs, q, float(v) if q < 0 else np.nan) for r, q, v in zip(pt.rows, par, value)]
    rows_def = [(d.name, ":=", d.expr.text, -2, np.nan) for d in pt.defined]
    if long:
        out_rows = rows_all + rows_def
    elif sub:
        subs = [sub] if isinstance(sub, str) else list(sub)
        subs = ["".join(str(x).split()) for x in subs]
        out_rows = []
        for x in subs:
            out_rows += [r for r in rows_all + rows_def if f"{r[0]}{r[1]}{r[2]}" == x or (r[1] == ":=" and r[0] == x)]
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
        log.warning(
            "user_gwas: standard errors of defined (:=) parameters are not available for "
            "ML (as R's userGWAS); their se is NaN"
        )
    label_src: dict[str, tuple[int, float]] = {}
    for r, q, v in zip(pt.rows, par, value):
        if r.label and r.label not in label_src:
            label_src[r.label] = (q, float(v))
    lo, hi = num.bounds()
    bounds = (lo, hi) if (np.isfinite(lo).any() or np.isfinite(hi).any()) else None
    flips = sign_flips(pt, num.par)
    if lincon is not None:
        if bounds is not None:  # bounds join the inequalities of the constrained fit
            eye = np.eye(npar)
            fin_lo, fin_hi = np.flatnonzero(np.isfinite(lo)), np.flatnonzero(np.isfinite(hi))
            A_in = np.vstack([lincon[2], eye[fin_lo], -eye[fin_hi]])
            b_in = np.concatenate([lincon[3], lo[fin_lo], -hi[fin_hi]])
            lincon = (lincon[0], lincon[1], A_in, b_in)
            bounds = None
        tied = np.flatnonzero(np.any(np.vstack([lincon[0], lincon[2]]) != 0.0, axis=0))
        nl_labels = _expr_names(pt, [n for c in nlcon for n in c.lhs.names + c.rhs.names])
        tied = np.union1d(tied, [label_src[x][0] for x in nl_labels if x in label_src and label_src[x][0] >= 0])
        # a flip negating a constrained parameter (b1 == 2*b2 with only F1 flipped) breaks it
        flips = [f for f in flips if not np.isin(f[1], tied).any()]
    if not fix_measurement and lincon is None and bounds is None:
        # the common-factor model re-identified: commonfactorGWAS's reduced problem (gwas_cfuser)
        stage.cfu = cfu_structure(pt, num, traits, pred, base, ml)
    # Q_SNP groups: factors with a 'F ~ SNP' line, indicators that are observed traits
    q_ptr = q_obs = q_trait = None
    q_rows: dict[int, int] = {}
    q_df: list[int] = []
    if Q_SNP:
        snp_lines = [ln.replace(" ", "") for ln in text.split("\n") if pred in ln]
        heads = {re.sub(r"~.*", "", ln) for ln in snp_lines}
        lvq = [v for v in pt.latent if v in heads]
        ptr, obs_i, tr_i = [0], [], []
        obs_names = cm.var_names[: cm.p]
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
    return Plan(
        eliminate=elim,
        **plan_base("user", traits, pred, TWAS, S_LD, V_LD, I, gc, varse2, tol, ml, smooth_check),
        stage1=stage,
        stage2=None,
        out_rows=out_rows,
        q_ptr=q_ptr,
        q_obs=q_obs,
        q_trait=q_trait,
        q_rows=q_rows,
        q_df=q_df,
        df=nmom - npar + n_eq,
        npar=npar,
        bounds=bounds,
        defined=[(d.name, d.expr) for d in pt.defined],
        label_src=label_src,
        flips=flips,
        lincon=lincon,
        n_eq=n_eq,
        nlcon=nlcon,
    )


def _snp_constraints(pt: ParTable, num: Numbering, general: list, ml: bool) -> tuple[tuple | None, int, list]:
    """The general constraints left on parameters estimated per SNP as the linear rows of
    :func:`polgen.gsem.constraints.snp_linear_constraints` (None: none), their independent
    equalities and the non-linear ones (linearised per SNP by gwas_batch); DWLS or ML."""
    if not general:
        return None, 0, []
    A_eq, b_eq, A_in, b_in, n_eq, nonlinear = snp_linear_constraints(pt, num, general)
    return (A_eq, b_eq, A_in, b_in), n_eq, nonlinear


def r_ml_meat(cm: KernelLayout, ov_order: list[str], pred: str, traits: list[str]) -> np.ndarray:
    """vech(V_full) positions that R's ML sandwich multiplies with each model moment.

    R reorders V_full for the variable order of a DWLS fit of the model (the SNP first) but
    lavaan's ML fit lists the SNP last, so R's ML "meat" pairs moment (a, b) of the ML model with
    the V_full entries of the variables at the same positions in the DWLS order (reproduces the
    R fixtures; ``ml_se="aligned"`` uses the consistent sandwich instead)."""
    obs_names = cm.var_names[: cm.p]
    tr = [v for v in ov_order if v != pred and v in obs_names]
    o_ml = tr + [pred]
    o_dwls = [pred] + tr
    K1 = len(traits) + 1
    sidx = {v: (0 if v == pred else 1 + traits.index(v)) for v in obs_names}
    perm = [sidx[o_dwls[o_ml.index(v)]] for v in obs_names]
    return np.array([vech_index(perm[a], perm[b], K1) for a, b in zip(cm.ma, cm.mb)], np.int64)


def _fixed_measurement_table(pt0: ParTable, num0: Numbering, est0: dict, pt_full: ParTable, pred: str) -> ParTable:
    """fix_measurement's table as R's userGWAS builds it: the rows of the model without its SNP
    lines, every parameter that is not a (residual) variance fixed at its no-SNP estimate, then
    the SNP rows of the full model.  A fixed labelled row keeps its label: parameters tied to it
    are fixed with it."""
    rows = []
    for r, q in zip(pt0.rows, num0.par.tolist()):
        free = q >= 0 and r.op == "~~" and r.lhs == r.rhs
        rows.append(replace(r, free=1 if free else 0, ustart=est0[(r.lhs, r.op, r.rhs)]))
    rows += [replace(r) for r in pt_full.rows if r.lhs == pred or r.rhs == pred]
    k = 0
    for i, r in enumerate(rows):
        r.id = i + 1
        if r.free > 0:
            k += 1
            r.free = k
    return replace(pt_full, rows=rows)
