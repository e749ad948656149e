"""LFMM2 test output to a resumable parquet run folder (see :func:`polgen.lfmm.test`)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from polgen.engine.executor import run_tasks, run_to_sink
from polgen.errors import OutputError, ResumeError
from polgen.io.sink import MANIFEST, SUCCESS, BatchSink, OutputLock, params_to_json, write_part
from polgen.lfmm import calibrate as cal
from polgen.lfmm.fused import RangeTask, _calibration_dict, _colnames, _frame, _open, _source_of, compute_range
from polgen.lfmm.genotypes import default_threads, source_spec, split_range
from polgen.lfmm.result import LfmmTestResult

#: with calibration, the statistics the calibration constants need (T per variable, F with
#: ``full``: 8 B per SNP each) are held in memory up to this many bytes (8M SNPs for one variable)
#: while the other statistics wait in an unlinked scratch file, so that the final table is written
#: once; a bigger run writes uncalibrated parts first and reads them back
HOLD_STATS_BYTES = 64 << 20

_RAW = "_uncalibrated"
_PROJ = "_lfmm_projection.npz"


@dataclass(frozen=True)
class _RawTask:
    rt: RangeTask
    full: bool
    calibrate: str | None
    label: str | None = None


def _raw_part(task: _RawTask) -> pl.DataFrame:
    """Worker, first pass.  Without calibration: the final table of the range.  With it: only
    the statistics (``T0..``, ``B0..``, ``F``, ...) — the second pass adds ids, p-values and
    the calibrated columns, so the wide table is written once."""
    arrs = compute_range(task.rt)
    src, proj = _open(task.rt)
    if task.calibrate is None:
        return _frame(
            src, task.rt.start, task.rt.stop, arrs, proj.names, proj.df, proj.df_full, task.full, None, None, None
        )
    raw = {"A1FREQ": arrs["A1FREQ"], "N_MISS": arrs["N_MISS"], "MONO": arrs["MONO"]}
    for j in range(proj.d):
        raw[f"T{j}"] = arrs["T"][j]
        raw[f"B{j}"] = arrs["BETA"][j]
        raw[f"S{j}"] = arrs["SE"][j]
    if task.full:
        raw["F"] = arrs["F"]
        raw["ADJ_R2"] = arrs["ADJ_R2"]
    return pl.DataFrame(raw)


@dataclass(frozen=True)
class _CalTask:
    raw_file: str
    source: Any
    start: int
    stop: int
    block_snps: int
    names: tuple[str, ...]
    df: float
    df_full: float
    full: bool
    calibrate: str
    consts: tuple  # per-variable dicts as tuples of items
    fconst: float | None
    meta: str
    label: str | None = None


def _cal_part(task: _CalTask):
    """Worker, second pass: the final, calibrated table of one range from its raw part."""
    raw = pq.read_table(task.raw_file)
    d = len(task.names)
    col = {name: raw.column(name).to_numpy() for name in raw.column_names}
    del raw
    arrs = {
        "A1FREQ": col["A1FREQ"],
        "N_MISS": col["N_MISS"],
        "MONO": col["MONO"],
        "T": np.vstack([col[f"T{j}"] for j in range(d)]),
        "BETA": np.vstack([col[f"B{j}"] for j in range(d)]),
        "SE": np.vstack([col[f"S{j}"] for j in range(d)]),
    }
    if task.full:
        arrs["F"] = col["F"]
        arrs["ADJ_R2"] = col["ADJ_R2"]
    del col
    src = _source_of(task.source, task.block_snps)
    consts = [dict(c) for c in task.consts]
    out = _frame(
        src,
        task.start,
        task.stop,
        arrs,
        list(task.names),
        task.df,
        task.df_full,
        task.full,
        task.calibrate,
        consts,
        task.fconst,
    ).to_arrow()
    md = dict(out.schema.metadata or {})
    md[b"polgen.lfmm.calibration"] = task.meta.encode()
    return out.replace_schema_metadata(md)


def stats_bytes_per_snp(d: int, full: bool) -> int:
    """Bytes per SNP :func:`_one_pass` holds in memory until the calibration is known: T per
    variable (and F with ``full``).  The other statistics wait in its scratch file."""
    return 8 * (d + (1 if full else 0))


def _test_to_disk(
    src, proj, ranges, bsnps, full, calibrate, executor, progress, names, out: Path, params, resume, overwrite
):
    """Stream the test to the run folder ``out``.  With calibration, when the statistics of all SNPs
    need at most :data:`HOLD_STATS_BYTES`, they are held in memory and the final table is written
    once (:func:`_one_pass`); otherwise they spill to uncalibrated parts first (:func:`_two_pass`),
    so memory stays flat in the number of SNPs."""
    n_snps = ranges[-1][1] - ranges[0][0]
    if calibrate and n_snps * stats_bytes_per_snp(proj.d, full) <= HOLD_STATS_BYTES:
        return _one_pass(
            src, proj, ranges, bsnps, full, calibrate, executor, progress, names, out, params, resume, overwrite
        )
    return _two_pass(
        src, proj, ranges, bsnps, full, calibrate, executor, progress, names, out, params, resume, overwrite
    )


def _range_stats(task: RangeTask) -> dict[str, np.ndarray]:
    """Worker of :func:`_one_pass`: the statistics of one range, without the unused OLS betas
    and without F / ADJ_R2 unless ``full``, with the (uncalibrated) p-values of T, computed on
    the range's threads (as its projections): the final parts, built while the driver writes,
    then only add the calibrated ones."""
    arrs = compute_range(task)
    arrs.pop("OLS", None)
    if not task.full:
        arrs.pop("F", None)
        arrs.pop("ADJ_R2", None)
    _, proj = _open(task)
    t = arrs["T"]
    p = np.empty_like(t)

    def pvalues(a: int, b: int) -> None:
        p[:, a:b] = cal.t_pvalue(t[:, a:b], proj.df)

    pieces = split_range(0, t.shape[1], task.threads or default_threads())
    if len(pieces) == 1:
        pvalues(*pieces[0])
    else:
        with ThreadPoolExecutor(len(pieces)) as pool:  # scipy's ufuncs release the GIL
            for f in [pool.submit(pvalues, a, b) for a, b in pieces]:
                f.result()
    arrs["P"] = p
    return arrs


def _scratch_fields(d: int, full: bool) -> list[tuple[str, np.dtype, int]]:
    """The statistics of a range in :func:`_one_pass`'s scratch file, in order: (name, dtype, rows)."""
    f8 = np.dtype(np.float64)
    fields = [("A1FREQ", f8, 1), ("N_MISS", np.dtype(np.int64), 1)]
    fields += [("T", f8, d), ("P", f8, d), ("BETA", f8, d), ("SE", f8, d)]
    if full:
        fields += [("F", f8, 1), ("ADJ_R2", f8, 1)]
    return fields + [("MONO", np.dtype(np.uint8), 1)]


