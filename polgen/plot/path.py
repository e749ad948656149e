"""Path diagrams of Genomic SEM fits, written as SVG directly (Graphviz ``dot`` when installed).

Latent variables sit in a row above the observed ones, each centred over its indicators; loadings
(``=~``) and regressions (``~``) are arrows, covariances (``~~``) curved double-headed arrows and
variances small double-headed loops.  Every parameter is one ``<g class="param">`` element with
``data-lhs``, ``data-op``, ``data-rhs`` attributes and its value as text, so the file can be read
back (and is, by the tests).  Fixed parameters are dashed.  ``:=`` and constraint rows are not
arrows and are left out.
"""

from __future__ import annotations

import html
import logging
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import polars as pl

from polgen.errors import InputError, OutputError, SchemaError

log = logging.getLogger("polgen")

__all__ = ["path_diagram", "parameter_frame"]

ARROW_OPS = ("=~", "~", "~~")
VALUE_COLUMNS = {
    "std": ("std_all", "est_std", "est"),
    "std_all": ("std_all",),
    "est_std": ("est_std",),
    "est": ("est",),
}
R_NAMES = {
    "Unstand_Est": "est",
    "Unstandardized_Estimate": "est",
    "STD_Genotype": "est_std",
    "Standardized_Est": "est_std",
    "STD_All": "std_all",
}

# geometry (SVG user units = px)
_BOX_W, _BOX_H, _LAT_R, _GAP = 84.0, 34.0, 34.0, 28.0
_Y_LAT, _Y_OBS, _MARGIN = 150.0, 330.0, 40.0


def parameter_frame(fit_or_model: Any) -> pl.DataFrame:
    """The parameter table of a fit (``SEMResult``: ``.parameters``), a parsed model (``ParTable``:
    ``.to_frame()``), a frame, or a parquet file written by ``SEMResult.save`` (R names accepted)."""
    obj = fit_or_model
    if isinstance(obj, (str, os.PathLike)):
        p = Path(obj)
        if not p.is_file():
            raise InputError(
                "no such parameter table file (a model string needs polgen.gsem.parse_model "
                "first, or `polgen plot path --model`)",
                path=p,
            )
        try:
            obj = pl.read_parquet(p)
        except pl.exceptions.PolarsError as exc:
            raise InputError(f"cannot read the parameter table: {str(exc).splitlines()[0]}", path=p) from None
    elif hasattr(obj, "parameters") and isinstance(obj.parameters, pl.DataFrame):
        obj = obj.parameters
    elif hasattr(obj, "to_frame") and not isinstance(obj, (pl.DataFrame, pl.LazyFrame)):
        obj = obj.to_frame()
    if isinstance(obj, pl.LazyFrame):
        obj = obj.collect()
    if not isinstance(obj, pl.DataFrame):
        raise InputError(f"cannot draw a path diagram of a {type(fit_or_model).__name__}")
    obj = obj.rename({k: v for k, v in R_NAMES.items() if k in obj.columns and v not in obj.columns})
    missing = [c for c in ("lhs", "op", "rhs") if c not in obj.columns]
    if missing:
        raise SchemaError(f"a parameter table needs lhs, op, rhs; missing {missing} (columns {obj.columns})")
    return obj


def _value(row: dict[str, Any], cols: tuple[str, ...]) -> float | None:
    for c in cols:
        v = row.get(c)
        if v is not None and isinstance(v, (int, float)) and math.isfinite(v):
            return float(v)
    ustart = row.get("ustart")
    if isinstance(ustart, (int, float)) and math.isfinite(ustart):
        return float(ustart)
    return None


def _edges(frame: pl.DataFrame, value: str, digits: int) -> list[dict[str, Any]]:
    if value not in VALUE_COLUMNS:
        raise InputError(f"value must be one of {sorted(VALUE_COLUMNS)}, got {value!r}")
    cols = tuple(c for c in VALUE_COLUMNS[value] if c in frame.columns)
    out = []
    for row in frame.filter(pl.col("op").is_in(ARROW_OPS)).iter_rows(named=True):
        v = _value(row, cols)
        free = row.get("free")
        fixed = (free is False) or (isinstance(free, (int, float)) and not isinstance(free, bool) and free == 0)
        out.append(
            {
                "lhs": str(row["lhs"]),
                "op": str(row["op"]),
                "rhs": str(row["rhs"]),
                "value": v,
                "text": "" if v is None else f"{v:.{digits}f}",
                "fixed": fixed,
            }
        )
    if not out:
        raise InputError("the parameter table has no =~, ~ or ~~ parameter to draw")
    return out


