"""Compile polgen's numba kernels ahead of the first real call (``polgen warmup``).

numba compiles each kernel on its first call and caches the machine code on disk
(``NUMBA_CACHE_DIR``, by default ``__pycache__`` beside the sources), so a brand-new environment
spends up to a few minutes compiling before the first Genomic SEM GWAS, LFMM or SpaceTravLR call
returns, and every later process loads the cache in about a second.  :func:`warmup` runs each
method once on tiny synthetic inputs, through the same public functions a user calls, so exactly
the kernels (and argument types) a real call needs are compiled and cached::

    from polgen.warmup import warmup
    timings = warmup()                       # {"gsem.user_gwas": 41.2, ..., "total": 95.0}
    warmup(methods=("gsem",))

A second run (everything cached) takes a few seconds.  While a step compiles for more than a second
a progress bar (on an interactive stderr, or ``progress=True``) or INFO log lines say what it is
doing.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from polgen.errors import InputError

__all__ = ["METHODS", "warmup", "add_parser"]

log = logging.getLogger("polgen.warmup")

METHODS = ("gsem", "lfmm", "stlr")
SHOW_AFTER = 1.0  # seconds a step runs before its progress is shown


# -- tiny synthetic inputs ------------------------------------------------------------------------
def _covstruc(k: int = 3) -> dict:
    """A small positive-definite LDSC covstruc (S, V, I) over traits T1..Tk."""
    rng = np.random.default_rng(7)
    lam = np.linspace(0.35, 0.5, k)
    S = np.outer(lam, lam) + np.diag(np.full(k, 0.1))
    kst = k * (k + 1) // 2
    A = rng.normal(0, 1, (kst, kst))
    V = 1e-4 * (np.eye(kst) * 5 + A @ A.T / kst)
    Imat = np.eye(k) + 0.01 * (np.ones((k, k)) - np.eye(k))
    names = [f"T{i + 1}" for i in range(k)]
    return {"S": S.tolist(), "V": V.tolist(), "I": Imat.tolist(), "trait_names": names}


def _covstruc_not_pd(k: int = 3) -> dict:
    """:func:`_covstruc` with V and the intercept matrix I not positive definite (as real LDSC
    output can be): V_full is built and smoothed per SNP (the kernels' ``general`` and nearPD
    specialisations), which no call on a positive-definite covstruc compiles."""
    cov = _covstruc(k)
    V = np.asarray(cov["V"])
    w, U = np.linalg.eigh(V)
    w[0] = -0.2 * w[1]
    Imat = np.asarray(cov["I"]).copy()
    Imat[0, 1] = Imat[1, 0] = 1.2
    return dict(cov, V=(U @ np.diag(w) @ U.T).tolist(), I=Imat.tolist())


def _sumstats(n: int, k: int = 3, seed: int = 1):
    """``n`` SNPs of ``sumstats()`` output over T1..Tk."""
    import polars as pl

    rng = np.random.default_rng(seed)
    se = rng.uniform(0.01, 0.05, (n, k))
    z = 0.6 * rng.normal(0, 1, (n, 1)) + 0.8 * rng.normal(0, 1, (n, k))
    cols: dict[str, Any] = {
        "SNP": [f"rs{i}" for i in range(n)],
        "CHR": ["1"] * n,
        "BP": np.arange(n, dtype=np.int64) * 100 + 1,
        "MAF": rng.uniform(0.05, 0.5, n),
        "A1": ["A"] * n,
        "A2": ["G"] * n,
    }
    for j in range(k):
        cols[f"beta.T{j + 1}"] = z[:, j] * se[:, j]
        cols[f"se.T{j + 1}"] = se[:, j]
    return pl.DataFrame(cols)


GWAS_MODEL = "F1 =~ NA*T1 + T2 + T3\nF1 ~ SNP\nF1 ~~ 1*F1\nSNP ~~ SNP"
STLR_TF = "Pax5"  # a TF of the demo tissue that regulates targets: the perturbation propagates
GWAS_DEFINED = "F1 =~ NA*T1 + a*T2 + T3\nF1 ~ b*SNP\nF1 ~~ 1*F1\nSNP ~~ SNP\nh := a*b"  # := SEs kernel
BIG_BATCH = 2100  # over the batch kernels' threshold for running chunks in parallel


def _gsem_steps(tmp: Path) -> list[tuple[str, Callable[[], Any]]]:
    import polars as pl

    from polgen.gsem.fit_models import commonfactor, usermodel
    from polgen.gsem.gwas import commonfactor_gwas, user_gwas
    from polgen.gsem.snp_matrices import add_snps

    cov = _covstruc(3)
    small, big = _sumstats(64), _sumstats(BIG_BATCH, seed=2)
    # a SNP whose S_full is not positive definite: the kernel specialisation with nearPD
    hit = small.with_columns(pl.col("beta.T1") + pl.Series([3.0] + [0.0] * (small.height - 1)))

    def gwas(snps, covstruc=cov, **kw):
        # each estimator / fit / V_full layout is its own kernel specialisation (gwas_kernel)
        return lambda: user_gwas(snps, covstruc, GWAS_MODEL, progress=False, **kw)

    def cf(snps):
        return lambda: commonfactor_gwas(snps, cov, progress=False)

    def not_pd_step():
        # V and I not positive definite: V_full per SNP, smoothed (every configuration's kernels)
        bad = _covstruc_not_pd(3)
        for kw in ({}, {"estimation": "ML"}, {"fix_measurement": False}):
            user_gwas(small, bad, GWAS_MODEL, progress=False, **kw)
        psi_search(bad)
        commonfactor_gwas(small, bad, progress=False)

    state: dict[str, Any] = {}

    def psi_search(covstruc):
        # fix_measurement=False's search for minima with psi > 0 runs only for SNPs whose warm
        # start's minimum has psi <= 0 (none of these): compiled on the same SNPs
        from polgen.gsem.gwas_batch import extract_inputs
        from polgen.gsem.gwas_cfuser import psi_positive_search
        from polgen.gsem.gwas_plan import plan_user, resolve_columns

        plan = plan_user(
            small.schema, covstruc, GWAS_MODEL, "DWLS", "standard", False, False, False, False, None, False, None,
            None, None,
        )  # fmt: skip
        plan.beta_cols, plan.se_cols, plan.id_cols, plan.var_col = resolve_columns(
            dict(small.schema), plan.traits, plan.twas
        )
        psi_positive_search(plan, *extract_inputs(plan, small))

    def fm_false_step():
        gwas(small, fix_measurement=False)()
        psi_search(cov)

    def sim_step():
        import numpy as np

        from polgen.gsem.simulate import sim_ldsc

        ld = state["ld"]  # the demo's LD scores (written by ldsc_step)
        sim_ldsc(np.asarray(cov["S"]), [50_000.0, 40_000.0, 60_000.0], ld, seed=1)

    def hdl_step():
        import numpy as np

        from polgen.gsem.hdl import hdl
        from polgen.gsem.hdl_panel import make_hdl_panel, simulate_hdl_sumstats

        panel = make_hdl_panel(tmp / "hdl", n_chromosomes=2, pieces_per_chromosome=2, snps_per_piece=40, seed=1)
        S = np.asarray(cov["S"])[:2, :2]
        hdl(simulate_hdl_sumstats(panel, S, 50_000.0, trait_names=["T1", "T2"], seed=1), ld_path=panel)

    def ldsc_step():
        from polgen.demo.data import make_gsem_demo
        from polgen.gsem.ldsc import ldsc
        from polgen.gsem.munge import munge

        g = make_gsem_demo(tmp / "gsem", n_snps=2200, small=True)
        state["ld"] = g.ld
        munged, _ = munge([str(f) for f in g.sumstats], str(g.hm3), trait_names=g.trait_names, out=tmp / "munged")
        ldsc(munged, g.ld, trait_names=g.trait_names)

    return [
        ("gsem.ldsc", ldsc_step),
        ("gsem.commonfactor", lambda: commonfactor(cov)),
        ("gsem.usermodel", lambda: usermodel(cov, "F1 =~ NA*T1 + T2 + T3\nF1 ~~ 1*F1")),
        ("gsem.user_gwas", gwas(small)),
        ("gsem.user_gwas (large batch)", gwas(big)),
        ("gsem.user_gwas (nearPD smoothing)", gwas(hit)),
        ("gsem.user_gwas (fix_measurement=False)", fm_false_step),
        ("gsem.user_gwas (ML)", gwas(small, estimation="ML")),
        ("gsem.user_gwas (3 of 4 traits)", gwas(_sumstats(64, k=4), _covstruc(4))),
        ("gsem.user_gwas (:= defined)", lambda: user_gwas(small, cov, GWAS_DEFINED, sub="h", progress=False)),
        ("gsem.commonfactor_gwas", cf(small)),
        ("gsem.commonfactor_gwas (large batch)", cf(big)),
        ("gsem.commonfactor_gwas (nearPD smoothing)", cf(hit)),
        ("gsem.user_gwas / commonfactor_gwas (V, I not positive definite)", not_pd_step),
        ("gsem.add_snps", lambda: add_snps(cov, small)),
        ("gsem.sim_ldsc", sim_step),
        ("gsem.hdl", hdl_step),
    ]


def _lfmm_steps(tmp: Path) -> list[tuple[str, Callable[[], Any]]]:
    import polars as pl

    from polgen.demo.data import make_lfmm_demo
    from polgen.lfmm import fit, test

    state: dict[str, Any] = {}

    def fit_step():
        d = make_lfmm_demo(tmp / "lfmm", n=40, p=400, K=2)
        env = pl.read_csv(d.env, separator="\t").select("IID", "env")
        state["d"] = d
        state["model"] = fit(env, str(d.bed), K=d.K, progress=False)
        # large fits (>= LOW_MIN_CALLS held calls) make their first passes with float32 products:
        # the same demo once more with that path on compiles its kernels too
        fit_mod = importlib.import_module("polgen.lfmm.fit")  # the module (polgen.lfmm.fit is the function)
        low = fit_mod.LOW_MIN_CALLS
        fit_mod.LOW_MIN_CALLS = 0
        try:
            fit(env, str(d.bed), K=d.K, progress=False)
        finally:
            fit_mod.LOW_MIN_CALLS = low

    def test_step():
        d = state["d"]
        test(state["model"], str(d.bed), out=tmp / "lfmm" / "out", overwrite=True, progress=False)

    def glm_step():
        from polgen.lfmm.glm import glm_test

        glm_test(state["model"], str(state["d"].bed), family="binomial")

    def offset_step():
        from polgen.lfmm.offset import genetic_offset

        d = state["d"]
        env = pl.read_csv(d.env, separator="\t").select("env")
        genetic_offset(str(d.bed), env, env.with_columns(pl.col("env") + 1.0), K=d.K)

    return [
        ("lfmm.fit", fit_step),
        ("lfmm.test", test_step),
        ("lfmm.glm_test", glm_step),
        ("lfmm.genetic_offset", offset_step),
    ]


def _stlr_steps(tmp: Path) -> list[tuple[str, Callable[[], Any]]]:
    from polgen.demo.data import make_stlr_demo
    from polgen.stlr import fit, perturb

    state: dict[str, Any] = {}

    def common(d) -> dict:
        return dict(
            lr=str(d.lr),
            radius=d.radius,
            contact_distance=d.contact_distance,
            layer=d.layer,
            cluster_key=d.cluster_key,
        )

    def fit_step():
        d = make_stlr_demo(tmp / "stlr", n_cells=120)
        state["d"] = d
        betas = tmp / "stlr" / "betas"
        fit(str(d.h5ad), d.targets, out=betas, grn=str(d.grn_links), overwrite=True, progress=False, **common(d))

    def perturb_step():
        d = state["d"]
        perturb(str(d.h5ad), str(tmp / "stlr" / "betas"), STLR_TF, 0.0, **common(d))

    return [("stlr.fit", fit_step), ("stlr.perturb", perturb_step)]


STEPS: dict[str, Callable[[Path], list[tuple[str, Callable[[], Any]]]]] = {
    "gsem": _gsem_steps,
    "lfmm": _lfmm_steps,
    "stlr": _stlr_steps,
}


# -- progress ------------------------------------------------------------------------------------
class _Display:
    """A progress bar (or log lines) that appears only once a step has run for SHOW_AFTER seconds,
    naming the kernel being compiled."""

    def __init__(self, total: int, progress: bool | None) -> None:
        from polgen.engine.progress import progress_enabled

        self._bar_on = progress_enabled(progress)
        self._total = total
        self._lock = threading.Lock()
        self._progress: Any = None
        self._task: Any = None
        self._step = ""
        self._done = 0
        self._timer: threading.Timer | None = None
        self._shown = False

    def _show(self) -> None:
        with self._lock:
            self._shown = True
            if self._bar_on and self._progress is None:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

                from polgen.engine.progress import stderr_console

                self._progress = Progress(
                    TextColumn("[bold]warmup[/] {task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=stderr_console(),
                    transient=False,
                )
                self._progress.start()
                self._task = self._progress.add_task(self._step, total=self._total, completed=self._done)
            elif not self._bar_on:
                log.info("warmup: compiling the kernels of %s ...", self._step)

    def start(self, step: str) -> None:
        with self._lock:
            self._step = step
            if self._progress is not None:
                self._progress.update(self._task, description=step)
            elif self._shown and not self._bar_on:
                log.info("warmup: compiling the kernels of %s ...", step)
        if not self._shown:
            self._timer = threading.Timer(SHOW_AFTER, self._show)
            self._timer.daemon = True
            self._timer.start()

    def kernel(self, name: str) -> None:
        with self._lock:
            if self._progress is not None:
                short = name.removeprefix("polgen.kernels.")
                self._progress.update(self._task, description=f"{self._step}: {short}")

    def end(self, step: str, seconds: float, here: bool = True) -> None:
        """``step`` ended after ``seconds`` (``here``: the step :meth:`start` named; else one a
        worker process ran)."""
        if here and self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with self._lock:
            self._done += 1
            if self._progress is not None:
                self._progress.update(self._task, completed=self._done, **({"description": step} if here else {}))
            if seconds > SHOW_AFTER:
                log.info("warmup: %s ready in %.1f s", step, seconds)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None


# -- the entry point -----------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_analysis():
    """The warm-up runs are not analyses: their data warnings (a tiny synthetic GLM not converging
    on a few SNPs, ...) would only alarm; the compile notices use their own logger and still show."""
    logger, kernels = logging.getLogger("polgen"), logging.getLogger("polgen.kernels")
    previous, previous_kernels = logger.level, kernels.level
    kernels.setLevel(kernels.getEffectiveLevel())  # compile notices keep the level they had
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)
        kernels.setLevel(previous_kernels)


#: seconds of each step on an empty cache (2-core machine, load ~2, issue 18): what the two
#: processes of a parallel warm-up are balanced by; an unlisted step counts DEFAULT_COST
COST = {
    "gsem.user_gwas": 19.0,
    "gsem.user_gwas (nearPD smoothing)": 26.0,
    "gsem.user_gwas (fix_measurement=False)": 94.0,
    "gsem.user_gwas (ML)": 37.0,
    "gsem.user_gwas (3 of 4 traits)": 10.0,
    "gsem.user_gwas (:= defined)": 6.0,
    "gsem.commonfactor_gwas": 12.0,
    "gsem.commonfactor_gwas (nearPD smoothing)": 16.0,
    "gsem.user_gwas / commonfactor_gwas (V, I not positive definite)": 58.0,
    "gsem.hdl": 69.0,
    "gsem.commonfactor": 5.0,
    "gsem.add_snps": 4.0,
}
DEFAULT_COST = 5.0
#: steps that compile the same kernels (callees, specialisations of one kernel) run in one process:
#: two processes would compile them twice
FAMILY = {
    "gsem.user_gwas": "fast",
    "gsem.user_gwas (large batch)": "fast",
    "gsem.user_gwas (nearPD smoothing)": "fast",
    "gsem.user_gwas (ML)": "fast",
    "gsem.user_gwas (3 of 4 traits)": "fast",
    "gsem.user_gwas (:= defined)": "fast",
    "gsem.add_snps": "fast",
    "gsem.user_gwas (fix_measurement=False)": "full",
    "gsem.commonfactor_gwas": "full",
    "gsem.commonfactor_gwas (large batch)": "full",
    "gsem.commonfactor_gwas (nearPD smoothing)": "full",
    "gsem.user_gwas / commonfactor_gwas (V, I not positive definite)": "full",
}


def _partition(names: Sequence[str], workers: int) -> list[list[str]]:
    """The steps ``names`` in ``workers`` groups of about equal :data:`COST`, each in the given
    order; a family (:data:`FAMILY`) and a step with the step it needs (:data:`NEEDS`) stay together."""
    units: dict[str, list[str]] = {}
    for n in names:
        key = FAMILY.get(n) or NEEDS.get(n) or n
        units.setdefault(key, []).append(n)
    load = [0.0] * workers
    group_of: dict[str, int] = {}
    for members in sorted(units.values(), key=lambda m: -sum(COST.get(n, DEFAULT_COST) for n in m)):
        g = min(range(workers), key=lambda i: load[i])
        load[g] += sum(COST.get(n, DEFAULT_COST) for n in members)
        for n in members:
            group_of[n] = g
    groups: list[list[str]] = [[] for _ in range(workers)]
    for n in names:
        groups[group_of[n]].append(n)
    return [g for g in groups if g]


#: steps that use another step's results (its state): run after it
NEEDS = {
    "gsem.sim_ldsc": "gsem.ldsc",
    "lfmm.test": "lfmm.fit",
    "lfmm.glm_test": "lfmm.fit",
    "lfmm.genetic_offset": "lfmm.fit",
    "stlr.perturb": "stlr.fit",
}


def _select(all_steps: list[tuple[str, Callable[[], Any]]], only: Sequence[str] | None):
    """The steps named in ``only`` in that order (each after the step it needs), or all."""
    if only is None:
        return all_steps
    by_name = dict(all_steps)
    unknown = [n for n in only if n not in by_name]
    if unknown:
        raise InputError(f"unknown warmup step(s) {unknown}; choose from {list(by_name)}")
    order: list[str] = []
    for name in only:
        for n in (NEEDS.get(name), name):
            if n is not None and n not in order:
                order.append(n)
    return [(n, by_name[n]) for n in order]


def warmup(
    methods: Sequence[str] = METHODS,
    progress: bool | None = None,
    *,
    only: Sequence[str] | None = None,
    on_step: Callable[[str, float], None] | None = None,
    workers: int | None = None,
) -> dict[str, float]:
    """Compile (and cache on disk) the numba kernels the given methods need, by running each once
    on tiny synthetic inputs.  Returns the seconds per step (``"gsem.user_gwas"``, ...) and
    ``"total"``.  ``progress``: a bar on stderr (None: when stderr is a terminal); when off, steps
    that take more than a second are logged at INFO.  ``only``: run just these steps, in this
    order (with the steps they need; ``polgen demo`` compiles its own first); ``on_step(name,
    seconds)`` is called as each step ends.  ``workers``: processes to run the steps in (None:
    two when all steps run and compile helper processes may start here: two usable CPUs,
    ``POLGEN_PRECOMPILE`` not ``0``; the others are ``python -m polgen.warmup`` children,
    balanced by :data:`COST`; numba's cache is shared on disk)."""
    if isinstance(methods, str):
        methods = (methods,)
    unknown = [m for m in methods if m not in STEPS]
    if unknown:
        raise InputError(f"unknown warmup method(s) {unknown}; choose from {list(STEPS)}")
    from polgen.kernels import _notice, _precompile

    if workers is None:
        workers = 2 if only is None and _precompile.enabled() else 1
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="polgen_warmup_") as td:
        tmp = Path(td)
        steps = _select([s for m in methods for s in STEPS[m](tmp)], only)
        groups = _partition([n for n, _ in steps], workers) if workers > 1 and len(steps) > 1 else []
        display = _Display(len(steps), progress)
        lock = threading.Lock()

        def finished(name: str, dt: float, here: bool = False) -> None:
            with lock:
                timings[name] = round(dt, 3)
                display.end(name, dt, here)
                if on_step is not None:
                    on_step(name, dt)

        children = [_Worker(list(methods), g, finished) for g in groups[1:]]
        local = set(groups[0]) if groups else {n for n, _ in steps}
        remove = _notice.add_listener(display.kernel, lambda name, dt: None)
        try:
            # with children, each process compiles on its own core: no compile helpers besides
            with _env(_precompile.ENV, "0") if children else contextlib.nullcontext():
                for name, fn in steps:
                    if name in local:
                        _run_step(name, fn, display, finished)
                for child in children:
                    child.wait()
                # steps a failed child did not report: here
                for name, fn in steps:
                    if name not in timings:
                        _run_step(name, fn, display, finished)
        finally:
            for child in children:
                child.close()
            remove()
            display.close()
    timings["total"] = round(time.perf_counter() - t_all, 3)
    return timings


