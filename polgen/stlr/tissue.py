"""Tissue inputs shared by training, splash and perturbation (above grn / ligands, below all steps).

* :class:`Tissue` / :func:`as_tissue`: an AnnData, a .h5ad path or a SpatialData as dense arrays
  (all genes, or a column subset with :func:`restrict` / ``genes=``);
* :func:`filtered`: expression with values <= :data:`MIN_EXPRESSION` set to 0 (the reference's
  filter before received ligands and splash);
* :func:`ligand_radius_map`, :func:`received_columns`, :func:`received_for`: each ligand's
  radius from a CellChat table and the received ligands of filtered ligand columns;
* :class:`CellThresholds`, :func:`read_cell_thresholds`, :func:`uns_cell_thresholds`,
  :func:`run_thresholds`: the reference's ``uns["cell_thresholds"]`` aligned with the cells;
* :func:`has_layer`, :func:`layer_columns`: other layers of the AnnData behind a tissue.

Imports: errors, :mod:`polgen.stlr.grn`, :mod:`polgen.stlr.ligands`, and - when a tissue or a
layer is read - :mod:`polgen.io.spatial` / h5py / anndata, and the numba kernels.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from polgen.errors import InputError
from polgen.stlr.grn import ligand_radii, lr_table, read_cellchat
from polgen.stlr.ligands import received_ligands

log = logging.getLogger("polgen")

DEFAULT_LAYER = "imputed_count"
#: expression at or below this is 0 before received ligands and splash (the reference's filter)
MIN_EXPRESSION = 1e-9
#: the AnnData ``uns`` key of the cell thresholds
THRESHOLDS_KEY = "cell_thresholds"


def suggest(missing: Sequence[str], var_names: Sequence[str]) -> str:
    """ " (did you mean ...?)" naming the var_names equal to ``missing`` genes up to case, or ""."""
    lower: dict[str, str] = {}
    for v in var_names:
        lower.setdefault(str(v).lower(), str(v))
    hits = [f"{g!r} -> {lower[str(g).lower()]!r}" for g in missing if str(g).lower() in lower]
    return f" (gene symbols are case-sensitive; did you mean: {', '.join(hits)}?)" if hits else ""


@dataclass
class Tissue:
    X: np.ndarray  # dense float64 C (cells x genes)
    var_names: list[str]
    obs_names: list[str]
    coords: np.ndarray
    clusters: np.ndarray | None
    cluster_labels: list[str] | None
    layer: str | None = None
    path: str | None = None
    cluster_key: str | None = None
    #: with ``as_tissue(genes=...)``: the source's full expression (CSR or dense, cells x
    #: ``all_var_names``) behind the column subset ``X`` / ``var_names``; None otherwise
    full: Any = None
    all_var_names: list[str] | None = None

    @property
    def source_var_names(self) -> list[str]:
        """Every gene of the source (``var_names`` unless ``X`` holds a subset)."""
        return self.var_names if self.all_var_names is None else self.all_var_names

    def source_columns(self, genes: Sequence[str]) -> np.ndarray:
        """Dense float64 (cells x ``genes``) columns of the source's expression, any gene of it."""
        idx = source_index(self, genes)
        M = self.X if self.full is None else self.full
        sub = M[:, idx]
        if hasattr(sub, "toarray"):
            sub = sub.toarray()
        return np.ascontiguousarray(np.asarray(sub, dtype=np.float64))

    def source_dense(self) -> np.ndarray:
        """The source's whole expression as dense C float64 (``X`` itself when it is not a subset)."""
        if self.full is None:
            return self.X
        M = self.full.toarray() if hasattr(self.full, "toarray") else self.full
        return np.ascontiguousarray(np.asarray(M, dtype=np.float64))

    def negative_outside(self) -> list[str]:
        """Genes of the source outside ``var_names`` with a negative value in some cell."""
        if self.full is None:
            return []
        M, inside, names = self.full, set(self.var_names), self.source_var_names
        if hasattr(M, "indices"):
            cols = np.unique(M.indices[M.data < 0]) if M.nnz else np.zeros(0, np.int64)
        else:
            cols = np.flatnonzero((np.asarray(M) < 0).any(axis=0))
        return [names[c] for c in cols if names[c] not in inside]

    def require_clusters(self) -> tuple[np.ndarray, list[str]]:
        """``(clusters, cluster_labels)``; always set unless read with ``need_clusters=False``."""
        if self.clusters is None or self.cluster_labels is None:
            raise InputError("the tissue has no cluster column (read with need_clusters=False)", path=self.path)
        return self.clusters, self.cluster_labels

    def gene_index(self, genes) -> np.ndarray:
        lookup = {g: i for i, g in enumerate(self.var_names)}
        if isinstance(genes, str):
            genes = [genes]
        missing = [g for g in genes if g not in lookup]
        if missing:
            raise InputError(
                f"{len(missing)} gene(s) not in var_names: {missing[:10]}{suggest(missing[:10], self.var_names)}",
                path=self.path,
                column=str(missing[0]),
            )
        return np.array([lookup[g] for g in genes], dtype=np.int64)


