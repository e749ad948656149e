"""Tile kernels of the exact received-ligand sum (:class:`polgen.kernels.ligands.GaussTiles`):
a branch-free vectorised exp, TILE x TILE Gaussian blocks, register-blocked block products with
Kahan-compensated accumulation, and the nearest-first walk that drops provably negligible source
tiles (see :mod:`polgen.kernels.ligands` for the method and its error bound).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from polgen.kernels._jit import jit_contract, jit_contract_parallel, jit_fm, jit_fm_parallel

# the exp and the Kahan sums must not be reassociated (that would cancel their correction terms):
# those kernels use jit_contract (fastmath={"contract"}) instead of jit_fm

TILE = 64  # cells per tile (a compile-time constant of the kernels below)
DROP_EPS = 2.0**-54  # source tiles are skipped when their bound is below this x each output

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693145751953125  # 15 significant bits: k * _LN2_HI is exact for |k| < 2^38
_LN2_LO = 1.42860682030941723212e-6


@intrinsic
def _bits_as_f64(typingctx, bits):
    """Reinterpret an int64 bit pattern as a float64 (a register move, vectorisable)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def _wide_vectors(typingctx):
    """Let LLVM vectorise the calling function with 512-bit registers where the CPU has them.

    LLVM's default for AVX-512 CPUs is 256-bit vectors (the "prefer-vector-width" tuning); the
    exp and the block products here run 1.3-1.8x faster with 512.  On CPUs without AVX-512
    the attribute changes nothing.  (A function attribute set while the caller is lowered.)
    """
    sig = types.none()

    def codegen(context, builder, signature, args):
        try:  # llvmlite validates only enum attributes: add the string attribute to the set itself
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except Exception:  # pragma: no cover - another llvmlite layout: keep LLVM's default width
            pass
        return context.get_dummy_value()

    return sig, codegen


@jit_contract
def exp_nonpos(z):  # pragma: no cover - numba
    """exp(z) for z <= 0 without branches or calls, so loops over it vectorise.

    z = k ln2 + r (Cody-Waite, |r| <= ln2/2), exp(r) by its degree-12 Taylor polynomial
    (truncation < 2e-16), 2^k from exponent bits in two factors so results down to the
    smallest denormal are right.  Within 4e-16 relative of libm's exp for z >= -708; z is
    clamped to [-746, 0] (exp(-746) rounds to 0; positive z are not used here).
    """
    z = min(max(z, -746.0), 0.0)
    k = np.floor(z * _LOG2E + 0.5)
    r = (z - k * _LN2_HI) - k * _LN2_LO
    p = 1.0 + r * (
        1.0
        + r
        * (
            0.5
            + r
            * (
                1.0 / 6
                + r
                * (
                    1.0 / 24
                    + r
                    * (
                        1.0 / 120
                        + r
                        * (
                            1.0 / 720
                            + r
                            * (
                                1.0 / 5040
                                + r
                                * (
                                    1.0 / 40320
                                    + r
                                    * (
                                        1.0 / 362880
                                        + r * (1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600)))
                                    )
                                )
                            )
                        )
                    )
                )
            )
        )
    )
    ki = np.int64(k)
    k1 = ki >> 1
    k2 = ki - k1
    return (p * _bits_as_f64((k1 + 1023) << 52)) * _bits_as_f64((k2 + 1023) << 52)


@jit_contract
def _fill(xi, yi, xj, yj, neg, K):  # pragma: no cover - numba
    """K[a, b] = exp(((xi_a - xj_b)^2 + (yi_a - yj_b)^2) * neg) for one TILE x TILE block."""
    _wide_vectors()
    for a in range(TILE):
        x0 = xi[a]
        y0 = yi[a]
        row = K[a]
        for b in range(TILE):
            dx = x0 - xj[b]
            dy = y0 - yj[b]
            row[b] = exp_nonpos((dx * dx + dy * dy) * neg)


@jit_contract
def _kahan_add(acc, comp, i, l, s):  # pragma: no cover - numba
    y = s - comp[i, l]
    t = acc[i, l] + y
    comp[i, l] = (t - acc[i, l]) - y
    acc[i, l] = t


