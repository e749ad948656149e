"""Cross-validation of the LFMM ridge fit over K and lambda (the lfmm R package's ``lfmm_ridge_CV``),
streamed: three passes over the genotypes whatever the grid.

The lfmm package's procedure, on the centred genotypes ``Y`` and centred covariates ``X``: for each
``(lambda, K)`` and each row fold ``F`` (test samples), the ridge LFMM (``ridgeLFMM``: ``P^1/2 = D Q'``
from the SVD of the training ``X`` with ``D_jj = sqrt(lambda / (lambda + sigma_j))``, the top-K SVD
``u s v'`` of ``P^1/2 Y_train``, ``U = Q D^-1 u s``, ``V = v``, ``B = ((Y - U V')' X)(X'X + lambda I)^-1``;
nothing re-centred inside a fold) is fitted on the other samples; the SNPs are ordered by their
training squared error and the first ``round(col_prop p)`` cut into column folds ``J``; for each
``J`` the test samples' factors are estimated from the other SNPs,
``U_test = (Y_test[, -J] - X_test B[-J]') V[-J]``, and the error is
``mean((U_test V[J]' + X_test B[J]' - Y_test[, J])^2)``.

Every quantity is linear in each SNP's column: with the Gram matrix ``Y Y'`` (pass 1), each fit's
``V`` and ``B`` rows are ``A_V' y`` and ``A_B' y``; pass 2 computes the training errors (for the
order); pass 3 accumulates, per column fold, ``sum c v'``, ``sum v v'`` and ``sum |c|^2`` with
``c = y_test - X_test b``, from which every fold's error follows exactly.  Memory: ``Y Y'``, and one
training error and fold label per SNP and fit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from polgen._blas import single_threaded_blas
from polgen.errors import InputError
from polgen.lfmm.covariates import covariate_matrix
from polgen.lfmm.genotypes import open_source

log = logging.getLogger("polgen")

Folds = Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]]


def left_out_kfold(k: int, J: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The lfmm package's ``left.out.kfold``: a random permutation of ``0..J-1`` cut into ``k``
    equal-width value intervals (R's ``cut(sample.int(J), breaks = k)``); 0-based indices."""
    if k == 1:
        return [np.arange(J)]
    perm = rng.permutation(J) + 1.0
    lo, hi = 1.0, float(J)
    edges = np.linspace(lo, hi, k + 1)
    edges[0], edges[-1] = lo - (hi - lo) / 1000.0, hi + (hi - lo) / 1000.0
    lab = np.searchsorted(edges, perm, side="left") - 1  # right-closed intervals (a, b]
    return [np.flatnonzero(lab == fold) for fold in range(k) if np.any(lab == fold)]


@dataclass
class _Fit:
    K: int
    lam: float
    test: np.ndarray  # row indices
    train: np.ndarray
    AV: np.ndarray  # (n_train, K): v_j = AV' y_train_j
    AB: np.ndarray  # (n_train, d): b_j = AB' y_train_j
    H: np.ndarray  # (n_train, n_train): training residual r_j = H' y_train_j
    col_folds: list[np.ndarray] | None  # given positions in the training-error order
    err2s: np.ndarray = field(default_factory=lambda: np.empty(0))
    fold_of: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # column fold, -1 = not kept


def _ridge_fit(G: np.ndarray, Xc: np.ndarray, train: np.ndarray, K: int, lam: float) -> tuple[np.ndarray, ...]:
    Xt = Xc[train]
    nt, d = Xt.shape
    if K >= nt:
        raise InputError(f"K={K} is not smaller than the {nt} training samples of a fold")
    Q, sig, _ = np.linalg.svd(Xt, full_matrices=True)
    dl = np.ones(nt)
    dl[: sig.size] = np.sqrt(lam / (lam + sig))
    Mt = dl[:, None] * Q.T  # P^1/2 = D Q'
    Gt = G[np.ix_(train, train)]
    w, E = np.linalg.eigh(Mt @ Gt @ Mt.T)
    w, E = w[::-1][:K], E[:, ::-1][:, :K]
    s = np.sqrt(np.maximum(w, 0.0))
    if s[-1] <= 1e-12 * max(s[0], 1e-300):
        raise InputError(f"the training genotypes of a fold have rank < K={K}")
    AV = (Mt.T @ E) / s  # v_j = (P^1/2 y)' u / s
    U = Q @ ((1.0 / dl)[:, None] * (E * s))  # P^-1/2 u s
    Rr = np.linalg.inv(Xt.T @ Xt + lam * np.eye(d))
    AB = (Xt - AV @ (U.T @ Xt)) @ Rr
    H = np.eye(nt) - AV @ U.T - AB @ Xt.T
    return AV, AB, H


