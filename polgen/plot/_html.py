"""Small HTML building blocks of the report: tables, figures, parameter lists, the page."""

from __future__ import annotations

import base64
import html
import json
import math
from typing import Any

import polars as pl

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#1c2833;
padding:0 1em;line-height:1.4}
h1{font-size:1.6em;border-bottom:2px solid #1f4e79;padding-bottom:.2em}h2{font-size:1.25em;margin-top:2em;
color:#1f4e79;border-bottom:1px solid #d5dbdb}h3{font-size:1.05em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1em}th,td{border:1px solid #d5dbdb;padding:2px 6px;
text-align:left;vertical-align:top}th{background:#f4f6f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}figure img,figure svg{max-width:100%;
height:auto;border:1px solid #eaeded}figcaption{font-size:.85em;color:#566573}
code{background:#f4f6f7;padding:0 3px}details{margin:.3em 0}.note{color:#7f8c8d;font-size:.9em}
nav ul{columns:2;font-size:.9em}.warn{color:#b03a2e}
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}" if (v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5)) else f"{v:.4f}".rstrip("0").rstrip(".")
    if isinstance(v, (list, dict)):
        text = json.dumps(v)
        return text if len(text) <= 120 else text[:117] + "..."
    return str(v)


def table(df: pl.DataFrame, max_rows: int = 20, caption: str | None = None) -> str:
    shown = df.head(max_rows)
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in df.columns) + "</tr></thead><tbody>")
    opens = ['<td class="num">' if t.is_numeric() else "<td>" for t in df.dtypes]
    for row in shown.iter_rows():
        out.append("<tr>" + "".join(f"{o}{esc(fmt(v))}</td>" for v, o in zip(row, opens)) + "</tr>")
    out.append("</tbody></table>")
    if shown.height < df.height:
        out.append(f'<p class="note">{shown.height} of {df.height:,} rows shown.</p>')
    return "".join(out)


def params_table(params: dict[str, Any], title: str = "Parameters") -> str:
    if not params:
        return '<p class="note">No parameters recorded.</p>'
    rows = []
    for k in sorted(params):
        v = params[k]
        text = fmt(v)
        full = json.dumps(v, default=str) if isinstance(v, (list, dict)) else None
        cell = esc(text)
        if full is not None and len(full) > 120:
            cell = f"<details><summary>{esc(text[:60])}...</summary><code>{esc(full)}</code></details>"
        rows.append(f"<tr><th>{esc(k)}</th><td>{cell}</td></tr>")
    return f"<h3>{esc(title)}</h3><table><tbody>{''.join(rows)}</tbody></table>"


class Figures:
    """Numbers the figures of a page and renders each as a named ``<figure>``."""

    def __init__(self) -> None:
        self.n = 0
        self.names: list[str] = []

    def png(self, data: bytes, caption: str) -> str:
        self.n += 1
        self.names.append(caption)
        b64 = base64.b64encode(data).decode()
        return (
            f'<figure id="figure-{self.n}"><img src="data:image/png;base64,{b64}" alt="{esc(caption)}"/>'
            f"<figcaption>Figure {self.n}: {esc(caption)}</figcaption></figure>"
        )

    def svg(self, svg: str, caption: str) -> str:
        self.n += 1
        self.names.append(caption)
        body = svg[svg.index("<svg") :] if "<svg" in svg else svg  # drop an XML prolog / doctype
        return f'<figure id="figure-{self.n}">{body}<figcaption>Figure {self.n}: {esc(caption)}</figcaption></figure>'


def page(title: str, sections: list[tuple[str, str, str]], provenance: str) -> str:
    """``sections``: (anchor id, heading, body html)."""
    nav = "".join(f'<li><a href="#{esc(a)}">{esc(h)}</a></li>' for a, h, _ in sections)
    body = "".join(f'<section id="{esc(a)}"><h2>{esc(h)}</h2>{b}</section>' for a, h, b in sections)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"/><title>{esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"/><style>{CSS}</style></head>'
        f"<body><h1>{esc(title)}</h1><nav><ul>{nav}</ul></nav>{body}"
        f'<section id="provenance"><h2>Provenance</h2>{provenance}</section></body></html>\n'
    )