def _scratch_bytes(d: int, full: bool, k: int) -> int:
    return k * sum(dt.itemsize * rows for _, dt, rows in _scratch_fields(d, full))


def _scratch_write(fd: int, offset: int, arrs: dict, d: int, full: bool) -> None:
    """The statistics of one range at ``offset`` of the scratch file (raw arrays, no encoding)."""
    for name, dt, _ in _scratch_fields(d, full):
        view = memoryview(np.ascontiguousarray(arrs[name], dtype=dt).reshape(-1).view(np.uint8).data)
        while view.nbytes:
            done = os.pwrite(fd, view, offset)
            view, offset = view[done:], offset + done


def _scratch_read(fd: int, offset: int, k: int, d: int, full: bool) -> dict[str, np.ndarray]:
    """The statistics of a range of ``k`` SNPs written by :func:`_scratch_write` (one read)."""
    size = _scratch_bytes(d, full, k)
    raw = bytearray(size)
    view, pos = memoryview(raw), 0
    while pos < size:
        got = os.preadv(fd, [view[pos:]], offset + pos)
        if got <= 0:
            raise OutputError("the scratch file of the test's statistics is shorter than written")
        pos += got
    out: dict[str, np.ndarray] = {}
    pos = 0
    for name, dt, rows in _scratch_fields(d, full):
        arr = np.frombuffer(raw, dtype=dt, count=rows * k, offset=pos)
        out[name] = arr.reshape(rows, k) if name in ("T", "P", "BETA", "SE") else arr
        pos += arr.nbytes
    return out


