"""From raw counts to a tissue SpaceTravLR can train on: the setup steps of the reference's notebooks.

:func:`prepare` takes an AnnData of raw counts (cells x genes in ``X``) and adds

* ``layers["raw_count"]``: the counts as given;
* ``layers["normalized_count"]``: ``log1p(counts / cell total * target_sum)`` (scanpy's
  ``normalize_total`` + ``log1p``, the layer the reference's ``BaseTravLR`` asserts and reads
  receptor levels from);
* ``layers["imputed_count"]``: CellOracle's kNN smoothing of ``normalized_count`` (the reference's
  ``knn_imputation(method="CellOracle", balanced=False)``): PCA of the centred ``normalized_count``
  with the reference's component rule (:func:`reference_n_components`, at most 50), each cell's
  ``k`` nearest cells in that space (``k = int(0.025 * n_cells)``, at least 1, excluding itself),
  a self weight ``diag = 1``, rows normalised to sum 1, imputed = W @ normalized_count.
  ``impute="magic"``: MAGIC (van Dijk et al. 2018), the reference's default (``BaseTravLR`` calls
  ``magic.MAGIC().fit_transform(normalized_count, genes="all_genes")``, magic-impute 3.0):
  :func:`magic_impute` with its defaults - PCA to 100 components, adaptive-bandwidth alpha-decay
  kernel over the 15 nearest cells (bandwidth: 5th nearest), symmetrised, Markov-normalised,
  diffused t = 3 steps over every gene.  The PCA is exact here and randomized (unseeded) in
  magic-impute, whose outputs therefore differ from run to run by about as much as from polgen's;
  with an exact PCA (or none, <= 100 genes) they agree to 1e-8 (the float32 affinities of
  graphtools).  ``impute="none"`` copies ``normalized_count``;
* ``obs[cluster_key]``: clusters when none are given (no ``cluster_key`` column, and with
  ``cluster_key=None`` none of the columns training looks for, e.g. ``cell_type``, ``leiden``) -
  k-means (k-means++ starts, ``seed``) on the same principal components; ``n_clusters`` None
  picks ``round(sqrt(n_cells / 5))`` in [2, 10];
* ``obsm["spatial"]``: coordinates from ``obsm[spatial_key]``, a pair of obs columns, or the first
  of obsm ``spatial`` / ``X_spatial`` / ``spatial_loc`` or obs ``x``/``y``, ``array_col``/``array_row``;
* ``uns["stlr_prepare"]``: the parameters.

Bad input is a typed error: NaN / inf / negative counts, duplicated gene or cell names, no
coordinates (:class:`~polgen.errors.InputError`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from polgen.errors import InputError
from polgen.options import StlrImpute, check_option

log = logging.getLogger("polgen")

RAW_LAYER = "raw_count"
NORM_LAYER = "normalized_count"
IMPUTED_LAYER = "imputed_count"
CLUSTER_KEY = "stlr_cluster"
OBS_XY = (("x", "y"), ("array_col", "array_row"), ("X", "Y"))
OBSM_KEYS = ("spatial", "X_spatial", "spatial_loc")
MAX_PCS = 50
#: k-means clusters smaller than this are reported by prepare (too few cells for a model)
MIN_CLUSTER_CELLS = 5


def _duplicates(names: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    dups: set[str] = set()
    for n in names:
        (dups if n in seen else seen).add(n)
    return sorted(dups)


def _dense_counts(adata) -> np.ndarray:
    X = adata.X
    if X is None:
        raise InputError("the AnnData has no X (raw counts expected in X)")
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    try:
        X = np.ascontiguousarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"X must hold numbers, got dtype {X.dtype}") from None
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise InputError(
            f"raw counts hold {int(bad.sum())} NaN/inf value(s)",
            column=str(adata.var_names[c]),
            row=str(adata.obs_names[r]),
        )
    if (X < 0).any():
        r, c = np.argwhere(X < 0)[0]
        raise InputError("raw counts must be >= 0", column=str(adata.var_names[c]), row=str(adata.obs_names[r]))
    return X


def _coordinates(adata, spatial_key) -> np.ndarray:
    if spatial_key is None:
        key = next((k for k in OBSM_KEYS if k in adata.obsm), None)
        if key is None:
            pair = next((p for p in OBS_XY if p[0] in adata.obs.columns and p[1] in adata.obs.columns), None)
            if pair is None:
                raise InputError(
                    f"no spatial coordinates: none of obsm {list(OBSM_KEYS)} and no obs column pair "
                    f"{[list(p) for p in OBS_XY]} (obsm keys: {list(adata.obsm.keys())}); pass spatial_key= an "
                    "obsm key or a pair of obs columns",
                )
            spatial_key = pair
        else:
            spatial_key = key
    if isinstance(spatial_key, str):
        if spatial_key not in adata.obsm:
            raise InputError(f"spatial_key {spatial_key!r} not in obsm (keys: {list(adata.obsm.keys())})")
        xy = np.asarray(adata.obsm[spatial_key])
        if xy.ndim != 2 or xy.shape[1] < 2:
            raise InputError(f"obsm[{spatial_key!r}] must be (n_cells, 2), got shape {xy.shape}", column=spatial_key)
        xy = xy[:, :2]
    else:
        cols = list(spatial_key)
        missing = [c for c in cols if c not in adata.obs.columns]
        if len(cols) != 2 or missing:
            raise InputError(f"spatial_key as obs columns must name two obs columns (x, y); missing {missing}")
        xy = np.column_stack([adata.obs[c].to_numpy() for c in cols])
    try:
        xy = np.ascontiguousarray(xy, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"spatial coordinates ({spatial_key}) must be numbers") from None
    if not np.isfinite(xy).all():
        r = int(np.argwhere(~np.isfinite(xy))[0][0])
        raise InputError("spatial coordinates hold NaN/inf", row=str(adata.obs_names[r]))
    return xy


def normalize_log(counts: np.ndarray, target_sum: float = 1e4) -> np.ndarray:
    """``log1p(counts / row total * target_sum)``; cells with no counts stay 0."""
    tot = counts.sum(axis=1, keepdims=True)
    scale = np.divide(float(target_sum), tot, out=np.zeros_like(tot), where=tot > 0)
    return np.log1p(counts * scale)


def reference_n_components(explained_variance_ratio: np.ndarray) -> int:
    """The reference's ``perform_PCA`` component count: the first index where "the next component
    explains > 0.002" changes truth value (``np.where(np.diff(np.diff(np.cumsum(evr)) > 0.002))[0][0]``),
    at least 2, at most :data:`MAX_PCS`; all components when it never changes."""
    evr = np.asarray(explained_variance_ratio, dtype=np.float64)
    flags = np.diff(np.cumsum(evr)) > 0.002
    changes = np.flatnonzero(flags[1:] != flags[:-1])
    n = int(changes[0]) if changes.size else len(evr)
    return max(2, min(n, MAX_PCS, len(evr)))


def principal_components(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores, explained variance ratio) of the centred ``X`` (cells x genes), by SVD; signs fixed
    so each component's largest-|loading| gene is positive (deterministic)."""
    Xc = X - X.mean(axis=0)
    U, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    sign = np.sign(Vt[np.arange(Vt.shape[0]), np.abs(Vt).argmax(axis=1)])
    sign[sign == 0] = 1.0
    var = s**2
    tot = var.sum()
    evr = var / tot if tot > 0 else np.zeros_like(var)
    return U * s * sign, evr


