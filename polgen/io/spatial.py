"""Spatial transcriptomics (AnnData / .h5ad) into plain arrays for the SpaceTravLR kernels.

:func:`read_spatial` takes a ``.h5ad`` path or an in-memory ``AnnData`` and returns a
:class:`SpatialData`: expression (``X`` or a layer; dense C-contiguous float64, or CSR float64 when
stored sparse — a sparse matrix is only densified when ``dense=True`` is asked), spatial
coordinates (``obsm["spatial"]`` / ``["X_spatial"]`` / ``["spatial_loc"]``, a given ``obsm`` key, or
two given ``obs`` columns; an ``obsm`` array with a varying third column - x, y, z - is refused),
integer cluster codes from a cluster / cell-type column, and ``obs`` as a Polars frame.  Only
stable AnnData APIs are used (``read_h5ad``, ``.X``, ``.layers``, ``.obsm``, ``.obs``,
``.obs_names``, ``.var_names``), so it works on anndata 0.12 and 0.13.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import scipy.sparse as sp

from polgen.errors import InputError
from polgen.schema import CELL_ID

log = logging.getLogger("polgen")

#: obsm keys searched, in order, for spatial coordinates
SPATIAL_KEYS = ("spatial", "X_spatial", "spatial_loc")
#: obs columns searched, in order (case-insensitive), for clusters / cell types
CLUSTER_KEYS = (
    "cluster",
    "clusters",
    "cell_type",
    "cell_types",
    "celltype",
    "celltypes",
    "cell_type_int",
    "leiden",
    "louvain",
    "seurat_clusters",
    "annotation",
    "cell_annotation",
    "cluster_id",
    "stlr_cluster",  # written by polgen.stlr.prepare when the data had none
)


@dataclass
class SpatialData:
    """Arrays of one spatial dataset (cells x genes).

    ``X``: expression of the chosen layer (``layer``; None = ``adata.X``), dense C-contiguous
    float64 or ``scipy.sparse.csr_matrix`` float64.  ``coords``: ``(n_cells, 2)`` float64.
    ``clusters``: int64 codes ``0..C-1`` indexing ``cluster_labels``.  ``obs``: the cell table
    with the cell id as its first column ``CellID``.
    """

    X: np.ndarray | sp.csr_matrix
    var_names: list[str]
    obs_names: list[str]
    coords: np.ndarray
    clusters: np.ndarray
    cluster_labels: list[str]
    obs: pl.DataFrame
    path: str | None = None
    layer: str | None = None
    spatial_key: str | tuple[str, str] | None = None
    cluster_key: str | None = None
    adata: Any = field(default=None, repr=False)
    dense: bool = False

    @property
    def n_cells(self) -> int:
        return len(self.obs_names)

    @property
    def n_genes(self) -> int:
        return len(self.var_names)

    @property
    def n_clusters(self) -> int:
        return len(self.cluster_labels)

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.X)

    def layers(self) -> list[str]:
        """Names of the layers stored beside ``X``."""
        return [] if self.adata is None else list(self.adata.layers.keys())

    def expression(self, layer: Any = ..., *, dense: bool | None = None) -> np.ndarray | sp.csr_matrix:
        """Expression of ``layer`` in the same conventions as :attr:`X`.

        With no ``layer`` this is :attr:`X` (the layer chosen at read time); ``None`` or ``"X"``
        is ``adata.X``; any other name a layer of the AnnData.
        """
        dense = self.dense if dense is None else dense
        if layer is ...:
            layer = self.layer
        elif layer == "X" and "X" not in self.layers():
            layer = None
        if layer == self.layer and (dense == self.dense or not self.is_sparse):
            return self.X
        if self.adata is None:
            raise InputError("this SpatialData holds no AnnData to read other layers from", path=self.path)
        return _expression(self.adata, layer, dense=dense, path=self.path)

    def gene_index(self, genes: str | Sequence[str]) -> np.ndarray:
        """Column indices of ``genes`` in :attr:`var_names`; unknown genes -> InputError."""
        if isinstance(genes, str):
            genes = [genes]
        lookup = self._lookup()
        missing = [g for g in genes if g not in lookup]
        if missing:
            shown = ", ".join(map(repr, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise InputError(f"{len(missing)} gene(s) not in var_names: {shown}", path=self.path)
        return np.array([lookup[g] for g in genes], dtype=np.int64)

    def _lookup(self) -> dict[str, int]:
        cache = self.__dict__.get("_gene_lookup")
        if cache is None:
            cache = {}
            for i, g in enumerate(self.var_names):
                cache.setdefault(g, i)
            self.__dict__["_gene_lookup"] = cache
        return cache

    def gene(self, name: str, layer: Any = ...) -> np.ndarray:
        """One gene's expression over all cells as a dense float64 vector (layer as in
        :meth:`expression`: by default the one chosen at read time)."""
        j = int(self.gene_index(name)[0])
        x = self.expression(layer)
        col: Any = x[:, j]  # a dense column or a sparse (n, 1) matrix
        if sp.issparse(col):
            col = col.toarray()
        return np.ascontiguousarray(np.asarray(col, dtype=np.float64).ravel())


# -- helpers -------------------------------------------------------------------------------------


def _to_memory(x: Any) -> Any:
    """Backed (on-disk) AnnData arrays into memory."""
    if hasattr(x, "to_memory"):
        return x.to_memory()
    try:
        import h5py
    except ImportError:  # pragma: no cover - anndata depends on h5py
        h5py = None
    if h5py is not None and isinstance(x, h5py.Dataset):
        return x[()]
    return x


def _convert_matrix(
    x: Any, *, dense: bool, what: str, path: str | None, obs_names: Sequence[str]
) -> np.ndarray | sp.csr_matrix:
    x = _to_memory(x)
    if sp.issparse(x):
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise InputError(f"{what} has non-numeric dtype {x.dtype}", path=path)
        m = sp.csr_matrix(x, dtype=np.float64)
        m.sum_duplicates()
        m.sort_indices()
        if m.nnz and not np.all(np.isfinite(m.data)):
            bad = int(np.flatnonzero(~np.isfinite(m.data))[0])
            row = int(np.searchsorted(m.indptr, bad, side="right") - 1)
            raise InputError(f"{what} holds NaN or infinite values", path=path, row=_cell(obs_names, row))
        if dense:
            return np.ascontiguousarray(m.toarray())
        return m
    try:
        arr = np.asarray(x)
    except Exception as exc:
        raise InputError(f"{what} cannot be read as a numeric matrix ({type(x).__name__}: {exc})", path=path) from None
    if arr.ndim != 2:
        raise InputError(f"{what} must be 2-D (cells x genes), got shape {arr.shape}", path=path)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"{what} has non-numeric dtype {arr.dtype}", path=path)
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise InputError(f"{what} holds NaN or infinite values", path=path, row=_cell(obs_names, row))
    return arr


def _cell(obs_names: Sequence[str], i: int) -> str:
    return f"{i} (cell {obs_names[i]!r})" if i < len(obs_names) else str(i)


def _expression(adata: Any, layer: str | None, *, dense: bool, path: str | None):
    names = [str(o) for o in adata.obs_names]
    if layer is None:
        x = adata.X
        if x is None:
            raise InputError(f"AnnData.X is empty; pass layer= one of {list(adata.layers.keys())}", path=path)
        what = "X"
    else:
        if layer not in adata.layers:
            raise InputError(f"layer {layer!r} not found; layers: {list(adata.layers.keys())}", path=path, column=layer)
        x = adata.layers[layer]
        what = f"layer {layer!r}"
    return _convert_matrix(x, dense=dense, what=what, path=path, obs_names=names)


def _refuse_3d(arr: np.ndarray, what: str, names: list[str], path: str | None, key: str) -> None:
    """Coordinates beyond x, y: constant ones (a single section) are dropped; varying ones (x, y, z
    of serial sections) are an InputError - the SpaceTravLR reference treats such a tissue as 3-D
    (3-D maps, CNN and ligand kernels), polgen's are 2-D."""
    cols = names if len(names) == arr.shape[1] else [str(k) for k in range(arr.shape[1])]
    try:
        extra = np.asarray(arr[:, 2:], dtype=np.float64)
    except (TypeError, ValueError):
        return  # not numeric: reported as such below
    varying = [cols[2 + k] for k in range(extra.shape[1]) if np.ptp(extra[:, k]) > 0]
    if varying:
        raise InputError(
            f"{what} has {arr.shape[1]} coordinate columns ({', '.join(cols)}) and {varying} varies: 3-D "
            "coordinates (e.g. serial sections) are not supported - polgen's spatial maps, ligand kernels and "
            "transition vectors are 2-D (the SpaceTravLR reference switches to 3-D ones); train each section on "
            "its own x, y, or pass spatial_key= two obs columns (x, y) to use the plane",
            path=path,
            column=f"{key}[{varying[0]}]",
        )
    log.info("%s has %d columns; the extra ones are constant, using the first two as x, y", what, arr.shape[1])