@dataclass(frozen=True)
class _FinalTask:
    """A final part of :func:`_one_pass`: where its statistics are in the scratch file and the
    run's calibration (driver threads)."""

    out: str
    batch: int
    src: Any
    start: int
    stop: int
    fd: int
    offset: int
    proj: Any
    full: bool
    calibrate: str
    consts: list
    fconst: float | None
    meta: str
    params_json: str


def _final_part(task: _FinalTask):
    """The final table of one part of :func:`_one_pass` (its statistics read back from the scratch
    file), with the run's calibration in its metadata; the driver writes it."""
    proj = task.proj
    arrs = _scratch_read(task.fd, task.offset, task.stop - task.start, proj.d, task.full)
    table = _frame(
        task.src,
        task.start,
        task.stop,
        arrs,
        proj.names,
        proj.df,
        proj.df_full,
        task.full,
        task.calibrate,
        task.consts,
        task.fconst,
    ).to_arrow()
    md = dict(table.schema.metadata or {})
    md[b"polgen.lfmm.calibration"] = task.meta.encode()
    return table.replace_schema_metadata(md)


def _part_options(schema: pa.Schema) -> dict[str, Any]:
    """How a final part is written: the per-SNP statistics (float columns but A1FREQ: near-random
    doubles, which zstd shrinks by ~5%) uncompressed, the rest zstd; no min/max statistics for the
    allele columns (of no use for filtering).  An LFMM part of 65k SNPs: 26 -> 19 ms, +5% bytes."""
    return {
        "compression": {
            f.name: "none" if pa.types.is_floating(f.type) and f.name != "A1FREQ" else "zstd" for f in schema
        },
        "statistics": [f.name for f in schema if f.name not in ("A1", "A2")],
    }


