"""Genetic offset / genetic gap (R LEA ``genetic.offset`` / ``genetic.gap``), streamed from a .bed.

For the effect sizes ``B`` (p x d) of an LFMM2 ridge fit of the genotypes on the environment
(LEA's ``lfmm2(..., effect.sizes = TRUE)@B``, averaged over the fits when ``K`` is a list) and the
change of environment ``Delta = X_new - X_pred`` (m x d), each row (individual or location) gets

* ``OFFSET = sum_l ((Delta B')_{i l})^2 / p_c``  (LEA's ``offset``, the genetic gap), and
* ``DISTANCE = sum_l |(Delta B')_{i l}| / p_c``  (LEA's ``distance``, RONA-like),

over the ``p_c`` candidate loci, plus the eigenvalues and eigenvectors of ``cov(B)`` (the
loci-weighted directions of environmental change).  ``X_new`` defaults to the environment the
model is fitted on; ``scale=True`` standardises all three tables by that environment's means and
standard deviations (and the fit uses the standardised environment, as LEA).

``B`` is never held: since every fit's ridge effect of a SNP is a linear functional of the
centred genotypes (``B_l = W' y_l``, see :func:`polgen.lfmm.assoc.projection`), the average over
the ``K`` values is ``mean_k W_k' y_l``, one ``(n, d)`` matrix.  One streamed pass over the
candidate SNPs computes ``B`` block by block and accumulates the two row sums and a pairwise
(Chan) update of the mean and scatter of ``B``, so memory is flat in the number of SNPs.

Differences from R LEA: missing genotype calls are mean-imputed (LEA refuses them); the fit is
:func:`polgen.lfmm.fit`'s converged randomized SVD (``tol``), which equals LEA's exact SVD to
~1e-9 relative in OFFSET on LEA's ``offset_example`` (tests/lfmm/test_lfmm_offset.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from polgen._blas import single_threaded_blas
from polgen.errors import InputError, SchemaError
from polgen.lfmm.assoc import projection
from polgen.lfmm.covariates import ID_COLUMNS, covariate_matrix
from polgen.lfmm.fit import fit
from polgen.lfmm.genotypes import cache_block_snps, default_threads, open_source, split_range

log = logging.getLogger("polgen")


@dataclass
class GeneticOffsetResult:
    """Output of :func:`genetic_offset` / :func:`genetic_gap`.

    Attributes
    ----------
    frame : one row per row of ``pred_env``: ``IID`` (the ids of ``pred_env``, else of ``new_env``,
        else of the genotype samples when the rows are the individuals, else the 1-based row
        number), ``OFFSET`` and ``DISTANCE`` (LEA's ``offset`` and ``distance``).
    eigenvalues : (d,) eigenvalues of ``cov(B)``, decreasing (LEA's ``eigenvalues``).
    eigenvectors : (d, d) the matching unit eigenvectors in columns (LEA's ``vectors``; each is
        defined up to its sign).
    variables : the environmental variable names, in the order of ``eigenvectors``' rows.
    K : the numbers of latent factors whose effect sizes were averaged.
    n_loci : the number of candidate loci ``p_c``.
    models : the fitted :class:`~polgen.lfmm.LfmmModel` of each K.
    """

    frame: pl.DataFrame
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    variables: list[str]
    K: tuple[int, ...]
    n_loci: int
    models: list[Any] = field(default_factory=list, repr=False)

    def eigen_frame(self) -> pl.DataFrame:
        """The eigen decomposition as a table: ``COMPONENT`` (1-based), ``EIGENVALUE`` and one
        ``VECTOR_<variable>`` column per variable (the component's eigenvector)."""
        data: dict[str, Any] = {
            "COMPONENT": np.arange(1, self.eigenvalues.size + 1, dtype=np.int64),
            "EIGENVALUE": self.eigenvalues,
        }
        for j, v in enumerate(self.variables):
            data[f"VECTOR_{v}"] = self.eigenvectors[j, :]
        return pl.DataFrame(data)


def _k_values(K: Any, n: int) -> tuple[int, ...]:
    ks = list(K) if isinstance(K, (list, tuple, np.ndarray)) else [K]
    if not ks:
        raise InputError("K must be a number of latent factors or a non-empty list of them")
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise InputError(f"K must be an integer or a list of integers, got {k!r}")
        if not 1 <= int(k) < n:
            raise InputError(f"K must satisfy 1 <= K < n_samples = {n}, got K={int(k)}")
        out.append(int(k))
    return tuple(out)


def _env_table(obj: Any, table: str, names: list[str]) -> tuple[np.ndarray, list[str] | None]:
    """An environment table with the variables ``names``: ``(values (m, d), ids or None)``.

    A frame must have exactly the columns ``names`` (by name, any order) besides ``FID``/``IID``;
    an array must have ``d`` columns in ``env``'s order.  Missing values are errors naming the
    table, column and row."""
    if isinstance(obj, pl.LazyFrame):
        obj = obj.collect()
    if isinstance(obj, pl.DataFrame):
        value_cols = [c for c in obj.columns if c not in ID_COLUMNS]
        missing = [c for c in names if c not in value_cols]
        if missing:
            raise SchemaError(f"{table} lacks the environmental variable(s) {missing} of env", column=missing[0])
        extra = [c for c in value_cols if c not in names]
        if extra:
            raise SchemaError(f"{table} has variable(s) {extra} that env does not have", column=extra[0])
        bad = [c for c in names if not obj.schema[c].is_numeric()]
        if bad:
            raise SchemaError(f"{table} column is not numeric", column=bad[0])
        ids = obj["IID"].cast(pl.String).to_list() if "IID" in obj.columns else None
        if ids is not None and len(set(ids)) != len(ids):
            raise InputError(f"{table} has duplicated sample ids", column="IID")
        arr = obj.select(pl.col(c).cast(pl.Float64) for c in names).to_numpy()
        cols = names
    else:
        arr = np.asarray(obj, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[1] != len(names):
            raise InputError(f"{table} must have {len(names)} columns like env ({names}), got shape {arr.shape}")
        ids, cols = None, names
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    bad_cells = ~np.isfinite(arr)
    if bad_cells.any():
        r, c = np.argwhere(bad_cells)[0]
        raise InputError(
            f"{table} contains missing or non-finite values ({int(bad_cells.sum())} cells)", column=cols[c], row=int(r)
        )
    if arr.shape[0] == 0:
        raise InputError(f"{table} has no rows")
    return arr, ids


def _align(values: np.ndarray, ids: list[str], want: list[str], table: str, other: str) -> np.ndarray:
    pos = {s: i for i, s in enumerate(ids)}
    absent = [s for s in want if s not in pos]
    if absent:
        raise InputError(
            f"{len(absent)} row(s) of {other} have no row in {table} (ids {', '.join(absent[:5])})", column="IID"
        )
    return values[[pos[s] for s in want]]


def _candidates(candidate_loci: Any, p: int) -> np.ndarray | None:
    if candidate_loci is None:
        return None
    idx = np.asarray(candidate_loci)
    if idx.dtype == bool:
        if idx.size != p:
            raise InputError(f"candidate_loci as a mask must have one entry per SNP ({p}), got {idx.size}")
        idx = np.flatnonzero(idx)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise InputError("candidate_loci must be a non-empty list of 0-based .bim row indices (integers)")
    out = np.flatnonzero((idx < 0) | (idx >= p))
    if out.size:
        raise InputError(
            f"candidate_loci out of range: {int(idx[out[0]])} (the .bed has {p} SNPs, indices 0..{p - 1})",
            row=int(out[0]),
        )
    if np.unique(idx).size != idx.size:
        raise InputError("candidate_loci has duplicated indices")
    return np.sort(idx.astype(np.int64))


def _stream_offset(src, Wbar: np.ndarray, delta: np.ndarray, block_snps: int, threads: int):
    """One pass: row sums of ``(delta B')^2`` and ``|delta B'|`` and the mean/scatter of B."""
    m, d = delta.shape
    DT = np.ascontiguousarray(delta.T)  # (d, m)

    def run(a: int, b: int):
        sq = np.zeros(m)
        ab = np.zeros(m)
        cnt, mean, scat = 0, np.zeros(d), np.zeros((d, d))
        for blk in src.blocks(a, b, block_snps=block_snps, parallel=False):
            B = blk.data.T @ Wbar  # (b, d)
            G = B @ DT  # (b, m)
            sq += np.einsum("ij,ij->j", G, G)
            ab += np.abs(G).sum(axis=0)
            k = B.shape[0]
            mb = B.mean(axis=0)
            C = B - mb
            tot = cnt + k
            delta_m = mb - mean
            scat += C.T @ C + np.outer(delta_m, delta_m) * (cnt * k / tot)
            mean = mean + delta_m * (k / tot)
            cnt = tot
        return sq, ab, cnt, mean, scat

    pieces = split_range(0, src.n_snps, threads)
    with single_threaded_blas():
        if len(pieces) == 1:
            parts = [run(*pieces[0])]
        else:
            with ThreadPoolExecutor(len(pieces)) as pool:
                parts = [f.result() for f in [pool.submit(run, a, b) for a, b in pieces]]
    sq, ab, cnt, mean, scat = parts[0]
    for psq, pab, pc, pm, ps in parts[1:]:
        sq, ab = sq + psq, ab + pab
        tot = cnt + pc
        dm = pm - mean
        scat = scat + ps + np.outer(dm, dm) * (cnt * pc / tot)
        mean = mean + dm * (pc / tot)
        cnt = tot
    return sq, ab, cnt, scat


def genetic_offset(
    bed: Any,
    env: Any,
    pred_env: Any,
    *,
    new_env: Any = None,
    K: int | Sequence[int],
    scale: bool = False,
    candidate_loci: Sequence[int] | np.ndarray | None = None,
    lam: float = 1e-5,
    tol: float = 1e-9,
    max_power_iter: int = 40,
    seed: int = 0,
    batch_snps: int | None = None,
    threads: int | None = None,
    progress: bool | None = None,
) -> GeneticOffsetResult:
    """Genetic offset of each individual / location under an environmental change (R LEA
    ``genetic.offset``).

    Parameters
    ----------
    bed : PLINK .bed path (or prefix), or an (n, p) dosage array (NaN = missing, mean-imputed).
    env : the environment of the genotyped samples: a frame with ``IID`` (aligned to the .fam) and
        numeric variable columns, or an (n, d) array in .fam order (LEA's ``env``).
    pred_env : the predicted environment (LEA's ``pred.env``), m rows: a frame with the same
        variable columns (by name; an ``IID`` column keys the rows) or an (m, d) array.  Without
        ``new_env`` its rows are the genotyped individuals: matched to ``env`` by ``IID``, or in
        .fam order (m = n) when it has no ids.
    new_env : the current environment of the m rows (LEA's ``new.env``; default ``env``).
    K : number of latent factors, or a list of them: the effect sizes are then averaged over one
        fit per K (as LEA).
    scale : standardise ``env``, ``pred_env`` and ``new_env`` by ``env``'s column means and
        standard deviations (R's ``sd``, n - 1) before fitting (LEA's ``scale``).
    candidate_loci : 0-based .bim row indices (or a boolean mask over the SNPs) of the loci the
        offset is averaged over (LEA's 1-based ``candidate.loci`` minus one); default all SNPs.
        The fit always uses all SNPs, as LEA's.
    lam : ridge penalty of the fit (LEA's ``lambda``).
    tol, max_power_iter, seed : passed to :func:`polgen.lfmm.fit` (a tighter default ``tol`` than
        the fit's, since LEA's exact SVD is the reference).
    batch_snps : SNPs per decoded block (default: cache-sized).  threads : threads of the pass
        (default: one per core).  progress : progress bars of the fits.

    Returns
    -------
    GeneticOffsetResult
        ``frame`` (``IID``, ``OFFSET``, ``DISTANCE``), ``eigenvalues``/``eigenvectors`` of
        ``cov(B)``, ``eigen_frame()``.
    """
    src_all = open_source(bed, scale="center", block_snps=batch_snps or None)
    n, p = src_all.n_samples, src_all.n_snps
    ks = _k_values(K, n)
    if not isinstance(scale, (bool, np.bool_)):
        raise InputError(f"scale must be True or False, got {scale!r}")
    if not (isinstance(lam, (int, float, np.floating)) and not isinstance(lam, bool) and 0 < lam < np.inf):
        raise InputError(f"the ridge penalty lam must be a positive finite number, got {lam!r}")
    cand = _candidates(candidate_loci, p)
    fids = src_all.fam["FID"].cast(pl.String).to_list() if hasattr(src_all, "fam") else None
    try:
        X, names = covariate_matrix(env, src_all.sample_ids, n, fids)
    except InputError as exc:
        raise type(exc)(f"env: {exc.message}", path=exc.path, column=exc.column, row=exc.row) from None
    if X.shape[1] > n:
        raise InputError(f"env has more variables ({X.shape[1]}) than samples ({n})")
    Xp, pred_ids = _env_table(pred_env, "pred_env", names)
    sample_ids = src_all.sample_ids
    ids: list[str] | None
    if new_env is None:
        if pred_ids is not None and sample_ids is not None:
            Xn = _align(X, list(sample_ids), pred_ids, "the genotype samples", "pred_env")
            ids = pred_ids
        elif Xp.shape[0] != n:
            raise InputError(
                f"pred_env has {Xp.shape[0]} rows but there are {n} genotyped samples (give IIDs or new_env)"
            )
        else:
            Xn = X
            ids = pred_ids or (list(sample_ids) if sample_ids is not None else None)
    else:
        Xn, new_ids = _env_table(new_env, "new_env", names)
        if pred_ids is not None and new_ids is not None:
            Xn = _align(Xn, new_ids, pred_ids, "new_env", "pred_env")
        elif Xn.shape[0] != Xp.shape[0]:
            raise InputError(f"new_env has {Xn.shape[0]} rows but pred_env has {Xp.shape[0]}")
        ids = pred_ids or new_ids
    if ids is None:
        ids = [str(i + 1) for i in range(Xp.shape[0])]
    Xfit = X
    if scale:
        mu = X.mean(axis=0)
        sd = X.std(axis=0, ddof=1)
        flat = np.flatnonzero(~(sd > 0))
        if flat.size:
            raise InputError("scale=True: env variable has no variance", column=names[int(flat[0])])
        Xfit, Xn, Xp = (X - mu) / sd, (Xn - mu) / sd, (Xp - mu) / sd
    models = []
    Wbar = np.zeros((n, len(names)))
    for k in ks:
        model = fit(
            Xfit,
            src_all,
            k,
            lam=lam,
            tol=tol,
            max_power_iter=max_power_iter,
            seed=seed,
            batch_snps=batch_snps,
            progress=progress,
        )
        model.x_names = list(names)
        with single_threaded_blas():
            proj = projection(model, Xfit, names)
        Wbar += proj.Tt[k + len(names) :].T
        models.append(model)
    Wbar = np.ascontiguousarray(Wbar / len(ks))
    src = (
        open_source(src_all, snps=cand, scale="center", block_snps=batch_snps or None) if cand is not None else src_all
    )
    delta = np.ascontiguousarray(Xn - Xp)
    bs = batch_snps or cache_block_snps(n)
    sq, ab, cnt, scat = _stream_offset(src, Wbar, delta, bs, threads or default_threads())
    pc = int(cnt)
    cov = scat / (pc - 1) if pc > 1 else np.full_like(scat, np.nan)
    if pc > 1:
        w, V = np.linalg.eigh(0.5 * (cov + cov.T))
        w, V = w[::-1], np.ascontiguousarray(V[:, ::-1])
    else:
        w, V = np.full(len(names), np.nan), np.full((len(names), len(names)), np.nan)
    frame = pl.DataFrame({"IID": ids, "OFFSET": sq / pc, "DISTANCE": ab / pc}, schema_overrides={"IID": pl.String})
    log.info("lfmm genetic offset: %d rows, %d loci, K=%s, scale=%s", frame.height, pc, list(ks), bool(scale))
    return GeneticOffsetResult(frame, w, V, list(names), ks, pc, models)


def genetic_gap(
    bed: Any,
    env: Any,
    pred_env: Any,
    *,
    new_env: Any = None,
    K: int | Sequence[int],
    scale: bool = False,
    candidate_loci: Sequence[int] | np.ndarray | None = None,
    lam: float = 1e-5,
    tol: float = 1e-9,
    max_power_iter: int = 40,
    seed: int = 0,
    batch_snps: int | None = None,
    threads: int | None = None,
    progress: bool | None = None,
) -> GeneticOffsetResult:
    """The genetic gap (R LEA ``genetic.gap``, LEA's newer name of ``genetic.offset``: the same
    computation and result).  See :func:`genetic_offset` for the parameters."""
    return genetic_offset(
        bed,
        env,
        pred_env,
        new_env=new_env,
        K=K,
        scale=scale,
        candidate_loci=candidate_loci,
        lam=lam,
        tol=tol,
        max_power_iter=max_power_iter,
        seed=seed,
        batch_snps=batch_snps,
        threads=threads,
        progress=progress,
    )


def write_offset(result: GeneticOffsetResult, path: str | os.PathLike) -> None:
    """Write ``result.frame`` to ``path`` (parquet, atomically) with the eigen results and K in
    its metadata."""
    import json

    from polgen.io.sink import write_table_atomic

    meta = {
        "polgen.lfmm.offset": json.dumps(
            {
                "K": list(result.K),
                "n_loci": result.n_loci,
                "variables": result.variables,
                "eigenvalues": [float(v) for v in result.eigenvalues],
                "eigenvectors": [[float(v) for v in row] for row in result.eigenvectors],
            }
        )
    }
    write_table_atomic(path, result.frame, metadata=meta)
