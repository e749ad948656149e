"""LFMM2 ridge estimation of the latent factors, streamed from a .bed (Caye et al. 2019, eq. 3).

With ``Xc = Q_d diag(sigma) R'`` (thin SVD of the centred covariates) and
``M = Q D Q' = I - Q_d diag(1 - d) Q_d'`` (never formed), the latent matrix is
``W = Q D^-1 svd_K(D Q' Yc)``.  Because Q is orthogonal, ``D Q' Yc = Q' (M Yc)``, so the left
singular vectors we need are those of ``A = M Yc`` (n x p_est, fat).  They are found by a
randomized range finder on ``A A' = M Yc Yc' M``: each streaming pass multiplies an n x l
matrix by ``Yc Yc'`` block by block (``acc += Y_b (Y_b' G)``), so memory is O(n l) per pass
whatever the number of SNPs.  Each pass's block is ``A A'`` times the previous one,
orthogonalised against all earlier blocks (full reorthogonalisation), and after every pass a
stabilised Nyström step on the whole block Krylov basis (the sketches of every pass, not only the
last) turns them into the leading eigenpairs — block-Krylov accuracy for the price of plain power
iterations.

Convergence (default ``power_iter=None``): real genotype spectra are flat (A. thaliana, K=6:
181, 178, 148, 131, 121, 115 | 109, 106, ...), so a fixed few passes leave errors of ~0.1 in t.
The fit therefore iterates until successive estimates agree: after each pass it measures the
largest relative change of the top-K singular values and the sine of the largest principal angle
between the successive K-dimensional singular subspaces, extrapolates the remaining error from
the last two changes (``_remaining_error``) and stops when both are ``<= tol``, or when the Krylov
space stops growing (exact).  With ``tol=1e-7`` the t statistics equal a dense exact LEA fit to
~1e-7 on that data (9 passes); the passes needed grow as ``log(tol) / log(rate)`` with the rate
set by ``s_{K+oversampling+1} / s_K``: 3 passes for a clear gap, 4-7 for typical simulated
population structure, the cap for K beyond the structure (noise factors).  At
``max_power_iter + 1`` passes the fit stops with a warning.  Memory is O(n l passes): the basis
and its products.

The passes over a .bed (the bench's 2,000 x 10,000 estimation SNPs: 13 of them) run
:mod:`polgen.kernels.lfmm_gram`: both products of a block from byte dosages in one kernel
vectorised over the samples (~20 ms CPU a pass there, against 45 ms for a float64 decode and two
thin BLAS products).  The estimation SNPs are decoded once to byte dosages when those take at most
:data:`HOLD_DOSAGE_BYTES` (256 MB: 4 bytes per 4 samples per SNP, e.g. 128k SNPs at n = 2,000),
else their packed rows are held if at most :data:`HOLD_BYTES` (64 MB), else every pass decodes
them from the file; beyond the estimation subset's copy memory does not grow with the SNPs, and
the three ways give the same bits.

Float32 first passes: an adaptive fit over held byte dosages of at least :data:`LOW_MIN_CALLS`
calls makes its first passes with float32 products (``gram_range32``: ~1.7x faster, relative
error ~1e-7) until their estimate's remaining error is within :data:`LOW_SWITCH` (or its changes
stop shrinking: the float32 floor, ~3e-6 on the bench), then starts a new float64 basis from
their top ``K + oversampling`` approximate eigenvectors; the stopping rule and the result use the
float64 passes only (the history of changes runs on across the restart).  The restart costs about
two passes (the new basis has to grow again), so the bench's fit makes 11 float32 + 3 float64
passes instead of 13 float64 (t error against an exact fit 1.5e-7, was 3.1e-7), for ~25% less
CPU.  A fit still far from converged two passes before the cap makes those in float64 on the same
basis instead (a restart would throw its Krylov space away; the float32 rounding, ~1e-6, is far
below its changes): as accurate as the float64 fit capped alike (bench, K=8: sine to the exact
subspace 1.9e-2 vs 1.8e-2, CPU -30%).

``U = Q D^-1 u_K Sigma_K = Yc V_K`` (R LEA's ``object@U``) is built from the unshrunk accumulator
``Yc Yc' M G``, so the huge ``1/d_j`` factors never amplify sketch error.

``dlambda="lea"`` uses R LEA's ``d_j = sqrt(lam / (lam + sigma_j))`` (singular values, not their
squares); ``"exact"`` uses ``sqrt(lam / (lam + sigma_j^2))``, the true minimiser of the ridge
objective (eq. 2).  They differ only in how strongly the X directions are removed; with the
default lam = 1e-5 both make ``d_j`` tiny.
"""

from __future__ import annotations

