"""Sparse group lasso with an unpenalised intercept, solved by FISTA (:mod:`polgen.kernels.fista`).

    min_{w, b}  (1/2n) |X w + b - y|^2 + sum_g (lambda / sqrt|g|) |w_g|_2 + l1 |w|_1

X is centred (b = mean(y) - mean(X) w), so the problem is solved on the centred Gram matrix.
The group scaling ``lambda / sqrt|g|`` is group-lasso's ``scale_reg="inverse_group_size"``, the
setting of the reference's estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from polgen.errors import InputError


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


def sparse_group_lasso(
    X, y, groups, group_reg: float = 1e-7, l1_reg: float = 1e-9, *, max_iter: int = 5000, tol: float = 1e-10, w0=None
) -> LassoFit:
    """Fit the sparse group lasso; ``groups`` labels each column of X (any hashable codes)."""
    from polgen.kernels.fista import fista_sgl, objective, power_lipschitz

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
    codes, lam = group_penalties(groups, group_reg)
    G, c, yy, xm, ym = gram(X, y)
    L0 = max(power_lipschitz(G, 30), 1e-12)
    start = np.zeros(p) if w0 is None else np.ascontiguousarray(np.asarray(w0, dtype=np.float64))
    w, it, conv, _ = fista_sgl(G, c, codes, lam, float(l1_reg), start, L0, int(max_iter), float(tol))
    b = ym - float(xm @ w)
    resid = y - X @ w - b
    sst = float(((y - ym) ** 2).sum())
    r2 = 1.0 - float(resid @ resid) / sst if sst > 0 else 0.0
    return LassoFit(w, b, r2, int(it), bool(conv), float(objective(G, c, yy, w, codes, lam, float(l1_reg))))
