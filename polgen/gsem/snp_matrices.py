"""Per-SNP (per-gene) S_full / V_full as objects: R GenomicSEM's ``addSNPs`` and ``addGenes``.

For SNP i with SNP variance ``v = 2 MAF (1 - MAF)`` (``HSQ`` for TWAS genes), GWAS betas ``b`` and
SEs ``s`` over k traits:

* ``S_full`` ((k+1) x (k+1), the SNP first): ``v`` on the corner, ``v * b`` for the SNP-trait
  covariances, the LDSC genetic covariance ``S`` for the traits;
* ``V_full`` (k* x k*, k* = (k+1)(k+2)/2, rows in ``vech(S_full)`` order): ``SNPSE^2`` for the SNP
  variance (0.0005^2 unless given; always 0.0005^2 for genes, as ``addGenes``), the SNP's
  sampling covariance ``V_SNP`` corrected by the LDSC intercepts as ``GC`` says
  (``standard``: sqrt(I_tt), ``conserv``: I_tt, ``none``), then the LDSC ``V``;
* either matrix smoothed by ``Matrix::nearPD`` when it is not positive definite (R's test, flagged
  in ``S_smoothed`` / ``V_smoothed``).

The construction is the one the per-SNP GWAS runs (:mod:`polgen.kernels.snp_moments`), here kept as
output (:mod:`polgen.kernels.snp_matrices`).  In memory the result is a :class:`SnpMatrices`
(arrays ``[n, k+1, k+1]`` and ``[n, k*, k*]``); with ``out=`` the SNPs are written batch by batch
to a resumable run folder (:func:`polgen.engine.run_to_sink`; one row per SNP, the lower triangles
of both matrices as columns, declared as ``gsem_add_snps`` in :mod:`polgen.schema`) and a
LazyFrame over it is returned (:meth:`SnpMatrices.from_frame` rebuilds the arrays of any slice).
A SNP with unusable inputs (MAF 0/1/missing, a missing beta, an SE <= 0) gets NaN matrices,
``valid = False`` and a ``warning``; the run goes on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from polgen.errors import InputError, SchemaError
from polgen.gsem.covstruc import CovStruc
from polgen.gsem.gwas import _source
from polgen.gsem.gwas_plan import common_setup, plan_base, resolve_columns
from polgen.options import GCMode, check_option

log = logging.getLogger("polgen")

__all__ = ["SnpMatrices", "add_genes", "add_snps", "matrix_columns"]

_FLAGS = ("S_smoothed", "V_smoothed", "valid", "warning")
#: SNPs per batch / part of a streamed run: rows are wide (55 V columns for 3 traits, 231 for 5)
ADD_BATCH = 50_000


def matrix_columns(k: int) -> tuple[list[str], list[str]]:
    """Column names of the lower triangles of S_full and V_full for k traits, 1-based
    (``S_2_1`` is S_full[2, 1], the covariance of the SNP and the first trait), column by column
    as R's ``vech``."""
    K1 = k + 1
    Kst = K1 * (K1 + 1) // 2
    s = [f"S_{r + 1}_{c + 1}" for c in range(K1) for r in range(c, K1)]
    v = [f"V_{r + 1}_{c + 1}" for c in range(Kst) for r in range(c, Kst)]
    return s, v


def _lower(a: np.ndarray) -> np.ndarray:
    """[n, m, m] -> [n, m(m+1)/2], lower triangles column by column."""
    m = a.shape[1]
    c, r = np.triu_indices(m)  # (c <= r) pairs ordered by c then r: vech order
    return a[:, r, c]


def _from_lower(x: np.ndarray, m: int) -> np.ndarray:
    c, r = np.triu_indices(m)
    out = np.empty((x.shape[0], m, m))
    out[:, r, c] = x
    out[:, c, r] = x
    return out


def _frame(ids, s_low, v_low, s_sm, v_sm, valid, warning) -> pl.DataFrame:
    """The ``gsem_add_snps`` frame from lower triangles laid out one output column per row."""
    s_cols, v_cols = matrix_columns(int(round((np.sqrt(8 * s_low.shape[0] + 1) - 1) / 2)) - 1)
    cols = [pl.Series(c, s_low[j]) for j, c in enumerate(s_cols)]
    cols += [pl.Series(c, v_low[j]) for j, c in enumerate(v_cols)]
    cols += [
        pl.Series("S_smoothed", np.asarray(s_sm, dtype=bool)),
        pl.Series("V_smoothed", np.asarray(v_sm, dtype=bool)),
        pl.Series("valid", np.asarray(valid, dtype=bool)),
        pl.Series("warning", warning, dtype=pl.String),
    ]
    return pl.concat([ids, pl.DataFrame(cols)], how="horizontal")


