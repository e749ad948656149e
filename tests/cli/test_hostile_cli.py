"""Hostile command lines: every ``polgen`` subcommand with missing files, wrong file kinds, malformed
arguments, bad numbers and unusable outputs.

Each case must exit with code 2 and print exactly one ``error:`` line on stderr, last, naming the
file or argument at fault (argparse may print its usage above it), with no Python traceback; and
it must leave no half-written output: an output that existed is byte-identical afterwards, one
that did not exist holds no file (an empty directory at most).  Most cases run in process through
:func:`polgen.cli.main`; a few run the installed ``polgen`` console script in a subprocess.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polgen.cli import main
from tests.hostile import SETTINGS, Cases

ROOT = Path(__file__).resolve().parents[2]
CASES = Cases()
_count_cases = CASES.fixture()
MODEL = "F1 =~ A + B + C\nF1 ~ SNP"


# -- a small world of valid and broken inputs -------------------------------------------------------
@dataclass
class World:
    root: Path
    afile: Path  # a regular file where a directory or a table is expected
    empty: Path
    junk_parquet: Path
    junk_json: Path
    junk_h5ad: Path
    exist_parquet: Path  # an output file that exists already
    # gsem
    gsem_files: list
    hm3: Path
    ld: Path
    reference: Path
    munged: list
    munged_dir: Path
    covstruc_json: Path
    sumstats: Path
    gwas_out: Path  # a finished user-gwas output directory
    # lfmm
    bed: Path
    env: Path
    bad_magic_bed: Path
    truncated_bed: Path
    lfmm_out: Path  # a finished lfmm output directory
    # stlr
    h5ad: Path
    lr: Path
    grn: Path
    betas: Path
    perturb_out: Path  # a finished perturb_batch output directory
    tf: str


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> World:
    import polars as pl

    from polgen.demo import make_gsem_demo, make_lfmm_demo, make_stlr_demo
    from polgen.gsem import munge, user_gwas
    from tests.engine.test_scaleout_dask import gsem_inputs

    root = tmp_path_factory.mktemp("hostile_cli")
    bad = root / "bad"
    bad.mkdir()
    (bad / "afile").write_text("x\n")
    (bad / "empty.txt").write_text("")
    (bad / "junk.parquet").write_bytes(b"this is not parquet at all")
    (bad / "junk.json").write_text("{not json")
    (bad / "junk.h5ad").write_bytes(b"\x89HDF-not-really")
    pl.DataFrame({"a": [1, 2]}).write_parquet(bad / "exists.parquet")

    g = make_gsem_demo(root / "g", small=True)
    munged_dir = root / "munged"
    munge([str(f) for f in g.sumstats], str(g.hm3), trait_names=g.trait_names, out=str(munged_dir))
    munged = sorted(munged_dir.glob("*.sumstats.parquet"))
    df, cov = gsem_inputs(120, seed=3)
    df.write_parquet(root / "sumstats.parquet")
    (root / "cov.json").write_text(json.dumps(cov))
    user_gwas(root / "sumstats.parquet", cov, MODEL, out=root / "gwas", progress=False)

    lf = make_lfmm_demo(root / "l", small=True)
    raw = lf.bed.read_bytes()
    for stem, data in (("badmagic", b"\x00\x00\x00" + raw[3:]), ("trunc", raw[: len(raw) // 2])):
        (bad / f"{stem}.bed").write_bytes(data)
        shutil.copy(lf.bed.with_suffix(".bim"), bad / f"{stem}.bim")
        shutil.copy(lf.bed.with_suffix(".fam"), bad / f"{stem}.fam")
    assert (
        run(["lfmm", "--bed", str(lf.bed), "--covariates", str(lf.env), "-K", "2", "--out", str(root / "lfmm_out")])[0]
        == 0
    )

    s = make_stlr_demo(root / "s", small=True)
    tf = s.tfs[0]
    common = ["--h5ad", str(s.h5ad), "--lr", str(s.lr), "--cluster-key", s.cluster_key, "--layer", s.layer]
    rc, err = run(
        [
            "stlr",
            "fit",
            *common,
            "--grn",
            str(s.grn_links),
            "--genes",
            ",".join(s.targets[:2]),
            "--out",
            str(root / "betas"),
            "--no-progress",
        ]
    )
    assert rc == 0, err
    rc, err = run(
        [
            "stlr",
            "perturb",
            *common,
            "--betas",
            str(root / "betas"),
            "--target",
            tf,
            "--n-propagation",
            "1",
            "--out",
            str(root / "perturb_out"),
            "--no-progress",
        ]
    )
    assert rc == 0, err
    return World(
        root=root,
        afile=bad / "afile",
        empty=bad / "empty.txt",
        junk_parquet=bad / "junk.parquet",
        junk_json=bad / "junk.json",
        junk_h5ad=bad / "junk.h5ad",
        exist_parquet=bad / "exists.parquet",
        gsem_files=[str(f) for f in g.sumstats],
        hm3=g.hm3,
        ld=g.ld,
        reference=g.reference,
        munged=[str(f) for f in munged],
        munged_dir=munged_dir,
        covstruc_json=root / "cov.json",
        sumstats=root / "sumstats.parquet",
        gwas_out=root / "gwas",
        bed=lf.bed,
        env=lf.env,
        bad_magic_bed=bad / "badmagic.bed",
        truncated_bed=bad / "trunc.bed",
        lfmm_out=root / "lfmm_out",
        h5ad=s.h5ad,
        lr=s.lr,
        grn=s.grn_links,
        betas=root / "betas",
        perturb_out=root / "perturb_out",
        tf=tf,
    )


# -- running and checking -----------------------------------------------------------------------
def run(argv: list[str]) -> tuple[int, str]:
    """Run ``polgen argv`` in this process; (exit code, stderr).  Exceptions escape (a test failure)."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(argv)
    return rc, err.getvalue()


