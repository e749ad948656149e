"""SpaceTravLR on real tissue (issue 14): prepare() from raw counts, the bundled priors, and the
solvers on real designs (the fit -> knock-out path is in test_stlr_real_tissue.py).

Data: tests/data/stlr/visium_mouse_brain_counts.h5ad (49 spots x 1,999 genes of 10x's public
V1_Adult_Mouse_Brain, raw counts) and tests/data/stlr/group_lasso_ref/ (PROVENANCE.md).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import polars as pl
import pytest

from conftest import stlr_data
from polgen.errors import InputError
from polgen.stlr import bundled_grn, bundled_lr, detect_species, fit, prepare
from polgen.stlr.grn import base_grn_links, read_base_grn, read_cellchat
from polgen.stlr.prepare import reference_n_components


@pytest.fixture(scope="module")
def counts() -> ad.AnnData:
    return ad.read_h5ad(stlr_data("visium_mouse_brain_counts.h5ad"))


@pytest.fixture(scope="module")
def prepared(counts) -> ad.AnnData:
    return prepare(counts, copy=True)


# -- prepare ----------------------------------------------------------------------------------------
def test_prepare_layers_match_dense_numpy(counts):
    a = prepare(counts, copy=True)
    C = counts.X.toarray().astype(np.float64)
    norm = np.log1p(C / C.sum(axis=1, keepdims=True) * 1e4)
    np.testing.assert_allclose(a.layers["normalized_count"], norm, rtol=1e-12, atol=1e-12)
    # CellOracle kNN smoothing, written out densely: PCA of the centred layer, k nearest by brute force
    Xc = norm - norm.mean(axis=0)
    U, s, _ = np.linalg.svd(Xc, full_matrices=False)
    evr = s**2 / (s**2).sum()
    n_pcs = a.uns["stlr_prepare"]["n_pcs"]
    assert n_pcs == reference_n_components(evr)
    space = U[:, :n_pcs] * s[:n_pcs]  # distances do not depend on the component signs
    D = ((space[:, None, :] - space[None]) ** 2).sum(-1)
    np.fill_diagonal(D, np.inf)
    k = max(1, int(0.025 * a.n_obs))
    W = np.eye(a.n_obs)
    for i in range(a.n_obs):
        W[i, np.argsort(D[i], kind="stable")[:k]] = 1.0
    W /= W.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(a.layers["imputed_count"], W @ norm, rtol=1e-10, atol=1e-12)
    assert a.layers["raw_count"].nnz == counts.X.nnz
    assert a.obs["stlr_cluster"].nunique() == 3 and a.uns["stlr_prepare"]["clusters_made"]


def test_reference_component_rule():
    # the reference: np.where(np.diff(np.diff(np.cumsum(evr)) > 0.002))[0][0]
    evr = np.array([0.4, 0.2, 0.1, 0.05, 0.01, 0.001, 0.0005, 0.0005])
    want = int(np.where(np.diff(np.diff(np.cumsum(evr)) > 0.002))[0][0])
    assert reference_n_components(evr) == want == 3


def test_prepare_keeps_given_clusters_and_reads_obs_coordinates(counts):
    b = counts.copy()
    b.obs["x"], b.obs["y"] = b.obsm["spatial"][:, 0], b.obsm["spatial"][:, 1]
    del b.obsm["spatial"]
    b.obs["cell_type"] = ["a" if i % 2 else "b" for i in range(b.n_obs)]
    a = prepare(b, impute="none")
    assert a is b
    np.testing.assert_array_equal(a.obsm["spatial"], counts.obsm["spatial"])
    assert "stlr_cluster" not in a.obs and a.uns["stlr_prepare"]["cluster_key"] == "cell_type"
    np.testing.assert_array_equal(a.layers["imputed_count"], a.layers["normalized_count"])
    c = prepare(counts, copy=True, n_clusters=5, cluster_key="mine")
    assert c.obs["mine"].nunique() == 5


def test_prepare_bad_input_is_typed(counts):
    b = counts.copy()
    X = b.X.toarray().astype(np.float64)
    X[3, 7] = np.nan
    b.X = X
    with pytest.raises(InputError, match="NaN") as e:
        prepare(b)
    assert e.value.row == counts.obs_names[3] and e.value.column == counts.var_names[7]
    d = counts.copy()
    d.var_names = [*counts.var_names[:-1], counts.var_names[0]]
    with pytest.raises(InputError, match="more than once"):
        prepare(d)
    n = counts.copy()
    del n.obsm["spatial"]
    with pytest.raises(InputError, match="no spatial coordinates"):
        prepare(n)


# -- priors -----------------------------------------------------------------------------------------
def test_species_detection(counts):
    assert detect_species(list(counts.var_names)) == "mouse"
    assert detect_species([g.upper() for g in counts.var_names]) == "human"
    with pytest.raises(InputError, match="cannot tell the species"):
        detect_species([f"ENSMUSG{i:011d}" for i in range(100)])
    with pytest.raises(InputError, match="cannot tell the species"):
        detect_species(list(counts.var_names[:50]) + [g.upper() for g in counts.var_names[50:100]])


def test_training_uses_the_cluster_column_prepare_recorded(counts):
    """prepare(cluster_key="mine") records the column in uns; reading the tissue for training then
    takes it without cluster_key= again (it is none of the names training looks for by itself)."""
    from polgen.stlr.tissue import as_tissue

    c = prepare(counts, copy=True, n_clusters=4, cluster_key="mine", impute="none")
    t = as_tissue(c)
    assert t.cluster_key == "mine"
    assert sorted(t.cluster_labels) == sorted(str(v) for v in c.obs["mine"].unique())
    c.obs["cell_type"] = "one"  # a column training would otherwise pick
    assert as_tissue(c).cluster_key == "mine" and as_tissue(c, cluster_key="cell_type").cluster_key == "cell_type"
    del c.uns["stlr_prepare"]
    assert as_tissue(c).cluster_key == "cell_type"


def test_undetectable_species_in_fit_is_typed(prepared, tmp_path):
    a = prepared.copy()
    a.var_names = [f"ENSMUSG{i:011d}" for i in range(a.n_vars)]
    with pytest.raises(InputError, match="cannot tell the species"):
        fit(a, genes=2, out=tmp_path / "r", progress=False)


def test_bundled_lr_tables_are_the_reference_tables():
    assert bundled_lr("mouse").equals(read_cellchat(stlr_data("cellchat_mouse.csv")))
    human = bundled_lr("human")
    assert human.columns == ["ligand", "receptor", "pathway", "signaling"] and human.height == 1939
    assert human.filter(pl.col("ligand") == "TGFB1").height > 0


def test_bundled_mouse_grn_matches_the_celloracle_table():
    sub = read_base_grn(
        stlr_data("mm10_TFinfo_dataframe_gimmemotifsv5_fpr1_threshold_10_20210630.Actb_Gata1_Spi1.parquet")
    )
    # dense check of the vectorised conversion: a TF regulates a gene when any of its peaks is non-zero
    tfs = [c for c in sub.columns if c not in ("peak_id", "gene_short_name")]
    want = set()
    for g in ("Actb", "Gata1", "Spi1"):
        rows = sub.filter(pl.col("gene_short_name") == g).select(tfs).to_numpy()
        want |= {(t, g) for k, t in enumerate(tfs) if np.any(rows[:, k] != 0)}
    links = base_grn_links(sub)
    assert set(zip(links["source"], links["target"])) == want and len(want) > 100
    grn = bundled_grn("mouse").filter(pl.col("target").is_in(["Actb", "Gata1", "Spi1"]))
    assert set(zip(grn["source"], grn["target"])) == want


def test_unknown_species_is_typed():  # the human base GRN ships now: test_stlr_human_grn.py
    with pytest.raises(InputError, match="species must be one of"):
        bundled_grn("rat")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="species must be one of"):
        bundled_lr("rat")  # type: ignore[arg-type]


def test_grn_accepts_a_celloracle_table(prepared, tmp_path):
    a = prepared.copy()
    # a CellOracle peak x TF table whose peaks belong to a gene of these data: the Actb peaks given to Pcp4
    sub = read_base_grn(
        stlr_data("mm10_TFinfo_dataframe_gimmemotifsv5_fpr1_threshold_10_20210630.Actb_Gata1_Spi1.parquet")
    )
    table = sub.filter(pl.col("gene_short_name") == "Actb").with_columns(pl.lit("Pcp4").alias("gene_short_name"))
    res = fit(
        a, genes=["Pcp4"], grn=table, out=tmp_path / "r", progress=False, max_iter=200, cv=0, contact_distance=100
    )
    assert res.genes == ["Pcp4"] and res.scores.height == 3
    from polgen.stlr.betadata import Betabase

    tfs = set(Betabase.coerce(tmp_path / "r")["Pcp4"].tfs)
    want = set(base_grn_links(table, list(a.var_names))["source"])
    assert tfs == want - {"Pcp4"} and tfs


# -- solver="reference": group-lasso 1.5.0's iteration ------------------------------------------------
def test_reference_solver_reproduces_group_lasso_150():
    """Stored fits of group-lasso 1.5.0 (reference settings) on real designs and an ill-conditioned
    synthetic one (tests/data/make/stlr_group_lasso_ref.py): same iterations, betas to 1e-6."""
    from polgen.stlr.lasso import sparse_group_lasso

    inp = np.load(stlr_data("group_lasso_ref", "inputs.npz"))
    out = np.load(stlr_data("group_lasso_ref", "outputs.npz"))
    for k in range(int(inp["n"])):
        fit_ = sparse_group_lasso(inp[f"X{k}"], inp[f"y{k}"], inp[f"g{k}"], 1e-7, 1e-9, solver="reference")
        w = out[f"w{k}"]
        assert fit_.n_iter == int(out[f"it{k}"])
        np.testing.assert_allclose(fit_.coef, w, rtol=0, atol=1e-6 * np.abs(w).max())
        assert abs(fit_.intercept - float(out[f"b{k}"][0])) <= 1e-6 * max(1.0, abs(fit_.intercept))


def test_fit_with_reference_solver_records_it(prepared, tmp_path):
    a = prepared.copy()
    res = fit(a, genes=["Pcp4"], out=tmp_path / "r", progress=False, solver="reference", cv=0, contact_distance=100)
    big = res.scores.filter(pl.col("n_cells") >= 10)  # the reference stops at its 1500 iterations there
    assert (big["n_iter"] == 1500).all() and not big["converged"].any() and (res.scores["n_iter"] <= 1500).all()
    import json

    params = json.loads((tmp_path / "r" / "stlr_run.json").read_text())["params"]
    assert params["solver"] == "reference" and params["max_iter"] == 1500 and params["tol"] == 1e-5


def test_default_solver_converges_on_real_designs_below_the_first_order_solvers():
    """The stored real designs (more modulators than spots, condition numbers ~1e5-1e6): the default
    solver (majorise-minimise start + FISTA) converges, and its objective is at or below both
    group-lasso 1.5.0's iteration and FISTA from zero run 20x longer (which stop short)."""
    from polgen.stlr.lasso import sparse_group_lasso

    inp = np.load(stlr_data("group_lasso_ref", "inputs.npz"))
    for k in range(int(inp["n"])):
        X, y, g = inp[f"X{k}"], inp[f"y{k}"], inp[f"g{k}"]
        best = sparse_group_lasso(X, y, g)
        ref = sparse_group_lasso(X, y, g, solver="reference")
        zero = sparse_group_lasso(X, y, g, w0=np.zeros(X.shape[1]), max_iter=100_000)
        assert best.converged
        assert best.objective <= min(ref.objective, zero.objective) * (1 + 1e-9)
        assert best.objective < zero.objective or zero.converged
