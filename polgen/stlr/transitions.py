"""Transition vectors: where a perturbation pushes each cell, on the tissue or a 2-D embedding.

SpaceTravLR (0.1.21, ``Cartography.compute_transition_vector_field`` with velocyto's correlation,
as CellOracle does it) estimates, for every cell, a direction on a 2-D layout from its simulated
expression change ``delta = round(perturbed - expression, 3) * rescale``:

1. the ``n_neighbors`` nearest cells on the layout (the cell itself among them);
2. ``corr[i, j]``: Pearson correlation of ``X[j] - X[i]`` with ``delta[i]`` for each neighbour
   (a cell whose change or difference is constant gets 1);
3. transition probabilities ``P[i, j] = exp(corr / T) / sum`` over the neighbours other than the
   cell; with ``remove_null`` the same probabilities with no change (uniform over the
   neighbours) are subtracted;
4. the vector ``V[i] = sum_j P[i, j] (E[j] - E[i])`` (``unit_vectors``: of unit differences).

The frame :func:`transitions` returns (``CellID, x, y, dx, dy``; ``cluster`` when the tissue has
clusters) is what :func:`polgen.plot.transitions` draws (it averages over a grid as the
reference's quiver plot does).  Correlations and projections are numba kernels
(:mod:`polgen.kernels.stlr_transitions`), O(cells x neighbours x genes), never the reference's
cells x cells matrices.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import polars as pl

from polgen.errors import InputError, SchemaError
from polgen.kernels.stlr_transitions import delta_corr, project
from polgen.schema import CELL_ID
from polgen.stlr.tissue import as_tissue

log = logging.getLogger("polgen")

TRANSITION_COLUMNS = (CELL_ID, "x", "y", "dx", "dy")


def _perturbed_matrix(perturbed: Any, obs_names: list[str], var_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """The simulated expression (cells x genes) aligned to the tissue's cells and genes."""
    if isinstance(perturbed, pl.LazyFrame):
        perturbed = perturbed.collect()
    if not isinstance(perturbed, pl.DataFrame):
        raise InputError(f"perturbed must be the frame stlr.perturb returns, not a {type(perturbed).__name__}")
    if CELL_ID not in perturbed.columns:
        raise SchemaError(f"perturbed lacks the {CELL_ID} column; columns: {perturbed.columns[:10]}")
    genes = [c for c in perturbed.columns if c != CELL_ID]
    unknown = [g for g in genes if g not in set(var_names)]
    if unknown:
        raise InputError(
            f"{len(unknown)} gene(s) of the perturbation are not in the data: {unknown[:10]}", column=unknown[0]
        )
    ids = perturbed[CELL_ID].cast(pl.String).to_list()
    pos = {c: i for i, c in enumerate(ids)}
    if len(pos) != len(ids):
        raise InputError("perturbed has duplicate CellIDs", column=CELL_ID)
    missing = [c for c in obs_names if c not in pos]
    if missing:
        raise InputError(f"{len(missing)} cell(s) of the data missing from perturbed: {missing[:5]}", column=CELL_ID)
    rows = np.fromiter((pos[c] for c in obs_names), dtype=np.int64, count=len(obs_names))
    vals = perturbed.select(genes).to_numpy().astype(np.float64)[rows]
    if not np.isfinite(vals).all():
        r, c = np.argwhere(~np.isfinite(vals))[0]
        raise InputError("perturbed holds NaN/inf", column=genes[c], row=obs_names[r])
    return vals, genes