def _layout(edges: list[dict[str, Any]]) -> tuple[dict[str, tuple[float, float]], set[str], float]:
    latent: list[str] = []
    for e in edges:
        if e["op"] == "=~" and e["lhs"] not in latent:
            latent.append(e["lhs"])
    observed: list[str] = []
    for f in latent:  # indicators grouped by factor
        for e in edges:
            if e["op"] == "=~" and e["lhs"] == f and e["rhs"] not in latent and e["rhs"] not in observed:
                observed.append(e["rhs"])
    for e in edges:
        for v in (e["rhs"], e["lhs"]):
            if v not in latent and v not in observed:
                observed.append(v)
    step = _BOX_W + _GAP
    pos: dict[str, tuple[float, float]] = {}
    for i, v in enumerate(observed):
        pos[v] = (_MARGIN + _BOX_W / 2 + i * step, _Y_OBS)
    width_obs = _MARGIN * 2 + max(len(observed), 1) * step - _GAP
    want = []
    for k, f in enumerate(latent):
        ind = [pos[e["rhs"]][0] for e in edges if e["op"] == "=~" and e["lhs"] == f and e["rhs"] in pos]
        want.append(sum(ind) / len(ind) if ind else _MARGIN + _LAT_R + k * (2 * _LAT_R + _GAP))
    order = sorted(range(len(latent)), key=lambda k: want[k])
    xs: list[float] = []
    for k in order:  # keep latent circles apart, left to right
        x = max(want[k], xs[-1] + 2 * _LAT_R + _GAP if xs else _MARGIN + _LAT_R)
        xs.append(x)
    for k, x in zip(order, xs):
        pos[latent[k]] = (x, _Y_LAT)
    width = max(width_obs, (xs[-1] + _LAT_R + _MARGIN) if xs else 0.0)
    return pos, set(latent), width


def _anchor(v: str, toward: tuple[float, float], pos, latent: set[str]) -> tuple[float, float]:
    """Where a line from node ``v`` toward a point leaves the node's outline."""
    x, y = pos[v]
    dx, dy = toward[0] - x, toward[1] - y
    d = math.hypot(dx, dy) or 1.0
    if v in latent:
        return x + dx / d * _LAT_R, y + dy / d * _LAT_R
    sx = (_BOX_W / 2) / abs(dx) if dx else math.inf
    sy = (_BOX_H / 2) / abs(dy) if dy else math.inf
    s = min(sx, sy)
    return x + dx * s, y + dy * s


def _label(x: float, y: float, text: str) -> str:
    if not text:
        return ""
    w = 7.0 * len(text) + 6
    return (
        f'<rect class="label-bg" x="{x - w / 2:.1f}" y="{y - 8:.1f}" width="{w:.1f}" height="16" '
        f'fill="white" opacity="0.85"/>'
        f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle" font-size="12">{html.escape(text)}</text>'
    )