def snapshot(path: Path | None) -> dict[str, str] | None:
    """{relative file name: sha256} of a file or directory tree; None when absent."""
    if path is None or not path.exists():
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path)) if p != path else ".": hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def check_refused(rc: int, stderr: str, names: str | tuple[str, ...]) -> str:
    """Exit code 2, no traceback, exactly one 'error:' line, last, naming one of ``names``."""
    assert rc == 2, f"exit code {rc}; stderr:\n{stderr[-2000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1 and lines[-1] == errors[0], f"want one final error line:\n{stderr[-2000:]}"
    msg = errors[0]
    assert msg.startswith("polgen"), msg
    names = (names,) if isinstance(names, str) else names
    assert any(n in msg for n in names), f"{msg!r} names none of {names}"
    return msg


def refuse(argv: list[str], names, out: Path | None) -> str:
    """Run a hostile command line and check it is refused cleanly and leaves ``out`` as it was."""
    CASES["n"] += 1
    before = snapshot(out)
    rc, stderr = run(argv)
    msg = check_refused(rc, stderr, names)
    after = snapshot(out)
    if before is None:
        assert not after, f"a failed run left files in {out}: {sorted(after or {})}"
        if out is not None and out.exists():
            assert out.is_dir()  # an empty directory at most
    else:
        assert after == before, f"a refused run changed the existing output {out}"
    if out is not None:  # nor temp files beside it
        parent = out.parent if out.parent.is_dir() else None
        if parent is not None:
            assert not [p.name for p in parent.iterdir() if ".tmp" in p.name], list(parent.iterdir())
    CASES["typed_error"] = CASES.get("typed_error", 0) + 1
    return msg


# -- the cases ------------------------------------------------------------------------------------
# (id, argv(w, fresh), names the message must contain one of (w) , the output path (w, fresh))
Case = tuple[str, Callable, Callable, Callable]


def _u(w, fresh, *extra, out=None, model=MODEL, sumstats=None, cov=None):
    return [
        "gsem",
        "user-gwas",
        "--sumstats",
        str(sumstats or w.sumstats),
        "--covstruc",
        str(cov or w.covstruc_json),
        "--model",
        model,
        *extra,
        "--out",
        str(out or fresh),
    ]


def _lfmm(w, fresh, *extra, bed=None, env=None, out=None, K="2"):
    k = ["-K", K] if K is not None else []
    return [
        "lfmm",
        "--bed",
        str(bed or w.bed),
        "--covariates",
        str(env or w.env),
        *k,
        *extra,
        "--out",
        str(out or fresh),
    ]


def _stlr_common(w, h5ad=None, lr=None):
    return ["--h5ad", str(h5ad or w.h5ad), "--lr", str(lr or w.lr), "--cluster-key", "cell_type"]


def _fit(w, fresh, *extra, out=None, h5ad=None, lr=None, grn=None, genes=None):
    g = ["--genes", genes] if genes else []
    return [
        "stlr",
        "fit",
        *_stlr_common(w, h5ad, lr),
        "--grn",
        str(grn or w.grn),
        *g,
        *extra,
        "--out",
        str(out or fresh),
        "--no-progress",
    ]


