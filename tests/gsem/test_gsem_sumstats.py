"""sumstats(): every standardisation mode of R GenomicSEM's sumstats() against explicit formulas."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy.stats import norm

from polgen.errors import InputError, SchemaError
from polgen.gsem.sumstats import sumstats

PI2_3 = math.pi**2 / 3
REF = pl.DataFrame(
    {
        "SNP": ["rs1", "rs2", "rs3", "rs4", "rs5", "rs6", "rs7"],
        "CHR": [1, 1, 1, 2, 2, 2, 2],
        "BP": [10, 20, 30, 5, 15, 25, 35],
        "MAF": [0.2, 0.3, 0.005, 0.4, 0.1, 0.25, 0.15],
        "A1": ["A", "C", "A", "A", "G", "C", "T"],
        "A2": ["G", "T", "C", "T", "A", "A", "G"],
    }
)


def _z(p, b):
    return np.sign(b) * norm.isf(np.asarray(p) / 2)


def logistic_file():
    # rs5 OR == 1 -> log 0 -> removed; rs6 duplicated -> both removed; rs3 fails the ref MAF filter
    return pl.DataFrame(
        {
            "SNP": ["rs1", "rs2", "rs3", "rs4", "rs5", "rs6", "rs6", "rs7"],
            "A1": ["A", "T", "A", "A", "G", "C", "C", "g"],
            "A2": ["G", "C", "C", "T", "A", "A", "A", "t"],
            "OR": [1.2, 0.9, 1.1, 1.1, 1.0, 1.3, 1.3, 1.05],
            "SE": [0.05, 0.04, 0.03, 0.03, 0.02, 0.01, 0.01, 0.06],
            "P": [0.01, 0.2, 0.3, 0.4, 0.9, 0.5, 0.5, 0.03],
        }
    )


def test_logistic_default_mode_matches_r_formulas():
    lf, summary = sumstats([logistic_file()], REF, trait_names=["L"], se_logit=False, return_summary=True)
    got = lf.collect()
    assert got.columns == ["SNP", "CHR", "BP", "MAF", "A1", "A2", "beta.L", "se.L"]
    assert got["SNP"].to_list() == ["rs1", "rs2", "rs4", "rs7"]
    b = np.array([math.log(1.2), -math.log(0.9), math.log(1.1), -math.log(1.05)])  # rs2, rs7 flipped
    se = np.array([0.05, 0.04, 0.03, 0.06])
    v = 2 * np.array([0.2, 0.3, 0.4, 0.15]) * (1 - np.array([0.2, 0.3, 0.4, 0.15]))
    den = np.sqrt(b**2 * v + PI2_3)
    np.testing.assert_allclose(got["beta.L"].to_numpy(), b / den, rtol=1e-13)
    # R divides the OR-scale SE by exp() of the already flipped effect
    np.testing.assert_allclose(got["se.L"].to_numpy(), se / np.exp(b) / den, rtol=1e-13)
    d = dict(zip(summary["reason"], summary["n_dropped"]))
    assert d["duplicated_snp"] == 2 and d["zero_effect"] == 1 and d["not_in_reference"] == 1
    amb = sumstats([logistic_file()], REF, se_logit=False, ambig=True).collect()
    assert "rs4" not in amb["SNP"].to_list() and amb.columns[-2:] == ["beta.V1", "se.V1"]


def test_se_logit_ols_linprob_modes():
    snps = ["rs1", "rs2", "rs5", "rs6"]
    p = np.array([0.01, 0.2, 0.04, 1e-320])
    beta = np.array([0.02, -0.01, 0.03, -0.5])
    a1 = ["A", "T", "G", "A"]  # rs2 and rs6 are flipped against the reference
    a2 = ["G", "C", "A", "C"]
    fmaf = np.array([0.25, 0.8, 0.1, 0.3])
    n = np.array([10_000.0, 12_000.0, 9_000.0, 11_000.0])
    f = pl.DataFrame(
        {
            "SNP": snps,
            "A1": a1,
            "A2": a2,
            "BETA": beta,
            "SE": [0.01, 0.02, 0.015, 0.05],
            "P": p,
            "N": n,
            "EAF": fmaf,
            "INFO": [0.9, 0.9, 0.9, 0.9],
        }
    )
    flip = np.array([1, -1, 1, -1])
    lf = sumstats(
        {"slog": f, "ols": f, "lin": f.drop("SE")},
        REF,
        se_logit=[True, False, False],
        OLS=[False, True, False],
        linprob=[False, False, True],
    )
    got = lf.collect()
    assert got["SNP"].to_list() == ["rs1", "rs2", "rs5", "rs6"]
    maf = np.minimum(fmaf, 1 - fmaf)  # the file's own frequency, folded
    v = 2 * maf * (1 - maf)
    z = _z(p, beta)
    assert abs(z[-1]) > 37.7  # P = 1e-320 gives its exact Z (R's Rmpfr branch approximates it)
    # se.logit: logistic beta and logistic SE
    b = beta * flip
    den = np.sqrt(b**2 * v + PI2_3)
    np.testing.assert_allclose(got["beta.slog"], b / den, rtol=1e-12)
    np.testing.assert_allclose(got["se.slog"], np.array([0.01, 0.02, 0.015, 0.05]) / den, rtol=1e-12)
    # OLS: beta = Z / sqrt(N varSNP), se = |beta / Z|
    b = z / np.sqrt(n * v) * flip
    np.testing.assert_allclose(got["beta.ols"], b, rtol=1e-12)
    np.testing.assert_allclose(got["se.ols"], np.abs(b / z), rtol=1e-12)
    # linprob: Z / sqrt(N/4 varSNP), SE = 1 / sqrt(N/4 varSNP), then the logistic transform
    b = z / np.sqrt(n / 4 * v) * flip
    se = 1 / np.sqrt(n / 4 * v)
    den = np.sqrt(b**2 * v + PI2_3)
    np.testing.assert_allclose(got["beta.lin"], b / den, rtol=1e-12)
    np.testing.assert_allclose(got["se.lin"], se / den, rtol=1e-12)


def test_or_detected_in_ols_mode_and_reference_maf_used_without_file_maf():
    f = pl.DataFrame(
        {
            "SNP": ["rs1", "rs2", "rs7"],
            "A1": ["A", "C", "T"],
            "A2": ["G", "T", "G"],
            "OR": [0.8, 1.25, 1.0001],
            "P": [0.01, 0.02, 0.3],
            "N": 5000.0,
        }
    )
    got = sumstats([f], REF, se_logit=False, OLS=True).collect()
    z = np.array([-norm.isf(0.005), norm.isf(0.01), norm.isf(0.15)])  # sign of log(OR)
    v = 2 * np.array([0.2, 0.3, 0.15]) * np.array([0.8, 0.7, 0.85])
    np.testing.assert_allclose(got["beta.V1"], z / np.sqrt(5000 * v), rtol=1e-12)
    # betas=True: already standardised, the effect is used as is (log OR here)
    got = sumstats([f], REF, se_logit=False, OLS=True, betas=True).collect()
    np.testing.assert_allclose(got["beta.V1"], np.log([0.8, 1.25, 1.0001]), rtol=1e-12)


def test_keep_indel_info_filter_inner_join_and_out(tmp_path):
    ref = REF.vstack(pl.DataFrame({"SNP": ["rs8"], "CHR": [3], "BP": [1], "MAF": [0.3], "A1": ["AT"], "A2": ["A"]}))
    f = pl.DataFrame(
        {
            "SNP": ["rs1", "rs2", "rs8"],
            "A1": ["A", "C", "at"],
            "A2": ["G", "T", "a"],
            "BETA": [0.1, 0.2, 0.3],
            "SE": [0.1, 0.1, 0.1],
            "P": [0.3, 0.05, 0.01],
            "INFO": [0.9, 0.5, 0.9],
        }
    )
    g = f.filter(pl.col("SNP") != "rs1")
    out = tmp_path / "sub" / "ss.parquet"
    lf = sumstats([f, g], ref, trait_names=["f", "g"], se_logit=True, keep_indel=True, out=out)
    got = lf.collect()
    assert got["SNP"].to_list() == ["rs8"]  # rs2 fails INFO >= 0.6; rs1 absent from g
    assert out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    md = pl.read_parquet_metadata(out)
    assert "polgen.gsem.sumstats" in md.values()
    without = sumstats([f], ref, se_logit=True).collect()
    assert "rs8" not in without["SNP"].to_list()


def test_sumstats_bad_inputs():
    f = logistic_file()
    with pytest.raises(SchemaError, match="SE"):
        sumstats([f.drop("SE")], REF, se_logit=False)
    with pytest.raises(SchemaError, match="sample size"):
        sumstats([f], REF, se_logit=False, OLS=True)
    zonly = f.drop("OR").with_columns(Z=pl.Series([2.0, -1.5, 0.3, 1.1, -0.2, 0.7, 0.7, 3.0]))
    with pytest.raises(SchemaError, match="effect"):
        sumstats([zonly], REF, se_logit=False)
    ok = sumstats([zonly.with_columns(N=pl.lit(1000.0))], REF, se_logit=False, OLS=True).collect()
    assert ok.height > 0  # a Z column is used as the effect for OLS
    with pytest.raises(InputError, match="outside"):
        sumstats([f.with_columns(P=pl.lit(2.0))], REF, se_logit=False)
    with pytest.raises(InputError, match="both"):
        sumstats([f.with_columns(N=pl.lit(1.0))], REF, se_logit=False, OLS=True, linprob=True)
    with pytest.raises(InputError, match="no SNPs left"):
        sumstats([f.with_columns(SNP=pl.lit("nope") + pl.col("SNP"))], REF, se_logit=False)
    with pytest.raises(InputError, match="se_logit"):
        sumstats([f, f], REF, se_logit=[True])
