"""polgen.plot scree / spatial / transitions: the drawn data equal the input, typed errors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

pytest.importorskip("matplotlib")

from polgen.errors import InputError, SchemaError  # noqa: E402
from polgen.plot import scree, spatial, transitions  # noqa: E402


def _choose_k():
    from polgen.lfmm.choosek import ChooseKResult

    ev = np.array([50.0, 20.0, 8.0, 3.0, 2.5, 2.2, 2.0, 1.9])
    p = np.array([1e-10, 1e-6, 1e-3, 0.2, 0.5, 0.6, 0.7, 0.8])
    return ChooseKResult(
        eigenvalues=ev, tw_statistic=ev, p_values=p, n_eff=ev, trace=100.0, n_snps=1000, method="centered"
    )


def test_scree_of_choose_k_marks_its_suggested_k(tmp_path):
    r = scree(_choose_k(), tmp_path / "s.png")
    ax = r.figure.axes[0]
    line = [ln for ln in ax.lines if ln.get_gid() == "scree-EIGENVALUE"][0]
    assert np.array_equal(line.get_xdata(), np.arange(1, 9)) and line.get_ydata()[0] == 50.0
    assert r.info["suggested_k"] == 3
    assert [ln for ln in ax.lines if ln.get_gid() == "suggested-k"][0].get_xdata()[0] == 3.5
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_scree_of_a_generic_eigenvalue_frame():
    # parallel analysis layout: observed and simulated eigenvalues (what pa_ldsc will return)
    df = pl.DataFrame({"component": [1, 2, 3, 4], "observed": [3.0, 1.2, 0.5, 0.2], "simulated": [1.1, 0.9, 0.7, 0.5]})
    r = scree(df, suggested_k=2)
    ax = r.figure.axes[0]
    assert {ln.get_gid() for ln in ax.lines} >= {"scree-observed", "scree-simulated", "suggested-k"}
    assert r.info["columns"] == ["observed", "simulated"]
    assert scree(np.array([4.0, 2.0, 1.0])).info["columns"] == ["EIGENVALUE"]
    assert scree(_choose_k().frame(), alpha=1e-4).info["suggested_k"] == 2
    with pytest.raises(SchemaError):
        scree(df, columns=["nope"])


def test_spatial_values_on_coordinates(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    cells = pl.DataFrame(
        {
            "CellID": [f"c{i}" for i in range(n)],
            "x": rng.uniform(0, 100, n),
            "y": rng.uniform(0, 100, n),
            "cluster": rng.choice(["a", "b", "c"], n),
        }
    )
    vals = rng.normal(size=n)
    r = spatial(cells, vals, tmp_path / "v.png", center=0.0)
    sc = [c for c in r.figure.axes[0].collections if c.get_gid() == "cells"][0]
    assert np.allclose(sc.get_offsets(), cells.select("x", "y").to_numpy())
    assert np.allclose(sc.get_array(), vals)
    assert sc.norm.vcenter == 0.0
    # categories: one collection per level with its cells
    rc = spatial(cells, "cluster")
    for lev in ("a", "b", "c"):
        col = [c for c in rc.figure.axes[0].collections if c.get_gid() == f"cells-{lev}"][0]
        assert len(col.get_offsets()) == (cells["cluster"] == lev).sum()
    # a CellID-keyed frame is joined on the cells (missing cells grey)
    part = pl.DataFrame({"CellID": ["c3", "c1"], "delta": [1.0, -2.0]})
    rp = spatial(cells, part)
    colls = {c.get_gid(): c for c in rp.figure.axes[0].collections}
    assert len(colls["cells"].get_offsets()) == 2 and len(colls["cells-missing"].get_offsets()) == n - 2
    assert np.allclose(colls["cells"].get_array(), [-2.0, 1.0])
    with pytest.raises(SchemaError):
        spatial(cells.drop("x"), vals)
    with pytest.raises(InputError, match="values for"):
        spatial(cells, vals[:10])


def test_spatial_reads_anndata(tmp_path):
    ad = pytest.importorskip("anndata")
    rng = np.random.default_rng(1)
    n = 120
    a = ad.AnnData(X=rng.poisson(2.0, (n, 4)).astype(np.float64))
    a.var_names = ["G1", "G2", "G3", "G4"]
    a.obs_names = [f"c{i}" for i in range(n)]
    a.obsm["spatial"] = rng.uniform(0, 50, (n, 2))
    a.obs["cell_type"] = rng.choice(["T", "B"], n)
    a.write_h5ad(tmp_path / "t.h5ad")
    r = spatial(tmp_path / "t.h5ad", "G2")
    sc = [c for c in r.figure.axes[0].collections if c.get_gid() == "cells"][0]
    assert np.allclose(sc.get_offsets(), a.obsm["spatial"]) and np.allclose(sc.get_array(), a.X[:, 1])
    assert spatial(a, "cell_type").info["values"] == "cell_type"
    with pytest.raises(InputError, match="neither"):
        spatial(a, "G9")


def test_transitions_grid_average_equals_direct_computation():
    rng = np.random.default_rng(2)
    n = 500
    df = pl.DataFrame(
        {"x": rng.uniform(0, 10, n), "y": rng.uniform(0, 10, n), "dx": rng.normal(size=n), "dy": rng.normal(size=n)}
    )
    r = transitions(df, grid=4)
    q = [c for c in r.figure.axes[0].collections if c.get_gid() == "arrows"][0]
    x, y = df["x"].to_numpy(), df["y"].to_numpy()
    gx = np.clip(np.floor((x - x.min()) / ((x.max() - x.min()) / 4)), 0, 3)
    gy = np.clip(np.floor((y - y.min()) / ((y.max() - y.min()) / 4)), 0, 3)
    want = {}
    for i in range(4):
        for j in range(4):
            m = (gx == i) & (gy == j)
            if m.any():
                want[(i, j)] = (df["dx"].to_numpy()[m].mean(), df["dy"].to_numpy()[m].mean())
    assert len(q.U) == len(want)
    got = sorted(zip(q.U, q.V))
    assert np.allclose(np.array(got), np.array(sorted(want.values())))
    one = transitions(df, grid=None)
    assert one.info["n_arrows"] == n
    with pytest.raises(SchemaError):
        transitions(df.drop("dy"))
