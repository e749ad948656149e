"""Per-locus GLM association tests with the LFMM latent factors as covariates (the lfmm R package's
``glm_test``; R LEA ``lfmm2.test(linear = FALSE)``).

For every SNP ``y`` (raw allele counts of A1; missing calls leave the sample out of that SNP's
model, as R's ``na.omit``) the model ``glm(y ~ 1 + Xc + U, family)`` is fitted by IRLS exactly as
R's ``glm.fit`` (:mod:`polgen.kernels.lfmm_glm`, batched over the SNPs of a decoded block, on
threads), with ``Xc`` the centred covariates (lfmm's ``scale(X, scale = FALSE)``) and ``U`` the
model's latent factors.  Reported per covariate: the coefficient ``BETA`` (log-odds / log-rate per
unit of the covariate), its standard error ``SE``, the Wald ``Z = BETA / SE``, ``P = 2 Phi(-|Z|)``
(R's ``summary.glm``) and, calibrated as :func:`polgen.lfmm.test` (GIF ``median(Z^2) /
qchisq(0.5, 1)`` by default), ``P_CALIBRATED`` and ``LOG10P``.

``family="binomial"``: ``y`` successes out of ``trials`` (2 for diploid dosages, R's
``cbind(y, 2 - y)``; ``trials=1`` for haploid or binary 0/1 data, LEA's use); ``"poisson"``: counts.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from polgen.errors import InputError, OutputExistsError
from polgen.io.bed import BedStream
from polgen.io.pgen import PgenStream, pgen_path
from polgen.kernels.lfmm_glm import BINOMIAL, POISSON, glm_loci
from polgen.lfmm import calibrate as cal
from polgen.lfmm.covariates import covariate_matrix
from polgen.lfmm.genotypes import LEA_SUFFIXES, ArraySource, _bed_path, default_threads, read_lea_genotypes, split_range
from polgen.lfmm.model import LfmmModel
from polgen.lfmm.result import LfmmTestResult
from polgen.options import Calibrate, GlmFamily, check_option

log = logging.getLogger("polgen")


class _RawArray:
    """An in-memory dosage matrix (NaN = missing) seen as raw blocks."""

    def __init__(self, Y: np.ndarray, snps: np.ndarray | None) -> None:
        self._Y = Y
        self.snp_index = np.arange(Y.shape[1]) if snps is None else snps
        self.n_samples, self.n_snps = Y.shape[0], int(self.snp_index.size)
        self.sample_ids = None
        self._src = ArraySource(Y, snps=self.snp_index)

    def raw(self, a: int, b: int) -> np.ndarray:
        return np.asfortranarray(self._Y[:, self.snp_index[a:b]])

    def bim_slice(self, a: int, b: int) -> pl.DataFrame:
        return self._src.bim_slice(a, b)


def _open_raw(bed: Any, snps: np.ndarray | None, block_snps: int | None):
    if isinstance(bed, (str, os.PathLike)) and str(bed).lower().endswith(LEA_SUFFIXES):
        bed = read_lea_genotypes(bed)
    pgen = bed.pgen_path if isinstance(bed, PgenStream) else pgen_path(bed)
    if pgen is not None:
        return PgenStream(pgen, snps=snps, scale="raw", block_snps=block_snps or None)
    if isinstance(bed, np.ndarray):
        Y = np.asarray(bed, dtype=np.float64)
        if Y.ndim != 2:
            raise InputError(f"genotype matrix must be 2-D (samples x SNPs), got shape {Y.shape}")
        return _RawArray(Y, snps)
    path = bed.bed_path if isinstance(bed, BedStream) else _bed_path(bed)
    if path is None:
        raise InputError(f"genotypes must be a .bed path or a (samples x SNPs) array, got {type(bed).__name__}")
    return BedStream(path, snps=snps, scale="raw", block_snps=block_snps or None)


def _snp_index(snps: Any, p: int) -> np.ndarray | None:
    if snps is None:
        return None
    idx = np.asarray(snps)
    if idx.dtype == bool:
        if idx.size != p:
            raise InputError(f"snps as a mask must have one entry per SNP ({p}), got {idx.size}")
        idx = np.flatnonzero(idx)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise InputError("snps must be a non-empty list of 0-based .bim row indices")
    bad = np.flatnonzero((idx < 0) | (idx >= p))
    if bad.size:
        raise InputError(f"snps index {int(idx[bad[0]])} out of range (the .bed has {p} SNPs)", row=int(bad[0]))
    return np.unique(idx.astype(np.int64))


def glm_test(
    model: LfmmModel | str | os.PathLike,
    bed: Any,
    X: Any = None,
    *,
    family: GlmFamily = "binomial",
    trials: int = 2,
    calibrate: Calibrate | None = "gif",
    snps: Any = None,
    maxit: int = 25,
    epsilon: float = 1e-8,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    batch_snps: int = 1024,
    threads: int | None = None,
) -> LfmmTestResult:
    """GLM test of every SNP (or of ``snps``) with the model's latent factors as covariates.

    Parameters
    ----------
    model : a fitted :class:`~polgen.lfmm.LfmmModel` (or the path of a saved one): its ``U``.
    bed : PLINK .bed path (or prefix / stream), or an (n, p) dosage array (NaN = missing).
    X : the covariates to test (default: the model's); a frame with IID is aligned to the .fam.
    family : ``"binomial"`` (logistic regression of ``y`` successes out of ``trials``) or
        ``"poisson"`` (log-linear regression of the counts).
    trials : binomial trials per sample: 2 for diploid dosages (R ``cbind(y, 2 - y)``), 1 for
        haploid / binary 0/1 genotypes (R ``glm(y ~ ., binomial)``, LEA's usage).
    calibrate : ``"gif"`` (default, lfmm's ``calibrate = "gif"``), ``"median+MAD"`` or None.
    snps : 0-based .bim row indices (or a boolean mask) of the SNPs to test; default all.
    maxit, epsilon : R's ``glm.control`` (IRLS iterations and relative deviance tolerance).
    out : write the table to this parquet file atomically (an existing file needs ``overwrite``).
    batch_snps : SNPs per decoded block.  threads : threads (default: one per core).

    Returns
    -------
    LfmmTestResult
        ``frame`` with ``CHR, SNP, BP, A1, A2, A1FREQ, N_MISS, MONOMORPHIC``, per covariate
        ``BETA, SE, Z, P, P_CALIBRATED, LOG10P`` (suffixed ``_<variable>`` with several), then
        ``CONVERGED`` and ``N_ITER``; ``gif`` per variable.
    """
    check_option("family", family, GlmFamily)
    if calibrate is not None:
        check_option("calibrate", calibrate, Calibrate)
    if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1:
        raise InputError(f"trials must be a positive integer, got {trials!r}")
    if isinstance(maxit, bool) or not isinstance(maxit, (int, np.integer)) or maxit < 1:
        raise InputError(f"maxit must be a positive integer, got {maxit!r}")
    if not (isinstance(epsilon, float) and 0 < epsilon < 1):
        raise InputError(f"epsilon must be a number in (0, 1), got {epsilon!r}")
    if not isinstance(model, LfmmModel):
        model = LfmmModel.load(model)
    if out is not None:
        out = Path(out)
        if out.exists() and not overwrite:
            raise OutputExistsError("the output exists; pass overwrite=True to replace it", path=out)
    probe = _open_raw(bed, None, batch_snps)
    src = _open_raw(bed, _snp_index(snps, probe.n_snps), batch_snps) if snps is not None else probe
    n = src.n_samples
    if n != model.n_samples:
        raise InputError(f"the genotypes have {n} samples but the model was fitted on {model.n_samples}")
    if model.sample_ids is not None and src.sample_ids is not None and list(model.sample_ids) != list(src.sample_ids):
        raise InputError("the genotype samples (.fam IIDs) differ from those the model was fitted on")
    if X is None:
        Xm, names = model.X, list(model.x_names)
    else:
        fids = src.fam["FID"].cast(pl.String).to_list() if isinstance(src, (BedStream, PgenStream)) else None
        Xm, names = covariate_matrix(X, src.sample_ids, n, fids)
    d, K = Xm.shape[1], model.K
    C = np.ascontiguousarray(np.c_[np.ones(n), Xm - Xm.mean(axis=0), model.U])
    if np.linalg.matrix_rank(C) < C.shape[1]:
        raise InputError("the covariates and latent factors are collinear (the GLM design has rank < 1 + d + K)")
    p = src.n_snps
    m = C.shape[1]
    coef = np.empty((p, m))
    se = np.empty((p, m))
    n_iter = np.empty(p, dtype=np.int64)
    conv = np.empty(p, dtype=np.int64)
    freq = np.empty(p)
    nmiss = np.empty(p, dtype=np.int64)
    varies = np.empty(p, dtype=bool)
    fam_code = BINOMIAL if family == "binomial" else POISSON
    limit = float(trials) if family == "binomial" else np.inf

    def run(a: int, b: int) -> None:
        for s in range(a, b, batch_snps):
            e = min(b, s + batch_snps)
            Y = src.raw(s, e) if isinstance(src, (_RawArray, PgenStream)) else _raw_block(src, s, e)
            with np.errstate(invalid="ignore"):
                seen = ~np.isnan(Y)
                cnt = seen.sum(axis=0)
                nmiss[s:e] = n - cnt
                freq[s:e] = np.where(cnt > 0, np.nansum(Y, axis=0) / np.maximum(cnt, 1) / 2.0, np.nan)
                varies[s:e] = (cnt > 0) & (
                    np.nanmax(np.where(seen, Y, -np.inf), axis=0) > np.nanmin(np.where(seen, Y, np.inf), axis=0)
                )
            bad = seen & ((Y < 0) | (Y > limit))
            if bad.any():
                j = int(np.flatnonzero(bad.any(axis=0))[0])
                what = f"more than trials={trials}" if family == "binomial" else "negative"
                raise InputError(f"genotype values {what} for a {family} GLM at SNP {s + j}", row=s + j)
            glm_loci(Y, C, fam_code, float(trials), 0, e - s, int(maxit), float(epsilon),
                     coef[s:e], se[s:e], n_iter[s:e], conv[s:e])  # fmt: skip

    pieces = split_range(0, p, threads or default_threads())
    if len(pieces) == 1:
        run(*pieces[0])
    else:
        with ThreadPoolExecutor(len(pieces)) as pool:
            for f in [pool.submit(run, a, b) for a, b in pieces]:
                f.result()
    beta = coef[:, 1 : d + 1].T
    sev = se[:, 1 : d + 1].T
    with np.errstate(invalid="ignore", divide="ignore"):
        z = beta / sev
    consts = [cal.calibration_constants(z[j], calibrate) for j in range(d)] if calibrate else None
    frame = _glm_frame(src, freq, nmiss, ~varies, conv, n_iter, beta, sev, z, names, calibrate, consts)
    calib: dict[str, Any] = {"method": calibrate, "family": family, "trials": int(trials)}
    calib["variables"] = {v: dict(c) for v, c in zip(names, consts)} if consts else {}
    gifs = {v: float(c["gif"]) for v, c in zip(names, consts)} if consts else {}
    n_fail = int(np.sum(conv == 0))
    if n_fail:
        log.warning("lfmm glm_test: %d SNPs did not converge in %d IRLS iterations (CONVERGED false)", n_fail, maxit)
    log.info("lfmm glm_test (%s): %d SNPs, d=%d, K=%d", family, p, d, K)
    if out is not None:
        import json

        from polgen.io.sink import write_table_atomic

        write_table_atomic(out, frame, metadata={"polgen.lfmm.glm": json.dumps(calib)})
        return LfmmTestResult(pl.scan_parquet(out), gifs, calib, path=out)
    return LfmmTestResult(frame.lazy(), gifs, calib)


def _raw_block(src: BedStream, a: int, b: int) -> np.ndarray:
    (blk,) = list(src.blocks(a, b, block_snps=b - a, parallel=False))
    return np.asfortranarray(blk.data, dtype=np.float64)


def _glm_frame(src, freq, nmiss, mono, conv, n_iter, beta, se, z, names, calibrate, consts) -> pl.DataFrame:
    p = freq.size
    bim = src.bim_slice(0, p)
    data: dict[str, Any] = {
        "CHR": bim["CHR"].cast(pl.String),
        "SNP": bim["SNP"].cast(pl.String),
        "BP": bim["BP"].cast(pl.Int64),
        "A1": bim["A1"].cast(pl.String),
        "A2": bim["A2"].cast(pl.String),
        "A1FREQ": freq,
        "N_MISS": nmiss,
        "MONOMORPHIC": mono,  # no variation among the called samples
    }
    suffix = [""] if len(names) == 1 else [f"_{v}" for v in names]
    for j, s in enumerate(suffix):
        pv, lp = cal.norm_log10p(z[j])
        data[f"BETA{s}"] = beta[j]
        data[f"SE{s}"] = se[j]
        data[f"Z{s}"] = z[j]
        data[f"P{s}"] = pv
        if calibrate is None or consts is None:
            data[f"P_CALIBRATED{s}"] = np.full(p, np.nan)
            data[f"LOG10P{s}"] = lp
        else:
            data[f"P_CALIBRATED{s}"], data[f"LOG10P{s}"] = cal.calibrated(z[j], calibrate, consts[j])
    data["CONVERGED"] = conv == 1
    data["N_ITER"] = n_iter
    frame = pl.DataFrame(data)
    return frame.with_columns(
        pl.col(c).fill_nan(None) for c in frame.columns if frame.schema[c] == pl.Float64 and c != "A1FREQ"
    )
