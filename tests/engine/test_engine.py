"""The batch engine: ordering, bounded in-flight work, failures, progress, logging, planning."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest

from polgen.engine import plan_batches, progress_bar, progress_enabled, rows_per_batch, run_tasks, run_to_sink
from polgen.engine.executor import _default_in_flight, resolve_executor
from polgen.engine.progress import format_duration, progress_interval, progress_mode
from polgen.errors import EngineError, InputError, PolgenError, SchemaError
from run_helpers import memory_capped_subprocess


# -- module-level task functions (picklable for process pools) -----------------------------------
def square_after_jitter(i: int) -> int:
    # later tasks finish first, so ordering must come from the engine, not from timing
    time.sleep(0.002 * ((7 * i) % 5))
    return i * i


def fail_on_three(i: int) -> int:
    if i == 3:
        raise ValueError("boom at three")
    return i


def schema_error_on_two(i: int) -> int:
    if i == 2:
        raise SchemaError("column missing", path="x.tsv", column="BETA")
    return i


class LabelledTask:
    def __init__(self, i: int) -> None:
        self.i = i
        self.label = f"chr{i} block"


def fail_labelled(t: LabelledTask) -> int:
    raise KeyError("nope")


def batch_table(spec: tuple[int, int]) -> pa.Table:
    start, stop = spec
    rng = np.random.default_rng(start)
    idx = np.arange(start, stop)
    return pa.table({"i": idx, "x": rng.standard_normal(stop - start), "s": [f"snp{k}" for k in idx]})


EXECUTORS = ["none", "threads", "processes"]


@pytest.fixture(scope="module")
def process_pool():
    with ProcessPoolExecutor(max_workers=2) as ex:
        yield ex


def _executor(kind, process_pool):
    if kind == "none":
        return None
    if kind == "threads":
        return ThreadPoolExecutor(max_workers=3)
    return process_pool


@pytest.mark.parametrize("kind", EXECUTORS)
def test_results_in_task_order(kind, process_pool):
    ex = _executor(kind, process_pool)
    out = list(run_tasks(square_after_jitter, range(25), executor=ex, max_in_flight=4))
    assert out == [i * i for i in range(25)]


@pytest.mark.parametrize("name", ["threads", "processes"])
def test_named_pools_are_built_and_shut_down(name):
    before = threading.active_count()
    out = list(run_tasks(square_after_jitter, list(range(6)), executor=name))
    assert out == [i * i for i in range(6)]
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


class CountingExecutor:
    """Wraps a pool and counts tasks submitted but not yet handed back to the consumer."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.submitted = 0
        self.consumed = 0
        self.max_outstanding = 0
        self.lock = threading.Lock()

    def submit(self, fn, *args, **kwargs):
        with self.lock:
            self.submitted += 1
            self.max_outstanding = max(self.max_outstanding, self.submitted - self.consumed)
        return self.inner.submit(fn, *args, **kwargs)


@pytest.mark.parametrize("limit", [1, 3, 7])
def test_in_flight_is_bounded(limit):
    pulled = []

    def lazy_tasks():
        for i in range(40):
            pulled.append(i)
            yield i

    with ThreadPoolExecutor(max_workers=8) as pool:
        ex = CountingExecutor(pool)
        results = []
        for r in run_tasks(square_after_jitter, lazy_tasks(), executor=ex, max_in_flight=limit):
            ex.consumed += 1
            results.append(r)
            # the task iterable is pulled lazily: never more than `limit` ahead of the consumer
            assert len(pulled) - len(results) <= limit
    assert results == [i * i for i in range(40)]
    assert ex.submitted == 40
    assert ex.max_outstanding == limit


def test_default_in_flight_follows_workers():
    with ThreadPoolExecutor(max_workers=3) as pool:
        assert _default_in_flight(pool) == 6


@pytest.mark.parametrize("kind", EXECUTORS)
def test_failing_task_names_the_batch(kind, process_pool):
    ex = _executor(kind, process_pool)
    with pytest.raises(EngineError, match=r"batch 3 failed: ValueError: boom at three") as info:
        list(run_tasks(fail_on_three, range(8), executor=ex, max_in_flight=2))
    assert info.value.context["batch"] == "batch 3"
    assert isinstance(info.value.__cause__, ValueError) or kind == "processes"


@pytest.mark.parametrize("kind", EXECUTORS)
def test_polgen_errors_pass_through(kind, process_pool):
    ex = _executor(kind, process_pool)
    with pytest.raises(SchemaError) as info:
        list(run_tasks(schema_error_on_two, range(5), executor=ex))
    assert not isinstance(info.value, EngineError)
    assert str(info.value) == "column missing (file 'x.tsv', column 'BETA')"