def knn_weights(space: np.ndarray, k: int, diag: float = 1.0) -> np.ndarray:
    """Dense (cells x cells) smoothing weights: ``k`` nearest other cells (Euclidean, ties by index)
    with weight 1, the cell itself with ``diag``, each row divided by its sum (CellOracle's
    ``connectivity_to_weights``)."""
    from scipy.spatial import cKDTree

    n = space.shape[0]
    k = int(min(k, n - 1))
    W = np.zeros((n, n))
    if k > 0:
        _, idx = cKDTree(space).query(space, k=k + 1)
        idx = np.asarray(idx).reshape(n, k + 1)
        for i in range(n):  # n rows of k neighbours: O(n k)
            nb = [j for j in idx[i] if j != i][:k]
            W[i, nb] = 1.0
    W[np.arange(n), np.arange(n)] = diag
    return W / W.sum(axis=1, keepdims=True)


def magic_operator(
    X: np.ndarray,
    *,
    knn: int = 5,
    knn_max: int | None = None,
    decay: float = 1.0,
    n_pca: int | None = 100,
    thresh: float = 1e-4,
):
    """MAGIC's diffusion operator P (cells x cells, scipy CSR, rows sum to 1) of ``X`` (cells x genes).

    As magic-impute 3.0 / graphtools 2.1 build it: PCA to ``n_pca`` components when ``X`` has more
    genes (exact SVD of the centred matrix here, randomized there; at most the matrix rank), each
    cell's ``knn_max + 1`` (default ``3 knn + 1``) nearest cells in that space, itself included (graphtools
    asks for one more than given, the cell itself being the first), with affinity ``exp(-(d / bw)^decay)``
    where ``bw`` is the distance to its ``knn``-th nearest other cell, affinities below ``thresh``
    dropped; K symmetrised as (K + K') / 2 and P = K row-normalised.
    Memory O(n * knn_max) (kernel :func:`polgen.kernels.stlr_magic.knn_alpha_decay`)."""
    import scipy.sparse as sp

    from polgen.kernels.stlr_magic import knn_alpha_decay

    n, g = X.shape
    knn_max = 3 * knn if knn_max is None else knn_max
    for name, v in (("knn", knn), ("knn_max", knn_max)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"MAGIC {name} must be a whole number >= 1, got {v!r}")
    if not (math.isfinite(decay) and decay > 0) or not 0 <= thresh < 1:
        raise InputError(f"MAGIC decay must be > 0 and thresh in [0, 1), got {decay!r}, {thresh!r}")
    k_max = int(min(max(knn_max, knn) + 1, n))
    kk = int(min(knn + 1, n))
    if n_pca is not None and g > n_pca:
        Xc = X - X.mean(axis=0)
        U, s, _ = np.linalg.svd(Xc, full_matrices=False)
        r = int(min(n_pca, len(s)))
        Z = np.ascontiguousarray(U[:, :r] * s[:r])
    else:
        Z = np.ascontiguousarray(X, dtype=np.float64)
    idx, _dist, aff = knn_alpha_decay(Z, k_max, kk, float(decay), float(thresh))
    keep = (idx >= 0) & (aff > 0)
    rows = np.repeat(np.arange(n), k_max)[keep.ravel()]
    K = sp.csr_matrix((aff[keep], (rows, idx[keep])), shape=(n, n))
    K = ((K + K.T) * 0.5).tocsr()
    deg = np.asarray(K.sum(axis=1)).ravel()
    return sp.diags(1.0 / deg) @ K