@dataclass
class SnpMatrices:
    """Per-SNP (or per-gene) Genomic SEM moments, as R's ``addSNPs`` / ``addGenes`` output.

    ``names``: the variables of S_full (``"SNP"`` or ``"Gene"``, then the traits).
    ``S_full`` [n, k+1, k+1], ``V_full`` [n, k*, k*] (NaN for an invalid row), ``ids``: the identity
    columns of the input (R's ``RS`` / ``ID``), ``S_smoothed`` / ``V_smoothed`` / ``valid``
    (bool [n]) and ``warning`` (why a row is invalid, "" otherwise).
    """

    names: list[str]
    S_full: np.ndarray
    V_full: np.ndarray
    ids: pl.DataFrame
    S_smoothed: np.ndarray
    V_smoothed: np.ndarray
    valid: np.ndarray
    warning: list[str]

    def __len__(self) -> int:
        return int(self.S_full.shape[0])

    def __repr__(self) -> str:
        return (
            f"SnpMatrices({len(self)} x {self.names[0]}, traits {self.names[1:]}, "
            f"{int((~self.valid).sum())} invalid, {int(self.S_smoothed.sum())} S / "
            f"{int(self.V_smoothed.sum())} V smoothed)"
        )

    def covstruc(self, i: int) -> CovStruc:
        """Row ``i`` as a covariance structure (``S = S_full[i]``, ``V = V_full[i]``) that
        :func:`polgen.gsem.usermodel` fits, as R's ``usermodel`` takes an ``addSNPs`` element."""
        if not self.valid[i]:
            raise InputError(f"row {i} has no S_full/V_full: {self.warning[i]}", row=i)
        K1 = len(self.names)
        return CovStruc(S=self.S_full[i], V=self.V_full[i], I=np.eye(K1), trait_names=list(self.names))

    def to_frame(self) -> pl.DataFrame:
        """One row per SNP in the declared ``gsem_add_snps`` layout (ids, ``S_r_c``, ``V_r_c``, flags)."""
        return _frame(
            self.ids,
            np.ascontiguousarray(_lower(self.S_full).T),
            np.ascontiguousarray(_lower(self.V_full).T),
            self.S_smoothed,
            self.V_smoothed,
            self.valid,
            self.warning,
        )

    @classmethod
    def from_frame(cls, frame: pl.DataFrame | pl.LazyFrame, names: list[str] | None = None) -> SnpMatrices:
        """Rebuild the arrays from rows written by ``add_snps(out=...)`` / :meth:`to_frame`
        (collect a slice of a big run first).  ``names`` default to ``SNP``/``Gene`` + ``T1..Tk``."""
        df = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
        s_have = [c for c in df.columns if c.startswith("S_") and c != "S_smoothed"]
        K1 = int(round((np.sqrt(8 * len(s_have) + 1) - 1) / 2))
        s_cols, v_cols = matrix_columns(K1 - 1)
        miss = [c for c in s_cols + v_cols + list(_FLAGS) if c not in df.columns]
        if K1 < 2 or miss:
            raise SchemaError(f"frame is not add_snps output: lacks {miss[:4]}", column=(miss or ["S_1_1"])[0])
        id_cols = [c for c in df.columns if c not in set(s_cols) | set(v_cols) | set(_FLAGS)]
        if names is None:
            names = ["Gene" if "Gene" in id_cols else "SNP"] + [f"T{t}" for t in range(1, K1)]
        if len(names) != K1:
            raise InputError(f"{len(names)} names for S_full of {K1} variables")
        Kst = K1 * (K1 + 1) // 2
        return cls(
            names=list(names),
            S_full=_from_lower(df.select(s_cols).to_numpy().astype(np.float64), K1),
            V_full=_from_lower(df.select(v_cols).to_numpy().astype(np.float64), Kst),
            ids=df.select(id_cols),
            S_smoothed=df["S_smoothed"].to_numpy(),
            V_smoothed=df["V_smoothed"].to_numpy(),
            valid=df["valid"].to_numpy(),
            warning=df["warning"].to_list(),
        )


# ----------------------------------------------------------------------------------------------
@dataclass
class _AddTask:
    base: dict  # plan_base fields: LD inputs, GC, varse2
    beta_cols: list[str]
    se_cols: list[str]
    id_cols: list[str]
    var_col: str
    source: Any
    offset: int
    length: int
    label: str = ""