def source_index(t: Tissue, genes: Sequence[str]) -> np.ndarray:
    """Positions of ``genes`` among every gene of the source (:attr:`Tissue.source_var_names`)."""
    names = t.source_var_names
    if names is t.var_names:
        return t.gene_index(list(genes))
    lookup = {g: i for i, g in enumerate(names)}
    missing = [g for g in genes if g not in lookup]
    if missing:
        raise InputError(
            f"{len(missing)} gene(s) not in var_names: {missing[:10]}{suggest(missing[:10], names)}",
            path=t.path,
            column=str(missing[0]),
        )
    return np.array([lookup[g] for g in genes], dtype=np.int64)


def kept_outside(x0: np.ndarray, n_propagation: int) -> np.ndarray:
    """Expression ``x0`` of genes no perturbation reaches after ``n_propagation`` steps: each step
    clips to [0, the gene's max] and adds a zero delta (so negative values become 0, -0.0 becomes 0.0)."""
    return np.where(x0 < 0, 0.0, x0 + 0.0) if n_propagation else x0 + 0.0


def restrict(t: Tissue, genes: Sequence[str]) -> Tissue:
    """``t`` with ``X`` / ``var_names`` holding only ``genes`` present in it (source order); the
    whole expression stays in :attr:`Tissue.full` for outputs over every gene."""
    keep = set(genes)
    names = t.source_var_names
    idx = np.array([i for i, g in enumerate(names) if g in keep], dtype=np.int64)
    M = t.X if t.full is None else t.full
    sub = M[:, idx]
    if hasattr(sub, "toarray"):
        sub = sub.toarray()
    return Tissue(
        X=np.ascontiguousarray(np.asarray(sub, dtype=np.float64)),
        var_names=[names[i] for i in idx],
        obs_names=t.obs_names,
        coords=t.coords,
        clusters=t.clusters,
        cluster_labels=t.cluster_labels,
        layer=t.layer,
        path=t.path,
        cluster_key=t.cluster_key,
        full=M,
        all_var_names=list(names),
    )


