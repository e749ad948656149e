"""The LFMM fit's pass ``acc += Y_b (Y_b' G)`` from packed .bed rows, fused over byte dosages.

The fit (:mod:`polgen.lfmm.fit`) multiplies an n x w sketch by ``Yc Yc'`` a dozen times over the
same estimation SNPs.  Decoding each block to float64 and calling BLAS twice with a thin (w = 8)
operand spends most of its time in the decode and in BLAS packing a 65-SNP panel per call.  Here
a block of SNPs is decoded to one byte per call (:func:`decode_bytes`: four dosages per table
lookup, written as one 32-bit word), and :func:`gram_block` computes both products from those
bytes with the long dimension innermost, so the loops vectorise (4 doubles per AVX2 FMA):

* ``Z = V'G`` two SNPs x four sketch columns at a time (eight running dot products over the
  samples, one load of each byte row per column group);
* the centring of ``Z`` (``y = v - mean * o``, ``o`` the called samples): ``Z_j -= mean_j (G'1 -
  sum of G's rows of the samples missing in SNP j)``;
* ``acc' += Z' V`` four SNPs x four columns at a time (one load and store of each accumulator row
  per four SNPs), then ``- 1 (mean'Z)`` and ``+ mean_j Z_j`` on the rows of SNP j's missing calls
  (there ``y = v = 0``).

The accumulator is kept transposed (``accT``: w x n, C order) so its rows are contiguous.
Fast-math reassociation (the dot products are summed in vector lanes) changes the results in
the last bits only: a pass agrees with the dense product to ~1e-15 relative.
"""

from __future__ import annotations

import numpy as np

from polgen.kernels._jit import jit_exact, jit_fm

_CODES = (np.arange(256)[:, None] >> (2 * np.arange(4))[None, :]) & 3


def byte_dosage_words(dosage: np.ndarray) -> np.ndarray:
    """Per .bed byte value: the dosages of its four calls as four bytes of a little-endian
    uint32 (0 for the missing code 1)."""
    dos = np.asarray(dosage, dtype=np.uint32)[_CODES]
    dos = np.where(_CODES == 1, 0, dos)
    return np.ascontiguousarray((dos << (8 * np.arange(4, dtype=np.uint32))).sum(axis=1).astype(np.uint32))


@jit_exact
def decode_bytes(packed, rows, n, dosage, words, packlut, out, mean, miss_idx, miss_start):
    """Dosages of ``packed[rows[j]]`` as bytes into ``out[j, :n]`` (0 for a missing call;
    ``out`` is ``(len(rows), 4 * ceil(n / 4))`` uint8, C order), the call mean of each SNP in
    ``mean`` (0 without calls), and the samples missing in SNP j in
    ``miss_idx[miss_start[j]:miss_start[j + 1]]`` (``miss_idx`` holds up to ``n * len(rows)``).
    ``packlut``: :func:`polgen.kernels.lfmm_decode.packed_byte_table` (dosage sum in bits 0-15,
    missing count from bit 32)."""
    nfull = n // 4
    rem = n - 4 * nfull
    out32 = out.view(np.uint32)
    pos = 0
    for j in range(rows.shape[0]):
        miss_start[j] = pos
        row = packed[rows[j]]
        o = out32[j]
        tot = 0
        for b in range(nfull):
            byte = row[b]
            t = packlut[byte]
            tot += t
            o[b] = words[byte]
            if t >= 4294967296:  # a missing call in this byte (rare): note which
                for k in range(4):
                    if ((byte >> (2 * k)) & 3) == 1:
                        miss_idx[pos] = 4 * b + k
                        pos += 1
        s = tot & 0xFFFF
        m = tot >> 32
        if rem:
            o[nfull] = 0
            oj = out[j]
            for k in range(rem):
                c = (row[nfull] >> (2 * k)) & 3
                if c == 1:
                    m += 1
                    miss_idx[pos] = 4 * nfull + k
                    pos += 1
                else:
                    s += dosage[c]
                    oj[4 * nfull + k] = dosage[c]
        cnt = n - m
        mean[j] = s / cnt if cnt > 0 else 0.0
    miss_start[rows.shape[0]] = pos


