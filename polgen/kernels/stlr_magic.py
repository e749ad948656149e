"""MAGIC's graph (van Dijk et al. 2018, Cell 174:716) as graphtools 2.1 builds it for magic-impute 3.0:
each cell's ``k_max`` nearest cells (itself included, Euclidean, in PCA space) with the adaptive
alpha-decay affinity ``exp(-(d / bw_i)^decay)``, ``bw_i`` the distance to its ``knn``-th nearest
(itself counted first), affinities below ``thresh`` dropped.

Layout: ``Z`` (cells x dims) C-contiguous float64; outputs (cells x k_max) neighbour indices (int64,
nearest first, -1 where a row has fewer) and affinities (float64, 0 where dropped).  Brute-force
distances, O(n^2 d) time, O(n k_max) memory: no n x n array.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from polgen.kernels._jit import jit_exact_parallel


@jit_exact_parallel
def knn_alpha_decay(Z, k_max, knn, decay, thresh):  # pragma: no cover - numba
    n, dim = Z.shape
    idx = np.full((n, k_max), -1, dtype=np.int64)
    dist = np.full((n, k_max), np.inf)
    aff = np.zeros((n, k_max))
    for i in prange(n):
        for j in range(n):  # insertion into row i's sorted top-k_max (ties keep the smaller index)
            s = 0.0
            for c in range(dim):
                t = Z[i, c] - Z[j, c]
                s += t * t
            d = np.sqrt(s)
            if j == i:
                d = 0.0
            if d >= dist[i, k_max - 1]:
                continue
            pos = k_max - 1
            while pos > 0 and dist[i, pos - 1] > d:
                dist[i, pos] = dist[i, pos - 1]
                idx[i, pos] = idx[i, pos - 1]
                pos -= 1
            dist[i, pos] = d
            idx[i, pos] = j
        bw = dist[i, knn - 1]
        if bw < 2.220446049250313e-16:
            bw = 2.220446049250313e-16
        for m in range(k_max):
            if idx[i, m] < 0:
                continue
            a = np.exp(-((dist[i, m] / bw) ** decay))
            if a >= thresh:
                aff[i, m] = a
    return idx, dist, aff
