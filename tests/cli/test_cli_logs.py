"""Logs outside a terminal (issue 16): progress lines (rate, ETA) on stderr of a batch job, and a
``<out>.log`` beside --out with each run's command, parameters, log records and timings."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import numpy as np
import polars as pl
import pytest

from polgen import cli
from polgen.errors import InputError, OutputExistsError


@pytest.fixture
def results(tmp_path):
    rng = np.random.default_rng(1)
    n = 200
    df = pl.DataFrame(
        {
            "SNP": [f"rs{i}" for i in range(n)],
            "CHR": rng.integers(1, 3, n),
            "BP": np.arange(n),
            "P": rng.uniform(size=n),
        }
    )
    path = tmp_path / "res.parquet"
    df.write_parquet(path)
    return path


def _fake_method(monkeypatch, name: str, body):
    fake = types.ModuleType(f"polgen_fake_{name}")

    def add_parser(subparsers):
        p = subparsers.add_parser(name, help="fake", epilog=cli.examples(f"polgen {name} --out x"))
        cli.add_out(p, "output")
        cli.add_progress(p)
        p.add_argument("--k", type=int, default=3, help="a number")
        p.set_defaults(func=body)

    fake.add_parser = add_parser
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    monkeypatch.setattr(cli, "METHOD_CLIS", (fake.__name__,))


def test_run_log_path():
    assert cli.run_log_path(None) is None
    assert str(cli.run_log_path("gwas/")) == "gwas.log"
    assert str(cli.run_log_path("hits.tsv")) == "hits.tsv.log"
    assert cli.run_log_path("/no/such/dir/x.parquet") is None


def test_run_log_has_parameters_records_and_timings(monkeypatch, tmp_path, capsys):
    from polgen.engine import run_tasks

    def body(args):
        import logging

        logging.getLogger("polgen").info("working on k=%d", args.k)
        list(run_tasks(lambda i: i, range(4), progress=args.progress, description="fake batches"))
        (tmp_path / "o").mkdir(exist_ok=True)
        return 0

    _fake_method(monkeypatch, "fakerun", body)
    monkeypatch.setenv("POLGEN_PROGRESS_INTERVAL", "0")
    monkeypatch.delenv("POLGEN_PROGRESS", raising=False)
    out = tmp_path / "o"
    assert cli.main(["fakerun", "--out", f"{out}/", "--k", "7"]) == 0
    text = (tmp_path / "o.log").read_text()
    assert text.startswith("# polgen ") and "run started" in text
    assert f"command: polgen fakerun --out {out}/ --k 7" in text
    assert "  k = 7\n" in text and f"  out = '{out}/'" in text and "  progress = None" in text
    assert "INFO polgen: working on k=7" in text  # INFO records go to the file at the default verbosity
    assert "INFO polgen.progress: fake batches: done 4/4 (100.0%)" in text
    assert "finished: exit code 0 after" in text and "s CPU" in text
    # the console (not a terminal) shows the progress lines, not the INFO record
    err = capsys.readouterr().err
    assert "fake batches: done 4/4" in err and "working on" not in err

    # a second run appends; an error is recorded in the log as well as printed
    def fail(args):
        import logging

        logging.getLogger("polgen").info("reading x.tsv")
        raise InputError("bad input", path="x.tsv")

    _fake_method(monkeypatch, "fakerun", fail)
    assert cli.main(["fakerun", "--out", f"{out}/", "--no-progress"]) == 2
    text = (tmp_path / "o.log").read_text()
    assert text.count("# polgen ") == 2
    assert "error: bad input (file 'x.tsv')\nfinished: exit code 2" in text
    assert capsys.readouterr().err.strip() == "polgen: error: bad input (file 'x.tsv')"
    # a run refused before it started (a typed error, nothing logged yet) or because of its output
    # leaves nothing beside it: its entry is removed again
    before = (tmp_path / "o.log").read_text()

    def refuse_at_once(args):
        raise InputError("--k must be odd")

    _fake_method(monkeypatch, "fakerun", refuse_at_once)
    assert cli.main(["fakerun", "--out", f"{out}/"]) == 2
    assert (tmp_path / "o.log").read_text() == before

    def refuse(args):
        raise OutputExistsError("--out exists; pass --overwrite to replace it", path=args.out)

    _fake_method(monkeypatch, "fakerun", refuse)
    assert cli.main(["fakerun", "--out", f"{out}/"]) == 2
    assert (tmp_path / "o.log").read_text() == before
    assert cli.main(["fakerun", "--out", str(tmp_path / "new.parquet")]) == 2
    assert not (tmp_path / "new.parquet.log").exists()


def test_quiet_and_no_progress_silence_the_progress_lines(monkeypatch, tmp_path, capsys):
    from polgen.engine import run_tasks

    def body(args):
        list(run_tasks(lambda i: i, range(3), progress=args.progress, description="fake batches"))

    _fake_method(monkeypatch, "fakequiet", body)
    monkeypatch.delenv("POLGEN_PROGRESS", raising=False)
    for flags in (["-q"], ["--no-progress"]):
        assert cli.main(["fakequiet", "--out", str(tmp_path / "q.parquet"), *flags]) == 0
        assert capsys.readouterr().err == ""
    assert "fake batches" not in (tmp_path / "q.parquet.log").read_text()


def test_sql_run_log_in_a_fresh_process(results, tmp_path):
    """The real console script, stderr a file (a batch job): the run log sits beside --out."""
    out = tmp_path / "hits.parquet"
    env = {**os.environ, "POLGEN_PROGRESS_INTERVAL": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "polgen.cli", "sql", "top_hits", "-p", f"source={results}", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "hits.parquet.log").read_text()
    assert "name = 'top_hits'" in log and "INFO polgen: query top_hits written to" in log
    assert "finished: exit code 0" in log
    # no --out, no log
    assert cli.run_log_path(getattr(cli.build_parser().parse_args(["sql", "--list"]), "out", None)) is None


def test_pictures_get_no_run_log(tmp_path):
    args = cli.build_parser().parse_args(["plot", "qq", "r.parquet", "--out", str(tmp_path / "qq.png")])
    assert cli._open_run_log(args, [], 0) is None
    args = cli.build_parser().parse_args(["report", str(tmp_path), "--out", str(tmp_path / "r.html")])
    assert cli._open_run_log(args, [], 0) is None
    assert not list(tmp_path.glob("*.log"))
