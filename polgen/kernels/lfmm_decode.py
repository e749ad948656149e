"""Decode packed PLINK .bed rows for the LFMM2 test pass: dosages and ``y'y`` in one pass.

The fused test pass needs, per SNP, the projections ``T'y`` of the mean-imputed, centred dosages
``y`` and ``y'y``.  Compared with the general decoder (:mod:`polgen.kernels.bed_decode`: a pass
for the mean, a pass writing centred values, then a sum of squares over the floats) these kernels

* write the *uncentred* dosages ``v`` (0 for a missing call) in a single pass over the bytes, two
  genotypes per lookup from a constant 16-entry table of (value, value) pairs per nibble, while
  summing dosages, squares and missing calls through one 256-entry table of packed counts;
* get ``y'y = (c * sum dos^2 - s^2) / c`` from those integer counts (``s`` the dosage sum over
  the ``c`` calls: an exact integer numerator, one rounding), so the floats are never read back;
* centre the products instead of the genotypes: ``y = v - mean * o`` (``o`` the called samples),
  so ``T'y = T'v - mean (T'1 - sum of T's rows of the missing samples)`` (:func:`center_projection`,
  a k x m correction after the projection; the rows of T are only revisited for SNPs with missing calls).

The test pass never writes the dosages: :func:`packed_moments` gives the per-SNP moments and
:func:`polgen.kernels.lfmm.project_packed` reads the dosages from the bytes through
:func:`quad_table` (four dosages per byte value) while projecting.

``freq`` is mean / 2 (NaN without calls), ``nmiss`` the missing count.
Codes: ``00`` -> dosage[0], ``01`` -> missing, ``10`` -> dosage[2], ``11`` -> dosage[3].
"""

from __future__ import annotations

import numpy as np

from polgen.kernels._jit import jit_exact, kernel

_CODES = (np.arange(256)[:, None] >> (2 * np.arange(4))[None, :]) & 3


