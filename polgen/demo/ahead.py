"""Compile ahead in another process: ``polgen demo`` starts ``python -m polgen.warmup --only ...``
(the warm-up steps of the calls it will make, in its order) while it generates and prepares its
data, and each call waits for its step, then loads its kernels from numba's on-disk cache."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

__all__ = ["Background"]

log = logging.getLogger("polgen.warmup")

SHOW_AFTER = 1.0  # a wait longer than this is logged


class Background:
    """``polgen warmup`` of some steps in a child process, started ahead of the calls that need
    them (``polgen demo``: while it generates and prepares its data).  The child writes numba's
    on-disk cache; a call that :meth:`wait` s for its step first then loads its kernels from it
    instead of compiling them again.  The child's output (data warnings of tiny synthetic inputs)
    is discarded; a failure only means the caller compiles for itself."""

    def __init__(self, steps: Sequence[str], methods: Sequence[str]) -> None:
        self.done: dict[str, threading.Event] = {}
        for name in steps:
            self.done.setdefault(name, threading.Event())
        cmd = [sys.executable, "-m", "polgen.warmup", "--methods", *methods, "--only", *steps]
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True
        )
        self._reader = threading.Thread(target=self._read, name="polgen-warmup-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            name = line.strip().removeprefix("done ")
            if name in self.done:
                self.done[name].set()
        self._proc.wait()
        for ev in self.done.values():  # the child ended (or failed): nobody waits any longer
            ev.set()

    def wait(self, step: str, timeout: float | None = None) -> bool:
        """Block until ``step`` has compiled in the child (or the child ended); True when it did."""
        ev = self.done.get(step)
        if ev is None:
            return False
        t = time.perf_counter()
        ok = ev.wait(timeout)
        if time.perf_counter() - t > SHOW_AFTER:
            log.info("waited %.1f s for the kernels of %s (compiling ahead)", time.perf_counter() - t, step)
        return ok

    def close(self) -> None:
        """Stop the child if it is still running."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except Exception:  # noqa: BLE001 - a child that will not stop is killed
                self._proc.kill()
        self._reader.join(timeout=5)