def _run_step(name: str, fn: Callable[[], Any], display: _Display, finished: Callable[..., None]) -> None:
    display.start(name)
    t = time.perf_counter()
    with _quiet_analysis():
        fn()
    finished(name, time.perf_counter() - t, True)


@contextlib.contextmanager
def _env(key: str, value: str):
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


class _Worker:
    """Some steps of a parallel warm-up in a ``python -m polgen.warmup --only ...`` child: each
    ``done <step>`` line it prints is reported to ``finished(step, seconds)``."""

    def __init__(self, methods: list[str], names: list[str], finished: Callable[[str, float], None]) -> None:
        env = dict(os.environ, POLGEN_PROGRESS="0", POLGEN_PRECOMPILE="0")
        cmd = [sys.executable, "-m", "polgen.warmup", "--methods", *methods, "--only", *names]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self._names = set(names)
        self._finished = finished
        self._reader = threading.Thread(target=self._read, name="polgen-warmup-worker", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        last = time.perf_counter()
        for line in self._proc.stdout:
            name = line.strip().removeprefix("done ")
            if name in self._names:
                now = time.perf_counter()
                self._finished(name, now - last)
                last = now

    def wait(self) -> None:
        self._proc.wait()
        self._reader.join()
        if self._proc.returncode != 0:
            log.warning("warmup: a worker process failed (exit %s); its steps run here", self._proc.returncode)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


# -- ahead of a run, in another process (polgen.demo.ahead.Background starts it) --------------------
def _child(argv: Sequence[str] | None = None) -> int:
    """``python -m polgen.warmup --methods ... --only ...``: the child of
    :class:`polgen.demo.ahead.Background`; prints ``done <step>`` as each step ends."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m polgen.warmup")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--only", nargs="*", default=None)
    a = ap.parse_args(argv)
    warmup(
        tuple(a.methods), progress=False, only=a.only, on_step=lambda n, dt: print(f"done {n}", flush=True), workers=1
    )
    return 0


def run_step(step: str) -> None:
    """Run one gsem warm-up step (the work of :mod:`polgen.kernels._precompile`'s helper)."""
    with tempfile.TemporaryDirectory(prefix="polgen_precompile_") as td:
        steps = dict(_gsem_steps(Path(td)))
        if step not in steps:
            raise InputError(f"unknown warmup step {step!r}; choose from {list(steps)}")
        with _quiet_analysis():
            steps[step]()


# -- command line --------------------------------------------------------------------------------
def add_parser(subparsers) -> None:
    """Register ``polgen warmup [--methods gsem lfmm stlr] [--progress/--no-progress]``."""
    from polgen.cli import add_progress, examples

    p = subparsers.add_parser(
        "warmup",
        help="compile and cache the numba kernels ahead of the first call",
        description=(
            "Compile polgen's numba kernels once (cached on disk, in NUMBA_CACHE_DIR when set) so that the "
            "first call of each method in a new process returns in seconds instead of minutes."
        ),
        epilog=examples("polgen warmup", "polgen warmup --methods gsem --no-progress"),
    )
    p.add_argument(
        "--methods", nargs="+", choices=list(METHODS), default=list(METHODS), help="methods whose kernels to compile"
    )
    add_progress(p)
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    timings = warmup(tuple(args.methods), progress=args.progress)
    width = max(len(k) for k in timings)
    for step, sec in timings.items():
        print(f"{step:<{width}}  {sec:8.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(_child())
