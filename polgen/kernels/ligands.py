"""Numba kernels for received ligands: wL[i, l] = (s/N) sum_j exp(-|x_i - x_j|^2 / (2 r^2)) L[j, l].

All kernels take C-contiguous float64 arrays: ``coords`` as x, y vectors, ``expr`` (n, L).
Three evaluation strategies:

* :class:`GaussTiles` - ``exact``: the O(N^2 L) sum over all pairs.  Cells are cut into tiles;
  each unordered tile pair is visited once (its weight tile serves W and W'), a parallel numba
  kernel fills the tile with a vectorised exp (one exp per pair per radius family: radius 50 is
  radius 200 squared four times), BLAS multiplies it into the ligand columns.  No N x N matrix;
  the tiles are kept between calls when they fit a memory budget (perturbation steps).
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

_FM = {"reassoc", "contract", "arcp"}



_LOG2E = 1.4426950408889634
_LN2_HI = 0.693145751953125
_LN2_LO = 1.42860682030941723212e-6


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def gauss_weights(tx, ty, sx, sy, neg, W, kbuf):  # pragma: no cover - numba
    """W[i, j] = exp(((tx_i - sx_j)^2 + (ty_i - sy_j)^2) * neg), neg = -1/(2 r^2) (<= 0).

    A vectorisable exp (Cody-Waite reduction, degree-12 Taylor, exponent built from bits):
    within 4e-16 relative of libm's exp; arguments below -708 give exactly 0.  ``kbuf`` is an
    int64 scratch array of W's shape.
    """
    nt = tx.shape[0]
    ns = sx.shape[0]
    for i in numba.prange(nt):
        xi = tx[i]
        yi = ty[i]
        w = W[i]
        kb = kbuf[i]
        for j in range(ns):
            dx = xi - sx[j]
            dy = yi - sy[j]
            z = (dx * dx + dy * dy) * neg
            keep = 1.0 if z >= -708.0 else 0.0
            z = max(z, -708.0)
            k = np.floor(z * _LOG2E + 0.5)
            r = z - k * _LN2_HI - k * _LN2_LO
            p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (
                1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (
                    1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600))))))))))))
            w[j] = p * keep
            kb[j] = (np.int64(k) + 1023) << 52
        kf = kb.view(np.float64)
        for j in range(ns):
            w[j] *= kf[j]


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def gauss_weights_sq(tx, ty, sx, sy, neg, nsq, Wout, kbuf):  # pragma: no cover - numba
    """Wout[k, i, j] = exp(d2_ij * neg) ** (2 ** nsq[k]) (nsq ascending): one exp, then squarings."""
    nt = tx.shape[0]
    ns = sx.shape[0]
    nk = nsq.shape[0]
    for i in numba.prange(nt):
        xi = tx[i]
        yi = ty[i]
        w = Wout[0, i]
        kb = kbuf[i]
        for j in range(ns):
            dx = xi - sx[j]
            dy = yi - sy[j]
            z = (dx * dx + dy * dy) * neg
            keep = 1.0 if z >= -708.0 else 0.0
            z = max(z, -708.0)
            k = np.floor(z * _LOG2E + 0.5)
            r = z - k * _LN2_HI - k * _LN2_LO
            p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (
                1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (
                    1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600))))))))))))
            w[j] = p * keep
            kb[j] = (np.int64(k) + 1023) << 52
        kf = kb.view(np.float64)
        for j in range(ns):
            w[j] *= kf[j]
        done = 0
        src = w
        for q in range(nk):
            dst = Wout[q, i]
            steps = nsq[q] - done
            if q == 0:
                for _ in range(steps):
                    for j in range(ns):
                        dst[j] = dst[j] * dst[j]
            else:
                for j in range(ns):
                    v = src[j]
                    for _ in range(steps):
                        v = v * v
                    dst[j] = v
            done = nsq[q]
            src = dst


def radius_families(radii: np.ndarray, max_power: int = 64) -> list[tuple[float, list[tuple[int, np.ndarray]]]]:
    """Group ligand columns so one exp serves several radii.

    exp(-d^2 / (2 r^2)) = exp(-d^2 / (2 R^2)) ** m when (R / r)^2 = m is an integer (200 and 50 ->
    16): each family has a base radius R (its largest) and (m, columns) members.
    """
    radii = np.asarray(radii, dtype=np.float64)
    fams: list[tuple[float, list[tuple[int, np.ndarray]]]] = []
    for r in sorted(np.unique(radii), reverse=True):
        cols = np.flatnonzero(radii == r)
        for R, members in fams:
            m = (R / r) ** 2
            mi = int(round(m))
            if mi <= max_power and abs(m - mi) <= 1e-12 * m and (mi & (mi - 1)) == 0:
                members.append((mi, cols))
                break
        else:
            fams.append((float(r), [(1, cols)]))
    return fams


def gauss_sum_exact(tx, ty, sx, sy, expr, inv2r2, scale, out, block_bytes: int = 32 << 20):
    """out[i, l] = scale * sum_j exp(-((tx_i-sx_j)^2 + (ty_i-sy_j)^2) * inv2r2) * expr[j, l].

    Targets (tx, ty) and sources (sx, sy, expr rows) are separate so the same routine evaluates
    anchors.  Blocks of targets: a numba kernel fills the (block x N) weights (never the N x N
    matrix), BLAS multiplies them into the ligand matrix.  ``out`` (n_targets, L) is overwritten.
    """
    nt = tx.shape[0]
    ns = sx.shape[0]
    B = int(max(1, min(nt, block_bytes // (16 * max(ns, 1)))))
    W = np.empty((B, ns))
    kb = np.empty((B, ns), dtype=np.int64)
    neg = -float(inv2r2)
    for i0 in range(0, nt, B):
        i1 = min(nt, i0 + B)
        w = W[: i1 - i0]
        gauss_weights(tx[i0:i1], ty[i0:i1], sx, sy, neg, w, kb[: i1 - i0])
        np.matmul(w, expr, out=out[i0:i1])
    if scale != 1.0:
        out *= scale
    return out


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def square_times(W, nsq, out):  # pragma: no cover - numba
    """out = W ** (2 ** nsq) by repeated squaring."""
    nr, nc = W.shape
    for i in numba.prange(nr):
        for j in range(nc):
            v = W[i, j]
            for _ in range(nsq):
                v = v * v
            out[i, j] = v


class GaussTiles:
    """Exact Gaussian sums over all cell pairs, reusable across calls on the same coordinates.

    Cells are cut into tiles of ``tile`` cells; each unordered tile pair is evaluated once (W and
    its transpose).  One exp per pair and radius family (:func:`radius_families`; the family's
    other radii by squaring).  When the upper-triangle tiles of all families fit in
    ``cache_bytes`` they are kept after the first call, so later calls (the steps of a
    perturbation) only stream them through BLAS instead of recomputing N^2 exps.
    """

    def __init__(self, x, y, tile: int = 1024, cache_bytes: int = 0) -> None:
        self.x = np.ascontiguousarray(x, dtype=np.float64)
        self.y = np.ascontiguousarray(y, dtype=np.float64)
        self.n = self.x.shape[0]
        self.T = int(max(1, min(tile, self.n)))
        nb = (self.n + self.T - 1) // self.T
        self.pairs = [(i0, j0) for i0 in range(0, self.n, self.T) for j0 in range(i0, self.n, self.T)]
        self.tile_bytes = 8 * self.T * self.T
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[tuple[float, int, int, int], np.ndarray] = {}
        self._nb = nb

    def _base_tile(self, R, i0, j0, buf, kb):
        key = (R, 0, i0, j0)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        i1, j1 = min(self.n, i0 + self.T), min(self.n, j0 + self.T)
        a, b = i1 - i0, j1 - j0
        full = a == self.T and b == self.T
        W = buf if full else np.empty((1, a, b))
        K = kb if full else np.empty((a, b), dtype=np.int64)
        gauss_weights_sq(self.x[i0:i1], self.y[i0:i1], self.x[j0:j1], self.y[j0:j1], -1.0 / (2.0 * R * R),
                         np.zeros(1, dtype=np.int64), W, K)
        w = W[0]
        if (len(self._cache) + 1) * self.tile_bytes <= self.cache_bytes:
            w = w.copy()
            self._cache[key] = w
        return w

    def apply(self, expr, radii, scale: float) -> np.ndarray:
        """out[:, l] = scale * sum_j exp(-|x_i - x_j|^2 / (2 radii[l]^2)) expr[j, l]."""
        n, nl = expr.shape
        out = np.zeros((n, nl))
        if n == 0 or nl == 0:
            return out
        T = self.T
        fams = []
        for R, members in radius_families(radii):
            accs = [(int(m).bit_length() - 1, np.ascontiguousarray(expr[:, cols]), np.zeros((n, cols.size)), cols)
                    for m, cols in members]
            fams.append((R, accs))
        buf = np.empty((1, T, T))
        kb = np.empty((T, T), dtype=np.int64)
        sq = np.empty((T, T))
        for i0, j0 in self.pairs:
            i1, j1 = min(n, i0 + T), min(n, j0 + T)
            for R, accs in fams:
                w = self._base_tile(R, i0, j0, buf, kb)
                for nsq, E, acc, _ in accs:
                    if nsq == 0:
                        wq = w
                    else:
                        wq = self._cache.get((R, nsq, i0, j0))
                        if wq is None:
                            wq = sq if w.shape == (T, T) else np.empty(w.shape)
                            square_times(w, nsq, wq)
                            if (len(self._cache) + 1) * self.tile_bytes <= self.cache_bytes:
                                self._cache[(R, nsq, i0, j0)] = wq.copy()
                    acc[i0:i1] += wq @ E[j0:j1]
                    if j0 != i0:
                        acc[j0:j1] += wq.T @ E[i0:i1]
        for R, accs in fams:
            for _, _, acc, cols in accs:
                out[:, cols] = acc * scale
        return out


def gauss_sum_self(x, y, expr, radii, scale, tile: int = 1024) -> np.ndarray:
    """Received ligands of every cell from every cell, all radii at once (no caching)."""
    return GaussTiles(x, y, tile=tile).apply(expr, radii, scale)


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
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


@numba.njit(cache=True, nogil=True, fastmath=_FM)
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


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
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


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
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


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
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


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
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
