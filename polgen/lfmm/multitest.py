"""False discovery rates of LFMM results: Benjamini-Hochberg and Storey q-values.

* ``"BH"`` (R ``p.adjust(p, "BH")``): over the m non-missing p-values sorted increasingly,
  ``q_(i) = min_{j >= i} min(1, m p_(j) / j)``; missing p-values stay missing and do not count in m.
* ``"storey"`` (R qvalue ``qvalue(p)`` with ``pfdr = FALSE``): ``q = pi0 * BH(p)``, with the
  proportion of true nulls ``pi0`` estimated as qvalue's ``pi0est``: on the grid
  ``lambda = 0.05, 0.10, ..., 0.95`` (R's ``seq(0.05, 0.95, 0.05)``),
  ``pi0(lambda) = #{p >= lambda} / (m (1 - lambda))``, then

  - ``pi0_method="smoother"`` (qvalue's default): a cubic smoothing spline with ``smooth_df = 3``
    degrees of freedom through ``(lambda, pi0(lambda))``, evaluated at the largest lambda, capped at
    1.  R's ``smooth.spline(df = 3)`` searches its smoothing parameter until the trace of the hat
    matrix is 3 within a tolerance (on this grid it stops at 3.0003); polgen solves ``trace = 3``
    exactly (the same natural cubic spline family, Reinsch form), so its pi0 differs from qvalue's
    by that tolerance: ~1e-5 relative on the stored R reference (tests/lfmm/test_lfmm_fdr.py).
    ``"bootstrap"``, a single lambda and a fixed pi0 equal qvalue exactly;
  - ``pi0_method="bootstrap"`` (qvalue's closed-form choice): the ``pi0(lambda)`` minimising
    ``W / (m^2 (1 - lambda)^2) (1 - W / m) + (pi0(lambda) - q_0.1)^2`` with ``W = #{p >= lambda}``
    and ``q_0.1`` the 10% quantile (R type 7) of the ``pi0(lambda)``, capped at 1 — exactly qvalue's;
  - a single lambda gives ``min(1, pi0(lambda))``; ``pi0=`` fixes it.

Streaming: ``pi0`` needs only the counts ``#{p >= lambda}`` (one aggregate pass); the BH step needs
the rank of each p-value, which DuckDB computes with window functions over the result's parquet
parts (sorting out of core), writing the table with ``Q`` columns added to one parquet file (temp
name, then an atomic rename) in the input's row order.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import brentq

from polgen.errors import InputError, OutputExistsError, SchemaError
from polgen.options import FdrMethod, Pi0Method, check_option

log = logging.getLogger("polgen")

#: R's ``seq(0.05, 0.95, 0.05)`` bit for bit: ``pmin(from + i * by, to)``
LAMBDA_GRID = np.minimum(0.05 + np.arange(19) * 0.05, 0.95)


# -- dense ------------------------------------------------------------------------------------------
def _valid(p: np.ndarray, what: str = "p") -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    ok = ~np.isnan(p)
    bad = ok & ((p < 0) | (p > 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{what}: p-values must be in [0, 1]; got {p[i]!r}", row=i)
    return ok


def p_adjust_bh(p: np.ndarray | Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values, as R ``p.adjust(p, "BH")`` (NaN = NA, kept)."""
    p = np.asarray(p, dtype=np.float64)
    ok = _valid(p)
    out = np.full(p.shape, np.nan)
    v = p[ok]
    m = v.size
    if m == 0:
        return out
    o = np.argsort(v, kind="stable")[::-1]  # decreasing
    i = np.arange(m, 0, -1, dtype=np.float64)
    q = np.minimum.accumulate(v[o] * m / i)
    adj = np.empty(m)
    adj[o] = np.minimum(q, 1.0)
    out[ok] = adj
    return out


def _check_lambda(lam: Any) -> np.ndarray:
    arr = np.sort(np.atleast_1d(np.asarray(LAMBDA_GRID if lam is None else lam, dtype=np.float64)))
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise InputError("lambda must be one or more finite numbers in [0, 1)")
    if 1 < arr.size < 4:
        raise InputError(f"lambda has {arr.size} values: give one, or at least 4 (as qvalue)")
    if arr[0] < 0 or arr[-1] >= 1:
        raise InputError(f"lambda must lie in [0, 1), got {arr[0]:g}..{arr[-1]:g}")
    return arr


