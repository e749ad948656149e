"""Several SNPs (or TWAS genes) in one Genomic SEM model: R GenomicSEM's ``multiSNP`` and ``multiGene``.

A joint covariance structure over f SNPs and k traits (the SNPs first):

* ``S_full`` ((f+k) x (f+k)): the SNP block from the LD matrix, ``r_ij sqrt(v_i v_j)`` with the
  SNP variances ``v = 2 MAF (1 - MAF)`` on its diagonal (``HSQ`` for genes); SNP-trait covariances
  ``v_i * beta_it``; the LDSC ``S`` for the traits;
* ``V_full`` (rows in ``vech(S_full)`` order): SNP-SNP elements fixed (``SNPSE^2``, default
  0.0005^2; ``GeneSE^2``, default 1e-8^2, for genes), SNP-trait elements with variance
  ``(se_it * I_tt * v_i)^2`` and covariances through the cross-trait intercepts (same SNP), the LD
  (same trait) or both, then the LDSC ``V``;
* either smoothed by ``Matrix::nearPD`` when not positive definite.

LD matrices name their SNPs as R expects, ``rs_A1_A2`` (or plain ``rs``): the sumstats are put in
the LD's order, and the LD between two SNPs changes sign when exactly one of them has the other
allele first in the sumstats.  With a ``model`` the structure is fitted at once with
:func:`polgen.gsem.usermodel` (DWLS or ML), as R users fit ``multiSNP`` output with ``usermodel``.

Where R differs: R's ``multiSNP``/``multiGene`` fill the cross-SNP cross-trait block with the LD of
the *last* SNP pair for every pair and cycle the cross-trait intercepts in an order that is right
only for two traits or two SNPs; polgen uses each pair's own LD and intercept (identical to R
whenever R's loop is self-consistent: two SNPs, or equal LD and equal cross-trait intercepts; the
tests pin the difference otherwise).  R's ``multiGene`` at the reference commit stops on an
undefined name before it returns anything.  Alleles in LD names may have several letters (R reads
one).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from polgen.errors import InputError, SchemaError
from polgen.gsem.covstruc import CovStruc, as_covstruc
from polgen.gsem.fit_models import SEMResult, usermodel
from polgen.gsem.gwas_plan import resolve_columns
from polgen.gsem.matrix import is_pd, near_pd
from polgen.options import Estimation, check_option

log = logging.getLogger("polgen")

__all__ = ["MultiResult", "multi_gene", "multi_snp", "read_ld"]


@dataclass
class MultiResult:
    """A joint covariance structure over several SNPs (genes) and the traits, and its fit.

    ``covstruc``: ``S`` = S_full, ``V`` = V_full, ``trait_names`` = the SNP (gene) ids then the
    traits (``I`` is the identity: the intercepts are already in V_full); pass it to
    :func:`~polgen.gsem.usermodel` for other models.  ``ids``: the sumstats rows used, in the
    LD's order (R's ``RS``); ``ld``: the LD matrix as used (allele-aligned signs);
    ``S_smoothed`` / ``V_smoothed``: nearPD was applied; ``fit``: the model's
    :class:`~polgen.gsem.fit_models.SEMResult` when a model was given.
    """

    covstruc: CovStruc
    ids: pl.DataFrame
    ld: np.ndarray
    S_smoothed: bool
    V_smoothed: bool
    fit: SEMResult | None = None

    @property
    def S_full(self) -> np.ndarray:
        return self.covstruc.S

    @property
    def V_full(self) -> np.ndarray:
        return self.covstruc.V

    @property
    def names(self) -> list[str]:
        return list(self.covstruc.trait_names)

    def __repr__(self) -> str:
        f = self.ld.shape[0]
        fit = "" if self.fit is None else f", fit={self.fit!r}"
        return f"MultiResult({f} predictors x {len(self.names) - f} traits{fit})"


# ----------------------------------------------------------------------------------------------
# LD input
# ----------------------------------------------------------------------------------------------
def read_ld(ld: Any) -> tuple[np.ndarray, list[str] | None]:
    """(matrix, names or None) from a square LD input.

    Accepts a numpy array (no names: rows in the order of the SNPs used), a polars DataFrame whose
    columns name the SNPs (an optional first string column of row names, as R's ``write.csv``
    writes), a ``(matrix, names)`` pair, or a CSV/TSV path of such a table."""
    names: list[str] | None
    if isinstance(ld, (str, os.PathLike)):
        path = Path(ld)
        if not path.is_file():
            raise InputError("LD matrix file not found", path=path)
        sep = "\t" if path.suffix.lower() in (".tsv", ".txt", ".ld") else ","
        try:
            ld = pl.read_csv(path, separator=sep)
        except Exception as exc:  # noqa: BLE001 - polars raises several kinds
            raise InputError(f"cannot read LD matrix: {exc}", path=path) from exc
    if isinstance(ld, tuple) and len(ld) == 2:
        mat = np.asarray(ld[0], dtype=np.float64)
        names = [str(x) for x in ld[1]]
    elif isinstance(ld, pl.DataFrame):
        df = ld
        if df.width and df.dtypes[0] == pl.String:
            rows = df[:, 0].to_list()
            df = df[:, 1:]
            if [str(r) for r in rows] != df.columns:
                raise InputError(f"LD matrix row names {rows[:4]} do not match its column names {df.columns[:4]}")
        try:
            mat = df.cast(pl.Float64).to_numpy()
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"LD matrix has non-numeric entries: {exc}") from exc
        names = list(df.columns)
    else:
        try:
            mat = np.asarray(ld, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"cannot use {type(ld).__name__} as an LD matrix") from exc
        names = None
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise InputError(f"LD matrix must be square, got shape {mat.shape}")
    if names is not None and len(names) != mat.shape[0]:
        raise InputError(f"LD matrix is {mat.shape[0]}x{mat.shape[0]} but has {len(names)} names")
    if not np.all(np.isfinite(mat)):
        r, c = np.argwhere(~np.isfinite(mat))[0]
        raise InputError("LD matrix has NaN or infinite entries", row=int(r), column=names[c] if names else str(c))
    if not np.allclose(mat, mat.T, rtol=0.0, atol=1e-8):
        raise InputError("LD matrix is not symmetric")
    return np.ascontiguousarray(mat), names


def _split_name(name: str) -> tuple[str, str | None]:
    """``rs_A1_A2`` -> (rs, A1); a plain id -> (id, None)."""
    parts = name.split("_")
    if len(parts) >= 3:
        return parts[0], parts[1].upper()
    return name, None


# ----------------------------------------------------------------------------------------------
def _prepare(
    covstruc: Any, frame: Any, ld: Any, keep: Sequence[str] | None, twas: bool
) -> tuple[CovStruc, pl.DataFrame, np.ndarray, np.ndarray]:
    """(covstruc, rows in LD order, aligned LD, I with diag >= 1)."""
    cs = as_covstruc(covstruc)
    traits = list(cs.trait_names)
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect()
    elif isinstance(frame, (str, os.PathLike)):
        try:
            frame = pl.read_parquet(os.fspath(frame))
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"cannot read sumstats parquet: {exc}", path=frame) from exc
    elif not isinstance(frame, pl.DataFrame):
        frame = pl.DataFrame(frame)
    beta_cols, se_cols, id_cols, var_col = resolve_columns(dict(frame.schema), traits, twas)
    key = "Gene" if twas else "SNP"
    what = "genes" if twas else "SNPs"
    if keep is not None:
        keep = [str(x) for x in ([keep] if isinstance(keep, str) else keep)]
        frame = frame.filter(pl.col(key).cast(pl.String).is_in(keep))
        found = set(frame[key].cast(pl.String).to_list())
        miss = [x for x in keep if x not in found]
        if miss:
            raise InputError(f"{key}list names {what} not in the sumstats: {miss[:5]}", column=key)
    mat, names = read_ld(ld)
    if names is None:
        ids = frame[key].cast(pl.String).to_list()
        if mat.shape[0] != len(ids):
            raise InputError(f"LD matrix is {mat.shape[0]}x{mat.shape[0]} but {len(ids)} {what} are selected")
        order = ids
        alleles: list[str | None] = [None] * len(ids)
    else:
        split = [_split_name(n) for n in names] if not twas else [(n, None) for n in names]
        order = [sp[0] for sp in split]
        alleles = [sp[1] for sp in split]
        if len(set(order)) < len(order):
            raise InputError(f"LD matrix names a {key} twice: {sorted({x for x in order if order.count(x) > 1})}")
        if keep is not None and set(keep) != set(order):
            raise InputError(
                f"LD matrix does not match {key}list: the LD lacks {sorted(set(keep) - set(order))[:5]}, "
                f"{key}list lacks {sorted(set(order) - set(keep))[:5]}",
                column=key,
            )
        frame = frame.filter(pl.col(key).cast(pl.String).is_in(order))
        found = set(frame[key].cast(pl.String).to_list())
        missing = [x for x in order if x not in found]
        if missing:
            raise InputError(f"LD matrix names {what} not in the sumstats: {missing[:5]}", column=key)
    ids = frame[key].cast(pl.String).to_list()
    if len(set(ids)) < len(ids):
        dup = sorted({x for x in ids if ids.count(x) > 1})
        raise InputError(f"sumstats name a {key} more than once: {dup[:5]}", column=key)
    if not order:
        raise InputError(f"no {what} selected")
    pos = {x: i for i, x in enumerate(ids)}
    rows = frame[[pos[x] for x in order]]
    lower = np.linalg.eigvalsh(mat)[0]
    if not lower > 0:
        raise InputError(
            f"LD matrix is not positive definite (smallest eigenvalue {lower:.3g}): SNPs in perfect "
            "LD, or a matrix that is no correlation matrix"
        )
    mat = mat.copy()
    if not twas and "A1" in rows.columns:
        a1 = rows["A1"].cast(pl.String).str.to_uppercase().to_list()
        mism = np.array([al is not None and al != x for al, x in zip(alleles, a1)])
        flip = mism[:, None] ^ mism[None, :]
        np.fill_diagonal(flip, False)
        mat[flip] = -mat[flip]
    for cols in (beta_cols, se_cols, [var_col]):
        vals = rows.select(cols).cast(pl.Float64).to_numpy()
        bad = ~np.isfinite(vals)
        if cols == se_cols or cols == [var_col]:
            bad |= vals <= 0
        if cols == [var_col] and not twas:
            bad |= vals >= 1
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise InputError(f"{key} {order[r]}: {cols[c]} is missing or out of range", column=cols[c], row=order[r])
    I = np.array(cs.I, dtype=np.float64, copy=True)
    d = np.diag(I).copy()
    d[d <= 1.0] = 1.0
    np.fill_diagonal(I, d)
    return cs, rows, mat, I


def _build(
    cs: CovStruc, rows: pl.DataFrame, ld: np.ndarray, I: np.ndarray, varse2: float, twas: bool
) -> tuple[np.ndarray, np.ndarray, bool, bool, list[str]]:
    from polgen.kernels.snp_matrices import multi_v_into

    traits = list(cs.trait_names)
    beta_cols, se_cols, _, var_col = resolve_columns(dict(rows.schema), traits, twas)
    beta = rows.select(beta_cols).cast(pl.Float64).to_numpy()
    se = rows.select(se_cols).cast(pl.Float64).to_numpy()
    x = rows[var_col].cast(pl.Float64).to_numpy()
    var = x if twas else 2.0 * x * (1.0 - x)
    f, k = beta.shape
    n = f + k
    S = np.zeros((n, n))
    sd = np.sqrt(var)
    S[:f, :f] = ld * np.outer(sd, sd)
    np.fill_diagonal(S[:f, :f], var)
    S[f:, :f] = (var[:, None] * beta).T
    S[:f, f:] = S[f:, :f].T
    S[f:, f:] = cs.S
    se2 = np.ascontiguousarray(se * np.diag(I)[None, :] * var[:, None])
    m = n * (n + 1) // 2
    V = np.empty((m, m))
    multi_v_into(se2, np.ascontiguousarray(I), np.ascontiguousarray(ld), float(varse2), np.ascontiguousarray(cs.V), V)
    s_sm = v_sm = False
    if not is_pd(S):
        log.warning("S_full is not positive definite: smoothed with nearPD (as R)")
        S, s_sm = near_pd(S), True
    if not is_pd(V):
        log.warning("V_full is not positive definite: smoothed with nearPD (as R)")
        V, v_sm = near_pd(V), True
    key = "Gene" if twas else "SNP"
    return S, V, s_sm, v_sm, rows[key].cast(pl.String).to_list() + traits


def _se2(value: float | None, default: float, name: str) -> float:
    if value is None or value is False:
        return default**2
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < np.inf:
        raise InputError(f"{name} must be a positive finite number, got {value!r}")
    return float(value) ** 2


def _multi(covstruc, frame, ld, model, se, keep, estimation, twas) -> MultiResult:
    estimation = check_option("estimation", estimation, Estimation)
    varse2 = _se2(se, 1e-8 if twas else 0.0005, "GeneSE" if twas else "SNPSE")
    if model is not None and not isinstance(model, str):
        raise InputError(f"model must be lavaan-style text or None, got {type(model).__name__}")
    cs, rows, mat, I = _prepare(covstruc, frame, ld, keep, twas)
    S, V, s_sm, v_sm, names = _build(cs, rows, mat, I, varse2, twas)
    if len(set(names)) < len(names):
        raise SchemaError(f"a {'gene' if twas else 'SNP'} id equals a trait name: {names}")
    joint = CovStruc(S=S, V=V, I=np.eye(len(names)), trait_names=names)
    _, _, id_cols, _ = resolve_columns(dict(rows.schema), list(cs.trait_names), twas)
    res = MultiResult(covstruc=joint, ids=rows.select(id_cols), ld=mat, S_smoothed=s_sm, V_smoothed=v_sm)
    if model is not None:
        res.fit = usermodel(joint, model, estimation=estimation)
    return res


def multi_snp(
    covstruc: Any,
    snps: Any,
    ld: Any,
    model: str | None = None,
    SNPSE: float | None = None,
    SNPlist: Sequence[str] | None = None,
    estimation: Estimation = "DWLS",
) -> MultiResult:
    """Several SNPs in one model with their LD (R ``multiSNP``, then ``usermodel``).

    Parameters
    ----------
    covstruc
        LDSC output (:class:`~polgen.gsem.covstruc.CovStruc`, mapping or JSON/parquet path).
    snps
        ``sumstats()`` output with ``SNP, MAF, A1, beta.<trait>, se.<trait>`` (frame or parquet).
    ld
        SNP-SNP LD correlations: a DataFrame whose columns name the SNPs ``rs_A1_A2`` (or ``rs``),
        a ``(matrix, names)`` pair, a CSV/TSV path, or a bare matrix in the order of the SNPs
        used.  Must be positive definite and name exactly the SNPs used.
    model
        lavaan syntax over the traits and the SNP ids (``F1 ~ rs1 + rs2``); None: build the
        structure only (R's ``multiSNP``).
    SNPSE
        SE of the SNP variances; None: 0.0005.
    SNPlist
        SNP ids to use (the LD must name exactly these); None: the SNPs the LD names.
    estimation
        ``"DWLS"`` or ``"ML"`` for the fit.

    Returns
    -------
    MultiResult
        ``covstruc`` (S_full / V_full), the rows used, the aligned LD, smoothing flags and ``fit``.
    """
    return _multi(covstruc, snps, ld, model, SNPSE, SNPlist, estimation, twas=False)


def multi_gene(
    covstruc: Any,
    genes: Any,
    ld: Any,
    model: str | None = None,
    GeneSE: float | None = None,
    Genelist: Sequence[str] | None = None,
    estimation: Estimation = "DWLS",
) -> MultiResult:
    """Several TWAS genes in one model with their correlation matrix (R ``multiGene``).

    Parameters
    ----------
    covstruc
        LDSC output.
    genes
        Gene associations with ``Gene, Panel, HSQ, beta.<trait>, se.<trait>``; ``HSQ`` (> 0) is
        the gene's variance.
    ld
        Gene-gene correlations (columns named by gene, a ``(matrix, names)`` pair, a path, or a
        bare matrix in the genes' order); positive definite.
    model
        lavaan syntax over the traits and gene ids; None: the structure only.
    GeneSE
        SE of the gene variances; None: 1e-8 (R's default).
    Genelist
        Genes to use; None: the genes the matrix names.
    estimation
        ``"DWLS"`` or ``"ML"``.

    Returns
    -------
    MultiResult
        As :func:`multi_snp`, genes first.
    """
    return _multi(covstruc, genes, ld, model, GeneSE, Genelist, estimation, twas=True)
