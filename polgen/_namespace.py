"""Register one class as both a DataFrame and a LazyFrame namespace."""

from __future__ import annotations

import polars as pl


def register(name: str):
    """Class decorator: register ``cls`` under ``name`` on ``pl.DataFrame`` and ``pl.LazyFrame``.

    The class receives the frame as ``self._frame``; its methods delegate to typed functions.
    """

    def deco(cls):
        pl.api.register_dataframe_namespace(name)(cls)
        pl.api.register_lazyframe_namespace(name)(cls)
        return cls

    return deco
