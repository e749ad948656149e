"""Shared test helpers: the stored test data (tests/data), and where ../shared is for what still needs it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("POLGEN_PROGRESS", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("POLGEN_SHARED", ROOT.parent / "shared"))


def require_shared(*parts: str) -> Path:
    """Path of a file under ../shared; skip when absent, fail when POLGEN_REQUIRE_SHARED=1.

    Not for fixture data: the tests read their copies in tests/data (:func:`gsem_fixture`,
    :func:`stlr_data`), so that a clone without ../shared runs them."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        msg = f"../shared is not beside the project ({path} missing)"
        if os.environ.get("POLGEN_REQUIRE_SHARED") == "1":
            pytest.fail(msg + " and POLGEN_REQUIRE_SHARED=1")
        pytest.skip(msg)
    return path


@pytest.fixture
def shared():
    """Callable fixture: ``shared("fixtures", "gsem", "commonfactor.json")``."""
    return require_shared


DATA = ROOT / "tests" / "data"


def _stored(path: Path) -> Path:
    if not path.exists():
        pytest.fail(
            f"stored test data {path.relative_to(ROOT)} missing (tests/data/make/copy_shared_fixtures.py copies it)"
        )
    return path


def gsem_fixture(*parts: str) -> Path:
    """Path of an R GenomicSEM parity fixture under tests/data/gsem/fixtures/ (``gsem_fixture("newer",
    "sem_3factor.json")``): byte-for-byte copies of ../shared/fixtures/gsem, made and checked against
    ../shared by tests/data/make/copy_shared_fixtures.py; provenance in its PROVENANCE.md.

    Part of the repository: a missing file is a failure, never a skip, and no test needs ../shared."""
    return _stored(DATA.joinpath("gsem", "fixtures", *parts))


def stlr_data(*parts: str) -> Path:
    """Path of SpaceTravLR reference data under tests/data/stlr/ (CellChat table, a base-GRN subset,
    human tonsil betadata subsets): copies or exact subsets of ../shared/data/stlr, made and checked by
    tests/data/make/copy_shared_fixtures.py; provenance in its PROVENANCE.md.  A failure if missing."""
    return _stored(DATA.joinpath("stlr", *parts))


def r_reference(*parts: str) -> Path:
    """Path of a stored R reference file under tests/data/gsem/r/ (R outputs with their inputs,
    produced once by tests/data/make/gsem_r.py; provenance in tests/data/gsem/PROVENANCE.md).

    Part of the repository: a missing file is a failure, never a skip, and no test needs R."""
    path = DATA.joinpath("gsem", "r", *parts)
    if not path.exists():
        pytest.fail(f"stored R reference {path.relative_to(ROOT)} missing (tests/data/make/gsem_r.py makes it)")
    return path


def live_r() -> Path | None:
    """The GenomicSEM ``R/`` directory for opt-in live R runs (``POLGEN_LIVE_R=1`` and
    ``POLGEN_GENOMICSEM_R=<dir>``), else None.  Live runs only check that the stored references
    regenerate; the parity tests never need R."""
    if os.environ.get("POLGEN_LIVE_R") != "1":
        return None
    src = os.environ.get("POLGEN_GENOMICSEM_R")
    if not src or not (Path(src) / "userGWAS.R").exists():
        pytest.fail("POLGEN_LIVE_R=1 needs POLGEN_GENOMICSEM_R=<GenomicSEM checkout>/R")
    return Path(src)


# -- the whole suite on every core (pytest-xdist) ----------------------------------------------------
#
# A plain ``pytest`` of the whole suite (no paths on the command line: pyproject's testpaths) runs on
# one pytest-xdist worker per usable CPU, so on a clean clone numba compiles on every core instead of
# one.  ``pytest tests/x/test_y.py`` (or any named path) runs in this process as before.
# ``POLGEN_TEST_WORKERS=N`` sets the number of workers for any run (0 or 1: no workers), and an
# explicit ``-n`` / ``--dist`` or ``-p no:xdist`` wins.  The results never depend on it: each test
# module runs whole on one worker (``--dist loadfile``: module fixtures are built once, in order),
# and only the order in which the modules start changes (:data:`SLOW_FIRST`).
WORKERS_ENV = "POLGEN_TEST_WORKERS"