def _pt(w, fresh, *extra, out=None, betas=None, target=None, lr=None):
    return [
        "stlr",
        "perturb",
        *_stlr_common(w, lr=lr),
        "--betas",
        str(betas or w.betas),
        "--target",
        target or w.tf,
        *extra,
        "--out",
        str(out or (str(fresh) + ".parquet")),
        "--no-progress",
    ]


def _munge(w, fresh, *extra, files=None, hm3=None, out=None):
    return [
        "gsem",
        "munge",
        "--files",
        *(files or w.gsem_files),
        "--hm3",
        str(hm3 or w.hm3),
        *extra,
        "--out",
        str(out or fresh),
    ]


def _ldsc(w, fresh, *extra, traits=None, ld=None, out=None):
    return [
        "gsem",
        "ldsc",
        "--traits",
        *(traits or w.munged),
        "--ld",
        str(ld or w.ld),
        *extra,
        "--out",
        str(out or (str(fresh) + ".json")),
    ]


def _ss(w, fresh, *extra, files=None, ref=None, out=None, se_logit=("F",)):
    return [
        "gsem",
        "sumstats",
        "--files",
        *(files or w.gsem_files[:1]),
        "--ref",
        str(ref or w.reference),
        "--se-logit",
        *se_logit,
        *extra,
        "--out",
        str(out or (str(fresh) + ".parquet")),
    ]


def _fresh_json(w, fresh):
    return Path(str(fresh) + ".json")


def _fresh_parquet(w, fresh):
    return Path(str(fresh) + ".parquet")


def _fresh(w, fresh):
    return fresh


