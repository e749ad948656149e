"""Small dense linear algebra for the per-SNP kernels (no allocation except nearPD's rare path).

Cholesky factor / solve / quadratic form / inverse on the leading ``n x n`` block of a work array,
Gauss-Jordan inverse, a damped (Levenberg-Marquardt) solve, the sandwich product, and
``Matrix::nearPD`` as R computes it.
"""

from __future__ import annotations

import numpy as np

from polgen.kernels._jit import jit


# ----------------------------------------------------------------------------------------------
# small dense linear algebra (no allocation)
# ----------------------------------------------------------------------------------------------
@jit
def _chol(a, n, tol):
    """In-place lower Cholesky of the leading n x n block of ``a``; False if not PD."""
    for j in range(n):
        s = a[j, j]
        for k in range(j):
            s -= a[j, k] * a[j, k]
        if not (s > tol):
            return False
        d = np.sqrt(s)
        a[j, j] = d
        for i in range(j + 1, n):
            t = a[i, j]
            for k in range(j):
                t -= a[i, k] * a[j, k]
            a[i, j] = t / d
    return True


@jit
def _chol_solve(L, n, b):
    """Solve (L L') x = b in place on ``b`` (length n)."""
    for i in range(n):
        t = b[i]
        for k in range(i):
            t -= L[i, k] * b[k]
        b[i] = t / L[i, i]
    for i in range(n - 1, -1, -1):
        t = b[i]
        for k in range(i + 1, n):
            t -= L[k, i] * b[k]
        b[i] = t / L[i, i]


@jit
def _chol_quad(L, n, b, tmp):
    """b' (L L')^-1 b using a forward solve into ``tmp``."""
    q = 0.0
    for i in range(n):
        t = b[i]
        for k in range(i):
            t -= L[i, k] * tmp[k]
        tmp[i] = t / L[i, i]
        q += tmp[i] * tmp[i]
    return q


@jit
def _chol_inverse(L, n, out, col):
    """out = (L L')^-1 (n x n) using the unit-vector solves."""
    for j in range(n):
        for i in range(n):
            col[i] = 0.0
        col[j] = 1.0
        _chol_solve(L, n, col)
        for i in range(n):
            out[i, j] = col[i]


@jit
def _inv_gj(a, n, out):
    """out = a^-1 by Gauss-Jordan with partial pivoting; destroys ``a``; False when singular."""
    for i in range(n):
        for j in range(n):
            out[i, j] = 1.0 if i == j else 0.0
    for c in range(n):
        piv = c
        best = abs(a[c, c])
        for r in range(c + 1, n):
            if abs(a[r, c]) > best:
                best = abs(a[r, c])
                piv = r
        if not (best > 1e-300):
            return False
        if piv != c:
            for j in range(n):
                t = a[c, j]
                a[c, j] = a[piv, j]
                a[piv, j] = t
                t = out[c, j]
                out[c, j] = out[piv, j]
                out[piv, j] = t
        d = 1.0 / a[c, c]
        for j in range(n):
            a[c, j] *= d
            out[c, j] *= d
        for r in range(n):
            if r != c:
                f = a[r, c]
                if f != 0.0:
                    for j in range(n):
                        a[r, j] -= f * a[c, j]
                        out[r, j] -= f * out[c, j]
    return True