import logging
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from polgen._blas import single_threaded_blas
from polgen.engine.progress import progress_bar
from polgen.errors import InputError
from polgen.io.bed import BedStream
from polgen.kernels.bed_decode import DOSAGE_A1, DOSAGE_A2
from polgen.kernels.lfmm import colsumsq_into
from polgen.kernels.lfmm_decode import packed_byte_table
from polgen.kernels.lfmm_gram import (
    byte_dosage_words,
    decode_bytes,
    gram_block,
    gram_block32,
    gram_range,
    gram_range32,
)
from polgen.lfmm.covariates import covariate_matrix
from polgen.lfmm.genotypes import (
    cache_block_snps,
    default_threads,
    genotypes_path,
    open_source,
    split_range,
    thin_index,
)
from polgen.lfmm.krylov import (
    _at_floor,
    _changes,
    _gap_text,
    _Krylov,
    _likely_last,
    _next_block,
    _remaining_error,
)
from polgen.lfmm.model import LfmmConvergence, LfmmConvergenceWarning, LfmmModel
from polgen.options import DLambda, GenotypeScale

log = logging.getLogger("polgen")

#: estimation SNPs whose packed .bed rows take at most this many bytes are read from the file
#: once and held in memory for all the passes of the fit (2-bit codes: n / 4 bytes per SNP)
HOLD_BYTES = 64 << 20
#: estimation SNPs whose byte dosages (one byte per call: 4x the packed rows) take at most this
#: many bytes are decoded once and held for all the passes (then the packed rows are not held)
HOLD_DOSAGE_BYTES = 256 << 20
#: default extra sketch columns per pass: iterating until converged / a fixed number of passes
ADAPTIVE_OVERSAMPLING = 2
FIXED_OVERSAMPLING = 10
#: the decode of the estimation SNPs drops the .bed pages it has read from the resident set
#: after every this many bytes of the file (a release per block of a thinned subset, 1.3 MB of
#: file on the bench, cost a third of the decode's CPU in page-table work)
RELEASE_SPAN_BYTES = 16 << 20
#: an adaptive fit over held byte dosages of at least this many calls (samples x estimation
#: SNPs: the bench's 2,000 x 10,000 = 20M) makes its first passes with float32 products (see the
#: module docs); smaller fits, whose passes cost little, keep float64 throughout
LOW_MIN_CALLS = 1 << 23
#: the float32 passes end once their estimated remaining error is at most this (or tol if
#: larger): later switches leave fewer float64 passes but more float32 ones (bench, in pass
#: costs: 1e-3: 8 + 7, 1e-4: 9 + 5, 1e-5: 11 + 3, 1e-6: the float32 floor)
LOW_SWITCH = 1e-5
#: bytes of one block of byte dosages in a pass from packed rows (each thread's block stays in
#: its core's L2 between the two products)
BYTE_BLOCK_BYTES = 256 << 10


