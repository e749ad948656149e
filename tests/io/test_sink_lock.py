"""One writing run per output directory: the advisory lock taken by the driver of run_to_sink.

A second run on a directory another run is writing (same process or another one) is refused with
:class:`~polgen.errors.OutputLockedError` naming the directory, without touching the first run's
files; the lock goes away on a normal end, on an exception, and when its holder is SIGKILLed (so
resume works at once); the lock file never shows up among the parts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from polgen.engine import run_to_sink
from polgen.errors import EngineError, OutputError, OutputExistsError, OutputLockedError
from polgen.io.sink import LOCK, MANIFEST, SUCCESS, BatchSink, OutputLock
from run_helpers import manifest_records, part_bytes

ROOT = Path(__file__).resolve().parents[2]
N = 12
PARAMS = {"job": "lock-test", "n": N}

JOB = textwrap.dedent(
    """
    import sys, time
    import numpy as np, polars as pl
    from polgen.engine import run_to_sink

    def batch(b):
        time.sleep(float(sys.argv[3]))
        rng = np.random.default_rng(b)
        return pl.DataFrame({"b": np.full(20, b), "x": rng.standard_normal(20)})

    if __name__ == "__main__":
        out, resume = sys.argv[1], sys.argv[2] == "1"
        run_to_sink(batch, list(range(12)), out, {"job": "lock-test", "n": 12}, resume=resume)
        print("finished", flush=True)
    """
)


def batch(b: int) -> pl.DataFrame:
    """The same batches as the child job, without the sleep."""
    rng = np.random.default_rng(b)
    return pl.DataFrame({"b": np.full(20, b), "x": rng.standard_normal(20)})


def start_job(tmp_path: Path, out: Path, resume: bool = False, sleep: float = 0.25) -> subprocess.Popen:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    env = dict(os.environ, POLGEN_PROGRESS="0", PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, str(script), str(out), "1" if resume else "0", str(sleep)],
        env=env,
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def wait_for_records(proc: subprocess.Popen, out: Path, k: int, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while manifest_records(out) < k:
        assert proc.poll() is None, f"the job ended early: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() - t0 < timeout, "the job wrote no part in time"
        time.sleep(0.01)


def test_concurrent_run_in_another_process_is_refused(tmp_path):
    out = tmp_path / "out"
    proc = start_job(tmp_path, out)
    try:
        wait_for_records(proc, out, 2)
        assert (out / LOCK).exists()
        before = part_bytes(out)
        for kw in ({}, {"resume": True}, {"overwrite": True}):
            with pytest.raises(OutputLockedError, match="another polgen run is writing") as ei:
                run_to_sink(batch, list(range(N)), out, PARAMS, **kw)
            assert ei.value.path == str(out)
            assert str(out) in str(ei.value) and f"pid {proc.pid}" in str(ei.value)
            assert isinstance(ei.value, OutputExistsError)
        # a sink opened directly (outside run_to_sink) respects the lock too, before it cleans
        # temp files, cuts a torn manifest line or clears parts
        for kw in ({"resume": True}, {"overwrite": True}):
            with pytest.raises(OutputLockedError):
                BatchSink(out, PARAMS, **kw)
        # the refused runs changed nothing the first run had written
        now = part_bytes(out)
        assert {k: now[k] for k in before} == before
        assert proc.poll() is None, "the first run must still be going"
    finally:
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "finished" in stdout, stderr[-2000:]
    assert (out / SUCCESS).exists() and not (out / LOCK).exists()
    # after the first run ended the directory is free again: a resume finds everything done
    sink = run_to_sink(batch, list(range(N)), out, PARAMS, resume=True)
    assert len(sink.files) == N and not (out / LOCK).exists()
    assert pl.read_parquet(sink.files)["b"].unique().sort().to_list() == list(range(N))


def test_sigkilled_holder_releases_the_lock_and_resume_works(tmp_path):
    ref = run_to_sink(batch, list(range(N)), tmp_path / "ref", PARAMS)
    out = tmp_path / "out"
    proc = start_job(tmp_path, out, sleep=0.2)
    try:
        wait_for_records(proc, out, 3)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (out / LOCK).exists()  # the killed run could not remove it; the kernel dropped the lock
    assert 3 <= manifest_records(out) < N
    sink = run_to_sink(batch, list(range(N)), out, PARAMS, resume=True)
    assert all(f.name.startswith("part-") and f.suffix == ".parquet" for f in sink.files)
    assert LOCK not in {f.name for f in sink.files}
    assert sink.scan().collect().equals(ref.scan().collect())
    assert part_bytes(out) == part_bytes(tmp_path / "ref")
    assert not (out / LOCK).exists()


def test_second_run_in_the_same_process_is_refused_and_lock_is_released(tmp_path):
    out = tmp_path / "out"
    seen: dict[str, object] = {}

    def nested(b: int) -> pl.DataFrame:
        if b == 1:
            seen["lock_during_run"] = (out / LOCK).exists()
            try:
                run_to_sink(batch, [0], out, PARAMS, overwrite=True)
            except OutputLockedError as exc:
                seen["error"] = exc
        return batch(b)

    sink = run_to_sink(nested, list(range(3)), out, PARAMS)
    assert seen["lock_during_run"] is True
    assert isinstance(seen["error"], OutputLockedError) and seen["error"].path == str(out)
    assert len(sink.files) == 3 and not (out / LOCK).exists()
    # from another thread while a run is going (threads of one process use separate descriptors)
    started, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow(b: int) -> pl.DataFrame:
        started.set()
        release.wait(30)
        return batch(b)

    t = threading.Thread(target=lambda: run_to_sink(slow, [0, 1], tmp_path / "t", PARAMS))
    t.start()
    try:
        assert started.wait(30)
        with pytest.raises(OutputLockedError):
            run_to_sink(batch, [0, 1], tmp_path / "t", PARAMS, resume=True)
    except BaseException as exc:  # noqa: BLE001
        errors.append(exc)
    finally:
        release.set()
        t.join(60)
    assert not errors, errors
    assert not (tmp_path / "t" / LOCK).exists()


def fail_on_two(b: int) -> pl.DataFrame:
    if b == 2:
        raise ValueError("boom")
    return batch(b)


def test_lock_released_after_a_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(EngineError, match="batch 2"):
        run_to_sink(fail_on_two, list(range(N)), out, PARAMS)
    assert not (out / LOCK).exists()
    with OutputLock(out) as lock:  # nobody holds it any more
        assert lock.held
    sink = run_to_sink(batch, list(range(N)), out, PARAMS, resume=True)
    assert len(sink.files) == N and sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST, SUCCESS] + [f"part-{i:06d}.parquet" for i in range(N)]
    )


def test_lock_is_not_kept_alive_by_a_forked_child(tmp_path):
    """A worker forked while the lock is held (a fork-based pool) must not keep it alive after its
    parent dies: here the parent's descriptor is closed the way a SIGKILL closes it (no unlink, no
    unlock) while the forked child is still running."""
    from polgen.io import sink as sink_mod

    out = tmp_path / "out"
    lock = OutputLock(out).acquire()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child just lives a while, holding whatever it inherited
        os.write(w, b"1")  # the at-fork hooks have run by now
        time.sleep(5)
        os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"1"
        os.close(r)
        with pytest.raises(OutputLockedError):
            OutputLock(out).acquire()
        fd, lock._fd = lock._fd, None
        sink_mod._HELD_LOCK_FDS.discard(fd)
        os.close(fd)  # what the kernel does for a killed holder
        assert (out / LOCK).exists()
        again = OutputLock(out).acquire()  # the child is still alive
        assert again.held
        again.release()
        again.release()  # idempotent
        assert not (out / LOCK).exists()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_lock_on_unusable_outputs(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputExistsError, match="not a directory"):
        run_to_sink(batch, [0], tmp_path / "afile", PARAMS)
    with pytest.raises(OutputError, match="cannot create the output directory") as ei:
        run_to_sink(batch, [0], tmp_path / "afile" / "sub", PARAMS)
    assert ei.value.path == str(tmp_path / "afile" / "sub")
    with pytest.raises(OutputError):
        BatchSink(tmp_path / "afile" / "sub", PARAMS)
    assert (tmp_path / "afile").read_text() == "x"
