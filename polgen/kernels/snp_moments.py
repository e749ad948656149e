"""Per-SNP construction of Genomic SEM's moments (R ``.get_V_SNP``, ``.get_S_Full``,
``.get_V_full``, ``.get_Z_pre``) and the input check that precedes them."""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from polgen.kernels._jit import jit, jit_exact
from polgen.kernels.gwas_codes import (
    GC_CONSERV,
    GC_STANDARD,
    ST_BAD_BETA,
    ST_BAD_SE,
    ST_BAD_VAR,
)

__all__ = ["SnpBatch", "snp_batch", "v_snp_into", "s_full_into", "v_full_into", "z_pre_into"]

#: One batch of SNPs with the LDSC matrices every per-SNP kernel reads: ``beta``, ``se`` (n x k),
#: ``var`` (n, the SNP variance), ``S_LD`` (k x k), ``V_LD`` (k* x k*), ``I_LD`` (k x k), the GC
#: mode ``gc`` (GC_*), ``varse2`` (SNP-variance SE squared) and ``v_pd_known`` (V_full known PD).
SnpBatch = namedtuple("SnpBatch", ["beta", "se", "var", "S_LD", "V_LD", "I_LD", "gc", "varse2", "v_pd_known"])


def snp_batch(beta, se, var, S_LD, V_LD, I_LD, gc, varse2, v_pd_known):
    """:class:`SnpBatch` in the kernels' canonical layout (C-contiguous float64, Python scalars)."""
    f64 = np.float64
    return SnpBatch(
        np.ascontiguousarray(beta, f64),
        np.ascontiguousarray(se, f64),
        np.ascontiguousarray(var, f64),
        np.ascontiguousarray(S_LD, f64),
        np.ascontiguousarray(V_LD, f64),
        np.ascontiguousarray(I_LD, f64),
        int(gc),
        float(varse2),
        bool(v_pd_known),
    )


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
