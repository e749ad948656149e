"""``polgen report``: one self-contained HTML page of a results folder.

The folder is walked for polgen run folders (``io/sink.py``: ``_polgen_manifest.jsonl`` + parts)
and parquet results.  Each gets a section: its parameters (manifest header or parquet key-value
metadata), its parts with rows and SHA-256, summary tables and its pictures -- Manhattan and QQ
plots per series of a per-SNP result (gsem GWAS parameter, LFMM covariate), the path diagram of a
SEM parameter table, scree plots, tissue maps of SpaceTravLR clusters, betas and perturbation
deltas.  Pictures are embedded (base64 PNG, inline SVG): the page needs no network and no other
file.  Without matplotlib the page is written with its tables and path diagrams only.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import os
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from polgen.errors import InputError, PolgenError
from polgen.io.sink import MANIFEST, SUCCESS, read_metadata, sha256_file, write_bytes_atomic
from polgen.plot import _html as H
from polgen.plot._mpl import MissingExtraError, figure_bytes, require_matplotlib
from polgen.plot.source import run_files, run_method, run_params, series_of

log = logging.getLogger("polgen")

__all__ = ["report", "report_html", "demo_report"]


@dataclass
class _Item:
    kind: str  # run | file
    path: Path


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _discover(root: Path, max_depth: int = 5) -> list[_Item]:
    if (root / MANIFEST).exists():
        return [_Item("run", root)]
    items: list[_Item] = []
    base = len(root.parts)
    for d, dirs, files in os.walk(root):
        here = Path(d)
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        if len(here.parts) - base >= max_depth:
            dirs[:] = []
        if here != root and MANIFEST in files:
            items.append(_Item("run", here))
            dirs[:] = []
            continue
        for f in sorted(files):
            if f.endswith((".parquet", ".pq")) and not f.startswith("."):
                items.append(_Item("file", here / f))
    return items


class _Page:
    """Builds the sections of one report."""

    def __init__(self, root: Path, pictures: bool, max_series: int) -> None:
        self.root = root
        self.figs = H.Figures()
        self.sections: list[tuple[str, str, str]] = []
        self.max_series = max_series
        self.notes: list[str] = []
        self.pictures = pictures
        if pictures:
            try:
                require_matplotlib()
            except MissingExtraError as exc:
                self.pictures = False
                self.notes.append(f"Pictures left out: {exc}")
        self.adata: dict[str, Any] | None = None  # tissue of an stlr run, for perturbation maps

    def rel(self, p: Path) -> str:
        try:
            rel = p.relative_to(self.root)
        except ValueError:
            return str(p)
        return self.root.resolve().name if rel == Path(".") else str(rel)

    def anchor(self, p: Path) -> str:
        return "s-" + re.sub(r"[^A-Za-z0-9_-]+", "-", self.rel(p)).strip("-")

    def picture(self, make: Callable[[], Any], caption: str) -> str:
        """A PNG figure from ``make() -> PlotResult``; a failure becomes a note, never an abort."""
        if not self.pictures:
            return ""
        try:
            res = make()
            html = self.figs.png(figure_bytes(res.figure, "png"), caption)
            res.figure.clf()
            return html
        except (PolgenError, ValueError, OSError) as exc:
            log.warning("report: %s failed: %s", caption, exc)
            return f'<p class="warn">{H.esc(caption)}: not drawn ({H.esc(exc)})</p>'

    def add(self, path: Path, heading: str, body: str) -> None:
        self.sections.append((self.anchor(path), heading, body))


# -- sections ------------------------------------------------------------------------------------
def _parts_table(folder: Path) -> str:
    rows = []
    lines = (folder / MANIFEST).read_text().splitlines()[1:] if (folder / MANIFEST).exists() else []
    for line in lines:
        try:
            rec = json.loads(line)
            rows.append(
                {
                    "file": rec["file"],
                    "rows": int(rec["rows"]),
                    "bytes": int(rec["bytes"]),
                    "sha256": str(rec["sha256"]),
                }
            )
        except (ValueError, KeyError, TypeError):
            continue
    if not rows:
        return ""
    df = pl.DataFrame(rows)
    done = "finalised (_SUCCESS)" if (folder / SUCCESS).exists() else "not finalised (no _SUCCESS)"
    return f"<h3>Parts</h3><p>{len(rows)} part(s), {int(df['rows'].sum()):,} rows, {done}.</p>" + H.table(
        df, max_rows=12
    )


#: inputs larger than this are listed with their size but not hashed (a report must stay quick)
HASH_LIMIT = 4 << 30
#: parameters that hold text, never a file name
_NOT_PATHS = {"model", "method", "description", "estimation", "GC", "ml_se"}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _strings(v)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _strings(v)]
    return []


def _locate(text: str, bases: list[Path]) -> Path | None:
    if not text or "\n" in text or len(text) > 4096 or not re.search(r"[/\\.]", text):
        return None
    p = Path(text)
    for cand in [p] if p.is_absolute() else [b / p for b in bases]:
        try:
            if cand.exists():
                return cand
        except OSError:
            continue
    return None


def _digest(path: Path) -> tuple[int, str]:
    """(bytes, SHA-256) of a file, or of a folder: SHA-256 over its files' relative names and hashes."""
    if path.is_file():
        size = path.stat().st_size
        return size, (sha256_file(path) if size <= HASH_LIMIT else f"not hashed (over {HASH_LIMIT >> 30} GiB)")
    import hashlib

    files = sorted(f for f in path.rglob("*") if f.is_file())
    size = sum(f.stat().st_size for f in files)
    if size > HASH_LIMIT or len(files) > 2000:
        return size, f"not hashed ({len(files)} files, {size / 2**30:.1f} GiB)"
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return size, f"{h.hexdigest()} (folder of {len(files)} files)"


