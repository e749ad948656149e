"""user_gwas against R on synthetic data: stored outputs of R (tests/data/gsem/r/usergwas/, made by
tests/data/make/gsem_r.py with gsem_usergwas.R; no R needed here).

* R GenomicSEM's own ``userGWAS`` (its R sources, with base-R stand-ins for the few stringr/gdata
  helpers it calls) for ``fix_measurement=FALSE`` (one- and two-factor models, DWLS) and for
  defined (``:=``) parameters with ``fix_measurement=TRUE``;
* per-SNP lavaan calls (GenomicSEM's S_full / V_full construction from its ``utils.R``, then
  ``sem()`` with its options) for ML with ``fix_measurement=FALSE``: lavaan 0.6.14 (Debian, which
  made the stored outputs) reuses the first SNP's fixed.x SNP variance in userGWAS's ``slotModel``
  ML path and reports ML SEs that differ from the lavaan 0.6-2x fixtures (see
  tests/data/gsem/PROVENANCE.md), so estimates, chisq and df are compared there, not SEs.

The constraint cases (labels, ``==``, bounds, ``:=`` under ``fix_measurement=FALSE``) are in
tests/test_gsem_gwas_syntax.py, which uses the helpers here.
"""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pytest

from conftest import live_r, r_reference
from polgen.gsem.gwas import user_gwas

ONE = "F1 =~ T1 + T2 + T3 + T4 + T5\nF1 ~ SNP"
TWO = "F1 =~ T1 + T2 + T3\nF2 =~ T4 + T5\nF1 ~ SNP\nF2 ~ SNP"
# GenomicSEM's usual guard against negative residual variances, here binding at every SNP
BOUND_FM = TWO + "\nT5 ~~ a*T5\na > 0.06"
DEFINED = TWO.replace("F1 ~ SNP", "F1 ~ b1*SNP").replace("F2 ~ SNP", "F2 ~ b2*SNP") + "\nd := b1 - b2\nh := b1*b2"
N_R = 12


def stored_inputs():
    """The covstruc (S, V, I) and the 20 synthetic SNPs R was run on (a two-factor model with
    cross-trait intercepts; tests/data/make/gsem_r.py ``synthetic``)."""
    d = r_reference("usergwas")
    S = pl.read_csv(d / "S.csv")
    cov = {
        "S": S.to_numpy(),
        "V": pl.read_csv(d / "V.csv").to_numpy(),
        "I": pl.read_csv(d / "I.csv").to_numpy(),
        "trait_names": S.columns,
    }
    snps = pl.read_csv(d / "snps.csv", schema_overrides={"SNP": pl.String, "CHR": pl.String})
    return cov, snps


def stored_cases() -> dict[str, tuple[str, pl.DataFrame]]:
    """{case: (model, R rows (case, SNP, lhs, op, rhs, est, se, chisq, df))} as stored."""
    d = r_reference("usergwas")
    cases = pl.read_csv(
        d / "cases.tsv",
        separator="\t",
        has_header=False,
        quote_char=None,
        new_columns=["case", "kind", "model", "est", "fm", "nsnp"],
    )
    ref = pl.read_csv(
        d / "out.csv",
        null_values="NA",
        infer_schema_length=100_000,
        schema_overrides={"se": pl.Float64, "df": pl.Float64, "SNP": pl.String},
    )
    return {c: (m.replace("\\n", "\n"), ref.filter(pl.col("case") == c)) for c, m in zip(cases["case"], cases["model"])}


def compare(
    ref: pl.DataFrame,
    ours: pl.DataFrame,
    *,
    se: bool = True,
    df: bool = True,
    est_tol: float = 1e-5,
    se_tol: float = 1e-5,
    chi_tol: float = 1e-3,
) -> pl.DataFrame:
    """Join R rows to ours on (SNP, lhs, op, rhs) and assert est / se / chisq / df."""
    o = ours.select(
        "SNP",
        "lhs",
        "op",
        "rhs",
        pl.col("est").alias("est_p"),
        pl.col("se").alias("se_p"),
        pl.col("chisq").alias("chisq_p"),
        pl.col("chisq_df").alias("df_p"),
        "converged",
    )
    ref = ref.filter(~pl.col("op").is_in(["==", "<", ">"]))
    j = ref.join(o, on=["SNP", "lhs", "op", "rhs"], how="left")
    assert j.height == ref.height and j["est_p"].null_count() == 0, "R rows missing in polgen's output"
    assert j["converged"].all()
    np.testing.assert_allclose(j["est_p"].to_numpy(), j["est"].to_numpy(), atol=est_tol, rtol=0)
    np.testing.assert_allclose(j["chisq_p"].to_numpy(), j["chisq"].to_numpy(), atol=chi_tol, rtol=0)
    if df:
        assert j["df_p"].to_list() == [int(x) for x in j["df"].to_list()]
    if se:
        r_se = j["se"].to_numpy()
        p_se = j["se_p"].to_numpy()
        fixed = np.isnan(r_se)  # fixed / held at a bound: NA in R, NaN here
        assert np.array_equal(fixed, np.isnan(p_se))
        np.testing.assert_allclose(p_se[~fixed], r_se[~fixed], atol=se_tol, rtol=0)
    return j


