"""scan_ldscores / read_m on files in LDSC's per-chromosome layout."""

from __future__ import annotations

import gzip

import polars as pl
import pytest

from polgen.errors import InputError, SchemaError
from polgen.io.ldscores import available_chromosomes, m_per_chromosome, read_m, scan_ldscores


def _make(d, chroms=(1, 2, 3), prefix=""):
    d.mkdir(parents=True, exist_ok=True)
    for c in chroms:
        text = "CHR\tSNP\tBP\tCM\tMAF\tL2\n" + "".join(
            f"{c}\trs{c}_{i}\t{100 * i}\t0.0\t0.2\t{c + i / 10}\n" for i in range(1, 4)
        )
        with gzip.open(d / f"{prefix}{c}.l2.ldscore.gz", "wt") as fh:
            fh.write(text)
        (d / f"{prefix}{c}.l2.M_5_50").write_text(f"{10 * c}\n")
        (d / f"{prefix}{c}.l2.M").write_text(f"{100 * c}\n")


def test_scan_ldscores_reads_all_chromosomes_in_order(tmp_path):
    _make(tmp_path / "ld")
    assert available_chromosomes(tmp_path / "ld") == [1, 2, 3]
    got = scan_ldscores(tmp_path / "ld").collect()
    assert got.height == 9 and got.columns == ["CHR", "SNP", "BP", "CM", "MAF", "L2"]
    assert got.schema["CHR"] == pl.String and got.schema["BP"] == pl.Int64
    assert got["L2"].to_list()[:3] == pytest.approx([1.1, 1.2, 1.3])
    sub = scan_ldscores(tmp_path / "ld", chromosomes=[3, 1]).collect()
    assert sub["CHR"].to_list() == ["3"] * 3 + ["1"] * 3


def test_m_files_and_prefix_layout(tmp_path):
    _make(tmp_path / "w", prefix="weights.")
    assert read_m(tmp_path / "w" / "weights.") == 60.0
    assert read_m(tmp_path / "w" / "weights.", [1, 3], suffix="M") == 400.0
    assert m_per_chromosome(tmp_path / "w" / "weights.")["M"].to_list() == [10.0, 20.0, 30.0]
    assert scan_ldscores(tmp_path / "w" / "weights.", [2]).collect().height == 3


def test_missing_or_bad_ld_files_raise(tmp_path):
    _make(tmp_path / "ld", chroms=(1,))
    with pytest.raises(InputError, match="chromosome 2"):
        scan_ldscores(tmp_path / "ld", [1, 2])
    with pytest.raises(InputError, match="chromosome 2"):
        read_m(tmp_path / "ld", [2])
    with gzip.open(tmp_path / "ld" / "4.l2.ldscore.gz", "wt") as fh:
        fh.write("SNP\tL2\nrs1\t1\n")
    with pytest.raises(SchemaError, match="CHR"):
        scan_ldscores(tmp_path / "ld", [4])
    with gzip.open(tmp_path / "ld" / "5.l2.ldscore.gz", "wt") as fh:
        fh.write("CHR\tSNP\tBP\tL2\n5\trs1\t1\tbad\n")
    with pytest.raises(InputError) as ei:
        scan_ldscores(tmp_path / "ld", [5])
    assert ei.value.column == "L2" and ei.value.row == 1
