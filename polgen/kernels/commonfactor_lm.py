"""commonfactorGWAS (DWLS): the least-squares fits behind :mod:`polgen.kernels.commonfactor` (stage
1: the loadings of the projected problem, Levenberg-Marquardt with Newton steps; the start scores)
and :mod:`polgen.kernels.commonfactor_se` (the Q model: Newton on the total SNP effects)."""

from __future__ import annotations

import numpy as np

from polgen.kernels._jit import jit_strict, jit_strict_noref, kernel
from polgen.kernels.gwas_codes import ST_NOCONV, ST_NOFINITE, ST_NONFINITE, ST_OK
from polgen.kernels.linalg import _chol, _chol_solve, _damped_solve

#: jit_strict, inlined into its callers (numba IR): the small per-iteration helpers of the LM, whose
#: calls cost more than their arithmetic (array arguments are reference-counted at each call)
jit_strict_inline = kernel(fastmath=False, error_model="numpy", inline="always")
_chol_i = jit_strict_inline(_chol.py_func)
_chol_solve_i = jit_strict_inline(_chol_solve.py_func)
_damped_solve_i = jit_strict_inline(_damped_solve.py_func)

__all__ = ["CF_RIDGE", "CF_LMAX", "CF_JOIN_X", "CF_JOIN_F", "ST_JOINED"]

# ----------------------------------------------------------------------------------------------
# commonfactorGWAS (DWLS): the per-SNP fit in closed form up to a (k+1)-parameter problem
#
#   model: F1 =~ 1*T1 + l2 T2 + ... + lk Tk;  F1 ~ b SNP;  Ti ~~ th_i;  F1 ~~ psi;  SNP ~~ v
#   Sigma_00 = v;  Sigma_i0 = l_i b v;  Sigma_ii = l_i^2 (psi + b^2 v) + th_i;
#   Sigma_ij = l_i l_j (psi + b^2 v)
# With c = b v and phi = psi + b^2 v (a one-to-one change of parameters) each th_i fits its own
# diagonal moment exactly and v fits Sigma_00 = S_00 exactly, so the DWLS minimum is that of
#   sum_i w_i0 (s_i - l_i c)^2 + sum_{i<j} w_ij (S_ij - l_i l_j phi)^2
# over (l_2..l_k, phi, c): Levenberg-Marquardt on k + 1 parameters from a warm start (the no-SNP
# common-factor fit, c by weighted regression), further starts only when that one fails.  When
# the infimum lies at infinity (a trait's common variance l_i^2 phi grows without bound, its
# residual variance tends to minus infinity) the SNP is reported with ST_NOFINITE.
# ----------------------------------------------------------------------------------------------
CF_RIDGE = 1e4  # l_i^2 |phi| > CF_RIDGE * max_i S_ii: the fit is running off along a ridge
CF_LMAX = 1e5  # |l_i| > CF_LMAX (l_1 = 1): the scaling trait's loading vanishes
#: a further start's fit whose loadings come within CF_JOIN_X (relative) of the best minimum so
#: far with an objective within CF_JOIN_F (relative) of it stops there: it would converge to that
#: minimum (to rounding; issue 18: ~1.3 of the ~1.6 further fits per SNP end there)
CF_JOIN_X = 1e-3
CF_JOIN_F = 1e-8
ST_JOINED = -7  # _cf_lm: joined the best minimum so far (never an output status)


@jit_strict_inline
def _cf_eval(x, k, s, ws, sld, wld, pi, pj, r):
    """Variable projection: for loadings x[:k-1] the best c (x[k]) and phi (x[k-1]) are weighted
    regressions; fills the residuals r (SNP moments, then trait pairs), returns the objective."""
    num = 0.0
    den = 0.0
    for i in range(k):
        li = 1.0 if i == 0 else x[i - 1]
        num += ws[i] * li * s[i]
        den += ws[i] * li * li
    c = num / den if den > 0.0 else 0.0
    num = 0.0
    den = 0.0
    for q in range(pi.shape[0]):
        a = pi[q]
        b = pj[q]
        pq = (1.0 if a == 0 else x[a - 1]) * (1.0 if b == 0 else x[b - 1])
        num += wld[q] * pq * sld[q]
        den += wld[q] * pq * pq
    phi = num / den if den > 0.0 else 0.0
    x[k] = c
    x[k - 1] = phi
    f = 0.0
    for i in range(k):
        li = 1.0 if i == 0 else x[i - 1]
        e = s[i] - li * c
        r[i] = e
        f += ws[i] * e * e
    for q in range(pi.shape[0]):
        a = pi[q]
        b = pj[q]
        pq = (1.0 if a == 0 else x[a - 1]) * (1.0 if b == 0 else x[b - 1])
        e = sld[q] - pq * phi
        r[k + q] = e
        f += wld[q] * e * e
    return f


