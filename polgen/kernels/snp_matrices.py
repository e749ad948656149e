"""Genomic SEM's per-SNP and multi-SNP moment matrices as objects (R ``addSNPs`` / ``addGenes``,
``multiSNP`` / ``multiGene``).

:func:`add_range` builds, for each SNP of a batch, the ``S_full`` ((k+1) x (k+1)) and ``V_full``
(k* x k*, k* = (k+1)(k+2)/2) that the per-SNP GWAS fits: the same construction as the GWAS kernels
(:mod:`polgen.kernels.snp_moments`: ``v_snp_into``, ``s_full_into``, ``v_full_into``) and R's
``Matrix::nearPD`` smoothing (:func:`polgen.kernels.linalg.near_pd`) of either matrix when it is
not positive definite, written into stacked output arrays with a status and smoothing flags per SNP.

:func:`multi_v_into` fills the sampling covariance of ``vech`` of a joint S over f SNPs (or genes)
and k traits (SNPs first): SNP-SNP elements fixed (``varse2`` on the diagonal), SNP-trait elements
with variance ``(se * I_tt * var)^2`` and covariances through the cross-trait intercepts (same
SNP) and the LD (same trait, or both), the trait block ``V_LD``.
"""

from __future__ import annotations

import numpy as np

from polgen.kernels._jit import jit
from polgen.kernels._threads import n_chunks, run_chunks
from polgen.kernels.gwas_codes import FLAG_S_SMOOTHED, FLAG_V_SMOOTHED, ST_NEARPD_FAIL
from polgen.kernels.linalg import _chol, near_pd
from polgen.kernels.snp_moments import SnpBatch, _input_status, s_full_into, v_full_into, v_snp_into

__all__ = ["add_batch", "add_lower_range", "add_range", "multi_v_into"]


@jit
def _one_snp(i, snp, Sf, Vf, VS, tmp):
    """S_full / V_full of SNP ``i`` into ``Sf`` / ``Vf``; returns (status, flags)."""
    k = snp.beta.shape[1]
    K1 = k + 1
    Kst = Vf.shape[0]
    bad = _input_status(snp.var[i], snp.beta[i], snp.se[i], k)
    if bad != 0:
        return bad, 0
    v = snp.var[i]
    v_snp_into(snp.se[i], snp.I_LD, v, snp.gc, VS)
    v_full_into(snp.V_LD, VS, snp.varse2, Vf)
    s_full_into(snp.S_LD, snp.beta[i], v, Sf)
    fl = 0
    for a in range(K1):
        for b in range(K1):
            tmp[a, b] = Sf[a, b]
    if not _chol(tmp, K1, 0.0):
        if not near_pd(Sf.copy(), Sf):
            return ST_NEARPD_FAIL, fl
        fl |= FLAG_S_SMOOTHED
    if not snp.v_pd_known:
        for a in range(Kst):
            for b in range(Kst):
                tmp[a, b] = Vf[a, b]
        if not _chol(tmp, Kst, 0.0):
            if not near_pd(Vf.copy(), Vf):
                return ST_NEARPD_FAIL, fl
            fl |= FLAG_V_SMOOTHED
    return 0, fl


@jit
def add_range(lo, hi, snp, S_out, V_out, status, flags):
    """S_full / V_full of SNPs ``lo..hi-1`` of ``snp`` (:class:`SnpBatch`) into ``S_out[i]`` /
    ``V_out[i]``; ``status[i]`` 0 or the ST_* code of a bad input or failed smoothing (the
    matrices are then NaN), ``flags[i]`` the FLAG_*_SMOOTHED bits."""
    k = snp.beta.shape[1]
    Kst = V_out.shape[1]
    VS = np.empty((k, k))
    tmp = np.empty((Kst, Kst))
    for i in range(lo, hi):
        st, fl = _one_snp(i, snp, S_out[i], V_out[i], VS, tmp)
        if st != 0:
            S_out[i][:, :] = np.nan
            V_out[i][:, :] = np.nan
        status[i] = st
        flags[i] = fl