def byte_tables(dosage: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per byte value: the dosage sum, the sum of squared dosages and the missing count of its
    four genotypes (``dosage`` per code, 0 for the missing code 1)."""
    dos = np.asarray(dosage, dtype=np.int64)[_CODES]
    miss = _CODES == 1
    dos = np.where(miss, 0, dos)
    return (
        np.ascontiguousarray(dos.sum(axis=1)),
        np.ascontiguousarray((dos * dos).sum(axis=1)),
        np.ascontiguousarray(miss.sum(axis=1).astype(np.int64)),
    )


def packed_byte_table(dosage: np.ndarray) -> np.ndarray:
    """:func:`byte_tables` in one int64 per byte value: dosage sum in bits 0-15, sum of squares
    in bits 16-31, missing count from bit 32 (a row of up to 8,000 bytes cannot carry over)."""
    s, q, m = byte_tables(dosage)
    return np.ascontiguousarray(s | (q << 16) | (m << 32))


def pair_table(dosage: np.ndarray) -> np.ndarray:
    """``(16, 2)``: the dosages of the two genotypes of a nibble (0 for a missing call)."""
    x = np.arange(16)
    codes = np.stack([x & 3, x >> 2], axis=1)
    dos = np.asarray(dosage, dtype=np.float64)[codes]
    return np.ascontiguousarray(np.where(codes == 1, 0.0, dos))


def quad_table(dosage: np.ndarray) -> np.ndarray:
    """``(256, 4)``: the dosages of the four genotypes of a byte (0 for a missing call)."""
    dos = np.asarray(dosage, dtype=np.float64)[_CODES]
    return np.ascontiguousarray(np.where(_CODES == 1, 0.0, dos))


@kernel(fastmath=False, inline="always")
def _moments(j, n, s, q, m, mean, freq, nmiss, yy):
    """SNP ``j``'s mean, allele frequency, centred sum of squares and missing count from the sums
    ``s`` and ``q`` of its dosages and their squares over the ``n - m`` called samples (mean 0,
    frequency NaN when none is called)."""
    cnt = n - m
    nmiss[j] = m
    if cnt == 0:
        freq[j] = np.nan
        yy[j] = 0.0
        mean[j] = 0.0
        return
    mu = s / cnt
    mean[j] = mu
    freq[j] = 0.5 * mu
    yy[j] = (cnt * q - s * s) / cnt


@jit_exact
def decode_dosage_yy(packed, rows, n, dosage, packlut, pairs, out, mean, freq, nmiss, yy, miss_idx, miss_start):
    """Uncentred dosages of ``packed[rows[j]]`` into ``out[:, j]`` (0 for a missing call) in one
    pass over the bytes, with the call mean, ``freq``, ``nmiss`` and ``y'y`` of the centred,
    mean-imputed SNP.  The samples missing in SNP j are listed in
    ``miss_idx[miss_start[j]:miss_start[j + 1]]`` (``miss_idx`` holds up to ``n * len(rows)``).
    The centred SNP is ``y = v - mean * o`` (``o`` the called samples), so a projection
    ``T'y = T'v - mean (T'1 - T'[missing])``: see :func:`center_projection`."""
    nfull = n // 4
    rem = n - 4 * nfull
    pos = 0
    for j in range(rows.shape[0]):
        miss_start[j] = pos
        row = packed[rows[j]]
        tot = 0
        for b in range(nfull):
            byte = row[b]
            t = packlut[byte]
            tot += t
            lo = byte & 15
            hi = byte >> 4
            i = 4 * b
            out[i, j] = pairs[lo, 0]
            out[i + 1, j] = pairs[lo, 1]
            out[i + 2, j] = pairs[hi, 0]
            out[i + 3, j] = pairs[hi, 1]
            if t >= 4294967296:  # a missing call in this byte (rare): note which
                for k in range(4):
                    if ((byte >> (2 * k)) & 3) == 1:
                        miss_idx[pos] = i + k
                        pos += 1
        s = tot & 0xFFFF
        q = (tot >> 16) & 0xFFFF
        m = tot >> 32
        for k in range(rem):
            c = (row[nfull] >> (2 * k)) & 3
            if c == 1:
                m += 1
                out[4 * nfull + k, j] = 0.0
                miss_idx[pos] = 4 * nfull + k
                pos += 1
            else:
                v = dosage[c]
                s += v
                q += v * v
                out[4 * nfull + k, j] = float(v)
        _moments(j, n, s, q, m, mean, freq, nmiss, yy)
    miss_start[rows.shape[0]] = pos


@jit_exact
def center_projection(mean, miss_idx, miss_start, colsum, T, PT):
    """``PT[j] = T'v_j`` -> ``T'y_j = T'v_j - mean_j (colsum - sum of T's rows of the samples
    missing in SNP j)`` (``colsum = T'1``), for the SNPs of :func:`decode_dosage_yy`."""
    w = PT.shape[1]
    for j in range(PT.shape[0]):
        mu = mean[j]
        if mu == 0.0:  # no calls (all values 0) or a dosage mean of 0: T'v is already T'y
            continue
        for c in range(w):
            PT[j, c] -= mu * colsum[c]
        for p in range(miss_start[j], miss_start[j + 1]):
            i = miss_idx[p]
            for c in range(w):
                PT[j, c] += mu * T[i, c]


@jit_exact
def missing_scatter(mean, miss_idx, miss_start, Z, acc):
    """For :func:`decode_dosage_yy` blocks in a product ``acc += Y Z`` computed as ``V Z - 1 (mean'Z)``:
    add back ``mean_j Z[j]`` to the row of every sample missing in SNP j (there ``y = v = 0``)."""
    w = Z.shape[1]
    for j in range(Z.shape[0]):
        mu = mean[j]
        if mu == 0.0:
            continue
        for p in range(miss_start[j], miss_start[j + 1]):
            i = miss_idx[p]
            for c in range(w):
                acc[i, c] += mu * Z[j, c]


@jit_exact
def packed_moments(packed, rows, n, dosage, packlut, mean, freq, nmiss, yy, miss_idx, miss_start):
    """:func:`decode_dosage_yy` without the dosages (the same ``mean``, ``freq``, ``nmiss``, ``y'y``
    and missing-sample lists, bit for bit): for a pass that reads the dosages from the bytes
    itself (:func:`polgen.kernels.lfmm.project_packed`)."""
    nfull = n // 4
    rem = n - 4 * nfull
    pos = 0
    for j in range(rows.shape[0]):
        miss_start[j] = pos
        row = packed[rows[j], :nfull]
        tot = 0
        for b in range(nfull):  # a branch-free sum of the packed counts
            tot += packlut[row[b]]
        if tot >= 4294967296:  # missing calls (rare): list them, in sample order
            for b in range(nfull):
                if packlut[row[b]] >= 4294967296:
                    byte = row[b]
                    for k in range(4):
                        if ((byte >> (2 * k)) & 3) == 1:
                            miss_idx[pos] = 4 * b + k
                            pos += 1
        row = packed[rows[j]]
        s = tot & 0xFFFF
        q = (tot >> 16) & 0xFFFF
        m = tot >> 32
        for k in range(rem):
            c = (row[nfull] >> (2 * k)) & 3
            if c == 1:
                m += 1
                miss_idx[pos] = 4 * nfull + k
                pos += 1
            else:
                v = dosage[c]
                s += v
                q += v * v
        _moments(j, n, s, q, m, mean, freq, nmiss, yy)
    miss_start[rows.shape[0]] = pos
