"""polgen warmup: compiles (and caches) the kernels a method needs, so that a fresh process's first
call compiles nothing.  The subprocesses share the suite's numba cache (NUMBA_CACHE_DIR when set,
else __pycache__): on a warm cache this takes seconds; on a cold one the warmup compiles once."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time

import pytest

from polgen.errors import InputError
from polgen.kernels import _notice
from polgen.warmup import METHODS, add_parser, warmup
from run_helpers import COMPILE_RECORDER, fresh_polgen_kernel

FIRST_CALL = (
    COMPILE_RECORDER
    + """
import json, time
from polgen.gsem.gwas import user_gwas
from polgen.warmup import GWAS_MODEL, _covstruc, _sumstats
snps, cov = _sumstats(300, seed=9), _covstruc(3)
t = time.perf_counter()
r = user_gwas(snps, cov, GWAS_MODEL, progress=False)
print(json.dumps({"seconds": time.perf_counter() - t, "compiled": compiled, "rows": len(r)}))
"""
)


def _run(code: str) -> str:
    env = dict(os.environ, POLGEN_PROGRESS="0")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout.strip().splitlines()[-1]


def test_warmup_then_first_user_gwas_compiles_nothing():
    timings = json.loads(_run("import json; from polgen.warmup import warmup; print(json.dumps(warmup(('gsem',))))"))
    assert {"gsem.user_gwas", "gsem.commonfactor_gwas", "gsem.commonfactor", "total"} <= set(timings)
    t = time.perf_counter()
    first = json.loads(_run(FIRST_CALL))
    wall = time.perf_counter() - t
    assert first["rows"] == 300
    assert first["compiled"] == [], f"compiled after warmup: {first['compiled']}"
    assert first["seconds"] < 30.0, first  # loads from the cache: ~1 s on an idle machine
    assert wall < 120.0


def test_warmup_rejects_unknown_method():
    with pytest.raises(InputError, match="unknown warmup method"):
        warmup(("gsem", "nope"))


def test_add_parser_mounts_the_subcommand():
    parser = argparse.ArgumentParser(prog="polgen")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["warmup", "--methods", "gsem", "--no-progress"])
    assert args.methods == ["gsem"] and args.progress is False and callable(args.func)
    args = parser.parse_args(["warmup"])
    assert tuple(args.methods) == METHODS and args.progress is None


def test_only_runs_the_named_steps_in_order_after_what_they_need():
    from polgen.warmup import _select

    steps = [(n, lambda: None) for n in ("lfmm.fit", "lfmm.test", "lfmm.glm_test", "stlr.fit", "stlr.perturb")]
    assert [n for n, _ in _select(steps, ["stlr.perturb", "lfmm.test"])] == [
        "stlr.fit",
        "stlr.perturb",
        "lfmm.fit",
        "lfmm.test",
    ]
    assert [n for n, _ in _select(steps, ["lfmm.fit", "lfmm.glm_test"])] == ["lfmm.fit", "lfmm.glm_test"]
    assert _select(steps, None) == steps
    with pytest.raises(InputError, match="unknown warmup step"):
        _select(steps, ["lfmm.nope"])


def test_on_step_hears_each_step():
    heard = []
    timings = warmup(("gsem",), progress=False, only=["gsem.commonfactor"], on_step=lambda n, dt: heard.append(n))
    assert heard == ["gsem.commonfactor"] and set(timings) == {"gsem.commonfactor", "total"}


def test_background_child_reports_its_steps():
    """polgen demo's compile-ahead child: wait() returns once the child has run the step."""
    from polgen.demo.ahead import Background

    bg = Background(["gsem.commonfactor", "gsem.usermodel"], ("gsem",))
    try:
        assert bg.wait("gsem.usermodel", timeout=300)
        assert bg.done["gsem.commonfactor"].is_set()
        assert bg.wait("not a step", timeout=1) is False
        assert bg._proc.wait(timeout=120) == 0  # the child ends by itself after its last step
    finally:
        bg.close()


def test_background_child_that_fails_releases_the_waiters():
    from polgen.demo.ahead import Background

    bg = Background(["gsem.commonfactor"], ("nope",))  # the child rejects the method and exits
    try:
        assert bg.wait("gsem.commonfactor", timeout=300)  # released: the caller compiles for itself
    finally:
        bg.close()
    assert bg._proc.returncode != 0


_fresh_kernel = fresh_polgen_kernel


class _Tty:
    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


def test_notice_on_a_terminal_when_no_handler_would_show_it(monkeypatch):
    """A script that never configured logging, at a terminal: the first line goes to stderr."""
    import numpy as np

    tty = _Tty()
    monkeypatch.setattr(_notice.sys, "stderr", tty)
    monkeypatch.delenv("POLGEN_PROGRESS", raising=False)
    monkeypatch.setattr(_notice, "log", logging.Logger("polgen.kernels.unconfigured"))  # no parent, no handler
    monkeypatch.setitem(_notice._state, "delay", 0.0)
    monkeypatch.setitem(_notice._state, "said", False)
    _notice.install(0.0)
    _fresh_kernel()(np.ones(3))
    time.sleep(0.3)
    assert tty.text == f"polgen: {_notice.MESSAGE}\n"


def test_no_terminal_line_when_logging_shows_it_or_progress_is_off(monkeypatch):
    tty = _Tty()
    monkeypatch.setattr(_notice.sys, "stderr", tty)
    configured = logging.Logger("polgen.kernels.configured", level=logging.INFO)
    configured.addHandler(logging.StreamHandler(tty))
    assert _notice._heard(configured)
    assert not _notice._heard(logging.Logger("polgen.kernels.bare"))
    monkeypatch.setenv("POLGEN_PROGRESS", "0")
    assert not _notice._on_terminal()
    monkeypatch.delenv("POLGEN_PROGRESS")
    assert _notice._on_terminal()
