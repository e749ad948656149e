"""``df.lfmm`` / ``lf.lfmm``: typed aliases of the functions of :mod:`polgen.lfmm`.

The frame is the covariate table (``IID`` [+ ``FID``] and numeric covariate columns).  Each method
has its function's signature without the covariate parameter ``X`` (see
:func:`polgen._namespace.alias`)."""

from __future__ import annotations

from typing import Any

import polars as pl

from polgen._namespace import alias, keyword, positional, register
from polgen.lfmm.assoc import test as _test
from polgen.lfmm.cv import lfmm_ridge_cv as _lfmm_ridge_cv
from polgen.lfmm.fit import fit as _fit
from polgen.lfmm.glm import glm_test as _glm_test
from polgen.lfmm.lasso import lfmm_lasso as _lfmm_lasso
from polgen.lfmm.offset import genetic_gap as _genetic_gap
from polgen.lfmm.offset import genetic_offset as _genetic_offset


def _fit_then(frame: pl.DataFrame | pl.LazyFrame, args: dict[str, Any]) -> pl.DataFrame | pl.LazyFrame:
    """fit_test: fit the model the test needs (the test's ``model`` argument) from ``K`` and ``fit_kwargs``."""
    args["model"] = _fit(frame, args["bed"], args["K"], **(args["fit_kwargs"] or {}))
    return frame


@register("lfmm")
class LfmmNamespace:
    def __init__(self, frame: pl.DataFrame | pl.LazyFrame) -> None:
        self._frame = frame

    fit = alias(_fit, "X")
    test = alias(_test, "X")
    fit_test = alias(
        _test,
        "X",
        drop=("model",),
        convert=_fit_then,
        name="fit_test",
        extra=(positional("K", annotation="int"), keyword("fit_kwargs", None, "dict[str, Any] | None")),
        doc="Fit (:func:`polgen.lfmm.fit` with ``K`` and ``fit_kwargs``) then test in one call; returns "
        "the :class:`~polgen.lfmm.LfmmTestResult`.",
    )
    glm_test = alias(_glm_test, "X")
    lfmm_lasso = alias(_lfmm_lasso, "X")
    lfmm_ridge_cv = alias(_lfmm_ridge_cv, "X")
    genetic_offset = alias(_genetic_offset, "env")
    genetic_gap = alias(_genetic_gap, "env")
