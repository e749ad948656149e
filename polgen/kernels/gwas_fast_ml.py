"""Genomic SEM GWAS fast path (:mod:`polgen.kernels.gwas_fast`): the implied moments and their
Jacobian without the RAM inverse (shared with the DWLS fit there), and the ML fit.

ML splits exactly because the SNP is exogenous: with Psi the traits' covariance given the SNP and
u their regression on it,

    F = [log v + s_SS / v] + Fc(a, s) - log|S| - p,   Fc = log|Psi| + tr(P R),   P = Psi^-1,
    Psi = (C0 + sum_k s_k Js_k) over the traits,   u = u0 + G a,
    R = S_tt - s_tS u' - u s_tS' + s_SS u u',

so the SNP variance's optimum is s_SS and the rest is Newton's method on Fc, with A_k = P J_k,
y = s_tS - s_SS u and Q = 2 P R - I:

    dFc/ds_k = tr(J_k (P - P R P)),   dFc/da_j = -2 G_j' P y,
    H_kl = tr(A_k A_l Q),   H_jk = 2 (P G_j)' J_k (P y),   H_ij = 2 s_SS G_i' P G_j.

Fisher scoring (the RAM fit's ML: Q = I, H_jk = 0) is the fallback where the Newton matrix is not
positive definite.  From the SNP paths' GLS start the fit takes ~2.3 iterations (Fisher scoring on
F took ~5.2 and ~8 objective evaluations) and lands ~50 times closer to the optimum.
"""

from __future__ import annotations

import numpy as np

from polgen.kernels._jit import jit
from polgen.kernels.gwas_codes import ST_ML_NOTPD, ST_NOCONV, ST_OK, ftol
from polgen.kernels.linalg import _chol, _chol_inverse, _damped_solve

#: a full Newton step below this (relative to the parameter + 1e-6) ends the ML fit, the error
#: left being of the order of its square (~1e-10; measured <= 1e-9 of an SE, the Fisher scoring
#: it replaced stopped within ~6e-8)
ML_QUAD_TOL = 1e-5


# ----------------------------------------------------------------------------------------------
# fast-path moments: u = u0 + G a;  Sigma_tt = C0 + sum_k s_k Js_k + v u u';  Sigma_tS = v u;  Sigma_SS = v
# ----------------------------------------------------------------------------------------------
@jit
def _fast_sigma(theta, fidx, nf, ftype, Js, G, C0, u0, vfix, vpos, ma, mb, p, u, sig):
    for o in range(p):
        u[o] = u0[o]
    for f in range(nf):
        if ftype[f] == 1:
            t = theta[fidx[f]]
            for o in range(1, p):
                u[o] += G[o, f] * t
    v = vfix if vpos < 0 else theta[fidx[vpos]]
    nmom = ma.shape[0]
    for m in range(nmom):
        a = ma[m]
        b = mb[m]
        if b == 0:
            sig[m] = v if a == 0 else v * u[a]
        else:
            x = C0[m] + v * u[a] * u[b]
            for f in range(nf):
                if ftype[f] == 0:
                    x += theta[fidx[f]] * Js[m, f]
            sig[m] = x
    return v


@jit
def _fast_jac(theta, fidx, nf, ftype, Js, G, v, ma, mb, u, J):
    nmom = ma.shape[0]
    for f in range(nf):
        tp = ftype[f]
        for m in range(nmom):
            a = ma[m]
            b = mb[m]
            if tp == 0:
                J[m, f] = Js[m, f]
            elif tp == 1:
                if b == 0:
                    J[m, f] = 0.0 if a == 0 else v * G[a, f]
                else:
                    J[m, f] = v * (G[a, f] * u[b] + u[a] * G[b, f])
            else:
                if b == 0:
                    J[m, f] = 1.0 if a == 0 else u[a]
                else:
                    J[m, f] = u[a] * u[b]


@jit
def _ml_u_r(theta, fidx, nf, ftype, G, u0, ma, mb, q, s_vec, sb, sSS, u, R):
    """u (the traits' regression on the SNP) and R at ``theta``."""
    for o in range(q + 1):
        u[o] = u0[o]
    for f in range(nf):
        if ftype[f] == 1:
            t = theta[fidx[f]]
            for o in range(1, q + 1):
                u[o] += G[o, f] * t
    for m in range(ma.shape[0]):
        b = mb[m]
        if b == 0:
            continue
        a = ma[m]
        r = s_vec[m] - sb[a] * u[b] - u[a] * sb[b] + sSS * u[a] * u[b]
        R[a - 1, b - 1] = r
        R[b - 1, a - 1] = r


