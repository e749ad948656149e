"""Pictures and reports of polgen results (optional extra ``polgen[plot]``: matplotlib).

* :func:`manhattan`, :func:`qq`: any per-SNP result (polgen run folders, parquet, PLINK2 / REGENIE /
  GWAS-SSF tables, frames, LazyFrames), thinned in Polars to what the output resolution shows;
* :func:`path_diagram`: a usermodel / commonfactor fit as an SVG path diagram;
* :func:`scree`: LFMM ``choose_k`` eigenvalues (or any eigenvalue frame);
* :func:`gls_bands`: a Genomic SEM ``summary_gls_bands`` fit with its standard-error band;
* :func:`spatial`, :func:`transitions`: values and vectors on tissue coordinates;
* :func:`report`: one self-contained HTML page of a results folder.

matplotlib is imported only when a picture is drawn; without it those functions raise
:class:`MissingExtraError`.  The pictures compute no statistics of the methods: besides the
thinning, only display quantities (lambda_GC and the QQ band).
"""

from __future__ import annotations

from polgen.plot._mpl import Canvas, MissingExtraError, PlotResult
from polgen.plot.figures import scree, spatial, transitions
from polgen.plot.gls_bands import gls_bands
from polgen.plot.gwas import manhattan, qq
from polgen.plot.html_report import demo_report, report, report_html
from polgen.plot.path import path_diagram
from polgen.plot.source import GwasSource, gwas_source

__all__ = [
    "Canvas",
    "GwasSource",
    "MissingExtraError",
    "PlotResult",
    "demo_report",
    "gls_bands",
    "gwas_source",
    "manhattan",
    "path_diagram",
    "qq",
    "report",
    "report_html",
    "scree",
    "spatial",
    "transitions",
]
