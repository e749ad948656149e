"""PLINK .bed/.bim/.fam streamed in blocks of SNPs.

:class:`BedStream` memory-maps the packed genotypes and decodes blocks of SNPs with the numba
kernel in :mod:`polgen.kernels.bed_decode` into one reused, Fortran-ordered float buffer::

    bed = BedStream("geno.bed", scale="center", block_snps=4096)
    for blk in bed.blocks():
        blk.data      # (n_samples, blk.stop - blk.start), each SNP a contiguous column
        blk.freq      # A1 frequency among non-missing calls
        blk.n_miss    # missing calls per SNP

Missing calls become the SNP mean before centring (so 0 once centred); ``scale="eigenstrat"``
divides by ``sqrt(2p(1-p))`` (monomorphic SNPs stay 0 — see :attr:`BedBlock.monomorphic`);
``scale="raw"`` gives dosages with NaN for missing calls.  Values count A1 alleles (bed-reader's
``count_A1=True``) unless ``count_a1=False``.

The .bim is never parsed whole unless :attr:`BedStream.bim` is asked for: opening a stream counts
its non-blank lines and records the byte offset of every 4096th (:class:`BimIndex`), and
:meth:`BedStream.bim_slice` parses only the rows of a block, so memory does not grow with the
number of SNPs.  Decoded pages of the memory map are dropped from the resident set as
:meth:`BedStream.blocks` moves on (the page cache keeps them).  One stream may be iterated from
several threads at once: each :meth:`BedStream.blocks` call owns its buffer.

A stream pickles as its paths and options (the memory map is reopened on the other side), so a
task spec holding one can be shipped to a process pool or Dask worker.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from polgen.errors import BedFormatError, InputError
from polgen.io.plink_text import (
    _EMPTY_BIM_SCHEMA,
    BimIndex,
    _bim_index,
    _check_first_bim_line,
    count_lines,
    read_bim,
    read_fam,
)
from polgen.kernels.bed_decode import SCALE_CODES, decode_rows

log = logging.getLogger("polgen")

BED_MAGIC = b"\x6c\x1b\x01"
#: default memory budget for one decoded block (bytes)
DEFAULT_BLOCK_BYTES = 256 * 1024 * 1024


@dataclass
class BedBlock:
    """One decoded block: SNPs ``start:stop`` of the stream's selection.

    ``data`` is ``(n_samples, stop - start)`` in Fortran order.  When it came from
    :meth:`BedStream.blocks` it is a view of a buffer reused by the next block: copy it to keep it.
    """

    start: int
    stop: int
    data: np.ndarray
    freq: np.ndarray
    n_miss: np.ndarray

    @property
    def monomorphic(self) -> np.ndarray:
        """SNPs with a single observed allele (or no calls): all zeros when centred/scaled."""
        f = self.freq
        return ~((f > 0.0) & (f < 1.0))

    def __len__(self) -> int:
        return self.stop - self.start


def _resolve_paths(bed_path: str | os.PathLike) -> tuple[Path, Path, Path]:
    p = Path(bed_path)
    if p.suffix.lower() in (".bed", ".bim", ".fam"):
        stem = p.with_suffix("")
    else:
        stem = p
    bed = stem.with_name(stem.name + ".bed")
    bim = stem.with_name(stem.name + ".bim")
    fam = stem.with_name(stem.name + ".fam")
    return bed, bim, fam


#: a line is blank when it holds no byte above 0x20 (the rule of :func:`count_lines` and
#: :class:`BimIndex`, so counted and parsed rows agree)
def thin_positions(n: int, thin: float) -> np.ndarray:
    """Deterministic thinning: ``ceil(n * thin)`` evenly spaced positions ``floor(i / thin)``.

    ``thin = 1/k`` keeps every k-th SNP starting with the first.
    """
    if not (0.0 < thin <= 1.0):
        raise InputError(f"thin must be a fraction in (0, 1], got {thin!r}")
    if thin == 1.0 or n == 0:
        return np.arange(n, dtype=np.int64)
    m = int(np.ceil(n * thin - 1e-9))
    pos = np.minimum(np.floor(np.arange(m, dtype=np.float64) / thin + 1e-9).astype(np.int64), n - 1)
    # non-decreasing: the unique values are where it steps (np.unique would sort and hash them)
    return pos[np.r_[True, pos[1:] != pos[:-1]]]


_MAP_LOCK = threading.Lock()


def _check_index(values, n: int, what: str, table: str, path: Path) -> np.ndarray:
    """Sorted, unique row indices of a .bim/.fam with ``n`` rows, as int64."""
    s = np.asarray(values)
    if s.ndim != 1 or not (s.size == 0 or np.issubdtype(s.dtype, np.integer)):
        raise InputError(f"{what} indices must be a 1-D array of {table} row numbers", path=path)
    s = s.astype(np.int64).copy()
    if len(s) and (s.min() < 0 or s.max() >= n):
        bad = int(s[(s < 0) | (s >= n)][0])
        raise InputError(f"{what} index {bad} is outside the {table} rows 0..{n - 1}", path=path)
    if len(s) > 1 and np.any(np.diff(s) <= 0):
        raise InputError(f"{what} indices must be sorted and unique", path=path)
    return s


class BedStream:
    """Blocks of decoded SNPs from a PLINK .bed/.bim/.fam trio.

    Parameters
    ----------
    bed_path: the .bed file (or the common prefix); .bim and .fam sit beside it.
    snps: sorted, unique .bim row indices to keep (default all).
    samples: sorted, unique .fam row indices to keep (default all).  Frequencies, centring and
        scaling are then over those samples only; the full rows are decoded first (a subset costs
        what all samples cost).
    thin: fraction in (0, 1] of the (selected) SNPs to keep, evenly spaced, deterministic.
    scale: ``"center"`` (mean-imputed, centred), ``"eigenstrat"`` (also / sqrt(2p(1-p))) or
        ``"raw"`` (dosage, NaN missing).
    count_a1: values count A1 alleles (the .bim 5th column), as bed-reader's default.
    dtype: float64 or float32 output.
    block_snps: SNPs per block; default from a 256 MB budget of decoded floats.

    Opening validates the trio (magic bytes, SNP-major mode, the .bed size against the .bim's
    non-blank lines and the .fam's rows, the .bim's first line) and raises
    :class:`~polgen.errors.BedFormatError` naming the file; the other .bim lines are checked when
    they are parsed (:attr:`bim`, :meth:`bim_slice`).
    """

    #: .bim lines between two recorded byte offsets (:class:`BimIndex`)
    BIM_STRIDE = 4096

    def __init__(
        self,
        bed_path: str | os.PathLike,
        *,
        snps: Sequence[int] | np.ndarray | None = None,
        samples: Sequence[int] | np.ndarray | None = None,
        thin: float | None = None,
        scale: str = "center",
        count_a1: bool = True,
        dtype=np.float64,
        block_snps: int | None = None,
        memory_budget: int = DEFAULT_BLOCK_BYTES,
    ) -> None:
        self.bed_path, self.bim_path, self.fam_path = _resolve_paths(bed_path)
        if scale not in SCALE_CODES:
            raise InputError(f"scale must be one of {sorted(SCALE_CODES)}, got {scale!r}")
        self.scale = scale
        self.count_a1 = bool(count_a1)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise InputError(f"dtype must be float32 or float64, got {self.dtype}")
        self._snps_arg = None if snps is None else np.asarray(snps, dtype=np.int64).copy()
        self._thin = thin
        self._block_arg = block_snps
        self._memory_budget = int(memory_budget)

        if not self.bed_path.exists():
            raise BedFormatError(".bed file not found", path=self.bed_path)
        fam = read_fam(self.fam_path)
        #: samples in the file (the .bed's row width); :attr:`n_samples` counts the selected ones
        self.n_samples_total = fam.height
        self.sample_index = (
            None if samples is None else _check_index(samples, fam.height, "sample", ".fam", self.fam_path)
        )
        #: the selected .fam rows and their IIDs, in file order
        self.fam = fam if self.sample_index is None else fam[self.sample_index.tolist()]
        self.n_samples = self.fam.height
        self.sample_ids: list[str] = self.fam["IID"].cast(pl.String).to_list()
        # the .bim is indexed here (its rows counted, every BIM_STRIDE-th offset kept, its first
        # line checked) and parsed only where used, so opening a stream over millions of SNPs
        # costs no per-SNP table
        self._bim_index = _bim_index(self.bim_path, self.BIM_STRIDE)
        self.n_snps_total = self._bim_index.n_rows
        _check_first_bim_line(self.bim_path)
        self._bim: pl.DataFrame | None = None
        self.bytes_per_snp = (self.n_samples_total + 3) // 4
        self._validate_bed()

        index = np.arange(self.n_snps_total, dtype=np.int64)
        if self._snps_arg is not None:
            index = _check_index(self._snps_arg, self.n_snps_total, "SNP", ".bim", self.bim_path)
        if thin is not None:
            index = index[thin_positions(len(index), float(thin))]
        self.snp_index = np.ascontiguousarray(index, dtype=np.int64)
        self.n_snps = len(self.snp_index)
        #: the selection is every SNP of the file, in order
        self.contiguous = self.n_snps == self.n_snps_total

        if block_snps is None:
            per_snp = max(1, self.n_samples * self.dtype.itemsize)
            block_snps = max(1, self._memory_budget // per_snp)
        block_snps = int(block_snps)
        if block_snps < 1:
            raise InputError(f"block_snps must be >= 1, got {block_snps}")
        self.block_snps = max(1, min(block_snps, max(self.n_snps, 1)))
        self._mm: mmap.mmap | None = None
        self._packed: np.ndarray | None = None
        #: the selected rows copied into memory by :meth:`hold_in_memory` (row j = selected SNP j)
        self._held: np.ndarray | None = None

    # -- validation / mapping -------------------------------------------------------------
    def _validate_bed(self) -> None:
        size = self.bed_path.stat().st_size
        with open(self.bed_path, "rb") as fh:
            head = fh.read(3)
        if len(head) < 3 or head[:2] != BED_MAGIC[:2]:
            raise BedFormatError(
                f"not a PLINK .bed file: first bytes {head.hex()!r}, expected {BED_MAGIC.hex()!r}", path=self.bed_path
            )
        if head[2] != BED_MAGIC[2]:
            raise BedFormatError(
                "individual-major .bed files are not supported (mode byte 0x00); convert with `plink --make-bed`",
                path=self.bed_path,
            )
        expected = 3 + self.n_snps_total * self.bytes_per_snp
        if size != expected:
            raise BedFormatError(
                f".bed size {size} bytes does not match {self.n_snps_total} SNPs (.bim) x "
                f"{self.n_samples_total} samples (.fam): expected 3 + {self.n_snps_total} x "
                f"{self.bytes_per_snp} = {expected} bytes; the file is truncated or the .bim/.fam "
                "do not belong to it",
                path=self.bed_path,
            )

    def _map(self) -> np.ndarray:
        """The packed genotypes, ``(n_snps_total, bytes_per_snp)`` uint8, mapped on first use."""
        packed = self._packed
        if packed is not None:
            return packed
        with _MAP_LOCK:
            if self._packed is None:
                if self.n_snps_total == 0 or self.bytes_per_snp == 0:
                    self._packed = np.zeros((self.n_snps_total, self.bytes_per_snp), dtype=np.uint8)
                else:
                    with open(self.bed_path, "rb") as fh:
                        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                    self._mm = mm
                    self._packed = np.frombuffer(
                        mm, dtype=np.uint8, offset=3, count=self.n_snps_total * self.bytes_per_snp
                    ).reshape(self.n_snps_total, self.bytes_per_snp)
            return self._packed

    def hold_in_memory(self, max_bytes: int) -> bool:
        """Copy the packed rows of the selected SNPs into memory (one read of the .bed) when they
        take at most ``max_bytes``, so that later :meth:`blocks` / :meth:`read` calls decode from
        that copy instead of the file (the same bytes: the same values); for callers that stream
        a selection many times, like an iterative fit.  Returns whether the rows are held.  The
        copy is dropped by :meth:`close` and is not pickled."""
        if self._held is not None:
            return True
        if self.n_snps * self.bytes_per_snp > max_bytes:
            return False
        held = np.empty((self.n_snps, self.bytes_per_snp), dtype=np.uint8)
        packed = self._map()
        # copy in pieces of at most 16 MB of the *file* (not of the selection: a sparse selection's
        # rows span the whole file, and the pages a piece touches stay resident until released)
        span = max(1, (16 << 20) // max(1, self.bytes_per_snp))
        idx = self.snp_index
        if len(idx):
            order_ok = bool(np.all(idx[1:] >= idx[:-1]))
            if order_ok:
                edges = np.arange(int(idx[0]) + span, int(idx[-1]) + 1, span)
                cuts = np.concatenate(([0], np.searchsorted(idx, edges), [len(idx)]))
            else:  # an unsorted selection: pieces of at most `span` rows
                cuts = np.append(np.arange(0, len(idx), span), len(idx))
            for a, b in zip(cuts[:-1], cuts[1:]):
                if b <= a:
                    continue
                rows = idx[a:b]
                held[a:b] = packed[rows]
                self._release(int(rows.min()), int(rows.max()))
        self._held = held
        return True

    def packed_rows(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(packed, rows)``: a C-contiguous uint8 array of .bed rows (the file's memory map, or
        the copy of :meth:`hold_in_memory`) and the int64 indices of its rows holding selected
        SNPs ``start:stop`` (all samples of the file, ``bytes_per_snp`` bytes each), for kernels
        that work on the 2-bit codes directly.  Pair with :meth:`release_rows`."""
        start, stop = self._check_range(start, stop)
        return self._rows(start, stop)

    def release_rows(self, start: int, stop: int) -> None:
        """After a kernel has read selected SNPs ``start:stop`` from :meth:`packed_rows`: drop
        their pages of the memory map from the resident set (as :meth:`blocks` does)."""
        if self._held is None and stop > start:
            self._release(int(self.snp_index[start]), int(self.snp_index[stop - 1]))

    def _rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """The packed array and its row indices holding selected SNPs ``start:stop``."""
        if self._held is not None:
            return self._held, np.arange(start, stop, dtype=np.int64)
        return self._map(), self.snp_index[start:stop]

    def _release(self, first_row: int, last_row: int) -> None:
        """Drop the mapped pages of .bed rows ``first_row..last_row`` from this process's resident
        set (the page cache keeps them), so RSS does not grow with the file as it is streamed."""
        mm = self._mm
        if mm is None or not hasattr(mm, "madvise"):
            return
        lo = 3 + first_row * self.bytes_per_snp
        hi = 3 + (last_row + 1) * self.bytes_per_snp
        lo -= lo % mmap.PAGESIZE
        hi -= hi % mmap.PAGESIZE  # keep the partly used last page
        if hi > lo:
            try:
                mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            except (OSError, ValueError):  # pragma: no cover - platform without the advice
                pass

    # -- the .bim, parsed where used ----------------------------------------------------------------
    @property
    def bim(self) -> pl.DataFrame:
        """The selected .bim rows: CHR, SNP, CM, BP, A1, A2 (the whole file parsed once, on first
        access: for millions of SNPs prefer :meth:`bim_slice`)."""
        if self._bim is None:
            full = read_bim(self.bim_path)
            if full.height != self.n_snps_total:  # pragma: no cover - counted the same lines
                raise BedFormatError(f".bim has {full.height} rows, counted {self.n_snps_total}", path=self.bim_path)
            self._bim = full if self.contiguous else full[self.snp_index]
        return self._bim

    def bim_slice(self, start: int = 0, stop: int | None = None) -> pl.DataFrame:
        """The .bim rows of selected SNPs ``start:stop`` (e.g. those of one block), parsed from
        their lines only (memory proportional to ``stop - start``, not to the file)."""
        start, stop = self._check_range(start, stop)
        if self._bim is not None:
            return self._bim.slice(start, stop - start)
        if self.contiguous:
            return self._bim_index.read(self.bim_path, start, stop)
        rows = self.snp_index[start:stop]
        if rows.size == 0:
            return pl.DataFrame(schema=_EMPTY_BIM_SCHEMA)
        # windows of at most max(#rows, 64k) .bim lines, so a sparse selection never reads a
        # span of the file far larger than itself in one go
        window = max(rows.size, 1 << 16)
        pieces = []
        a = 0
        while a < rows.size:
            lo = int(rows[a])
            b = int(np.searchsorted(rows, lo + window, side="left"))
            hi = int(rows[b - 1]) + 1
            pieces.append(self._bim_index.read(self.bim_path, lo, hi)[(rows[a:b] - lo).tolist()])
            a = b
        return pieces[0] if len(pieces) == 1 else pl.concat(pieces)

    # -- pickling: ship paths and options, reopen the map -----------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_packed"] = None
        state["_held"] = None
        state["_mm"] = None
        state["_bim"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"BedStream({str(self.bed_path)!r}, n_samples={self.n_samples}, n_snps={self.n_snps}"
            f"/{self.n_snps_total}, scale={self.scale!r}, dtype={self.dtype.name}, "
            f"block_snps={self.block_snps})"
        )

    def __len__(self) -> int:
        return self.n_snps

    def close(self) -> None:
        """Drop the memory map (the stream maps the file again if used again)."""
        self._packed = None
        self._mm = None
        self._held = None

    def __enter__(self) -> BedStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def n_blocks(self) -> int:
        return (self.n_snps + self.block_snps - 1) // self.block_snps

    def block_ranges(
        self, start: int = 0, stop: int | None = None, block_snps: int | None = None
    ) -> list[tuple[int, int]]:
        """The ``(start, stop)`` positions of the blocks :meth:`blocks` would yield."""
        start, stop = self._check_range(start, stop)
        bs = self._block_size(block_snps)
        return [(a, min(a + bs, stop)) for a in range(start, stop, bs)]

    def _block_size(self, block_snps: int | None) -> int:
        if block_snps is None:
            return self.block_snps
        bs = int(block_snps)
        if bs < 1:
            raise InputError(f"block_snps must be >= 1, got {block_snps}")
        return bs

    def _check_range(self, start: int, stop: int | None) -> tuple[int, int]:
        stop = self.n_snps if stop is None else int(stop)
        start = int(start)
        if not (0 <= start <= stop <= self.n_snps):
            raise InputError(f"SNP range {start}:{stop} is outside 0:{self.n_snps}", path=self.bed_path)
        return start, stop

    # -- decoding -------------------------------------------------------------------------
    def read(
        self, start: int = 0, stop: int | None = None, out: np.ndarray | None = None, *, parallel: bool | None = None
    ) -> BedBlock:
        """Decode selected SNPs ``start:stop`` into ``out`` (a new array by default).

        ``parallel``: decode on numba's threads (None: when the block is big enough and this is
        not already a worker thread; see :func:`polgen.kernels.bed_decode.decode_rows`).
        """
        start, stop = self._check_range(start, stop)
        k = stop - start
        if out is None:
            out = np.empty((self.n_samples, k), dtype=self.dtype, order="F")
        elif out.shape != (self.n_samples, k) or out.dtype != self.dtype or not out.flags.f_contiguous:
            raise InputError(
                f"out must be a Fortran-ordered {self.dtype.name} array of shape "
                f"({self.n_samples}, {k}), got {out.dtype} {out.shape}"
            )
        freq = np.empty(k, dtype=np.float64)
        nmiss = np.empty(k, dtype=np.int64)
        self._decode(start, stop, out, freq, nmiss, parallel)
        return BedBlock(start, stop, out, freq, nmiss)

    def _decode(
        self, start: int, stop: int, out: np.ndarray, freq: np.ndarray, nmiss: np.ndarray, parallel: bool | None
    ) -> None:
        packed, rows = self._rows(start, stop)
        if self.sample_index is None:
            decode_rows(
                packed,
                rows,
                self.n_samples,
                SCALE_CODES[self.scale],
                out,
                freq,
                nmiss,
                count_a1=self.count_a1,
                parallel=parallel,
            )
            return
        # a sample subset: dosages of every sample, then the selected rows imputed and scaled as
        # the kernel does (integer dosage sums, so the same mean; missing -> 0 after centring)
        k = len(rows)
        full = np.empty((self.n_samples_total, k), dtype=np.float64, order="F")
        decode_rows(
            packed,
            rows,
            self.n_samples_total,
            SCALE_CODES["raw"],
            full,
            np.empty(k),
            np.empty(k, dtype=np.int64),
            count_a1=self.count_a1,
            parallel=parallel,
        )
        x = full[self.sample_index]
        miss = np.isnan(x)
        nmiss[:] = miss.sum(axis=0)
        calls = self.n_samples - nmiss
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(calls > 0, np.where(miss, 0.0, x).sum(axis=0) / np.maximum(calls, 1), np.nan)
        freq[:] = mean / 2.0
        if self.scale == "raw":
            out[:] = x
            return
        y = np.where(miss, 0.0, x - mean)
        if self.scale == "eigenstrat":
            poly = (freq > 0.0) & (freq < 1.0)
            sd = np.sqrt(2.0 * freq * (1.0 - freq), where=poly, out=np.ones(k))
            y = np.where(poly, y / sd, 0.0)
        out[:] = y

    def blocks(
        self, start: int = 0, stop: int | None = None, *, block_snps: int | None = None, parallel: bool | None = None
    ) -> Iterator[BedBlock]:
        """Decoded blocks of ``block_snps`` SNPs (default :attr:`block_snps`) covering
        ``start:stop`` once, in order.

        Each block's ``data``, ``freq`` and ``n_miss`` are views of buffers owned by this call and
        reused by its next block (copy them to keep them); separate calls, e.g. on several
        threads over different ranges, never share buffers.  The decoded rows' pages are dropped
        from the resident set as the iteration moves on.
        """
        ranges = self.block_ranges(start, stop, block_snps)
        if not ranges:
            return
        width = max(b - a for a, b in ranges)
        buf = np.empty((self.n_samples, width), dtype=self.dtype, order="F")
        freq_buf = np.empty(width, dtype=np.float64)
        nmiss_buf = np.empty(width, dtype=np.int64)
        for a, b in ranges:
            out, freq, nmiss = buf[:, : b - a], freq_buf[: b - a], nmiss_buf[: b - a]
            self._decode(a, b, out, freq, nmiss, parallel)
            if self._held is None:
                self._release(int(self.snp_index[a]), int(self.snp_index[b - 1]))
            yield BedBlock(a, b, out, freq, nmiss)

    def __iter__(self) -> Iterator[BedBlock]:
        return self.blocks()

    def read_all(self) -> np.ndarray:
        """The whole selection as one new ``(n_samples, n_snps)`` array (small data only)."""
        return self.read(0, self.n_snps).data


__all__ = [
    "BED_MAGIC",
    "BedBlock",
    "BedStream",
    "BimIndex",
    "count_lines",
    "read_bim",
    "read_fam",
    "thin_positions",
]
