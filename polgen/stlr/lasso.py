"""Sparse group lasso with an unpenalised intercept, solved by FISTA (:mod:`polgen.kernels.fista`).

    min_{w, b}  (1/2n) |X w + b - y|^2 + sum_g (lambda / sqrt|g|) |w_g|_2 + l1 |w|_1

X is centred (b = mean(y) - mean(X) w), so the problem is solved on the centred Gram matrix.
The group scaling ``lambda / sqrt|g|`` is group-lasso's ``scale_reg="inverse_group_size"``, the
setting of the reference's estimator.

Solvers (``solver=``):

* ``"fista"`` (default): a majorise-minimise start (:func:`mm_start`: reweighted exact solves that
  settle the weakly determined directions of ill-conditioned designs), then FISTA with
  backtracking and adaptive restart on the centred Gram matrix (:mod:`polgen.kernels.fista`) run to
  ``tol`` (relative step and objective change, 1e-10), which sets exact zeros through the prox.
  When FISTA has not converged after :data:`FISTA_FIRST` iterations, the start is refined by
  :data:`MM_RETRY` reweighted solves and FISTA spends the rest of ``max_iter`` from there (kept when
  it converges or reaches a lower objective; on the Stahl 2016 olfactory bulb this turned the one
  model of 100 that stopped at max_iter = 5000 into one converged in 2 iterations).
  (From zero alone, FISTA stopped at max_iter on most real SpaceTravLR designs - condition numbers
  1e5-1e6, tiny penalties - at objectives above this start's.)
* ``"reference"``: group-lasso 1.5.0's own iteration, as the Python SpaceTravLR reference calls it
  (Frobenius Lipschitz start, half steps, its restart and backtracking rules, stop at relative step
  < ``tol`` = 1e-5 or after ``max_iter`` = 1500; :mod:`polgen.kernels.group_lasso_ref`), to
  reproduce published SpaceTravLR betas.  It stops early on ill-conditioned designs: its
  coefficients are not the optimum there (``converged`` only says its own rule was met).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from polgen.errors import InputError
from polgen.options import StlrSolver, check_option

#: (max_iter, tol) of each solver when not given
SOLVER_DEFAULTS = {"fista": (5000, 1e-10), "reference": (1500, 1e-5)}
#: "fista": iterations from the majorise-minimise start before it is refined by :data:`MM_RETRY` more
#: reweighted solves (the rest of ``max_iter`` then runs from there)
FISTA_FIRST = 500
MM_RETRY = 2000


@dataclass
class LassoFit:
    coef: np.ndarray
    intercept: float
    r2: float
    n_iter: int
    converged: bool
    objective: float


def group_penalties(groups: np.ndarray, group_reg: float) -> tuple[np.ndarray, np.ndarray]:
    """Group codes 0..K-1 of each feature and lambda_g = group_reg / sqrt(|g|)."""
    uniq, codes = np.unique(np.asarray(groups), return_inverse=True)
    sizes = np.bincount(codes, minlength=len(uniq)).astype(np.float64)
    return codes.astype(np.int64), float(group_reg) / np.sqrt(sizes)


def gram(X: np.ndarray, y: np.ndarray):
    """Centred Gram quantities G = Xc'Xc/n, c = Xc'yc/n, yy = yc'yc/n and the means."""
    n = X.shape[0]
    xm = X.mean(axis=0)
    ym = float(y.mean())
    Xc = X - xm
    yc = y - ym
    G = np.ascontiguousarray(Xc.T @ Xc / n)
    c = np.ascontiguousarray(Xc.T @ yc / n)
    return G, c, float(yc @ yc / n), xm, ym


def mm_start(
    Xc: np.ndarray, yc: np.ndarray, codes: np.ndarray, lam: np.ndarray, l1: float, max_iter: int = 200
) -> np.ndarray:
    """A starting point near the optimum by majorise-minimise (iteratively reweighted least squares).

    Each step replaces lam_g ||w_g|| by its quadratic majoriser at the current w (and l1 |w_j|
    likewise) and solves (G + D) w = c exactly, G = Xc'Xc / n, c = Xc'yc / n, D = diag(lam_g / ||w_g||
    + l1 / |w_j|): the objective never increases, and the directions the data barely constrain
    (G's near-null space, where a gradient method moves by ~lambda per step) are settled by the
    solve itself.  With more modulators than cells the solve uses the Woodbury identity (O(n^2 p)).
    Starts from the ridge solution (D = 1e-8 trace(G)/p); stops when the relative step is < 1e-10 or
    after ``max_iter`` solves (FISTA finishes from there).
    """
    n, p = Xc.shape
    U = Xc.T / np.sqrt(n)  # G = U U'
    c = Xc.T @ yc / n
    trace = float((U * U).sum())
    d = np.full(p, max(1e-8 * trace / max(p, 1), 1e-300))
    w = np.zeros(p)
    tiny = 1e-300
    for _ in range(max_iter):
        if p > n:  # (D + U U')^{-1} c = D^-1 c - D^-1 U (I + U' D^-1 U)^-1 U' D^-1 c
            Dinv = 1.0 / d
            DU = U * Dinv[:, None]
            M = np.eye(n) + U.T @ DU
            wn = Dinv * c - DU @ np.linalg.solve(M, DU.T @ c)
        else:
            wn = np.linalg.solve(U @ U.T + np.diag(d), c)
        if not np.isfinite(wn).all():
            break
        step = float(np.linalg.norm(wn - w))
        w = wn
        if step <= 1e-10 * max(1.0, float(np.linalg.norm(w))):
            break
        gn = np.sqrt(np.bincount(codes, w * w, minlength=len(lam)))
        d = lam[codes] / np.maximum(gn[codes], tiny) + l1 / np.maximum(np.abs(w), tiny)
        d = np.minimum(d, 1e300)
    return w


