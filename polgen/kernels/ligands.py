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

from polgen.kernels.ligands_grid import (  # noqa: F401 - re-exported: the grid strategies
    bilinear_interp,
    conv_x,
    conv_y,
    gather,
    gridded_gauss,
    spread,
)
from polgen.kernels.ligands_tiles import (  # noqa: F401 - re-exported: the tile kernels and constants
    DROP_EPS,
    TILE,
    exp_nonpos,
    tile_pairs_needed,
    tile_sums,
    tile_sums_sym,
)


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
        self.box = np.ascontiguousarray(
            np.stack([self.xp.min(1), self.xp.max(1), self.yp.min(1), self.yp.max(1)], axis=1)
        )

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
                    tile_sums_sym(
                        t.xp, t.yp, ETp, Ep, pi.astype(np.int64), pj.astype(np.int64), bounds, float(neg), acc, comp
                    )
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
