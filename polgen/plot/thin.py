"""What a GWAS picture draws: chromosome layout and pixel thinning, in Polars, streamed.

A Manhattan or QQ plot of millions of SNPs is mostly an overdrawn band of insignificant points.
The thinning keeps exactly what a reader can see at the output resolution:

* every point at or above ``keep_y`` (-log10 of the significance threshold) and every highlighted
  SNP, as they are;
* below it, one point per occupied output pixel (per chromosome): the SNP with the largest
  -log10 p in that pixel.

Both steps run as Polars queries over the lazy input (the per-SNP rows are never collected into
Python or matplotlib), so memory grows with the number of occupied pixels, not with the SNPs.
The QQ plot needs each SNP's rank: only its -log10 p column is sorted.

Display quantities computed here (no statistics of the method): the genomic-control lambda of
the plotted P values (median chi-square(1) / 0.4549...) and the pointwise 95% band of uniform
order statistics (Beta(i, n - i + 1) quantiles).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from polgen.errors import InputError
from polgen.plot.source import GwasSource, chrom_order

log = logging.getLogger("polgen")

#: -log10 of the smallest positive double: where P = 0 (underflow) is drawn without a -log10 column
Y_FLOOR_P0 = -math.log10(5e-324)


@dataclass
class ManhattanLayout:
    """Where each chromosome sits on the x axis and the axis ranges (data units)."""

    codes: dict[str, int]  # input chromosome name -> code
    labels: list[str]  # by code
    offsets: np.ndarray  # by code: x = offset + bp - bp_min
    bp_min: np.ndarray
    bp_max: np.ndarray
    counts: np.ndarray
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    n_total: int
    n_missing: int
    y_max: float

    @property
    def centers(self) -> np.ndarray:
        return self.offsets + (self.bp_max - self.bp_min) / 2.0


def _stats(src: GwasSource) -> pl.DataFrame:
    """One streamed pass: per chromosome name the position range, counts and P range checks."""
    y = pl.col("_y")
    ok = y.is_not_null() & y.is_not_nan() & pl.col("_bp").is_not_null()
    # row-wise columns first, plain aggregations after: the streaming engine runs this in chunks
    q = (
        src.lf.select(
            "_chr",
            "_p",
            ok.alias("ok"),
            pl.when(ok).then(pl.col("_bp")).alias("bp"),
            pl.when(ok).then(y).alias("y_ok"),
            pl.when(ok & y.is_finite()).then(y).alias("y_fin"),
            (y == float("inf")).alias("inf"),
        )
        .group_by("_chr")
        .agg(
            pl.len().alias("n"),
            pl.col("ok").sum().alias("n_ok"),
            pl.col("bp").min().alias("bp_min"),
            pl.col("bp").max().alias("bp_max"),
            pl.col("y_fin").max().alias("y_max"),
            pl.col("y_ok").min().alias("y_min"),
            pl.col("inf").sum().alias("n_inf"),
            pl.col("_p").min().alias("p_min"),
            pl.col("_p").max().alias("p_max"),
        )
    )
    try:
        return q.collect(engine="streaming")
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the results: {str(exc).splitlines()[0]}", path=src.path) from None


def _num(v: object) -> float | None:
    return None if v is None else float(v)  # type: ignore[arg-type]


def _check_p(st: pl.DataFrame, src: GwasSource) -> None:
    p_min, p_max, y_min = _num(st["p_min"].min()), _num(st["p_max"].max()), _num(st["y_min"].min())
    col = src.columns.get("p") or src.columns.get("log10p")
    if (p_min is not None and p_min < 0) or (p_max is not None and p_max > 1) or (y_min is not None and y_min < -1e-12):
        raise InputError(f"P values outside [0, 1] (min {p_min}, max {p_max})", path=src.path, column=col)
    n_inf = int(st["n_inf"].sum())
    if n_inf:
        log.warning("%d P values are 0 (underflow) with no -log10 column; drawn at -log10 p = %.1f", n_inf, Y_FLOOR_P0)


def layout(
    src: GwasSource, *, keep_y: float, unknown_chrom: str = "error", gap: float = 0.008, pad: float = 0.01
) -> ManhattanLayout:
    """Chromosome order and offsets, axis ranges; checks P values (typed errors)."""
    st = _stats(src)
    _check_p(st, src)
    n_total = int(st["n"].sum())
    n_ok = int(st["n_ok"].sum())
    st = st.filter(pl.col("n_ok") > 0)
    if n_ok == 0 or st.height == 0:
        raise InputError("no SNP with a chromosome, a position and a P value to draw", path=src.path)
    codes, labels, dropped = chrom_order(st["_chr"].to_list(), unknown_chrom, path=src.path)
    st = st.filter(~pl.col("_chr").is_in(dropped)) if dropped else st
    st = st.with_columns(pl.col("_chr").replace_strict(codes, return_dtype=pl.Int64).alias("code"))
    agg = (
        st.group_by("code")
        .agg(pl.col("bp_min").min(), pl.col("bp_max").max(), pl.col("n_ok").sum(), pl.col("y_max").max())
        .sort("code")
    )
    k = len(labels)
    bp_min = np.zeros(k)
    bp_max = np.zeros(k)
    counts = np.zeros(k, dtype=np.int64)
    for c, lo, hi, n in agg.select("code", "bp_min", "bp_max", "n_ok").iter_rows():
        bp_min[c], bp_max[c], counts[c] = lo, hi, n
    spans = bp_max - bp_min
    total = float(spans.sum())
    g = max(total * gap, 1.0)
    # one chromosome: x is the position itself (round Mb ticks); several: chromosomes side by side
    offsets = bp_min.copy() if k == 1 else np.concatenate([[0.0], np.cumsum(spans[:-1] + g)])
    x0, x1 = float(offsets[0]), float(offsets[-1] + spans[-1])
    px = max((x1 - x0) * pad, 1.0)
    y_max = _num(agg["y_max"].max()) or 0.0
    if int(st["n_inf"].sum()):
        y_max = max(y_max, Y_FLOOR_P0)
    top = max(y_max, keep_y, 1.0) * 1.06
    return ManhattanLayout(
        codes=codes,
        labels=labels,
        offsets=offsets,
        bp_min=bp_min,
        bp_max=bp_max,
        counts=counts,
        xlim=(x0 - px, x1 + px),
        ylim=(0.0, top),
        n_total=n_total,
        n_missing=n_total - n_ok,
        y_max=y_max,
    )


def _with_xy(src: GwasSource, lay: ManhattanLayout) -> pl.LazyFrame:
    """Rows that can be drawn, with ``code``, ``x`` (axis position) and finite ``y``.  The
    chromosome codes and offsets come from a join with a small table (``replace_strict`` on a
    string column is not streamed and would hold whole columns in memory)."""
    names = list(lay.codes)
    codes = [lay.codes[n] for n in names]
    table = pl.DataFrame(
        {"_chr": names, "code": codes, "shift": [float(lay.offsets[c] - lay.bp_min[c]) for c in codes]},
        schema={"_chr": pl.String, "code": pl.Int64, "shift": pl.Float64},
    )
    ok = pl.col("_y").is_not_null() & pl.col("_y").is_not_nan() & pl.col("_bp").is_not_null()
    return (
        src.lf.filter(ok)
        .join(table.lazy(), on="_chr", how="inner")
        .with_columns(
            (pl.col("_bp").cast(pl.Float64) + pl.col("shift")).alias("x"),
            pl.col("_y").clip(upper_bound=Y_FLOOR_P0).alias("y"),
        )
    )


def _pixel(col: str, lo: float, hi: float, n: int) -> pl.Expr:
    scale = n / (hi - lo) if hi > lo else 0.0
    return ((pl.col(col) - lo) * scale).floor().clip(0, n - 1).cast(pl.Int64)


def thin_manhattan(
    src: GwasSource,
    lay: ManhattanLayout,
    axes_px: tuple[int, int],
    *,
    keep_y: float,
    highlight: Sequence[str] | None = None,
) -> pl.DataFrame:
    """The points a Manhattan plot draws (see the module docs): columns ``code, bp, x, y, snp,
    kept`` (``kept``: "tail" at or above ``keep_y``, "highlight", or "pixel")."""
    w, h = axes_px
    base = _with_xy(src, lay)
    hl = list(highlight or [])
    is_hl = pl.col("_snp").is_in(hl) if hl else pl.lit(False)
    cols = [pl.col("code"), pl.col("_bp").alias("bp"), pl.col("x"), pl.col("y"), pl.col("_snp").alias("snp")]
    tail = base.filter((pl.col("y") >= keep_y) | is_hl).select(
        *cols, pl.when(is_hl).then(pl.lit("highlight")).otherwise(pl.lit("tail")).alias("kept")
    )
    key = pl.col("code") * (1 << 42) + _pixel("x", *lay.xlim, w) * (1 << 21) + _pixel("y", *lay.ylim, h)
    below = base.filter((pl.col("y") < keep_y) & ~is_hl).select("code", "_bp", "x", "y", key.alias("key"))
    # the SNP of largest y per pixel (ties: the smallest position): the max per pixel (a small frame),
    # then a second streamed pass keeping the rows that reach it.  Two collects, not one plan using
    # ``below`` twice: a shared subplan would be cached whole in memory.
    try:
        t = tail.collect(engine="streaming")
        top = below.group_by("key").agg(pl.col("y").max()).collect(engine="streaming")
        b = (
            below.join(top.lazy(), on=["key", "y"], how="semi")
            .group_by("key")
            .agg(pl.col("code").first(), pl.col("_bp").min(), pl.col("x").min(), pl.col("y").first())
            .select(
                pl.col("code"),
                pl.col("_bp").alias("bp"),
                "x",
                "y",
                pl.lit(None, pl.String).alias("snp"),
                pl.lit("pixel").alias("kept"),
            )
            .collect(engine="streaming")
        )
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the results: {str(exc).splitlines()[0]}", path=src.path) from None
    return pl.concat([b, t]).sort("x", "y")


# -- QQ ------------------------------------------------------------------------------------------
CHI2_MEDIAN = 0.45493642311957283  # qchisq(0.5, 1)


def lambda_gc_from_y(y_lo: float, y_hi: float) -> float:
    """lambda_GC from the two middle -log10 p values (equal for an odd count): median chi2(1) of the
    P values / qchisq(0.5, 1), as ``np.median(chi2.isf(p, 1)) / chi2.ppf(0.5, 1)``."""
    from scipy.special import ndtri  # chi2(1).isf(p) = ndtri(p / 2)^2, without importing scipy.stats

    c = ndtri(np.power(10.0, -np.array([y_lo, y_hi], dtype=np.float64)) / 2.0) ** 2
    return float(c.mean() / CHI2_MEDIAN)


@dataclass
class QQData:
    points: pl.DataFrame  # rank, expected, observed, kept
    n: int
    lambda_gc: float
    band: pl.DataFrame  # expected, lower, upper (-log10 scale)
    xlim: tuple[float, float]
    ylim: tuple[float, float]


def expected_y(rank: np.ndarray | pl.Expr, n: int):
    """-log10 of the expected uniform order statistic of rank ``rank`` (1 = smallest P) among
    ``n``: ``-log10((rank - 0.5) / n)`` (R ``ppoints`` for n > 10)."""
    if isinstance(rank, pl.Expr):
        return -((rank.cast(pl.Float64) - 0.5) / n).log10()
    return -np.log10((np.asarray(rank, dtype=np.float64) - 0.5) / n)


def qq_band(n: int, level: float = 0.95, points: int = 400) -> pl.DataFrame:
    """Pointwise ``level`` band of the -log10 uniform order statistics (Beta(i, n-i+1) quantiles)
    at about ``points`` ranks spaced evenly on the -log10 scale."""
    from scipy.special import betaincinv

    if n < 1:
        return pl.DataFrame(
            {"expected": [], "lower": [], "upper": []}, schema=dict.fromkeys(("expected", "lower", "upper"), pl.Float64)
        )
    r = np.unique(np.round(np.logspace(0, math.log10(n), points)).astype(np.int64))
    a = (1 - level) / 2
    lo = betaincinv(r, n - r + 1, 1 - a)  # Beta(r, n-r+1) quantiles; larger P -> lower -log10
    hi = betaincinv(r, n - r + 1, a)
    return pl.DataFrame({"expected": expected_y(r, n), "lower": -np.log10(lo), "upper": -np.log10(hi)})


def thin_qq(src: GwasSource, axes_px: tuple[int, int], *, keep_y: float, level: float = 0.95) -> QQData:
    """The points a QQ plot draws: every point at or above ``keep_y`` observed, one per occupied
    pixel below it (the best-ranked one); lambda_GC of all plotted P values; the band."""
    ok = pl.col("_y").is_not_null() & pl.col("_y").is_not_nan()
    ys = src.lf.filter(ok).select(pl.col("_y").clip(upper_bound=Y_FLOOR_P0).alias("y"))
    y = pl.col("_y").filter(ok).clip(upper_bound=Y_FLOOR_P0)
    try:
        st = src.lf.select(
            ok.sum().alias("n"),
            y.max().alias("y_max"),
            y.min().alias("y_min"),
            y.quantile(0.5, "lower").alias("lo"),
            y.quantile(0.5, "higher").alias("hi"),
            pl.col("_p").min().alias("p_min"),
            pl.col("_p").max().alias("p_max"),
        ).collect(engine="streaming")
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the results: {str(exc).splitlines()[0]}", path=src.path) from None
    col = src.columns.get("p") or src.columns.get("log10p")
    p_min, p_max, y_min = st["p_min"][0], st["p_max"][0], st["y_min"][0]
    if (p_min is not None and p_min < 0) or (p_max is not None and p_max > 1) or (y_min is not None and y_min < -1e-12):
        raise InputError(f"P values outside [0, 1] (min {p_min}, max {p_max})", path=src.path, column=col)
    n = int(st["n"][0])
    if n == 0:
        raise InputError("no P value to draw", path=src.path)
    lam = lambda_gc_from_y(float(st["lo"][0]), float(st["hi"][0]))
    x_max = float(expected_y(np.array([1]), n)[0])
    y_top = max(float(st["y_max"][0]), x_max, keep_y, 1.0) * 1.06
    xlim, ylim = (0.0, x_max * 1.04), (0.0, y_top)
    w, h = axes_px
    ranked = (
        ys.sort("y", descending=True)
        .with_row_index("rank", offset=1)
        .with_columns(expected_y(pl.col("rank"), n).alias("expected"))
    )
    # ranks run down both axes at once, so a pixel's points are consecutive: keep a run's first
    kept = (
        ranked.with_columns(_pixel("expected", *xlim, w).alias("px"), _pixel("y", *ylim, h).alias("py"))
        .filter(
            (pl.col("y") >= keep_y)
            | (pl.col("rank") == 1)
            | (pl.col("px").shift(1) != pl.col("px"))
            | (pl.col("py").shift(1) != pl.col("py"))
        )
        .select(
            "rank",
            "expected",
            pl.col("y").alias("observed"),
            pl.when(pl.col("y") >= keep_y).then(pl.lit("tail")).otherwise(pl.lit("pixel")).alias("kept"),
        )
    )
    pts = kept.collect(engine="streaming")
    return QQData(points=pts, n=n, lambda_gc=lam, band=qq_band(n, level), xlim=xlim, ylim=ylim)