def _inputs_table(params: dict[str, Any], bases: list[Path]) -> str:
    """The input files a run's parameters name, with their size and SHA-256 as the report found them."""
    rows, seen = [], set()
    for key in sorted(params):
        if key in _NOT_PATHS:
            continue
        for text in _strings(params[key]):
            found = _locate(text, bases)
            if found is None or found.resolve() in seen:
                continue
            seen.add(found.resolve())
            try:
                size, digest = _digest(found)
            except OSError as exc:
                size, digest = -1, f"unreadable: {exc.strerror or exc}"
            rows.append({"parameter": key, "input": text, "bytes": size, "sha256": digest})
    if not rows:
        return ""
    return "<h3>Inputs</h3><p>Files named by the parameters, hashed when this report was written.</p>" + H.table(
        pl.DataFrame(rows), max_rows=50
    )


def _gwas(page: _Page, path: Path, params: dict[str, Any], method: str | None) -> str:
    from polgen.plot.gwas import manhattan, qq

    out = []
    series = series_of(path)
    if len(series) > page.max_series:
        out.append(f'<p class="note">{len(series)} series; the first {page.max_series} are drawn.</p>')
    stats = []
    for sel in series[: page.max_series]:
        x_names = params.get("x_names")
        single = x_names[0] if isinstance(x_names, list) and len(x_names) == 1 else None
        name = sel.get("param") or sel.get("covariate") or single or "P"
        holder: dict[str, Any] = {}

        def m(sel=sel, holder=holder):
            holder["m"] = manhattan(path, **sel, unknown_chrom="last")
            return holder["m"]

        def q(sel=sel, holder=holder):
            holder["q"] = qq(path, **sel)
            return holder["q"]

        out.append(f"<h3>{H.esc(name)}</h3>")
        out.append(page.picture(m, f"Manhattan plot of {page.rel(path)}: {name}"))
        out.append(page.picture(q, f"QQ plot of {page.rel(path)}: {name}"))
        if "m" in holder:
            mi = holder["m"].info
            pts = holder["m"].points.filter(pl.col("kept") != "pixel").sort("y", descending=True).head(10)
            labels = mi["chromosomes"]
            if pts.height:
                top = pts.select(
                    pl.col("snp").alias("SNP"),
                    pl.col("code").replace_strict(dict(enumerate(labels)), return_dtype=pl.String).alias("CHR"),
                    pl.col("bp").alias("BP"),
                    pl.col("y").alias("-log10 p"),
                )
                out.append(H.table(top, caption=f"Most significant SNPs ({name})"))
            stats.append(
                {
                    "series": name,
                    "SNPs": mi["n_total"] - mi["n_missing"],
                    "P < threshold": int((holder["m"].points["kept"] == "tail").sum()),
                    "lambda_GC": holder["q"].info["lambda_gc"] if "q" in holder else None,
                }
            )
    if stats:
        out.insert(0, H.table(pl.DataFrame(stats), caption="Series"))
    eig = (params.get("model") or {}).get("eigenvalues") if isinstance(params.get("model"), dict) else None
    if eig:
        from polgen.plot.figures import scree

        out.append(
            page.picture(
                lambda: scree(np.asarray(eig, dtype=float), title="LFMM fit: eigenvalues"),
                f"Scree plot of the eigenvalues recorded in {page.rel(path)}",
            )
        )
    return "".join(out)


