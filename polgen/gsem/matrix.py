"""Small dense linear-algebra helpers with R's conventions (GenomicSEM / lavaan / Matrix).

* :func:`vech` stacks the lower triangle column by column (R ``lav_matrix_vech`` /
  ``lowerTriangle(x, diag=TRUE)``), :func:`vech_reverse` rebuilds the symmetric matrix;
* :func:`cov_to_cor` is R's ``cov2cor``;
* :func:`near_pd` reproduces ``Matrix::nearPD`` (Higham 2002 alternating projections with
  Dykstra's correction; R's defaults ``corr=FALSE, keepDiag=FALSE, do2eigen=TRUE, eig.tol=1e-6,
  conv.tol=1e-7, posd.tol=1e-8, maxit=100, conv.norm.type="I"``) by the one nearPD kernel
  (:func:`polgen.kernels.linalg.near_pd_general`, which the per-SNP GWAS smoothing uses too);
* :func:`reorder_indices` / :func:`reorder_v` permute a sampling covariance matrix ``V`` of
  ``vech(S)`` from one trait order to another (GenomicSEM's ``.rearrange``);
* :func:`subset_indices` selects the ``vech`` rows belonging to a subset of traits;
* :func:`is_pd` is GenomicSEM's check (smallest eigenvalue > 0).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np

from polgen.errors import InputError, NotPositiveDefiniteError

log = logging.getLogger("polgen")

__all__ = [
    "vech",
    "vech_indices",
    "vech_reverse",
    "cov_to_cor",
    "near_pd",
    "NearPDResult",
    "is_pd",
    "reorder_indices",
    "reorder_v",
    "subset_indices",
    "smooth_if_needed",
]


def vech_indices(p: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the lower triangle of a p x p matrix, column by column."""
    rows, cols = [], []
    for j in range(p):
        for i in range(j, p):
            rows.append(i)
            cols.append(j)
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)


