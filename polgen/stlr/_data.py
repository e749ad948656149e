"""Inputs of the SpaceTravLR functions: an AnnData, a .h5ad path or a SpatialData, as dense arrays."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from polgen.errors import InputError

log = logging.getLogger("polgen")

DEFAULT_LAYER = "imputed_count"


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

    def gene_index(self, genes) -> np.ndarray:
        lookup = {g: i for i, g in enumerate(self.var_names)}
        if isinstance(genes, str):
            genes = [genes]
        missing = [g for g in genes if g not in lookup]
        if missing:
            raise InputError(f"{len(missing)} gene(s) not in var_names: {missing[:10]}", path=self.path)
        return np.array([lookup[g] for g in genes], dtype=np.int64)


def as_tissue(obj, *, layer: str | None = None, cluster_key=None, spatial_key=None,
              need_clusters: bool = True) -> Tissue:
    """Dense expression, coordinates and clusters of ``obj`` (AnnData, .h5ad path, SpatialData, Tissue).

    ``layer`` None picks ``imputed_count`` when the AnnData has it (the reference reads only that
    layer), else ``X``.  Without a cluster column and ``need_clusters=False`` clusters are None.
    """
    if isinstance(obj, Tissue):
        return obj
    from polgen.io.spatial import SpatialData, read_spatial

    if isinstance(obj, SpatialData):
        sd = obj
        if layer is not None and layer != sd.layer:
            X = sd.expression(layer, dense=True)
        else:
            X = sd.X
            layer = sd.layer
    else:
        if not isinstance(obj, (str, bytes)) and not hasattr(obj, "__fspath__"):
            if layer is None and hasattr(obj, "layers") and DEFAULT_LAYER in obj.layers:
                layer = DEFAULT_LAYER
        no_clusters = False
        try:
            sd = read_spatial(obj, layer=layer, cluster_key=cluster_key, spatial_key=spatial_key, dense=True)
        except InputError as exc:
            if cluster_key is None and not need_clusters and "cluster" in str(exc):
                no_clusters = True
                sd = read_spatial(obj, layer=layer, cluster_key=False, spatial_key=spatial_key, dense=True)
            else:
                raise
        if layer is None and sd.adata is not None and DEFAULT_LAYER in sd.adata.layers:
            layer = DEFAULT_LAYER
            sd = read_spatial(sd.adata, layer=layer, cluster_key=False if no_clusters else sd.cluster_key,
                              spatial_key=spatial_key, dense=True)
        if no_clusters:
            sd.clusters, sd.cluster_labels = None, None
        X = sd.X
    if hasattr(X, "toarray"):
        X = X.toarray()
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float64))
    if not np.isfinite(X).all():
        r, c = np.argwhere(~np.isfinite(X))[0]
        raise InputError("expression holds NaN/inf", path=sd.path, column=sd.var_names[c], row=sd.obs_names[r])
    clusters = None if sd.clusters is None else np.ascontiguousarray(sd.clusters, dtype=np.int64)
    return Tissue(X=X, var_names=list(sd.var_names), obs_names=list(sd.obs_names),
                  coords=np.ascontiguousarray(sd.coords, dtype=np.float64), clusters=clusters,
                  cluster_labels=None if sd.cluster_labels is None else list(sd.cluster_labels),
                  layer=layer, path=sd.path, cluster_key=sd.cluster_key)
