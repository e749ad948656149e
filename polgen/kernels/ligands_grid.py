"""Grid-based received-ligand kernels (see :mod:`polgen.kernels.ligands` for the three strategies):

* :func:`bilinear_interp` - ``grid``: exact sums at anchors spaced ``factor * r`` interpolated
  bilinearly to cells (parity with the Rust port);
* :func:`gridded_gauss` - ``fast``: the particle-mesh Gaussian transform (order-``p`` Lagrange
  spreading to a grid of spacing ``h``, separable Gaussian convolution, gathering back).
"""

from __future__ import annotations

import numba
import numpy as np

from polgen.kernels._jit import jit_fm, jit_fm_parallel

__all__ = ["bilinear_interp", "spread", "conv_x", "conv_y", "gather", "gridded_gauss"]


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
            out[i, l] = w00 * anchors[r00, l] + w01 * anchors[r01, l] + w10 * anchors[r10, l] + w11 * anchors[r11, l]


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


def gridded_gauss(
    x: np.ndarray,
    y: np.ndarray,
    expr: np.ndarray,
    radius: float,
    scale: float,
    h_factor: float = 0.25,
    order: int = 12,
    cutoff: float = 8.6,
) -> np.ndarray:
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