@jit_fm
def _products_z(D, k, n, GT, Z):
    """``Z[j, c] = sum_i D[j, i] GT[c, i]`` for the first k rows of D; the columns in groups of
    four and, when ``w % 4 == 3``, a last group of three (``w % 4`` in (1, 2): the last group
    costs as three or four columns)."""
    w = GT.shape[0]
    for j in range(0, k, 2):
        j1 = j + 1 if j + 1 < k else j
        d0 = D[j]
        d1 = D[j1]
        for c in range(0, w, 4):
            c1 = min(c + 1, w - 1)
            c2 = min(c + 2, w - 1)
            g0 = GT[c]
            g1 = GT[c1]
            g2 = GT[c2]
            if w - c >= 4:
                g3 = GT[c + 3]
                s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = 0.0
                for i in range(n):
                    a = np.float64(d0[i])
                    b = np.float64(d1[i])
                    s00 += a * g0[i]
                    s01 += a * g1[i]
                    s02 += a * g2[i]
                    s03 += a * g3[i]
                    s10 += b * g0[i]
                    s11 += b * g1[i]
                    s12 += b * g2[i]
                    s13 += b * g3[i]
                Z[j, c + 3] = s03
                Z[j1, c + 3] = s13
            else:
                s00 = s01 = s02 = s10 = s11 = s12 = 0.0
                for i in range(n):
                    a = np.float64(d0[i])
                    b = np.float64(d1[i])
                    s00 += a * g0[i]
                    s01 += a * g1[i]
                    s02 += a * g2[i]
                    s10 += b * g0[i]
                    s11 += b * g1[i]
                    s12 += b * g2[i]
            Z[j, c] = s00
            Z[j1, c] = s10
            Z[j, c1] = s01
            Z[j1, c1] = s11
            Z[j, c2] = s02
            Z[j1, c2] = s12


@jit_fm
def _products_acc(D, k, n, Z, accT):
    """``accT[c, i] += sum_j Z[j, c] D[j, i]`` over the first k rows of D and Z (columns grouped
    as in :func:`_products_z`)."""
    w = accT.shape[0]
    zz = np.zeros((4, 4))
    for j in range(0, k, 4):
        m = min(4, k - j)
        d0 = D[j]
        d1 = D[min(j + 1, k - 1)]
        d2 = D[min(j + 2, k - 1)]
        d3 = D[min(j + 3, k - 1)]
        for c in range(0, w, 4):
            zz[:] = 0.0
            for u in range(min(4, w - c)):
                for t in range(m):
                    zz[u, t] = Z[j + t, c + u]
            r0 = accT[c]
            r1 = accT[min(c + 1, w - 1)]
            r2 = accT[min(c + 2, w - 1)]
            z00, z01, z02, z03 = zz[0, 0], zz[0, 1], zz[0, 2], zz[0, 3]
            z10, z11, z12, z13 = zz[1, 0], zz[1, 1], zz[1, 2], zz[1, 3]
            z20, z21, z22, z23 = zz[2, 0], zz[2, 1], zz[2, 2], zz[2, 3]
            if w - c >= 4:
                r3 = accT[c + 3]
                z30, z31, z32, z33 = zz[3, 0], zz[3, 1], zz[3, 2], zz[3, 3]
                for i in range(n):
                    a = np.float64(d0[i])
                    b = np.float64(d1[i])
                    e = np.float64(d2[i])
                    f = np.float64(d3[i])
                    r0[i] += a * z00 + b * z01 + e * z02 + f * z03
                    r1[i] += a * z10 + b * z11 + e * z12 + f * z13
                    r2[i] += a * z20 + b * z21 + e * z22 + f * z23
                    r3[i] += a * z30 + b * z31 + e * z32 + f * z33
            elif w - c == 3:
                for i in range(n):
                    a = np.float64(d0[i])
                    b = np.float64(d1[i])
                    e = np.float64(d2[i])
                    f = np.float64(d3[i])
                    r0[i] += a * z00 + b * z01 + e * z02 + f * z03
                    r1[i] += a * z10 + b * z11 + e * z12 + f * z13
                    r2[i] += a * z20 + b * z21 + e * z22 + f * z23
            else:  # one or two columns left: r1 (and r2) alias r0 or r1 with zero weights
                for i in range(n):
                    a = np.float64(d0[i])
                    b = np.float64(d1[i])
                    e = np.float64(d2[i])
                    f = np.float64(d3[i])
                    r0[i] += a * z00 + b * z01 + e * z02 + f * z03
                    if w - c == 2:
                        r1[i] += a * z10 + b * z11 + e * z12 + f * z13


