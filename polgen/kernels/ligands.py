"""Numba kernels for received ligands: wL[i, l] = (s/N) sum_j exp(-|x_i - x_j|^2 / (2 r^2)) L[j, l].

All kernels take C-contiguous float64 arrays: ``coords`` as x, y vectors, ``expr`` (n, L).
Three evaluation strategies:

* :class:`GaussTiles` - ``exact``: the sum over all pairs, without an N x N matrix.  Targets and
  sources are cut into spatially compact tiles of :data:`TILE` cells (a k-d split).  For each
  target tile a parallel numba kernel visits the source tiles nearest first; per tile pair it
  fills a TILE x TILE kernel block with a vectorised, branch-free exp (one exp per pair and
  distinct radius) and multiplies it into the ligand columns with a 4 x 4 register-blocked
  kernel, adding each tile pair's partial sums with Kahan compensation (the far, tiny terms
  are not rounded away).  Source tiles are skipped only when provably negligible: with
  non-negative expression, the remaining tiles' contribution is bounded by
  ``sum_J exp(-dmin(I, J)^2 / (2 r^2)) sum_{j in J} L[j, l]`` (``dmin`` the distance between the
  tiles' bounding boxes), and the walk stops once that bound is below :data:`DROP_EPS` (2^-54,
  half a rounding unit) times the smallest partial sum of the target tile in every column.
  So every output element is the full sum to within 2^-54 relative, plus rounding.  Columns
  with negative values are summed over all tile pairs.
* :func:`bilinear_interp` - ``grid``: the seed's anchor grid: exact sums at anchors spaced ``factor * r``,
  bilinear interpolation to cells (about 3% error; kept for parity with the Rust port).
* :func:`gridded_gauss` - ``fast``: a particle-mesh Gaussian transform.  Sources are spread onto a
  regular grid of spacing ``h`` with order-``p`` Lagrange weights, the grid charges are convolved
  with the (separable) Gaussian along x then y, and the grid field is interpolated back to the
  targets with the same weights.  This is exact for the kernel interpolated in both arguments,
  so its error is twice the tensor Lagrange interpolation error of a Gaussian of width ``r``:
  with ``h = r/4`` and ``p = 12`` the measured error is below 3e-8 of the column's largest
  value; see :mod:`polgen.stlr.ligands` for the documented bound.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from polgen.kernels._jit import (
    jit_contract,
    jit_contract_parallel,
    jit_fm,
    jit_fm_parallel,
)

# the exp and the Kahan sums must not be reassociated (that would cancel their correction terms):
# those kernels use jit_contract (fastmath={"contract"}) instead of jit_fm

TILE = 64  # cells per tile (a compile-time constant of the kernels below)
DROP_EPS = 2.0 ** -54  # source tiles are skipped when their bound is below this x each output

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
    p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (
        1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (
            1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600))))))))))))
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


def kd_tiles(x: np.ndarray, y: np.ndarray, size: int = TILE) -> tuple[np.ndarray, np.ndarray]:
    """Order cells into spatially compact tiles of at most ``size`` cells.

    Recursive median-like splits along the longer side of the bounding box; the left part of
    each split holds a multiple of ``size`` cells.  Returns the permutation and the tile start
    offsets into it (length n_tiles + 1).
    """
    n = x.shape[0]
    perm = np.arange(n)
    tiles: list[int] = []
    stack = [(0, n)]
    while stack:
        a, b = stack.pop()
        m = b - a
        if m <= size:
            if m:
                tiles.append(a)
            continue
        idx = perm[a:b]
        xs, ys = x[idx], y[idx]
        key = xs if (xs.max() - xs.min()) >= (ys.max() - ys.min()) else ys
        k = size * ((m + 2 * size - 1) // (2 * size))
        perm[a:b] = idx[np.argpartition(key, k - 1, kind="introselect")]
        stack.append((a + k, b))
        stack.append((a, a + k))
    tiles.sort()
    return perm, np.array(tiles + [n], dtype=np.int64)


class _Tiling:
    """Cells in padded tiles: coordinates (n_tiles, TILE), bounding boxes, slot of each cell."""

    def __init__(self, x, y) -> None:
        x = np.ascontiguousarray(x, dtype=np.float64)
        y = np.ascontiguousarray(y, dtype=np.float64)
        self.n = n = x.shape[0]
        if n == 0:
            self.perm = np.zeros(0, dtype=np.int64)
            self.slot = np.zeros(0, dtype=np.int64)
            self.nt = 0
            return
        perm, starts = kd_tiles(x, y)
        cnt = np.diff(starts)
        nt = cnt.shape[0]
        tile_of = np.repeat(np.arange(nt), cnt)
        self.perm = perm
        self.slot = tile_of * TILE + (np.arange(n) - starts[tile_of])  # sorted cell -> padded slot
        self.nt = nt
        self.cnt = np.ascontiguousarray(cnt, dtype=np.int64)
        xs, ys = x[perm], y[perm]
        # padding slots repeat the tile's first cell (inside its bounding box, finite)
        self.xp = np.repeat(xs[starts[:-1]], TILE).reshape(nt, TILE)
        self.yp = np.repeat(ys[starts[:-1]], TILE).reshape(nt, TILE)
        self.xp.reshape(-1)[self.slot] = xs
        self.yp.reshape(-1)[self.slot] = ys
        self.box = np.ascontiguousarray(np.stack([self.xp.min(1), self.xp.max(1), self.yp.min(1),
                                                  self.yp.max(1)], axis=1))

    def pack(self, E: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Source values (n, L) as (n_tiles, L4, TILE) and (n_tiles, TILE, L4) (L4 = L rounded up
        to 4, zero padding), and the per-tile sums of |values| (n_tiles, L4)."""
        nl = E.shape[1]
        nl4 = max(4, (nl + 3) // 4 * 4)
        P = np.zeros((self.nt * TILE, nl4))
        P[self.slot, :nl] = E[self.perm]
        Ep = P.reshape(self.nt, TILE, nl4)
        ETp = np.ascontiguousarray(Ep.transpose(0, 2, 1))
        return ETp, Ep, np.abs(Ep).sum(axis=1)

    def unpack(self, out: np.ndarray, nl: int) -> np.ndarray:
        res = np.empty((self.n, nl))
        res[self.perm] = out.reshape(self.nt * TILE, -1)[self.slot, :nl]
        return res


class GaussTiles:
    """Exact Gaussian sums from sources (sx, sy) to targets (x, y) (default: the same cells).

    Build once per set of coordinates (the k-d tiling), then :meth:`apply` for any expression
    matrix and radii; see the module docstring for the algorithm and its error bound.
    """

    def __init__(self, x, y, sx=None, sy=None) -> None:
        self.targets = _Tiling(x, y)
        self.sources = self.targets if sx is None else _Tiling(sx, sy)
        self.n = self.targets.n
        self._scratch: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    SCRATCH_BYTES = 96 << 20  # accumulators kept between calls (perturbation steps) up to this size

    def _accumulators(self, shape) -> tuple[np.ndarray, np.ndarray]:
        """Zeroed per-chunk accumulators; reused between calls while they fit SCRATCH_BYTES."""
        hit = self._scratch.get(shape)
        if hit is not None:
            hit[0].fill(0.0)
            hit[1].fill(0.0)
            return hit
        acc, comp = np.zeros(shape), np.zeros(shape)
        if 16 * acc.size + sum(2 * a.nbytes for a, _ in self._scratch.values()) <= self.SCRATCH_BYTES:
            self._scratch[shape] = (acc, comp)
        return acc, comp

    def apply_neg(self, E: np.ndarray, neg: float, scale: float = 1.0) -> np.ndarray:
        """out[i, l] = scale * sum_j exp(d2_ij * neg) E[j, l] (neg = -1/(2 r^2) < 0)."""
        t, s = self.targets, self.sources
        E = np.asarray(E, dtype=np.float64)
        nl = E.shape[1]
        out = np.zeros((t.n, nl))
        if t.n == 0 or s.n == 0 or nl == 0:
            return out
        negative = (E < 0).any(axis=0)
        live = (E != 0).any(axis=0)  # all-zero columns receive exactly 0
        for cols, eps in ((np.flatnonzero(~negative & live), DROP_EPS), (np.flatnonzero(negative), -1.0)):
            if cols.size == 0:
                continue
            ETp, Ep, S = s.pack(E[:, cols])
            need = np.empty((t.nt, s.nt), dtype=np.bool_)
            tile_pairs_needed(t.box, s.box, S, float(neg), float(eps), need)
            if t is s:
                need |= need.T
                pi, pj = np.nonzero(np.triu(need))
                nc = int(max(1, min(2 * numba.get_num_threads(), pi.size)))
                bounds = np.linspace(0, pi.size, nc + 1).round().astype(np.int64)
                acc, comp = self._accumulators((nc, t.nt, TILE, ETp.shape[1]))
                with numba.parallel_chunksize(1):
                    tile_sums_sym(t.xp, t.yp, ETp, Ep, pi.astype(np.int64), pj.astype(np.int64), bounds,
                                  float(neg), acc, comp)
                res = acc[0] - comp[0]
                for c in range(1, nc):
                    res += acc[c] - comp[c]
            else:
                res = np.empty((t.nt, TILE, ETp.shape[1]))
                tile_sums(t.xp, t.yp, s.xp, s.yp, ETp, need, float(neg), res)
            out[:, cols] = t.unpack(res, cols.size)
        if scale != 1.0:
            out *= scale
        return out

    def apply(self, expr, radii, scale: float = 1.0) -> np.ndarray:
        """out[:, l] = scale * sum_j exp(-|x_i - x_j|^2 / (2 radii[l]^2)) expr[j, l]; one exp per
        pair and distinct radius."""
        expr = np.asarray(expr, dtype=np.float64)
        radii = np.broadcast_to(np.asarray(radii, dtype=np.float64), (expr.shape[1],))
        out = np.zeros((self.n, expr.shape[1]))
        for r in np.unique(radii):
            cols = np.flatnonzero(radii == r)
            out[:, cols] = self.apply_neg(expr[:, cols], -1.0 / (2.0 * float(r) * float(r)), scale)
        return out


def gauss_sum_exact(tx, ty, sx, sy, expr, inv2r2, scale, out):
    """out[i, l] = scale * sum_j exp(-((tx_i-sx_j)^2 + (ty_i-sy_j)^2) * inv2r2) * expr[j, l].

    Targets (tx, ty) and sources (sx, sy, expr rows) are separate so the same routine evaluates
    anchors; ``out`` (n_targets, L) is overwritten.
    """
    out[:] = GaussTiles(tx, ty, sx, sy).apply_neg(expr, -float(inv2r2), float(scale))
    return out


def gauss_sum_self(x, y, expr, radii, scale) -> np.ndarray:
    """Received ligands of every cell from every cell, all radii at once."""
    return GaussTiles(x, y).apply(expr, radii, scale)


@jit_fm_parallel
def bilinear_interp(ax0, ay0, h, nx, ny, anchors, x, y, out):  # pragma: no cover - numba
    """Bilinear interpolation of ``anchors`` ((nx*ny), L), anchor (a, b) at row a*ny + b."""
    n = x.shape[0]
    nl = anchors.shape[1]
    for i in numba.prange(n):
        u = (x[i] - ax0) / h
        v = (y[i] - ay0) / h
        a = int(np.floor(u))
        b = int(np.floor(v))
        if a < 0:
            a = 0
        if a > nx - 2:
            a = nx - 2
        if b < 0:
            b = 0
        if b > ny - 2:
            b = ny - 2
        tx = u - a
        ty = v - b
        r00 = a * ny + b
        r01 = a * ny + b + 1
        r10 = (a + 1) * ny + b
        r11 = (a + 1) * ny + b + 1
        w00 = (1.0 - tx) * (1.0 - ty)
        w01 = (1.0 - tx) * ty
        w10 = tx * (1.0 - ty)
        w11 = tx * ty
        for l in range(nl):
            out[i, l] = (w00 * anchors[r00, l] + w01 * anchors[r01, l]
                         + w10 * anchors[r10, l] + w11 * anchors[r11, l])


@jit_fm
def _lagrange(u, p, w):  # pragma: no cover - numba
    """Base node and the p Lagrange weights of coordinate ``u`` (in grid units)."""
    base = int(np.floor(u)) - (p // 2 - 1)
    t = u - base
    for k in range(p):
        num = 1.0
        den = 1.0
        for m in range(p):
            if m != k:
                num *= t - m
                den *= k - m
        w[k] = num / den
    return base


@jit_fm_parallel
def spread(x, y, expr, x0, y0, h, p, nx, ny, grid, nchunk):  # pragma: no cover - numba
    """grid[a, b, l] += sum_j wx_a(x_j) wy_b(y_j) expr[j, l] (Lagrange weights of order p).

    Parallel over ``nchunk`` chunks of sources, each spreading into its own grid slab
    ``grid[c]`` (shape (nchunk, nx, ny, L)); the caller sums the slabs.
    """
    n = x.shape[0]
    nl = expr.shape[1]
    per = (n + nchunk - 1) // nchunk
    for c in numba.prange(nchunk):
        wx = np.empty(p)
        wy = np.empty(p)
        g = grid[c]
        for j in range(c * per, min(n, (c + 1) * per)):
            bx = _lagrange((x[j] - x0) / h, p, wx)
            by = _lagrange((y[j] - y0) / h, p, wy)
            for a in range(p):
                for b in range(p):
                    w = wx[a] * wy[b]
                    for l in range(nl):
                        g[bx + a, by + b, l] += w * expr[j, l]


@jit_fm_parallel
def conv_x(src, taps, dst):  # pragma: no cover - numba
    """dst[a, b, l] = sum_t taps[|t|] src[a + t, b, l] (zero outside)."""
    nx = src.shape[0]
    ny = src.shape[1]
    nl = src.shape[2]
    T = taps.shape[0] - 1
    for a in numba.prange(nx):
        for b in range(ny):
            for l in range(nl):
                dst[a, b, l] = 0.0
        lo = max(0, a - T)
        hi = min(nx - 1, a + T)
        for a2 in range(lo, hi + 1):
            k = taps[abs(a2 - a)]
            for b in range(ny):
                for l in range(nl):
                    dst[a, b, l] += k * src[a2, b, l]


@jit_fm_parallel
def conv_y(src, taps, dst):  # pragma: no cover - numba
    """dst[a, b, l] = sum_t taps[|t|] src[a, b + t, l] (zero outside)."""
    nx = src.shape[0]
    ny = src.shape[1]
    nl = src.shape[2]
    T = taps.shape[0] - 1
    for a in numba.prange(nx):
        for b in range(ny):
            for l in range(nl):
                dst[a, b, l] = 0.0
            lo = max(0, b - T)
            hi = min(ny - 1, b + T)
            for b2 in range(lo, hi + 1):
                k = taps[abs(b2 - b)]
                for l in range(nl):
                    dst[a, b, l] += k * src[a, b2, l]


@jit_fm_parallel
def gather(x, y, field, x0, y0, h, p, scale, out):  # pragma: no cover - numba
    """out[i, l] = scale * sum_{a,b} wx_a(x_i) wy_b(y_i) field[a, b, l]."""
    n = x.shape[0]
    nl = field.shape[2]
    for i in numba.prange(n):
        wx = np.empty(p)
        wy = np.empty(p)
        bx = _lagrange((x[i] - x0) / h, p, wx)
        by = _lagrange((y[i] - y0) / h, p, wy)
        for l in range(nl):
            out[i, l] = 0.0
        for a in range(p):
            for b in range(p):
                w = wx[a] * wy[b] * scale
                for l in range(nl):
                    out[i, l] += w * field[bx + a, by + b, l]


def gridded_gauss(x: np.ndarray, y: np.ndarray, expr: np.ndarray, radius: float, scale: float,
                  h_factor: float = 0.25, order: int = 12, cutoff: float = 8.6) -> np.ndarray:
    """Particle-mesh Gaussian transform (see the module docstring); returns (n, L) float64.

    ``cutoff`` r is where the Gaussian taps stop (exp(-8.6^2/2) < 1e-16).
    """
    n, nl = expr.shape
    h = float(radius) * h_factor
    p = int(order)
    pad = p // 2 + 1
    x0 = float(x.min()) - pad * h
    y0 = float(y.min()) - pad * h
    nx = int(np.floor((float(x.max()) - x0) / h)) + pad + 2
    ny = int(np.floor((float(y.max()) - y0) / h)) + pad + 2
    nthreads = numba.get_num_threads()
    cells_per_slab = max(1, nx * ny * nl)
    # each slab is a full grid copy: bound the total to ~256 MB
    nchunk = int(max(1, min(nthreads, (256 << 20) // (8 * cells_per_slab), max(1, n // 256))))
    slabs = np.zeros((nchunk, nx, ny, nl))
    spread(x, y, expr, x0, y0, h, p, nx, ny, slabs, nchunk)
    charges = slabs.sum(axis=0) if nchunk > 1 else slabs[0]
    del slabs
    T = int(np.ceil(cutoff / h_factor))
    t = np.arange(T + 1, dtype=np.float64) * h
    taps = np.exp(-(t * t) / (2.0 * float(radius) ** 2))
    tmp = np.empty_like(charges)
    conv_x(np.ascontiguousarray(charges), taps, tmp)
    conv_y(tmp, taps, charges)
    out = np.empty((n, nl))
    gather(x, y, charges, x0, y0, h, p, float(scale), out)
    return out