def _batch(task: _AddTask, lower: bool):
    """(rows, S, V, status, flags, warnings) of a task (see :func:`polgen.kernels.snp_matrices.add_batch`)."""
    from polgen.kernels.gwas_codes import STATUS_REASONS
    from polgen.kernels.snp_matrices import add_batch
    from polgen.kernels.snp_moments import snp_batch

    src = task.source
    if isinstance(src, pl.DataFrame):
        df = src
    else:
        lf = pl.scan_parquet(src) if isinstance(src, str) else src
        df = lf.slice(task.offset, task.length).collect()
    b = task.base
    beta = df.select(task.beta_cols).cast(pl.Float64).to_numpy()
    se = df.select(task.se_cols).cast(pl.Float64).to_numpy()
    x = df[task.var_col].cast(pl.Float64).fill_null(np.nan).to_numpy()
    var = x if task.var_col == "HSQ" else 2.0 * x * (1.0 - x)
    batch = snp_batch(beta, se, var, b["S_LD"], b["V_LD"], b["I_LD"], b["gc"], b["varse2"], b["v_pd_known"])
    S, V, status, flags = add_batch(batch, lower=lower)
    reasons = STATUS_REASONS
    if task.var_col == "HSQ":
        reasons = {**reasons, 1: "HSQ is not > 0 (missing, 0 or negative)"}
    warning = [reasons.get(int(s), f"status {int(s)}") for s in status] if status.any() else [""] * len(status)
    return df, S, V, status, flags, warning


def _compute(task: _AddTask) -> SnpMatrices:
    df, S, V, status, flags, warning = _batch(task, lower=False)
    pred = "Gene" if task.var_col == "HSQ" else "SNP"
    return SnpMatrices(
        names=[pred, *task.base["traits"]],
        S_full=S,
        V_full=V,
        ids=df.select(task.id_cols),
        S_smoothed=(flags & 1) != 0,
        V_smoothed=(flags & 2) != 0,
        valid=status == 0,
        warning=warning,
    )


def _add_task(task: _AddTask) -> pl.DataFrame:
    """Module-level batch function of a streamed run (picklable for process / Dask executors):
    the kernels write the lower triangles straight into the output columns."""
    df, s_low, v_low, status, flags, warning = _batch(task, lower=True)
    return _frame(df.select(task.id_cols), s_low, v_low, (flags & 1) != 0, (flags & 2) != 0, status == 0, warning)


def _run_add(
    kind: str, covstruc, snps, *, GC, SNPSE, out, batch_size, resume, overwrite, executor, progress
) -> SnpMatrices | pl.LazyFrame:
    GC = check_option("GC", GC, GCMode)
    twas = kind == "genes"
    cs, gc, varse2, _, I = common_setup(covstruc, GC, SNPSE, None, "DWLS")
    traits = list(cs.trait_names)
    base = plan_base(kind, traits, "Gene" if twas else "SNP", twas, cs.S, cs.V, I, gc, varse2, 0.0, False, False)
    src, schema, n = _source(snps)
    beta_cols, se_cols, id_cols, var_col = resolve_columns(schema, traits, twas)
    if batch_size is None:
        batch_size = ADD_BATCH
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    fn = "add_genes" if twas else "add_snps"
    tasks = []
    for off in range(0, max(n, 1), batch_size):
        ln = min(batch_size, n - off)
        s = src.slice(off, ln) if isinstance(src, pl.DataFrame) else src
        tasks.append(
            _AddTask(base, beta_cols, se_cols, id_cols, var_col, s, off, ln, f"{fn} rows {off}-{off + ln - 1}")
        )
    if out is None:
        K1 = len(traits) + 1
        Kst = K1 * (K1 + 1) // 2
        gb = n * (K1 * K1 + Kst * Kst) * 8 / 1e9
        if gb > 1.0:
            log.warning("%s: %d rows in memory take %.1f GB of S_full/V_full; out= streams them to disk", fn, n, gb)
        parts = [_compute(t) for t in tasks]
        res = parts[0] if len(parts) == 1 else _concat(parts)
        bad = int((~res.valid).sum())
        if bad:
            log.warning("%s: %d of %d rows have unusable inputs (valid = False; warning says why)", fn, bad, len(res))
        return res
    from polgen.engine import run_to_sink

    params = {
        "method": f"gsem.{fn}",
        "traits": traits,
        "S": cs.S.tolist(),
        "V": cs.V.tolist(),
        "I": cs.I.tolist(),
        "GC": GC,
        "SNPSE": SNPSE,
        "batch_size": batch_size,
    }
    sink = run_to_sink(
        _add_task,
        tasks,
        out,
        params,
        resume=resume,
        overwrite=overwrite,
        executor=executor,
        progress=progress,
        description=fn,
        metadata={"polgen.method": f"gsem.{fn}"},
    )
    return sink.scan()


