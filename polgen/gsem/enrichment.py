"""Functional enrichment of Genomic SEM model parameters, as R GenomicSEM's ``enrich()``.

Steps (R's, on the :class:`~polgen.gsem.stratified.StratifiedCovStruc` of ``s_ldsc``):

1. The baseline annotation's ``S`` / ``V`` (``S_Tau`` / ``V_Tau`` with ``tau=True``), reduced to
   the traits in the model, smoothed with ``near_pd`` when not positive definite; the model is
   fitted by DWLS with the weights ``1 / diag(V)`` (polgen's one SEM stack,
   :func:`polgen.gsem.sem.fit_sem`) and sandwich SEs with the full ``V`` (``base`` table).
2. Its parameter table with every estimate fixed, then freed by ``fix``: ``"regressions"`` frees
   the (residual) variances and covariances, ``"covariances"`` the regressions, loadings and
   variances, ``"variances"`` the regressions, loadings and covariances; ``params`` are always
   freed and ``fixparam`` never.  Freed parameters start at 1 and lose their bounds (unless
   labelled); equality constraints are dropped.
3. That model is refitted to every binary, non-flanking annotation (R's ``Select == 1``) whose
   heritabilities are not all negative; for each of ``params``
   ``enrichment = (est_annotation / est_baseline) / prop`` with
   ``SE = SE_annotation / |est_baseline| / prop`` and the one-sided p-value of
   ``(enrichment - 1) / SE``.

The result is an :class:`EnrichResult` (a long ``enrichment`` frame with one row per annotation
and parameter, R's columns, and the ``base`` table).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.special import ndtr

from polgen.errors import ConvergenceError, InputError, ModelError
from polgen.gsem.matrix import reorder_indices, smooth_if_needed, subset_indices
from polgen.gsem.ram import CompiledModel, compile_model
from polgen.gsem.sem import SemFit, fit_sem, sandwich
from polgen.gsem.stratified import StratifiedCovStruc
from polgen.gsem.syntax import ParTable, parse_model
from polgen.options import EnrichFix, check_option

log = logging.getLogger("polgen")

__all__ = ["EnrichResult", "enrich"]

NOT_ANALYSED_FLANK = "This annotation was not analyzed as it is either a continuous or flanking annotation."
NOT_ANALYSED_NEG = "This annotation was not analyzed as all heritability estimates were below 0."
NOT_CONVERGED = "lavaan WARNING: the optimizer warns that a solution has NOT been found!"
_COLUMNS = {
    "Annotation": pl.String,
    "lhs": pl.String,
    "op": pl.String,
    "rhs": pl.String,
    "Cov_Smooth": pl.Float64,
    "Z_smooth": pl.Float64,
    "Enrichment": pl.Float64,
    "Enrichment_SE": pl.Float64,
    "Enrichment_p_value": pl.Float64,
    "Error": pl.String,
    "Warning": pl.String,
}


@dataclass
class EnrichResult:
    """R ``enrich()``'s output.

    ``enrichment``: one row per analysed annotation and parameter of ``params`` (columns as R's:
    Annotation, lhs, op, rhs, Cov_Smooth, Z_smooth, Enrichment, Enrichment_SE, Enrichment_p_value,
    Error, Warning; ``"0"`` in Error/Warning means none); ``base``: the baseline model (lhs, op,
    rhs, est, SE, Fixed_Enrich) or ``None`` with ``base=False``."""

    enrichment: pl.DataFrame
    base: pl.DataFrame | None
    params: list[str]

    def tables(self) -> list[pl.DataFrame]:
        """R's list: one frame per parameter of ``params`` (then ``base`` when present)."""
        key = pl.concat_str("lhs", "op", "rhs")
        out = [self.enrichment.filter(key == p) for p in self.params]
        return out + ([self.base] if self.base is not None else [])

    def __repr__(self) -> str:
        return f"EnrichResult({self.enrichment.height} rows, params={self.params})"


# ---------------------------------------------------------------------------------------------
def _key(r) -> str:
    return f"{r.lhs}{r.op}{r.rhs}"