# not inlined (once per LM iteration, its body outweighs the call without reference counts;
# compiled once: its inlined copy made the LM's compilation ~2 s longer, 10 instead of 12 s)
@jit_strict_noref
def _cf_normal(x, k, ws, wld, pi, pj, r, J, H, g, s, sld, Hn, dcv, dpv):
    """Exact variable-projection Jacobian J = d model / d loadings (c and phi re-optimised),
    H = J' W J, g = J' W r (n = k - 1 loadings) and Hn, half the Hessian of the projected
    objective (:func:`_cf_hess`, from the same derivatives of c and phi; ``dcv``, ``dpv``:
    scratch (n))."""
    n = k - 1
    nr = r.shape[0]
    c = x[k]
    phi = x[k - 1]
    # SNP part: model_i = l_i c(l), c = (l'W s)/(l'W l)
    den = 0.0
    for i in range(k):
        li = 1.0 if i == 0 else x[i - 1]
        den += ws[i] * li * li
    for j in range(n):
        t = j + 1  # trait whose loading is x[j]
        # dc/dl_t = (w_t s_t - 2 c w_t l_t) / den
        dc = (ws[t] * s[t] - 2.0 * c * ws[t] * x[j]) / den if den > 0.0 else 0.0
        dcv[j] = dc
        for i in range(k):
            li = 1.0 if i == 0 else x[i - 1]
            J[i, j] = li * dc + (c if i == t else 0.0)
    # pair part: model_q = p_q phi(l), p_q = l_a l_b, phi = (p'W y)/(p'W p)
    denp = 0.0
    for q in range(pi.shape[0]):
        a = pi[q]
        b = pj[q]
        pq = (1.0 if a == 0 else x[a - 1]) * (1.0 if b == 0 else x[b - 1])
        denp += wld[q] * pq * pq
    for j in range(n):
        t = j + 1
        dnum = 0.0
        dden = 0.0
        for q in range(pi.shape[0]):
            a = pi[q]
            b = pj[q]
            la = 1.0 if a == 0 else x[a - 1]
            lb = 1.0 if b == 0 else x[b - 1]
            dp = (lb if a == t else 0.0) + (la if b == t else 0.0)
            dnum += wld[q] * dp * sld[q]
            dden += 2.0 * wld[q] * dp * la * lb
        dphi = (dnum - phi * dden) / denp if denp > 0.0 else 0.0
        dpv[j] = dphi
        for q in range(pi.shape[0]):
            a = pi[q]
            b = pj[q]
            la = 1.0 if a == 0 else x[a - 1]
            lb = 1.0 if b == 0 else x[b - 1]
            dp = (lb if a == t else 0.0) + (la if b == t else 0.0)
            J[k + q, j] = dp * phi + la * lb * dphi
    # g = J'W r, H = J'W J: every entry summed over m in order, the entries side by side
    for a in range(n):
        g[a] = 0.0
        for b2 in range(a, n):
            H[a, b2] = 0.0
    for m in range(nr):
        wm = ws[m] if m < k else wld[m - k]
        rm = r[m]
        for a in range(n):
            wj = wm * J[m, a]
            g[a] += wj * rm
            for b2 in range(a, n):
                H[a, b2] += wj * J[m, b2]
    for a in range(n):
        for b2 in range(a + 1, n):
            H[b2, a] = H[a, b2]
    _cf_hess(x, k, ws, wld, pi, pj, sld, Hn, dcv, dpv, den, denp)