def smoothing_spline_df(x: np.ndarray, y: np.ndarray, df: float) -> np.ndarray:
    """Fitted values at ``x`` of the natural cubic smoothing spline with ``df`` effective degrees of
    freedom (trace of the hat matrix), unit weights; ``x`` increasing and distinct, ``2 < df <= n``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.size
    if n < 3 or np.any(np.diff(x) <= 0):
        raise InputError("the smoother needs at least 3 distinct increasing lambda values")
    if not 2.0 < df <= n:
        raise InputError(f"smooth_df must be in (2, {n}] for {n} lambda values, got {df!r}")
    if df == n:
        return y.copy()
    h = np.diff(x)
    Q = np.zeros((n, n - 2))
    R = np.zeros((n - 2, n - 2))
    for j in range(1, n - 1):  # the n - 2 interior knots (tiny: the lambda grid)
        Q[j - 1, j - 1] = 1.0 / h[j - 1]
        Q[j, j - 1] = -1.0 / h[j - 1] - 1.0 / h[j]
        Q[j + 1, j - 1] = 1.0 / h[j]
        R[j - 1, j - 1] = (h[j - 1] + h[j]) / 3.0
        if j < n - 2:
            R[j - 1, j] = R[j, j - 1] = h[j] / 6.0
    Kp = Q @ np.linalg.solve(R, Q.T)
    e, V = np.linalg.eigh(0.5 * (Kp + Kp.T))
    e = np.maximum(e, 0.0)

    def excess(loglam: float) -> float:
        return float(np.sum(1.0 / (1.0 + np.exp(loglam) * e)) - df)

    lo, hi = -60.0, 60.0
    loglam = brentq(excess, lo, hi, xtol=1e-14, rtol=1e-15, maxiter=500)
    shrink = 1.0 / (1.0 + np.exp(loglam) * e)
    return np.asarray(V @ (shrink * (V.T @ y)))


@dataclass(frozen=True)
class Pi0:
    """The estimated proportion of true null hypotheses (qvalue's ``pi0est``)."""

    pi0: float
    lambdas: np.ndarray
    pi0_lambda: np.ndarray
    pi0_smooth: np.ndarray | None
    method: str
    m: int


def pi0_from_counts(
    counts: np.ndarray, m: int, lambdas: np.ndarray, method: str = "smoother", smooth_df: float = 3.0
) -> Pi0:
    """pi0 from ``counts[k] = #{p >= lambdas[k]}`` among ``m`` p-values (see the module docs)."""
    check_option("pi0_method", method, Pi0Method)
    if m == 0:
        raise InputError("no valid p-values to estimate pi0 from")
    counts = np.asarray(counts, dtype=np.float64)
    pl_ = counts / (m * (1.0 - lambdas))
    smooth = None
    if lambdas.size == 1:
        pi0 = min(float(pl_[0]), 1.0)
    elif method == "smoother":
        smooth = smoothing_spline_df(lambdas, pl_, smooth_df)
        pi0 = min(float(smooth[-1]), 1.0)
    else:
        minpi0 = float(np.quantile(pl_, 0.1))
        mse = (counts / (m**2 * (1.0 - lambdas) ** 2)) * (1.0 - counts / m) + (pl_ - minpi0) ** 2
        pi0 = min(float(np.min(pl_[mse == mse.min()])), 1.0)
    if not pi0 > 0:
        raise InputError(f"the estimated pi0 is {pi0:g} <= 0: check the p-values or use other lambda values")
    return Pi0(pi0, lambdas, pl_, smooth, method, int(m))


def pi0_estimate(
    p: np.ndarray | Sequence[float],
    *,
    lambda_: float | Sequence[float] | None = None,
    pi0_method: Pi0Method = "smoother",
    smooth_df: float = 3.0,
) -> Pi0:
    """qvalue's ``pi0est`` on a vector of p-values (NaN ignored)."""
    p = np.asarray(p, dtype=np.float64)
    ok = _valid(p)
    v = p[ok]
    lam = _check_lambda(lambda_)
    counts = np.array([np.count_nonzero(v >= lv) for lv in lam], dtype=np.float64)
    return pi0_from_counts(counts, int(v.size), lam, pi0_method, smooth_df)


def qvalues(
    p: np.ndarray | Sequence[float],
    *,
    method: FdrMethod = "BH",
    pi0: float | None = None,
    lambda_: float | Sequence[float] | None = None,
    pi0_method: Pi0Method = "smoother",
    smooth_df: float = 3.0,
) -> tuple[np.ndarray, float]:
    """q-values of a vector of p-values (NaN kept): ``(q, pi0)``; ``pi0`` is 1 for ``"BH"``."""
    check_option("method", method, FdrMethod)
    if method == "BH":
        return p_adjust_bh(p), 1.0
    if pi0 is None:
        pi0 = pi0_estimate(p, lambda_=lambda_, pi0_method=pi0_method, smooth_df=smooth_df).pi0
    elif not 0 < pi0 <= 1:
        raise InputError(f"pi0 must be in (0, 1], got {pi0!r}")
    return pi0 * p_adjust_bh(p), float(pi0)


# -- streamed over a result table ---------------------------------------------------------------------
@dataclass
class FdrResult:
    """Output of :func:`fdr`: the table with ``Q[_<variable>]`` columns and the pi0 used per column.

    ``frame`` is a LazyFrame over ``path`` when written (all rows, or the candidates when ``fdr``
    was given), else in memory; ``pi0`` maps each Q column to its pi0 (1 for BH), ``p_columns``
    each Q column to the P column it adjusts, ``n_candidates`` the rows with Q <= fdr (per column).
    """

    frame: pl.LazyFrame
    pi0: dict[str, float]
    p_columns: dict[str, str]
    method: str
    n_candidates: dict[str, int]
    path: Path | None = None
    estimates: dict[str, Pi0] | None = None

    def collect(self) -> pl.DataFrame:
        return self.frame.collect()


def _parts(source: Any) -> tuple[list[str] | None, pl.DataFrame | None]:
    """Parquet files of a run folder / file / glob, or an in-memory frame (with a row index)."""
    path = getattr(source, "path", None) if not isinstance(source, (str, os.PathLike)) else source
    if path is not None:
        p = Path(path)
        if p.is_dir():
            files = sorted(str(f) for f in p.glob("*.parquet"))
        elif any(c in str(p) for c in "*?["):
            files = sorted(str(f) for f in Path(p.anchor or ".").glob(str(p.relative_to(p.anchor or "."))))
        elif p.is_file():
            files = [str(p)]
        else:
            raise InputError("result path not found", path=p)
        if not files:
            raise InputError("no parquet files in the result folder", path=p)
        return files, None
    frame = getattr(source, "frame", source)
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect()
    if not isinstance(frame, pl.DataFrame):
        raise InputError(f"fdr needs an LFMM result, a parquet path or a frame, got {type(source).__name__}")
    return None, frame


def _q_targets(columns: list[str], nonnull: dict[str, int], p_col: str | Sequence[str] | None) -> dict[str, str]:
    """Which P column each Q column adjusts: the calibrated P of each tested variable when it has
    values, else its P; or the given ``p_col`` (Q named after it: P -> Q, P_x -> Q_x, other -> Q_<col>)."""
    if p_col is not None:
        cols = [p_col] if isinstance(p_col, str) else list(p_col)
        out = {}
        for c in cols:
            if c not in columns:
                raise SchemaError(f"the result has no column {c!r} (its columns: {', '.join(columns)})", column=c)
            m = re.fullmatch(r"P(?:_CALIBRATED)?(_.+)?", c)
            out[f"Q{m.group(1) or ''}" if m else f"Q_{c}"] = c
        return out
    suffixes = [c[1:] for c in columns if re.fullmatch(r"T(_.+)?", c)]
    if not suffixes and "P" in columns:
        suffixes = [""]
    if not suffixes:
        raise SchemaError(
            "cannot tell the P columns of this table (no T/T_<variable> or P column); pass p_col=",
            column="P",
        )
    out = {}
    for s in suffixes:
        calibrated = f"P_CALIBRATED{s}"
        if calibrated in columns and nonnull.get(calibrated, 0) > 0:
            out[f"Q{s}"] = calibrated
        elif f"P{s}" in columns:
            out[f"Q{s}"] = f"P{s}"
        else:
            raise SchemaError(f"the result has T{s} but no P{s} column", column=f"P{s}")
    return out


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def fdr(
    result: Any,
    *,
    method: FdrMethod = "BH",
    p_col: str | Sequence[str] | None = None,
    fdr: float | None = None,
    pi0: float | None = None,
    lambda_: float | Sequence[float] | None = None,
    pi0_method: Pi0Method = "smoother",
    smooth_df: float = 3.0,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    memory_limit: str | None = None,
) -> FdrResult:
    """Add q-values to an LFMM test result, streamed through DuckDB.

    Parameters
    ----------
    result : an :class:`~polgen.lfmm.LfmmTestResult` (its run folder when written with ``out=``),
        a run folder / parquet file / glob, or a Polars frame.
    method : ``"BH"`` (Benjamini-Hochberg, R ``p.adjust``) or ``"storey"`` (R qvalue; see the
        module docs for pi0).
    p_col : the P column(s) to adjust; default: per tested variable ``P_CALIBRATED[_v]`` when it
        has values (a calibrated run), else ``P[_v]``.  The q-values go to ``Q[_v]``.
    fdr : keep only the candidates: rows whose Q (any Q column) is ``<= fdr``; default all rows.
    pi0 : a fixed pi0 for ``"storey"`` (default: estimated per column).
    lambda_, pi0_method, smooth_df : qvalue's ``lambda``, ``pi0.method``, ``smooth.df``.
    out : write the table (input row order, Q columns appended) to this parquet file atomically;
        an existing file needs ``overwrite=True``.
    memory_limit : DuckDB's memory limit (e.g. ``"2GB"``); beyond it DuckDB sorts on disk.
    """
    import duckdb

    check_option("method", method, FdrMethod)
    check_option("pi0_method", pi0_method, Pi0Method)
    if fdr is not None and not 0 < fdr <= 1:
        raise InputError(f"fdr must be in (0, 1], got {fdr!r}")
    if pi0 is not None and not 0 < pi0 <= 1:
        raise InputError(f"pi0 must be in (0, 1], got {pi0!r}")
    lam = _check_lambda(lambda_)
    if out is not None:
        out = Path(out)
        if out.exists() and not overwrite:
            raise OutputExistsError("the output exists; pass overwrite=True to replace it", path=out)
    files, frame = _parts(result)
    tmpdir = tempfile.mkdtemp(prefix="polgen-fdr-", dir=None if out is None else out.parent)
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET temp_directory = '" + tmpdir.replace("'", "''") + "'").fetchall()
        if memory_limit:
            con.execute("SET memory_limit = $m", {"m": memory_limit}).fetchall()
        if files is not None:
            listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            con.execute(
                f"CREATE VIEW src AS SELECT * EXCLUDE (file_row_number, _polgen_file), "
                f"_polgen_file AS _pf, file_row_number AS _pr FROM read_parquet([{listing}], "
                f"filename = '_polgen_file', file_row_number = true, union_by_name = true)"
            ).fetchall()
        else:
            assert frame is not None
            con.register("src_frame", frame.with_row_index("_pr").with_columns(pl.lit("").alias("_pf")).to_arrow())
            con.execute("CREATE VIEW src AS SELECT * FROM src_frame").fetchall()
        columns = [r[0] for r in con.execute("DESCRIBE src").fetchall() if r[0] not in ("_pf", "_pr")]
        pcols = [c for c in columns if c.startswith("P")]
        nonnull = (
            dict(
                zip(
                    pcols,
                    con.execute("SELECT " + ", ".join(f"count({_ident(c)})" for c in pcols) + " FROM src").fetchall()[
                        0
                    ],
                )
            )
            if pcols
            else {}
        )
        targets = _q_targets(columns, nonnull, p_col)
        clash = [q for q in targets if q in columns]
        if clash:
            raise SchemaError(f"the result already has a {clash[0]} column", column=clash[0])
        pi0s: dict[str, float] = {}
        estimates: dict[str, Pi0] = {}
        ctes, joins, sel = [], [], []
        for k, (qname, pname) in enumerate(targets.items()):
            pc = f"CAST({_ident(pname)} AS DOUBLE)"
            stats = con.execute(
                f"SELECT count(*) FILTER (WHERE NOT isnan({pc})), "
                f"count(*) FILTER (WHERE {pc} < 0 OR {pc} > 1), "
                + ", ".join(f"count(*) FILTER (WHERE {pc} >= {float(lv)!r})" for lv in lam)
                + " FROM src"
            ).fetchall()[0]
            m, nbad, counts = int(stats[0]), int(stats[1]), np.array(stats[2:], dtype=np.float64)
            if nbad:
                raise InputError(f"{pname}: {nbad} p-values outside [0, 1]", column=pname)
            if method == "BH":
                p0 = 1.0
            elif pi0 is not None:
                p0 = float(pi0)
            else:
                est = pi0_from_counts(counts, m, lam, pi0_method, smooth_df)
                estimates[qname] = est
                p0 = est.pi0
            pi0s[qname] = p0
            ctes.append(
                f"r{k} AS (SELECT _pf, _pr, {pc} AS p, row_number() OVER (ORDER BY {pc}) AS i FROM src "
                f"WHERE {pc} IS NOT NULL AND NOT isnan({pc})), "
                f"q{k} AS (SELECT _pf, _pr, least(1.0, min(p * {m}.0 / i) OVER (ORDER BY p DESC, i DESC "
                f"ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) * {p0!r} AS q FROM r{k})"
            )
            joins.append(f"LEFT JOIN q{k} USING (_pf, _pr)")
            sel.append(f"q{k}.q AS {_ident(qname)}")
        keep = ""
        if fdr is not None:
            keep = "WHERE " + " OR ".join(f"{_ident(q)} <= {float(fdr)!r}" for q in targets)
        body = (
            "WITH "
            + ", ".join(ctes)
            + ", joined AS (SELECT src.* , "
            + ", ".join(sel)
            + " FROM src "
            + " ".join(joins)
            + f") SELECT * EXCLUDE (_pf, _pr) FROM joined {keep} ORDER BY _pf, _pr"
        )
        counts_sql = ", ".join(
            f"count(*) FILTER (WHERE {_ident(q)} <= {float(fdr if fdr is not None else 0.05)!r})" for q in targets
        )
        if out is None:
            table = con.sql(body).pl()
            level = fdr if fdr is not None else 0.05
            ncand = {q: int((table[q] <= level).sum()) for q in targets}
            lazy = table.lazy()
        else:
            tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
            try:
                con.execute(
                    f"COPY ({body}) TO '{str(tmp).replace(chr(39), chr(39) * 2)}' (FORMAT parquet, COMPRESSION zstd)"
                )
                os.replace(tmp, out)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            ncand = dict(
                zip(
                    targets,
                    con.execute(
                        f"SELECT {counts_sql} FROM read_parquet('{str(out).replace(chr(39), chr(39) * 2)}')"
                    ).fetchall()[0],
                )
            )
            lazy = pl.scan_parquet(out)
    except duckdb.Error as exc:
        raise InputError(f"fdr: DuckDB failed on the result: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
        import shutil

        shutil.rmtree(tmpdir, ignore_errors=True)
    log.info(
        "lfmm fdr (%s): %s",
        method,
        ", ".join(
            f"{q} from {p} (pi0 {pi0s[q]:.4g}, {ncand[q]} with Q <= {fdr or 0.05:g})" for q, p in targets.items()
        ),
    )
    return FdrResult(lazy, pi0s, dict(targets), method, {q: int(v) for q, v in ncand.items()}, out, estimates or None)