@jit_fm
def gram_block(D, k, n, G, GT, colsum, mean, miss_idx, miss_start, Z, accT, shift):
    """One block of :func:`decode_bytes` (its first k rows of D, ``mean``, missing lists):
    ``accT += (Y_b (Y_b' G))'`` except for the ``- 1 (mean'Z)`` term, which is added to
    ``shift`` (w) to be subtracted from every sample once at the end.  ``G`` (n x w) and
    ``GT = G'`` (w x n, C order) hold the same sketch, ``colsum = G'1``; ``Z`` (>= k x w) is
    scratch and receives the centred ``Y_b' G``.  Fastest with ``w % 4`` in (0, 3)."""
    w = GT.shape[0]
    _products_z(D, k, n, GT, Z)
    for j in range(k):  # the centring: Z_j = Y_j'G = V_j'G - mean_j (G'1 - G[missing]'1)
        mu = mean[j]
        if mu == 0.0:
            continue
        for c in range(w):
            Z[j, c] -= mu * colsum[c]
        for p in range(miss_start[j], miss_start[j + 1]):
            i = miss_idx[p]
            for c in range(w):
                Z[j, c] += mu * G[i, c]
    _products_acc(D, k, n, Z, accT)
    for j in range(k):
        mu = mean[j]
        if mu == 0.0:
            continue
        for c in range(w):
            shift[c] += mu * Z[j, c]
        for p in range(miss_start[j], miss_start[j + 1]):
            i = miss_idx[p]
            for c in range(w):
                accT[c, i] += mu * Z[j, c]


@jit_fm
def gram_range(D, a, b, kb, n, G, GT, colsum, mean, miss_idx, miss_start, Z, accT, shift, stop):
    """:func:`gram_block` over the held byte dosages of SNPs ``a:b`` (all of them decoded:
    ``D``, ``mean`` and ``miss_start`` index the whole estimation subset), in blocks of ``kb``
    SNPs starting at ``a`` — the same blocks, so the same bits, as calling :func:`gram_block` per
    block — in one call, so a thread runs a whole piece of a pass without the GIL.  Stops before
    the next block once ``stop[0]`` is non-zero (the pass is then incomplete).  Returns the SNPs
    done."""
    for s in range(a, b, kb):
        if stop[0] != 0:
            return s - a
        e = min(b, s + kb)
        gram_block(D[s:e], e - s, n, G, GT, colsum, mean[s:e], miss_idx, miss_start[s : e + 1], Z, accT, shift)
    return b - a


@jit_fm
def _products_z32(D, k, n, GT, Z):
    """:func:`_products_z` in float32 (``GT`` and ``Z`` float32, ``w`` a multiple of 4): eight
    lanes per vector, twice the float64 kernel's; the dot products are summed in float32."""
    w = GT.shape[0]
    zero = np.float32(0.0)
    for j in range(0, k, 2):
        j1 = j + 1 if j + 1 < k else j
        d0 = D[j]
        d1 = D[j1]
        for c in range(0, w, 4):
            g0 = GT[c]
            g1 = GT[c + 1]
            g2 = GT[c + 2]
            g3 = GT[c + 3]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            for i in range(n):
                a = np.float32(d0[i])
                b = np.float32(d1[i])
                s00 += a * g0[i]
                s01 += a * g1[i]
                s02 += a * g2[i]
                s03 += a * g3[i]
                s10 += b * g0[i]
                s11 += b * g1[i]
                s12 += b * g2[i]
                s13 += b * g3[i]
            Z[j, c] = s00
            Z[j1, c] = s10
            Z[j, c + 1] = s01
            Z[j1, c + 1] = s11
            Z[j, c + 2] = s02
            Z[j1, c + 2] = s12
            Z[j, c + 3] = s03
            Z[j1, c + 3] = s13