# ----------------------------------------------------------------------------------------------
# Matrix::nearPD (corr=FALSE, keepDiag=FALSE, do2eigen=TRUE, doDykstra=TRUE, eig.tol=1e-6,
# conv.tol=1e-7, posd.tol=1e-8, maxit=100, conv.norm.type="I")
# ----------------------------------------------------------------------------------------------
@jit
def near_pd_general(x, out, corr, keep_diag, do2eigen, do_dykstra, do_sym, eig_tol, conv_tol, posd_tol, maxit, info):
    """Nearest positive definite matrix of symmetric ``x`` as R ``Matrix::nearPD`` with its options
    (``conv.norm.type = "I"``); the one implementation of the project (:func:`near_pd` is R's
    defaults, :func:`polgen.gsem.matrix.near_pd` the user-facing function).

    Writes the result into ``out`` and ``info[0] = iterations``, ``info[1] = last convergence
    criterion``; returns False when the matrix seems negative semidefinite.  Allocates
    (eigendecompositions): only used on the rare SNPs that need smoothing and on LD matrices.
    """
    n = x.shape[0]
    X = x.copy()
    diag0 = np.empty(n)
    for i in range(n):
        diag0[i] = x[i, i]
    DS = np.zeros((n, n))
    R = np.empty((n, n))
    converged = False
    it = 0
    conv = np.inf
    while it < maxit and not converged:
        Y = X.copy()
        for i in range(n):
            for j in range(n):
                R[i, j] = Y[i, j] - DS[i, j] if do_dykstra else Y[i, j]
        d, Q = np.linalg.eigh(R)
        # R's eigen returns decreasing values: d[1] is the largest
        dmax = d[n - 1]
        thr = eig_tol * dmax
        anyp = False
        for i in range(n):
            if d[i] > thr:
                anyp = True
        if not anyp:
            return False
        for i in range(n):
            for j in range(n):
                s = 0.0
                for k in range(n):
                    if d[k] > thr:
                        s += Q[i, k] * d[k] * Q[j, k]
                X[i, j] = s
        if do_dykstra:
            for i in range(n):
                for j in range(n):
                    DS[i, j] = X[i, j] - R[i, j]
        if do_sym:
            for i in range(n):
                for j in range(i):
                    s = 0.5 * (X[i, j] + X[j, i])
                    X[i, j] = s
                    X[j, i] = s
        if corr:
            for i in range(n):
                X[i, i] = 1.0
        elif keep_diag:
            for i in range(n):
                X[i, i] = diag0[i]
        # conv = norm(Y - X, "I") / norm(Y, "I")
        num = 0.0
        den = 0.0
        for i in range(n):
            s1 = 0.0
            s2 = 0.0
            for j in range(n):
                s1 += abs(Y[i, j] - X[i, j])
                s2 += abs(Y[i, j])
            if s1 > num:
                num = s1
            if s2 > den:
                den = s2
        conv = num / den
        it += 1
        converged = conv <= conv_tol
    info[0] = it
    info[1] = conv
    if do2eigen:
        d, Q = np.linalg.eigh(X)
        Eps = posd_tol * abs(d[n - 1])
        if d[0] < Eps:
            for i in range(n):
                if d[i] < Eps:
                    d[i] = Eps
            odiag = np.empty(n)
            for i in range(n):
                odiag[i] = X[i, i]
            for i in range(n):
                for j in range(n):
                    s = 0.0
                    for k in range(n):
                        s += Q[i, k] * d[k] * Q[j, k]
                    X[i, j] = s
            D = np.empty(n)
            for i in range(n):
                D[i] = np.sqrt(max(Eps, odiag[i]) / X[i, i])
            for i in range(n):
                for j in range(n):
                    X[i, j] = D[i] * X[i, j] * D[j]
        if corr:
            for i in range(n):
                X[i, i] = 1.0
        elif keep_diag:
            for i in range(n):
                X[i, i] = diag0[i]
    for i in range(n):
        for j in range(n):
            out[i, j] = X[i, j]
    return True


@jit
def near_pd(x, out):
    """:func:`near_pd_general` with R's defaults (corr = keepDiag = FALSE, do2eigen, doDykstra,
    eig.tol = 1e-6, conv.tol = 1e-7, posd.tol = 1e-8, maxit = 100)."""
    info = np.empty(2)
    return near_pd_general(x, out, False, False, True, True, False, 1e-6, 1e-7, 1e-8, 100, info)


@jit
def _damped_solve(H, nf, lam, rhs, HW):
    """Solve (H + lam diag(H)) x = rhs in place on rhs (HW: nf x nf scratch)."""
    for a in range(nf):
        for b in range(nf):
            HW[a, b] = H[a, b]
        d = H[a, a]
        HW[a, a] = d + lam * (d if d > 0 else 1.0)
    if not _chol(HW, nf, 0.0):
        return False
    _chol_solve(HW, nf, rhs)
    return True


@jit
def sandwich_into(Vm, WJ, Br, nmom, nf, VL, M, tmp, Om):
    """Sandwich covariance Om = Br (WJ' Vm WJ) Br of the first ``nf`` free parameters (bread ``Br``,
    weighted Jacobian ``WJ``, meat ``Vm``); VL, M and tmp are work buffers."""
    for m in range(nmom):
        for a in range(nf):
            s = 0.0
            for m2 in range(nmom):
                s += Vm[m, m2] * WJ[m2, a]
            VL[m, a] = s
    for a in range(nf):
        for b in range(nf):
            s = 0.0
            for m in range(nmom):
                s += WJ[m, a] * VL[m, b]
            M[a, b] = s
    for a in range(nf):
        for b in range(nf):
            s = 0.0
            for c in range(nf):
                s += M[a, c] * Br[c, b]
            tmp[a, b] = s
    for a in range(nf):
        for b in range(nf):
            s = 0.0
            for c in range(nf):
                s += Br[a, c] * tmp[c, b]
            Om[a, b] = s
