"""SpaceTravLR per-cell betas (issue 19): spatial maps, the CNN training modes, the hybrid gate,
perturbation on per-cell betadata against the Python reference, and the torch-less paths.

Reference numbers in tests/data/stlr/cnn/ come from tests/data/make/stlr_cnn_reference.py (the
reference runs there, in its own venv; never here).  Tests that train need PyTorch
(``polgen[cnn]``) and are skipped without it (``pytest.importorskip("torch")``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from polgen.errors import InputError, PolgenError
from polgen.kernels.stlr_maps import neighbour_counts, spatial_maps
from polgen.stlr import perturb
from polgen.stlr.betadata import Betabase, read_betadata
from polgen.stlr.cnn import (
    META_CNN,
    CnnOptions,
    TorchMissingError,
    cell_betas,
    cnn_options,
    hybrid_gate,
    read_cnn_records,
    spatial_inputs,
    train_cluster,
)
from polgen.stlr.synthetic import make_tissue
from polgen.stlr.tissue import Tissue
from polgen.stlr.train import fit

DATA = Path(__file__).resolve().parents[1] / "data" / "stlr" / "cnn"


def _dense_maps(xy: np.ndarray, d: int) -> np.ndarray:
    """The reference's xyc2spatial_fast, one channel, in plain numpy (float32 as it rounds)."""
    xmin, ymin = xy.min(0)
    xmax, ymax = xy.max(0)
    cx = xmin + (np.arange(d) + 0.5) * (xmax - xmin) / d
    cy = ymax - (np.arange(d) + 0.5) * (ymax - ymin) / d
    dist = np.sqrt((cx[None, None, :] - xy[:, 0, None, None]) ** 2 + (cy[None, :, None] - xy[:, 1, None, None]) ** 2)
    m = dist.astype(np.float32)
    lo = m.min(axis=(1, 2), keepdims=True)
    den = np.maximum(m.max(axis=(1, 2), keepdims=True) - lo, np.float32(1e-15))
    return (m - lo) / den


def test_spatial_maps_and_counts_match_dense_numpy():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 700, (257, 2))
    got = spatial_maps(xy, 16, 12)
    want = _dense_maps(xy, 16)[:, :, :16]
    assert got.dtype == np.float32 and got.shape == (257, 16, 12)
    np.testing.assert_array_equal(spatial_maps(xy, 16, 16), want)
    cl = rng.integers(0, 4, 257)
    D = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    want_c = np.stack([((D <= 90.0) & (cl[None] == c)).sum(1) for c in range(4)], 1)
    np.testing.assert_array_equal(neighbour_counts(xy, cl, 4, 90.0), want_c)
    inp = spatial_inputs(xy, cl, 4, 16, 90.0)
    f = inp.features
    assert f.dtype == np.float32 and np.allclose(f.min(0), 0) and np.allclose(f.max(0), 1)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": -3}, "epochs"),
        ({"spatial_dim": 4}, "spatial_dim"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"training_mode": "deep"}, "training_mode"),
    ],
)
def test_bad_options_are_input_errors(kw, match):
    args = {"training_mode": "full", **kw}
    with pytest.raises(InputError, match=match):
        cnn_options(args.pop("training_mode"), **args)


def test_spatial_dim_that_does_not_fit_the_tissue():
    with pytest.raises(InputError, match="does not fit this tissue"):
        cnn_options("seed", spatial_dim=4096, n_cells=100)  # checked only when the CNN runs
        cnn_options("full", spatial_dim=4096, n_cells=100)
    with pytest.raises(InputError, match="does not fit this tissue"):
        cnn_options("full", spatial_dim=4096, n_cells=100)
    with pytest.raises(InputError, match="2-D coordinates"):
        spatial_inputs(np.zeros((5, 3)), np.zeros(5, np.int64), 1, 16, 10.0)