CASE_LIST: list[Case] = [
    # built-in commands
    ("sql-unknown-query", lambda w, f: ["sql", "nope"], lambda w: "'nope'", lambda w, f: None),
    (
        "sql-param-without-equals",
        lambda w, f: ["sql", "top_hits", "--param", "x"],
        lambda w: "--param",
        lambda w, f: None,
    ),
    ("sql-unknown-param", lambda w, f: ["sql", "top_hits", "--param", "path=x"], lambda w: "'path'", lambda w, f: None),
    (
        "sql-source-missing",
        lambda w, f: ["sql", "top_hits", "--param", "source=/nonexistent/*.parquet"],
        lambda w: "/nonexistent/*.parquet",
        lambda w, f: None,
    ),
    (
        "sql-source-not-parquet",
        lambda w, f: ["sql", "top_hits", "--param", f"source={w.junk_parquet}"],
        lambda w: str(w.junk_parquet),
        lambda w, f: None,
    ),
    (
        "sql-p-max-not-a-number",
        lambda w, f: ["sql", "top_hits", "--param", f"source={w.gwas_out}", "--param", "p_max=abc"],
        lambda w: "p_max",
        lambda w, f: None,
    ),
    (
        "sql-out-exists",
        lambda w, f: ["sql", "top_hits", "--param", f"source={w.gwas_out}", "--out", str(w.exist_parquet)],
        lambda w: str(w.exist_parquet),
        lambda w, f: w.exist_parquet,
    ),
    (
        "sql-out-under-a-file",
        lambda w, f: ["sql", "top_hits", "--param", f"source={w.gwas_out}", "--out", str(w.afile / "x.parquet")],
        lambda w: str(w.afile),
        lambda w, f: w.afile,
    ),
    ("sql-show-not-an-int", lambda w, f: ["sql", "top_hits", "--show", "x"], lambda w: "--show", lambda w, f: None),
    ("unknown-command", lambda w, f: ["frobnicate"], lambda w: "frobnicate", lambda w, f: None),
    (
        "demo-out-is-a-file",
        lambda w, f: ["demo", "--out", str(w.afile), "--small", "--no-progress"],
        lambda w: str(w.afile),
        lambda w, f: w.afile,
    ),
    ("demo-seed-not-an-int", lambda w, f: ["demo", "--seed", "x", "--out", str(f)], lambda w: "--seed", _fresh),
    ("stlr-without-subcommand", lambda w, f: ["stlr"], lambda w: "COMMAND", lambda w, f: None),
    ("gsem-without-subcommand", lambda w, f: ["gsem"], lambda w: "COMMAND", lambda w, f: None),
    # gsem munge
    (
        "munge-file-missing",
        lambda w, f: _munge(w, f, files=["/nonexistent/a.txt"]),
        lambda w: "/nonexistent/a.txt",
        _fresh,
    ),
    ("munge-file-empty", lambda w, f: _munge(w, f, files=[str(w.empty)]), lambda w: str(w.empty), _fresh),
    (
        "munge-file-is-parquet-junk",
        lambda w, f: _munge(w, f, files=[str(w.junk_parquet)]),
        lambda w: str(w.junk_parquet),
        _fresh,
    ),
    (
        "munge-hm3-missing",
        lambda w, f: _munge(w, f, hm3="/nonexistent/w_hm3.snplist"),
        lambda w: "/nonexistent/w_hm3.snplist",
        _fresh,
    ),
    ("munge-N-not-a-number", lambda w, f: _munge(w, f, "--N", "abc"), lambda w: "--N", _fresh),
    ("munge-N-count", lambda w, f: _munge(w, f, "--N", "1", "2"), lambda w: "--N", _fresh),
    ("munge-N-negative", lambda w, f: _munge(w, f, "--N", "-5"), lambda w: "N must be positive", _fresh),
    ("munge-info-filter-2", lambda w, f: _munge(w, f, "--info-filter", "2"), lambda w: "--info-filter", _fresh),
    ("munge-out-is-a-file", lambda w, f: _munge(w, f, out=w.afile), lambda w: str(w.afile), lambda w, f: w.afile),
    (
        "munge-out-under-a-file",
        lambda w, f: _munge(w, f, out=w.afile / "m"),
        lambda w: str(w.afile),
        lambda w, f: w.afile,
    ),
    (
        "munge-out-holds-munged-files",
        lambda w, f: _munge(w, f, out=w.munged_dir),
        lambda w: str(w.munged_dir),
        lambda w, f: w.munged_dir,
    ),
    # gsem ldsc
    (
        "ldsc-trait-missing",
        lambda w, f: _ldsc(w, f, traits=["/nonexistent/A.sumstats.parquet"]),
        lambda w: "/nonexistent/A.sumstats.parquet",
        _fresh_json,
    ),
    (
        "ldsc-trait-not-parquet",
        lambda w, f: _ldsc(w, f, traits=[str(w.junk_parquet)]),
        lambda w: str(w.junk_parquet),
        _fresh_json,
    ),
    ("ldsc-ld-missing", lambda w, f: _ldsc(w, f, ld="/nonexistent/ld/"), lambda w: "/nonexistent/ld", _fresh_json),
    (
        "ldsc-out-exists",
        lambda w, f: _ldsc(w, f, out=w.covstruc_json),
        lambda w: str(w.covstruc_json),
        lambda w, f: w.covstruc_json,
    ),
    (
        "ldsc-out-under-a-file",
        lambda w, f: _ldsc(w, f, out=w.afile / "cov.json"),
        lambda w: str(w.afile),
        lambda w, f: w.afile,
    ),
    ("ldsc-n-blocks-0", lambda w, f: _ldsc(w, f, "--n-blocks", "0"), lambda w: "--n-blocks", _fresh_json),
    ("ldsc-n-blocks-1", lambda w, f: _ldsc(w, f, "--n-blocks", "1"), lambda w: "n_blocks", _fresh_json),
    ("ldsc-chisq-max-nan", lambda w, f: _ldsc(w, f, "--chisq-max", "nan"), lambda w: "--chisq-max", _fresh_json),
    ("ldsc-chr-0", lambda w, f: _ldsc(w, f, "--chr", "0"), lambda w: "--chr", _fresh_json),
    ("ldsc-sample-prev-1.5", lambda w, f: _ldsc(w, f, "--sample-prev", "1.5"), lambda w: "--sample-prev", _fresh_json),
    ("ldsc-select-bogus", lambda w, f: _ldsc(w, f, "--select", "odd-ish"), lambda w: "--select", _fresh_json),
    # gsem sumstats
    (
        "sumstats-file-missing",
        lambda w, f: _ss(w, f, files=["/nonexistent/a.txt"]),
        lambda w: "/nonexistent/a.txt",
        _fresh_parquet,
    ),
    ("sumstats-se-logit-not-bool", lambda w, f: _ss(w, f, se_logit=("maybe",)), lambda w: "--se-logit", _fresh_parquet),
    (
        "sumstats-se-logit-count",
        lambda w, f: _ss(w, f, se_logit=("F", "T", "F")),
        lambda w: "--se-logit",
        _fresh_parquet,
    ),
    ("sumstats-ref-empty", lambda w, f: _ss(w, f, ref=w.empty), lambda w: str(w.empty), _fresh_parquet),
    (
        "sumstats-out-exists",
        lambda w, f: _ss(w, f, out=w.exist_parquet),
        lambda w: str(w.exist_parquet),
        lambda w, f: w.exist_parquet,
    ),
    (
        "sumstats-out-is-a-directory",
        lambda w, f: _ss(w, f, out=w.munged_dir),
        lambda w: str(w.munged_dir),
        lambda w, f: w.munged_dir,
    ),
    (
        "sumstats-out-under-a-file",
        lambda w, f: _ss(w, f, out=w.afile / "s.parquet"),
        lambda w: str(w.afile),
        lambda w, f: w.afile,
    ),
    # gsem user-gwas / commonfactor-gwas
    (
        "ugwas-sumstats-missing",
        lambda w, f: _u(w, f, sumstats="/nonexistent/s.parquet"),
        lambda w: "/nonexistent/s.parquet",
        _fresh,
    ),
    (
        "ugwas-sumstats-not-parquet",
        lambda w, f: _u(w, f, sumstats=w.junk_parquet),
        lambda w: str(w.junk_parquet),
        _fresh,
    ),
    ("ugwas-sumstats-is-json", lambda w, f: _u(w, f, sumstats=w.covstruc_json), lambda w: str(w.covstruc_json), _fresh),
    (
        "ugwas-covstruc-missing",
        lambda w, f: _u(w, f, cov="/nonexistent/cov.json"),
        lambda w: "/nonexistent/cov.json",
        _fresh,
    ),
    ("ugwas-covstruc-bad-json", lambda w, f: _u(w, f, cov=w.junk_json), lambda w: str(w.junk_json), _fresh),
    ("ugwas-covstruc-is-a-directory", lambda w, f: _u(w, f, cov=w.munged_dir), lambda w: str(w.munged_dir), _fresh),
    ("ugwas-covstruc-is-sumstats", lambda w, f: _u(w, f, cov=w.sumstats), lambda w: str(w.sumstats), _fresh),
    ("ugwas-model-unparsable", lambda w, f: _u(w, f, model="F1 =~~ (("), lambda w: "line 1", _fresh),
    ("ugwas-model-unknown-traits", lambda w, f: _u(w, f, model="F1 =~ X + Y + Z\nF1 ~ SNP"), lambda w: "'X'", _fresh),
    ("ugwas-batch-size-0", lambda w, f: _u(w, f, "--batch-size", "0"), lambda w: "--batch-size", _fresh),
    ("ugwas-batch-size-text", lambda w, f: _u(w, f, "--batch-size", "ten"), lambda w: "--batch-size", _fresh),
    ("ugwas-SNPSE-inf", lambda w, f: _u(w, f, "--SNPSE", "inf"), lambda w: "--SNPSE", _fresh),
    ("ugwas-estimation-bogus", lambda w, f: _u(w, f, "--estimation", "OLS"), lambda w: "--estimation", _fresh),
    ("ugwas-executor-bogus", lambda w, f: _u(w, f, "--executor", "bogus"), lambda w: "'bogus'", _fresh),
    ("ugwas-resume-and-overwrite", lambda w, f: _u(w, f, "--resume", "--overwrite"), lambda w: "--overwrite", _fresh),
    ("ugwas-out-exists", lambda w, f: _u(w, f, out=w.gwas_out), lambda w: str(w.gwas_out), lambda w, f: w.gwas_out),
    (
        "ugwas-resume-other-model",
        lambda w, f: _u(w, f, "--resume", out=w.gwas_out, model=MODEL + "\nF1 ~~ 1*F1"),
        lambda w: str(w.gwas_out),
        lambda w, f: w.gwas_out,
    ),
    ("ugwas-out-is-a-file", lambda w, f: _u(w, f, out=w.afile), lambda w: str(w.afile), lambda w, f: w.afile),
    ("ugwas-out-under-a-file", lambda w, f: _u(w, f, out=w.afile / "g"), lambda w: str(w.afile), lambda w, f: w.afile),
    (
        "cfgwas-sumstats-is-json",
        lambda w, f: [
            "gsem",
            "commonfactor-gwas",
            "--sumstats",
            str(w.covstruc_json),
            "--covstruc",
            str(w.covstruc_json),
            "--out",
            str(f),
        ],
        lambda w: str(w.covstruc_json),
        _fresh,
    ),
    (
        "cfgwas-GC-bogus",
        lambda w, f: [
            "gsem",
            "commonfactor-gwas",
            "--sumstats",
            str(w.sumstats),
            "--covstruc",
            str(w.covstruc_json),
            "--GC",
            "strict",
            "--out",
            str(f),
        ],
        lambda w: "--GC",
        _fresh,
    ),
    # lfmm
    ("lfmm-bed-missing", lambda w, f: _lfmm(w, f, bed="/nonexistent/g.bed"), lambda w: "/nonexistent/g", _fresh),
    ("lfmm-bed-is-h5ad", lambda w, f: _lfmm(w, f, bed=w.h5ad), lambda w: str(w.h5ad), _fresh),
    ("lfmm-bed-bad-magic", lambda w, f: _lfmm(w, f, bed=w.bad_magic_bed), lambda w: str(w.bad_magic_bed), _fresh),
    ("lfmm-bed-truncated", lambda w, f: _lfmm(w, f, bed=w.truncated_bed), lambda w: str(w.truncated_bed), _fresh),
    (
        "lfmm-covariates-missing",
        lambda w, f: _lfmm(w, f, env="/nonexistent/env.tsv"),
        lambda w: "/nonexistent/env.tsv",
        _fresh,
    ),
    ("lfmm-covariates-empty", lambda w, f: _lfmm(w, f, env=w.empty), lambda w: str(w.empty), _fresh),
    ("lfmm-covariates-binary", lambda w, f: _lfmm(w, f, env=w.bed), lambda w: str(w.bed), _fresh),
    (
        "lfmm-covariates-not-parquet",
        lambda w, f: _lfmm(w, f, env=w.junk_parquet),
        lambda w: str(w.junk_parquet),
        _fresh,
    ),
    ("lfmm-covariates-a-directory", lambda w, f: _lfmm(w, f, env=w.munged_dir), lambda w: str(w.munged_dir), _fresh),
    ("lfmm-covariates-not-numeric", lambda w, f: _lfmm(w, f, env=w.lr), lambda w: "column", _fresh),
    ("lfmm-K-0", lambda w, f: _lfmm(w, f, K="0"), lambda w: "-K", _fresh),
    ("lfmm-K-text", lambda w, f: _lfmm(w, f, K="three"), lambda w: "-K", _fresh),
    ("lfmm-K-missing", lambda w, f: _lfmm(w, f, K=None), lambda w: "-K", _fresh),
    ("lfmm-K-too-large", lambda w, f: _lfmm(w, f, K="100000"), lambda w: "K=100000", _fresh),
    ("lfmm-est-rate-2", lambda w, f: _lfmm(w, f, "--est-rate", "2"), lambda w: "--est-rate", _fresh),
    ("lfmm-lam-inf", lambda w, f: _lfmm(w, f, "--lam", "inf"), lambda w: "--lam", _fresh),
    ("lfmm-seed-negative", lambda w, f: _lfmm(w, f, "--seed", "-1"), lambda w: "--seed", _fresh),
    ("lfmm-calibrate-bogus", lambda w, f: _lfmm(w, f, "--calibrate", "bonferroni"), lambda w: "--calibrate", _fresh),
    ("lfmm-executor-bogus", lambda w, f: _lfmm(w, f, "--executor", "bogus"), lambda w: "'bogus'", _fresh),
    (
        "lfmm-out-exists",
        lambda w, f: _lfmm(w, f, out=w.lfmm_out, K="3"),
        lambda w: str(w.lfmm_out),
        lambda w, f: w.lfmm_out,
    ),
    ("lfmm-out-is-a-file", lambda w, f: _lfmm(w, f, out=w.afile), lambda w: str(w.afile), lambda w, f: w.afile),
    (
        "lfmm-out-under-a-file",
        lambda w, f: _lfmm(w, f, out=w.afile / "o"),
        lambda w: str(w.afile),
        lambda w, f: w.afile,
    ),
    # stlr fit
    ("fit-h5ad-missing", lambda w, f: _fit(w, f, h5ad="/nonexistent/t.h5ad"), lambda w: "/nonexistent/t.h5ad", _fresh),
    ("fit-h5ad-junk", lambda w, f: _fit(w, f, h5ad=w.junk_h5ad), lambda w: str(w.junk_h5ad), _fresh),
    ("fit-h5ad-is-csv", lambda w, f: _fit(w, f, h5ad=w.lr), lambda w: str(w.lr), _fresh),
    ("fit-lr-missing", lambda w, f: _fit(w, f, lr="/nonexistent/lr.csv"), lambda w: "/nonexistent/lr.csv", _fresh),
    ("fit-lr-not-parquet", lambda w, f: _fit(w, f, lr=w.junk_parquet), lambda w: str(w.junk_parquet), _fresh),
    ("fit-grn-not-parquet", lambda w, f: _fit(w, f, grn=w.junk_parquet), lambda w: str(w.junk_parquet), _fresh),
    ("fit-radius-nan", lambda w, f: _fit(w, f, "--radius", "nan"), lambda w: "--radius", _fresh),
    (
        "fit-contact-distance-negative",
        lambda w, f: _fit(w, f, "--contact-distance", "-1"),
        lambda w: "--contact-distance",
        _fresh,
    ),
    ("fit-l1-reg-nan", lambda w, f: _fit(w, f, "--l1-reg", "nan"), lambda w: "--l1-reg", _fresh),
    ("fit-min-r2-2", lambda w, f: _fit(w, f, "--min-r2", "2"), lambda w: "--min-r2", _fresh),
    ("fit-mode-bogus", lambda w, f: _fit(w, f, "--mode", "approx"), lambda w: "--mode", _fresh),
    ("fit-unknown-gene", lambda w, f: _fit(w, f, genes="NOPE1"), lambda w: "NOPE1", _fresh),
    ("fit-cluster-key-unknown", lambda w, f: _fit(w, f, "--cluster-key", "nope"), lambda w: "'nope'", _fresh),
    ("fit-out-exists", lambda w, f: _fit(w, f, out=w.betas), lambda w: str(w.betas), lambda w, f: w.betas),
    ("fit-out-is-a-file", lambda w, f: _fit(w, f, out=w.afile), lambda w: str(w.afile), lambda w, f: w.afile),
    ("fit-out-under-a-file", lambda w, f: _fit(w, f, out=w.afile / "b"), lambda w: str(w.afile), lambda w, f: w.afile),
    # stlr perturb
    (
        "perturb-betas-missing",
        lambda w, f: _pt(w, f, betas="/nonexistent/betas"),
        lambda w: "/nonexistent/betas",
        _fresh_parquet,
    ),
    ("perturb-betas-is-csv", lambda w, f: _pt(w, f, betas=w.lr), lambda w: str(w.lr), _fresh_parquet),
    (
        "perturb-lr-not-parquet",
        lambda w, f: _pt(w, f, lr=w.junk_parquet),
        lambda w: str(w.junk_parquet),
        _fresh_parquet,
    ),
    ("perturb-unknown-target", lambda w, f: _pt(w, f, target="NOPE"), lambda w: "NOPE", _fresh_parquet),
    ("perturb-empty-target", lambda w, f: _pt(w, f, target=","), lambda w: "--target", _fresh_parquet),
    ("perturb-gene-expr-nan", lambda w, f: _pt(w, f, "--gene-expr", "nan"), lambda w: "--gene-expr", _fresh_parquet),
    (
        "perturb-beta-scale-factor-nan",
        lambda w, f: _pt(w, f, "--beta-scale-factor", "nan"),
        lambda w: "--beta-scale-factor",
        _fresh_parquet,
    ),
    ("perturb-beta-cap-negative", lambda w, f: _pt(w, f, "--beta-cap", "-1"), lambda w: "--beta-cap", _fresh_parquet),
    (
        "perturb-n-propagation-negative",
        lambda w, f: _pt(w, f, "--n-propagation", "-1"),
        lambda w: "--n-propagation",
        _fresh_parquet,
    ),
    (
        "perturb-out-exists",
        lambda w, f: _pt(w, f, out=w.exist_parquet),
        lambda w: str(w.exist_parquet),
        lambda w, f: w.exist_parquet,
    ),
    (
        "perturb-out-is-a-directory",
        lambda w, f: _pt(w, f, out=w.munged_dir / "x.parquet"),
        lambda w: str(w.munged_dir),
        lambda w, f: w.munged_dir,
    ),
    (
        "perturb-out-under-a-file",
        lambda w, f: _pt(w, f, out=w.afile / "p.parquet"),
        lambda w: str(w.afile),
        lambda w, f: w.afile,
    ),
    (
        "perturb-batch-out-exists",
        lambda w, f: _pt(w, f, target=w.tf + "," + w.tf, out=w.perturb_out),
        lambda w: str(w.perturb_out),
        lambda w, f: w.perturb_out,
    ),
    (
        "perturb-batch-executor-bogus",
        lambda w, f: _pt(w, f, "--executor", "bogus", target=w.tf + "," + w.tf, out=f),
        lambda w: "'bogus'",
        _fresh,
    ),
]


