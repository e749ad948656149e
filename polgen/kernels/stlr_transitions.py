"""Transition vectors of a perturbation (CellOracle / velocyto's scheme, as SpaceTravLR uses it).

``delta_corr``: for cell ``i`` and each of its neighbours ``j`` (``nbr[i, :]``), the Pearson
correlation between the expression difference ``X[j] - X[i]`` and the cell's simulated change
``D[i]`` (velocyto's ``colDeltaCorpartial``); NaN when either vector is constant.

``project``: ``V[i] = sum_j (P[i, j] - P0[i, j]) * (E[j] - E[i])`` over the neighbours, where
``P[i, .]`` is the softmax ``exp(corr / T)`` over the neighbours other than ``i`` itself (a NaN
correlation counts as 1) and ``P0`` the same with no change (uniform), as the reference's
``estimate_transition_probabilities`` - ``remove_null`` - ``project_probabilities``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from polgen.kernels._jit import jit_exact_parallel


@jit_exact_parallel
def delta_corr(X, D, nbr, out):  # pragma: no cover - compiled
    n, g = X.shape
    k = nbr.shape[1]
    for i in prange(n):
        dm = 0.0
        for c in range(g):
            dm += D[i, c]
        dm /= g
        dd = 0.0
        for c in range(g):
            dd += (D[i, c] - dm) ** 2
        for q in range(k):
            j = nbr[i, q]
            tm = 0.0
            for c in range(g):
                tm += X[j, c] - X[i, c]
            tm /= g
            tt = 0.0
            td = 0.0
            for c in range(g):
                t = X[j, c] - X[i, c] - tm
                tt += t * t
                td += t * (D[i, c] - dm)
            den = math.sqrt(tt * dd)
            out[i, q] = td / den if den > 0 else np.nan


@jit_exact_parallel
def project(E, nbr, corr, T, remove_null, unit, out):  # pragma: no cover - compiled
    n, m = E.shape
    k = nbr.shape[1]
    for i in prange(n):
        s = 0.0
        cnt = 0
        for q in range(k):
            if nbr[i, q] != i:
                c = corr[i, q]
                if np.isnan(c):
                    c = 1.0
                s += math.exp(c / T)
                cnt += 1
        for d in range(m):
            out[i, d] = 0.0
        if cnt == 0:
            continue
        for q in range(k):
            j = nbr[i, q]
            if j == i:
                continue
            c = corr[i, q]
            if np.isnan(c):
                c = 1.0
            w = math.exp(c / T) / s
            if remove_null:
                w -= 1.0 / cnt
            norm = 1.0
            if unit:
                norm = 0.0
                for d in range(m):
                    norm += (E[j, d] - E[i, d]) ** 2
                norm = math.sqrt(norm)
                if norm == 0.0:  # coincident cells: the reference's 0/0 vector, counted as no move
                    continue
            for d in range(m):
                out[i, d] += w * (E[j, d] - E[i, d]) / norm
