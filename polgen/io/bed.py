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

import io
import logging
import mmap
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from polgen.errors import BedFormatError, InputError
from polgen.kernels.bed_decode import SCALE_CODES, count_nonblank_lines, decode_rows

log = logging.getLogger("polgen")

BED_MAGIC = b"\x6c\x1b\x01"
BIM_COLUMNS = ("CHR", "SNP", "CM", "BP", "A1", "A2")
FAM_COLUMNS = ("FID", "IID", "PAT", "MAT", "SEX", "PHENO")
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
_NON_BLANK = r"[^\x00-\x20]"


def _parse_fields(lines: pl.Series, columns: Sequence[str], what: str, path: Path, first_row: int = 0) -> pl.DataFrame:
    """Non-blank text lines split on any whitespace into exactly ``len(columns)`` string fields.

    ``first_row`` is the 0-based row (among non-blank lines) of ``lines[0]``, for error messages.
    """
    lines = lines.filter(lines.str.contains(_NON_BLANK))
    pattern = r"^\s*" + r"\s+".join([r"(\S+)"] * len(columns)) + r"\s*$"
    parts = pl.DataFrame({"line": lines}).select(pl.col("line").str.extract_groups(pattern).alias("f")).unnest("f")
    parts.columns = list(columns)
    bad = parts.select(pl.col(columns[0]).is_null().arg_true()).to_series()
    if len(bad):
        row = int(bad[0])
        n_fields = len(str(lines[row]).split())
        raise BedFormatError(
            f"{what} line {first_row + row + 1} has {n_fields} whitespace-separated fields, expected "
            f"{len(columns)} ({' '.join(columns)})",
            path=path,
            row=first_row + row + 1,
        )
    return parts


def _text_lines(source: Path | bytes, what: str, path: Path) -> pl.Series:
    """The lines of a text file (or of bytes read from it) as one string column."""
    try:
        lines = pl.read_csv(
            io.BytesIO(source) if isinstance(source, bytes) else source,
            has_header=False,
            separator="\x1f",
            quote_char=None,
            schema={"line": pl.String},
            comment_prefix=None,
            truncate_ragged_lines=True,
            raise_if_empty=False,
        )
    except Exception as exc:  # polars raises ComputeError etc. for unreadable bytes
        raise BedFormatError(f"cannot read {what} file: {exc}", path=path) from None
    return lines["line"]


def _read_fields(path: Path, columns: Sequence[str], what: str) -> pl.DataFrame:
    """A whitespace-separated text file with exactly ``len(columns)`` fields per line, as strings."""
    if not path.exists():
        raise BedFormatError(f"{what} file not found", path=path)
    if path.stat().st_size == 0:
        return pl.DataFrame({c: pl.Series(c, [], dtype=pl.String) for c in columns})
    return _parse_fields(_text_lines(path, what, path), columns, what, path)


def _typed_bim(df: pl.DataFrame, path: Path, first_row: int = 0) -> pl.DataFrame:
    """String .bim fields with CM as f64 and BP as i64; a non-number -> BedFormatError naming it."""
    out = []
    for col, dtype in (("CM", pl.Float64), ("BP", pl.Int64)):
        cast = df[col].cast(dtype, strict=False)
        bad = (cast.is_null() & df[col].is_not_null()).arg_true()
        if len(bad):
            row = int(bad[0])
            raise BedFormatError(
                f".bim value {df[col][row]!r} is not a number", path=path, column=col, row=first_row + row + 1
            )
        out.append(cast.alias(col))
    return df.with_columns(out).select(BIM_COLUMNS)


def read_bim(path: str | os.PathLike) -> pl.DataFrame:
    """A .bim as CHR (str), SNP, CM (f64), BP (i64), A1, A2; bad lines -> BedFormatError."""
    path = Path(path)
    return _typed_bim(_read_fields(path, BIM_COLUMNS, ".bim"), path)


def read_fam(path: str | os.PathLike) -> pl.DataFrame:
    """A .fam as FID, IID, PAT, MAT (str), SEX (i64), PHENO (str, as written)."""
    path = Path(path)
    df = _read_fields(path, FAM_COLUMNS, ".fam")
    sex = df["SEX"].cast(pl.Int64, strict=False)
    bad = (sex.is_null() & df["SEX"].is_not_null()).arg_true()
    if len(bad):
        row = int(bad[0])
        raise BedFormatError(f".fam sex {df['SEX'][row]!r} is not an integer", path=path, column="SEX", row=row + 1)
    return df.with_columns(sex.alias("SEX"))


