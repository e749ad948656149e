"""Progress reporting that a library may show: on stderr, switchable, never on by surprise.

``progress=None`` shows a rich bar when stderr is an interactive terminal; when it is not (a batch
job, a pipe, a file) it reports *progress lines* (done/total, rate, ETA) to the ``polgen.progress``
logger instead, one every ``POLGEN_PROGRESS_INTERVAL`` seconds (default 30) plus a first and a
last line.  A library user sees them only with logging configured; the ``polgen`` command line
configures it, so a cluster job's log shows how far a multi-hour run got.  ``True`` forces progress
on (the bar on a terminal, the lines elsewhere: through logging when it is configured, else straight
to stderr), ``False`` off, and the environment variable ``POLGEN_PROGRESS=0`` silences everything
whatever the argument says.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

PROGRESS_LOGGER = "polgen.progress"
DEFAULT_INTERVAL = 30.0

Mode = Literal["bar", "lines", "log", "off"]


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress_enabled(progress: bool | None) -> bool:
    """Decide whether progress is shown to the user for a call that received ``progress``
    (a bar on a terminal, lines elsewhere); see :func:`progress_mode`."""
    env = os.environ.get("POLGEN_PROGRESS", "").strip().lower()
    if env in {"0", "false", "no", "off"}:
        return False
    if progress is not None:
        return bool(progress)
    if env in {"1", "true", "yes", "on"}:
        return True
    return _stderr_is_terminal()


def _logging_configured(logger: logging.Logger) -> bool:
    """True when a record of ``logger`` reaches a real handler (not only polgen's NullHandler)."""
    c: logging.Logger | None = logger
    while c is not None:
        if any(not isinstance(h, logging.NullHandler) for h in c.handlers):
            return True
        if not c.propagate:
            return False
        c = c.parent
    return False


def progress_mode(progress: bool | None) -> Mode:
    """How a call that received ``progress`` reports it.

    ``"bar"``: a rich bar on the terminal; ``"lines"``: progress lines straight to stderr (asked for
    with ``True``, stderr not a terminal, logging not configured); ``"log"``: progress lines to the
    ``polgen.progress`` logger; ``"off"``: nothing.
    """
    env = os.environ.get("POLGEN_PROGRESS", "").strip().lower()
    if env in {"0", "false", "no", "off"} or progress is False:
        return "off"
    if _stderr_is_terminal() and (progress or env in {"1", "true", "yes", "on"} or progress is None):
        return "bar"
    if progress or env in {"1", "true", "yes", "on"}:
        return "log" if _logging_configured(logging.getLogger(PROGRESS_LOGGER)) else "lines"
    return "log"  # progress=None off a terminal: silent unless logging is configured


def progress_interval() -> float:
    """Seconds between two progress lines (``POLGEN_PROGRESS_INTERVAL``, default 30)."""
    text = os.environ.get("POLGEN_PROGRESS_INTERVAL", "").strip()
    try:
        value = float(text) if text else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL
    return value if math.isfinite(value) and value >= 0 else DEFAULT_INTERVAL


_CONSOLE = None


def stderr_console():
    """The rich console on stderr shared by progress bars and the CLI's log handler, so log lines
    print above a live bar instead of through it.  It looks up ``sys.stderr`` at each write."""
    global _CONSOLE
    if _CONSOLE is None:
        from rich.console import Console

        _CONSOLE = Console(stderr=True)
    return _CONSOLE


def format_duration(seconds: float) -> str:
    """``3h02m``, ``4m05s``, ``12.3s``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def _rate(done: float, seconds: float) -> str:
    if seconds <= 0 or done <= 0:
        return "-"
    r = done / seconds
    return f"{r:.3g}/s" if r >= 1 else f"{seconds / done:.3g}s each"


class _Bar:
    """The handle a task loop advances; a no-op when progress is off."""

    def __init__(self, progress, task_id) -> None:
        self._progress = progress
        self._task = task_id

    def advance(self, n: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def set_total(self, total: float | None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=total)


class _Lines(_Bar):
    """Progress lines: ``description: done/total (pct), rate, elapsed, ETA``, at most one per interval."""

    def __init__(self, description: str, total: float | None, emit: Any, interval: float) -> None:
        super().__init__(None, None)
        self.description = description
        self.total = total
        self.done = 0.0
        self._emit = emit
        self._interval = interval
        self._start = time.monotonic()
        self._last = self._start
        self._emit(f"{description}: started" + (f", {_count(total)} to do" if total else ""))

    def line(self) -> str:
        elapsed = time.monotonic() - self._start
        parts = [f"{self.description}: {_count(self.done)}" + (f"/{_count(self.total)}" if self.total else "")]
        if self.total:
            parts[0] += f" ({100.0 * self.done / self.total:.1f}%)"
        parts.append(_rate(self.done, elapsed))
        parts.append(f"elapsed {format_duration(elapsed)}")
        if self.total and self.done > 0 and self.done < self.total:
            parts.append(f"ETA {format_duration(elapsed * (self.total - self.done) / self.done)}")
        return ", ".join(parts)

    def advance(self, n: float = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self._interval and not (self.total and self.done >= self.total):
            self._last = now
            self._emit(self.line())

    def set_total(self, total: float | None) -> None:
        self.total = total

    def finish(self, ok: bool) -> None:
        self._emit(self.line().replace(": ", ": done " if ok else ": stopped at ", 1))


def _count(x: float | None) -> str:
    if x is None:
        return "?"
    return str(int(x)) if float(x).is_integer() else f"{x:.3g}"


@contextmanager
def progress_bar(description: str, total: float | None, progress: bool | None = None) -> Iterator[_Bar]:
    """Context manager yielding a handle with ``advance`` / ``set_total``: a rich bar on a terminal,
    periodic progress lines elsewhere (see :func:`progress_mode`), or a no-op."""
    mode = progress_mode(progress)
    if mode == "off":
        yield _Bar(None, None)
        return
    if mode in ("lines", "log"):
        if mode == "log":
            logger = logging.getLogger(PROGRESS_LOGGER)
            emit: Any = lambda msg: logger.info("%s", msg)
        else:
            emit = lambda msg: print(f"polgen: {msg}", file=sys.stderr, flush=True)
        lines = _Lines(description, total, emit, progress_interval())
        ok = False
        try:
            yield lines
            ok = True
        finally:
            lines.finish(ok)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = stderr_console()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task_id = bar.add_task(description, total=total)
        yield _Bar(bar, task_id)
