"""numba kernels for RAM-form SEM: implied covariance and its analytic Jacobian.

They take exactly the raw arrays of :class:`polgen.gsem.ram.CompiledModel`
(``par_kind``, ``par_row``, ``par_col``, ``A0``, ``S0``, ``exo_row``, ``exo_col``, ``vech_row``,
``vech_col``) so that per-SNP code can evaluate many parameter vectors without Python overhead::

    Sigma = F (I - A)^-1 S (I - A)^-T F'      (observed block = the first p variables)

``ram_implied_jacobian`` fills ``sigma`` (p x p) and ``jac`` (kstar x n_free, rows in ``vech``
order); ``ram_implied_batch`` does the same for many parameter vectors (and per-item values of the
fixed.x cells, e.g. a SNP variance), in parallel over items.  All float64, C-contiguous inputs.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from polgen.kernels._jit import jit_fm, jit_fm_parallel

__all__ = ["ram_implied_jacobian", "ram_implied_batch"]



@jit_fm
def _fill(theta, par_kind, par_row, par_col, A, S):
    for k in range(theta.shape[0]):
        r = par_row[k]
        c = par_col[k]
        if par_kind[k] == 0:
            A[r, c] = theta[k]
        else:
            S[r, c] = theta[k]
            S[c, r] = theta[k]


@jit_fm
def _implied_jacobian_into(A, S, par_kind, par_row, par_col, p, vech_row, vech_col, sigma, jac):
    m = A.shape[0]
    IA = -A
    for i in range(m):
        IA[i, i] += 1.0
    B = np.linalg.inv(IA)
    BS = B @ S
    C = BS @ B.T
    for i in range(p):
        for j in range(p):
            sigma[i, j] = C[i, j]
    ne = vech_row.shape[0]
    for k in range(par_kind.shape[0]):
        i = par_row[k]
        j = par_col[k]
        if par_kind[k] == 0:
            for e in range(ne):
                a = vech_row[e]
                b = vech_col[e]
                jac[e, k] = B[a, i] * C[j, b] + B[b, i] * C[j, a]
        elif i == j:
            for e in range(ne):
                a = vech_row[e]
                b = vech_col[e]
                jac[e, k] = B[a, i] * B[b, i]
        else:
            for e in range(ne):
                a = vech_row[e]
                b = vech_col[e]
                jac[e, k] = B[a, i] * B[b, j] + B[a, j] * B[b, i]


@jit_fm
def ram_implied_jacobian(theta, par_kind, par_row, par_col, A0, S0, p, vech_row, vech_col, sigma, jac):
    """Implied covariance (into ``sigma``) and d vech(Sigma)/d theta (into ``jac``) at ``theta``.

    ``A0``/``S0`` hold the fixed values (fixed.x cells already filled).
    """
    A = A0.copy()
    S = S0.copy()
    _fill(theta, par_kind, par_row, par_col, A, S)
    _implied_jacobian_into(A, S, par_kind, par_row, par_col, p, vech_row, vech_col, sigma, jac)


@jit_fm_parallel
def ram_implied_batch(thetas, exo_vals, par_kind, par_row, par_col, A0, S0, exo_row, exo_col, p,
                      vech_row, vech_col, sigmas, jacs):
    """``ram_implied_jacobian`` for every row of ``thetas`` (n x n_free); ``exo_vals`` (n x n_exo)
    are the per-item values of the fixed.x cells (``S0[exo_row, exo_col]``).  Outputs
    ``sigmas`` (n x p x p) and ``jacs`` (n x kstar x n_free)."""
    n = thetas.shape[0]
    for t in nb.prange(n):
        A = A0.copy()
        S = S0.copy()
        for x in range(exo_row.shape[0]):
            S[exo_row[x], exo_col[x]] = exo_vals[t, x]
            S[exo_col[x], exo_row[x]] = exo_vals[t, x]
        _fill(thetas[t], par_kind, par_row, par_col, A, S)
        _implied_jacobian_into(A, S, par_kind, par_row, par_col, p, vech_row, vech_col, sigmas[t], jacs[t])
