"""Lazy matplotlib, figure geometry and file output shared by the pictures.

matplotlib is the optional extra ``polgen[plot]``: it is imported inside the functions that draw,
never at module import, and its absence raises :class:`MissingExtraError` naming the extra.
Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot): no global figure
registry, no GUI backend, safe on servers and in threads.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polgen.errors import InputError, MissingExtraError, OutputError
from polgen.io.sink import write_bytes_atomic

log = logging.getLogger("polgen")

#: file types :func:`save` writes, by suffix
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf", ".jpg": "jpg", ".jpeg": "jpg"}


def require_matplotlib() -> Any:
    """The ``matplotlib`` module, or :class:`MissingExtraError` naming ``polgen[plot]``."""
    try:
        import matplotlib
        from matplotlib.figure import Figure  # noqa: F401 - the part the pictures use
    except ImportError as exc:
        raise MissingExtraError("pictures need matplotlib: pip install 'polgen[plot]'", extra="plot") from exc
    return matplotlib


@dataclass(frozen=True)
class Canvas:
    """Figure size and the axes rectangle (figure fractions), so the axes' pixel size is known
    before drawing: thinning bins points by the pixels they land on.  The defaults put the axes'
    edges on whole pixels, so the thinning's pixel grid is the rendered one."""

    width: float = 12.0  # inches
    height: float = 4.5
    dpi: int = 100
    left: float = 0.065
    right: float = 0.985
    bottom: float = 0.14
    top: float = 0.90

    @property
    def axes_px(self) -> tuple[int, int]:
        """(width, height) of the axes in output pixels."""
        w = (self.right - self.left) * self.width * self.dpi
        h = (self.top - self.bottom) * self.height * self.dpi
        return max(1, int(round(w))), max(1, int(round(h)))

    def figure(self) -> tuple[Any, Any]:
        """A new ``(Figure, Axes)`` with this geometry."""
        require_matplotlib()
        from matplotlib.figure import Figure

        fig = Figure(figsize=(self.width, self.height), dpi=self.dpi)
        ax = fig.add_axes((self.left, self.bottom, self.right - self.left, self.top - self.bottom))
        return fig, ax


@dataclass
class PlotResult:
    """What a picture function returns: the figure, the points it drew and display numbers.

    ``points``: the drawn points as a frame (after thinning); ``info``: counts and display
    quantities (``n_total``, ``n_drawn``, ``lambda_gc`` for a QQ plot, ...); ``path``: the file
    written (None without ``out=``).
    """

    figure: Any
    points: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def to_bytes(self, fmt: str = "png") -> bytes:
        return figure_bytes(self.figure, fmt)

    def _repr_png_(self) -> bytes:  # notebooks
        return self.to_bytes("png")


def figure_bytes(fig: Any, fmt: str = "png") -> bytes:
    """The figure rendered as ``fmt`` (png, svg, pdf) bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=fig.dpi, metadata=_metadata(fmt))
    return buf.getvalue()


def _metadata(fmt: str) -> dict[str, Any] | None:
    # Reproducible files: no creation date (SVG/PDF) and no software stamp that varies.
    if fmt == "svg":
        return {"Date": None, "Creator": "polgen"}
    if fmt == "pdf":
        return {"CreationDate": None, "Creator": "polgen"}
    if fmt == "png":
        return {"Software": "polgen"}
    return None


def save(fig: Any, out: str | os.PathLike) -> Path:
    """Write ``fig`` to ``out`` (format from the suffix), via a temp file and a rename."""
    path = Path(out)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot tell the picture format from {path.name!r}; use one of {sorted(FORMATS)}", path=path)
    if not path.parent.exists():
        raise OutputError("the output directory does not exist", path=path.parent)
    data = figure_bytes(fig, fmt)
    write_bytes_atomic(path, data)
    log.info("wrote %s", path)
    return path


def finish(
    fig: Any, out: str | os.PathLike | None, *, points: Any = None, info: dict[str, Any] | None = None
) -> PlotResult:
    """Save ``fig`` when ``out`` is given and wrap it in a :class:`PlotResult`."""
    path = save(fig, out) if out is not None else None
    return PlotResult(figure=fig, points=points, info=dict(info or {}), path=path)


#: two alternating chromosome colours, a highlight colour and a line colour (colour-blind safe)
COLORS = ("#1f4e79", "#6baed6")
HIGHLIGHT = "#d95f02"
LINE = "#c0392b"
