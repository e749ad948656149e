"""R ``optim(method = "L-BFGS-B")`` on the HDL likelihoods of :mod:`polgen.kernels.hdl`, in numba.

R's optimiser is L-BFGS-B **version 2.3** (Byrd, Lu, Nocedal & Zhu 1995); scipy ships version 3.0,
whose subspace step projects onto the box where 2.3 truncates along the step, so the two stop at
different points (1e-3 apart in an HDL piece fit) whenever a bound is met on the way.  This is the
2.3 iteration for a few variables, the limited-memory matrix held densely (BFGS updates of
``theta I`` by the last ``m`` pairs, which the compact form represents):

1. generalized Cauchy point along the projected steepest-descent path of the quadratic model;
2. the model's minimiser over the variables free there, truncated at the first bound it crosses;
   before it, 2.3's ``formk`` factorization of the middle matrix, whose blocks are updated only in
   iterations that reach this step (R's blocks go stale when a Cauchy point has no free variable, and
   the failed factorization that follows drops the memory: reproduced because it changes the path);
3. More-Thuente line search (MINPACK-2 ``dcsrch``, ``ftol = 1e-3``, ``gtol = 0.9``, ``xtol = 0.1``;
   first step 1 in a box, at most 20 trials; a failed search drops the memory);
4. stop when the projected gradient's max-norm is ``<= pgtol`` or the relative reduction of the
   objective is ``<= factr * eps``; status 1 after ``maxit`` iterations, 52 when a line search fails
   with no memory to drop.

The objective is R's: value and numerical gradient of ``h2_value`` (``kind = 0``; ``p = (N, M,
Nref, lim)``, ``b1``) or ``gcov_value`` (``kind = 1``; ``p = (h11, i11, h22, i22, M, N1, N2, N0,
Nref, lim)``, ``b1, b2``) over ``lam`` without ``[skip_lo, skip_hi)``.  Bounds must be finite.
"""

from __future__ import annotations

import math

import numpy as np

from polgen.kernels._jit import jit_strict
from polgen.kernels.dcsrch import search_step
from polgen.kernels.hdl import gcov_fg, h2_fg

__all__ = ["lbfgsb_r", "loo_fits", "piece_fits"]

_EPS = 2.220446049250313e-16
_NDEPS = 1e-3


@jit_strict
def _fg(kind, x, lo, up, p, lam, b1, b2, skip_lo, skip_hi):  # pragma: no cover - numba
    if kind == 0:
        return h2_fg(x, lo, up, _NDEPS, p[0], p[1], p[2], lam, b1, skip_lo, skip_hi, p[3])
    return gcov_fg(x, lo, up, _NDEPS, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], lam, b1, b2, skip_lo,
                   skip_hi, p[9])  # fmt: skip


@jit_strict
def _projgr(x, g, lo, up):  # pragma: no cover - numba
    out = 0.0
    for i in range(x.shape[0]):
        gi = g[i]
        if gi < 0:
            gi = max(x[i] - up[i], gi)
        else:
            gi = min(x[i] - lo[i], gi)
        out = max(out, abs(gi))
    return out


@jit_strict
def _bmat(theta, S, Y, sy, col):  # pragma: no cover - numba
    n = S.shape[0]
    B = theta * np.eye(n)
    for k in range(col):
        s = S[:, k].copy()
        y = Y[:, k].copy()
        Bs = B @ s
        sBs = s @ Bs
        B = B - np.outer(Bs, Bs) / sBs + np.outer(y, y) / sy[k]
    return B


@jit_strict
def _dpofa(a):  # pragma: no cover - numba
    n = a.shape[0]
    for j in range(n):
        s = 0.0
        for k in range(j):
            t = a[k, j]
            for q in range(k):
                t -= a[q, k] * a[q, j]
            t /= a[k, k]
            a[k, j] = t
            s += t * t
        s = a[j, j] - s
        if s <= 0.0:
            return False
        a[j, j] = math.sqrt(s)
    return True


