"""Generalised least squares over estimated parameters (R GenomicSEM ``summaryGLS`` / ``summaryGLSbands``).

A vector of estimates ``y`` (genetic correlations, loadings, ... typically picked out of an LDSC
covstruc with :func:`~polgen.gsem.subset.sub_sv`) is regressed on predictors ``X`` taking their
sampling covariance ``V_y`` into account::

    beta = (X' V_y^-1 X)^-1 X' V_y^-1 y,     cov(beta) = (X' V_y^-1 X)^-1

with two-sided normal p-values of ``z = beta / se`` (R's ``2 * pnorm(-|z|)``).  The inverse of
``V_y`` is applied through its Cholesky factor, so a ``V_y`` that is not positive definite is an
error rather than a silently wrong answer.

:func:`summary_gls_bands` adds R's band data: the fitted line (or parabola with ``quad=True``) over
``intervals`` evenly spaced values of the predictor and ``band_size`` standard errors of the
fitted value either side.  R obtains each standard error by refitting with the predictor shifted
so that the intercept is the fitted value at a shift point; the shifted models span the same
column space as the unshifted one with an intercept, so the same numbers come from
``sqrt(g' cov(beta) g)`` with ``g = (1, s, s^2, 0, ...)`` - one linear solve instead of
``intervals`` refits.  R's shift points are not the grid points the band is drawn at: for a
straight line they are ``min + i * range / intervals`` for ``i = 1..intervals``, for
``quad=True`` ``i = 0..intervals-1``, each drawn at the i-th of ``intervals`` evenly spaced values
from min to max (``band_points="genomicsem"``, the default, reproduces that);
``band_points="grid"`` evaluates the standard error at the grid points themselves.  (The
../shared ``gls_bands.json`` fixture, from another port, used ``i = 0..intervals-1`` for the line
too; its numbers are those of :func:`gls_line_se` at its points.)

R's ``summaryGLSbands`` reaches the band only through ``OBJECT`` (with ``Y``/``V_Y`` its band loop
sets the covariance to ``Y`` and stops); here ``y``/``v_y`` and a :class:`~polgen.gsem.subset.SubSV`
both work.  With ``INTERCEPT = FALSE`` R draws ``BETAS[1] + BETAS[2] x`` from the slope
coefficients; polgen draws the no-intercept fit ``b1 x (+ b2 x^2)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from polgen.errors import InputError, ModelError, NotPositiveDefiniteError
from polgen.gsem.stats import normal_pvalues
from polgen.options import BandPoints, check_option

log = logging.getLogger("polgen")

__all__ = ["GLSBands", "summary_gls", "summary_gls_bands", "gls_line_se"]


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def _outcome(y: Any, v_y: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(y, V_y)`` as float arrays; ``y`` may be a :class:`~polgen.gsem.subset.SubSV` (R's OBJECT)."""
    if v_y is None and hasattr(y, "sub_s") and hasattr(y, "sub_v"):
        y, v_y = y.sub_s, y.sub_v
    if v_y is None:
        raise InputError("v_y (the sampling covariance of y) is required unless y is a sub_sv() result")
    yy = np.asarray(y, dtype=np.float64).reshape(-1)
    vv = np.atleast_2d(np.asarray(v_y, dtype=np.float64))
    n = yy.size
    if n == 0:
        raise InputError("y is empty", column="y")
    if vv.shape != (n, n):
        raise InputError(f"v_y is {vv.shape[0]}x{vv.shape[1]} but y has {n} values; v_y must be {n}x{n}", column="v_y")
    bad = np.flatnonzero(~np.isfinite(yy))
    if bad.size:
        raise InputError(f"y has {bad.size} missing or infinite value(s)", column="y", row=int(bad[0]) + 1)
    if not np.all(np.isfinite(vv)):
        raise InputError("v_y has missing or infinite entries", column="v_y")
    if not np.allclose(vv, vv.T, rtol=1e-8, atol=1e-12 * max(1.0, float(np.abs(vv).max()))):
        raise InputError("v_y is not symmetric", column="v_y")
    return yy, vv


