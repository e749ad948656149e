"""Genotype sources for LFMM: a PLINK .bed read by :class:`polgen.io.bed.BedStream` (the one .bed
reader: validation, typed errors, SNP selection, thinning, blocks, .bim slices), or an in-memory
``(n_samples, n_snps)`` dosage array (NaN = missing) behind the same interface
(:class:`ArraySource`), which is also how R LEA's ``.lfmm`` / ``.geno`` files are read.  Both
yield :class:`polgen.io.bed.BedBlock` s of Fortran-ordered float64 columns, mean-imputed and
centred (optionally eigenstrat-scaled).

What LFMM uses of a source: ``n_samples``, ``n_snps``, ``sample_ids``, ``scale``,
``blocks(start, stop, block_snps=, parallel=)`` and ``bim_slice(start, stop)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from polgen.errors import InputError
from polgen.io.bed import BedBlock, BedStream, thin_positions
from polgen.io.pgen import PgenStream, pgen_path
from polgen.kernels.lfmm import impute_center_columns

#: LFMM scales (the .bed reader also has "raw", which LFMM never uses)
SCALES = ("center", "eigenstrat")
DEFAULT_BLOCK_BYTES = 64 << 20  # decoded float64 block budget per pass
CACHE_BLOCK_BYTES = 1 << 20  # half a typical per-core L2


def block_snps_for(n_samples: int, budget: int = DEFAULT_BLOCK_BYTES) -> int:
    """SNPs per decoded block so that one block stays within ``budget`` bytes."""
    return int(max(256, min(65536, budget // max(1, 8 * n_samples))))


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

    def __init__(
        self,
        Y: np.ndarray,
        *,
        snps: np.ndarray | None = None,
        scale: str = "center",
        block_snps: int | None = None,
        sample_ids: Sequence[str] | None = None,
        bim: pl.DataFrame | None = None,
    ) -> None:
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim != 2:
            raise InputError(f"genotype matrix must be 2-D (samples x SNPs), got shape {Y.shape}")
        self._Y = Y
        self.snp_index = np.arange(Y.shape[1], dtype=np.int64) if snps is None else np.asarray(snps, dtype=np.int64)
        self.n_samples = Y.shape[0]
        self.n_snps = int(self.snp_index.size)
        self.scale = scale
        self.block_snps = block_snps or block_snps_for(self.n_samples)
        self.sample_ids = None if sample_ids is None else [str(s) for s in sample_ids]
        self._bim = bim

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
        return pl.DataFrame(
            {
                "CHR": pl.repeat("0", k, eager=True),
                "SNP": "snp" + pl.Series(idx).cast(pl.String),
                "CM": np.zeros(k),
                "BP": pl.Series(idx + 1, dtype=pl.Int64),
                "A1": pl.repeat("A", k, eager=True),
                "A2": pl.repeat("B", k, eager=True),
            }
        )

    def blocks(
        self, start: int = 0, stop: int | None = None, *, block_snps: int | None = None, parallel: bool | None = None
    ) -> Iterator[BedBlock]:
        """Blocks of selected SNPs ``start:stop``, centred (and scaled) like a .bed's."""
        stop = self.n_snps if stop is None else stop
        code = 1 if self.scale == "eigenstrat" else 0
        bs = int(block_snps or self.block_snps)
        for s in range(start, stop, bs):
            e = min(stop, s + bs)
            yt = np.ascontiguousarray(self._Y[:, self.snp_index[s:e]].T)
            freq = np.empty(e - s)
            nmiss = np.empty(e - s, dtype=np.int64)
            impute_center_columns(yt, code, freq, nmiss)
            yield BedBlock(s, e, yt.T, freq, nmiss)


#: what LFMM streams genotypes from
Source = BedStream | ArraySource | PgenStream


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


LEA_SUFFIXES = (".lfmm", ".geno")


def read_lea_genotypes(path: str | os.PathLike) -> np.ndarray:
    """An R LEA genotype file as an (n_samples, n_snps) float64 array, missing (9 / -9) as NaN.

    ``.lfmm``: one line per sample, whitespace-separated values per SNP; ``.geno``: one line per
    SNP, one digit (0, 1, 2; 9 = missing) per sample.  Other values are an :class:`InputError`
    naming the line."""
    path = Path(path)
    if not path.is_file():
        raise InputError("LEA genotype file not found", path=path)
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except UnicodeDecodeError:
        raise InputError("not a text LEA genotype file", path=path) from None
    if not lines:
        raise InputError("LEA genotype file is empty", path=path)
    if path.suffix.lower() == ".geno":
        widths = {len(ln) for ln in lines}
        if len(widths) != 1:
            bad = next(i for i, ln in enumerate(lines) if len(ln) != len(lines[0]))
            raise InputError("lines of a .geno file must all have one digit per sample", path=path, row=bad + 1)
        raw = np.frombuffer("".join(lines).encode(), dtype=np.uint8).reshape(len(lines), -1)
        Y = raw.astype(np.float64) - ord("0")
        Y = np.ascontiguousarray(Y.T)
    else:
        rows = [ln.split() for ln in lines]
        if len({len(r) for r in rows}) != 1:
            bad = next(i for i, r in enumerate(rows) if len(r) != len(rows[0]))
            raise InputError("rows of a .lfmm file must all have one value per SNP", path=path, row=bad + 1)
        try:
            Y = np.array(rows, dtype=np.float64)
        except ValueError:
            raise InputError("a .lfmm file holds numbers only", path=path) from None
    Y[(Y == 9) | (Y == -9)] = np.nan
    bad_cells = ~np.isnan(Y) & ~np.isin(Y, (0.0, 1.0, 2.0))
    if bad_cells.any():
        i, j = np.argwhere(bad_cells)[0]
        line = j + 1 if path.suffix.lower() == ".geno" else i + 1
        raise InputError(f"genotype value {Y[i, j]!r} (allowed: 0, 1, 2, 9 = missing)", path=path, row=int(line))
    return Y


