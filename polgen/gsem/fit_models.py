"""GenomicSEM's model functions: ``commonfactor``, ``usermodel``, ``rgmodel`` (and ``write_model``,
which lives in :mod:`polgen.gsem.model_writer` and is re-exported here).

Each follows R GenomicSEM step by step (``R/usermodel.R``, ``R/commonfactor.R``, ``R/rgmodel.R``):

1. traits that the model does not use are dropped from ``S`` and ``V`` (usermodel/rgmodel);
2. ``S`` and ``V`` are smoothed with :func:`~polgen.gsem.matrix.near_pd` when their smallest
   eigenvalue is <= 0 (logged warning; :class:`NotPositiveDefiniteError` if impossible);
3. ``S`` and ``V`` are put in lavaan's variable order and the model is fitted (DWLS with
   ``W = diag(1/diag(V))``, or ML); with ``fix_resid`` it is refitted with lower bounds of 1e-4 on
   the residual variances of the traits when the first fit fails.  As R: usermodel passes
   ``optim.force.converged=TRUE`` to lavaan, so only a failed fit (no finite solution) triggers the
   refit and a Heywood solution (a negative residual variance) is reported as it is, with a warning
   (``fix_resid_when="error"``); commonfactor and rgmodel refit also when the optimiser stops before
   converging (``fix_resid_when="nonconverged"``, available to usermodel for the bounded fit).  The
   refit is skipped - as R ends up doing - when the model already writes a trait's residual
   variance;
4. sandwich SEs with ``V``; delta-method SEs for ``:=`` parameters (DWLS only, as R);
5. ``chisq`` = GenomicSEM's Q with ``eta = vech(S - Sigma)`` and ``V`` in the covstruc order,
   ``df`` = lavaan's, ``AIC = Q + 2 npar``, ``SRMR`` = lavaan's, ``CFI`` closed form against the
   independence model (``eta`` = off-diagonal of ``S``, ``df = k(k+1)/2 - k``), capped at 1;
6. the model is refitted to ``S_Stand`` (genetic correlations) with the rescaled ``V_Stand`` for the
   standardised estimates and SEs (``STD_Genotype``), and ``STD_All`` is lavaan's ``std.all`` of that
   fit (GenomicSEM's ``standardizedSolution(Fit_stand)``).  As R (``optim.force.converged=FALSE``
   there, one lavaan start) a standardized refit that does not converge is R's "standardized model
   failed to converge": R's usermodel then returns NULL; polgen returns the unstandardized results
   with the standardized columns and the fit statistics null, a logged warning and
   ``result.standardized_converged = False``.

As in R, a model with latent correlations outside [-1, 1] gets no fit statistics and no
standardised solution (a warning is logged), and for ``df == 0`` usermodel reports chisq, AIC,
p_chisq, CFI and SRMR as missing (commonfactor: chisq, AIC and p_chisq).  The computed numbers are
always available in ``result.fit_all``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from polgen.errors import ConvergenceError, ModelError
from polgen.gsem.covstruc import CovStruc, as_covstruc
from polgen.gsem.matrix import cov_to_cor, reorder_indices, smooth_if_needed, subset_indices, vech
from polgen.gsem.model_writer import resid_labels, write_model
from polgen.gsem.ram import CompiledModel, compile_model
from polgen.gsem.sem import (
    SemFit,
    defined_values,
    delta_method_se,
    fit_sem,
    model_chisq,
    sandwich,
    srmr,
    standardize_all,
    standardized_varies,
)
from polgen.gsem.stats import chi2_sf, normal_pvalues
from polgen.gsem.syntax import ParTable, parse_model
from polgen.options import Estimation, FixResidWhen, check_option

log = logging.getLogger("polgen")

__all__ = ["SEMResult", "RGModelResult", "commonfactor", "usermodel", "rgmodel", "write_model", "GENOMICSEM_NAMES"]

#: polgen parameter column -> GenomicSEM usermodel column
GENOMICSEM_NAMES = {
    "lhs": "lhs",
    "op": "op",
    "rhs": "rhs",
    "est": "Unstand_Est",
    "se": "Unstand_SE",
    "est_std": "STD_Genotype",
    "se_std": "STD_Genotype_SE",
    "std_all": "STD_All",
    "p": "p_value",
}
_CF_NAMES = {
    "lhs": "lhs",
    "op": "op",
    "rhs": "rhs",
    "est": "Unstandardized_Estimate",
    "se": "Unstandardized_SE",
    "est_std": "Standardized_Est",
    "se_std": "Standardized_SE",
    "p": "p_value",
}

_PARAM_SCHEMA = {
    "lhs": pl.String,
    "op": pl.String,
    "rhs": pl.String,
    "free": pl.Boolean,
    "label": pl.String,
    "est": pl.Float64,
    "se": pl.Float64,
    "z": pl.Float64,
    "p": pl.Float64,
    "log10p": pl.Float64,
    "est_std": pl.Float64,
    "se_std": pl.Float64,
    "std_all": pl.Float64,
}
_FIT_SCHEMA = {
    "chisq": pl.Float64,
    "df": pl.Int64,
    "p_chisq": pl.Float64,
    "AIC": pl.Float64,
    "CFI": pl.Float64,
    "SRMR": pl.Float64,
}


@dataclass
class SEMResult:
    """Result of :func:`usermodel` / :func:`commonfactor`.

    ``parameters``: one row per parameter in GenomicSEM's order (free parameters, then ``:=``
    parameters, then fixed ones for usermodel) with columns ``lhs, op, rhs, free, label, est, se,
    z, p, log10p, est_std, se_std, std_all``; :meth:`genomicsem` renames them as R does
    (:data:`GENOMICSEM_NAMES`).  ``fit``: one row ``chisq, df, p_chisq, AIC, CFI, SRMR`` as R
    reports them; ``fit_all`` the same numbers never blanked.  ``implied`` / ``residual``: the
    model-implied and residual covariance (``imp_cov=True``), traits in covstruc order.
    ``q_factor``: GenomicSEM's Q_Factor table (``Q_Factor=True``).  ``standardized_converged``:
    False when the standardized refit failed (R's "standardized model failed to converge", where
    R's usermodel returns NULL): ``est_std``, ``se_std``, ``std_all`` and the fit statistics are
    then null; None when it was not attempted (latent correlations outside [-1, 1]).
    """

    parameters: pl.DataFrame
    fit: pl.DataFrame
    fit_all: pl.DataFrame
    model: str
    table: ParTable
    vcov: np.ndarray | None
    converged: bool
    function: str = "usermodel"
    implied: pl.DataFrame | None = None
    residual: pl.DataFrame | None = None
    smoothing: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    q_factor: pl.DataFrame | None = None
    unstandardized_fit: SemFit | None = field(default=None, repr=False)
    standardized_fit: SemFit | None = field(default=None, repr=False)
    standardized_converged: bool | None = None

    def __repr__(self) -> str:
        f = self.fit_all.row(0, named=True)
        fit = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in f.items())
        return f"SEMResult({self.function}: {self.parameters.height} parameters, converged={self.converged}, {fit})"

    def genomicsem(self) -> pl.DataFrame:
        """``parameters`` with R GenomicSEM's column names (usermodel or commonfactor layout)."""
        names = _CF_NAMES if self.function == "commonfactor" else GENOMICSEM_NAMES
        cols = [pl.col(k).alias(v) for k, v in names.items() if k in self.parameters.columns]
        return self.parameters.select(cols)

    def save(self, path: str, *, genomicsem_names: bool = False) -> str:
        """Write ``parameters`` as parquet, atomically, with the fit row, the model syntax and the
        smoothing report in the key-value metadata (``polgen.fit``, ``polgen.model``, ...)."""
        import json

        from polgen.io.sink import write_table_atomic

        frame = self.genomicsem() if genomicsem_names else self.parameters
        meta = {
            "polgen.function": self.function,
            "polgen.model": self.model,
            "polgen.fit": json.dumps(self.fit_all.row(0, named=True)),
            "polgen.converged": json.dumps(self.converged),
            "polgen.smoothing": json.dumps(self.smoothing),
            "polgen.warnings": json.dumps(self.warnings),
        }
        write_table_atomic(path, frame, metadata=meta)
        return str(path)

    @property
    def results(self) -> pl.DataFrame:
        """Alias of :meth:`genomicsem` (R's ``$results``)."""
        return self.genomicsem()

    @property
    def modelfit(self) -> pl.DataFrame:
        """Alias of ``fit`` (R's ``$modelfit``)."""
        return self.fit


@dataclass
class RGModelResult:
    """:func:`rgmodel` output: the covstruc plus ``R`` (genetic correlations) and ``V_R``."""

    covstruc: CovStruc
    R: np.ndarray
    V_R: np.ndarray
    model: str
    result: SEMResult

    def __repr__(self) -> str:
        return f"RGModelResult(traits={self.trait_names}, R=\n{np.array2string(self.R, precision=4)})"

    @property
    def trait_names(self) -> list[str]:
        return self.covstruc.trait_names


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _prepare(cs: CovStruc, keep: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """Subset to ``keep`` traits (covstruc order) and smooth S and V as GenomicSEM."""
    names = [t for t in cs.trait_names if t in set(keep)]
    pos = [cs.trait_names.index(t) for t in names]
    S = cs.S[np.ix_(pos, pos)].copy()
    vi = subset_indices(cs.trait_names, names)
    V = cs.V[np.ix_(vi, vi)].copy()
    S_b, V_b = S, V
    S, sdiff = smooth_if_needed(S, "S")
    V, vdiff = smooth_if_needed(V, "V")
    k = len(names)
    # Z-statistic change caused by smoothing (R: max(Z_pre - Z_post) over the lower triangle)
    se_pre = np.zeros((k, k))
    se_post = np.zeros((k, k))
    r, c = np.tril_indices(k)
    order = np.lexsort((r, c))  # column-major lower triangle = vech order
    r, c = r[order], c[order]
    se_pre[r, c] = np.sqrt(np.clip(np.diag(V_b), 0, None))
    se_post[r, c] = np.sqrt(np.clip(np.diag(V), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        zd = S_b / se_pre - S / se_post
    zd[~np.isfinite(zd)] = 0.0
    info = {"S_diff": sdiff, "V_diff": vdiff, "Z_diff": float(zd.max())}
    if sdiff > 0.025:
        log.warning("S changed by more than .025 (%.4g) when smoothed: interpret results with caution", sdiff)
    if info["Z_diff"] > 0.025:
        log.warning("Z statistics of S changed by more than .025 (%.4g) when smoothed", info["Z_diff"])
    return S, V, names, info


def _standardize_inputs(S: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GenomicSEM's S_Stand, V_stand and the diagonal V used for its DWLS weights (covstruc order)."""
    d = np.sqrt(np.diag(S))
    S_stand = S / np.outer(d, d)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = vech(S_stand / S)
    scale[np.isnan(scale)] = 0.0
    dv = np.sqrt(np.diag(V)) * scale
    vcor = cov_to_cor(V)
    V_stand = dv[:, None] * vcor * dv[None, :]
    vdiag = np.diag(V_stand).copy()
    vdiag[vdiag == 0] = 2e-9
    return S_stand, V_stand, vdiag


def _wald(est: np.ndarray, se: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, p, -log10 p) of the Wald tests; NaN where z is not finite."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = est / se
    p, log10p = normal_pvalues(z)
    bad = ~np.isfinite(z)
    p[bad] = np.nan
    log10p[bad] = np.nan
    return z, p, log10p


def _fit_with_fix_resid(
    cm: CompiledModel,
    S: np.ndarray,
    V: np.ndarray,
    estimation: str,
    fix_resid: bool,
    traits: Sequence[str],
    warnings: list[str],
    when: str = "nonconverged",
) -> tuple[SemFit, CompiledModel, str]:
    """Fit; with fix_resid, refit with residual variances >= 1e-4 when the fit failed (``when =
    "error"``) or failed or did not converge (``"nonconverged"``)."""
    fit = None
    err: Exception | None = None
    try:
        fit = fit_sem(cm, S, V=V, estimator=estimation)
    except ConvergenceError as exc:
        err = exc
    added = ""
    if fix_resid and (fit is None or (when == "nonconverged" and not fit.converged)):
        table = cm.table.copy()
        rows = [table.index(t, "~~", t) for t in traits]
        user_written = [t for t, i in zip(traits, rows) if i is not None and table.rows[i].user == 1]
        if user_written:
            msg = (
                "fix_resid skipped: the model already specifies the residual variance of "
                f"{', '.join(user_written)} (R GenomicSEM reverts to the original model too)"
            )
            log.warning(msg)
            warnings.append(msg)
        else:
            for i in rows:
                if i is not None and table.rows[i].free > 0:
                    table.rows[i].lower = max(table.rows[i].lower, 1e-4)
            cm = compile_model(table, observed_order=cm.observed)
            msg = (
                "The model as initially specified failed to converge. A lower bound of 0 (1e-4) on "
                "residual variances was automatically added (fix_resid=True)"
            )
            log.warning(msg)
            warnings.append(msg)
            labels = resid_labels(len(traits))
            added = "".join(f"\n{t} ~~ {lab}*{t}\n{lab} > .0001" for t, lab in zip(traits, labels))
            try:
                fit = fit_sem(cm, S, V=V, estimator=estimation)
                err = None
            except ConvergenceError as exc:
                err = exc
    if fit is None:
        raise ConvergenceError(f"the model failed to converge on a solution: {err}")
    if not fit.converged:
        msg = "The model failed to converge on a solution. Please try specifying an alternative model."
        log.warning(msg)
        warnings.append(msg)
    heywood = [t for t in traits if (i := cm.table.index(t, "~~", t)) is not None and fit.values[i] < 0]
    if heywood:
        msg = f"some estimated residual variances are negative ({', '.join(heywood)}): a Heywood solution"
        log.warning(msg)
        warnings.append(msg)
    return fit, cm, added


def _lv_cor_ok(fit: SemFit) -> bool:
    cm = fit.model
    if len(cm.latent) < 2:
        return True
    C = fit.implied_all()[cm.p :, cm.p :]
    d = np.diag(C)
    if np.any(d <= 0) or not np.all(np.isfinite(C)):
        return False
    R = C / np.sqrt(np.outer(d, d))
    off = R[np.tril_indices(len(d), -1)]
    return bool(np.all(off <= 1) and np.all(off >= -1))


def _std_all_map(fit: SemFit) -> dict[tuple[str, str, str], float]:
    """lavaan standardizedSolution est.std for free rows and := rows (keyed lhs, op, rhs)."""
    std = standardize_all(fit)
    varies = standardized_varies(fit)
    out = {}
    env: dict[str, float] = {}
    for r, v, var in zip(fit.model.table.rows, std, varies):
        if var and np.isfinite(v):
            out[(r.lhs, r.op, r.rhs)] = float(v)
        if r.label and r.label not in env:
            env[r.label] = float(v)
    for d in fit.model.table.defined:
        try:
            val = d.expr.evaluate(env)
            env[d.name] = val
            out[(d.name, ":=", d.expr.text)] = float(np.real(val))
        except (ModelError, ZeroDivisionError, ValueError, OverflowError):
            pass
    return out


def _fit_frames(chisq, df, npar, cfi, srmr_v, blank: set[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    p_chisq = (
        float(chi2_sf(chisq, df))
        if (chisq is not None and df > 0)
        else (1.0 if chisq is not None and df == 0 else None)
    )
    aic = None if chisq is None else chisq + 2 * npar
    row = {"chisq": chisq, "df": int(df), "p_chisq": p_chisq, "AIC": aic, "CFI": cfi, "SRMR": srmr_v}
    fit_all = pl.DataFrame([row], schema=_FIT_SCHEMA)
    shown = dict(row)
    for k in blank:
        shown[k] = None
    return pl.DataFrame([shown], schema=_FIT_SCHEMA), fit_all


def _implied_in_order(fit: SemFit, names: Sequence[str]) -> np.ndarray:
    pos = [fit.model.observed.index(t) for t in names]
    return fit.sigma[np.ix_(pos, pos)]


def _matrix_frame(m: np.ndarray, names: Sequence[str]) -> pl.DataFrame:
    return pl.DataFrame({"trait": list(names), **{n: m[:, j] for j, n in enumerate(names)}})


def _q_factor(fit: SemFit, S: np.ndarray, V: np.ndarray, names: Sequence[str], toler: float | None) -> pl.DataFrame:
    """GenomicSEM's Q_Factor: misfit of the cross-factor indicator covariances per correlated pair.

    For each pair of latent variables with a non-zero implied correlation, ``eta`` holds the
    residual covariances ``S - Sigma`` between the indicators of the two factors and ``V_sub`` their
    sampling covariance; ``Q = eta' V_sub^-1 eta`` (eigen-decomposition), ``df = len(eta) - 1``.
    (R orders ``V_sub`` to match ``eta`` only when both factors have several indicators; here it
    always matches.)
    """
    cm = fit.model
    table = cm.table
    C = fit.implied_all()[cm.p :, cm.p :]
    d = np.sqrt(np.diag(C))
    R = C / np.outer(d, d)
    resid = S - _implied_in_order(fit, names)
    k = len(names)
    vr, vc = np.tril_indices(k)
    order = np.lexsort((vr, vc))
    pair_pos = {}
    for e, (a, b) in enumerate(zip(vr[order], vc[order])):
        pair_pos[(a, b)] = e
        pair_pos[(b, a)] = e
    rows = []
    nl = len(cm.latent)
    for j in range(nl):
        for i in range(j + 1, nl):
            if not np.isfinite(R[i, j]) or R[i, j] == 0:
                continue
            f1, f2 = cm.latent[i], cm.latent[j]
            ind1 = [r.rhs for r in table.rows if r.op == "=~" and r.lhs == f1 and r.rhs in names]
            ind2 = [r.rhs for r in table.rows if r.op == "=~" and r.lhs == f2 and r.rhs in names]
            p1 = [names.index(t) for t in ind1]
            p2 = [names.index(t) for t in ind2]
            eta = np.array([resid[a, b] for b in p2 for a in p1])
            idx = [pair_pos[(a, b)] for b in p2 for a in p1]
            df = len(eta) - 1
            if df > 0 and len(set(idx)) == len(idx):
                q = model_chisq(eta, V[np.ix_(idx, idx)])
                pv = float(chi2_sf(q, df))
            else:
                q, pv = None, None
            rows.append(
                {
                    "Factor1": f1,
                    "Factor2": f2,
                    "QFactor_chisq": q,
                    "QFactor_df": df if df > 0 else None,
                    "QFactor_p": pv,
                }
            )
    schema = {
        "Factor1": pl.String,
        "Factor2": pl.String,
        "QFactor_chisq": pl.Float64,
        "QFactor_df": pl.Int64,
        "QFactor_p": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


# --------------------------------------------------------------------------------------------
# the core shared by usermodel and commonfactor
# --------------------------------------------------------------------------------------------
def _run(
    cs: CovStruc,
    model: str,
    *,
    estimation: str,
    std_lv: bool,
    fix_resid: bool,
    imp_cov: bool,
    toler: float | None,
    function: str,
    CFIcalc: bool = True,
    Q_Factor: bool = False,
    fix_resid_when: str = "nonconverged",
) -> SEMResult:
    est = estimation.upper()
    if est not in ("DWLS", "ML"):
        raise ModelError(f"estimation must be 'DWLS' or 'ML', got {estimation!r}")
    # lavaan resolves fixed.x = "default" to TRUE for ML and FALSE for DWLS
    table = parse_model(model, std_lv=std_lv, observed=cs.trait_names, fixed_x=(est == "ML"))
    used = [t for t in cs.trait_names if t in set(table.observed)]
    if not used:
        raise ModelError("none of the trait names in the covstruc appear in the model")
    S, V, names, smooth = _prepare(cs, used)
    warnings: list[str] = []
    cm = compile_model(table)
    perm = reorder_indices(names, cm.observed)
    pos = [names.index(t) for t in cm.observed]
    S_m = S[np.ix_(pos, pos)]
    V_m = V[np.ix_(perm, perm)]
    fit, cm, added = _fit_with_fix_resid(cm, S_m, V_m, est, fix_resid, names, warnings, fix_resid_when)
    final_model = model + added
    table = cm.table
    vcov = sandwich(fit, V_m, toler=toler)
    se = np.sqrt(np.clip(np.diag(vcov), 0, None))
    se[np.diag(vcov) < 0] = np.nan
    free_rows = [r for r in table.rows if r.free > 0]
    free_rows.sort(key=lambda r: r.free)
    d_est = defined_values(table, fit.theta) if table.defined else np.zeros(0)
    if table.defined and est == "DWLS":
        d_se = delta_method_se(table, fit.theta, vcov)
    else:
        d_se = np.full(len(table.defined), np.nan)
        if table.defined:
            msg = "SEs of := parameters are not available for ML estimation (as GenomicSEM)"
            log.warning(msg)
            warnings.append(msg)

    # rows: free, :=, (usermodel) fixed
    keys = [(r.lhs, r.op, r.rhs) for r in free_rows]
    labels = [r.label for r in free_rows]
    ests = list(fit.theta)
    ses = list(se)
    frees = [True] * len(free_rows)
    for d, v, s in zip(table.defined, d_est, d_se):
        keys.append((d.name, ":=", d.expr.text))
        labels.append(d.name)
        ests.append(float(v))
        ses.append(float(s))
        frees.append(False)
    n_main = len(keys)
    if function == "usermodel":
        for t, r in enumerate(table.rows):
            if r.free == 0 and (r.lhs, r.op, r.rhs) not in keys:
                keys.append((r.lhs, r.op, r.rhs))
                labels.append(r.label)
                ests.append(float(fit.values[t]))
                ses.append(np.nan)
                frees.append(False)

    ests_a = np.asarray(ests, dtype=np.float64)
    ses_a = np.asarray(ses, dtype=np.float64)
    z, p, log10p = _wald(ests_a, ses_a)
    est_std = np.full(len(keys), np.nan)
    se_std = np.full(len(keys), np.nan)
    std_all = np.full(len(keys), np.nan)

    chisq = cfi = srmr_v = None
    qfactor = None
    df = fit.df
    ok = _lv_cor_ok(fit)
    std_fit = None
    if not ok:
        msg = (
            "The model produced correlations among latent variables outside [-1, 1] (or negative latent "
            "variances): model fit and standardized results are not computed (as GenomicSEM)"
        )
        log.warning(msg)
        warnings.append(msg)
    else:
        implied = _implied_in_order(fit, names)
        eta = vech(S - implied)
        chisq = model_chisq(eta, V)
        qfactor = _q_factor(fit, S, V, names, toler) if Q_Factor else None
        srmr_v = srmr(S_m, fit.sigma)
        k = len(names)
        if CFIcalc:
            S0 = S.copy()
            np.fill_diagonal(S0, 0.0)
            cfi_chi = model_chisq(vech(S0), V)
            df_cfi = k * (k + 1) // 2 - k
            denom = cfi_chi - df_cfi
            cfi = float(((cfi_chi - df_cfi) - (chisq - df)) / denom) if denom != 0 else float("nan")
            cfi = min(cfi, 1.0)
        # standardized refit
        S_st, V_st, vdiag = _standardize_inputs(S, V)
        S_st_m = S_st[np.ix_(pos, pos)]
        V_st_m = V_st[np.ix_(perm, perm)]
        # R refits with optim.force.converged=FALSE from lavaan's one start: a fit that does not
        # converge there (or whose bread is singular) is "the standardized model failed to
        # converge" and R's usermodel returns no results (NULL); polgen keeps the unstandardized
        # ones, with the standardized columns null and standardized_converged=False
        try:
            std_fit = fit_sem(cm, S_st_m, W_diag=1.0 / vdiag[perm], estimator=est, restarts=1, random_starts=0)
            if not std_fit.converged:
                raise ConvergenceError("standardized model did not converge")
            vcov_st = sandwich(std_fit, V_st_m, toler=toler)
        except (ConvergenceError, ModelError) as exc:
            std_fit = None
            msg = (
                f"The standardized model failed to converge ({exc}): standardized results are not "
                "reported (R's usermodel returns NULL here); interpret the unstandardized ones with caution"
            )
            log.warning(msg)
            warnings.append(msg)
        if std_fit is not None:
            se_st = np.sqrt(np.clip(np.diag(vcov_st), 0, None))
            nf = len(free_rows)
            est_std[:nf] = std_fit.theta
            se_std[:nf] = se_st
            if table.defined:
                est_std[nf:n_main] = defined_values(table, std_fit.theta)
                if est == "DWLS":
                    se_std[nf:n_main] = delta_method_se(table, std_fit.theta, vcov_st)
            if function == "usermodel":
                est_std[n_main:] = ests_a[n_main:]
                sa = _std_all_map(std_fit)
                for i, key in enumerate(keys):
                    std_all[i] = sa.get(key, est_std[i])
    if ok and std_fit is None:
        chisq = cfi = srmr_v = None  # R stops before computing fit when the standardized fit fails

    params = pl.DataFrame(
        {
            "lhs": [k_[0] for k_ in keys],
            "op": [k_[1] for k_ in keys],
            "rhs": [k_[2] for k_ in keys],
            "free": frees,
            "label": labels,
            "est": ests_a,
            "se": ses_a,
            "z": z,
            "p": p,
            "log10p": log10p,
            "est_std": est_std,
            "se_std": se_std,
            "std_all": std_all,
        },
        schema=_PARAM_SCHEMA,
    )
    if ok and std_fit is None:  # R's usermodel returns no standardized results (NULL)
        params = params.with_columns(pl.lit(None, pl.Float64).alias(c) for c in ("est_std", "se_std", "std_all"))
    if function == "commonfactor":
        params = params.drop("std_all")
        blank = {"chisq", "AIC", "p_chisq"} if df == 0 else set()
    else:
        blank = {"chisq", "AIC", "p_chisq", "SRMR", "CFI"} if df == 0 else set()
    fit_df, fit_all = _fit_frames(chisq, df, fit.npar, cfi, srmr_v, blank)
    res = SEMResult(
        parameters=params,
        fit=fit_df,
        fit_all=fit_all,
        model=final_model,
        table=table,
        vcov=vcov,
        converged=fit.converged,
        function=function,
        smoothing=smooth,
        warnings=warnings,
        unstandardized_fit=fit,
        standardized_fit=std_fit,
        standardized_converged=None if not ok else std_fit is not None,
        q_factor=qfactor,
    )
    if imp_cov:
        implied = _implied_in_order(fit, names)
        res.implied = _matrix_frame(implied, names)
        res.residual = _matrix_frame(S - implied, names)
    if df == 0 and function == "usermodel":
        log.info("fully saturated model (df = 0): model fit statistics are reported as missing")
    return res


# --------------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------------
def usermodel(
    covstruc: Any,
    model: str,
    estimation: Estimation = "DWLS",
    std_lv: bool = False,
    fix_resid: bool = True,
    CFIcalc: bool = True,
    imp_cov: bool = False,
    toler: float | None = None,
    Q_Factor: bool = False,
    fix_resid_when: FixResidWhen = "error",
) -> SEMResult:
    """Fit a user-specified lavaan model to a covariance structure (R ``usermodel``).

    ``covstruc``: the :func:`~polgen.gsem.ldsc` output, a :class:`CovStruc`, a mapping
    ``{S, V, I, trait_names}`` or a JSON/parquet path.  Model variable names are the trait names.
    ``toler``: reciprocal-condition tolerance for inverting the bread (R ``solve(tol=)``).

    ``fix_resid`` / ``fix_resid_when``: R's usermodel refits the model with residual variances
    bounded at 1e-4 only when its first fit fails outright (``"error"``, the default: lavaan runs
    with ``optim.force.converged=TRUE``, so a Heywood solution with a negative residual variance is
    reported as it is, with a warning in ``result.warnings``).  ``"nonconverged"`` also refits when
    the first fit stops before converging, which returns the bounded solution instead (what R's
    commonfactor and rgmodel do, and polgen's usermodel did before).
    """
    check_option("fix_resid_when", fix_resid_when, FixResidWhen)
    cs = as_covstruc(covstruc)
    if not isinstance(model, str) or not model.strip():
        raise ModelError("model must be a non-empty lavaan model string")
    return _run(
        cs,
        model,
        estimation=estimation,
        std_lv=std_lv,
        fix_resid=fix_resid,
        imp_cov=imp_cov,
        toler=toler,
        function="usermodel",
        CFIcalc=CFIcalc,
        Q_Factor=Q_Factor,
        fix_resid_when=fix_resid_when,
    )


def commonfactor_model(traits: Sequence[str]) -> str:
    """GenomicSEM's common factor syntax: ``F1 =~ NA*t1 + t2 + ...`` and ``F1 ~~ 1*F1``."""
    return f"F1 =~ NA*{traits[0]}" + "".join(f" + {t}" for t in traits[1:]) + " \n F1 ~~ 1*F1 \n "


def commonfactor(covstruc: Any, estimation: Estimation = "DWLS") -> SEMResult:
    """One common factor over all traits (R ``commonfactor``); needs at least 3 traits."""
    cs = as_covstruc(covstruc)
    if cs.k < 3:
        raise ModelError(
            f"the covstruc has only {cs.k} traits: a common factor model is not identified "
            "(df < 0); use usermodel with constrained loadings or add traits"
        )
    model = commonfactor_model(cs.trait_names)
    return _run(
        cs,
        model,
        estimation=estimation,
        std_lv=False,
        fix_resid=True,
        imp_cov=False,
        toler=None,
        function="commonfactor",
    )


def rgmodel_syntax(traits: Sequence[str]) -> str:
    """GenomicSEM's rgmodel syntax (one standardized latent per trait, free latent covariances)."""
    lines = [""]
    for i, t in enumerate(traits, start=1):
        lines.append(f"var{i} =~ NA*{t} + start(.1)*{t}")
    for i in range(1, len(traits) + 1):
        lines.append(f"var{i} ~~ 1*var{i}")
    for t in traits:
        lines.append(f"{t} ~~ 0*{t}")
    for i in range(1, len(traits) + 1):
        for j in range(i + 1, len(traits) + 1):
            lines.append(f"var{i} ~~ var{j}")
    return "\n".join(lines) + "\n"


def rgmodel(covstruc: Any, estimation: Estimation = "DWLS") -> RGModelResult:
    """Genetic correlation matrix ``R`` and its sampling covariance ``V_R`` (R ``rgmodel``).

    ``V_R`` is the sandwich covariance of the latent correlations ``var_i ~~ var_j`` in the order
    (1,2), (1,3), ..., (2,3), ... (the lower triangle of R column by column).
    """
    cs = as_covstruc(covstruc)
    k = cs.k
    if k < 2:
        raise ModelError("rgmodel needs at least two traits")
    model = rgmodel_syntax(cs.trait_names)
    res = _run(
        cs, model, estimation=estimation, std_lv=False, fix_resid=True, imp_cov=False, toler=None, function="usermodel"
    )
    fit, vcov, table = res.unstandardized_fit, res.vcov, res.table
    assert fit is not None and vcov is not None, "_run sets the fit and its covariance"
    R = np.eye(k)
    idx = []
    for i in range(1, k + 1):
        for j in range(i + 1, k + 1):
            t = table.index(f"var{i}", "~~", f"var{j}")
            assert t is not None, "rgmodel_syntax writes every var_i ~~ var_j"
            f = table.rows[t].free - 1
            idx.append(f)
            R[i - 1, j - 1] = R[j - 1, i - 1] = fit.theta[f]
    V_R = vcov[np.ix_(idx, idx)].copy()
    return RGModelResult(covstruc=cs, R=R, V_R=V_R, model=model, result=res)