def _concat(parts: list[SnpMatrices]) -> SnpMatrices:
    return SnpMatrices(
        names=parts[0].names,
        S_full=np.concatenate([p.S_full for p in parts]),
        V_full=np.concatenate([p.V_full for p in parts]),
        ids=pl.concat([p.ids for p in parts], how="vertical"),
        S_smoothed=np.concatenate([p.S_smoothed for p in parts]),
        V_smoothed=np.concatenate([p.V_smoothed for p in parts]),
        valid=np.concatenate([p.valid for p in parts]),
        warning=[w for p in parts for w in p.warning],
    )


def add_snps(
    covstruc: Any,
    snps: Any,
    SNPSE: float | None = None,
    GC: GCMode = "standard",
    out: str | os.PathLike | None = None,
    *,
    batch_size: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    executor: Any = None,
    progress: bool | None = None,
) -> SnpMatrices | pl.LazyFrame:
    """Per-SNP S_full and V_full (R ``addSNPs``).

    Parameters
    ----------
    covstruc
        LDSC output (:class:`~polgen.gsem.covstruc.CovStruc`, mapping or JSON/parquet path).
    snps
        ``sumstats()`` output (DataFrame, LazyFrame or parquet path/glob) with ``SNP, MAF,
        beta.<trait>, se.<trait>`` (``CHR, BP, A1, A2`` kept as identity columns when present).
    SNPSE
        SE of the SNP variance; None: 0.0005 (R's default, treating MAF as fixed).
    GC
        Correction of the SNP's sampling covariance by the LDSC intercepts: ``"standard"``
        (sqrt of the univariate intercepts), ``"conserv"`` (the intercepts), ``"none"``.
    out
        A run folder: rows are written in batches of ``batch_size`` (resumable, ``resume=``,
        ``overwrite=``, ``executor=``, ``progress=`` as ``user_gwas``) and a LazyFrame over them
        is returned; None: computed in memory.

    Returns
    -------
    SnpMatrices | polars.LazyFrame
        In memory the arrays ``S_full`` [n, k+1, k+1] and ``V_full`` [n, k*, k*] with flags;
        with ``out=`` the ``gsem_add_snps`` rows (:meth:`SnpMatrices.from_frame` rebuilds arrays).
    """
    return _run_add(
        "snps",
        covstruc,
        snps,
        GC=GC,
        SNPSE=SNPSE,
        out=out,
        batch_size=batch_size,
        resume=resume,
        overwrite=overwrite,
        executor=executor,
        progress=progress,
    )


def add_genes(
    covstruc: Any,
    genes: Any,
    GC: GCMode = "standard",
    out: str | os.PathLike | None = None,
    *,
    batch_size: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    executor: Any = None,
    progress: bool | None = None,
) -> SnpMatrices | pl.LazyFrame:
    """Per-gene S_full and V_full for TWAS genes (R ``addGenes``).

    Parameters
    ----------
    covstruc
        LDSC output (:class:`~polgen.gsem.covstruc.CovStruc`, mapping or JSON/parquet path).
    genes
        Gene associations with ``Gene, Panel, HSQ, beta.<trait>, se.<trait>`` (the frame
        ``read_fusion`` makes); ``HSQ`` (the expression heritability) is the gene's variance.
    GC
        ``"standard"``, ``"conserv"`` or ``"none"``, as :func:`add_snps`.
    out
        A run folder for streamed output, as :func:`add_snps`.

    Returns
    -------
    SnpMatrices | polars.LazyFrame
        As :func:`add_snps`, with ``Gene`` as the first variable; the variance of HSQ has SE
        0.0005 (fixed in R's ``addGenes``).  A gene whose HSQ is missing or <= 0 is invalid.
    """
    return _run_add(
        "genes",
        covstruc,
        genes,
        GC=GC,
        SNPSE=None,
        out=out,
        batch_size=batch_size,
        resume=resume,
        overwrite=overwrite,
        executor=executor,
        progress=progress,
    )