#: test modules that take longest on a cold numba cache (pytest --durations), started first so that
#: no worker is left with a long module at the end; a module missing here runs after them, in
#: collection order.  Speed only: any order gives the same results.
SLOW_FIRST = (
    "tests/gsem/test_gsem_gwas.py",
    "tests/gsem/test_hdl.py",
    "tests/cli/test_hostile_cli.py",
    "tests/gsem/test_constraints_gwas.py",
    "tests/gsem/test_add_snps.py",
    "tests/engine/test_memory_caps.py",
    "tests/gsem/test_gsem_gwas_commonfactor.py",
    "tests/engine/test_scaleout_dask.py",
    "tests/gsem/test_gwas_constraints_snp.py",
    "tests/engine/test_scaleout_resume.py",
    "tests/kernels/test_gwas_fast_ml.py",
    "tests/test_warmup.py",
)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _workers(config: pytest.Config) -> int:
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env:
        try:
            return int(env)
        except ValueError:
            raise pytest.UsageError(f"{WORKERS_ENV}={env!r}: expected a number of workers") from None
    whole_suite = config.args_source == pytest.Config.ArgsSource.TESTPATHS
    return _usable_cpus() if whole_suite else 0


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Turn on pytest-xdist for a run of the whole suite (before xdist reads its options)."""
    if os.environ.get("PYTEST_XDIST_WORKER") or not config.pluginmanager.hasplugin("xdist"):
        return
    if config.option.numprocesses is not None or config.option.dist != "no":
        return  # the command line chose
    if config.option.collectonly or config.option.usepdb:
        return
    n = _workers(config)
    if n >= 2:
        config.option.numprocesses = n
        config.option.dist = "loadfile"
        config.option.loadscopereorder = False  # keep the order set below


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """(xdist, controller) Tell the workers that :func:`pytest_cmdline_main` turned xdist on (a
    worker parses the command line again, which does not say so)."""
    if node.config.getoption("dist") == "loadfile" and not node.config.option.loadscopereorder:
        node.workerinput["polgen_slow_first"] = True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker started by :func:`pytest_cmdline_main`: the slowest modules first (the
    controller hands out whole modules in the order the workers collected them)."""
    if not getattr(config, "workerinput", {}).get("polgen_slow_first"):
        return
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable


# -- one numba cache, several workers ----------------------------------------------------------------
def _lock_numba_cache(lock_dir: Path) -> None:
    """In an xdist worker: compile each kernel signature in one worker at a time (the others wait,
    then load it from numba's on-disk cache instead of compiling it again), and update a kernel's
    cache index under a lock.

    numba saves a signature by reading the kernel's index, choosing a free data-file name, writing
    the index and then the data file; two processes saving two signatures of one kernel at once can
    take the same name (the index then maps a signature to the other one's code) or drop an entry.
    The locks are files in ``lock_dir`` (one per kernel signature, one per index), taken inside
    numba's per-process compiler lock; a kernel's callees are locked after it, so two workers never
    wait on each other."""
    import contextlib
    import fcntl
    import hashlib
    import time

    from numba.core import caching, dispatcher, sigutils
    from numba.core.compiler_lock import global_compiler_lock

    held: set[str] = set()  # changed only under numba's compiler lock

    @contextlib.contextmanager
    def locked(key: str):
        if key in held:  # a nested compilation of the same kernel in this process
            yield
            return
        with open(lock_dir / hashlib.sha1(key.encode()).hexdigest(), "a") as fh:
            deadline = time.monotonic() + 900.0  # a safety net: then compile unlocked
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
            held.add(key)
            try:
                yield
            finally:
                held.discard(key)
                fcntl.flock(fh, fcntl.LOCK_UN)

    compile_ = dispatcher.Dispatcher.compile
    save_ = caching.IndexDataCacheFile.save

    def compile(self, sig):
        if isinstance(self._cache, caching.NullCache):
            return compile_(self, sig)
        with global_compiler_lock:
            args, _ = sigutils.normalize_signature(sig)
            if tuple(args) in self.overloads:
                return compile_(self, sig)
            code = self.py_func.__code__
            with locked(f"compile {code.co_filename}:{code.co_firstlineno} {self.py_func.__qualname__} {args}"):
                return compile_(self, sig)

    def save(self, key, data):
        with locked(f"index {self._index_path}"):
            return save_(self, key, data)

    dispatcher.Dispatcher.compile = compile
    caching.IndexDataCacheFile.save = save


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") and config.option.basetemp:
        # the workers' base temporary directories are subdirectories of the controller's
        lock_dir = Path(config.option.basetemp).parent / "numba-locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        _lock_numba_cache(lock_dir)
