"""RAM-form SEM in numba: implied covariance, its analytic Jacobian, the DWLS / ML objective and
the Levenberg-Marquardt fit used by every Genomic SEM kernel.

The model arrives compiled (see :mod:`polgen.gsem.gwas_plan` / ``CompiledModel.arrays()``) as a
flat *entry layout*: entry ``e`` puts parameter ``ent_par[e]`` (or, when ``-1``, the fixed value
``ent_val[e]``) into cell ``(ent_r[e], ent_c[e])`` of ``A`` (``ent_kind[e] == 0``, paths) or of the
symmetric ``S`` (``1``, (co)variances) over ``nv`` variables, the first ``p`` observed;
``par_ptr`` / ``par_ent`` list the entries of each parameter (CSR) and ``ma`` / ``mb`` the
variable pair of each vech moment.  ``Sigma = B S B'`` with ``B = (I - A)^-1``, observed block.

:func:`implied_jacobian_into` is the one implied-covariance kernel for callers outside the GWAS
batch kernels (:func:`implied_jacobian` is its Python wrapper).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from polgen.kernels._jit import jit, jit_exact
from polgen.kernels.gwas_codes import ST_ML_NOTPD, ST_NOCONV, ST_NONFINITE, ST_OK, ftol
from polgen.kernels.linalg import _chol, _chol_inverse, _damped_solve, _inv_gj

__all__ = ["RamLayout", "ram_layout", "implied_jacobian_into", "implied_jacobian", "fit_cov"]

#: A compiled RAM model as the batch kernels take it: ``nv`` variables, the first ``p`` observed;
#: ``obs_map`` (observed variable -> S_full row), ``ma``/``mb`` (vech moments), ``vidx`` /
#: ``vidx_meat`` (V_full rows of the moments for the weights / the sandwich meat); the entry
#: layout ``ent_kind, ent_r, ent_c, ent_par, ent_val`` and per parameter ``par_ptr``/``par_ent``.
RamLayout = namedtuple(
    "RamLayout",
    [
        "nv",
        "p",
        "obs_map",
        "ma",
        "mb",
        "vidx",
        "vidx_meat",
        "ent_kind",
        "ent_r",
        "ent_c",
        "ent_par",
        "ent_val",
        "par_ptr",
        "par_ent",
    ],
)


def _getter(model):
    """Field access ``get(name[, default])`` for a compiled model given as a mapping
    (``CompiledModel.arrays()``) or as an object with those attributes."""
    if hasattr(model, "__getitem__"):

        def get(k, *default):
            try:
                return model[k]
            except KeyError:
                if default:
                    return default[0]
                raise

        return get
    return lambda k, *default: getattr(model, k, *default)


def ram_layout(model):
    """:class:`RamLayout` of a compiled model (mapping or object), arrays passed through as given
    (the compiler emits C-contiguous int64 / float64); ``vidx_meat`` defaults to ``vidx``."""
    get = _getter(model)
    vidx = get("vidx")
    vm = get("vidx_meat", None)
    return RamLayout(
        int(get("nv")),
        int(get("p")),
        get("obs_map"),
        get("ma"),
        get("mb"),
        vidx,
        vidx if vm is None else vm,
        get("ent_kind"),
        get("ent_r"),
        get("ent_c"),
        get("ent_par"),
        get("ent_val"),
        get("par_ptr"),
        get("par_ent"),
    )


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
def _objective(
    ml,
    theta,
    ent_kind,
    ent_r,
    ent_c,
    ent_par,
    ent_val,
    nv,
    p,
    A,
    S,
    IA,
    B,
    T,
    C,
    s_vec,
    w,
    ma,
    mb,
    resid,
    Sig,
    Sinv,
    col,
    Smat,
    ldS,
):
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
def _fit_one(
    ml,
    theta,
    fidx,
    nf,
    ent_kind,
    ent_r,
    ent_c,
    ent_par,
    ent_val,
    par_ptr,
    par_ent,
    nv,
    p,
    ma,
    mb,
    s_vec,
    w,
    ldS,
    max_iter,
    xtol,
    A,
    S,
    IA,
    B,
    T,
    C,
    J,
    H,
    HW,
    g,
    delta,
    th_new,
    resid,
    Sig,
    Sinv,
    col,
    Smat,
    Wm,
    WJ,
):
    """Levenberg-Marquardt from ``theta`` (DWLS: Gauss-Newton; ML: Fisher scoring).

    On return the scratch (B, C, resid, Sinv) describes the returned ``theta``.
    Returns (status, iterations).
    """
    nmom = ma.shape[0]
    npar = theta.shape[0]
    f = _objective(
        ml,
        theta,
        ent_kind,
        ent_r,
        ent_c,
        ent_par,
        ent_val,
        nv,
        p,
        A,
        S,
        IA,
        B,
        T,
        C,
        s_vec,
        w,
        ma,
        mb,
        resid,
        Sig,
        Sinv,
        col,
        Smat,
        ldS,
    )
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
            fn = _objective(
                ml,
                th_new,
                ent_kind,
                ent_r,
                ent_c,
                ent_par,
                ent_val,
                nv,
                p,
                A,
                S,
                IA,
                B,
                T,
                C,
                s_vec,
                w,
                ma,
                mb,
                resid,
                Sig,
                Sinv,
                col,
                Smat,
                ldS,
            )
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
            _objective(
                ml,
                theta,
                ent_kind,
                ent_r,
                ent_c,
                ent_par,
                ent_val,
                nv,
                p,
                A,
                S,
                IA,
                B,
                T,
                C,
                s_vec,
                w,
                ma,
                mb,
                resid,
                Sig,
                Sinv,
                col,
                Smat,
                ldS,
            )
            return ST_OK, it
    return ST_NOCONV, it


@jit_exact
def _fit_cov_impl(
    s_vec,
    w,
    ldS,
    nv,
    p,
    ma,
    mb,
    ent_kind,
    ent_r,
    ent_c,
    ent_par,
    ent_val,
    par_ptr,
    par_ent,
    fidx,
    theta,
    ml,
    max_iter,
    xtol,
):
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
    st, it = _fit_one(
        ml,
        theta,
        fidx,
        nf,
        ent_kind,
        ent_r,
        ent_c,
        ent_par,
        ent_val,
        par_ptr,
        par_ent,
        nv,
        p,
        ma,
        mb,
        s_vec,
        w,
        ldS,
        max_iter,
        xtol,
        A,
        S,
        IA,
        B,
        T,
        C,
        J,
        H,
        HW,
        g,
        delta,
        th_new,
        resid,
        Sig,
        Sinv,
        col,
        Smat,
        Wm,
        WJ,
    )
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
    st, it, sig = _fit_cov_impl(
        np.ascontiguousarray(s_vec, np.float64),
        np.ascontiguousarray(w, np.float64),
        float(ldS),
        int(model["nv"]),
        p,
        ma,
        mb,
        model["ent_kind"],
        model["ent_r"],
        model["ent_c"],
        model["ent_par"],
        model["ent_val"],
        model["par_ptr"],
        model["par_ent"],
        np.ascontiguousarray(fidx, np.int64),
        theta,
        bool(ml),
        int(max_iter),
        float(xtol),
    )
    return theta, int(st), int(it), sig


# ----------------------------------------------------------------------------------------------
# public: Sigma and d vech(Sigma) / d theta at one theta
# ----------------------------------------------------------------------------------------------
@jit
def implied_jacobian_into(theta, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, ma, mb, par_ptr, par_ent, sigma, jac):
    """Implied covariance ``sigma`` (p x p) and Jacobian ``jac`` (nmom x npar, row ``m`` the moment
    ``(ma[m], mb[m])``, column ``q`` the parameter ``q``) of the RAM model at ``theta`` (npar).

    ``sigma`` is exactly symmetric (the lower triangle ``C[a, b]``, ``a >= b``, mirrored), as the
    GWAS kernels read their moments.  Returns False (outputs unspecified) when ``I - A`` is
    singular.  Allocates its work arrays.
    """
    npar = par_ptr.shape[0] - 1
    nmom = ma.shape[0]
    A = np.empty((nv, nv))
    S = np.empty((nv, nv))
    IA = np.empty((nv, nv))
    B = np.empty((nv, nv))
    T = np.empty((nv, p))
    C = np.empty((nv, p))
    if not _implied(theta, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA, B, T, C):
        return False
    for a in range(p):
        for b in range(a + 1):
            sigma[a, b] = C[a, b]
            sigma[b, a] = C[a, b]
    fidx = np.arange(npar)
    J = np.empty((nmom, max(npar, 1)))
    _jacobian(fidx, npar, par_ptr, par_ent, ent_kind, ent_r, ent_c, ma, mb, B, C, J)
    for m in range(nmom):
        for q in range(npar):
            jac[m, q] = J[m, q]
    return True


def implied_jacobian(model, theta):
    """``(Sigma, jac)`` of :func:`implied_jacobian_into` for a compiled model (mapping or object with
    ``nv, p, ma, mb, ent_kind, ent_r, ent_c, ent_par, ent_val, par_ptr, par_ent``); NaN-filled
    when ``I - A`` is singular."""
    get = _getter(model)
    i64 = np.int64
    arr = {
        k: np.ascontiguousarray(get(k), i64)
        for k in ("ent_kind", "ent_r", "ent_c", "ent_par", "ma", "mb", "par_ptr", "par_ent")
    }
    p = int(get("p"))
    npar = arr["par_ptr"].shape[0] - 1
    sigma = np.empty((p, p))
    jac = np.empty((arr["ma"].shape[0], npar))
    ok = implied_jacobian_into(
        np.ascontiguousarray(theta, np.float64),
        arr["ent_kind"],
        arr["ent_r"],
        arr["ent_c"],
        arr["ent_par"],
        np.ascontiguousarray(get("ent_val"), np.float64),
        int(get("nv")),
        p,
        arr["ma"],
        arr["mb"],
        arr["par_ptr"],
        arr["par_ent"],
        sigma,
        jac,
    )
    if not ok:
        sigma[:] = np.nan
        jac[:] = np.nan
    return sigma, jac