def as_tissue(
    obj,
    *,
    layer: str | None = None,
    cluster_key=None,
    spatial_key=None,
    need_clusters: bool = True,
    genes: Sequence[str] | None = None,
) -> Tissue:
    """Dense expression, coordinates and clusters of ``obj`` (AnnData, .h5ad path, SpatialData, Tissue).

    ``layer`` None picks ``imputed_count`` when the AnnData has it (the reference reads only that
    layer), else ``X``.  Without a cluster column and ``need_clusters=False`` clusters are None.
    ``genes``: ``X`` holds only those genes (the ones present, in the source's order), densified
    from sparse storage column by column; the source's whole matrix stays in :attr:`Tissue.full`
    (sparse stays sparse), so the cost follows ``genes`` x cells, not the data set's width.
    """
    if isinstance(obj, Tissue):
        return obj if genes is None else restrict(obj, genes)
    dense = genes is None
    from polgen.io.spatial import SpatialData, read_spatial

    no_clusters = False  # read without a cluster column: the Tissue gets clusters None
    if isinstance(obj, SpatialData):
        sd = obj
        if layer is not None and layer != sd.layer:
            X = sd.expression(layer, dense=dense)
        else:
            X = sd.X
            layer = sd.layer
    else:
        if not isinstance(obj, (str, bytes)) and not hasattr(obj, "__fspath__"):
            if layer is None and hasattr(obj, "layers") and DEFAULT_LAYER in obj.layers:
                layer = DEFAULT_LAYER
        try:
            sd = read_spatial(obj, layer=layer, cluster_key=cluster_key, spatial_key=spatial_key, dense=dense)
        except InputError as exc:
            if cluster_key is None and not need_clusters and "cluster" in str(exc):
                no_clusters = True
                sd = read_spatial(obj, layer=layer, cluster_key=False, spatial_key=spatial_key, dense=dense)
            else:
                raise
        if layer is None and sd.adata is not None and DEFAULT_LAYER in sd.adata.layers:
            layer = DEFAULT_LAYER
            sd = read_spatial(
                sd.adata,
                layer=layer,
                cluster_key=False if (no_clusters or cluster_key is False) else sd.cluster_key,
                spatial_key=spatial_key,
                dense=dense,
            )
        X = sd.X
    clusters = None if no_clusters or sd.clusters is None else np.ascontiguousarray(sd.clusters, dtype=np.int64)
    labels = None if no_clusters or sd.cluster_labels is None else list(sd.cluster_labels)
    coords = np.ascontiguousarray(sd.coords, dtype=np.float64)
    if genes is not None:  # read_spatial has checked the whole matrix is finite
        names, cells = list(sd.var_names), list(sd.obs_names)
        whole = Tissue(X, names, cells, coords, clusters, labels, layer, sd.path, sd.cluster_key)
        return restrict(whole, genes)
    if hasattr(X, "toarray"):
        X = X.toarray()
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float64))
    if not np.isfinite(X).all():
        r, c = np.argwhere(~np.isfinite(X))[0]
        raise InputError("expression holds NaN/inf", path=sd.path, column=sd.var_names[c], row=sd.obs_names[r])
    return Tissue(
        X=X,
        var_names=list(sd.var_names),
        obs_names=list(sd.obs_names),
        coords=coords,
        clusters=clusters,
        cluster_labels=labels,
        layer=layer,
        path=sd.path,
        cluster_key=sd.cluster_key,
    )


def source_anndata(obj):
    """The in-memory AnnData behind ``obj`` (AnnData or SpatialData), or None (paths, Tissue)."""
    from polgen.io.spatial import SpatialData

    if isinstance(obj, (str, bytes, os.PathLike, Tissue)):
        return None
    if isinstance(obj, SpatialData):
        return obj.adata
    return obj if hasattr(obj, "uns") and hasattr(obj, "layers") else None


# -- expression filter and received ligands -------------------------------------------------------
def filtered(x: np.ndarray, thresh: float = MIN_EXPRESSION) -> np.ndarray:
    """Expression with values <= ``thresh`` set to 0 (a new C-contiguous float64 array)."""
    from polgen.kernels.splash import filter_expr

    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    filter_expr(x, float(thresh), out)
    return out


def ligand_radius_map(lr, var_names, radius, contact_distance) -> dict[str, float]:
    """{ligand: radius} of a CellChat table (path or frame, expanded here; a frame with ``ligand``
    and ``radius`` columns is taken as already expanded) or of a ``{ligand: radius}`` mapping."""
    if lr is None:
        raise InputError(
            "a ligand-receptor table (lr=: CellChat csv path or frame, or {ligand: radius}) is "
            "needed to give each ligand its radius"
        )
    if isinstance(lr, Mapping):
        return {str(k): float(v) for k, v in lr.items()}
    if isinstance(lr, (str, os.PathLike)):
        lr = read_cellchat(lr)
    if isinstance(lr, pl.DataFrame) and "radius" in lr.columns and "ligand" in lr.columns:
        return ligand_radii(lr)
    try:
        import pandas as pd

        if isinstance(lr, pd.DataFrame):
            lr = pl.from_pandas(lr.reset_index(drop=True))
    except ImportError:  # pragma: no cover
        pass
    return ligand_radii(lr_table(lr, var_names, radius, contact_distance))


def received_columns(coords, Xf_lig, radii, scale_factor, mode, cols=None, out=None, tiles=None) -> np.ndarray:
    """Received ligands of the (already filtered) ligand columns ``cols`` (all when None) into
    ``out`` (a new zero matrix when None); a ligand with a non-finite radius (no LR row) receives
    nothing, as in the reference."""
    n, nl = Xf_lig.shape
    if out is None:
        out = np.zeros((n, nl))
    cols = np.arange(nl) if cols is None else np.asarray(cols)
    cols = cols[np.isfinite(radii[cols])]
    if cols.size:
        out[:, cols] = received_ligands(coords, Xf_lig[:, cols], radii[cols], scale_factor, mode, tiles=tiles)
    return out


