"""numba kernels for Genomic SEM GWAS (per-SNP construction and batched per-SNP SEM fits).

Everything here takes contiguous float64 / int64 numpy arrays and knows nothing of Polars,
files or model syntax.  The model arrives *compiled* (see :mod:`polgen.gsem.gwas`) in RAM form:
``Sigma_all = B S B'`` with ``B = (I - A)^-1`` over observed (first ``p``, the SNP at index 0) and
latent variables; every parameter entry says which matrix (0 = A, 1 = S), which cell, and which
parameter (or ``-1`` and a fixed value).

Per SNP the kernel reproduces R GenomicSEM (userGWAS / commonfactorGWAS):

* ``V_SNP`` for GC = standard / conserv / none, ``S_full = [[v, v b'], [v b, S_LD]]``,
  ``V_full = blockdiag(varSNPSE^2, V_SNP, V_LD)``, ``Matrix::nearPD`` smoothing of either when
  not positive definite, ``Z_smooth`` as ``smooth_check`` reports it;
* the fit: DWLS (weights ``1 / diag(V_full)``) or ML, by Levenberg-Marquardt damped
  Gauss-Newton / Fisher scoring with an analytic Jacobian, from per-SNP start values;
* sandwich SEs ``bread (W D)' V_full (W D) bread`` with ``bread = (D' W D)^-1``;
* ``Q = eta' V_full^-1 eta`` with ``eta = vech(S_full - Sigma)``; ``Q_SNP`` per factor;
  optionally a Wald statistic over a subset of parameters (commonfactorGWAS's Q).

Work arrays are allocated once per thread chunk, never per SNP (except the rare nearPD path).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from polgen.kernels._jit import jit, jit_exact, jit_exact_parallel

# stop when an accepted step lowers the objective by less than this fraction (lavaan/nlminb
# stops at rel.tol = 1e-10 on the objective)
ftol = 1e-13

GC_STANDARD = 0
GC_CONSERV = 1
GC_NONE = 2

# status codes of a per-SNP fit
ST_OK = 0
ST_BAD_VAR = 1        # MAF (or HSQ) gives a SNP variance that is not finite and > 0
ST_BAD_BETA = 2       # a beta is NaN / infinite
ST_BAD_SE = 3         # an SE is NaN / infinite / <= 0
ST_NOCONV = 4         # the optimiser did not converge
ST_SINGULAR = 5       # information matrix singular: SEs not computable
ST_NEARPD_FAIL = 6    # nearPD smoothing failed
ST_NONFINITE = 7      # non-finite implied covariance / objective
ST_ML_NOTPD = 8       # ML: implied covariance not positive definite at the start
ST_NOFINITE = 9       # commonfactor: no finite optimum (the loadings run off along a ridge)

STATUS_REASONS = {
    ST_OK: "",
    ST_BAD_VAR: "SNP variance 2*MAF*(1-MAF) is not > 0 (MAF 0, 1 or missing)",
    ST_BAD_BETA: "beta is missing or not finite",
    ST_BAD_SE: "SE is missing, not finite or <= 0",
    ST_NOCONV: "the optimiser did not converge",
    ST_SINGULAR: "information matrix is singular: standard errors not computable",
    ST_NEARPD_FAIL: "nearPD smoothing failed",
    ST_NONFINITE: "implied covariance or objective not finite",
    ST_ML_NOTPD: "ML: model-implied covariance matrix not positive definite",
    ST_NOFINITE: ("no finite optimum: the fit runs off along a ridge (a trait's common-factor "
                  "variance grows without bound, its residual variance to minus infinity; lavaan "
                  "stops there with a gradient warning)"),
}

FLAG_S_SMOOTHED = 1
FLAG_V_SMOOTHED = 2


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
@jit_exact
def near_pd(x, out):
    """Nearest positive definite matrix of symmetric ``x`` as R ``Matrix::nearPD`` (defaults).

    Writes the result into ``out``; returns False when the matrix seems negative semidefinite.
    Allocates (eigendecompositions): only used on the rare SNPs that need smoothing.
    """
    n = x.shape[0]
    X = x.copy()
    DS = np.zeros((n, n))
    R = np.empty((n, n))
    converged = False
    it = 0
    while it < 100 and not converged:
        Y = X.copy()
        for i in range(n):
            for j in range(n):
                R[i, j] = Y[i, j] - DS[i, j]
        d, Q = np.linalg.eigh(R)
        # R's eigen returns decreasing values: d[1] is the largest
        dmax = d[n - 1]
        thr = 1e-6 * dmax
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
        for i in range(n):
            for j in range(n):
                DS[i, j] = X[i, j] - R[i, j]
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
        converged = conv <= 1e-7
    d, Q = np.linalg.eigh(X)
    Eps = 1e-8 * abs(d[n - 1])
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
    for i in range(n):
        for j in range(n):
            out[i, j] = X[i, j]
    return True


# ----------------------------------------------------------------------------------------------
# per-SNP construction (R: .get_V_SNP, .get_S_Full, .get_V_full, .get_Z_pre)
# ----------------------------------------------------------------------------------------------
@jit
def v_snp_into(se, I, var, gc, out):
    """V_SNP (k x k) for one SNP: GWAS SEs scaled by the LDSC intercepts and the SNP variance."""
    k = se.shape[0]
    v2 = var * var
    for x in range(k):
        for y in range(k):
            if x == y:
                if gc == GC_CONSERV:
                    t = se[x] * I[x, x] * var
                elif gc == GC_STANDARD:
                    t = se[x] * np.sqrt(I[x, x]) * var
                else:
                    t = se[x] * var
                out[x, x] = t * t
            else:
                if gc == GC_CONSERV:
                    out[x, y] = se[y] * se[x] * I[x, y] * I[x, x] * I[y, y] * v2
                elif gc == GC_STANDARD:
                    out[x, y] = se[y] * se[x] * I[x, y] * np.sqrt(I[x, x]) * np.sqrt(I[y, y]) * v2
                else:
                    out[x, y] = se[y] * se[x] * I[x, y] * v2


@jit
def s_full_into(S_LD, beta, var, out):
    """S_full ((k+1) x (k+1)): SNP first, SNP-trait covariances v * beta, then S_LD."""
    k = beta.shape[0]
    out[0, 0] = var
    for p in range(k):
        out[p + 1, 0] = var * beta[p]
        out[0, p + 1] = var * beta[p]
        for q in range(k):
            out[p + 1, q + 1] = S_LD[p, q]


@jit
def v_full_into(V_LD, V_SNP, varse2, out):
    """V_full = blockdiag(varSNPSE^2, V_SNP, V_LD) in vech(S_full) order."""
    k = V_SNP.shape[0]
    n = out.shape[0]
    for i in range(n):
        for j in range(n):
            out[i, j] = 0.0
    out[0, 0] = varse2
    for i in range(k):
        for j in range(k):
            out[1 + i, 1 + j] = V_SNP[i, j]
    m = V_LD.shape[0]
    for i in range(m):
        for j in range(m):
            out[k + 1 + i, k + 1 + j] = V_LD[i, j]


@jit
def z_pre_into(beta, se, I, gc, out):
    """Z statistics before smoothing, GC-corrected as R's .get_Z_pre."""
    k = beta.shape[0]
    for p in range(k):
        if gc == GC_CONSERV:
            out[p] = beta[p] / (se[p] * I[p, p])
        elif gc == GC_STANDARD:
            out[p] = beta[p] / (se[p] * np.sqrt(I[p, p]))
        else:
            out[p] = beta[p] / se[p]