@jit_strict
def _cauchy(x, g, lo, up, B, iwhere):  # pragma: no cover - numba
    n = x.shape[0]
    d = np.zeros(n)
    tb = np.empty(n)
    ib = np.empty(n, dtype=np.int64)
    nb = 0
    for i in range(n):
        if iwhere[i] == 3:
            continue
        neg = -g[i]
        tl = x[i] - lo[i]
        tu = up[i] - x[i]
        iwhere[i] = 0
        if tl <= 0:
            if neg <= 0:
                iwhere[i] = 1
        elif tu <= 0:
            if neg >= 0:
                iwhere[i] = 2
        elif abs(neg) <= 0:
            iwhere[i] = -3
        if iwhere[i] != 0:
            continue
        d[i] = neg
        if neg < 0:
            tb[nb] = tl / -neg
            ib[nb] = i
            nb += 1
        elif neg > 0:
            tb[nb] = tu / neg
            ib[nb] = i
            nb += 1
    order = np.argsort(tb[:nb], kind="mergesort")
    xcp = x.copy()
    f1 = g @ d
    f2 = d @ (B @ d)
    dtm = -f1 / f2 if f2 != 0 else 0.0
    tsum = 0.0
    tj = 0.0
    nleft = nb
    for q in range(nb):
        tj0 = tj
        tj = tb[order[q]]
        k = ib[order[q]]
        dt = tj - tj0
        if dtm < dt:
            break
        tsum += dt
        nleft -= 1
        dk = d[k]
        d[k] = 0.0
        if dk > 0:
            xcp[k] = up[k]
            iwhere[k] = 2
        else:
            xcp[k] = lo[k]
            iwhere[k] = 1
        if nleft == 0 and nb == n:
            return xcp
        z = np.empty(n)
        for i in range(n):
            z[i] = tsum * d[i] if d[i] != 0 else xcp[i] - x[i]
        Bd = B @ d
        f1 = g @ d + z @ Bd
        f2 = d @ Bd
        dtm = -f1 / f2 if nleft > 0 else 0.0
    if dtm <= 0:
        dtm = 0.0
    tsum += dtm
    return xcp + tsum * d


@jit_strict
def _subspace(x, g, xcp, lo, up, B, free):  # pragma: no cover - numba
    F = np.flatnonzero(free)
    nf = F.shape[0]
    r0 = -(g + B @ (xcp - x))
    r = np.empty(nf)
    BF = np.empty((nf, nf))
    for a in range(nf):
        r[a] = r0[F[a]]
        for b in range(nf):
            BF[a, b] = B[F[a], F[b]]
    d = np.linalg.solve(BF, r)
    z = xcp.copy()
    alpha = 1.0
    t1 = alpha
    ibd = -1
    for j in range(nf):
        k = F[j]
        dk = d[j]
        if dk < 0:
            t2 = lo[k] - z[k]
            if t2 >= 0:
                t1 = 0.0
            elif dk * alpha < t2:
                t1 = t2 / dk
        elif dk > 0:
            t2 = up[k] - z[k]
            if t2 <= 0:
                t1 = 0.0
            elif dk * alpha > t2:
                t1 = t2 / dk
        if t1 < alpha:
            alpha = t1
            ibd = j
    if alpha < 1.0:
        k = F[ibd]
        if d[ibd] > 0:
            z[k] = up[k]
            d[ibd] = 0.0
        elif d[ibd] < 0:
            z[k] = lo[k]
            d[ibd] = 0.0
    for j in range(nf):
        z[F[j]] += alpha * d[j]
    return z


@jit_strict
def _dot_rows(A, i, Bm, j, mask):  # pragma: no cover - numba
    s = 0.0
    for k in range(A.shape[0]):
        if mask[k]:
            s += A[k, i] * Bm[k, j]
    return s