def received_for(coords, X, var_names, ligands, lr, radius, contact_distance, scale_factor, mode) -> np.ndarray:
    """(cells x ``ligands``) received ligands of the filtered expression ``X``."""
    rmap = ligand_radius_map(lr, var_names, radius, contact_distance)
    gidx = {g: i for i, g in enumerate(var_names)}
    radii = np.array([rmap.get(l, np.nan) for l in ligands], dtype=np.float64)
    Xf = filtered(np.asarray(X)[:, [gidx[l] for l in ligands]])
    return received_columns(coords, Xf, radii, scale_factor, mode)


# -- cell thresholds -------------------------------------------------------------------------------
@dataclass
class CellThresholds:
    """Per-cell gene allowances (``uns["cell_thresholds"]``), aligned with a tissue's cells.

    ``allowed[i, k]`` is True where ``genes[k]`` has a threshold > 0 in cell i (NaN: not allowed).
    """

    genes: list[str]
    allowed: np.ndarray  # (n_cells, len(genes)) bool

    def mask(self, genes: Sequence[str], fill: float = 0.0) -> np.ndarray:
        """(n_cells, len(genes)) float64 0/1 mask; genes absent from the table get ``fill``
        (0 as in training and ``get_filtered_df``; the reference's perturb re-indexes with 1)."""
        pos = {g: k for k, g in enumerate(self.genes)}
        out = np.full((self.allowed.shape[0], len(genes)), float(fill))
        for j, g in enumerate(genes):
            k = pos.get(g)
            if k is not None:
                out[:, j] = self.allowed[:, k]
        return out

    def digest(self) -> str:
        """sha256 of the gene names and the mask (recorded in run parameters)."""
        h = hashlib.sha256("\x1f".join(self.genes).encode())
        h.update(np.packbits(np.ascontiguousarray(self.allowed), axis=None).tobytes())
        h.update(str(self.allowed.shape).encode())
        return h.hexdigest()