def test_task_label_is_used():
    with pytest.raises(EngineError, match=r"chr2 block failed: KeyError"):
        list(run_tasks(fail_labelled, [LabelledTask(2)]))


def test_results_before_a_failure_are_yielded():
    got = []
    with pytest.raises(EngineError):
        for r in run_tasks(fail_on_three, range(8)):
            got.append(r)
    assert got == [0, 1, 2]


def test_bad_arguments_fail_at_call_time():
    with pytest.raises(EngineError, match="unknown executor"):
        run_tasks(square_after_jitter, [1], executor="bogus")
    with pytest.raises(EngineError, match="no submit"):
        run_tasks(square_after_jitter, [1], executor=object())
    with pytest.raises(EngineError, match="max_in_flight"):
        run_tasks(square_after_jitter, [1], max_in_flight=0)
    with pytest.raises(EngineError, match="an instance"):
        run_tasks(square_after_jitter, [1], executor=ThreadPoolExecutor)
    assert list(run_tasks(square_after_jitter, [2], executor=ThreadPoolExecutor(1), max_in_flight=np.int64(2))) == [4]
    with pytest.raises(EngineError, match="scheduler address"):
        env = os.environ.pop("DASK_SCHEDULER_ADDRESS", None)
        try:
            resolve_executor("dask")
        finally:
            if env is not None:
                os.environ["DASK_SCHEDULER_ADDRESS"] = env
    assert issubclass(EngineError, PolgenError)


# -- progress ------------------------------------------------------------------------------
def test_progress_switches(monkeypatch):
    monkeypatch.setenv("POLGEN_PROGRESS", "0")
    assert progress_enabled(True) is False
    assert progress_enabled(None) is False
    monkeypatch.setenv("POLGEN_PROGRESS", "1")
    assert progress_enabled(None) is True
    assert progress_enabled(False) is False
    monkeypatch.delenv("POLGEN_PROGRESS")
    assert progress_enabled(True) is True
    assert progress_enabled(False) is False
    # under pytest stderr is captured, not a terminal: off by default
    assert progress_enabled(None) is False
    assert progress_interval() == 30.0
    monkeypatch.setenv("POLGEN_PROGRESS_INTERVAL", "2.5")
    assert progress_interval() == 2.5
    monkeypatch.setenv("POLGEN_PROGRESS_INTERVAL", "soon")
    assert progress_interval() == 30.0


def test_progress_reported_only_when_enabled(monkeypatch, caplog):
    # under pytest stderr is not a terminal and logging is configured (pytest's capture handler):
    # progress=True reports progress lines to the polgen.progress logger, never a bar
    monkeypatch.delenv("POLGEN_PROGRESS", raising=False)
    monkeypatch.setenv("POLGEN_PROGRESS_INTERVAL", "0")
    with caplog.at_level(logging.INFO, logger="polgen.progress"):
        list(run_tasks(square_after_jitter, range(3), progress=True, description="squaring"))
    lines = [r.getMessage() for r in caplog.records if r.name == "polgen.progress"]
    assert lines[0] == "squaring: started, 3 to do"
    assert lines[-1].startswith("squaring: done 3/3 (100.0%)") and "elapsed" in lines[-1]
    assert any("ETA" in ln for ln in lines[1:-1])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="polgen.progress"):
        list(run_tasks(square_after_jitter, range(3), progress=False, description="quiet"))
        monkeypatch.setenv("POLGEN_PROGRESS", "0")
        list(run_tasks(square_after_jitter, range(3), progress=True, description="silenced"))
    assert not [r for r in caplog.records if r.name == "polgen.progress"]
    with progress_bar("x", None, False) as bar:  # a disabled bar is a harmless no-op
        bar.advance()
        bar.set_total(3)


def test_progress_modes(monkeypatch):
    monkeypatch.delenv("POLGEN_PROGRESS", raising=False)
    assert progress_mode(False) == "off"
    assert progress_mode(None) == "log"  # not a terminal: lines to the logger (silent unless configured)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert progress_mode(None) == "bar" and progress_mode(True) == "bar"
    monkeypatch.setenv("POLGEN_PROGRESS", "0")
    assert progress_mode(True) == "off"


