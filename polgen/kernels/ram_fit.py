"""RAM-form SEM fit in numba: the DWLS / ML objective, the normal equations and the
Levenberg-Marquardt fit (Gauss-Newton for DWLS, Fisher scoring for ML) over the entry layout of
:mod:`polgen.kernels.ram`, and :func:`fit_cov` (one covariance matrix, e.g. the no-SNP model).

The estimator is a compile-time choice: the kernels take ``ml`` as ``None`` (DWLS) or ``True``
(ML) and test it only as ``ml is None``, a branch numba removes before typing when ``ml`` is
``None``; each estimator is its own compiled (and cached) specialisation and a first DWLS call
compiles no ML code."""

from __future__ import annotations

import numpy as np

from polgen.kernels._jit import jit
from polgen.kernels.gwas_codes import ST_ML_NOTPD, ST_NOCONV, ST_NONFINITE, ST_OK, ftol
from polgen.kernels.linalg import _chol, _chol_inverse, _damped_solve
from polgen.kernels.ram import _implied, _jacobian
from polgen.kernels.ram_steps import (
    _load_state,
    _normal_eq,
    _normal_eq_ml,
    _save_state,
    _secant_reset,
    _secant_update,
    sv_size,
)

__all__ = ["fit_cov"]


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
    if ml is not None:
        f = _ml_pieces(C, s_vec, ma, mb, p, Sig, Sinv, col, Smat, ldS)
    if not np.isfinite(f):
        return np.inf
    return f


