"""Simulated GWAS summary statistics under the multivariable LDSC model, as R GenomicSEM's
``simLDSC``.

For every SNP ``j`` of an LD-score folder (``{chr}.l2.ldscore.gz``, total ``M`` from the
``{chr}.l2.M_5_50`` files) the z statistics of the k traits are one draw of ``N(0, Sigma_j)`` with

* ``Sigma_j[a, a] = N_a Sigma[a, a] / M * L2_j + int_a`` (heritability and LDSC intercept),
* ``Sigma_j[a, b] = sqrt(N_a N_b) Sigma[a, b] / M * L2_j + rPheno[a, b] N_ab / sqrt(N_a N_b)``
  (genetic covariance, and the phenotypic correlation carried by the ``N_ab`` shared samples),

where ``Sigma`` is the population genetic covariance (``covmat``: a matrix, or lavaan syntax whose
model-implied covariance is used), ``N`` the sample sizes (a k x k matrix with overlaps off the
diagonal as R; a scalar with ``N_ab = N n_overlap`` as R; or k sizes with ``N_ab = n_overlap
sqrt(N_a N_b)``), ``rPheno`` the phenotypic correlations (default the genetic correlations, as R)
and ``int`` the intercepts (default 1).  ``ldsc`` on the output recovers ``Sigma`` (on the scale of
the LD scores' ``M``) within its standard errors.

Differences from R, on purpose: R's ``int`` given as one number gives NA for every trait but the
first (it is recycled here); with lavaan syntax R's ``covMatrix`` is lavaan's empirical sample
covariance of 500 rows (the implied covariance times 500/499), here the implied covariance itself;
the draws come from numpy (``seed``), not R's stream; per-SNP files are parquet with the columns
``CHR SNP BP L2 Z N A1`` (R also copies the LD files' ``CM`` / ``MAF``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from polgen.errors import InputError, ModelError, NotPositiveDefiniteError, OutputExistsError, SchemaError
from polgen.gsem.ram import compile_model
from polgen.io.ldscores import read_ldscores, read_m
from polgen.io.sink import params_to_json, write_table_atomic
from polgen.kernels.sim_ldsc import correlated_z
from polgen.schema import META_METHOD, META_PARAMS

log = logging.getLogger("polgen")

#: columns of a simulated per-trait file, in order
SIM_COLUMNS = ("CHR", "SNP", "BP", "L2", "Z", "N", "A1")


@dataclass(frozen=True)
class SimulatedSumstats(Mapping[str, pl.LazyFrame]):
    """One replicate of :func:`sim_ldsc`: a mapping trait -> LazyFrame of its munged-format
    statistics (what :func:`polgen.gsem.ldsc` takes), with the files written when ``out`` was given."""

    replicate: int
    frames: dict[str, pl.LazyFrame]
    paths: dict[str, Path] = field(default_factory=dict)

    def __getitem__(self, trait: str) -> pl.LazyFrame:
        return self.frames[trait]

    def __iter__(self) -> Iterator[str]:
        return iter(self.frames)

    def __len__(self) -> int:
        return len(self.frames)


# -- inputs -----------------------------------------------------------------------------------
def _square(name: str, value: Any, k: int | None = None) -> np.ndarray:
    if isinstance(value, pl.DataFrame):
        value = value.to_numpy()
    try:
        a = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a numeric matrix", column=name) from None
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise InputError(f"{name} must be a square matrix, got shape {a.shape}", column=name)
    if k is not None and a.shape[0] != k:
        raise InputError(f"{name} is {a.shape[0]}x{a.shape[0]} but covmat has {k} traits", column=name)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} has NaN or infinite entries", column=name)
    if not np.allclose(a, a.T, rtol=1e-10, atol=1e-14):
        raise InputError(f"{name} is not symmetric", column=name)
    return (a + a.T) / 2


def implied_covariance(model: str) -> tuple[np.ndarray, list[str]]:
    """The population covariance of lavaan syntax, with the observed variables in R simLDSC's
    (sorted) order.  Parameters without a value take lavaan's ``simulateData`` values: loadings 1,
    variances 1, regressions and covariances 0."""
    cm = compile_model(model, fixed_x=False)
    theta = np.array(cm.start, dtype=np.float64)
    for f in range(cm.n_free):
        if not math.isnan(theta[f]):
            continue
        row = cm.table.rows[int(cm.par_table_row[f])]
        theta[f] = 1.0 if row.op == "=~" or (row.op == "~~" and row.lhs == row.rhs) else 0.0
    sigma = cm.implied_all(theta)[: cm.p, : cm.p]
    order = sorted(range(cm.p), key=lambda i: cm.observed[i])
    return sigma[np.ix_(order, order)], [cm.observed[i] for i in order]


def _covmat(covmat: Any) -> tuple[np.ndarray, list[str] | None]:
    if isinstance(covmat, str):
        try:
            sigma, names = implied_covariance(covmat)
        except ModelError as exc:
            raise ModelError(f"covmat (lavaan syntax): {exc}") from exc
        return sigma, names
    frame_names: list[str] | None = list(covmat.columns) if isinstance(covmat, pl.DataFrame) else None
    return _square("covmat", covmat), frame_names


def _sample_sizes(N: Any, k: int, n_overlap: float) -> np.ndarray:
    if not (isinstance(n_overlap, (int, float)) and 0.0 <= float(n_overlap) <= 1.0):
        raise InputError(f"n_overlap must lie in [0, 1], got {n_overlap!r}", column="n_overlap")
    a = np.asarray(N, dtype=np.float64) if not isinstance(N, pl.DataFrame) else N.to_numpy().astype(np.float64)
    if a.ndim == 0:
        n = np.full(k, float(a))
        out = np.full((k, k), float(a) * n_overlap)
        np.fill_diagonal(out, n)
    elif a.ndim == 1:
        if a.shape[0] != k:
            raise InputError(f"N has {a.shape[0]} sample sizes for {k} traits", column="N")
        out = n_overlap * np.sqrt(np.outer(a, a))
        np.fill_diagonal(out, a)
    else:
        out = _square("N", a, k)
    if not np.all(np.isfinite(out)) or np.any(np.diag(out) <= 0):
        raise InputError("N must be greater than 0 (every trait's sample size)", column="N")
    if np.any(out < 0):
        raise InputError("N: sample overlaps (off-diagonal) must not be negative", column="N")
    return out


def _per_trait_matrix(name: str, value: Any, k: int, default: np.ndarray) -> np.ndarray:
    if value is None:
        return default
    if np.isscalar(value):
        m = np.full((k, k), float(value))  # type: ignore[arg-type]
        np.fill_diagonal(m, 1.0)
    else:
        m = _square(name, value, k)
    if np.any(np.abs(np.diag(m) - 1.0) > 1e-12):
        raise InputError(f"{name} must have ones on the diagonal (a correlation matrix)", column=name)
    if np.any(np.abs(m) > 1.0):
        raise InputError(f"{name}: correlations must lie in [-1, 1]", column=name)
    return m


def _intercepts(value: Any, k: int) -> np.ndarray:
    if value is None:
        return np.ones(k)
    a = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if a.shape[0] == 1:
        a = np.full(k, a[0])
    if a.shape != (k,) or not np.all(np.isfinite(a)):
        raise InputError(f"intercepts must be one number or {k} numbers, got {value!r}", column="intercepts")
    return a


def snp_covariance_terms(
    covmat: np.ndarray, N: np.ndarray, M: float, r_pheno: np.ndarray, intercepts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` with SNP j's z covariance ``A L2_j + B`` (see the module docstring)."""
    n = np.diag(N)
    root = np.sqrt(np.outer(n, n))
    A = root * covmat / M
    B = r_pheno * N / root
    np.fill_diagonal(B, intercepts)
    return A, B


