"""Per-locus GLMs (logistic / Poisson) by IRLS, batched over loci: R ``glm.fit`` step for step.

Layout: ``Y`` is ``(n_samples, n_loci)`` float64 in Fortran order (each locus a contiguous column,
raw counts, NaN = missing: the sample is left out of that locus's model, as R's ``na.omit``), ``C``
the ``(n_samples, m)`` C-ordered design (intercept first).  Per locus the kernel follows R's
``glm.fit``: start ``mu`` (binomial ``(t y + 0.5) / (t + 1)`` on the proportion scale with ``t``
trials, Poisson ``y + 0.1``), iterate weighted least squares on the working response until
``|dev - dev_old| / (|dev| + 0.1) < eps`` (R's ``glm.control``: ``eps = 1e-8``, ``maxit = 25``),
halving the step while the deviance is not finite; the standard errors come from the last solved
system ``(C' W C)^-1`` with the weights of the iterate before the last, as R's ``summary.glm``
(dispersion 1).
"""

from __future__ import annotations

import numpy as np

from polgen.kernels._jit import jit_exact

BINOMIAL = 0
POISSON = 1


@jit_exact
def _chol_solve_inv(A, b, inv, m):
    """Cholesky of the m x m SPD ``A`` in place (lower); ``b`` <- A^-1 b; ``inv`` <- diag of A^-1.
    Returns False when A is not numerically positive definite."""
    for j in range(m):
        s = A[j, j]
        for k in range(j):
            s -= A[j, k] * A[j, k]
        if not (s > 0.0):
            return False
        A[j, j] = np.sqrt(s)
        for i in range(j + 1, m):
            t = A[i, j]
            for k in range(j):
                t -= A[i, k] * A[j, k]
            A[i, j] = t / A[j, j]
    # forward / backward substitution for b
    for i in range(m):
        t = b[i]
        for k in range(i):
            t -= A[i, k] * b[k]
        b[i] = t / A[i, i]
    for i in range(m - 1, -1, -1):
        t = b[i]
        for k in range(i + 1, m):
            t -= A[k, i] * b[k]
        b[i] = t / A[i, i]
    # diagonal of A^-1 = sum_k (L^-1)_{k,i}^2
    e = np.empty(m)
    for i in range(m):
        for k in range(m):
            e[k] = 0.0
        e[i] = 1.0
        for r in range(i, m):
            t = e[r]
            for k in range(i, r):
                t -= A[r, k] * e[k]
            e[r] = t / A[r, r]
        s = 0.0
        for r in range(i, m):
            s += e[r] * e[r]
        inv[i] = s
    return True


@jit_exact
def _dev(y, mu, wt, fam):
    """Deviance contribution (R's ``dev.resids``) of one observation."""
    if fam == BINOMIAL:
        # y and mu are proportions, the prior weight is the number of trials
        a = 0.0
        if y > 0.0:
            a += y * np.log(y / mu)
        if y < 1.0:
            a += (1.0 - y) * np.log((1.0 - y) / (1.0 - mu))
        return 2.0 * wt * a
    r = 0.0
    if y > 0.0:
        r = y * np.log(y / mu)
    return 2.0 * wt * (r - (y - mu))


@jit_exact
def _linkinv(eta, fam):
    if fam == BINOMIAL:
        # R's C logit_linkinv: exp(eta) clamped to [eps, 1/eps] beyond |eta| > 30, then t / (1 + t)
        eps = 2.220446049250313e-16
        if eta < -30.0:
            t = eps
        elif eta > 30.0:
            t = 1.0 / eps
        else:
            t = np.exp(eta)
        return t / (1.0 + t)
    v = np.exp(eta)
    return v if v > 2.220446049250313e-16 else 2.220446049250313e-16


@jit_exact
def _mu_eta(eta, fam):
    if fam == BINOMIAL:
        thr = 30.0
        if eta < -thr or eta > thr:
            return 2.220446049250313e-16
        e = np.exp(eta)
        return e / ((1.0 + e) * (1.0 + e))
    v = np.exp(eta)
    return v if v > 2.220446049250313e-16 else 2.220446049250313e-16