@jit_strict_inline
def _cf_hess(x, k, ws, wld, pi, pj, sld, Hn, dc, dp, den, denp):
    """Hn = half the Hessian of the projected objective at the loadings x[:k-1] (x[k-1], x[k]:
    phi and c as :func:`_cf_eval` left them), analytically, from ``dc``, ``dp`` (the derivatives
    of c and phi by the loadings) and ``den``, ``denp`` (the two projections' denominators) that
    :func:`_cf_normal` computed.

    Each part is ``C - N(l)^2 / D(l)`` with ``u = N / D`` (c or phi), whose half Hessian is
    ``-D du du' - u N'' + u^2 D'' / 2`` with ``du = (N' - u D') / D``.  (It replaces a central
    difference of the exact gradient, which agreed to ~1e-10 relative at five times the cost.)"""
    n = k - 1
    c = x[k]
    phi = x[k - 1]
    # SNP part: N = sum ws l s, D = sum ws l^2 (N'' = 0, D'' = diag(2 ws))
    for a in range(n):
        for b in range(a, n):
            Hn[a, b] = -den * dc[a] * dc[b] if den > 0.0 else 0.0
        if den > 0.0:
            Hn[a, a] += c * c * ws[a + 1]
    # pair part: p_q = l_a l_b, N = sum w p y, D = sum w p^2
    if denp > 0.0:
        for a in range(n):
            for b in range(a, n):
                Hn[a, b] -= denp * dp[a] * dp[b]
        # N'' and D'': second derivatives of p_q (1 at the pair's two loadings when both are free)
        # and D'' = 2 sum w (p' p'' + p p'')
        for q in range(pi.shape[0]):
            a = pi[q]
            b = pj[q]
            la = 1.0 if a == 0 else x[a - 1]
            lb = 1.0 if b == 0 else x[b - 1]
            wq = wld[q]
            pq = la * lb
            # p' has lb at a, la at b (free loadings only): D'' += 2 w p' p'
            if a > 0:
                Hn[a - 1, a - 1] += phi * phi * wq * lb * lb
            if b > 0:
                Hn[b - 1, b - 1] += phi * phi * wq * la * la
            if a > 0 and b > 0:  # a > b: the upper triangle is (b - 1, a - 1)
                Hn[b - 1, a - 1] += phi * phi * wq * (la * lb + pq) - phi * wq * sld[q]
    _mirror(Hn, n)


@jit_strict_inline
def _mirror(Hn, n):
    """Copy the upper triangle of Hn onto the lower one (an exactly symmetric matrix)."""
    for a in range(n):
        for b in range(a + 1, n):
            Hn[b, a] = Hn[a, b]


@jit_strict_inline
def _cf_trial(x, d, n, k, s, ws, sld, wld, pi, pj, xt, rt):
    """xt = x + d (loadings), its projected c / phi and residuals rt; returns the objective."""
    for a in range(k + 1):
        xt[a] = x[a]
    for a in range(n):
        xt[a] = x[a] + d[a]
    return _cf_eval(xt, k, s, ws, sld, wld, pi, pj, rt)