@jit_fm
def _block_dot(K, ET, acc, comp, nl4):  # pragma: no cover - numba
    """acc[a, l] += sum_b K[a, b] ET[l, b] (compensated), in 4 x 4 register blocks; nl4 % 4 == 0."""
    _wide_vectors()
    for a0 in range(0, TILE, 4):
        k0 = K[a0]
        k1 = K[a0 + 1]
        k2 = K[a0 + 2]
        k3 = K[a0 + 3]
        for l0 in range(0, nl4, 4):
            e0 = ET[l0]
            e1 = ET[l0 + 1]
            e2 = ET[l0 + 2]
            e3 = ET[l0 + 3]
            s00 = s01 = s02 = s03 = 0.0
            s10 = s11 = s12 = s13 = 0.0
            s20 = s21 = s22 = s23 = 0.0
            s30 = s31 = s32 = s33 = 0.0
            for b in range(TILE):
                a_0 = k0[b]
                a_1 = k1[b]
                a_2 = k2[b]
                a_3 = k3[b]
                b_0 = e0[b]
                b_1 = e1[b]
                b_2 = e2[b]
                b_3 = e3[b]
                s00 += a_0 * b_0
                s01 += a_0 * b_1
                s02 += a_0 * b_2
                s03 += a_0 * b_3
                s10 += a_1 * b_0
                s11 += a_1 * b_1
                s12 += a_1 * b_2
                s13 += a_1 * b_3
                s20 += a_2 * b_0
                s21 += a_2 * b_1
                s22 += a_2 * b_2
                s23 += a_2 * b_3
                s30 += a_3 * b_0
                s31 += a_3 * b_1
                s32 += a_3 * b_2
                s33 += a_3 * b_3
            _kahan_add(acc, comp, a0, l0, s00)
            _kahan_add(acc, comp, a0, l0 + 1, s01)
            _kahan_add(acc, comp, a0, l0 + 2, s02)
            _kahan_add(acc, comp, a0, l0 + 3, s03)
            _kahan_add(acc, comp, a0 + 1, l0, s10)
            _kahan_add(acc, comp, a0 + 1, l0 + 1, s11)
            _kahan_add(acc, comp, a0 + 1, l0 + 2, s12)
            _kahan_add(acc, comp, a0 + 1, l0 + 3, s13)
            _kahan_add(acc, comp, a0 + 2, l0, s20)
            _kahan_add(acc, comp, a0 + 2, l0 + 1, s21)
            _kahan_add(acc, comp, a0 + 2, l0 + 2, s22)
            _kahan_add(acc, comp, a0 + 2, l0 + 3, s23)
            _kahan_add(acc, comp, a0 + 3, l0, s30)
            _kahan_add(acc, comp, a0 + 3, l0 + 1, s31)
            _kahan_add(acc, comp, a0 + 3, l0 + 2, s32)
            _kahan_add(acc, comp, a0 + 3, l0 + 3, s33)


@jit_fm
def _block_dot_t(K, E, acc, comp, nl4, buf):  # pragma: no cover - numba
    """acc[b, l] += sum_a K[a, b] E[a, l] (compensated): the transposed product without
    transposing K, vectorised over b; ``E`` (TILE, nl4), ``buf`` (4, TILE) scratch.  Faster than
    a transpose + :func:`_block_dot` for a few columns."""
    _wide_vectors()
    s0 = buf[0]
    s1 = buf[1]
    s2 = buf[2]
    s3 = buf[3]
    for l0 in range(0, nl4, 4):
        for b in range(TILE):
            s0[b] = 0.0
            s1[b] = 0.0
            s2[b] = 0.0
            s3[b] = 0.0
        for a in range(TILE):
            e0 = E[a, l0]
            e1 = E[a, l0 + 1]
            e2 = E[a, l0 + 2]
            e3 = E[a, l0 + 3]
            kr = K[a]
            for b in range(TILE):
                k = kr[b]
                s0[b] += k * e0
                s1[b] += k * e1
                s2[b] += k * e2
                s3[b] += k * e3
        for b in range(TILE):
            _kahan_add(acc, comp, b, l0, s0[b])
            _kahan_add(acc, comp, b, l0 + 1, s1[b])
            _kahan_add(acc, comp, b, l0 + 2, s2[b])
            _kahan_add(acc, comp, b, l0 + 3, s3[b])


@jit_contract
def _finish(acc, comp, out):  # pragma: no cover - numba
    nr, nc = acc.shape
    for a in range(nr):
        for l in range(nc):
            out[a, l] = acc[a, l] - comp[a, l]


@jit_contract
def _transpose(K, KT):  # pragma: no cover - numba
    """KT = K.T (row by row of KT: contiguous stores, gathered loads)."""
    _wide_vectors()
    for b in range(TILE):
        r = KT[b]
        for a in range(TILE):
            r[a] = K[a, b]