@pytest.mark.parametrize("case", CASE_LIST, ids=[c[0] for c in CASE_LIST])
def test_hostile_command_line(case, w, tmp_path):
    _, argv, names, out = case
    fresh = tmp_path / "out"
    if case[0] == "perturb-out-is-a-directory":
        (w.munged_dir / "x.parquet").mkdir(exist_ok=True)
    refuse(argv(w, fresh), names(w), out(w, fresh))


def test_case_ids_are_unique():
    ids = [c[0] for c in CASE_LIST]
    assert len(ids) == len(set(ids))


# -- bad numbers for every numeric option (hypothesis) ----------------------------------------------
NUMERIC = [  # (builder, option): every value below is invalid for each of them
    (_munge, "--info-filter"),
    (_munge, "--maf-filter"),
    (_ldsc, "--n-blocks"),
    (_ldsc, "--chisq-max"),
    (_ldsc, "--chr"),
    (_ss, "--info-filter"),
    (_ss, "--maf-filter"),
    (_u, "--SNPSE"),
    (_u, "--batch-size"),
    (_lfmm, "--lam"),
    (_lfmm, "--power-iter"),
    (_lfmm, "--oversampling"),
    (_lfmm, "--seed"),
    (_lfmm, "--choose-k"),
    (_lfmm, "--est-rate"),
    (_fit, "--radius"),
    (_fit, "--contact-distance"),
    (_fit, "--scale-factor"),
    (_fit, "--group-reg"),
    (_fit, "--l1-reg"),
    (_fit, "--min-r2"),
    (_pt, "--gene-expr"),
    (_pt, "--n-propagation"),
    (_pt, "--beta-scale-factor"),
    (_pt, "--beta-cap"),
    (_pt, "--radius"),
]