def _model_inputs(
    S: np.ndarray, V: np.ndarray, traits: list[str], used: list[str]
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """S / V reduced to ``used`` (covstruc order) and smoothed, with R's Cov_Smooth and Z_smooth."""
    pos = [traits.index(t) for t in used]
    Sb = S[np.ix_(pos, pos)]
    vi = subset_indices(traits, used)
    Vb = V[np.ix_(vi, vi)]
    Ss, sdiff = smooth_if_needed(Sb, "S")
    Vs, _ = smooth_if_needed(Vb, "V")
    k = len(used)
    r, c = np.tril_indices(k)
    order = np.lexsort((r, c))
    r, c = r[order], c[order]
    with np.errstate(divide="ignore", invalid="ignore"):
        zd = np.abs(Sb[r, c] / np.sqrt(np.diag(Vb)) - Ss[r, c] / np.sqrt(np.diag(Vs)))
    zd = zd[np.isfinite(zd)]
    return Ss, Vs, sdiff, float(zd.max()) if zd.size else math.nan


def _fit(cm: CompiledModel, S: np.ndarray, V: np.ndarray, start: np.ndarray | None = None) -> SemFit:
    """DWLS fit, restarted from its own solution while that lowers the objective (at most 5 times).

    A single run can stop short where the objective is flat: with free loadings and fixed variances
    (``std_lv``) one annotation's loadings ended ~3e-6 (relative) from the optimum, where R's lavaan
    (nlminb) is within 2e-7; the restarts reach it (tests/gsem/test_enrich.py, case ``stdlv``)."""
    fit = fit_sem(cm, S, V=V, estimator="DWLS", start=start)
    for _ in range(5):
        if not fit.converged:
            break
        again = fit_sem(cm, S, V=V, estimator="DWLS", start=fit.theta)
        if not (again.converged and again.objective < fit.objective):
            break
        fit = again
    return fit


def _fixed_table(
    table: ParTable, values: np.ndarray, fix: str, params: set[str], fixparam: set[str]
) -> tuple[ParTable, np.ndarray]:
    """R's ModelQ_WLS: the baseline table with every estimate fixed, then freed by ``fix``."""
    t = table.copy()
    seen_labels: set[str] = set()
    u = 0
    free_mask = np.zeros(len(t.rows), dtype=bool)
    for i, r in enumerate(t.rows):
        key = _key(r)
        if fix == "regressions":
            chosen = key in params or r.op == "~~"
        elif fix == "covariances":
            chosen = key in params or r.op in ("~", "=~") or r.lhs == r.rhs
        else:
            chosen = key in params or r.op in ("~", "=~") or (r.op == "~~" and r.lhs != r.rhs)
        chosen = chosen and key not in fixparam
        # equality constraints are dropped (R removes the == rows): one row per label keeps it
        if r.label and r.label in seen_labels:
            r.label = ""
        seen_labels.add(r.label)
        r.exo = 0
        if chosen:
            u += 1
            r.free = u
            r.ustart = 1.0
            if not r.label:
                r.lower, r.upper = -math.inf, math.inf
        else:
            r.free = 0
            r.ustart = float(values[i])
        free_mask[i] = chosen
    t.constraints = [c for c in t.constraints if getattr(c, "op", "") != "=="]
    t.exogenous = []
    return t, free_mask


def enrich(
    s_covstruc: StratifiedCovStruc | str,
    model: str = "",
    params: Sequence[str] | str | None = None,
    fix: EnrichFix = "regressions",
    std_lv: bool = False,
    rm_flank: bool = True,
    tau: bool = False,
    base: bool = True,
    toler: float | None = None,
    fixparam: Sequence[str] | str | None = None,
) -> EnrichResult:
    """Enrichment of model parameters across annotations (R GenomicSEM ``enrich``).

    Parameters
    ----------
    s_covstruc
        The :func:`polgen.gsem.s_ldsc` result (or a file it was saved to).
    model
        lavaan syntax of the model, fitted first to the baseline annotation.
    params
        The parameters whose enrichment is estimated, as ``lhs op rhs`` (spaces ignored), e.g.
        ``"F1~~F1"``.
    fix
        Which parameters stay fixed at their baseline values: ``"regressions"`` (loadings and
        regressions), ``"covariances"`` or ``"variances"``.
    std_lv
        Identify factors by fixing their variances to 1 (lavaan's ``std.lv``).
    rm_flank
        Drop the rows of continuous and flanking annotations (not analysed).
    tau
        Use the per-annotation coefficients (``S_Tau`` / ``V_Tau``) instead of ``S`` / ``V``.
    base
        Also return the baseline model's estimates (``base`` table).
    toler
        Reciprocal condition number below which the sandwich bread counts as singular (R's
        ``solve(tol=)``; default machine epsilon).
    fixparam
        Parameters (``lhs op rhs``) kept fixed whatever ``fix`` says.

    Returns
    -------
    EnrichResult

    Raises
    ------
    ModelError
        ``params`` not in the model, every parameter fixed, no trait of the model in the covstruc,
        or a singular sandwich for the baseline annotation.
    ConvergenceError
        The model does not converge on the baseline annotation (R stops there too).
    """
    if isinstance(s_covstruc, str):
        s_covstruc = StratifiedCovStruc.load(s_covstruc)
    if not isinstance(s_covstruc, StratifiedCovStruc):
        raise InputError(f"enrich needs the s_ldsc result, got {type(s_covstruc).__name__}")
    fix = check_option("fix", fix, EnrichFix)  # type: ignore[assignment]
    if not isinstance(model, str) or not any(c in model for c in ("~", "=", "+")):
        raise ModelError("model must be lavaan syntax (it has no ~, = or +)")
    plist = [params] if isinstance(params, str) else list(params or [])
    plist = [re.sub(r"\s", "", p) for p in plist]
    if not plist:
        raise InputError("params must name at least one model parameter (e.g. 'F1~~F1')")
    fixed_names = {re.sub(r"\s", "", p) for p in ([fixparam] if isinstance(fixparam, str) else list(fixparam or []))}
    sc = s_covstruc
    traits = list(sc.trait_names)
    S_all, V_all = (sc.S_Tau, sc.V_Tau) if tau else (sc.S, sc.V)
    log.info("enrich: %s is assumed to be the baseline annotation that includes all SNPs", sc.annotations[0])

    table = parse_model(model, std_lv=std_lv, observed=traits, fixed_x=False)
    used = [t for t in traits if t in set(table.observed)]
    if not used:
        raise ModelError("none of the trait names of the stratified covstruc appear in the model")
    cm = compile_model(table)
    pos = [used.index(t) for t in cm.observed]
    perm = reorder_indices(used, cm.observed)

    def inputs(f: int):
        S, V, sdiff, zdiff = _model_inputs(S_all[f], V_all[f], traits, used)
        return S[np.ix_(pos, pos)], V[np.ix_(perm, perm)], sdiff, zdiff

    S0, V0, _, _ = inputs(0)
    try:
        fit0 = _fit(cm, S0, V0)
    except ConvergenceError as exc:
        raise ConvergenceError(
            f"The model failed to converge on a solution for the baseline annotation ({exc}). "
            "Please try specifying an alternative model"
        ) from exc
    if not fit0.converged:
        raise ConvergenceError(
            "The model failed to converge on a solution for the baseline annotation. "
            "Please try specifying an alternative model"
        )
    base_rows = list(cm.table.rows)
    qtable, qfree = _fixed_table(cm.table, fit0.values, fix, set(plist), fixed_names)
    if not qfree.any():
        raise ModelError(
            "All parameters are being fixed from the baseline model. Please specify arguments so at least one "
            "free parameter is estimated."
        )
    if qfree.all():
        log.warning(
            "enrich: all parameters are being freely estimated from the baseline model; enrichment results "
            "should likely not be interpreted"
        )
    keys_q = [_key(r) for r in qtable.rows]
    missing = [p for p in plist if p not in keys_q]
    if missing:
        raise ModelError(f"params {missing} are not parameters of the model (it has {keys_q})")
    base_est = {k: float(v) for k, v in zip(keys_q, fit0.values)}

    # -- the baseline table
    base_df = None
    if base:
        try:
            se0 = np.sqrt(np.clip(np.diag(sandwich(fit0, V0, toler=toler)), 0, None))
        except ModelError:
            log.warning("enrich: SEs could not be computed for the baseline model; results may not be trustworthy")
            se0 = np.full(fit0.theta.shape[0], np.nan)
        rows = []
        for i, r in enumerate(base_rows):
            if r.free > 0:
                rows.append((r.lhs, r.op, r.rhs, float(fit0.values[i]), float(se0[r.free - 1])))
            elif r.op in ("=~", "~~", "~"):
                rows.append((r.lhs, r.op, r.rhs, float(fit0.values[i]), math.nan))
        fixed_flag = {k: ("No" if f else "Yes") for k, f in zip(keys_q, qfree)}
        base_df = pl.DataFrame(
            [(*row, fixed_flag.get(f"{row[0]}{row[1]}{row[2]}", "Yes")) for row in rows],
            schema={
                "lhs": pl.String,
                "op": pl.String,
                "rhs": pl.String,
                "est": pl.Float64,
                "SE": pl.Float64,
                "Fixed_Enrich": pl.String,
            },
            orient="row",
        ).sort(["Fixed_Enrich", pl.concat_str("lhs", "op", "rhs")], maintain_order=True)

    # -- the fixed model: check it reproduces the baseline, then every annotation
    cmq = compile_model(qtable, observed_order=cm.observed)
    qpar = [i for i, r in enumerate(qtable.rows) if r.free > 0 and keys_q[i] in set(plist)]
    qpar.sort(key=lambda i: qtable.rows[i].free)
    try:
        check = _fit(cmq, S0, V0)
        if np.any(np.round(check.theta - np.array([fit0.values[i] for i, f in enumerate(qfree) if f])) != 0):
            log.warning(
                "enrich: the model re-estimated in the baseline annotation gives different values when fixed and "
                "freely estimated; it may be poorly specified"
            )
    except ConvergenceError:
        log.warning("enrich: the fixed model did not converge on the baseline annotation")
    ref_est = np.array([base_est[keys_q[i]] for i in qpar])

    records: list[tuple] = []

    def na_rows(name: str, sdiff, zdiff, err: str, warn: str) -> None:
        for i in qpar:
            r = qtable.rows[i]
            records.append((name, r.lhs, r.op, r.rhs, sdiff, zdiff, None, None, None, err, warn))

    select = [1] + [int(v) for v in sc.select]
    for n, name in enumerate(sc.annotations):
        if select[n] != 1:
            na_rows(name, None, None, "0", NOT_ANALYSED_FLANK)
            continue
        S_raw = S_all[n]
        if np.all(np.diag(S_raw[np.ix_([traits.index(t) for t in used], [traits.index(t) for t in used])]) < 0):
            na_rows(name, None, None, "0", NOT_ANALYSED_NEG)
            continue
        S, V, sdiff, zdiff = inputs(n)
        try:
            fit = _fit(cmq, S, V)
        except (ConvergenceError, ModelError) as exc:
            na_rows(name, sdiff, zdiff, str(exc), "0")
            continue
        if not fit.converged:
            na_rows(name, sdiff, zdiff, "0", NOT_CONVERGED)
            continue
        try:
            vc = sandwich(fit, V, toler=toler)
        except ModelError as exc:
            if n == 0:
                raise ModelError(
                    "Your baseline model produced tolerance issues; consider using the toler argument to set a "
                    f"lower threshold ({exc.message})"
                ) from exc
            na_rows(name, sdiff, zdiff, "0", "0")
            continue
        est = np.array([fit.values[i] for i in qpar])
        se = np.sqrt(np.clip(np.diag(vc)[[qtable.rows[i].free - 1 for i in qpar]], 0, None))
        prop = float(sc.prop[n])
        enr = est / ref_est / prop
        enr_se = se / np.abs(ref_est) / prop
        with np.errstate(divide="ignore", invalid="ignore"):
            p = ndtr(-(enr - 1.0) / enr_se)
        for j, i in enumerate(qpar):
            r = qtable.rows[i]
            records.append(
                (name, r.lhs, r.op, r.rhs, sdiff, zdiff, float(enr[j]), float(enr_se[j]), float(p[j]), "0", "0")
            )
    out = pl.DataFrame(records, schema=_COLUMNS, orient="row")
    if rm_flank:
        n0 = out["Annotation"].n_unique()
        out = out.filter(pl.col("Warning") != NOT_ANALYSED_FLANK)
        log.info(
            "enrich: %d annotations were removed from the output because they were either continuous or flanking "
            "window annotations",
            n0 - out["Annotation"].n_unique(),
        )
    # R's row order: parameter by parameter, annotations in order
    order = {k: i for i, k in enumerate(keys_q[i] for i in qpar)}
    out = out.with_columns(pl.concat_str("lhs", "op", "rhs").replace_strict(order, return_dtype=pl.Int64).alias("__p"))
    out = out.sort("__p", maintain_order=True).drop("__p")
    return EnrichResult(enrichment=out, base=base_df, params=[keys_q[i] for i in qpar])
