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

__all__ = ["add_batch", "add_range", "multi_v_into"]


@jit
def add_range(lo, hi, snp, S_out, V_out, status, flags):
    """S_full / V_full of SNPs ``lo..hi-1`` of ``snp`` (:class:`SnpBatch`) into ``S_out[i]`` /
    ``V_out[i]``; ``status[i]`` 0 or the ST_* code of a bad input or failed smoothing (the
    matrices are then NaN), ``flags[i]`` the FLAG_*_SMOOTHED bits."""
    k = snp.beta.shape[1]
    K1 = k + 1
    Kst = V_out.shape[1]
    VS = np.empty((k, k))
    tmp = np.empty((Kst, Kst))
    for i in range(lo, hi):
        flags[i] = 0
        Sf = S_out[i]
        Vf = V_out[i]
        bad = _input_status(snp.var[i], snp.beta[i], snp.se[i], k)
        if bad != 0:
            status[i] = bad
            Sf[:, :] = np.nan
            Vf[:, :] = np.nan
            continue
        v = snp.var[i]
        v_snp_into(snp.se[i], snp.I_LD, v, snp.gc, VS)
        v_full_into(snp.V_LD, VS, snp.varse2, Vf)
        s_full_into(snp.S_LD, snp.beta[i], v, Sf)
        fl = 0
        st = 0
        for a in range(K1):
            for b in range(K1):
                tmp[a, b] = Sf[a, b]
        if not _chol(tmp, K1, 0.0):
            if near_pd(Sf.copy(), Sf):
                fl |= FLAG_S_SMOOTHED
            else:
                st = ST_NEARPD_FAIL
        if st == 0 and not snp.v_pd_known:
            for a in range(Kst):
                for b in range(Kst):
                    tmp[a, b] = Vf[a, b]
            if not _chol(tmp, Kst, 0.0):
                if near_pd(Vf.copy(), Vf):
                    fl |= FLAG_V_SMOOTHED
                else:
                    st = ST_NEARPD_FAIL
        if st != 0:
            Sf[:, :] = np.nan
            Vf[:, :] = np.nan
        status[i] = st
        flags[i] = fl


def add_batch(snp: SnpBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(S_full [n, k+1, k+1], V_full [n, k*, k*], status [n] int64, flags [n] int64) of a batch,
    run over chunks on threads (the same rows whatever the chunking)."""
    n, k = snp.beta.shape
    K1 = k + 1
    Kst = K1 * (K1 + 1) // 2
    S = np.empty((n, K1, K1))
    V = np.empty((n, Kst, Kst))
    status = np.zeros(n, np.int64)
    flags = np.zeros(n, np.int64)
    if n:
        run_chunks(add_range, n, n_chunks(n), snp, S, V, status, flags)
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