def _not_a_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


BAD_NUMBERS = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e999", "-0.5", "-1", "", " ", "1,5", "0x10", "++1"]),
    st.floats(max_value=-1e-6, allow_nan=False, allow_infinity=True).map(repr),
    st.integers(max_value=-1).map(str),
    st.text(min_size=1, max_size=6).filter(_not_a_number),
)


@SETTINGS
@given(which=st.sampled_from(range(len(NUMERIC))), value=BAD_NUMBERS)
def test_bad_numbers_are_refused(w, tmp_path_factory, which, value):
    build, option = NUMERIC[which]
    fresh = tmp_path_factory.mktemp("num") / "out"
    argv = build(w, fresh, option, value)
    if option == "--choose-k":  # choose-k takes no --out
        argv = argv[: argv.index("--out")]
    # the option is named, or (a value like '-1' read as an option) argparse names it as missing its value
    refuse(argv, (option, "expected one argument", f"'{value}'"), None)
    assert not fresh.exists() or not any(fresh.iterdir())


# -- a second run on a directory being written ------------------------------------------------------
def test_concurrent_run_on_the_same_out_is_refused(w, tmp_path):
    from polgen.io.sink import OutputLock

    out = tmp_path / "gwas"
    with OutputLock(out):  # another run (here: this test) is writing out/
        msg = refuse(_u(w, out, out=out), str(out), out)
        assert "another polgen run is writing" in msg
    rc, err = run(_u(w, out, out=out))  # once it is free the same command line works
    assert rc == 0, err


