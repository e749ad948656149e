"""commonfactorGWAS (DWLS) kernel: the per-SNP fit of R ``commonfactorGWAS``'s model reduced to a
(k+1)-parameter least-squares problem (see the section comment below)."""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from polgen.kernels._jit import jit_strict
from polgen.kernels._threads import n_chunks, run_chunks
from polgen.kernels.gwas_codes import (
    ST_NEARPD_FAIL,
    ST_NOCONV,
    ST_NOFINITE,
    ST_NONFINITE,
    ST_OK,
)
from polgen.kernels.linalg import _chol, _chol_solve, _damped_solve, near_pd
from polgen.kernels.snp_moments import (
    _input_status,
    s_full_into,
    snp_batch,
    v_full_into,
    v_snp_into,
)

__all__ = ["CF_RIDGE", "CF_LMAX", "CfSpec", "CfOut", "commonfactor_fit"]

#: Per-batch settings of the commonfactor fit: ``starts`` (n_starts x k rows ``l_2..l_k, phi``),
#: ``n_always`` starts always run, ``max_iter`` LM iterations, ``pidx`` the parameter numbers of
#: ``l_2..l_k, b, th_1..th_k, psi, v`` in the caller's table.
CfSpec = namedtuple("CfSpec", ["starts", "n_always", "max_iter", "pidx", "trigger"])
#: Outputs (n rows): ``theta`` (n x npar), ``fmin``, ``status``, ``iters``.
CfOut = namedtuple("CfOut", ["theta", "fmin", "status", "iters"])


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


@jit_strict
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


@jit_strict
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


@jit_strict
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
    if not (denp > 0.0):
        _mirror(Hn, n)
        return
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


@jit_strict
def _mirror(Hn, n):
    """Copy the upper triangle of Hn onto the lower one (an exactly symmetric matrix)."""
    for a in range(n):
        for b in range(a + 1, n):
            Hn[b, a] = Hn[a, b]


