"""commonfactorGWAS (DWLS) after the fit: stage 1's sandwich SEs and chi-square at the reduced
fit's solution, and the Q model (direct SNP effects freed, stage 1's other estimates fixed) with
its Wald statistic, in one pass over the SNPs.

The general per-SNP kernel (:mod:`polgen.kernels.gwas_kernel`) computes the same numbers for any
RAM model: implied covariance through ``(I - A)^-1``, a Jacobian per free parameter, an LM fit
for the Q model.  For commonfactorGWAS's model both are closed forms (moments in vech(S_full)
order; ``phi = psi + b^2 v``)::

    stage 1   Sigma_00 = v,  Sigma_t0 = l_t b v,  Sigma_ab = l_a l_b phi + [a = b] th_a
    Q model   Sigma_00 = v,  Sigma_t0 = h_t v,    Sigma_ab = l_a l_b psi + h_a h_b v + [a = b] th_a

with ``h_t = l_t b + g_t`` (``g_t`` the direct effect).  In the Q model the residual variances fit
the trait variances exactly, so the fit is a k-parameter least-squares problem in ``h`` (Newton
from ``h = beta``, where the SNP moments fit exactly).  The sandwich covariance is the general
kernel's block form ``Br (WJ)' blockdiag(varSNPSE^2, V_SNP, V_LD) (WJ) Br`` with the same
parameter order and the same singularity test (``solve(t(D) W D, tol = toler)``).  SNPs whose
V_full needs nearPD smoothing get :data:`ST_CF_GENERAL`: the caller takes them through the general
kernel.  nearPD of S_full is its own specialisation (``smooth``, as in the general kernel): the
batch runs without it and the few SNPs that need it are redone with it.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from polgen.kernels._jit import jit_strict
from polgen.kernels._threads import n_chunks, run_chunks
from polgen.kernels.commonfactor_lm import _q_fit
from polgen.kernels.gwas_codes import (
    FLAG_S_SMOOTHED,
    ST_NEARPD_FAIL,
    ST_NOCONV,
    ST_OK,
    ST_SINGULAR,
)
from polgen.kernels.gwas_kernel import ST_SMOOTH_LATER
from polgen.kernels.linalg import _chol, _chol_quad, _chol_solve, near_pd
from polgen.kernels.snp_moments import _input_status, s_full_into, snp_batch, v_full_into, v_snp_into, z_pre_into

__all__ = ["ST_CF_GENERAL", "CfSeSpec", "CfSeOut", "commonfactor_se_q"]

#: status of a SNP whose V_full is not positive definite: the caller refits it with the general
#: kernel (never in a result)
ST_CF_GENERAL = -2

#: ``pidx``: parameter numbers of ``l_2..l_k, b, th_1..th_k, psi, v`` (stage 1, every parameter
#: free, so also its column); ``qcol``: the columns of ``g_1..g_k, th_1..th_k`` among the Q model's
#: free parameters; ``toler``: R's solve tolerance (0: machine epsilon); ``LLD``: Cholesky factor
#: of V_LD; ``do_q``: fit the Q model; ``se_rows``: the parameters whose SEs are wanted (the
#: others stay NaN).
CfSeSpec = namedtuple("CfSeSpec", ["pidx", "qcol", "toler", "smooth_check", "LLD", "do_q", "se_rows"])
#: Outputs (n rows): ``se`` (n x npar), ``chisq``, ``zsmooth``, ``status`` (stage 1), ``flags``,
#: ``wald`` (Q), ``qstatus`` (the Q model's status).
CfSeOut = namedtuple("CfSeOut", ["se", "chisq", "zsmooth", "status", "flags", "wald", "qstatus"])


@jit_strict
def _sandwich(J, w, nmom, nf, k, VS, varse2, V_LD, toler, H, Br, col, Z, VZ, Om, rows):
    """Bread ``Br = (J' W J)^-1`` (False when singular as R's ``solve(t(D) W D, tol)``), then the
    block of the sandwich ``Om = Z V Z'`` (``Z = Br (W J)'``, V = blockdiag(varse2, VS, V_LD)) over
    the parameter columns ``rows`` only (``Br``, ``Z``, ``Om`` indexed by position in ``rows``).

    IEEE arithmetic (the same bits however compiled); the loops run the sums of many entries side
    by side (each entry still summed in one order) so they do not wait on one another."""
    K1 = k + 1
    nld = nmom - K1
    nr = rows.shape[0]
    for a in range(nf):
        for b in range(nf):
            H[a, b] = 0.0
    for m in range(nmom):
        wm = w[m]
        for a in range(nf):
            ja = J[m, a] * wm
            if ja == 0.0:
                continue
            for b in range(a, nf):
                H[a, b] += ja * J[m, b]
    hmax = 0.0
    for a in range(nf):
        for b in range(a + 1, nf):
            H[b, a] = H[a, b]
        if H[a, a] > hmax:
            hmax = H[a, a]
    if not _chol(H, nf, max(toler, 2.220446049250313e-16) * hmax * nf):
        return False
    for i in range(nr):
        for c in range(nf):
            col[c] = 0.0
        col[rows[i]] = 1.0
        _chol_solve(H, nf, col)
        for c in range(nf):
            Br[i, c] = col[c]
    for i in range(nr):
        for m in range(nmom):
            Z[i, m] = 0.0
        for c in range(nf):
            bc = Br[i, c]
            for m in range(nmom):
                Z[i, m] += bc * J[m, c]
        for m in range(nmom):
            Z[i, m] *= w[m]
    # VZ = V Z' row by row (V block diagonal), then Om = Z VZ
    for b in range(nr):
        VZ[b, 0] = varse2 * Z[b, 0]
        for m in range(1, nmom):
            VZ[b, m] = 0.0
        for t2 in range(k):
            z = Z[b, 1 + t2]
            for t in range(k):
                VZ[b, 1 + t] += VS[t, t2] * z
        for t2 in range(nld):
            z = Z[b, K1 + t2]
            for t in range(nld):
                VZ[b, K1 + t] += V_LD[t, t2] * z
    for a in range(nr):
        for b in range(a, nr):
            Om[a, b] = 0.0
    for m in range(nmom):
        for a in range(nr):
            za = Z[a, m]
            for b in range(a, nr):
                Om[a, b] += za * VZ[b, m]
    for a in range(nr):
        for b in range(a + 1, nr):
            Om[b, a] = Om[a, b]
    return True


@jit_strict
def _se_range(lo, hi, snp, spec, est, st1, out, smooth):
    """SNPs ``lo:hi``: stage 1's SEs / chi-square at ``est`` (n x npar, where ``st1`` is ST_OK) and,
    with ``spec.do_q``, the Q model's Wald statistic, into ``out`` (:class:`CfSeOut`).  ``smooth``
    None (tested ``is None``: nearPD is not compiled) leaves a SNP whose S_full is not positive
    definite at ``ST_SMOOTH_LATER`` (status and qstatus); True smooths it."""
    beta, se, var, S_LD, V_LD, I_LD = snp.beta, snp.se, snp.var, snp.S_LD, snp.V_LD, snp.I_LD
    gc, varse2, v_pd_known = snp.gc, snp.varse2, snp.v_pd_known
    pidx, qcol, toler, smooth_check = spec.pidx, spec.qcol, spec.toler, spec.smooth_check
    LLD, do_q, se_rows = spec.LLD, spec.do_q, spec.se_rows
    se_out, chisq, zsmooth, status, flags, wald, qstatus = out
    k = beta.shape[1]
    K1 = k + 1
    Kst = K1 * (K1 + 1) // 2
    nmom = Kst
    npair = k * (k - 1) // 2
    npar = se_out.shape[1]
    nf1 = 2 * k + 2
    nf2 = 2 * k
    mx = max(nf1, 1)
    VS = np.empty((k, k))
    VSc = np.empty((k, k))
    Sf = np.empty((K1, K1))
    Vf = np.empty((Kst, Kst))
    tmpK = np.empty((Kst, Kst))
    zpre = np.empty(k)
    w = np.empty(nmom)
    resid = np.empty(nmom)
    J = np.empty((nmom, mx))
    H = np.empty((mx, mx))
    Br = np.empty((mx, mx))
    Z = np.empty((mx, nmom))
    VZ = np.empty((mx, nmom))
    Om = np.empty((mx, mx))
    col = np.empty(max(mx, nmom))
    tmpv = np.empty(max(mx, nmom))
    lv = np.empty(k)
    q_rows = np.empty(k, np.int64)  # 0..k-1 (filled, not np.arange: one overload less to compile)
    for t in range(k):
        q_rows[t] = t
    # LD moments in vech(S_LD) order (column-major lower triangle) and the trait pairs among them
    ma = np.empty(nmom - K1, np.int64)
    mb = np.empty(nmom - K1, np.int64)
    la_ = np.empty(npair, np.int64)
    lb_ = np.empty(npair, np.int64)
    pm = np.empty(npair, np.int64)
    m = 0
    q = 0
    for b in range(k):
        for a in range(b, k):
            ma[m] = a
            mb[m] = b
            if a != b:
                la_[q] = a
                lb_[q] = b
                pm[q] = m
                q += 1
            m += 1
    wq = np.empty(K1 + npair)
    lpsi = np.empty(max(npair, 1))
    s = np.empty(k)
    h = np.empty(k)
    gq = np.empty(k)
    Hn = np.empty((k, k))
    HG = np.empty((k, k))
    HW = np.empty((k, k))
    dq = np.empty(k)
    hn = np.empty(k)
    rq = np.empty(k + npair)
    rn = np.empty(k + npair)
    QM = np.empty((k, k))
    qv = np.empty(k)
    for i in range(lo, hi):
        for p in range(npar):
            se_out[i, p] = np.nan
        chisq[i] = np.nan
        zsmooth[i] = np.nan
        wald[i] = np.nan
        qstatus[i] = ST_NOCONV
        flags[i] = 0
        v0 = var[i]
        bad = _input_status(v0, beta[i], se[i], k)
        if bad != 0:
            status[i] = bad
            qstatus[i] = bad
            continue
        v_snp_into(se[i], I_LD, v0, gc, VS)
        s_full_into(S_LD, beta[i], v0, Sf)
        fl = 0
        for a in range(K1):
            for b in range(K1):
                tmpK[a, b] = Sf[a, b]
        if not _chol(tmpK, K1, 0.0):
            if smooth is None:
                status[i] = ST_SMOOTH_LATER
                qstatus[i] = ST_SMOOTH_LATER
                continue
            if not near_pd(Sf.copy(), Sf):
                status[i] = ST_NEARPD_FAIL
                qstatus[i] = ST_NEARPD_FAIL
                continue
            fl |= FLAG_S_SMOOTHED
        if not v_pd_known:
            v_full_into(V_LD, VS, varse2, Vf)
            for a in range(Kst):
                for b in range(Kst):
                    tmpK[a, b] = Vf[a, b]
            if not _chol(tmpK, Kst, 0.0):
                status[i] = ST_CF_GENERAL
                qstatus[i] = ST_CF_GENERAL
                continue
        flags[i] = fl
        if smooth_check:
            if fl != 0:
                z_pre_into(beta[i], se[i], I_LD, gc, zpre)
                zm = 0.0
                for t in range(k):
                    dz = abs(Sf[t + 1, 0] / np.sqrt(VS[t, t]) - zpre[t])
                    if dz > zm:
                        zm = dz
                zsmooth[i] = zm
            else:
                zsmooth[i] = 0.0
        if st1[i] != ST_OK:
            status[i] = st1[i]
            qstatus[i] = st1[i]
            continue
        # ---- stage 1 at est: residuals, chi-square, Jacobian (column = parameter number)
        w[0] = 1.0 / varse2
        for t in range(k):
            w[1 + t] = 1.0 / VS[t, t]
        for m in range(nmom - K1):
            w[K1 + m] = 1.0 / V_LD[m, m]
        lv[0] = 1.0
        for t in range(1, k):
            lv[t] = est[i, pidx[t - 1]]
        b_ = est[i, pidx[k - 1]]
        psi = est[i, pidx[2 * k]]
        v = est[i, pidx[2 * k + 1]]
        phi = psi + b_ * b_ * v
        for m in range(nmom):
            for c in range(nf1):
                J[m, c] = 0.0
        cb = pidx[k - 1]
        cpsi = pidx[2 * k]
        cv = pidx[2 * k + 1]
        resid[0] = Sf[0, 0] - v
        J[0, cv] = 1.0
        for t in range(k):
            resid[1 + t] = Sf[t + 1, 0] - lv[t] * b_ * v
            if t >= 1:
                J[1 + t, pidx[t - 1]] = b_ * v
            J[1 + t, cb] = lv[t] * v
            J[1 + t, cv] = lv[t] * b_
        for m in range(nmom - K1):
            a = ma[m]
            b = mb[m]
            ll = lv[a] * lv[b]
            mod = ll * phi
            if a == b:
                mod += est[i, pidx[k + a]]
                J[K1 + m, pidx[k + a]] = 1.0
            resid[K1 + m] = Sf[a + 1, b + 1] - mod
            if a >= 1:
                J[K1 + m, pidx[a - 1]] += lv[b] * phi
            if b >= 1:
                J[K1 + m, pidx[b - 1]] += lv[a] * phi
            J[K1 + m, cpsi] = ll
            J[K1 + m, cb] = 2.0 * b_ * v * ll
            J[K1 + m, cv] = b_ * b_ * ll
        for a in range(k):
            for b in range(k):
                VSc[a, b] = VS[a, b]
        if _chol(VSc, k, 0.0):
            qq = resid[0] * resid[0] / varse2
            qq += _chol_quad(VSc, k, resid[1:K1], tmpv)
            qq += _chol_quad(LLD, nmom - K1, resid[K1:], tmpv)
            chisq[i] = qq
        if not _sandwich(J, w, nmom, nf1, k, VS, varse2, V_LD, toler, H, Br, col, Z, VZ, Om, se_rows):
            status[i] = ST_SINGULAR
            qstatus[i] = ST_SINGULAR
            continue
        for c in range(se_rows.shape[0]):
            d = Om[c, c]
            se_out[i, se_rows[c]] = np.sqrt(d) if d >= 0.0 else np.nan
        status[i] = ST_OK
        if not do_q:
            continue
        # ---- Q model: h from beta (SNP moments exact), residual variances profiled out
        for t in range(k):
            s[t] = Sf[t + 1, 0]
            h[t] = beta[i, t]
        for q in range(npair):
            lpsi[q] = lv[la_[q]] * lv[lb_[q]] * psi
        for t in range(K1):
            wq[t] = w[t]
        for q in range(npair):
            wq[K1 + q] = w[K1 + pm[q]]
        code, _ = _q_fit(h, k, v, s, wq, Sf, lpsi, la_, lb_, rq, gq, Hn, HG, HW, dq, hn, rn)
        if code != ST_OK:
            qstatus[i] = code
            continue
        for m in range(nmom):
            for c in range(nf2):
                J[m, c] = 0.0
        for t in range(k):
            J[1 + t, qcol[t]] = v
        for m in range(nmom - K1):
            a = ma[m]
            b = mb[m]
            J[K1 + m, qcol[a]] += h[b] * v
            J[K1 + m, qcol[b]] += h[a] * v
            if a == b:
                J[K1 + m, qcol[k + a]] = 1.0
        # the direct effects are the first k free parameters of the Q model (qcol[:k] = 0..k-1)
        if not _sandwich(J, w, nmom, nf2, k, VS, varse2, V_LD, toler, H, Br, col, Z, VZ, Om, q_rows):
            qstatus[i] = ST_SINGULAR
            continue
        for a in range(k):
            qv[a] = h[a] - lv[a] * b_
            for b in range(k):
                QM[a, b] = Om[a, b]
        if _chol(QM, k, 0.0):
            wald[i] = _chol_quad(QM, k, qv, tmpv)
        qstatus[i] = ST_OK


def commonfactor_se_q(
    beta,
    se,
    var,
    S_LD,
    V_LD,
    I_LD,
    gc,
    varse2,
    v_pd_known,
    est,
    status1,
    pidx,
    qcol,
    *,
    toler=0.0,
    smooth_check=False,
    do_q=True,
    se_par=None,
    parallel=None,
):
    """Stage 1's SEs and chi-square at ``est`` (the reduced fit's estimates, n x npar; SNPs whose
    ``status1`` is not ST_OK keep it and get no SEs) and, with ``do_q``, the Q model's Wald
    statistic.  ``se_par``: the parameter numbers whose SEs are computed (default all; each costs
    a solve and a sandwich row).  Returns a dict of arrays: se (n x npar), chisq, zsmooth, status, flags, wald,
    qstatus; rows with status :data:`ST_CF_GENERAL` are for the general kernel."""
    n, k = beta.shape
    npar = est.shape[1]
    if npar != 2 * k + 2 or len(pidx) != npar or len(qcol) != 2 * k or list(qcol[:k]) != list(range(k)):
        raise ValueError("commonfactor_se_q: not commonfactorGWAS's parameter layout")
    out = CfSeOut(
        np.empty((n, npar)),
        np.empty(n),
        np.empty(n),
        np.empty(n, np.int64),
        np.empty(n, np.int64),
        np.empty(n),
        np.empty(n, np.int64),
    )
    if n == 0:
        return out._asdict()
    snp = snp_batch(beta, se, var, S_LD, V_LD, I_LD, gc, varse2, v_pd_known)
    try:
        LLD = np.ascontiguousarray(np.linalg.cholesky(snp.V_LD))
    except np.linalg.LinAlgError:
        LLD = np.full_like(snp.V_LD, np.nan)
    spec = CfSeSpec(
        np.ascontiguousarray(pidx, np.int64),
        np.ascontiguousarray(qcol, np.int64),
        float(toler),
        bool(smooth_check),
        LLD,
        bool(do_q),
        np.ascontiguousarray(np.arange(npar) if se_par is None else se_par, np.int64),
    )
    est = np.ascontiguousarray(est, np.float64)
    st1 = np.ascontiguousarray(status1, np.int64)
    if parallel is None:
        parallel = n >= 2048
    if parallel:
        run_chunks(_se_range, n, n_chunks(n), snp, spec, est, st1, out, None)
    else:
        _se_range(0, n, snp, spec, est, st1, out, None)
    redo = np.flatnonzero(out.status == ST_SMOOTH_LATER)
    if redo.size:
        # the few SNPs whose S_full needs nearPD: the kernel specialisation with it
        sub_snp = snp._replace(beta=snp.beta[redo], se=snp.se[redo], var=snp.var[redo])
        sub = CfSeOut(*(a[redo] for a in out))
        _se_range(0, redo.size, sub_snp, spec, est[redo], st1[redo], sub, True)
        for a, b in zip(out, sub):
            a[redo] = b
    return out._asdict()
