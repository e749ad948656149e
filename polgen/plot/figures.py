"""Scree plots and spatial maps: eigenvalues (LFMM ``choose_k``, parallel analysis), values and
transition vectors on tissue coordinates (SpaceTravLR)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from polgen.errors import InputError, SchemaError
from polgen.plot._mpl import COLORS, LINE, Canvas, PlotResult, finish
from polgen.schema import CELL_ID

log = logging.getLogger("polgen")

__all__ = ["scree", "spatial", "transitions", "SCREE_CANVAS", "SPATIAL_CANVAS"]

SCREE_CANVAS = Canvas(width=6.0, height=4.0, left=0.12, right=0.97, bottom=0.14, top=0.90)
SPATIAL_CANVAS = Canvas(width=6.4, height=5.4, left=0.06, right=0.80, bottom=0.08, top=0.92)

_K_NAMES = ("K", "k", "component", "factor", "index", "n_factors")
_NOT_EIGEN = {"K", "TW", "P", "N_EFF", "VARIANCE_EXPLAINED"}


# -- scree ---------------------------------------------------------------------------------------
def _eigen_frame(result: Any) -> tuple[pl.DataFrame, int | None]:
    suggested = None
    if hasattr(result, "suggested_k") and callable(result.suggested_k):
        try:
            suggested = int(result.suggested_k())
        except (TypeError, ValueError):
            suggested = None
    if hasattr(result, "frame") and callable(result.frame):
        result = result.frame()
    elif hasattr(result, "to_frame") and callable(result.to_frame):  # e.g. gsem.pa_ldsc's result
        result = result.to_frame()
    elif isinstance(result, (np.ndarray, list, tuple)):
        ev = np.asarray(result, dtype=np.float64).ravel()
        result = pl.DataFrame({"K": np.arange(1, ev.size + 1), "EIGENVALUE": ev})
    if isinstance(result, pl.LazyFrame):
        result = result.collect()
    if isinstance(result, (str, os.PathLike)):
        result = pl.read_parquet(os.fspath(result))
    if not isinstance(result, pl.DataFrame):
        raise InputError(f"cannot draw a scree plot of a {type(result).__name__}")
    return result, suggested


def scree(
    result: Any,
    out: str | os.PathLike | None = None,
    *,
    columns: Sequence[str] | None = None,
    k_col: str | None = None,
    suggested_k: int | None = None,
    alpha: float | None = None,
    log_y: bool = False,
    title: str | None = None,
    canvas: Canvas = SCREE_CANVAS,
) -> PlotResult:
    """Scree plot: eigenvalues by component.

    ``result``: an LFMM ``ChooseKResult`` (``lfmm.choose_k``; its suggested K is marked), its
    ``.frame()``, a Genomic SEM ``pa_ldsc`` result (observed and null-quantile eigenvalues, its
    suggested number of components marked) or its ``.to_frame()``, an array of eigenvalues, or any
    frame with a component column (``K``, ``component``,
    ... or ``k_col``) and one or more eigenvalue columns (``columns``; default every float column but
    the Tracy-Widom ones), e.g. observed and simulated eigenvalues of a parallel analysis: one line each.
    ``suggested_k`` marks a K (default the result's own); ``alpha`` instead marks the first K whose
    Tracy-Widom ``P`` is at or above ``alpha``.
    """
    if columns is None and isinstance(getattr(result, "scree_columns", None), tuple):
        columns = list(result.scree_columns)
    frame, suggested = _eigen_frame(result)
    if suggested_k is not None:
        suggested = int(suggested_k)
    k = k_col or next((c for c in _K_NAMES if c in frame.columns), None)
    if columns is None:
        columns = [
            c
            for c, t in frame.schema.items()
            if t.is_float() and c not in _NOT_EIGEN and c != k and not c.startswith("difference")
        ]
        if "EIGENVALUE" in frame.columns:
            columns = ["EIGENVALUE"] + [c for c in columns if c != "EIGENVALUE"]
    missing = [c for c in columns if c not in frame.columns]
    if missing or not columns:
        raise SchemaError(
            f"no eigenvalue column{'s ' + str(missing) if missing else ''} to draw; columns: {frame.columns}"
        )
    x = frame[k].to_numpy() if k is not None else np.arange(1, frame.height + 1)
    if alpha is not None and "P" in frame.columns:
        sig = frame["P"].to_numpy() < alpha
        suggested = int(np.argmin(sig)) if not sig.all() else int(sig.size)
    fig, ax = canvas.figure()
    palette = (COLORS[0], "#e67e22", "#7f8c8d", "#27ae60", "#8e44ad")
    for j, c in enumerate(columns):
        ax.plot(
            x, frame[c].to_numpy(), marker="o", ms=4, lw=1.3, color=palette[j % len(palette)], label=c, gid=f"scree-{c}"
        )
    if suggested is not None and suggested > 0:
        ax.axvline(suggested + 0.5, color=LINE, ls="--", lw=0.9, gid="suggested-k")
        ax.text(
            suggested + 0.6,
            0.95,
            f"K = {suggested}",
            transform=ax.get_xaxis_transform(),
            color=LINE,
            fontsize=9,
            va="top",
        )
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(k or "component")
    ax.set_ylabel("eigenvalue")
    if not log_y:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    ax.set_xticks(x if len(x) <= 25 else x[:: max(1, len(x) // 12)])
    if len(columns) > 1:
        ax.legend(frameon=False, fontsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title if title is not None else "scree", fontsize=10, loc="left")
    return finish(
        fig,
        out,
        points=frame.select(([k] if k else []) + list(columns)),
        info={"suggested_k": suggested, "columns": list(columns)},
    )


# -- spatial -------------------------------------------------------------------------------------
_XY_NAMES = (
    ("x", "y"),
    ("X", "Y"),
    ("x_coord", "y_coord"),
    ("spatial_x", "spatial_y"),
    ("imagecol", "imagerow"),
    ("array_col", "array_row"),
    ("pxl_col_in_fullres", "pxl_row_in_fullres"),
)


def _cells(data: Any, x: str | None, y: str | None, layer: str | None) -> tuple[np.ndarray, Any, pl.DataFrame]:
    """``(coords (n, 2), SpatialData or None, cell frame with CellID when known)``."""
    if isinstance(data, pl.LazyFrame):
        data = data.collect()
    if isinstance(data, pl.DataFrame):
        if x is None or y is None:
            pair = next((p for p in _XY_NAMES if p[0] in data.columns and p[1] in data.columns), None)
            if pair is None:
                raise SchemaError(f"no coordinate columns (x/y, ...); name them with x=, y=; columns: {data.columns}")
            x, y = pair
        for c in (x, y):
            if c not in data.columns:
                raise SchemaError(f"no coordinate column {c!r}; columns: {data.columns}", column=c)
        xy = np.column_stack([data[x].cast(pl.Float64).to_numpy(), data[y].cast(pl.Float64).to_numpy()])
        return xy, None, data
    from polgen.io.spatial import SpatialData, read_spatial

    sd = (
        data
        if isinstance(data, SpatialData)
        else read_spatial(data, layer=layer, spatial_key=(x, y) if x and y else None)
    )
    return np.asarray(sd.coords, dtype=np.float64), sd, sd.obs


def _values(values: Any, sd: Any, cells: pl.DataFrame, n: int, layer: str | None) -> tuple[np.ndarray | None, str]:
    if values is None:
        return None, ""
    if isinstance(values, str):
        if values in cells.columns:
            return cells[values].to_numpy(), values
        if sd is not None and values in sd.var_names:
            return np.asarray(
                sd.gene(values) if layer is None else sd.gene(values, layer), dtype=np.float64
            ).ravel(), values
        raise InputError(f"{values!r} is neither a column of the cells nor a gene of the data")
    if isinstance(values, pl.DataFrame):
        val_cols = [c for c in values.columns if c != CELL_ID]
        if CELL_ID in values.columns and CELL_ID in cells.columns and len(val_cols) == 1:
            joined = cells.select(CELL_ID).join(values, on=CELL_ID, how="left", maintain_order="left")
            return joined[val_cols[0]].to_numpy(), val_cols[0]
        raise SchemaError(f"a values frame needs {CELL_ID} and one value column; columns: {values.columns}")
    if isinstance(values, pl.Series):
        name = values.name
        values = values.to_numpy()
    else:
        name = ""
    arr = np.asarray(values)
    if arr.shape[0] != n:
        raise InputError(f"{arr.shape[0]} values for {n} cells")
    return arr, name


def spatial(
    data: Any,
    values: Any = None,
    out: str | os.PathLike | None = None,
    *,
    x: str | None = None,
    y: str | None = None,
    layer: str | None = None,
    cmap: str | None = None,
    center: float | None = None,
    point_px: float | None = None,
    title: str | None = None,
    canvas: Canvas = SPATIAL_CANVAS,
) -> PlotResult:
    """Values on tissue coordinates: expression, betas, perturbation deltas, clusters.

    ``data``: an AnnData or ``.h5ad`` path (``obsm["spatial"]``; ``x``/``y`` name obs columns
    instead), a ``SpatialData``, or a frame with coordinate columns (``x``/``y`` or ``x=``/``y=``).
    ``values``: a column of the cells' frame or a gene (expression of ``layer``), an array or Series
    in cell order, or a frame ``CellID`` + one value column (joined on the cells; missing cells grey).
    Strings are drawn as categories; numbers with ``cmap`` (``center=0`` gives a diverging map
    centred there, as for betas and deltas).
    """
    xy, sd, cells = _cells(data, x, y, layer)
    n = xy.shape[0]
    vals, name = _values(values, sd, cells, n, layer)
    fig, ax = canvas.figure()
    size = ((point_px or max(2.0, min(9.0, 500.0 / max(np.sqrt(n), 1.0)))) * 72.0 / canvas.dpi) ** 2
    if vals is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, c=COLORS[0], linewidths=0, gid="cells")
    elif vals.dtype.kind in "OUSb":
        cats = [str(v) for v in vals]
        levels = sorted(set(cats))
        from matplotlib import colormaps

        cm = colormaps["tab20" if len(levels) > 10 else "tab10"]
        for j, lev in enumerate(levels):
            m = np.array([c == lev for c in cats])
            ax.scatter(xy[m, 0], xy[m, 1], s=size, color=cm(j % cm.N), linewidths=0, label=lev, gid=f"cells-{lev}")
        ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=1.5)
    else:
        v = np.asarray(vals, dtype=np.float64)
        kw: dict[str, Any] = {}
        if center is not None:
            from matplotlib.colors import TwoSlopeNorm

            lim = float(np.nanmax(np.abs(v - center))) if np.isfinite(v).any() else 1.0
            lim = lim or 1.0
            kw["norm"] = TwoSlopeNorm(vcenter=center, vmin=center - lim, vmax=center + lim)
        miss = ~np.isfinite(v)
        if miss.any():
            ax.scatter(xy[miss, 0], xy[miss, 1], s=size, c="#d5d8dc", linewidths=0, gid="cells-missing")
        sc = ax.scatter(
            xy[~miss, 0],
            xy[~miss, 1],
            c=v[~miss],
            s=size,
            linewidths=0,
            cmap=cmap or ("RdBu_r" if center is not None else "viridis"),
            gid="cells",
            **kw,
        )
        cax = fig.add_axes((canvas.right + 0.02, canvas.bottom + 0.1, 0.025, (canvas.top - canvas.bottom) * 0.7))
        fig.colorbar(sc, cax=cax)
    ax.set_aspect("equal", adjustable="datalim")
    ax.invert_yaxis()  # image convention: row 0 at the top, as squidpy draws tissue
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title if title is not None else name, fontsize=10, loc="left")
    return finish(fig, out, points=pl.DataFrame({"x": xy[:, 0], "y": xy[:, 1]}), info={"n_cells": n, "values": name})


def transitions(
    vectors: Any,
    out: str | os.PathLike | None = None,
    *,
    x: str = "x",
    y: str = "y",
    dx: str = "dx",
    dy: str = "dy",
    grid: int | None = 30,
    background: Any = None,
    scale: float | None = None,
    title: str | None = None,
    canvas: Canvas = SPATIAL_CANVAS,
) -> PlotResult:
    """Arrows of per-cell transition vectors (a perturbation's predicted cell-state shifts).

    ``vectors``: a frame with ``x, y, dx, dy`` columns (names configurable).  With ``grid`` the
    vectors are averaged over a ``grid x grid`` lattice over the tissue (as the reference's quiver
    plots do) so the field reads at a glance; ``grid=None`` draws one arrow per cell.
    ``background``: values in cell order drawn underneath in grey scale (e.g. the perturbed gene).
    """
    if isinstance(vectors, pl.LazyFrame):
        vectors = vectors.collect()
    if not isinstance(vectors, pl.DataFrame):
        raise InputError(f"transitions take a frame with {x}, {y}, {dx}, {dy} columns, not a {type(vectors).__name__}")
    missing = [c for c in (x, y, dx, dy) if c not in vectors.columns]
    if missing:
        raise SchemaError(f"missing vector columns {missing}; columns: {vectors.columns}")
    v = vectors.select(pl.col(x, y, dx, dy).cast(pl.Float64)).drop_nans().drop_nulls()
    arrows = v.rename({x: "x", y: "y", dx: "dx", dy: "dy"})
    if grid:
        if grid < 2:
            raise InputError(f"grid must be at least 2 (or None), got {grid}")
        x0, x1 = float(arrows["x"].min()), float(arrows["x"].max())  # type: ignore[arg-type]
        y0, y1 = float(arrows["y"].min()), float(arrows["y"].max())  # type: ignore[arg-type]
        wx, wy = (x1 - x0) / grid or 1.0, (y1 - y0) / grid or 1.0
        arrows = (
            arrows.with_columns(
                ((pl.col("x") - x0) / wx).floor().clip(0, grid - 1).alias("gx"),
                ((pl.col("y") - y0) / wy).floor().clip(0, grid - 1).alias("gy"),
            )
            .group_by("gx", "gy")
            .agg(pl.len().alias("n"), pl.col("dx").mean(), pl.col("dy").mean())
            .with_columns((x0 + (pl.col("gx") + 0.5) * wx).alias("x"), (y0 + (pl.col("gy") + 0.5) * wy).alias("y"))
            .sort("gx", "gy")
            .select("x", "y", "dx", "dy", "n")
        )
    fig, ax = canvas.figure()
    if background is not None:
        bg = np.asarray(background.to_numpy() if isinstance(background, pl.Series) else background, dtype=np.float64)
        if bg.shape[0] == vectors.height:
            ax.scatter(
                vectors[x].to_numpy(),
                vectors[y].to_numpy(),
                c=bg,
                cmap="Greys",
                s=6,
                linewidths=0,
                alpha=0.6,
                gid="background",
            )
    ax.quiver(
        arrows["x"].to_numpy(),
        arrows["y"].to_numpy(),
        arrows["dx"].to_numpy(),
        arrows["dy"].to_numpy(),
        angles="xy",
        scale_units="xy",
        scale=scale,
        color=COLORS[0],
        width=0.004,
        gid="arrows",
    )
    ax.set_aspect("equal", adjustable="datalim")
    ax.invert_yaxis()
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title if title is not None else "transitions", fontsize=10, loc="left")
    return finish(fig, out, points=arrows, info={"n_cells": vectors.height, "n_arrows": arrows.height})
