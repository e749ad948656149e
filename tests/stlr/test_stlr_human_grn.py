"""The bundled human base GRN (polgen/stlr/data/base_grn_human.parquet: DoRothEA's human regulons, levels
A-E) and ``grn=None`` on human data.

Reference: the source's own rows for five targets (tests/data/stlr/dorothea/dorothea_hs_rows.csv, read
from saezlab/dorothea's ``data/dorothea_hs.rda`` by tests/data/make/stlr_base_grn_human.py).  Tissue: no
public human spatial counts are stored here, so the fit runs on the real MOB subset (tests/data/stlr/mob/)
with its symbols upper-cased (human symbols of the orthologues for most genes): what is tested is the
human path (species detection, the bundled human tables, training, a knock-out), not biology.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import polars as pl
import pytest

from conftest import stlr_data
from polgen.stlr import bundled_grn, detect_species, fit, perturb, prepare
from polgen.stlr.priors import DATA, resolve_priors


def test_human_grn_is_dorothea_levels_a_to_e():
    grn = bundled_grn("human")
    assert grn.columns == ["source", "target"]
    assert grn.height == 454_504 and grn["source"].n_unique() == 1333 and grn["target"].n_unique() == 20_295
    assert grn.is_unique().all()
    assert grn.equals(grn.sort(["target", "source"]))
    rows = pl.read_csv(stlr_data("dorothea", "dorothea_hs_rows.csv"))
    assert set(rows["confidence"]) == {"A", "B", "C", "D", "E"}
    for target in rows["target"].unique():
        want = set(rows.filter(pl.col("target") == target)["tf"])
        got = set(grn.filter(pl.col("target") == target)["source"])
        assert got == want and want, target
    assert grn.filter((pl.col("source") == "TP53") & (pl.col("target") == "CDKN1A")).height == 1


@pytest.fixture(scope="module")
def human_tissue() -> ad.AnnData:
    a = ad.read_h5ad(stlr_data("mob", "mob_rep11_subset.h5ad"))
    a = a[a.obs["layer"].notna()].copy()
    a.var_names = [g.upper() for g in a.var_names]
    a.obsm["spatial"] = a.obsm["spatial"] * 200.0  # ST array units -> microns
    return prepare(a, cluster_key="layer")


def test_species_detected_and_bundled_human_priors_chosen(human_tissue):
    names = list(human_tissue.var_names)
    assert detect_species(names) == "human"
    lr, grn, sp = resolve_priors(None, None, None, names)
    assert sp == "human" and grn == DATA / "base_grn_human.parquet" and lr == DATA / "cellchat_human.parquet"


def test_fit_and_knockout_on_human_symbols_with_grn_none(human_tissue, tmp_path):
    res = fit(
        human_tissue, genes=2, out=tmp_path / "run", progress=False, cv=0, contact_distance=100, cluster_key="layer"
    )
    assert len(res.genes) == 2 and res.scores.height == 2 * 5
    grn = bundled_grn("human")
    from polgen.stlr.betadata import Betabase

    bb = Betabase.coerce(tmp_path / "run")
    present = set(human_tissue.var_names)
    for g in res.genes:
        tfs = set(bb[g].tfs)
        # the TF modulators are the gene's DoRothEA regulators measured here
        assert tfs and tfs <= set(grn.filter(pl.col("target") == g)["source"]) & present
    assert res.scores["converged"].all()
    tf = sorted(bb[res.genes[0]].tfs)[0]
    sim, delta = perturb(human_tissue, tmp_path / "run", tf, 0.0, return_delta=True)
    assert np.all(sim[tf].to_numpy() == 0.0)  # the knock-out is pinned
    moved = [g for g in res.genes if np.abs(delta[g].to_numpy()).max() > 0]
    assert res.genes[0] in moved  # the TF's target responds
    assert np.isfinite(sim.drop("CellID").to_numpy()).all()
