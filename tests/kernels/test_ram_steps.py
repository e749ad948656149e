"""The secant (quasi-Newton) steps of the RAM fit (kernels/ram_steps.py, ``_fit_one``'s ``qn``).

Checked against their definitions: the Dennis-Gay-Welsch update satisfies the secant equation
S2 s = y# and stays symmetric; a fit with secant steps reaches the same minimum as plain
Gauss-Newton (a stationary point of the dense numpy objective, gradient by central differences)
in fewer iterations where the model does not fit, and in as few where it fits exactly.
"""

from __future__ import annotations

import numpy as np

from polgen.kernels.ram_fit import fit_cov
from polgen.kernels.ram_steps import _secant_update, qn_rows

P, NV = 4, 5  # x1..x4 observed, F latent
# (kind, row, col, parameter, value): A[i, F] = loading i; S[F, F] = 1; S[i, i] = residual i
ENTRIES = [(0, i, 4, i, 0.0) for i in range(P)] + [(1, 4, 4, -1, 1.0)] + [(1, i, i, 4 + i, 0.0) for i in range(P)]
NPAR = 8


def _model() -> dict:
    e = np.array(ENTRIES, dtype=np.float64)
    kind, er, ec, ep = (e[:, i].astype(np.int64) for i in range(4))
    order = np.argsort(ep, kind="stable")
    par_ent = np.array([i for i in order if ep[i] >= 0], np.int64)
    par_ptr = np.zeros(NPAR + 1, np.int64)
    par_ptr[1:] = np.cumsum(np.bincount(ep[ep >= 0], minlength=NPAR))
    ma = np.array([a for b in range(P) for a in range(b, P)], np.int64)
    mb = np.array([b for b in range(P) for a in range(b, P)], np.int64)
    return dict(nv=NV, p=P, ent_kind=kind, ent_r=er, ent_c=ec, ent_par=ep, ent_val=np.ascontiguousarray(e[:, 4]),
                ma=ma, mb=mb, par_ptr=par_ptr, par_ent=par_ent)  # fmt: skip


def _objective(theta, m, s_vec, w) -> float:
    lam, psi = theta[:P], theta[P:]
    sig = np.outer(lam, lam) + np.diag(psi)
    r = s_vec - sig[m["ma"], m["mb"]]
    return float(np.sum(w * r * r))


def _gradient(theta, m, s_vec, w) -> np.ndarray:
    g = np.empty(NPAR)
    for q in range(NPAR):
        h = 1e-6 * max(abs(theta[q]), 1e-2)
        e = np.zeros(NPAR)
        e[q] = h
        g[q] = (_objective(theta + e, m, s_vec, w) - _objective(theta - e, m, s_vec, w)) / (2 * h)
    return g


def test_secant_update_solves_the_secant_equation():
    rng = np.random.default_rng(3)
    nf, nmom = 4, 7
    qb = nmom + nf
    qn = np.zeros((qn_rows(nmom, nf), nf))
    A = rng.normal(size=(nf, nf))
    qn[nmom : nmom + nf] = 0.1 * (A + A.T)  # S2 before
    qn[:nmom] = rng.normal(size=(nmom, nf))  # J at the step's start
    J = qn[:nmom] + 0.05 * rng.normal(size=(nmom, nf))
    s = rng.normal(size=nf)
    g = rng.normal(size=nf)
    qn[qb + 1] = s
    qn[qb] = g + 0.7 * s  # y = g0 - g with y's > 0
    qn[qb + 5, 0] = 1.0
    w = rng.uniform(0.5, 2.0, nmom)
    resid = rng.normal(size=nmom)
    _secant_update(nf, nmom, J, w, resid, g, qn)
    S2 = qn[nmom : nmom + nf]
    ysharp = -(J - qn[:nmom]).T @ (w * resid)
    np.testing.assert_allclose(S2 @ s, ysharp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(S2, S2.T, atol=1e-14)
    assert qn[qb + 5, 0] == 0.0  # the pair is used up


def _case(m, lam0: float, misfit: float):
    """vech(S) of a one-factor covariance plus a second factor behind x1, x2 (``misfit``), with the
    GWAS kernel's projection: the residual variances solved in closed form, i.e. zero weight on
    the variances and only the loadings iterated."""
    lam = lam0 * np.array([1.0, 0.9, 0.8, 0.7])
    Sg = np.outer(lam, lam) + np.diag([0.5, 0.6, 0.7, 0.8])
    Sg[0, 1] = Sg[1, 0] = Sg[0, 1] + misfit
    Sg[2, 3] = Sg[3, 2] = Sg[2, 3] - 0.5 * misfit
    s_vec = Sg[m["ma"], m["mb"]].copy()
    w = np.linspace(1.0, 3.0, len(s_vec))
    w[m["ma"] == m["mb"]] = 0.0
    return s_vec, w


def test_secant_fit_reaches_the_gauss_newton_minimum_in_fewer_iterations():
    m = _model()
    fidx = np.arange(P, dtype=np.int64)
    theta0 = np.r_[np.full(P, 0.5), np.zeros(P)]
    its = {"gn": 0, "qn": 0}
    for lam0 in (0.4, 0.25, 0.15):
        for misfit in (0.25, 0.4):
            s_vec, w = _case(m, lam0, misfit)
            gn, st_gn, it_gn, _ = fit_cov(s_vec, w, m, fidx, theta0, max_iter=2000)
            qn, st_qn, it_qn, _ = fit_cov(s_vec, w, m, fidx, theta0, max_iter=2000, secant=True)
            assert st_gn == 0 and st_qn == 0
            # Gauss-Newton's linear crawl stops (relative objective change 1e-13) up to ~2e-7 short
            np.testing.assert_allclose(qn, gn, atol=1e-6)
            g_qn = np.max(np.abs(_gradient(qn, m, s_vec, w)[:P]))  # central differences: ~1e-8 noise
            assert g_qn < 1e-7, (lam0, misfit, g_qn)
            its["gn"] += it_gn
            its["qn"] += it_qn
    assert its["qn"] < 0.8 * its["gn"], its  # 53 against 75 when written


def test_secant_fit_of_a_model_that_fits():
    m = _model()
    fidx = np.arange(P, dtype=np.int64)
    theta0 = np.r_[np.full(P, 0.5), np.zeros(P)]
    s_vec, w = _case(m, 0.6, 0.0)
    gn, _, it_gn, _ = fit_cov(s_vec, w, m, fidx, theta0, max_iter=2000)
    qn, st, it_qn, _ = fit_cov(s_vec, w, m, fidx, theta0, max_iter=2000, secant=True)
    assert st == 0 and it_qn <= it_gn + 1
    np.testing.assert_allclose(qn[:P], 0.6 * np.array([1.0, 0.9, 0.8, 0.7]), rtol=1e-9)
    np.testing.assert_allclose(qn, gn, atol=1e-10)