def count_lines(path: str | os.PathLike, what: str = "text", chunk_bytes: int = 4 << 20) -> int:
    """Number of non-blank lines of a text file, counted in 4 MB chunks without parsing."""
    path = Path(path)
    if not path.exists():
        raise BedFormatError(f"{what} file not found", path=path)
    n = 0
    carry = False  # the current, unterminated line holds a non-blank byte
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(chunk_bytes)
            if not chunk:
                break
            k, carry = count_nonblank_lines(np.frombuffer(chunk, dtype=np.uint8), carry)
            n += int(k)
    return n + int(carry)


_EMPTY_BIM_SCHEMA = {
    "CHR": pl.String,
    "SNP": pl.String,
    "CM": pl.Float64,
    "BP": pl.Int64,
    "A1": pl.String,
    "A2": pl.String,
}


@dataclass(frozen=True)
class BimIndex:
    """Where the rows of a .bim start, without holding the rows: the number of non-blank lines
    (= SNPs), the byte offset of every ``stride``-th of them, and whether the file is "plain"
    (no blank or whitespace-only lines, so rows can be read with a fast CSV parse)."""

    n_rows: int
    offsets: np.ndarray  # int64, offsets[k] = byte where non-blank line k * stride starts
    stride: int
    plain: bool

    @classmethod
    def build(cls, path: str | os.PathLike, stride: int = 4096, chunk_bytes: int = 8 << 20) -> BimIndex:
        """One pass over the file in ``chunk_bytes`` chunks (memory: a few chunks, whatever its size).

        A line is blank when it holds no byte above 0x20 (the rule of :func:`count_lines`).
        """
        path = Path(path)
        if not path.exists():
            raise BedFormatError(".bim file not found", path=path)
        offsets: list[np.ndarray] = []
        n_rows = 0  # non-blank lines so far
        n_lines = 0  # all lines so far
        pos = 0  # file offset of buf[0]
        tail = b""
        with open(path, "rb") as fh:
            while True:
                chunk = fh.read(chunk_bytes)
                buf = tail + chunk if tail else chunk
                if not chunk:  # end of file: a last line without a newline still counts
                    if not buf:
                        break
                    buf += b"\n"
                arr = np.frombuffer(buf, dtype=np.uint8)
                nl = np.flatnonzero(arr == 10)
                if nl.size == 0:
                    tail = buf
                    continue
                end = int(nl[-1]) + 1
                starts = np.empty(nl.size, dtype=np.int64)
                starts[0] = 0
                starts[1:] = nl[:-1] + 1
                # a line opening with a byte above 0x20 is not blank; the others are checked
                seen = arr[starts] > 32
                if not seen.all():
                    maybe = np.flatnonzero(~seen)
                    if maybe.size * 64 < seen.size:
                        for i in maybe:
                            seen[i] = bool((arr[starts[i] : nl[i]] > 32).any())
                    else:  # max over each line [start, next start): its newline is blank, so an
                        # empty line (start = its newline) reads as blank too
                        seen = np.maximum.reduceat((arr[:end] > 32).view(np.uint8), starts).astype(bool)
                first = starts[seen]
                ordinal = n_rows + np.arange(first.size)
                offsets.append(pos + first[ordinal % stride == 0])
                n_rows += int(first.size)
                n_lines += int(nl.size)
                pos += end
                tail = buf[end:]
                if not chunk:
                    break
        off = np.concatenate(offsets) if offsets else np.zeros(0, dtype=np.int64)
        return cls(n_rows, np.ascontiguousarray(off, dtype=np.int64), int(stride), n_rows == n_lines)

    def read(self, path: str | os.PathLike, lo: int, hi: int) -> pl.DataFrame:
        """Rows ``lo:hi`` (0-based, among non-blank lines) of the .bim, typed as :func:`read_bim`."""
        path = Path(path)
        if not (0 <= lo <= hi <= self.n_rows):
            raise InputError(f".bim rows {lo}:{hi} are outside 0:{self.n_rows}", path=path)
        if hi == lo:
            return pl.DataFrame(schema=_EMPTY_BIM_SCHEMA)
        k0 = lo // self.stride
        k1 = -(-hi // self.stride)
        skip = lo - k0 * self.stride
        with open(path, "rb") as fh:
            fh.seek(int(self.offsets[k0]))
            raw = fh.read(int(self.offsets[k1] - self.offsets[k0])) if k1 < len(self.offsets) else fh.read()
        parts = self._fast(raw, skip, hi - lo) if self.plain else None
        if parts is None:  # blank lines, any whitespace between fields, or a malformed line
            lines = _text_lines(raw, ".bim", path)
            lines = lines.filter(lines.str.contains(_NON_BLANK)).slice(skip, hi - lo)
            parts = _parse_fields(lines, BIM_COLUMNS, ".bim", path, first_row=lo)
            if parts.height != hi - lo:
                raise BedFormatError(
                    f".bim has fewer rows than the {self.n_rows} counted when it was opened (changed since?)",
                    path=path,
                    row=lo + parts.height + 1,
                )
        return _typed_bim(parts, path, first_row=lo)

    @staticmethod
    def _fast(raw: bytes, skip: int, n: int) -> pl.DataFrame | None:
        """The usual single-tab (plink) or single-space layout read as CSV; None when not that."""
        nl = raw.find(b"\n")
        first = raw[:nl] if nl >= 0 else raw
        sep = next((c for c in ("\t", " ") if len(first.rstrip(b"\r").split(c.encode())) == len(BIM_COLUMNS)), None)
        if sep is None:
            return None
        # only when fields can hold no other whitespace (what the general parser would strip)
        other = (b" ",) if sep == "\t" else (b"\t", b"  ", b" \n", b"\n ", b" \r")
        if raw.startswith((b" ", b"\t")) or any(o in raw for o in other):
            return None
        try:
            parts = pl.read_csv(
                io.BytesIO(raw),
                has_header=False,
                separator=sep,
                quote_char=None,
                schema={c: pl.String for c in BIM_COLUMNS},
                skip_rows=skip,
                n_rows=n,
            )
        except pl.exceptions.PolarsError:
            return None
        if parts.height != n or any(parts[c].null_count() for c in BIM_COLUMNS):
            return None
        return parts


def _check_first_bim_line(path: Path) -> None:
    """Fail early on a .bim that is not a .bim (the full parse happens on first use)."""
    with open(path, "rb") as fh:
        for k, raw in enumerate(fh):
            line = raw.decode("utf-8", errors="replace").split()
            if not line:
                continue
            if len(line) != len(BIM_COLUMNS):
                raise BedFormatError(
                    f".bim line {k + 1} has {len(line)} whitespace-separated fields, expected "
                    f"{len(BIM_COLUMNS)} ({' '.join(BIM_COLUMNS)})",
                    path=path,
                    row=k + 1,
                )
            try:
                int(line[3])
            except ValueError:
                raise BedFormatError(
                    f".bim value {line[3]!r} is not a number", path=path, column="BP", row=k + 1
                ) from None
            return


def thin_positions(n: int, thin: float) -> np.ndarray:
    """Deterministic thinning: ``ceil(n * thin)`` evenly spaced positions ``floor(i / thin)``.

    ``thin = 1/k`` keeps every k-th SNP starting with the first.
    """
    if not (0.0 < thin <= 1.0):
        raise InputError(f"thin must be a fraction in (0, 1], got {thin!r}")
    if thin == 1.0 or n == 0:
        return np.arange(n, dtype=np.int64)
    m = int(np.ceil(n * thin - 1e-9))
    pos = np.floor(np.arange(m, dtype=np.float64) / thin + 1e-9).astype(np.int64)
    return np.unique(np.minimum(pos, n - 1))


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


_BIM_INDEXES: dict[tuple, BimIndex] = {}
_BIM_INDEXES_LOCK = threading.Lock()


def _bim_index(path: str | os.PathLike, stride: int) -> BimIndex:
    """:meth:`BimIndex.build`, remembered per file (path, inode, size, modification time): a fit and
    its test open the same .bed several times, and each index is one pass over the whole .bim.  A file
    modified in the last 2 s is indexed afresh (file times are coarser than a quick rewrite)."""
    try:
        st = os.stat(path)
    except OSError:
        return BimIndex.build(path, stride)  # raises the typed "not found"
    if time.time() - st.st_mtime < 2.0:
        return BimIndex.build(path, stride)
    key = (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns, stride)
    with _BIM_INDEXES_LOCK:
        hit = _BIM_INDEXES.get(key)
    if hit is None:
        hit = BimIndex.build(path, stride)
        with _BIM_INDEXES_LOCK:
            if len(_BIM_INDEXES) >= 16:
                _BIM_INDEXES.clear()
            _BIM_INDEXES[key] = hit
    return hit


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
