"""Decode packed PLINK .bed rows for the LFMM2 test pass: centred dosages and ``y'y`` in one go.

The fused test pass needs, per SNP, the mean-imputed, centred dosages ``y`` (a Fortran column
for the GEMM with the projections) and ``y'y``.  Compared with the general decoder
(:mod:`polgen.kernels.bed_decode`, then a sum of squares over the floats) this kernel

* gets ``y'y`` from the integer counts of the first pass over the bytes:
  ``y'y = (c * sum dos^2 - s^2) / c`` with ``s`` the dosage sum over the ``c`` calls (an exact
  integer numerator, one rounding), so the decoded floats are never read back;
* writes two genotypes per lookup from a 16-entry table of (value, value) pairs per nibble.

The decoded values are bit-identical to ``bed_decode`` with ``scale="center"`` (``dos - mean``,
0 for a missing call); ``freq`` is mean / 2 (NaN without calls), ``nmiss`` the missing count.
Codes: ``00`` -> dosage[0], ``01`` -> missing, ``10`` -> dosage[2], ``11`` -> dosage[3].
"""

from __future__ import annotations

import numpy as np

from polgen.kernels._jit import jit_exact

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


@jit_exact
def decode_center_yy(packed, rows, n, dosage, sum_lut, sq_lut, miss_lut, out, freq, nmiss, yy):
    """Centred dosages of ``packed[rows[j]]`` into ``out[:, j]`` (``(n, len(rows))``, Fortran
    order), with ``freq``, ``nmiss`` and ``yy`` (``y'y``) per SNP; see the module docs."""
    nfull = n // 4
    rem = n - 4 * nfull
    tab = np.empty((16, 2))
    for j in range(rows.shape[0]):
        row = packed[rows[j]]
        s = 0
        q = 0
        m = 0
        for b in range(nfull):
            byte = row[b]
            s += sum_lut[byte]
            q += sq_lut[byte]
            m += miss_lut[byte]
        for k in range(rem):
            c = (row[nfull] >> (2 * k)) & 3
            if c == 1:
                m += 1
            else:
                v = dosage[c]
                s += v
                q += v * v
        cnt = n - m
        nmiss[j] = m
        if cnt == 0:
            freq[j] = np.nan
            yy[j] = 0.0
            for i in range(n):
                out[i, j] = 0.0
            continue
        mean = s / cnt
        freq[j] = 0.5 * mean
        yy[j] = (cnt * q - s * s) / cnt
        for x in range(16):
            for h in range(2):
                c = (x >> (2 * h)) & 3
                tab[x, h] = 0.0 if c == 1 else dosage[c] - mean
        for b in range(nfull):
            byte = row[b]
            lo = byte & 15
            hi = byte >> 4
            i = 4 * b
            out[i, j] = tab[lo, 0]
            out[i + 1, j] = tab[lo, 1]
            out[i + 2, j] = tab[hi, 0]
            out[i + 3, j] = tab[hi, 1]
        for k in range(rem):
            c = (row[nfull] >> (2 * k)) & 3
            out[4 * nfull + k, j] = tab[c, 0]
