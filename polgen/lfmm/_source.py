"""Genotype sources for LFMM: a PLINK .bed decoded with IO's kernel (see :class:`BedSource`), or
an in-memory ``(n_samples, n_snps)`` dosage array (NaN = missing).  Both yield Fortran-ordered
float64 blocks that are mean-imputed and centred (optionally eigenstrat-scaled)."""

from __future__ import annotations

import mmap
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import polars as pl

from polgen.errors import BedFormatError, InputError

DEFAULT_BLOCK_BYTES = 64 << 20  # decoded float64 block budget per pass


@dataclass
class Block:
    start: int
    stop: int
    data: np.ndarray  # (n, stop - start) float64, Fortran order; may be reused between blocks
    freq: np.ndarray
    n_miss: np.ndarray


def block_snps_for(n_samples: int, budget: int = DEFAULT_BLOCK_BYTES) -> int:
    """SNPs per decoded block so that one block stays within ``budget`` bytes."""
    return int(max(256, min(65536, budget // max(1, 8 * n_samples))))


_MAP_LOCK = threading.Lock()
CACHE_BLOCK_BYTES = 1 << 20  # half a typical per-core L2


def cache_block_snps(n_samples: int) -> int:
    """SNPs per decoded block small enough to stay in cache between decode and use."""
    return int(max(8, min(4096, CACHE_BLOCK_BYTES // max(1, 8 * n_samples))))


def split_range(start: int, stop: int, parts: int) -> list[tuple[int, int]]:
    """``start:stop`` cut into at most ``parts`` contiguous non-empty pieces."""
    parts = max(1, min(parts, stop - start))
    edges = np.linspace(start, stop, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 16))


class ArraySource:
    """An in-memory dosage matrix viewed as a genotype source (tests, small data)."""

    def __init__(self, Y: np.ndarray, *, snps: np.ndarray | None = None, scale: str = "center",
                 block_snps: int | None = None, sample_ids: Sequence[str] | None = None,
                 bim: pl.DataFrame | None = None) -> None:
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim != 2:
            raise InputError(f"genotype matrix must be 2-D (samples x SNPs), got shape {Y.shape}")
        self._Y = Y
        self.snp_index = (np.arange(Y.shape[1], dtype=np.int64) if snps is None
                          else np.asarray(snps, dtype=np.int64))
        self.n_samples = Y.shape[0]
        self.n_snps = int(self.snp_index.size)
        self.scale = scale
        self.block_snps = block_snps or block_snps_for(self.n_samples)
        self.sample_ids = None if sample_ids is None else [str(s) for s in sample_ids]
        self._bim = bim
        self.path = None

    @property
    def bim(self) -> pl.DataFrame:
        return self.bim_slice(0, self.n_snps)

    def bim_slice(self, start: int, stop: int) -> pl.DataFrame:
        """Rows of the given ``bim`` for the selected SNPs, or stand-in rows: CHR "0", SNP
        ``snp<column>``, BP column + 1, alleles A/B (A1 is the counted allele)."""
        idx = self.snp_index[start:stop]
        if self._bim is not None:
            return self._bim[idx.tolist()]
        k = idx.size
        return pl.DataFrame({
            "CHR": pl.repeat("0", k, eager=True), "SNP": "snp" + pl.Series(idx).cast(pl.String),
            "CM": np.zeros(k), "BP": pl.Series(idx + 1, dtype=pl.Int64),
            "A1": pl.repeat("A", k, eager=True), "A2": pl.repeat("B", k, eager=True),
        })

    def blocks(self, start: int = 0, stop: int | None = None, block_snps: int | None = None,
               parallel: bool | None = False) -> Iterator[Block]:
        from polgen.kernels.lfmm import impute_center_columns

        stop = self.n_snps if stop is None else stop
        code = 1 if self.scale == "eigenstrat" else 0
        bs = int(block_snps or self.block_snps)
        for s in range(start, stop, bs):
            e = min(stop, s + bs)
            yt = np.ascontiguousarray(self._Y[:, self.snp_index[s:e]].T)
            freq = np.empty(e - s)
            nmiss = np.empty(e - s, dtype=np.int64)
            impute_center_columns(yt, code, freq, nmiss)
            yield Block(s, e, yt.T, freq, nmiss)


class BedSource:
    """A PLINK .bed read in blocks with IO's decode kernel, holding no per-SNP table in memory.

    :class:`polgen.io.bed.BedStream` parses the whole .bim into a DataFrame (about 170 B and 2 us
    per SNP here: +330 MB and 4 s for 2M SNPs), which would make LFMM's memory grow with p.  This
    source validates the trio the same way (magic bytes, mode, size against the .bim line count
    and the .fam), memory-maps the genotypes, decodes blocks with
    :func:`polgen.kernels.bed_decode.decode_rows` (mean-imputed, centred) and reads the .bim rows
    of a block only when the output needs them, through a sparse index of line offsets.
    """

    _STRIDE = 4096  # .bim lines between recorded byte offsets

    def __init__(self, bed: str | os.PathLike, *, snps: np.ndarray | None = None, thin: float | None = None,
                 scale: str = "center", block_snps: int | None = None) -> None:
        from polgen.io.bed import BED_MAGIC, _resolve_paths, read_fam, thin_positions

        self.bed_path, self.bim_path, self.fam_path = (Path(p) for p in _resolve_paths(bed))
        self.path = str(self.bed_path)
        self.scale = scale
        if not self.bed_path.exists():
            raise BedFormatError(".bed file not found", path=self.bed_path)
        if not self.bim_path.exists():
            raise BedFormatError(".bim file not found", path=self.bim_path)
        self.fam = read_fam(self.fam_path)
        self.sample_ids = self.fam["IID"].cast(pl.String).to_list()
        self.n_samples = int(self.fam.height)
        self.n_snps_total, self._offsets = _index_lines(self.bim_path, self._STRIDE)
        self.bytes_per_snp = (self.n_samples + 3) // 4
        size = self.bed_path.stat().st_size
        with open(self.bed_path, "rb") as fh:
            head = fh.read(3)
        if len(head) < 3 or head[:2] != BED_MAGIC[:2]:
            raise BedFormatError(f"not a PLINK .bed file: first bytes {head.hex()!r}, expected "
                                 f"{BED_MAGIC.hex()!r}", path=self.bed_path)
        if head[2] != BED_MAGIC[2]:
            raise BedFormatError("individual-major .bed files are not supported (mode byte 0x00); "
                                 "convert with `plink --make-bed`", path=self.bed_path)
        expected = 3 + self.n_snps_total * self.bytes_per_snp
        if size != expected:
            raise BedFormatError(
                f".bed size {size} bytes does not match {self.n_snps_total} SNPs (.bim) x "
                f"{self.n_samples} samples (.fam): expected {expected} bytes; the file is truncated "
                "or the .bim/.fam do not belong to it", path=self.bed_path)
        index = np.arange(self.n_snps_total, dtype=np.int64)
        if snps is not None:
            s = np.asarray(snps, dtype=np.int64)
            if s.size and (s.min() < 0 or s.max() >= self.n_snps_total):
                raise InputError(f"SNP index outside the .bim rows 0..{self.n_snps_total - 1}",
                                 path=self.bim_path)
            index = np.unique(s)
        if thin is not None:
            index = index[thin_positions(len(index), float(thin))]
        self.snp_index = np.ascontiguousarray(index)
        self.n_snps = int(index.size)
        self.contiguous = snps is None and thin is None
        self.block_snps = int(block_snps or block_snps_for(self.n_samples))
        self._packed = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_packed"] = None
        state["_mm"] = None
        return state

    def _map(self) -> np.ndarray:
        with _MAP_LOCK:
            return self._map_locked()

    def _map_locked(self) -> np.ndarray:
        if self._packed is None:
            if self.n_snps_total == 0 or self.bytes_per_snp == 0:
                self._mm = None
                self._packed = np.zeros((self.n_snps_total, self.bytes_per_snp), dtype=np.uint8)
            else:
                with open(self.bed_path, "rb") as fh:
                    self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                self._packed = np.frombuffer(self._mm, dtype=np.uint8, offset=3,
                                             count=self.n_snps_total * self.bytes_per_snp
                                             ).reshape(self.n_snps_total, self.bytes_per_snp)
        return self._packed

    def _release(self, first_row: int, last_row: int) -> None:
        """Drop the mapped pages of rows ``first_row..last_row`` from this process's resident set
        (the page cache keeps them), so RSS does not grow with the file as it is streamed."""
        mm = getattr(self, "_mm", None)
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

    @property
    def bim(self) -> pl.DataFrame:
        return self.bim_slice(0, self.n_snps)

    def bim_slice(self, start: int, stop: int) -> pl.DataFrame:
        """.bim rows of the selected SNPs ``start:stop`` (CHR, SNP, CM, BP, A1, A2)."""
        if not self.contiguous:
            rows = self.snp_index[start:stop]
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            return _read_bim_lines(self.bim_path, self._offsets, self._STRIDE, lo, hi)[(rows - lo).tolist()]
        return _read_bim_lines(self.bim_path, self._offsets, self._STRIDE, start, stop)

    def blocks(self, start: int = 0, stop: int | None = None, block_snps: int | None = None,
               parallel: bool | None = False) -> Iterator[Block]:
        """Decoded blocks (a view of one reused buffer).  Decoding is serial by default: callers
        parallelise over SNP ranges with threads (numba's and OpenBLAS's thread pools fighting
        over the cores was measured 10-20x slower on a loaded machine)."""
        from polgen.kernels.bed_decode import SCALE_CODES, decode_rows

        stop = self.n_snps if stop is None else stop
        bs = int(block_snps or self.block_snps)
        packed = self._map()
        code = SCALE_CODES[self.scale]
        buf = np.empty((self.n_samples, min(bs, max(stop - start, 1))), order="F")
        freq_buf = np.empty(bs)
        nmiss_buf = np.empty(bs, dtype=np.int64)
        for s in range(start, stop, bs):
            e = min(stop, s + bs)
            out = buf[:, : e - s]
            freq = freq_buf[: e - s]
            nmiss = nmiss_buf[: e - s]
            rows = self.snp_index[s:e]
            decode_rows(packed, rows, self.n_samples, code, out, freq, nmiss, parallel=parallel)
            self._release(int(rows[0]), int(rows[-1]))
            yield Block(s, e, out, freq, nmiss)


def _index_lines(path: Path, stride: int) -> tuple[int, np.ndarray]:
    """Number of lines of a text file and the byte offset of every ``stride``-th line."""
    offsets = [0]
    count = 0
    pos = 0
    last = b""
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(16 << 20)
            if not chunk:
                break
            nl = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
            # line numbers (1-based) ending at these newlines: count+1 .. count+len(nl)
            ends = count + np.arange(1, len(nl) + 1)  # lines completed at each newline
            take = nl[(ends % stride) == 0]
            offsets.extend((pos + take + 1).tolist())
            count += len(nl)
            pos += len(chunk)
            last = chunk[-1:]
    if pos and last != b"\n":
        count += 1
    if offsets and offsets[-1] >= pos and len(offsets) > 1:
        offsets.pop()
    return count, np.asarray(offsets, dtype=np.int64)


def _read_bim_lines(path: Path, offsets: np.ndarray, stride: int, lo: int, hi: int) -> pl.DataFrame:
    import io

    if hi <= lo:
        return pl.DataFrame(schema={"CHR": pl.String, "SNP": pl.String, "CM": pl.Float64, "BP": pl.Int64,
                                    "A1": pl.String, "A2": pl.String})
    k0 = lo // stride
    skip = lo - k0 * stride
    with open(path, "rb") as fh:
        fh.seek(int(offsets[k0]))
        k1 = -(-hi // stride)
        if k1 < len(offsets):
            raw = fh.read(int(offsets[k1] - offsets[k0]))
        else:
            raw = fh.read()
    schema = {"CHR": pl.String, "SNP": pl.String, "CM": pl.String, "BP": pl.String, "A1": pl.String,
              "A2": pl.String}
    first = raw[: raw.find(b"\n")] if b"\n" in raw else raw
    sep = next((c for c in ("\t", " ") if len(first.split(c.encode())) == 6), None)
    parts = None
    if sep is not None:  # the usual single-tab (plink) or single-space layout: a fast CSV read
        try:
            parts = pl.read_csv(io.BytesIO(raw), has_header=False, separator=sep, quote_char=None,
                                schema=schema, skip_rows=skip, n_rows=hi - lo)
        except pl.exceptions.PolarsError:
            parts = None
    if parts is None:  # any whitespace between fields
        lines = pl.read_csv(io.BytesIO(raw), has_header=False, separator="\x1f", quote_char=None,
                            schema={"line": pl.String}, truncate_ragged_lines=True)["line"]
        lines = lines.slice(skip, hi - lo)
        parts = (lines.str.strip_chars().str.replace_all(r"\s+", " ").str.split_exact(" ", 5)
                 .struct.rename_fields(list(schema)).struct.unnest())
    if parts.height != hi - lo or parts["A2"].null_count():
        bad = int(parts["A2"].is_null().arg_true()[0]) if parts["A2"].null_count() else parts.height
        raise BedFormatError("malformed .bim line (expected 6 whitespace-separated fields)", path=path,
                             row=lo + bad + 1)
    try:
        return parts.with_columns(pl.col("CM").cast(pl.Float64), pl.col("BP").cast(pl.Int64))
    except pl.exceptions.PolarsError as exc:
        raise BedFormatError(f"malformed .bim position: {exc}", path=path, row=lo + 1) from None


def _bed_path(obj) -> str | None:
    if isinstance(obj, (str, os.PathLike)):
        p = str(obj)
        if p.endswith((".bim", ".fam")):
            p = p[:-4] + ".bed"
        elif not p.endswith(".bed"):
            p = p + ".bed"
        if not Path(p).exists():
            raise InputError("PLINK .bed file not found", path=p)
        return p
    return None


def open_source(obj, *, snps=None, thin=None, scale="center", block_snps=None):
    """A source for a .bed path (or prefix), an ``ArraySource``/``BedSource``, or a dosage array."""
    if scale not in ("center", "eigenstrat"):
        raise InputError(f"scale must be 'center' or 'eigenstrat', got {scale!r}")
    if isinstance(obj, (ArraySource, BedSource)):
        if snps is None and thin is None and scale == obj.scale:
            return obj
        obj = obj._Y if isinstance(obj, ArraySource) else obj.path
    path = _bed_path(obj)
    if path is not None:
        return BedSource(path, snps=snps, thin=thin, scale=scale, block_snps=block_snps)
    if isinstance(obj, np.ndarray):
        if thin is not None:
            snps = thin_index(obj.shape[1], thin)
        return ArraySource(obj, snps=snps, scale=scale, block_snps=block_snps)
    raise InputError(f"genotypes must be a .bed path or a (samples x SNPs) array, got {type(obj).__name__}")


def thin_index(p: int, rate: float) -> np.ndarray:
    """The same deterministic, evenly spaced thinning as ``BedStream(thin=rate)``."""
    from polgen.io.bed import thin_positions

    if not (0 < rate <= 1):
        raise InputError(f"est_rate must be in (0, 1], got {rate}")
    return thin_positions(p, float(rate))