def test_progress_lines_without_a_terminal(tmp_path):
    """A batch job: progress=True with stderr a file and no logging configured prints progress lines
    (rate, ETA) to stderr as it goes; progress=None stays silent (nothing by surprise)."""
    code = textwrap.dedent(
        """
        import time
        from polgen.engine import run_tasks
        def slow(i):
            time.sleep(0.05)
            return i
        list(run_tasks(slow, range(8), progress=True, description="slow job"))
        list(run_tasks(slow, range(2), progress=None, description="unasked"))
        """
    )
    env = {**os.environ, "POLGEN_PROGRESS_INTERVAL": "0.1"}
    env.pop("POLGEN_PROGRESS", None)
    err = tmp_path / "job.err"
    with open(err, "w") as fh:
        subprocess.run([sys.executable, "-c", code], stderr=fh, env=env, check=True, timeout=120)
    lines = err.read_text().splitlines()
    assert lines[0] == "polgen: slow job: started, 8 to do"
    middle = [ln for ln in lines[1:-1] if ln.startswith("polgen: slow job: ")]
    assert middle and all("/8 (" in ln and "/s" in ln and "ETA" in ln for ln in middle)
    assert lines[-1].startswith("polgen: slow job: done 8/8 (100.0%)")
    assert "unasked" not in err.read_text()


def test_format_duration():
    assert format_duration(12.34) == "12.3s"
    assert format_duration(245) == "4m05s"
    assert format_duration(3 * 3600 + 125) == "3h02m"
    assert format_duration(float("nan")) == "?"


