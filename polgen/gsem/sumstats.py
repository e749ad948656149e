"""Prepare GWAS summary statistics for multivariate GWAS, as R GenomicSEM's ``sumstats()``.

The reference (e.g. ``reference.1000G.maf.0.005.txt``: SNP CHR BP MAF A1 A2) is filtered on
``MAF >= maf_filter`` (and strand-ambiguous A/T, C/G SNPs removed when ``ambig``).  Each file is
then processed on its own (streamed trait by trait; only SNP, beta, se are kept), in R's order:

1. SNP IDs occurring more than once are all removed (``duplicated_snp``); alleles upper-cased
   and, unless ``keep_indel``, anything but A/C/G/T made missing;
2. inner merge with the reference (``not_in_reference``); missing P / effect removed;
3. ``varSNP = 2 f (1 - f)`` from the file's own allele frequency when it has one (folded; rows with
   a frequency of exactly 0 or 1 removed) and from the reference MAF otherwise;
4. odds ratios detected per file by ``round(median(effect)) == 1`` in every mode (log taken);
   effects of exactly 0 removed;
5. ``Z = sign(effect) sqrt(qchisq(P, 1, upper))`` computed without underflow;
6. ``OLS`` (unless ``betas``): ``beta = Z / sqrt(N varSNP)``; ``linprob``:
   ``beta = Z / sqrt(N/4 varSNP)``, ``SE = 1 / sqrt(N/4 varSNP)``;
7. effect flipped to the reference A1, rows matching neither reference allele removed;
8. INFO filter; then the output transformation:

   * OLS: ``beta``, ``se = |beta / Z|``;
   * linprob and ``se_logit``: ``beta / sqrt(beta^2 varSNP + pi^2/3)``, ``SE / sqrt(...)``;
   * otherwise (effect is an OR or logistic beta, SE on the OR scale):
     ``beta / sqrt(...)``, ``(SE / exp(beta)) / sqrt(...)``.

The result is the reference's columns (SNP, CHR, BP, MAF, A1, A2) inner-joined with
``beta.<trait>``, ``se.<trait>`` of every trait, in reference order.

Differences from R, all deliberate: R approximates Z by ``sqrt(-2 log P)`` for P < 1e-307
(Rmpfr); polgen computes the exact Z for every P.  R silently treats non-numeric P as missing and
continues when N is missing for OLS/linprob; polgen raises :class:`InputError` /
:class:`SchemaError` naming the file.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import polars as pl

from polgen import schema as S
from polgen.engine.method_log import default_stem, log_path, method_log
from polgen.errors import InputError, SchemaError
from polgen.gsem.munge import (
    DropCounter,
    _with_label,
    align_to_reference,
    case_control_hint,
    check_p,
    clean_alleles,
    normalise_inputs,
    odds_ratio_plan,
    per_trait,
    pick_effect,
    z_expr,
)
from polgen.io.sink import write_table_atomic
from polgen.io.sumstats import NEG_LOG10_P, ROW, read_sumstats

log = logging.getLogger("polgen")

_PI2_3 = math.pi**2 / 3.0
_AMBIGUOUS = [("T", "A"), ("A", "T"), ("C", "G"), ("G", "C")]


def read_reference(ref, maf_filter: float = 0.01, ambig: bool = False) -> pl.DataFrame:
    """The reference panel after R's MAF filter (and strand-ambiguous removal when ``ambig``)."""
    df = read_sumstats(ref, required=(S.SNP, S.A1, S.A2, S.MAF))
    df = df.filter(pl.col(S.MAF) >= maf_filter)
    if ambig:
        for x, y in _AMBIGUOUS:
            df = df.filter((pl.col(S.A1) != x) | (pl.col(S.A2) != y))
    if df.height == 0:
        raise InputError(
            f"no reference SNPs with MAF >= {maf_filter}",
            path=str(ref) if isinstance(ref, (str, os.PathLike)) else None,
        )
    return df


