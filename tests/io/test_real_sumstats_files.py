"""Summary statistics written by the tools themselves (issue 16): slices of files committed in the tools'
public repositories (tests/data/sumstats_real/, provenance and licences in its PROVENANCE.md).

Each test reads a file with polgen and checks what it read against the raw text parsed here on its
own (polars with every column as a string, numpy / scipy for the statistics): which column became
the effect allele, the effect, the SE, P and N; and ``munge`` / ``sumstats`` / ``polgen export``
results against Z = sign(effect) * Phi^-1(1 - P/2) computed from the raw text, oriented to a
reference list that swaps the alleles of some SNPs.  The LDSC test compares with LDSC's own expected
output of ``munge_sumstats.py`` on the same file.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import norm

from polgen import cli
from polgen.errors import InputError, SchemaError
from polgen.gsem.munge import munge
from polgen.gsem.sumstats import sumstats
from polgen.io.sumstats import read_sumstats, scan_sumstats

DATA = Path(__file__).resolve().parents[1] / "data" / "sumstats_real"
REGENIE = DATA / "regenie" / "test_bin_out_firth_Y1.regenie"
SAIGE_BINARY = DATA / "saige" / "genotype_100markers_marker_plink.txt"
SAIGE_CHRX = DATA / "saige" / "example_binary.SAIGE.vcf.genotype.chrX.txt"
SAIGE_QUANT = DATA / "saige" / "example_quantitative.SAIGE.vcf.genotype.txt"
BOLT = DATA / "bolt_lmm" / "example.stats"
BOLT_IMPUTE2 = DATA / "bolt_lmm" / "example.impute2Snps.stats"
LDSC_DANER = DATA / "ldsc" / "munge_test_sumstats"
LDSC_CORRECT = DATA / "ldsc" / "munge_test_correct.sumstats"
LDSC_MERGE = DATA / "ldsc" / "munge_test_merge_alleles"
LDSC_CORRECT_MERGE = DATA / "ldsc" / "munge_test_correct_merge.sumstats"
PLINK1_LOGISTIC = DATA / "ldsc" / "test21.assoc.logistic"
PLINK2_LOGISTIC = DATA / "plink" / "p2_bin.y.glm.logistic.hybrid"
PLINK2_LINEAR = DATA / "plink" / "p2_qt.x1.glm.linear"
PLINK1_COVAR = DATA / "plink" / "p1_bin.assoc.logistic"
OKBAY = DATA / "mungesumstats" / "eduAttainOkbay.txt"
IEU = DATA / "mungesumstats" / "ieu-a-298.head100.tsv.gz"


def raw_table(path: Path) -> pl.DataFrame:
    """The file as the text says it: header split on tabs, or on runs of blanks; every value a string."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    lines = [ln for ln in data.decode().splitlines() if ln.strip()]
    sep = "\t" if "\t" in lines[0] else None
    rows = [ln.split(sep) if sep else ln.split() for ln in lines]
    header, body = rows[0], rows[1:]
    assert all(len(r) == len(header) for r in body), path
    return pl.DataFrame([list(col) for col in zip(*body)], schema=header, orient="col")


def num(raw: pl.DataFrame, col: str) -> np.ndarray:
    return np.array([float("nan") if v in ("NA", "#NA") else float(v) for v in raw[col].to_list()])


def z_of(p: np.ndarray, effect: np.ndarray) -> np.ndarray:
    """Independent Z: sign(effect) * Phi^-1(1 - P / 2)."""
    return np.sign(effect) * norm.isf(p / 2.0)


def swapped_reference(snps, effect_alleles, other_alleles) -> tuple[pl.DataFrame, np.ndarray]:
    """A reference SNP list (SNP A1 A2) whose alleles are swapped for every other SNP; returns it and
    the sign (+1 / -1) each SNP's effect takes when oriented to the reference's A1."""
    sign = np.where(np.arange(len(snps)) % 2 == 0, 1.0, -1.0)
    a1 = [e if s > 0 else o for e, o, s in zip(effect_alleles, other_alleles, sign)]
    a2 = [o if s > 0 else e for e, o, s in zip(effect_alleles, other_alleles, sign)]
    return pl.DataFrame({"SNP": list(snps), "A1": a1, "A2": a2}), sign


