"""The LFMM fit's pass from byte dosages (polgen.kernels.lfmm_gram, issue 13's fit cost): the
decoder against the general .bed decoder, the fused products against dense numpy for every
column-group shape, and the fit with the estimation SNPs decoded once against a fit that decodes
every pass (the same bits)."""

from __future__ import annotations

import importlib
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from bed_reader import to_bed

import polgen.lfmm as L
from polgen.io.bed import BedStream
from polgen.kernels.bed_decode import DOSAGE_A1, DOSAGE_A2, decode_rows
from polgen.kernels.lfmm_decode import packed_byte_table
from polgen.kernels.lfmm_gram import byte_dosage_words, decode_bytes, gram_block, gram_block32

fit_mod = importlib.import_module("polgen.lfmm.fit")


def _packed(n: int, p: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    packed = rng.integers(0, 256, (p, (n + 3) // 4), dtype=np.uint8)
    packed[::3] &= np.uint8(0b10101010)  # codes 00 / 10 only: no missing calls
    packed[5] = 0b01010101  # every call missing
    return packed


@pytest.mark.parametrize("n", [1, 7, 150, 1001])
def test_byte_decode_equals_the_bed_decoder(n):
    packed = _packed(n, 300, n)
    rows = np.r_[5, np.random.default_rng(n).permutation(300)[:199]]
    k = rows.size
    for a1, dosage in ((True, DOSAGE_A1), (False, DOSAGE_A2)):
        raw = np.empty((n, k), order="F")
        decode_rows(packed, rows, n, 0, raw, np.empty(k), np.empty(k, np.int64), count_a1=a1, parallel=False)
        D = np.full((k, 4 * ((n + 3) // 4)), 9, dtype=np.uint8)
        mean, miss_idx, miss_start = np.empty(k), np.empty(n * k, np.int64), np.empty(k + 1, np.int64)
        decode_bytes(
            packed, rows, n, dosage, byte_dosage_words(dosage), packed_byte_table(dosage), D, mean, miss_idx, miss_start
        )
        np.testing.assert_array_equal(D[:, :n].T, np.nan_to_num(raw, nan=0.0))
        called = ~np.isnan(raw)
        want_mean = np.where(called.any(0), np.nansum(raw, 0) / np.maximum(called.sum(0), 1), 0.0)
        np.testing.assert_allclose(mean, want_mean, rtol=1e-15, atol=0)
        assert miss_start[0] == 0 and miss_start[-1] == (~called).sum()
        for j in range(k):
            np.testing.assert_array_equal(miss_idx[miss_start[j] : miss_start[j + 1]], np.flatnonzero(~called[:, j]))
        assert mean[0] == 0.0 and miss_start[1] == n  # SNP 5: no calls


@pytest.mark.parametrize("n", [7, 150, 1001])
@pytest.mark.parametrize("w", [1, 2, 3, 4, 5, 7, 8, 11])
def test_gram_block_equals_dense(n, w):
    """``Y_b (Y_b' G)`` of the centred, mean-imputed SNPs, for every width's column groups
    (4s and a last 1, 2 or 3) and odd block lengths (the SNP pairs and quadruples)."""
    packed = _packed(n, 90, n + w)
    rng = np.random.default_rng(w)
    rows = rng.permutation(90)[:43]
    k = rows.size
    raw = np.empty((n, k), order="F")
    decode_rows(packed, rows, n, 0, raw, np.empty(k), np.empty(k, np.int64), count_a1=True, parallel=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the all-missing SNP's mean
        Y = np.nan_to_num(raw - np.nanmean(raw, 0), nan=0.0)  # that SNP: all 0
    G = rng.standard_normal((n, w))
    want = Y @ (Y.T @ G)
    D = np.empty((k, 4 * ((n + 3) // 4)), dtype=np.uint8)
    mean, miss_idx, miss_start = np.empty(k), np.empty(n * k, np.int64), np.empty(k + 1, np.int64)
    words, lut = byte_dosage_words(DOSAGE_A1), packed_byte_table(DOSAGE_A1)
    decode_bytes(packed, rows, n, DOSAGE_A1, words, lut, D, mean, miss_idx, miss_start)
    accT, shift, Z = np.zeros((w, n)), np.zeros(w), np.empty((k, w))
    gram_block(D, k, n, G, np.ascontiguousarray(G.T), G.sum(0), mean, miss_idx, miss_start, Z, accT, shift)
    got = accT.T - shift
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13 * np.abs(want).max())
    np.testing.assert_allclose(Z, Y.T @ G, rtol=0, atol=1e-13 * np.abs(Y.T @ G).max())


@pytest.mark.parametrize("n", [7, 150, 1001])
@pytest.mark.parametrize("w", [4, 8])
def test_gram_block32_equals_dense(n, w):
    """The float32 products of the fit's first passes: ``Y_b (Y_b' G)`` to float32 precision
    (the centring and the missing calls in float64), summed into a float64 accumulator."""
    packed = _packed(n, 90, n + w)
    rng = np.random.default_rng(w)
    rows = rng.permutation(90)[:43]
    k = rows.size
    raw = np.empty((n, k), order="F")
    decode_rows(packed, rows, n, 0, raw, np.empty(k), np.empty(k, np.int64), count_a1=True, parallel=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the all-missing SNP's mean
        Y = np.nan_to_num(raw - np.nanmean(raw, 0), nan=0.0)
    G = rng.standard_normal((n, w))
    want = Y @ (Y.T @ G)
    D = np.empty((k, 4 * ((n + 3) // 4)), dtype=np.uint8)
    mean, miss_idx, miss_start = np.empty(k), np.empty(n * k, np.int64), np.empty(k + 1, np.int64)
    words, lut = byte_dosage_words(DOSAGE_A1), packed_byte_table(DOSAGE_A1)
    decode_bytes(packed, rows, n, DOSAGE_A1, words, lut, D, mean, miss_idx, miss_start)
    GT = np.ascontiguousarray(G.T, dtype=np.float32)
    accT, shift = np.full((w, n), 1.0), np.zeros(w)  # the block is added to what accT holds
    Z, acc = np.empty((k, w), np.float32), np.full((w, n), 7.0, np.float32)  # scratch
    gram_block32(D, k, n, GT, GT.sum(1, dtype=np.float64), mean, miss_idx, miss_start, Z, acc, accT, shift)
    got = accT.T - 1.0 - shift
    assert np.abs(got - want).max() < 2e-6 * np.abs(want).max()
    assert np.abs(Z - Y.T @ G).max() < 2e-6 * np.abs(Y.T @ G).max()


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    rng = np.random.default_rng(5)
    n, p = 203, 1500  # n % 4 == 3: a partial last byte
    pop = rng.integers(0, 3, n)
    f = np.clip(rng.beta(0.5, 0.5, (3, p))[pop], 0.02, 0.98)
    Y = rng.binomial(2, f).astype(np.float32)
    Y[rng.random(Y.shape) < 0.01] = np.nan
    path = tmp_path_factory.mktemp("fit_pass") / "g.bed"
    ids = [f"s{i}" for i in range(n)]
    to_bed(path, Y, properties={"fid": ids, "iid": ids})
    X = (pop + rng.normal(0, 1, n))[:, None]
    return path, X, Y


def test_fit_decoded_once_equals_decoded_every_pass(bed, monkeypatch):
    path, X, _ = bed
    once = L.fit(X, path, 2, est_rate=0.5, progress=False)
    monkeypatch.setattr(fit_mod, "HOLD_DOSAGE_BYTES", 0)
    packed = L.fit(X, path, 2, est_rate=0.5, progress=False)
    monkeypatch.setattr(fit_mod, "HOLD_BYTES", 0)
    streamed = L.fit(X, path, 2, est_rate=0.5, progress=False)
    assert once.convergence.converged and once.convergence.stop == "tol"
    assert once.convergence.passes == packed.convergence.passes == streamed.convergence.passes >= 3
    np.testing.assert_array_equal(once.U, packed.U)
    np.testing.assert_array_equal(once.U, streamed.U)


@pytest.mark.parametrize("threads", [1, 3])
def test_byte_dosages_hold_the_decoded_snps(bed, threads):
    path, _, Y = bed
    src = BedStream(path, snps=np.arange(3, 1500, 7))
    held = fit_mod._ByteDosages(src, block_snps=17, threads=threads)  # blocks on threads: the lists joined
    Ys = Y[:, 3::7].astype(np.float64)
    n = Ys.shape[0]
    np.testing.assert_array_equal(held.D[:, :n].T, np.nan_to_num(Ys, nan=0.0))
    np.testing.assert_allclose(held.mean, np.nanmean(Ys, 0), rtol=1e-15)
    for j in range(Ys.shape[1]):
        got = held.miss_idx[held.miss_start[j] : held.miss_start[j + 1]]
        np.testing.assert_array_equal(got, np.flatnonzero(np.isnan(Ys[:, j])))
    assert fit_mod._ByteDosages.nbytes(src) == held.D.nbytes


def test_pass_with_byte_dosages_equals_dense(bed):
    path, _, Y = bed
    Y = Y.astype(np.float64)
    Yc = np.nan_to_num(Y - np.nanmean(Y, 0), nan=0.0)
    G = np.random.default_rng(2).standard_normal((Y.shape[0], 7))
    want = Yc @ (Yc.T @ G)

    class Bar:
        def advance(self):
            pass

    src = BedStream(path)
    for threads in (1, 2):
        got = fit_mod._gram_pass(src, G, Bar(), threads=threads, block_snps=36)
        assert got.shape == G.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
        # the held dosages' passes (one kernel call per thread): the same pieces and blocks,
        # so the same bits
        with ThreadPoolExecutor(threads) as pool:
            held = fit_mod._HeldPasses(fit_mod._ByteDosages(src, 36), Y.shape[0], pool, threads, 36)
            assert np.array_equal(held.finish(held.start(G), Bar()), got)
            # the first pass, made while decoding: the same bits again
            assert np.array_equal(fit_mod._ByteDosages(src, 36, threads, G=G).first, got)
            held.stop[0] = 1  # a stopped pass does no block
            acc = held.finish(held.start(G), Bar())
            assert not acc.any()
            # float32 products: to ~1e-7, and the first pass again the same bits as the others
            held.stop[0] = 0
            low = held.finish(held.start(G, low=True), Bar())
            assert low.shape == G.shape and not np.array_equal(low, got)
            assert np.abs(low - want).max() < 1e-6 * np.abs(want).max()
            assert np.array_equal(fit_mod._ByteDosages(src, 36, threads, G=G, low=True).first, low)
            assert np.array_equal(held.finish(held.start(G), Bar()), got)  # float64 again


def _nystrom_full_svd(Qk, acc, M, Minv, K):
    """The Nyström step with the full SVD of F (the fit's code before the R-factor shortcut)."""
    H = M(acc)
    nu = np.finfo(np.float64).eps * np.linalg.norm(H)
    Hn = H + nu * Qk
    C = np.linalg.cholesky(0.5 * (Qk.T @ Hn + Hn.T @ Qk))
    F = np.linalg.solve(C, Hn.T).T
    Uf, Sf, Vft = np.linalg.svd(F, full_matrices=False)
    sigma = np.sqrt(np.maximum(Sf**2 - nu, 0.0))[:K]
    U = np.linalg.solve(C, (acc + nu * Minv(Qk)).T).T @ Vft[:K].T * (sigma / Sf[:K])
    return Uf[:, :K], sigma, U


@pytest.mark.parametrize("n, m", [(2000, 91), (170, 96), (300, 160)])
def test_final_step_from_the_small_products_equals_the_full_svd(n, m):
    """The fit's result comes from the last convergence estimate (``_Krylov.estimate`` /
    ``final``: eigenpairs of the m x m ``F'F`` from the small products kept up to date pass by
    pass) instead of an SVD of the n x m F: the same singular values, vectors and U as the full
    SVD (columns up to sign), with each U1 column's largest entry positive and U's signs
    following U1's."""
    rng = np.random.default_rng(m)
    Y = rng.standard_normal((n, 400)) * np.linspace(4, 0.2, 400)
    Qk, _ = np.linalg.qr(rng.standard_normal((n, m)))
    d = np.full(1, 1e-3)
    x = rng.standard_normal((n, 1))
    x /= np.linalg.norm(x)

    def M(Z):
        return Z - x @ ((1.0 - d)[:, None] * (x.T @ Z))

    def Minv(Z):
        return Z + x @ ((1.0 / d - 1.0)[:, None] * (x.T @ Z))

    acc = Y @ (Y.T @ M(Qk))  # as a pass: Yc Yc' M G (so Q' M acc is symmetric)
    kry = fit_mod._Krylov(n, m)
    for a in range(0, m, 7):  # blocks of 7 columns (the last one shorter), as passes add them
        b = min(m, a + 7)
        kry.add(Qk[:, a:b], acc[:, a:b], M(acc[:, a:b]))
    est = kry.estimate(5, keep=7)
    U1, sigma, U, eig = kry.final(est, Minv, 5)
    U1r, sigr, Ur = _nystrom_full_svd(Qk, acc, M, Minv, 5)
    np.testing.assert_allclose(sigma, sigr, rtol=1e-12)
    assert eig.shape == (7,) and np.allclose(np.sqrt(eig[:5]), sigr, rtol=1e-12)
    s = np.sign(np.sum(U1 * U1r, axis=0))
    np.testing.assert_allclose(U1, U1r * s, rtol=0, atol=1e-10)
    np.testing.assert_allclose(U, Ur * s, rtol=0, atol=1e-10 * np.abs(Ur).max())
    big = np.abs(U1).argmax(axis=0)
    assert np.all(U1[big, np.arange(5)] > 0)


def test_float32_passes_that_fill_the_space_restart_in_float64(tmp_path, monkeypatch):
    """Float32 passes forced on a tiny .bed (n = 22, missing calls): their basis fills R^n (an
    invariant space, exact but for the float32 rounding), so the float64 basis restarts from its
    Ritz vectors and iterates to the stopping rule on its own changes: the exact fit's singular
    values and U."""
    rng = np.random.default_rng(3)
    n, p = 22, 300
    Y = rng.binomial(2, 0.3, (n, p)).astype(np.float32)
    Y[rng.random(Y.shape) < 0.02] = np.nan
    path = tmp_path / "tiny.bed"
    ids = [f"s{i}" for i in range(n)]
    to_bed(path, Y, properties={"fid": ids, "iid": ids})
    X = rng.normal(size=(n, 1))
    exact = L.fit(X, path, 2, progress=False)
    assert exact.convergence.stop == "invariant"
    seen: list[bool] = []
    start = fit_mod._HeldPasses.start

    def spy(self, G, low=False):
        seen.append(low)
        return start(self, G, low)

    monkeypatch.setattr(fit_mod._HeldPasses, "start", spy)
    monkeypatch.setattr(fit_mod, "LOW_MIN_CALLS", 0)
    model = L.fit(X, path, 2, progress=False)
    conv = model.convergence
    assert conv.converged and conv.stop == "tol" and len(conv.history) == conv.passes - 1
    low = [True, *seen]  # the first pass came with the decode
    # at least two float64 passes: the rule reads the changes from the restart on (with the
    # float32 passes' last change, the one across the restart looked like a converged tail)
    assert low.count(True) >= 3 and low.count(False) >= 2 and low == sorted(low, reverse=True)
    assert conv.error_estimate is not None and conv.error_estimate <= conv.tol
    np.testing.assert_allclose(model.singular_values, exact.singular_values, rtol=1e-10)
    s = np.sign(np.sum(model.U * exact.U, axis=0))
    np.testing.assert_allclose(model.U * s, exact.U, rtol=0, atol=1e-6 * np.abs(exact.U).max())