#: DWLS step extrapolation in :func:`_fit_one`: after an accepted step whose direction is within
#: this cosine of the previous one, further steps of 1, 2, 4, ... times it are tried (at most
#: EXTRAP_MAX) while the objective falls
EXTRAP_COS = 0.9
EXTRAP_MAX = 10
#: first Marquardt damping after a rejected Gauss-Newton step of a fit with secant steps (the GWAS
#: RAM fit); 1e-8 (kept by ML and plain Gauss-Newton) retried a practically undamped step up to
#: five times before the damping changed it: on 20k bench SNPs of fix_measurement=False 1e-3 takes
#: 15% fewer objective evaluations (iterations +0.25%, the same statuses, estimates within 1e-6 SE)
LAM0_SECANT = 1e-3


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
    qn,
    qn_keep,
    fio,
    sv,
):
    """Levenberg-Marquardt from ``theta`` (DWLS: Gauss-Newton; ML: Fisher scoring).

    DWLS with a ``qn`` scratch (:func:`polgen.kernels.ram_steps.qn_rows` rows; 0: Gauss-Newton)
    adds a structured secant term to J'WJ (see :mod:`polgen.kernels.ram_steps`); a failed step of
    that model is retried as Gauss-Newton.  ``qn_keep`` continues the previous call's secant state.

    ``fio`` (1 element): on entry the objective at ``theta`` when the scratch already describes
    ``theta`` (a previous call's or :func:`polgen.kernels.ram_ridge._ridge_jump`'s end), else NaN
    (evaluated here); on return the objective at the returned ``theta``.  ``sv``
    (:func:`polgen.kernels.ram_steps.sv_size` elements, or fewer: not used) keeps the scratch of
    the last accepted point of a DWLS extrapolation, restored instead of re-evaluated (same bits).

    ``ml`` is ``None`` for DWLS or ``True`` for ML: numba prunes the ``ml is None`` branches while
    compiling when ``ml`` is None, so a DWLS caller never compiles the ML objective and weight.

    On return the scratch (B, C, resid, Sinv) describes the returned ``theta``.  Returns (status,
    iterations)."""
    nmom = ma.shape[0]
    npar = theta.shape[0]
    f = fio[0]
    if not (f == f):
        f = _objective(
            ml, theta, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA, B, T, C,
            s_vec, w, ma, mb, resid, Sig, Sinv, col, Smat, ldS,
        )  # fmt: skip
        fio[0] = f
    if not np.isfinite(f):
        if ml is None:
            return ST_NONFINITE, 0
        return ST_ML_NOTPD, 0
    if nf == 0 or max_iter == 0:
        # max_iter = 0: theta is the solution (found elsewhere); only SEs / statistics wanted
        return ST_OK, 0
    lam = 0.0
    it = 0
    use_qn = ml is None and nf >= 2 and qn.shape[0] >= nmom + 2 * nf + 6
    qb = nmom + nf  # qn rows: J of the last step's start | S2 (nf) | g, step, y#, S2 s, theta0 | flag | HA (nf)
    if use_qn and not qn_keep:
        _secant_reset(nf, nmom, qn)
    # DWLS step extrapolation: the previous accepted direction kept in the ML-only scratch Wm
    extrap = ml is None and Wm.shape[1] >= nf
    keep_sv = sv.shape[0] >= nv * nv + nv * p + nmom  # sv_size
    prev = Wm[0]
    have_prev = False
    while it < max_iter:
        it += 1
        _jacobian(fidx, nf, par_ptr, par_ent, ent_kind, ent_r, ent_c, ma, mb, B, C, J)
        if ml is not None:
            _ml_weight(Sinv, ma, mb, Wm)
            _normal_eq_ml(nf, nmom, J, Wm, WJ, resid, H, g)
        else:
            _normal_eq(nf, nmom, J, w, WJ, resid, H, g)
        gmax = 0.0
        for a in range(nf):
            if abs(g[a]) > gmax:
                gmax = abs(g[a])
        if gmax == 0.0:
            fio[0] = f
            return ST_OK, it
        aug = use_qn
        if use_qn:
            if qn[qb + 5, 0] != 0.0:
                _secant_update(nf, nmom, J, w, resid, g, qn)
            for a in range(nf):
                qn[qb + 4, a] = theta[fidx[a]]
                for b in range(nf):
                    qn[qb + 6 + a, b] = H[a, b] + qn[nmom + a, b]
        accepted = False
        tries = 0
        while not accepted and tries < 40:
            tries += 1
            for a in range(nf):
                delta[a] = g[a]
            if aug:
                if not _damped_solve(qn[qb + 6 : qb + 6 + nf], nf, lam, delta, HW):
                    aug = False
                    continue
            elif not _damped_solve(H, nf, lam, delta, HW):
                lam = 1e-8 if lam == 0.0 else lam * 10.0
                continue
            for q in range(npar):
                th_new[q] = theta[q]
            for a in range(nf):
                th_new[fidx[a]] += delta[a]
            fn = _objective(
                ml, th_new, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA, B, T, C,
                s_vec, w, ma, mb, resid, Sig, Sinv, col, Smat, ldS,
            )  # fmt: skip
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
                if ml is None and not small and extrap:
                    # an accepted step in the direction of the previous one: the fit is crawling
                    # along a valley (slow linear convergence, or a ridge running off); go on
                    # along it, doubling the step while the objective keeps falling
                    dd = 0.0
                    pp = 0.0
                    dp = 0.0
                    for a in range(nf):
                        dd += delta[a] * delta[a]
                        pp += prev[a] * prev[a]
                        dp += delta[a] * prev[a]
                    if have_prev and dp > EXTRAP_COS * np.sqrt(dd * pp):
                        mult = 1.0
                        failed = False
                        if keep_sv:
                            _save_state(B, C, resid, nv, p, nmom, sv)
                        for _x in range(EXTRAP_MAX):
                            for a in range(nf):
                                th_new[fidx[a]] = theta[fidx[a]] + mult * delta[a]
                            fx = _objective(
                                ml, th_new, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA, B, T,
                                C, s_vec, w, ma, mb, resid, Sig, Sinv, col, Smat, ldS,
                            )  # fmt: skip
                            if fx < f:
                                for a in range(nf):
                                    theta[fidx[a]] = th_new[fidx[a]]
                                f = fx
                                mult *= 2.0
                                if keep_sv:
                                    _save_state(B, C, resid, nv, p, nmom, sv)
                            else:
                                failed = True
                                break
                        if failed:
                            # the scratch must describe theta: restored after a failed trial
                            if keep_sv:
                                _load_state(B, C, resid, nv, p, nmom, sv)
                            else:
                                f = _objective(
                                    ml, theta, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA, B,
                                    T, C, s_vec, w, ma, mb, resid, Sig, Sinv, col, Smat, ldS,
                                )  # fmt: skip
                    for a in range(nf):
                        prev[a] = delta[a]
                    have_prev = True
                lam = 0.0 if lam <= 1e-8 else lam * 0.1
                if use_qn:  # the secant pair of this step, completed at the next iteration's J
                    for a in range(nf):
                        qn[qb + 1, a] = theta[fidx[a]] - qn[qb + 4, a]
                        qn[qb, a] = g[a]
                        for m in range(nmom):
                            qn[m, a] = J[m, a]
                    qn[qb + 5, 0] = 1.0
                if small or (fold - f) <= ftol * fold or f == 0.0:
                    fio[0] = f
                    return ST_OK, it
            elif aug:
                aug = False  # the augmented model's step failed: the Gauss-Newton step
            else:
                lam = (LAM0_SECANT if use_qn else 1e-8) if lam == 0.0 else lam * 10.0
        if not accepted:
            # no decrease possible along any damped direction: stationary point (to rounding)
            fio[0] = _objective(
                ml, theta, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA, B, T, C,
                s_vec, w, ma, mb, resid, Sig, Sinv, col, Smat, ldS,
            )  # fmt: skip
            return ST_OK, it
    fio[0] = f
    return ST_NOCONV, it


