"""The per-SNP loop of the Genomic SEM GWAS batch kernel (:func:`polgen.kernels.gwas.gwas_batch`):
construction of S_full / V_full with nearPD smoothing, the fit (fast path or RAM fit), chi-square,
Q_SNP, sandwich SEs and the Wald statistic, over a range of SNPs (big batches run chunks of it on
threads, see :mod:`polgen.kernels._threads`).  The arrays arrive as the named tuples of :mod:`polgen.kernels.gwas`."""

from __future__ import annotations

import numpy as np

from polgen.kernels._jit import jit
from polgen.kernels.gwas_codes import (
    FLAG_S_SMOOTHED,
    FLAG_V_SMOOTHED,
    RIDGE_CHECK,
    ST_NEARPD_FAIL,
    ST_NOCONV,
    ST_NOFINITE,
    ST_NONFINITE,
    ST_OK,
    ST_SINGULAR,
)
from polgen.kernels.gwas_fast import _fit_fast_dwls
from polgen.kernels.gwas_fast_ml import _fit_fast_ml
from polgen.kernels.linalg import _chol, _chol_inverse, _chol_quad, near_pd, sandwich_into
from polgen.kernels.ram import _jacobian
from polgen.kernels.ram_fit import _fit_one, _ml_weight, _objective
from polgen.kernels.ram_ridge import _collapsed, _ran_off, _ridge_jump
from polgen.kernels.ram_steps import _normal_eq, _normal_eq_ml
from polgen.kernels.snp_moments import _input_status, s_full_into, v_full_into, v_snp_into, z_pre_into

#: status of a SNP whose S_full or V_full needs nearPD when the kernel was compiled without it
#: (``smooth`` None): the caller refits those SNPs with ``smooth=True`` (never in a result)
ST_SMOOTH_LATER = -1


