"""Genomic SEM GWAS: ``user_gwas`` and ``commonfactor_gwas``, streamed in SNP batches.

These reproduce R GenomicSEM's ``userGWAS`` and ``commonfactorGWAS`` per SNP:

* ``S_full = [[v, v b'], [v b, S_LD]]`` with ``v = 2 MAF (1 - MAF)`` (``HSQ`` for TWAS),
  ``V_full = blockdiag(varSNPSE^2, V_SNP, V_LD)`` (``varSNPSE = 0.0005`` unless ``SNPSE``),
  ``diag(I) <- max(diag(I), 1)``, ``V_SNP`` for ``GC`` = standard / conserv / none, nearPD
  smoothing when either matrix is not positive definite;
* lavaan's model as GenomicSEM calls it (``sample.cov`` input, so the SNP variance is a free
  parameter and ``df = (p (p + 1) / 2) - npar``); DWLS with weights ``diag(V_full)^-1`` or ML;
* ``fix_measurement`` as R does it: the model without its SNP lines is fit once to ``S_LD``,
  every parameter that is not a (residual) variance is fixed at that estimate, variances stay
  free per SNP together with the SNP rows of the full model;
* sandwich SEs with ``V_full``; ``chisq = eta' V_full^-1 eta``, ``AIC = chisq + 2 npar``,
  ``Q_SNP`` per factor with a ``F ~ SNP`` path, ``Z_smooth`` (``smooth_check``);
* commonfactorGWAS's model (first loading fixed to 1, ``F1 ~ SNP``, ``trait ~ 0*SNP``), its SE
  (the sandwich SE of ``F1 ~ SNP``) and its ``Q``: the Wald statistic of the direct SNP effects
  freed in a second model whose loadings, ``F1 ~ SNP``, factor and SNP variances are fixed at the
  first model's estimates, ``Q_df = k - 1``.

The model language is lavaan's, parsed by :func:`polgen.gsem.syntax.parse_model` (the one parser
of the project) and laid out by :func:`polgen.gsem.ram.kernel_layout`:

* labels shared by several parameters and ``a == b`` / ``a == number`` constraints are one
  parameter (reparametrisation; lavaan's df and npar count it once);
* bounds (``a > 0.001``, ``a < 1``, ``lower()`` / ``upper()``) as lavaan's constrained solution:
  a SNP whose estimate would leave the interval is refit with the parameter held at the bound
  (active set); its SE is NaN (lavaan's NA) and the other SEs are the sandwich on the remaining
  free parameters (lavaan's constrained information: active constraints restrict the bread to
  their null space);
* defined parameters (``h := a*b``): the expression at the estimates, SE by the delta method
  (Jacobian by complex step, as lavaan) with the sandwich covariance (DWLS; NaN for ML, as R's
  userGWAS); ``sub=`` selects them by name or by ``name:=expression``;
* linear constraints on parameters estimated per SNP (``b1 == 2*b2``, ``b1 > b2``,
  ``a + b == 1``, ``d := b1 - b2; d > 0``; DWLS or ML): fitted per SNP by
  :mod:`polgen.kernels.gwas_constrained` (null-space Gauss-Newton, inequalities by an active set
  that releases a constraint whose Lagrange multiplier turns negative), bounds joining them as
  inequalities; chi-square, Q_SNP and SEs are then evaluated at the constrained estimates as R's
  userGWAS does (its sandwich takes lavaan's delta over every free parameter: the unconstrained
  bread at the constrained point); df and AIC count the independent equalities as lavaan's
  npar.  Non-linear ones (``b1 == b2^2``, ``b1*b2 > 0.0001``) by sequential linearisation around
  that fit (:func:`polgen.gsem.gwas_batch.compute_batch`; an inequality is held once a SNP's fit
  breaks it, released when its multiplier turns negative).  R's userGWAS stops on such
  constraints with fix_measurement=TRUE (its no-SNP fit keeps the constraint line); polgen fits
  them there too.

The model is parsed and compiled once per run (:mod:`polgen.gsem.gwas_plan`,
:mod:`polgen.gsem.gwas_commonfactor`); per-SNP fits run in numba
(:mod:`polgen.kernels.gwas`) over batches of rows read from parquet / a LazyFrame, through
:func:`polgen.engine.run_to_sink` when ``out=`` is given (resumable, one parquet part per batch).
Each batch becomes result rows in :mod:`polgen.gsem.gwas_batch`.  A SNP that fails (bad input,
no convergence) gets ``converged = False`` and a ``warning``; the run goes on.

Where the fit surface has several local minima (commonfactorGWAS's marker-indicator model with
free factor variance; ``fix_measurement=False``), the lowest objective wins. For commonfactor_gwas
under DWLS the SNP variance, the SNP effect times the factor variance and the factor variance are
solved in closed form for given loadings (variable projection), so only the k-1 free loadings are
iterated (Gauss-Newton or Newton, whichever is better per step), from the no-SNP solution, then
from the best-scoring of the sign patterns and fixed loading directions while one scores below
1.1 x the best objective so far; SNPs whose minimum lies on a ridge
(a loading or a variance running off to infinity) are flagged ``converged=False``. lavaan's
``nlminb`` reaches the same minimum on the reference fixtures and on the SNPs where R converges
(R can stop at a higher local minimum because it starts every SNP from the first SNP's estimates).
ML fits use multiple starts over the full parameter vector.  ``fix_measurement=False`` on the
common-factor model written with a fixed factor variance (``F1 =~ NA*T1 + ... + Tk``, ``F1 ~~
1*F1``, ``F1 ~ SNP``, ``SNP ~~ SNP``; any trait order) is commonfactorGWAS's model re-identified:
it is fit by the same reduced problem and mapped back (:mod:`polgen.gsem.gwas_cfuser`: a minimum
with factor residual variance <= 0 is no minimum of the user's model, whose fit then runs off).
The other models with several starts (``fix_measurement=False``) fit every SNP from the no-SNP
solution and refit from the other sign / scale starts only the SNPs whose fit did not converge,
changed a loading's sign or has a chi-square above its df
(:func:`polgen.gsem.gwas_batch.multistart_trigger`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from polgen.errors import InputError
from polgen.gsem.gwas_batch import compute_batch
from polgen.gsem.gwas_commonfactor import plan_commonfactor
from polgen.gsem.gwas_plan import DEFAULT_BATCH, Plan, as_covstruc, model_text, plan_user, resolve_columns
from polgen.options import Estimation, GCMode, MLStandardErrors

log = logging.getLogger("polgen")

__all__ = ["commonfactor_gwas", "user_gwas"]


# ==============================================================================================
# sources, tasks, driver
# ==============================================================================================
# ==============================================================================================
@dataclass
class _Task:
    plan: Plan
    source: Any  # str path/glob | pl.LazyFrame | pl.DataFrame (the slice itself)
    offset: int
    length: int
    label: str = ""
    printwarn: bool = True  # False: the ``warning`` column is left out (R's printwarn=FALSE)


def _load(task: _Task) -> pl.DataFrame:
    src = task.source
    if isinstance(src, pl.DataFrame):
        return src
    if isinstance(src, str):
        lf = pl.scan_parquet(src)
    else:
        lf = src
    return lf.slice(task.offset, task.length).collect()


def _gwas_task(task: _Task) -> pl.DataFrame:
    """Module-level batch function (picklable for process / Dask executors)."""
    frame = compute_batch(task.plan, _load(task))
    return frame if task.printwarn else frame.drop("warning")


def _source(snps) -> tuple[Any, dict, int]:
    """(source for tasks, schema, number of rows) without materialising a lazy / file input."""
    if isinstance(snps, (str, os.PathLike)):
        path = os.fspath(snps)
        if os.path.isdir(path):
            path = os.path.join(path, "*.parquet")
        try:
            lf = pl.scan_parquet(path)
            schema = dict(lf.collect_schema())
            n = int(lf.select(pl.len()).collect().item())
        except Exception as exc:  # noqa: BLE001 - polars raises several kinds
            raise InputError(f"cannot read sumstats parquet: {exc}", path=path) from exc
        return path, schema, n
    if isinstance(snps, pl.LazyFrame):
        schema = dict(snps.collect_schema())
        n = int(snps.select(pl.len()).collect().item())
        return snps, schema, n
    if isinstance(snps, pl.DataFrame):
        return snps, dict(snps.schema), snps.height
    try:
        df = pl.DataFrame(snps)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"snps must be a polars frame, a parquet path or a table, got {type(snps).__name__}") from exc
    return df, dict(df.schema), df.height


def _run(
    plan: Plan, snps, *, batch_size, out, resume, overwrite, executor, progress, params, description, printwarn=True
):
    src, schema, n = _source(snps)
    plan.beta_cols, plan.se_cols, plan.id_cols, plan.var_col = resolve_columns(schema, plan.traits, plan.twas)
    if batch_size is None:
        batch_size = DEFAULT_BATCH
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    tasks = []
    for off in range(0, n, batch_size):
        ln = min(batch_size, n - off)
        s = src.slice(off, ln) if isinstance(src, pl.DataFrame) else src
        tasks.append(_Task(plan, s, off, ln, f"{description} rows {off}-{off + ln - 1}", printwarn))
    if not tasks:  # no rows: one empty batch, so the output still has its schema
        tasks.append(
            _Task(
                plan,
                src.slice(0, 0) if isinstance(src, pl.DataFrame) else src,
                0,
                0,
                f"{description} (no rows)",
                printwarn,
            )
        )
    if out is not None:
        from polgen.engine import run_to_sink

        sink = run_to_sink(
            _gwas_task,
            tasks,
            out,
            params,
            resume=resume,
            overwrite=overwrite,
            executor=executor,
            progress=progress,
            description=description,
            metadata={"polgen.method": f"gsem.{plan.kind}_gwas"},
        )
        result = sink.scan()
        _log_failures(result, description)
        return result
    from polgen.engine import run_tasks

    parts = list(run_tasks(_gwas_task, tasks, executor=executor, progress=progress, description=description))
    frame = pl.concat(parts, how="vertical")
    _log_failures(frame, description)
    return frame


def _log_failures(result: pl.DataFrame | pl.LazyFrame, description: str) -> None:
    """Log how many SNPs did not converge (a count over the ``converged`` column; R prints nothing)."""
    if "converged" not in result.collect_schema().names():
        return
    counts = result.lazy().select(pl.len().alias("rows"), (~pl.col("converged")).sum().alias("failed")).collect()
    rows, failed = int(counts["rows"][0]), int(counts["failed"][0])
    if failed:
        log.warning(
            "%s: %d of %d result rows are from SNPs whose fit did not converge (converged = False%s)",
            description,
            failed,
            rows,
            "; the warning column says why" if "warning" in result.collect_schema().names() else "",
        )


def _params(kind, covstruc, **kw) -> dict:
    cs = as_covstruc(covstruc)
    out = {
        "method": f"gsem.{kind}_gwas",
        "traits": list(cs.trait_names),
        "S": cs.S.tolist(),
        "V": cs.V.tolist(),
        "I": cs.I.tolist(),
    }
    out.update({k: v for k, v in kw.items()})
    return out


def user_gwas(
    snps,
    covstruc,
    model: str,
    *,
    estimation: Estimation = "DWLS",
    GC: GCMode = "standard",
    fix_measurement: bool = True,
    std_lv: bool = False,
    Q_SNP: bool = False,
    smooth_check: bool = False,
    SNPSE: float | None = None,
    TWAS: bool = False,
    toler: float | None = None,
    sub: str | Sequence[str] | None = None,
    long: bool = False,
    batch_size: int | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    executor=None,
    progress: bool | None = None,
    ml_se: MLStandardErrors = "R",
    printwarn: bool = True,
) -> pl.DataFrame | pl.LazyFrame:
    """Multivariate GWAS with a user-specified Genomic SEM model (R ``userGWAS``).

    ``snps``: the output of ``sumstats()`` as a LazyFrame, DataFrame or parquet path/glob with
    ``SNP, CHR, BP, MAF, A1, A2, beta.<trait>, se.<trait>`` (``Gene, Panel, HSQ`` with
    ``TWAS=True``).  ``covstruc``: LDSC output (:class:`~polgen.gsem.covstruc.CovStruc`, mapping or
    path).  ``model``: lavaan syntax (text or a file) with at least one ``~ SNP`` regression.

    The model may use labels (``a*x``; shared labels are one parameter), ``a == b`` and
    ``a == number``, bounds (``a > 0.001``, ``a < 1``) and defined parameters (``h := a*b``),
    as lavaan (see the module docstring).  General constraints on the measurement model
    (``a == 2*b``, ``a > b``, ``a == b^2``, constraints on ``:=`` terms) are fitted on the no-SNP
    model with ``fix_measurement=True`` and then hold for every SNP; on parameters estimated per
    SNP they are fitted per SNP under DWLS or ML (see the module docstring).  Factor signs
    follow lavaan's (the first free loading of a factor whose scale is set by its variance is
    positive), under every estimator.

    Returns one row per SNP and reported parameter (``F1 ~ SNP`` ... and every ``:=`` parameter;
    ``sub=["F1~SNP", "h"]`` picks parameters, ``long=True`` gives every parameter of the model)
    with ``est, se, z, p, log10p,
    chisq, chisq_df, chisq_p, AIC``, ``Q_SNP, Q_SNP_df, Q_SNP_p`` (``Q_SNP=True``), ``Z_smooth``
    (``smooth_check=True``), ``converged`` and ``warning`` (left out with ``printwarn=False``, as R's
    ``printwarn``; a run logs how many SNPs did not converge either way).  With ``out=`` the rows are written in
    batches of ``batch_size`` SNPs to a resumable parquet directory and a LazyFrame over it is
    returned; otherwise a DataFrame.

    ``ml_se`` (ML only): ``"R"`` reproduces R GenomicSEM's ML sandwich SEs, which pair the ML
    model's moments with ``V_full`` entries in the variable order of a DWLS fit (the SNP moved
    from last to first); ``"aligned"`` uses the consistently ordered sandwich.
    """
    if not isinstance(printwarn, bool):
        raise InputError(f"printwarn must be True or False, got {printwarn!r}")
    if ml_se not in ("R", "aligned"):
        raise InputError(f"ml_se must be 'R' or 'aligned', got {ml_se!r}")
    if toler is not None and toler is not False and not (isinstance(toler, (int, float)) and toler >= 0):
        raise InputError(f"toler must be a non-negative number, got {toler!r}")
    src_schema = None
    plan = plan_user(
        src_schema,
        covstruc,
        model,
        estimation,
        GC,
        fix_measurement,
        std_lv,
        Q_SNP,
        smooth_check,
        SNPSE,
        TWAS,
        toler,
        sub,
        long,
        ml_se=ml_se,
    )
    params = _params(
        "user",
        covstruc,
        model=model_text(model),
        estimation=estimation,
        GC=GC,
        fix_measurement=fix_measurement,
        std_lv=std_lv,
        Q_SNP=Q_SNP,
        smooth_check=smooth_check,
        SNPSE=SNPSE,
        TWAS=TWAS,
        toler=toler,
        sub=sub,
        long=long,
        batch_size=batch_size or DEFAULT_BATCH,
        ml_se=ml_se,
        **({} if printwarn else {"printwarn": False}),  # runs written before printwarn resume unchanged
    )
    return _run(
        plan,
        snps,
        batch_size=batch_size,
        out=out,
        resume=resume,
        overwrite=overwrite,
        executor=executor,
        progress=progress,
        params=params,
        description="user_gwas",
        printwarn=printwarn,
    )


def commonfactor_gwas(
    snps,
    covstruc,
    *,
    estimation: Estimation = "DWLS",
    GC: GCMode = "standard",
    smooth_check: bool = False,
    SNPSE: float | None = None,
    TWAS: bool = False,
    toler: float | None = None,
    batch_size: int | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    executor=None,
    progress: bool | None = None,
    ml_se: MLStandardErrors = "R",
) -> pl.DataFrame | pl.LazyFrame:
    """Common-factor GWAS (R ``commonfactorGWAS``): ``F1 =~ traits`` (first loading 1),
    ``F1 ~ SNP``, ``trait ~ 0*SNP``; one row per SNP with ``est, se`` (sandwich SE of
    ``F1 ~ SNP``), ``z, p, log10p``, ``Q, Q_df = k - 1, Q_p`` (heterogeneity: the direct SNP
    effects freed), ``Z_smooth`` with ``smooth_check``, ``converged``, ``warning``."""
    if ml_se not in ("R", "aligned"):
        raise InputError(f"ml_se must be 'R' or 'aligned', got {ml_se!r}")
    plan = plan_commonfactor(None, covstruc, estimation, GC, smooth_check, SNPSE, TWAS, toler, ml_se=ml_se)
    params = _params(
        "commonfactor",
        covstruc,
        estimation=estimation,
        GC=GC,
        smooth_check=smooth_check,
        SNPSE=SNPSE,
        TWAS=TWAS,
        toler=toler,
        batch_size=batch_size or DEFAULT_BATCH,
        ml_se=ml_se,
    )
    return _run(
        plan,
        snps,
        batch_size=batch_size,
        out=out,
        resume=resume,
        overwrite=overwrite,
        executor=executor,
        progress=progress,
        params=params,
        description="commonfactor_gwas",
    )