def _sem(page: _Page, path: Path, df: pl.DataFrame, meta: dict[str, str]) -> str:
    from polgen.plot.path import path_diagram

    out = []
    fit = meta.get("polgen.fit")
    if fit:
        try:
            out.append(H.table(pl.DataFrame([json.loads(fit)]), caption="Model fit"))
        except (ValueError, TypeError):
            pass
    if meta.get("polgen.model"):
        out.append(f"<h3>Model</h3><pre>{H.esc(meta['polgen.model'])}</pre>")
    out.append(H.table(df, max_rows=60, caption="Parameters"))
    try:
        svg = path_diagram(df, engine="svg", marker_id=f"arrow-{page.figs.n + 1}")
        out.append(page.figs.svg(svg, f"Path diagram of {page.rel(path)} (standardised estimates)"))
    except PolgenError as exc:
        out.append(f'<p class="warn">Path diagram not drawn ({H.esc(exc)})</p>')
    return "".join(out)


def _stlr_fit(page: _Page, path: Path, params: dict[str, Any]) -> str:
    from polgen.plot.figures import spatial

    out = []
    rows = []
    first: tuple[str, pl.DataFrame] | None = None
    for f in run_files(path):
        try:
            bd = pl.read_parquet(f)
        except pl.exceptions.PolarsError:
            continue
        betas = [c for c in bd.columns if c.startswith("beta_")]
        gene = f.name.removesuffix("_betadata.parquet")
        mean_abs = {c: float(bd[c].abs().mean() or 0.0) for c in betas}  # type: ignore[arg-type]
        top = sorted(mean_abs, key=lambda c: -mean_abs[c])[:3]
        rows.append(
            {
                "gene": gene,
                "rows": bd.height,
                "modulators": len(betas),
                "largest mean |beta|": ", ".join(f"{c[5:]} {mean_abs[c]:.3g}" for c in top),
            }
        )
        if first is None and top:
            first = (gene, bd.select([c for c in bd.columns if not c.startswith("beta_")] + [top[0]]))
    if rows:
        out.append(H.table(pl.DataFrame(rows), max_rows=40, caption="Betadata per target gene"))
    adata = params.get("adata")
    if isinstance(adata, str) and Path(adata).exists():
        page.adata = {"path": adata, "layer": params.get("layer"), "cluster_key": params.get("cluster_key")}
        ck = params.get("cluster_key")
        if ck:
            out.append(
                page.picture(lambda: spatial(adata, ck, title=f"{ck}"), f"Tissue map of {ck} ({Path(adata).name})")
            )
        if first is not None:
            gene, bd = first
            col = bd.columns[-1]
            out.append(page.picture(lambda: _beta_map(adata, ck, bd, col, gene), f"{gene}: {col} on the tissue"))
    return "".join(out)


def _beta_map(adata: str, cluster_key: str | None, bd: pl.DataFrame, col: str, gene: str):
    from polgen.io.spatial import read_spatial
    from polgen.plot.figures import spatial

    sd = read_spatial(adata, cluster_key=cluster_key)
    values: Any
    if "CellID" in bd.columns:
        values = bd.select("CellID", col)
    else:
        labels = np.asarray(sd.cluster_labels, dtype=object)[sd.clusters]
        lut = dict(zip(bd["Cluster"].cast(pl.String).to_list(), bd[col].to_list()))
        values = np.array([lut.get(str(c), np.nan) for c in labels], dtype=np.float64)
    return spatial(sd, values, center=0.0, title=f"{gene}: {col}")