def magic_impute(X: np.ndarray, *, t: int = 3, **params) -> np.ndarray:
    """MAGIC imputation (van Dijk et al. 2018) of ``X`` (cells x genes): ``P^t X`` with P from
    :func:`magic_operator` (``params``: knn, knn_max, decay, n_pca, thresh), every gene returned
    (magic-impute's ``solver="exact"``, ``genes="all_genes"``, the reference's call)."""
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
        raise InputError(f"MAGIC t must be a whole number >= 0, got {t!r}")
    P = magic_operator(X, **params)
    Y = np.ascontiguousarray(X, dtype=np.float64)
    for _ in range(int(t)):
        Y = P @ Y
    return np.asarray(Y)


def kmeans(X: np.ndarray, k: int, seed: int = 0, n_init: int = 10, max_iter: int = 300) -> np.ndarray:
    """Lloyd's k-means with k-means++ starts (best of ``n_init`` by inertia); labels 0..k-1 ordered by
    each cluster's first cell."""
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    best, best_inertia = None, math.inf
    for _ in range(n_init):
        centres = [X[rng.integers(n)]]
        for _c in range(1, k):
            d2 = np.min(((X[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
            tot = d2.sum()
            centres.append(X[rng.choice(n, p=d2 / tot)] if tot > 0 else X[rng.integers(n)])
        C = np.asarray(centres)
        lab = np.zeros(n, dtype=np.int64)
        for it in range(max_iter):
            d = ((X[:, None, :] - C[None]) ** 2).sum(-1)
            new = d.argmin(axis=1)
            if it and np.array_equal(new, lab):
                break
            lab = new
            for c in range(k):
                m = lab == c
                if m.any():
                    C[c] = X[m].mean(axis=0)
        inertia = float(((X - C[lab]) ** 2).sum())
        if inertia < best_inertia - 1e-12:
            best, best_inertia = lab.copy(), inertia
    assert best is not None
    _, first = np.unique(best, return_index=True)
    order = np.argsort(first)
    remap = np.empty(len(order), dtype=np.int64)
    remap[np.unique(best)[order]] = np.arange(len(order))
    return remap[best]


def prepare(
    adata,
    *,
    n_clusters: int | None = None,
    cluster_key: str | None = None,
    spatial_key: str | Sequence[str] | None = None,
    target_sum: float = 1e4,
    impute: StlrImpute = "knn",
    k: int | None = None,
    seed: int = 0,
    copy: bool = False,
):
    """Add the layers, clusters and coordinates SpaceTravLR trains on to an AnnData of raw counts.

    Parameters
    ----------
    adata: AnnData (or .h5ad path, read here) with raw counts in ``X``.
    n_clusters: clusters to make when ``cluster_key`` is None or absent from obs (None: chosen from
        the cell count); ignored when ``cluster_key`` names an existing obs column.
    cluster_key: an existing obs column of cluster labels, or the column to write (default
        ``"stlr_cluster"``); recorded in ``uns["stlr_prepare"]``, where ``fit`` / ``perturb`` find it
        when they are not given ``cluster_key``.
    spatial_key: obsm key or pair of obs columns with the coordinates (default: found).
    target_sum: counts per cell after normalisation.
    impute: "knn" (CellOracle's kNN smoothing, see the module docstring), "magic" (MAGIC, the
        reference's default) or "none".
    k: neighbours of the kNN smoothing (default ``int(0.025 * n_cells)``, at least 1); for "magic"
        its ``knn`` (default 5, with ``knn_max = 3 k``).
    seed: k-means seed.
    copy: work on a copy (else ``adata`` is changed in place).

    Returns
    -------
    The prepared AnnData (``adata`` itself unless ``copy``).
    """
    import anndata as ad
    import scipy.sparse as sp

    check_option("impute", impute, StlrImpute)
    if isinstance(adata, (str, bytes)) or hasattr(adata, "__fspath__"):
        adata = ad.read_h5ad(adata)
    elif not all(hasattr(adata, a) for a in ("obs", "var_names", "obsm", "layers", "X")):
        raise InputError(f"prepare needs an AnnData or a .h5ad path, got {type(adata).__name__}")
    elif copy:
        adata = adata.copy()
    if not (isinstance(target_sum, (int, float)) and math.isfinite(target_sum) and target_sum > 0):
        raise InputError(f"target_sum must be a positive number, got {target_sum!r}")
    var_names = [str(v) for v in adata.var_names]
    dups = _duplicates(var_names)
    if dups:
        raise InputError(
            f"{len(dups)} gene name(s) occur more than once in var_names: {dups[:10]}; make them unique "
            "(AnnData.var_names_make_unique()) or drop the duplicates",
            column=dups[0],
        )
    dcells = _duplicates([str(o) for o in adata.obs_names])
    if dcells:
        raise InputError(f"{len(dcells)} cell name(s) occur more than once in obs_names: {dcells[:10]}", row=dcells[0])
    n = adata.n_obs
    if n < 3:
        raise InputError(f"prepare needs at least 3 cells, got {n}")
    xy = _coordinates(adata, spatial_key)
    counts = _dense_counts(adata)
    if counts.sum(axis=1).min() <= 0:
        empty = [str(adata.obs_names[i]) for i in np.flatnonzero(counts.sum(axis=1) <= 0)[:5]]
        log.warning("stlr prepare: %d cell(s) have no counts (e.g. %s); their expression stays 0", len(empty), empty)
    norm = normalize_log(counts, target_sum)
    pcs, evr = principal_components(norm)
    n_pcs = reference_n_components(evr)
    space = pcs[:, :n_pcs]
    if impute == "knn":
        kk = max(1, int(n * 0.025)) if k is None else int(k)
        if kk < 1:
            raise InputError(f"k must be >= 1, got {k!r}")
        imputed = knn_weights(space, kk) @ norm
    elif impute == "magic":
        kk = 5 if k is None else int(k)  # magic.MAGIC()'s knn, the reference's call
        if kk < 1:
            raise InputError(f"k must be >= 1, got {k!r}")
        imputed = magic_impute(norm, knn=kk, knn_max=3 * kk)
    else:
        kk = 0
        imputed = norm.copy()
    adata.layers[RAW_LAYER] = adata.X.copy() if sp.issparse(adata.X) else np.asarray(adata.X).copy()
    adata.layers[NORM_LAYER] = norm
    adata.layers[IMPUTED_LAYER] = imputed
    adata.obsm["spatial"] = xy
    from polgen.io.spatial import CLUSTER_KEYS

    if cluster_key is None:  # an existing cluster column (the one training would pick) is kept
        lower = {str(c).lower(): str(c) for c in adata.obs.columns}
        key = next((lower[c] for c in CLUSTER_KEYS if c in lower), CLUSTER_KEY)
    else:
        key = cluster_key
    made = False
    if key not in adata.obs.columns:
        if n_clusters is None:
            n_clusters = int(min(10, max(2, round(math.sqrt(n / 5)))))
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or not 1 <= n_clusters <= n:
            raise InputError(f"n_clusters must be a whole number in [1, {n}], got {n_clusters!r}")
        lab = kmeans(space, int(n_clusters), seed=seed) if n_clusters > 1 else np.zeros(n, dtype=np.int64)
        import pandas as pd

        adata.obs[key] = pd.Categorical([str(v) for v in lab], categories=[str(i) for i in range(int(n_clusters))])
        made = True
        sizes = np.bincount(lab, minlength=int(n_clusters))
        log.info("stlr prepare: %d k-means clusters in obs[%r], sizes %s", n_clusters, key, sizes.tolist())
        small = np.flatnonzero(sizes < MIN_CLUSTER_CELLS)
        if small.size:  # e.g. the near-empty spots of the Stahl 2016 olfactory bulb (2 and 4 counts)
            tot = counts.sum(axis=1)
            log.warning(
                "stlr prepare: k-means made %d cluster(s) of fewer than %d cells (sizes %s; their cells' median "
                "total count %.4g vs %.4g overall): no model can be trained there - drop low-count cells "
                "before prepare, or pass n_clusters= or cluster_key=",
                small.size,
                MIN_CLUSTER_CELLS,
                sizes[small].tolist(),
                float(np.median(tot[np.isin(lab, small)])),
                float(np.median(tot)),
            )
    elif adata.obs[key].isna().any():
        r = int(np.flatnonzero(adata.obs[key].isna().to_numpy())[0])
        raise InputError("cluster label missing", column=key, row=str(adata.obs_names[r]))
    adata.uns["stlr_prepare"] = {
        "target_sum": float(target_sum),
        "impute": impute,
        "k": int(kk),
        "n_pcs": int(n_pcs),
        "cluster_key": key,
        "clusters_made": bool(made),
        "n_clusters": int(adata.obs[key].nunique()),
        "seed": int(seed),
    }
    return adata