@jit_strict
def _formk(yy, ss, syb, S, Y, sy, col, theta, free, enter, leave, updatd, iupdat, m):  # pragma: no cover - numba
    act = ~free
    if updatd:
        if iupdat > m:
            yy[:-1, :-1] = yy[1:, 1:].copy()
            ss[:-1, :-1] = ss[1:, 1:].copy()
            syb[:-1, :-1] = syb[1:, 1:].copy()
        c = col - 1
        for j in range(col):
            yy[c, j] = _dot_rows(Y, c, Y, j, free)
            ss[c, j] = _dot_rows(S, c, S, j, act)
            syb[c, j] = _dot_rows(S, c, Y, j, act)
        for i in range(col):
            syb[i, c] = _dot_rows(S, i, Y, c, free)
        upcl = col - 1
    else:
        upcl = col
    for iy in range(upcl):
        for jy in range(iy + 1):
            yy[iy, jy] += _dot_rows(Y, iy, Y, jy, enter) - _dot_rows(Y, iy, Y, jy, leave)
            ss[iy, jy] += -_dot_rows(S, iy, S, jy, enter) + _dot_rows(S, iy, S, jy, leave)
    for i in range(upcl):
        for jy in range(upcl):
            t1 = _dot_rows(S, i, Y, jy, enter)
            t3 = _dot_rows(S, i, Y, jy, leave)
            if i <= jy:
                syb[i, jy] += t1 - t3
            else:
                syb[i, jy] += -t1 + t3
    w11 = np.zeros((col, col))
    w22 = np.zeros((col, col))
    w12 = np.zeros((col, col))
    for iy in range(col):
        for jy in range(iy + 1):
            w11[jy, iy] = yy[iy, jy] / theta
            w22[jy, iy] = ss[iy, jy] * theta
        for jy in range(col):
            w12[jy, iy] = -syb[iy, jy] if jy < iy else syb[iy, jy]
        w11[iy, iy] += sy[iy]
    if not _dpofa(w11):
        return False
    U = np.triu(w11)
    M = np.linalg.solve(U.T.copy(), w12)
    w22 = w22 + np.triu(M.T @ M)
    return _dpofa(w22)


@jit_strict
def _formt(S, Y, sy, col, theta):  # pragma: no cover - numba
    everywhere = np.ones(S.shape[0], dtype=np.bool_)
    T = np.zeros((col, col))
    for i in range(col):
        for j in range(i, col):
            acc = 0.0
            for k in range(min(i, j)):
                acc += _dot_rows(S, i, Y, k, everywhere) * _dot_rows(S, j, Y, k, everywhere) / sy[k]
            T[i, j] = acc + theta * _dot_rows(S, i, S, j, everywhere)
    return _dpofa(T)


