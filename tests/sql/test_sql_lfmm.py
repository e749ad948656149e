"""The P-value queries (top_hits, loci, per_chrom_summary) on LFMM results: a calibrated result is
filtered, sorted and summarised on its calibrated P (issue 13), ``p_col`` picks any P column, and
every count equals a direct Polars filter on the same column."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import polgen.lfmm as lfmm
from polgen import sql
from polgen.demo import make_lfmm_demo
from polgen.errors import SchemaError

THRESHOLDS = (1e-3, 1e-2, 0.05)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sql_lfmm")
    d = make_lfmm_demo(tmp, n=200, p=3000, K=3)
    env = pl.read_csv(d.env, separator="\t").select("IID", "env")
    # K=1 leaves part of the structure in the tests: GIF well above 1, so P and P_CALIBRATED differ
    model = lfmm.fit(env, str(d.bed), K=1, progress=False)
    cal = lfmm.test(model, str(d.bed), out=tmp / "cal", task_snps=1000, progress=False)
    raw = lfmm.test(model, str(d.bed), calibrate=None, out=tmp / "raw", progress=False)
    two = env.with_columns(noise=pl.Series(np.random.default_rng(1).standard_normal(env.height)))
    multi = lfmm.test(model, str(d.bed), two, progress=False).collect()
    return {
        "cal_dir": str(tmp / "cal"),
        "cal": cal.collect(),
        "gif": cal.gif["env"],
        "raw_dir": str(tmp / "raw"),
        "raw": raw.collect(),
        "multi": multi,
    }


def _count(df: pl.DataFrame, col: str, thr: float) -> int:
    return df.filter(pl.col(col) <= thr).height


def test_calibrated_result_differs_from_uncalibrated(results):
    assert results["gif"] > 1.05
    cal = results["cal"]
    assert any(_count(cal, "P", t) != _count(cal, "P_CALIBRATED", t) for t in THRESHOLDS)


@pytest.mark.parametrize("thr", THRESHOLDS)
def test_top_hits_uses_calibrated_p(results, thr):
    cal = results["cal"]
    got = sql.run("top_hits", {"source": results["cal_dir"], "p_max": thr, "limit": 0})
    want = cal.filter(pl.col("P_CALIBRATED") <= thr)
    assert got.height == want.height
    assert set(got["SNP"]) == set(want["SNP"])
    # sorted by LOG10P (= -log10 P_CALIBRATED) and that is the P thresholded
    lp = got["LOG10P"].to_numpy()
    assert np.all(np.diff(lp) <= 0)
    np.testing.assert_allclose(lp, -np.log10(got["P_CALIBRATED"].to_numpy()), rtol=1e-9)
    assert got["P_CALIBRATED"].max() <= thr
    # the source's (uncalibrated) P column is carried unchanged
    assert got.columns == cal.columns
    joined = got.select("SNP", "P").join(cal.select("SNP", P0="P"), on="SNP")
    assert (joined["P"] == joined["P0"]).all()


@pytest.mark.parametrize("thr", THRESHOLDS)
def test_p_col_picks_the_column(results, thr):
    cal = results["cal"]
    got = sql.run("top_hits", {"source": results["cal_dir"], "p_max": thr, "limit": 0, "p_col": "P"})
    assert got.height == _count(cal, "P", thr)
    np.testing.assert_allclose(got["LOG10P"].to_numpy(), -np.log10(got["P"].to_numpy()), rtol=1e-12)
    lower = sql.run("top_hits", {"source": results["cal_dir"], "p_max": thr, "limit": 0, "p_col": "p_calibrated"})
    assert lower.height == _count(cal, "P_CALIBRATED", thr)
    summary = sql.run("per_chrom_summary", {"source": results["cal_dir"], "p_genomewide": thr, "p_col": "P"})
    assert summary.filter(pl.col("CHR") == "all")["n_genomewide"][0] == _count(cal, "P", thr)


@pytest.mark.parametrize("thr", THRESHOLDS)
def test_loci_and_per_chrom_summary_use_calibrated_p(results, thr):
    cal = results["cal"]
    want = _count(cal, "P_CALIBRATED", thr)
    loci = sql.run("loci", {"source": results["cal_dir"], "p_max": thr, "window_bp": 20_000})
    assert int(loci["n_hits"].sum()) == want
    if loci.height:
        assert loci["lead_P"].max() <= thr
        lead = loci.select("lead_SNP", "lead_P").join(cal.select(lead_SNP="SNP", pc="P_CALIBRATED"), on="lead_SNP")
        np.testing.assert_allclose(lead["lead_P"].to_numpy(), lead["pc"].to_numpy(), rtol=1e-12)
    summary = sql.run(
        "per_chrom_summary", {"source": results["cal_dir"], "p_genomewide": thr, "p_suggestive": 10 * thr}
    )
    everything = summary.filter(pl.col("CHR") == "all").row(0, named=True)
    assert everything["n_genomewide"] == want
    assert everything["n_suggestive"] == _count(cal, "P_CALIBRATED", 10 * thr)
    assert everything["min_p"] == cal["P_CALIBRATED"].min()
    assert everything["n_invalid_p"] == cal["P_CALIBRATED"].null_count()
    per = summary.filter(pl.col("CHR") != "all")
    counts = cal.filter(pl.col("P_CALIBRATED") <= thr).group_by("CHR").len().with_columns(pl.col("CHR").cast(pl.String))
    got = per.select(pl.col("CHR").cast(pl.String), "n_genomewide").filter(pl.col("n_genomewide") > 0)
    assert dict(got.iter_rows()) == dict(counts.iter_rows())


def test_lambda_gc_of_calibrated_p_is_near_one(results):
    summary = sql.run("per_chrom_summary", {"source": results["cal_dir"]})
    raw = sql.run("per_chrom_summary", {"source": results["cal_dir"], "p_col": "P"})
    lam_cal = summary.filter(pl.col("CHR") == "all")["lambda_gc"][0]
    lam_raw = raw.filter(pl.col("CHR") == "all")["lambda_gc"][0]
    assert lam_cal == pytest.approx(1.0, abs=0.02)  # GIF calibration divides chi2 by the GIF
    assert lam_raw == pytest.approx(results["gif"], rel=0.02)


@pytest.mark.parametrize("thr", THRESHOLDS)
def test_uncalibrated_result_uses_p(results, thr):
    raw = results["raw"]
    assert raw["P_CALIBRATED"].null_count() == raw.height
    got = sql.run("top_hits", {"source": results["raw_dir"], "p_max": thr, "limit": 0})
    assert got.height == _count(raw, "P", thr)
    loci = sql.run("loci", {"source": results["raw_dir"], "p_max": thr})
    assert int(loci["n_hits"].sum()) == _count(raw, "P", thr)


def test_multi_variable_result_needs_p_col(results):
    multi = results["multi"]
    assert "P_CALIBRATED_noise" in multi.columns and "P" not in multi.columns
    for col in ("P_CALIBRATED_env", "P_CALIBRATED_noise", "P_env"):
        got = sql.run("top_hits", {"source": multi, "p_max": 0.05, "limit": 0, "p_col": col})
        assert got.height == _count(multi, col, 0.05)
        loci = sql.run("loci", {"source": multi, "p_max": 0.05, "p_col": col})
        assert int(loci["n_hits"].sum()) == _count(multi, col, 0.05)
    # without p_col a table with no P / LOG10P / P_CALIBRATED is an error naming the candidates,
    # never an empty result
    for name in ("top_hits", "loci", "per_chrom_summary"):
        with pytest.raises(SchemaError, match="P_CALIBRATED_env") as e:
            sql.run(name, {"source": multi})
        assert e.value.column == "P"


@pytest.mark.parametrize("bad", ["nope", 'P"; DROP TABLE x; --', "P_CALIBRATED_temp"])
def test_unknown_p_col_is_a_schema_error_naming_it(results, bad):
    with pytest.raises(SchemaError, match="p_col") as e:
        sql.run("top_hits", {"source": results["cal_dir"], "p_col": bad})
    assert e.value.column == bad
