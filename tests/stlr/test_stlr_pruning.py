"""CellOracle-style pruning (issue 14): per-cluster bagging-ridge links with p-values against
CellOracle's own ``_fit_GRN_for_network_analysis`` / ``Links.filter_links`` (celloracle_tmp in the
SpaceTravLR reference venv, scikit-learn 1.9.1; tests/data/make/stlr_celloracle_links.py)."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import polars as pl
import pytest

from conftest import stlr_data
from polgen.errors import InputError
from polgen.stlr.grn import regulator_map
from polgen.stlr.pruning import bagging_draws, filter_links, prune_links


@pytest.fixture(scope="module")
def fixture():
    d = stlr_data("celloracle_links")
    z = np.load(d / "inputs.npz")
    a = ad.AnnData(
        X=z["X"].copy(), obs=pd.DataFrame({"cluster": z["clusters"]}, index=[f"c{i}" for i in range(len(z["X"]))])
    )
    a.var_names = [str(g) for g in z["genes"]]
    a.layers["imputed_count"] = z["X"].copy()
    a.obsm["spatial"] = np.random.default_rng(0).uniform(0, 100, (a.n_obs, 2))
    grn = pl.DataFrame({"source": z["grn_source"].astype(str), "target": z["grn_target"].astype(str)})
    want = pl.read_parquet(d / "links.parquet")
    filt = pl.read_parquet(d / "filtered.parquet")
    return a, grn, want, filt


@pytest.fixture(scope="module")
def got(fixture):
    a, grn, _, _ = fixture
    return prune_links(a, grn, alpha=10, bagging_number=20, cluster_key="cluster")


def test_links_match_celloracle(fixture, got):
    _, _, want, _ = fixture
    assert got.height == want.height > 50
    key = ["cluster", "target", "source"]
    g = got.sort(key)
    w = want.select(key + ["coef_mean", "coef_abs", "p", "-logp"]).sort(key)
    assert g.select(key).equals(w.select(key))  # the same links: regulators drawn, clusters, targets
    assert got.select(key).equals(want.select(key))  # in CellOracle's row order
    scale = np.abs(w["coef_mean"].to_numpy()).max()
    err = np.abs(g["coef_mean"].to_numpy() - w["coef_mean"].to_numpy()) / scale
    assert err.max() < 1e-6  # CellOracle solves in float32 (measured 1.3e-7)
    p, q = g["p"].to_numpy(), w["p"].to_numpy()
    assert np.array_equal(np.isnan(p), np.isnan(q))
    ok = ~np.isnan(p)
    assert np.abs(g["-logp"].to_numpy() - w["-logp"].to_numpy()).max() < 1e-4  # measured 3.2e-6
    assert (np.abs(p[ok] - q[ok]) / np.maximum(q[ok], 1e-300)).max() < 1e-4  # measured 7.3e-6
    assert (p[ok] < 1e-3).any() and (p[ok] > 0.1).any()  # both strong and null links in the fixture


def test_filter_links_matches_celloracle(fixture, got):
    _, _, _, filt = fixture
    mine = filter_links(got, p=0.05, weight="coef_abs", threshold_number=5)
    assert mine.select("cluster", "source", "target").equals(filt.select("cluster", "source", "target"))


def test_pruned_links_feed_fit_regulators(got):
    rm = regulator_map(got, alpha=0.05)
    sig = got.filter(pl.col("p") < 0.05)
    assert rm and all(set(v) == set(sig.filter(pl.col("target") == t)["source"]) for t, v in rm.items())
    assert "NotInData" not in {s for v in rm.values() for s in v}


def test_bagging_draws_shape():
    d = bagging_draws(30, 5, 20)
    assert len(d) == 20 and all(f.size == 4 and w.sum() == 30 for f, w in d)
    assert len({tuple(f) for f, _ in d}) > 1


def test_bad_input(fixture):
    a, grn, _, _ = fixture
    with pytest.raises(InputError, match="alpha"):
        prune_links(a, grn, alpha=-1, cluster_key="cluster")
    with pytest.raises(InputError, match="bagging_number"):
        prune_links(a, grn, bagging_number=0, cluster_key="cluster")
    with pytest.raises(InputError, match="not in var_names"):
        prune_links(a, grn, targets=["Nope"], cluster_key="cluster")
    with pytest.raises(InputError, match="lack column"):
        filter_links(pl.DataFrame({"source": ["a"], "target": ["b"]}))


def test_fit_prune_trains_on_the_pruned_links(tmp_path):
    from polgen.stlr import fit
    from polgen.stlr.betadata import Betabase
    from polgen.stlr.synthetic import make_tissue

    t = make_tissue(n_cells=160, n_genes=30, n_clusters=2, seed=4, sparsity=0.2)
    a = t.to_anndata()
    genes = [g for g in t.var_names if g.startswith("Gene")][:3]
    kw = dict(lr=t.lr, cv=0, progress=False, cluster_key="cell_type")
    pruned = prune_links(a, t.links, targets=genes, alpha=5.0, cluster_key="cell_type")
    sig = regulator_map(pruned, alpha=0.05)
    assert any(set(sig.get(g, [])) < set(t.links.filter(pl.col("target") == g)["source"]) for g in genes)
    res = fit(a, genes, out=tmp_path / "p", grn=t.links, prune=True, **kw)
    ref = fit(a, genes, out=tmp_path / "r", grn=pruned, **kw)
    pb, rb = Betabase.coerce(tmp_path / "p"), Betabase.coerce(tmp_path / "r")
    assert res.genes == ref.genes and res.genes
    for g in res.genes:
        assert pb[g].tfs == rb[g].tfs and set(pb[g].tfs) <= set(sig.get(g, []))
        np.testing.assert_array_equal(pb[g].values, rb[g].values)
    assert json.loads((tmp_path / "p" / "stlr_run.json").read_text())["params"]["prune_alpha"] == 5.0
