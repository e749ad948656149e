"""Correlated z statistics of simulated GWAS under the multivariable LDSC model (``sim_ldsc``).

For SNP ``i`` with LD score ``l[i]`` the k traits' z statistics are drawn from
``N(0, A l[i] + B)``: ``A`` carries the genetic covariance (``sqrt(N_a N_b) Sigma_ab / M``) and ``B``
the intercepts / sample-overlap correlations.  Each SNP's covariance is factored by a Cholesky
decomposition (semi-definite allowed: a zero pivot gives a zero column) and applied to the given
standard normals.
"""

from __future__ import annotations

import numpy as np

from polgen.kernels._jit import jit_strict

__all__ = ["correlated_z"]


@jit_strict
def correlated_z(l2, A, B, E, Z, tol):  # pragma: no cover - compiled
    """Fill ``Z[i] = chol(A l2[i] + B) @ E[i]`` for every SNP; return -1, or the first row whose
    covariance is not positive semi-definite (a pivot below ``-tol`` times its diagonal).

    ``l2`` (n,) float64, ``A``/``B`` (k, k) float64 symmetric, ``E``/``Z`` (n, k) float64 C-contiguous.
    """
    n, k = E.shape
    L = np.zeros((k, k))
    for i in range(n):
        li = l2[i]
        for a in range(k):
            for b in range(a + 1):
                s = A[a, b] * li + B[a, b]
                for m in range(b):
                    s -= L[a, m] * L[b, m]
                if a == b:
                    scale = A[a, a] * li + B[a, a]
                    if s > tol * abs(scale):
                        L[a, a] = np.sqrt(s)
                    elif s >= -tol * abs(scale):
                        L[a, a] = 0.0
                    else:
                        return i
                elif L[b, b] > 0.0:
                    L[a, b] = s / L[b, b]
                else:
                    if abs(s) > tol * np.sqrt(abs((A[a, a] * li + B[a, a]) * (A[b, b] * li + B[b, b]))):
                        return i
                    L[a, b] = 0.0
        for a in range(k):
            acc = 0.0
            for m in range(a + 1):
                acc += L[a, m] * E[i, m]
            Z[i, a] = acc
    return -1
