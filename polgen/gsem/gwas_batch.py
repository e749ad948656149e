"""Genomic SEM GWAS, one batch of SNPs: per-SNP fits in the kernels, then the output rows.

:func:`compute_batch` turns a frame of sumstats rows into the result rows of ``user_gwas`` /
``commonfactor_gwas``: it extracts betas, SEs and SNP variances, runs the plan's stage(s) in
:func:`polgen.kernels.gwas.gwas_batch` (the lowest objective over several starts wins), applies
bounds by an active set (as lavaan's constrained solution), evaluates defined parameters with
delta-method SEs (complex-step Jacobian, sandwich covariance), and lays out est / se / z / p,
chi-square, ``Q_SNP``, ``Z_smooth``, ``converged`` and ``warning`` per reported parameter.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from polgen.gsem.expr import evaluate_array
from polgen.gsem.gwas_cfuser import cfu_stage1
from polgen.gsem.gwas_commonfactor import cf_q_result, cf_q_start, cf_stage1
from polgen.gsem.gwas_constrained import constrained_stage
from polgen.gsem.gwas_plan import Plan, Stage
from polgen.gsem.stats import chi2_sf, normal_pvalues

__all__ = ["compute_batch", "extract_inputs", "multistart_trigger", "run_stage"]

MULTISTART_MAX_ITER = 300  # per start when several starts compete (the best converged one wins)
WARM_MAX_ITER = 1000  # the first (warm) start of a multi-start stage


# ==============================================================================================
def run_stage(plan: Plan, stage: Stage, beta, se, var, theta0=None, q=False, max_iter=None):
    from polgen.kernels.gwas import ST_OK, gwas_batch

    starts = stage.starts if theta0 is None else None
    common: dict[str, Any] = dict(  # keyword arguments of the batch kernel
        ml=plan.ml,
        ml_wmode=plan.ml_wmode,
        toler=plan.toler,
        smooth_check=plan.smooth_check,
        q_ptr=plan.q_ptr if q else None,
        q_obs=plan.q_obs if q else None,
        q_trait=plan.q_trait if q else None,
        wald_idx=stage.wald_idx,
    )
    if max_iter is not None:
        common["max_iter"] = max_iter
    elif theta0 is None and stage.starts.shape[0] > 1:
        common["max_iter"] = MULTISTART_MAX_ITER
    if starts is not None and starts.shape[0] == 1 and stage.fast is not None:
        common["fast"] = stage.fast
        common["eliminate"] = plan.eliminate
    if starts is None:
        return gwas_batch(
            beta,
            se,
            var,
            *plan.ld_args(),
            stage.model,
            stage.fidx,
            theta0,
            stage.snpvar_par,
            **common,
        )
    warm = dict(common)
    if max_iter is None and starts.shape[0] > 1:
        # the warm start's fit may take its time (slow linear convergence near a Heywood case:
        # R's nlminb converges there); the other starts keep MULTISTART_MAX_ITER
        warm["max_iter"] = WARM_MAX_ITER
    best = gwas_batch(beta, se, var, *plan.ld_args(), stage.model, stage.fidx, starts[:1], stage.snpvar_par, **warm)
    if starts.shape[0] == 1:
        return best
    # the other starts only where the warm start's fit may not be the lowest minimum
    rows = np.flatnonzero(multistart_trigger(starts, best, plan.df))
    if rows.size == 0:
        return best
    sub = {key: arr[rows] for key, arr in best.items()}
    b_, s_, v_ = beta[rows], se[rows], var[rows]
    for s in range(1, starts.shape[0]):
        res = gwas_batch(
            b_, s_, v_, *plan.ld_args(), stage.model, stage.fidx, starts[s : s + 1], stage.snpvar_par, **common
        )
        ok_new = res["status"] == ST_OK
        ok_old = sub["status"] == ST_OK
        better = ok_new & (~ok_old | (res["fmin"] < sub["fmin"] - 1e-10 * np.abs(sub["fmin"])))
        if better.any():
            for key, arr in res.items():
                sub[key][better] = arr[better]
    for key, arr in sub.items():
        best[key][rows] = arr
    return best


def multistart_trigger(starts: np.ndarray, res: dict, df: int) -> np.ndarray:
    """SNPs whose fit from the warm start (``starts[0]``, the no-SNP fit's values) may not be the
    lowest minimum over ``starts`` (issue 18): it did not converge, a loading whose sign the
    starts vary ended with another sign than the warm start's (the fit crossed into another sign
    pattern's basin), or its chi-square exceeds its expectation ``df`` under the model (a poor
    fit: on synthetic SNPs every lower minimum the other starts found was behind one).  Only these
    SNPs are refit from the other starts; the others keep the warm start's fit."""
    from polgen.kernels.gwas import ST_OK

    cols = np.flatnonzero((np.sign(starts) != np.sign(starts[:1])).any(axis=0))
    trig = res["status"] != ST_OK
    if df > 0:
        with np.errstate(invalid="ignore"):
            trig |= ~(res["chisq"] <= df)
    if cols.size:
        with np.errstate(invalid="ignore"):
            trig |= (np.sign(res["est"][:, cols]) != np.sign(starts[0, cols])).any(axis=1)
    return trig


