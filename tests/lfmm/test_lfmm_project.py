"""The test pass's kernels on packed .bed rows: ``packed_moments`` against ``decode_dosage_yy``
(bit for bit), ``project_packed`` against a dense numpy product of the decoded dosages, and the
fused pass's rows independent of how the SNPs are cut into blocks and threads."""

from __future__ import annotations

import numpy as np
import pytest
from bed_reader import to_bed

from polgen.kernels.bed_decode import DOSAGE_A1, DOSAGE_A2
from polgen.kernels.lfmm import PROJECT_CHUNK, project_packed
from polgen.kernels.lfmm_decode import decode_dosage_yy, packed_byte_table, packed_moments, pair_table, quad_table


def _packed(n: int, p: int, seed: int) -> np.ndarray:
    """Random .bed rows (random padding bits in a last byte too), some without missing calls, one
    all missing."""
    rng = np.random.default_rng(seed)
    packed = rng.integers(0, 256, (p, (n + 3) // 4), dtype=np.uint8)
    packed[::3] &= np.uint8(0b10101010)  # codes 00 / 10 only: no missing calls
    packed[5] = 0b01010101  # every call missing
    return packed


def _moments(packed, rows, n, dosage, decode: bool):
    k = rows.size
    mean, freq, nmiss, yy = np.empty(k), np.empty(k), np.empty(k, np.int64), np.empty(k)
    miss_idx, miss_start = np.full(n * k, -1, dtype=np.int64), np.empty(k + 1, dtype=np.int64)
    lut = packed_byte_table(dosage)
    if decode:
        out = np.full((n, k), 7.0, order="F")
        decode_dosage_yy(
            packed, rows, n, dosage, lut, pair_table(dosage), out, mean, freq, nmiss, yy, miss_idx, miss_start
        )
    else:
        out = None
        packed_moments(packed, rows, n, dosage, lut, mean, freq, nmiss, yy, miss_idx, miss_start)
    return out, (mean, freq, nmiss, yy, miss_idx[: miss_start[-1]], miss_start)


@pytest.mark.parametrize("n", [1, 6, 150, 1001])
def test_packed_moments_equal_the_decoder_bit_for_bit(n):
    packed = _packed(n, 120, n)
    rows = np.r_[5, np.random.default_rng(n).permutation(120)[:70]].astype(np.int64)
    for dosage in (DOSAGE_A1, DOSAGE_A2):
        _, want = _moments(packed, rows, n, dosage, True)
        _, got = _moments(packed, rows, n, dosage, False)
        for w, g in zip(want, got):
            np.testing.assert_array_equal(g, w)
        assert (got[2] == n).any() and (got[2] == 0).any()  # all-missing and complete SNPs seen


@pytest.mark.parametrize(
    ("n", "k", "m"), [(1, 3, 4), (7, 5, 8), (255, 9, 12), (256, 4, 8), (1001, 33, 16), (2000, 6, 8)]
)
def test_project_packed_equals_a_dense_product(n, k, m):
    rng = np.random.default_rng(n + m)
    packed = _packed(n, 40, n + 1)
    rows = rng.permutation(40)[:k].astype(np.int64)
    rows[0] = 5  # the all-missing SNP
    Tt = rng.standard_normal((m, n))
    for dosage in (DOSAGE_A1, DOSAGE_A2):
        V, _ = _moments(packed, rows, n, dosage, True)  # the dosages, 0 at missing calls
        codes = (packed[rows][:, np.arange(n) // 4] >> (2 * (np.arange(n) % 4))) & 3
        np.testing.assert_array_equal(V, np.where(codes == 1, 0, dosage[codes]).T)
        PT = np.full((k, m), np.nan)
        project_packed(packed, rows, n, quad_table(dosage).ravel(), Tt, PT, PROJECT_CHUNK)
        np.testing.assert_allclose(PT, V.T @ Tt.T, rtol=1e-12, atol=1e-13 * np.abs(Tt).sum(axis=1).max())
        assert not PT[0].any()
        # a SNP's row does not depend on the block it is projected in (same bits)
        for a, b in ((0, 1), (1, k), (k // 2, k)):
            sub = np.full((b - a, m), np.nan)
            project_packed(packed, rows[a:b], n, quad_table(dosage).ravel(), Tt, sub, PROJECT_CHUNK)
            np.testing.assert_array_equal(sub, PT[a:b])


def test_fused_pass_rows_do_not_depend_on_blocks_or_threads(tmp_path):
    """The statistics of the fused pass are the same bits whatever the decoded block size, the
    number of threads and the task ranges, and match a dense OLS t statistic."""
    from polgen.lfmm.fused import RangeTask, compute_range

    rng = np.random.default_rng(3)
    n, p, K = 203, 500, 2
    G = rng.binomial(2, rng.uniform(0.1, 0.9, p), size=(n, p)).astype(np.float64)
    G[rng.random((n, p)) < 0.01] = np.nan
    bed = tmp_path / "g.bed"
    to_bed(bed, G, count_A1=True)
    U = rng.standard_normal((n, K))
    X = rng.standard_normal((n, 1))
    proj = _projection_from(U, X)  # from U and X directly: no fit needed

    def run(bs, threads, ranges):
        parts = [compute_range(RangeTask(str(bed), a, b, proj, False, bs, threads=threads)) for a, b in ranges]
        return {k: np.concatenate([q[k] for q in parts], axis=-1) for k in ("T", "SE", "BETA", "A1FREQ", "N_MISS")}

    ref = run(0, 1, [(0, p)])
    for bs, threads, ranges in ((7, 2, [(0, p)]), (64, 2, [(0, 333), (333, p)]), (1, 1, [(0, 1), (1, p)])):
        got = run(bs, threads, ranges)
        for key in ref:
            np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{key} bs={bs} threads={threads}")
    # against a dense OLS of each mean-imputed SNP on 1 + U + X
    j = np.arange(0, p, 37)
    Y = np.where(np.isnan(G[:, j]), np.nanmean(G[:, j], axis=0), G[:, j])
    D = np.column_stack([np.ones(n), U, X])
    coef, *_ = np.linalg.lstsq(D, Y, rcond=None)
    resid = Y - D @ coef
    sigma2 = (resid**2).sum(axis=0) / (n - 1 - 1 - K)
    se = np.sqrt(sigma2 * np.linalg.inv(D.T @ D)[-1, -1])
    np.testing.assert_allclose(ref["T"][0, j], coef[-1] / se, rtol=1e-9)


def _projection_from(U, X):
    """:class:`polgen.lfmm.fused.Projection` of the OLS part for latent factors U and covariates X
    (the ridge rows are zero: only T and its SE depend on them here)."""
    from polgen.lfmm.fused import Projection

    n, d = X.shape
    K = U.shape[1]
    C = np.hstack([U - U.mean(axis=0), X - X.mean(axis=0)])
    Qc, R = np.linalg.qr(C)
    Rinv = np.linalg.inv(R)
    Tt = np.ascontiguousarray(np.vstack([Qc.T, np.zeros((d, n))]))
    return Projection(Tt, np.ascontiguousarray(Rinv[K:, :]), K, d, n, ["x"])


def test_final_parts_store_statistics_uncompressed_and_same_values(tmp_path):
    """The one-write path's parts: float statistics uncompressed, the rest zstd, no min/max
    statistics for A1/A2 (io.sink.write_part's ``compression`` / ``statistics``), same values as a
    default zstd write."""
    import polars as pl
    import pyarrow.parquet as pq

    from polgen.io.sink import write_part
    from polgen.lfmm.assoc_disk import _part_options

    rng = np.random.default_rng(0)
    k = 5000
    table = pl.DataFrame(
        {
            "CHR": ["1"] * k,
            "SNP": [f"rs{i}" for i in range(k)],
            "A1": ["A"] * k,
            "A2": ["G"] * k,
            "A1FREQ": rng.random(k),
            "T": rng.standard_normal(k),
            "P": rng.random(k),
        }
    ).to_arrow()
    a = write_part(tmp_path, 0, table, "{}", **_part_options(table.schema))
    b = write_part(tmp_path, 1, table, "{}")
    fa, fb = pq.ParquetFile(tmp_path / a.file), pq.ParquetFile(tmp_path / b.file)
    assert fa.read().equals(fb.read())
    cols = {c.path_in_schema: c for c in (fa.metadata.row_group(0).column(i) for i in range(7))}
    assert {n for n, c in cols.items() if c.compression == "UNCOMPRESSED"} == {"T", "P"}
    assert {n for n, c in cols.items() if not c.is_stats_set} == {"A1", "A2"}
    assert all(c.compression == "ZSTD" for c in (fb.metadata.row_group(0).column(i) for i in range(7)))
