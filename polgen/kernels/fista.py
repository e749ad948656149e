"""FISTA for the sparse group lasso on a Gram matrix.

Minimises, over w (p) with the intercept profiled out (X and y centred by the caller),

    F(w) = 1/2 w'Gw - c'w + 1/2 yy + sum_g lam_g ||w_g||_2 + l1 ||w||_1

where G = X'X / n, c = X'y / n, yy = y'y / n (so F is (1/2n)|Xw - y|^2 + penalty).  Working on
the p x p Gram matrix makes an iteration O(p^2), independent of the number of cells.

* proximal step: L1 soft-threshold, then group-L2 block shrinkage (the exact prox of the sum);
* backtracking on the Lipschitz constant L (Beck & Teboulle 2009, doubling until the quadratic
  upper bound holds);
* adaptive (gradient-based) restart of the momentum (O'Donoghue & Candes 2012) when
  (y_k - x_{k+1})'(x_{k+1} - x_k) > 0.
"""

from __future__ import annotations

import numpy as np

from polgen.kernels._jit import jit_fm


@jit_fm
def _prox(v, step, group, lam, l1, out, gnorm):  # pragma: no cover - numba
    p = v.shape[0]
    ng = lam.shape[0]
    thr = l1 * step
    for j in range(p):
        a = abs(v[j]) - thr
        out[j] = (a if a > 0.0 else 0.0) * (1.0 if v[j] >= 0.0 else -1.0)
    for g in range(ng):
        gnorm[g] = 0.0
    for j in range(p):
        gnorm[group[j]] += out[j] * out[j]
    for g in range(ng):
        nrm = np.sqrt(gnorm[g])
        t = lam[g] * step
        gnorm[g] = (1.0 - t / nrm) if nrm > t else 0.0
    for j in range(p):
        out[j] *= gnorm[group[j]]


@jit_fm
def _smooth(G, c, w, grad):  # pragma: no cover - numba
    """f(w) = 1/2 w'Gw - c'w and its gradient Gw - c (into grad)."""
    p = w.shape[0]
    f = 0.0
    for i in range(p):
        s = 0.0
        for j in range(p):
            s += G[i, j] * w[j]
        grad[i] = s - c[i]
        f += w[i] * (0.5 * s - c[i])
    return f


@jit_fm
def penalty(w, group, lam, l1):  # pragma: no cover - numba
    ng = lam.shape[0]
    gn = np.zeros(ng)
    pen = 0.0
    for j in range(w.shape[0]):
        gn[group[j]] += w[j] * w[j]
        pen += l1 * abs(w[j])
    for g in range(ng):
        pen += lam[g] * np.sqrt(gn[g])
    return pen


@jit_fm
def objective(G, c, yy, w, group, lam, l1):  # pragma: no cover - numba
    grad = np.empty(w.shape[0])
    return _smooth(G, c, w, grad) + 0.5 * yy + penalty(w, group, lam, l1)


@jit_fm
def fista_sgl(G, c, group, lam, l1, w0, L0, max_iter, tol):  # pragma: no cover - numba
    """Returns (w, n_iter, converged, L).  ``group[j]`` in 0..len(lam)-1; ``L0`` > 0 initial step^-1.

    Stops when the relative change of w is below ``tol`` and the objective no longer decreases
    by more than ``tol`` relative.
    """
    p = c.shape[0]
    ng = lam.shape[0]
    x = w0.copy()
    xn = np.empty(p)
    z = w0.copy()
    gz = np.empty(p)
    gtmp = np.empty(p)
    v = np.empty(p)
    gnorm = np.empty(max(ng, 1))
    t = 1.0
    L = L0
    F_old = _smooth(G, c, x, gtmp) + penalty(x, group, lam, l1)
    it = 0
    converged = False
    while it < max_iter:
        it += 1
        fz = _smooth(G, c, z, gz)
        while True:
            step = 1.0 / L
            for j in range(p):
                v[j] = z[j] - step * gz[j]
            _prox(v, step, group, lam, l1, xn, gnorm)
            fx = _smooth(G, c, xn, gtmp)
            q = fz
            d2 = 0.0
            for j in range(p):
                d = xn[j] - z[j]
                q += gz[j] * d
                d2 += d * d
            q += 0.5 * L * d2
            if fx <= q + 1e-15 * abs(q) or L > 1e300:
                break
            L *= 2.0
        # adaptive restart: momentum points uphill
        dot = 0.0
        dx = 0.0
        xx = 0.0
        for j in range(p):
            dot += (z[j] - xn[j]) * (xn[j] - x[j])
            dx += (xn[j] - x[j]) * (xn[j] - x[j])
            xx += xn[j] * xn[j]
        F_new = fx + penalty(xn, group, lam, l1)
        if dot > 0.0:
            t = 1.0
            for j in range(p):
                z[j] = xn[j]
        else:
            tn = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
            mom = (t - 1.0) / tn
            for j in range(p):
                z[j] = xn[j] + mom * (xn[j] - x[j])
            t = tn
        small_step = np.sqrt(dx) <= tol * max(1.0, np.sqrt(xx))
        small_obj = abs(F_old - F_new) <= tol * max(1.0, abs(F_new))
        for j in range(p):
            x[j] = xn[j]
        F_old = F_new
        if small_step and small_obj:
            converged = True
            break
    return x, it, converged, L


@jit_fm
def ista_sgl(G, c, group, lam, l1, w0, L, n_iter):  # pragma: no cover - numba
    """Plain proximal gradient with a fixed step 1/L (the slow reference solver for tests)."""
    p = c.shape[0]
    x = w0.copy()
    g = np.empty(p)
    v = np.empty(p)
    gnorm = np.empty(max(lam.shape[0], 1))
    step = 1.0 / L
    for _ in range(n_iter):
        _smooth(G, c, x, g)
        for j in range(p):
            v[j] = x[j] - step * g[j]
        _prox(v, step, group, lam, l1, x, gnorm)
    return x


@jit_fm
def power_lipschitz(G, n_iter):  # pragma: no cover - numba
    """Largest eigenvalue of the PSD matrix G by power iteration (deterministic start)."""
    p = G.shape[0]
    v = np.ones(p) / np.sqrt(max(p, 1))
    lam = 0.0
    w = np.empty(p)
    for _ in range(n_iter):
        for i in range(p):
            s = 0.0
            for j in range(p):
                s += G[i, j] * v[j]
            w[i] = s
        nrm = 0.0
        for i in range(p):
            nrm += w[i] * w[i]
        nrm = np.sqrt(nrm)
        if nrm == 0.0:
            return 0.0
        lam = nrm
        for i in range(p):
            v[i] = w[i] / nrm
    return lam
