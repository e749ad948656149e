"""R-style log files of a Python call: ``munge(..., log=...)`` writes ``<name>_munge.log``.

R GenomicSEM's ``munge``, ``ldsc`` and ``sumstats`` write ``<log.name>_<step>.log`` (by default the
trait names joined by ``_``) with what the step did to each file.  :func:`method_log` gives polgen's
functions the same file: while the ``with`` block runs, every record of the ``polgen`` logger at INFO
and above goes to it, framed by the call's parameters, start and end time and duration; an error is
recorded with its message before it propagates.  The file is written to ``<file>.tmp`` and renamed
when the call ends, so a log file is never half written (the CLI's ``<out>.log``, which records
whole commands, is :class:`polgen.cli.RunLog`).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from polgen.errors import InputError

__all__ = ["default_stem", "log_path", "method_log"]

FORMAT = "%(asctime)s %(levelname)s: %(message)s"


def log_path(log: bool | str | os.PathLike | None, step: str, names: Sequence[str]) -> Path | None:
    """Where ``log=`` asks for the log of ``step``: None (no log) for ``None``/``False``;
    ``True`` -> ``<names joined by _>_<step>.log`` in the working directory (R's default name);
    a path ``P`` -> ``P_<step>.log`` (R's ``log.name``), or ``P`` itself when it already ends in
    ``.log``."""
    if log is None or log is False:
        return None
    if log is True:
        return Path(f"{default_stem(names, step)}_{step}.log")
    if not isinstance(log, (str, os.PathLike)):
        raise InputError(f"log must be True, False, None or a path prefix, got {type(log).__name__}")
    text = os.fspath(log)
    if not text:
        raise InputError("log must not be an empty path")
    path = Path(text) if text.endswith(".log") else Path(f"{text}_{step}.log")
    if not path.parent.is_dir():
        raise InputError(f"the directory of the log file does not exist: {path.parent}", path=str(path))
    return path


def default_stem(names: Sequence[str], step: str) -> str:
    """R's default log name: the trait names joined by ``_`` (first 100 characters when longer
    than 200), without spaces (as polgen names its per-trait files)."""
    stem = "_".join(str(n) for n in names).replace(" ", "") or step
    return stem[:100] if len(stem) > 200 else stem


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("polgen")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "(not installed)"


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return repr(value) if isinstance(value, str) else str(value)


@contextlib.contextmanager
def method_log(path: Path | None, step: str, params: Mapping[str, Any], *, keep_failed: bool = True) -> Iterator[None]:
    """Record the polgen log of the block to ``path`` (nothing when ``path`` is None).

    ``keep_failed=False``: a call that raises leaves no log (for a log written by default beside an
    output that a failed call must leave untouched); the error reaches the caller either way."""
    if path is None:
        yield
        return
    tmp = path.with_name(path.name + ".tmp")
    began = datetime.datetime.now(datetime.UTC)
    t0 = time.perf_counter()
    logger = logging.getLogger("polgen")
    failed = True
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            yield from _record(fh, logger, step, params, began, t0)
        failed = False
    finally:  # complete (also after an error, which it records): into place
        if failed and not keep_failed:
            tmp.unlink(missing_ok=True)
        elif tmp.exists():
            os.replace(tmp, path)


def _record(fh, logger: logging.Logger, step: str, params: Mapping[str, Any], began, t0: float) -> Iterator[None]:
    """The body of :func:`method_log` once its file is open (a generator: the block runs at ``yield``)."""
    fh.write(f"# polgen {_version()}: {step} started at {began:%Y-%m-%d %H:%M:%S} UTC\n")
    fh.write("parameters:\n")
    for key, value in params.items():
        fh.write(f"  {key} = {_value(value)}\n")
    handler = logging.StreamHandler(fh)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S"))
    previous = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # the file gets INFO records whatever the console shows
    logger.addHandler(handler)
    error: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        error = exc
        raise
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        took = time.perf_counter() - t0
        ended = datetime.datetime.now(datetime.UTC)
        if error is not None:
            fh.write(f"error: {type(error).__name__}: {error}\n")
        mins, secs = divmod(took, 60.0)
        fh.write(
            f"{step} {'failed' if error is not None else 'finished'} at {ended:%Y-%m-%d %H:%M:%S} UTC "
            f"after {int(mins)} minutes and {secs:.1f} seconds\n"
        )
        fh.flush()
        os.fsync(fh.fileno())
