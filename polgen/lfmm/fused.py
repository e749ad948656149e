"""The fused LFMM2 test pass over a range of SNPs: the per-test constants (:class:`Projection`),
the per-range statistics (:func:`compute_range`) and the output table of a range (:func:`_frame`).
The statistics are described in :mod:`polgen.lfmm.assoc`."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from polgen._blas import single_threaded_blas
from polgen.errors import InputError
from polgen.io.bed import BedStream
from polgen.kernels.bed_decode import DOSAGE_A1, DOSAGE_A2
from polgen.kernels.lfmm import PROJECT_CHUNK, block_stats, colsumsq_into, project_packed
from polgen.kernels.lfmm_decode import center_projection, packed_byte_table, packed_moments, quad_table
from polgen.lfmm import calibrate as cal
from polgen.lfmm.genotypes import cache_block_snps, default_threads, split_range
from polgen.lfmm.model import LfmmModel


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
#: bytes of .bed rows per block of the fused pass when it reads packed rows
PACKED_BLOCK_BYTES = 128 << 10

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
    each projects blocks of SNPs straight from their .bed bytes (:func:`project_packed`) beside
    their moments and ``y'y``; a source without packed rows decodes cache-sized blocks and
    projects each with one small GEMM (single-threaded BLAS per thread).
    """
    src, proj = _open(task)
    nb = task.stop - task.start
    K, d = proj.K, proj.d
    m = proj.Tt.shape[0]
    # (n, m) padded with zero columns to a multiple of 4: project_packed takes the rows of T four
    # or eight at a time, and OpenBLAS's kernels for a narrow right factor (the path without packed
    # rows) run ~15-20% faster at 8 columns than at 7 (the extra products are zeros, never read)
    mp = -(-m // 4) * 4
    T = np.zeros((proj.n, mp))
    T[:, :m] = proj.Tt.T
    PT = np.empty((nb, mp))
    colsum = T.sum(axis=0)
    mean = np.empty(nb)
    yy = np.empty(nb)
    freq = np.empty(nb)
    nmiss = np.empty(nb, dtype=np.int64)
    packed_ok = isinstance(src, BedStream) and src.sample_index is None and src.scale == "center"
    # SNPs per block: from packed rows, ~128 KB of them (no decoded block to keep in cache; three
    # kernel calls of a few microseconds each per block), else a cache-sized decoded block
    bs = task.block_snps or (
        max(8, min(4096, PACKED_BLOCK_BYTES // max(1, (proj.n + 3) // 4))) if packed_ok else cache_block_snps(proj.n)
    )
    Tp = np.ascontiguousarray(T.T)  # (mp, n): the rows project_packed reads
    # mapped .bed pages are dropped from the resident set every ~1 MB of rows, not every block
    # (one madvise, and its TLB shootdown on the other cores, per ~1 MB instead of per block)
    release_snps = max(bs, (1 << 20) // max(1, (proj.n + 3) // 4))

    def run_packed(a: int, b: int) -> None:
        # the moments (and y'y from the integer counts) from the .bed rows, then the projections
        # of the uncentred dosages read from the same bytes, on the rows of T in L1-sized sample
        # chunks (project_packed: vectorised dot products, no decoded block, no GEMM); the
        # centring is applied to the k x m products, T'y = T'v - mean T'1 + the missing calls' rows
        dosage = DOSAGE_A1 if src.count_a1 else DOSAGE_A2
        packlut, quads = packed_byte_table(dosage), quad_table(dosage).ravel()
        miss_idx = np.empty(proj.n * bs, dtype=np.int64)
        miss_start = np.empty(bs + 1, dtype=np.int64)
        released = a
        for s in range(a, b, bs):
            e = min(b, s + bs)
            k, off = e - s, s - task.start
            sl = slice(off, off + k)
            packed, rows = src.packed_rows(s, e)
            packed_moments(
                packed, rows, proj.n, dosage, packlut, mean[sl], freq[sl], nmiss[sl], yy[sl], miss_idx, miss_start
            )
            project_packed(packed, rows, proj.n, quads, Tp, PT[sl], PROJECT_CHUNK)
            if e - released >= release_snps or e == b:
                src.release_rows(released, e)
                released = e
            center_projection(mean[sl], miss_idx, miss_start, colsum, T, PT[sl])

    def project(buf: np.ndarray, k: int, off: int) -> None:
        # an even number of rows: OpenBLAS computes the last row of an odd-sized product with
        # another kernel, so padding with a zero SNP makes every row the same whatever the blocks
        if k % 2:
            buf[:, k] = 0.0
            np.matmul(buf[:, : k + 1].T, T, out=scratch(k + 1))
            PT[off : off + k] = scratch(k + 1)[:k]
        else:
            np.matmul(buf[:, :k].T, T, out=PT[off : off + k])

    tls = threading.local()

    def scratch(rows: int) -> np.ndarray:
        have = getattr(tls, "buf", None)
        if have is None or have.shape[0] < rows:
            have = tls.buf = np.empty((max(rows, bs + 1), mp))
        return have[:rows]

    def run(a: int, b: int) -> None:
        if packed_ok:
            run_packed(a, b)
            return
        for blk in src.blocks(a, b, block_snps=bs, parallel=False):
            off = blk.start - task.start
            k = blk.stop - blk.start
            if k % 2:  # (the last block of a range: see project)
                Yp = np.zeros((proj.n, k + 1), order="F")
                Yp[:, :k] = blk.data
                project(Yp, k, off)
            else:
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
    out["BETA"] = np.where(out["MONO"][None, :] == 1, np.nan, PT[:, K + d : m].T)
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
        # p-values a worker computed beside the statistics (arrs["P"]), else here
        p = arrs["P"][j] if "P" in arrs else cal.t_pvalue(t, df)
        data[cols["BETA"][j]] = arrs["BETA"][j]
        data[cols["SE"][j]] = arrs["SE"][j]
        data[cols["T"][j]] = t
        data[cols["P"][j]] = p
        if calib is None or consts is None:
            data[cols["P_CALIBRATED"][j]] = np.full(len(t), np.nan)
            data[cols["LOG10P"][j]] = cal.t_log10p(t, df, p)[1] if calib is None else np.full(len(t), np.nan)
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
    # NaN statistics (monomorphic SNPs, no calibration) are written as nulls (A1FREQ keeps NaN);
    # a column is only rewritten when it holds a NaN
    series = []
    for c, v in data.items():
        if isinstance(v, np.ndarray) and v.dtype == np.float64 and c != "A1FREQ":
            series.append(pl.Series(c, v, nan_to_null=bool(np.isnan(v).any())))
        else:
            series.append(pl.Series(c, v) if isinstance(v, np.ndarray) else v.alias(c))
    return pl.DataFrame(series)


def _calibration_dict(names, consts, fconst, calibrate) -> dict:
    out: dict[str, Any] = {"method": calibrate, "variables": {v: dict(c) for v, c in zip(names, consts)}}
    if fconst is not None:
        out["gif_F"] = fconst
    return out
