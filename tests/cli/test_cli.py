"""The polgen command line: built-ins, method discovery, errors and exit codes."""

from __future__ import annotations

import io
import subprocess
import sys
import types

import numpy as np
import polars as pl
import pytest

import polgen
from polgen import cli, sql
from polgen.errors import InputError


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "polgen.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "POLGEN_PROGRESS": "0"},
    )


@pytest.fixture
def results(tmp_path):
    rng = np.random.default_rng(0)
    n = 500
    df = pl.DataFrame(
        {
            "SNP": [f"rs{i}" for i in range(n)],
            "CHR": rng.integers(1, 4, n),
            "BP": rng.integers(1, 10_000, n),
            "P": rng.uniform(size=n) ** 3,
        }
    )
    path = tmp_path / "res.parquet"
    df.write_parquet(path)
    return df, path


def test_version(capsys):
    assert cli.main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"polgen {polgen.__version__}"
    assert cli.main(["version", "--all"]) == 0
    assert "duckdb" in capsys.readouterr().out


def test_sql_prints_csv_and_table(results, capsys):
    df, path = results
    code = cli.main(["sql", "top_hits", "--param", f"source={path}", "-p", "p_max=1e-3", "-p", "limit=0", "--csv"])
    assert code == 0
    printed = pl.read_csv(io.StringIO(capsys.readouterr().out))
    want = sql.run("top_hits", {"source": df, "p_max": 1e-3, "limit": 0})
    assert printed["SNP"].to_list() == want["SNP"].to_list()
    np.testing.assert_allclose(printed["P"].to_numpy(), want["P"].to_numpy(), rtol=1e-12)
    assert cli.main(["sql", "per_chrom_summary", "-p", f"source={path}", "--show", "2"]) == 0
    out = capsys.readouterr().out
    assert "lambda_gc" in out and "4 rows, first 2 shown" in out
    assert cli.main(["sql", "--list"]) == 0
    assert "merge_sumstats" in capsys.readouterr().out
    assert cli.main(["sql", "top_hits", "--describe"]) == 0
    assert "p_max" in capsys.readouterr().out