def _edge_svg(e: dict[str, Any], pos, latent: set[str]) -> str:
    a, b = e["rhs"], e["lhs"]  # ~ and ~~: rhs -> lhs; =~: lhs (factor) -> rhs (indicator)
    if e["op"] == "=~":
        a, b = e["lhs"], e["rhs"]
    dash = ' stroke-dasharray="5,3"' if e["fixed"] else ""
    two = e["op"] == "~~"
    marks = ' marker-end="url(#arrow)"' + (' marker-start="url(#arrow)"' if two else "")
    (xa, ya), (xb, yb) = pos[a], pos[b]
    if a == b:  # variance: a loop outside the row
        r = _LAT_R if a in latent else _BOX_H / 2
        sgn = -1.0 if a in latent else 1.0
        y0 = ya + sgn * r
        d = (
            f"M {xa - 12:.1f} {y0:.1f} C {xa - 30:.1f} {y0 + sgn * 42:.1f} {xa + 30:.1f} {y0 + sgn * 42:.1f} "
            f"{xa + 12:.1f} {y0:.1f}"
        )
        lx, ly = xa, y0 + sgn * 40
    elif abs(ya - yb) < 1e-6:  # same row: an arc outside the row (above latents, below observed)
        sgn = -1.0 if a in latent else 1.0
        r = _LAT_R if a in latent else _BOX_H / 2
        bend = min(40.0 + 0.15 * abs(xb - xa), 110.0)
        p0 = (xa, ya + sgn * r)
        p1 = (xb, yb + sgn * r)
        cy = ya + sgn * (r + bend)
        d = f"M {p0[0]:.1f} {p0[1]:.1f} C {p0[0]:.1f} {cy:.1f} {p1[0]:.1f} {cy:.1f} {p1[0]:.1f} {p1[1]:.1f}"
        lx, ly = (xa + xb) / 2, ya + sgn * (r + 0.75 * bend)
    else:
        p0 = _anchor(a, (xb, yb), pos, latent)
        p1 = _anchor(b, (xa, ya), pos, latent)
        if two:  # covariance across rows: a gentle curve
            mx, my = (p0[0] + p1[0]) / 2 + 30, (p0[1] + p1[1]) / 2
            d = f"M {p0[0]:.1f} {p0[1]:.1f} Q {mx:.1f} {my:.1f} {p1[0]:.1f} {p1[1]:.1f}"
            lx, ly = (p0[0] + 2 * mx + p1[0]) / 4, (p0[1] + 2 * my + p1[1]) / 4
        else:
            d = f"M {p0[0]:.1f} {p0[1]:.1f} L {p1[0]:.1f} {p1[1]:.1f}"
            t = 0.55
            lx, ly = p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1])
    attrs = (
        f'class="param" data-lhs="{html.escape(e["lhs"])}" data-op="{html.escape(e["op"])}" '
        f'data-rhs="{html.escape(e["rhs"])}" data-value="{html.escape(e["text"])}"'
    )
    return (
        f"<g {attrs}><title>{html.escape(e['lhs'])} {html.escape(e['op'])} {html.escape(e['rhs'])}"
        f"{' = ' + html.escape(e['text']) if e['text'] else ''}</title>"
        f'<path d="{d}" fill="none" stroke="#2c3e50" stroke-width="1.4"{dash}{marks}/>'
        f"{_label(lx, ly, e['text'])}</g>"
    )


def _node_svg(v: str, pos, latent: set[str]) -> str:
    x, y = pos[v]
    name = html.escape(v)
    if v in latent:
        shape = (
            f'<ellipse cx="{x:.1f}" cy="{y:.1f}" rx="{_LAT_R}" ry="{_LAT_R}" fill="#eaf2f8" '
            'stroke="#1f4e79" stroke-width="1.6"/>'
        )
        kind = "latent"
    else:
        shape = (
            f'<rect x="{x - _BOX_W / 2:.1f}" y="{y - _BOX_H / 2:.1f}" width="{_BOX_W}" height="{_BOX_H}" '
            f'fill="#fdfefe" stroke="#2c3e50" stroke-width="1.4"/>'
        )
        kind = "observed"
    return (
        f'<g class="node {kind}" data-name="{name}">{shape}<text x="{x:.1f}" y="{y + 4.5:.1f}" '
        f'text-anchor="middle" font-size="13" font-weight="bold">{name}</text></g>'
    )


