"""Test helpers (not part of the package): run a snippet in a fresh interpreter under a memory cap.

``memory_capped_subprocess(code, limit_bytes)`` starts ``python``, runs an optional ``preamble``
(imports, numba warm-up: address space that is not the data), then caps the address space with
``resource.setrlimit(RLIMIT_AS)`` and runs ``code``.  It reports whether the code finished, ran
out of memory or failed, and the peak resident set size.  A snippet can hand a JSON-able value
back by assigning it to ``RESULT``.

An address-space cap counts reservations, not only touched pages: glibc reserves 64 MiB of
address space per thread arena, so the child runs with ``MALLOC_ARENA_MAX=2`` unless told
otherwise, and caps should leave room for the interpreter and imported libraries (measure the
``baseline_vm`` reported after the preamble).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "COMPILE_RECORDER",
    "MemoryCapResult",
    "memory_capped_subprocess",
    "kill_after_parts",
    "manifest_records",
    "part_bytes",
]

#: Python source for a fresh interpreter (``python -c COMPILE_RECORDER + code``): from then on, the
#: list ``compiled`` names each polgen kernel numba compiles (a kernel loaded from the cache is not
#: compiled)
COMPILE_RECORDER = """
from numba.core import event as _ev
compiled = []
class _Recorder(_ev.Listener):
    def on_start(self, e):
        f = getattr(e.data.get("dispatcher"), "py_func", None)
        if f is not None and f.__module__.startswith("polgen."):
            compiled.append(f.__module__ + "." + f.__qualname__)
    def on_end(self, e):
        pass
_ev.register("numba:compile", _Recorder())
"""

_WRAPPER = r"""
import json, resource, sys, traceback

def _status(key):
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None

_result_path, _limit, _pre_path, _code_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
_out = {"status": "ok", "error": None, "value": None}
_g = {"__name__": "__main__"}
try:
    exec(compile(open(_pre_path).read(), "<preamble>", "exec"), _g)
except BaseException:
    _out["status"] = "preamble_error"
    _out["error"] = traceback.format_exc()
else:
    _out["baseline_rss"] = _status("VmRSS")
    _out["baseline_vm"] = _status("VmSize")
    if _limit < 0:  # a headroom above the address space used after the preamble
        _limit = (_out["baseline_vm"] or 0) - _limit
    _out["limit"] = _limit
    _soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_limit, _hard))
    try:
        exec(compile(open(_code_path).read(), "<capped>", "exec"), _g)
    except MemoryError:
        _out["status"] = "memory_error"
        _out["error"] = "MemoryError"
    except BaseException as _exc:
        _out["status"] = "error"
        _out["error"] = f"{type(_exc).__name__}: {_exc}"
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (_soft, _hard))
    if _out["status"] == "error" and "memory" in (_out["error"] or "").lower():
        _out["status"] = "memory_error"
    _out["value"] = _g.get("RESULT")
# VmHWM, not ru_maxrss: ru_maxrss survives execve, so a child forked from a big parent (a pytest
# process) would report the parent's peak.
_out["peak_rss"] = _status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
_out["peak_vm"] = _status("VmPeak")
try:
    _text = json.dumps(_out)
except (TypeError, ValueError):
    _out["value"] = repr(_out["value"])
    _text = json.dumps(_out)
with open(_result_path, "w") as fh:
    fh.write(_text)