def transitions(
    adata: Any,
    perturbed: Any,
    *,
    embedding: str | np.ndarray | None = None,
    n_neighbors: int = 200,
    temperature: float = 0.05,
    remove_null: bool = True,
    unit_vectors: bool = False,
    rescale: float = 1.0,
    decimals: int | None = 3,
    layer: str | None = None,
    cluster_key: str | None = None,
    spatial_key: str | None = None,
) -> pl.DataFrame:
    """Per-cell transition vectors of a perturbation (module docstring).

    Parameters
    ----------
    adata
        The tissue (AnnData, .h5ad path, SpatialData, Tissue) the perturbation ran on; its
        expression (``layer``, default ``imputed_count`` when present, as the reference) is the
        starting point.
    perturbed
        The frame :func:`polgen.stlr.perturb` returns (``CellID`` + one column per gene); genes it
        omits keep their expression.
    embedding
        The 2-D layout: None = the tissue coordinates, an ``obsm`` key (e.g. ``"X_umap"``) of an
        AnnData holding two columns, or a (cells, 2) array in the tissue's cell order.  3-D layouts
        (x, y, z of serial sections, a 3-column embedding) are refused with an InputError: the
        reference's 3-D vectors are not drawn here, and 3-D tissue coordinates are refused when
        the tissue is read (:mod:`polgen.io.spatial`).
    n_neighbors, temperature, remove_null, unit_vectors, rescale, decimals
        The reference's ``n_neighbors`` (200; 150 in its vector-field plot), ``T`` (0.05),
        ``remove_null``, ``normalize``, ``rescale`` and the rounding of the change to 3 decimals
        (None: no rounding).

    Returns
    -------
    polars.DataFrame
        ``CellID, x, y, dx, dy`` (+ ``cluster``): the layout position and vector of every cell.

    Raises
    ------
    InputError
        Genes or cells of ``perturbed`` that do not match the data, NaN values, an embedding of
        the wrong shape (not 2 columns), ``n_neighbors`` < 2, a non-positive temperature.
    """
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 2:
        raise InputError(f"n_neighbors must be an integer >= 2, got {n_neighbors!r}")
    for name, v in (("temperature", temperature), ("rescale", rescale)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"{name} must be a finite number, got {v!r}")
    if temperature <= 0:
        raise InputError(f"temperature must be > 0, got {temperature!r}")
    t = as_tissue(adata, layer=layer, cluster_key=cluster_key, spatial_key=spatial_key, need_clusters=False)
    E = _embedding(adata, embedding, t.coords, len(t.obs_names))
    P, genes = _perturbed_matrix(perturbed, t.obs_names, t.var_names)
    X = np.ascontiguousarray(t.X, dtype=np.float64)
    D = np.zeros_like(X)
    gi = t.gene_index(genes)
    D[:, gi] = P - X[:, gi]
    if decimals is not None:
        D = np.round(D, decimals)
    D = np.ascontiguousarray(D * float(rescale))
    n = X.shape[0]
    k = min(int(n_neighbors), n)
    nbr = knn(E, k)
    corr = np.empty(nbr.shape)
    delta_corr(X, D, nbr, corr)
    V = np.empty((n, 2))
    project(E, nbr, corr, float(temperature), bool(remove_null), bool(unit_vectors), V)
    cols: dict[str, Any] = {CELL_ID: t.obs_names, "x": E[:, 0], "y": E[:, 1], "dx": V[:, 0], "dy": V[:, 1]}
    if t.clusters is not None and t.cluster_labels is not None:
        cols["cluster"] = [t.cluster_labels[c] for c in t.clusters]
    log.info("stlr transitions: %d cells, %d neighbours, %d changed genes", n, k, int((D != 0).any(0).sum()))
    return pl.DataFrame(cols)


def knn(E: np.ndarray, k: int) -> np.ndarray:
    """Indices (cells, k) of each cell's ``k`` nearest cells on the layout ``E`` (itself included)."""
    from scipy.spatial import cKDTree

    _, idx = cKDTree(E).query(E, k=k)
    return np.ascontiguousarray(np.asarray(idx, dtype=np.int64).reshape(len(E), k))


def _embedding(adata: Any, embedding: Any, coords: np.ndarray, n: int) -> np.ndarray:
    if embedding is None:
        E = np.asarray(coords, dtype=np.float64)
    elif isinstance(embedding, str):
        obsm = getattr(adata, "obsm", None)
        if obsm is None or embedding not in obsm:
            raise InputError(f"embedding {embedding!r} is not an obsm key of the data", column=embedding)
        E = np.asarray(obsm[embedding], dtype=np.float64)
    else:
        E = np.asarray(embedding, dtype=np.float64)
    if E.ndim != 2 or E.shape[0] != n or E.shape[1] < 2:
        raise InputError(f"the embedding must be (cells={n}, 2), got shape {E.shape}")
    if E.shape[1] > 2:
        name = embedding if isinstance(embedding, str) else "embedding"
        raise InputError(
            f"the embedding {name!r} has {E.shape[1]} columns: transition vectors are drawn on a 2-D layout "
            "(the reference would find neighbours and project in all of them); pass two columns, e.g. "
            f"embedding=adata.obsm[{name!r}][:, :2]",
            column=name,
        )
    E = np.ascontiguousarray(E)
    if not np.isfinite(E).all():
        raise InputError("the embedding holds NaN/inf", row=int(np.flatnonzero(~np.isfinite(E).all(1))[0]))
    return E