def byte_block_snps(n_samples: int) -> int:
    """SNPs per block of byte dosages (a multiple of 4: the second product takes 4 SNPs at a time)."""
    return int(max(8, min(4096, BYTE_BLOCK_BYTES // max(1, n_samples))) // 4 * 4)


def shrinkage(sigma_x: np.ndarray, lam: float, dlambda: str) -> np.ndarray:
    """The diagonal of D_lambda on the X directions."""
    if dlambda == "lea":
        return np.sqrt(lam / (lam + sigma_x))
    if dlambda == "exact":
        return np.sqrt(lam / (lam + sigma_x**2))
    raise InputError(f"dlambda must be 'lea' or 'exact', got {dlambda!r}")


def _x_svd(X: np.ndarray, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(over="ignore", invalid="ignore"):
        Xc = X - X.mean(axis=0)
        sd = Xc.std(axis=0)
    huge = np.flatnonzero(~np.isfinite(sd))
    if huge.size:
        raise InputError(
            "covariate values are too large to square in float64 (rescale them)", column=names[int(huge[0])]
        )
    flat = np.flatnonzero(sd <= 1e-12 * (1.0 + np.abs(X).max(axis=0)))
    if flat.size:
        raise InputError("covariate has no variance across samples", column=names[int(flat[0])])
    Qd, sx, _ = np.linalg.svd(Xc, full_matrices=False)
    if sx[-1] <= 1e-10 * sx[0]:
        raise InputError(f"covariates {names} are collinear (X has rank < {X.shape[1]})")
    return np.ascontiguousarray(Qd), sx


def _packed_ok(source) -> bool:
    """Whether a pass can decode ``source``'s packed .bed rows itself (:func:`_gram_pass`)."""
    return (
        isinstance(source, BedStream)
        and source.sample_index is None
        and source.scale == "center"
        and source.dtype == np.float64
    )


class _ByteDosages:
    """The estimation SNPs decoded once for all the passes of a fit: byte dosages ``D`` (one row
    per SNP, 0 for a missing call), call means and the missing calls as lists, exactly what each
    pass would decode from the packed rows (so a pass gives the same bits either way).  Memory:
    ``4 ceil(n / 4)`` bytes per SNP plus 16 per SNP and 8 per missing call.

    With ``G`` (n x w) the first pass ``Yc Yc' G`` is computed block by block as the blocks are
    decoded, while each is in cache (``first``): the pieces, blocks and sums of
    :class:`_HeldPasses`, so the same bits as a pass over the held dosages."""

    def __init__(
        self,
        source: BedStream,
        block_snps: int | None = None,
        threads: int = 0,
        G: np.ndarray | None = None,
        low: bool = False,
    ) -> None:
        n, p = source.n_samples, source.n_snps
        dosage = DOSAGE_A1 if source.count_a1 else DOSAGE_A2
        words, packlut = byte_dosage_words(dosage), packed_byte_table(dosage)
        kb = block_snps or byte_block_snps(n)
        self.D = np.empty((p, 4 * ((n + 3) // 4)), dtype=np.uint8)
        self.mean = np.empty(p)
        self.miss_start = np.zeros(p + 1, dtype=np.int64)
        self.first: np.ndarray | None = None
        if G is not None:
            Gp, width = _pad_sketch(G, low)
            GT, colsum = _sketch_rows(Gp, low)

        def decode(a: int, b: int):
            # the missing calls of each block: sample indices and block-relative starts
            miss_idx = np.empty(n * kb, dtype=np.int64)
            start = np.empty(kb + 1, dtype=np.int64)
            lists = []
            if G is not None:
                wp = Gp.shape[1]
                accT, shift = np.zeros((wp, n)), np.zeros(wp)
                Z = np.empty((kb, wp), dtype=np.float32 if low else np.float64)
                acc32 = np.empty((wp, n) if low else (0, 0), dtype=np.float32)
            held, span = a, 0  # SNPs held..s have mapped pages not yet released: `span` bytes of file
            for s in range(a, b, kb):
                e = min(b, s + kb)
                packed, rows = source.packed_rows(s, e)
                D, mean = self.D[s:e], self.mean[s:e]
                decode_bytes(packed, rows, n, dosage, words, packlut, D, mean, miss_idx, start)
                if low:
                    gram_block32(D, e - s, n, GT, colsum, mean, miss_idx, start, Z, acc32, accT, shift)
                elif G is not None:
                    gram_block(D, e - s, n, Gp, GT, colsum, mean, miss_idx, start, Z, accT, shift)
                span += (int(rows[-1]) - int(rows[0]) + 1) * packed.shape[1]
                if span >= RELEASE_SPAN_BYTES:
                    source.release_rows(held, e)
                    held, span = e, 0
                lists.append((s, e, miss_idx[: start[e - s]].copy()))
                self.miss_start[s + 1 : e + 1] = start[1 : e - s + 1]  # block-relative for now
            source.release_rows(held, b)
            if G is not None:
                accT -= shift[:, None]
                return lists, accT
            return lists, None

        pieces = split_range(0, p, threads or default_threads())
        if len(pieces) > 1:
            with ThreadPoolExecutor(len(pieces)) as pool:
                results = [f.result() for f in [pool.submit(decode, a, b) for a, b in pieces]]
        else:
            results = [decode(0, p)]
        lists = [x for got, _ in results for x in got]
        offset = 0
        for s, e, got in lists:
            self.miss_start[s + 1 : e + 1] += offset
            offset += got.size
        self.miss_idx = np.concatenate([x for _, _, x in lists]) if lists else np.empty(0, dtype=np.int64)
        if G is not None:
            acc = results[0][1].T
            for _, accT in results[1:]:  # in piece order, as _HeldPasses.finish sums them
                acc = acc + accT.T
            self.first = np.ascontiguousarray(acc[:, :width])

    @staticmethod
    def nbytes(source) -> int:
        """Bytes of the byte dosages of ``source`` (what :data:`HOLD_DOSAGE_BYTES` caps)."""
        return int(source.n_snps) * 4 * ((int(source.n_samples) + 3) // 4)


def _gram_pass(
    source,
    G: np.ndarray | None,
    bar,
    threads: int = 0,
    block_snps: int | None = None,
    want_trace: bool = False,
    cancel: threading.Event | None = None,
    pool: ThreadPoolExecutor | None = None,
):
    """``Yc Yc' G`` for an (n, l) G (``G=None``: the n x n Gram ``Yc Yc'``), streaming the source
    in cache-sized blocks on threads, each with its own accumulator (single-threaded BLAS per
    thread).  With ``want_trace`` also returns ``trace(Yc Yc')``.  A set ``cancel`` event stops
    the pass at the next block (its result is then incomplete and must be discarded).
    (Held byte dosages go through :class:`_HeldPasses`, with the same pieces and blocks.)
    ``pool``: threads to run the pieces on (a fit's passes share one: starting threads costs ~1 ms
    of CPU a pass, several under load)."""
    n = source.n_samples
    bs = block_snps or max(cache_block_snps(n), 32)
    pieces = split_range(0, source.n_snps, threads or default_threads())
    width = 0
    packed_ok = G is not None and not want_trace and _packed_ok(source)
    if G is not None:
        width = G.shape[1]
        # zero columns: OpenBLAS runs 8 columns faster than 7 (a multiple of 4); the byte kernel
        # takes columns in groups of four and a last group of three
        pad = (3 - width % 4 if width % 4 in (1, 2) else 0) if packed_ok else -width % 4
        if pad:
            G = np.hstack([G, np.zeros((n, pad))])

    def run_packed(a: int, b: int, G: np.ndarray):
        # dosages as bytes, both products from them in one kernel (polgen.kernels.lfmm_gram); the
        # centring goes to the small products: Z = Y'G = V'G - mean (G'1 - G[missing])',
        # Y Z = V Z - 1 (mean'Z) + mean_j Z_j at missing calls
        dosage = DOSAGE_A1 if source.count_a1 else DOSAGE_A2
        words, packlut = byte_dosage_words(dosage), packed_byte_table(dosage)
        kb = block_snps or byte_block_snps(n)
        accT = np.zeros((G.shape[1], n))
        shift = np.zeros(G.shape[1])
        colsum = G.sum(axis=0)
        GT = np.ascontiguousarray(G.T)
        Z = np.empty((kb, G.shape[1]))
        D = np.empty((kb, 4 * ((n + 3) // 4)), dtype=np.uint8)
        mean = np.empty(kb)
        miss_idx = np.empty(n * kb, dtype=np.int64)
        miss_start = np.empty(kb + 1, dtype=np.int64)
        for s in range(a, b, kb):
            if cancel is not None and cancel.is_set():
                break
            e = min(b, s + kb)
            packed, rows = source.packed_rows(s, e)
            decode_bytes(packed, rows, n, dosage, words, packlut, D, mean, miss_idx, miss_start)
            source.release_rows(s, e)
            gram_block(D, e - s, n, G, GT, colsum, mean, miss_idx, miss_start, Z, accT, shift)
        accT -= shift[:, None]
        return accT.T, 0.0

    def run(a: int, b: int):
        if packed_ok and G is not None:
            return run_packed(a, b, G)
        acc = np.zeros((n, n) if G is None else G.shape)
        tr = 0.0
        yy = np.empty(bs)
        for blk in source.blocks(a, b, block_snps=bs, parallel=False):
            if cancel is not None and cancel.is_set():
                break
            Yb = blk.data
            acc += Yb @ Yb.T if G is None else Yb @ (Yb.T @ G)
            if want_trace:
                k = blk.stop - blk.start
                colsumsq_into(Yb, yy[:k])
                tr += float(yy[:k].sum())
        return acc, tr

    with single_threaded_blas():
        if len(pieces) == 1:
            acc, tr = run(*pieces[0])
        elif pool is not None:
            results = [f.result() for f in [pool.submit(run, a, b) for a, b in pieces]]
            acc = sum(r[0] for r in results)
            tr = sum(r[1] for r in results)
        else:
            with ThreadPoolExecutor(len(pieces)) as own:
                results = [f.result() for f in [own.submit(run, a, b) for a, b in pieces]]
            acc = sum(r[0] for r in results)
            tr = sum(r[1] for r in results)
    if cancel is None or not cancel.is_set():
        bar.advance()
    if G is not None:
        acc = np.ascontiguousarray(acc[:, :width])
    return (acc, tr) if want_trace else acc


def _pad_sketch(G: np.ndarray, low: bool = False) -> tuple[np.ndarray, int]:
    """``G`` with zero columns so that the byte kernel's last column group has three or four
    columns (a width of 1 or 2 mod 4 costs as 3 anyway; the float32 kernel, ``low``, takes
    groups of four only), and the original width."""
    w = G.shape[1]
    pad = -w % 4 if low else (3 - w % 4 if w % 4 in (1, 2) else 0)
    return (np.hstack([G, np.zeros((G.shape[0], pad))]) if pad else G), w


def _sketch_rows(G: np.ndarray, low: bool) -> tuple[np.ndarray, np.ndarray]:
    """``G'`` (C order; float32 for the float32 kernel) and its row sums ``G'1`` in float64 (of
    the values the kernel multiplies)."""
    if low:
        GT = np.ascontiguousarray(G.T, dtype=np.float32)
        return GT, GT.sum(axis=1, dtype=np.float64)
    return np.ascontiguousarray(G.T), G.sum(axis=0)


class _HeldPasses:
    """The passes of a fit over held byte dosages (:class:`_ByteDosages`): the same pieces,
    blocks and sums as :func:`_gram_pass` (so the same bits), but each thread's piece is ONE
    nogil kernel call (:func:`polgen.kernels.lfmm_gram.gram_range`) submitted straight from the
    fit's thread.  A pass then never waits for the GIL (held by the convergence check that runs
    beside it) between its blocks, and needs no extra thread to start it."""

    def __init__(self, decoded: _ByteDosages, n: int, pool: ThreadPoolExecutor, threads: int, kb: int) -> None:
        self.decoded, self.n, self.pool, self.kb = decoded, n, pool, kb
        self.pieces = split_range(0, decoded.mean.shape[0], threads)
        self.stop = np.zeros(1, dtype=np.int64)
        self._bufs: dict[tuple[int, bool], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self._acc32: list[np.ndarray] = []

    def start(self, G: np.ndarray, low: bool = False):
        """Start ``Yc Yc' G`` on the pool (``low``: with float32 products,
        :func:`polgen.kernels.lfmm_gram.gram_range32`); :meth:`finish` returns it.  One pass at a
        time: the threads' accumulators are reused by the next pass (zeroed here, all before the
        first piece is submitted, so the fit's thread does no work while the pieces start)."""
        n = self.n
        G, w = _pad_sketch(G, low)  # as _gram_pass: groups of four and a last three
        GT, colsum = _sketch_rows(G, low)
        wp = G.shape[1]
        bufs = self._bufs.get((wp, low))
        if bufs is None:
            zt = np.float32 if low else np.float64
            bufs = self._bufs[(wp, low)] = [
                (np.zeros((wp, n)), np.zeros(wp), np.empty((self.kb, wp), dtype=zt)) for _ in self.pieces
            ]
        else:
            for accT, shift, _ in bufs:
                accT.fill(0.0)
                shift.fill(0.0)
        d = self.decoded
        if low:
            if len(self._acc32) < len(self.pieces) or self._acc32[0].shape != (wp, n):
                self._acc32 = [np.empty((wp, n), dtype=np.float32) for _ in self.pieces]
            futures = [
                self.pool.submit(
                    gram_range32,
                    d.D,
                    a,
                    b,
                    self.kb,
                    n,
                    GT,
                    colsum,
                    d.mean,
                    d.miss_idx,
                    d.miss_start,
                    Z,
                    acc32,
                    accT,
                    shift,
                    self.stop,
                )
                for (a, b), (accT, shift, Z), acc32 in zip(self.pieces, bufs, self._acc32)
            ]
            return futures, bufs, w
        futures = [
            self.pool.submit(
                gram_range,
                d.D,
                a,
                b,
                self.kb,
                n,
                G,
                GT,
                colsum,
                d.mean,
                d.miss_idx,
                d.miss_start,
                Z,
                accT,
                shift,
                self.stop,
            )
            for (a, b), (accT, shift, Z) in zip(self.pieces, bufs)
        ]
        return futures, bufs, w

    def finish(self, handle, bar) -> np.ndarray:
        futures, bufs, w = handle
        for f in futures:
            f.result()
        for accT, shift, _ in bufs:
            accT -= shift[:, None]
        acc = bufs[0][0].T
        for accT, _, _ in bufs[1:]:  # in piece order, as _gram_pass sums them
            acc = acc + accT.T
        if not self.stop[0]:
            bar.advance()
        # a copy: the accumulators are the next pass's
        return np.array(acc[:, :w], order="C", copy=True)


def _estimation_source(bed, est_bed, est_rate, est_index, scale, batch_snps):
    given = sum(v is not None for v in (est_bed, est_rate, est_index))
    if given > 1:
        raise InputError("give at most one of est_bed, est_rate, est_index")
    if est_bed is not None:
        return open_source(est_bed, scale=scale, block_snps=batch_snps)
    if est_index is not None:
        idx = np.unique(np.asarray(est_index, dtype=np.int64))
        return open_source(bed, snps=idx, scale=scale, block_snps=batch_snps)
    if est_rate is not None:
        if not (0 < est_rate <= 1):
            raise InputError(f"est_rate must be in (0, 1], got {est_rate}")
        if isinstance(bed, np.ndarray):
            return open_source(bed, snps=thin_index(bed.shape[1], est_rate), scale=scale, block_snps=batch_snps)
        return open_source(bed, thin=est_rate, scale=scale, block_snps=batch_snps)
    return open_source(bed, scale=scale, block_snps=batch_snps)


# one switch of OpenBLAS's thread count for the whole fit: switching around every small product
# (the convergence check, the next block) cost ~1-3 ms a switch under load
@single_threaded_blas()
def fit(
    X: Any,
    bed: Any,
    K: int,
    *,
    lam: float = 1e-5,
    est_bed: Any = None,
    est_rate: float | None = None,
    est_index: Any = None,
    power_iter: int | None = None,
    tol: float = 1e-7,
    max_power_iter: int = 20,
    oversampling: int | None = None,
    seed: int = 0,
    scale: GenotypeScale = "center",
    dlambda: DLambda = "lea",
    batch_snps: int | None = None,
    progress: bool | None = None,
) -> LfmmModel:
    """Estimate the LFMM2 latent factors U (n x K) by ridge regression (R LEA ``lfmm2``).

    Parameters
    ----------
    X : covariates: a Polars frame with ``IID`` (and optionally ``FID``) plus numeric columns,
        aligned to the .fam by id; or an (n, d) array (or R LEA ``.env`` path) in .fam order.
    bed : PLINK .bed path (or prefix), R LEA ``.lfmm`` / ``.geno`` path (read whole), or an (n, p)
        dosage array (NaN = missing).
    K : number of latent factors, 1 <= K < n.
    lam : ridge penalty (> 0).
    est_bed / est_rate / est_index : genotypes used for estimation: a separate (e.g. LD-pruned)
        .bed with the same samples, a thinning fraction of ``bed`` (every k-th SNP), or .bim row
        indices of ``bed``.  Default: all SNPs of ``bed``.
    power_iter : ``None`` (default): iterate the randomized SVD until it has converged (see
        below); an integer: exactly ``power_iter + 1`` passes over the estimation SNPs, converged
        or not (the convergence is still measured and reported).
    tol : convergence tolerance.  After each pass ``j >= 2`` the estimate (top-K singular values
        ``s`` and left singular vectors ``U1``) is compared with that of pass ``j - 1``: the changes
        are ``max_k |s_k(j) - s_k(j-1)| / s_k(j)`` and the sine of the largest principal angle
        between ``span U1(j)`` and ``span U1(j-1)``.  From the last two changes ``d_{j-1}, d_j`` of
        each, the remaining error is estimated as ``d_j rho / (1 - rho)``, ``rho = d_j / d_{j-1}``
        (the change itself after two passes); the fit has converged when both estimates are
        ``<= tol``.  ``tol=1e-7`` gives R LEA's t statistics to ~1e-7 on real genotypes (A.
        thaliana, 9 passes; tests/lfmm).  The fit also stops, exactly, when the Krylov space stops
        growing (it then holds the exact eigenvectors).
    max_power_iter : cap of the adaptive iteration (at most ``max_power_iter + 1`` passes); a fit
        that reaches it logs a warning and warns with :class:`LfmmConvergenceWarning` naming the
        reached changes.  The passes used and the changes are in ``model.convergence``.
    oversampling : extra sketch columns per pass (``K + oversampling`` columns).  Default: 2 with the
        adaptive iteration (its block Krylov basis grows by a block every pass, so a thin block
        converges in about as many passes as a wide one and each pass's products cost ~(K + 2) /
        (K + 10) as much: 13 passes either way on the bench's 2,000 x 10,000 estimation SNPs at
        K=5, 3x less CPU); :data:`FIXED_OVERSAMPLING` (10) with a fixed ``power_iter``, where the
        width buys accuracy.
    seed : sketch seed.
    scale : ``"center"`` (R LEA) or ``"eigenstrat"`` (each SNP divided by sqrt(2f(1-f))).
    dlambda : ``"lea"`` (R LEA's shrinkage, default) or ``"exact"`` (see module docs).
    batch_snps : SNPs per decoded block (default: a cache-sized block, 256 kB of byte dosages for
        a .bed, about 1 MB of floats otherwise).
    """
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)):
        raise InputError(f"K must be an integer, got {K!r}")
    K = int(K)
    if not (isinstance(lam, (int, float, np.floating, np.integer)) and 0 < lam < np.inf):
        raise InputError(f"the ridge penalty lam must be a positive finite number, got {lam!r}")
    if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    for name, v in (("power_iter", power_iter), ("max_power_iter", max_power_iter), ("oversampling", oversampling)):
        if v is None and name in ("power_iter", "oversampling"):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise InputError(f"{name} must be an integer >= 0, got {v!r}")
    if not (isinstance(tol, (int, float, np.floating)) and not isinstance(tol, bool) and 0 < tol < 1):
        raise InputError(f"tol must be a number in (0, 1), got {tol!r}")
    shrinkage(np.ones(1), lam, dlambda)  # validates dlambda early
    if oversampling is None:
        oversampling = ADAPTIVE_OVERSAMPLING if power_iter is None else FIXED_OVERSAMPLING

    src = _estimation_source(bed, est_bed, est_rate, est_index, scale, batch_snps)
    # every pass of the iteration streams the same rows: read the .bed once, decoded to byte
    # dosages if they take at most HOLD_DOSAGE_BYTES, else packed if at most HOLD_BYTES (not a
    # stream the caller gave: that one is left as it was)
    decode_once = _packed_ok(src) and _ByteDosages.nbytes(src) <= HOLD_DOSAGE_BYTES
    if (
        not decode_once
        and isinstance(src, BedStream)
        and src is not bed
        and src is not est_bed
        and src.hold_in_memory(HOLD_BYTES)
    ):
        log.debug("lfmm fit: %d estimation SNPs held in memory (packed)", src.n_snps)
    n = src.n_samples
    if K < 1 or K >= n:
        raise InputError(f"K must satisfy 1 <= K < n_samples = {n}, got K={K}")
    if src.n_snps < K:
        raise InputError(f"only {src.n_snps} estimation SNPs for K={K} factors")
    fids = src.fam["FID"].cast(str).to_list() if hasattr(src, "fam") else None
    Xm, names = covariate_matrix(X, src.sample_ids, n, fids)
    d = Xm.shape[1]
    if n - 1 - d - K < 1:
        raise InputError(f"too few samples: n - 1 - d - K = {n - 1 - d - K} residual degrees of freedom")
    with single_threaded_blas():
        Qd, sx = _x_svd(Xm, names)
    dl = shrinkage(sx, lam, dlambda)

    def M(Z):
        return Z - Qd @ ((1.0 - dl)[:, None] * (Qd.T @ Z))

    def Minv(Z):
        return Z + Qd @ ((1.0 / dl - 1.0)[:, None] * (Qd.T @ Z))

    ell = min(K + oversampling, n)
    rng = np.random.default_rng(seed)
    with single_threaded_blas():
        G, _ = np.linalg.qr(rng.standard_normal((n, ell)))
    # the first pass is made while the estimation SNPs are decoded (each block while in cache)
    adaptive = power_iter is None
    cap = (max_power_iter if power_iter is None else power_iter) + 1
    # the first passes in float32 (see LOW_MIN_CALLS), then a float64 basis from their Ritz vectors
    low = adaptive and decode_once and cap >= 5 and n * src.n_snps >= LOW_MIN_CALLS
    decoded = _ByteDosages(src, batch_snps, G=M(G), low=low) if decode_once else None
    if decoded is not None:
        log.debug("lfmm fit: %d estimation SNPs held in memory (byte dosages)", src.n_snps)
    kry = _Krylov(n, ell * cap)
    # passes made in float32; the stopping rule reads the changes from history[since] on (after
    # the restart: the change across it, then the float64 passes' own)
    low_passes = since = 0
    mixed = False  # float32 products left in the basis (a fit stopped by the cap)
    history: list[tuple[float, float]] = []
    prev: tuple[np.ndarray, np.ndarray] | None = None
    stop = "cap" if adaptive else "fixed"
    # The next block depends only on the Krylov basis, not on the convergence check: the next pass
    # starts before the estimate and its changes are computed, so the cores do not wait for that
    # serial step; a pass started after the last one is cancelled.
    cancel = threading.Event()
    with (
        progress_bar("lfmm fit", cap, progress) as bar,
        ThreadPoolExecutor(1) as ahead,
        ThreadPoolExecutor(default_threads()) as workers,
    ):
        if decoded is not None:
            held = _HeldPasses(decoded, n, workers, default_threads(), batch_snps or byte_block_snps(n))

            def start(G, low=False):
                return held.start(G, low)

            def finish(handle):
                return held.finish(handle, bar)

            def stop_passes():
                held.stop[0] = 1
        else:

            def start(G, low=False):
                return ahead.submit(_gram_pass, src, G, bar, 0, batch_snps, False, cancel, workers)

            def finish(handle):
                return handle.result()

            stop_passes = cancel.set
        pending = start(M(G)) if decoded is None or decoded.first is None else None
        try:
            for it in range(cap):
                if pending is None and it == 0:  # the first pass came with the decode
                    assert decoded is not None and decoded.first is not None
                    acc, decoded.first = decoded.first, None
                    bar.advance()
                else:
                    acc = finish(pending)
                pending = None
                # float32 passes: the goal is the switch, predicted without the 2x margin of
                # _likely_last (a pass held back for nothing costs the estimate's time)
                goal = max(LOW_SWITCH, tol) if low else tol
                with single_threaded_blas():
                    kry.add(G, acc, M(acc))
                    nxt = _next_block(kry.Q, kry.H[:, -G.shape[1] :]) if kry.m < n else None
                if (
                    nxt is not None
                    and it + 1 < cap
                    and not (adaptive and _likely_last(history[since:], goal / 2 if low else tol))
                ):
                    pending = start(M(nxt), low)
                with single_threaded_blas():
                    try:
                        est = kry.estimate(K, keep=max(ell, K + 1), rough=low or mixed)
                    except np.linalg.LinAlgError:
                        if not low:
                            raise
                        est = kry.ritz(K, max(ell, K + 1))  # float32 rounding: Q'H not positive definite
                    if prev is not None:
                        history.append(_changes(prev, est))
                    prev = est
                done = low and (nxt is None or _remaining_error(history) <= goal or _at_floor(history))
                if low and (done or it + 3 >= cap):
                    if pending is not None:  # a float32 pass started ahead: dropped
                        held.stop[0] = 1
                        finish(pending)
                        held.stop[0] = 0
                        pending = None
                    low = False
                    if done:  # the float32 passes are done: a float64 basis from their Ritz vectors
                        low_passes, since = kry.passes, len(history)
                        G = kry.restart(ell)
                        kry = _Krylov(n, ell * (cap - low_passes))
                        pending = start(M(G))
                        continue
                    # slow convergence, the cap is near: the last passes in float64 on the same
                    # basis (a restart would lose its Krylov space; the float32 rounding, ~1e-6, is
                    # far below the changes)
                    mixed = True
                if nxt is None:  # the Krylov space is invariant (or all of R^n): the estimate is exact
                    stop = "invariant"
                    break
                G = nxt
                if adaptive and _remaining_error(history[since:]) <= tol:
                    stop = "tol"
                    break
                if pending is None and it + 1 < cap:  # held back (probably the last pass), but needed
                    pending = start(M(G), low)
        finally:
            stop_passes()
            if pending is not None:  # a pass started after the last one: stopped, its result dropped
                try:
                    finish(pending)
                except Exception:  # noqa: BLE001 - a failure of a discarded pass changes nothing
                    pass
        bar.set_total(low_passes + kry.passes)
    with single_threaded_blas():
        U1, sigma, U, eig = kry.final(est, Minv, K)
    passes = low_passes + kry.passes
    conv = LfmmConvergence(
        passes=passes,
        converged=stop in ("tol", "invariant") or _remaining_error(history[since:]) <= tol,
        stop=stop,
        tol=float(tol),
        max_power_iter=int(max_power_iter),
        sv_change=history[-1][0] if history else None,
        subspace_change=history[-1][1] if history else None,
        history=tuple(history),
        error_estimate=_remaining_error(history[since:]) if history[since:] else None,
    )
    if stop == "cap":
        msg = (
            f"lfmm fit: the randomized SVD did not converge in {passes} passes (max_power_iter={max_power_iter}; "
            f"{conv.describe()}): U is approximate.  Raise max_power_iter or oversampling; nearly equal K-th "
            f"and (K+1)-th singular values ({_gap_text(eig, K)}) make the K-dimensional subspace ill-defined"
        )
        log.warning("%s", msg)
        warnings.warn(msg, LfmmConvergenceWarning, stacklevel=3)  # past the BLAS decorator's frame
    params = {
        "K": K,
        "lam": float(lam),
        "dlambda": dlambda,
        "scale": scale,
        "power_iter": "auto" if power_iter is None else int(power_iter),
        "tol": float(tol),
        "max_power_iter": int(max_power_iter),
        "oversampling": int(oversampling),
        "seed": int(seed),
        "n_est_snps": int(src.n_snps),
        "est": (
            "est_bed"
            if est_bed is not None
            else "est_index"
            if est_index is not None
            else f"est_rate={est_rate}"
            if est_rate is not None
            else "all"
        ),
        "bed": genotypes_path(bed),
        "eigenvalues": [float(e) for e in eig[:ell]],
        "convergence": conv.to_dict(),
    }
    log.info(
        "lfmm fit: n=%d d=%d K=%d on %d SNPs; singular values %s; %d passes (%s)",
        n,
        d,
        K,
        src.n_snps,
        np.array2string(sigma, precision=4),
        passes,
        conv.describe(),
    )
    return LfmmModel(
        U=U,
        singular_values=sigma,
        U1=U1,
        d_lambda=dl,
        Q_d=Qd,
        sigma_x=sx,
        X=Xm,
        x_names=names,
        sample_ids=src.sample_ids,
        params=params,
    )
