"""Genomic SEM GWAS, R ``commonfactorGWAS``'s model: plan, DWLS stage 1, Q model.

The model is R's (``F1 =~`` every trait with the first loading fixed to 1, ``F1 ~ SNP``,
``trait ~ 0*SNP``).  Under DWLS stage 1 is fit by variable projection
(:func:`polgen.kernels.gwas.commonfactor_fit`: the SNP variance, ``F1 ~ SNP`` times the factor
variance and the factor variance in closed form for given loadings, only the k-1 free loadings
iterated) from the no-SNP loadings and the best-scoring sign patterns and loading directions; the
lowest objective wins.  SEs, smoothing flags and ``Z_smooth`` come from the general kernel at that
solution.  ``Q`` is the Wald statistic of the direct SNP effects freed in a second model (stage 2)
whose other parameters are fixed at stage 1's estimates, ``Q_df = k - 1``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from polgen.gsem.baseline_fit import fit_baseline
from polgen.gsem.constraints import number_parameters
from polgen.gsem.gwas_plan import (
    Plan,
    Stage,
    common_setup,
    plan_base,
    r_ml_meat,
)
from polgen.gsem.gwas_starts import CF_DIRECTIONS, cf_starts, sign_starts, start_values
from polgen.gsem.ram import Numbering, kernel_layout
from polgen.gsem.syntax import ParTable, parse_model

log = logging.getLogger("polgen")

__all__ = [
    "CF_DIRECTIONS",
    "CF_LM_RUNS",
    "CF_TRIGGER",
    "cf_q_result",
    "cf_q_start",
    "cf_stage1",
    "commonfactor_gwas_model",
    "plan_commonfactor",
]


def commonfactor_gwas_model(traits: Sequence[str], pred: str = "SNP") -> str:
    """The model R's commonfactorGWAS writes: F1 =~ all traits, F1 ~ SNP, trait ~ 0*SNP."""
    lines = ["F1 =~ " + " + ".join(traits), f"F1 ~ {pred}"]
    lines += [f"{t} ~ 0*{pred}" for t in traits]
    return "\n".join(lines)


CF_LM_RUNS = 1  # fits per SNP always run: the warm start
#: further fits from the best-scoring starts while one scores below the best converged objective
#: times 1 + CF_TRIGGER (a lower basin may be there; issue 18: the old fixed CF_LM_RUNS = 6 fits
#: missed more lowest minima of the full 255-start search, at twice the time)
CF_TRIGGER = 0.1
CF_LM_RUNS_FALLBACK = 6  # the earlier rule, for SNPs whose lowest minimum is singular


def _cf_structure(
    pt: ParTable,
    num: Numbering,
    traits: list[str],
    pred: str,
    S_LD: np.ndarray,
    base: dict | None,
    qfidx: np.ndarray,
) -> dict:
    """Starts and parameter numbers for :func:`polgen.kernels.gwas.commonfactor_fit`.

    The per-SNP surface can have several local minima (they differ in the signs and the relative
    sizes of the loadings).  The kernel scores every start by its objective (``phi`` and
    ``c = b v`` projected out) and fits from the warm start (the no-SNP common-factor loadings)
    and the ``CF_LM_RUNS - 1`` best-scoring others; the lowest objective wins.  Starts: the
    warm start, its sign patterns at scales 1, 0.3 and 3, lavaan's default (loadings 1) and a
    fixed set of loading directions."""
    k = len(traits)
    key = {(r.lhs, r.op, r.rhs): q for r, q in zip(pt.rows, num.par.tolist())}
    pidx = (
        [key[("F1", "=~", t)] for t in traits[1:]]
        + [key[("F1", "~", pred)]]
        + [key[(t, "~~", t)] for t in traits]
        + [key[("F1", "~~", "F1")], key[(pred, "~~", pred)]]
    )
    # the Q model's free parameters (direct effects, then residual variances): the column of each
    # trait's g_t and th_t among them (kernels/commonfactor_se.py)
    qpos = {int(q): c for c, q in enumerate(qfidx.tolist())}
    qcol = [c for c, q in enumerate(qfidx.tolist()) if q >= num.n]
    qcol += [qpos[key[(t, "~~", t)]] for t in traits]
    if base is not None:
        lam = np.array([base[("F1", "=~", t)] for t in traits[1:]], dtype=np.float64)
        phi = float(base[("F1", "~~", "F1")])
    else:
        lam, phi = np.ones(k - 1), 0.05
    starts = cf_starts(lam, phi, k)
    return {
        "starts": starts,
        "pidx": np.array(pidx, np.int64),
        "qcol": np.array(qcol, np.int64),
        "n_always": CF_LM_RUNS,
        "trigger": CF_TRIGGER,
    }


