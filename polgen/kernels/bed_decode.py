"""Decode PLINK .bed packed genotypes (SNP-major, 2 bits per call) into float blocks.

Layout of one SNP in a .bed file: ``ceil(n/4)`` bytes, sample ``i`` in bits ``2*(i%4)`` and
``2*(i%4)+1`` of byte ``i//4`` (low bits first).  Codes, with the default ``count_a1=True``
(bed-reader's ``count_A1``): ``00`` -> 2 copies of A1, ``10`` -> 1, ``11`` -> 0, ``01`` -> missing.

The kernels take the packed rows as a C-contiguous ``uint8`` 2-D array (one row per SNP, e.g. a
memory map of the whole file), the indices of the rows to decode, and write into a
caller-provided ``(n_samples, n_rows)`` Fortran-ordered float32/float64 buffer, so each SNP is a
contiguous column.  Per SNP two passes over the packed bytes: the first sums dosages and counts
missing calls four genotypes at a time through 256-entry lookup tables, the second writes the
values through a 4-entry table per SNP (code -> value).

Scale codes:
  ``SCALE_RAW`` (0)        dosage, NaN for missing;
  ``SCALE_CENTER`` (1)     dosage minus the SNP mean over non-missing calls; missing -> 0 (mean
                           imputation, then centring);
  ``SCALE_EIGENSTRAT`` (2) centred, divided by ``sqrt(2 p (1 - p))`` with ``p = mean / 2``;
                           monomorphic SNPs (``p`` in {0, 1}) and SNPs with no calls are all 0.
In every mode ``freq`` receives ``mean / 2`` (NaN when every call is missing) and ``nmiss`` the
number of missing calls.
"""

from __future__ import annotations

import threading

import numba as nb
import numpy as np

from polgen.kernels._jit import jit_exact, jit_fm, jit_fm_parallel

SCALE_RAW = 0
SCALE_CENTER = 1
SCALE_EIGENSTRAT = 2
SCALE_CODES = {"raw": SCALE_RAW, "center": SCALE_CENTER, "eigenstrat": SCALE_EIGENSTRAT}


#: decoded values (count of the counted allele) per 2-bit code; code 1 (missing) is 0 here
DOSAGE_A1 = np.array([2, 0, 1, 0], dtype=np.int64)
DOSAGE_A2 = np.array([0, 0, 1, 2], dtype=np.int64)


