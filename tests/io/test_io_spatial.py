"""read_spatial on small AnnData objects written to .h5ad files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
import scipy.sparse as sp

anndata = pytest.importorskip("anndata")

from polgen.errors import InputError  # noqa: E402
from polgen.io.spatial import SpatialData, read_spatial  # noqa: E402


def _adata(n=30, g=8, *, sparse=False, seed=0, obsm_key="spatial", cluster_col="cell_type"):
    rng = np.random.default_rng(seed)
    x = rng.poisson(1.0, size=(n, g)).astype(np.float32)
    X = sp.csr_matrix(x) if sparse else x
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(n)])
    labels = np.array(["T", "B", "Mac"])[rng.integers(0, 3, n)]
    if cluster_col:
        obs[cluster_col] = pd.Categorical(labels, categories=["B", "Mac", "T", "unused"])
    obs["n_counts"] = x.sum(axis=1)
    obs["xc"] = rng.uniform(0, 100, n)
    obs["yc"] = rng.uniform(0, 100, n)
    var = pd.DataFrame(index=[f"G{j}" for j in range(g)])
    ad = anndata.AnnData(X=X, obs=obs, var=var)
    if obsm_key:
        ad.obsm[obsm_key] = np.column_stack([obs["xc"], obs["yc"]])
    ad.layers["imputed_count"] = (x * 2.0).astype(np.float64)
    ad.layers["sparse_layer"] = sp.csc_matrix(x)
    return ad, x, labels


def test_dense_h5ad_round_trip(tmp_path):
    ad, x, labels = _adata()
    f = tmp_path / "a.h5ad"
    ad.write_h5ad(f)
    sd = read_spatial(f)
    assert isinstance(sd, SpatialData) and sd.path == str(f)
    assert isinstance(sd.X, np.ndarray) and sd.X.dtype == np.float64 and sd.X.flags.c_contiguous
    np.testing.assert_array_equal(sd.X, x)
    assert sd.coords.shape == (30, 2) and sd.coords.flags.c_contiguous
    np.testing.assert_array_equal(sd.coords, ad.obsm["spatial"])
    # unused category dropped; codes index the labels
    assert sd.cluster_labels == ["B", "Mac", "T"]
    assert sd.clusters.dtype == np.int64
    assert [sd.cluster_labels[c] for c in sd.clusters] == list(labels)
    assert sd.cluster_key == "cell_type" and sd.spatial_key == "spatial"
    assert sd.var_names == [f"G{j}" for j in range(8)]
    assert sd.obs_names[:2] == ["cell0", "cell1"]
    assert sd.obs.columns[0] == "CellID" and sd.obs.height == 30
    assert sd.obs["n_counts"].to_list() == pytest.approx(list(x.sum(axis=1)))
    np.testing.assert_array_equal(sd.expression("imputed_count"), x * 2.0)
    np.testing.assert_array_equal(sd.gene("G3", layer="imputed_count"), x[:, 3] * 2.0)
    np.testing.assert_array_equal(sd.gene_index(["G5", "G0"]), [5, 0])
    with pytest.raises(InputError, match="not in var_names"):
        sd.gene_index(["G5", "nope"])
    assert sd.n_cells == 30 and sd.n_genes == 8 and sd.n_clusters == 3


def test_layer_selected_and_sparse_kept_sparse(tmp_path):
    ad, x, _ = _adata(sparse=True)
    f = tmp_path / "s.h5ad"
    ad.write_h5ad(f)
    sd = read_spatial(f)
    assert isinstance(sd.X, sp.csr_matrix) and sd.X.dtype == np.float64
    np.testing.assert_array_equal(sd.X.toarray(), x)
    lay = read_spatial(f, layer="sparse_layer")  # stored CSC -> CSR
    assert isinstance(lay.X, sp.csr_matrix) and lay.layer == "sparse_layer"
    np.testing.assert_array_equal(lay.X.toarray(), x)
    dense = read_spatial(f, dense=True)
    assert isinstance(dense.X, np.ndarray) and dense.X.flags.c_contiguous
    np.testing.assert_array_equal(dense.X, x)
    np.testing.assert_array_equal(sd.expression("imputed_count"), 2.0 * x)
    np.testing.assert_array_equal(sd.expression(dense=True), x)
    np.testing.assert_array_equal(sd.gene("G2"), x[:, 2])
    with pytest.raises(InputError, match="layer 'nope' not found") as e:
        read_spatial(f, layer="nope")
    assert "imputed_count" in str(e.value)


def test_anndata_object_and_other_keys():
    ad, x, _ = _adata(obsm_key="X_spatial", cluster_col="leiden")
    sd = read_spatial(ad)
    assert sd.path is None and sd.spatial_key == "X_spatial" and sd.cluster_key == "leiden"
    ad2, _, _ = _adata(obsm_key="spatial_loc", cluster_col="Cluster")  # case-insensitive match
    assert read_spatial(ad2).cluster_key == "Cluster"
    # explicit obs coordinate columns
    ad3, _, _ = _adata(obsm_key=None)
    sd3 = read_spatial(ad3, spatial_key=("xc", "yc"))
    np.testing.assert_array_equal(sd3.coords[:, 0], ad3.obs["xc"].to_numpy())
    # obsm as a DataFrame with 3 columns: first two used
    ad4, _, _ = _adata(obsm_key=None)
    ad4.obsm["spatial"] = pd.DataFrame(
        {"x": ad4.obs["xc"].to_numpy(), "y": ad4.obs["yc"].to_numpy(), "z": 0.0}, index=ad4.obs_names
    )
    np.testing.assert_array_equal(read_spatial(ad4).coords, np.column_stack([ad4.obs["xc"], ad4.obs["yc"]]))


def test_integer_and_string_cluster_columns():
    ad, _, _ = _adata(cluster_col=None)
    ad.obs["cell_type_int"] = np.array([5, 2, 9] * 10)
    sd = read_spatial(ad)
    assert sd.cluster_labels == ["2", "5", "9"]
    np.testing.assert_array_equal(sd.clusters[:3], [1, 0, 2])
    ad.obs["mine"] = np.array(["z", "a"] * 15, dtype=object)
    sd = read_spatial(ad, cluster_key="mine")
    assert sd.cluster_labels == ["a", "z"] and sd.clusters[0] == 1
    one = read_spatial(ad, cluster_key=False)
    assert one.cluster_labels == ["all"] and np.all(one.clusters == 0)


def test_missing_spatial_and_cluster_errors():
    ad, _, _ = _adata(obsm_key="umap_coords")
    with pytest.raises(InputError, match="no spatial coordinates") as e:
        read_spatial(ad)
    assert "umap_coords" in str(e.value)
    with pytest.raises(InputError, match="not in obsm"):
        read_spatial(ad, spatial_key="spatial")
    with pytest.raises(InputError, match="not in obs"):
        read_spatial(ad, spatial_key=("xc", "nope"))
    ad2, _, _ = _adata(cluster_col=None)
    with pytest.raises(InputError, match="no cluster column"):
        read_spatial(ad2)
    with pytest.raises(InputError, match="cluster column 'ct' not in obs") as e:
        read_spatial(ad2, cluster_key="ct")
    assert e.value.column == "ct"


def test_nan_and_non_numeric_coordinates():
    ad, _, _ = _adata()
    xy = ad.obsm["spatial"].copy()
    xy[7, 1] = np.nan
    ad.obsm["spatial"] = xy
    with pytest.raises(InputError, match="NaN or infinite coordinates") as e:
        read_spatial(ad)
    assert "cell7" in str(e.value.row)
    ad.obsm["spatial"] = np.array([["a", "b"]] * 30, dtype=object)
    with pytest.raises(InputError, match="not numeric"):
        read_spatial(ad)
    ad.obsm["spatial"] = np.zeros((30, 1))
    with pytest.raises(InputError, match=r"must be \(n_cells, 2\)"):
        read_spatial(ad)


def test_bad_expression_and_missing_labels(tmp_path):
    ad, _, _ = _adata()
    ad.X[4, 2] = np.nan
    with pytest.raises(InputError, match="NaN or infinite values") as e:
        read_spatial(ad)
    assert "cell4" in str(e.value.row)
    ad2, x, _ = _adata(sparse=True)
    ad2.X.data[:] = 1.0
    ad2.X.data[-1] = np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        read_spatial(ad2)
    ad3, _, _ = _adata()
    ad3.obs["cell_type"] = ad3.obs["cell_type"].astype(object)
    ad3.obs.loc["cell3", "cell_type"] = None
    with pytest.raises(InputError, match="cluster label missing") as e:
        read_spatial(ad3)
    assert "cell3" in str(e.value.row)
    with pytest.raises(InputError, match="not found"):
        read_spatial(tmp_path / "none.h5ad")
    junk = tmp_path / "junk.h5ad"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(InputError, match="cannot read as .h5ad"):
        read_spatial(junk)
    with pytest.raises(InputError, match="expected a .h5ad path or an AnnData"):
        read_spatial(np.zeros((3, 3)))


def test_obs_frame_types():
    ad, _, _ = _adata()
    sd = read_spatial(ad)
    assert sd.obs.schema["cell_type"] == pl.Categorical
    assert sd.obs.schema["n_counts"] in (pl.Float32, pl.Float64)
    assert sd.obs["CellID"].to_list() == sd.obs_names


def test_sparse_array_types_and_backed_anndata(tmp_path):
    """scipy sparse *arrays* (what newer anndata hands back) and backed (on-disk) AnnData work."""
    ad, x, _ = _adata()
    ad.X = sp.csr_array(x)
    sd = read_spatial(ad)
    assert isinstance(sd.X, sp.csr_matrix)
    np.testing.assert_array_equal(sd.X.toarray(), x)
    for sparse in (False, True):
        ad2, x2, _ = _adata(sparse=sparse, seed=3)
        f = tmp_path / f"b{int(sparse)}.h5ad"
        ad2.write_h5ad(f)
        backed = anndata.read_h5ad(f, backed="r")
        try:
            sd2 = read_spatial(backed)
            got = sd2.X.toarray() if sp.issparse(sd2.X) else sd2.X
            np.testing.assert_array_equal(got, x2)
            assert sd2.path == str(f)
        finally:
            backed.file.close()
