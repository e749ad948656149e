"""The result of an LFMM association test (:func:`polgen.lfmm.test`, :func:`polgen.lfmm.glm_test`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl


@dataclass
class LfmmTestResult:
    """Output of :func:`polgen.lfmm.test`: the per-SNP table and the calibration constants.

    ``frame`` is a LazyFrame (over the parquet parts when ``out`` was given), ``gif`` maps each
    variable name to its genomic inflation factor, ``calibration`` holds all constants
    (``gif``, and ``median``/``mad`` for median+MAD, ``gif_F`` for the full test).
    """

    frame: pl.LazyFrame
    gif: dict[str, float]
    calibration: dict[str, Any]
    path: Path | None = None
    sink: Any = None

    def collect(self) -> pl.DataFrame:
        return self.frame.collect()

    def lazy(self) -> pl.LazyFrame:
        return self.frame
