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

Everything comes from one projection of each SNP (read from its .bed bytes by
:func:`polgen.kernels.lfmm.project_packed`; a GEMM per decoded block for other sources): with
``[Uc | Xc] = Qc R`` (thin QR), ``P = [Qc | w_B]' Y_b`` and ``y'y`` give ``RSS = y'y - |Qc'y|^2``, the
coefficients ``R^-1 Qc'y`` and the ridge B — no residual matrix is ever formed.

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
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from polgen._blas import single_threaded_blas
from polgen.engine.executor import run_tasks
from polgen.errors import InputError
from polgen.io.sink import MANIFEST, SUCCESS, BatchSink, params_to_json
from polgen.lfmm import calibrate as cal
from polgen.lfmm.assoc_disk import _result, _test_to_disk
from polgen.lfmm.covariates import covariate_matrix
from polgen.lfmm.fused import (
    Projection,
    RangeTask,
    _calibration_dict,
    _frame,
    compute_range,
    projection,
)
from polgen.lfmm.genotypes import cache_block_snps, open_source, source_path, source_spec
from polgen.lfmm.glm import glm_test
from polgen.lfmm.model import LfmmModel
from polgen.lfmm.result import LfmmTestResult
from polgen.options import Calibrate, check_option

__all__ = [
    "DEFAULT_TASK_SNPS",
    "LfmmTestResult",
    "Projection",
    "RangeTask",
    "TestFamily",
    "compute_range",
    "projection",
    "test",
]

#: the per-locus model of :func:`test`: the linear model (LEA ``lfmm2.test``) or a GLM (lfmm ``glm_test``)
TestFamily = Literal["gaussian", "binomial", "poisson"]

log = logging.getLogger("polgen")

DEFAULT_TASK_SNPS = 1 << 16


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
    With ``out`` the table is streamed to a resumable parquet dataset and the GIF values go to the
    output metadata; otherwise it is built in memory.  With calibration the T (and F) columns are
    held in memory up to :data:`polgen.lfmm.assoc_disk.HOLD_STATS_BYTES` (64 MB, 8M SNPs for one
    variable), the other statistics wait in a scratch file and the calibrated parts are written
    once; a bigger run writes uncalibrated parts first,
    computes the calibration from their T columns and then writes the final parts (memory flat in
    the number of SNPs either way).

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
