"""SpaceTravLR on real tissue (issue 14): raw Visium counts -> prepare -> fit with the bundled priors ->
knock-out, and the checks around it (held-out R^2, reports, units, run parameters, typed errors, CLI).
prepare(), the bundled priors and the solvers alone: test_stlr_prepare_priors.py.

Data: tests/data/stlr/visium_mouse_brain_counts.h5ad (49 spots x 1,999 genes of 10x's public
V1_Adult_Mouse_Brain, raw counts; PROVENANCE.md).
"""

from __future__ import annotations

import json
import logging
import time

import anndata as ad
import numpy as np
import polars as pl
import pytest

from conftest import stlr_data
from polgen.errors import InputError
from polgen.stlr import (
    fit,
    perturb,
    prepare,
    top_regulators,
)


@pytest.fixture(scope="module")
def counts() -> ad.AnnData:
    return ad.read_h5ad(stlr_data("visium_mouse_brain_counts.h5ad"))


@pytest.fixture(scope="module")
def prepared(counts) -> ad.AnnData:
    return prepare(counts, copy=True)


@pytest.fixture(scope="module")
def run(counts, tmp_path_factory):
    """The acceptance path, timed: prepare + fit(genes=4) with bundled priors + a knock-out."""
    out = tmp_path_factory.mktemp("stlr_real") / "run"
    t0 = time.perf_counter()
    a = prepare(counts, copy=True)
    res = fit(a, genes=4, out=out, progress=False, max_iter=2000)  # logs: contact_distance=50 < half the spacing
    tfs = sorted({t for g in res.genes for t in top_regulators(out, 1000).filter(pl.col("gene") == g)["term"]})
    tf = next(t for t in tfs if "$" not in t and "#" not in t)
    sim, delta = perturb(a, out, tf, 0.0, return_delta=True, write_to=a)
    elapsed = time.perf_counter() - t0
    return {"a": a, "res": res, "out": out, "tf": tf, "sim": sim, "delta": delta, "elapsed": elapsed}


# -- acceptance -----------------------------------------------------------------------------------
def test_raw_counts_to_knockout_with_bundled_priors_under_two_minutes(run, counts):
    a, res, sim, tf = run["a"], run["res"], run["sim"], run["tf"]
    assert run["elapsed"] < 120
    assert len(res.genes) == 4 and res.scores.height == 4 * a.obs["stlr_cluster"].nunique()
    params = res.scores  # every trained gene has its betadata file
    assert all(f.exists() for f in res.files)
    X0 = a.layers["imputed_count"]
    j = list(a.var_names).index(tf)
    assert np.all(sim[tf].to_numpy() == 0.0)  # the knock-out is pinned
    changed = [g for g in sim.columns[1:] if not np.array_equal(sim[g].to_numpy(), X0[:, list(a.var_names).index(g)])]
    assert tf in changed and len(changed) > 1  # the knock-out propagated to trained genes
    assert set(changed) - {tf} <= set(res.genes)  # genes without a model do not change
    np.testing.assert_array_equal(a.layers[f"{tf}_delta"][:, j], -X0[:, j])
    np.testing.assert_array_equal(a.layers[f"{tf}_perturbed"], sim.select(list(a.var_names)).to_numpy())
    assert a.uns["stlr_perturb"][tf]["radius"] == 200.0
    assert params["n_cells"].to_list()[:3] == np.bincount(a.obs["stlr_cluster"].astype(int)).tolist()


def test_fit_reports_held_out_r2_and_overfitting(run, caplog):
    sc = run["res"].scores
    big = sc.filter(pl.col("n_cells") >= 10)
    assert big.height > 0 and big["cv_r2"].is_finite().all()
    # more modulators than cells: in-sample R^2 ~ 1, held-out far below
    over = big.filter(pl.col("n_modulators") >= pl.col("n_cells"))
    assert over.height > 0
    assert (over["r2"] > 0.99).all() and (over["cv_r2"] < over["r2"] - 0.5).all()
    small = sc.filter(pl.col("n_cells") < 10)  # fewer than 2 * folds cells: no held-out R^2
    assert small["cv_r2"].is_nan().all()