# ----------------------------------------------------------------------------------------------
# model evaluation
# ----------------------------------------------------------------------------------------------
@jit
def _implied(theta, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA, B, T, C):
    """Fill A, S from theta; B = (I-A)^-1; C[:, :p] = B S B'[:, :p].  False if I-A singular."""
    for i in range(nv):
        for j in range(nv):
            A[i, j] = 0.0
            S[i, j] = 0.0
    for e in range(ent_kind.shape[0]):
        q = ent_par[e]
        val = ent_val[e] if q < 0 else theta[q]
        r = ent_r[e]
        c = ent_c[e]
        if ent_kind[e] == 0:
            A[r, c] = val
        else:
            S[r, c] = val
            S[c, r] = val
    for i in range(nv):
        for j in range(nv):
            IA[i, j] = -A[i, j]
        IA[i, i] += 1.0
    if not _inv_gj(IA, nv, B):
        return False
    # T = S B'[:, :p]  (nv x p)
    for i in range(nv):
        for b in range(p):
            s = 0.0
            for j in range(nv):
                s += S[i, j] * B[b, j]
            T[i, b] = s
    for a in range(nv):
        for b in range(p):
            s = 0.0
            for j in range(nv):
                s += B[a, j] * T[j, b]
            C[a, b] = s
    return True


@jit
def _jacobian(fidx, nf, par_ptr, par_ent, ent_kind, ent_r, ent_c, ma, mb, B, C, J):
    """J[m, f] = d sigma_m / d theta_fidx[f] (analytic, RAM form)."""
    nmom = ma.shape[0]
    for f in range(nf):
        q = fidx[f]
        for m in range(nmom):
            J[m, f] = 0.0
        for t in range(par_ptr[q], par_ptr[q + 1]):
            e = par_ent[t]
            i = ent_r[e]
            jj = ent_c[e]
            if ent_kind[e] == 0:
                for m in range(nmom):
                    a = ma[m]
                    b = mb[m]
                    J[m, f] += B[a, i] * C[jj, b] + C[jj, a] * B[b, i]
            else:
                if i == jj:
                    for m in range(nmom):
                        J[m, f] += B[ma[m], i] * B[mb[m], i]
                else:
                    for m in range(nmom):
                        a = ma[m]
                        b = mb[m]
                        J[m, f] += B[a, i] * B[b, jj] + B[a, jj] * B[b, i]


@jit
def _ml_pieces(C, s_vec, ma, mb, p, Sig, Sinv, col, Smat, ldS):
    """ML: F = log|Sigma| + tr(S Sigma^-1) - log|S| - p, Sinv = Sigma^-1.  Returns F (inf if not PD)."""
    nmom = ma.shape[0]
    for m in range(nmom):
        a = ma[m]
        b = mb[m]
        Sig[a, b] = C[a, b]
        Sig[b, a] = C[a, b]
        Smat[a, b] = s_vec[m]
        Smat[b, a] = s_vec[m]
    if not _chol(Sig, p, 0.0):
        return np.inf
    logdet = 0.0
    for i in range(p):
        logdet += 2.0 * np.log(Sig[i, i])
    _chol_inverse(Sig, p, Sinv, col)
    tr = 0.0
    for i in range(p):
        for j in range(p):
            tr += Smat[i, j] * Sinv[j, i]
    return logdet + tr - ldS - p


@jit
def _ml_weight(Sinv, ma, mb, W):
    """W = 0.5 D'(Sigma^-1 (x) Sigma^-1) D in vech space (lavaan's ML WLS.V)."""
    nmom = ma.shape[0]
    for u in range(nmom):
        a = ma[u]
        b = mb[u]
        for v in range(u, nmom):
            c = ma[v]
            d = mb[v]
            # 0.5 tr(Sinv E_ab Sinv E_cd) with E symmetric unit matrices
            if a == b and c == d:
                val = 0.5 * Sinv[a, c] * Sinv[a, c]
            elif a == b:
                val = Sinv[a, c] * Sinv[a, d]
            elif c == d:
                val = Sinv[a, c] * Sinv[b, c]
            else:
                val = Sinv[a, c] * Sinv[b, d] + Sinv[a, d] * Sinv[b, c]
            W[u, v] = val
            W[v, u] = val


@jit
def _objective(ml, theta, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA, B, T, C,
               s_vec, w, ma, mb, resid, Sig, Sinv, col, Smat, ldS):
    if not _implied(theta, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA, B, T, C):
        return np.inf
    nmom = ma.shape[0]
    f = 0.0
    for m in range(nmom):
        r = s_vec[m] - C[ma[m], mb[m]]
        resid[m] = r
        f += w[m] * r * r
    if ml:
        f = _ml_pieces(C, s_vec, ma, mb, p, Sig, Sinv, col, Smat, ldS)
    if not np.isfinite(f):
        return np.inf
    return f


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
def _normal_eq(ml, nf, nmom, J, w, Wm, WJ, resid, H, g):
    """WJ = W J; H = J' W J; g = J' W resid (W = diag(w) for DWLS, Wm for ML)."""
    if ml:
        for m in range(nmom):
            for fq in range(nf):
                s = 0.0
                for m2 in range(nmom):
                    s += Wm[m, m2] * J[m2, fq]
                WJ[m, fq] = s
    else:
        for m in range(nmom):
            for fq in range(nf):
                WJ[m, fq] = w[m] * J[m, fq]
    for a in range(nf):
        s = 0.0
        for m in range(nmom):
            s += WJ[m, a] * resid[m]
        g[a] = s
        for b in range(a, nf):
            s = 0.0
            for m in range(nmom):
                s += WJ[m, a] * J[m, b]
            H[a, b] = s
            H[b, a] = s