@jit_strict
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
        accepted = False
        fn = np.inf
        if lam == 0.0:
            for a in range(n):
                d[a] = g[a]
            if _damped_solve(H, n, 0.0, d, HW):
                fn = _cf_trial(x, d, n, k, s, ws, sld, wld, pi, pj, xn, rp)
                accepted = fn <= f
        if _chol(Hn, n, 0.0):
            for a in range(n):
                d2[a] = g[a]
            _chol_solve(Hn, n, d2)
            f2 = _cf_trial(x, d2, n, k, s, ws, sld, wld, pi, pj, xt, rt)
            if f2 <= f and f2 < fn:
                accepted = True
                fn = f2
                for a in range(n):
                    d[a] = d2[a]
                for a in range(k + 1):
                    xn[a] = xt[a]
                for m in range(nr):
                    rp[m] = rt[m]
        tries = 0
        while not accepted and tries < 60:
            tries += 1
            lam = 1e-10 if lam == 0.0 else lam * 10.0
            for a in range(n):
                d[a] = g[a]
            if not _damped_solve(H, n, lam, d, HW):
                continue
            fn = _cf_trial(x, d, n, k, s, ws, sld, wld, pi, pj, xn, rp)
            accepted = fn <= f
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
def _cf_scores(starts, k, s, ws, sld, wld, pi, pj, x, r, used, score, thr, pscore, prune):
    """Scores (projected objective, inf when not finite) of the unused starts; with ``prune``
    only of those whose pair part ``pscore`` (a lower bound of the score, up to rounding) is
    below ``thr``, the others keep inf (they could never score below ``thr``)."""
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
def _cf_range(lo, hi, snp, cf, out):
    """SNPs ``lo:hi`` of ``snp`` (:class:`~polgen.kernels.snp_moments.SnpBatch`) with the starts and
    parameter numbers of ``cf`` (:class:`CfSpec`) into ``out`` (:class:`CfOut`)."""
    beta, se, var, S_LD, V_LD, I_LD = snp.beta, snp.se, snp.var, snp.S_LD, snp.V_LD, snp.I_LD
    gc, varse2, v_pd_known = snp.gc, snp.varse2, snp.v_pd_known
    starts, n_always, max_iter, pidx, trigger = cf.starts, cf.n_always, cf.max_iter, cf.pidx, cf.trigger
    theta, fmin, status, iters = out.theta, out.fmin, out.status, out.iters
    k = beta.shape[1]
    K1 = k + 1
    Kst = K1 * (K1 + 1) // 2
    npair = k * (k - 1) // 2
    n = k + 1
    nr = k + npair
    nst = starts.shape[0]
    VS = np.empty((k, k))
    Sf = np.empty((K1, K1))
    Vf = np.empty((Kst, Kst))
    tmpK = np.empty((Kst, Kst))
    s = np.empty(k)
    ws = np.empty(k)
    sld = np.empty(max(npair, 1))
    wld = np.empty(max(npair, 1))
    pi = np.empty(npair, np.int64)
    pj = np.empty(npair, np.int64)
    vpos = np.empty(npair, np.int64)
    q = 0
    for b in range(k):
        for a in range(b + 1, k):
            pi[q] = a
            pj[q] = b
            # vech(S_full) position of trait pair (a, b) = K1 + vech position in S_LD
            vpos[q] = (b + 1) * K1 - (b + 1) * b // 2 + (a - b)
            q += 1
    r = np.empty(nr)
    J = np.empty((nr, n))
    H = np.empty((n, n))
    HW = np.empty((n, n))
    g = np.empty(n)
    d = np.empty(n)
    xn = np.empty(n)
    x = np.empty(n)
    xb = np.empty(n)
    Hn = np.empty((n, n))
    gp = np.empty(n)
    rp = np.empty(nr)
    d2 = np.empty(n)
    xt = np.empty(n)
    rt = np.empty(nr)
    score = np.empty(nst)
    used = np.empty(nst, np.bool_)
    sld0 = np.empty(max(npair, 1))
    wld0 = np.empty(max(npair, 1))
    for q in range(npair):
        sld0[q] = S_LD[pi[q], pj[q]]
        wld0[q] = 1.0 / V_LD[vpos[q] - K1, vpos[q] - K1]
    pscore = np.empty(nst)
    for st in range(nst):
        for a in range(k - 1):
            x[a] = starts[st, a]
        pscore[st] = _cf_pair(x, k, sld0, wld0, pi, pj)
    npar = theta.shape[1]
    for i in range(lo, hi):
        for p in range(npar):
            theta[i, p] = np.nan
        fmin[i] = np.nan
        iters[i] = 0
        v0 = var[i]
        bad = _input_status(v0, beta[i], se[i], k)
        if bad != 0:
            status[i] = bad
            continue
        v_snp_into(se[i], I_LD, v0, gc, VS)
        s_full_into(S_LD, beta[i], v0, Sf)
        for a in range(K1):
            for b in range(K1):
                tmpK[a, b] = Sf[a, b]
        if not _chol(tmpK, K1, 0.0):
            if not near_pd(Sf.copy(), Sf):
                status[i] = ST_NEARPD_FAIL
                continue
        if v_pd_known:
            for t in range(k):
                ws[t] = 1.0 / VS[t, t]
            for q in range(npair):
                wld[q] = 1.0 / V_LD[vpos[q] - K1, vpos[q] - K1]
        else:
            v_full_into(V_LD, VS, varse2, Vf)
            for a in range(Kst):
                for b in range(Kst):
                    tmpK[a, b] = Vf[a, b]
            if not _chol(tmpK, Kst, 0.0):
                if not near_pd(Vf.copy(), Vf):
                    status[i] = ST_NEARPD_FAIL
                    continue
            for t in range(k):
                ws[t] = 1.0 / Vf[1 + t, 1 + t]
            for q in range(npair):
                wld[q] = 1.0 / Vf[vpos[q], vpos[q]]
        smax = 0.0
        for t in range(k):
            s[t] = Sf[t + 1, 0]
            if Sf[t + 1, t + 1] > smax:
                smax = Sf[t + 1, t + 1]
        for q in range(npair):
            sld[q] = Sf[pi[q] + 1, pj[q] + 1]
        best_f = np.inf
        best_st = ST_NOCONV
        nit = 0
        # the LM runs from the warm start (row 0), then from the best-scoring others (score: the
        # projected objective of the start): n_always runs, more only while none converged or
        # (trigger >= 0) while an unused start scores below the best converged objective times
        # 1 + trigger.  The trait-pair part of a score is the same for every SNP whose S_full and
        # V_full were not smoothed (pscore, per chunk) and bounds it from below, so after a
        # converged warm fit only the starts whose pair part is under that threshold are scored.
        same = True
        for q in range(npair):
            if sld[q] != sld0[q] or wld[q] != wld0[q]:
                same = False
        lazy = same and n_always <= 1
        for st in range(nst):
            used[st] = False
            score[st] = np.inf
        if not lazy:
            _cf_scores(starts, k, s, ws, sld, wld, pi, pj, x, r, used, score, np.inf, pscore, False)
        score[0] = -np.inf
        for run in range(nst):
            st = -1
            bs = np.inf
            for q2 in range(nst):
                if not used[q2] and (st < 0 or score[q2] < bs):
                    st = q2
                    bs = score[q2]
            used[st] = True
            for a in range(k - 1):
                x[a] = starts[st, a]
            code, f, it = _cf_lm(
                x,
                k,
                s,
                ws,
                sld,
                wld,
                pi,
                pj,
                smax,
                max_iter,
                r,
                J,
                H,
                HW,
                g,
                d,
                xn,
                Hn,
                gp,
                rp,
                d2,
                xt,
                rt,
                xb,
                best_f if best_st == ST_OK else np.inf,
            )
            nit += it
            if code == ST_OK:
                if best_st != ST_OK or f < best_f:
                    best_f = f
                    best_st = ST_OK
                    for a in range(n):
                        xb[a] = x[a]
            elif best_st != ST_OK and code == ST_NOFINITE:
                best_st = ST_NOFINITE
            if lazy and run == 0:
                if best_st != ST_OK:
                    _cf_scores(starts, k, s, ws, sld, wld, pi, pj, x, r, used, score, np.inf, pscore, False)
                elif trigger >= 0.0:
                    thr = best_f * (1.0 + trigger)
                    _cf_scores(starts, k, s, ws, sld, wld, pi, pj, x, r, used, score, thr, pscore, True)
            if run + 1 >= n_always and best_st == ST_OK:
                # trigger >= 0: go on while an unused start scores below the best converged
                # objective (times 1 + trigger): its basin may hold a lower minimum
                if trigger < 0.0:
                    break
                nxt = np.inf
                for q2 in range(nst):
                    if not used[q2] and score[q2] < nxt:
                        nxt = score[q2]
                if not (nxt < best_f * (1.0 + trigger)):
                    break
        iters[i] = nit
        status[i] = best_st
        if best_st != ST_OK:
            continue
        fmin[i] = best_f
        v = Sf[0, 0]
        c = xb[k]
        phi = xb[k - 1]
        b_ = c / v
        for t in range(1, k):
            theta[i, pidx[t - 1]] = xb[t - 1]
        theta[i, pidx[k - 1]] = b_
        for t in range(k):
            lt = 1.0 if t == 0 else xb[t - 1]
            theta[i, pidx[k + t]] = Sf[t + 1, t + 1] - lt * lt * phi
        theta[i, pidx[2 * k]] = phi - b_ * b_ * v
        theta[i, pidx[2 * k + 1]] = v