def _apply_bounds(plan: Plan, bounds: tuple[np.ndarray, np.ndarray], beta, se, var, res) -> np.ndarray:
    """Bounds (``label > number``, ``lower()`` ...) by an active set, as lavaan's constrained
    solution: SNPs whose estimate leaves an interval are refit with that parameter held at the
    bound (the others free), until no free parameter leaves its interval; a held parameter is
    released when, refit free, it stays inside and the objective does not increase.  ``res`` is
    updated in place; returns the per-SNP mask of parameters that are free (n x npar)."""
    from polgen.kernels.gwas import ST_OK

    lo, hi = bounds
    est = res["est"]
    n, npar = est.shape
    bpar = np.nonzero(np.isfinite(lo) | np.isfinite(hi))[0]
    state = np.zeros((n, bpar.size), np.int8)  # 0 free, 1 held at lower, 2 held at upper

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
            stage = Stage(plan.stage1.model, fidx, theta0[:1], plan.stage1.snpvar_par)
            outs.append(
                (sub, run_stage(plan, stage, beta[sub], se[sub], var[sub], theta0=theta0, q=plan.q_ptr is not None))
            )
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


def _defined_params(plan: Plan, se, var, res, free, ok):
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
            v = evaluate_array(expr, env)
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
    jbad = ~np.isfinite(jd).all(axis=2)  # (n, n_defined): no derivative there
    jd[~np.isfinite(jd)] = 0.0
    if free is None:
        free = np.ones((n, npar), bool)
    from polgen.kernels.gwas_defined import defined_se_batch

    d_se = defined_se_batch(
        se,
        var,
        plan.V_LD,
        plan.I_LD,
        plan.gc,
        plan.varse2,
        plan.v_pd_known,
        plan.stage1.model,
        np.nan_to_num(est),
        free,
        jd,
        ok,
    )
    d_se[jbad | ~np.isfinite(d_est)] = np.nan
    return d_est, d_se


def extract_inputs(plan: Plan, df: pl.DataFrame):
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


