"""Tell the user why a first call is silent: numba compiling polgen's kernels.

numba fires a ``"numba:compile"`` event only when a kernel is really compiled (a kernel loaded from
the on-disk cache fires none).  :func:`install` registers a listener: when a compilation of a
polgen kernel started from Python (not a callee compiled inside another) is still running after
``delay`` seconds, one INFO line goes to the ``polgen.kernels`` logger, once per process::

    compiling numba kernels (first call, cached afterwards) ...

and each such compilation that took longer than ``delay`` ends with a line naming it::

    compiled gwas_kernel._snp_range in 12.3 s

When no logging handler would show that line (a script or an interactive session that never
configured logging) and stderr is an interactive terminal, the first line goes to stderr as well
(``polgen: compiling numba kernels ...``), so a first call is never a silent wait;
``POLGEN_PROGRESS=0`` silences it.

Listeners registered with :func:`add_listener` (``polgen warmup``'s progress display) hear of every
top-level polgen compilation: ``on_start(name)`` / ``on_end(name, seconds)``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("polgen.kernels")

MESSAGE = "compiling numba kernels (first call, cached afterwards); `polgen warmup` compiles them ahead"

_lock = threading.Lock()
_state: dict[str, Any] = {"installed": False, "said": False, "delay": 1.0}
_listeners: list[tuple[Callable[[str], None], Callable[[str, float], None]]] = []


def _name(event) -> str:
    disp = (event.data or {}).get("dispatcher")
    fn = getattr(disp, "py_func", None)
    if fn is None:
        return ""
    return f"{fn.__module__}.{fn.__qualname__}"


def _heard(logger: logging.Logger) -> bool:
    """True when an INFO record of ``logger`` reaches a handler that is not a NullHandler."""
    if not logger.isEnabledFor(logging.INFO):
        return False
    c: logging.Logger | None = logger
    while c is not None:
        if any(not isinstance(h, logging.NullHandler) and h.level <= logging.INFO for h in c.handlers):
            return True
        if not c.propagate:
            return False
        c = c.parent
    return False


def _on_terminal() -> bool:
    """stderr is an interactive terminal and POLGEN_PROGRESS does not silence polgen."""
    if os.environ.get("POLGEN_PROGRESS", "").strip().lower() in {"0", "false", "no", "off"}:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _say() -> None:
    with _lock:
        if _state["said"]:
            return
        _state["said"] = True
    log.info(MESSAGE)
    if not _heard(log) and _on_terminal():
        # nobody would see the log line: the user waits at a terminal, tell them there
        sys.stderr.write(f"polgen: {MESSAGE}\n")
        sys.stderr.flush()


def _make_listener():
    from numba.core import event as ev

    class _CompileListener(ev.Listener):
        """Tracks the nesting of compilations per thread; acts on the outermost polgen one."""

        def __init__(self) -> None:
            self._local = threading.local()

        def _stack(self) -> list:
            st = getattr(self._local, "stack", None)
            if st is None:
                st = self._local.stack = []
            return st

        def on_start(self, event) -> None:
            st = self._stack()
            name = _name(event)
            top = not st and name.startswith("polgen.")
            timer = None
            if top:
                if not _state["said"]:
                    timer = threading.Timer(_state["delay"], _say)
                    timer.daemon = True
                    timer.start()
                for start, _end in list(_listeners):
                    start(name)
            st.append((top, name, time.perf_counter(), timer))

        def on_end(self, event) -> None:
            st = self._stack()
            if not st:
                return
            top, name, t0, timer = st.pop()
            if timer is not None:
                timer.cancel()
            if top:
                dt = time.perf_counter() - t0
                if dt > _state["delay"]:
                    log.info("compiled %s in %.1f s", name.removeprefix("polgen.kernels."), dt)
                for _start, end in list(_listeners):
                    end(name, dt)

    return _CompileListener()


def install(delay: float = 1.0) -> None:
    """Register the compile listener (idempotent)."""
    with _lock:
        _state["delay"] = float(delay)
        if _state["installed"]:
            return
        _state["installed"] = True
    from numba.core import event as ev

    ev.register("numba:compile", _make_listener())


def add_listener(on_start: Callable[[str], None], on_end: Callable[[str, float], None]) -> Callable[[], None]:
    """Hear of every top-level polgen compilation; returns a function that removes the listener."""
    install(_state["delay"])
    pair = (on_start, on_end)
    _listeners.append(pair)

    def remove() -> None:
        if pair in _listeners:
            _listeners.remove(pair)

    return remove