def _matrix(name: str, value: Any, n: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise InputError(f"{name} must be a vector or a matrix, got {arr.ndim} dimensions", column=name)
    if arr.shape[0] != n:
        raise InputError(
            f"{name} has {arr.shape[0]} rows but y has {n} values (one predictor row per estimate)", column=name
        )
    bad = np.argwhere(~np.isfinite(arr))
    if bad.size:
        raise InputError(f"{name} has missing or infinite values", column=name, row=int(bad[0, 0]) + 1)
    return arr


def _whitener(v_y: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of ``V_y``; :class:`NotPositiveDefiniteError` when there is none."""
    try:
        L = np.linalg.cholesky(v_y)
    except np.linalg.LinAlgError:
        ev = float(np.linalg.eigvalsh(v_y).min())
        raise NotPositiveDefiniteError(
            f"v_y is not positive definite (smallest eigenvalue {ev:.3g}); GLS needs its inverse", column="v_y"
        ) from None
    return L


def _gls(X: np.ndarray, y: np.ndarray, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GLS coefficients and their covariance with ``V_y = L L'``."""
    from scipy.linalg import solve_triangular

    Xw = solve_triangular(L, X, lower=True)
    yw = solve_triangular(L, y, lower=True)
    info = Xw.T @ Xw
    rank = np.linalg.matrix_rank(Xw)
    if rank < X.shape[1]:
        raise ModelError(
            f"the {X.shape[1]} GLS columns (intercept, predictors, controls) are linearly dependent "
            f"(rank {rank}); drop a constant or duplicated predictor"
        )
    cov = np.linalg.inv(info)
    cov = (cov + cov.T) / 2.0
    beta = cov @ (Xw.T @ yw)
    return beta, cov


def _table(beta: np.ndarray, cov: np.ndarray, terms: Sequence[str]) -> pl.DataFrame:
    se = np.sqrt(np.diag(cov))
    z = beta / se
    p, _ = normal_pvalues(z)
    return pl.DataFrame({"term": list(terms), "beta": beta, "se": se, "z": z, "p": p})


def _terms(ncol: int, intercept: bool) -> list[str]:
    return (["b0"] if intercept else []) + [f"b{i + 1}" for i in range(ncol)]


# --------------------------------------------------------------------------------------------
# summary_gls
# --------------------------------------------------------------------------------------------
def summary_gls(x: Any, y: Any, v_y: Any = None, intercept: bool = True) -> pl.DataFrame:
    """GLS regression of estimates ``y`` on predictors ``x`` with sampling covariance ``v_y`` (R ``summaryGLS``).

    Parameters
    ----------
    x
        Predictors: a vector (one predictor) or an ``n x p`` matrix, one row per estimate in ``y``.
    y
        The ``n`` estimates (e.g. genetic correlations), or a :func:`~polgen.gsem.subset.sub_sv`
        result, whose ``sub_s`` / ``sub_v`` are then ``y`` / ``v_y`` (R's ``OBJECT``).
    v_y
        ``n x n`` sampling covariance of ``y`` (symmetric positive definite).
    intercept
        Add an intercept column ``b0`` (R ``INTERCEPT = TRUE``).

    Returns
    -------
    polars.DataFrame
        One row per coefficient: ``term`` (``b0`` intercept, ``b1..bp`` the predictor columns, as
        R names them), ``beta``, ``se``, ``z`` and the two-sided normal ``p``.

    Raises
    ------
    InputError
        ``x`` rows do not match ``y``; ``v_y`` of the wrong size, not symmetric or not finite.
    NotPositiveDefiniteError
        ``v_y`` is not positive definite.
    ModelError
        The design columns are linearly dependent.
    """
    yy, vv = _outcome(y, v_y)
    P = _matrix("x", x, yy.size)
    X = np.column_stack([np.ones(yy.size), P]) if intercept else P
    if X.shape[1] > yy.size:
        raise ModelError(f"{X.shape[1]} GLS coefficients for {yy.size} estimates; need at least as many estimates")
    beta, cov = _gls(X, yy, _whitener(vv))
    return _table(beta, cov, _terms(P.shape[1], intercept))


# --------------------------------------------------------------------------------------------
# summary_gls_bands
# --------------------------------------------------------------------------------------------
@dataclass
class GLSBands:
    """:func:`summary_gls_bands` output.

    ``coefficients``: the :func:`summary_gls` table of the model (intercept, predictor, its square
    with ``quad``, controls).  ``band``: one row per grid point, ``x`` (``intervals`` evenly spaced
    values from the predictor's min to max), ``fit`` (the fitted line / parabola, controls at 0),
    ``se`` (standard error of the fitted value, at ``se_at``), ``upper``/``lower``
    (``fit +- band_size * se``).  ``points``: the data, ``x`` and ``y``.  ``cov``: the coefficients'
    covariance.  ``show_bands``, ``band_size``, ``quad``: as passed (:func:`polgen.plot.gls_bands`
    reads them).
    """

    coefficients: pl.DataFrame
    band: pl.DataFrame
    points: pl.DataFrame
    cov: np.ndarray
    quad: bool
    intercept: bool
    show_bands: bool
    band_size: float

    def __repr__(self) -> str:
        return f"GLSBands(quad={self.quad}, {self.band.height} grid points)\n{self.coefficients}"


def _band_design(
    x: np.ndarray, controls: np.ndarray | None, quad: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    cols = [x, x * x] if quad else [x]
    P = np.column_stack(cols)
    X = P if controls is None else np.column_stack([P, controls])
    return P, controls, X


def gls_line_se(cov: np.ndarray, at: Any, quad: bool = False) -> np.ndarray:
    """Standard error of the fitted value ``b0 + b1 s (+ b2 s^2)`` at the points ``at``.

    ``cov`` is the covariance of a fit with an intercept first, then the predictor (then its
    square with ``quad``), then any controls (held at 0).  This is what R's ``summaryGLSbands``
    obtains as the intercept SE of a refit with the predictor shifted by ``s``.
    """
    s = np.asarray(at, dtype=np.float64).reshape(-1)
    k = np.asarray(cov).shape[0]
    G = np.zeros((s.size, k))
    G[:, 0] = 1.0
    G[:, 1] = s
    if quad:
        G[:, 2] = s * s
    var = np.einsum("ij,jk,ik->i", G, cov, G)
    return np.sqrt(np.maximum(var, 0.0))


def summary_gls_bands(
    x: Any,
    y: Any,
    v_y: Any = None,
    intervals: int = 20,
    controls: Any = None,
    intercept: bool = True,
    quad: bool = False,
    bands: bool = True,
    band_size: float = 1.0,
    band_points: BandPoints = "genomicsem",
) -> GLSBands:
    """GLS fit of ``y`` on one predictor with confidence-band data for a plot (R ``summaryGLSbands``).

    Parameters
    ----------
    x
        The predictor, one value per estimate in ``y`` (a vector).
    y
        The estimates, or a :func:`~polgen.gsem.subset.sub_sv` result (then ``v_y`` comes from it).
    v_y
        Sampling covariance of ``y``.
    intervals
        Number of grid points of the band (R ``INTERVALS``), at least 2.
    controls
        Control variables (vector or ``n x c`` matrix) added to the model, unshifted (R ``CONTROLVARS``).
    intercept
        Intercept in the reported model (R ``INTERCEPT``).  The band always comes from the model
        with an intercept (R refits the shifted models with one), and with ``intercept=False`` the
        line is ``b1 x (+ b2 x^2)``.
    quad
        Add the squared predictor (R ``QUAD``): a parabola and its band.
    bands
        Draw the band in the plot (R ``BANDS``); the band data are returned either way.
    band_size
        Width of the band in standard errors (R ``BAND_SIZE``).
    band_points
        ``"genomicsem"``: standard errors at R's shift points (see the module docstring);
        ``"grid"``: at the grid points the band is drawn at.

    Returns
    -------
    GLSBands
        Coefficients, band rows (``x, fit, se_at, se, upper, lower``) and the data points;
        :func:`polgen.plot.gls_bands` draws it.
    """
    check_option("band_points", band_points, BandPoints)
    yy, vv = _outcome(y, v_y)
    xx = np.asarray(x, dtype=np.float64)
    if xx.ndim != 1 and not (xx.ndim == 2 and xx.shape[1] == 1):
        raise InputError("x must be one predictor (a vector) for the band plot; pass more as controls", column="x")
    xx = _matrix("x", xx, yy.size)[:, 0]
    ctl = None if controls is None else _matrix("controls", controls, yy.size)
    if int(intervals) != intervals or intervals < 2:
        raise InputError(f"intervals must be an integer >= 2, got {intervals!r}", column="intervals")
    intervals = int(intervals)
    if not np.isfinite(band_size) or band_size < 0:
        raise InputError(f"band_size must be a non-negative number, got {band_size!r}", column="band_size")
    P, ctl, Xp = _band_design(xx, ctl, quad)
    L = _whitener(vv)
    X = np.column_stack([np.ones(yy.size), Xp]) if intercept else Xp
    if X.shape[1] > yy.size:
        raise ModelError(f"{X.shape[1]} GLS coefficients for {yy.size} estimates; need at least as many estimates")
    beta, cov = _gls(X, yy, L)
    coefficients = _table(beta, cov, _terms(Xp.shape[1], intercept))
    # the band: standard errors from the fit with an intercept (R refits shifted models with one)
    cov1 = cov if intercept else _gls(np.column_stack([np.ones(yy.size), Xp]), yy, L)[1]
    lo, hi = float(xx.min()), float(xx.max())
    grid = np.linspace(lo, hi, intervals)
    if band_points == "grid":
        at: np.ndarray = grid
    else:
        step = (hi - lo) / intervals
        first = 0 if quad else 1
        at = lo + (np.arange(intervals) + first) * step
    se = gls_line_se(cov1, at, quad)
    b = beta if intercept else np.concatenate([[0.0], beta])
    fit = b[0] + b[1] * grid + (b[2] * grid * grid if quad else 0.0)
    band = pl.DataFrame(
        {
            "x": grid,
            "fit": fit,
            "se_at": at,
            "se": se,
            "upper": fit + band_size * se,
            "lower": fit - band_size * se,
        }
    )
    points = pl.DataFrame({"x": xx, "y": yy})
    return GLSBands(
        coefficients=coefficients,
        band=band,
        points=points,
        cov=cov,
        quad=quad,
        intercept=intercept,
        show_bands=bool(bands),
        band_size=float(band_size),
    )
