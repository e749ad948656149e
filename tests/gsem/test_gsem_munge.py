"""munge(): R GenomicSEM's rules on hand-made inputs with known answers, exact Z, typed errors."""

from __future__ import annotations

import gzip
import json

import numpy as np
import polars as pl
import pytest
from scipy.stats import norm

from conftest import r_reference
from polgen.errors import InputError, SchemaError
from polgen.gsem.munge import abs_z_from_p, is_odds_ratio, munge

HM3 = pl.DataFrame(
    {
        "SNP": [f"rs{i}" for i in range(1, 11)],
        "A1": ["A", "C", "A", "G", "A", "C", "T", "A", "A", "C"],
        "A2": ["G", "T", "C", "T", "G", "G", "C", "G", "T", "A"],
    }
)

#           SNP     A1   A2   BETA   P        INFO  MAF    fate
FILE = [
    ("rs1", "A", "G", 0.10, 0.01, 0.99, 0.30),  # kept as is
    ("rs2", "T", "C", 0.20, 0.02, 0.99, 0.60),  # flipped (ref A1 == file A2), MAF folded 0.4
    ("rs3", "A", "G", 0.10, 0.50, 0.99, 0.30),  # A2 matches neither ref allele
    ("rs4", "C", "A", 0.10, 0.50, 0.99, 0.30),  # A1 matches neither
    ("rs5", "a", "g", -0.30, 1e-310, 0.99, 0.30),  # lower case; tiny P
    ("rs6", "C", "G", None, 0.50, 0.99, 0.30),  # missing effect
    ("rs7", "T", "C", 0.10, None, 0.99, 0.30),  # missing P
    ("rs8", "A", "G", 0.10, 0.50, 0.50, 0.30),  # INFO below 0.9
    ("rs9", "A", "T", 0.10, 0.50, 0.99, 0.995),  # MAF folds to 0.005 < 0.01
    ("rs10", "N", "A", 0.10, 0.50, 0.99, 0.30),  # non-ACGT allele
    ("rs11", "A", "G", 0.10, 0.50, 0.99, 0.30),  # not in the reference
]


def _frame(rows=FILE, effect="BETA"):
    cols = list(zip(*rows))
    return pl.DataFrame(
        {
            "rsid": cols[0],
            "effect_allele": cols[1],
            "other_allele": cols[2],
            effect: pl.Series(cols[3], dtype=pl.Float64),
            "PVAL": pl.Series(cols[4], dtype=pl.Float64),
            "INFO": cols[5],
            "FRQ": cols[6],
            "N": 1000.0,
        }
    )


def test_munge_rules_and_dropped_counts():
    res, drops = munge({"T": _frame()}, HM3)
    got = res["T"].collect()
    assert got.columns == ["SNP", "N", "Z", "A1", "A2"]
    assert got["SNP"].to_list() == ["rs1", "rs2", "rs5"]
    assert got["A1"].to_list() == ["A", "C", "A"] and got["A2"].to_list() == ["G", "T", "G"]
    want = [norm.isf(0.005), -norm.isf(0.01), -37.66325]  # rs5: sign(-0.3) * sqrt(qchisq(1e-310))
    np.testing.assert_allclose(got["Z"].to_numpy()[:2], want[:2], rtol=1e-13)
    assert got["Z"][2] == pytest.approx(-np.sqrt(1419.89143317193520488), rel=1e-14)  # R's qchisq
    d = dict(zip(drops["reason"], drops["n_dropped"]))
    assert d["not_in_reference"] == 1 and d["missing_p"] == 1 and d["missing_effect"] == 1
    assert d["allele_a1_mismatch"] == 2  # rs4 and rs10 (null allele: R's NA in subset drops it)
    assert d["allele_a2_mismatch"] == 1 and d["info_below_filter"] == 1 and d["maf_below_filter"] == 1
    assert drops.filter(pl.col("reason") == "output_rows")["n_remaining"][0] == 3
    assert drops.filter(pl.col("reason") == "input_rows")["n_remaining"][0] == len(FILE)


def test_odds_ratios_are_detected_by_median_and_logged():
    rows = [
        ("rs1", "A", "G", 1.2, 0.01, 1, 0.3),
        ("rs2", "T", "C", 0.8, 0.02, 1, 0.3),
        ("rs3", "A", "C", 1.1, 0.5, 1, 0.3),
    ]
    res, _ = munge([_frame(rows, "OR")], HM3, trait_names=["x"])
    got = res["x"].collect()
    # rs1 OR>1 -> +; rs2 OR<1 is negative, then flipped -> +
    np.testing.assert_allclose(got["Z"].to_numpy(), [norm.isf(0.005), norm.isf(0.01), norm.isf(0.25)], rtol=1e-13)
    assert is_odds_ratio(pl.Series([0.9, 1.0, 1.6])) and not is_odds_ratio(pl.Series([0.1, -0.2, 0.3]))
    assert not is_odds_ratio(pl.Series([0.5, 0.5]))  # round half to even, as R: round(0.5) == 0
    assert is_odds_ratio(pl.Series([1.5, 1.5])) is False  # round(1.5) == 2