def cf_stage1(plan: Plan, beta, se, var) -> dict:
    """commonfactorGWAS stage 1 under DWLS: the estimates from the reduced problem
    (:func:`polgen.kernels.gwas.commonfactor_fit`), then the SE of ``F1 ~ SNP`` (the one
    commonfactor_gwas reports; the other columns of ``se`` are NaN), chi-square, smoothing flags,
    ``Z_smooth`` and the Q model's Wald statistic (``q_wald``, ``q_status``; see
    :func:`cf_q_result`) at those estimates in closed form
    (:func:`polgen.kernels.commonfactor_se.commonfactor_se_q`; SNPs whose V_full needs nearPD
    through the general kernel, :func:`_cf_general`).  A SNP
    whose lowest minimum has a singular information matrix is refit by the earlier rule (the warm
    start and the ``CF_LM_RUNS_FALLBACK - 1`` best-scoring other starts, lowest objective)."""
    from polgen.kernels.gwas import ST_SINGULAR

    cf = plan.stage1.cf
    assert cf is not None, "called only for a stage with the reduced problem (DWLS commonfactor)"
    res = _cf_stage1_rule(plan, beta, se, var, cf["n_always"], cf["trigger"])
    redo = np.flatnonzero(res["status"] == ST_SINGULAR)
    if redo.size:
        alt = _cf_stage1_rule(plan, beta[redo], se[redo], var[redo], CF_LM_RUNS_FALLBACK, -1.0)
        take = alt["status"] != ST_SINGULAR
        for key, arr in alt.items():
            res[key][redo[take]] = arr[take]
    return res


def _cf_stage1_rule(plan: Plan, beta, se, var, n_always: int, trigger: float) -> dict:
    from polgen.kernels.commonfactor_se import ST_CF_GENERAL, commonfactor_se_q
    from polgen.kernels.gwas import ST_OK, commonfactor_fit

    st = plan.stage1
    cf = st.cf
    assert cf is not None, "called only for a stage with the reduced problem (DWLS commonfactor)"
    theta, fmin, status, iters = commonfactor_fit(
        beta,
        se,
        var,
        *plan.ld_args(),
        cf["starts"],
        cf["pidx"],
        st.starts.shape[1],
        n_always=n_always,
        trigger=trigger,
    )
    ok = status == ST_OK
    # SEs, chi-square, smoothing flags and the Q model at the reduced fit's solution (closed
    # forms of the general kernel's numbers, kernels/commonfactor_se.py); the reduced fit checks
    # the input as the general kernel does: its status stands where it did not converge, where
    # it did a singular information matrix still fails the SNP
    out = commonfactor_se_q(
        beta,
        se,
        var,
        *plan.ld_args(),
        np.where(ok[:, None], theta, 0.0),
        status,
        cf["pidx"],
        cf["qcol"],
        toler=plan.toler,
        smooth_check=plan.smooth_check,
        se_par=[plan.est_row],
    )
    n = beta.shape[0]
    res = {
        "est": np.where(ok[:, None], theta, np.nan),
        "se": out["se"],
        "chisq": out["chisq"],
        "qsnp": np.empty((n, 0)),
        "zsmooth": out["zsmooth"],
        "wald": np.full(n, np.nan),
        "fmin": np.where(ok, fmin, np.nan),
        "status": out["status"],
        "flags": out["flags"],
        "iters": iters,
        "q_wald": out["wald"],
        "q_status": out["qstatus"],
    }
    redo = np.flatnonzero(out["status"] == ST_CF_GENERAL)
    if redo.size:  # V_full not positive definite: the general kernel (nearPD) on these rows
        gen = _cf_general(plan, beta[redo], se[redo], var[redo], theta[redo], status[redo], fmin[redo])
        for key, arr in gen.items():
            res[key][redo] = arr
    return res


def _cf_general(plan: Plan, beta, se, var, theta, status, fmin) -> dict:
    """:func:`_cf_stage1_rule`'s numbers from the general kernel (SEs at the reduced fit's solution
    with ``max_iter=0``, the Q model by its LM fit from :func:`cf_q_start`)."""
    from polgen.kernels.gwas import ST_OK, gwas_batch

    st = plan.stage1
    st2 = plan.stage2
    assert st2 is not None, "plan_commonfactor always builds the Q_SNP stage"
    ok = status == ST_OK
    th0 = np.where(ok[:, None], theta, st.starts[0][None, :])
    kw = dict(toler=plan.toler, smooth_check=plan.smooth_check)
    res = gwas_batch(
        beta, se, var, *plan.ld_args(), st.model, st.fidx, np.ascontiguousarray(th0), st.snpvar_par, max_iter=0, **kw
    )
    res["status"] = np.where(ok, res["status"], status)
    res["est"][~ok] = np.nan
    res["se"][~ok] = np.nan
    res["fmin"] = np.where(ok, fmin, np.nan)
    del res["iters"]
    n = beta.shape[0]
    res["q_wald"] = np.full(n, np.nan)
    res["q_status"] = res["status"].copy()
    sub = np.flatnonzero(res["status"] == ST_OK)
    if sub.size:
        theta0 = np.zeros((sub.size, st2.starts.shape[1]))
        theta0[:, : plan.npar] = res["est"][sub]
        theta0[:, plan.npar :] = cf_q_start(plan, res["est"][sub], beta[sub])
        r2 = gwas_batch(
            beta[sub], se[sub], var[sub], *plan.ld_args(), st2.model, st2.fidx, theta0, -1, wald_idx=st2.wald_idx, **kw
        )
        res["q_wald"][sub] = r2["wald"]
        res["q_status"][sub] = r2["status"]
    return res