def commonfactor_fit(
    beta,
    se,
    var,
    S_LD,
    V_LD,
    I_LD,
    gc,
    varse2,
    v_pd_known,
    starts,
    pidx,
    npar,
    *,
    n_always=1,
    max_iter=500,
    trigger=-1.0,
    parallel=None,
):
    """Per-SNP DWLS estimates of commonfactorGWAS's model (reduced problem, see above).

    ``starts``: (n_starts, k) rows ``(l_2..l_k, phi)``; the first ``n_always`` are always run,
    the others only for SNPs where none of those converged; the lowest objective among the
    converged fits wins (as R's fit from the first SNP's estimates lands on the fixtures).
    ``pidx``: parameter numbers of ``l_2..l_k, b, th_1..th_k, psi, v`` in the caller's table.
    Returns (theta (n x npar), fmin, status, iters).
    """
    n, k = beta.shape
    f64 = np.float64
    theta = np.empty((n, npar))
    fmin = np.empty(n)
    status = np.empty(n, np.int64)
    iters = np.empty(n, np.int64)
    if n == 0:
        return theta, fmin, status, iters
    snp = snp_batch(beta, se, var, S_LD, V_LD, I_LD, gc, varse2, v_pd_known)
    cf = CfSpec(
        np.ascontiguousarray(starts, f64),
        int(n_always),
        int(max_iter),
        np.ascontiguousarray(pidx, np.int64),
        float(trigger),
    )
    res = CfOut(theta, fmin, status, iters)
    if parallel is None:
        parallel = n >= 2048
    if parallel:
        run_chunks(_cf_range, n, n_chunks(n), snp, cf, res)
    else:
        _cf_range(0, n, snp, cf, res)
    return theta, fmin, status, iters
