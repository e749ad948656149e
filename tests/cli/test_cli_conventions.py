"""CLI conventions (issue 16): --version, help on every option with its default, examples in every
--help, one option vocabulary (-v/-q after any subcommand, --progress, --executor, --out, --overwrite,
--resume), and ``gsem ldsc --n-chr`` (old ``--chr`` still accepted)."""

from __future__ import annotations

import argparse
import logging

import pytest

import polgen
from polgen import cli

SKIP = (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)


@pytest.fixture(scope="module")
def parsers():
    parser = cli.build_parser()
    return [(p, d) for p, d in cli.walk_parsers(parser)]


def _leaves(parsers):
    return [p for p, _ in parsers if not cli._subparsers(p)]


def test_version_flag(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"polgen {polgen.__version__}"


def test_every_subcommand_is_walked(parsers):
    progs = {p.prog for p, _ in parsers}
    for want in (
        "polgen demo",
        "polgen sql",
        "polgen gsem munge",
        "polgen gsem ldsc",
        "polgen gsem user-gwas",
        "polgen lfmm",
    ):
        assert want in progs
    assert len(_leaves(parsers)) >= 15


def test_every_option_has_help_and_shows_its_default(parsers):
    missing, no_default = [], []
    for p, _ in parsers:
        fmt = p._get_formatter()
        assert isinstance(fmt, cli.HelpFormatter), p.prog
        for action in p._actions:
            if isinstance(action, SKIP):
                continue
            name = f"{p.prog} {'/'.join(action.option_strings) or action.dest}"
            if not (action.help and action.help.strip()) or action.help == argparse.SUPPRESS:
                missing.append(name)
                continue
            shown = fmt._get_help_string(action) or ""
            if action.default not in (None, False, argparse.SUPPRESS) and "default" not in shown.lower():
                no_default.append(name)
    assert missing == [], f"options without help text: {missing}"
    assert no_default == [], f"options whose default is not shown: {no_default}"


def test_help_renders_defaults(capsys):
    assert cli.main(["gsem", "munge", "--help"]) == 0
    out = capsys.readouterr().out
    assert "(default: 0.9)" in out and "(default: 0.01)" in out
    assert "examples" in out and "polgen gsem munge --files" in out


def test_every_subcommand_has_examples(parsers):
    bare = [p.prog for p in _leaves(parsers) if not (p.epilog or "").startswith("examples")]
    assert bare == []
    for p in _leaves(parsers):
        lines = p.epilog.splitlines()[1:]
        assert lines and all(ln.strip().startswith("polgen ") for ln in lines), p.prog


@pytest.mark.parametrize(
    "argv, want",
    [
        (["gsem", "munge", "--files", "a", "--hm3", "b", "--out", "c", "-v"], 1),
        (["-v", "gsem", "munge", "--files", "a", "--hm3", "b", "--out", "c"], 1),
        (["-v", "gsem", "munge", "--files", "a", "--hm3", "b", "--out", "c", "-vv"], 3),
        (["lfmm", "--bed", "a", "--covariates", "b", "-v"], 1),
        (["sql", "--list", "-q"], -1),
        (["-q", "demo"], -1),
        (["stlr", "fit", "--h5ad", "a", "--lr", "b", "--grn", "c", "--out", "d", "-vv"], 2),
        (["plot", "qq", "r", "--out", "x.png", "-v"], 1),
    ],
)
def test_verbosity_accepted_after_any_subcommand(argv, want):
    args = cli.build_parser().parse_args(argv)
    assert cli._verbosity(args) == want


def test_shared_vocabulary_is_one_vocabulary(parsers):
    helps: dict[str, set[str]] = {}
    for p in _leaves(parsers):
        opts = p._option_string_actions
        assert "-v" in opts and "-q" in opts, p.prog
        for flag in ("--progress", "--no-progress", "--executor", "--resume", "--overwrite"):
            if flag in opts:
                helps.setdefault(flag, set()).add(opts[flag].help)
        if "--resume" in opts:  # a resumable run: the whole vocabulary
            for flag in ("--out", "--overwrite", "--executor", "--progress", "--no-progress"):
                assert flag in opts, (p.prog, flag)
        if "--progress" in opts:
            assert isinstance(opts["--progress"], argparse.BooleanOptionalAction), p.prog
            assert opts["--progress"].default is None
    assert all(len(h) == 1 for h in helps.values()), helps
    assert {"--progress", "--executor", "--resume", "--overwrite"} <= set(helps)


def test_progress_flags_reach_the_commands():
    parse = cli.build_parser().parse_args
    gwas = ["gsem", "user-gwas", "--sumstats", "s", "--covstruc", "c", "--model", "F1 =~ A", "--out", "o"]
    assert parse(gwas).progress is None
    assert parse([*gwas, "--no-progress"]).progress is False
    assert parse([*gwas, "--progress"]).progress is True
    assert parse(["demo", "--no-progress"]).progress is False
    fit = ["stlr", "fit", "--h5ad", "a", "--lr", "b", "--grn", "c", "--out", "d"]
    assert parse([*fit, "--no-progress"]).progress is False


def test_quiet_turns_automatic_progress_off(monkeypatch, tmp_path):
    seen = {}

    def fake(args):
        seen["progress"] = args.progress
        return 0

    monkeypatch.setattr(cli, "cmd_demo", fake)
    out = ["--out", str(tmp_path / "demo")]
    assert cli.main(["demo", *out, "-q"]) == 0 and seen["progress"] is False
    assert cli.main(["demo", *out, "-q", "--progress"]) == 0 and seen["progress"] is True
    assert cli.main(["demo", *out]) == 0 and seen["progress"] is None


def test_ldsc_n_chr_and_deprecated_chr(caplog):
    parse = cli.build_parser().parse_args
    base = ["gsem", "ldsc", "--traits", "a", "--ld", "d", "--out", "o.json"]
    assert parse(base).n_chr == 22
    assert parse([*base, "--n-chr", "3"]).n_chr == 3
    with caplog.at_level(logging.WARNING, logger="polgen"):
        assert parse([*base, "--chr", "5"]).n_chr == 5
    assert "--chr is deprecated" in caplog.text and "number of chromosomes" in caplog.text
    ld = next(p for p, _ in cli.walk_parsers(cli.build_parser()) if p.prog == "polgen gsem ldsc")
    assert "NUMBER of chromosomes" in ld.format_help()