# ---------------------------------------------------------------------------------------------
# REGENIE step 2 (rgcgithub/regenie example/test_bin_out_firth_Y1.regenie)
# ---------------------------------------------------------------------------------------------
def test_regenie_alleles_frequency_n_and_log10p():
    raw = raw_table(REGENIE)
    df = read_sumstats(REGENIE)
    assert df.height == raw.height == 120
    # ALLELE1 is the effect allele (its frequency A1FREQ), ALLELE0 the other one
    assert df["A1"].to_list() == raw["ALLELE1"].to_list() and df["A2"].to_list() == raw["ALLELE0"].to_list()
    np.testing.assert_array_equal(df["MAF"].to_numpy(), num(raw, "A1FREQ"))
    np.testing.assert_array_equal(df["BETA"].to_numpy(), num(raw, "BETA"))
    np.testing.assert_array_equal(df["SE"].to_numpy(), num(raw, "SE"))
    assert set(df["N"].to_list()) == {494.0}
    # LOG10P is -log10 P; REGENIE's CHISQ is the same test's chi-square: |Z| = sqrt(CHISQ)
    log10p = num(raw, "LOG10P")
    np.testing.assert_allclose(df["P"].to_numpy(), 10.0**-log10p, rtol=1e-13)
    np.testing.assert_allclose(norm.isf(df["P"].to_numpy() / 2), np.sqrt(num(raw, "CHISQ")), rtol=2e-5)
    # row 1 by hand: "1 1 1 2 1 0.214575 1 494 ADD 0.0775674 0.230001 0.113736 0.133163 NA"
    first = df.row(0, named=True)
    assert (first["SNP"], first["A1"], first["A2"], first["BETA"]) == ("1", "1", "2", 0.0775674)
    assert first["P"] == pytest.approx(10**-0.133163, rel=1e-12)


def test_regenie_through_sumstats_with_se_logit():
    """REGENIE's binary-trait BETA / SE are on the log-odds scale (se_logit); its alleles are coded 1/2,
    which only keep_indel keeps."""
    raw = raw_table(REGENIE)
    ref, sign = swapped_reference(raw["ID"], raw["ALLELE1"], raw["ALLELE0"])
    ref = ref.with_columns(MAF=pl.lit(0.2))
    got = sumstats([REGENIE], ref, trait_names=["Y1"], se_logit=True, keep_indel=True, info_filter=0.6).collect()
    assert got["SNP"].to_list() == raw["ID"].to_list()
    b, se, p = num(raw, "BETA"), num(raw, "SE"), 10.0 ** -num(raw, "LOG10P")
    f = np.minimum(num(raw, "A1FREQ"), 1 - num(raw, "A1FREQ"))
    denom = np.sqrt(b * b * 2 * f * (1 - f) + math.pi**2 / 3)
    np.testing.assert_allclose(got["beta.Y1"].to_numpy(), sign * b / denom, rtol=1e-12)
    np.testing.assert_allclose(got["se.Y1"].to_numpy(), se / denom, rtol=1e-12)
    assert np.all(np.sign(got["beta.Y1"].to_numpy()) == sign * np.sign(z_of(p, b)))


def test_regenie_other_tests_rows_are_left_out(tmp_path):
    """A REGENIE / PLINK file with several tests per variant: only the ADD rows are the SNP's effect."""
    lines = REGENIE.read_text().splitlines()
    dom = [ln.replace(" ADD ", " DOM ") for ln in lines[1:11]]
    path = tmp_path / "two_tests.regenie"
    path.write_text("\n".join([lines[0], *[x for pair in zip(lines[1:11], dom) for x in pair]]) + "\n")
    df = read_sumstats(path)
    assert df["SNP"].to_list() == [str(i) for i in range(1, 11)] and set(df["TEST"].to_list()) == {"ADD"}
    only_dom = tmp_path / "dom.regenie"
    only_dom.write_text("\n".join([lines[0], *dom]) + "\n")
    with pytest.raises(SchemaError, match="no additive") as err:
        read_sumstats(only_dom)
    assert err.value.column == "TEST" and "dom.regenie" in str(err.value)


# ---------------------------------------------------------------------------------------------
# SAIGE step 2 (saigegit/SAIGE extdata/output)
# ---------------------------------------------------------------------------------------------
def test_saige_beta_is_allele2s_and_matches_its_p():
    raw = raw_table(SAIGE_BINARY)
    df = read_sumstats(SAIGE_BINARY)
    assert df["A1"].to_list() == raw["Allele2"].to_list() and df["A2"].to_list() == raw["Allele1"].to_list()
    np.testing.assert_array_equal(df["MAF"].to_numpy(), num(raw, "AF_Allele2"))
    np.testing.assert_array_equal(df["P"].to_numpy(), num(raw, "p.value"))
    # SAIGE writes SE so that BETA / SE is the Z of its p.value: an independent check that P and BETA
    # are the columns the file means
    z = z_of(df["P"].to_numpy(), df["BETA"].to_numpy())
    np.testing.assert_allclose(z, num(raw, "BETA") / num(raw, "SE"), rtol=1e-4)