def test_fit_logs_overfit_nonconverged_and_all_zero(prepared, tmp_path, caplog):
    a = prepared.copy()
    caplog.set_level(logging.INFO, logger="polgen")
    # the reference iteration from zero cannot converge in 3 steps
    kw = {"genes": 2, "progress": False, "max_iter": 3, "cv": 0, "contact_distance": 100, "solver": "reference"}
    res = fit(a, out=tmp_path / "r1", min_r2=0.0, **kw)
    assert "have at least as many modulators as cells" in caplog.text
    assert not res.scores["converged"].any()
    n_bad = res.scores.filter(~pl.col("converged") & ~pl.col("zeroed")).height
    assert n_bad > 0 and f"{n_bad} cluster model(s) stopped at max_iter before converging" in caplog.text
    assert res.scores["cv_r2"].is_nan().all()  # cv=0
    caplog.clear()
    res = fit(a, out=tmp_path / "r2", min_r2=0.99999, **kw)
    assert res.scores["zeroed"].all()
    assert "2 of 2 trained gene(s) have all-zero betas" in caplog.text


def test_radius_out_of_scale_warns(prepared, tmp_path, caplog):
    a = prepared.copy()
    a.obsm["spatial"] = a.obsm["spatial"] / 100.0  # ~15 units across: radius 200 covers everything
    fit(a, genes=["Pcp4"], out=tmp_path / "r", progress=False, max_iter=50, cv=0, contact_distance=1)
    assert "radius=200 is larger than the tissue's extent" in caplog.text
    assert caplog.text.count("radius=200 is larger") == 1


def test_perturb_reads_and_checks_training_parameters(run):
    a, out, tf = run["a"], run["out"], run["tf"]
    with pytest.raises(InputError, match="differs from training's radius"):
        perturb(a, out, tf, radius=20.0)
    with pytest.raises(InputError, match="layer"):
        perturb(a, out, tf, layer="normalized_count")
    with pytest.warns(UserWarning, match="differs from training's radius"):
        other = perturb(a, out, tf, radius=20.0, allow_mismatch=True)
    same = perturb(a, out, tf, radius=200.0, cluster_key="stlr_cluster")
    assert same.equals(run["sim"])
    assert other.shape == same.shape


def test_changed_only_output(run):
    a, out, tf = run["a"], run["out"], run["tf"]
    sim, delta = perturb(a, out, tf, changed_only=True, return_delta=True)
    full = run["delta"]
    keep = [c for c in full.columns[1:] if (full[c] != 0).any()]
    assert sim.columns == ["CellID", *keep] and delta.columns == ["CellID", *keep]
    assert sim.equals(run["sim"].select("CellID", *keep))


def test_knockout_of_gene_without_model_says_so(run):
    a, out = run["a"], run["out"]
    trained = set(run["res"].genes)
    mods = set(top_regulators(out, 10_000)["term"])
    lonely = next(g for g in a.var_names if g not in trained and g not in mods and g[0].isalpha())
    with pytest.warns(UserWarning, match="is not a modulator of any of the 4 trained gene"):
        perturb(a, out, lonely)


def test_top_regulators_ranks_by_mean_abs_beta(run):
    from polgen.stlr.betadata import Betabase

    base = Betabase.coerce(run["out"])
    g = run["res"].genes[0]
    bd = base[g]
    means = np.abs(bd.values[:, 1:]).mean(axis=0)
    names = [c[len("beta_") :] for c in bd.columns[1:]]
    order = sorted((-m, t) for m, t in zip(means, names) if m > 0)[:5]
    top = top_regulators(base, 5).filter(pl.col("gene") == g)
    assert top["term"].to_list() == [t for _, t in order]
    np.testing.assert_allclose(top["mean_abs_beta"].to_numpy(), [-m for m, _ in order], rtol=1e-12)
    assert top["rank"].to_list() == [1, 2, 3, 4, 5]


def test_gene_symbols_case_suggestion(run, tmp_path):
    a = run["a"]
    with pytest.raises(InputError, match="'pcp4' -> 'Pcp4'"):
        fit(a, genes=["pcp4"], out=tmp_path / "r", progress=False)
    with pytest.raises(InputError, match="'PCP4' -> 'Pcp4'"):
        perturb(a, run["out"], "PCP4")