@jit_strict
def _cf_lm(x, k, s, ws, sld, wld, pi, pj, smax, max_iter, r, J, H, HW, g, d, xn, Hn, gp, rp, d2, xt, rt, xb, fb):
    """Minimise over the loadings (variable projection) from x (in place).

    Each iteration compares the Gauss-Newton step with the Newton step (analytic Hessian,
    :func:`_cf_hess`, when positive definite) and takes the lower objective: Newton converges
    fast near the minimum, Gauss-Newton strides along flat valleys and ridges; damped
    (Levenberg-Marquardt) steps when neither lowers the objective.  ``xb``, ``fb``: the best
    minimum found so far from other starts (``fb`` inf: none).
    Returns (status, f, iterations): ST_OK, ST_NOCONV, ST_NOFINITE (ridge) or ST_JOINED."""
    n = k - 1
    nr = r.shape[0]
    f = _cf_eval(x, k, s, ws, sld, wld, pi, pj, r)
    if not np.isfinite(f):
        return ST_NONFINITE, f, 0
    if n == 0:
        return ST_OK, f, 0
    lam = 0.0
    it = 0
    while it < max_iter:
        it += 1
        _cf_normal(x, k, ws, wld, pi, pj, r, J, H, g, s, sld, Hn, gp, d2)
        # the candidate steps in turn, each through the one trial below (every inlined copy of a
        # helper's body is compiled again): the Gauss-Newton step when undamped (stage 0), the
        # Newton step when Hn is positive definite (stage 1, kept when it is lower than the first),
        # then damped steps with a growing lam until one lowers f (stage 2)
        accepted = False
        fn = np.inf
        tries = 0
        stage = 0 if lam == 0.0 else 1
        while True:
            newton = stage == 1
            if newton:
                stage = 2
                if not _chol_i(Hn, n, 0.0):
                    continue
                for a in range(n):
                    d2[a] = g[a]
                _chol_solve_i(Hn, n, d2)
                dt, xa, ra = d2, xt, rt
            else:
                if stage == 2:
                    if accepted or tries >= 60:
                        break
                    tries += 1
                    lam = 1e-10 if lam == 0.0 else lam * 10.0
                else:
                    stage = 1
                for a in range(n):
                    d[a] = g[a]
                if not _damped_solve_i(H, n, lam, d, HW):
                    continue
                dt, xa, ra = d, xn, rp
            ft = _cf_trial(x, dt, n, k, s, ws, sld, wld, pi, pj, xa, ra)
            if not newton:
                fn = ft
                accepted = fn <= f
            elif ft <= f and ft < fn:
                accepted = True
                fn = ft
                for a in range(n):
                    d[a] = d2[a]
                for a in range(k + 1):
                    xn[a] = xt[a]
                for m in range(nr):
                    rp[m] = rt[m]
        if not accepted:
            # no step lowers f: a stationary point to rounding
            return ST_OK, f, it
        lam = 0.0 if lam <= 1e-10 else lam * 0.1
        small = True
        for a in range(n):
            if abs(d[a]) > 1e-10 * abs(xn[a]) + 1e-300:
                small = False
        for a in range(k + 1):
            x[a] = xn[a]
        for m in range(nr):
            r[m] = rp[m]
        fold = f
        f = fn
        # ridge: the first loading (fixed to 1) vanishing relative to the others, or a trait's
        # common variance l_i^2 phi without bound
        phi = x[k - 1]
        big = abs(phi)
        lmax = 1.0
        for i in range(1, k):
            t = x[i - 1] * x[i - 1] * abs(phi)
            if t > big:
                big = t
            if abs(x[i - 1]) > lmax:
                lmax = abs(x[i - 1])
        if not (big <= CF_RIDGE * smax) or not (lmax <= CF_LMAX):
            return ST_NOFINITE, f, it
        if small or (fold - fn) <= 1e-16 * fold or fn == 0.0:
            return ST_OK, f, it
        if fb < np.inf and fn <= fb * (1.0 + CF_JOIN_F):
            # next to the best minimum found so far (xb, fb): this fit ends there
            near = True
            for a in range(n):
                if abs(x[a] - xb[a]) > CF_JOIN_X * (abs(xb[a]) + 1e-3):
                    near = False
            if near:
                return ST_JOINED, f, it
    return ST_NOCONV, f, it


def lm_callee(args):
    """:func:`_cf_lm`'s signature in :func:`polgen.kernels.commonfactor._cf_range`'s call, from the
    kernel's argument types ``args`` (its ``cf`` gives ``max_iter``'s type; every array comes from
    ``_cf_work``), for :mod:`polgen.kernels._precompile`: ``[(kernel, signature, False)]``, a helper
    compiles it while the kernel compiles its other callees.  tests/kernels/test_precompile.py checks
    it against the kernel's type inference."""
    from numba.core import types

    if len(args) != 6:
        return []
    f1, f2, i1 = (types.Array(t, d, "C") for t, d in ((types.float64, 1), (types.float64, 2), (types.int64, 1)))
    i8, f8 = types.int64, types.float64
    max_iter = dict(zip(args[3].fields, args[3]))["max_iter"]
    sig = (f1, i8, f1, f1, f1, f1, i1, i1, f8, max_iter, f1, f2, f2, f2, f1, f1, f1, f2, f1, f1, f1, f1, f1, f1, f8)
    return [("polgen.kernels.commonfactor_lm._cf_lm", sig, False)]


@jit_strict
def _cf_pair(x, k, sld, wld, pi, pj):
    """The trait-pair part of :func:`_cf_eval`'s objective (phi projected) at the loadings x."""
    num = 0.0
    den = 0.0
    for q in range(pi.shape[0]):
        a = pi[q]
        b = pj[q]
        pq = (1.0 if a == 0 else x[a - 1]) * (1.0 if b == 0 else x[b - 1])
        num += wld[q] * pq * sld[q]
        den += wld[q] * pq * pq
    phi = num / den if den > 0.0 else 0.0
    f = 0.0
    for q in range(pi.shape[0]):
        a = pi[q]
        b = pj[q]
        pq = (1.0 if a == 0 else x[a - 1]) * (1.0 if b == 0 else x[b - 1])
        e = sld[q] - pq * phi
        f += wld[q] * e * e
    return f


