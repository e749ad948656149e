"""scan_sumstats: delimiter sniffing, compression, parquet, alias table, typed errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from polgen.errors import InputError, SchemaError
from polgen.io.sumstats import read_sumstats, resolve_columns, scan_sumstats

ROWS = [
    ("rs1", "1", "100", "a", "g", "0.10", "0.02", "0.001", "1000", "0.30", "0.95"),
    ("rs2", "1", "200", "C", "T", "-0.20", "0.03", "0.5", "1000", "0.70", "NA"),
    ("rs3", "2", "300", "G", "A", "NA", "0.01", "1e-320", "900", ".", "0.80"),
]
HEAD = ["MarkerName", "CHROM", "POS", "Effect_Allele", "Other_Allele", "BETA", "StdErr", "PVAL", "N", "FRQ", "INFO"]


def _write(path: Path, sep: str, *, pad: bool = False, gz: bool = False) -> Path:
    lines = [sep.join(HEAD)] + [sep.join(r) for r in ROWS]
    if pad:  # aligned columns with runs of spaces and leading blanks
        lines = ["  " + "   ".join(f"{c:>12}" for c in line.split(sep)) + "  " for line in lines]
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def _expected() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "SNP": ["rs1", "rs2", "rs3"],
            "CHR": ["1", "1", "2"],
            "BP": [100, 200, 300],
            "A1": ["a", "C", "G"],
            "A2": ["g", "T", "A"],
            "BETA": [0.10, -0.20, None],
            "SE": [0.02, 0.03, 0.01],
            "P": [0.001, 0.5, 1e-320],
            "N": [1000.0, 1000.0, 900.0],
            "MAF": [0.30, 0.70, None],
            "INFO": [0.95, None, 0.80],
        }
    )


@pytest.mark.parametrize(
    "sep,pad,gz",
    [("\t", False, False), (",", False, True), (" ", False, False), (" ", True, True), ("\t", False, True)],
)
def test_text_layouts_give_the_same_canonical_frame(tmp_path, sep, pad, gz):
    f = _write(tmp_path / ("s.txt.gz" if gz else "s.txt"), sep, pad=pad, gz=gz)
    lf = scan_sumstats(f)
    assert isinstance(lf, pl.LazyFrame)
    got = lf.collect()
    assert_frame_equal(got.select(_expected().columns), _expected())
    assert got["P"][2] == pytest.approx(1e-320, rel=1e-12)  # subnormal P survives parsing


def test_parquet_is_scanned_lazily_with_canonical_names(tmp_path):
    src = _expected().rename({"SNP": "rsid", "A1": "ALT", "A2": "REF", "P": "p_value", "MAF": "EAF"})
    src.write_parquet(tmp_path / "x.parquet")
    got = scan_sumstats(tmp_path / "x.parquet").collect()
    assert set(_expected().columns) <= set(got.columns)
    assert_frame_equal(got.select(_expected().columns), _expected())


def test_glob_concatenates_in_sorted_order_and_counts_rows(tmp_path):
    for i in (2, 1):
        p = tmp_path / f"chr{i}.tsv"
        p.write_text("SNP\tA1\tA2\tP\n" + f"rs{i}a\tA\tG\t0.1\n" + f"rs{i}b\tA\tG\t{'x' if i == 2 else 0.2}\n")
    with pytest.raises(InputError) as ei:
        scan_sumstats(tmp_path / "chr*.tsv")
    assert ei.value.column == "P" and ei.value.row == 2 and "chr2.tsv" in str(ei.value)
    (tmp_path / "chr2.tsv").write_text("SNP\tA1\tA2\tP\nrs2a\tA\tG\t0.3\n")
    got = scan_sumstats(tmp_path / "chr*.tsv").collect()
    assert got["SNP"].to_list() == ["rs1a", "rs1b", "rs2a"]


def test_aliases_exact_name_wins_and_neff_half_is_doubled(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("SNP ID A1 A2 OR P NEFF_HALF\nrs1 x A G 1.1 0.2 500\n")
    got = scan_sumstats(f).collect()
    assert got["SNP"][0] == "rs1" and got["ID"][0] == "x"  # the other alias is kept untouched
    assert got["OR"][0] == pytest.approx(1.1)
    assert got["N"][0] == 1000.0


def test_ambiguous_and_missing_columns_raise_schema_errors(tmp_path):
    f = tmp_path / "amb.txt"
    f.write_text("SNPID\tMARKERNAME\tA1\tA2\tP\nrs1\trs1\tA\tG\t0.5\n")
    with pytest.raises(SchemaError, match="ambiguous SNP column") as ei:
        scan_sumstats(f)
    assert "SNPID" in str(ei.value) and "MARKERNAME" in str(ei.value) and "amb.txt" in str(ei.value)
    # one of them spelled rsid settles it (GWAS-SSF: rsid + variant_id): rsid is the SNP
    f.write_text("RSID\tMARKERNAME\tA1\tA2\tP\nrs1\t1:100\tA\tG\t0.5\n")
    got = scan_sumstats(f).collect()
    assert got["SNP"].to_list() == ["rs1"] and got["MARKERNAME"].to_list() == ["1:100"]
    g = tmp_path / "miss.txt"
    g.write_text("foo\tA1\tA2\nrs1\tA\tG\n")
    with pytest.raises(SchemaError, match="missing required column") as ei:
        scan_sumstats(g)
    assert "foo" in str(ei.value)  # lists what was found
    with pytest.raises(SchemaError, match="same name ignoring case"):
        resolve_columns(["snp", "SNP"])


def test_non_numeric_value_names_file_column_and_row(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_text("SNP\tA1\tA2\tBETA\tP\nrs1\tA\tG\t0.1\t0.5\nrs2\tA\tG\t0.2\tNA\nrs3\tA\tG\t0.3\tabc\n")
    with pytest.raises(InputError) as ei:
        scan_sumstats(f)
    e = ei.value
    assert (e.column, e.row) == ("P", 3) and e.path.endswith("bad.txt") and "'abc'" in str(e)
    # the same check for a string column inside a parquet file and for in-memory frames
    pl.DataFrame({"SNP": ["rs1"], "A1": ["A"], "A2": ["G"], "P": ["zz"]}).write_parquet(tmp_path / "b.pq")
    with pytest.raises(InputError, match="non-numeric"):
        scan_sumstats(tmp_path / "b.pq")
    with pytest.raises(InputError) as ei:
        read_sumstats(pl.DataFrame({"SNP": ["a", "b"], "BETA": ["1", "q"]}))
    assert (ei.value.column, ei.value.row) == ("BETA", 2)


def test_ragged_and_missing_files_raise_input_errors(tmp_path):
    f = tmp_path / "rag.txt"
    f.write_text("SNP\tA1\tA2\nrs1\tA\tG\tEXTRA\tMORE\n")
    with pytest.raises(InputError):
        scan_sumstats(f)
    with pytest.raises(InputError, match="not found"):
        scan_sumstats(tmp_path / "nope.txt")
    with pytest.raises(InputError, match="no file matches"):
        scan_sumstats(tmp_path / "nope*.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(InputError, match="empty"):
        scan_sumstats(tmp_path / "empty.txt")


def test_large_file_round_trip_is_fast_and_exact(tmp_path):
    rng = np.random.default_rng(3)
    n = 200_000
    df = pl.DataFrame(
        {
            "SNP": [f"rs{i}" for i in range(n)],
            "A1": "A",
            "A2": "G",
            "BETA": rng.normal(size=n),
            "P": rng.uniform(size=n),
        }
    )
    df.write_csv(tmp_path / "big.tsv", separator="\t", float_precision=None)
    got = scan_sumstats(tmp_path / "big.tsv").collect()
    np.testing.assert_array_equal(got["BETA"].to_numpy(), df["BETA"].to_numpy())


def test_blank_runs_only_in_data_lines_and_bgzip_members(tmp_path):
    f = tmp_path / "ws.txt"
    f.write_text("SNP A1 A2 P\nrs1 A G  0.5\nrs2 C T 0.25 \n")
    got = scan_sumstats(f).collect()
    assert got["P"].to_list() == [0.5, 0.25] and got["A2"].to_list() == ["G", "T"]
    g = tmp_path / "bgz.txt.gz"
    g.write_bytes(gzip.compress(b"SNP\tP\nrs1\t0.5\n") + gzip.compress(b"rs2\t0.125\n"))
    assert scan_sumstats(g).collect()["P"].to_list() == [0.5, 0.125]
    h = tmp_path / "trunc.txt.gz"
    h.write_bytes(gzip.compress(b"SNP\tP\n" + b"rs1\t0.5\n" * 1000)[:-20])
    with pytest.raises(InputError, match="cannot read"):
        scan_sumstats(h)


def test_user_column_names_override_the_alias_table(tmp_path):
    f = tmp_path / "u.txt"
    f.write_text("id\tea\toa\tlogodds\tpv\tB\nrs1\tA\tG\t0.1\t0.5\t9\n")
    got = scan_sumstats(f, column_names={"SNP": "id", "A1": "EA", "A2": "oa", "effect": "logodds", "P": "pv"}).collect()
    assert got.row(0, named=True) == {"SNP": "rs1", "A1": "A", "A2": "G", "BETA": 0.1, "P": 0.5, "B": "9"}
    with pytest.raises(SchemaError, match="not in the file"):
        scan_sumstats(f, column_names={"SNP": "nope"})
    with pytest.raises(SchemaError, match="not one of"):
        scan_sumstats(f, column_names={"WHAT": "id"})