@jit
def _tr_pr(P, R, q):
    t = 0.0
    for i in range(q):
        for j in range(q):
            t += P[i, j] * R[j, i]
    return t


@jit
def _ml_cond(theta, fidx, nf, ftype, Js, G, C0, u0, ma, mb, q, s_vec, sb, sSS, u, L, P, R, col):
    """Fc at ``theta`` (inf when Psi is not positive definite); leaves u, L (Psi's factor), P, R."""
    _ml_u_r(theta, fidx, nf, ftype, G, u0, ma, mb, q, s_vec, sb, sSS, u, R)
    for m in range(ma.shape[0]):
        b = mb[m]
        if b == 0:
            continue
        x = C0[m]
        for f in range(nf):
            if ftype[f] == 0:
                x += theta[fidx[f]] * Js[m, f]
        L[ma[m] - 1, b - 1] = x  # ma >= mb: the lower triangle, all _chol reads
    if not _chol(L, q, 0.0):
        return np.inf
    fc = 0.0
    for i in range(q):
        fc += 2.0 * np.log(L[i, i])
    _chol_inverse(L, q, P, col)
    fc += _tr_pr(P, R, q)
    if not np.isfinite(fc):
        return np.inf
    return fc


@jit
def _ml_gls_start(theta, fidx, nf, ftype, G, u0, q, sb, sSS, P, PG, y, z, H, HW, rhs):
    """Set the SNP paths ``a`` to Fc's minimum given Psi (P = Psi^-1 at ``theta``), their GLS
    estimate: (G' P G) a = G' P (s_tS / s_SS - u0).  False (theta unchanged) when there are none
    or G' P G is singular."""
    na = 0
    for f in range(nf):
        if ftype[f] == 1:
            na += 1
    if na == 0:
        return False
    for i in range(q):
        y[i] = sb[i + 1] / sSS - u0[i + 1]
    for i in range(q):
        x = 0.0
        for j in range(q):
            x += P[i, j] * y[j]
        z[i] = x
    for f in range(nf):
        rhs[f] = 0.0
        if ftype[f] == 1:
            x = 0.0
            for i in range(q):
                t = 0.0
                for j in range(q):
                    t += P[i, j] * G[j + 1, f]
                PG[f, i] = t
                x += G[i + 1, f] * z[i]
            rhs[f] = x
    for f in range(nf):  # G' P G over the SNP paths, the identity elsewhere
        for f2 in range(f, nf):
            x = 1.0 if f == f2 else 0.0
            if ftype[f] == 1 and ftype[f2] == 1:
                x = 0.0
                for i in range(q):
                    x += PG[f, i] * G[i + 1, f2]
            H[f, f2] = x
            H[f2, f] = x
    if not _damped_solve(H, nf, 0.0, rhs, HW):
        return False
    for f in range(nf):
        if ftype[f] == 1:
            theta[fidx[f]] = rhs[f]
    return True