@jit_exact
def glm_loci(Y, C, fam, trials, first, last, maxit, eps, coef, se, n_iter, conv):
    """Fit loci ``first:last`` (columns of ``Y``); writes ``coef``/``se`` rows ``(m,)`` per locus,
    ``n_iter`` and ``conv`` (1 converged, 0 not, -1 no fit: no variation or a singular design)."""
    n, m = C.shape
    y = np.empty(n)
    wt = np.empty(n)
    eta = np.empty(n)
    mu = np.empty(n)
    z = np.empty(n)
    w = np.empty(n)
    beta = np.empty(m)
    beta_old = np.empty(m)
    A = np.empty((m, m))
    b = np.empty(m)
    dg = np.empty(m)
    dg_last = np.empty(m)
    eta_new = np.empty(n)
    for j in range(first, last):
        nobs = 0
        lo = np.inf
        hi = -np.inf
        for i in range(n):
            v = Y[i, j]
            if v == v:
                nobs += 1
                if fam == BINOMIAL:
                    y[i] = v / trials
                    wt[i] = trials
                else:
                    y[i] = v
                    wt[i] = 1.0
                lo = min(lo, y[i])
                hi = max(hi, y[i])
            else:
                y[i] = 0.0
                wt[i] = 0.0
        for k in range(m):
            coef[j, k] = np.nan
            se[j, k] = np.nan
        n_iter[j] = 0
        conv[j] = -1
        if nobs <= m or not (hi > lo):
            continue
        # initialize (R family$initialize) and the starting deviance
        dev_old = 0.0
        for i in range(n):
            if wt[i] == 0.0:
                continue
            if fam == BINOMIAL:
                ms = (wt[i] * y[i] + 0.5) / (wt[i] + 1.0)
                eta[i] = np.log(ms / (1.0 - ms))
            else:
                ms = y[i] + 0.1
                eta[i] = np.log(ms)
            mu[i] = _linkinv(eta[i], fam)
            dev_old += _dev(y[i], mu[i], wt[i], fam)
        have_old = False
        ok = True
        it = 0
        converged = False
        while it < maxit:
            it += 1
            # working response and weights at the current eta
            for i in range(n):
                if wt[i] == 0.0:
                    w[i] = 0.0
                    z[i] = 0.0
                    continue
                me = _mu_eta(eta[i], fam)
                var = mu[i] * (1.0 - mu[i]) if fam == BINOMIAL else mu[i]
                z[i] = eta[i] + (y[i] - mu[i]) / me
                w[i] = wt[i] * me * me / var
            for r in range(m):
                s = 0.0
                for i in range(n):
                    s += C[i, r] * w[i] * z[i]
                b[r] = s
                for c in range(r + 1):
                    s = 0.0
                    for i in range(n):
                        s += C[i, r] * w[i] * C[i, c]
                    A[r, c] = s
                    A[c, r] = s
            if not _chol_solve_inv(A, b, dg, m):
                ok = False
                break
            for k in range(m):
                beta[k] = b[k]
                dg_last[k] = dg[k]
            # the new linear predictor and deviance, halving towards the old fit if not finite
            dev = 0.0
            for _half in range(31):
                dev = 0.0
                for i in range(n):
                    if wt[i] == 0.0:
                        continue
                    s = 0.0
                    for k in range(m):
                        s += C[i, k] * beta[k]
                    eta_new[i] = s
                    mu_i = _linkinv(s, fam)
                    dev += _dev(y[i], mu_i, wt[i], fam)
                if np.isfinite(dev) or not have_old:
                    break
                for k in range(m):
                    beta[k] = 0.5 * (beta[k] + beta_old[k])
            if not np.isfinite(dev):
                ok = False
                break
            for i in range(n):
                if wt[i] != 0.0:
                    eta[i] = eta_new[i]
                    mu[i] = _linkinv(eta[i], fam)
            for k in range(m):
                beta_old[k] = beta[k]
            have_old = True
            if abs(dev - dev_old) / (abs(dev) + 0.1) < eps:
                converged = True
                break
            dev_old = dev
        n_iter[j] = it
        if not ok:
            continue
        conv[j] = 1 if converged else 0
        for k in range(m):
            coef[j, k] = beta[k]
            se[j, k] = np.sqrt(dg_last[k])


def fit_glm_block(
    Y: np.ndarray, C: np.ndarray, family: int, trials: float = 1.0, maxit: int = 25, eps: float = 1e-8
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """GLMs of every column of ``Y`` (n, p) on the design ``C`` (n, m): ``(coef, se, n_iter,
    conv)`` with ``coef``/``se`` of shape (p, m)."""
    Y = np.asfortranarray(Y, dtype=np.float64)
    C = np.ascontiguousarray(C, dtype=np.float64)
    p, m = Y.shape[1], C.shape[1]
    coef = np.empty((p, m))
    se = np.empty((p, m))
    n_iter = np.empty(p, dtype=np.int64)
    conv = np.empty(p, dtype=np.int64)
    glm_loci(Y, C, int(family), float(trials), 0, p, int(maxit), float(eps), coef, se, n_iter, conv)
    return coef, se, n_iter, conv
