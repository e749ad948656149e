"""Genomic SEM GWAS against R GenomicSEM fixtures (userGWAS, commonfactorGWAS, GC / ML / Q_SNP
options), per-SNP construction kernels, batching invariance, bad input."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from polgen.errors import ModelError, SchemaError
from polgen.gsem.gwas import commonfactor_gwas, user_gwas
from polgen.gsem.syntax import parse_model
from polgen.kernels import gwas as K
from tests.conftest import gsem_fixture, r_reference


def _load(*parts):
    return json.loads(gsem_fixture(*parts).read_text())


def _frame(d) -> pl.DataFrame:
    rows = []
    for i, s in enumerate(d["snps"]):
        r = {"SNP": s["SNP"], "CHR": "1", "BP": 1000 + i, "MAF": s["MAF"], "A1": s["A1"], "A2": s["A2"]}
        for t, b, se in zip(d["trait_names"], s["beta"], s["se"]):
            r[f"beta.{t}"] = b
            r[f"se.{t}"] = se
        rows.append(r)
    return pl.DataFrame(rows)


def _cov(d) -> dict:
    return {"S": d["s"], "V": d["v"], "I": d["i_mat"], "trait_names": d["trait_names"]}


@pytest.fixture(scope="module")
def per_snp():
    return _load("gwas_per_snp.json")


@pytest.fixture(scope="module")
def options():
    return _load("newer", "gwas_options.json")


def _check(res: pl.DataFrame, ref: list[dict], chisq_col="chisq", est_tol=1e-5, se_tol=1e-5, chi_tol=1e-3):
    assert res.height == len(ref)
    assert res["SNP"].to_list() == [r["SNP"] for r in ref]
    est = np.array([r["est"] for r in ref])
    se = np.array([r["se"] for r in ref])
    chi = np.array([r["chisq"] for r in ref])
    np.testing.assert_allclose(res["est"].to_numpy(), est, atol=est_tol, rtol=0)
    np.testing.assert_allclose(res["se"].to_numpy(), se, atol=se_tol, rtol=0)
    np.testing.assert_allclose(res[chisq_col].to_numpy(), chi, atol=chi_tol, rtol=0)
    assert res["converged"].all()


# -- construction kernels ------------------------------------------------------------------------
@pytest.mark.parametrize("mode,gc", [("standard", K.GC_STANDARD), ("conservative", K.GC_CONSERV), ("none", K.GC_NONE)])
def test_v_snp_matches_r(mode, gc):
    d = _load(f"v_snp_{mode}.json")
    out = np.empty((d["k"], d["k"]))
    K.v_snp_into(np.array(d["se_snp"]), np.array(d["i_ld"]), d["var_snp"], gc, out)
    np.testing.assert_allclose(out, np.array(d["expected"]), rtol=1e-12, atol=1e-18)


def test_s_full_v_full_z_pre_match_r():
    d = _load("s_full.json")
    k = len(d["beta_snp"])
    out = np.empty((k + 1, k + 1))
    K.s_full_into(np.array(d["s_ld"]), np.array(d["beta_snp"]), d["var_snp"], out)
    np.testing.assert_allclose(out, np.array(d["expected"]), rtol=1e-12, atol=1e-15)
    d = _load("v_full.json")
    n = np.array(d["expected"]).shape[0]
    out = np.empty((n, n))
    K.v_full_into(np.array(d["v_ld"]), np.array(d["v_snp"]), d["var_snp_se2"], out)
    np.testing.assert_allclose(out, np.array(d["expected"]), rtol=1e-10, atol=1e-18)
    d = _load("z_pre.json")
    for key, gc in (("standard", K.GC_STANDARD), ("conservative", K.GC_CONSERV), ("none", K.GC_NONE)):
        z = np.empty(len(d["beta"]))
        K.z_pre_into(np.array(d["beta"]), np.array(d["se"]), np.array(d["i_ld"]), gc, z)
        np.testing.assert_allclose(z, np.array(d[key]), rtol=1e-10)


def test_near_pd_matches_r_matrix_nearpd():
    """GenomicSEM calls Matrix::nearPD(x, corr = FALSE); compared with R's (stored R output,
    tests/data/gsem/r/misc/nearpd.json: near_pd.json's input and two hand-made matrices).
    (near_pd.json holds a corr = TRUE result, so it cannot serve here.)"""
    given = json.loads(r_reference("misc", "nearpd.json").read_text())["given"]
    assert len(given) == 3
    np.testing.assert_array_equal(
        np.array(given[1]["x"]).reshape(3, 3, order="F"), [[2, 1.9, 0.3], [1.9, 1.5, 2.1], [0.3, 2.1, 1.2]]
    )
    for c in given:
        n = c["k"]
        x = np.array(c["x"]).reshape(n, n, order="F")
        ref = np.array(c["nearpd"]).reshape(n, n, order="F")
        out = np.empty_like(x)
        assert K.near_pd(x, out)
        np.testing.assert_allclose(out, ref, atol=1e-10)


# -- R parity ------------------------------------------------------------------------------------
def test_user_gwas_matches_r(per_snp, options):
    res = user_gwas(_frame(per_snp), _cov(per_snp), options["model"])
    _check(res, per_snp["user_gwas"])
    assert res["chisq_df"].to_list() == [r["chisq_df"] for r in per_snp["user_gwas"]]
    assert res.select("lhs", "op", "rhs").unique().rows() == [("F1", "~", "SNP")]
    # p and log10p agree with the normal tail, AIC = chisq + 2 npar (npar = 5 here)
    from scipy.stats import norm

    z = res["est"].to_numpy() / res["se"].to_numpy()
    np.testing.assert_allclose(res["p"].to_numpy(), 2 * norm.sf(np.abs(z)), rtol=1e-10)
    np.testing.assert_allclose(res["log10p"].to_numpy(), -np.log10(2 * norm.sf(np.abs(z))), rtol=1e-9)
    np.testing.assert_allclose(res["AIC"].to_numpy(), res["chisq"].to_numpy() + 10.0, rtol=1e-12)


def test_commonfactor_gwas_matches_r(per_snp):
    res = commonfactor_gwas(_frame(per_snp), _cov(per_snp))
    _check(res, per_snp["commonfactor_gwas"], chisq_col="Q")
    assert res["Q_df"].to_list() == [r["chisq_df"] for r in per_snp["commonfactor_gwas"]]
    assert list(res.columns[:6]) == ["SNP", "CHR", "BP", "MAF", "A1", "A2"]


@pytest.mark.parametrize(
    "key,kw",
    [
        ("gc_conservative", {"GC": "conserv"}),
        ("gc_none", {"GC": "none"}),
        ("ml", {"estimation": "ML"}),
        ("q_snp", {"Q_SNP": True}),
    ],
)
def test_user_gwas_options_match_r(per_snp, options, key, kw):
    ref = options[key]
    res = user_gwas(_frame(options), _cov(options), options["model"], **kw)
    _check(res, ref)
    assert res["chisq_df"].to_list() == [r["chisq_df"] for r in ref]
    if kw.get("Q_SNP"):
        np.testing.assert_allclose(res["Q_SNP"].to_numpy(), [r["q_snp"] for r in ref], atol=1e-6)
        assert res["Q_SNP_df"].to_list() == [r["q_snp_df"] for r in ref]
        np.testing.assert_allclose(res["Q_SNP_p"].to_numpy(), [r["q_snp_p"] for r in ref], atol=1e-6)
    else:
        assert "Q_SNP" not in res.columns


# -- batching, lazy input, long output -----------------------------------------------------------
def test_batch_sizes_and_lazy_input_identical(per_snp, options, tmp_path):
    df = _frame(per_snp)
    cov = _cov(per_snp)
    ref = user_gwas(df, cov, options["model"], batch_size=10_000)
    for bs in (1, 7):
        assert_frame_equal(user_gwas(df, cov, options["model"], batch_size=bs), ref)
    path = tmp_path / "snps.parquet"
    df.write_parquet(path)
    assert_frame_equal(user_gwas(pl.scan_parquet(path), cov, options["model"], batch_size=7), ref)
    assert_frame_equal(user_gwas(str(path), cov, options["model"], batch_size=3), ref)
    out = user_gwas(str(path), cov, options["model"], batch_size=7, out=tmp_path / "res")
    assert isinstance(out, pl.LazyFrame)
    assert_frame_equal(out.collect(), ref)
    cf = commonfactor_gwas(df, cov, batch_size=10_000)
    assert_frame_equal(commonfactor_gwas(df, cov, batch_size=7), cf)


def test_long_and_sub_outputs(per_snp, options):
    df = _frame(per_snp).head(3)
    cov = _cov(per_snp)
    long = user_gwas(df, cov, options["model"], long=True)
    n_rows = len(parse_model(options["model"], fixed_x=False).rows) + 0  # baseline rows + SNP rows
    assert long.height % 3 == 0 and long.height // 3 >= n_rows
    b = long.filter((pl.col("lhs") == "F1") & (pl.col("op") == "~"))
    ref = user_gwas(df, cov, options["model"])
    np.testing.assert_allclose(b["est"].to_numpy(), ref["est"].to_numpy(), rtol=1e-8)
    fixed = long.filter(pl.col("lhs") == "F1", pl.col("op") == "=~")
    assert fixed["se"].is_null().all() or fixed["se"].is_nan().all()
    sub = user_gwas(df, cov, options["model"], sub=["F1 ~ SNP", "ANX~~ANX"])
    assert sub.height == 6
    with pytest.raises(ModelError):
        user_gwas(df, cov, options["model"], sub="F2~SNP")


# -- bad input -----------------------------------------------------------------------------------
def test_bad_snps_reported_per_snp(per_snp, options):
    df = _frame(per_snp).head(6).with_row_index("i")
    df = df.with_columns(
        MAF=pl.when(pl.col("i") == 0).then(0.0).when(pl.col("i") == 1).then(1.0).otherwise(pl.col("MAF")),
        **{
            "se.OCD": pl.when(pl.col("i") == 2).then(-0.1).when(pl.col("i") == 3).then(0.0).otherwise(pl.col("se.OCD")),
            "beta.ANX": pl.when(pl.col("i") == 4).then(float("nan")).otherwise(pl.col("beta.ANX")),
        },
    ).drop("i")
    for res in (user_gwas(df, _cov(per_snp), options["model"]), commonfactor_gwas(df, _cov(per_snp))):
        assert res["converged"].to_list() == [False] * 5 + [True]
        w = res["warning"].to_list()
        assert "MAF" in w[0] and "MAF" in w[1] and "SE" in w[2] and "SE" in w[3] and "beta" in w[4]
        assert w[5] == ""
        assert res["est"][:5].is_nan().all()
        assert np.isfinite(res["est"][5])


def test_bad_models_raise(per_snp):
    df = _frame(per_snp).head(2)
    cov = _cov(per_snp)
    with pytest.raises(ModelError, match="SNP"):
        user_gwas(df, cov, "F1 =~ ANX + OCD + PTSD")
    with pytest.raises(ModelError, match="BIP"):
        user_gwas(df, cov, "F1 =~ ANX + OCD + BIP\nF1 ~ SNP")
    with pytest.raises(SchemaError):
        user_gwas(df.drop("se.OCD", "beta.OCD"), cov, "F1 =~ ANX + OCD + PTSD\nF1 ~ SNP")
    from polgen.errors import InputError

    for bad in (float("inf"), float("nan"), 0.0, -1.0, True, "0.001"):
        with pytest.raises(InputError, match="SNPSE must be a positive finite"):
            user_gwas(df, cov, "F1 =~ ANX + OCD + PTSD\nF1 ~ SNP", SNPSE=bad)
    for bad in (float("inf"), -1.0, "x"):
        with pytest.raises(InputError, match="toler must be"):
            user_gwas(df, cov, "F1 =~ ANX + OCD + PTSD\nF1 ~ SNP", toler=bad)


def test_twas_equals_snp_run_with_matching_variance(per_snp, options):
    """TWAS: Gene/Panel/HSQ columns, the predictor is 'Gene' and its variance is HSQ."""
    df = _frame(per_snp).head(5)
    maf = df["MAF"].to_numpy()
    tw = df.select(
        pl.col("SNP").alias("Gene"),
        pl.lit("panelA").alias("Panel"),
        pl.Series("HSQ", 2 * maf * (1 - maf)),
        pl.col("^beta\\..*$"),
        pl.col("^se\\..*$"),
    )
    a = user_gwas(tw, _cov(per_snp), options["model"].replace("SNP", "Gene"), TWAS=True)
    b = user_gwas(df, _cov(per_snp), options["model"])
    assert a.columns[:3] == ["Gene", "Panel", "HSQ"]
    assert a["rhs"].unique().to_list() == ["Gene"]
    np.testing.assert_allclose(a["est"].to_numpy(), b["est"].to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(a["se"].to_numpy(), b["se"].to_numpy(), rtol=1e-10)


def test_smoothing_reported_with_z_smooth(per_snp, options):
    """A SNP whose S_full is not positive definite is smoothed (nearPD), flagged, and gets a
    positive Z_smooth; SNPs that need no smoothing get Z_smooth = 0."""
    df = (
        _frame(per_snp)
        .head(3)
        .with_columns(
            pl.when(pl.int_range(pl.len()) == 1).then(3.0).otherwise(pl.col("beta.ANX")).alias("beta.ANX"),
            pl.when(pl.int_range(pl.len()) == 1).then(-3.0).otherwise(pl.col("beta.OCD")).alias("beta.OCD"),
        )
    )
    res = user_gwas(df, _cov(per_snp), options["model"], smooth_check=True)
    z = res["Z_smooth"].to_numpy()
    assert z[0] == 0.0 and z[2] == 0.0 and z[1] > 0.0
    assert "smoothed" in res["warning"][1]
    cf = commonfactor_gwas(df, _cov(per_snp), smooth_check=True)
    assert cf["Z_smooth"][1] > 0 and cf["Z_smooth"][0] == 0.0


@pytest.mark.parametrize("kw", [{}, {"fix_measurement": False}, {"estimation": "ML"}])
def test_smoothed_snps_identical_in_any_batch(per_snp, options, kw):
    """SNPs whose S_full needs nearPD are refit by the kernel specialisation that has it (the
    others by one without): the same rows whether a smoothed SNP shares its batch with others,
    runs alone, or in a batch big enough for threaded chunks; each flagged."""
    base = _frame(per_snp)
    rep = pl.concat([base] * (2100 // base.height + 1)).head(2100) if not kw else base
    hit = (pl.int_range(pl.len()) % 5) == 2
    df = rep.with_columns(
        pl.when(hit).then(3.0).otherwise(pl.col("beta.ANX")).alias("beta.ANX"),
        pl.when(hit).then(-3.0).otherwise(pl.col("beta.OCD")).alias("beta.OCD"),
    )
    ref = user_gwas(df, _cov(per_snp), options["model"], batch_size=10_000, long=True, **kw)
    smoothed = ref["warning"].str.contains("S_full smoothed")
    assert set(ref.filter(smoothed)["SNP"]) == set(df.filter(hit)["SNP"])
    if not kw:
        assert ref.filter(smoothed)["converged"].all()  # (the full fit runs off on some of them)
    assert not ref["warning"].str.contains("status").any()  # no internal code leaks out
    one = user_gwas(df.head(base.height), _cov(per_snp), options["model"], batch_size=1, long=True, **kw)
    assert_frame_equal(one, ref.head(one.height))


def test_ml_aligned_sandwich_differs_from_r_order(per_snp, options):
    df = _frame(options).head(3)
    r_order = user_gwas(df, _cov(options), options["model"], estimation="ML")
    aligned = user_gwas(df, _cov(options), options["model"], estimation="ML", ml_se="aligned")
    np.testing.assert_allclose(aligned["est"].to_numpy(), r_order["est"].to_numpy(), rtol=1e-12)
    assert np.all(np.isfinite(aligned["se"].to_numpy()))
    assert np.all(np.abs(aligned["se"].to_numpy() / r_order["se"].to_numpy() - 1) > 0.1)


def test_empty_input_keeps_schema(per_snp, options, tmp_path):
    df = _frame(per_snp).head(0)
    a = user_gwas(df, _cov(per_snp), options["model"])
    b = user_gwas(df, _cov(per_snp), options["model"], out=tmp_path / "o").collect()
    assert a.height == 0 and b.height == 0 and a.schema == b.schema
    assert {"est", "se", "chisq", "converged", "warning"} <= set(a.columns)


def test_chi2_sf_matches_scipy_stats():
    from scipy import stats

    from polgen.gsem.stats import chi2_sf

    rng = np.random.default_rng(3)
    x = np.concatenate([[-1.0, 0.0, np.nan, np.inf, 1e3, 1e-300], rng.gamma(2.0, 3.0, 200)])
    for df in (1, 2, 7.0):
        np.testing.assert_allclose(chi2_sf(x, df), stats.chi2.sf(x, df), rtol=1e-12, atol=0)
    dfs = rng.integers(-1, 6, x.size).astype(float)
    want = np.where(dfs > 0, stats.chi2.sf(x, np.where(dfs > 0, dfs, 1.0)), np.nan)
    np.testing.assert_allclose(chi2_sf(x, dfs), want, rtol=1e-12, atol=0)
    assert np.isnan(chi2_sf(x, 0)).all() and np.isnan(chi2_sf(x, None)).all()