def test_sql_out_and_relations_list(results, tmp_path, capsys):
    df, path = results
    a = df.with_columns(A1=pl.lit("A"), A2=pl.lit("G"), BETA=pl.lit(1.0))
    b = a.with_columns(A1=pl.lit("G"), A2=pl.lit("A"))
    a.write_parquet(tmp_path / "a.parquet")
    b.write_parquet(tmp_path / "b.parquet")
    out = tmp_path / "merged.parquet"
    code = cli.main(
        [
            "sql",
            "merge_sumstats",
            "-p",
            f"sumstats={tmp_path / 'a.parquet'},{tmp_path / 'b.parquet'}",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert f"wrote {2 * len(df)} rows" in capsys.readouterr().out
    merged = pl.read_parquet(out)
    assert merged.filter(pl.col("trait") == "b")["BETA"].unique().to_list() == [-1.0]
    # the same relations parameter given as a repeated key
    out2 = tmp_path / "merged2.parquet"
    assert (
        cli.main(
            [
                "sql",
                "merge_sumstats",
                "-p",
                f"sumstats={tmp_path / 'a.parquet'}",
                "-p",
                f"sumstats={tmp_path / 'b.parquet'}",
                "--out",
                str(out2),
            ]
        )
        == 0
    )
    assert pl.read_parquet(out2).equals(merged)
    # existing output: typed error, exit 2; --overwrite replaces it
    assert cli.main(["sql", "top_hits", "-p", f"source={path}", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert cli.main(["sql", "top_hits", "-p", f"source={path}", "-p", "p_max=1", "--out", str(out), "--overwrite"]) == 0
    assert pl.read_parquet(out).height == 500


def test_polgen_errors_exit_2_without_traceback(results, tmp_path, capsys):
    _, path = results
    # the real console entry point in a fresh interpreter
    proc = run_cli("sql", "top_hits", "-p", f"source={tmp_path / 'missing.parquet'}")
    assert proc.returncode == 2
    assert proc.stderr.startswith("polgen: error: parameter 'source': file not found")
    assert "missing.parquet" in proc.stderr
    assert "Traceback" not in proc.stderr and "nanobind" not in proc.stderr
    # the same contract in-process, for the other typed errors
    cases = [
        (["sql", "top_hits", "-p", str(tmp_path / "missing.parquet")], "--param takes key=value"),
        (["sql", "top_hits", "-p", f"source={path}", "-p", "p_max=lots"], "'p_max' must be double"),
        (["sql", "top_hits", "-p", f"source={path}", "-p", "bogus=1"], "no parameter 'bogus'"),
        (["sql", "top_hits", "-p", f"source={path}", "-p", "limit=1", "-p", "limit=2"], "given twice"),
        (["sql", "nosuchquery"], "no query named 'nosuchquery'"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("polgen: error:") and message in err and "Traceback" not in err
    assert cli.main(["no-such-command"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert cli.main(["sql", "per_chrom_summary", "-p", f"source={path}", "-v"]) == 0


def test_verbose_logs_and_traceback(results, tmp_path, capsys):
    _, path = results
    out = tmp_path / "o.parquet"
    assert cli.main(["-v", "sql", "top_hits", "-p", f"source={path}", "--out", str(out)]) == 0
    assert "INFO polgen: query top_hits written to" in capsys.readouterr().err
    assert cli.main(["sql", "top_hits", "-p", f"source={path}", "--out", str(out), "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "polgen: error:" in err
    # handlers installed by main are removed again: the library keeps only its NullHandler
    import logging

    assert [type(h).__name__ for h in logging.getLogger("polgen").handlers] == ["NullHandler"]


def test_method_subcommands_are_discovered(monkeypatch, capsys):
    fake = types.ModuleType("polgen_fake_method_cli")
    seen = {}

    def add_parser(subparsers):
        p = subparsers.add_parser("fakemethod", help="a fake method")
        p.add_argument("--k", type=int, required=True)
        p.set_defaults(func=lambda args: seen.setdefault("k", args.k) and 7)

    fake.add_parser = add_parser
    broken = types.ModuleType("polgen_broken_method_cli")

    def bad_add(subparsers):
        raise RuntimeError("half-written CLI")

    broken.add_parser = bad_add
    monkeypatch.setitem(sys.modules, "polgen_fake_method_cli", fake)
    monkeypatch.setitem(sys.modules, "polgen_broken_method_cli", broken)
    monkeypatch.setattr(
        cli, "METHOD_CLIS", ("polgen_fake_method_cli", "polgen_broken_method_cli", "polgen_absent_method.cli")
    )
    assert cli.main(["fakemethod", "--k", "3"]) == 7
    assert seen == {"k": 3}
    assert "cannot mount the polgen_broken_method_cli subcommand: RuntimeError" in capsys.readouterr().err
    # the real method CLIs that exist are mounted
    monkeypatch.undo()
    parser = cli.build_parser()
    choices = parser._subparsers._group_actions[0].choices
    for mod, name in [("polgen.gsem.cli", "gsem"), ("polgen.lfmm.cli", "lfmm"), ("polgen.stlr.cli", "stlr")]:
        try:
            __import__(mod)
        except ModuleNotFoundError:
            continue
        assert name in choices


def test_method_errors_exit_2(monkeypatch, capsys):
    fake = types.ModuleType("polgen_err_cli")

    def add_parser(subparsers):
        p = subparsers.add_parser("errmethod")

        def fail(args):
            raise InputError("the covariates file has no IID column", path="cov.tsv", column="IID")

        p.set_defaults(func=fail)

    fake.add_parser = add_parser
    monkeypatch.setitem(sys.modules, "polgen_err_cli", fake)
    monkeypatch.setattr(cli, "METHOD_CLIS", ("polgen_err_cli",))
    assert cli.main(["errmethod"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("polgen: error: the covariates file has no IID column (file 'cov.tsv', column 'IID')")


def test_demo_calls_run_demo(monkeypatch, tmp_path, capsys):
    calls = {}
    status = ["ok", "ok", "ok"]

    def fake_run_demo(out, small=False, progress=None, seed=None):
        calls.update(out=out, small=small, progress=progress, seed=seed)
        return pl.DataFrame(
            {
                "method": ["gsem", "lfmm", "stlr"],
                "step": ["ldsc", "test", "fit"],
                "status": status,
                "seconds": [1.25, 2.5, 0.5],
            }
        )

    fake = types.ModuleType("polgen.demo")
    fake.run_demo = fake_run_demo
    monkeypatch.setitem(sys.modules, "polgen.demo", fake)
    assert cli.main(["demo", "--out", str(tmp_path / "d"), "--small", "--no-progress"]) == 0
    assert calls == {"out": str(tmp_path / "d"), "small": True, "progress": False, "seed": None}
    out = capsys.readouterr().out
    assert "polgen demo" in out and "lfmm" in out and "2.5" in out
    # a failed or skipped step makes the command fail, naming the step
    status[1:] = ["failed", "skipped"]
    assert cli.main(["demo", "--out", str(tmp_path / "d2"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "2 step(s) did not complete" in err and "lfmm/test (failed)" in err and "stlr/fit (skipped)" in err


def test_help_and_no_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("demo", "sql", "version"):
        assert name in out
    assert cli.main([]) == 2