@jit_fm
def _products_acc32(D, k, n, Z, acc):
    """``acc[c, i] += sum_j Z[j, c] D[j, i]`` in float32 (``Z`` and ``acc`` float32, ``w`` a
    multiple of 4), four SNPs x four columns at a time as :func:`_products_acc`."""
    w = acc.shape[0]
    zz = np.zeros((4, 4), dtype=np.float32)
    for j in range(0, k, 4):
        m = min(4, k - j)
        d0 = D[j]
        d1 = D[min(j + 1, k - 1)]
        d2 = D[min(j + 2, k - 1)]
        d3 = D[min(j + 3, k - 1)]
        for c in range(0, w, 4):
            zz[:] = 0.0
            for u in range(4):
                for t in range(m):
                    zz[u, t] = Z[j + t, c + u]
            r0 = acc[c]
            r1 = acc[c + 1]
            r2 = acc[c + 2]
            r3 = acc[c + 3]
            z00, z01, z02, z03 = zz[0, 0], zz[0, 1], zz[0, 2], zz[0, 3]
            z10, z11, z12, z13 = zz[1, 0], zz[1, 1], zz[1, 2], zz[1, 3]
            z20, z21, z22, z23 = zz[2, 0], zz[2, 1], zz[2, 2], zz[2, 3]
            z30, z31, z32, z33 = zz[3, 0], zz[3, 1], zz[3, 2], zz[3, 3]
            for i in range(n):
                a = np.float32(d0[i])
                b = np.float32(d1[i])
                e = np.float32(d2[i])
                f = np.float32(d3[i])
                r0[i] += a * z00 + b * z01 + e * z02 + f * z03
                r1[i] += a * z10 + b * z11 + e * z12 + f * z13
                r2[i] += a * z20 + b * z21 + e * z22 + f * z23
                r3[i] += a * z30 + b * z31 + e * z32 + f * z33


@jit_fm
def gram_block32(D, k, n, GT, colsum, mean, miss_idx, miss_start, Z, acc, accT, shift):
    """:func:`gram_block` with float32 products, for the early passes of the fit (a relative
    error of ~1e-7 instead of ~1e-15): ``GT`` (w x n) and the scratch ``Z`` (>= k x w) and
    ``acc`` (w x n) are float32, ``w`` a multiple of 4; the block's ``Y_b (Y_b' G)`` is summed in
    ``acc`` and added to the float64 ``accT``, so the float32 sums run over one block only.  The
    centring and the missing calls are applied in float64 as in :func:`gram_block` (``G[i, c]``
    read as ``GT[c, i]``)."""
    w = GT.shape[0]
    _products_z32(D, k, n, GT, Z)
    for j in range(k):
        mu = mean[j]
        if mu == 0.0:
            continue
        for c in range(w):
            z = np.float64(Z[j, c]) - mu * colsum[c]
            for p in range(miss_start[j], miss_start[j + 1]):
                z += mu * GT[c, miss_idx[p]]
            Z[j, c] = np.float32(z)
    acc[:] = 0.0
    _products_acc32(D, k, n, Z, acc)
    for c in range(w):
        a = acc[c]
        r = accT[c]
        for i in range(n):
            r[i] += a[i]
    for j in range(k):
        mu = mean[j]
        if mu == 0.0:
            continue
        for c in range(w):
            zc = mu * np.float64(Z[j, c])
            shift[c] += zc
            for p in range(miss_start[j], miss_start[j + 1]):
                accT[c, miss_idx[p]] += zc


@jit_fm
def gram_range32(D, a, b, kb, n, GT, colsum, mean, miss_idx, miss_start, Z, acc, accT, shift, stop):
    """:func:`gram_range` with :func:`gram_block32` (float32 products)."""
    for s in range(a, b, kb):
        if stop[0] != 0:
            return s - a
        e = min(b, s + kb)
        gram_block32(D[s:e], e - s, n, GT, colsum, mean[s:e], miss_idx, miss_start[s : e + 1], Z, acc, accT, shift)
    return b - a
