"""stlr CLI, namespaces and the streamed batch perturbation."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import polgen  # noqa: F401 - registers the namespaces
from polgen.cli import main
from polgen.stlr import perturb, perturb_batch
from polgen.stlr.betadata import write_betadata
from polgen.stlr.synthetic import make_betabase, make_tissue


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("stlr_cli")
    t = make_tissue(n_cells=200, n_genes=30, n_clusters=3, seed=5, extent=500.0)
    a = t.to_anndata()
    a.write_h5ad(d / "tissue.h5ad")
    t.lr.write_csv(d / "lr.csv")
    t.links.write_csv(d / "links.csv")
    base = make_betabase(t, n_trained=8, seed=6)
    (d / "betas").mkdir()
    for g in base.genes:
        write_betadata(base[g], d / "betas" / f"{g}_betadata.parquet")
    return t, a, base, d


def test_batch_streams_same_as_single(setup, tmp_path):
    t, a, base, d = setup
    targets = [t.ligands[0], t.tfs[0]]
    sink = perturb_batch(a, base, targets, tmp_path / "batch", n_propagation=2, lr=t.lr, cluster_key="cell_type")
    got = sink.scan().collect()
    assert got.columns[:2] == ["target", "CellID"] and got.height == 2 * 200
    for tg in targets:
        one = perturb(a, base, tg, 0.0, n_propagation=2, lr=t.lr, cluster_key="cell_type")
        part = got.filter(pl.col("target") == tg).drop("target")
        np.testing.assert_array_equal(part.drop("CellID").to_numpy(), one.drop("CellID").to_numpy())
    # resume: nothing to redo, same files
    sink2 = perturb_batch(
        a, base, targets, tmp_path / "batch", n_propagation=2, lr=t.lr, cluster_key="cell_type", resume=True
    )
    assert [f.name for f in sink2.files] == [f.name for f in sink.files]


def test_namespaces(setup):
    t, a, base, d = setup
    g = base.genes[0]
    frame = base[g].to_polars()
    long = base.to_polars()
    via_long = long.lazy().stlr.perturb(a, t.tfs[0], 0.0, n_propagation=2, lr=t.lr, cluster_key="cell_type")
    direct = perturb(a, base, t.tfs[0], 0.0, n_propagation=2, lr=t.lr, cluster_key="cell_type")
    np.testing.assert_array_equal(via_long.drop("CellID").to_numpy(), direct.drop("CellID").to_numpy())
    s = frame.stlr.splash(a, gene=g, lr=t.lr, cluster_key="cell_type")
    assert s.columns[0] == "CellID" and s.height == 200
    cells = pl.DataFrame({"x": t.coords[:, 0], "y": t.coords[:, 1], "Lig000": t.X[:, t.var_names.index("Lig000")]})
    out = cells.stlr.received_ligands(["Lig000"], 100.0, suffix="_recv")
    assert "Lig000_recv" in out.columns and (out["Lig000_recv"] > 0).any()


def test_cli_fit_and_perturb(setup, tmp_path, capsys):
    t, a, base, d = setup
    genes = ",".join([t.ligands[0], t.tfs[1], "Gene002"])
    rc = main(
        [
            "stlr",
            "fit",
            "--h5ad",
            str(d / "tissue.h5ad"),
            "--lr",
            str(d / "lr.csv"),
            "--grn",
            str(d / "links.csv"),
            "--genes",
            genes,
            "--out",
            str(tmp_path / "fit"),
            "--cluster-key",
            "cell_type",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert len(list((tmp_path / "fit").glob("*_betadata.parquet"))) == 3
    out = tmp_path / "ko.parquet"
    rc = main(
        [
            "stlr",
            "perturb",
            "--h5ad",
            str(d / "tissue.h5ad"),
            "--lr",
            str(d / "lr.csv"),
            "--betas",
            str(d / "betas"),
            "--target",
            t.ligands[0],
            "--n-propagation",
            "2",
            "--out",
            str(out),
            "--cluster-key",
            "cell_type",
            "--no-progress",
        ]
    )
    assert rc == 0
    cli = pl.read_parquet(out)
    ref = perturb(a, base, t.ligands[0], 0.0, n_propagation=2, lr=t.lr, cluster_key="cell_type")
    np.testing.assert_array_equal(cli.drop("CellID").to_numpy(), ref.drop("CellID").to_numpy())
    # a bad gene -> one-line error, exit code 2
    rc = main(
        [
            "stlr",
            "perturb",
            "--h5ad",
            str(d / "tissue.h5ad"),
            "--lr",
            str(d / "lr.csv"),
            "--betas",
            str(d / "betas"),
            "--target",
            "Nope",
            "--out",
            str(tmp_path / "x.parquet"),
            "--cluster-key",
            "cell_type",
        ]
    )
    assert rc == 2 and "Nope" in capsys.readouterr().err


def test_cli_fit_cell_thresholds_and_grn_alpha(setup, tmp_path):
    from polgen.stlr import fit

    t, a, base, d = setup
    rng = np.random.default_rng(9)
    genes = sorted(set(t.ligands) | set(t.receptors))
    th = pl.DataFrame({"CellID": t.obs_names, **{g: (rng.random(len(t.obs_names)) < 0.7).astype(float) for g in genes}})
    th.write_parquet(tmp_path / "th.parquet")
    links = t.links.with_columns(pl.Series("p", rng.uniform(0, 0.1, t.links.height)))
    links.write_csv(tmp_path / "links_p.csv")
    target = "Gene002"
    common = [
        "--h5ad",
        str(d / "tissue.h5ad"),
        "--lr",
        str(d / "lr.csv"),
        "--grn",
        str(tmp_path / "links_p.csv"),
        "--genes",
        target,
        "--cluster-key",
        "cell_type",
        "--no-progress",
        "--orphans",
        "train",
    ]
    assert (
        main(
            [
                "stlr",
                "fit",
                *common,
                "--out",
                str(tmp_path / "a"),
                "--cell-thresholds",
                str(tmp_path / "th.parquet"),
                "--grn-alpha",
                "0.03",
            ]
        )
        == 0
    )
    assert main(["stlr", "fit", *common, "--out", str(tmp_path / "b")]) == 0
    got_a = pl.read_parquet(tmp_path / "a" / f"{target}_betadata.parquet")
    got_b = pl.read_parquet(tmp_path / "b" / f"{target}_betadata.parquet")
    want = fit(
        a,
        [target],
        out=tmp_path / "py",
        lr=t.lr,
        grn=links,
        cluster_key="cell_type",
        progress=False,
        cell_thresholds=th,
        grn_alpha=0.03,
        orphans="train",
    )  # no TF passes p < 0.03: an orphan
    assert got_a.equals(pl.read_parquet(want.files[0]))
    assert not got_a.equals(got_b)
    # fewer TFs pass p < 0.03 than p < 0.05
    assert len([c for c in got_a.columns if c.startswith("beta_") and "$" not in c and "#" not in c]) < len(
        [c for c in got_b.columns if c.startswith("beta_") and "$" not in c and "#" not in c]
    )


def test_cli_fit_prune_equals_api(setup, tmp_path):
    """`polgen stlr fit --prune --prune-alpha` gives the betas of `fit(prune=True, prune_alpha=)`."""
    from polgen.stlr import fit

    t, a, base, d = setup
    target = "Gene002"
    argv = ["stlr", "fit", "--h5ad", str(d / "tissue.h5ad"), "--lr", str(d / "lr.csv"), "--grn", str(d / "links.csv")]
    argv += ["--genes", target, "--cluster-key", "cell_type", "--no-progress", "--prune", "--prune-alpha", "3"]
    assert main([*argv, "--out", str(tmp_path / "cli")]) == 0
    want = fit(
        a,
        [target],
        out=tmp_path / "py",
        lr=t.lr,
        grn=t.links,
        cluster_key="cell_type",
        progress=False,
        prune=True,
        prune_alpha=3.0,
    )
    assert pl.read_parquet(tmp_path / "cli" / f"{target}_betadata.parquet").equals(pl.read_parquet(want.files[0]))