def _reference_fit(X, y, groups, group_reg, l1_reg, max_iter, tol) -> LassoFit:
    from polgen.kernels.fista import objective
    from polgen.kernels.group_lasso_ref import fista_group_lasso_ref

    n, p = X.shape
    codes, lam = group_penalties(groups, group_reg)
    xm = X.mean(axis=0)
    A = np.empty((n, p + 1))
    A[:, 0] = 1.0
    A[:, 1:] = X - xm
    w, it, conv, _ = fista_group_lasso_ref(
        np.ascontiguousarray(A), y, codes, lam, float(l1_reg), int(max_iter), float(tol)
    )
    coef = np.ascontiguousarray(w[1:])
    b = float(w[0] - xm @ coef)
    resid = y - X @ coef - b
    ym = float(y.mean())
    sst = float(((y - ym) ** 2).sum())
    r2 = 1.0 - float(resid @ resid) / sst if sst > 0 else 0.0
    G, c, yy, _, _ = gram(X, y)
    return LassoFit(coef, b, r2, int(it), bool(conv), float(objective(G, c, yy, coef, codes, lam, float(l1_reg))))


def sparse_group_lasso(
    X,
    y,
    groups,
    group_reg: float = 1e-7,
    l1_reg: float = 1e-9,
    *,
    max_iter: int | None = None,
    tol: float | None = None,
    w0=None,
    solver: StlrSolver = "fista",
) -> LassoFit:
    """Fit the sparse group lasso; ``groups`` labels each column of X (any hashable codes).

    ``solver``: "fista" (default, converging) or "reference" (group-lasso 1.5.0's iteration; ``w0``
    is not used: it starts from 0 as the reference does).  ``max_iter`` / ``tol`` default to the
    solver's (:data:`SOLVER_DEFAULTS`).
    """
    from polgen.kernels.fista import fista_sgl, objective, power_lipschitz

    check_option("solver", solver, StlrSolver)
    d_iter, d_tol = SOLVER_DEFAULTS[solver]
    max_iter = d_iter if max_iter is None else max_iter
    tol = d_tol if tol is None else tol
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float64))
    y = np.ascontiguousarray(np.asarray(y, dtype=np.float64).ravel())
    n, p = X.shape
    if y.shape[0] != n:
        raise InputError(f"X has {n} rows but y has {y.shape[0]}")
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        raise InputError("X or y holds NaN/inf")
    if group_reg < 0 or l1_reg < 0:
        raise InputError("penalties must be >= 0")
    if n == 0:
        raise InputError("no samples to fit")
    if p == 0:
        ym = float(y.mean())
        return LassoFit(np.zeros(0), ym, 0.0, 0, True, 0.5 * float(((y - ym) ** 2).mean()))
    if solver == "reference":
        return _reference_fit(X, y, groups, group_reg, l1_reg, max_iter, tol)
    codes, lam = group_penalties(groups, group_reg)
    G, c, yy, xm, ym = gram(X, y)
    L0 = max(power_lipschitz(G, 30), 1e-12)
    if w0 is None:
        start = np.ascontiguousarray(mm_start(X - xm, y - ym, codes, lam, float(l1_reg)))
        if not np.isfinite(start).all():
            start = np.zeros(p)
    else:
        start = np.ascontiguousarray(np.asarray(w0, dtype=np.float64))
    first = min(int(max_iter), FISTA_FIRST) if w0 is None else int(max_iter)
    w, it, conv, _ = fista_sgl(G, c, codes, lam, float(l1_reg), start, L0, first, float(tol))
    if not conv and w0 is None and max_iter > first:
        # FISTA crawls from this start (a weakly determined direction the 200 reweighted solves had not
        # settled): settle it with more of them (O(n^2 p) each, cheaper than FISTA's O(p^2) step when
        # modulators outnumber cells), then finish with the rest of the iteration budget
        start2 = np.ascontiguousarray(mm_start(X - xm, y - ym, codes, lam, float(l1_reg), max_iter=MM_RETRY))
        if np.isfinite(start2).all():
            w2, it2, conv2, _ = fista_sgl(
                G, c, codes, lam, float(l1_reg), start2, L0, int(max_iter) - first, float(tol)
            )
            l1 = float(l1_reg)
            if conv2 or objective(G, c, yy, w2, codes, lam, l1) <= objective(G, c, yy, w, codes, lam, l1):
                w, conv = w2, conv2
            it += it2
    b = ym - float(xm @ w)
    resid = y - X @ w - b
    sst = float(((y - ym) ** 2).sum())
    r2 = 1.0 - float(resid @ resid) / sst if sst > 0 else 0.0
    return LassoFit(w, b, r2, int(it), bool(conv), float(objective(G, c, yy, w, codes, lam, float(l1_reg))))
