"""CNN training curves on the fit result (issue 19): ``FitResult.losses`` holds the mean mini-batch
loss of every epoch per gene and cluster, equal to the curve stored in each betadata file's
metadata and to the per-epoch means of the mini-batch losses; a resumed run reads the curves of
the genes it kept from their files."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from polgen.schema import validate
from polgen.stlr.cnn import META_CNN, epoch_losses, epoch_means, read_losses
from polgen.stlr.synthetic import make_tissue
from polgen.stlr.train import fit


def _tissue(n_cells: int = 200):
    t = make_tissue(n_cells=n_cells, n_genes=20, n_clusters=2, seed=2, extent=700.0, sparsity=0.05)
    rng = np.random.default_rng(3)
    slope = 1.0 + 0.8 * np.sin(t.coords[:, 0] / 120.0)
    for g in ("Gene000", "Gene001"):
        ri = [t.var_names.index(r) for r in t.links.filter(pl.col("target") == g)["source"].to_list()]
        t.X[:, t.var_names.index(g)] = 1.0 + (t.X[:, ri] * slope[:, None]).sum(1) + rng.normal(0, 0.1, n_cells)
    return t


def test_epoch_means():
    assert epoch_means([1.0, 3.0, 2.0, 4.0, 0.5, 0.5], 2) == [2.0, 3.0, 0.5]
    assert epoch_means([], 3) == [] and epoch_means([1.0], 0) == []
    empty = epoch_losses({"G": {"cnn": False, "clusters": {}}})
    assert empty.height == 0 and empty.columns == ["gene", "cluster", "epoch", "loss", "score", "zeroed"]


def test_fit_result_holds_the_epoch_loss_curves(tmp_path):
    pytest.importorskip("torch")
    t = _tissue()
    kw = dict(lr=t.lr, grn=t.links, cv=0, training_mode="full", epochs=3, spatial_dim=8, batch_size=40, seed=4)
    r = fit(t.to_anndata(), ["Gene000", "Gene001"], out=tmp_path / "f", **kw)
    L = r.losses
    assert L.columns == ["gene", "cluster", "epoch", "loss", "score", "zeroed"]
    validate(L, "stlr_fit_losses")  # the declared output (README's output reference)
    trained = r.scores.filter(~pl.col("zeroed"))
    assert L.height == 3 * trained.height  # one row per epoch of every trained cluster
    assert sorted(L["epoch"].unique().to_list()) == [1, 2, 3]
    assert L["loss"].is_finite().all() and (L["loss"] > 0).all()
    for g in ("Gene000", "Gene001"):
        f = r.out / f"{g}_betadata.parquet"
        rec = json.loads(pq.read_schema(f).metadata[META_CNN.encode()])
        for label, cl in rec["clusters"].items():
            n = int(r.scores.filter((pl.col("gene") == g) & (pl.col("cluster") == label))["n_cells"][0])
            per_epoch = -(-n // 40)
            assert len(cl["losses"]) == 3 * per_epoch
            want = np.asarray(cl["losses"]).reshape(3, per_epoch).mean(1)
            got = L.filter((pl.col("gene") == g) & (pl.col("cluster") == label)).sort("epoch")
            np.testing.assert_allclose(got["loss"].to_numpy(), want, rtol=1e-12)
            np.testing.assert_allclose(got["score"].to_numpy(), cl["score"], rtol=1e-12)
    # the training reduced the loss somewhere (the seed betas start near the optimum)
    assert (L.filter(pl.col("epoch") == 3)["loss"] <= 1.5 * L.filter(pl.col("epoch") == 1)["loss"]).all()
    # read back from the folder; a resumed run reports the kept genes' curves too
    assert read_losses(r.out).equals(L)
    again = fit(t.to_anndata(), ["Gene000", "Gene001"], out=tmp_path / "f", resume=True, **kw)
    assert again.losses.equals(L)
    assert read_losses(r.out, ["Gene001"]).equals(L.filter(pl.col("gene") == "Gene001"))


def test_seed_mode_has_no_loss_rows(tmp_path):
    t = _tissue(120)
    r = fit(t.to_anndata(), ["Gene000"], out=tmp_path / "s", lr=t.lr, grn=t.links, cv=0)
    assert r.losses.height == 0 and "loss" in r.losses.columns


def test_cli_fit_reports_the_training_in_one_line(tmp_path, capsys):
    pytest.importorskip("torch")
    from polgen.cli import main

    t = _tissue(160)
    t.to_anndata().write_h5ad(tmp_path / "t.h5ad")
    t.lr.write_csv(tmp_path / "lr.csv")
    t.links.write_csv(tmp_path / "links.csv")
    rc = main(["stlr", "fit", "--h5ad", str(tmp_path / "t.h5ad"), "--lr", str(tmp_path / "lr.csv"),
               "--grn", str(tmp_path / "links.csv"), "--genes", "Gene000", "--cv", "0", "--cluster-key", "cell_type",
               "--training-mode", "full", "--epochs", "3", "--spatial-dim", "8", "--batch-size", "40",
               "--out", str(tmp_path / "o")])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    L = read_losses(tmp_path / "o")
    ends = [g.sort("epoch")["loss"].to_numpy() for _, g in L.group_by("cluster")]
    median = float(np.median([e[-1] / e[0] for e in ends]))
    assert f"CNN: {len(ends)} gene x cluster networks, last / first epoch loss median {median:.3g}" in out
