"""FUSION TWAS output as Genomic SEM gene-level summary statistics (R GenomicSEM ``read_fusion``).

Each FUSION ``.dat`` file (one per trait, in the order of the traits in ``ldsc``) has one row per
gene model with ``FILE`` (the weight file), ``ID`` (the gene), ``TWAS.Z`` and ``HSQ`` (the cis
heritability of expression).  The TWAS z is turned into an effect of standardised expression on
the trait, as R does:

* continuous trait: ``beta = Z / sqrt(N * HSQ)``, ``se = 1 / sqrt(N * HSQ)``;
* binary trait (liability scale through the logistic variance ``pi^2 / 3``):
  ``b = Z / sqrt(N/4 * HSQ)``, ``s = 1 / sqrt(N/4 * HSQ)``, ``beta = b / sqrt(b^2 HSQ + pi^2/3)``,
  ``se = s / sqrt(b^2 HSQ + pi^2/3)``;
* ``perm=True``: ``Z`` is replaced by ``sign(TWAS.Z) * sqrt(qchisq(PERM.PV, 1, lower=FALSE))`` with a
  permutation p of 1 set to ``(PERM.N - 1) / PERM.N`` and of 0 to ``1 / PERM.N``.

``Panel`` is the weight file without its directories except the last one (R's
``sub(".*/([^/]+/[^/]+)$", "\\1", FILE)``), so the same model matches across files; the traits
are inner-joined on ``Gene`` and ``Panel`` (sorted by them, as R's ``merge``), and ``HSQ`` is the
first file's.  The result has the ``Gene, Panel, HSQ, beta.<trait>, se.<trait>`` columns that
:func:`~polgen.gsem.user_gwas` takes with ``TWAS=True``.

R writes the continuous-trait SE as ``|beta / Z|`` (NaN, so the gene is dropped, when ``Z`` is
exactly 0); polgen uses the equal closed form ``1 / sqrt(N * HSQ)`` and keeps such a gene.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from polgen.errors import InputError, SchemaError
from polgen.options import MissingHSQ, check_option

log = logging.getLogger("polgen")

__all__ = ["read_fusion"]

_NA = {".", "NA", ""}
_NEED = ("FILE", "ID", "TWAS.Z", "HSQ")
_PANEL_RE = r".*//([^/]+/[^/]+)$|.*/([^/]+/[^/]+)$"


def _read_dat(path: str) -> pl.DataFrame:
    """A whitespace-separated FUSION table with a header (R ``read.table(header=TRUE, fill=TRUE)``)."""
    p = Path(path)
    if not p.exists():
        raise InputError("FUSION file not found", path=path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read FUSION file: {exc}", path=path) from exc
    lines = pl.Series("line", text.splitlines(), dtype=pl.String)
    lines = lines.filter(lines.str.strip_chars() != "")
    if lines.len() == 0:
        raise InputError("FUSION file is empty", path=path)
    header = lines[0].split()
    if len(set(header)) != len(header):
        raise SchemaError(f"FUSION file header repeats a column: {header}", path=path)
    fields = lines.slice(1).str.replace_all('"', "", literal=True).str.extract_all(r"\S+")
    width = fields.list.len()
    too_long = (width > len(header)).arg_true()
    if too_long.len():
        r = int(too_long[0])
        raise InputError(f"line has {int(width[r])} fields for {len(header)} columns", path=path, row=r + 2)
    cols = {
        name: fields.list.get(i, null_on_oob=True).alias(name) for i, name in enumerate(header)
    }  # short lines are filled with NA (fill=TRUE)
    frame = pl.DataFrame(cols)
    return frame.with_columns(
        pl.when(pl.col(c).is_in(list(_NA))).then(None).otherwise(pl.col(c)).alias(c) for c in header
    )


def _numeric(frame: pl.DataFrame, col: str, path: str) -> np.ndarray:
    s = frame[col]
    out = s.cast(pl.Float64, strict=False)
    bad = (out.is_null() & s.is_not_null()).arg_true()
    if bad.len():
        r = int(bad[0])
        raise InputError(f"{col} value {s[r]!r} is not a number", path=path, column=col, row=r + 2)
    arr = out.fill_null(np.nan).to_numpy().astype(np.float64, copy=True)
    inf = np.flatnonzero(np.isinf(arr))
    if inf.size:
        r = int(inf[0])
        raise InputError(f"{col} value {s[r]!r} is infinite", path=path, column=col, row=r + 2)
    return arr


def _effects(frame: pl.DataFrame, path: str, n: float, binary: bool, perm: bool) -> tuple[np.ndarray, np.ndarray]:
    from scipy.special import chdtri

    z = _numeric(frame, "TWAS.Z", path)
    hsq = _numeric(frame, "HSQ", path)
    bad = np.flatnonzero(hsq <= 0)
    if bad.size:
        raise InputError(
            f"HSQ must be positive (it divides the TWAS z); gene {frame['ID'][int(bad[0])]!r} has {hsq[bad[0]]}",
            path=path,
            column="HSQ",
            row=int(bad[0]) + 2,
        )
    if perm:
        pv = _numeric(frame, "PERM.PV", path)
        pn = _numeric(frame, "PERM.N", path)
        pv = np.where(pv == 1.0, (pn - 1.0) / pn, pv)
        pv = np.where(pv == 0.0, 1.0 / pn, pv)
        with np.errstate(invalid="ignore"):
            z = np.sign(z) * np.sqrt(chdtri(1.0, pv))
    scale = n / 4.0 if binary else n
    with np.errstate(invalid="ignore", divide="ignore"):
        s = 1.0 / np.sqrt(scale * hsq)
        b = z * s
        if binary:
            d = np.sqrt(b * b * hsq + math.pi**2 / 3.0)
            return b / d, s / d
    return b, s


def read_fusion(
    files: Sequence[str | os.PathLike] | str | os.PathLike,
    trait_names: Sequence[str] | None = None,
    binary: Sequence[bool] | bool | None = None,
    N: Sequence[float] | float | None = None,
    perm: bool = False,
    missing_hsq: MissingHSQ = "drop",
) -> pl.DataFrame:
    """Read FUSION TWAS ``.dat`` files into Genomic SEM gene-level sumstats (R ``read_fusion``).

    Parameters
    ----------
    files
        One FUSION output file per trait, in the trait order of ``ldsc``.
    trait_names
        Names for the ``beta.<name>`` / ``se.<name>`` columns (default ``1, 2, ...`` as R).
    binary
        Per trait, whether it is binary (case/control); default all binary, as R.
    N
        Per trait, the GWAS sample size (total N for a binary trait, as R).
    perm
        Use FUSION's permutation p-values (``PERM.PV``, ``PERM.N``) for the z (R ``perm``).
    missing_hsq
        Genes whose ``HSQ`` (or ``TWAS.Z``) is missing: ``"drop"`` them as R does (logged, with
        their names) or ``"error"``: raise :class:`InputError` naming the first one.

    Returns
    -------
    polars.DataFrame
        ``Gene, Panel, HSQ, beta.<trait>, se.<trait>...``, one row per gene model present with a
        value in every file: the input of :func:`~polgen.gsem.user_gwas` with ``TWAS=True``.

    Raises
    ------
    InputError
        Missing file, unequal argument lengths, non-numeric or non-positive ``HSQ``, a gene without
        ``HSQ`` (``missing_hsq="error"``), no gene left.
    SchemaError
        A file lacks ``FILE``, ``ID``, ``TWAS.Z``, ``HSQ`` (or ``PERM.PV``/``PERM.N`` with ``perm``).
    """
    check_option("missing_hsq", missing_hsq, MissingHSQ)
    paths = [os.fspath(files)] if isinstance(files, (str, os.PathLike)) else [os.fspath(f) for f in files]
    k = len(paths)
    if k == 0:
        raise InputError("read_fusion needs at least one FUSION file")
    names = [str(i + 1) for i in range(k)] if trait_names is None else [str(t) for t in trait_names]
    if len(names) != k:
        raise InputError(f"{len(names)} trait names for {k} FUSION files", column="trait_names")
    if len(set(names)) != k:
        raise InputError(f"trait names are not unique: {names}", column="trait_names")
    if binary is None:
        log.info("read_fusion: treating every trait as binary (pass binary= for continuous traits), as R does")
        binary = [True] * k
    elif isinstance(binary, bool):
        binary = [binary] * k
    if len(binary) != k:
        raise InputError(f"binary has {len(binary)} values for {k} FUSION files", column="binary")
    if N is None:
        raise InputError("N (the GWAS sample size of each trait) is required", column="N")
    ns = [float(N)] * k if np.isscalar(N) else [float(x) for x in N]  # type: ignore[arg-type, union-attr]
    if len(ns) != k:
        raise InputError(f"N has {len(ns)} values for {k} FUSION files", column="N")
    for name, n in zip(names, ns, strict=True):
        if not (np.isfinite(n) and n > 0):
            raise InputError(f"N of trait {name!r} must be a positive number, got {n}", column="N")

    out: pl.DataFrame | None = None
    for path, name, bin_, n in zip(paths, names, binary, ns, strict=True):
        frame = _read_dat(path)
        need = list(_NEED) + (["PERM.PV", "PERM.N"] if perm else [])
        miss = [c for c in need if c not in frame.columns]
        if miss:
            raise SchemaError(f"FUSION file lacks column(s) {miss}; has {frame.columns}", path=path, column=miss[0])
        beta, se = _effects(frame, path, n, bool(bin_), perm)
        hsq = _numeric(frame, "HSQ", path)
        part = pl.DataFrame(
            {
                "Gene": frame["ID"],
                "Panel": frame["FILE"].str.replace(_PANEL_RE, "${1}${2}"),
                "HSQ": hsq,
                f"beta.{name}": beta,
                f"se.{name}": se,
            }
        ).fill_nan(None)
        gone = part.filter(pl.any_horizontal(pl.all().is_null()))
        if gone.height:
            genes = gone["Gene"].fill_null("?").to_list()
            shown = ", ".join(genes[:5]) + (", ..." if len(genes) > 5 else "")
            what = f"{gone.height} gene model(s) without HSQ, TWAS.Z or ID ({shown})"
            if missing_hsq == "error":
                first = int(part.with_row_index().filter(pl.any_horizontal(pl.exclude("index").is_null()))["index"][0])
                raise InputError(what, path=path, row=first + 2)
            log.warning("read_fusion: dropping %s in %s", what, path)
            part = part.drop_nulls()
        if out is None:
            out = part
        else:
            out = out.join(part.drop("HSQ"), on=["Gene", "Panel"], how="inner").sort(["Gene", "Panel"])
    assert out is not None
    out = out.unique(maintain_order=True).select(
        ["Gene", "Panel", "HSQ", *[c for nm in names for c in (f"beta.{nm}", f"se.{nm}")]]
    )
    if out.height == 0:
        raise InputError(f"no gene model has values in all {k} FUSION files (matched on Gene and Panel)")
    return out