def vech(m: np.ndarray) -> np.ndarray:
    """Lower triangle (with diagonal) stacked column by column, as R's ``lav_matrix_vech``."""
    a = np.asarray(m, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise InputError(f"vech needs a square matrix, got shape {a.shape}")
    r, c = vech_indices(a.shape[0])
    return a[r, c].copy()


def vech_reverse(v: np.ndarray) -> np.ndarray:
    """Symmetric matrix from its ``vech`` (inverse of :func:`vech`)."""
    x = np.asarray(v, dtype=np.float64).reshape(-1)
    n = x.shape[0]
    p = int(round((np.sqrt(8 * n + 1) - 1) / 2))
    if p * (p + 1) // 2 != n:
        raise InputError(f"a vech must have p(p+1)/2 elements, got {n}")
    out = np.zeros((p, p))
    r, c = vech_indices(p)
    out[r, c] = x
    out[c, r] = x
    return out


def cov_to_cor(m: np.ndarray) -> np.ndarray:
    """R's ``cov2cor``: D^-1 M D^-1 with an exact unit diagonal."""
    a = np.asarray(m, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise InputError(f"cov_to_cor needs a square matrix, got shape {a.shape}")
    d = np.diag(a)
    if np.any(d <= 0):
        log.warning("cov_to_cor: non-positive diagonal entries give NaN correlations")
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.sqrt(d)
        out = inv[:, None] * a * inv[None, :]
    np.fill_diagonal(out, 1.0)
    return out


def is_pd(m: np.ndarray) -> bool:
    """GenomicSEM's test: the smallest eigenvalue is strictly positive."""
    a = np.asarray(m, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        return False
    return bool(np.linalg.eigvalsh((a + a.T) / 2)[0] > 0)


@dataclass
class NearPDResult:
    mat: np.ndarray
    iterations: int
    converged: bool
    normF: float


@overload
def near_pd(
    x: np.ndarray,
    *,
    corr: bool = False,
    keep_diag: bool = False,
    do2eigen: bool = True,
    do_sym: bool = False,
    do_dykstra: bool = True,
    eig_tol: float = 1e-6,
    conv_tol: float = 1e-7,
    posd_tol: float = 1e-8,
    maxit: int = 100,
    full: Literal[False] = False,
) -> np.ndarray: ...


@overload
def near_pd(
    x: np.ndarray,
    *,
    corr: bool = False,
    keep_diag: bool = False,
    do2eigen: bool = True,
    do_sym: bool = False,
    do_dykstra: bool = True,
    eig_tol: float = 1e-6,
    conv_tol: float = 1e-7,
    posd_tol: float = 1e-8,
    maxit: int = 100,
    full: Literal[True],
) -> NearPDResult: ...


def near_pd(
    x: np.ndarray,
    *,
    corr: bool = False,
    keep_diag: bool = False,
    do2eigen: bool = True,
    do_sym: bool = False,
    do_dykstra: bool = True,
    eig_tol: float = 1e-6,
    conv_tol: float = 1e-7,
    posd_tol: float = 1e-8,
    maxit: int = 100,
    full: bool = False,
) -> np.ndarray | NearPDResult:
    """Nearest positive definite matrix as R's ``Matrix::nearPD`` (defaults identical to R).

    Returns the matrix (``full=True``: a :class:`NearPDResult` with iterations and convergence).
    Raises :class:`NotPositiveDefiniteError` when the input is negative semi-definite (R's
    "Matrix seems negative semi-definite") or not finite.
    """
    from polgen.kernels.linalg import near_pd_general

    a = np.array(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise InputError(f"near_pd needs a square matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise NotPositiveDefiniteError("cannot smooth a matrix with NaN or infinite entries")
    if not np.array_equal(a, a.T):
        a = (a + a.T) / 2  # R: ensureSymmetry -> symmpart
    a = np.ascontiguousarray(a)
    X = np.empty_like(a)
    info = np.zeros(2)
    ok = near_pd_general(
        a,
        X,
        bool(corr),
        bool(keep_diag),
        bool(do2eigen),
        bool(do_dykstra),
        bool(do_sym),
        float(eig_tol),
        float(conv_tol),
        float(posd_tol),
        int(maxit),
        info,
    )
    if not ok:
        raise NotPositiveDefiniteError(
            "matrix seems negative semi-definite; it cannot be smoothed to a positive definite matrix"
        )
    it, conv = int(info[0]), float(info[1])
    converged = conv <= conv_tol
    if not converged:
        log.warning("near_pd: did not converge in %d iterations (conv=%.3g)", maxit, conv)
    if not np.all(np.isfinite(X)):
        raise NotPositiveDefiniteError("near_pd produced non-finite values")
    if full:
        return NearPDResult(X, it, bool(converged), float(np.linalg.norm(a - X, "fro")))
    return X


def smooth_if_needed(m: np.ndarray, name: str) -> tuple[np.ndarray, float]:
    """GenomicSEM's smoothing step: ``nearPD(m, corr=FALSE)`` when the smallest eigenvalue <= 0.

    Returns (matrix, largest absolute change).  Logs a warning when smoothing happened; raises
    :class:`NotPositiveDefiniteError` when the matrix cannot be smoothed to a positive definite one.
    """
    a = np.asarray(m, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise NotPositiveDefiniteError(f"{name} has NaN or infinite entries", column=name)
    sym = (a + a.T) / 2
    w = np.linalg.eigvalsh(sym)
    if w[0] > 0:
        return a, 0.0
    try:
        sm = near_pd(a)
    except NotPositiveDefiniteError as exc:
        raise NotPositiveDefiniteError(
            f"{name} is not positive definite and cannot be smoothed: {exc.message}", column=name
        ) from None
    if np.linalg.eigvalsh((sm + sm.T) / 2)[0] <= 0:
        raise NotPositiveDefiniteError(
            f"{name} is not positive definite and smoothing failed (smallest eigenvalue {w[0]:.3g})", column=name
        )
    diff = float(np.max(np.abs(sm - a)))
    log.warning(
        "%s was not positive definite (smallest eigenvalue %.3g) and was smoothed with "
        "near_pd; largest absolute change %.3g",
        name,
        w[0],
        diff,
    )
    return sm, diff


def reorder_indices(from_names: Sequence[str], to_names: Sequence[str]) -> np.ndarray:
    """0-based permutation ``perm`` such that ``V[perm][:, perm]`` is ``V`` in ``to_names`` order.

    ``V`` is the sampling covariance of ``vech(S)`` with ``S`` in ``from_names`` order (GenomicSEM
    ``.rearrange``; add 1 for R's indices).
    """
    src = list(from_names)
    dst = list(to_names)
    if sorted(src) != sorted(dst) or len(set(src)) != len(src):
        raise InputError(f"cannot reorder {src} into {dst}: not the same set of unique names")
    k = len(src)
    idx = np.zeros((k, k), dtype=np.int64)
    r, c = vech_indices(k)
    idx[r, c] = np.arange(r.size)
    idx[c, r] = np.arange(r.size)
    pos = [src.index(nm) for nm in dst]
    sub = idx[np.ix_(pos, pos)]
    return sub[r, c].copy()


def reorder_v(v: np.ndarray, from_names: Sequence[str], to_names: Sequence[str]) -> np.ndarray:
    """``V`` permuted from ``from_names`` trait order to ``to_names`` order."""
    perm = reorder_indices(from_names, to_names)
    a = np.asarray(v, dtype=np.float64)
    return a[np.ix_(perm, perm)].copy()


def subset_indices(names: Sequence[str], keep: Sequence[str]) -> np.ndarray:
    """Rows of ``vech`` (traits in ``names`` order) whose two traits are both in ``keep``.

    ``S[np.ix_(k, k)]`` with ``k`` the kept positions pairs with ``V[np.ix_(i, i)]`` for these
    indices, in the original relative order (as GenomicSEM drops unused traits).
    """
    names = list(names)
    keep_set = set(keep)
    r, c = vech_indices(len(names))
    sel = [t for t in range(r.size) if names[r[t]] in keep_set and names[c[t]] in keep_set]
    return np.asarray(sel, dtype=np.int64)