def _thresholds_frame(obj, what: str) -> tuple[list[str], list[str], np.ndarray]:
    """(cell ids, genes, values) of a pandas / polars thresholds table."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(obj, pd.DataFrame):
        ids = [str(i) for i in obj.index]
        genes = [str(c) for c in obj.columns]
        try:
            vals = obj.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{what} must hold numbers ({exc})") from None
        return ids, genes, vals
    if isinstance(obj, pl.DataFrame):
        id_names = ("CellID", "__index_level_0__", "index", "_index")
        idc: str | None = next((c for c in id_names if c in obj.columns), None)
        if idc is None:
            idc = next((c for c in obj.columns if obj.schema[c] == pl.String), None)
        if idc is None:
            raise InputError(f"{what} has no cell-id column (CellID, __index_level_0__ or a text column)")
        genes = [c for c in obj.columns if c != idc]
        try:
            vals = (
                obj.select([pl.col(c).cast(pl.Float64) for c in genes]).to_numpy()
                if genes
                else np.zeros((obj.height, 0))
            )
        except Exception as exc:  # noqa: BLE001 - polars cast errors
            raise InputError(f"{what} must hold numbers ({exc})") from None
        return obj[idc].cast(pl.String).to_list(), genes, np.asarray(vals, dtype=np.float64)
    raise InputError(f"{what} must be a pandas or polars DataFrame or a parquet/csv path, got {type(obj).__name__}")


def read_cell_thresholds(source, obs_names: Sequence[str], genes: Sequence[str] | None = None) -> CellThresholds:
    """Align a cell-thresholds table (frame, or parquet / csv path) with ``obs_names``.

    Rows are matched by cell name (the reference's ``cell_thresholds.loc[obs_names]``); every cell
    must be present.  ``genes`` keeps only those columns (the others are never used).
    """
    what = "cell_thresholds"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise InputError("cell_thresholds file not found", path=path)
        try:
            df = pl.read_parquet(path) if path.endswith(".parquet") else pl.read_csv(path)
        except Exception as exc:  # noqa: BLE001 - any reader failure is an input problem
            raise InputError(f"cannot read cell_thresholds ({type(exc).__name__}: {exc})", path=path) from None
        what = f"cell_thresholds {path}"
        source = df
    ids, cols, vals = _thresholds_frame(source, what)
    if vals.ndim != 2 or vals.shape != (len(ids), len(cols)):
        raise InputError(f"{what} is not a cells x genes table")
    pos: dict[str, int] = {}
    for i, c in enumerate(ids):
        if c in pos:
            raise InputError(f"{what} lists cell {c!r} twice", row=c)
        pos[c] = i
    missing = [c for c in obs_names if c not in pos]
    if missing:
        raise InputError(f"{what} has no row for {len(missing)} cell(s) of the tissue: {missing[:5]}", row=missing[0])
    keep = list(range(len(cols))) if genes is None else [k for k, g in enumerate(cols) if g in set(genes)]
    rows = np.fromiter((pos[c] for c in obs_names), dtype=np.int64, count=len(obs_names))
    sub = vals[np.ix_(rows, np.asarray(keep, dtype=np.int64))] if keep else np.zeros((len(obs_names), 0))
    with np.errstate(invalid="ignore"):
        allowed = np.ascontiguousarray(sub > 0)  # NaN -> False, as fillna(0) then > 0
    return CellThresholds(genes=[cols[k] for k in keep], allowed=allowed)


# -- the AnnData behind a tissue: uns cell thresholds, other layers ------------------------------
def _read_elem(node):
    import anndata

    io = getattr(anndata, "io", None)
    fn = getattr(io, "read_elem", None) if io is not None else None
    if fn is None:  # anndata < 0.11
        from anndata.experimental import read_elem as fn
    return fn(node)


def uns_cell_thresholds(obj):
    """``uns["cell_thresholds"]`` of an AnnData / SpatialData / .h5ad path, or None."""
    if isinstance(obj, (str, os.PathLike)):
        import h5py

        try:
            with h5py.File(obj, "r") as f:
                node = f.get(f"uns/{THRESHOLDS_KEY}")
                return None if node is None else _read_elem(node)
        except OSError as exc:
            raise InputError(f"cannot read uns/{THRESHOLDS_KEY} ({exc})", path=obj) from None
    ad = source_anndata(obj)
    if ad is None:
        return None
    return ad.uns.get(THRESHOLDS_KEY)


def has_layer(obj, layer: str) -> bool:
    if isinstance(obj, (str, os.PathLike)):
        import h5py

        try:
            with h5py.File(obj, "r") as f:
                return f"layers/{layer}" in f
        except OSError:
            return False
    ad = source_anndata(obj)
    return ad is not None and layer in ad.layers


def layer_columns(obj, layer: str, var_names: Sequence[str], genes: Sequence[str]) -> np.ndarray | None:
    """Dense float64 columns ``genes`` of ``layer`` of the AnnData behind ``obj`` (None: no such layer)."""
    cols = [list(var_names).index(g) for g in genes]
    if isinstance(obj, (str, os.PathLike)):
        import h5py

        with h5py.File(obj, "r") as f:
            node = f.get(f"layers/{layer}")
            if node is None:
                return None
            M = _read_elem(node)
    else:
        ad = source_anndata(obj)
        if ad is None or layer not in ad.layers:
            return None
        M = ad.layers[layer]
    sub = M[:, cols]
    if hasattr(sub, "toarray"):
        sub = sub.toarray()
    sub = np.ascontiguousarray(np.asarray(sub, dtype=np.float64))
    if not np.isfinite(sub).all():
        raise InputError(f"layer {layer!r} holds NaN/inf", column=layer)
    return sub


def run_thresholds(cell_thresholds, adata, obs_names, genes) -> CellThresholds | None:
    """The CellThresholds of a run on the cells ``obs_names``: ``None`` -> the AnnData's
    ``uns["cell_thresholds"]`` when present, ``False`` -> none, else a frame or a parquet / csv
    path; ``genes`` keeps only those columns (None: all)."""
    if cell_thresholds is False:
        return None
    src = uns_cell_thresholds(adata) if cell_thresholds is None else cell_thresholds
    if src is None:
        return None
    return read_cell_thresholds(src, obs_names, genes)