"""


@dataclass
class MemoryCapResult:
    """What happened to a snippet run under an address-space cap.

    ``status`` is ``"ok"``, ``"memory_error"`` (MemoryError, or an exception mentioning memory /
    allocation), ``"error"`` (any other exception), ``"preamble_error"``, ``"crashed"`` (the
    process died without reporting, e.g. an abort on a failed allocation) or ``"timeout"``.
    """

    status: str
    returncode: int | None
    limit_bytes: int
    peak_rss: int | None = None
    baseline_rss: int | None = None
    baseline_vm: int | None = None
    peak_vm: int | None = None
    value: Any = None
    error: str | None = None
    stdout: str = ""
    stderr: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def out_of_memory(self) -> bool:
        return self.status == "memory_error"


def memory_capped_subprocess(
    code: str,
    limit_bytes: int | None = None,
    *,
    headroom_bytes: int | None = None,
    preamble: str = "",
    timeout: float = 300.0,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    python: str | None = None,
) -> MemoryCapResult:
    """Run ``code`` in a new Python process whose address space is capped at ``limit_bytes``.

    ``preamble`` runs first, uncapped (imports, JIT warm-up); ``code`` runs in the same globals.
    Instead of an absolute ``limit_bytes``, ``headroom_bytes`` caps the address space at what the
    process uses after the preamble plus this headroom (the cap used is in ``limit_bytes`` of the
    result).
    Returns a :class:`MemoryCapResult` with the outcome, the peak RSS of the whole process, the
    RSS / virtual size right before the cap, stdout/stderr and the value the snippet stored in
    ``RESULT``.  ``env`` entries are added to the current environment.
    """
    if (limit_bytes is None) == (headroom_bytes is None):
        raise ValueError("give exactly one of limit_bytes and headroom_bytes")
    cap = limit_bytes if headroom_bytes is None else headroom_bytes
    if isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0:
        raise ValueError(f"the memory cap must be a positive integer, got {cap!r}")
    arg = cap if headroom_bytes is None else -cap
    child_env = dict(os.environ)
    child_env.setdefault("MALLOC_ARENA_MAX", "2")
    if env:
        child_env.update({str(k): str(v) for k, v in env.items()})
    with tempfile.TemporaryDirectory(prefix="polgen-memcap-") as tmp:
        t = Path(tmp)
        (t / "wrapper.py").write_text(_WRAPPER)
        (t / "preamble.py").write_text(preamble)
        (t / "code.py").write_text(code)
        result_path = t / "result.json"
        argv = [
            python or sys.executable,
            str(t / "wrapper.py"),
            str(result_path),
            str(arg),
            str(t / "preamble.py"),
            str(t / "code.py"),
        ]
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, env=child_env, cwd=cwd, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            return MemoryCapResult(
                "timeout",
                None,
                limit_bytes or 0,
                stdout=_text(exc.stdout),
                stderr=_text(exc.stderr),
                error=f"timed out after {timeout} s",
            )
        if not result_path.exists():
            return MemoryCapResult(
                "crashed",
                proc.returncode,
                limit_bytes or 0,
                stdout=proc.stdout,
                stderr=proc.stderr,
                error=f"exit code {proc.returncode}",
            )
        out = json.loads(result_path.read_text())
    return MemoryCapResult(
        status=out["status"],
        returncode=proc.returncode,
        limit_bytes=out.get("limit") or limit_bytes or 0,
        peak_rss=out.get("peak_rss"),
        baseline_rss=out.get("baseline_rss"),
        baseline_vm=out.get("baseline_vm"),
        peak_vm=out.get("peak_vm"),
        value=out.get("value"),
        error=out.get("error"),
        stdout=proc.stdout,
        stderr=proc.stderr,
    )


def _text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b if isinstance(b, str) else b.decode(errors="replace")


# -- kill-and-resume tests ---------------------------------------------------------------------
def manifest_records(out: str | os.PathLike) -> int:
    """How many part records the manifest of the sink directory ``out`` holds (0 if none yet)."""
    from polgen.io.sink import MANIFEST

    m = Path(out) / MANIFEST
    try:
        raw = m.read_bytes()
    except FileNotFoundError:
        return 0
    return max(0, raw.count(b"\n") - 1)


def part_bytes(out: str | os.PathLike) -> dict[str, bytes]:
    """``{file name: bytes}`` of every ``part-*.parquet`` in ``out``: compare two runs with ``==``."""
    return {f.name: f.read_bytes() for f in sorted(Path(out).glob("part-*.parquet"))}


def kill_after_parts(
    argv: list[str],
    out: str | os.PathLike,
    n_parts: int,
    *,
    delay: float = 0.0,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> bool:
    """Start ``argv`` (a job writing a sink to ``out``), SIGKILL it once ``n_parts`` parts are
    recorded (plus ``delay`` seconds, to land inside a batch), and wait for it.

    Returns True when the process was killed, False when it finished (or died) first.  Raises
    ``TimeoutError`` if the parts never appear within ``timeout`` seconds (the process is killed).
    """
    child_env = dict(os.environ)
    child_env.setdefault("POLGEN_PROGRESS", "0")
    if env:
        child_env.update({str(k): str(v) for k, v in env.items()})
    proc = subprocess.Popen(
        argv, env=child_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + timeout
    try:
        while manifest_records(out) < n_parts and proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n_parts} parts did not appear in {out} within {timeout} s")
            time.sleep(0.005)
        if delay > 0 and proc.poll() is None:
            time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def fresh_polgen_kernel():
    """A new numba dispatcher whose function claims to live in ``polgen.kernels`` (the compile notice
    acts on polgen kernels only): its first call compiles."""
    import numba

    def polgen_fake_kernel(x):
        s = 0.0
        for i in range(x.shape[0]):
            s += x[i] * x[i]
        return s

    polgen_fake_kernel.__module__ = "polgen.kernels._fake"
    return numba.njit(polgen_fake_kernel)