def test_n_override_neff_half_and_z_column():
    f = _frame().drop("N").with_columns(NEFF_HALF=pl.lit(600.0))
    res, _ = munge([f], HM3)
    assert res["V1"].collect()["N"].unique().to_list() == [1200.0]
    res, _ = munge([f], HM3, N=[5000])
    assert res["V1"].collect()["N"].unique().to_list() == [5000.0]
    zf = _frame().rename({"BETA": "Z"})  # R interprets a Z column as the effect when no beta
    res, _ = munge([zf], HM3)
    assert res["V1"].collect()["SNP"].to_list() == ["rs1", "rs2", "rs5"]


def test_exact_z_for_tiny_p_values_matches_high_precision():
    import mpmath

    p = np.array([0.9999999, 0.5, 1e-8, 1e-200, 1e-300, 3e-301, 1e-310, 5e-324])
    got = abs_z_from_p(p)
    mpmath.mp.dps = 60
    for pi, zi in zip(p, got):
        # two-sided normal tail: erfc(z / sqrt 2) = p, solved in 60-digit arithmetic
        ref = mpmath.findroot(
            lambda z, pi=pi: mpmath.log(mpmath.erfc(z / mpmath.sqrt(2))) - mpmath.log(mpmath.mpf(float(pi))),
            mpmath.mpf(float(zi) + 0.01),
        )
        assert zi == pytest.approx(float(ref), rel=1e-13), pi
    assert np.all(np.isfinite(got)) and got[-1] > 38.4  # no cap at 37


def test_z_matches_r_qchisq():
    """|Z| = sqrt(qchisq(p, 1, lower.tail = FALSE)) as R (stored R output, misc/qchisq.json)."""
    ref = json.loads(r_reference("misc", "qchisq.json").read_text())
    p = np.array(ref["p"])
    np.testing.assert_array_equal(p, [0.7, 0.05, 1e-12, 1e-100, 1e-250, 1e-307])
    np.testing.assert_allclose(abs_z_from_p(p), np.array(ref["z"]), rtol=1e-13)


def test_out_writes_parquet_and_r_text_atomically(tmp_path):
    src = tmp_path / "in.txt.gz"
    with gzip.open(src, "wb") as fh:
        fh.write(_frame().write_csv(separator=" ", null_value="NA").encode())
    res, _ = munge(
        [src], tmp_path / "hm3.tsv" if False else HM3, trait_names=["my trait"], out=tmp_path / "out", write_text=True
    )
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["mytrait.sumstats.gz", "mytrait.sumstats.parquet", "mytrait_munge.log"]  # R writes the log too
    pq = pl.read_parquet(tmp_path / "out" / "mytrait.sumstats.parquet")
    txt = pl.read_csv(tmp_path / "out" / "mytrait.sumstats.gz", separator="\t")
    assert txt.columns == ["SNP", "N", "Z", "A1", "A2"]
    np.testing.assert_array_equal(txt["Z"].to_numpy(), pq["Z"].to_numpy())  # full precision text
    assert res["my trait"].collect().equals(pq)


def test_bad_inputs_raise_typed_errors_naming_the_file(tmp_path):
    good = tmp_path / "good.tsv"
    _frame().write_csv(good, separator="\t", null_value="NA")
    bad = tmp_path / "badp.tsv"
    _frame().with_columns(
        pl.col("PVAL")
        .cast(pl.String)
        .fill_null("NA")
        .map_elements(lambda s: "oops" if s == "0.5" else s, return_dtype=pl.String)
    ).write_csv(bad, separator="\t")
    with pytest.raises(InputError) as ei:
        munge([good, bad], HM3)  # the failing second trait raises; it does not disappear
    assert ei.value.path.endswith("badp.tsv") and ei.value.column == "P" and ei.value.row == 3
    big = tmp_path / "bigp.tsv"
    _frame().with_columns(PVAL=pl.Series([0.1] * 5 + [1.5] + [0.1] * 5)).write_csv(big, separator="\t")
    with pytest.raises(InputError, match="outside") as ei:
        munge([big], HM3)
    assert ei.value.row == 6 and ei.value.column == "P"
    zero = _frame().with_columns(PVAL=pl.lit(0.0))
    with pytest.raises(InputError, match="outside"):
        munge([zero], HM3)
    with pytest.raises(SchemaError, match="P") as ei:
        munge([_frame().drop("PVAL")], HM3)
    assert "rsid" in str(ei.value)
    with pytest.raises(SchemaError, match="effect"):
        munge([_frame().drop("BETA")], HM3)
    with pytest.raises(SchemaError, match="sample-size"):
        munge([_frame().drop("N")], HM3)
    with pytest.raises(InputError, match="no SNPs left"):
        munge({"allna": _frame().with_columns(BETA=pl.lit(None, dtype=pl.Float64))}, HM3)
    with pytest.raises(InputError, match="trait names"):
        munge([good], HM3, trait_names=["a", "b"])


def test_namespace_delegates_to_munge():
    import polgen  # noqa: F401  (registers df.gsem)

    direct, _ = munge({"T": _frame()}, HM3)
    via = _frame().lazy().gsem.munge(HM3, trait_name="T")
    assert via.collect().equals(direct["T"].collect())
