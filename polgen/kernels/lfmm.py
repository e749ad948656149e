"""numba kernels for LFMM2: arrays in, arrays out; nothing here knows Polars or files.

Layouts: genotype blocks are ``(n_samples, n_snps)`` float64 in Fortran order (each SNP a
contiguous column), as :class:`polgen.io.bed.BedStream` yields them.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from polgen.kernels._jit import REASSOC_CONTRACT, jit_fm, jit_fm_parallel, jit_rc, kernel


def colsumsq(y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Sum of squares of each column of a Fortran-ordered float64 block (``y'y`` per SNP)."""
    yt = np.ascontiguousarray(y.T)  # a view for a Fortran block: rows are SNPs
    if out is None:
        out = np.empty(y.shape[1], dtype=np.float64)
    if y.shape[0] * y.shape[1] >= 1 << 20:
        _rows_sumsq_parallel(yt, out)
    else:
        _rows_sumsq_serial(yt, out)
    return out


@jit_fm
def _rows_sumsq_serial(yt, out):
    p, n = yt.shape
    for j in range(p):
        s = 0.0
        for i in range(n):
            v = yt[j, i]
            s += v * v
        out[j] = s


@jit_fm_parallel
def _rows_sumsq_parallel(yt, out):
    p, n = yt.shape
    for j in nb.prange(p):
        s = 0.0
        for i in range(n):
            v = yt[j, i]
            s += v * v
        out[j] = s


@jit_rc
def impute_center_columns(yt, scale_code, freq, n_miss):
    """In place on a C-ordered ``(n_snps, n_samples)`` array (the transpose of a Fortran block).

    NaN entries are missing: each SNP is mean-imputed and centred; ``scale_code`` 1 also divides
    by ``sqrt(2 f (1 - f))`` (eigenstrat; monomorphic SNPs stay 0).  ``freq`` receives the mean / 2
    among non-missing values and ``n_miss`` the missing count.
    """
    p, n = yt.shape
    for j in range(p):
        s = 0.0
        c = 0
        for i in range(n):
            v = yt[j, i]
            if v == v:
                s += v
                c += 1
        n_miss[j] = n - c
        if c == 0:
            freq[j] = np.nan
            for i in range(n):
                yt[j, i] = 0.0
            continue
        mean = s / c
        freq[j] = mean / 2.0
        inv = 1.0
        if scale_code == 1:
            f = mean / 2.0
            var = 2.0 * f * (1.0 - f)
            inv = 1.0 / np.sqrt(var) if var > 0.0 else 0.0
        for i in range(n):
            v = yt[j, i]
            if v == v:
                yt[j, i] = (v - mean) * inv
            else:
                yt[j, i] = 0.0


@jit_rc
def block_stats(PT, yy, rx, k, d, df, df_full, mono_tol, beta, t, f, r2adj, mono, sigma):
    """Per-SNP OLS statistics from the projections of one block.

    ``PT`` is ``(b, m)``: columns ``0..k+d`` are ``Qc' y`` (orthonormal basis of the centred
    ``[U | X]``, the first ``k`` spanning ``U``), columns ``k+d..k+2d`` the ridge effect sizes.
    ``rx`` is ``(d, k+d)``: the rows of ``R^-1`` giving the X coefficients.  Outputs per SNP:
    ``beta`` (d, b) OLS coefficient of each X, ``t`` (d, b), ``f`` / ``r2adj`` the LEA full-model
    F statistic and adjusted R^2, ``mono`` 1 where the SNP has no variance (stats NaN), ``sigma``
    the residual standard deviation ``sqrt(RSS / df)`` of the OLS fit.
    """
    m = k + d
    b = PT.shape[0]
    for s in range(b):
        y2 = yy[s]
        if not (y2 > mono_tol):
            mono[s] = 1
            for j in range(d):
                beta[j, s] = np.nan
                t[j, s] = np.nan
            f[s] = np.nan
            r2adj[s] = np.nan
            sigma[s] = np.nan
            continue
        mono[s] = 0
        ssu = 0.0
        for r in range(k):
            ssu += PT[s, r] * PT[s, r]
        ssx = 0.0
        for r in range(k, m):
            ssx += PT[s, r] * PT[s, r]
        rss0 = y2 - ssu
        rss1 = rss0 - ssx
        if rss1 < 0.0:
            rss1 = 0.0
        sigma2 = rss1 / df
        sigma[s] = np.sqrt(sigma2)
        for j in range(d):
            c = 0.0
            v = 0.0
            for r in range(m):
                c += rx[j, r] * PT[s, r]
                v += rx[j, r] * rx[j, r]
            beta[j, s] = c
            t[j, s] = c / np.sqrt(sigma2 * v)
        if rss0 > 0.0:
            f[s] = (ssx / d) / (rss1 / df_full)
            r2 = ssx / rss0
            r2adj[s] = 1.0 - (1.0 - r2) * (df_full + d) / df_full
        else:
            f[s] = np.nan
            r2adj[s] = np.nan


