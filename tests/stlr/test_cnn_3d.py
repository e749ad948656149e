"""3-D coordinates (issue 19).  The SpaceTravLR reference treats ``obsm["spatial"]`` with three
columns as a 3-D tissue (``SpatialCellularProgramsEstimator3D``: 3-D maps, a Conv3d network, 3-D
Gaussian ligand kernels).  polgen's kernels are 2-D, so it refuses such a tissue with a typed
error naming the columns - in fit (every training mode), perturb and transitions alike - instead
of silently dropping z; a constant extra column (one section) is the plane and trains exactly as
the 2-D tissue."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from polgen.errors import InputError
from polgen.stlr import perturb
from polgen.stlr.betadata import read_betadata
from polgen.stlr.cnn import spatial_inputs
from polgen.stlr.synthetic import make_betabase, make_tissue
from polgen.stlr.train import fit
from polgen.stlr.transitions import transitions


@pytest.fixture(scope="module")
def tissue():
    return make_tissue(n_cells=120, n_genes=20, n_clusters=2, seed=3, extent=400.0)


def _with_z(t, z, as_frame=True):
    a = t.to_anndata()
    xyz = np.column_stack([t.coords, z])
    a.obsm["spatial"] = pd.DataFrame(xyz, columns=["x", "y", "z"], index=a.obs_names) if as_frame else xyz
    return a


@pytest.mark.parametrize("mode", ["seed", "full"])
def test_fit_refuses_varying_z_naming_the_column(tissue, tmp_path, mode):
    t = tissue
    z = np.repeat([0.0, 10.0, 20.0], 40)  # three serial sections
    with pytest.raises(InputError, match=r"x, y, z.*\['z'\] varies") as ei:
        fit(_with_z(t, z), ["Gene000"], out=tmp_path / "f", lr=t.lr, grn=t.links, cv=0, training_mode=mode, epochs=1)
    assert ei.value.column == "spatial[z]" and "3-D" in str(ei.value)
    assert not (tmp_path / "f").exists()
    with pytest.raises(InputError, match=r"0, 1, 2.*\['2'\] varies"):  # a plain array: columns by position
        fit(_with_z(t, z, as_frame=False), ["Gene000"], out=tmp_path / "g", lr=t.lr, grn=t.links, cv=0)


def test_constant_z_is_the_plane(tissue, tmp_path):
    t = tissue
    kw = dict(lr=t.lr, grn=t.links, cv=0)
    flat = fit(t.to_anndata(), ["Gene000"], out=tmp_path / "a", **kw)
    one = fit(_with_z(t, np.full(120, 7.0)), ["Gene000"], out=tmp_path / "b", **kw)
    A, B = read_betadata(flat.files[0]), read_betadata(one.files[0])
    np.testing.assert_array_equal(A.values, B.values)
    assert A.columns == B.columns


def test_perturb_and_transitions_refuse_3d(tissue):
    t = tissue
    a = _with_z(t, np.linspace(0, 50, 120))
    base = make_betabase(t, n_trained=4, seed=1)
    with pytest.raises(InputError, match="3-D"):
        perturb(a, base, t.tfs[0], 0.0, lr=t.lr, n_propagation=1)
    frame = pl.DataFrame({"CellID": t.obs_names, t.tfs[0]: np.zeros(120)})
    with pytest.raises(InputError, match="3-D"):
        transitions(a, frame, n_neighbors=10)
    # a 3-column embedding on a 2-D tissue: named, with the 2-column way out
    flat = t.to_anndata()
    flat.obsm["X_umap3"] = np.random.default_rng(0).normal(size=(120, 3))
    with pytest.raises(InputError, match=r"'X_umap3' has 3 columns.*\[:, :2\]"):
        transitions(flat, frame, embedding="X_umap3", n_neighbors=10)
    got = transitions(flat, frame, embedding=flat.obsm["X_umap3"][:, :2], n_neighbors=10)
    assert got.columns[:5] == ["CellID", "x", "y", "dx", "dy"]


def test_cnn_inputs_refuse_3d_arrays():
    xyz = np.random.default_rng(1).uniform(0, 100, (30, 3))
    with pytest.raises(InputError, match="x, y, z"):
        spatial_inputs(xyz, np.zeros(30, np.int64), 1, 8, 20.0)