@jit
def _snp_range(lo, hi, snp, lay, spec, fp, out, fast, full, ml, dwls, general, smooth):
    """Fit SNPs ``lo:hi`` of ``snp`` (SnpBatch) under the model ``lay`` (RamLayout) with ``spec``
    (GwasSpec) and the fast-path structure ``fp`` (FastPath) into ``out`` (GwasOut).

    The mode arguments are None or True and are tested only as ``x is None`` / ``x is not None``;
    numba removes such a branch while compiling when ``x`` is None (not when it is True), so each
    configuration is its own specialisation and the code a None switches off is never compiled:
    ``fast`` / ``full`` (exactly one True): the fast path (``fp``) or the RAM fit; ``ml`` / ``dwls``
    (exactly one True): ML (the ML objective and weight) or DWLS; ``general``: None for the V_full block
    shortcut (``spec.block``: V_full positive definite, blockdiag(varSNPSE^2, V_SNP, V_LD) used
    piecewise), True for V_full built per SNP; ``smooth``: None leaves nearPD out (a SNP whose
    S_full or V_full is not positive definite gets :data:`ST_SMOOTH_LATER`, refit by the caller
    with ``smooth=True``)."""
    beta, se, var, S_LD, V_LD, I_LD = snp.beta, snp.se, snp.var, snp.S_LD, snp.V_LD, snp.I_LD
    gc, varse2, v_pd_known = snp.gc, snp.varse2, snp.v_pd_known
    nv, p, obs_map, ma, mb, vidx, vidx_meat = lay.nv, lay.p, lay.obs_map, lay.ma, lay.mb, lay.vidx, lay.vidx_meat
    ent_kind, ent_r, ent_c, ent_par, ent_val = lay.ent_kind, lay.ent_r, lay.ent_c, lay.ent_par, lay.ent_val
    par_ptr, par_ent = lay.par_ptr, lay.par_ent
    fidx, theta0, snpvar_par, ml_wmode = spec.fidx, spec.theta0, spec.snpvar_par, spec.ml_wmode
    max_iter, xtol, toler, smooth_check = spec.max_iter, spec.xtol, spec.toler, spec.smooth_check
    q_ptr, q_obs, q_trait, wald_idx = spec.q_ptr, spec.q_obs, spec.q_trait, spec.wald_idx
    LLD, wLD, se_fidx = spec.LLD, spec.wLD, spec.se_fidx
    elim_par, elim_mom = fp.elim_par, fp.elim_mom
    ftype, Js, G, C0, u0, vfix, vpos = fp.ftype, fp.Js, fp.G, fp.C0, fp.u0, fp.vfix, fp.vpos
    est, se_out, chisq, qsnp, zsmooth, wald = out.est, out.se, out.chisq, out.qsnp, out.zsmooth, out.wald
    fmin, status, flags, iters = out.fmin, out.status, out.flags, out.iters
    k = beta.shape[1]
    K1 = k + 1
    Kst = K1 * (K1 + 1) // 2
    nmom = ma.shape[0]
    nf = fidx.shape[0]
    nse = se_fidx.shape[0]  # >= nf: the RAM fit's closed-form variances have SEs
    npar = theta0.shape[1]
    n0 = theta0.shape[0]
    ng = q_ptr.shape[0] - 1
    nw = wald_idx.shape[0]
    mx = max(max(p, nse), max(nmom, K1))
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
    Z = np.empty((max(nse, 1), nmom))
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
    J = np.empty((nmom, max(nse, 1)))
    WJ = np.empty((nmom, max(nse, 1)))
    VL = np.empty((nmom, max(nse, 1)))
    H = np.empty((max(nse, 1), max(nse, 1)))
    HW = np.empty((max(nse, 1), max(nse, 1)))
    Br = np.empty((max(nse, 1), max(nse, 1)))
    M = np.empty((max(nse, 1), max(nse, 1)))
    Om = np.empty((max(nse, 1), max(nse, 1)))
    g = np.empty(max(nse, 1))
    delta = np.empty(max(nse, 1))
    theta = np.empty(npar)
    th_new = np.empty(npar)
    resid = np.empty(nmom)
    Sig = np.empty((p, p))
    Sinv = np.empty((p, p))
    Smat = np.empty((p, p))
    Wm = np.empty((nmom, nmom))
    Cp = np.empty((p, p))  # the fast path's ML: implied covariance of the observed variables
    col = np.empty(mx)
    tmpv = np.empty(mx)
    qv = np.empty(max(k, nw, 1))
    QM = np.empty((max(k, nw, 1), max(k, nw, 1)))
    w_el = np.empty(max(elim_mom.shape[0], 1))
    fval = np.empty(1)  # the fast path's ML objective at its solution
    qn = np.empty((nmom + 2 * max(nse, 1) + 6, max(nse, 1)))  # the RAM fit's secant scratch (qn_rows)
    th_prev = np.empty(npar)  # the theta of the last round end (the run-off extrapolation)
    fio = np.empty(1)  # the RAM fit's objective at theta between its rounds (NaN: not known)
    sv = np.empty(nv * nv + nv * p + nmom)  # its saved scratch (ram_steps.sv_size)
    smax = 0.0  # largest observed trait variance (the ridge check's scale)
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
        if general is not None:
            v_full_into(V_LD, VS, varse2, Vf)
        s_full_into(S_LD, beta[i], v, Sf)
        fl = 0
        for a in range(K1):
            for b in range(K1):
                tmpK[a, b] = Sf[a, b]
        if not _chol(tmpK, K1, 0.0):
            if smooth is None:
                status[i] = ST_SMOOTH_LATER
                continue
            if not near_pd(Sf.copy(), Sf):
                status[i] = ST_NEARPD_FAIL
                continue
            fl |= FLAG_S_SMOOTHED
        if general is not None:
            if not v_pd_known:
                for a in range(Kst):
                    for b in range(Kst):
                        tmpK[a, b] = Vf[a, b]
                if not _chol(tmpK, Kst, 0.0):
                    if smooth is None:
                        status[i] = ST_SMOOTH_LATER
                        continue
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
                    zt = Sf[t + 1, 0] / np.sqrt(VS[t, t] if general is None else Vf[t + 1, t + 1])
                    dz = abs(zt - zpre[t])
                    if dz > zm:
                        zm = dz
                zsmooth[i] = zm
            else:
                zsmooth[i] = 0.0
        # ---- model moments
        if general is None:
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
        if ml is not None:
            for a in range(p):
                for b in range(p):
                    Smat[a, b] = Sf[obs_map[a], obs_map[b]]
            if not _chol(Smat, p, 0.0):
                status[i] = ST_NONFINITE
                continue
            for a in range(p):
                ldS += 2.0 * np.log(Smat[a, a])
        ne = elim_mom.shape[0]
        smax = 0.0
        for e in range(ne):
            if s_vec[elim_mom[e]] > smax:
                smax = s_vec[elim_mom[e]]
            w_el[e] = w[elim_mom[e]]
            w[elim_mom[e]] = 0.0
            if full is not None:
                theta[elim_par[e]] = 0.0  # sigma without it during the fit (it takes up the residual)
        st = ST_OK
        nit = 0
        if fast is not None:
            # the fast path's fit: DWLS (Levenberg-Marquardt) or ML (Newton given the SNP), each
            # behind its own switch so that a specialisation compiles only its fit
            if dwls is not None:
                st, nit = _fit_fast_dwls(
                    theta, fidx, nf, ftype, Js, G, C0, u0, vfix, vpos, ma, mb, p, s_vec, w, ldS, max_iter, xtol,
                    uvec, sigv, J, WJ, H, HW, g, delta, th_new, resid, Cp, Sig, Sinv, col, Smat, Wm, fval,
                )  # fmt: skip
            if ml is not None:
                st, nit = _fit_fast_ml(
                    theta, fidx, nf, ftype, Js, G, C0, u0, vfix, vpos, ma, mb, p, s_vec, w, ldS, max_iter, xtol,
                    uvec, sigv, J, WJ, H, HW, g, delta, th_new, resid, Cp, Sig, Sinv, col, Smat, Wm, fval,
                )  # fmt: skip
        if full is not None:
            # with closed-form residual variances the fit runs in rounds of RIDGE_CHECK
            # iterations; between rounds a variance running off to minus infinity (no finite
            # minimum: R's nlminb stops at its iteration limit there) ends the SNP's fit
            left = max_iter
            nit = 0
            heyw = False  # the last round ended with a negative closed-form variance
            keep = False  # the next round goes on with the secant state of the last (theta unmoved)
            st = ST_NOCONV
            fio[0] = np.nan
            while True:  # max_iter = 0 (evaluate only) runs once
                round_iter = min(left, RIDGE_CHECK) if ne > 0 else left
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
                    round_iter,
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
                    keep,
                    fio,
                    sv,
                )
                nit += it
                left -= it
                if st != ST_NOCONV or ne == 0 or left <= 0:
                    break
                if _ran_off(elim_mom, s_vec, resid, smax) or _collapsed(
                    theta, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, B
                ):
                    st = ST_NOFINITE
                    break
                # a Heywood variance since the last round end: extrapolate along the run-off (a
                # jump may move theta: the next round's secant state starts afresh)
                keep = not heyw
                if heyw and _ridge_jump(
                    theta, th_prev, th_new, fidx, nf, elim_mom, smax, s_vec, w, ent_kind, ent_r, ent_c,
                    ent_par, ent_val, nv, p, A, S, IA, B, T, C, ma, mb, resid, Sig, Sinv, col, Smat, ldS, fio, sv,
                ):  # fmt: skip
                    st = ST_NOFINITE
                    break
                heyw = False
                for e in range(ne):
                    if resid[elim_mom[e]] < 0.0:
                        heyw = True
                for q in range(npar):
                    th_prev[q] = theta[q]
        iters[i] = nit
        for e in range(ne):
            # sigma at this moment excludes the eliminated variance: it takes up the residual
            theta[elim_par[e]] = resid[elim_mom[e]]
            resid[elim_mom[e]] = 0.0
        for q in range(npar):
            est[i, q] = theta[q]
        if ml is not None:
            # nested None tests (numba prunes each): the fast path never compiles _objective
            if fast is not None:
                fmin[i] = fval[0]
            if full is not None:
                fmin[i] = _objective(
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
        if dwls is not None:  # (an else would stay in the ML specialisation: numba prunes only None)
            fv = 0.0
            for m in range(nmom):
                fv += w[m] * resid[m] * resid[m]
            fmin[i] = fv
        if st != ST_OK:
            status[i] = st
            continue
        # ---- chi-square: eta' V^-1 eta over the model moments
        if general is None:
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
        if nse > 0:
            if full is not None:
                for e in range(ne):
                    w[elim_mom[e]] = w_el[e]  # the sandwich of the full parameter set
                _jacobian(se_fidx, nse, par_ptr, par_ent, ent_kind, ent_r, ent_c, ma, mb, B, C, J)
            if ml is not None:
                if ml_wmode == 1:
                    for a in range(p):
                        for b in range(p):
                            Sig[a, b] = Sf[obs_map[a], obs_map[b]]
                    _chol(Sig, p, 0.0)
                    _chol_inverse(Sig, p, Sinv, col)
                _ml_weight(Sinv, ma, mb, Wm)
                _normal_eq_ml(nse, nmom, J, Wm, WJ, resid, H, g)
            if dwls is not None:
                _normal_eq(nse, nmom, J, w, WJ, resid, H, g)
            hmax = 0.0
            for a in range(nse):
                for b in range(nse):
                    HW[a, b] = H[a, b]
                if H[a, a] > hmax:
                    hmax = H[a, a]
            # R: solve(t(D) W D, tol = toler or machine epsilon) -> "computationally singular"
            if not _chol(HW, nse, max(toler, 2.220446049250313e-16) * hmax * nse):
                status[i] = ST_SINGULAR
                continue
            _chol_inverse(HW, nse, Br, col)
            if general is None:  # block mode has the meat of the weights (same_meat)
                # Z = Br (W J)'; Om = Z V Z' with V block diagonal
                for a in range(nse):
                    for m in range(nmom):
                        x = 0.0
                        for c in range(nse):
                            x += Br[a, c] * WJ[m, c]
                        Z[a, m] = x
                nld = nmom - K1
                for a in range(nse):
                    for b in range(a, nse):
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
                sandwich_into(Vsub if same_meat else Vmeat, WJ, Br, nmom, nse, VL, M, HW, Om)
            for a in range(nse):
                d = Om[a, a]
                se_out[i, se_fidx[a]] = np.sqrt(d) if d >= 0.0 else np.nan
            if nw > 0:
                for a in range(nw):
                    qv[a] = theta[se_fidx[wald_idx[a]]]
                    for b in range(nw):
                        QM[a, b] = Om[wald_idx[a], wald_idx[b]]
                if _chol(QM, nw, 0.0):
                    wald[i] = _chol_quad(QM, nw, qv, tmpv)
        status[i] = ST_OK
