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

A stream pickles as its paths and options (the memory map is reopened on the other side), so a
task spec holding one can be shipped to a process pool or Dask worker.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

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


def _read_fields(path: Path, columns: Sequence[str], what: str) -> pl.DataFrame:
    """A whitespace-separated text file with exactly ``len(columns)`` fields per line, as strings."""
    if not path.exists():
        raise BedFormatError(f"{what} file not found", path=path)
    if path.stat().st_size == 0:
        return pl.DataFrame({c: pl.Series(c, [], dtype=pl.String) for c in columns})
    try:
        lines = pl.read_csv(path, has_header=False, separator="\x1f", quote_char=None,
                            schema={"line": pl.String}, comment_prefix=None,
                            truncate_ragged_lines=True, raise_if_empty=False)
    except Exception as exc:  # polars raises ComputeError etc. for unreadable bytes
        raise BedFormatError(f"cannot read {what} file: {exc}", path=path) from None
    lines = lines.filter(pl.col("line").str.strip_chars().str.len_bytes() > 0)
    pattern = r"^\s*" + r"\s+".join([r"(\S+)"] * len(columns)) + r"\s*$"
    parts = lines.select(pl.col("line").str.extract_groups(pattern).alias("f")).unnest("f")
    parts.columns = list(columns)
    bad = parts.select(pl.col(columns[0]).is_null().arg_true()).to_series()
    if len(bad):
        row = int(bad[0])
        n_fields = len(str(lines["line"][row]).split())
        raise BedFormatError(
            f"{what} line {row + 1} has {n_fields} whitespace-separated fields, expected "
            f"{len(columns)} ({' '.join(columns)})", path=path, row=row + 1)
    return parts


def read_bim(path: str | os.PathLike) -> pl.DataFrame:
    """A .bim as CHR (str), SNP, CM (f64), BP (i64), A1, A2; bad lines -> BedFormatError."""
    path = Path(path)
    df = _read_fields(path, BIM_COLUMNS, ".bim")
    out = []
    for col, dtype in (("CM", pl.Float64), ("BP", pl.Int64)):
        cast = df[col].cast(dtype, strict=False)
        bad = (cast.is_null() & df[col].is_not_null()).arg_true()
        if len(bad):
            row = int(bad[0])
            raise BedFormatError(f".bim value {df[col][row]!r} is not a number", path=path,
                                 column=col, row=row + 1)
        out.append(cast.alias(col))
    return df.with_columns(out).select(BIM_COLUMNS)


def read_fam(path: str | os.PathLike) -> pl.DataFrame:
    """A .fam as FID, IID, PAT, MAT (str), SEX (i64), PHENO (str, as written)."""
    path = Path(path)
    df = _read_fields(path, FAM_COLUMNS, ".fam")
    sex = df["SEX"].cast(pl.Int64, strict=False)
    bad = (sex.is_null() & df["SEX"].is_not_null()).arg_true()
    if len(bad):
        row = int(bad[0])
        raise BedFormatError(f".fam sex {df['SEX'][row]!r} is not an integer", path=path,
                             column="SEX", row=row + 1)
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
                    f"{len(BIM_COLUMNS)} ({' '.join(BIM_COLUMNS)})", path=path, row=k + 1)
            try:
                int(line[3])
            except ValueError:
                raise BedFormatError(f".bim value {line[3]!r} is not a number", path=path,
                                     column="BP", row=k + 1) from None
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


