"""``polgen plot manhattan|qq|path|scree|spatial|transitions`` and ``polgen report`` on the command line.

    polgen plot manhattan gwas/ --out manhattan.png --lhs F1
    polgen plot qq lfmm/ --out qq.png --covariate temp
    polgen plot path commonfactor.parquet --out model.svg
    polgen plot path --model "F1 =~ A + B + C" --out model.svg
    polgen plot spatial tissue.h5ad --values Pax5 --out pax5.png
    polgen plot transitions vectors.parquet --out arrows.png
    polgen report results/ --out report.html

:func:`register` adds the ``plot`` and ``report`` subcommands to the ``polgen`` parser (also
importable as ``add_parser``, the name ``polgen.cli`` looks for in method CLIs).
"""

from __future__ import annotations

import argparse
import logging
import math
from typing import Any

log = logging.getLogger("polgen")

__all__ = ["register", "add_parser"]


def _p_value(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a P value in (0, 1), got {text!r}") from None
    if not (0 < v < 1) or math.isnan(v):
        raise argparse.ArgumentTypeError(f"expected a P value in (0, 1), got {text!r}")
    return v


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="polgen run folder, parquet file/glob, or PLINK2/REGENIE/GWAS-SSF/TSV table")
    p.add_argument("--out", "-o", required=True, help="picture to write (.png, .svg, .pdf)")
    g = p.add_argument_group("columns (autodetected when not given)")
    for flag in ("p-col", "log10p-col", "chrom-col", "pos-col", "snp-col"):
        g.add_argument(f"--{flag}", help=f"the {flag[:-4].replace('log10p', '-log10 P')} column")
    s = p.add_argument_group("series")
    s.add_argument("--lhs", help="Genomic SEM GWAS: the parameter's left-hand side (its ~ SNP effect)")
    s.add_argument("--param", help='Genomic SEM GWAS: the whole parameter, e.g. "F1 ~ SNP"')
    s.add_argument("--covariate", help="LFMM: the covariate")
    s.add_argument("--raw-p", action="store_true", help="LFMM: the uncalibrated P instead of P_CALIBRATED")
    p.add_argument("--threshold", type=_p_value, default=5e-8, help="genome-wide significance threshold")
    p.add_argument("--title", help="title (default: the series)")
    _size(p)


def _size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=_positive, help="width in inches (default: the picture's own)")
    p.add_argument("--height", type=_positive, help="height in inches (default: the picture's own)")
    p.add_argument("--dpi", type=int, help="output resolution in dots per inch (default: the picture's own)")


def _selection_kw(a: argparse.Namespace) -> dict[str, Any]:
    return dict(
        p_col=a.p_col,
        log10p_col=a.log10p_col,
        chrom_col=a.chrom_col,
        pos_col=a.pos_col,
        snp_col=a.snp_col,
        lhs=a.lhs,
        param=a.param,
        covariate=a.covariate,
        calibrated=not a.raw_p,
        threshold=a.threshold,
        title=a.title,
    )


def _canvas(a: argparse.Namespace, base: Any) -> Any:
    from dataclasses import replace

    changes = {k: getattr(a, k) for k in ("width", "height", "dpi") if getattr(a, k, None)}
    return replace(base, **changes) if changes else base


def _done(path: Any, info: dict[str, Any] | None = None) -> int:
    extra = ""
    if info:
        bits = []
        if "n_drawn" in info:
            bits.append(f"{info['n_drawn']:,} of {info.get('n_total', 0):,} points drawn")
        if info.get("lambda_gc") is not None:
            bits.append(f"lambda_GC {info['lambda_gc']:.4f}")
        extra = f" ({', '.join(bits)})" if bits else ""
    print(f"wrote {path}{extra}")
    return 0


def cmd_manhattan(a: argparse.Namespace) -> int:
    from polgen.plot.gwas import MANHATTAN_CANVAS, manhattan

    highlight = [s for s in (a.highlight or "").split(",") if s] or None
    annotate: Any = a.annotate
    r = manhattan(
        a.results,
        a.out,
        **_selection_kw(a),
        suggestive=None if a.no_suggestive else a.suggestive,
        highlight=highlight,
        annotate=annotate,
        unknown_chrom=a.unknown_chrom,
        canvas=_canvas(a, MANHATTAN_CANVAS),
    )
    return _done(r.path, r.info)


def cmd_qq(a: argparse.Namespace) -> int:
    from polgen.plot.gwas import QQ_CANVAS, qq

    r = qq(a.results, a.out, **_selection_kw(a), level=a.level, canvas=_canvas(a, QQ_CANVAS))
    return _done(r.path, r.info)


