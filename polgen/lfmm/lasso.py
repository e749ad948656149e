"""LFMM with an L1 penalty on the effect sizes (the lfmm R package's ``lfmm_lasso``), streamed.

The lfmm package's algorithm (``lassoLFMM``), on the centred genotypes ``Y`` (n x p) and centred
covariates ``X`` (n x d):

1. ``gamma = (s_K + s_{K+1}) / 2`` from the singular values of ``Y``; with ``W0`` its rank-K
   truncation, the unpenalised ``B0 = ((Y - W0)' X) (X'X)^-1`` gives ``lambda_max = max(B0)`` and
   the path ``exp(seq(log lambda_max, log(lambda_min_ratio lambda_max), length = lambda_num))``;
2. from ``U = V = B = 0``, for each lambda of the path (warm starts) alternate until the relative
   change of ``||Y - U V' - X B'||^2`` is ``<= epsilon`` (at most ``it_max`` times):
   ``B = soft(((Y - U V')' X) (X'X)^-1, lambda)`` then the soft-thresholded SVD of ``Y - X B'``
   (its top ``K + 2`` singular values minus ``gamma``, the positive ones kept: ``U = u (s - gamma)``,
   ``V = v``), and stop the path at the first lambda whose share of non-zero ``B`` exceeds
   ``nozero_prop`` (or run the one given ``lam``).

Streaming: the SVDs are those of n x n Gram matrices (``Y Y'`` once, then ``(Y - X B')(Y - X B')' =
Y Y' - X (Y B)' - (Y B) X' + X B'B X'``), and ``V``'s rows are linear in each SNP's column, so every
iteration is one pass over the genotype blocks that recomputes each block's ``V`` rows from the
previous SVD, updates its ``B`` rows and accumulates ``Y B`` and ``B'B``; the error is
``trace - 2 sum s_k (s_k - gamma) + sum (s_k - gamma)^2``.  Memory: the n x n Gram matrix and the
p x d effect sizes (the result); never n x p.  Missing calls are mean-imputed (the R function
refuses them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from polgen._blas import single_threaded_blas
from polgen.errors import InputError
from polgen.lfmm.covariates import covariate_matrix
from polgen.lfmm.genotypes import open_source

log = logging.getLogger("polgen")


@dataclass
class LassoResult:
    """Output of :func:`lfmm_lasso` (the fields of the lfmm package's ``lassoLFMM`` object).

    Attributes
    ----------
    B : (p, d) sparse effect sizes (R's ``m$B``).  U : (n, K') latent factors ``u (s - gamma)``
    (R's ``m$U``; K' may exceed K by up to 2, as R's soft SVD).  V : (p, K') loadings.
    lam : the last lambda run.  gamma : the singular-value threshold.  lambda_range : the path.
    nozero_prop : share of non-zero B.  iterations : alternations per lambda run.
    x_names : covariate names.  sample_ids : genotype sample ids (or None).
    """

    B: np.ndarray
    U: np.ndarray
    V: np.ndarray
    lam: float
    gamma: float
    lambda_range: np.ndarray
    nozero_prop: float
    iterations: list[int] = field(default_factory=list)
    x_names: list[str] = field(default_factory=list)
    sample_ids: list[str] | None = None
    source: Any = field(default=None, repr=False)

    def frame(self) -> pl.DataFrame:
        """The effect sizes per SNP: ``CHR, SNP, BP, A1, A2`` (.bim) and ``BETA[_<variable>]``."""
        bim = self.source.bim_slice(0, self.B.shape[0])
        data: dict[str, Any] = {
            c: bim[c].cast(pl.Int64 if c == "BP" else pl.String) for c in ("CHR", "SNP", "BP", "A1", "A2")
        }
        for j, v in enumerate(self.x_names):
            data["BETA" if len(self.x_names) == 1 else f"BETA_{v}"] = self.B[:, j]
        return pl.DataFrame(data)


def _top_eigen(G: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k singular values and left vectors of A from its Gram matrix ``G = A A'``."""
    w, V = np.linalg.eigh(0.5 * (G + G.T))
    w, V = w[::-1][:k], V[:, ::-1][:, :k]
    return np.sqrt(np.maximum(w, 0.0)), np.ascontiguousarray(V)


def _blocks(src, block_snps: int | None):
    for blk in src.blocks(0, src.n_snps, block_snps=block_snps, parallel=False):
        yield blk.start, blk.stop, blk.data


def _soft(B: np.ndarray, lam: float) -> np.ndarray:
    return np.sign(B) * np.maximum(np.abs(B) - lam, 0.0)


def lfmm_lasso(
    X: Any,
    bed: Any,
    K: int,
    *,
    nozero_prop: float = 0.01,
    lambda_num: int = 100,
    lambda_min_ratio: float = 0.01,
    lam: float | None = None,
    it_max: int = 100,
    epsilon: float = 1e-6,
    batch_snps: int | None = None,
) -> LassoResult:
    """Sparse LFMM (the lfmm R package's ``lfmm_lasso``), streamed from a .bed.

    Parameters
    ----------
    X : covariates: a frame with ``IID`` (aligned to the .fam) and numeric columns, or an (n, d)
        array in .fam order.
    bed : PLINK .bed path (or prefix), or an (n, p) dosage array (NaN = missing, mean-imputed).
    K : number of latent factors (1 <= K, K + 2 <= n).
    nozero_prop : stop the lambda path at the first lambda whose share of non-zero effects
        exceeds this (R's ``nozero.prop``).
    lambda_num, lambda_min_ratio : length and end of the log-spaced lambda path (R's defaults).
    lam : run this one lambda instead of the path (R's ``lambda``).
    it_max, epsilon : alternations per lambda at most, and the relative change of the squared
        error that stops them (R's ``it.max``, ``relative.err.epsilon``).
    batch_snps : SNPs per decoded block.

    Returns
    -------
    LassoResult
    """
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
        raise InputError(f"K must be a positive integer, got {K!r}")
    if not 0 < nozero_prop <= 1:
        raise InputError(f"nozero_prop must be in (0, 1], got {nozero_prop!r}")
    if isinstance(lambda_num, bool) or not isinstance(lambda_num, (int, np.integer)) or lambda_num < 1:
        raise InputError(f"lambda_num must be a positive integer, got {lambda_num!r}")
    if not 0 < lambda_min_ratio <= 1:
        raise InputError(f"lambda_min_ratio must be in (0, 1], got {lambda_min_ratio!r}")
    if lam is not None and not (np.isfinite(lam) and lam >= 0):
        raise InputError(f"lam must be a non-negative number, got {lam!r}")
    if isinstance(it_max, bool) or not isinstance(it_max, (int, np.integer)) or it_max < 1:
        raise InputError(f"it_max must be a positive integer, got {it_max!r}")
    src = open_source(bed, scale="center", block_snps=batch_snps or None)
    n, p = src.n_samples, src.n_snps
    if K + 2 > n:
        raise InputError(f"K must satisfy K + 2 <= n_samples = {n}, got K={K}")
    fids = src.fam["FID"].cast(str).to_list() if hasattr(src, "fam") else None
    Xm, names = covariate_matrix(X, src.sample_ids, n, fids)
    Xc = np.ascontiguousarray(Xm - Xm.mean(axis=0))
    d = Xc.shape[1]
    XtX = Xc.T @ Xc
    try:
        R0 = np.linalg.inv(XtX)
    except np.linalg.LinAlgError:
        raise InputError("the covariates are collinear (X'X is singular)") from None
    with single_threaded_blas():
        # pass 0: the Gram matrix Y Y'
        G = np.zeros((n, n))
        for _, _, Yb in _blocks(src, batch_snps):
            G += Yb @ Yb.T
        s, u = _top_eigen(G, K + 1)
        gamma = 0.5 * (s[K - 1] + s[K])
        # pass 1: lambda_max = max of the unpenalised B given the rank-K truncation of Y
        uk = u[:, :K]
        W0 = (Xc - uk @ (uk.T @ Xc)) @ R0
        bmax = -np.inf
        for _, _, Yb in _blocks(src, batch_snps):
            bmax = max(bmax, float((Yb.T @ W0).max()))
    lambda_max = bmax
    path = np.exp(np.linspace(np.log(lambda_max), np.log(lambda_max * lambda_min_ratio), lambda_num))
    if not np.all(np.isfinite(path)):
        raise InputError(f"the largest unpenalised effect is {lambda_max:g} <= 0: no lambda path (give lam)")
    B = np.zeros((p, d))
    usv: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (u, s, s - gamma) of the last SVD
    trace_G = float(np.trace(G))
    err_new = trace_G  # ||Y - 0 - 0||^2
    iterations: list[int] = []
    run = [float(lam)] if lam is not None else list(path)
    last = run[0]
    for lam_k in run:
        last = lam_k
        it, rel = 1, np.inf
        while it <= it_max and rel > epsilon:
            err = err_new
            YB = np.zeros((n, d))
            BB = np.zeros((d, d))
            with single_threaded_blas():
                if usv is not None:
                    uu, ss, dd = usv
                    Xu = Xc.T @ uu  # (d, K')
                    UtX = (uu * dd).T @ Xc  # (K', d)
                for a, b, Yb in _blocks(src, batch_snps):
                    P = Yb.T @ Xc  # (b, d)
                    if usv is not None:
                        Vb = (Yb.T @ uu - B[a:b] @ Xu) / ss
                        P = P - Vb @ UtX
                    Bb = _soft(P @ R0, lam_k)
                    B[a:b] = Bb
                    YB += Yb @ Bb
                    BB += Bb.T @ Bb
                XYB = Xc @ YB.T
                GA = G - XYB - XYB.T + Xc @ BB @ Xc.T
                sv, uv = _top_eigen(GA, K + 2)
            dd_all = sv - gamma
            keep = dd_all > 0.0
            if not keep.any():
                raise InputError(f"no singular value of Y - XB' exceeds gamma = {gamma:g}: K={K} is too large")
            usv = (uv[:, keep], sv[keep], dd_all[keep])
            err_new = (
                float(np.trace(GA)) - 2.0 * float(np.sum(sv[keep] * dd_all[keep])) + float(np.sum(dd_all[keep] ** 2))
            )
            rel = abs(err_new - err) / err if err > 0 else 0.0
            it += 1
        iterations.append(it - 1)
        nz = float(np.mean(B != 0.0))
        log.debug("lfmm lasso: lambda %.6g, %d iterations, non-zero share %.4g", lam_k, it - 1, nz)
        if lam is None and nz > nozero_prop:
            break
    assert usv is not None
    uu, ss, dd = usv
    Xu = Xc.T @ uu
    V = np.empty((p, uu.shape[1]))
    with single_threaded_blas():
        for a, b, Yb in _blocks(src, batch_snps):
            V[a:b] = (Yb.T @ uu - B[a:b] @ Xu) / ss
    nz = float(np.mean(B != 0.0))
    log.info("lfmm lasso: K'=%d, lambda %.6g, non-zero share %.4g, gamma %.6g", uu.shape[1], last, nz, gamma)
    return LassoResult(
        B=B,
        U=np.ascontiguousarray(uu * dd),
        V=V,
        lam=float(last),
        gamma=float(gamma),
        lambda_range=path,
        nozero_prop=nz,
        iterations=iterations,
        x_names=names,
        sample_ids=src.sample_ids,
        source=src,
    )