def _recorded_column(sink: BatchSink, batch: int, name: str) -> np.ndarray:
    """Column ``name`` of a recorded final part as float64 (nulls -> NaN)."""
    col = pq.read_table(sink.path / sink.completed[batch].file, columns=[name]).column(0)
    return col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def _one_pass(
    src, proj, ranges, bsnps, full, calibrate, executor, progress, names, out: Path, params, resume, overwrite
):
    """The calibrated test written once.  The statistics of each pending range are computed, their
    T (and F) columns copied into one held array per statistic and the rest written to an unlinked
    scratch file in the run folder (raw arrays: the page cache, not this process, holds them); the
    calibration is computed in the held arrays themselves (with the T/F columns of parts a killed
    run already recorded), then each final part is built from the scratch file and written
    atomically on threads and recorded.  Memory: 8 B per SNP and statistic (T, F) until the
    calibration is known, then a few parts.  A run killed before its first part is recorded starts
    again; one killed later resumes from its recorded parts (the same parts, byte for byte, as an
    uninterrupted run)."""
    nb = len(ranges)
    with OutputLock(out):
        prior: dict = {}
        if resume and (out / SUCCESS).exists():  # read before BatchSink, which clears the success marker
            prior = json.loads((out / SUCCESS).read_text()).get("metadata", {})
        sink = BatchSink(out, params, resume=resume, overwrite=overwrite)
        todo = sink.pending(range(nb))
        if not todo:
            if not prior.get("lfmm", {}).get("variables"):
                prior = _metadata_from_parts(sink, names, calibrate, proj, full)
            sink.finalize(n_batches=nb, metadata=prior)
            shutil.rmtree(out / _RAW, ignore_errors=True)
            return _result(sink, names)
        pspec: Any = proj
        proj_path = out / _PROJ
        if executor is not None:  # workers elsewhere read the projection from the run folder
            proj.save(proj_path)
            pspec = str(proj_path)
        spec = source_spec(src)
        threads = 0 if executor is None else 1
        tasks = [
            RangeTask(
                spec,
                ranges[b][0],
                ranges[b][1],
                pspec,
                full,
                bsnps,
                label=f"SNPs {ranges[b][0]}:{ranges[b][1]}",
                threads=threads,
            )
            for b in todo
        ]
        d, first = proj.d, ranges[0][0]
        t_names = _colnames(names)["T"]
        held_names = [("T", j, t_names[j]) for j in range(d)] + ([("F", None, "F")] if full else [])
        held = np.empty((len(held_names), ranges[-1][1] - first))
        offsets: dict[int, int] = {}
        with tempfile.TemporaryFile(dir=sink.path, prefix="._lfmm_stats") as scratch:
            fd = scratch.fileno()
            try:
                pos = 0
                for b, arrs in zip(
                    todo, run_tasks(_range_stats, tasks, executor=executor, progress=progress, description="lfmm test")
                ):
                    a, e = ranges[b][0] - first, ranges[b][1] - first
                    for i, (key, j, _) in enumerate(held_names):
                        held[i, a:e] = arrs[key] if j is None else arrs[key][j]
                    _scratch_write(fd, pos, arrs, d, full)
                    offsets[b] = pos
                    pos += _scratch_bytes(d, full, e - a)
                    del arrs
            finally:
                proj_path.unlink(missing_ok=True)
            for b in range(nb):
                if b not in offsets:  # a part a killed run recorded: its columns from the file
                    a, e = ranges[b][0] - first, ranges[b][1] - first
                    for i, (_, _, col) in enumerate(held_names):
                        held[i, a:e] = _recorded_column(sink, b, col)
            # the constants are found in the held arrays themselves (overwritten: squares, reordered)
            consts = [cal.calibration_constants_inplace(held[j], calibrate) for j in range(d)]
            fconst = cal.f_gif_inplace(held[d], d, proj.df_full) if full else None
            del held
            calib = _calibration_dict(names, consts, fconst, calibrate)
            meta = params_to_json(calib)
            final = [
                _FinalTask(
                    str(sink.path),
                    b,
                    src,
                    ranges[b][0],
                    ranges[b][1],
                    fd,
                    offsets[b],
                    proj,
                    full,
                    calibrate,
                    consts,
                    fconst,
                    meta,
                    sink.params_json,
                )
                for b in todo
            ]
            # a pipeline of two: a thread builds the next part's table (bim rows, calibrated
            # p-values, Arrow) while this one writes the last (parquet encoding releases the GIL).
            # One parquet writer alive: ~20 MB lower peak than two parts built and written on two
            # threads at once (measured again with the p-values computed in the first pass: 389-414
            # vs 428 MB on the bench file)
            for task, table in zip(
                final,
                run_tasks(
                    _final_part, final, executor="threads", max_in_flight=2, progress=progress, description="lfmm write"
                ),
            ):
                sink.record(write_part(task.out, task.batch, table, task.params_json, **_part_options(table.schema)))
                del table
        sink.finalize(n_batches=nb, metadata={"lfmm": calib})
    shutil.rmtree(out / _RAW, ignore_errors=True)
    return _result(sink, names)