@jit_strict
def lbfgsb_r(
    kind, x0, lo, up, p, lam, b1, b2, skip_lo, skip_hi, m=5, factr=1e7, pgtol=0.0, maxit=100
):  # pragma: no cover
    """Minimise the HDL objective ``kind`` over the box ``[lo, up]`` as R's ``optim(method =
    "L-BFGS-B")``; returns ``(par, value, convergence)`` with R's codes (0, 1, 52)."""
    n = x0.shape[0]
    x = np.minimum(np.maximum(x0.astype(np.float64), lo), up)
    iwhere = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if up[i] - lo[i] <= 0:
            iwhere[i] = 3
    f, g = _fg(kind, x, lo, up, p, lam, b1, b2, skip_lo, skip_hi)
    if _projgr(x, g, lo, up) <= pgtol:
        return x, f, 0
    S = np.zeros((n, m))
    Y = np.zeros((n, m))
    sy = np.zeros(m)
    col = 0
    theta = 1.0
    yy = np.zeros((m, m))
    ss = np.zeros((m, m))
    syb = np.zeros((m, m))
    prev_free = np.zeros(n, dtype=np.bool_)
    have_prev = False
    updatd = False
    iupdat = 0
    it = 0
    r_iter = 0
    st = np.zeros(17)
    while True:
        B = _bmat(theta, S, Y, sy, col)
        xcp = _cauchy(x, g, lo, up, B, iwhere)
        free = iwhere <= 0
        if it > 0 and have_prev:
            enter = free & ~prev_free
            leave = prev_free & ~free
        else:
            enter = np.zeros(n, dtype=np.bool_)
            leave = np.zeros(n, dtype=np.bool_)
        wrk = enter.any() or leave.any() or updatd
        prev_free = free.copy()
        have_prev = True
        if col > 0 and free.any():
            if wrk and not _formk(yy, ss, syb, S, Y, sy, col, theta, free, enter, leave, updatd, iupdat, m):
                col, theta, iupdat, updatd = 0, 1.0, 0, False
                continue
            xbar = _subspace(x, g, xcp, lo, up, B, free)
        else:
            xbar = xcp
        d = xbar - x
        stpmx = 1e10
        if it == 0:
            stpmx = 1.0
        else:
            for i in range(n):
                a1 = d[i]
                if a1 < 0:
                    a2 = lo[i] - x[i]
                    if a2 >= 0:
                        stpmx = 0.0
                    elif a1 * stpmx < a2:
                        stpmx = a2 / a1
                elif a1 > 0:
                    a2 = up[i] - x[i]
                    if a2 <= 0:
                        stpmx = 0.0
                    elif a1 * stpmx > a2:
                        stpmx = a2 / a1
        stp = 1.0
        xold = x
        gold = g
        fold = f
        gd = g @ d
        gdold = gd
        failed = gd >= 0 or stp > stpmx
        if not failed:
            st[:] = 0.0
            st[1] = 1.0
            st[2], st[3], st[4] = f, gd, 1e-3 * gd
            st[5], st[6] = stpmx, 2.0 * stpmx
            st[8], st[9], st[11], st[12] = f, gd, f, gd
            st[14] = stp + 4.0 * stp
            st[16] = stpmx
        ifun = 0
        while not failed:
            if ifun > 0:
                gd = g @ d
                stp, task = search_step(st, stp, f, gd)
                if task != 0:
                    break
            ifun += 1
            if ifun - 1 >= 20:
                failed = True
                break
            x = xbar.copy() if stp == 1.0 else stp * d + xold
            f, g = _fg(kind, x, lo, up, p, lam, b1, b2, skip_lo, skip_hi)
        if failed:
            x, g, f = xold, gold, fold
            if col == 0:
                return x, f, 52
            col, theta, iupdat, updatd = 0, 1.0, 0, False
            continue
        r_iter += 1
        if r_iter > maxit:
            return x, f, 1
        it += 1
        if _projgr(x, g, lo, up) <= pgtol:
            return x, f, 0
        if fold - f <= _EPS * factr * max(abs(fold), abs(f), 1.0):
            return x, f, 0
        y = g - gold
        rr = y @ y
        if stp == 1.0:
            dr = gd - gdold
            ddum = -gdold
            s = d
        else:
            dr = (gd - gdold) * stp
            s = stp * d
            ddum = -gdold * stp
        if dr <= _EPS * ddum:
            updatd = False
            continue
        updatd = True
        iupdat += 1
        if col == m:
            S[:, :-1] = S[:, 1:].copy()
            Y[:, :-1] = Y[:, 1:].copy()
            sy[:-1] = sy[1:].copy()
        else:
            col += 1
        S[:, col - 1] = s
        Y[:, col - 1] = y
        sy[col - 1] = dr
        theta = rr / dr
        if not _formt(S, Y, sy, col, theta):
            col, theta, iupdat, updatd = 0, 1.0, 0, False


@jit_strict
def loo_fits(first, last, kind, x0, lo, up, p, lam, b1, b2, offsets, out):  # pragma: no cover - numba
    """Leave-one-piece-out refits ``first <= i < last`` (piece ``i`` = ``[offsets[i], offsets[i+1])``
    skipped), each started at ``x0``; ``out[i]`` gets the first parameter (GIL-free, for threads)."""
    for i in range(first, last):
        x, _, _ = lbfgsb_r(kind, x0, lo, up, p, lam, b1, b2, offsets[i], offsets[i + 1])
        out[i] = x[0]


@jit_strict
def piece_fits(first, last, kind, starts, lo, up, params, lam, b1, b2, offsets, out):  # pragma: no cover - numba
    """Per-piece fits ``first <= i < last`` on ``[offsets[i], offsets[i+1])`` of ``lam, b1, b2``, from
    ``starts[i]`` with parameters ``params[i]``; ``out[i]`` gets ``(estimate, intercept)``."""
    for i in range(first, last):
        a = offsets[i]
        b = offsets[i + 1]
        x, _, _ = lbfgsb_r(kind, starts[i], lo, up, params[i], lam[a:b], b1[a:b], b2[a:b], 0, 0)
        out[i, 0] = x[0]
        out[i, 1] = x[1]