def test_saige_binary_through_munge(tmp_path):
    raw = raw_table(SAIGE_BINARY)
    with pytest.raises(SchemaError, match="N_case") as err:  # no N column: the counts are named
        munge([SAIGE_BINARY], hm3=raw.select(SNP="MarkerID", A1="Allele2", A2="Allele1"))
    assert err.value.column == "N"
    n = float(raw["N_case"][0]) + float(raw["N_ctrl"][0])
    ref, sign = swapped_reference(raw["MarkerID"], raw["Allele2"], raw["Allele1"])
    out, _ = munge([SAIGE_BINARY], hm3=ref, trait_names=["B"], N=n, maf_filter=0.01)
    got = out["B"].collect()
    f = num(raw, "AF_Allele2")
    keep = np.minimum(f, 1 - f) >= 0.01
    assert got["SNP"].to_list() == [s for s, k in zip(raw["MarkerID"], keep) if k]
    want = (sign * z_of(num(raw, "p.value"), num(raw, "BETA")))[keep]
    np.testing.assert_allclose(got["Z"].to_numpy(), want, rtol=1e-12)
    assert set(got["N"].to_list()) == {n} and got["A1"].to_list() == ref.filter(pl.Series(keep))["A1"].to_list()


def test_saige_chr_prefix_missing_info_and_numeric_alleles():
    chrx = read_sumstats(SAIGE_CHRX)
    assert raw_table(SAIGE_CHRX)["CHR"].unique().to_list() == ["chrX"]
    assert chrx["CHR"].unique().to_list() == ["X"]
    assert chrx["INFO"].null_count() == chrx.height  # imputationInfo "NA" on genotyped chrX
    assert set(chrx["N"].to_list()) == {1000.0} and chrx["SNP"][0] == "rs4"
    quant = read_sumstats(SAIGE_QUANT)
    raw = raw_table(SAIGE_QUANT)
    assert quant["A1"].to_list() == raw["Allele2"].to_list() == ["2"] * raw.height
    np.testing.assert_array_equal(quant["BETA"].to_numpy(), num(raw, "BETA"))
    np.testing.assert_array_equal(quant["INFO"].to_numpy(), num(raw, "imputationInfo"))


# ---------------------------------------------------------------------------------------------
# BOLT-LMM (the example shipped with BOLT-LMM, as committed in carbocation/bolt-lmm)
# ---------------------------------------------------------------------------------------------
def test_bolt_lmm_p_is_the_non_infinitesimal_one():
    raw = raw_table(BOLT)
    df = read_sumstats(BOLT)
    np.testing.assert_array_equal(df["P"].to_numpy(), num(raw, "P_BOLT_LMM"))
    assert df["P_BOLT_LMM_INF"].to_list() == raw["P_BOLT_LMM_INF"].to_list()  # kept as written
    assert df["A1"].to_list() == raw["ALLELE1"].to_list() and df["A2"].to_list() == raw["ALLELE0"].to_list()
    np.testing.assert_array_equal(df["MAF"].to_numpy(), num(raw, "A1FREQ"))
    # row 1 by hand: rs143500173 17 2748 0 T A 0.00956284 0 0.485396 0.386711 2.1E-01 2.3E-01
    first = df.row(0, named=True)
    assert (first["SNP"], first["CHR"], first["BP"], first["A1"], first["A2"]) == ("rs143500173", "17", 2748, "T", "A")
    assert (first["BETA"], first["SE"], first["P"]) == (0.485396, 0.386711, 0.23)


def test_bolt_lmm_nan_se_of_monomorphic_dosages():
    raw = raw_table(BOLT_IMPUTE2)
    df = read_sumstats(BOLT_IMPUTE2)
    nan_se = (raw["SE"] == "-nan").to_numpy()
    assert nan_se.sum() >= 5
    assert np.isnan(df["SE"].to_numpy()[nan_se]).all() and np.isfinite(df["SE"].to_numpy()[~nan_se]).all()
    np.testing.assert_array_equal(df["INFO"].to_numpy(), num(raw, "INFO"))