def open_source(obj, *, snps=None, thin=None, scale="center", block_snps=None) -> Source:
    """A source for a .bed path (or prefix), a ``BedStream``/``ArraySource``, or a dosage array.

    ``snps`` (.bim row indices, or array columns) are sorted and deduplicated; ``thin`` keeps an
    evenly spaced fraction of them (:func:`polgen.io.bed.thin_positions`).  A given ``BedStream``
    is used as it is when it fits (float64, same scale, no new selection), else reopened with its
    SNP and sample selections and allele coding.
    """
    if scale not in SCALES:
        raise InputError(f"scale must be 'center' or 'eigenstrat', got {scale!r}")
    if isinstance(obj, BedStream):
        if snps is None and thin is None and scale == obj.scale and obj.dtype == np.float64:
            return obj
        if snps is None and not obj.contiguous:  # keep the stream's own selection
            snps = obj.snp_index
        return BedStream(
            obj.bed_path,
            snps=None if snps is None else np.unique(np.asarray(snps, dtype=np.int64)),
            samples=obj.sample_index,
            thin=thin,
            scale=scale,
            count_a1=obj.count_a1,
            block_snps=block_snps or None,
        )
    if isinstance(obj, ArraySource):
        if snps is None and thin is None and scale == obj.scale:
            return obj
        obj = obj._Y
    if isinstance(obj, PgenStream):
        if snps is None and thin is None and scale == obj.scale:
            return obj
        if snps is None:
            snps = obj.snp_index
        obj = obj.pgen_path
    pgen = pgen_path(obj)
    if pgen is not None:  # PLINK 2 (the optional pgenlib)
        return PgenStream(pgen, snps=snps, thin=thin, scale=scale, block_snps=block_snps)
    if isinstance(obj, (str, os.PathLike)) and str(obj).lower().endswith(LEA_SUFFIXES):
        obj = read_lea_genotypes(obj)  # R LEA's text formats: small data, read whole
    path = _bed_path(obj)
    if path is not None:
        if snps is not None:
            snps = np.unique(np.asarray(snps, dtype=np.int64))
        return BedStream(path, snps=snps, thin=thin, scale=scale, block_snps=block_snps or None)
    if isinstance(obj, np.ndarray):
        if thin is not None:
            snps = thin_index(obj.shape[1], thin)
        return ArraySource(obj, snps=snps, scale=scale, block_snps=block_snps)
    raise InputError(f"genotypes must be a .bed path or a (samples x SNPs) array, got {type(obj).__name__}")


def source_spec(src: Source):
    """What a task ships to a worker: the path of a .bed read whole as its defaults read it
    (reopened, and cached, there), else the source itself (a stream pickles as paths + options)."""
    if (
        isinstance(src, BedStream)
        and src.contiguous
        and src.sample_index is None
        and src.count_a1
        and src.scale == "center"
    ):
        return str(src.bed_path)
    return src


def source_path(src: Source) -> str | None:
    """The .bed / .pgen path of a source (None for an in-memory one), recorded in parameters."""
    if isinstance(src, PgenStream):
        return str(src.pgen_path)
    return str(src.bed_path) if isinstance(src, BedStream) else None


def genotypes_path(obj) -> str | None:
    """The .bed / .pgen path behind a genotypes argument (a path or a stream), None for in-memory ones."""
    if isinstance(obj, BedStream):
        return str(obj.bed_path)
    if isinstance(obj, PgenStream):
        return str(obj.pgen_path)
    if isinstance(obj, (str, os.PathLike)):
        return os.fspath(obj)
    return None


def thin_index(p: int, rate: float) -> np.ndarray:
    """The same deterministic, evenly spaced thinning as ``BedStream(thin=rate)``."""
    if not (0 < rate <= 1):
        raise InputError(f"est_rate must be in (0, 1], got {rate}")
    return thin_positions(p, float(rate))
