"""R GenomicSEM's options around the core steps: ``sumstats(direct_filter=)`` against R's own
``sumstats(direct.filter=TRUE)`` (inputs, outputs and script: tests/data/gsem/r/direct_filter/,
tests/data/make/gsem_direct_filter.{py,R}), R-style log files of munge / sumstats / ldsc
(``log=``), ``ldsc`` taking munge's ``(frames, dropped)`` tuple whole, ``user_gwas(printwarn=)``.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pytest

from conftest import r_reference
from polgen.errors import InputError
from polgen.gsem.gwas import user_gwas
from polgen.gsem.ldsc import ldsc
from polgen.gsem.munge import munge
from polgen.gsem.sumstats import sumstats


@pytest.fixture(scope="module")
def direct():
    return r_reference("direct_filter")


def _compare(ours: pl.DataFrame, R: pl.DataFrame) -> None:
    assert ours["SNP"].to_list() == R["SNP"].to_list()
    for c in ("beta.A", "se.A", "beta.B", "se.B"):
        np.testing.assert_allclose(ours[c].to_numpy(), R[c].to_numpy(), rtol=1e-9, atol=0)


@pytest.mark.parametrize("flt", [True, False])
def test_direct_filter_matches_r(direct, flt):
    files = [direct / "dir0.txt.gz", direct / "dir1.txt.gz"]
    ours = sumstats(files, direct / "ref.txt.gz", trait_names=["A", "B"], se_logit=False, direct_filter=flt).collect()
    R = pl.read_csv(direct / ("sumstats_R.tsv" if flt else "sumstats_R_nofilter.tsv"), separator="\t")
    R = R.with_columns(
        pl.col("SNP").cast(pl.String), pl.col("^(beta|se)\\..*$").cast(pl.String).str.strip_chars().cast(pl.Float64)
    )
    ours = ours.sort("SNP")
    _compare(ours, R.sort("SNP"))
    if flt:  # the filter removed SNPs: exactly 50% and empty DIRECTION strings among them
        assert ours.height < 400
        assert "rs1" not in ours["SNP"].to_list() and "rs3" not in ours["SNP"].to_list()


def test_direct_filter_counts_and_missing_column(direct, caplog, tmp_path):
    files = [direct / "dir0.txt.gz", direct / "dir1.txt.gz"]
    _, summary = sumstats(
        files, direct / "ref.txt.gz", trait_names=["A", "B"], se_logit=False, direct_filter=True, return_summary=True
    )
    dropped = summary.filter(pl.col("reason") == "direction_missing_cohorts")
    assert dropped.height == 2 and (dropped["n_dropped"] > 0).all()
    no_dir = pl.read_csv(files[0], separator="\t").drop("DIRECTION")
    with caplog.at_level(logging.WARNING, logger="polgen"):
        sumstats([no_dir], direct / "ref.txt.gz", trait_names=["A"], se_logit=False, direct_filter=True)
    assert "no DIRECTION column" in caplog.text
    with pytest.raises(InputError, match="direct_filter"):
        sumstats(files, direct / "ref.txt.gz", se_logit=False, direct_filter="yes")


def test_sumstats_log_beside_out(direct, tmp_path):
    files = [direct / "dir0.txt.gz", direct / "dir1.txt.gz"]
    out = tmp_path / "ss" / "merged.parquet"
    sumstats(files, direct / "ref.txt.gz", trait_names=["A", "B"], se_logit=False, direct_filter=True, out=out)
    text = (tmp_path / "ss" / "A_B_sumstats.log").read_text()
    assert "direct_filter = True" in text
    assert "missing in 50% or more of the contributing cohorts" in text
    assert "sumstats finished at" in text
    assert not list((tmp_path / "ss").glob("*.tmp"))


def _munge_inputs():
    d = r_reference("munge_ldsc")
    return d, [d / f"raw{i}.txt.gz" for i in range(3)], d / "hm3.snplist.gz"


def test_munge_log_files(tmp_path, monkeypatch):
    d, files, hm3 = _munge_inputs()
    munge(files, hm3, trait_names=["A", "B", "C"], out=tmp_path / "m")
    text = (tmp_path / "m" / "A_B_C_munge.log").read_text()
    assert "parameters:" in text and "info_filter = 0.9" in text
    assert "rows removed" in text and "munge finished at" in text
    # log=False: none; a prefix: <prefix>_munge.log; True: R's default name in the working directory
    munge(files, hm3, trait_names=["A", "B", "C"], out=tmp_path / "n", log=False)
    assert not list((tmp_path / "n").glob("*.log"))
    munge(files[:1], hm3, trait_names=["A"], log=tmp_path / "mine")
    assert (tmp_path / "mine_munge.log").exists()
    monkeypatch.chdir(tmp_path)
    munge(files[:1], hm3, trait_names=["A"], log=True)
    assert (tmp_path / "A_munge.log").exists()
    with pytest.raises(InputError, match="directory of the log file"):
        munge(files[:1], hm3, trait_names=["A"], log=tmp_path / "nowhere" / "x")


def test_ldsc_accepts_the_munge_tuple_and_logs(tmp_path):
    d, files, hm3 = _munge_inputs()
    munged = munge(files, hm3, trait_names=["A", "B", "C"])
    whole = ldsc(munged, d / "ld", chr=2, n_blocks=40, log=tmp_path / "run")
    unpacked = ldsc(munged[0], d / "ld", chr=2, n_blocks=40)
    np.testing.assert_array_equal(whole.S, unpacked.S)
    np.testing.assert_array_equal(whole.V, unpacked.V)
    text = (tmp_path / "run_ldsc.log").read_text()
    assert "ldsc finished at" in text and "n_blocks = 40" in text and "remain after merging" in text
    with pytest.raises(InputError, match=r"2 trait names for 3 munged inputs \(got LazyFrame"):
        ldsc(munged[0].values(), d / "ld", chr=2, trait_names=["A", "B"])


def test_failed_call_leaves_a_complete_log(tmp_path):
    d, files, hm3 = _munge_inputs()
    with pytest.raises(InputError):
        ldsc([files[0], files[1]], tmp_path / "no_ld_here", chr=2, log=tmp_path / "bad")
    text = (tmp_path / "bad_ldsc.log").read_text()
    assert "error: InputError" in text and "ldsc failed at" in text
    assert not list(tmp_path.glob("*.tmp"))


def test_printwarn_drops_the_warning_column(caplog):
    from tests.gsem.test_gsem_gwas import _cov, _frame, _load

    d = _load("gwas_per_snp.json")
    cs, snps = _cov(d), _frame(d)
    t = d["trait_names"]
    model = f"F1 =~ NA*{t[0]} + {t[1]} + {t[2]}\nF1 ~~ 1*F1\nF1 ~ SNP"
    # a SNP that cannot be fitted: logged as a count, its row kept
    snps = pl.concat([snps, snps.head(1).with_columns(pl.lit("rsBAD").alias("SNP"), pl.lit(0.0).alias(f"se.{t[0]}"))])
    with caplog.at_level(logging.WARNING, logger="polgen"):
        with_w = user_gwas(snps, cs, model, progress=False)
    assert "did not converge" in caplog.text
    without = user_gwas(snps, cs, model, progress=False, printwarn=False)
    assert "warning" in with_w.columns and "warning" not in without.columns
    assert with_w.drop("warning").equals(without)
    with pytest.raises(InputError, match="printwarn"):
        user_gwas(snps, cs, model, printwarn="no")
