"""numba kernel: delta-method standard errors of defined (``:=``) GWAS parameters.

For every SNP the sandwich covariance of the free parameters is rebuilt at the estimates the
per-SNP fit returned (:func:`polgen.kernels.gwas.gwas_batch`), exactly as that fit computes its
standard errors (DWLS weights ``1 / diag(V_full)``, ``bread = (D' W D)^-1``,
``Omega = bread (W D)' V_full (W D) bread``), and the variance of each defined parameter is
``J Omega J'`` with ``J`` its Jacobian (computed by the caller).  Parameters held at a bound for
a SNP are not free for that SNP (``free`` mask): the constrained sandwich, as lavaan treats an
active inequality constraint.

Inputs are contiguous float64 / int64 arrays; nothing here knows of Polars or model syntax.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from polgen.kernels._jit import jit
from polgen.kernels._threads import n_chunks, run_chunks
from polgen.kernels.linalg import _chol, _inv_gj, near_pd, sandwich_into
from polgen.kernels.ram import _implied, _jacobian, ram_layout
from polgen.kernels.snp_moments import snp_batch, v_full_into, v_snp_into

__all__ = ["DefinedIn", "defined_se_batch"]

#: Per-SNP inputs of the := SEs (n rows): estimates ``est`` (n x npar), ``free`` (n x npar bool:
#: free for that SNP, i.e. not held at a bound), Jacobians ``jd`` (n x n_defined x npar) and
#: ``ok`` (n bool: compute this SNP).
DefinedIn = namedtuple("DefinedIn", ["est", "free", "jd", "ok"])


@jit
def _defined_range(lo, hi, snp, lay, dfn, out):
    """SEs of the defined parameters for SNPs ``lo:hi`` (``snp.beta``/``snp.S_LD`` unused) into
    ``out`` (n x n_defined)."""
    se, var, V_LD, I_LD, gc, varse2, v_pd_known = (
        snp.se,
        snp.var,
        snp.V_LD,
        snp.I_LD,
        snp.gc,
        snp.varse2,
        snp.v_pd_known,
    )
    nv, p, ma, mb, vidx = lay.nv, lay.p, lay.ma, lay.mb, lay.vidx
    ent_kind, ent_r, ent_c, ent_par, ent_val = lay.ent_kind, lay.ent_r, lay.ent_c, lay.ent_par, lay.ent_val
    par_ptr, par_ent = lay.par_ptr, lay.par_ent
    est, free, jd, ok = dfn.est, dfn.free, dfn.jd, dfn.ok
    k = se.shape[1]
    K1 = k + 1
    Kst = K1 * (K1 + 1) // 2
    nmom = vidx.shape[0]
    npar = est.shape[1]
    ndef = jd.shape[1]
    mf = max(npar, 1)
    VS = np.empty((k, k))
    Vf = np.empty((Kst, Kst))
    tmpK = np.empty((Kst, Kst))
    Vsub = np.empty((nmom, nmom))
    w = np.empty(nmom)
    A = np.empty((nv, nv))
    S = np.empty((nv, nv))
    IA = np.empty((nv, nv))
    B = np.empty((nv, nv))
    T = np.empty((nv, p))
    C = np.empty((nv, p))
    J = np.empty((nmom, mf))
    WJ = np.empty((nmom, mf))
    VL = np.empty((nmom, mf))
    H = np.empty((mf, mf))
    Br = np.empty((mf, mf))
    M = np.empty((mf, mf))
    Om = np.empty((mf, mf))
    tmp = np.empty((mf, mf))
    fidx = np.empty(mf, np.int64)
    for i in range(lo, hi):
        for d in range(ndef):
            out[i, d] = np.nan
        if not ok[i]:
            continue
        nf = 0
        for q in range(npar):
            if free[i, q]:
                fidx[nf] = q
                nf += 1
        v_snp_into(se[i], I_LD, var[i], gc, VS)
        v_full_into(V_LD, VS, varse2, Vf)
        if not v_pd_known:
            for a in range(Kst):
                for b in range(Kst):
                    tmpK[a, b] = Vf[a, b]
            if not _chol(tmpK, Kst, 0.0):
                if not near_pd(Vf.copy(), Vf):
                    continue
        for m in range(nmom):
            for m2 in range(nmom):
                Vsub[m, m2] = Vf[vidx[m], vidx[m2]]
            w[m] = 1.0 / Vsub[m, m]
        if not _implied(est[i], ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA, B, T, C):
            continue
        _jacobian(fidx, nf, par_ptr, par_ent, ent_kind, ent_r, ent_c, ma, mb, B, C, J)
        for m in range(nmom):
            for a in range(nf):
                WJ[m, a] = w[m] * J[m, a]
        for a in range(nf):
            for b in range(nf):
                s = 0.0
                for m in range(nmom):
                    s += J[m, a] * WJ[m, b]
                H[a, b] = s
        if not _inv_gj(H, nf, Br):
            continue
        sandwich_into(Vsub, WJ, Br, nmom, nf, VL, M, tmp, Om)
        for d in range(ndef):
            s = 0.0
            for a in range(nf):
                ja = jd[i, d, fidx[a]]
                if ja == 0.0:
                    continue
                for b in range(nf):
                    s += ja * Om[a, b] * jd[i, d, fidx[b]]
            if np.isfinite(s):
                out[i, d] = np.sqrt(s) if s > 0.0 else 0.0


def defined_se_batch(se, var, V_LD, I_LD, gc, varse2, v_pd_known, model, est, free, jd, ok):
    """Delta-method SEs (n x n_defined) of defined parameters with Jacobians ``jd``
    (n x n_defined x npar) at the per-SNP estimates ``est`` (n x npar); ``free`` (n x npar, bool)
    marks the parameters free for each SNP; ``ok`` the SNPs to compute (others NaN)."""
    f64, i64 = np.float64, np.int64
    n = est.shape[0]
    out = np.full((n, jd.shape[1]), np.nan)
    if n == 0 or jd.shape[1] == 0:
        return out
    lay0 = ram_layout(model)
    lay = lay0._replace(
        ma=np.ascontiguousarray(lay0.ma, i64),
        mb=np.ascontiguousarray(lay0.mb, i64),
        vidx=np.ascontiguousarray(lay0.vidx, i64),
    )
    k = se.shape[1]
    snp = snp_batch(np.empty((0, k)), se, var, np.empty((0, 0)), V_LD, I_LD, gc, varse2, v_pd_known)
    dfn = DefinedIn(
        np.ascontiguousarray(est, f64),
        np.ascontiguousarray(free, np.bool_),
        np.ascontiguousarray(jd, f64),
        np.ascontiguousarray(ok, np.bool_),
    )
    if n >= 2048:
        run_chunks(_defined_range, n, n_chunks(n), snp, lay, dfn, out)
    else:
        _defined_range(0, n, snp, lay, dfn, out)
    return out
