"""Rich progress bars that a library may show: on stderr, switchable, never on by surprise.

``progress=None`` shows a bar only when stderr is an interactive terminal; ``True`` forces it on,
``False`` off, and the environment variable ``POLGEN_PROGRESS=0`` silences every bar whatever the
argument says (so CI logs and batch jobs stay clean).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def progress_enabled(progress: bool | None) -> bool:
    """Decide whether a bar is shown for a call that received ``progress``."""
    env = os.environ.get("POLGEN_PROGRESS", "").strip().lower()
    if env in {"0", "false", "no", "off"}:
        return False
    if progress is not None:
        return bool(progress)
    if env in {"1", "true", "yes", "on"}:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


_CONSOLE = None


def stderr_console():
    """The rich console on stderr shared by progress bars and the CLI's log handler, so log lines
    print above a live bar instead of through it.  It looks up ``sys.stderr`` at each write."""
    global _CONSOLE
    if _CONSOLE is None:
        from rich.console import Console

        _CONSOLE = Console(stderr=True)
    return _CONSOLE


class _Bar:
    """The handle a task loop advances; a no-op when bars are off."""

    def __init__(self, progress, task_id) -> None:
        self._progress = progress
        self._task = task_id

    def advance(self, n: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def set_total(self, total: float | None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=total)


@contextmanager
def progress_bar(description: str, total: float | None, progress: bool | None = None) -> Iterator[_Bar]:
    """Context manager yielding a bar with ``advance``; draws on stderr only when enabled."""
    if not progress_enabled(progress):
        yield _Bar(None, None)
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