@jit_contract_parallel
def tile_pairs_needed(tbox, sbox, S, neg, eps, need):  # pragma: no cover - numba
    """need[I, J] = True when source tile J must be summed into target tile I.

    Boxes (n, 4) are (xmin, xmax, ymin, ymax); ``S`` (nJ, L) per-tile sums of |values|.  With
    ``eps >= 0`` (values >= 0): LB[l] = sum_J exp(dmax(I, J)^2 neg) S[J, l] is a lower bound of
    every target's full sum in tile I; source tiles are taken nearest first until the bound
    sum_{J not taken} exp(dmin(I, J)^2 neg) S[J, l] is at most eps * LB[l] in every column.
    ``eps < 0``: every tile whose kernel bound exp(dmin^2 neg) does not underflow to 0.
    """
    nI = tbox.shape[0]
    nJ = sbox.shape[0]
    nl = S.shape[1]
    for I in numba.prange(nI):
        x0 = tbox[I, 0]
        x1 = tbox[I, 1]
        y0 = tbox[I, 2]
        y1 = tbox[I, 3]
        dmin2 = np.empty(nJ)
        kmax = np.empty(nJ)
        lb = np.zeros(nl)
        for J in range(nJ):
            gx = max(0.0, max(sbox[J, 0] - x1, x0 - sbox[J, 1]))
            gy = max(0.0, max(sbox[J, 2] - y1, y0 - sbox[J, 3]))
            hx = max(sbox[J, 1] - x0, x1 - sbox[J, 0])
            hy = max(sbox[J, 3] - y0, y1 - sbox[J, 2])
            dmin2[J] = gx * gx + gy * gy
            kmax[J] = np.exp(dmin2[J] * neg)
            kmin = np.exp((hx * hx + hy * hy) * neg)
            for l in range(nl):
                lb[l] += kmin * S[J, l]
        for J in range(nJ):
            need[I, J] = False
        if eps < 0.0:
            for J in range(nJ):
                need[I, J] = kmax[J] > 0.0
            continue
        order = np.argsort(dmin2)
        bound = np.zeros(nl)
        cut = 0
        for p in range(nJ - 1, -1, -1):
            J = order[p]
            over = False
            for l in range(nl):
                bound[l] += kmax[J] * S[J, l]
                if bound[l] * 1.000001 > eps * lb[l]:
                    over = True
            if over:
                cut = p + 1
                break
        for p in range(cut):
            J = order[p]
            need[I, J] = kmax[J] > 0.0


@jit_fm_parallel
def tile_sums(txp, typ, sxp, syp, ETp, need, neg, out):  # pragma: no cover - numba
    """out[I, a, :] = sum over the needed source tiles J of exp(d2 * neg) @ values (compensated).

    Targets ``txp``/``typ`` (nI, TILE) padded coordinates; sources ``sxp``/``syp`` (nJ, TILE) and
    ``ETp`` (nJ, L4, TILE) their values (0 in padding); ``need`` (nI, nJ) from
    :func:`tile_pairs_needed`; ``out`` (nI, TILE, L4).
    """
    nI = txp.shape[0]
    nJ = sxp.shape[0]
    nl4 = ETp.shape[1]
    for I in numba.prange(nI):
        acc = np.zeros((TILE, nl4))
        comp = np.zeros((TILE, nl4))
        K = np.empty((TILE, TILE))
        for J in range(nJ):
            if need[I, J]:
                _fill(txp[I], typ[I], sxp[J], syp[J], neg, K)
                _block_dot(K, ETp[J], acc, comp, nl4)
        _finish(acc, comp, out[I])


@jit_fm_parallel
def tile_sums_sym(xp, yp, ETp, Ep, pi, pj, bounds, neg, acc, comp):  # pragma: no cover - numba
    """Targets = sources: each unordered tile pair (pi[q] <= pj[q]) is filled once and used both ways.

    ``ETp`` (nT, L4, TILE) and ``Ep`` (nT, TILE, L4): the values in both layouts.
    Chunk c sums pairs ``bounds[c]:bounds[c + 1]`` into its own ``acc[c]`` / ``comp[c]``
    (n_chunks, nT, TILE, L4), zero on entry; the result is sum_c (acc[c] - comp[c]).
    """
    nc = bounds.shape[0] - 1
    nl4 = ETp.shape[1]
    for c in numba.prange(nc):
        K = np.empty((TILE, TILE))
        KT = np.empty((TILE, TILE))
        buf = np.empty((4, TILE))
        A = acc[c]
        C = comp[c]
        for q in range(bounds[c], bounds[c + 1]):
            I = pi[q]
            J = pj[q]
            _fill(xp[I], yp[I], xp[J], yp[J], neg, K)
            _block_dot(K, ETp[J], A[I], C[I], nl4)
            if J != I:
                if nl4 <= 12:
                    _block_dot_t(K, Ep[I], A[J], C[J], nl4, buf)
                else:
                    _transpose(K, KT)
                    _block_dot(KT, ETp[I], A[J], C[J], nl4)