def _coordinates(adata: Any, spatial_key, path: str | None, obs_names: list[str]):
    n = adata.n_obs
    if spatial_key is None:
        keys = list(adata.obsm.keys())
        found = next((k for k in SPATIAL_KEYS if k in adata.obsm), None)
        if found is None:
            raise InputError(
                f"no spatial coordinates: none of obsm {list(SPATIAL_KEYS)} present (obsm keys: "
                f"{keys}); pass spatial_key= an obsm key or a pair of obs columns",
                path=path,
            )
        spatial_key = found
    if isinstance(spatial_key, str):
        if spatial_key not in adata.obsm:
            raise InputError(
                f"spatial key {spatial_key!r} not in obsm (keys: {list(adata.obsm.keys())})",
                path=path,
                column=spatial_key,
            )
        raw = adata.obsm[spatial_key]
        what = f"obsm[{spatial_key!r}]"
        names = [str(c) for c in getattr(raw, "columns", [])]
        if hasattr(raw, "to_numpy"):  # a pandas DataFrame in obsm
            raw = raw.to_numpy()
        raw = _to_memory(raw)
        if sp.issparse(raw):
            raw = raw.toarray()
        try:
            arr = np.asarray(raw)
        except Exception:
            raise InputError(f"{what} cannot be read as an array", path=path, column=spatial_key) from None
        if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] < 2:
            raise InputError(f"{what} must be (n_cells, 2), got shape {arr.shape}", path=path, column=spatial_key)
        if arr.shape[1] > 2:
            _refuse_3d(arr, what, names, path, spatial_key)
            arr = arr[:, :2]
        columns = [spatial_key, spatial_key]
    else:
        cols = list(spatial_key)
        if len(cols) != 2:
            raise InputError(f"spatial_key as obs columns must name two columns (x, y), got {cols}", path=path)
        missing = [c for c in cols if c not in adata.obs.columns]
        if missing:
            raise InputError(
                f"coordinate column(s) {missing} not in obs (columns: {list(adata.obs.columns)})",
                path=path,
                column=missing[0],
            )
        arr = np.column_stack([adata.obs[c].to_numpy() for c in cols])
        spatial_key = tuple(cols)
        columns = cols
        what = f"obs columns {cols}"
    try:
        coords = np.ascontiguousarray(arr.astype(np.float64))
    except (TypeError, ValueError):
        raise InputError(f"{what} is not numeric (dtype {arr.dtype})", path=path, column=str(columns[0])) from None
    bad = ~np.isfinite(coords)
    if bad.any():
        i, k = (int(v) for v in np.argwhere(bad)[0])
        raise InputError(
            f"{what} holds NaN or infinite coordinates", path=path, column=str(columns[k]), row=_cell(obs_names, i)
        )
    return coords, spatial_key


