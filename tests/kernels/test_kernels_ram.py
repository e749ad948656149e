"""polgen.kernels.ram: the one RAM implied-covariance kernel (Sigma and d vech(Sigma)/d theta)
against a dense numpy computation (analytic and finite differences)."""

from __future__ import annotations

import numpy as np
import pytest

from polgen.kernels.ram import implied_jacobian, implied_jacobian_into

# variables: 0 SNP, 1..4 T1..T4 (observed, p = 5), 5 F1, 6 F2 (nv = 7)
P, NV = 5, 7
# (kind, row, col, par, fixed value): kind 0 = A[row, col] (path col -> row), 1 = S (symmetric)
ENTRIES = [
    (0, 1, 5, -1, 1.0),  # T1 <- 1*F1
    (0, 2, 5, 0, 0.0),  # T2 <- a*F1
    (0, 3, 5, 0, 0.0),  # T3 <- a*F1 (shared label: one parameter, two entries)
    (0, 3, 6, 1, 0.0),  # T3 <- F2
    (0, 4, 6, 2, 0.0),  # T4 <- F2
    (0, 6, 5, 3, 0.0),  # F2 <- F1
    (0, 5, 0, 4, 0.0),  # F1 <- SNP
    (1, 0, 0, 5, 0.0),  # SNP ~~ SNP
    (1, 5, 5, -1, 1.0),  # F1 ~~ 1*F1
    (1, 6, 6, 6, 0.0),  # F2 ~~ F2
    (1, 1, 1, 7, 0.0),
    (1, 2, 2, 8, 0.0),
    (1, 3, 3, 9, 0.0),
    (1, 4, 4, 10, 0.0),
    (1, 2, 1, 11, 0.0),  # T2 ~~ T1 (off-diagonal, written lower-first)
]
NPAR = 12


def _layout():
    e = np.array(ENTRIES, dtype=np.float64)
    kind, er, ec, ep = (e[:, i].astype(np.int64) for i in range(4))
    ev = np.ascontiguousarray(e[:, 4])
    order = np.argsort(ep, kind="stable")
    par_ent = np.array([i for i in order if ep[i] >= 0], np.int64)
    par_ptr = np.zeros(NPAR + 1, np.int64)
    par_ptr[1:] = np.cumsum(np.bincount(ep[ep >= 0], minlength=NPAR))
    ma = np.array([a for b in range(P) for a in range(b, P)], np.int64)
    mb = np.array([b for b in range(P) for a in range(b, P)], np.int64)
    return {
        "nv": NV,
        "p": P,
        "ent_kind": kind,
        "ent_r": er,
        "ent_c": ec,
        "ent_par": ep,
        "ent_val": ev,
        "ma": ma,
        "mb": mb,
        "par_ptr": par_ptr,
        "par_ent": par_ent,
    }


def _dense(theta, lay):
    """Sigma (p x p) and the analytic Jacobian in plain numpy (dense matrix algebra)."""
    A = np.zeros((NV, NV))
    S = np.zeros((NV, NV))
    dA = np.zeros((NPAR, NV, NV))
    dS = np.zeros((NPAR, NV, NV))
    for k, r, c, q, v in ENTRIES:
        val = v if q < 0 else theta[q]
        if k == 0:
            A[r, c] = val
            if q >= 0:
                dA[q, r, c] += 1.0
        else:
            S[r, c] = S[c, r] = val
            if q >= 0:
                dS[q, r, c] = dS[q, c, r] = 1.0
    B = np.linalg.inv(np.eye(NV) - A)
    C = B @ S @ B.T
    jac = np.empty((len(lay["ma"]), NPAR))
    for q in range(NPAR):
        X = B @ dA[q] @ C
        dC = X + X.T + B @ dS[q] @ B.T
        jac[:, q] = dC[lay["ma"], lay["mb"]]
    return C[:P, :P], jac


def _theta(seed):
    rng = np.random.default_rng(seed)
    th = rng.uniform(0.2, 0.8, NPAR)
    th[11] = 0.05
    return th


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_implied_jacobian_matches_dense_numpy(seed):
    lay = _layout()
    th = _theta(seed)
    sig, jac = implied_jacobian(lay, th)
    s_np, j_np = _dense(th, lay)
    np.testing.assert_allclose(sig, s_np, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sig, sig.T, rtol=0, atol=0)
    np.testing.assert_allclose(jac, j_np, rtol=1e-12, atol=1e-14)


def test_implied_jacobian_matches_finite_differences():
    lay = _layout()
    th = _theta(5)
    _, jac = implied_jacobian(lay, th)
    h = 1e-6
    fd = np.empty_like(jac)
    for q in range(NPAR):
        tp, tm = th.copy(), th.copy()
        tp[q] += h
        tm[q] -= h
        sp, sm = _dense(tp, lay)[0], _dense(tm, lay)[0]
        fd[:, q] = (sp - sm)[lay["ma"], lay["mb"]] / (2 * h)
    np.testing.assert_allclose(jac, fd, rtol=1e-6, atol=1e-9)


def test_nopython_entry_writes_into_outputs_and_model_object():
    lay = _layout()
    th = _theta(3)
    sig = np.full((P, P), -1.0)
    jac = np.full((len(lay["ma"]), NPAR), -1.0)
    ok = implied_jacobian_into(
        th,
        lay["ent_kind"],
        lay["ent_r"],
        lay["ent_c"],
        lay["ent_par"],
        lay["ent_val"],
        NV,
        P,
        lay["ma"],
        lay["mb"],
        lay["par_ptr"],
        lay["par_ent"],
        sig,
        jac,
    )
    assert ok
    s_np, j_np = _dense(th, lay)
    np.testing.assert_allclose(sig, s_np, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(jac, j_np, rtol=1e-12, atol=1e-14)

    class Model:  # attribute access, as CompiledModel offers it
        pass

    m = Model()
    for k, v in lay.items():
        setattr(m, k, v)
    sig2, jac2 = implied_jacobian(m, th)
    np.testing.assert_array_equal(sig2, sig)
    np.testing.assert_array_equal(jac2, jac)


def test_singular_i_minus_a_gives_nan():
    lay = _layout()
    # F2 <- F1 and F1 <- F2 with unit paths: I - A singular
    lay["ent_kind"] = np.append(lay["ent_kind"], 0)
    lay["ent_r"] = np.append(lay["ent_r"], 5)
    lay["ent_c"] = np.append(lay["ent_c"], 6)
    lay["ent_par"] = np.append(lay["ent_par"], -1)
    lay["ent_val"] = np.append(lay["ent_val"], 1.0)
    th = _theta(0)
    th[3] = 1.0
    sig, jac = implied_jacobian(lay, th)
    assert np.isnan(sig).all() and np.isnan(jac).all()
