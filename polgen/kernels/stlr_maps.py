"""SpaceTravLR spatial maps and neighbourhood counts: the per-cell inputs of the CNN training modes.

``spatial_maps``: for every cell, an ``m x n`` grid over the tissue's bounding box (row ``i`` at
``y = ymax - (i + 0.5) * height / m``, column ``j`` at ``x = xmin + (j + 0.5) * width / n``)
holding the Euclidean distance from the cell to each grid centre, rounded to float32 and min-max
scaled per cell to [0, 1] in float32 (the reference's ``xyc2spatial_fast``: its cluster mask is
all ones, so every cluster channel holds this same map; one channel is returned).

``neighbour_counts``: for every cell, the number of cells of each cluster within ``radius``
(distance <= radius, the cell itself included).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from polgen.kernels._jit import jit_exact, jit_exact_parallel

PARALLEL_MIN_CELLS = 2_000


@jit_exact
def _maps_serial(xy, m, n, out):  # pragma: no cover - compiled
    _fill_maps(xy, m, n, out, 0, xy.shape[0])


@jit_exact_parallel
def _maps_parallel(xy, m, n, out):  # pragma: no cover - compiled
    nc = xy.shape[0]
    nchunk = 64
    step = (nc + nchunk - 1) // nchunk
    for c in prange(nchunk):
        lo = c * step
        hi = min(nc, lo + step)
        if lo < hi:
            _fill_maps(xy, m, n, out, lo, hi)


@jit_exact
def _fill_maps(xy, m, n, out, lo, hi):  # pragma: no cover - compiled
    xmin = xy[:, 0].min()
    xmax = xy[:, 0].max()
    ymin = xy[:, 1].min()
    ymax = xy[:, 1].max()
    width = (xmax - xmin) / n
    height = (ymax - ymin) / m
    cx = np.empty(n)
    cy = np.empty(m)
    for j in range(n):
        cx[j] = xmin + (j + 0.5) * width
    for i in range(m):
        cy[i] = ymax - (i + 0.5) * height
    tiny = np.float32(1e-15)
    for s in range(lo, hi):
        x0 = xy[s, 0]
        y0 = xy[s, 1]
        lo32 = np.float32(np.inf)
        hi32 = np.float32(-np.inf)
        for i in range(m):
            for j in range(n):
                dx = cx[j] - x0
                dy = cy[i] - y0
                d = np.float32(math.sqrt(dx * dx + dy * dy))
                out[s, i, j] = d
                if d < lo32:
                    lo32 = d
                if d > hi32:
                    hi32 = d
        den = hi32 - lo32
        if den < tiny:
            den = tiny
        for i in range(m):
            for j in range(n):
                out[s, i, j] = (out[s, i, j] - lo32) / den


def spatial_maps(xy: np.ndarray, m: int, n: int) -> np.ndarray:
    """Per-cell distance maps ``(cells, m, n)`` float32 of coordinates ``xy`` (cells x 2, float64)."""
    xy = np.ascontiguousarray(xy, dtype=np.float64)
    out = np.empty((xy.shape[0], m, n), dtype=np.float32)
    if xy.shape[0] == 0:
        return out
    if xy.shape[0] >= PARALLEL_MIN_CELLS:
        _maps_parallel(xy, m, n, out)
    else:
        _maps_serial(xy, m, n, out)
    return out


@jit_exact_parallel
def _counts(xy, clusters, n_clusters, radius, out):  # pragma: no cover - compiled
    nc = xy.shape[0]
    for s in prange(nc):
        x0 = xy[s, 0]
        y0 = xy[s, 1]
        for t in range(nc):
            dx = xy[t, 0] - x0
            dy = xy[t, 1] - y0
            if math.sqrt(dx * dx + dy * dy) <= radius:
                out[s, clusters[t]] += 1.0


def neighbour_counts(xy: np.ndarray, clusters: np.ndarray, n_clusters: int, radius: float) -> np.ndarray:
    """``(cells, n_clusters)`` float64 counts of cells of each cluster within ``radius`` of each cell."""
    xy = np.ascontiguousarray(xy, dtype=np.float64)
    cl = np.ascontiguousarray(clusters, dtype=np.int64)
    out = np.zeros((xy.shape[0], n_clusters), dtype=np.float64)
    if xy.shape[0]:
        _counts(xy, cl, n_clusters, float(radius), out)
    return out