def _prepared_cluster_key(adata: Any) -> str | None:
    """The cluster column :func:`polgen.stlr.prepare` recorded in ``uns["stlr_prepare"]``, if any."""
    try:
        rec = adata.uns.get("stlr_prepare")
    except AttributeError:
        return None
    key = rec.get("cluster_key") if isinstance(rec, dict) else None
    return str(key) if key is not None else None


def _clusters(adata: Any, cluster_key, path: str | None, obs_names: list[str]):
    n = adata.n_obs
    obs = adata.obs
    if cluster_key is False:
        return np.zeros(n, dtype=np.int64), ["all"], None
    if cluster_key is None:
        lower = {str(c).lower(): c for c in obs.columns}
        found = next((lower[k] for k in CLUSTER_KEYS if k in lower), None)
        prepared = _prepared_cluster_key(adata)
        if prepared is not None and prepared in obs.columns:  # the column polgen.stlr.prepare used
            found = prepared
        if found is None:
            raise InputError(
                f"no cluster column: none of {list(CLUSTER_KEYS)} in obs (columns: "
                f"{list(obs.columns)}); pass cluster_key= a column, or cluster_key=False for one "
                "cluster",
                path=path,
            )
        cluster_key = found
    elif cluster_key not in obs.columns:
        raise InputError(
            f"cluster column {cluster_key!r} not in obs (columns: {list(obs.columns)})",
            path=path,
            column=str(cluster_key),
        )
    col = obs[cluster_key]
    isna = col.isna().to_numpy()
    if isna.any():
        i = int(np.flatnonzero(isna)[0])
        raise InputError("cluster label missing", path=path, column=str(cluster_key), row=_cell(obs_names, i))
    if isinstance(col.dtype, pd.CategoricalDtype):
        col = col.cat.remove_unused_categories()
        labels = [str(c) for c in col.cat.categories]
        codes = col.cat.codes.to_numpy().astype(np.int64)
    else:
        values = col.to_numpy()
        if np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.bool_):
            uniq, codes = np.unique(values, return_inverse=True)
            labels = [str(u.item()) if hasattr(u, "item") else str(u) for u in uniq]
        else:
            uniq, codes = np.unique(values.astype(str), return_inverse=True)
            labels = [str(u) for u in uniq]
        codes = codes.astype(np.int64).ravel()
    return np.ascontiguousarray(codes), labels, str(cluster_key)


