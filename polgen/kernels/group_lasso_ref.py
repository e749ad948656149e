"""group-lasso 1.5.0's FISTA iteration for the sparse group lasso, step for step (the solver of the
Python SpaceTravLR reference: ``GroupLasso(frobenius_lipschitz=True, scale_reg="inverse_group_size",
n_iter=1500, tol=1e-5)``).

On the centred design with an intercept column, ``A = [1, X - mean(X)]`` (n x (p+1)), and ``y``:

* smooth loss f(w) = sum((A w - y)^2) / (2n), gradient A'(A w - y) / n;
* Lipschitz start L = ||A||_F^2 / n (``frobenius_lipschitz``);
* update(x, z, t, L): x+ = prox(z - 0.5 grad(z) / L, L) - a half step, while the prox thresholds
  with l1 / L and lam_g / L (intercept unpenalised; soft-threshold, then group shrinkage);
  t+ = (1 + sqrt(1 + 4 t^2)) / 2; z+ = x+ + (x+ - x)(t - 1) / t+;
* restart: when (z - x+)'(x+ - x) > f(x) the step is redone from z = x, t = 1;
* backtracking: while f(x+) > f(z) + L ||x+ - z||^2 / 2.5 + grad(z)'(x+ - z): L *= 2, redo;
* stop when ||x+ - x|| / ||x+ + 1e-16|| < tol (the 1e-16 added to every entry), else after
  ``n_iter`` iterations.

No fast-math: the arithmetic follows numpy's so the iterates match to rounding.
"""

from __future__ import annotations

import numpy as np

from polgen.kernels._jit import jit_exact


@jit_exact
def _loss(A, y, w, r):  # pragma: no cover - numba
    """f(w); the residual A w - y into r."""
    n = A.shape[0]
    s = 0.0
    for i in range(n):
        acc = 0.0
        for j in range(A.shape[1]):
            acc += A[i, j] * w[j]
        r[i] = acc - y[i]
        s += r[i] * r[i]
    return 0.5 * s / n


@jit_exact
def _grad(A, r, g):  # pragma: no cover - numba
    n, q = A.shape
    for j in range(q):
        g[j] = 0.0
    for i in range(n):
        ri = r[i]
        for j in range(q):
            g[j] += A[i, j] * ri
    for j in range(q):
        g[j] /= n


@jit_exact
def _prox(v, L, group, lam, l1, out, gn):  # pragma: no cover - numba
    """Intercept v[0] kept; coefficients soft-thresholded by l1 / L, then each group shrunk by lam_g / L."""
    q = v.shape[0]
    out[0] = v[0]
    t1 = l1 / L
    for j in range(1, q):
        a = abs(v[j]) - t1
        s = 1.0 if v[j] > 0 else (-1.0 if v[j] < 0 else 0.0)
        out[j] = s * (a if a > 0.0 else 0.0)
    for g in range(lam.shape[0]):
        gn[g] = 0.0
    for j in range(1, q):
        k = group[j - 1]
        if k >= 0:
            gn[k] += out[j] * out[j]
    for g in range(lam.shape[0]):
        nrm = np.sqrt(gn[g])
        if nrm == 0.0:
            gn[g] = 0.0
        else:
            f = 1.0 - (lam[g] / L) / nrm
            gn[g] = f if f > 0.0 else 0.0
    for j in range(1, q):
        k = group[j - 1]
        if k >= 0:
            out[j] = gn[k] * out[j]


@jit_exact
def _update(A, y, x, z, t, L, group, lam, l1, xn, zn, r, g, v, gn):  # pragma: no cover - numba
    """x+ into xn, z+ into zn; returns t+."""
    q = x.shape[0]
    _loss(A, y, z, r)
    _grad(A, r, g)
    for j in range(q):
        v[j] = z[j] - 0.5 * g[j] / L
    _prox(v, L, group, lam, l1, xn, gn)
    tn = 0.5 + 0.5 * np.sqrt(1.0 + 4.0 * t * t)
    for j in range(q):
        zn[j] = xn[j] + (xn[j] - x[j]) * (t - 1.0) / tn
    return tn


@jit_exact
def fista_group_lasso_ref(A, y, group, lam, l1, n_iter, tol):  # pragma: no cover - numba
    """Minimise as group-lasso 1.5.0 does from w = 0.  ``A`` = [1, centred X] (n x (p+1), C order),
    ``group[j]`` the group of coefficient j (0..len(lam)-1; -1 = unpenalised), ``lam`` the group
    penalties (already scaled by 1/sqrt(group size)).  Returns (w (p+1; intercept first, of the
    centred problem), iterations, converged, final L)."""
    n, q = A.shape
    L = 0.0
    for i in range(n):
        for j in range(q):
            L += A[i, j] * A[i, j]
    L = L / n
    x = np.zeros(q)
    z = np.zeros(q)
    t = 1.0
    xn = np.empty(q)
    zn = np.empty(q)
    r = np.empty(n)
    g = np.empty(q)
    gz = np.empty(q)
    v = np.empty(q)
    gn = np.empty(max(lam.shape[0], 1))
    it = 0
    while it < n_iter:
        it += 1
        tn = _update(A, y, x, z, t, L, group, lam, l1, xn, zn, r, g, v, gn)
        dot = 0.0
        for j in range(q):
            dot += (z[j] - xn[j]) * (xn[j] - x[j])
        if dot > _loss(A, y, x, r):
            for j in range(q):
                z[j] = x[j]
            t = 1.0
            tn = _update(A, y, x, z, t, L, group, lam, l1, xn, zn, r, g, v, gn)
        while True:
            fz = _loss(A, y, z, r)
            _grad(A, r, gz)
            fx = _loss(A, y, xn, r)
            d2 = 0.0
            lin = 0.0
            for j in range(q):
                d = xn[j] - z[j]
                d2 += d * d
                lin += gz[j] * d
            if not (fx > fz + d2 * L / 2.5 + lin):
                break
            L *= 2.0
            tn = _update(A, y, x, z, t, L, group, lam, l1, xn, zn, r, g, v, gn)
        num = 0.0
        den = 0.0
        for j in range(q):
            num += (xn[j] - x[j]) * (xn[j] - x[j])
            den += (xn[j] + 1e-16) * (xn[j] + 1e-16)
            x[j] = xn[j]
            z[j] = zn[j]
        t = tn
        if np.sqrt(num) / np.sqrt(den) < tol:
            return x, it, True, L
    return x, it, False, L