def test_duplicated_gene_names_are_an_error_in_training(prepared, tmp_path):
    d = prepared.copy()
    d.var_names = [*prepared.var_names[:-1], prepared.var_names[0]]
    with pytest.raises(InputError, match="more than once"):
        fit(d, genes=["Pcp4"], out=tmp_path / "r", progress=False)


# -- CLI -------------------------------------------------------------------------------------------------
def test_cli_bundled_priors_cells_spatial_key_one_cluster_and_splash(run, tmp_path, capsys):
    from polgen.cli import main
    from polgen.stlr import splash

    a = run["a"].copy()
    for k in [k for k in a.layers if k.endswith(("_perturbed", "_delta"))]:
        del a.layers[k]
    a.uns.pop("stlr_perturb", None)
    a.obsm["coords"] = a.obsm.pop("spatial")
    h5 = tmp_path / "t.h5ad"
    a.write_h5ad(h5)
    betas = tmp_path / "betas"
    rc = main(
        ["stlr", "fit", "--h5ad", str(h5), "--genes", "2", "--spatial-key", "coords", "--one-cluster",
         "--contact-distance", "100", "--cv", "0", "--out", str(betas), "--no-progress"]
    )  # fmt: skip
    assert rc == 0 and "trained 2 genes" in capsys.readouterr().out
    params = json.loads((betas / "stlr_run.json").read_text())["params"]
    assert params["species"] == "mouse" and params["bundled_lr"] and params["spatial_key"] == "coords"
    tf = top_regulators(betas, 50).filter(pl.col("kind") == "tf")["term"][0]
    cells = tmp_path / "cells.txt"
    cells.write_text("\n".join(a.obs_names[:10]))
    out = tmp_path / "ko.parquet"
    rc = main(
        ["stlr", "perturb", "--h5ad", str(h5), "--betas", str(betas), "--target", tf, "--cells", str(cells),
         "--one-cluster", "--changed-only", "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    got = pl.read_parquet(out)
    want = perturb(a, betas, tf, cells=list(a.obs_names[:10]), cluster_key=False, changed_only=True)
    assert got.equals(want) and tf in got.columns
    assert (got[tf].to_numpy()[:10] == 0).all() and (
        got[tf].to_numpy()[10:] == a[:, tf].layers["imputed_count"][10:, 0]
    ).all()
    sp_out = tmp_path / "splash.parquet"
    g = json.loads((betas / "stlr_run.json").read_text())["genes"][0]
    rc = main(
        ["stlr", "splash", "--h5ad", str(h5), "--betas", str(betas), "--gene", g, "--one-cluster",
         "--out", str(sp_out), "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    want_sp = splash(
        betas / f"{g}_betadata.parquet",
        a,
        gene=g,
        cluster_key=False,
        lr=params["lr"],
        spatial_key="coords",
        contact_distance=100.0,
    )  # fmt: skip  (training's contact distance, which the CLI read from stlr_run.json)
    assert pl.read_parquet(sp_out).equals(want_sp)


def test_cli_per_target_expression_matches_single_perturbations(run, tmp_path):
    from polgen.cli import main

    a, out = run["a"], run["out"]
    for k in [k for k in a.layers if k.endswith(("_perturbed", "_delta"))]:
        del a.layers[k]
    h5 = tmp_path / "t.h5ad"
    a.copy().write_h5ad(h5)
    tfs = top_regulators(out, 100).filter(pl.col("kind") == "tf")["term"].unique(maintain_order=True).to_list()[:2]
    res = tmp_path / "batch"
    rc = main(
        ["stlr", "perturb", "--h5ad", str(h5), "--betas", str(out), "--target", ",".join(tfs),
         "--gene-expr", "0,1.5", "--out", str(res), "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    got = pl.scan_parquet(str(res / "*.parquet")).collect()
    for tg, e in zip(tfs, (0.0, 1.5)):
        want = perturb(a, out, tg, e)
        part = got.filter(pl.col("target") == tg).drop("target")
        assert part.equals(want)
    bad = ["stlr", "perturb", "--h5ad", str(h5), "--betas", str(out), "--target", ",".join(tfs), "--gene-expr", "0,1,2"]
    assert main([*bad, "--out", str(tmp_path / "x"), "--no-progress"]) != 0
