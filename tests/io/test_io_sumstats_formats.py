"""Real-world summary-statistics layouts (issue 16): GWAS Catalog GWAS-SSF (rsid and variant_id
both present by design: rsid is the SNP), -log10 P columns, missing reference files named by their
role, and no internal ``__row`` column in the columns an error lists."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from polgen import cli
from polgen.errors import InputError, SchemaError
from polgen.io.sumstats import ROW, read_sumstats, resolve_columns, scan_sumstats

# The header of GWAS-SSF v1.0 as the GWAS Catalog spells it (EBISPOT/gwas-summary-statistics-standard,
# examples/0000123.tsv: the mandatory fields in order, then variant_id and rsid), plus the optional
# n and info fields of the spec.  Tab-separated; "NA" for a variant without an rs id.  Values made up.
SSF_HEADER = [
    "chromosome",
    "base_pair_location",
    "effect_allele",
    "other_allele",
    "beta",
    "standard_error",
    "effect_allele_frequency",
    "p_value",
    "variant_id",
    "rsid",
    "n",
    "info",
]
SSF_ROWS = [
    ["1", "869388", "A", "G", "-0.016619", "0.00806496", "0.4972", "0.1", "1_869388_A_G", "NA", "50000", "0.98"],
    [
        "1",
        "1005811",
        "C",
        "T",
        "-0.0089589",
        "0.00331941",
        "0.3836",
        "9.7E-03",
        "1_1005811_C_T",
        "rs101",
        "50000",
        "0.99",
    ],
    [
        "2",
        "70478797",
        "T",
        "C",
        "0.0187528",
        "0.00167685",
        "0.234121",
        "3.5E-30",
        "2_70478797_T_C",
        "rs102",
        "49000",
        "0.97",
    ],
    [
        "2",
        "27875036",
        "A",
        "G",
        "-0.0184003",
        "0.00101051",
        "0.21549",
        "5.7E-76",
        "2_27875036_A_G",
        "rs103",
        "49000",
        "0.95",
    ],
    [
        "23",
        "24145170",
        "A",
        "G",
        "0.00387762",
        "0.08757958",
        "0.627178",
        "2.3E-08",
        "23_24145170_A_G",
        "rs104",
        "48000",
        "0.96",
    ],
]


def write_ssf(path: Path, header=SSF_HEADER, rows=SSF_ROWS, gz: bool = True) -> Path:
    text = "\n".join("\t".join(r) for r in [header, *rows]) + "\n"
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_gwas_ssf_is_read_with_rsid_as_snp(tmp_path, caplog):
    path = write_ssf(tmp_path / "GCST90000123.tsv.gz")
    with caplog.at_level(logging.INFO, logger="polgen"):
        df = read_sumstats(path, required=("SNP", "A1", "A2", "P", "BETA", "SE", "N"))
    assert "SNP ids read from column 'rsid'" in caplog.text and "'variant_id'" in caplog.text
    assert df["SNP"].to_list() == [None, "rs101", "rs102", "rs103", "rs104"]
    assert df["variant_id"].to_list()[1] == "1_1005811_C_T"  # the other id column is kept as it is
    assert df["A1"].to_list()[:3] == ["A", "C", "T"] and df["A2"].to_list()[:3] == ["G", "T", "C"]
    assert df["CHR"].to_list()[-1] == "23" and df["BP"].dtype == pl.Int64 and df["BP"][2] == 70478797
    np.testing.assert_allclose(df["P"].to_numpy(), [0.1, 9.7e-3, 3.5e-30, 5.7e-76, 2.3e-8])
    np.testing.assert_allclose(df["MAF"].to_numpy()[:2], [0.4972, 0.3836])
    assert df["N"].to_list() == [50000.0, 50000.0, 49000.0, 49000.0, 48000.0]
    assert df["INFO"][0] == pytest.approx(0.98)
    assert scan_sumstats(path).collect().equals(read_sumstats(path))


def test_rsid_rule_only_settles_snp_columns(tmp_path):
    # without an rsid column two SNP-id columns stay ambiguous (which one is meant cannot be known)
    with pytest.raises(SchemaError, match=r"ambiguous SNP column: \['MarkerName', 'variant_id'\]"):
        resolve_columns(["MarkerName", "variant_id", "P"])
    assert resolve_columns(["RSID", "variant_id", "SNPID"])["RSID"] == "SNP"
    # a canonical SNP column still wins over rsid
    m = resolve_columns(["SNP", "rsid", "variant_id"])
    assert m == {"SNP": "SNP"}


def test_neg_log10_p_is_read_as_p(tmp_path):
    header = [h if h != "p_value" else "neg_log_10_p_value" for h in SSF_HEADER]
    rows = [[*r[:7], str(-np.log10(float(r[7]))), *r[8:]] for r in SSF_ROWS]
    df = read_sumstats(write_ssf(tmp_path / "neglog.tsv", header, rows, gz=False), required=("SNP", "P"))
    np.testing.assert_allclose(df["P"].to_numpy(), [0.1, 9.7e-3, 3.5e-30, 5.7e-76, 2.3e-8], rtol=1e-9)
    # REGENIE spells it LOG10P; a real P column wins when both are present
    regenie = pl.DataFrame({"ID": ["rs1", "rs2"], "ALLELE1": ["A", "C"], "ALLELE0": ["G", "T"], "LOG10P": [2.0, 8.0]})
    np.testing.assert_allclose(read_sumstats(regenie)["P"].to_numpy(), [1e-2, 1e-8])
    both = regenie.with_columns(P=pl.lit(0.5))
    assert read_sumstats(both)["P"].to_list() == [0.5, 0.5] and "LOG10P" in read_sumstats(both).columns


def test_gwas_ssf_through_munge_on_the_command_line(tmp_path, capsys):
    ssf = write_ssf(tmp_path / "GCST90000123.tsv.gz")
    hm3 = tmp_path / "w_hm3.snplist"
    hm3.write_text("SNP\tA1\tA2\nrs101\tC\tT\nrs102\tT\tC\nrs103\tG\tA\nrs104\tA\tG\nrs999\tA\tC\n")
    out = tmp_path / "munged"
    code = cli.main(
        ["gsem", "munge", "--files", str(ssf), "--hm3", str(hm3), "--trait-names", "T", "--out", str(out), "-q"]
    )
    assert code == 0, capsys.readouterr().err
    munged = pl.read_parquet(out / "T.sumstats.parquet")
    assert munged["SNP"].to_list() == ["rs101", "rs102", "rs103", "rs104"]
    # rs103 is given on the other strand order (A1 = G in the list): its Z flips sign
    z = dict(zip(munged["SNP"], munged["Z"]))
    assert z["rs102"] > 0 and z["rs103"] > 0 and z["rs101"] < 0


def test_missing_reference_files_are_named_by_their_role(tmp_path, capsys):
    ssf = write_ssf(tmp_path / "a.tsv.gz")
    missing = tmp_path / "w_hm3.snplist"
    assert cli.main(["gsem", "munge", "--files", str(ssf), "--hm3", str(missing), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("polgen: error: reference SNP list (--hm3) not found") and "w_hm3.snplist" in err
    assert "summary statistics" not in err
    argv = ["gsem", "sumstats", "--files", str(ssf), "--ref", str(tmp_path / "ref.txt"), "--se-logit", "F"]
    assert cli.main([*argv, "--out", str(tmp_path / "s.parquet")]) == 2
    assert capsys.readouterr().err.startswith("polgen: error: reference panel (--ref) not found")
    argv = ["gsem", "munge", "--files", str(tmp_path / "gone.tsv"), "--hm3", str(missing), "--out", str(tmp_path / "m")]
    assert cli.main(argv) == 2
    assert "summary statistics file (--files) not found" in capsys.readouterr().err
    # the library names no role it cannot know
    with pytest.raises(InputError, match=r"^input file not found") as info:
        read_sumstats(missing)
    assert "summary statistics" not in str(info.value)
    with pytest.raises(InputError, match="reference SNP list not found"):
        read_sumstats(missing, what="reference SNP list")


def test_errors_do_not_list_the_internal_row_column(tmp_path, capsys):
    # the reader's own messages
    assert ROW not in str(resolve_columns([ROW, "SNP", "A1"], required=()))
    with pytest.raises(SchemaError) as info:
        resolve_columns([ROW, "SNP", "A1"], required=("P",))
    assert ROW not in str(info.value) and "['SNP', 'A1']" in str(info.value)
    # a method's message about a file read with row numbers (munge: no effect column)
    noeff = tmp_path / "noeff.tsv"
    noeff.write_text("SNP\tA1\tA2\tP\tN\nrs1\tA\tG\t0.5\t1000\n")
    hm3 = tmp_path / "hm3.txt"
    hm3.write_text("SNP\tA1\tA2\nrs1\tA\tG\n")
    assert cli.main(["gsem", "munge", "--files", str(noeff), "--hm3", str(hm3), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "cannot find an effect column" in err and ROW not in err
    assert "found columns ['SNP', 'A1', 'A2', 'P', 'N']" in err
    assert cli.user_message(ValueError("found columns ['__row']")) == "found columns []"


def test_ld_score_directory_messages(tmp_path):
    from polgen.io.ldscores import read_ldscores

    with pytest.raises(InputError, match="LD score directory .* not found"):
        read_ldscores(tmp_path / "nope", [1])
    d = tmp_path / "ld"
    d.mkdir()
    (d / "1.l2.ldscore").write_text("CHR\tSNP\tBP\tL2\n1\trs1\t10\t1.5\n")
    (d / "2.l2.ldscore").write_text("CHR\tSNP\tBP\tL2\n2\trs2\t10\t1.5\n")
    with pytest.raises(InputError, match=r"chromosome 3 not found .*holds chromosomes 1-2"):
        read_ldscores(d, [1, 2, 3])