def fit_cov(s_vec, w, model, fidx, theta0, *, ml=False, max_iter=500, xtol=1e-12, secant=False):
    """Fit one covariance (vech ``s_vec`` of the model's observed variables) by DWLS with weights
    ``w`` (``secant``: with secant steps) or ML.  Returns (theta, status, iterations, implied vech)."""
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
    s_vec = np.ascontiguousarray(s_vec, np.float64)
    w = np.ascontiguousarray(w, np.float64)
    fidx = np.ascontiguousarray(fidx, np.int64)
    nv, nmom, nf, npar = int(model["nv"]), len(ma), len(fidx), len(theta)
    mf = max(nf, 1)
    e = np.empty
    # _fit_one called from Python (no wrapper kernel: one compilation less on a first call); the
    # scratch as it takes it: A S IA B (nv x nv), T C (nv x p), J (nmom x nf), H HW, g delta, ...
    A, S, IA, B = e((nv, nv)), e((nv, nv)), e((nv, nv)), e((nv, nv))
    T, C = e((nv, p)), e((nv, p))
    J, WJ, H, HW = e((nmom, mf)), e((nmom, mf)), e((mf, mf)), e((mf, mf))
    Sig, Sinv, Smat, Wm = e((p, p)), e((p, p)), e((p, p)), e((nmom, nmom))
    st, it = _fit_one(
        True if ml else None,  # None: DWLS, the ML code not compiled
        theta,
        fidx,
        nf,
        model["ent_kind"],
        model["ent_r"],
        model["ent_c"],
        model["ent_par"],
        model["ent_val"],
        model["par_ptr"],
        model["par_ent"],
        nv,
        p,
        ma,
        mb,
        s_vec,
        w,
        float(ldS),
        int(max_iter),
        float(xtol),
        A,
        S,
        IA,
        B,
        T,
        C,
        J,
        H,
        HW,
        e(mf),
        e(mf),
        e(npar),
        e(nmom),
        Sig,
        Sinv,
        e(max(max(p, mf), nmom)),
        Smat,
        Wm,
        WJ,
        e((nmom + 2 * mf + 6 if secant else 0, mf)),  # the secant scratch (0 rows: Gauss-Newton)
        False,
        np.full(1, np.nan),
        e(sv_size(nv, p, nmom)),
    )
    return theta, int(st), int(it), C[ma, mb].copy()
