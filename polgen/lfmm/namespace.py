"""``df.lfmm`` / ``lf.lfmm``: thin delegates to the typed functions of :mod:`polgen.lfmm`."""

from __future__ import annotations

import polars as pl

from polgen._namespace import register


@register("lfmm")
class LfmmNamespace:
    def __init__(self, frame: pl.DataFrame | pl.LazyFrame) -> None:
        self._frame = frame