def cmd_path(a: argparse.Namespace) -> int:
    from polgen.errors import InputError
    from polgen.plot.path import path_diagram

    if (a.params is None) == (a.model is None):
        raise InputError("give a parameter table (PARAMS) or --model, not both")
    target: Any = a.params
    if a.model is not None:
        from polgen.gsem.syntax import parse_model

        target = parse_model(a.model.replace(";", "\n"))
    path_diagram(target, a.out, value=a.value, engine=a.engine, title=a.title)
    return _done(a.out)


def cmd_scree(a: argparse.Namespace) -> int:
    from polgen.plot.figures import SCREE_CANVAS, scree

    cols = [c for c in (a.columns or "").split(",") if c] or None
    r = scree(
        a.result,
        a.out,
        columns=cols,
        k_col=a.k_col,
        suggested_k=a.k,
        alpha=a.alpha,
        log_y=a.log_y,
        title=a.title,
        canvas=_canvas(a, SCREE_CANVAS),
    )
    return _done(r.path)


def cmd_spatial(a: argparse.Namespace) -> int:
    from polgen.plot.figures import SPATIAL_CANVAS, spatial

    data: Any = a.data
    if str(a.data).endswith((".parquet", ".pq", ".csv", ".tsv", ".txt")):
        data = _read_table(str(a.data))
    r = spatial(
        data,
        a.values,
        a.out,
        x=a.x,
        y=a.y,
        layer=a.layer,
        center=a.center,
        cmap=a.cmap,
        title=a.title,
        canvas=_canvas(a, SPATIAL_CANVAS),
    )
    return _done(r.path)


def _read_table(path: str) -> Any:
    import polars as pl

    if path.endswith((".parquet", ".pq")):
        return pl.read_parquet(path)
    return pl.read_csv(path, separator="\t" if path.endswith((".tsv", ".txt")) else ",")


def cmd_transitions(a: argparse.Namespace) -> int:
    from polgen.plot.figures import SPATIAL_CANVAS, transitions

    r = transitions(
        _read_table(a.vectors),
        a.out,
        x=a.x,
        y=a.y,
        dx=a.dx,
        dy=a.dy,
        grid=a.grid or None,
        title=a.title,
        canvas=_canvas(a, SPATIAL_CANVAS),
    )
    return _done(r.path)