@jit
def _fit_one(ml, theta, fidx, nf, ent_kind, ent_r, ent_c, ent_par, ent_val, par_ptr, par_ent,
             nv, p, ma, mb, s_vec, w, ldS, max_iter, xtol,
             A, S, IA, B, T, C, J, H, HW, g, delta, th_new, resid, Sig, Sinv, col, Smat, Wm, WJ):
    """Levenberg-Marquardt from ``theta`` (DWLS: Gauss-Newton; ML: Fisher scoring).

    On return the scratch (B, C, resid, Sinv) describes the returned ``theta``.
    Returns (status, iterations).
    """
    nmom = ma.shape[0]
    npar = theta.shape[0]
    f = _objective(ml, theta, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA, B, T, C,
                   s_vec, w, ma, mb, resid, Sig, Sinv, col, Smat, ldS)
    if not np.isfinite(f):
        return (ST_ML_NOTPD if ml else ST_NONFINITE), 0
    if nf == 0 or max_iter == 0:
        # max_iter = 0: theta is the solution (found elsewhere); only SEs / statistics wanted
        return ST_OK, 0
    lam = 0.0
    it = 0
    while it < max_iter:
        it += 1
        _jacobian(fidx, nf, par_ptr, par_ent, ent_kind, ent_r, ent_c, ma, mb, B, C, J)
        if ml:
            _ml_weight(Sinv, ma, mb, Wm)
        _normal_eq(ml, nf, nmom, J, w, Wm, WJ, resid, H, g)
        gmax = 0.0
        for a in range(nf):
            if abs(g[a]) > gmax:
                gmax = abs(g[a])
        if gmax == 0.0:
            return ST_OK, it
        accepted = False
        tries = 0
        while not accepted and tries < 40:
            tries += 1
            for a in range(nf):
                delta[a] = g[a]
            if not _damped_solve(H, nf, lam, delta, HW):
                lam = 1e-8 if lam == 0.0 else lam * 10.0
                continue
            for q in range(npar):
                th_new[q] = theta[q]
            for a in range(nf):
                th_new[fidx[a]] += delta[a]
            fn = _objective(ml, th_new, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA, B,
                            T, C, s_vec, w, ma, mb, resid, Sig, Sinv, col, Smat, ldS)
            if fn <= f:
                accepted = True
                small = True
                for a in range(nf):
                    if abs(delta[a]) > xtol * (abs(th_new[fidx[a]]) + 1e-6):
                        small = False
                for q in range(npar):
                    theta[q] = th_new[q]
                fold = f
                f = fn
                lam = 0.0 if lam <= 1e-8 else lam * 0.1
                if small or (fold - fn) <= ftol * fold or fn == 0.0:
                    return ST_OK, it
            else:
                lam = 1e-8 if lam == 0.0 else lam * 10.0
        if not accepted:
            # no decrease possible along any damped direction: stationary point (to rounding)
            _objective(ml, theta, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA, B, T,
                       C, s_vec, w, ma, mb, resid, Sig, Sinv, col, Smat, ldS)
            return ST_OK, it
    return ST_NOCONV, it


# ----------------------------------------------------------------------------------------------
# fast path: SNP exogenous, every non-SNP path fixed (fix_measurement models under DWLS)
#   u = u0 + G a;  Sigma_tt = C0 + sum_k s_k Js_k + v u u';  Sigma_tS = v u;  Sigma_SS = v
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
def _fit_fast(theta, fidx, nf, ftype, Js, G, C0, u0, vfix, vpos, ma, mb, p, s_vec, w, max_iter, xtol,
              u, sig, J, WJ, H, HW, g, delta, th_new, resid):
    """Levenberg-Marquardt on the fast-path structure; leaves resid and J at the solution."""
    nmom = ma.shape[0]
    npar = theta.shape[0]
    v = _fast_sigma(theta, fidx, nf, ftype, Js, G, C0, u0, vfix, vpos, ma, mb, p, u, sig)
    f = 0.0
    for m in range(nmom):
        r = s_vec[m] - sig[m]
        resid[m] = r
        f += w[m] * r * r
    if not np.isfinite(f):
        return ST_NONFINITE, 0
    lam = 0.0
    it = 0
    while it < max_iter:
        it += 1
        _fast_jac(theta, fidx, nf, ftype, Js, G, v, ma, mb, u, J)
        _normal_eq(False, nf, nmom, J, w, H, WJ, resid, H, g)
        accepted = False
        tries = 0
        while not accepted and tries < 40:
            tries += 1
            for a in range(nf):
                delta[a] = g[a]
            if not _damped_solve(H, nf, lam, delta, HW):
                lam = 1e-8 if lam == 0.0 else lam * 10.0
                continue
            for q in range(npar):
                th_new[q] = theta[q]
            for a in range(nf):
                th_new[fidx[a]] += delta[a]
            vn = _fast_sigma(th_new, fidx, nf, ftype, Js, G, C0, u0, vfix, vpos, ma, mb, p, u, sig)
            fn = 0.0
            for m in range(nmom):
                r = s_vec[m] - sig[m]
                fn += w[m] * r * r
            if fn <= f:
                accepted = True
                small = True
                for a in range(nf):
                    if abs(delta[a]) > xtol * (abs(th_new[fidx[a]]) + 1e-6):
                        small = False
                for q in range(npar):
                    theta[q] = th_new[q]
                for m in range(nmom):
                    resid[m] = s_vec[m] - sig[m]
                v = vn
                fold = f
                f = fn
                lam = 0.0 if lam <= 1e-8 else lam * 0.1
                if small or (fold - fn) <= ftol * fold or fn == 0.0:
                    _fast_jac(theta, fidx, nf, ftype, Js, G, v, ma, mb, u, J)
                    return ST_OK, it
            else:
                lam = 1e-8 if lam == 0.0 else lam * 10.0
        if not accepted:
            v = _fast_sigma(theta, fidx, nf, ftype, Js, G, C0, u0, vfix, vpos, ma, mb, p, u, sig)
            _fast_jac(theta, fidx, nf, ftype, Js, G, v, ma, mb, u, J)
            return ST_OK, it
    return ST_NOCONV, it


# ----------------------------------------------------------------------------------------------
# the batch kernel
# ----------------------------------------------------------------------------------------------
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


@jit_exact
def _input_status(v, beta_i, se_i, k):
    """0 when a SNP's inputs are usable, else the status code naming the first kind of bad input
    (non-positive/non-finite variance, then a non-finite beta, then a non-positive/non-finite SE)."""
    if not (np.isfinite(v) and v > 0.0):
        return ST_BAD_VAR
    bad = 0
    for t in range(k):
        if not np.isfinite(beta_i[t]):
            bad = ST_BAD_BETA
    for t in range(k):
        if not (np.isfinite(se_i[t]) and se_i[t] > 0.0):
            bad = ST_BAD_SE
    return bad


