"""``df.gsem.hdl`` / ``lf.gsem.hdl``: HDL of the frame's munged statistics as one trait.

The namespace method is an alias of :func:`polgen.gsem.hdl` (its signature is checked in
tests/test_namespace_signatures.py); here it gives the function's numbers and, in the piecewise
method, R GenomicSEM's own: a trait's heritability is the sum of its single-trait piece fits, which do
not depend on the other traits, so trait A alone reproduces the (A, A) cells of R's 3-trait
``abc_piecewise`` output (tests/data/gsem/r/hdl, liability scale with prevalences 0.4 / 0.05)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

import polgen  # noqa: F401  (registers the namespaces)
from polgen.gsem import hdl

D = Path(__file__).resolve().parents[1] / "data/gsem/r/hdl"


def test_namespace_hdl_is_the_function_and_matches_r():
    frame = pl.read_csv(D / "A.sumstats.gz", separator="\t")
    kw = {"sample_prev": 0.4, "population_prev": 0.05, "trait_names": ["A"], "ld_path": D / "panel"}
    want = hdl(frame, **kw)
    eager = frame.gsem.hdl(**kw)
    lazy = frame.lazy().gsem.hdl(**{**kw, "ld_path": D / "panel_r"})  # R's .rda layout, same doubles
    for got in (eager, lazy):
        assert got.trait_names == ["A"]
        np.testing.assert_array_equal(got.S, want.S)
        np.testing.assert_array_equal(got.V, want.V)
        np.testing.assert_array_equal(got.I, want.I)
    # R's 3-trait run: S[0, 0], I[0, 0] and V[0, 0] (vech's first element is A's heritability)
    r_s, r_i, r_v = (np.loadtxt(D / f"abc_piecewise_{x}.tsv") for x in "SIV")
    assert abs(want.S[0, 0] / r_s[0, 0] - 1) < 3e-4  # tolerances of test_hdl.py's abc_piecewise
    assert abs(want.I[0, 0] / r_i[0, 0] - 1) < 3e-5
    assert abs(want.V[0, 0] / r_v[0, 0] - 1) < 1e-2
