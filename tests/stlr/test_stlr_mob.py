"""SpaceTravLR on the real Stahl 2016 mouse olfactory bulb (issue 14): the 262-spot ST replicate 11 with 300 of
its genes (tests/data/stlr/mob/, from MERINGUE's mOB; PROVENANCE.md), MERINGUE's five layers as clusters, the
bundled mouse priors.  The full 15,928-gene timings are bench/stlr_real.py's (bench/RESULTS.md).
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pytest

from conftest import stlr_data
from polgen.stlr import fit, prepare


@pytest.fixture(scope="module")
def mob() -> ad.AnnData:
    a = ad.read_h5ad(stlr_data("mob", "mob_rep11_subset.h5ad"))
    assert a.shape == (262, 300)
    return a


def test_near_empty_spots_make_tiny_kmeans_clusters_and_are_reported(mob, caplog):
    with caplog.at_level(logging.WARNING, logger="polgen"):
        b = prepare(mob, copy=True)  # k-means: the two spots with 2 and 4 counts form a cluster of their own
    sizes = b.obs["stlr_cluster"].value_counts()
    assert sizes.min() < 5
    assert any("fewer than 5 cells" in r.getMessage() for r in caplog.records)


def test_radius_in_the_wrong_units_warns_on_real_coordinates(mob, tmp_path, caplog):
    a = prepare(mob[mob.obs["layer"].notna()].copy(), cluster_key="layer")  # coordinates in ST array units (~20)
    with caplog.at_level(logging.WARNING, logger="polgen"):
        fit(a, genes=1, out=tmp_path / "r", progress=False, cv=0, cluster_key="layer")
    assert any("radius=200 is larger than the tissue's extent" in r.getMessage() for r in caplog.records)


def test_default_solver_converges_and_reports_held_out_r2(mob, tmp_path):
    a = mob[mob.obs["layer"].notna()].copy()
    a.obsm["spatial"] = a.obsm["spatial"] * 200.0  # microns: spots 200 um apart
    a = prepare(a, cluster_key="layer")
    res = fit(a, genes=2, out=tmp_path / "f", progress=False, cv=3, cluster_key="layer", contact_distance=100)
    s = res.scores
    assert s.height == 2 * 5 and not s["zeroed"].any()
    assert s["converged"].all()  # every model of the default solver converged
    cv = s["cv_r2"].to_numpy()
    assert np.isfinite(cv).all() and (cv < s["r2"].to_numpy()).all()  # held-out below in-sample, reported
    kw = {"progress": False, "cv": 0, "cluster_key": "layer", "contact_distance": 100}
    ref = fit(a, genes=2, out=tmp_path / "r", solver="reference", **kw)
    # group-lasso 1.5.0's iteration stops at its 1500 iterations on these designs, and says so
    assert (~ref.scores["converged"]).sum() >= 1
