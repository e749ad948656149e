"""ML on the Genomic SEM GWAS fast path (kernels/gwas_fast.py ``_fit_fast_ml``: the objective split
into the SNP variance and the traits given the SNP, Newton's method on the latter).

Checked against two independent references: a dense numpy Fisher scoring on the full ML objective
(Sigma(theta) written out from the model, Jacobian by central differences, run to machine
precision), and the batch kernel's RAM fit (``fast=None``: Fisher scoring over the RAM layout, no
fast-path code), on a one-factor model (one SNP path) and a two-factor model (two SNP paths and a
free factor covariance: off-diagonal moments of the traits' covariance given the SNP).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from polgen.gsem.gwas_batch import extract_inputs
from polgen.gsem.gwas_plan import plan_user, resolve_columns
from polgen.kernels.gwas import gwas_batch

ONE = "F1 =~ NA*T1 + T2 + T3\nF1 ~ SNP\nF1 ~~ 1*F1\nSNP ~~ SNP"
TWO = "F1 =~ NA*T1 + T2 + T3\nF2 =~ NA*T4 + T5\nF1 ~~ 1*F1\nF2 ~~ 1*F2\nF1 ~~ F2\nF1 ~ SNP\nF2 ~ SNP\nSNP ~~ SNP"


def _covstruc(k: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    lam = rng.uniform(0.3, 0.6, k)
    S = np.outer(lam, lam) + np.diag(rng.uniform(0.05, 0.15, k))
    S[0, 1] = S[1, 0] = S[0, 1] * 1.15  # misfit: the residuals are not zero
    kst = k * (k + 1) // 2
    A = rng.normal(0, 1, (kst, kst))
    V = 1e-4 * (np.eye(kst) * 5 + A @ A.T / kst)
    I = np.eye(k) + 0.01 * (np.ones((k, k)) - np.eye(k))
    return {"S": S.tolist(), "V": V.tolist(), "I": I.tolist(), "trait_names": [f"T{i + 1}" for i in range(k)]}


def _sumstats(k: int, n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    se = rng.uniform(0.01, 0.05, (n, k))
    z = 0.6 * rng.normal(0, 1, (n, 1)) + 0.8 * rng.normal(0, 1, (n, k))
    z[: n // 10] *= 6.0  # some strong SNPs
    cols = {"SNP": [f"rs{i}" for i in range(n)], "MAF": rng.uniform(0.01, 0.5, n)}
    for j in range(k):
        cols[f"beta.T{j + 1}"] = z[:, j] * se[:, j]
        cols[f"se.T{j + 1}"] = se[:, j]
    return pl.DataFrame(cols)


def _setup(model: str, k: int, n: int, seed: int):
    df = _sumstats(k, n, seed)
    plan = plan_user(
        df.schema,
        _covstruc(k, seed),
        model,
        "ML",
        "standard",
        True,
        False,
        False,
        False,
        0.0005,
        False,
        None,
        None,
        None,
    )
    plan.beta_cols, plan.se_cols, plan.id_cols, plan.var_col = resolve_columns(dict(df.schema), plan.traits, plan.twas)
    beta, se, var = extract_inputs(plan, df)
    return plan, beta, se, var


def _batch(plan, beta, se, var, fast: bool) -> dict:
    st = plan.stage1
    assert st.fast is not None
    return gwas_batch(
        beta, se, var, *plan.ld_args(), st.model, st.fidx, st.starts, st.snpvar_par,
        ml=True, ml_wmode=plan.ml_wmode, toler=plan.toler, wald_idx=st.wald_idx,
        fast=st.fast if fast else None, eliminate=plan.eliminate, parallel=False,
    )  # fmt: skip


def _dense_model(plan, beta_i: np.ndarray, v: float):
    """The observed S (dense) of one SNP and Sigma(theta) = B S B' from the model's RAM entries
    (dense inverse), in numpy."""
    m = plan.stage1.model
    nv, p, ma, mb = int(m["nv"]), int(m["p"]), np.asarray(m["ma"]), np.asarray(m["mb"])
    kind, er, ec, ep, ev = (np.asarray(m[x]) for x in ("ent_kind", "ent_r", "ent_c", "ent_par", "ent_val"))
    k = beta_i.shape[0]
    Sfull = np.empty((k + 1, k + 1))
    Sfull[0, 0] = v
    Sfull[1:, 0] = Sfull[0, 1:] = v * beta_i
    Sfull[1:, 1:] = plan.S_LD
    om = np.asarray(m["obs_map"])
    Sobs = Sfull[np.ix_(om, om)]
    s = Sobs[ma, mb]

    def sigma(th):
        val = np.where(ep >= 0, th[np.maximum(ep, 0)], ev)
        A, Sm = np.zeros((nv, nv)), np.zeros((nv, nv))
        for e in range(len(kind)):
            if kind[e] == 0:
                A[er[e], ec[e]] = val[e]
            else:
                Sm[er[e], ec[e]] = Sm[ec[e], er[e]] = val[e]
        B = np.linalg.inv(np.eye(nv) - A)
        return (B @ Sm @ B.T)[:p, :p]

    return Sobs, s, sigma


def _score_step(plan, beta_i: np.ndarray, v: float, theta: np.ndarray) -> np.ndarray:
    """The Fisher-scoring step of F = log|Sigma| + tr(S Sigma^-1) at ``theta``, in numpy,
    Jacobian by central differences; zero at a stationary point of F."""
    m = plan.stage1.model
    ma, mb = np.asarray(m["ma"]), np.asarray(m["mb"])
    fidx = np.asarray(plan.stage1.fidx)
    _, s, sigma = _dense_model(plan, beta_i, v)
    th = theta.copy()
    hh = np.where(ma == mb, 0.5, 1.0)
    Sg = sigma(th)
    P = np.linalg.inv(Sg)
    J = np.empty((len(ma), len(fidx)))
    for j, q in enumerate(fidx):
        h = 1e-6 * max(abs(th[q]), 1e-3)
        e = np.zeros_like(th)
        e[q] = h
        J[:, j] = (sigma(th + e)[ma, mb] - sigma(th - e)[ma, mb]) / (2 * h)
    W = (P[np.ix_(ma, ma)] * P[np.ix_(mb, mb)] + P[np.ix_(ma, mb)] * P[np.ix_(mb, ma)]) * np.outer(hh, hh)
    return np.linalg.solve(J.T @ W @ J, J.T @ W @ (s - Sg[ma, mb]))


@pytest.mark.parametrize("model,k", [(ONE, 3), (TWO, 5)])
def test_fast_ml_solves_the_dense_score_equations(model, k):
    plan, beta, se, var = _setup(model, k, 60, seed=k)
    r = _batch(plan, beta, se, var, fast=True)
    assert (r["status"] == 0).all()
    assert r["iters"].mean() < 4.0  # Newton from the GLS start: 2-3 iterations
    free = plan.stage1.fidx
    for i in range(0, 60, 2):  # strong SNPs (large misfit) first
        step = _score_step(plan, beta[i], var[i], r["est"][i])
        # 1e-6: the central-difference Jacobian's rounding times the large residuals of strong SNPs
        assert np.max(np.abs(step) / r["se"][i, free]) < 1e-6, i


@pytest.mark.parametrize("model,k", [(ONE, 3), (TWO, 5)])
def test_fast_ml_matches_ram_fit(model, k):
    plan, beta, se, var = _setup(model, k, 300, seed=10 + k)
    a = _batch(plan, beta, se, var, fast=True)
    b = _batch(plan, beta, se, var, fast=False)
    np.testing.assert_array_equal(a["status"], b["status"])
    assert (a["status"] == 0).mean() > 0.9
    ok = a["status"] == 0
    free = plan.stage1.fidx
    scale = b["se"][ok][:, free]
    # the RAM fit's Fisher scoring stops on a relative objective change of 1e-13: for strong SNPs
    # (large misfit, slow linear convergence) that leaves up to ~2e-5 of an SE; its minimum is
    # never lower than the fast path's
    d_est = np.max(np.abs(a["est"][ok][:, free] - b["est"][ok][:, free]) / scale)
    d_se = np.max(np.abs(a["se"][ok][:, free] - scale) / scale)
    assert d_est < 1e-4 and d_se < 1e-4, (d_est, d_se)
    assert np.all(a["fmin"][ok] <= b["fmin"][ok] + 1e-13 * np.abs(b["fmin"][ok]) + 1e-14)
    np.testing.assert_allclose(a["chisq"][ok], b["chisq"][ok], rtol=1e-3)
    weak = ok & (np.arange(len(ok)) >= len(ok) // 10)  # the SNPs of ordinary strength
    d_weak = np.max(np.abs(a["est"][weak][:, free] - b["est"][weak][:, free]) / b["se"][weak][:, free])
    assert d_weak < 1e-6, d_weak


@pytest.mark.parametrize("model,k", [(ONE, 3), (TWO, 5)])
def test_fast_ml_fmin_is_the_ml_objective_at_the_estimates(model, k):
    """``fmin`` comes from the fast fit itself (no RAM objective after it): equal to
    log|Sigma| + tr(S Sigma^-1) - log|S| - p evaluated densely at the estimates."""
    plan, beta, se, var = _setup(model, k, 40, seed=20 + k)
    r = _batch(plan, beta, se, var, fast=True)
    assert (r["status"] == 0).all()
    plain = np.flatnonzero(r["flags"] == 0)  # S_full positive definite (no nearPD: the dense S is the fit's)
    assert plain.size >= 30
    for i in plain:
        Sobs, _, sigma = _dense_model(plan, beta[i], var[i])
        Sg = sigma(r["est"][i])
        p = Sg.shape[0]
        f = np.linalg.slogdet(Sg)[1] + np.trace(Sobs @ np.linalg.inv(Sg)) - np.linalg.slogdet(Sobs)[1] - p
        assert abs(r["fmin"][i] - f) <= 1e-10 * max(abs(f), 1e-3), (i, r["fmin"][i], f)
