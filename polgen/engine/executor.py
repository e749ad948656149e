"""The batch engine.

A job is a module-level function ``fn(task) -> result`` and a sequence of picklable tasks.  The
engine runs the tasks on any :class:`concurrent.futures.Executor` (none: in the calling thread;
a ``ProcessPoolExecutor``; Dask's ``client.get_executor()``) and yields results **in task order**
while keeping at most ``max_in_flight`` tasks submitted, so memory stays bounded whatever the
number of tasks.  :func:`run_to_sink` is the resumable form: each task writes its own parquet
part (a pure function of the task), and the driver records only the part descriptions.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, TypeVar

from polgen.engine.progress import progress_bar
from polgen.errors import EngineError, MissingExtraError, PolgenError

log = logging.getLogger("polgen")

T = TypeVar("T")
R = TypeVar("R")

_NAMED = ("local", "threads", "processes", "dask")
_DASK_PREFIXES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")


class _DaskClientExecutor:
    """Keeps a Dask client alive for as long as the executor built from it is used."""

    def __init__(self, client) -> None:
        self.client = client
        self.executor = client.get_executor()

    def submit(self, fn, *args, **kwargs):
        return self.executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        try:
            self.executor.shutdown(wait=wait)
        finally:
            self.client.close()


def _check_executor(executor: Any) -> None:
    """Reject a bad ``executor`` argument at call time (before any work starts)."""
    if executor is None:
        return
    if isinstance(executor, str):
        if executor in _NAMED or executor.startswith(_DASK_PREFIXES):
            return
        raise EngineError(
            f"unknown executor {executor!r}: use None, 'threads', 'processes', "
            "'dask', a scheduler address, or a concurrent.futures.Executor"
        )
    if isinstance(executor, type):
        raise EngineError(
            f"executor must be an instance, not the class {executor.__name__}; e.g. {executor.__name__}(max_workers=2)"
        )
    if not callable(getattr(executor, "submit", None)):
        raise EngineError(f"executor {executor!r} has no submit method")


check_executor = _check_executor  # public: front ends validate ``executor`` before long work


def _resolve(executor: Executor | str | None) -> tuple[Any, bool]:
    """The executor to submit to and whether the engine created it (and so must shut it down)."""
    _check_executor(executor)
    if executor is None or executor == "local":
        return None, False
    if isinstance(executor, str):
        if executor == "threads":
            from concurrent.futures import ThreadPoolExecutor

            return ThreadPoolExecutor(max_workers=os.cpu_count() or 1), True
        if executor == "processes":
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: forking after Polars/OpenMP/numba thread pools have started can
            # deadlock the children.
            return ProcessPoolExecutor(
                max_workers=os.cpu_count() or 1, mp_context=multiprocessing.get_context("spawn")
            ), True
        try:
            from distributed import Client
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise MissingExtraError(
                "executor='dask' needs the dask extra: pip install 'polgen[dask]'", extra="dask"
            ) from exc
        address = executor if executor != "dask" else os.environ.get("DASK_SCHEDULER_ADDRESS")
        if not address:
            raise EngineError(
                "executor='dask' needs a scheduler address: pass 'tcp://host:port' or set DASK_SCHEDULER_ADDRESS"
            )
        try:
            client = Client(address)
        except Exception as exc:  # noqa: BLE001 - connection failures of every kind
            raise EngineError(f"cannot connect to the Dask scheduler at {address}: {exc}") from exc
        return _DaskClientExecutor(client), True
    return executor, False


def resolve_executor(executor: Executor | str | None) -> Any:
    """Turn the user's ``executor`` argument into something with ``submit``.

    ``None`` or ``"local"`` runs in the calling thread (numba kernels parallelise inside);
    ``"threads"`` / ``"processes"`` build a pool of ``os.cpu_count()`` workers; ``"dask"`` connects
    to ``$DASK_SCHEDULER_ADDRESS`` (or fails clearly); a string starting with ``tcp://`` is a Dask
    scheduler address; anything with ``submit`` is used as is.  A pool built here belongs to the
    caller (shut it down when done); :func:`run_tasks` shuts down the pools it builds itself.
    """
    return _resolve(executor)[0]


def _is_dask(executor: Any) -> bool:
    if isinstance(executor, _DaskClientExecutor):
        return True
    return type(executor).__module__.split(".")[0] == "distributed"


def _dask_client(executor: Any):
    if isinstance(executor, _DaskClientExecutor):
        return executor.client
    return getattr(executor, "_client", None)


def _default_in_flight(executor: Any) -> int:
    """Twice the number of workers (so none idles while the driver collects a result)."""
    workers = getattr(executor, "_max_workers", None)
    if workers is None and _is_dask(executor):
        client = _dask_client(executor)
        try:
            workers = sum(client.nthreads().values()) if client is not None else None
        except Exception:  # noqa: BLE001 - scheduler may be unreachable; fall back
            workers = None
    return max(2, 2 * int(workers or os.cpu_count() or 1))


def _submit(executor: Any, fn: Callable, task: Any) -> Future:
    if _is_dask(executor):
        # Dask deduplicates "pure" calls by a hash of the arguments; a batch task writes files,
        # so it must run every time it is submitted.
        return executor.submit(fn, task, pure=False)
    return executor.submit(fn, task)


def _label(index: int, task: Any) -> str:
    label = getattr(task, "label", None)
    return str(label) if label else f"batch {index}"


def _wrap_failure(exc: BaseException, index: int, task: Any) -> BaseException:
    """PolgenErrors pass through unchanged; anything else becomes an EngineError naming the batch."""
    if isinstance(exc, PolgenError):
        return exc
    label = _label(index, task)
    return EngineError(f"{label} failed: {type(exc).__name__}: {exc}", batch=label)


def run_tasks(
    fn: Callable[[T], R],
    tasks: Sequence[T] | Iterable[T],
    *,
    executor: Executor | str | None = None,
    max_in_flight: int | None = None,
    progress: bool | None = None,
    description: str = "polgen",
    total: int | None = None,
) -> Iterator[R]:
    """Run ``fn`` over ``tasks`` and yield the results in task order.

    At most ``max_in_flight`` tasks are submitted at once (default: twice the workers), which is
    the memory budget of the run: each in-flight task holds one batch.  A task that raises a
    :class:`~polgen.errors.PolgenError` re-raises it unchanged; any other exception becomes an
    :class:`~polgen.errors.EngineError` naming the batch (the task's ``label`` attribute if it has
    one, else its index).  ``tasks`` may be a lazy iterable: it is consumed only as slots free up.
    The arguments are checked now; the work starts when the returned iterator is first advanced.
    """
    _check_executor(executor)
    if max_in_flight is not None:
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, numbers.Integral) or max_in_flight < 1:
            raise EngineError(f"max_in_flight must be a positive integer, got {max_in_flight!r}")
        max_in_flight = int(max_in_flight)
    if total is None and hasattr(tasks, "__len__"):
        total = len(tasks)  # type: ignore[arg-type]
    return _iterate(fn, tasks, executor, max_in_flight, progress, description, total)


def _iterate(fn, tasks, executor, max_in_flight, progress, description, total) -> Iterator[Any]:
    ex, owned = _resolve(executor)
    with progress_bar(description, total, progress) as bar:
        if ex is None:
            for i, task in enumerate(tasks):
                try:
                    result = fn(task)
                except Exception as exc:  # noqa: BLE001 - rewrapped with the batch named
                    raise _wrap_failure(exc, i, task) from exc
                bar.advance()
                yield result
            return
        limit = max_in_flight or _default_in_flight(ex)
        pending: deque[tuple[int, Any, Future]] = deque()
        it = iter(enumerate(tasks))
        exhausted = False
        clean = False
        try:
            while True:
                while not exhausted and len(pending) < limit:
                    try:
                        i, task = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    pending.append((i, task, _submit(ex, fn, task)))
                if not pending:
                    clean = True
                    return
                i, task, fut = pending.popleft()
                try:
                    result = fut.result()
                except Exception as exc:  # noqa: BLE001
                    raise _wrap_failure(exc, i, task) from exc
                bar.advance()
                yield result
        finally:
            for _, _, fut in pending:
                fut.cancel()
            if owned:
                try:
                    ex.shutdown(wait=clean, cancel_futures=True)
                except TypeError:  # executors without cancel_futures
                    ex.shutdown(wait=clean)


@dataclass(frozen=True)
class _SinkTask:
    """A task for :func:`run_to_sink`: compute a batch and write it as a part file."""

    fn: Callable[[Any], Any]
    task: Any
    batch: int
    out_dir: str
    params_json: str
    label: str | None = None


def _run_sink_task(st: _SinkTask):
    from polgen.io.sink import write_part

    table = st.fn(st.task)
    return write_part(st.out_dir, st.batch, table, st.params_json)


def run_to_sink(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    out: str | os.PathLike,
    params: Mapping[str, Any],
    *,
    resume: bool = False,
    overwrite: bool = False,
    executor: Executor | str | None = None,
    max_in_flight: int | None = None,
    progress: bool | None = None,
    description: str = "polgen",
    metadata: Mapping[str, Any] | None = None,
    finalize: bool = True,
):
    """Run ``fn(task) -> table`` for every task and write task ``i`` as part ``i`` of ``out``.

    Each worker writes its own part atomically (temp name, then rename) and returns a small
    :class:`~polgen.io.sink.PartInfo`; the driver appends it to the manifest.  With
    ``resume=True`` tasks whose part is already recorded (and verified: size, rows, SHA-256) are
    skipped, so a killed run finishes where it stopped and the final files are byte-identical to
    an uninterrupted run.  While it runs, the calling process holds an exclusive lock on ``out``
    (:class:`~polgen.io.sink.OutputLock`): a second run on the same directory, in this or another
    process, raises :class:`~polgen.errors.OutputLockedError` at once.  ``fn`` and the tasks
    must be picklable for process / Dask executors (a module-level function; small task specs
    such as paths, ranges and parameters).
    Returns the :class:`~polgen.io.sink.BatchSink`, finalised unless ``finalize=False``.
    """
    from polgen.io.sink import BatchSink, OutputLock

    _check_executor(executor)
    tasks = list(tasks)
    # One writing run per directory: the lock is taken before the sink reads, clears or appends
    # to anything in ``out`` and released when this returns or raises (the kernel releases it
    # if the process dies).  Workers only write their own part files and never touch it.
    with OutputLock(out):
        sink = BatchSink(out, params, resume=resume, overwrite=overwrite)
        todo = sink.pending(range(len(tasks)))
        if len(todo) < len(tasks):
            log.info("resuming %s: %d of %d batches already done", out, len(tasks) - len(todo), len(tasks))
        work = [
            _SinkTask(
                fn, tasks[b], b, str(sink.path), sink.params_json, getattr(tasks[b], "label", None) or f"batch {b}"
            )
            for b in todo
        ]
        for info in run_tasks(
            _run_sink_task,
            work,
            executor=executor,
            max_in_flight=max_in_flight,
            progress=progress,
            description=description,
        ):
            sink.record(info)
        if finalize:
            sink.finalize(n_batches=len(tasks), metadata=metadata)
    return sink
