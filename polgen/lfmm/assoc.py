"""LFMM2 association tests: one fused streaming pass over all SNPs (R LEA ``lfmm2.test``).

For each SNP y (mean-imputed, centred) and each covariate x_j the pass computes

* the ridge effect size ``B = (Xc'Xc + lam I)^-1 Xc'(y - W_y)`` (eq. 4) with
  ``W_y = Q D^-1 u_K u_K' D Q' y`` — R LEA's ``W = U V'`` column for SNPs in the estimation set,
  and its projection for the others;
* the OLS fit of ``y ~ 1 + X + U`` (LEA's ``lm(Y ~ ., data.frame(X, U))``): the t statistic of
  each X coefficient with ``df = n - 1 - d - K`` and its two-sided p-value;
* LEA's ``full=TRUE`` F test of all X given U: ``F = ((RSS_U - RSS)/d) / (RSS/(n - d - 1))``
  (LEA regresses the U-residuals of y on the U-residuals of X, hence its ``n - d - 1`` df) and
  the adjusted R^2 of that regression.

Everything comes from one GEMM per decoded block: with ``[Uc | Xc] = Qc R`` (thin QR),
``P = [Qc | w_B]' Y_b`` and ``y'y`` give ``RSS = y'y - |Qc'y|^2``, the coefficients ``R^-1 Qc'y``
and the ridge B — no residual matrix is ever formed.

Standard error of the ridge B: given the latent factors B is a fixed linear functional of the SNP,
``B = w' y`` (``w`` the ridge row of ``Tt`` below), so ``SE = sigma ||w||`` with ``sigma^2 = RSS / df``
of the OLS fit above (``T`` is the OLS coefficient's t, so ``BETA / SE`` is not ``T``).

Output (one row per SNP): ``CHR, SNP, BP, A1, A2, A1FREQ, N_MISS, MONOMORPHIC`` then per variable
``BETA`` (ridge effect per A1 allele), ``SE`` (its standard error), ``T``, ``P``, ``P_CALIBRATED``,
``LOG10P``; with several variables each of these is suffixed ``_<variable name>`` (e.g.
``T_temp``).  ``LOG10P`` is ``-log10`` of ``P_CALIBRATED`` when calibrating and of ``P`` when ``calibrate=None`` (then
``P_CALIBRATED`` is null).  ``full=True`` adds ``F, P_F, P_F_CALIBRATED, ADJ_R2``.
Monomorphic SNPs have ``MONOMORPHIC = true`` and NaN statistics.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from polgen._blas import single_threaded_blas
from polgen.engine.executor import run_tasks, run_to_sink
from polgen.errors import InputError, ResumeError
from polgen.io.bed import BedStream
from polgen.io.sink import MANIFEST, SUCCESS, BatchSink, params_to_json
from polgen.kernels.bed_decode import DOSAGE_A1, DOSAGE_A2
from polgen.kernels.lfmm import block_stats, colsumsq_into
from polgen.kernels.lfmm_decode import byte_tables, decode_center_yy
from polgen.lfmm import calibrate as cal
from polgen.lfmm.covariates import covariate_matrix
from polgen.lfmm.genotypes import (
    cache_block_snps,
    default_threads,
    open_source,
    source_path,
    source_spec,
    split_range,
)
from polgen.lfmm.glm import glm_test
from polgen.lfmm.model import LfmmModel
from polgen.lfmm.result import LfmmTestResult
from polgen.options import Calibrate, check_option

#: the per-locus model of :func:`test`: the linear model (LEA ``lfmm2.test``) or a GLM (lfmm ``glm_test``)
TestFamily = Literal["gaussian", "binomial", "poisson"]

log = logging.getLogger("polgen")

DEFAULT_TASK_SNPS = 1 << 16
_RAW = "_uncalibrated"
_PROJ = "_lfmm_projection.npz"


# -- the per-test constants ------------------------------------------------------------------------
@dataclass
class Projection:
    """Everything a worker needs besides the genotypes: a few n-row matrices."""

    Tt: np.ndarray  # (K + 2d, n) rows: Qc' then ridge functionals
    rx: np.ndarray  # (d, K + d) rows of R^-1 for the X coefficients
    K: int
    d: int
    n: int
    names: list[str] = field(default_factory=list)

    @property
    def df(self) -> int:
        return self.n - 1 - self.d - self.K

    @property
    def b_norm(self) -> np.ndarray:
        """``||w_j||`` of each ridge functional (``BETA_j = w_j' y``): ``SE_j = sigma ||w_j||``."""
        return np.sqrt((self.Tt[self.K + self.d :] ** 2).sum(axis=1))

    @property
    def df_full(self) -> int:
        return self.n - self.d - 1

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as fh:
            np.savez(fh, Tt=self.Tt, rx=self.rx, shape=np.array([self.K, self.d, self.n]), names=np.array(self.names))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> Projection:
        with np.load(path, allow_pickle=False) as z:
            K, d, n = (int(v) for v in z["shape"])
            return cls(
                np.ascontiguousarray(z["Tt"]), np.ascontiguousarray(z["rx"]), K, d, n, [str(s) for s in z["names"]]
            )


def projection(model: LfmmModel, X: np.ndarray, names: list[str]) -> Projection:
    """The linear maps of the fused pass for covariates X (n x d) and a fitted model."""
    n, d = X.shape
    K = model.K
    lam = float(model.params.get("lam", 1e-5))
    Xc = X - X.mean(axis=0)
    Uc = model.U - model.U.mean(axis=0)
    C = np.hstack([Uc, Xc])
    Qc, R = np.linalg.qr(C)
    diag = np.abs(np.diag(R))
    scale = np.linalg.norm(C, axis=0)
    bad = np.flatnonzero(diag <= 1e-10 * np.maximum(scale, 1e-300))
    if bad.size:
        j = int(bad[0])
        what = f"latent factor {j + 1}" if j < K else f"covariate {names[j - K]!r}"
        raise InputError(f"{what} is collinear with the other covariates/latent factors (or constant)")
    Rinv = np.linalg.inv(R)
    rx = np.ascontiguousarray(Rinv[K:, :])
    # ridge: B = Rr Xc'(y - M^-1 U1 U1' M y) = [Xc Rr - M U1 (Xc' M^-1 U1)' Rr]' y
    Rr = np.linalg.inv(Xc.T @ Xc + lam * np.eye(d))
    G1 = Xc.T @ model.apply_M_inv(model.U1)  # d x K
    Wb = Xc @ Rr - model.apply_M(model.U1) @ (G1.T @ Rr)
    Tt = np.ascontiguousarray(np.vstack([Qc.T, Wb.T]))
    return Projection(Tt, rx, K, d, n, list(names))


# -- per-range computation --------------------------------------------------------------------------
_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def _cached(key, make):
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is None:
        hit = make()
        with _CACHE_LOCK:
            if len(_CACHE) > 8:
                _CACHE.clear()
            _CACHE[key] = hit
    return hit


@dataclass(frozen=True)
class RangeTask:
    """A picklable task: SNPs ``start:stop`` of ``source`` (a .bed path or an ArraySource)."""

    source: Any
    start: int
    stop: int
    proj: Any  # Projection or path of a saved one
    full: bool
    block_snps: int
    label: str | None = None
    threads: int = 0  # 0: one per core when run in the calling thread


def _source_of(spec, block_snps: int):
    if isinstance(spec, str):
        key = ("bed", spec, block_snps, os.path.getmtime(spec))
        return _cached(key, lambda: BedStream(spec, scale="center", block_snps=block_snps or None))
    return spec


def _open(task: RangeTask):
    src = _source_of(task.source, task.block_snps)
    proj = task.proj
    if isinstance(proj, str):
        proj = _cached(("proj", proj, os.path.getmtime(proj)), lambda: Projection.load(task.proj))
    return src, proj


def compute_range(task: RangeTask) -> dict[str, np.ndarray]:
    """Statistics of SNPs ``task.start:task.stop`` as arrays (uncalibrated).

    The range is cut into ``task.threads`` pieces run on threads (the kernels release the GIL);
    each decodes cache-sized blocks and projects them at once (one small GEMM per block while it
    is in cache, single-threaded BLAS per thread) plus ``y'y``.
    """
    src, proj = _open(task)
    nb = task.stop - task.start
    K, d = proj.K, proj.d
    m = proj.Tt.shape[0]
    T = np.ascontiguousarray(proj.Tt.T)  # (n, m)
    PT = np.empty((nb, m))
    yy = np.empty(nb)
    freq = np.empty(nb)
    nmiss = np.empty(nb, dtype=np.int64)
    bs = task.block_snps or cache_block_snps(proj.n)
    packed_ok = isinstance(src, BedStream) and src.sample_index is None and src.scale == "center"

    def run_packed(a: int, b: int) -> None:
        # decode (and y'y from the integer counts) straight from the .bed rows, then one GEMM
        dosage = DOSAGE_A1 if src.count_a1 else DOSAGE_A2
        luts = byte_tables(dosage)
        buf = np.empty((proj.n, bs), order="F")
        for s in range(a, b, bs):
            e = min(b, s + bs)
            k, off = e - s, s - task.start
            packed, rows = src.packed_rows(s, e)
            Y = buf[:, :k]
            decode_center_yy(
                packed, rows, proj.n, dosage, *luts, Y, freq[off : off + k], nmiss[off : off + k], yy[off : off + k]
            )
            src.release_rows(s, e)
            np.matmul(Y.T, T, out=PT[off : off + k])

    def run(a: int, b: int) -> None:
        if packed_ok:
            run_packed(a, b)
            return
        for blk in src.blocks(a, b, block_snps=bs, parallel=False):
            off = blk.start - task.start
            k = blk.stop - blk.start
            np.matmul(blk.data.T, T, out=PT[off : off + k])  # single-threaded GEMM on a cached block
            colsumsq_into(blk.data, yy[off : off + k])
            freq[off : off + k] = blk.freq
            nmiss[off : off + k] = blk.n_miss

    pieces = split_range(task.start, task.stop, task.threads or default_threads())
    with single_threaded_blas():
        if len(pieces) == 1:
            run(*pieces[0])
        else:
            with ThreadPoolExecutor(len(pieces)) as pool:
                for f in [pool.submit(run, a, b) for a, b in pieces]:
                    f.result()
    out: dict[str, np.ndarray] = {
        "A1FREQ": freq,
        "N_MISS": nmiss,
        "MONO": np.empty(nb, dtype=np.uint8),
        "T": np.empty((d, nb)),
        "OLS": np.empty((d, nb)),
        "F": np.empty(nb),
        "ADJ_R2": np.empty(nb),
        "SIGMA": np.empty(nb),
    }
    block_stats(
        PT,
        yy,
        proj.rx,
        K,
        d,
        float(proj.df),
        float(proj.df_full),
        1e-12 * proj.n,
        out["OLS"],
        out["T"],
        out["F"],
        out["ADJ_R2"],
        out["MONO"],
        out["SIGMA"],
    )
    out["BETA"] = np.where(out["MONO"][None, :] == 1, np.nan, PT[:, K + d :].T)
    out["SE"] = proj.b_norm[:, None] * out.pop("SIGMA")[None, :]
    return out


def _colnames(names: list[str]) -> dict[str, list[str]]:
    d = len(names)
    stats = ("BETA", "SE", "T", "P", "P_CALIBRATED", "LOG10P")
    if d == 1:
        return {s: [s] for s in stats}
    return {s: [f"{s}_{v}" for v in names] for s in stats}


def _frame(
    src,
    start,
    stop,
    arrs,
    names: list[str],
    df: float,
    df_full: float,
    full: bool,
    calib: str | None,
    consts: list[dict] | None,
    fconst: float | None,
) -> pl.DataFrame:
    """The output table of SNPs ``start:stop`` from their statistics (see the module docs)."""
    bim = src.bim_slice(start, stop)
    cols = _colnames(names)
    d = len(names)
    data: dict[str, Any] = {
        "CHR": bim["CHR"].cast(pl.String),
        "SNP": bim["SNP"].cast(pl.String),
        "BP": bim["BP"].cast(pl.Int64),
        "A1": bim["A1"].cast(pl.String),
        "A2": bim["A2"].cast(pl.String),
        "A1FREQ": arrs["A1FREQ"],
        "N_MISS": arrs["N_MISS"],
        "MONOMORPHIC": arrs["MONO"].astype(bool),
    }
    for j in range(d):
        t = arrs["T"][j]
        p, lp = cal.t_log10p(t, df)
        data[cols["BETA"][j]] = arrs["BETA"][j]
        data[cols["SE"][j]] = arrs["SE"][j]
        data[cols["T"][j]] = t
        data[cols["P"][j]] = p
        if calib is None or consts is None:
            data[cols["P_CALIBRATED"][j]] = np.full(len(t), np.nan)
            data[cols["LOG10P"][j]] = lp if calib is None else np.full(len(t), np.nan)
        else:
            pc, lpc = cal.calibrated(t, calib, consts[j])
            data[cols["P_CALIBRATED"][j]] = pc
            data[cols["LOG10P"][j]] = lpc
    if full:
        fv = arrs["F"]
        data["F"] = fv
        data["P_F"] = cal.f_log10p(fv, d, df_full)[0]
        if calib is None or fconst is None:
            data["P_F_CALIBRATED"] = np.full(len(fv), np.nan)
        else:
            data["P_F_CALIBRATED"] = cal.f_log10p(fv / fconst, d, df_full)[0]
        data["ADJ_R2"] = arrs["ADJ_R2"]
    out = pl.DataFrame(data)
    return out.with_columns(
        pl.col(c).fill_nan(None) for c in out.columns if out.schema[c] == pl.Float64 and c != "A1FREQ"
    )


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
    raw = pl.read_parquet(task.raw_file)
    d = len(task.names)
    arrs = {
        "A1FREQ": raw["A1FREQ"].to_numpy(),
        "N_MISS": raw["N_MISS"].to_numpy(),
        "MONO": raw["MONO"].to_numpy(),
        "T": np.vstack([raw[f"T{j}"].to_numpy() for j in range(d)]),
        "BETA": np.vstack([raw[f"B{j}"].to_numpy() for j in range(d)]),
        "SE": np.vstack([raw[f"S{j}"].to_numpy() for j in range(d)]),
    }
    if task.full:
        arrs["F"] = raw["F"].to_numpy()
        arrs["ADJ_R2"] = raw["ADJ_R2"].to_numpy()
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


# -- the public function ---------------------------------------------------------------------------
def test(
    model: LfmmModel | str | os.PathLike,
    bed: Any,
    X: Any = None,
    *,
    calibrate: Calibrate | None = "gif",
    full: bool = False,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    executor: Any = None,
    progress: bool | None = None,
    batch_snps: int | None = None,
    task_snps: int = DEFAULT_TASK_SNPS,
    family: TestFamily = "gaussian",
    trials: int = 2,
) -> LfmmTestResult:
    """Test every SNP of ``bed`` for association with each covariate, given the model's U.

    ``model`` is a fitted :class:`LfmmModel` (or the path of a saved one); ``X`` the covariates
    (default: the ones the model was fitted with; a frame with IID is aligned to the .fam).
    Other covariates than the fitted ones may be tested with the same U (as LEA allows); the ridge
    BETA then uses the given X with the model's latent matrix W.  Genotypes are decoded centred
    (not eigenstrat-scaled, whatever the fit used), so BETA is per A1 allele; T does not depend on
    the scaling.  ``task_snps`` SNPs make one task / output part; ``batch_snps`` one decoded block.
    With ``out`` the table is streamed to a resumable parquet dataset (uncalibrated parts first,
    then the calibration computed from the stored T columns, then the final parts) and the GIF
    values go to the output metadata; otherwise it is built in memory.

    ``family="binomial"`` / ``"poisson"`` test with a per-locus GLM instead of the linear model
    (R LEA ``lfmm2.test(linear = FALSE)``, the lfmm package's ``glm_test``: see
    :func:`polgen.lfmm.glm_test`, whose table and numbers these are; ``trials`` binomial trials
    per sample, 2 for diploid dosages); ``out`` is then a run folder with one part, and ``full``,
    ``executor``, ``task_snps`` do not apply.
    """
    check_option("family", family, TestFamily)
    if not isinstance(model, LfmmModel):
        model = LfmmModel.load(model)
    cal.check_calibrate(calibrate)
    if family != "gaussian":
        return _glm_family(model, bed, X, family, trials, calibrate, full, out, resume, overwrite, batch_snps)
    src = open_source(bed, scale="center", block_snps=batch_snps or None)
    n = src.n_samples
    if n != model.n_samples:
        raise InputError(f"the genotypes have {n} samples but the model was fitted on {model.n_samples}")
    if model.sample_ids is not None and src.sample_ids is not None and list(model.sample_ids) != list(src.sample_ids):
        raise InputError("the genotype samples (.fam IIDs) differ from those the model was fitted on")
    if X is None:
        Xm, names = model.X, list(model.x_names)
    else:
        fids = src.fam["FID"].cast(pl.String).to_list() if hasattr(src, "fam") else None
        Xm, names = covariate_matrix(X, src.sample_ids, n, fids)
    d = Xm.shape[1]
    if n - 1 - d - model.K < 1:
        raise InputError(f"too few samples: n - 1 - d - K = {n - 1 - d - model.K}")
    with single_threaded_blas():
        proj = projection(model, Xm, names)
    bsnps = batch_snps or cache_block_snps(n)
    task_snps = max(int(task_snps), 1)
    ranges = [(a, min(a + task_snps, src.n_snps)) for a in range(0, src.n_snps, task_snps)]
    if not ranges:
        raise InputError("no SNPs to test")
    params = {
        "method": "lfmm.test",
        "K": model.K,
        "d": d,
        "x_names": names,
        "calibrate": calibrate,
        "full": bool(full),
        "n": n,
        "n_snps": src.n_snps,
        "task_snps": task_snps,
        "bed": source_path(src),
        "model": model.params,
        "df": proj.df,
    }
    if out is None:
        return _test_in_memory(src, proj, ranges, bsnps, full, calibrate, executor, progress, names)
    return _test_to_disk(
        src, proj, ranges, bsnps, full, calibrate, executor, progress, names, Path(out), params, resume, overwrite
    )


def _glm_family(model, bed, X, family, trials, calibrate, full, out, resume, overwrite, batch_snps) -> LfmmTestResult:
    """``test(family="binomial"|"poisson")``: :func:`polgen.lfmm.glm_test`, written as a one-part run
    folder with ``out`` (the calibration in its metadata, as the linear test's)."""
    from polgen.io.sink import OutputLock

    if full:
        raise InputError(f"full=True is the linear model's F test; it has no {family} GLM version")
    kw = {"batch_snps": batch_snps} if batch_snps else {}
    if out is None:
        return glm_test(model, bed, X, family=family, trials=trials, calibrate=calibrate, **kw)
    out = Path(out)
    params = {
        "method": "lfmm.test",
        "family": family,
        "trials": int(trials),
        "K": model.K,
        "calibrate": calibrate,
        "n": model.n_samples,
        "bed": str(bed) if isinstance(bed, (str, os.PathLike)) else type(bed).__name__,
        "model": model.params,
    }
    with OutputLock(out):
        if resume and (out / SUCCESS).exists() and (out / MANIFEST).exists():
            prior = json.loads((out / SUCCESS).read_text()).get("metadata", {})  # BatchSink clears it
            sink = BatchSink(out, params, resume=True)
            if not sink.pending([0]):
                sink.finalize(n_batches=1, metadata=prior)
                variables = list(prior.get("lfmm", {}).get("variables", {}))
                return _result(sink, variables)
        res = glm_test(model, bed, X, family=family, trials=trials, calibrate=calibrate, **kw)
        sink = BatchSink(out, params, resume=resume, overwrite=overwrite or resume)
        meta = params_to_json(res.calibration)
        table = res.frame.collect().to_arrow()
        md = dict(table.schema.metadata or {})
        md[b"polgen.lfmm.calibration"] = meta.encode()
        sink.write(0, table.replace_schema_metadata(md))
        sink.finalize(n_batches=1, metadata={"lfmm": res.calibration})
    return LfmmTestResult(sink.scan(), res.gif, res.calibration, path=sink.path, sink=sink)


test.__test__ = False  # type: ignore[attr-defined]  # a library function named ``test``: pytest must not collect it


def _test_in_memory(src, proj, ranges, bsnps, full, calibrate, executor, progress, names):
    threads = 0 if executor is None else 1
    tasks = [
        RangeTask(source_spec(src), a, b, proj, full, bsnps, label=f"SNPs {a}:{b}", threads=threads) for a, b in ranges
    ]
    parts = list(run_tasks(compute_range, tasks, executor=executor, progress=progress, description="lfmm test"))
    arrs = {k: np.concatenate([p[k] for p in parts], axis=-1) for k in parts[0]}
    consts = [cal.calibration_constants(arrs["T"][j], calibrate) for j in range(proj.d)]
    fconst = cal.f_gif(arrs["F"], proj.d, proj.df_full) if full else None
    df = _frame(
        src,
        0,
        src.n_snps,
        arrs,
        proj.names,
        proj.df,
        proj.df_full,
        full,
        calibrate,
        consts if calibrate else None,
        fconst if calibrate else None,
    )
    calib = _calibration_dict(names, consts, fconst, calibrate)
    return LfmmTestResult(df.lazy(), {v: c["gif"] for v, c in zip(names, consts)}, calib)


def _calibration_dict(names, consts, fconst, calibrate) -> dict:
    out: dict[str, Any] = {"method": calibrate, "variables": {v: dict(c) for v, c in zip(names, consts)}}
    if fconst is not None:
        out["gif_F"] = fconst
    return out


def _test_to_disk(
    src, proj, ranges, bsnps, full, calibrate, executor, progress, names, out: Path, params, resume, overwrite
):
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
    # by default two ranges are in flight on threads (each on every core: the kernels release
    # the GIL), so one range's parquet part is written while the next is computed
    raw = run_to_sink(
        _raw_part,
        work,
        raw_dir,
        params,
        resume=resume,
        overwrite=True if calibrate else overwrite,
        executor=executor if executor is not None else "threads",
        max_in_flight=None if executor is not None else 2,
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
    # the second pass is parquet and Polars work that releases the GIL: threads by default
    sink = run_to_sink(
        _cal_part,
        ctasks,
        out,
        params,
        resume=resume,
        overwrite=overwrite,
        executor=executor if executor is not None else "threads",
        progress=progress,
        max_in_flight=None if executor is not None else 2,
        description="lfmm calibrate",
        metadata={"lfmm": calib},
    )
    shutil.rmtree(raw_dir, ignore_errors=True)
    return _result(sink, names)


def _streamed_calibration(files, t_cols, names, calibrate, proj, full) -> dict:
    """Calibration constants from the T (and F) columns stored in ``files``, memory-flat."""

    def column(name):
        return lambda: (
            pq.read_table(f, columns=[name]).column(0).to_numpy(zero_copy_only=False).astype(np.float64) for f in files
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