@jit
def _snp_range(lo, hi, beta, se, var, S_LD, V_LD, I_LD, gc, varse2, v_pd_known,
               nv, p, obs_map, ma, mb, vidx, vidx_meat, ent_kind, ent_r, ent_c, ent_par, ent_val, par_ptr,
               par_ent, fidx, theta0, snpvar_par, ml, ml_wmode, max_iter, xtol, toler,
               smooth_check, q_ptr, q_obs, q_trait, wald_idx,
               fast, ftype, Js, G, C0, u0, vfix, vpos, block, LLD, wLD, elim_par, elim_mom,
               est, se_out, chisq, qsnp, zsmooth, wald, fmin, status, flags, iters):
    k = beta.shape[1]
    K1 = k + 1
    Kst = K1 * (K1 + 1) // 2
    nmom = ma.shape[0]
    nf = fidx.shape[0]
    npar = theta0.shape[1]
    n0 = theta0.shape[0]
    ng = q_ptr.shape[0] - 1
    nw = wald_idx.shape[0]
    mx = max(max(p, nf), max(nmom, K1))
    # ---- scratch, once per chunk
    Sf = np.empty((K1, K1))
    Vf = np.empty((Kst, Kst))
    tmpK = np.empty((Kst, Kst))
    VS = np.empty((k, k))
    zpre = np.empty(k)
    s_vec = np.empty(nmom)
    w = np.empty(nmom)
    Vsub = np.empty((nmom, nmom))
    Vch = np.empty((nmom, nmom))
    uvec = np.empty(p)
    VSc = np.empty((k, k))
    rs = np.empty(k)
    rs2 = np.empty(max(nmom - K1, 1))
    Z = np.empty((max(nf, 1), nmom))
    sigv = np.empty(nmom)
    Vmeat = np.empty((nmom, nmom))
    same_meat = True
    for m in range(nmom):
        if vidx_meat[m] != vidx[m]:
            same_meat = False
    A = np.empty((nv, nv))
    S = np.empty((nv, nv))
    IA = np.empty((nv, nv))
    B = np.empty((nv, nv))
    T = np.empty((nv, p))
    C = np.empty((nv, p))
    J = np.empty((nmom, max(nf, 1)))
    WJ = np.empty((nmom, max(nf, 1)))
    VL = np.empty((nmom, max(nf, 1)))
    H = np.empty((max(nf, 1), max(nf, 1)))
    HW = np.empty((max(nf, 1), max(nf, 1)))
    Br = np.empty((max(nf, 1), max(nf, 1)))
    M = np.empty((max(nf, 1), max(nf, 1)))
    Om = np.empty((max(nf, 1), max(nf, 1)))
    g = np.empty(max(nf, 1))
    delta = np.empty(max(nf, 1))
    theta = np.empty(npar)
    th_new = np.empty(npar)
    resid = np.empty(nmom)
    Sig = np.empty((p, p))
    Sinv = np.empty((p, p))
    Smat = np.empty((p, p))
    Wm = np.empty((nmom, nmom))
    col = np.empty(mx)
    tmpv = np.empty(mx)
    qv = np.empty(max(k, nw, 1))
    QM = np.empty((max(k, nw, 1), max(k, nw, 1)))
    for i in range(lo, hi):
        for q in range(npar):
            est[i, q] = np.nan
            se_out[i, q] = np.nan
        chisq[i] = np.nan
        for gq in range(ng):
            qsnp[i, gq] = np.nan
        zsmooth[i] = np.nan
        wald[i] = np.nan
        fmin[i] = np.nan
        flags[i] = 0
        iters[i] = 0
        v = var[i]
        bad = _input_status(v, beta[i], se[i], k)
        if bad != 0:
            status[i] = bad
            continue
        # ---- construction
        v_snp_into(se[i], I_LD, v, gc, VS)
        if not block:
            v_full_into(V_LD, VS, varse2, Vf)
        s_full_into(S_LD, beta[i], v, Sf)
        fl = 0
        for a in range(K1):
            for b in range(K1):
                tmpK[a, b] = Sf[a, b]
        if not _chol(tmpK, K1, 0.0):
            if not near_pd(Sf.copy(), Sf):
                status[i] = ST_NEARPD_FAIL
                continue
            fl |= FLAG_S_SMOOTHED
        if not v_pd_known:
            for a in range(Kst):
                for b in range(Kst):
                    tmpK[a, b] = Vf[a, b]
            if not _chol(tmpK, Kst, 0.0):
                if not near_pd(Vf.copy(), Vf):
                    status[i] = ST_NEARPD_FAIL
                    continue
                fl |= FLAG_V_SMOOTHED
        flags[i] = fl
        if smooth_check:
            if fl != 0:
                z_pre_into(beta[i], se[i], I_LD, gc, zpre)
                zm = 0.0
                for t in range(k):
                    zt = Sf[t + 1, 0] / np.sqrt(VS[t, t] if block else Vf[t + 1, t + 1])
                    dz = abs(zt - zpre[t])
                    if dz > zm:
                        zm = dz
                zsmooth[i] = zm
            else:
                zsmooth[i] = 0.0
        # ---- model moments
        if block:
            # V_full = blockdiag(varSNPSE^2, V_SNP, V_LD) and the model moments are vech(S_full)
            for m in range(nmom):
                s_vec[m] = Sf[ma[m], mb[m]]
            w[0] = 1.0 / varse2
            for t in range(k):
                w[1 + t] = 1.0 / VS[t, t]
            for t in range(nmom - K1):
                w[K1 + t] = wLD[t]
        else:
            for m in range(nmom):
                s_vec[m] = Sf[obs_map[ma[m]], obs_map[mb[m]]]
                for m2 in range(nmom):
                    Vsub[m, m2] = Vf[vidx[m], vidx[m2]]
                w[m] = 1.0 / Vsub[m, m]
        r0 = i if n0 > 1 else 0
        for q in range(npar):
            theta[q] = theta0[r0, q]
        if snpvar_par >= 0:
            theta[snpvar_par] = Sf[0, 0]
        ldS = 0.0
        if ml:
            for a in range(p):
                for b in range(p):
                    Smat[a, b] = Sf[obs_map[a], obs_map[b]]
            if not _chol(Smat, p, 0.0):
                status[i] = ST_NONFINITE
                continue
            for a in range(p):
                ldS += 2.0 * np.log(Smat[a, a])
        ne = elim_mom.shape[0]
        for e in range(ne):
            w[elim_mom[e]] = 0.0
        if fast:
            st, nit = _fit_fast(theta, fidx, nf, ftype, Js, G, C0, u0, vfix, vpos, ma, mb, p, s_vec, w,
                                max_iter, xtol, uvec, sigv, J, WJ, H, HW, g, delta, th_new, resid)
        else:
            st, nit = _fit_one(ml, theta, fidx, nf, ent_kind, ent_r, ent_c, ent_par, ent_val, par_ptr,
                               par_ent, nv, p, ma, mb, s_vec, w, ldS, max_iter, xtol,
                               A, S, IA, B, T, C, J, H, HW, g, delta, th_new, resid, Sig, Sinv, col,
                               Smat, Wm, WJ)
        iters[i] = nit
        for e in range(ne):
            # sigma at this moment excludes the eliminated variance: it takes up the residual
            theta[elim_par[e]] = resid[elim_mom[e]]
            resid[elim_mom[e]] = 0.0
        for q in range(npar):
            est[i, q] = theta[q]
        if ml:
            fmin[i] = _objective(ml, theta, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA,
                                 B, T, C, s_vec, w, ma, mb, resid, Sig, Sinv, col, Smat, ldS)
        else:
            fv = 0.0
            for m in range(nmom):
                fv += w[m] * resid[m] * resid[m]
            fmin[i] = fv
        if st != ST_OK:
            status[i] = st
            continue
        # ---- chi-square: eta' V^-1 eta over the model moments
        if block:
            for a in range(k):
                for b in range(k):
                    VSc[a, b] = VS[a, b]
            if _chol(VSc, k, 0.0):
                qq = resid[0] * resid[0] / varse2
                for t in range(k):
                    rs[t] = resid[1 + t]
                qq += _chol_quad(VSc, k, rs, tmpv)
                nld = nmom - K1
                for t in range(nld):
                    rs2[t] = resid[K1 + t]
                qq += _chol_quad(LLD, nld, rs2, tmpv)
                chisq[i] = qq
        else:
            for a in range(nmom):
                for b in range(nmom):
                    Vch[a, b] = Vsub[a, b]
            if _chol(Vch, nmom, 0.0):
                chisq[i] = _chol_quad(Vch, nmom, resid, tmpv)
        # ---- Q_SNP per factor: eta = (S - Sigma)[SNP, indicators], V = V_SNP[ind, ind]
        for gq in range(ng):
            n_ind = q_ptr[gq + 1] - q_ptr[gq]
            for a in range(n_ind):
                ta = q_trait[q_ptr[gq] + a]
                qv[a] = resid[q_obs[q_ptr[gq] + a]]  # moment (o, SNP) sits at vech position o
                for b in range(n_ind):
                    QM[a, b] = VS[ta, q_trait[q_ptr[gq] + b]]
            if _chol(QM, n_ind, 0.0):
                qsnp[i, gq] = _chol_quad(QM, n_ind, qv, tmpv)
        # ---- sandwich standard errors
        if nf > 0:
            if not fast:
                _jacobian(fidx, nf, par_ptr, par_ent, ent_kind, ent_r, ent_c, ma, mb, B, C, J)
            if ml:
                if ml_wmode == 1:
                    for a in range(p):
                        for b in range(p):
                            Sig[a, b] = Sf[obs_map[a], obs_map[b]]
                    _chol(Sig, p, 0.0)
                    _chol_inverse(Sig, p, Sinv, col)
                _ml_weight(Sinv, ma, mb, Wm)
            _normal_eq(ml, nf, nmom, J, w, Wm, WJ, resid, H, g)
            hmax = 0.0
            for a in range(nf):
                for b in range(nf):
                    HW[a, b] = H[a, b]
                if H[a, a] > hmax:
                    hmax = H[a, a]
            # R: solve(t(D) W D, tol = toler or machine epsilon) -> "computationally singular"
            if not _chol(HW, nf, max(toler, 2.220446049250313e-16) * hmax * nf):
                status[i] = ST_SINGULAR
                continue
            _chol_inverse(HW, nf, Br, col)
            if block and same_meat:
                # Z = Br (W J)'; Om = Z V Z' with V block diagonal
                for a in range(nf):
                    for m in range(nmom):
                        x = 0.0
                        for c in range(nf):
                            x += Br[a, c] * WJ[m, c]
                        Z[a, m] = x
                nld = nmom - K1
                for a in range(nf):
                    for b in range(a, nf):
                        if b != a and nw == 0:
                            continue
                        x = Z[a, 0] * Z[b, 0] * varse2
                        for t in range(k):
                            for t2 in range(k):
                                x += Z[a, 1 + t] * VS[t, t2] * Z[b, 1 + t2]
                        for t in range(nld):
                            za = Z[a, K1 + t]
                            for t2 in range(nld):
                                x += za * V_LD[t, t2] * Z[b, K1 + t2]
                        Om[a, b] = x
                        Om[b, a] = x
            else:
                # VL = Vsub WJ ; M = WJ' VL
                if not same_meat:
                    for m in range(nmom):
                        for m2 in range(nmom):
                            Vmeat[m, m2] = Vf[vidx_meat[m], vidx_meat[m2]]
                sandwich_into(Vsub if same_meat else Vmeat, WJ, Br, nmom, nf, VL, M, HW, Om)
            for a in range(nf):
                d = Om[a, a]
                se_out[i, fidx[a]] = np.sqrt(d) if d >= 0.0 else np.nan
            if nw > 0:
                for a in range(nw):
                    qv[a] = theta[fidx[wald_idx[a]]]
                    for b in range(nw):
                        QM[a, b] = Om[wald_idx[a], wald_idx[b]]
                if _chol(QM, nw, 0.0):
                    wald[i] = _chol_quad(QM, nw, qv, tmpv)
        status[i] = ST_OK


