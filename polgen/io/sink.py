"""Resumable, atomic, batch-by-batch parquet output.

Layout of an output directory::

    out/
      _polgen_manifest.jsonl     line 1: the run's parameters; then one line per completed part
      part-000000.parquet        one file per batch (zstd), written to a temp name then renamed
      part-000001.parquet
      _SUCCESS                   written last by :meth:`BatchSink.finalize`
      .polgen.lock               while a run writes here (see :class:`OutputLock`); removed at its end

A part is recorded in the manifest only after its file was renamed into place, with its row
count, byte size and SHA-256, so a run killed at any instant leaves either a complete recorded
part, an unrecorded (ignored, rewritten) part, or a stray temp file (removed on resume).  The
manifest is append-only; a torn last line from a kill is dropped on resume.  Part files carry the
parameters in their parquet key-value metadata, so each file explains itself.

A run whose parts are named by what they hold (``stlr.fit``: one ``{gene}_betadata.parquet`` per
gene) gives :class:`BatchSink` a :class:`PartNames`: part ``b`` is then the file ``names[b]``,
with the same manifest, verification, resume and lock.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from polgen.errors import InputError, OutputError, OutputExistsError, OutputLockedError, ResumeError

log = logging.getLogger("polgen")

MANIFEST = "_polgen_manifest.jsonl"
SUCCESS = "_SUCCESS"
LOCK = ".polgen.lock"
PART_FMT = "part-{:06d}.parquet"
PART_GLOB = "part-*.parquet"
_PART_KEYS = ("batch", "file", "rows", "bytes", "sha256")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PartInfo:
    """What the driver records about a written part."""

    batch: int
    file: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class PartNames:
    """File names of a run whose parts are named by what they hold, not ``part-NNNNNN.parquet``.

    ``names[b]`` is the file of batch ``b`` (plain, distinct file names); ``pattern`` is a glob
    matching every file of this kind, e.g. ``"*_betadata.parquet"``: ``overwrite`` removes the
    files it matches, and a directory holding such files without a manifest is refused.  On
    resume, parts are matched to batches by file name, so a run may be resumed with another
    selection (another list of genes) of the same parameters: recorded parts of names outside the
    selection are left as they are.
    """

    names: tuple[str, ...]
    pattern: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        if len(set(self.names)) != len(self.names):
            dup = next(n for n in self.names if self.names.count(n) > 1)
            raise InputError(f"two parts of a run share the file name {dup!r}")
        for n in self.names:
            if (
                not n
                or os.sep in n
                or "/" in n
                or n.startswith(".")
                or n in (MANIFEST, SUCCESS, LOCK)
                or not fnmatch.fnmatchcase(n, self.pattern)
            ):
                raise InputError(
                    f"bad part file name {n!r} (a plain name matching {self.pattern!r}, not starting with '.')"
                )


def _jsonable(value: Any) -> Any:
    """Parameters as JSON: numpy scalars/arrays, paths and tuples become plain JSON values."""
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v) for v in value), key=repr)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value != value:
        return "NaN"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    qualname = getattr(value, "__qualname__", None)
    if callable(value) and qualname is not None:  # functions: a stable name, not an address
        return f"{getattr(value, '__module__', '?')}.{qualname}"
    return repr(value)


def params_to_json(params: Mapping[str, Any]) -> str:
    """Canonical JSON of a parameter mapping (sorted keys, no spaces) — equal params, equal text."""
    return json.dumps(_jsonable(params), sort_keys=True, separators=(",", ":"))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_sha256 = sha256_file


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _as_arrow(table: Any) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    if isinstance(table, pa.RecordBatch):
        return pa.Table.from_batches([table])
    to_arrow = getattr(table, "to_arrow", None)
    if to_arrow is not None:  # polars DataFrame
        out = to_arrow()
        return out if isinstance(out, pa.Table) else pa.table(out)
    raise InputError(f"a batch must be a pyarrow or polars table, got {type(table).__name__}")


def _repeats(tbl: pa.Table, field: pa.Field) -> bool:
    """A text column worth dictionary-encoding: some repeats among its first 4,096 values."""
    if pa.types.is_dictionary(field.type):
        return True
    if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
        return False
    head = tbl.column(field.name).slice(0, 4096)
    n = len(head)
    return n == 0 or pc.count_distinct(head).as_py() < 0.9 * n


def _write_atomic(
    path: Path,
    table: Any,
    metadata: Mapping[str, str] | None,
    compression: str | Mapping[str, str],
    statistics: bool | Sequence[str] = True,
) -> tuple[int, int, str]:
    tbl = _as_arrow(table)
    if not path.parent.is_dir():
        raise InputError("the output directory does not exist", path=path.parent)
    if path.is_dir():
        raise OutputExistsError("the output path is a directory", path=path)
    if metadata:
        merged = dict(tbl.schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in metadata.items()})
        tbl = tbl.replace_schema_metadata(merged)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        try:
            # Dictionary-encode text columns only: per-SNP float columns have few repeats, and
            # dictionary-encoding them made writes ~2.5x slower and files ~15% larger.  A text
            # column whose first rows are (nearly) all distinct (SNP ids) is written plain too:
            # its dictionary would be as large as the column (an LFMM part: 32 -> 24 ms, 3% smaller).
            dict_cols = [f.name for f in tbl.schema if _repeats(tbl, f)]
            codec = compression if isinstance(compression, str) else dict(compression)
            stats = statistics if isinstance(statistics, bool) else list(statistics)
            pq.write_table(tbl, tmp, compression=codec, write_statistics=stats, use_dictionary=dict_cols)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            if isinstance(exc, OSError):
                raise
            raise InputError(f"cannot write the table as parquet: {exc}", path=path) from None
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        size = tmp.stat().st_size
        digest = _sha256(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"cannot write the output: {exc.strerror or exc}", path=path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # No directory fsync per file: after a power loss a lost rename shows up as a missing or
    # unverifiable part on resume and is recomputed, so durability costs no correctness here.
    return tbl.num_rows, size, digest


def write_table_atomic(
    path: str | os.PathLike, table: Any, metadata: Mapping[str, str] | None = None, compression: str = "zstd"
) -> tuple[int, int]:
    """Write ``table`` to ``path`` via a temp file and ``os.replace``; returns (rows, bytes).

    A reader never sees a partial file: either the old file (or none) or the complete new one.
    ``table`` is a pyarrow or polars table; ``metadata`` goes into the parquet key-value metadata.
    """
    rows, size, _ = _write_atomic(Path(path), table, metadata, compression)
    return rows, size


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` (a JSON document, a text report) to ``path`` via a temp file and
    ``os.replace``: a reader sees the old file (or none) or the complete new one."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError("the output directory does not exist", path=path.parent)
    if path.is_dir():
        raise OutputExistsError("the output path is a directory", path=path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write the output: {exc.strerror or exc}", path=path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_part(
    out_dir: str | os.PathLike,
    batch: int,
    table: Any,
    params_json: str,
    *,
    name: str | None = None,
    metadata: Mapping[str, str] | None = None,
    compression: str | Mapping[str, str] = "zstd",
    statistics: bool | Sequence[str] = True,
) -> PartInfo:
    """Write batch ``batch`` of a run as its own part file, atomically.  Pure: safe on any worker.

    ``name``: the file name of a named part (:class:`PartNames`; default ``part-NNNNNN.parquet``,
    whose metadata also records the batch number); ``metadata``: more key-value metadata beside
    the run's parameters; ``compression``: a parquet codec, or one per column name (e.g.
    ``"none"`` for columns of near-random floats, which zstd shrinks by ~5% at a cost);
    ``statistics``: write min/max statistics for every column, none, or the named ones.
    """
    out = Path(out_dir)
    meta = dict(metadata or {})
    meta.update({"polgen.params": params_json, "polgen.format": str(FORMAT_VERSION)})
    if name is None:
        name = PART_FMT.format(batch)
        meta["polgen.batch"] = str(batch)
    rows, size, digest = _write_atomic(out / name, table, meta, compression, statistics)
    return PartInfo(batch=batch, file=name, rows=rows, bytes=size, sha256=digest)


def make_output_dir(path: str | os.PathLike) -> Path:
    """Create the output directory ``path`` (and its parents), or raise a typed error naming it."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputExistsError("output path exists and is not a directory", path=p)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output directory: {exc.strerror or exc}", path=p) from None
    return p