def _byte_luts(dosage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per byte value: the dosage sum and the missing count of its 4 genotypes."""
    b = np.arange(256)
    codes = np.stack([(b >> (2 * k)) & 3 for k in range(4)], axis=1)
    sums = dosage[codes].sum(axis=1).astype(np.int64)
    miss = (codes == 1).sum(axis=1).astype(np.int64)
    return np.ascontiguousarray(sums), np.ascontiguousarray(miss)


SUM_LUT_A1, MISS_LUT = _byte_luts(DOSAGE_A1)
SUM_LUT_A2, _ = _byte_luts(DOSAGE_A2)

#: below this many genotypes in a block the serial kernel is used (thread start-up dominates)
PARALLEL_MIN_CELLS = 1 << 18


@jit_exact
def _decode_one(packed, r, j, n_samples, scale_code, dosage, sum_lut, miss_lut, out, freq, nmiss, table):
    row = packed[r]
    nfull = n_samples // 4
    rem = n_samples - 4 * nfull
    s = 0
    m = 0
    for b in range(nfull):
        byte = row[b]
        s += sum_lut[byte]
        m += miss_lut[byte]
    if rem > 0:
        byte = row[nfull]
        for k in range(rem):
            c = (byte >> (2 * k)) & 3
            s += dosage[c]
            if c == 1:
                m += 1
    cnt = n_samples - m
    nmiss[j] = m
    if cnt > 0:
        mean = s / cnt
    else:
        mean = np.nan
    freq[j] = 0.5 * mean
    if scale_code == 0:
        for c in range(4):
            table[j, c] = float(dosage[c])
        table[j, 1] = np.nan
    elif cnt == 0:
        for c in range(4):
            table[j, c] = 0.0
    elif scale_code == 1:
        for c in range(4):
            table[j, c] = dosage[c] - mean
        table[j, 1] = 0.0
    else:
        p = 0.5 * mean
        sd = np.sqrt(2.0 * p * (1.0 - p))
        if sd > 0.0:
            for c in range(4):
                table[j, c] = (dosage[c] - mean) / sd
            table[j, 1] = 0.0
        else:
            for c in range(4):
                table[j, c] = 0.0
    for b in range(nfull):
        byte = row[b]
        i = 4 * b
        out[i, j] = table[j, byte & 3]
        out[i + 1, j] = table[j, (byte >> 2) & 3]
        out[i + 2, j] = table[j, (byte >> 4) & 3]
        out[i + 3, j] = table[j, byte >> 6]
    if rem > 0:
        byte = row[nfull]
        i = 4 * nfull
        for k in range(rem):
            c = (byte >> (2 * k)) & 3
            out[i + k, j] = table[j, c]


@jit_fm
def _decode_rows_serial(packed, rows, n_samples, scale_code, dosage, sum_lut, miss_lut, out, freq, nmiss, table):
    for j in range(rows.shape[0]):
        _decode_one(packed, rows[j], j, n_samples, scale_code, dosage, sum_lut, miss_lut, out, freq, nmiss, table)


@jit_fm_parallel
def _decode_rows_parallel(packed, rows, n_samples, scale_code, dosage, sum_lut, miss_lut, out, freq, nmiss, table):
    for j in nb.prange(rows.shape[0]):
        _decode_one(packed, rows[j], j, n_samples, scale_code, dosage, sum_lut, miss_lut, out, freq, nmiss, table)


def decode_rows(
    packed: np.ndarray,
    rows: np.ndarray,
    n_samples: int,
    scale_code: int,
    out: np.ndarray,
    freq: np.ndarray,
    nmiss: np.ndarray,
    *,
    count_a1: bool = True,
    parallel: bool | None = None,
) -> None:
    """Decode ``packed[rows[j]]`` into ``out[:, j]`` for every ``j``.

    ``packed``: C-contiguous uint8 ``(n_rows_total, ceil(n_samples/4))``; ``rows``: int64 indices;
    ``out``: ``(n_samples, len(rows))`` float32/float64, Fortran order (or a single column);
    ``freq``: float64 ``(len(rows),)``; ``nmiss``: int64 ``(len(rows),)``.  ``parallel=None``
    uses numba threads only for blocks of at least :data:`PARALLEL_MIN_CELLS` genotypes and only
    when called from the main thread (worker threads of a pool decode serially).
    """
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    k = rows.shape[0]
    if out.shape != (n_samples, k) or not out.flags.f_contiguous:
        raise ValueError(
            f"out must be a Fortran-ordered ({n_samples}, {k}) array, got "
            f"{out.shape} (f_contiguous={out.flags.f_contiguous})"
        )
    if out.dtype not in (np.float32, np.float64):
        raise ValueError(f"out must be float32 or float64, got {out.dtype}")
    if freq.shape != (k,) or nmiss.shape != (k,):
        raise ValueError("freq and nmiss must have one entry per decoded SNP")
    if packed.dtype != np.uint8 or packed.ndim != 2 or not packed.flags.c_contiguous:
        raise ValueError("packed must be a C-contiguous 2-D uint8 array")
    if packed.shape[1] * 4 < n_samples:
        raise ValueError(f"packed rows hold {packed.shape[1] * 4} genotypes, fewer than n_samples")
    if k and (rows.min() < 0 or rows.max() >= packed.shape[0]):
        raise ValueError("row index out of range")
    if scale_code not in (0, 1, 2):
        raise ValueError(f"unknown scale code {scale_code}")
    if k == 0:
        return
    dosage = DOSAGE_A1 if count_a1 else DOSAGE_A2
    sum_lut = SUM_LUT_A1 if count_a1 else SUM_LUT_A2
    table = np.empty((k, 4), dtype=np.float64)
    if parallel is None:
        # threads only from the main thread: numba's default (workqueue) threading layer aborts on
        # concurrent parallel launches, and a worker thread of a pool is parallel already
        parallel = (
            k > 1 and n_samples * k >= PARALLEL_MIN_CELLS and threading.current_thread() is threading.main_thread()
        )
    fn = _decode_rows_parallel if parallel else _decode_rows_serial
    fn(packed, rows, n_samples, scale_code, dosage, sum_lut, MISS_LUT, out, freq, nmiss, table)


def decode_block(
    packed_uint8_2d: np.ndarray,
    n_samples: int,
    scale_code: int,
    out: np.ndarray,
    freq: np.ndarray,
    nmiss: np.ndarray,
    *,
    count_a1: bool = True,
    parallel: bool | None = None,
) -> None:
    """Decode every row of ``packed_uint8_2d`` (one SNP per row) into the columns of ``out``."""
    packed = np.ascontiguousarray(packed_uint8_2d, dtype=np.uint8)
    if packed.ndim != 2:
        raise ValueError("packed_uint8_2d must be 2-D (one row per SNP)")
    rows = np.arange(packed.shape[0], dtype=np.int64)
    decode_rows(packed, rows, n_samples, scale_code, out, freq, nmiss, count_a1=count_a1, parallel=parallel)


@jit_exact
def count_nonblank_lines(buf, carry):
    """Non-blank lines completed in ``buf`` (uint8 text) and whether an unterminated line holding
    a non-whitespace byte remains; ``carry``: the same flag from the previous chunk."""
    n = 0
    seen = carry
    for i in range(buf.shape[0]):
        b = buf[i]
        if b == 10:
            if seen:
                n += 1
            seen = False
        elif b > 32:
            seen = True
    return n, seen


__all__ = [
    "SCALE_RAW",
    "SCALE_CENTER",
    "SCALE_EIGENSTRAT",
    "SCALE_CODES",
    "decode_rows",
    "decode_block",
    "count_nonblank_lines",
    "PARALLEL_MIN_CELLS",
]