def test_bolt_lmm_munge_and_export_round_trip(tmp_path, capsys):
    raw = raw_table(BOLT)
    ref, sign = swapped_reference(raw["SNP"], raw["ALLELE1"], raw["ALLELE0"])
    out, dropped = munge([BOLT], hm3=ref, trait_names=["QT"], N=366, out=tmp_path / "munged", log=False)
    got = out["QT"].collect()
    f = num(raw, "A1FREQ")
    keep = np.minimum(f, 1 - f) >= 0.01
    assert got["SNP"].to_list() == [s for s, k in zip(raw["SNP"], keep) if k]
    want = (sign * z_of(num(raw, "P_BOLT_LMM"), num(raw, "BETA")))[keep]
    np.testing.assert_allclose(got["Z"].to_numpy(), want, rtol=1e-12)
    assert dropped.filter(pl.col("reason") == "maf_below_filter")["n_dropped"].item() == int((~keep).sum())
    # polgen export of the munged table, read back by the sumstats reader
    tsv = tmp_path / "QT.tsv.gz"
    code = cli.main(
        ["export", str(tmp_path / "munged" / "QT.sumstats.parquet"), "--format", "tsv.gz", "--out", str(tsv)]
    )
    assert code == 0, capsys.readouterr().err
    back = read_sumstats(tsv)
    assert back.columns == ["SNP", "N", "Z", "A1", "A2"]
    np.testing.assert_array_equal(back["Z"].to_numpy(), got["Z"].to_numpy())
    assert back["SNP"].to_list() == got["SNP"].to_list() and back["A1"].to_list() == got["A1"].to_list()


# ---------------------------------------------------------------------------------------------
# LDSC's own munge test (bulik/ldsc test/munge_test): a Ricopili-style file and LDSC's expected output
# ---------------------------------------------------------------------------------------------
def test_ldsc_munge_test_file_gives_ldscs_expected_output():
    raw = raw_table(LDSC_DANER)
    hm3 = raw.select("SNP", "A1", "A2")
    # N = cases + controls of the header (FRQ_A_1234, FRQ_U_5468), as LDSC --daner reads it
    out, _ = munge([LDSC_DANER], hm3=hm3, trait_names=["T"], N=1234 + 5468)
    got = out["T"].collect()
    want = pl.read_csv(LDSC_CORRECT, separator="\t")
    assert got["SNP"].to_list() == want["SNP"].to_list()
    assert got["A1"].to_list() == want["A1"].to_list() and got["A2"].to_list() == want["A2"].to_list()
    np.testing.assert_allclose(got["Z"].to_numpy(), want["Z"].to_numpy(), atol=5e-9)  # LDSC prints 8 decimals
    np.testing.assert_array_equal(got["N"].to_numpy(), want["N"].to_numpy())
    # with LDSC's --merge-alleles list: the one SNP LDSC keeps, the same Z
    merged, _ = munge([LDSC_DANER], hm3=LDSC_MERGE, trait_names=["T"], N=6702)
    kept = pl.read_csv(LDSC_CORRECT_MERGE, separator="\t").drop_nulls()
    m = merged["T"].collect()
    assert m["SNP"].to_list() == kept["SNP"].to_list() == ["rs7911665"]
    assert m["Z"][0] == pytest.approx(kept["Z"][0], abs=5e-9)
    # the odds ratio column, by hand: rs11250701 OR 1.02798 P 0.48158 -> Z = +Phi^-1(1 - 0.48158 / 2)
    assert got["Z"][0] == pytest.approx(norm.isf(0.48158 / 2), rel=1e-12)


def test_ldsc_daner_without_n_names_cases_and_controls():
    with pytest.raises(SchemaError) as err:
        munge([LDSC_DANER], hm3=raw_table(LDSC_DANER).select("SNP", "A1", "A2"))
    msg = str(err.value)
    assert "1234 cases and 5468 controls" in msg and "6702" in msg
    assert f"{4 / (1 / 1234 + 1 / 5468):.1f}" in msg and "munge_test_sumstats" in msg


def test_ldsc_sumstats_file_reads_z_and_n():
    df = read_sumstats(LDSC_CORRECT, required=("SNP", "A1", "A2", "Z", "N"))
    raw = raw_table(LDSC_CORRECT)
    np.testing.assert_array_equal(df["Z"].to_numpy(), num(raw, "Z"))
    np.testing.assert_array_equal(df["N"].to_numpy(), num(raw, "N"))


def test_plink1_logistic_padded_columns():
    raw = raw_table(PLINK1_LOGISTIC)
    df = read_sumstats(PLINK1_LOGISTIC)
    assert df["SNP"].to_list() == raw["SNP"].to_list() and df["A1"].to_list() == raw["A1"].to_list()
    np.testing.assert_array_equal(df["OR"].to_numpy(), num(raw, "OR"))
    np.testing.assert_array_equal(df["N"].to_numpy(), num(raw, "NMISS"))  # PLINK 1.9's per-variant N
    assert df.filter(pl.col("SNP") == "rs7020921")["P"].item() == 1e-17
    # PLINK 1.9 writes the tested allele only: munge needs the other one and says so
    with pytest.raises(SchemaError, match="A2") as err:
        munge([PLINK1_LOGISTIC], hm3=raw.select("SNP", "A1", A2=pl.lit("C")))
    assert "test21.assoc.logistic" in str(err.value)


