"""``df.lfmm`` / ``lf.lfmm``: thin delegates to the typed functions of :mod:`polgen.lfmm`.

The frame is the covariate table (``IID`` [+ ``FID``] and numeric covariate columns)."""

from __future__ import annotations

from typing import Any

import polars as pl

from polgen._namespace import register


@register("lfmm")
class LfmmNamespace:
    def __init__(self, frame: pl.DataFrame | pl.LazyFrame) -> None:
        self._frame = frame

    def fit(self, bed: Any, K: int, **kwargs: Any):
        """:func:`polgen.lfmm.fit` with this frame as the covariates X."""
        from polgen.lfmm.fit import fit

        return fit(self._frame, bed, K, **kwargs)

    def test(self, model: Any, bed: Any, **kwargs: Any):
        """:func:`polgen.lfmm.test` of ``model`` with this frame as the covariates X."""
        from polgen.lfmm.assoc import test

        return test(model, bed, self._frame, **kwargs)

    def fit_test(self, bed: Any, K: int, *, fit_kwargs: dict | None = None, **kwargs: Any):
        """Fit then test in one call; returns the :class:`~polgen.lfmm.LfmmTestResult`."""
        from polgen.lfmm.assoc import test
        from polgen.lfmm.fit import fit

        model = fit(self._frame, bed, K, **(fit_kwargs or {}))
        return test(model, bed, self._frame, **kwargs)
