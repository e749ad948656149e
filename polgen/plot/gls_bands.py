"""The GLS band plot of R GenomicSEM's ``summaryGLSbands``: the estimates against the predictor, the
fitted line (or parabola) and its standard-error band, from a :func:`polgen.gsem.summary_gls_bands`
result.  Nothing is estimated here: the coefficients and band come with the result.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import polars as pl

from polgen.errors import InputError
from polgen.plot._mpl import Canvas, PlotResult, finish

log = logging.getLogger("polgen")

__all__ = ["gls_bands", "GLS_CANVAS"]

GLS_CANVAS = Canvas(width=6.0, height=4.5, left=0.12, right=0.97, bottom=0.13, top=0.91)

#: R's colours: the fitted line and band (#7A9083), the points' fill (#DFD0B7)
_LINE = "#7A9083"
_FILL = "#DFD0B7"


def _parts(result: Any) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray, bool, bool, bool]:
    need = ("band", "points", "coefficients", "quad", "intercept")
    if not all(hasattr(result, a) for a in need):
        raise InputError(
            f"gls_bands draws a summary_gls_bands() result; got {type(result).__name__} without {list(need)}"
        )
    band, points, coef = result.band, result.points, result.coefficients
    for name, frame, cols in (("band", band, ("x", "upper", "lower")), ("points", points, ("x", "y"))):
        if not isinstance(frame, pl.DataFrame) or any(c not in frame.columns for c in cols):
            raise InputError(f"the result's {name} frame lacks columns {list(cols)}")
    beta = coef["beta"].to_numpy()
    return band, points, beta, bool(result.quad), bool(result.intercept), bool(getattr(result, "show_bands", True))


def gls_bands(
    result: Any,
    out: str | os.PathLike | None = None,
    *,
    bands: bool | None = None,
    xlab: str = "",
    ylab: str = "",
    title: str = "",
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    canvas: Canvas = GLS_CANVAS,
) -> PlotResult:
    """Scatter of the estimates with the GLS fit and its band (R ``summaryGLSbands``'s plot).

    Parameters
    ----------
    result
        A :func:`polgen.gsem.summary_gls_bands` result.
    out
        Picture file to write (``.png``, ``.svg``, ``.pdf``); None draws only.
    bands
        Draw the band (dotted limits and a shaded ribbon); default the result's ``bands`` (R ``BANDS``).
    xlab, ylab, title
        Axis labels and title (R ``XLAB``, ``YLAB``, ``TITLELAB``).
    xlim, ylim
        Axis limits (R ``XCOORDS``, ``YCOORDS``, whose defaults are (-2, 2) and (0, 1)); default: the data.
    canvas
        Figure geometry.

    Returns
    -------
    PlotResult
        The figure; ``points``: the band frame drawn (``x, fit, upper, lower``); ``info``: the
        coefficients, ``quad``, whether the band was drawn.
    """
    band, points, beta, quad, intercept, show = _parts(result)
    if bands is None:
        bands = show
    fig, ax = canvas.figure()
    x, y = points["x"].to_numpy(), points["y"].to_numpy()
    lo, hi = (float(np.min(x)), float(np.max(x))) if xlim is None else (float(xlim[0]), float(xlim[1]))
    b = beta if intercept else np.concatenate([[0.0], beta])
    curve_x = np.linspace(lo, hi, 101)
    curve_y = b[0] + b[1] * curve_x + (b[2] * curve_x**2 if quad else 0.0)
    ax.plot(curve_x, curve_y, color=_LINE, lw=1.6, ls="--", gid="gls-fit", zorder=2)
    bx = band["x"].to_numpy()
    if bands:
        up, dn = band["upper"].to_numpy(), band["lower"].to_numpy()
        ax.plot(bx, up, color="black", lw=0.8, ls=":", gid="gls-band-upper", zorder=2)
        ax.plot(bx, dn, color="black", lw=0.8, ls=":", gid="gls-band-lower", zorder=2)
        ax.fill_between(bx, dn, up, color=_LINE, alpha=0.1, lw=0, gid="gls-band", zorder=1)
    ax.scatter(x, y, s=36, color="black", gid="gls-points", zorder=3)
    ax.scatter(x, y, s=6, color=_FILL, zorder=4)
    if xlim is not None:
        ax.set_xlim(*xlim)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlab)
    ax.set_ylabel(ylab)
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    drawn = band.select([c for c in ("x", "fit", "upper", "lower") if c in band.columns])
    return finish(fig, out, points=drawn, info={"coefficients": beta.tolist(), "quad": quad, "bands": bool(bands)})
