"""The batch kernels run big batches as chunks on Python threads (polgen.kernels._threads): the
rows must equal the serial call's bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from polgen.kernels._threads import n_chunks, run_chunks


def test_run_chunks_covers_every_row_once():
    seen = np.zeros(1000, np.int64)

    def kernel(lo, hi, out):
        out[lo:hi] += 1

    for nch in (1, 3, 7, 16, 1000):
        seen[:] = 0
        run_chunks(kernel, 1000, nch, seen)
        assert (seen == 1).all()
    assert n_chunks(10) == 1
    assert n_chunks(10**6) >= 1


def test_run_chunks_raises_the_kernels_error():
    def kernel(lo, hi):
        if lo > 0:
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_chunks(kernel, 100, 4)


@pytest.mark.parametrize("kind", ["user", "commonfactor"])
def test_big_batch_on_threads_equals_serial_halves(kind):
    """2,600 SNPs in one batch run on threads (>= 2048 rows); two batches of 1,300 run serially."""
    import polars as pl
    from polars.testing import assert_frame_equal

    from polgen.gsem.gwas import commonfactor_gwas, user_gwas
    from polgen.warmup import GWAS_MODEL, _covstruc, _sumstats

    cov = _covstruc(3)
    snps = _sumstats(2600, seed=4)

    def run(batch):
        if kind == "user":
            r = user_gwas(snps, cov, GWAS_MODEL, batch_size=batch, progress=False)
        else:
            r = commonfactor_gwas(snps, cov, batch_size=batch, progress=False)
        return r.collect() if isinstance(r, pl.LazyFrame) else r

    assert_frame_equal(run(2600), run(1300), check_exact=True)
