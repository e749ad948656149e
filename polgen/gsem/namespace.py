"""``df.gsem`` / ``lf.gsem``: thin delegates to the typed functions of :mod:`polgen.gsem`."""

from __future__ import annotations

import polars as pl

from polgen._namespace import register


@register("gsem")
class GsemNamespace:
    def __init__(self, frame: pl.DataFrame | pl.LazyFrame) -> None:
        self._frame = frame
