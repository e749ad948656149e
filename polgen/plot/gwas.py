"""Manhattan and QQ plots of any per-SNP result (see :mod:`polgen.plot.source` for the inputs and
:mod:`polgen.plot.thin` for what is drawn)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import polars as pl

from polgen.errors import InputError
from polgen.plot._mpl import COLORS, HIGHLIGHT, LINE, Canvas, PlotResult, finish
from polgen.plot.source import GwasSource, gwas_source
from polgen.plot.thin import layout, thin_manhattan, thin_qq

log = logging.getLogger("polgen")

__all__ = ["manhattan", "qq", "MANHATTAN_CANVAS", "QQ_CANVAS"]

MANHATTAN_CANVAS = Canvas()
QQ_CANVAS = Canvas(width=5.5, height=5.5, left=0.14, right=0.96, bottom=0.12, top=0.90)
_YLABEL = r"$-\log_{10}(p)$"


def _check_threshold(threshold: float, name: str = "threshold") -> float:
    if not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
        raise InputError(f"{name} must be a P value in (0, 1), got {threshold!r}")
    return -math.log10(threshold)


def _source(results: Any, kw: dict[str, Any]) -> GwasSource:
    return results if isinstance(results, GwasSource) else gwas_source(results, **kw)


def _size(canvas: Canvas, px: float) -> float:
    """Marker area (points^2) of a dot ``px`` output pixels wide."""
    return (px * 72.0 / canvas.dpi) ** 2


def _annotations(pts: pl.DataFrame, annotate: int | Sequence[str] | None, window: int = 1_000_000) -> pl.DataFrame:
    """Points to label: the given SNP ids, or the ``annotate`` most significant drawn SNPs at least
    ``window`` bp apart on a chromosome (one label per locus)."""
    if annotate is None or pts.height == 0:
        return pts.clear()
    named = pts.filter(pl.col("snp").is_not_null())
    if not isinstance(annotate, int):
        return named.filter(pl.col("snp").is_in(list(annotate))).unique("snp", keep="first")
    chosen: list[int] = []
    taken: list[tuple[int, int]] = []
    cand = named.filter(pl.col("kept") != "pixel").with_row_index("_i").sort("y", descending=True)
    for i, code, bp in cand.select("_i", "code", "bp").iter_rows():
        if len(chosen) >= annotate:
            break
        if any(c == code and abs(b - bp) < window for c, b in taken):
            continue
        chosen.append(i)
        taken.append((code, bp))
    return cand.filter(pl.col("_i").is_in(chosen)).drop("_i")


def manhattan(
    results: Any,
    out: str | os.PathLike | None = None,
    *,
    p_col: str | None = None,
    chrom_col: str | None = None,
    pos_col: str | None = None,
    snp_col: str | None = None,
    log10p_col: str | None = None,
    lhs: str | None = None,
    param: str | None = None,
    covariate: str | None = None,
    calibrated: bool = True,
    threshold: float = 5e-8,
    suggestive: float | None = 1e-5,
    keep_above: float | None = None,
    highlight: Sequence[str] | None = None,
    annotate: int | Sequence[str] | None = None,
    unknown_chrom: str = "error",
    title: str | None = None,
    canvas: Canvas = MANHATTAN_CANVAS,
    colors: tuple[str, str] = COLORS,
    point_px: float = 3.0,
    thin: bool = True,
) -> PlotResult:
    """Manhattan plot of a per-SNP result; ``out`` (.png, .svg, .pdf) writes it.

    ``results``: a polgen run folder (gsem ``user_gwas`` / ``commonfactor_gwas``, ``lfmm.test``), a
    parquet file, a PLINK2 / REGENIE / GWAS-SSF / plain text table, a DataFrame or a LazyFrame.
    ``lhs`` / ``param`` choose a Genomic SEM parameter, ``covariate`` an LFMM covariate (its
    calibrated P unless ``calibrated=False``); the ``*_col`` arguments name columns the
    autodetection does not find.

    Every SNP at or above ``keep_above`` (default ``threshold``) and every ``highlight`` SNP is drawn;
    below, one SNP per occupied output pixel (the most significant), so the picture is the one all
    SNPs would draw, at a cost bounded by the pixels.  ``threshold`` draws the genome-wide line,
    ``suggestive`` a lighter one (None: none); ``annotate`` labels SNPs (ids, or the N top loci).
    Chromosomes: ``1..n``, ``X``, ``Y``, ``XY``, ``MT`` (``chr`` prefix ignored); other names raise
    :class:`~polgen.errors.InputError` unless ``unknown_chrom="last"`` or ``"drop"``.  P values
    outside [0, 1] raise :class:`~polgen.errors.InputError`; missing ones are not drawn.

    ``thin=False`` draws every SNP (small data, or to compare: the pictures are the same).

    Returns a :class:`~polgen.plot.PlotResult`: ``figure``, ``points`` (the drawn points: ``code,
    bp, x, y, snp, kept``) and ``info`` (``n_total``, ``n_drawn``, ``n_tail``, ``chromosomes``).
    """
    thr_y = _check_threshold(threshold)
    keep_y = _check_threshold(keep_above, "keep_above") if keep_above is not None else thr_y
    src = _source(
        results,
        dict(
            p_col=p_col,
            chrom_col=chrom_col,
            pos_col=pos_col,
            snp_col=snp_col,
            log10p_col=log10p_col,
            lhs=lhs,
            param=param,
            covariate=covariate,
            calibrated=calibrated,
        ),
    )
    lay = layout(src, keep_y=max(keep_y, thr_y), unknown_chrom=unknown_chrom)
    pts = thin_manhattan(src, lay, canvas.axes_px, keep_y=keep_y if thin else -1.0, highlight=highlight)
    fig, ax = canvas.figure()
    size = _size(canvas, point_px)
    normal = pts.filter(pl.col("kept") != "highlight")
    for parity in (0, 1):
        sel = normal.filter(pl.col("code") % 2 == parity)
        ax.scatter(
            sel["x"].to_numpy(),
            sel["y"].to_numpy(),
            s=size,
            c=colors[parity],
            linewidths=0,
            rasterized=True,
            gid=f"manhattan-{parity}",
            zorder=2,
        )
    hl = pts.filter(pl.col("kept") == "highlight")
    if hl.height:
        ax.scatter(
            hl["x"].to_numpy(),
            hl["y"].to_numpy(),
            s=size * 2.5,
            c=HIGHLIGHT,
            linewidths=0,
            gid="highlight",
            zorder=3,
            label="highlighted",
        )
    ax.axhline(thr_y, color=LINE, lw=0.9, ls="--", gid="threshold", zorder=1)
    if suggestive is not None:
        ax.axhline(
            _check_threshold(suggestive, "suggestive"), color="#7f8c8d", lw=0.7, ls=":", gid="suggestive", zorder=1
        )
    for row in _annotations(pts, annotate).iter_rows(named=True):
        right = row["x"] > lay.xlim[0] + 0.85 * (lay.xlim[1] - lay.xlim[0])  # keep labels inside the figure
        ax.annotate(
            row["snp"],
            (row["x"], row["y"]),
            xytext=(-3 if right else 3, 3),
            textcoords="offset points",
            ha="right" if right else "left",
            fontsize=7,
            gid=f"label-{row['snp']}",
        )
    ax.set_xlim(*lay.xlim)
    ax.set_ylim(*lay.ylim)
    if len(lay.labels) == 1:  # one chromosome: positions in Mb
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v / 1e6:g}"))  # x is the position
        ax.set_xlabel(f"Chromosome {lay.labels[0]} position (Mb)")
    else:
        ax.set_xticks(lay.centers)
        many = len(lay.labels) > 24
        ax.set_xticklabels(lay.labels, fontsize=6 if many else 8, rotation=90 if many else 0)
        for k, t in enumerate(ax.get_xticklabels()):
            t.set_color(colors[k % 2])
        ax.set_xlabel("Chromosome")
    ax.set_ylabel(_YLABEL)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    n_ok = lay.n_total - lay.n_missing
    ax.set_title(title if title is not None else f"{src.label}  ({n_ok:,} SNPs)", fontsize=10, loc="left")
    info = {
        "n_total": lay.n_total,
        "n_missing": lay.n_missing,
        "n_drawn": pts.height,
        "n_tail": int((pts["kept"] != "pixel").sum()),
        "chromosomes": lay.labels,
        "label": src.label,
        "series": src.series,
        "columns": src.columns,
        "threshold": threshold,
    }
    log.info("manhattan: %d of %d SNPs drawn", pts.height, n_ok)
    return finish(fig, out, points=pts, info=info)


def qq(
    results: Any,
    out: str | os.PathLike | None = None,
    *,
    p_col: str | None = None,
    chrom_col: str | None = None,
    pos_col: str | None = None,
    snp_col: str | None = None,
    log10p_col: str | None = None,
    lhs: str | None = None,
    param: str | None = None,
    covariate: str | None = None,
    calibrated: bool = True,
    threshold: float = 5e-8,
    level: float = 0.95,
    title: str | None = None,
    canvas: Canvas = QQ_CANVAS,
    point_px: float = 3.0,
    thin: bool = True,
) -> PlotResult:
    """QQ plot of the P values of a per-SNP result (the same inputs as :func:`manhattan`).

    Observed -log10 p against the expected ``-log10((i - 0.5) / n)`` of rank ``i`` among ``n``, the
    pointwise ``level`` band of uniform order statistics (Beta(i, n - i + 1)), and lambda_GC (median
    chi-square(1) of the P values / 0.4549) in the corner and in ``info["lambda_gc"]``.  Points at or
    above -log10(``threshold``) are all drawn, below one per occupied pixel.  Chromosome and
    position are not needed: a table of P values alone is enough when ``p_col`` names it.
    ``thin=False`` draws every point.
    """
    if not (0 < level < 1):
        raise InputError(f"level must be in (0, 1), got {level!r}")
    keep_y = _check_threshold(threshold)
    src = _source(
        results,
        dict(
            p_col=p_col,
            chrom_col=chrom_col,
            pos_col=pos_col,
            snp_col=snp_col,
            log10p_col=log10p_col,
            lhs=lhs,
            param=param,
            covariate=covariate,
            calibrated=calibrated,
            need_position=False,
        ),
    )
    d = thin_qq(src, canvas.axes_px, keep_y=keep_y if thin else -1.0, level=level)
    fig, ax = canvas.figure()
    b = d.band
    ax.fill_between(
        b["expected"].to_numpy(),
        b["lower"].to_numpy(),
        b["upper"].to_numpy(),
        color="#d5dbdb",
        lw=0,
        gid="band",
        label=f"{level:.0%} band",
        zorder=1,
    )
    lim = max(d.xlim[1], d.ylim[1])
    ax.plot([0, lim], [0, lim], color=LINE, lw=0.8, gid="diagonal", zorder=2)
    ax.scatter(
        d.points["expected"].to_numpy(),
        d.points["observed"].to_numpy(),
        s=_size(canvas, point_px),
        c=COLORS[0],
        linewidths=0,
        rasterized=True,
        gid="qq-points",
        zorder=3,
    )
    ax.set_xlim(*d.xlim)
    ax.set_ylim(*d.ylim)
    ax.set_xlabel(r"expected $-\log_{10}(p)$")
    ax.set_ylabel(r"observed $-\log_{10}(p)$")
    ax.text(
        0.04,
        0.95,
        f"$\\lambda_{{GC}}$ = {d.lambda_gc:.3f}\nn = {d.n:,}",
        transform=ax.transAxes,
        va="top",
        fontsize=9,
        gid="lambda",
    )
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title if title is not None else src.label, fontsize=10, loc="left")
    info = {
        "n_total": d.n,
        "n_drawn": d.points.height,
        "lambda_gc": d.lambda_gc,
        "label": src.label,
        "series": src.series,
        "columns": src.columns,
        "level": level,
        "n_tail": int((d.points["kept"] == "tail").sum()),
    }
    return finish(fig, out, points=d.points, info=info)