def _obs_frame(adata: Any, obs_names: list[str]) -> pl.DataFrame:
    obs = adata.obs
    cols: dict[str, pl.Series] = {CELL_ID: pl.Series(CELL_ID, obs_names, dtype=pl.String)}
    for c in obs.columns:
        name = str(c)
        if name == CELL_ID:
            continue
        s = obs[c]
        try:
            if isinstance(s.dtype, pd.CategoricalDtype):
                series = pl.Series(name, s.astype(str).to_numpy(), dtype=pl.String).cast(pl.Categorical)
            else:
                series = pl.Series(name, s.to_numpy())
        except Exception:
            series = pl.Series(name, s.astype(str).to_numpy(), dtype=pl.String)
        cols[name] = series
    return pl.DataFrame(list(cols.values()))


def read_spatial(
    path_or_anndata: str | os.PathLike | Any,
    *,
    layer: str | None = None,
    spatial_key: str | Sequence[str] | None = None,
    cluster_key: str | bool | None = None,
    dense: bool = False,
) -> SpatialData:
    """Read a spatial dataset from a ``.h5ad`` file or an ``AnnData``.

    Parameters
    ----------
    layer: expression layer for :attr:`SpatialData.X` (None: ``adata.X``).
    spatial_key: an ``obsm`` key, or a pair ``(x_column, y_column)`` of ``obs`` columns; default the
        first of ``obsm`` "spatial", "X_spatial", "spatial_loc".
    cluster_key: an ``obs`` column of cluster / cell-type labels; default the first of
        :data:`CLUSTER_KEYS` present (case-insensitive); ``False``: every cell in one cluster.
    dense: densify sparse expression (otherwise sparse stays CSR).
    """
    path: str | None = None
    if isinstance(path_or_anndata, (str, os.PathLike)):
        p = Path(path_or_anndata)
        path = str(p)
        if not p.exists():
            raise InputError("h5ad file not found", path=p)
        import anndata

        try:
            adata = anndata.read_h5ad(p)
        except Exception as exc:
            raise InputError(f"cannot read as .h5ad ({type(exc).__name__}: {exc})", path=p) from None
    else:
        adata = path_or_anndata
        if not all(hasattr(adata, a) for a in ("obs", "var_names", "obsm", "layers", "X")):
            raise InputError(f"expected a .h5ad path or an AnnData, got {type(adata).__name__}")
        fn = getattr(adata, "filename", None)
        path = None if fn is None else str(fn)
    obs_names = [str(o) for o in adata.obs_names]
    var_names = [str(v) for v in adata.var_names]
    if len(set(var_names)) != len(var_names):
        seen: set[str] = set()
        dups = sorted({v for v in var_names if v in seen or seen.add(v)})  # type: ignore[func-returns-value]
        raise InputError(
            f"{len(dups)} gene name(s) occur more than once in var_names: {dups[:10]}; make them unique "
            "(e.g. AnnData.var_names_make_unique()) or drop the duplicates",
            path=path,
            column=dups[0],
        )
    X = _expression(adata, layer, dense=dense, path=path)
    coords, skey = _coordinates(adata, spatial_key, path, obs_names)
    clusters, labels, ckey = _clusters(adata, cluster_key, path, obs_names)
    obs = _obs_frame(adata, obs_names)
    return SpatialData(
        X=X,
        var_names=var_names,
        obs_names=obs_names,
        coords=coords,
        clusters=clusters,
        cluster_labels=labels,
        obs=obs,
        path=path,
        layer=layer,
        spatial_key=skey,
        cluster_key=ckey,
        adata=adata,
        dense=dense,
    )


__all__ = ["SpatialData", "read_spatial", "SPATIAL_KEYS", "CLUSTER_KEYS"]