def lfmm_ridge_cv(
    X: Any,
    bed: Any,
    K: int | Sequence[int],
    lam: float | Sequence[float],
    *,
    row_folds: int = 5,
    col_folds: int = 5,
    col_prop: float = 1.0,
    seed: int = 0,
    folds: Folds | None = None,
    batch_snps: int | None = None,
) -> pl.DataFrame:
    """Cross-validated prediction error of the ridge LFMM over a grid of K and lambda (the lfmm R
    package's ``lfmm_ridge_CV``), streamed from a .bed.

    Parameters
    ----------
    X : covariates (frame with ``IID`` aligned to the .fam, or an (n, d) array in .fam order).
    bed : PLINK .bed path (or prefix), or an (n, p) dosage array (NaN = missing, mean-imputed).
    K, lam : numbers of latent factors and ridge penalties; every pair is cross-validated (R's
        ``expand.grid(lambda, K)`` order: lambda varies fastest).
    row_folds, col_folds : numbers of sample folds and SNP folds (R's ``n.fold.row``, ``n.fold.col``).
    col_prop : share of the SNPs (those with the smallest training error) cut into column folds.
    seed : seed of the random folds (drawn per pair, as R draws them per parameter row).
    folds : explicit folds instead: a list of ``(test rows, column folds)`` per row fold, 0-based,
        the column folds as positions in the training-error order (used for every pair).
    batch_snps : SNPs per decoded block.

    Returns
    -------
    polars.DataFrame
        One row per pair x row fold x column fold: ``K``, ``lam``, ``row_fold``, ``col_fold``
        (1-based), ``err`` (mean squared prediction error) and ``nozero_prop`` (share of non-zero
        effects: 1 for the ridge but for monomorphic SNPs).  ``frame.group_by("K", "lam").agg(pl.col("err").mean())``
        gives the curve to choose K and lambda from.
    """
    Ks = [K] if isinstance(K, (int, np.integer)) else list(K)
    lams = [lam] if isinstance(lam, (int, float, np.floating)) else list(lam)
    if not Ks or not lams:
        raise InputError("K and lam must be non-empty")
    for k in Ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"K values must be positive integers, got {k!r}")
    for lv in lams:
        if not (np.isfinite(lv) and lv > 0):
            raise InputError(f"lam values must be positive numbers, got {lv!r}")
    if not 0 < col_prop <= 1:
        raise InputError(f"col_prop must be in (0, 1], got {col_prop!r}")
    src = open_source(bed, scale="center", block_snps=batch_snps or None)
    n, p = src.n_samples, src.n_snps
    for name, v, top in (("row_folds", row_folds, n), ("col_folds", col_folds, p)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= top:
            raise InputError(f"{name} must be an integer in [1, {top}], got {v!r}")
    fids = src.fam["FID"].cast(str).to_list() if hasattr(src, "fam") else None
    Xm, _ = covariate_matrix(X, src.sample_ids, n, fids)
    Xc = np.ascontiguousarray(Xm - Xm.mean(axis=0))
    kept = int(round(col_prop * p))
    with single_threaded_blas():
        G = np.zeros((n, n))
        for blk in src.blocks(0, p, parallel=False):
            G += blk.data @ blk.data.T
    rng = np.random.default_rng(seed)
    fits: list[_Fit] = []
    for Kv in Ks:
        for lv in lams:
            plan: list[tuple[Any, Any]] = (
                [(r, None) for r in left_out_kfold(row_folds, n, rng)] if folds is None else list(folds)
            )
            for test_rows, cols in plan:
                test = np.asarray(test_rows, dtype=np.int64)
                if test.size == 0 or test.min() < 0 or test.max() >= n:
                    raise InputError(f"a row fold is empty or has sample indices outside 0..{n - 1}")
                train = np.setdiff1d(np.arange(n), test)
                AV, AB, H = _ridge_fit(G, Xc, train, int(Kv), float(lv))
                cf = None if cols is None else [np.asarray(c, dtype=np.int64) for c in cols]
                if cf is not None and any(c.size and (c.min() < 0 or c.max() >= kept) for c in cf):
                    raise InputError(f"column fold positions must lie in 0..{kept - 1}")
                fits.append(_Fit(int(Kv), float(lv), test, train, AV, AB, H, cf))
    # pass 2: training errors -> the kept-column order and each SNP's column fold
    for f in fits:
        f.err2s = np.empty(p)
    with single_threaded_blas():
        for blk in src.blocks(0, p, parallel=False):
            for f in fits:
                R = f.H.T @ blk.data[f.train]
                f.err2s[blk.start : blk.stop] = np.einsum("ij,ij->j", R, R)
    for f in fits:
        order = np.argsort(f.err2s, kind="stable")[:kept]
        cf = f.col_folds if f.col_folds is not None else left_out_kfold(col_folds, kept, rng)
        f.col_folds = cf
        f.fold_of = np.full(p, -1, dtype=np.int64)
        for label, pos in enumerate(cf):
            f.fold_of[order[pos]] = label
    # pass 3: per column fold, sums of c v', v v', |c|^2 (c = y_test - X_test b)
    acc = []
    for f in fits:
        nf, Kf, nte = len(f.col_folds or []), f.AV.shape[1], f.test.size
        acc.append((np.zeros((nf, nte, Kf)), np.zeros((nf, Kf, Kf)), np.zeros(nf), np.zeros((nte, Kf)), [0]))
    with single_threaded_blas():
        for blk in src.blocks(0, p, parallel=False):
            for f, (S, Qv, C, Sall, nz) in zip(fits, acc):
                Yt = blk.data[f.train]
                Vb = Yt.T @ f.AV  # (b, K)
                Bb = Yt.T @ f.AB  # (b, d)
                nz[0] += int(np.count_nonzero(Bb))
                Cb = blk.data[f.test] - Xc[f.test] @ Bb.T  # (n_test, b)
                Sall += Cb @ Vb
                lab = f.fold_of[blk.start : blk.stop]
                for fold in np.unique(lab[lab >= 0]):
                    sel = lab == fold
                    S[fold] += Cb[:, sel] @ Vb[sel]
                    Qv[fold] += Vb[sel].T @ Vb[sel]
                    C[fold] += float(np.sum(Cb[:, sel] ** 2))
    records: list[dict[str, Any]] = []
    per_pair: dict[tuple[int, float], int] = {}
    for f, (S, Qv, C, Sall, nz) in zip(fits, acc):
        key = (f.K, f.lam)
        per_pair[key] = per_pair.get(key, 0) + 1
        for fold, pos in enumerate(f.col_folds or []):
            UJ = Sall - S[fold]
            tot = C[fold] - 2.0 * float(np.sum(UJ * S[fold])) + float(np.sum((UJ.T @ UJ) * Qv[fold]))
            records.append(
                {
                    "K": f.K,
                    "lam": f.lam,
                    "row_fold": per_pair[key],
                    "col_fold": fold + 1,
                    "err": tot / (f.test.size * len(pos)),
                    "nozero_prop": nz[0] / (p * Xc.shape[1]),
                }
            )
    out = pl.DataFrame(records, schema={"K": pl.Int64, "lam": pl.Float64, "row_fold": pl.Int64, "col_fold": pl.Int64,
                                     "err": pl.Float64, "nozero_prop": pl.Float64})  # fmt: skip
    log.info("lfmm ridge CV: %d (K, lambda) pairs x %d row folds on %d SNPs", len(Ks) * len(lams), row_folds, p)
    return out