# -- the installed console script ---------------------------------------------------------------
def _script() -> list[str]:
    exe = shutil.which("polgen")
    return [exe] if exe else [sys.executable, "-c", "import sys; from polgen.cli import main; sys.exit(main())"]


@pytest.mark.parametrize("kind", ["missing-sumstats", "bad-K", "perturb-out-exists"])
def test_console_script(kind, w, tmp_path):
    fresh = tmp_path / "out"
    argv, names, out = {
        "missing-sumstats": (_u(w, fresh, sumstats="/nonexistent/s.parquet"), "/nonexistent/s.parquet", fresh),
        "bad-K": (_lfmm(w, fresh, K="-2"), "-K", fresh),
        "perturb-out-exists": (_pt(w, fresh, out=w.exist_parquet), str(w.exist_parquet), w.exist_parquet),
    }[kind]
    CASES["n"] += 1
    before = snapshot(out)
    env = dict(os.environ, POLGEN_PROGRESS="0", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        _script() + argv, capture_output=True, text=True, timeout=180, env=env, cwd=str(ROOT), stdin=subprocess.DEVNULL
    )
    check_refused(proc.returncode, proc.stderr, names)
    assert proc.stdout == ""
    after = snapshot(out)
    assert after == before if before is not None else not after
    CASES["typed_error"] = CASES.get("typed_error", 0) + 1