def _perturb(page: _Page, path: Path, df: pl.DataFrame) -> str:
    from polgen.plot.figures import spatial

    if page.adata is None:
        return H.table(df.head(10), caption="First cells")
    from polgen.io.spatial import read_spatial

    sd = read_spatial(page.adata["path"], layer=page.adata.get("layer"), cluster_key=page.adata.get("cluster_key"))
    genes = [g for g in df.columns if g != "CellID" and g in sd.var_names]
    if not genes or df.height != sd.n_cells:
        return H.table(df.head(10), caption="First cells")
    base = sd.X[:, sd.gene_index(genes)]
    base = np.asarray(base.todense() if hasattr(base, "todense") else base, dtype=np.float64)
    delta = df.select(genes).to_numpy() - base
    mean_abs = np.nanmean(np.abs(delta), axis=0)
    const = np.nanstd(df.select(genes).to_numpy(), axis=0) == 0  # the perturbed gene itself (set to a value)
    tab = pl.DataFrame({"gene": genes, "mean |delta|": mean_abs, "perturbed": const}).sort(
        "mean |delta|", descending=True
    )
    out = [H.table(tab, max_rows=12, caption="Expression change after the perturbation")]
    order = [genes[i] for i in np.argsort(-mean_abs) if not const[i]][:2]
    for g in order:
        j = genes.index(g)
        out.append(
            page.picture(
                functools.partial(spatial, sd, delta[:, j], center=0.0, title=f"{g}: delta"),
                f"{g}: expression change on the tissue ({page.rel(path)})",
            )
        )
    return "".join(out)


def _file(page: _Page, f: Path) -> tuple[str, str] | None:
    try:
        schema = pl.read_parquet_schema(f)
        meta = read_metadata(f)
    except (pl.exceptions.PolarsError, OSError, InputError) as exc:
        return f"{page.rel(f)}", f'<p class="warn">cannot read: {H.esc(exc)}</p>'
    cols = set(schema)
    params = run_params(f)
    head = H.params_table(params) if params else ""
    if {"method", "step", "status"} <= cols:
        return "Summary", H.table(pl.read_parquet(f), max_rows=100)
    if {"lhs", "op", "rhs"} <= cols and not cols & {"SNP", "CHR", "BP"}:
        return f"SEM: {page.rel(f)}", head + _sem(page, f, pl.read_parquet(f), meta)
    if {"K", "EIGENVALUE"} <= cols:
        from polgen.plot.figures import scree

        df = pl.read_parquet(f)
        return f"Scree: {page.rel(f)}", head + H.table(df) + page.picture(
            lambda: scree(df), f"Scree plot of {page.rel(f)}"
        )
    if "CellID" in cols and all(t.is_float() for c, t in schema.items() if c != "CellID"):
        return f"Perturbation: {page.rel(f)}", head + _perturb(page, f, pl.read_parquet(f))
    try:
        from polgen.plot.source import gwas_source

        gwas_source(f, **series_of(f)[0])  # type: ignore[arg-type]
        return f"Per-SNP: {page.rel(f)}", head + _gwas(page, f, params, None)
    except PolgenError:
        pass
    n = pl.scan_parquet(f).select(pl.len()).collect().item()
    return f"{page.rel(f)}", head + f"<p>{n:,} rows.</p>" + H.table(pl.read_parquet(f, n_rows=10), caption="First rows")