@jit_strict
def _cf_scores(starts, k, s, ws, sld, wld, pi, pj, x, r, used, score, thr, pscore):
    """Scores (projected objective, inf when not finite) of the unused starts; with a finite
    ``thr`` only of those whose pair part ``pscore`` (a lower bound of the score, up to rounding)
    is below ``thr``, the others keep inf (they could never score below ``thr``).  (No boolean
    switch: a literal True / False argument would compile this function twice.)"""
    prune = thr < np.inf
    for st in range(starts.shape[0]):
        if used[st]:
            continue
        if prune and not (pscore[st] * (1.0 - 1e-12) < thr):
            score[st] = np.inf
            continue
        for a in range(k - 1):
            x[a] = starts[st, a]
        fs = _cf_eval(x, k, s, ws, sld, wld, pi, pj, r)
        score[st] = fs if np.isfinite(fs) else np.inf


@jit_strict
def _q_objective(h, k, v, s, w, Sf, lpsi, la_, lb_, r):
    """Q model objective over h (residual variances profiled out): SNP moments then trait pairs
    (residuals into r)."""
    f = 0.0
    for t in range(k):
        e = s[t] - h[t] * v
        r[t] = e
        f += w[1 + t] * e * e
    for q in range(la_.shape[0]):
        a = la_[q]
        b = lb_[q]
        e = Sf[a + 1, b + 1] - lpsi[q] - h[a] * h[b] * v
        r[k + q] = e
        f += w[k + 1 + q] * e * e
    return f


@jit_strict
def _q_fit(h, k, v, s, w, Sf, lpsi, la_, lb_, r, g, Hn, HG, HW, d, hn, rn):
    """Minimise the Q model's objective over h from h (in place): Newton steps (exact Hessian),
    Gauss-Newton / damped steps when they do not lower it.  Returns (status, iterations)."""
    f = _q_objective(h, k, v, s, w, Sf, lpsi, la_, lb_, r)
    if not np.isfinite(f):
        return ST_NOCONV, 0
    npair = la_.shape[0]
    lam = 0.0
    for it in range(1, 201):
        # half gradient (g = J' W r) and half Hessian (Hn exact, HG Gauss-Newton)
        for a in range(k):
            g[a] = w[1 + a] * v * r[a]
            for b in range(k):
                HG[a, b] = 0.0
            HG[a, a] = w[1 + a] * v * v
        for q in range(npair):
            a = la_[q]
            b = lb_[q]
            wq = w[k + 1 + q]
            e = r[k + q]
            g[a] += wq * e * v * h[b]
            g[b] += wq * e * v * h[a]
            HG[a, a] += wq * v * v * h[b] * h[b]
            HG[b, b] += wq * v * v * h[a] * h[a]
            HG[a, b] += wq * v * v * h[a] * h[b]
            HG[b, a] += wq * v * v * h[a] * h[b]
        for a in range(k):
            for b in range(k):
                Hn[a, b] = HG[a, b]
        for q in range(npair):
            a = la_[q]
            b = lb_[q]
            t = w[k + 1 + q] * v * r[k + q]
            Hn[a, b] -= t
            Hn[b, a] -= t
        accepted = False
        fn = np.inf
        if lam == 0.0 and _chol(Hn, k, 0.0):
            for a in range(k):
                d[a] = g[a]
            _chol_solve(Hn, k, d)
            for a in range(k):
                hn[a] = h[a] + d[a]
            fn = _q_objective(hn, k, v, s, w, Sf, lpsi, la_, lb_, rn)
            accepted = fn <= f
        tries = 0
        while not accepted and tries < 60:
            tries += 1
            for a in range(k):
                d[a] = g[a]
            if _damped_solve(HG, k, lam, d, HW):
                for a in range(k):
                    hn[a] = h[a] + d[a]
                fn = _q_objective(hn, k, v, s, w, Sf, lpsi, la_, lb_, rn)
                accepted = fn <= f
            if not accepted:
                lam = 1e-10 if lam == 0.0 else lam * 10.0
        if not accepted:
            return ST_OK, it  # no step lowers f: stationary to rounding
        lam = 0.0 if lam <= 1e-10 else lam * 0.1
        hmax = 0.0
        for a in range(k):
            if abs(hn[a]) > hmax:
                hmax = abs(hn[a])
        small = True
        for a in range(k):
            if abs(d[a]) > 1e-13 * (abs(hn[a]) + 1e-3 * hmax) + 1e-300:
                small = False
        for a in range(k):
            h[a] = hn[a]
        for m in range(k + npair):
            r[m] = rn[m]
        f = fn
        # a step-size test only: the objective is dominated by the trait pairs' misfit, which h
        # barely moves, so its relative decrease says nothing about convergence
        if small or fn == 0.0:
            return ST_OK, it
    return ST_NOCONV, 200