def _two_pass(
    src, proj, ranges, bsnps, full, calibrate, executor, progress, names, out: Path, params, resume, overwrite
):
    """Uncalibrated parts first (the final table when ``calibrate=None``), then, with calibration,
    the constants from their stored T (and F) columns and the final parts from them."""
    nb = len(ranges)
    final_done = False
    prior: dict = {}
    if resume and (out / MANIFEST).exists():
        if (out / SUCCESS).exists():  # read before BatchSink, which clears the success marker
            prior = json.loads((out / SUCCESS).read_text()).get("metadata", {})
        sink = BatchSink(out, params, resume=True)
        final_done = not sink.pending(range(nb))
    elif not resume and (out / MANIFEST).exists() and not overwrite:
        BatchSink(out, params)  # raises OutputExistsError with the standard message
    if final_done:
        if not prior.get("lfmm", {}).get("variables"):
            prior = _metadata_from_parts(sink, names, calibrate, proj, full)
        sink.finalize(n_batches=nb, metadata=prior)
        shutil.rmtree(out / _RAW, ignore_errors=True)
        return _result(sink, names)
    out.mkdir(parents=True, exist_ok=True)
    raw_dir = out / _RAW if calibrate else out
    raw_dir.mkdir(parents=True, exist_ok=True)
    proj_path = raw_dir / _PROJ
    proj.save(proj_path)
    src_spec = source_spec(src)
    threads = 0 if executor is None else 1
    work = [
        _RawTask(
            RangeTask(src_spec, a, b, str(proj_path), full, bsnps, threads=threads),
            full,
            calibrate,
            label=f"SNPs {a}:{b}",
        )
        for a, b in ranges
    ]
    # without calibration (the final table) two ranges are in flight on threads by default (each
    # on every core: the kernels release the GIL), so one range's part is written while the next
    # is computed; the small uncalibrated parts of a spilled run are written in the calling thread
    # between ranges (fewer threads and allocations alive at once: ~20 MB lower peak at 2M SNPs)
    local = executor is None and not calibrate
    raw = run_to_sink(
        _raw_part,
        work,
        raw_dir,
        params,
        resume=resume,
        overwrite=True if calibrate else overwrite,
        executor="threads" if local else executor,
        max_in_flight=2 if local else None,
        progress=progress,
        description="lfmm test",
        finalize=False,
    )
    files = [str(f) for f in raw.files]
    if len(files) != nb:
        raise ResumeError(f"{nb - len(files)} of {nb} batches are missing", path=raw_dir)
    t_cols = _colnames(names)["T"] if not calibrate else [f"T{j}" for j in range(proj.d)]
    calib = _streamed_calibration(files, t_cols, names, calibrate, proj, full)
    consts = [calib["variables"][v] for v in names]
    fconst = calib.get("gif_F")
    if not calibrate:
        proj_path.unlink(missing_ok=True)
        raw.finalize(n_batches=nb, metadata={"lfmm": calib})
        return _result(raw, names)
    meta = params_to_json(calib)
    ctasks = [
        _CalTask(
            f,
            src_spec,
            a,
            b,
            bsnps,
            tuple(names),
            float(proj.df),
            float(proj.df_full),
            bool(full),
            calibrate,
            tuple(tuple(sorted(c.items())) for c in consts),
            fconst,
            meta,
            label=f"SNPs {a}:{b}",
        )
        for f, (a, b) in zip(files, ranges)
    ]
    if executor is not None:
        sink = run_to_sink(
            _cal_part,
            ctasks,
            out,
            params,
            resume=resume,
            overwrite=overwrite,
            executor=executor,
            progress=progress,
            description="lfmm calibrate",
            metadata={"lfmm": calib},
        )
    else:  # as _one_pass: a thread builds the next table while this one writes the last
        with OutputLock(out):
            sink = BatchSink(out, params, resume=resume, overwrite=overwrite)
            todo = sink.pending(range(nb))
            for b, table in zip(
                todo,
                run_tasks(
                    _cal_part,
                    [ctasks[b] for b in todo],
                    executor="threads",
                    max_in_flight=2,
                    progress=progress,
                    description="lfmm calibrate",
                ),
            ):
                sink.record(write_part(str(sink.path), b, table, sink.params_json, **_part_options(table.schema)))
                del table
            sink.finalize(n_batches=nb, metadata={"lfmm": calib})
    shutil.rmtree(raw_dir, ignore_errors=True)
    return _result(sink, names)


def _streamed_calibration(files, t_cols, names, calibrate, proj, full) -> dict:
    """Calibration constants from the T (and F) columns stored in ``files``, memory-flat."""

    def column(name):
        return lambda: (
            pq.read_table(f, columns=[name]).column(0).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            for f in files
        )

    consts = [cal.streamed_constants(column(c), calibrate) for c in t_cols]
    fconst = cal.streamed_f_gif(column("F"), proj.d, proj.df_full) if full else None
    return _calibration_dict(names, consts, fconst, calibrate)


def _metadata_from_parts(sink, names, calibrate, proj, full) -> dict:
    """The run's calibration when its success marker is gone: from the parts' metadata, or
    recomputed from their T columns (uncalibrated runs)."""
    md = pq.read_schema(sink.files[0]).metadata or {}
    raw = md.get(b"polgen.lfmm.calibration")
    if raw:
        return {"lfmm": json.loads(raw.decode())}
    files = [str(f) for f in sink.files]
    return {"lfmm": _streamed_calibration(files, _colnames(names)["T"], names, calibrate, proj, full)}


def _result(sink, names) -> LfmmTestResult:
    calib = (sink.metadata or {}).get("lfmm") or {}
    variables = calib.get("variables") or {}
    gifs = {v: float(variables[v]["gif"]) for v in names if v in variables}
    return LfmmTestResult(sink.scan(), gifs, calib, path=sink.path, sink=sink)