def test_import_has_null_handler_only_and_no_dask():
    code = (
        "import logging, sys, polgen, polgen.engine, polgen.io.sink, polgen.sql, polgen.cli\n"
        "h = logging.getLogger('polgen').handlers\n"
        "print(len(h), type(h[0]).__name__, len(logging.getLogger().handlers),\n"
        "      any(m == 'dask' or m.startswith(('dask.', 'distributed')) for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "NullHandler", "0", "False"]


# -- same sink job, same bytes, whatever the executor ---------------------------------------
def test_run_to_sink_identical_on_processes(tmp_path, process_pool):
    specs = plan_batches(1000, row_bytes=24, budget_bytes=24 * 128)
    params = {"job": "engine-test", "n": 1000}
    a = run_to_sink(batch_table, specs, tmp_path / "a", params)
    b = run_to_sink(batch_table, specs, tmp_path / "b", params, executor=process_pool, max_in_flight=3)
    assert [f.name for f in a.files] == [f.name for f in b.files] == [f"part-{i:06d}.parquet" for i in range(8)]
    for fa, fb in zip(a.files, b.files):
        assert fa.read_bytes() == fb.read_bytes()
    df = b.scan().collect()
    assert df["i"].to_list() == list(range(1000))


def test_run_to_sink_failure_names_batch_and_keeps_finished_parts(tmp_path):
    def fn(spec):  # closures are fine in the calling thread
        if spec[0] == 256:
            raise RuntimeError("disk on fire")
        return batch_table(spec)

    specs = plan_batches(500, 8, 8 * 128)
    with pytest.raises(EngineError, match="batch 2 failed: RuntimeError: disk on fire"):
        run_to_sink(fn, specs, tmp_path / "o", {"p": 1})
    sink = run_to_sink(batch_table, specs, tmp_path / "o", {"p": 1}, resume=True)
    assert sink.scan().collect()["i"].to_list() == list(range(500))


# -- batch planning --------------------------------------------------------------------------
def test_plan_batches():
    assert plan_batches(10, 8, 32) == [(0, 4), (4, 8), (8, 10)]
    assert plan_batches(0, 8, 32) == []
    assert plan_batches(5, 8, 1000) == [(0, 5)]
    # min_rows wins over a budget too small for one row; max_rows caps a generous budget
    assert plan_batches(5, 100, 10, min_rows=2) == [(0, 2), (2, 4), (4, 5)]
    assert plan_batches(9, 1, 1e9, max_rows=4) == [(0, 4), (4, 8), (8, 9)]
    assert rows_per_batch(8.0, 8 * 1024) == 1024
    for n, rb, budget, lo, hi in [(1, 1, 1, 1, None), (12345, 40, 4000, 3, 50), (7, 3, 2, 1, 1)]:
        plan = plan_batches(n, rb, budget, lo, hi)
        assert plan[0][0] == 0 and plan[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(plan, plan[1:]))
        sizes = [b - a for a, b in plan]
        assert all(lo <= s <= (hi or n) for s in sizes[:-1]) and 0 < sizes[-1] <= sizes[0]
    for bad in [
        dict(n_rows=-1, row_bytes=1, budget_bytes=1),
        dict(n_rows=1, row_bytes=0, budget_bytes=1),
        dict(n_rows=1, row_bytes=1, budget_bytes=float("nan")),
        dict(n_rows=1.5, row_bytes=1, budget_bytes=1),
        dict(n_rows=1, row_bytes=1, budget_bytes=1, min_rows=5, max_rows=2),
    ]:
        with pytest.raises(InputError):
            plan_batches(**bad)


# -- memory-capped subprocess ----------------------------------------------------------------
def test_memory_capped_subprocess_reports_peak_and_oom():
    pre = "import numpy as np\n"
    probe = memory_capped_subprocess("RESULT = 1", 8 << 30, preamble=pre, timeout=60)
    assert probe.ok and probe.value == 1
    base_vm = probe.baseline_vm
    assert base_vm and probe.baseline_rss and probe.peak_rss >= probe.baseline_rss
    cap = base_vm + (300 << 20)
    fits = memory_capped_subprocess(
        "a = np.ones(100 << 17)\nRESULT = float(a.sum())", cap, preamble=pre, timeout=60
    )  # 100 MiB
    assert fits.ok, fits
    assert fits.value == float(100 << 17)
    assert fits.peak_rss - fits.baseline_rss >= 95 << 20
    assert fits.peak_rss < cap
    too_big = memory_capped_subprocess("a = np.ones(1 << 27)\n", cap, preamble=pre, timeout=60)  # 1 GiB
    assert too_big.out_of_memory, too_big
    failing = memory_capped_subprocess("raise ValueError('bad')", 8 << 30, timeout=60)
    assert failing.status == "error" and "ValueError: bad" in failing.error
    printed = memory_capped_subprocess("print('hi')\nRESULT = {'a': [1, 2]}", 8 << 30, timeout=60)
    assert printed.stdout.strip() == "hi" and printed.value == {"a": [1, 2]}
    with pytest.raises(ValueError):
        memory_capped_subprocess("", 0)
    with pytest.raises(ValueError):
        memory_capped_subprocess("", 1 << 30, headroom_bytes=1 << 20)
    with pytest.raises(ValueError):
        memory_capped_subprocess("")
    rel = memory_capped_subprocess("a = np.ones(1 << 27)\n", headroom_bytes=300 << 20, preamble=pre, timeout=60)
    assert rel.out_of_memory and rel.limit_bytes == rel.baseline_vm + (300 << 20)


def test_memory_capped_subprocess_crash_and_timeout():
    crashed = memory_capped_subprocess("import os\nos._exit(3)", 8 << 30, timeout=60)
    assert crashed.status == "crashed" and crashed.returncode == 3
    slow = memory_capped_subprocess("import time\ntime.sleep(30)", 8 << 30, timeout=1.0)
    assert slow.status == "timeout"


def test_params_json_in_part_metadata(tmp_path):
    from polgen.io.sink import read_metadata

    sink = run_to_sink(batch_table, [(0, 5), (5, 9)], tmp_path / "m", {"alpha": 0.5, "chrom": [1, 2]})
    md = read_metadata(sink.files[1])
    assert json.loads(md["polgen.params"]) == {"alpha": 0.5, "chrom": [1, 2]}
    assert md["polgen.batch"] == "1"


def test_sink_job_memory_stays_flat_under_a_cap():
    """200 MB of output written through run_to_sink under a cap of 64 MB above the baseline; the
    same batches held in memory (collecting run_tasks' results) break that cap.  (An address-space
    cap is loose by the allocators' reserved slack, here tens of MB, hence the large contrast.)"""
    pre = textwrap.dedent("""
        import os, shutil, tempfile, numpy as np, pyarrow as pa
        from polgen.engine import run_tasks, run_to_sink
        def batch(b):
            return pa.table({"x": np.random.default_rng(b).standard_normal(500_000)})  # 4 MB
        out = tempfile.mkdtemp()
        run_to_sink(batch, [0], os.path.join(out, "warm"), {})
    """)
    streamed = (
        "try:\n    sink = run_to_sink(batch, list(range(50)), os.path.join(out, 'big'), {'n': 50})\n"
        "    RESULT = sum(f.stat().st_size for f in sink.files)\nfinally:\n    shutil.rmtree(out)\n"
    )
    hoarded = "try:\n    kept = list(run_tasks(batch, range(50)))\nfinally:\n    shutil.rmtree(out)\n"
    flat = memory_capped_subprocess(streamed, headroom_bytes=64 << 20, preamble=pre, timeout=240)
    assert flat.ok, flat
    assert flat.value > 150 << 20  # really wrote ~190 MB (50 x 4 MB of float64, zstd)
    assert flat.peak_rss - flat.baseline_rss < 64 << 20
    assert flat.limit_bytes == flat.baseline_vm + (64 << 20)
    greedy = memory_capped_subprocess(hoarded, headroom_bytes=64 << 20, preamble=pre, timeout=240)
    assert greedy.out_of_memory, greedy