@pytest.fixture(scope="module")
def r_out():
    cov, snps = stored_inputs()
    cases = stored_cases()
    assert [cases[c][0] for c in ("one_dwls", "two_dwls", "defined_fm", "one_ml", "two_ml")] == [
        ONE,
        TWO,
        DEFINED,
        ONE,
        TWO,
    ]
    return cov, snps, cases


@pytest.mark.parametrize("case", ["one_dwls", "two_dwls"])
def test_free_measurement_dwls_matches_r_usergwas(r_out, case):
    """fix_measurement=FALSE: every parameter of the model is estimated per SNP; est, sandwich SE,
    chisq and df of every free and fixed row as R's userGWAS."""
    cov, snps, ref = r_out
    model, rows = ref[case]
    ours = user_gwas(snps.head(N_R), cov, model, fix_measurement=False, long=True)
    j = compare(rows, ours)
    assert j.filter(pl.col("rhs") == "SNP", pl.col("op") == "~").height == N_R * (1 + (case == "two_dwls"))
    # the default output is the SNP effects only, with the same numbers
    short = user_gwas(snps.head(N_R), cov, model, fix_measurement=False)
    assert short.height == N_R * (1 + (case == "two_dwls"))
    compare(rows.filter(pl.col("op") == "~", pl.col("rhs") == "SNP"), short)


@pytest.mark.parametrize("case", ["one_ml", "two_ml"])
def test_free_measurement_ml_matches_lavaan(r_out, case):
    """ML, fix_measurement=FALSE: per-SNP lavaan ML fits give the same estimates and chisq (SEs:
    see the module docstring)."""
    cov, snps, ref = r_out
    model, rows = ref[case]
    ours = user_gwas(snps.head(8), cov, model, estimation="ML", fix_measurement=False, long=True)
    compare(rows, ours, se=False, df=False)
    assert np.isfinite(ours.filter(pl.col("op") == "~")["se"].to_numpy()).all()


def test_defined_parameters_match_r_usergwas(r_out):
    """':=' parameters with fix_measurement=TRUE (R rbinds them into the fixed-measurement
    model): estimate and delta-method SE with the sandwich covariance, as R's userGWAS."""
    cov, snps, ref = r_out
    model, rows = ref["defined_fm"]
    snps = snps.head(10)
    ours = user_gwas(snps, cov, model, long=True)
    j = compare(rows, ours)
    d = j.filter(pl.col("op") == ":=")
    assert d.height == 20 and d["se"].is_not_null().all()
    short = user_gwas(snps, cov, model)
    assert short.filter(pl.col("op") == ":=").height == 20  # defined rows by default
    sub = user_gwas(snps, cov, model, sub=["h", "d := b1 - b2"])
    assert sub["lhs"].to_list() == ["h", "d"] * 10
    compare(rows.filter(pl.col("op") == ":="), sub)


# -- opt-in: regenerate the stored R outputs with a live R (POLGEN_LIVE_R=1, POLGEN_GENOMICSEM_R) --
def _tokens(path):
    import gzip
    import re

    raw = path.read_bytes()
    text = gzip.decompress(raw).decode() if path.suffix == ".gz" else raw.decode()
    return re.split(r"[\s,\"\[\]{}:]+", text)


def _same_numbers(a, b, rtol=1e-6, atol=1e-12) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x == y:
            continue
        try:
            fx, fy = float(x), float(y)
        except ValueError:
            return False
        if not abs(fx - fy) <= atol + rtol * abs(fy):
            return False
    return True


if os.environ.get("POLGEN_LIVE_R") == "1":  # not collected otherwise: this is no parity test

    @pytest.mark.parametrize("name", ["usergwas", "commonfactor_gwas", "sem_lavaan", "munge_ldsc", "misc"])
    def test_live_r_regenerates_the_stored_references(name, tmp_path):
        """The producing script, run now with the local R, rewrites the stored files with the same
        numbers (to 1e-6 relative: other lavaan/R versions move the last digits)."""
        import subprocess
        import sys
        from pathlib import Path

        src = live_r()
        make = Path(__file__).resolve().parents[1] / "data" / "make" / "gsem_r.py"
        res = subprocess.run(
            [sys.executable, str(make), str(src), "--only", name, "--out", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        stored = r_reference(name)
        files = sorted(p.relative_to(stored) for p in stored.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(tmp_path / name) for p in (tmp_path / name).rglob("*") if p.is_file())
        differ = [str(f) for f in files if not _same_numbers(_tokens(tmp_path / name / f), _tokens(stored / f))]
        assert not differ, differ