@jit
def _fit_fast_ml(
    theta,
    fidx,
    nf,
    ftype,
    Js,
    G,
    C0,
    u0,
    vfix,
    vpos,
    ma,
    mb,
    p,
    s_vec,
    w,
    ldS,
    max_iter,
    xtol,
    u,
    sig,
    J,
    WJ,
    H,
    HW,
    g,
    delta,
    th_new,
    resid,
    Cp,
    Sig,
    Sinv,
    col,
    Smat,
    Wm,
    fval,
):
    """ML on the fast path (see above).  Leaves resid, J and Sinv = Sigma^-1 at the solution, as
    the DWLS fit does, and the objective there in ``fval[0]`` (inf where Sigma is not positive
    definite).  Returns (status, iterations).  The arguments are those of the DWLS fit
    (:func:`polgen.kernels.gwas_fast._fit_fast_dwls`, one list for both); ``w``, ``WJ``, ``Cp``,
    ``Sig``, ``Smat`` and ``Wm`` are unused."""
    nmom = ma.shape[0]
    npar = theta.shape[0]
    q = p - 1
    qq = q * q
    wk = np.empty(qq * (5 + 2 * nf) + nf * q + 3 * q + 1 + nf * nf)
    L = wk[0:qq].reshape((q, q))
    P = wk[qq : 2 * qq].reshape((q, q))
    R = wk[2 * qq : 3 * qq].reshape((q, q))
    Qm = wk[3 * qq : 4 * qq].reshape((q, q))
    M = wk[4 * qq : 5 * qq].reshape((q, q))
    o = 5 * qq
    A = wk[o : o + nf * qq].reshape((nf, q, q))
    o += nf * qq
    AQ = wk[o : o + nf * qq].reshape((nf, q, q))
    o += nf * qq
    PG = wk[o : o + nf * q].reshape((nf, q))
    o += nf * q
    z = wk[o : o + q]
    o += q
    y = wk[o : o + q]
    o += q
    sb = wk[o : o + q + 1]  # s_tS (SNP moment of each observed variable; sb[0] = s_SS)
    o += q + 1
    HF = wk[o : o + nf * nf].reshape((nf, nf))
    for m in range(nmom):
        if mb[m] == 0:
            sb[ma[m]] = s_vec[m]
    sSS = sb[0]
    if max_iter > 0 and vpos >= 0:
        theta[fidx[vpos]] = sSS  # the SNP variance's ML estimate
    v = vfix if vpos < 0 else theta[fidx[vpos]]
    fc = _ml_cond(theta, fidx, nf, ftype, Js, G, C0, u0, ma, mb, q, s_vec, sb, sSS, u, L, P, R, col)
    if not (v > 0.0) or not np.isfinite(fc):
        _fast_sigma(theta, fidx, nf, ftype, Js, G, C0, u0, vfix, vpos, ma, mb, p, u, sig)
        for m in range(nmom):
            resid[m] = s_vec[m] - sig[m]
        fval[0] = np.inf
        return ST_ML_NOTPD, 0
    cst = np.log(v) + sSS / v - ldS - p  # F = Fc + cst (fv: F at theta)
    if max_iter > 0 and _ml_gls_start(theta, fidx, nf, ftype, G, u0, q, sb, sSS, P, PG, y, z, H, HW, delta):
        fc -= _tr_pr(P, R, q)  # log|Psi|: Psi (and P) do not depend on the SNP paths
        _ml_u_r(theta, fidx, nf, ftype, G, u0, ma, mb, q, s_vec, sb, sSS, u, R)
        fc += _tr_pr(P, R, q)
    fv = fc + cst
    lam = 0.0
    it = 0
    done = False
    cur = True  # u, P and R are those of theta
    st = ST_NOCONV
    while it < max_iter and not done:
        it += 1
        # ---- gradient (g = -dF) and the Newton (H) and Fisher (HF) matrices at theta
        for i in range(q):
            y[i] = sb[i + 1] - sSS * u[i + 1]
        for i in range(q):
            x = 0.0
            for j in range(q):
                x += P[i, j] * y[j]
            z[i] = x
        for i in range(q):  # Qm = 2 P R - I;  M = P - (P R) P
            for j in range(q):
                x = 0.0
                for c in range(q):
                    x += P[i, c] * R[c, j]
                Qm[i, j] = 2.0 * x - (1.0 if i == j else 0.0)
        for i in range(q):
            for j in range(q):
                x = P[i, j]
                for c in range(q):
                    x -= 0.5 * (Qm[i, c] + (1.0 if i == c else 0.0)) * P[c, j]
                M[i, j] = x
        for f in range(nf):
            tp = ftype[f]
            if tp == 0:
                for i in range(q):
                    for j in range(q):
                        A[f, i, j] = 0.0
                x = 0.0
                for m in range(nmom):
                    b = mb[m]
                    js = Js[m, f]
                    if b == 0 or js == 0.0:
                        continue
                    a = ma[m] - 1
                    b -= 1
                    for i in range(q):
                        A[f, i, b] += js * P[i, a]
                    if a != b:
                        for i in range(q):
                            A[f, i, a] += js * P[i, b]
                        x += 2.0 * js * M[a, b]
                    else:
                        x += js * M[a, a]
                g[f] = -x
                for i in range(q):
                    for j in range(q):
                        x = 0.0
                        for c in range(q):
                            x += A[f, i, c] * Qm[c, j]
                        AQ[f, i, j] = x
            elif tp == 1:
                x = 0.0
                for i in range(q):
                    t = 0.0
                    for j in range(q):
                        t += P[i, j] * G[j + 1, f]
                    PG[f, i] = t
                    x += G[i + 1, f] * z[i]
                g[f] = 2.0 * x
            else:
                g[f] = 0.0
        for f in range(nf):
            tf = ftype[f]
            for f2 in range(f, nf):
                t2 = ftype[f2]
                hn = 0.0
                hf = 0.0
                if tf == 2 or t2 == 2:
                    hn = 1.0 if f == f2 else 0.0
                    hf = hn
                elif tf == 0 and t2 == 0:
                    for i in range(q):
                        for j in range(q):
                            hn += A[f, i, j] * AQ[f2, j, i]
                            hf += A[f, i, j] * A[f2, j, i]
                elif tf == 1 and t2 == 1:
                    for i in range(q):
                        hn += PG[f, i] * G[i + 1, f2]
                    hn *= 2.0 * sSS
                    hf = hn
                else:
                    fa = f if tf == 1 else f2  # the SNP path
                    fs = f2 if tf == 1 else f  # the variance
                    for m in range(nmom):
                        b = mb[m]
                        js = Js[m, fs]
                        if b == 0 or js == 0.0:
                            continue
                        a = ma[m] - 1
                        b -= 1
                        hn += js * PG[fa, a] * z[b]
                        if a != b:
                            hn += js * PG[fa, b] * z[a]
                    hn *= 2.0
                H[f, f2] = hn
                H[f2, f] = hn
                HF[f, f2] = hf
                HF[f2, f] = hf
        # ---- Newton step (Fisher where H is not positive definite), damped while F rises
        newton = True
        accepted = False
        tries = 0
        while not accepted and tries < 40:
            tries += 1
            for a in range(nf):
                delta[a] = g[a]
            if not _damped_solve(H if newton else HF, nf, lam, delta, HW):
                if newton:
                    newton = False
                else:
                    lam = 1e-8 if lam == 0.0 else lam * 10.0
                continue
            for k in range(npar):
                th_new[k] = theta[k]
            small = True
            quad = newton and lam == 0.0
            pred = 0.0
            for a in range(nf):
                th_new[fidx[a]] += delta[a]
                pred += g[a] * delta[a]
                scale = abs(th_new[fidx[a]]) + 1e-6
                if abs(delta[a]) > xtol * scale:
                    small = False
                if abs(delta[a]) > ML_QUAD_TOL * scale:
                    quad = False
            if small:
                accepted = True
                done = True
                cur = False
                break
            fcn = _ml_cond(th_new, fidx, nf, ftype, Js, G, C0, u0, ma, mb, q, s_vec, sb, sSS, u, L, P, R, col)
            fn = fcn + cst
            if fn <= fv:
                accepted = True
                cur = True
                fold = fv
                fv = fn
                lam = 0.0 if lam <= 1e-8 else lam * 0.1
                # a full Newton step this small leaves an error of its square
                done = quad or (fold - fn) <= ftol * fold or fn == 0.0
            elif 0.5 * pred <= 1e-14 * (1.0 + abs(fc)):
                # the step's predicted decrease is below the objective's rounding: converged
                accepted = True
                cur = True
                done = True
                fv = fn
            else:
                lam = 1e-8 if lam == 0.0 else lam * 10.0
                cur = False
        if accepted:
            for k in range(npar):
                theta[k] = th_new[k]
            fc = fv - cst
        else:
            done = True  # no decrease along any damped direction: stationary to rounding
    if done:
        st = ST_OK
    # ---- the solution in the full moment space: resid, J, and Sigma^-1 from P = Psi^-1:
    #   Sigma^-1 = [[1/v + u' P u, -(P u)'], [-P u, P]]  (SNP first)
    if not cur:
        fv = _ml_cond(theta, fidx, nf, ftype, Js, G, C0, u0, ma, mb, q, s_vec, sb, sSS, u, L, P, R, col) + cst
    fval[0] = fv
    v = _fast_sigma(theta, fidx, nf, ftype, Js, G, C0, u0, vfix, vpos, ma, mb, p, u, sig)
    for m in range(nmom):
        resid[m] = s_vec[m] - sig[m]
    upu = 0.0
    for i in range(q):
        x = 0.0
        for j in range(q):
            x += P[i, j] * u[j + 1]
            Sinv[i + 1, j + 1] = P[i, j]
        Sinv[i + 1, 0] = -x
        Sinv[0, i + 1] = -x
        upu += u[i + 1] * x
    Sinv[0, 0] = 1.0 / v + upu
    _fast_jac(theta, fidx, nf, ftype, Js, G, v, ma, mb, u, J)
    return st, it