@jit_exact_parallel
def _gwas_parallel(nchunks, beta, se, var, S_LD, V_LD, I_LD, gc, varse2, v_pd_known,
                   nv, p, obs_map, ma, mb, vidx, vidx_meat, ent_kind, ent_r, ent_c, ent_par, ent_val, par_ptr,
                   par_ent, fidx, theta0, snpvar_par, ml, ml_wmode, max_iter, xtol, toler,
                   smooth_check, q_ptr, q_obs, q_trait, wald_idx,
                   fast, ftype, Js, G, C0, u0, vfix, vpos, block, LLD, wLD, elim_par, elim_mom,
                   est, se_out, chisq, qsnp, zsmooth, wald, fmin, status, flags, iters):
    n = beta.shape[0]
    step = (n + nchunks - 1) // nchunks
    for c in nb.prange(nchunks):
        lo = c * step
        hi = min(n, lo + step)
        if lo < hi:
            _snp_range(lo, hi, beta, se, var, S_LD, V_LD, I_LD, gc, varse2, v_pd_known,
                       nv, p, obs_map, ma, mb, vidx, vidx_meat, ent_kind, ent_r, ent_c, ent_par, ent_val,
                       par_ptr, par_ent, fidx, theta0, snpvar_par, ml, ml_wmode, max_iter, xtol,
                       toler, smooth_check, q_ptr, q_obs, q_trait, wald_idx,
                       fast, ftype, Js, G, C0, u0, vfix, vpos, block, LLD, wLD, elim_par, elim_mom,
                       est, se_out, chisq, qsnp, zsmooth, wald, fmin, status, flags, iters)


