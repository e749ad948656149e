"""Stratified LD Score regression kernels: per-block cross-products over many annotations and the
block jackknife of the multi-regressor solve.

The regression is ``y*w ~ [X[idx] * s * w, w]`` (one slope per annotation and an intercept) over
SNPs in a fixed order, cut into contiguous blocks: ``X`` is the (SNPs x annotations) LD-score
matrix of the reference, ``idx`` the rows of the SNPs in regression order (so ``X`` is never
copied per trait), ``s`` a per-SNP scale (R GenomicSEM's ``N / N.bar`` for heritabilities, 1 for
covariances) and ``w`` the normalised regression weights; ``cols`` picks the annotation columns of
``X`` in use.  ``block_crossprod`` makes one pass over
the SNPs; ``jackknife`` solves the full and leave-one-block-out systems (batched LAPACK) and
returns R's pseudo-values ``nb * reg - (nb - 1) * delete``.
"""

from __future__ import annotations

import numpy as np

from polgen.kernels._jit import jit_fm


@jit_fm
def _block_crossprod(X, cols, idx, scale, w, y, starts, ends, xtx, xty):  # pragma: no cover - compiled
    p = cols.shape[0]
    q = p + 1
    r = np.empty(q)
    nb = starts.shape[0]
    for b in range(nb):
        for i in range(q):
            xty[b, i] = 0.0
            for j in range(q):
                xtx[b, i, j] = 0.0
        for t in range(starts[b], ends[b]):
            row = idx[t]
            f = scale[t] * w[t]
            for j in range(p):
                r[j] = X[row, cols[j]] * f
            r[p] = w[t]
            yy = y[t] * w[t]
            for i in range(q):
                ri = r[i]
                xty[b, i] += ri * yy
                for j in range(i + 1):
                    xtx[b, i, j] += ri * r[j]
        for i in range(q):
            for j in range(i):
                xtx[b, j, i] = xtx[b, i, j]


def block_crossprod(
    X: np.ndarray,
    cols: np.ndarray | None,
    idx: np.ndarray,
    scale: np.ndarray,
    w: np.ndarray,
    y: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-block ``X'X`` (nb x (p+1) x (p+1)) and ``X'y`` (nb x (p+1)) of the weighted design
    ``[X[idx][:, cols] * scale * w, w]`` and response ``y * w``; ``X`` C-contiguous float64,
    ``cols`` the columns of ``X`` used (``None``: all), so that a column subset is never copied."""
    if cols is None:
        cols = np.arange(X.shape[1], dtype=np.int64)
    p = cols.shape[0]
    nb = starts.shape[0]
    xtx = np.empty((nb, p + 1, p + 1))
    xty = np.empty((nb, p + 1))
    _block_crossprod(
        np.ascontiguousarray(X, dtype=np.float64),
        np.ascontiguousarray(cols, dtype=np.int64),
        np.ascontiguousarray(idx, dtype=np.int64),
        np.ascontiguousarray(scale, dtype=np.float64),
        np.ascontiguousarray(w, dtype=np.float64),
        np.ascontiguousarray(y, dtype=np.float64),
        np.ascontiguousarray(starts, dtype=np.int64),
        np.ascontiguousarray(ends, dtype=np.int64),
        xtx,
        xty,
    )
    return xtx, xty


def jackknife(xtx: np.ndarray, xty: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full solution ``reg`` (p+1), leave-one-block-out solutions ``delete`` (nb x (p+1)) and
    pseudo-values ``nb * reg - (nb - 1) * delete`` from the block cross-products."""
    nb = xtx.shape[0]
    tx = xtx.sum(axis=0)
    ty = xty.sum(axis=0)
    reg = np.linalg.solve(tx, ty)
    delete = np.linalg.solve(tx[None] - xtx, (ty[None] - xty)[..., None])[..., 0]
    pseudo = nb * reg[None, :] - (nb - 1) * delete
    return reg, delete, pseudo