class BedStream:
    """Blocks of decoded SNPs from a PLINK .bed/.bim/.fam trio.

    Parameters
    ----------
    bed_path: the .bed file (or the common prefix); .bim and .fam sit beside it.
    snps: sorted, unique .bim row indices to keep (default all).
    thin: fraction in (0, 1] of the (selected) SNPs to keep, evenly spaced, deterministic.
    scale: ``"center"`` (mean-imputed, centred), ``"eigenstrat"`` (also / sqrt(2p(1-p))) or
        ``"raw"`` (dosage, NaN missing).
    count_a1: values count A1 alleles (the .bim 5th column), as bed-reader's default.
    dtype: float64 or float32 output.
    block_snps: SNPs per block; default from a 256 MB budget of decoded floats.
    """

    def __init__(self, bed_path: str | os.PathLike, *, snps: Sequence[int] | np.ndarray | None = None,
                 thin: float | None = None, scale: str = "center", count_a1: bool = True,
                 dtype=np.float64, block_snps: int | None = None,
                 memory_budget: int = DEFAULT_BLOCK_BYTES) -> None:
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
        self.fam = read_fam(self.fam_path)
        self.n_samples = self.fam.height
        # the .bim is only counted here (and its first line checked); it is parsed on first use of
        # :attr:`bim`, so opening a stream over millions of SNPs costs no per-SNP table
        self.n_snps_total = count_lines(self.bim_path, ".bim")
        _check_first_bim_line(self.bim_path)
        self._bim: pl.DataFrame | None = None
        self.bytes_per_snp = (self.n_samples + 3) // 4
        self._validate_bed()

        index = np.arange(self.n_snps_total, dtype=np.int64)
        if self._snps_arg is not None:
            s = self._snps_arg
            if s.ndim != 1:
                raise InputError("snps must be a 1-D array of .bim row indices")
            if len(s) and (s.min() < 0 or s.max() >= self.n_snps_total):
                bad = int(s[(s < 0) | (s >= self.n_snps_total)][0])
                raise InputError(f"SNP index {bad} is outside the .bim rows 0..{self.n_snps_total - 1}",
                                 path=self.bim_path)
            if len(s) > 1 and np.any(np.diff(s) <= 0):
                raise InputError("snps must be sorted and unique", path=self.bim_path)
            index = s
        if thin is not None:
            index = index[thin_positions(len(index), float(thin))]
        self.snp_index = np.ascontiguousarray(index, dtype=np.int64)
        self.n_snps = int(len(self.snp_index))

        if block_snps is None:
            per_snp = max(1, self.n_samples * self.dtype.itemsize)
            block_snps = max(1, self._memory_budget // per_snp)
        block_snps = int(block_snps)
        if block_snps < 1:
            raise InputError(f"block_snps must be >= 1, got {block_snps}")
        self.block_snps = max(1, min(block_snps, max(self.n_snps, 1)))
        self._packed = self._open_map()
        self._buffer: np.ndarray | None = None

    # -- validation / mapping -------------------------------------------------------------
    def _validate_bed(self) -> None:
        size = self.bed_path.stat().st_size
        with open(self.bed_path, "rb") as fh:
            head = fh.read(3)
        if len(head) < 3 or head[:2] != BED_MAGIC[:2]:
            raise BedFormatError(
                f"not a PLINK .bed file: first bytes {head.hex()!r}, expected {BED_MAGIC.hex()!r}",
                path=self.bed_path)
        if head[2] != BED_MAGIC[2]:
            raise BedFormatError(
                "individual-major .bed files are not supported (mode byte 0x00); convert with "
                "`plink --make-bed`", path=self.bed_path)
        expected = 3 + self.n_snps_total * self.bytes_per_snp
        if size != expected:
            raise BedFormatError(
                f".bed size {size} bytes does not match {self.n_snps_total} SNPs (.bim) x "
                f"{self.n_samples} samples (.fam): expected 3 + {self.n_snps_total} x "
                f"{self.bytes_per_snp} = {expected} bytes; the file is truncated or the .bim/.fam "
                "do not belong to it", path=self.bed_path)

    def _open_map(self) -> np.ndarray:
        if self.n_snps_total == 0 or self.bytes_per_snp == 0:
            return np.zeros((self.n_snps_total, self.bytes_per_snp), dtype=np.uint8)
        mm = np.memmap(self.bed_path, dtype=np.uint8, mode="r", offset=3,
                       shape=(self.n_snps_total, self.bytes_per_snp))
        return np.asarray(mm)

    # -- the .bim, parsed on first use ------------------------------------------------------------
    @property
    def bim(self) -> pl.DataFrame:
        """The selected .bim rows: CHR, SNP, CM, BP, A1, A2 (parsed once, on first access)."""
        if self._bim is None:
            full = read_bim(self.bim_path)
            if full.height != self.n_snps_total:  # pragma: no cover - counted the same lines
                raise BedFormatError(f".bim has {full.height} rows, counted {self.n_snps_total}",
                                     path=self.bim_path)
            self._bim = full if self.n_snps == self.n_snps_total else full[self.snp_index]
        return self._bim

    def bim_slice(self, start: int = 0, stop: int | None = None) -> pl.DataFrame:
        """The .bim rows of selected SNPs ``start:stop`` (e.g. those of one block)."""
        start, stop = self._check_range(start, stop)
        return self.bim.slice(start, stop - start)

    # -- pickling: ship paths and options, reopen the map -----------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_packed"] = None
        state["_buffer"] = None
        state["_bim"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._packed = self._open_map()

    def __repr__(self) -> str:
        return (f"BedStream({str(self.bed_path)!r}, n_samples={self.n_samples}, n_snps={self.n_snps}"
                f"/{self.n_snps_total}, scale={self.scale!r}, dtype={self.dtype.name}, "
                f"block_snps={self.block_snps})")

    def __len__(self) -> int:
        return self.n_snps

    def close(self) -> None:
        """Drop the memory map and buffer (the stream reopens them if used again)."""
        self._packed = None
        self._buffer = None

    def __enter__(self) -> "BedStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def n_blocks(self) -> int:
        return (self.n_snps + self.block_snps - 1) // self.block_snps

    def block_ranges(self, start: int = 0, stop: int | None = None) -> list[tuple[int, int]]:
        """The ``(start, stop)`` positions of the blocks :meth:`blocks` would yield."""
        start, stop = self._check_range(start, stop)
        return [(a, min(a + self.block_snps, stop)) for a in range(start, stop, self.block_snps)]

    def _check_range(self, start: int, stop: int | None) -> tuple[int, int]:
        stop = self.n_snps if stop is None else int(stop)
        start = int(start)
        if not (0 <= start <= stop <= self.n_snps):
            raise InputError(f"SNP range {start}:{stop} is outside 0:{self.n_snps}", path=self.bed_path)
        return start, stop

    # -- decoding -------------------------------------------------------------------------
    def read(self, start: int = 0, stop: int | None = None, out: np.ndarray | None = None) -> BedBlock:
        """Decode selected SNPs ``start:stop`` into ``out`` (a new array by default)."""
        start, stop = self._check_range(start, stop)
        k = stop - start
        if out is None:
            out = np.empty((self.n_samples, k), dtype=self.dtype, order="F")
        elif out.shape != (self.n_samples, k) or out.dtype != self.dtype or not out.flags.f_contiguous:
            raise InputError(
                f"out must be a Fortran-ordered {self.dtype.name} array of shape "
                f"({self.n_samples}, {k}), got {out.dtype} {out.shape}")
        if self._packed is None:
            self._packed = self._open_map()
        freq = np.empty(k, dtype=np.float64)
        nmiss = np.empty(k, dtype=np.int64)
        rows = self.snp_index[start:stop]
        decode_rows(self._packed, rows, self.n_samples, SCALE_CODES[self.scale], out, freq, nmiss,
                    count_a1=self.count_a1)
        return BedBlock(start, stop, out, freq, nmiss)

    def blocks(self, start: int = 0, stop: int | None = None) -> Iterator[BedBlock]:
        """Decoded blocks of ``block_snps`` SNPs covering ``start:stop`` once, in order.

        Each block's ``data`` is a view of one buffer reused by the next block.
        """
        ranges = self.block_ranges(start, stop)
        if not ranges:
            return
        if self._buffer is None or self._buffer.shape[1] < self.block_snps:
            self._buffer = np.empty((self.n_samples, self.block_snps), dtype=self.dtype, order="F")
        buf = self._buffer
        for a, b in ranges:
            yield self.read(a, b, out=buf[:, : b - a])

    def __iter__(self) -> Iterator[BedBlock]:
        return self.blocks()

    def read_all(self) -> np.ndarray:
        """The whole selection as one new ``(n_samples, n_snps)`` array (small data only)."""
        return self.read(0, self.n_snps).data


__all__ = ["BedStream", "BedBlock", "read_bim", "read_fam", "count_lines", "thin_positions", "BED_MAGIC"]
