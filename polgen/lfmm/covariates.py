"""Covariates X for LFMM: a frame with sample ids (IID, optionally FID) plus numeric columns,
aligned to the .fam order; or a plain array already in .fam order."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from polgen.errors import InputError, SchemaError

ID_COLUMNS = ("FID", "IID")


def covariate_matrix(
    X, sample_ids: Sequence[str] | None, n_samples: int, fids: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Return ``(X as (n, d) float64 C-ordered in genotype-sample order, variable names)``.

    A frame with an ``IID`` column (and ``FID`` if the .fam's FIDs should be matched too) is
    joined to the genotype samples by id; ids in the genotypes that the frame lacks raise
    :class:`InputError` naming them (extra frame rows are ignored).  Without an id column, or for
    an array, the rows must already be in genotype order.
    """
    if isinstance(X, (str, os.PathLike)):
        X = read_lea_env(X)
    if isinstance(X, pl.LazyFrame):
        X = X.collect()
    if isinstance(X, pl.Series):
        X = X.to_frame()
    if isinstance(X, pl.DataFrame):
        return _from_frame(X, sample_ids, n_samples, fids)
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InputError(f"covariates must be 2-D (samples x variables), got shape {arr.shape}")
    if arr.shape[0] != n_samples:
        raise InputError(f"covariates have {arr.shape[0]} rows but the genotypes have {n_samples} samples")
    _check_finite(arr, [f"X{j + 1}" for j in range(arr.shape[1])])
    names = [f"X{j + 1}" for j in range(arr.shape[1])]
    return np.ascontiguousarray(arr), names


def read_lea_env(path: str | os.PathLike) -> np.ndarray:
    """An R LEA ``.env`` file (one line per sample in genotype order, whitespace-separated numbers
    per variable) as an (n, d) array; ``NA`` cells are an :class:`InputError` naming line and column."""
    path = Path(path)
    if not path.is_file():
        raise InputError("covariate (.env) file not found", path=path)
    try:
        rows = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    except UnicodeDecodeError:
        raise InputError("not a text .env file", path=path) from None
    if not rows or len({len(r) for r in rows}) != 1:
        raise InputError(".env rows must all have the same number of values (and there must be rows)", path=path)
    for i, r in enumerate(rows):
        for j, v in enumerate(r):
            try:
                float(v)
            except ValueError:
                raise InputError(
                    f".env value {v!r} is not a number", path=path, row=i + 1, column=f"X{j + 1}"
                ) from None
    arr = np.array(rows, dtype=np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise InputError(".env contains missing or non-finite values", path=path, row=int(i) + 1, column=f"X{j + 1}")
    return arr


def _from_frame(df: pl.DataFrame, sample_ids, n_samples, fids) -> tuple[np.ndarray, list[str]]:
    value_cols = [c for c in df.columns if c not in ID_COLUMNS]
    if not value_cols:
        raise SchemaError("the covariate frame has no covariate columns (only ids)")
    bad = [c for c in value_cols if not df.schema[c].is_numeric() and df.schema[c] != pl.Boolean]
    if bad:
        raise SchemaError(f"covariate columns must be numeric; not numeric: {bad}", column=bad[0])
    if "IID" in df.columns and sample_ids is not None:
        keys = ["IID"]
        left = pl.DataFrame({"IID": [str(s) for s in sample_ids], "__row": np.arange(len(sample_ids))})
        right = df.with_columns(pl.col("IID").cast(pl.String))
        if "FID" in df.columns and fids is not None:
            keys = ["FID", "IID"]
            left = left.with_columns(pl.Series("FID", [str(f) for f in fids]))
            right = right.with_columns(pl.col("FID").cast(pl.String))
        if _aligned(right, keys, left):
            # the common case (rows already in the genotypes' order, ids unique): no join
            df = right
        else:
            df = _joined(left, right, keys, value_cols)
    elif df.height != n_samples:
        raise InputError(
            f"covariate frame has {df.height} rows but the genotypes have {n_samples} samples; "
            "add an IID column to align them by id"
        )
    arr = df.select([pl.col(c).cast(pl.Float64) for c in value_cols]).to_numpy()
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    _check_finite(arr, value_cols)
    return arr, value_cols


def _aligned(right: pl.DataFrame, keys: list[str], left: pl.DataFrame) -> bool:
    """Whether the covariate rows are the genotype samples, in their order, each once."""
    if right.height != left.height:
        return False
    cols = [right[k].to_list() for k in keys]
    if any(c != left[k].to_list() for c, k in zip(cols, keys)):
        return False
    return len(set(zip(*cols))) == right.height


def _joined(left: pl.DataFrame, right: pl.DataFrame, keys: list[str], value_cols: list[str]) -> pl.DataFrame:
    """The covariate rows of the genotype samples in their order (by id), with typed errors for
    duplicated ids and samples without a row."""
    dup = right.group_by(keys).len().filter(pl.col("len") > 1)
    if dup.height:
        raise InputError(f"covariate frame has duplicated sample ids: {dup[keys[-1]].head(5).to_list()}", column="IID")
    joined = left.join(right.select(keys + value_cols), on=keys, how="left").sort("__row")
    absent = left.join(right.select(keys), on=keys, how="anti").sort("__row").select(keys).rows()
    if absent:
        shown = ", ".join("/".join(map(str, a)) for a in absent[:5])
        raise InputError(
            f"{len(absent)} genotype samples have no row in the covariate frame "
            f"(ids {shown}{', ...' if len(absent) > 5 else ''})",
            column="IID",
        )
    return joined


def _check_finite(arr: np.ndarray, names: list[str]) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise InputError(
            f"covariates contain missing or non-finite values ({int(bad.sum())} cells)", column=names[c], row=int(r)
        )