# Lock descriptors held by this process; a forked child closes its copies (see _after_fork), so
# a worker forked while a run holds a lock cannot keep that lock alive after the run ends.
_HELD_LOCK_FDS: set[int] = set()
_HELD_LOCK_DIRS: dict[str, int] = {}  # resolved directory -> number of locks this process holds on it


def _after_fork_in_child() -> None:
    for fd in list(_HELD_LOCK_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCK_FDS.clear()
    _HELD_LOCK_DIRS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class OutputLock:
    """An exclusive advisory lock on an output directory: one writing run at a time.

    The driver of a run takes it (``fcntl.flock`` on ``out/.polgen.lock``, non-blocking) before
    it touches the directory and keeps it until the run ends; workers writing parts never need
    it.  A second run on the same directory, in this process or another, gets
    :class:`~polgen.errors.OutputLockedError` naming the directory instead of interleaving its
    parts and manifest records with the first.  The kernel drops the lock when its holder dies
    (SIGKILL included), so a killed run can be resumed at once; a lock file left behind by a
    killed run is simply re-locked.  The lock file is removed when the lock is released.  It is
    an advisory lock: it protects against other polgen runs, on filesystems where ``flock``
    works across the machines involved (local disks; on NFS only from a single host).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.dir = Path(path)
        self.file = self.dir / LOCK
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> OutputLock:
        import fcntl

        if self._fd is not None:
            raise OutputLockedError("this lock is already held", path=self.dir)
        make_output_dir(self.dir)
        for _ in range(100):
            try:
                fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise OutputError(f"cannot create the lock file {LOCK}: {exc.strerror or exc}", path=self.dir) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OutputError(
                        f"cannot lock the output directory: {exc.strerror or exc}", path=self.dir
                    ) from None
                holder = self._holder()
                raise OutputLockedError(
                    "another polgen run is writing this output directory"
                    + (f" ({holder})" if holder else "")
                    + "; wait for it to finish or choose another output",
                    path=self.dir,
                ) from None
            # The holder we waited on may have unlinked the file between our open and our lock:
            # then we locked a file nobody else can see, and must lock the current one instead.
            try:
                same = os.stat(self.file).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover - a lock file replaced 100 times in a row
            raise OutputLockedError("the lock file keeps changing", path=self.dir)
        try:
            import socket

            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        except OSError:  # the lock itself is what matters
            pass
        self._fd = fd
        _HELD_LOCK_FDS.add(fd)
        key = str(self.dir.resolve())
        _HELD_LOCK_DIRS[key] = _HELD_LOCK_DIRS.get(key, 0) + 1
        return self

    def _holder(self) -> str:
        try:
            return self.file.read_text(errors="replace").strip()[:200]
        except OSError:
            return ""

    def release(self) -> None:
        """Remove the lock file and unlock (idempotent)."""
        import fcntl

        fd, self._fd = self._fd, None
        if fd is None:
            return
        _HELD_LOCK_FDS.discard(fd)
        key = str(self.dir.resolve())
        if _HELD_LOCK_DIRS.get(key, 0) > 1:
            _HELD_LOCK_DIRS[key] -= 1
        else:
            _HELD_LOCK_DIRS.pop(key, None)
        try:
            # unlink while still locked: a run that opened the old file then sees it is stale
            self.file.unlink(missing_ok=True)
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)  # also for copies of the descriptor in forked children
        finally:
            os.close(fd)

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:  # pragma: no cover - a lock dropped without release
        if self._fd is not None:
            try:
                self.release()
            except Exception:  # noqa: BLE001
                pass


def check_not_locked(path: str | os.PathLike) -> None:
    """Raise :class:`~polgen.errors.OutputLockedError` if another process (or another lock object
    than this process's own) holds the :class:`OutputLock` of the directory ``path``.

    :class:`BatchSink` calls it before it clears, truncates or cleans anything, so a sink opened
    outside :func:`~polgen.engine.run_to_sink` cannot damage a run in progress either.
    """
    import fcntl

    d = Path(path)
    f = d / LOCK
    if not f.exists() or _HELD_LOCK_DIRS.get(str(d.resolve())):
        return
    try:
        fd = os.open(f, os.O_RDWR | os.O_CLOEXEC)
    except OSError:  # gone meanwhile (released) or unreadable: nothing to respect
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = OutputLock(d)._holder()
                raise OutputLockedError(
                    "another polgen run is writing this output directory" + (f" ({holder})" if holder else ""), path=d
                ) from None
            return
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class BatchSink:
    """A parquet dataset written one batch at a time, resumable after a crash.

    ``params`` are the run's parameters; resuming with different parameters raises
    :class:`~polgen.errors.ResumeError`.  Without ``resume`` an existing manifest raises
    :class:`~polgen.errors.OutputExistsError` unless ``overwrite=True`` (which clears the parts).
    ``parts``: the file names of a run with named parts (:class:`PartNames`); default
    ``part-NNNNNN.parquet``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        params: Mapping[str, Any],
        *,
        resume: bool = False,
        overwrite: bool = False,
        parts: PartNames | None = None,
    ) -> None:
        self.path = Path(path)
        self.params = dict(params)
        self.params_json = params_to_json(self.params)
        self.completed: dict[int, PartInfo] = {}
        self.parts = parts
        self._index = {} if parts is None else {n: b for b, n in enumerate(parts.names)}
        self._glob = PART_GLOB if parts is None else parts.pattern
        manifest = self.path / MANIFEST
        if self.path.exists() and not self.path.is_dir():
            raise OutputExistsError("output path exists and is not a directory", path=self.path)
        check_not_locked(self.path)
        if manifest.exists() and not resume:
            if not overwrite:
                raise OutputExistsError(
                    "output directory holds a previous run; pass resume=True to continue it or "
                    "overwrite=True to replace it",
                    path=self.path,
                )
            self._clear()
        elif self.path.exists() and not manifest.exists() and any(self.path.glob(self._glob)):
            if not overwrite:
                raise OutputExistsError("output directory holds part files but no polgen manifest", path=self.path)
            self._clear()
        make_output_dir(self.path)
        for tmp in self.path.glob(".part-*.tmp-*" if parts is None else f".{parts.pattern}.tmp-*"):
            tmp.unlink(missing_ok=True)
        if manifest.exists():
            self._load(manifest)
        else:
            self._write_header()

    # -- manifest -------------------------------------------------------------------------
    def part_file(self, batch: int) -> str | None:
        """The file name of batch ``batch`` (None: a named run has no such batch)."""
        if self.parts is None:
            return PART_FMT.format(batch)
        return self.parts.names[batch] if 0 <= batch < len(self.parts.names) else None

    def _clear(self) -> None:
        for f in list(self.path.glob(self._glob)) + [self.path / MANIFEST, self.path / SUCCESS]:
            f.unlink(missing_ok=True)

    def _write_header(self) -> None:
        header = {"polgen_manifest": FORMAT_VERSION, "params": json.loads(self.params_json)}
        tmp = self.path / f".{MANIFEST}.tmp"
        with open(tmp, "w") as fh:
            fh.write(json.dumps(header, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path / MANIFEST)
        _fsync_dir(self.path)

    def _load(self, manifest: Path) -> None:
        """Read the manifest, drop a torn last line, check the parameters, verify the parts.

        Only a kill while a line was being appended can leave a bad line, and only as the last
        one; a bad line anywhere else means the manifest was damaged and resuming is refused.
        The last record of a batch wins (a recomputed batch is recorded again).
        """
        raw = manifest.read_bytes()
        lines = raw.split(b"\n")
        good_len = 0
        records: list[dict] = []
        header = None
        torn = False
        last_nonblank = max((k for k, line in enumerate(lines) if line.strip()), default=-1)
        for k, line in enumerate(lines):
            last = k >= last_nonblank
            if not line.strip():
                good_len += len(line) + 1
                continue
            try:
                obj = json.loads(line)
                if header is not None:
                    obj = {key: obj[key] for key in _PART_KEYS}
                    if not isinstance(obj["batch"], int) or not isinstance(obj["file"], str):
                        raise TypeError("bad field types")
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
                if last and header is not None:
                    log.warning("dropping a torn manifest line in %s", manifest)
                    torn = True
                    break
                raise ResumeError(f"manifest line {k + 1} is corrupt ({exc})", path=manifest) from None
            if header is None:
                header = obj
            else:
                records.append(obj)
            good_len += len(line) + 1
        if not isinstance(header, dict) or "params" not in header:
            raise ResumeError("manifest has no parameter header", path=manifest)
        stored = json.dumps(header["params"], sort_keys=True, separators=(",", ":"))
        if stored != self.params_json:
            old, new = header["params"], json.loads(self.params_json)
            if isinstance(old, dict) and isinstance(new, dict):
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            else:
                diff = ["params"]
            raise ResumeError(
                f"cannot resume: parameters differ from the stored run ({', '.join(diff)})", path=self.path
            )
        if torn or not raw.endswith(b"\n"):
            # Cut the torn tail and make sure the next appended record starts on its own line.
            with open(manifest, "r+b") as fh:
                fh.truncate(min(good_len, len(raw)))
                fh.seek(0, os.SEEK_END)
                if fh.tell() and not raw[: min(good_len, len(raw))].endswith(b"\n"):
                    fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        (self.path / SUCCESS).unlink(missing_ok=True)
        latest: dict[int, PartInfo] = {}
        for rec in records:
            info = PartInfo(**rec)
            if self.parts is not None:  # named parts: matched to this run's batches by file name
                b = self._index.get(info.file)
                if b is None:
                    continue  # a part outside this run's selection: left as it is
                info = replace(info, batch=b)
            latest[info.batch] = info
        for batch in sorted(latest):
            info = latest[batch]
            if self._verify(info):
                self.completed[batch] = info
            else:
                log.warning("part %s is missing or corrupt; it will be recomputed", info.file)

    def _verify(self, info: PartInfo) -> bool:
        """A recorded part is good when its size, SHA-256 and parquet row count all match."""
        if info.file != self.part_file(info.batch):  # a record names its own batch's file only
            return False
        f = self.path / info.file
        try:
            if not f.is_file() or f.stat().st_size != info.bytes:
                return False
            if _sha256(f) != info.sha256:
                return False
            return pq.ParquetFile(f).metadata.num_rows == info.rows
        except (OSError, pa.ArrowException):
            return False

    # -- writing --------------------------------------------------------------------------
    def pending(self, batches: Iterable[int]) -> list[int]:
        """The batches of ``batches`` not yet completed."""
        return [b for b in batches if b not in self.completed]

    def is_done(self, batch: int) -> bool:
        return batch in self.completed

    def record(self, info: PartInfo) -> None:
        """Append a written part to the manifest (after its file is in place)."""
        line = json.dumps(asdict(info), sort_keys=True) + "\n"
        with open(self.path / MANIFEST, "a") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.completed[info.batch] = info

    def write(self, batch: int, table: Any) -> PartInfo:
        """Write and record one batch in this process."""
        info = write_part(
            self.path, batch, table, self.params_json, name=None if self.parts is None else self.part_file(batch)
        )
        self.record(info)
        return info

    def finalize(self, n_batches: int | None = None, metadata: Mapping[str, Any] | None = None) -> None:
        """Check every batch is present, drop parts beyond ``n_batches``, write ``_SUCCESS``."""
        if n_batches is not None:
            missing = [b for b in range(n_batches) if b not in self.completed]
            if missing:
                raise ResumeError(
                    f"cannot finalise: {len(missing)} batches missing (first {missing[:5]})", path=self.path
                )
            for b in [b for b in self.completed if b >= n_batches]:
                (self.path / self.completed.pop(b).file).unlink(missing_ok=True)
        # Part files no record vouches for (a batch written but not recorded before a kill, beyond
        # the final batch count) must not be picked up by a glob over the directory.
        recorded = {info.file for info in self.completed.values()}
        # (named parts: only this run's names; files of other selections were recorded by earlier
        # runs of the same parameters)
        candidates = (
            self.path.glob(PART_GLOB)
            if self.parts is None
            else (self.path / n for n in self.parts.names if (self.path / n).exists())
        )
        for f in list(candidates):
            if f.name not in recorded:
                log.warning("removing unrecorded part %s", f)
                f.unlink(missing_ok=True)
        body = {
            "n_batches": len(self.completed),
            "rows": sum(i.rows for i in self.completed.values()),
            "metadata": _jsonable(metadata or {}),
        }
        tmp = self.path / f".{SUCCESS}.tmp"
        tmp.write_text(json.dumps(body, sort_keys=True) + "\n")
        os.replace(tmp, self.path / SUCCESS)

    # -- reading --------------------------------------------------------------------------
    @property
    def files(self) -> list[Path]:
        return [self.path / self.completed[b].file for b in sorted(self.completed)]

    def scan(self):
        """A LazyFrame over the completed parts, in batch order."""
        import polars as pl

        files = [str(f) for f in self.files]
        if not files:
            raise InputError("no completed batches to read", path=self.path)
        return pl.scan_parquet(files)

    @property
    def metadata(self) -> dict:
        """The ``metadata`` given to :meth:`finalize` (empty before it)."""
        f = self.path / SUCCESS
        return json.loads(f.read_text()).get("metadata", {}) if f.exists() else {}


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The key-value metadata of a parquet file (or of a finalised polgen output directory)."""
    p = Path(path)
    if p.is_dir():
        if (p / SUCCESS).exists():
            return json.loads((p / SUCCESS).read_text()).get("metadata", {})
        raise InputError("directory is not a finalised polgen output", path=p)
    md = pq.read_schema(p).metadata or {}
    return {k.decode(): v.decode() for k, v in md.items()}


def remove_tree(path: str | os.PathLike) -> None:
    """Remove an output directory (used by ``overwrite``)."""
    shutil.rmtree(path, ignore_errors=True)