def test_without_torch_cnn_modes_name_the_extra_and_seed_mode_works(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(TorchMissingError, match=r"polgen\[cnn\]") as ei:
        cnn_options("hybrid")
    assert isinstance(ei.value, PolgenError) and isinstance(ei.value, ImportError)
    t = _spatial_tissue(n_cells=200)
    with pytest.raises(TorchMissingError, match=r"polgen\[cnn\]"):
        fit(t.to_anndata(), ["Gene000"], out=tmp_path / "h", lr=t.lr, grn=t.links, cv=0, training_mode="hybrid")
    r = fit(t.to_anndata(), ["Gene000"], out=tmp_path / "s", lr=t.lr, grn=t.links, cv=0, training_mode="seed")
    assert read_betadata(r.files[0]).id_kind == "Cluster"


# -- perturbation on per-cell betadata: the reference's own numbers -------------------------------------
def _fixture_tissue():
    arr = np.load(DATA / "tissue.npz")
    names = json.loads((DATA / "names.json").read_text())
    labels = names["cluster_labels"]
    return (
        Tissue(
            X=np.ascontiguousarray(arr["X"]),
            var_names=names["var_names"],
            obs_names=names["obs_names"],
            coords=np.ascontiguousarray(arr["xy"]),
            clusters=arr["clusters"].astype(np.int64),
            cluster_labels=labels,
        ),
        pl.read_csv(DATA / "lr.csv"),
    )


@pytest.mark.parametrize("kind", ["tf", "ligand"])
def test_perturb_on_cnn_betadata_equals_reference(kind):
    t, lr = _fixture_tissue()
    targets = json.loads((DATA / "perturb_targets.json").read_text())
    frames = [read_betadata(f) for f in sorted((DATA / "betadata").glob("*_betadata.parquet"))]
    assert frames and all(bd.id_kind == "CellID" for bd in frames)
    base = Betabase(frames)
    got = perturb(t, base, targets[kind], 0.0, lr=lr, n_propagation=3).drop("CellID").to_numpy()
    want = np.load(DATA / "ref_perturb.npz")[kind]
    scale = np.maximum(np.abs(want).max(axis=0), 1e-300)
    assert (np.abs(got - want) / scale).max() < 1e-9
    moved = [j for j in range(want.shape[1]) if np.abs(want[:, j] - t.X[:, j]).max() > 1e-6]
    assert len(moved) >= 2  # the perturbation propagated through the per-cell betas


def test_perturb_with_betas_of_genes_not_in_the_data_is_an_input_error():
    t, lr = _fixture_tissue()
    bd = read_betadata(sorted((DATA / "betadata").glob("*_betadata.parquet"))[0])
    cols = list(bd.columns)
    cols[1] = "beta_NotAGene"
    bad = type(bd)(gene=bd.gene, id_kind=bd.id_kind, ids=bd.ids, columns=cols, values=bd.values)
    with pytest.raises(InputError, match="NotAGene"):
        perturb(t, Betabase([bad]), t.var_names[1], 0.0, lr=lr, n_propagation=1)
    with pytest.raises(InputError, match="NotAGene"):
        fit(
            t,
            ["NotAGene"],
            out=Path("/nonexistent/never-written"),
            lr=lr,
            grn=pl.read_csv(DATA / "links.csv"),
            training_mode="full",
            epochs=1,
        )


# -- training (torch) ------------------------------------------------------------------------------
def _spatial_tissue(n_cells: int = 400, seed: int = 2, spatial: tuple[str, ...] = ("Gene000",), extent=700.0):
    """make_tissue whose ``spatial`` genes follow their regulators with a slope varying along x, and
    Gene001 (when not in ``spatial``) with a constant slope."""
    t = make_tissue(n_cells=n_cells, n_genes=20, n_clusters=2, seed=seed, extent=extent, sparsity=0.05)
    rng = np.random.default_rng(seed + 1)
    for g in ("Gene000", "Gene001"):
        slope = 1.0 + 0.8 * np.sin(t.coords[:, 0] / 120.0) if g in spatial else np.ones(n_cells)
        ri = [t.var_names.index(r) for r in t.links.filter(pl.col("target") == g)["source"].to_list()]
        t.X[:, t.var_names.index(g)] = 1.0 + (t.X[:, ri] * slope[:, None]).sum(1) + rng.normal(0, 0.1, n_cells)
    return t


def test_hybrid_gives_per_cell_betas_where_neighbourhoods_differ(tmp_path):
    pytest.importorskip("torch")
    t = _spatial_tissue()
    r = fit(
        t.to_anndata(),
        ["Gene000", "Gene001"],
        out=tmp_path / "fit",
        lr=t.lr,
        grn=t.links,
        cv=0,
        training_mode="hybrid",
        epochs=8,
        spatial_dim=16,
        batch_size=64,
        seed=1,
    )
    spatial, flat = (read_betadata(r.out / f"{g}_betadata.parquet") for g in ("Gene000", "Gene001"))
    assert spatial.id_kind == "CellID" and spatial.ids == t.obs_names
    assert flat.id_kind == "Cluster"  # constant slope: residuals without spatial structure
    rec = read_cnn_records(str(r.out))
    assert rec["Gene000"]["cnn"] and rec["Gene000"]["moran_p"] <= 0.05
    assert not rec["Gene001"]["cnn"] and rec["Gene001"]["moran_p"] > 0.05
    slope = np.sin(t.coords[:, 0] / 120.0)
    tf = [k for k, c in enumerate(spatial.columns) if c.startswith("beta_Tf")]
    b_all = spatial.values[:, tf].mean(1)
    assert np.corrcoef(b_all, slope)[0, 1] > 0.25  # the per-cell betas follow the true slope
    for c in range(2):
        m = t.clusters == c
        cl = rec["Gene000"]["clusters"][t.cluster_labels[c]]
        assert len(cl["losses"]) == 8 * -(-int(m.sum()) // 64) and cl["losses"][-1] < cl["losses"][0]
        b = spatial.values[m][:, tf].mean(1)
        assert b.std() > 0.05 * abs(b.mean())  # betas vary within the cluster
        assert np.corrcoef(b, slope[m])[0, 1] > 0.1


def test_spatially_constant_tissue_reduces_to_seed_betas():
    pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    n, p = 160, 3
    X = rng.gamma(2.0, 1.0, (n, p))
    b = np.array([0.5, 1.0, -0.7, 0.3])
    y = b[0] + X @ b[1:] + rng.normal(0, 0.05, n)
    A = np.column_stack([np.ones(n), X])
    seed_b = np.linalg.lstsq(A, y, rcond=None)[0]
    inp = spatial_inputs(np.full((n, 2), 3.0), np.zeros(n, np.int64), 1, 8, 50.0)  # every cell at one spot
    assert not inp.maps.any() and not inp.features.any()
    opts = CnnOptions(training_mode="full", epochs=150, spatial_dim=8, batch_size=80, learning_rate=5e-3)
    f = train_cluster(inp.maps, inp.features, X, y, seed_b, opts, seed=2)
    assert not f.zeroed
    assert np.ptp(f.betas, axis=0).max() <= 1e-6 * np.abs(f.betas).max()  # one beta row for all cells
    np.testing.assert_allclose(f.betas[0], seed_b, rtol=0.03, atol=0.02)


def test_zero_anchor_clusters_and_seed_mode_pass_through():
    n = 50
    bd = read_betadata(sorted((DATA / "betadata").glob("*_betadata.parquet"))[0])
    seedb = type(bd)(
        gene="G", id_kind="Cluster", ids=["a", "b"], columns=bd.columns, values=np.zeros((2, len(bd.columns)))
    )
    X = np.ones((n, len(bd.columns) - 1))
    inp = spatial_inputs(np.random.default_rng(0).uniform(0, 9, (n, 2)), np.zeros(n, np.int64), 2, 8, 3.0)
    same, rec = cell_betas(seedb, X, np.ones(n), np.zeros(n, np.int64), inp, [str(i) for i in range(n)], CnnOptions())
    assert same is seedb and rec["cnn"] is False
    pytest.importorskip("torch")
    out, rec = cell_betas(
        seedb, X, np.ones(n), np.zeros(n, np.int64), inp, [str(i) for i in range(n)], CnnOptions(training_mode="full")
    )
    assert out.id_kind == "CellID" and not out.values.any() and rec["clusters"]["a"]["zeroed"]


def test_hybrid_gate_rules():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (300, 2))
    smooth = np.sin(xy[:, 0] / 10.0)
    opts = CnnOptions(training_mode="hybrid")
    ok = hybrid_gate(xy, smooth, np.array([150, 150]), np.array([0.5, 0.6]), np.array([True, True]), 5, 0.15, opts, 1)
    assert ok[0] and ok[3] <= 0.05
    noise = rng.normal(size=300)
    assert not hybrid_gate(xy, noise, np.array([150, 150]), np.array([0.5, 0.6]), np.ones(2, bool), 5, 0.15, opts, 1)[0]
    few = hybrid_gate(xy, smooth, np.array([250, 50]), np.array([0.5, 0.6]), np.ones(2, bool), 5, 0.15, opts, 1)
    assert not few[0] and "cells" in few[1]
    low = hybrid_gate(xy, smooth, np.array([150, 150]), np.array([0.1, 0.1]), np.ones(2, bool), 5, 0.15, opts, 1)
    assert not low[0] and "R^2" in low[1]


# -- against the reference's own CNN training, in distribution -----------------------------------------
def test_loss_curves_and_cell_betas_agree_with_reference_in_distribution():
    pytest.importorskip("torch")
    ref = np.load(DATA / "ref_cnn.npz")
    arr = np.load(DATA / "tissue.npz")
    xy, clusters = arr["xy"], arr["clusters"].astype(np.int64)
    inp = spatial_inputs(xy, clusters, 3, 16, 200.0)
    opts = CnnOptions(training_mode="full", epochs=10, spatial_dim=16, batch_size=32)
    Xn, yn, rb = ref["Xn"], ref["yn"], ref["betas"]
    for c in range(3):
        anchors = ref[f"anchors_{c}"]
        m = np.flatnonzero(clusters == c)
        ref_loss = ref[f"losses_{c}"]
        if not anchors.any() or not len(ref_loss):
            continue
        f = train_cluster(inp.maps[m], inp.features[m], Xn[m], yn[m], anchors, opts, seed=11)
        assert len(f.losses) == len(ref_loss)  # same number of mini-batches
        steps = -(-len(m) // 32)
        mine = np.array(f.losses).reshape(10, steps).mean(1)
        theirs = ref_loss.reshape(10, steps).mean(1)
        # the epoch-mean loss curves: same start and the same end within a factor of 2
        assert 0.5 < mine[0] / theirs[0] < 2 and 0.5 < mine[-1] / theirs[-1] < 2, (mine, theirs)
        if f.zeroed:
            continue
        # per-cell betas: medians and spreads of each coefficient agree
        mb, tb = f.betas, rb[m]
        scale = np.abs(tb).max(0) + 1e-12
        assert (np.abs(np.median(mb, 0) - np.median(tb, 0)) / scale).max() < 0.35
        assert (np.abs(mb.std(0) - tb.std(0)) / scale).max() < 0.35


def test_cnn_record_is_written_in_the_betadata_metadata(tmp_path):
    pytest.importorskip("torch")
    t = _spatial_tissue(n_cells=200, spatial=("Gene000", "Gene001"))
    r = fit(
        t.to_anndata(),
        ["Gene000"],
        out=tmp_path / "f",
        lr=t.lr,
        grn=t.links,
        cv=0,
        training_mode="full",
        epochs=2,
        spatial_dim=8,
        seed=4,
    )
    import pyarrow.parquet as pq

    md = pq.read_schema(r.files[0]).metadata
    rec = json.loads(md[META_CNN.encode()])
    assert rec["training_mode"] == "full" and rec["cnn"]
    run = json.loads((r.out / "stlr_run.json").read_text())
    assert run["params"]["cnn"]["epochs"] == 2 and run["params"]["cnn"]["seed"] == 4


def test_same_betas_whatever_the_number_of_training_threads():
    pytest.importorskip("torch")
    t = _spatial_tissue(n_cells=240)
    rng = np.random.default_rng(1)
    X = rng.gamma(2.0, 1.0, (240, 3))
    y = X.sum(1) * (1 + 0.5 * np.sin(t.coords[:, 0] / 100)) + 1.0
    from polgen.stlr.betadata import BetaData

    seedb = BetaData(
        gene="G",
        id_kind="Cluster",
        ids=["a", "b"],
        columns=["beta0", "beta_A", "beta_B", "beta_C"],
        values=np.tile([1.0, 1.0, 1.0, 1.0], (2, 1)),
    )
    inp = spatial_inputs(t.coords, t.clusters, 2, 8, 100.0)
    runs = [
        cell_betas(
            seedb,
            X,
            y,
            t.clusters,
            inp,
            t.obs_names,
            CnnOptions(training_mode="full", epochs=2, spatial_dim=8, batch_size=64, threads=k),
        )
        for k in (1, 2)
    ]
    np.testing.assert_array_equal(runs[0][0].values, runs[1][0].values)
    assert runs[0][1]["clusters"] == runs[1][1]["clusters"]
    assert np.ptp(runs[0][0].values[t.clusters == 0], axis=0).max() > 0


def test_cli_training_mode(tmp_path, capsys):
    pytest.importorskip("torch")
    from polgen.cli import main

    t = _spatial_tissue(n_cells=200)
    t.to_anndata().write_h5ad(tmp_path / "t.h5ad")
    t.lr.write_csv(tmp_path / "lr.csv")
    t.links.write_csv(tmp_path / "links.csv")
    base = ["stlr", "fit", "--h5ad", str(tmp_path / "t.h5ad"), "--lr", str(tmp_path / "lr.csv")]
    base += ["--grn", str(tmp_path / "links.csv"), "--genes", "Gene000", "--cv", "0", "--cluster-key", "cell_type"]
    rc = main([*base, "--out", str(tmp_path / "o"), "--training-mode", "full", "--epochs", "1", "--spatial-dim", "8"])
    assert rc == 0
    assert read_betadata(tmp_path / "o" / "Gene000_betadata.parquet").id_kind == "CellID"
    rc = main([*base, "--out", str(tmp_path / "bad"), "--training-mode", "full", "--epochs", "0"])
    assert rc != 0 and "epochs" in capsys.readouterr().err