def _run(page: _Page, d: Path) -> tuple[str, str]:
    params = run_params(d)
    if (d / "stlr_run.json").exists():
        try:
            params = dict(json.loads((d / "stlr_run.json").read_text()).get("params") or params)
        except ValueError:
            pass
    method = run_method(d) or str(params.get("method") or "")
    body = [
        f"<p>Method <code>{H.esc(method or 'unknown')}</code>, folder <code>{H.esc(page.rel(d))}</code>.</p>",
        H.params_table(params),
        _inputs_table(params, [Path.cwd(), page.root, page.root.parent, d]),
        _parts_table(d),
    ]
    if method == "stlr.fit":
        body.append(_stlr_fit(page, d, params))
    else:
        try:
            body.append(_gwas(page, d, params, method))
        except PolgenError as exc:
            files = run_files(d)
            body.append(f'<p class="note">Not a per-SNP result ({H.esc(exc)}).</p>')
            if files:
                body.append(H.table(pl.read_parquet(files[0], n_rows=10), caption="First rows"))
    return f"{method or 'run'}: {page.rel(d)}", "".join(body)


def _provenance(page: _Page) -> str:
    rows = {
        "polgen": _version("polgen"),
        "python": platform.python_version(),
        "polars": _version("polars"),
        "matplotlib": _version("matplotlib"),
        "platform": platform.platform(),
        "results folder": str(page.root.resolve()),
        "written (UTC)": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "figures": str(page.figs.n),
    }
    body = H.params_table(rows, title="Software and run")
    body += (
        "<p>Part checksums (SHA-256) are those recorded in each run's manifest; the input files each run's "
        "parameters name are hashed (SHA-256) when the report is written (its Inputs table).</p>"
    )
    if page.figs.names:
        body += "<h3>Figures</h3><ol>" + "".join(f"<li>{H.esc(n)}</li>" for n in page.figs.names) + "</ol>"
    return body + "".join(f'<p class="note">{H.esc(n)}</p>' for n in page.notes)


def report_html(
    results_dir: str | os.PathLike, *, title: str | None = None, pictures: bool = True, max_series: int = 4
) -> str:
    """The report of ``results_dir`` as HTML text (see :func:`report`)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise InputError("the results folder does not exist", path=root)
    page = _Page(root, pictures, max_series)
    items = _discover(root)
    # stlr runs first: a perturbation section needs the tissue their parameters name
    items.sort(key=lambda it: (0 if it.kind == "run" and run_method(it.path) == "stlr.fit" else 1, str(it.path)))
    summary = [it for it in items if it.path.name == "demo_summary.parquet"]
    for it in summary + [it for it in items if it not in summary]:
        try:
            heading, body = _run(page, it.path) if it.kind == "run" else (_file(page, it.path) or ("", ""))
        except (PolgenError, pl.exceptions.PolarsError, OSError, ValueError) as exc:
            log.warning("report: %s skipped: %s", it.path, exc)
            heading, body = page.rel(it.path), f'<p class="warn">not reported: {H.esc(exc)}</p>'
        if heading:
            page.add(it.path, heading, body)
    if not page.sections:
        page.sections.append(("empty", "No results", '<p class="note">No polgen run folder or parquet file found.</p>'))
    return H.page(title or f"polgen report: {root.resolve().name}", page.sections, _provenance(page))


def report(
    results_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    pictures: bool = True,
    max_series: int = 4,
) -> Path:
    """Write one self-contained HTML page describing the results in ``results_dir``.

    ``out`` defaults to ``<results_dir>/report.html``.  Every run folder and parquet result below
    ``results_dir`` gets a section (parameters, parts and checksums, summary tables, pictures);
    ``max_series`` caps the Manhattan/QQ pairs drawn per result; ``pictures=False`` (or no
    matplotlib) writes the tables only.  Returns the path written.
    """
    text = report_html(results_dir, title=title, pictures=pictures, max_series=max_series)
    path = Path(out) if out is not None else Path(results_dir) / "report.html"
    write_bytes_atomic(path, text.encode("utf-8"))
    log.info("wrote the report %s", path)
    return path


def demo_report(root: str | os.PathLike) -> Path | None:
    """The report ``polgen demo`` writes at its end: ``<root>/report.html`` (None when it failed;
    the failure is logged, the demo goes on)."""
    try:
        return report(root, Path(root) / "report.html", title="polgen demo")
    except (PolgenError, OSError) as exc:
        log.warning("the demo report could not be written: %s", exc)
        return None