def _ld_scores(ld: str | os.PathLike, chr: int) -> tuple[pl.DataFrame, float]:
    if int(chr) < 1:
        raise InputError(f"chr (the number of chromosomes to read) must be at least 1, got {chr}")
    chroms = list(range(1, int(chr) + 1))
    x = read_ldscores(ld, chroms)
    if "L2" not in x.columns:
        rest = [c for c in x.columns if c not in ("CHR", "SNP", "BP", "CM", "MAF")]
        if len(rest) != 1:
            raise SchemaError(f"LD score files have no L2 column (columns {x.columns})", path=ld, column="L2")
        x = x.rename({rest[0]: "L2"})
    x = x.select("CHR", "SNP", "BP", pl.col("L2").cast(pl.Float64))
    bad = x.select(pl.col("L2").is_null() | pl.col("L2").is_nan()).to_series().arg_true()
    if bad.len():
        raise InputError("LD score is missing", path=ld, column="L2", row=int(bad[0]) + 1)
    M = read_m(ld, chroms, "M_5_50")
    if not M > 0:
        raise InputError(f"total M from the .l2.M_5_50 files is {M}", path=ld)
    return x, M


# -- main entry --------------------------------------------------------------------------------
def sim_ldsc(
    covmat: Any,
    N: Any,
    ld: str | os.PathLike,
    r_pheno: Any = None,
    intercepts: Any = None,
    n_overlap: float = 0.0,
    r: int = 1,
    seed: int | None = None,
    out: str | os.PathLike | None = None,
    *,
    chr: int = 22,
    trait_names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> list[SimulatedSumstats]:
    """Simulate GWAS summary statistics for multivariable LDSC (R GenomicSEM ``simLDSC``).

    Parameters
    ----------
    covmat : ndarray, DataFrame or str
        Population genetic covariance (k x k, positive heritabilities), or lavaan syntax whose
        model-implied covariance is used (observed variables in sorted order, as R).
    N : float, sequence or ndarray
        Sample sizes: one number (every trait; overlaps ``N * n_overlap``), k numbers (overlaps
        ``n_overlap * sqrt(N_a N_b)``) or a k x k matrix with the overlaps off the diagonal.
    ld : path
        LD-score folder (or prefix) with ``{chr}.l2.ldscore.gz`` and ``{chr}.l2.M_5_50`` files; the
        simulated SNPs are its SNPs, in its order.
    r_pheno : float or ndarray, optional
        Phenotypic correlations (one number for every pair); default the genetic correlations.
    intercepts : float or sequence, optional
        LDSC intercepts of the traits (default 1).
    n_overlap : float
        Proportion of sample overlap in [0, 1] when ``N`` is not a matrix.
    r : int
        Number of replicates.
    seed : int, optional
        Seed; replicate ``i`` draws from the ``i``-th child of ``numpy.random.SeedSequence(seed)``,
        so a replicate does not depend on ``r``.
    out : path, optional
        Folder for ``iter{i}{trait}.sumstats.parquet`` files (atomic writes, one replicate at a time;
        the returned frames then scan them).  None keeps the statistics in memory.
    chr : int
        Number of chromosomes read from ``ld`` (1..chr, as ``ldsc``).
    trait_names : sequence of str, optional
        Trait names (default ``GWAS1``, ``GWAS2``, ... as R's file names).
    overwrite : bool
        Replace existing files in ``out``.

    Returns
    -------
    list of SimulatedSumstats
        One per replicate; each maps trait -> LazyFrame (``CHR SNP BP L2 Z N A1``), so
        ``ldsc(result[0], ld)`` estimates the genetic covariance back.
    """
    sigma, model_names = _covmat(covmat)
    k = sigma.shape[0]
    if np.any(np.diag(sigma) <= 0):
        raise InputError(
            "covmat must have positive heritabilities (diagonal) for the genetic correlations", column="covmat"
        )
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
        raise InputError(f"r (the number of replicates) must be an integer >= 1, got {r!r}")
    names = [str(t) for t in trait_names] if trait_names is not None else [f"GWAS{i + 1}" for i in range(k)]
    if len(names) != k or len(set(names)) != k:
        raise InputError(f"trait_names must be {k} distinct names, got {names}")
    n_mat = _sample_sizes(N, k, n_overlap)
    d = np.sqrt(np.diag(sigma))
    rg = sigma / np.outer(d, d)
    rp = _per_trait_matrix("r_pheno", r_pheno, k, rg)
    ints = _intercepts(intercepts, k)
    x, M = _ld_scores(ld, chr)
    A, B = snp_covariance_terms(sigma, n_mat, M, rp, ints)
    l2 = np.ascontiguousarray(x["L2"].to_numpy(), dtype=np.float64)
    n_snps = l2.shape[0]
    # every SNP's covariance is PSD iff both ends of the L2 range are (A l + B is linear in l)
    for end in (float(l2.min()), float(l2.max())):
        w = np.linalg.eigvalsh(A * end + B)
        if w[0] < -1e-10 * max(abs(w[-1]), 1e-300):
            raise NotPositiveDefiniteError(
                f"the z covariance of a SNP with LD score {end:g} is not positive semi-definite (smallest "
                f"eigenvalue {w[0]:.3g}): covmat, N, r_pheno and intercepts are inconsistent",
                column="covmat",
            )
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        clash = [p for i in range(r) for t in names if (p := out_dir / f"iter{i + 1}{t}.sumstats.parquet").exists()]
        if clash and not overwrite:
            raise OutputExistsError("simulated files already exist (pass overwrite=True)", path=clash[0])
    log.info("sim_ldsc: %d traits, %d SNPs (M = %g), %d replicate(s)", k, n_snps, M, r)
    params = {
        "covmat": sigma.tolist(),
        "N": n_mat.tolist(),
        "r_pheno": rp.tolist(),
        "intercepts": ints.tolist(),
        "M": M,
        "seed": seed,
        "trait_names": names,
        "model_names": model_names,
    }
    base = x.select("CHR", "SNP", "BP", "L2")
    children = np.random.SeedSequence(seed).spawn(int(r))
    results: list[SimulatedSumstats] = []
    Z = np.empty((n_snps, k))
    for rep in range(int(r)):
        rng = np.random.default_rng(children[rep])
        E = rng.standard_normal((n_snps, k))
        bad = int(correlated_z(l2, A, B, E, Z, 1e-10))
        if bad >= 0:
            raise NotPositiveDefiniteError(
                f"the z covariance of SNP {x['SNP'][bad]} is not positive semi-definite", column="covmat", row=bad + 1
            )
        frames: dict[str, pl.LazyFrame] = {}
        paths: dict[str, Path] = {}
        tables = {
            name: base.with_columns(
                pl.Series("Z", Z[:, t]),
                pl.lit(float(n_mat[t, t]), dtype=pl.Float64).alias("N"),
                pl.lit("A").alias("A1"),
            )
            for t, name in enumerate(names)
        }
        if out_dir is None:
            frames = {name: df.lazy() for name, df in tables.items()}
        else:
            paths = {name: out_dir / f"iter{rep + 1}{name}.sumstats.parquet" for name in names}

            jobs = [
                (
                    paths[name],
                    tables[name],
                    {
                        META_METHOD: "gsem.sim_ldsc",
                        META_PARAMS: params_to_json({**params, "replicate": rep + 1, "trait": name}),
                    },
                )
                for name in names
            ]
            # parquet encoding releases the GIL: the traits' files are written side by side
            with ThreadPoolExecutor(max_workers=max(1, min(k, os.cpu_count() or 1))) as pool:
                list(pool.map(lambda job: write_table_atomic(*job), jobs))
            frames = {name: pl.scan_parquet(paths[name]) for name in names}
        log.info("sim_ldsc: replicate %d of %d done", rep + 1, r)
        results.append(SimulatedSumstats(replicate=rep + 1, frames=frames, paths=paths))
    return results


__all__ = ["SIM_COLUMNS", "SimulatedSumstats", "implied_covariance", "sim_ldsc", "snp_covariance_terms"]
