"""Headers written by the tools users run (issue 16): REGENIE, PLINK2 --glm, BOLT-LMM, SAIGE, and
chr-prefixed chromosome names.  Header lines are the tools' own spellings as they appear in public
repositories' example outputs (values here are made up in the same layout)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import polars as pl

from polgen.io.sumstats import read_sumstats, scan_sumstats


def _write(path: Path, lines: list[str], gz: bool = False) -> Path:
    text = "\n".join(lines) + "\n"
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_regenie_step2(tmp_path):
    # regenie --step 2 output: space-separated, ALLELE1 is the tested (effect) allele, LOG10P = -log10 P
    f = _write(
        tmp_path / "ukb_step2_BMI.regenie.gz",
        [
            "CHROM GENPOS ID ALLELE0 ALLELE1 A1FREQ INFO N TEST BETA SE CHISQ LOG10P EXTRA",
            "1 777135 1:777135:T:TC T TC 0.0997168 0.98 4237 ADD 0.252579 0.247327 1.04292 0.512659 NA",
            "1 779322 rs4040617 A G 0.1343 1.0 4237 ADD -0.0123 0.0201 0.3745 2.5 NA",
        ],
        gz=True,
    )
    df = read_sumstats(f, required=("SNP", "A1", "A2", "P", "N"))
    assert df["SNP"].to_list() == ["1:777135:T:TC", "rs4040617"]
    assert df["A1"].to_list() == ["TC", "G"] and df["A2"].to_list() == ["T", "A"]
    np.testing.assert_allclose(df["P"].to_numpy(), [10**-0.512659, 10**-2.5])
    assert df["BP"].to_list() == [777135, 779322] and df["MAF"][0] == 0.0997168 and df["N"][0] == 4237.0


def test_plink2_glm_other_allele_is_omitted(tmp_path):
    # plink2 --glm: A1 is the counted allele and may be REF or ALT; OMITTED is the other one
    f = _write(
        tmp_path / "res.PHENO1.glm.linear",
        [
            "#CHROM\tPOS\tID\tREF\tALT\tPROVISIONAL_REF?\tA1\tOMITTED\tA1_FREQ\tTEST\tOBS_CT\tBETA\tSE\tT_STAT\tP\tERRCODE",
            "1\t205546793\t1:205546793:C:T\tC\tT\tY\tC\tT\t0.431193\tADD\t327\t-1.4666\t0.255448\t-5.74128\t2.19963e-08\t.",
            "1\t5348270\trs4417082\tG\tA\tY\tA\tG\t0.42228\tADD\t193\t0.0673094\t0.101462\t0.663392\t0.507958\t.",
        ],
    )
    df = read_sumstats(f, required=("SNP", "A1", "A2", "P", "BETA", "N"))
    assert df["A1"].to_list() == ["C", "A"] and df["A2"].to_list() == ["T", "G"]  # A2 = OMITTED, not REF
    assert df["REF"].to_list() == ["C", "G"] and df["ALT"].to_list() == ["T", "A"]  # kept under their names
    assert df["CHR"].to_list() == ["1", "1"] and df["N"].to_list() == [327.0, 193.0]
    assert df["MAF"].to_list() == [0.431193, 0.42228]
    # logistic: OR and LOG(OR)_SE
    g = _write(
        tmp_path / "res.PHENO2.glm.logistic.hybrid",
        [
            "#CHROM\tPOS\tID\tREF\tALT\tA1\tOMITTED\tA1_FREQ\tFIRTH?\tTEST\tOBS_CT\tOR\tLOG(OR)_SE\tZ_STAT\tP\tERRCODE",
            "2\t1000\trs9\tA\tG\tG\tA\t0.2\tN\tADD\t1000\t1.1\t0.05\t1.906\t0.0566\t.",
        ],
    )
    df = read_sumstats(g, required=("SNP", "A1", "A2", "OR", "SE", "Z", "P"))
    assert df.select("A1", "A2", "OR", "SE", "Z").row(0) == ("G", "A", 1.1, 0.05, 1.906)


def test_bolt_lmm_prefers_the_non_infinitesimal_p(tmp_path):
    f = _write(
        tmp_path / "bolt.stats.gz",
        [
            "SNP\tCHR\tBP\tGENPOS\tALLELE1\tALLELE0\tA1FREQ\tF_MISS\tBETA\tSE\tP_BOLT_LMM_INF\tP_BOLT_LMM",
            "rs58108140\t1\t10583\t0.000000\tA\tG\t0.109810\t0.011935\t0.074942\t0.045043\t9.6E-02\t9.7E-02",
            "rs180734498\t1\t13302\t0.000000\tT\tC\t0.061042\t0.007595\t0.084552\t0.058078\t1.5E-01\t1.4E-01",
        ],
        gz=True,
    )
    df = read_sumstats(f, required=("SNP", "A1", "A2", "P"))
    assert df["P"].to_list() == [9.7e-2, 1.4e-1] and df["P_BOLT_LMM_INF"].to_list() == ["9.6E-02", "1.5E-01"]
    assert df["BP"].to_list() == [10583, 13302] and df["GENPOS"].to_list() == ["0.000000", "0.000000"]
    assert df["A1"].to_list() == ["A", "T"] and df["A2"].to_list() == ["G", "C"]
    # only the infinitesimal model's P: that one
    g = _write(tmp_path / "bolt_inf.stats", ["SNP\tALLELE1\tALLELE0\tP_BOLT_LMM_INF", "rs1\tA\tG\t0.5"])
    assert read_sumstats(g, required=("P",))["P"].to_list() == [0.5]


def test_saige_beta_is_allele2s_and_chr_prefixes_are_dropped(tmp_path):
    f = _write(
        tmp_path / "saige_step2.txt",
        [
            "CHR\tPOS\tMarkerID\tAllele1\tAllele2\tAC_Allele2\tAF_Allele2\timputationInfo\tBETA\tSE\tTstat\tvar\tp.value\tN",
            "chr1\t727233\trs151190501\tG\tA\t45.637\t0.0156184\t0.97\t0.00221495\t0.510224\t0.0085\t3.84\t9.965363E-01\t1461",
            "chrX\t730869\trs2\tC\tT\t90\t0.2\t1\t-0.1\t0.05\t-2\t400\t4.5E-02\t1461",
        ],
    )
    df = read_sumstats(f, required=("SNP", "A1", "A2", "BETA", "P", "N", "INFO"))
    assert df["A1"].to_list() == ["A", "T"] and df["A2"].to_list() == ["G", "C"]  # BETA is Allele2's
    assert df["MAF"].to_list() == [0.0156184, 0.2] and df["INFO"].to_list() == [0.97, 1.0]
    assert df["SNP"].to_list() == ["rs151190501", "rs2"] and df["CHR"].to_list() == ["1", "X"]
    # a parquet input is scanned lazily with the same rule
    pq = tmp_path / "chr.parquet"
    pl.DataFrame({"SNP": ["rs1", "rs2"], "CHR": ["chr22", "CHR7"], "P": [0.1, 0.2]}).write_parquet(pq)
    assert scan_sumstats(pq).collect()["CHR"].to_list() == ["22", "7"]
