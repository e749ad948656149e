"""``df.stlr`` / ``lf.stlr``: thin delegates to the typed functions of :mod:`polgen.stlr`."""

from __future__ import annotations

import polars as pl

from polgen._namespace import register


@register("stlr")
class StlrNamespace:
    def __init__(self, frame: pl.DataFrame | pl.LazyFrame) -> None:
        self._frame = frame