def cmd_report(a: argparse.Namespace) -> int:
    from polgen.plot.html_report import report

    path = report(a.results_dir, a.out, title=a.title, pictures=not a.no_pictures, max_series=a.max_series)
    print(f"wrote {path}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``plot`` (manhattan, qq, path, scree, spatial, transitions) and ``report`` to the polgen parser."""
    from polgen.cli import examples

    plot = subparsers.add_parser(
        "plot",
        help="pictures of results (needs polgen[plot])",
        description="Draw pictures of polgen results (matplotlib: pip install 'polgen[plot]').",
    )
    plot.epilog = examples("polgen plot manhattan --help", "polgen plot qq --help")
    sub = plot.add_subparsers(dest="picture", metavar="PICTURE", required=True)

    m = sub.add_parser("manhattan", help="Manhattan plot of a per-SNP result")
    _selection(m)
    m.add_argument("--suggestive", type=_p_value, default=1e-5, help="suggestive line")
    m.add_argument("--no-suggestive", action="store_true", help="no suggestive line")
    m.add_argument("--highlight", help="comma-separated SNP ids drawn in the highlight colour")
    m.add_argument("--annotate", type=int, help="label the N most significant loci")
    m.add_argument(
        "--unknown-chrom",
        choices=("error", "drop", "last"),
        default="error",
        help="chromosome names other than 1..n, X, Y, XY, MT: refuse, drop them, or draw them last",
    )
    m.epilog = examples(
        "polgen plot manhattan polgen-demo/lfmm/results/associations --out manhattan.png",
        "polgen plot manhattan polgen-demo/gsem/results/commonfactor_gwas --lhs F1 --annotate 5 --out f1.png",
    )
    m.set_defaults(func=cmd_manhattan)

    q = sub.add_parser("qq", help="QQ plot with lambda_GC and a confidence band")
    _selection(q)
    q.add_argument("--level", type=float, default=0.95, help="confidence band level")
    q.epilog = examples(
        "polgen plot qq polgen-demo/lfmm/results/associations --out qq.png",
        "polgen plot qq polgen-demo/lfmm/results/associations --raw-p --level 0.99 --out qq_raw.svg",
    )
    q.set_defaults(func=cmd_qq)

    p = sub.add_parser("path", help="path diagram of a usermodel / commonfactor fit (SVG)")
    p.add_argument("params", nargs="?", help="parameter table parquet (SEMResult.save)")
    p.add_argument("--model", help="lavaan model syntax instead (lines or ';'-separated): the model's structure")
    p.add_argument("--out", "-o", required=True, help=".svg (or .png/.pdf/.dot with Graphviz)")
    p.add_argument(
        "--value",
        choices=("std", "std_all", "est_std", "est"),
        default="std",
        help="number on each arrow (default: completely standardised)",
    )
    p.add_argument(
        "--engine",
        choices=("auto", "svg", "graphviz"),
        default="auto",
        help="drawing engine: built-in SVG, Graphviz, or Graphviz when installed",
    )
    p.add_argument("--title", help="title (default: none)")
    p.epilog = examples(
        "polgen plot path polgen-demo/gsem/results/commonfactor.parquet --out model.svg",
        'polgen plot path --model "F1 =~ A + B + C" --out structure.svg',
    )
    p.set_defaults(func=cmd_path)

    s = sub.add_parser("scree", help="scree plot of eigenvalues (LFMM choose_k frame or any eigenvalue table)")
    s.add_argument("result", help="parquet with K + EIGENVALUE (or other eigenvalue) columns")
    s.add_argument("--out", "-o", required=True, help="picture to write (.png, .svg, .pdf)")
    s.add_argument("--columns", help="comma-separated eigenvalue columns (default: every float column)")
    s.add_argument("--k-col", help="component column (default K)")
    s.add_argument("-k", type=int, help="mark this K")
    s.add_argument("--alpha", type=_p_value, help="mark the first K whose Tracy-Widom P >= alpha")
    s.add_argument("--log-y", action="store_true", help="logarithmic y axis")
    s.add_argument("--title", help="title (default: none)")
    _size(s)
    s.epilog = examples("polgen plot scree eigenvalues.parquet --alpha 0.05 --log-y --out scree.png")
    s.set_defaults(func=cmd_scree)

    t = sub.add_parser("spatial", help="values on tissue coordinates (AnnData .h5ad or a table with x/y)")
    t.add_argument("data", help=".h5ad, or parquet/csv/tsv with coordinate columns")
    t.add_argument("--values", help="a gene or an obs/table column (default: the cells only)")
    t.add_argument("--out", "-o", required=True, help="picture to write (.png, .svg, .pdf)")
    t.add_argument("--x", help="x column (obs column for .h5ad)")
    t.add_argument("--y", help="y column")
    t.add_argument("--layer", help="expression layer (.h5ad)")
    t.add_argument("--center", type=float, help="diverging colours centred here (e.g. 0 for deltas)")
    t.add_argument("--cmap", help="matplotlib colour map (default: viridis, or a diverging one with --center)")
    t.add_argument("--title", help="title (default: the values shown)")
    _size(t)
    t.epilog = examples(
        "polgen plot spatial polgen-demo/stlr/tissue.h5ad --out cells.png",
        "polgen plot spatial polgen-demo/stlr/tissue.h5ad --values Pax5 --out pax5.png",
    )
    t.set_defaults(func=cmd_spatial)

    v = sub.add_parser("transitions", help="arrows of per-cell transition vectors (x, y, dx, dy)")
    v.add_argument("vectors", help="parquet/csv/tsv with one row per cell")
    v.add_argument("--out", "-o", required=True, help="picture to write (.png, .svg, .pdf)")
    for col in ("x", "y", "dx", "dy"):
        v.add_argument(f"--{col}", default=col, help=f"column of {col}")
    v.add_argument("--grid", type=int, default=30, help="average over a GRID x GRID lattice (0: one arrow per cell)")
    v.add_argument("--title", help="title (default: none)")
    _size(v)
    v.epilog = examples("polgen plot transitions vectors.parquet --grid 20 --out arrows.png")
    v.set_defaults(func=cmd_transitions)

    r = subparsers.add_parser(
        "report",
        help="one self-contained HTML page of a results folder",
        description="Write one self-contained HTML page (no network needed) describing "
        "every polgen run folder and parquet result below RESULTS_DIR.",
    )
    r.add_argument("results_dir", help="folder of results (a run folder, a demo output, ...)")
    r.add_argument("--out", "-o", help="HTML file (default RESULTS_DIR/report.html)")
    r.add_argument("--title", help="page title (default: the folder name)")
    r.add_argument("--no-pictures", action="store_true", help="tables only")
    r.add_argument("--max-series", type=int, default=4, help="Manhattan/QQ pairs per result")
    r.epilog = examples(
        "polgen report polgen-demo/ --out report.html",
        "polgen report polgen-demo/lfmm/results --no-pictures",
    )
    r.set_defaults(func=cmd_report)


add_parser = register
