"""Covariate frames keyed by sample id (lfmm/covariates.py): rows in the genotypes' order take the
no-join path, any other order the join; both give the same matrix, and duplicated or missing ids
are typed errors either way."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from polgen.errors import InputError
from polgen.lfmm.covariates import covariate_matrix

IDS = [f"s{i}" for i in range(12)]
FIDS = [f"f{i % 3}" for i in range(12)]


def _frame(order, with_fid: bool) -> pl.DataFrame:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 2))
    cols = {"IID": [IDS[i] for i in order], "temp": x[order, 0], "prec": x[order, 1]}
    if with_fid:
        cols["FID"] = [FIDS[i] for i in order]
    return pl.DataFrame(cols)


@pytest.mark.parametrize("with_fid", [False, True])
def test_aligned_and_shuffled_frames_give_the_same_matrix(with_fid):
    fids = FIDS if with_fid else None
    a, names = covariate_matrix(_frame(np.arange(12), with_fid), IDS, 12, fids)
    perm = np.random.default_rng(2).permutation(12)
    b, names_b = covariate_matrix(_frame(perm, with_fid), IDS, 12, fids)
    expect = np.random.default_rng(1).normal(size=(12, 2))
    np.testing.assert_array_equal(a, expect)
    np.testing.assert_array_equal(b, expect)
    assert names == names_b == ["temp", "prec"]


def test_duplicated_and_missing_ids_are_typed_errors():
    dup = _frame(np.arange(12), False).with_columns(pl.Series("IID", IDS[:11] + ["s0"]))
    with pytest.raises(InputError, match="duplicated sample ids"):
        covariate_matrix(dup, IDS, 12, None)
    with pytest.raises(InputError, match="duplicated sample ids"):  # in the genotypes' order, not unique
        covariate_matrix(dup, IDS[:11] + ["s0"], 12, None)
    short = _frame(np.arange(11), False)
    with pytest.raises(InputError, match="1 genotype samples have no row"):
        covariate_matrix(short, IDS, 12, None)