def colsumsq_into(Y: np.ndarray, out: np.ndarray) -> None:
    """``out[j] = sum_i Y[i, j]^2`` for a Fortran block (serial: callers thread over ranges)."""
    _rows_sumsq_serial(Y.T, out)


#: samples per pass of :func:`project_packed`: 8 rows of T over 256 samples (16 KB) stay in L1
#: while every SNP of the block is projected on them (a multiple of 4: whole .bed bytes)
PROJECT_CHUNK = 256


@kernel(fastmath=REASSOC_CONTRACT, inline="always")
def _dot8(row, quads, t0, t1, t2, t3, t4, t5, t6, t7, out, c):
    """``out[c + r] += v . t_r`` for r < 8, ``v`` the dosages of the .bed bytes ``row`` (sample
    ``i`` in byte ``i >> 2``, read from the flat 4-per-byte table ``quads``): one pass, no decoded
    copy of the SNP."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    for i in range(t0.shape[0]):
        x = quads[4 * np.int64(row[i >> 2]) + (i & 3)]
        s0 += x * t0[i]
        s1 += x * t1[i]
        s2 += x * t2[i]
        s3 += x * t3[i]
        s4 += x * t4[i]
        s5 += x * t5[i]
        s6 += x * t6[i]
        s7 += x * t7[i]
    out[c] += s0
    out[c + 1] += s1
    out[c + 2] += s2
    out[c + 3] += s3
    out[c + 4] += s4
    out[c + 5] += s5
    out[c + 6] += s6
    out[c + 7] += s7


@kernel(fastmath=REASSOC_CONTRACT, inline="always")
def _dot4(row, quads, t0, t1, t2, t3, out, c):
    """:func:`_dot8` for four rows of T."""
    s0 = s1 = s2 = s3 = 0.0
    for i in range(t0.shape[0]):
        x = quads[4 * np.int64(row[i >> 2]) + (i & 3)]
        s0 += x * t0[i]
        s1 += x * t1[i]
        s2 += x * t2[i]
        s3 += x * t3[i]
    out[c] += s0
    out[c + 1] += s1
    out[c + 2] += s2
    out[c + 3] += s3


@kernel(fastmath=REASSOC_CONTRACT)
def project_packed(packed, rows, n, quads, Tt, PT, chunk):
    """``PT[j] = Tt @ v_j`` for the SNPs ``packed[rows[j]]`` (.bed rows of ``n`` samples; ``v_j``
    their uncentred dosages, 0 at a missing call, taken from ``quads``: the flat ``(256, 4)``
    table of :func:`polgen.kernels.lfmm_decode.quad_table`); ``Tt`` ``(m, n)`` with ``m`` a
    multiple of 4, ``PT`` ``(k, m)``; ``chunk`` a multiple of 4.  The projection of the fused test
    pass straight from the bytes: no decoded block, no GEMM.

    Samples are taken ``chunk`` at a time, so that the rows of ``Tt`` of a chunk stay in L1 while
    every SNP is projected on them; each SNP's sums run over vectors of samples (reassociated) in
    an order fixed by ``n`` and ``chunk``, so a SNP's row is the same whatever block it is in.
    Unit-stride 1-D slices (never a 2-D index with a computed, possibly negative position) let
    LLVM vectorise the inner loops; the padding codes of a last byte are never read."""
    m = Tt.shape[0]
    k = rows.shape[0]
    for j in range(k):
        for c in range(m):
            PT[j, c] = 0.0
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        a4 = a // 4
        for c in range(0, m - 7, 8):
            t0 = Tt[c, a:b]
            t1 = Tt[c + 1, a:b]
            t2 = Tt[c + 2, a:b]
            t3 = Tt[c + 3, a:b]
            t4 = Tt[c + 4, a:b]
            t5 = Tt[c + 5, a:b]
            t6 = Tt[c + 6, a:b]
            t7 = Tt[c + 7, a:b]
            for j in range(k):
                _dot8(packed[rows[j], a4:], quads, t0, t1, t2, t3, t4, t5, t6, t7, PT[j], c)
        if m % 8:
            c = m - 4
            t0 = Tt[c, a:b]
            t1 = Tt[c + 1, a:b]
            t2 = Tt[c + 2, a:b]
            t3 = Tt[c + 3, a:b]
            for j in range(k):
                _dot4(packed[rows[j], a4:], quads, t0, t1, t2, t3, PT[j], c)