def cf_q_result(res: dict, ok: np.ndarray) -> dict:
    """The Q model's ``status`` (-1 where stage 1 is not ``ok``) and Wald statistic ``wald``, as
    :func:`cf_stage1` computed them (the Q model of commonfactorGWAS, closed form)."""
    return {
        "status": np.where(ok, res["q_status"], -1).astype(np.int64),
        "wald": np.where(ok, res["q_wald"], np.nan),
    }


def cf_q_start(plan: Plan, est: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Start of the direct SNP effects in commonfactorGWAS's Q model: the values that fit the
    SNP-trait covariances exactly, ``beta_i - l_i b``."""
    cf = plan.stage1.cf
    assert cf is not None, "called only for a stage with the reduced problem (DWLS commonfactor)"
    pidx = cf["pidx"]
    k = len(plan.traits)
    lam = np.ones((est.shape[0], k))
    lam[:, 1:] = est[:, pidx[: k - 1]]
    g = beta - lam * est[:, pidx[k - 1]][:, None]
    return np.nan_to_num(g)


def plan_commonfactor(schema, covstruc, estimation, GC, smooth_check, SNPSE, TWAS, toler, ml_se="R") -> Plan:
    cs, gc, varse2, tol, I = common_setup(covstruc, GC, SNPSE, toler, estimation)
    traits = list(cs.trait_names)
    pred = "Gene" if TWAS else "SNP"
    ml = estimation == "ML"
    S_LD = np.array(cs.S, dtype=np.float64)
    V_LD = np.array(cs.V, dtype=np.float64)
    text = commonfactor_gwas_model(traits, pred)
    pt = parse_model(text, fixed_x=False)
    num = number_parameters(pt)
    npar = num.n
    par = num.par.tolist()
    cm = kernel_layout(pt, num, traits, snp_name=pred)
    base = None
    try:
        _, _, base = fit_baseline("F1 =~ " + " + ".join(traits), S_LD, V_LD, traits, std_lv=False, ml=ml)
    except Exception as exc:  # noqa: BLE001 - starts only
        log.info("no baseline starts (%s); using default start values", exc)
    th = start_values(pt, num, S_LD, traits, baseline=base)
    # lavaan's start for residual variances / factor variance (not the baseline's Heywood values)
    for r, q in zip(pt.rows, par):
        if q >= 0 and r.op == "~~" and r.lhs == r.rhs:
            th[q] = 0.5 * S_LD[traits.index(r.lhs), traits.index(r.lhs)] if r.lhs in traits else 0.05
    starts = sign_starts(pt, num, th)
    snpvar = [q for r, q in zip(pt.rows, par) if r.op == "~~" and r.lhs == pred and r.rhs == pred][0]
    arrays = cm.arrays()
    if ml and ml_se == "R":
        arrays["vidx_meat"] = r_ml_meat(cm, pt.observed, pred, traits)
    stage1 = Stage(arrays, np.arange(npar, dtype=np.int64), starts, snpvar)
    # stage 2 (Q): direct effects free (new parameters), residual variances free, rest fixed
    numq = num.copy()
    dq = []
    nq = npar
    for i, r in enumerate(pt.rows):
        if r.op == "~" and r.rhs == pred and r.lhs in traits:
            numq.par[i] = nq
            dq.append(nq)
            nq += 1
    numq.n = nq
    rv = [q for r, q in zip(pt.rows, par) if r.op == "~~" and r.lhs == r.rhs and r.lhs in traits]
    cmq = kernel_layout(pt, numq, traits, snp_name=pred)
    arrays_q = cmq.arrays()
    if ml and ml_se == "R":
        arrays_q["vidx_meat"] = r_ml_meat(cmq, pt.observed, pred, traits)
    stage2 = Stage(arrays_q, np.array(dq + rv, np.int64), np.zeros((1, nq)), -1, np.arange(len(dq), dtype=np.int64))
    if not ml:
        stage1.cf = _cf_structure(pt, num, traits, pred, S_LD, base, stage2.fidx)
    bpar = [q for r, q in zip(pt.rows, par) if r.op == "~" and r.lhs == "F1" and r.rhs == pred][0]
    return Plan(
        **plan_base("commonfactor", traits, pred, TWAS, S_LD, V_LD, I, gc, varse2, tol, ml, smooth_check),
        stage1=stage1,
        stage2=stage2,
        out_rows=[("F1", "~", pred, bpar, np.nan)],
        q_ptr=None,
        q_obs=None,
        q_trait=None,
        q_rows={},
        q_df=[],
        df=len(cm.ma) - npar,
        npar=npar,
        est_row=bpar,
    )
