"""`polgen gsem munge|ldsc|sumstats` end to end through the argparse entry points."""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl
import pytest
from test_gsem_ldsc import simulate

from polgen.errors import InputError
from polgen.gsem.cli import add_parser
from polgen.gsem.covstruc import CovStruc
from polgen.gsem.ldsc import ldsc


def _run(argv):
    parser = argparse.ArgumentParser(prog="polgen")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_munge_ldsc_sumstats(tmp_path, capsys):
    sim = simulate(tmp_path, n=6000, chroms=2)
    files = [str(f) for f in sim["files"]]
    assert (
        _run(
            [
                "gsem",
                "munge",
                "--files",
                *files,
                "--hm3",
                str(sim["hm3"]),
                "--trait-names",
                "A",
                "B",
                "C",
                "--N",
                "NA",
                "--out",
                str(tmp_path / "m"),
                "--text",
            ]
        )
        == 0
    )
    assert "A: 6000 SNPs" in capsys.readouterr().out
    munged = [str(tmp_path / "m" / f"{t}.sumstats.gz") for t in "ABC"]
    assert (
        _run(
            [
                "gsem",
                "ldsc",
                "--traits",
                *munged,
                "--ld",
                str(sim["ld"]),
                "--chr",
                "2",
                "--n-blocks",
                "30",
                "--trait-names",
                "A",
                "B",
                "C",
                "--sample-prev",
                "0.5",
                "NA",
                "NA",
                "--population-prev",
                "0.1",
                "NA",
                "NA",
                "--stand",
                "--out",
                str(tmp_path / "cs.json"),
            ]
        )
        == 0
    )
    cs = CovStruc.load(tmp_path / "cs.json")
    direct = ldsc(
        [tmp_path / "m" / f"{t}.sumstats.parquet" for t in "ABC"],
        sim["ld"],
        chr=2,
        n_blocks=30,
        trait_names=list("ABC"),
        sample_prev=[0.5, None, None],
        population_prev=[0.1, None, None],
        stand=True,
    )
    np.testing.assert_allclose(cs.S, direct.S, rtol=1e-12)  # text and parquet munged files agree
    np.testing.assert_allclose(cs.V, direct.V, rtol=1e-10)
    assert cs.S_Stand is not None
    ref = pl.read_csv(sim["hm3"], separator="\t").with_columns(
        CHR=pl.lit(1), BP=pl.int_range(pl.len()), MAF=pl.lit(0.2)
    )
    ref.write_csv(tmp_path / "ref.txt", separator="\t")
    assert (
        _run(
            [
                "gsem",
                "sumstats",
                "--files",
                *files,
                "--ref",
                str(tmp_path / "ref.txt"),
                "--trait-names",
                "A",
                "B",
                "C",
                "--se-logit",
                "F",
                "--ols",
                "T",
                "--out",
                str(tmp_path / "ss.parquet"),
            ]
        )
        == 0
    )
    out = pl.read_parquet(tmp_path / "ss.parquet")
    assert out.height == 6000 and out.columns[-2:] == ["beta.C", "se.C"]
    with pytest.raises(InputError, match="--N has 2 values for 3 files"):
        _run(
            [
                "gsem",
                "munge",
                "--files",
                *files,
                "--hm3",
                str(sim["hm3"]),
                "--N",
                "1",
                "2",
                "--out",
                str(tmp_path / "x"),
            ]
        )
    with pytest.raises(SystemExit):
        _run(["gsem", "sumstats", "--files", files[0], "--ref", "r", "--se-logit", "maybe", "--out", "o"])