def _block_args(model, V_LD, k, v_pd_known):
    """Block mode: V_full is PD for every SNP and the model observes every trait in covstruc order,
    so V_sub = blockdiag(varSNPSE^2, V_SNP, V_LD) and its pieces are used directly."""
    K1 = k + 1
    nmom = len(model["ma"])
    vm = model.get("vidx_meat", model["vidx"])
    ok = (v_pd_known and nmom == K1 * (K1 + 1) // 2 and np.array_equal(model["vidx"], np.arange(nmom))
          and np.array_equal(vm, model["vidx"]))
    V_LD = np.asarray(V_LD, dtype=np.float64)
    if ok:
        try:
            L = np.ascontiguousarray(np.linalg.cholesky(V_LD))
        except np.linalg.LinAlgError:
            ok = False
    if not ok:
        m = max(V_LD.shape[0], 1)
        return False, np.eye(m), np.ones(m)
    return True, L, np.ascontiguousarray(1.0 / np.diag(V_LD))


def _fast_args(fast, npar, nmom, p, nf):
    if fast is None:
        z = np.zeros(0, np.int64)
        return (False, np.zeros(max(nf, 1), np.int64), np.zeros((nmom, max(nf, 1))),
                np.zeros((p, max(nf, 1))), np.zeros(nmom), np.zeros(p), 0.0, -1)
    return (True, fast["ftype"], fast["Js"], fast["G"], fast["C0"], fast["u0"], float(fast["vfix"]),
            int(fast["vpos"]))


def fast_structure(model, fidx, theta0, snp_index=0):
    """Precompute the fast-path structure, or None when the model does not have it.

    Needs: nothing points to the SNP; the SNP covaries with nothing; every path that does not
    start at the SNP is fixed; each free parameter is all-variance/covariance (not touching the
    SNP), all SNP paths, or the SNP variance.  Fixed values come from ``theta0`` (one row).
    """
    nv, p = int(model["nv"]), int(model["p"])
    kind, er, ec, ep, ev = (model["ent_kind"], model["ent_r"], model["ent_c"], model["ent_par"],
                            model["ent_val"])
    fidx = [int(q) for q in fidx]
    fpos = {q: i for i, q in enumerate(fidx)}
    th = np.asarray(theta0, dtype=np.float64).reshape(-1)
    nf = len(fidx)
    ftype = -np.ones(nf, np.int64)
    A0 = np.zeros((nv, nv))
    S0 = np.zeros((nv, nv))
    snp_paths = []          # (target, param position or -1, value)
    vpos, vfix = -1, None
    s_entries = []          # (i, j, param position)
    for e in range(len(kind)):
        q = int(ep[e])
        free = q >= 0 and q in fpos
        val = float(ev[e]) if q < 0 else float(th[q])
        r, c = int(er[e]), int(ec[e])
        if kind[e] == 0:
            if r == snp_index:
                return None
            if c == snp_index:
                snp_paths.append((r, fpos[q] if free else -1, val))
                if free:
                    if ftype[fpos[q]] not in (-1, 1):
                        return None
                    ftype[fpos[q]] = 1
            else:
                if free:
                    return None
                A0[r, c] = val
        else:
            if r == snp_index or c == snp_index:
                if r != c:
                    return None
                if free:
                    if ftype[fpos[q]] not in (-1, 2) or vpos not in (-1, fpos[q]):
                        return None
                    ftype[fpos[q]] = 2
                    vpos = fpos[q]
                else:
                    vfix = val
            else:
                if free:
                    if ftype[fpos[q]] not in (-1, 0):
                        return None
                    ftype[fpos[q]] = 0
                    s_entries.append((r, c, fpos[q]))
                else:
                    S0[r, c] = val
                    S0[c, r] = val
    if (ftype < 0).any():
        return None
    if vpos < 0 and vfix is None:
        vfix = 0.0
    try:
        T = np.linalg.inv(np.eye(nv) - A0)
    except np.linalg.LinAlgError:
        return None
    ma, mb = model["ma"], model["mb"]
    nmom = len(ma)
    Cfull = T @ S0 @ T.T
    C0 = np.array([0.0 if b == 0 else Cfull[a, b] for a, b in zip(ma, mb)])
    Js = np.zeros((nmom, max(nf, 1)))
    for i, j, f in s_entries:
        hi, hj = T[:, i], T[:, j]
        for m, (a, b) in enumerate(zip(ma, mb)):
            if b == 0:
                continue
            Js[m, f] += hi[a] * hj[b] + (hj[a] * hi[b] if i != j else 0.0)
    G = np.zeros((p, max(nf, 1)))
    u0 = np.zeros(p)
    for t, f, val in snp_paths:
        if f >= 0:
            G[:, f] += T[:p, t]
        else:
            u0 += T[:p, t] * val
    G[0] = 0.0
    u0[0] = 0.0
    # residual variances of observed indicators: one entry (i, i), nothing leaves variable i;
    # each only moves its own diagonal moment, which it fits exactly -> solved in closed form
    n_ent = {}
    for i, j, f in s_entries:
        n_ent[f] = n_ent.get(f, 0) + 1
    elim_pos, elim_mom = [], []
    for i, j, f in s_entries:
        if i == j and 1 <= i < p and n_ent[f] == 1 and np.allclose(T[:, i], np.eye(nv)[:, i]):
            m = [mm for mm, (a, b) in enumerate(zip(ma, mb)) if a == i and b == i][0]
            elim_pos.append(f)
            elim_mom.append(m)
    return {"ftype": ftype, "Js": Js, "G": np.ascontiguousarray(G), "C0": C0, "u0": u0,
            "vfix": float(vfix if vfix is not None else 0.0), "vpos": vpos,
            "elim_pos": np.array(elim_pos, np.int64), "elim_mom": np.array(elim_mom, np.int64)}


def reduce_fast(fast, fidx):
    """Drop the closed-form parameters from the iterative fit: (fast', fidx', elim_par, elim_mom)."""
    fidx = np.asarray(fidx, np.int64)
    ep = fast.get("elim_pos", np.zeros(0, np.int64))
    if len(ep) == 0:
        return fast, fidx, np.zeros(0, np.int64), np.zeros(0, np.int64)
    keep = np.array([f for f in range(len(fidx)) if f not in set(ep.tolist())], np.int64)
    vpos = int(fast["vpos"])
    red = dict(fast)
    red["ftype"] = np.ascontiguousarray(fast["ftype"][keep])
    red["Js"] = np.ascontiguousarray(fast["Js"][:, keep]) if len(keep) else np.zeros((fast["Js"].shape[0], 1))
    red["G"] = np.ascontiguousarray(fast["G"][:, keep]) if len(keep) else np.zeros((fast["G"].shape[0], 1))
    red["vpos"] = int(np.where(keep == vpos)[0][0]) if vpos >= 0 else -1
    return red, fidx[keep], fidx[ep], np.asarray(fast["elim_mom"], np.int64)


