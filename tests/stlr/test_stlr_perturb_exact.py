"""Exact perturbation on a tissue large enough that the exact received-ligand sums skip far tile
pairs (radius 50 on a 2,400-wide tissue) and use both symmetric and per-step paths, against the
dense numpy reference of tests/test_stlr_core.py (full N x N Gaussian matrices)."""

from __future__ import annotations

import numpy as np
import pytest

from polgen.stlr import perturb
from polgen.stlr.grn import ligand_radii, lr_table
from polgen.stlr.synthetic import make_betabase, make_tissue
from tests.stlr.test_stlr_core import ref_perturb


@pytest.fixture(scope="module")
def wide():
    t = make_tissue(n_cells=1400, n_genes=30, n_clusters=4, seed=21, extent=2400.0, sparsity=0.5)
    rm = ligand_radii(lr_table(t.lr, t.var_names, radius=200.0, contact_distance=50.0))
    return t, rm


@pytest.mark.parametrize("target_kind", ["ligand", "tf"])
def test_exact_perturb_matches_dense_with_far_tiles_skipped(wide, target_kind):
    t, rm = wide
    assert {50.0, 200.0} <= set(rm.values())
    base = make_betabase(t, n_trained=12, seed=6, zero_cluster=False)
    target = t.ligands[0] if target_kind == "ligand" else t.tfs[0]
    a = t.to_anndata()
    got = perturb(a, base, target, 0.0, lr=t.lr, n_propagation=3, cluster_key="cell_type")
    want = ref_perturb(t, base, rm, target, 0.0, 3)
    M = got.drop("CellID").to_numpy()
    scale = np.maximum(np.abs(want).max(axis=0), 1e-300)
    assert (np.abs(M - want) / scale).max() < 1e-12
    # elementwise too, where the expression is not tiny
    big = np.abs(want) > 1e-6 * scale
    assert (np.abs(M - want)[big] / np.abs(want[big])).max() < 1e-11
    others = [j for j, g in enumerate(t.var_names) if g != target]
    assert np.abs(M[:, others] - t.X[:, others]).max() > 1e-3
