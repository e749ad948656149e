"""``polgen stlr transitions`` (issue 19): the CLI writes the reference's transition vectors
(tests/data/stlr/cnn/ref_transitions.npz, made by tests/data/make/stlr_cnn_reference.py from the
reference's estimate_transition_probabilities / project_probabilities) from a perturbation file or
a several-target perturbation folder, with the shared option vocabulary and typed errors."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import polars as pl
import pytest

from polgen.cli import main
from polgen.io.sink import read_metadata

DATA = Path(__file__).resolve().parents[1] / "data" / "stlr" / "cnn"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("stlr_cli_tr")
    arr = np.load(DATA / "tissue.npz")
    names = json.loads((DATA / "names.json").read_text())
    labels = names["cluster_labels"]
    X = np.ascontiguousarray(arr["X"])
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical([labels[c] for c in arr["clusters"]], categories=labels)},
        index=pd.Index(names["obs_names"]),
    )
    a = ad.AnnData(X=X.copy(), obs=obs, var=pd.DataFrame(index=pd.Index(names["var_names"])))
    a.obsm["spatial"] = np.asarray(arr["xy"], dtype=np.float64)
    a.layers["imputed_count"] = X.copy()
    a.write_h5ad(d / "tissue.h5ad")
    pert = np.load(DATA / "ref_perturb.npz")
    frames = {
        k: pl.DataFrame({"CellID": names["obs_names"], **{g: pert[k][:, j] for j, g in enumerate(names["var_names"])}})
        for k in ("tf", "ligand")
    }
    frames["tf"].write_parquet(d / "tf.parquet")
    (d / "batch").mkdir()
    for i, k in enumerate(("ligand", "tf")):  # a perturb_batch folder: target, CellID, genes
        frames[k].insert_column(0, pl.lit(k).alias("target")).write_parquet(d / "batch" / f"part-{i:05d}.parquet")
    return d, np.load(DATA / "ref_transitions.npz"), np.asarray(arr["xy"])


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def test_cli_writes_the_reference_vectors(files, capsys):
    d, ref, xy = files
    out = d / "tr.parquet"
    assert main(["stlr", "transitions", "--h5ad", str(d / "tissue.h5ad"), "--perturbed", str(d / "tf.parquet"),
                 "--out", str(out), "-q", "--no-progress"]) == 0  # fmt: skip
    got = pl.read_parquet(out)
    assert got.columns == ["CellID", "x", "y", "dx", "dy", "cluster"]
    assert _rel(got.select("dx", "dy").to_numpy(), ref["V_200"]) < 1e-9
    np.testing.assert_array_equal(got.select("x", "y").to_numpy(), xy)
    params = json.loads(read_metadata(out)["polgen.params"])
    assert params["n_neighbors"] == 200 and params["temperature"] == 0.05 and params["remove_null"] is True
    assert "moving" in capsys.readouterr().out
    # the frame is what `polgen plot transitions` draws
    assert main(["plot", "transitions", str(out), "--out", str(d / "tr.png")]) == 0
    assert (d / "tr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the reference's other variants through the options
    for flags, key in ((["--unit-vectors"], "Vunit_30"), (["--no-remove-null"], "Vkeep_30")):
        o = d / f"tr_{key}.parquet"
        rc = main(["stlr", "transitions", "--h5ad", str(d / "tissue.h5ad"), "--perturbed", str(d / "tf.parquet"),
                   "--n-neighbors", "30", *flags, "--out", str(o)])  # fmt: skip
        assert rc == 0
        assert _rel(pl.read_parquet(o).select("dx", "dy").to_numpy(), ref[key]) < 1e-9


def test_cli_picks_a_target_of_a_batch_folder(files, capsys):
    d, ref, _ = files
    base = ["stlr", "transitions", "--h5ad", str(d / "tissue.h5ad"), "--perturbed", str(d / "batch")]
    out = d / "tr_batch.parquet"
    assert main([*base, "--target", "tf", "--n-neighbors", "30", "--out", str(out)]) == 0
    assert _rel(pl.read_parquet(out).select("dx", "dy").to_numpy(), ref["V_30"]) < 1e-9
    # several targets and no --target: an error naming the choice; an unknown target likewise
    assert main([*base, "--out", str(d / "x.parquet")]) != 0
    assert "--target" in capsys.readouterr().err
    assert main([*base, "--target", "Nope", "--out", str(d / "x.parquet")]) != 0
    assert "Nope" in capsys.readouterr().err
    assert not (d / "x.parquet").exists()


def test_cli_refuses_to_overwrite_and_bad_options(files, capsys):
    d, ref, _ = files
    base = ["stlr", "transitions", "--h5ad", str(d / "tissue.h5ad"), "--perturbed", str(d / "tf.parquet")]
    out = d / "once.parquet"
    assert main([*base, "--n-neighbors", "30", "--out", str(out)]) == 0
    before = out.read_bytes()
    assert main([*base, "--n-neighbors", "30", "--unit-vectors", "--out", str(out)]) != 0
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == before
    assert main([*base, "--n-neighbors", "30", "--unit-vectors", "--out", str(out), "--overwrite"]) == 0
    assert _rel(pl.read_parquet(out).select("dx", "dy").to_numpy(), ref["Vunit_30"]) < 1e-9
    for bad, word in (
        (["--n-neighbors", "1"], "n_neighbors"),
        (["--decimals", "-2"], "decimals"),
        (["--embedding", "X_umap"], "X_umap"),
        (["--target", "tf"], "target"),
    ):
        assert main([*base, *bad, "--out", str(d / "bad.parquet")]) != 0
        assert word in capsys.readouterr().err
    assert main(["stlr", "transitions", "--h5ad", str(d / "tissue.h5ad"), "--perturbed", str(d / "missing.parquet"),
                 "--out", str(d / "bad.parquet")]) != 0  # fmt: skip
    assert "missing.parquet" in capsys.readouterr().err
    assert not (d / "bad.parquet").exists()


def test_help_documents_every_option_with_examples(capsys):
    assert main(["stlr", "transitions", "--help"]) == 0
    text = capsys.readouterr().out
    for opt in ("--perturbed", "--target", "--embedding", "--n-neighbors", "--temperature", "--remove-null",
                "--unit-vectors", "--rescale", "--decimals", "--no-rounding", "--out", "--overwrite", "--progress",
                "-v", "-q"):  # fmt: skip
        assert opt in text
    assert "default: 200" in text and "default: 0.05" in text and "examples" in text