def gwas_batch(beta, se, var, S_LD, V_LD, I_LD, gc, varse2, v_pd_known, model, fidx, theta0,
               snpvar_par, *, ml=False, ml_wmode=0, max_iter=1000, xtol=1e-10, toler=0.0,
               smooth_check=False, q_ptr=None, q_obs=None, q_trait=None, wald_idx=None,
               fast=None, eliminate=True, parallel=None):
    """Fit one batch of SNPs.  ``model`` is a mapping of the compiled RAM arrays (see gsem.gwas).

    Returns a dict of arrays: est, se (n x npar), chisq, qsnp (n x groups), zsmooth, wald,
    status, flags, iters.
    """
    n = beta.shape[0]
    npar = theta0.shape[1]
    i64 = np.int64
    q_ptr = np.zeros(1, i64) if q_ptr is None else np.ascontiguousarray(q_ptr, i64)
    q_obs = np.zeros(0, i64) if q_obs is None else np.ascontiguousarray(q_obs, i64)
    q_trait = np.zeros(0, i64) if q_trait is None else np.ascontiguousarray(q_trait, i64)
    wald_idx = np.zeros(0, i64) if wald_idx is None else np.ascontiguousarray(wald_idx, i64)
    ng = q_ptr.shape[0] - 1
    out = {
        "est": np.empty((n, npar)), "se": np.empty((n, npar)), "chisq": np.empty(n),
        "qsnp": np.empty((n, ng)), "zsmooth": np.empty(n), "wald": np.empty(n), "fmin": np.empty(n),
        "status": np.empty(n, np.int64), "flags": np.empty(n, np.int64), "iters": np.empty(n, np.int64),
    }
    f64 = np.float64
    elim_par = np.zeros(0, i64)
    elim_mom = np.zeros(0, i64)
    if fast is not None and eliminate:
        fast, fidx, elim_par, elim_mom = reduce_fast(fast, fidx)
    args = (
        np.ascontiguousarray(beta, f64), np.ascontiguousarray(se, f64), np.ascontiguousarray(var, f64),
        np.ascontiguousarray(S_LD, f64), np.ascontiguousarray(V_LD, f64), np.ascontiguousarray(I_LD, f64),
        int(gc), float(varse2), bool(v_pd_known),
        int(model["nv"]), int(model["p"]), model["obs_map"], model["ma"], model["mb"], model["vidx"],
        model.get("vidx_meat", model["vidx"]),
        model["ent_kind"], model["ent_r"], model["ent_c"], model["ent_par"], model["ent_val"],
        model["par_ptr"], model["par_ent"], np.ascontiguousarray(fidx, i64),
        np.ascontiguousarray(theta0, f64), int(snpvar_par), bool(ml), int(ml_wmode), int(max_iter),
        float(xtol), float(toler), bool(smooth_check), q_ptr, q_obs, q_trait, wald_idx,
        *_fast_args(fast, npar, len(model["ma"]), int(model["p"]), len(fidx)),
        *_block_args(model, V_LD, beta.shape[1], bool(v_pd_known)),
        elim_par, elim_mom,
        out["est"], out["se"], out["chisq"], out["qsnp"], out["zsmooth"], out["wald"], out["fmin"],
        out["status"], out["flags"], out["iters"],
    )
    if parallel is None:
        parallel = n >= 2048
    if n == 0:
        return out
    if parallel:
        nchunks = max(1, min(n // 256, 8 * nb.get_num_threads()))
        _gwas_parallel(nchunks, *args)
    else:
        _snp_range(0, n, *args)
    return out


@jit_exact
def _fit_cov_impl(s_vec, w, ldS, nv, p, ma, mb, ent_kind, ent_r, ent_c, ent_par, ent_val, par_ptr,
                  par_ent, fidx, theta, ml, max_iter, xtol):
    nmom = ma.shape[0]
    nf = fidx.shape[0]
    npar = theta.shape[0]
    mf = max(nf, 1)
    A = np.empty((nv, nv))
    S = np.empty((nv, nv))
    IA = np.empty((nv, nv))
    B = np.empty((nv, nv))
    T = np.empty((nv, p))
    C = np.empty((nv, p))
    J = np.empty((nmom, mf))
    WJ = np.empty((nmom, mf))
    H = np.empty((mf, mf))
    HW = np.empty((mf, mf))
    g = np.empty(mf)
    delta = np.empty(mf)
    th_new = np.empty(npar)
    resid = np.empty(nmom)
    Sig = np.empty((p, p))
    Sinv = np.empty((p, p))
    Smat = np.empty((p, p))
    Wm = np.empty((nmom, nmom))
    col = np.empty(max(max(p, mf), nmom))
    st, it = _fit_one(ml, theta, fidx, nf, ent_kind, ent_r, ent_c, ent_par, ent_val, par_ptr,
                      par_ent, nv, p, ma, mb, s_vec, w, ldS, max_iter, xtol,
                      A, S, IA, B, T, C, J, H, HW, g, delta, th_new, resid, Sig, Sinv, col, Smat,
                      Wm, WJ)
    sig = np.empty(nmom)
    for m in range(nmom):
        sig[m] = C[ma[m], mb[m]]
    return st, it, sig


def fit_cov(s_vec, w, model, fidx, theta0, *, ml=False, max_iter=500, xtol=1e-12):
    """Fit one covariance (vech ``s_vec`` over the model's observed variables) by DWLS with
    weights ``w`` or by ML.  Returns (theta, status, iterations, implied vech)."""
    theta = np.array(theta0, dtype=np.float64, copy=True)
    ldS = 0.0
    ma, mb, p = model["ma"], model["mb"], int(model["p"])
    if ml:
        Sm = np.empty((p, p))
        for m in range(len(ma)):
            Sm[ma[m], mb[m]] = Sm[mb[m], ma[m]] = s_vec[m]
        sign, ldS = np.linalg.slogdet(Sm)
        if sign <= 0:
            return theta, ST_NONFINITE, 0, np.full(len(ma), np.nan)
    st, it, sig = _fit_cov_impl(np.ascontiguousarray(s_vec, np.float64), np.ascontiguousarray(w, np.float64),
                                float(ldS), int(model["nv"]), p, ma, mb, model["ent_kind"], model["ent_r"],
                                model["ent_c"], model["ent_par"], model["ent_val"], model["par_ptr"],
                                model["par_ent"], np.ascontiguousarray(fidx, np.int64), theta, bool(ml),
                                int(max_iter), float(xtol))
    return theta, int(st), int(it), sig


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
CF_RIDGE = 1e4        # l_i^2 |phi| > CF_RIDGE * max_i S_ii: the fit is running off along a ridge
CF_LMAX = 1e5         # |l_i| > CF_LMAX (l_1 = 1): the scaling trait's loading vanishes


@jit
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


@jit
def _cf_normal(x, k, ws, wld, pi, pj, r, J, H, g, s, sld):
    """Exact variable-projection Jacobian J = d model / d loadings (c and phi re-optimised),
    H = J' W J, g = J' W r (n = k - 1 loadings)."""
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
        t = j + 1                        # trait whose loading is x[j]
        # dc/dl_t = (w_t s_t - 2 c w_t l_t) / den
        dc = (ws[t] * s[t] - 2.0 * c * ws[t] * x[j]) / den if den > 0.0 else 0.0
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
        for q in range(pi.shape[0]):
            a = pi[q]
            b = pj[q]
            la = 1.0 if a == 0 else x[a - 1]
            lb = 1.0 if b == 0 else x[b - 1]
            dp = (lb if a == t else 0.0) + (la if b == t else 0.0)
            J[k + q, j] = dp * phi + la * lb * dphi
    for a in range(n):
        gs = 0.0
        for m in range(nr):
            wm = ws[m] if m < k else wld[m - k]
            gs += wm * J[m, a] * r[m]
        g[a] = gs
        for b2 in range(a, n):
            hs = 0.0
            for m in range(nr):
                wm = ws[m] if m < k else wld[m - k]
                hs += wm * J[m, a] * J[m, b2]
            H[a, b2] = hs
            H[b2, a] = hs


@jit
def _cf_trial(x, d, n, k, s, ws, sld, wld, pi, pj, xt, rt):
    """xt = x + d (loadings), its projected c / phi and residuals rt; returns the objective."""
    for a in range(k + 1):
        xt[a] = x[a]
    for a in range(n):
        xt[a] = x[a] + d[a]
    return _cf_eval(xt, k, s, ws, sld, wld, pi, pj, rt)


@jit
def _cf_lm(x, k, s, ws, sld, wld, pi, pj, smax, max_iter, r, J, H, HW, g, d, xn, Hn, gp, rp, d2, xt,
           rt):
    """Minimise over the loadings (variable projection) from x (in place).

    Each iteration compares the Gauss-Newton step with the Newton step (finite-difference Hessian
    of the exact gradient, when positive definite) and takes the lower objective: Newton converges
    fast near the minimum, Gauss-Newton strides along flat valleys and ridges; damped
    (Levenberg-Marquardt) steps when neither lowers the objective.
    Returns (status, f, iterations): ST_OK, ST_NOCONV or ST_NOFINITE (ridge)."""
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
        # finite-difference Hessian (of -f/2) from the exact gradient g = J'W r at x +- h e_b
        for b in range(n):
            h = 1e-5 * (abs(x[b]) + 1e-3)
            for q in range(k + 1):
                xt[q] = x[q]
            xt[b] = x[b] + h
            _cf_eval(xt, k, s, ws, sld, wld, pi, pj, rt)
            _cf_normal(xt, k, ws, wld, pi, pj, rt, J, HW, gp, s, sld)
            for a in range(n):
                Hn[a, b] = gp[a]
            xt[b] = x[b] - h
            _cf_eval(xt, k, s, ws, sld, wld, pi, pj, rt)
            _cf_normal(xt, k, ws, wld, pi, pj, rt, J, HW, gp, s, sld)
            for a in range(n):
                Hn[a, b] = -(Hn[a, b] - gp[a]) / (2.0 * h)
        for a in range(n):
            for b in range(a + 1, n):
                t = 0.5 * (Hn[a, b] + Hn[b, a])
                Hn[a, b] = t
                Hn[b, a] = t
        _cf_normal(x, k, ws, wld, pi, pj, r, J, H, g, s, sld)
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
    return ST_NOCONV, f, it


@jit
def _cf_range(lo, hi, beta, se, var, S_LD, V_LD, I_LD, gc, varse2, v_pd_known, starts, n_always,
              max_iter, pidx, theta, fmin, status, iters):
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
        # score every start by its projected objective; the LM runs from the warm start (row 0)
        # and then from the best-scoring others: n_always runs, more only while none converged
        for st in range(nst):
            for a in range(k - 1):
                x[a] = starts[st, a]
            fs = _cf_eval(x, k, s, ws, sld, wld, pi, pj, r)
            score[st] = fs if np.isfinite(fs) else np.inf
            used[st] = False
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
            code, f, it = _cf_lm(x, k, s, ws, sld, wld, pi, pj, smax, max_iter, r, J, H, HW, g, d, xn,
                                 Hn, gp, rp, d2, xt, rt)
            nit += it
            if code == ST_OK:
                if best_st != ST_OK or f < best_f:
                    best_f = f
                    best_st = ST_OK
                    for a in range(n):
                        xb[a] = x[a]
            elif best_st != ST_OK and code == ST_NOFINITE:
                best_st = ST_NOFINITE
            if run + 1 >= n_always and best_st == ST_OK:
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


@jit_exact_parallel
def _cf_parallel(nchunks, beta, se, var, S_LD, V_LD, I_LD, gc, varse2, v_pd_known, starts, n_always,
                 max_iter, pidx, theta, fmin, status, iters):
    n = beta.shape[0]
    step = (n + nchunks - 1) // nchunks
    for c in nb.prange(nchunks):
        lo = c * step
        hi = min(n, lo + step)
        if lo < hi:
            _cf_range(lo, hi, beta, se, var, S_LD, V_LD, I_LD, gc, varse2, v_pd_known, starts,
                      n_always, max_iter, pidx, theta, fmin, status, iters)


def commonfactor_fit(beta, se, var, S_LD, V_LD, I_LD, gc, varse2, v_pd_known, starts, pidx, npar, *,
                     n_always=1, max_iter=500, parallel=None):
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
    args = (np.ascontiguousarray(beta, f64), np.ascontiguousarray(se, f64), np.ascontiguousarray(var, f64),
            np.ascontiguousarray(S_LD, f64), np.ascontiguousarray(V_LD, f64),
            np.ascontiguousarray(I_LD, f64), int(gc), float(varse2), bool(v_pd_known),
            np.ascontiguousarray(starts, f64), int(n_always), int(max_iter),
            np.ascontiguousarray(pidx, np.int64),
            theta, fmin, status, iters)
    if parallel is None:
        parallel = n >= 2048
    if parallel:
        _cf_parallel(max(1, min(n // 256, 8 * nb.get_num_threads())), *args)
    else:
        _cf_range(0, n, *args)
    return theta, fmin, status, iters