def _direction_filter(df: pl.DataFrame, counts: DropCounter, trait: str, label: str) -> pl.DataFrame:
    """R's ``direct.filter``: drop SNPs missing ("?") in half or more of the meta-analysed cohorts of
    the DIRECTION column (a missing or empty DIRECTION drops the row, as R's subset does)."""
    if S.DIRECTION not in df.columns:
        log.warning(
            "sumstats %s: no DIRECTION column, cannot filter on missingness by contributing cohorts, "
            "which may influence results",
            trait,
        )
        return df
    d = pl.col(S.DIRECTION)
    share = d.str.count_matches("?", literal=True) / d.str.len_chars()
    before = df.height
    df = counts.filter(df, (share < 0.5).fill_null(False), "direction_missing_cohorts")
    log.info(
        "sumstats %s: %d rows removed: missing in 50%% or more of the contributing cohorts (DIRECTION, %s)",
        trait,
        before - df.height,
        label,
    )
    return df


def sumstats_one(
    obj,
    ref: pl.DataFrame,
    trait: str,
    label: str,
    *,
    se_logit: bool = False,
    OLS: bool = False,
    linprob: bool = False,
    N: float | None = None,
    betas=False,
    info_filter: float = 0.6,
    keep_indel: bool = False,
    direct_filter: bool = False,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One trait: returns (frame SNP, beta.<trait>, se.<trait>; dropped-row summary)."""
    if OLS and linprob:
        raise InputError(f"trait {trait}: OLS and linprob cannot both be TRUE", path=label)
    counts = DropCounter(trait)
    needs_se = bool(se_logit) or not (linprob or OLS or se_logit)
    required = (S.SNP, S.A1, S.A2, S.P) + ((S.SE,) if needs_se and not linprob else ())
    try:
        df = read_sumstats(obj, required=required, keep_row=True)
    except InputError as exc:
        _with_label(exc, label)  # adds the file label to this exception, which re-raises unchanged
        raise
    effect = pick_effect(df, label, allow_z=bool(linprob or OLS))
    if N is not None and not (isinstance(N, float) and math.isnan(N)):
        if not float(N) > 0:
            raise InputError(f"N must be positive, got {N}", path=label)
        df = df.with_columns(pl.lit(float(N)).alias(S.N))
    if (linprob or (OLS and not betas)) and S.N not in df.columns:
        raise SchemaError(
            "a sample size (N column or the N argument) is needed for "
            + ("linprob" if linprob else "OLS")
            + " standardisation; found columns "
            f"{[c for c in df.columns if c != ROW]}{case_control_hint([c for c in df.columns if c != ROW])}",
            path=label,
            column="N",
        )
    # only the columns the method uses travel through the joins and filters
    keep = (ROW, S.SNP, S.A1, S.A2, effect, S.P, NEG_LOG10_P, S.N, S.MAF, S.INFO, S.SE, S.DIRECTION)
    df = df.select([c for c in keep if c in df.columns])
    check_p(df, label)
    counts.add("input_rows", 0, df.height)
    df = counts.filter(df, ~pl.col(S.SNP).is_duplicated(), "duplicated_snp")
    df = df.with_columns(pl.col(effect).alias("effect"), *clean_alleles(keep_indel))
    if direct_filter:
        df = _direction_filter(df, counts, trait, label)
    refc = ref.select(S.SNP, pl.col(S.A1).alias("A1_ref"), pl.col(S.A2).alias("A2_ref"), pl.col(S.MAF).alias("MAF_ref"))
    before = df.height
    df = refc.join(df, on=S.SNP, how="inner", maintain_order="left")
    counts.add("not_in_reference", before - df.height, df.height)
    df = counts.step(df, pl.col(S.P).is_not_null(), "missing_p")
    df = counts.step(df, pl.col("effect").is_not_null(), "missing_effect")
    if S.MAF in df.columns:
        df = df.with_columns(pl.when(pl.col(S.MAF) > 0.5).then(1 - pl.col(S.MAF)).otherwise(pl.col(S.MAF)).alias(S.MAF))
        df = counts.step(df, (pl.col(S.MAF) != 0) & (pl.col(S.MAF) != 1), "maf_0_or_1")
        f = pl.col(S.MAF)
    else:
        f = pl.col("MAF_ref")
    df = df.with_columns((2 * f * (1 - f)).alias("varSNP"))
    df, _ = odds_ratio_plan(df, counts, "sumstats", trait, label)
    df = counts.step(df, pl.col("effect") != 0, "zero_effect")
    df = df.with_columns(z_expr(S.P, "effect", NEG_LOG10_P if NEG_LOG10_P in df.columns else None).alias(S.Z))
    if OLS and not betas:
        df = df.with_columns((pl.col(S.Z) / (pl.col(S.N) * pl.col("varSNP")).sqrt()).alias("effect"))
    if linprob:
        q = (pl.col(S.N) / 4 * pl.col("varSNP")).sqrt()
        df = df.with_columns((pl.col(S.Z) / q).alias("effect"), (1 / q).alias(S.SE))
    df = align_to_reference(df, counts)
    if S.INFO in df.columns:
        df = counts.step(df, pl.col(S.INFO) >= info_filter, "info_below_filter")
    b, v = pl.col("effect"), pl.col("varSNP")
    denom = (b * b * v + _PI2_3).sqrt()
    if OLS:
        beta, se = b, (b / pl.col(S.Z)).abs()
    elif linprob or se_logit:
        beta, se = b / denom, pl.col(S.SE) / denom
    else:
        beta, se = b / denom, (pl.col(S.SE) / b.exp()) / denom
    nb, ns = f"beta.{trait}", f"se.{trait}"
    df = df.with_columns(beta.alias(nb), se.alias(ns))
    ok = pl.col(nb).is_not_null() & pl.col(ns).is_not_null() & pl.col(nb).is_not_nan() & pl.col(ns).is_not_nan()
    if linprob:
        ok = ok & (pl.col(nb) != 0) & (pl.col(ns) != 0)
    df = counts.step(df, ok, "missing_output")
    # an SE of 0 (or an overflow to inf) in the input cannot weight a GWAS: drop it with its reason
    good_se = (pl.col(ns) > 0) & pl.col(ns).is_finite() & pl.col(nb).is_finite()
    df = counts.step(df, good_se, "se_not_positive_finite")
    out = counts.finish(df).select(S.SNP, nb, ns)
    if out.height == 0:
        raise InputError("no SNPs left after QC and merging with the reference", path=label)
    zmean = float(cast(float, (out[nb] / out[ns]).abs().mean()))  # polars types mean() as any literal
    if zmean > 5:
        log.warning(
            "sumstats %s: the average |estimate / SE| is %.2f > 5: a column was probably "
            "misinterpreted or arguments misspecified",
            trait,
            zmean,
        )
    counts.add("output_rows", 0, out.height)
    log.info("sumstats %s: %d SNPs left after QC and merging with the reference", trait, out.height)
    return out, counts.frame()


def sumstats(
    files,
    ref,
    trait_names: Sequence[str] | None = None,
    *,
    se_logit,
    OLS=None,
    linprob=None,
    N=None,
    betas=None,
    info_filter: float = 0.6,
    maf_filter: float = 0.01,
    keep_indel: bool = False,
    parallel: bool = False,
    ambig: bool = False,
    out: str | os.PathLike | None = None,
    return_summary: bool = False,
    direct_filter: bool = False,
    log: bool | str | os.PathLike | None = None,
):
    """R GenomicSEM ``sumstats`` (rules in the module docstring).

    files: paths/globs/frames or a dict {trait: input}; ref: reference panel path or frame.
    se_logit, OLS, linprob, betas: per-file flags (a single bool applies to every file).
    N: per-file sample sizes overriding the files' N (None/NaN = use the file).
    out: a parquet path, written atomically.  Returns a LazyFrame (and the dropped-row summary
    when ``return_summary``).
    direct_filter: R's ``direct.filter``: drop SNPs whose DIRECTION column (DIRECTION, DIREC, DIRE,
    SIGN) shows "?" for half or more of the meta-analysed cohorts (a file without it is logged).
    log: R's log file: a path prefix ``P`` writes ``P_sumstats.log``, ``True`` writes
    ``<trait names joined by _>_sumstats.log`` in the working directory, ``None`` (default) writes
    that file beside ``out`` when ``out`` is given, ``False`` none.
    """
    items, names, labels = normalise_inputs(files, trait_names)
    if not isinstance(direct_filter, bool):
        raise InputError(f"direct_filter must be True or False, got {direct_filter!r}")
    by_default = False  # R's log beside the output (none if the call fails)
    if log is None and out is not None:
        by_default = True
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        log = Path(out).parent / default_stem(names, "sumstats")
    params = {
        "files": labels,
        "ref": ref if isinstance(ref, (str, os.PathLike)) else type(ref).__name__,
        "trait_names": names,
        "se_logit": se_logit,
        "OLS": OLS,
        "linprob": linprob,
        "N": N,
        "betas": betas,
        "info_filter": info_filter,
        "maf_filter": maf_filter,
        "keep_indel": keep_indel,
        "ambig": ambig,
        "direct_filter": direct_filter,
        "out": None if out is None else os.fspath(out),
    }
    with method_log(log_path(log, "sumstats", names), "sumstats", params, keep_failed=not by_default):
        return _sumstats(
            items, names, labels, ref, se_logit, OLS, linprob, N, betas, info_filter, maf_filter, keep_indel,
            parallel, ambig, out, return_summary, direct_filter,
        )  # fmt: skip


def _sumstats(
    items: list,
    names: list[str],
    labels: list[str],
    ref: Any,
    se_logit: Any,
    OLS: Any,
    linprob: Any,
    N: Any,
    betas: Any,
    info_filter: float,
    maf_filter: float,
    keep_indel: bool,
    parallel: bool,
    ambig: bool,
    out: str | os.PathLike | None,
    return_summary: bool,
    direct_filter: bool,
) -> pl.LazyFrame | tuple[pl.LazyFrame, pl.DataFrame]:
    n = len(items)
    se_logit = [bool(x) for x in per_trait(se_logit, n, "se_logit")]
    OLS = [bool(x) for x in per_trait(OLS, n, "OLS", False)]
    linprob = [bool(x) for x in per_trait(linprob, n, "linprob", False)]
    betas = [bool(x) for x in per_trait(betas, n, "betas", False)]
    Ns = per_trait(N, n, "N")
    for f in (info_filter, maf_filter):
        if not 0 <= float(f) <= 1:
            raise InputError(f"filters must lie in [0, 1], got {f}")
    reference = read_reference(ref, maf_filter, ambig)
    log.info("sumstats: %d reference SNPs after the MAF filter of %s", reference.height, maf_filter)

    def one(i: int):
        return sumstats_one(
            items[i],
            reference,
            names[i],
            labels[i],
            se_logit=se_logit[i],
            OLS=OLS[i],
            linprob=linprob[i],
            N=Ns[i],
            betas=betas[i],
            info_filter=info_filter,
            keep_indel=keep_indel,
            direct_filter=direct_filter,
        )

    if parallel and n > 1:
        with ThreadPoolExecutor(max_workers=min(n, os.cpu_count() or 1)) as ex:
            results = list(ex.map(one, range(n)))
    else:
        results = [one(i) for i in range(n)]
    merged = reference
    for frame, _ in results:
        merged = merged.join(frame, on=S.SNP, how="inner", maintain_order="left")
    log.info("sumstats: %d SNPs in the final multivariate summary statistics", merged.height)
    summary = pl.concat([s for _, s in results])
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_table_atomic(
            path,
            merged,
            metadata={
                S.META_METHOD: "polgen.gsem.sumstats",
                S.META_PARAMS: json.dumps(
                    {
                        "traits": names,
                        "sources": labels,
                        "se_logit": se_logit,
                        "OLS": OLS,
                        "linprob": linprob,
                        "betas": betas,
                        "N": Ns,
                        "info_filter": info_filter,
                        "maf_filter": maf_filter,
                        "keep_indel": keep_indel,
                        "ambig": ambig,
                        "direct_filter": direct_filter,
                    },
                    default=str,
                ),
            },
        )
        lf = pl.scan_parquet(path)
    else:
        lf = merged.lazy()
    return (lf, summary) if return_summary else lf


__all__ = ["sumstats", "sumstats_one", "read_reference"]