# ---------------------------------------------------------------------------------------------
# PLINK 2 --glm and PLINK 1.9 --logistic run by Debian's plink2 / plink1.9 on SAIGE's example genotypes
# (tests/data/sumstats_real/plink/make.sh): covariate rows, Firth fallback, NA rows, the AX column
# ---------------------------------------------------------------------------------------------
def test_plink2_logistic_with_covariate_rows_through_munge():
    raw = raw_table(PLINK2_LOGISTIC)
    add = raw.filter(pl.col("TEST") == "ADD")
    assert raw.height == 120 and add.height == 40  # ADD, x1, x2 per variant
    df = read_sumstats(PLINK2_LOGISTIC)
    assert df["SNP"].to_list() == add["ID"].to_list() and set(df["TEST"].to_list()) == {"ADD"}
    assert df["A1"].to_list() == add["A1"].to_list()
    assert df["A2"].to_list() == [r if a != r else x for a, r, x in zip(add["A1"], add["REF"], add["ALT"])]
    np.testing.assert_array_equal(df["OR"].to_numpy(), num(add, "OR"))
    np.testing.assert_array_equal(df["SE"].to_numpy(), num(add, "LOG(OR)_SE"))
    np.testing.assert_array_equal(df["N"].to_numpy(), num(add, "OBS_CT"))
    # PLINK's own Z_STAT is log(OR) / SE (6 significant digits printed: an OR near 1 keeps fewer of log OR)
    wald = np.log(df["OR"].to_numpy()) / df["SE"].to_numpy()
    np.testing.assert_allclose(wald, num(add, "Z_STAT"), rtol=2e-5, atol=1e-4)
    ref, sign = swapped_reference(add["ID"], add["A1"], df["A2"])
    out, _ = munge([PLINK2_LOGISTIC], hm3=ref, trait_names=["Y"], N=10000)
    got = out["Y"].collect()
    assert got["SNP"].to_list() == add["ID"].to_list()  # OR detected: log(OR) signs, no covariate rows
    want = sign * z_of(num(add, "P"), np.log(num(add, "OR")))
    np.testing.assert_allclose(got["Z"].to_numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(got["Z"].to_numpy(), sign * num(add, "Z_STAT"), rtol=2e-5)


def test_plink2_linear_other_allele_from_ax_and_a1_freq():
    raw = raw_table(PLINK2_LINEAR)
    df = read_sumstats(PLINK2_LINEAR)
    assert df["A1"].to_list() == raw["A1"].to_list() and df["A2"].to_list() == raw["AX"].to_list()
    assert df["REF"].to_list() == raw["REF"].to_list()  # kept under its own name
    np.testing.assert_array_equal(df["MAF"].to_numpy(), num(raw, "A1_FREQ"))
    np.testing.assert_array_equal(df["BETA"].to_numpy(), num(raw, "BETA"))
    t = num(raw, "T_STAT")
    tested = ~np.isnan(t)  # monomorphic variants: NA statistics
    assert tested.sum() >= 50 and np.isnan(df["P"].to_numpy()[~tested]).all()
    # 9997 degrees of freedom: the normal Z of P is the t statistic to 1e-3
    np.testing.assert_allclose(z_of(df["P"].to_numpy(), df["BETA"].to_numpy())[tested], t[tested], rtol=1e-3)


def test_plink1_logistic_with_covariate_rows_and_na_agrees_with_plink2():
    raw = raw_table(PLINK1_COVAR)
    add = raw.filter(pl.col("TEST") == "ADD")
    df = read_sumstats(PLINK1_COVAR)
    assert df["SNP"].to_list() == add["SNP"].to_list() and set(df["N"].to_list()) == {10000.0}
    na = (add["OR"] == "NA").to_numpy()
    assert na.sum() >= 5 and df["OR"].is_null().to_numpy().tolist() == na.tolist()
    assert df["P"].is_null().to_numpy().tolist() == na.tolist()
    # the same analysis by PLINK 2 (which falls back to Firth where PLINK 1.9 writes NA): ORs and P
    # agree to PLINK 1.9's 4 significant digits
    p2 = read_sumstats(PLINK2_LOGISTIC).filter(pl.col("FIRTH?") == "N")
    both = p2.join(df, on="SNP", suffix="_p1").filter(pl.col("OR_p1").is_not_null())
    assert both.height >= 25
    np.testing.assert_allclose(both["OR_p1"].to_numpy(), both["OR"].to_numpy(), rtol=5e-4)
    np.testing.assert_allclose(both["P_p1"].to_numpy(), both["P"].to_numpy(), rtol=5e-4, atol=5e-5)


# ---------------------------------------------------------------------------------------------
# MungeSumstats' example files (neurogenomics/MungeSumstats inst/extdata)
# ---------------------------------------------------------------------------------------------
def test_okbay_markername_eaf_beta_pval():
    raw = raw_table(OKBAY)
    df = read_sumstats(OKBAY)
    assert df["SNP"].to_list() == raw["MarkerName"].to_list()
    np.testing.assert_array_equal(df["MAF"].to_numpy(), num(raw, "EAF"))
    np.testing.assert_array_equal(df["BETA"].to_numpy(), num(raw, "Beta"))
    np.testing.assert_array_equal(df["P"].to_numpy(), num(raw, "Pval"))
    ref, sign = swapped_reference(raw["MarkerName"], raw["A1"], raw["A2"])
    out, _ = munge([OKBAY], hm3=ref, trait_names=["EA"], N=293723)
    got = out["EA"].collect()
    assert got["SNP"].to_list() == raw["MarkerName"].to_list()
    np.testing.assert_allclose(got["Z"].to_numpy(), sign * z_of(num(raw, "Pval"), num(raw, "Beta")), rtol=1e-12)
    # Beta / SE as printed (SE to 3 decimals) agrees with the Z of Pval to the rounding of SE
    np.testing.assert_allclose(np.abs(got["Z"].to_numpy()), np.abs(num(raw, "Beta") / num(raw, "SE")), rtol=0.2)


def test_ieu_open_gwas_file_snp_over_id_and_p_over_lp():
    raw = raw_table(IEU)
    lf = scan_sumstats(IEU)
    df = lf.collect()
    assert df["SNP"].to_list() == raw["SNP"].to_list() and df["ID"].to_list() == raw["ID"].to_list()
    np.testing.assert_array_equal(df["P"].to_numpy(), num(raw, "P"))
    np.testing.assert_allclose(-np.log10(df["P"].to_numpy()), num(raw, "LP"), atol=1e-5)  # LP = -log10 P
    np.testing.assert_array_equal(df["N"].to_numpy(), num(raw, "N"))
    assert df["A1"].to_list() == raw["A1"].to_list()


# ---------------------------------------------------------------------------------------------
# GWAS-SSF's missing-value token
# ---------------------------------------------------------------------------------------------
def test_gwas_ssf_hash_na_is_missing(tmp_path):
    """The GWAS-SSF specification recommends ``#NA`` for a missing value (e.g. a variant without an rs
    id); the spec's example repository carries no licence, so these rows are written here."""
    path = tmp_path / "ssf.tsv"
    header = "chromosome\tbase_pair_location\teffect_allele\tother_allele\tbeta\tstandard_error"
    header += "\teffect_allele_frequency\tp_value\tvariant_id\trsid"
    path.write_text(
        header + "\n1\t100\tA\tG\t-0.01\t0.008\t0.99\t0.1\t1_100_A_G\t#NA\n"
        "2\t200\tT\tC\t0.02\t0.002\t#NA\t#NA\t2_200_C_T\trs2\n"
    )
    df = read_sumstats(path, required=())
    assert df["SNP"].to_list() == [None, "rs2"] and df["P"].to_list() == [0.1, None]
    assert df["MAF"].to_list() == [0.99, None]
    bad = tmp_path / "bad.tsv"
    bad.write_text(header + "\n1\t100\tA\tG\t-0.01\t0.008\t0.99\tNR\t1_100_A_G\trs1\n")
    with pytest.raises(InputError, match="non-numeric") as err:
        read_sumstats(bad, required=())
    assert err.value.column == "P" and err.value.row == 1


def test_plink2_glm_without_omitted_other_allele_per_row(tmp_path):
    """PLINK 2 ``--glm`` with its older default columns (``REF ALT A1``, no ``OMITTED``): A1 is REF on
    some rows (it is the tested allele, minor or not), so the other allele is ALT there and REF elsewhere;
    a covariate row (TEST = PC1, no hide-covar) is not the SNP's effect.  Values written here: no PLINK 2
    output with a redistributable licence was found (excerpts only, in tutorials)."""
    path = tmp_path / "plink2.PHENO1.glm.logistic.hybrid"
    path.write_text(
        "#CHROM\tPOS\tID\tREF\tALT\tA1\tTEST\tOBS_CT\tOR\tLOG(OR)_SE\tZ_STAT\tP\tERRCODE\n"
        "chr1\t13273\trs1\tG\tC\tC\tADD\t503\t0.75\t0.28\t-1.02\t0.31\t.\n"
        "chr1\t13273\trs1\tG\tC\tC\tPC1\t503\t1.40\t0.10\t3.36\t7.7e-4\t.\n"
        "chr1\t69897\trs2\tT\tC\tT\tADD\t503\t1.69\t0.20\t2.62\t0.0087\t.\n"
        "chr1\t86331\trs3\tA\tG,T\tT\tADD\t503\t1.10\t0.30\t0.32\t0.75\t.\n"
    )
    df = read_sumstats(path)
    assert df["SNP"].to_list() == ["rs1", "rs2", "rs3"] and df["CHR"].to_list() == ["1", "1", "1"]
    assert df["A1"].to_list() == ["C", "T", "T"] and df["A2"].to_list() == ["G", "C", "A"]
    assert df["OR"].to_list() == [0.75, 1.69, 1.10] and df["SE"].to_list() == [0.28, 0.20, 0.30]
    assert df["N"].to_list() == [503.0] * 3 and df["P"].to_list() == [0.31, 0.0087, 0.75]


def _z_mp(neglog10p: float) -> float:
    """|Z| with 2 * (1 - Phi(|Z|)) = 10^-x, solved in 60-digit arithmetic (independent of scipy)."""
    import mpmath

    mpmath.mp.dps = 60
    log_target = -mpmath.mpf(neglog10p) * mpmath.log(10)
    root = mpmath.findroot(lambda z: mpmath.log(mpmath.erfc(z / mpmath.sqrt(2))) - log_target, 5.0)
    return float(root)


def test_p_below_the_double_range_keeps_its_z(tmp_path):
    """REGENIE writes LOG10P for P values a double cannot hold (biobank-scale hits reach LOG10P in the
    hundreds), and GWAS-SSF text may spell them out (1.5E-400): such a P must not read as 0 nor stop
    the run - -log10 P is kept beside P = 0 and munge / sumstats take Z from it, exactly."""
    lines = [ln.split(" ") for ln in REGENIE.read_text().splitlines()[:4]]
    for f in lines[1:]:
        f[3], f[4] = "G", "A"  # the example's alleles are 1/2; munge keeps A/C/G/T only
    lines[3][12] = "400.5"  # LOG10P of the third SNP
    path = tmp_path / "strong.regenie"
    path.write_text("\n".join(" ".join(f) for f in lines) + "\n")
    df = read_sumstats(path)
    assert df["P"][2] == 0.0 and df["NEG_LOG10_P"][2] == 400.5
    ref = df.select("SNP", "A1", "A2")
    out = munge([path], hm3=ref, trait_names=["T"], N=1000, log=False)[0]["T"].collect()
    z = out.filter(pl.col("SNP") == df["SNP"][2])["Z"].item()
    assert abs(abs(z) - _z_mp(400.5)) < 1e-9 * _z_mp(400.5) and np.sign(z) == np.sign(df["BETA"][2])
    # the other rows are unchanged: Z from P as before
    z1 = out.filter(pl.col("SNP") == df["SNP"][0])["Z"].item()
    assert z1 == pytest.approx(np.sign(df["BETA"][0]) * norm.isf(df["P"][0] / 2), rel=1e-12)

    ssf = tmp_path / "tiny.tsv"
    ssf.write_text("SNP\tA1\tA2\tBETA\tP\nrs1\tA\tG\t0.1\t5e-324\nrs2\tA\tG\t-0.1\t1.5E-400\n")
    tiny = read_sumstats(ssf)
    assert tiny["P"].to_list() == [5e-324, 0.0]
    assert tiny["NEG_LOG10_P"][0] is None and tiny["NEG_LOG10_P"][1] == pytest.approx(400 - math.log10(1.5), rel=1e-14)
    out = munge([ssf], hm3=tiny.select("SNP", "A1", "A2"), trait_names=["T"], N=1000, log=False)[0]["T"].collect()
    zz = dict(zip(out["SNP"], out["Z"]))
    assert zz["rs2"] == pytest.approx(-_z_mp(400 - math.log10(1.5)), rel=1e-9)
    assert zz["rs1"] == pytest.approx(_z_mp(-math.log10(5e-324)), rel=1e-6)  # 5e-324 is a subnormal (1 digit)
    ref_maf = tiny.select("SNP", "A1", "A2", MAF=pl.lit(0.3))
    ss = sumstats([ssf], ref_maf, trait_names=["T"], se_logit=False, OLS=True, N=1000, log=False).collect()
    beta = dict(zip(ss["SNP"], ss["beta.T"]))
    assert beta["rs2"] == pytest.approx(-_z_mp(400 - math.log10(1.5)) / math.sqrt(1000 * 2 * 0.3 * 0.7), rel=1e-9)

    # what cannot be read still says so: a P below the range not written as mantissa and exponent
    bad = tmp_path / "bad.tsv"
    bad.write_text("SNP\tA1\tA2\tBETA\tP\nrs1\tA\tG\t0.1\t0.5\nrs2\tA\tG\t0.1\t0." + "0" * 400 + "1\n")
    with pytest.raises(InputError, match="below the smallest positive double") as err:
        read_sumstats(bad)
    assert (err.value.column, err.value.row) == ("P", 2)
    zero = tmp_path / "zero.tsv"
    zero.write_text("SNP\tA1\tA2\tBETA\tP\nrs1\tA\tG\t0.1\t5e-324\nrs2\tA\tG\t0.1\t0.0E-5\n")
    assert read_sumstats(zero)["P"].to_list() == [5e-324, 0.0]  # a written 0 is a 0 (munge refuses it)
    with pytest.raises(InputError, match="outside"):
        munge([zero], hm3=tiny.select("SNP", "A1", "A2"), trait_names=["T"], N=1000, log=False)


def test_okbay_through_sumstats_ols_and_saige_linprob_without_n():
    raw = raw_table(OKBAY)
    ref, sign = swapped_reference(raw["MarkerName"], raw["A1"], raw["A2"])
    ref = ref.with_columns(MAF=pl.lit(0.3))
    n = 293723.0
    got = sumstats([OKBAY], ref, trait_names=["EA"], se_logit=False, OLS=True, N=n).collect()
    assert got["SNP"].to_list() == raw["MarkerName"].to_list()
    eaf = num(raw, "EAF")
    f = np.minimum(eaf, 1 - eaf)
    z = sign * z_of(num(raw, "Pval"), num(raw, "Beta"))
    beta = z / np.sqrt(n * 2 * f * (1 - f))
    np.testing.assert_allclose(got["beta.EA"].to_numpy(), beta, rtol=1e-12)
    np.testing.assert_allclose(got["se.EA"].to_numpy(), np.abs(beta / z), rtol=1e-12)
    saige = raw_table(SAIGE_BINARY)
    saige_ref = saige.select(SNP="MarkerID", A1="Allele2", A2="Allele1", MAF=pl.lit(0.3))
    with pytest.raises(SchemaError, match="N_case") as err:
        sumstats([SAIGE_BINARY], saige_ref, se_logit=False, linprob=True)
    assert err.value.column == "N" and "genotype_100markers_marker_plink" in str(err.value)


def test_gwas_ssf_export_round_trip(tmp_path, capsys):
    """A per-SNP GWAS result (here BOLT-LMM's example rows in polgen's user_gwas columns) exported as
    GWAS-SSF by ``polgen export`` and read back: effect allele, beta, SE, P, N and rsid as written."""
    raw = raw_table(BOLT).head(40)
    beta, se, p = num(raw, "BETA"), num(raw, "SE"), num(raw, "P_BOLT_LMM")
    res = pl.DataFrame(
        {
            "SNP": raw["SNP"],
            "CHR": raw["CHR"],
            "BP": num(raw, "BP").astype(np.int64),
            "MAF": np.minimum(num(raw, "A1FREQ"), 1 - num(raw, "A1FREQ")),
            "A1": raw["ALLELE1"],
            "A2": raw["ALLELE0"],
            "lhs": ["F1"] * 40,
            "op": ["~"] * 40,
            "rhs": ["SNP"] * 40,
            "est": beta,
            "se": se,
            "z": beta / se,
            "p": p,
            "log10p": -np.log10(p),
            "converged": [True] * 40,
            "warning": [""] * 40,
        }
    )
    folder = tmp_path / "gwas"
    folder.mkdir()
    res.write_parquet(folder / "part-00000.parquet")
    out = tmp_path / "F1.tsv.gz"
    argv = ["export", str(folder), "--format", "ssf", "--lhs", "F1", "--n", "366", "--out", str(out), "-q"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    back = read_sumstats(out)
    assert back["SNP"].to_list() == raw["SNP"].to_list() and back["A1"].to_list() == raw["ALLELE1"].to_list()
    assert back["A2"].to_list() == raw["ALLELE0"].to_list() and back["CHR"].to_list() == raw["CHR"].to_list()
    np.testing.assert_allclose(back["BETA"].to_numpy(), beta, rtol=1e-6)
    np.testing.assert_allclose(back["SE"].to_numpy(), se, rtol=1e-6)
    np.testing.assert_allclose(back["P"].to_numpy(), p, rtol=1e-5)
    assert set(back["N"].to_list()) == {366.0}