@jit
def add_lower_range(lo, hi, snp, S_low, V_low, status, flags):
    """As :func:`add_range`, writing the lower triangles column by column (R's ``vech``) into
    ``S_low[:, i]`` / ``V_low[:, i]`` (one contiguous row per output column)."""
    k = snp.beta.shape[1]
    K1 = k + 1
    Kst = K1 * (K1 + 1) // 2
    Sf = np.empty((K1, K1))
    Vf = np.empty((Kst, Kst))
    VS = np.empty((k, k))
    tmp = np.empty((Kst, Kst))
    for i in range(lo, hi):
        st, fl = _one_snp(i, snp, Sf, Vf, VS, tmp)
        status[i] = st
        flags[i] = fl
        q = 0
        for c in range(K1):
            for r in range(c, K1):
                S_low[q, i] = Sf[r, c] if st == 0 else np.nan
                q += 1
        q = 0
        for c in range(Kst):
            for r in range(c, Kst):
                V_low[q, i] = Vf[r, c] if st == 0 else np.nan
                q += 1


def add_batch(snp: SnpBatch, lower: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(S, V, status [n] int64, flags [n] int64) of a batch, run over chunks on threads (the same
    rows whatever the chunking): S_full [n, k+1, k+1] and V_full [n, k*, k*], or with ``lower``
    their lower triangles [(k+1)(k+2)/2, n] and [k*(k*+1)/2, n]."""
    n, k = snp.beta.shape
    K1 = k + 1
    Kst = K1 * (K1 + 1) // 2
    status = np.zeros(n, np.int64)
    flags = np.zeros(n, np.int64)
    if lower:
        S = np.empty((Kst, n))
        V = np.empty((Kst * (Kst + 1) // 2, n))
        kern = add_lower_range
    else:
        S = np.empty((n, K1, K1))
        V = np.empty((n, Kst, Kst))
        kern = add_range
    if n:
        run_chunks(kern, n, n_chunks(n), snp, S, V, status, flags)
    return S, V, status, flags


@jit
def _vpos(r, c, n):
    """Position of (r, c) in vech of an n x n matrix (lower triangle stacked column-wise)."""
    if r < c:
        r, c = c, r
    return c * n - c * (c - 1) // 2 + (r - c)


@jit
def multi_v_into(se2, I, ld, varse2, V_LD, out):
    """V_full of a joint S over f SNPs then k traits, into ``out`` (n* x n*, n = f + k).

    ``se2`` (f x k): ``se * I_tt * var`` per SNP and trait; ``I`` (k x k) the LDSC intercepts
    (diagonal >= 1); ``ld`` (f x f) the SNP correlations (signs aligned to the sumstats alleles).
    cov(S[T_t, SNP_j], S[T_u, SNP_i]) = se2[j, t] se2[i, u] c(t, u) r(j, i) with c(t, t) = 1,
    c(t, u) = I_tu, r(j, j) = 1, r(j, i) = ld[j, i]."""
    f, k = se2.shape
    n = f + k
    m = out.shape[0]
    for a in range(m):
        for b in range(m):
            out[a, b] = 0.0
    for j in range(f):
        for i in range(j, f):
            p = _vpos(i, j, n)
            out[p, p] = varse2
    for j in range(f):
        for t in range(k):
            p = _vpos(f + t, j, n)
            for i in range(f):
                r = 1.0 if i == j else ld[j, i]
                for u in range(k):
                    c = 1.0 if t == u else I[t, u]
                    q = _vpos(f + u, i, n)
                    out[p, q] = se2[j, t] * se2[i, u] * c * r
    mk = V_LD.shape[0]
    base = m - mk
    for a in range(mk):
        for b in range(mk):
            out[base + a, base + b] = V_LD[a, b]