def _own_svg(edges: list[dict[str, Any]], title: str | None, marker_id: str = "arrow") -> str:
    pos, latent, width = _layout(edges)
    height = _Y_OBS + _BOX_H / 2 + 70
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif" class="polgen-path">',
        f'<defs><marker id="{html.escape(marker_id)}" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#2c3e50"/></marker></defs>',
    ]
    if title:
        parts.append(f'<text x="12" y="22" font-size="14">{html.escape(title)}</text>')
    parts += [_edge_svg(e, pos, latent).replace("url(#arrow)", f"url(#{html.escape(marker_id)})") for e in edges]
    parts += [_node_svg(v, pos, latent) for v in pos]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _dot_source(edges: list[dict[str, Any]], title: str | None) -> str:
    latent = {e["lhs"] for e in edges if e["op"] == "=~"}
    names = sorted({e["lhs"] for e in edges} | {e["rhs"] for e in edges})

    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph sem {", "  rankdir=TB; splines=true; node [fontname=Helvetica];"]
    if title:
        lines.append(f"  label={q(title)}; labelloc=t;")
    for v in names:
        lines.append(f"  {q(v)} [shape={'ellipse' if v in latent else 'box'}];")
    lines.append("  { rank=min; " + " ".join(q(v) for v in names if v in latent) + " }")
    for e in edges:
        a, b = (e["lhs"], e["rhs"]) if e["op"] == "=~" else (e["rhs"], e["lhs"])
        style = ["style=dashed"] if e["fixed"] else []
        if e["op"] == "~~":
            style += ["dir=both", "constraint=false"]
        attrs = ", ".join([f"label={q(e['text'])}", f"id={q(e['lhs'] + ' ' + e['op'] + ' ' + e['rhs'])}", *style])
        lines.append(f"  {q(a)} -> {q(b)} [{attrs}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _graphviz(dot: str, fmt: str) -> bytes | None:
    exe = shutil.which("dot")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, f"-T{fmt}"], input=dot.encode(), capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("graphviz failed (%s); drawing the path diagram without it", exc)
        return None
    return done.stdout


def path_diagram(
    fit_or_model: Any,
    out: str | os.PathLike | None = None,
    *,
    value: str = "std",
    digits: int = 2,
    engine: str = "auto",
    title: str | None = None,
    marker_id: str = "arrow",
) -> str:
    """Path diagram of a usermodel / commonfactor fit; returns the SVG text, ``out`` writes it.

    ``fit_or_model``: a ``SEMResult`` (``gsem.usermodel`` / ``gsem.commonfactor``), its parameter
    frame or saved parquet, or a parsed model (``ParTable``; values then are the fixed starts).
    ``value``: the number on each arrow, ``"std"`` (completely standardised ``std_all`` when present,
    else ``est_std``, else ``est``), ``"std_all"``, ``"est_std"`` or ``"est"``.  ``engine``:
    ``"svg"`` (polgen's own layout), ``"graphviz"`` (the ``dot`` binary; an error when missing) or
    ``"auto"`` (Graphviz when ``dot`` is on PATH).  ``out``: ``.svg`` (any engine), ``.png`` / ``.pdf``
    (Graphviz only), ``.dot`` (the Graphviz source).  ``marker_id``: the id of the arrowhead marker
    (distinct ids when several diagrams share one HTML page).
    """
    if engine not in ("auto", "svg", "graphviz"):
        raise InputError(f"engine must be 'auto', 'svg' or 'graphviz', got {engine!r}")
    edges = _edges(parameter_frame(fit_or_model), value, digits)
    suffix = Path(out).suffix.lower() if out is not None else ".svg"
    if suffix not in (".svg", ".png", ".pdf", ".dot"):
        raise InputError(f"a path diagram is written as .svg, .png, .pdf or .dot, not {suffix!r}", path=out)
    dot = _dot_source(edges, title)
    use_dot = engine == "graphviz" or (engine == "auto" and shutil.which("dot") is not None)
    if engine == "graphviz" and shutil.which("dot") is None:
        raise InputError("engine='graphviz' needs the Graphviz `dot` program on PATH")
    svg = None
    if use_dot:
        raw = _graphviz(dot, "svg")
        svg = raw.decode() if raw is not None else None
    if svg is None:
        svg = _own_svg(edges, title, marker_id)
    if out is not None:
        if suffix == ".svg":
            data = svg.encode()
        elif suffix == ".dot":
            data = dot.encode()
        else:
            raw = _graphviz(dot, suffix[1:]) if shutil.which("dot") else None
            if raw is None:
                raise InputError(
                    f"writing a path diagram as {suffix} needs Graphviz `dot`; write .svg instead", path=out
                )
            data = raw
        try:
            Path(out).write_bytes(data)
        except OSError as exc:
            raise OutputError(f"cannot write the path diagram: {exc.strerror or exc}", path=out) from None
    return svg