def compute_batch(plan: Plan, df: pl.DataFrame) -> pl.DataFrame:
    from polgen.kernels.gwas import ST_OK

    beta, se, var = extract_inputs(plan, df)
    n = df.height
    if plan.kind == "commonfactor" and plan.stage1.cf is not None:
        res = cf_stage1(plan, beta, se, var)
    elif plan.kind == "user" and plan.stage1.cfu is not None:
        res = cfu_stage1(plan, beta, se, var, run_stage)
    elif plan.lincon is not None:
        res = constrained_stage(plan, beta, se, var, run_stage)
    else:
        res = run_stage(plan, plan.stage1, beta, se, var, q=plan.kind == "user" and plan.q_ptr is not None)
    free = None
    if plan.kind == "user" and plan.bounds is not None:
        free = _apply_bounds(plan, plan.bounds, beta, se, var, res)
    if plan.kind == "user":
        plan.canonical_signs(res["est"])  # lavaan's factor signs (mirror solutions fit equally)
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
        warn = pl.select(
            pl.when(pl.lit(pl.Series(overflow))).then(pl.lit(msg)).otherwise(pl.lit(warn)).alias("warning")
        ).to_series()
    if plan.kind == "commonfactor":
        stage2 = plan.stage2
        assert stage2 is not None, "plan_commonfactor always builds the Q_SNP stage"
        if "q_wald" in res:  # DWLS: cf_stage1 fitted the Q model too (closed form)
            res2 = cf_q_result(res, ok)
        else:
            theta0 = np.zeros((n, stage2.starts.shape[1]))
            theta0[:, : plan.npar] = np.nan_to_num(res["est"])
            if plan.stage1.cf is not None:
                theta0[:, plan.npar :] = cf_q_start(plan, res["est"], beta)
            # the Q model only where stage 1 converged (its fixed values are stage 1's estimates)
            sub = np.flatnonzero(ok)
            res2 = {"status": np.full(n, -1, np.int64), "wald": np.full(n, np.nan)}
            if sub.size:
                r2 = run_stage(plan, stage2, beta[sub], se[sub], var[sub], theta0=theta0[sub])
                res2["status"][sub] = r2["status"]
                res2["wald"][sub] = r2["wald"]
        est = np.where(ok, res["est"][:, plan.est_row], np.nan)
        sev = np.where(ok, res["se"][:, plan.est_row], np.nan)
        z = est / sev
        p, l10 = normal_pvalues(z)
        Q = np.where(ok & (res2["status"] == ST_OK), res2["wald"], np.nan)
        cols = {
            "lhs": pl.Series(["F1"] * n, dtype=pl.String),
            "op": pl.Series(["~"] * n, dtype=pl.String),
            "rhs": pl.Series([plan.pred] * n, dtype=pl.String),
            "est": est,
            "se": sev,
            "z": z,
            "p": p,
            "log10p": l10,
            "Q": Q,
            "Q_df": np.full(n, len(plan.traits) - 1, np.int64),
            "Q_p": chi2_sf(Q, len(plan.traits) - 1),
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
        if bad_def.any():  # e.g. a ratio whose denominator is 0 at this SNP's estimates
            names_txt = ", ".join(d_names)
            msg = f"a defined parameter ({names_txt}) or its standard error is not finite"
            warn = pl.select(
                pl.when(pl.lit(pl.Series(bad_def)) & (pl.lit(warn) != ""))
                .then(pl.lit(warn) + pl.lit("; " + msg))
                .when(pl.lit(pl.Series(bad_def)))
                .then(pl.lit(msg))
                .otherwise(pl.lit(warn))
                .alias("warning")
            ).to_series()
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
    p, l10 = normal_pvalues(z)
    chisq = np.where(ok, res["chisq"], np.nan)
    rep = lambda a: np.repeat(a, nr)  # noqa: E731
    cols = {
        "lhs": pl.Series([r[0] for r in plan.out_rows] * n, dtype=pl.String),
        "op": pl.Series([r[1] for r in plan.out_rows] * n, dtype=pl.String),
        "rhs": pl.Series([r[2] for r in plan.out_rows] * n, dtype=pl.String),
        "est": est,
        "se": sev,
        "z": z,
        "p": p,
        "log10p": l10,
        "chisq": rep(chisq),
        "chisq_df": np.full(n * nr, plan.df, np.int64),
        "chisq_p": rep(chi2_sf(chisq, plan.df) if plan.df > 0 else np.full(n, np.nan)),
        "AIC": rep(chisq + 2.0 * (plan.npar - plan.n_eq)),
    }
    if plan.q_ptr is not None:
        qv = np.full((n, nr), np.nan)
        qd = np.full(nr, -1, np.int64)
        for j, g in plan.q_rows.items():
            qv[:, j] = np.where(ok, res["qsnp"][:, g], np.nan)
            qd[j] = plan.q_df[g]
        q_flat = qv.reshape(-1)  # SNP-major, as the output rows
        qdf = np.tile(qd, n)
        qp = np.full(n * nr, np.nan)
        m = qdf > 0
        if m.any():
            qp[m] = chi2_sf(q_flat[m], qdf[m])
        cols["Q_SNP"] = q_flat
        cols["Q_SNP_df"] = (
            pl.Series(np.where(qdf >= 0, qdf, 0), dtype=pl.Int64).set(pl.Series(qdf < 0), None)
            if (qdf < 0).any()
            else qdf
        )
        cols["Q_SNP_p"] = qp
    if plan.smooth_check:
        cols["Z_smooth"] = rep(res["zsmooth"])
    cols["converged"] = rep(ok)
    cols["warning"] = warn.gather(np.repeat(np.arange(n), nr)) if nr > 1 else warn
    idx = np.repeat(np.arange(n), nr)
    return pl.concat([ids[idx], pl.DataFrame(cols)], how="horizontal")
