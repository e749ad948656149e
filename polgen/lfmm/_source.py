"""Genotype sources for LFMM: a PLINK .bed streamed through :class:`polgen.io.bed.BedStream`, or
an in-memory ``(n_samples, n_snps)`` dosage array (NaN = missing).  Both yield Fortran-ordered
float64 blocks that are mean-imputed and centred (optionally eigenstrat-scaled)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import polars as pl

from polgen.errors import InputError

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
        if self._bim is not None:
            return self._bim[self.snp_index.tolist()] if self.n_snps != self._bim.height else self._bim
        idx = self.snp_index
        return pl.DataFrame({
            "CHR": pl.Series(["0"] * idx.size, dtype=pl.String),
            "SNP": pl.Series([f"snp{i}" for i in idx], dtype=pl.String),
            "CM": np.zeros(idx.size),
            "BP": pl.Series(idx + 1, dtype=pl.Int64),
            "A1": pl.Series(["A"] * idx.size, dtype=pl.String),
            "A2": pl.Series(["B"] * idx.size, dtype=pl.String),
        })

    def bim_slice(self, start: int, stop: int) -> pl.DataFrame:
        return self.bim.slice(start, stop - start)

    def blocks(self, start: int = 0, stop: int | None = None) -> Iterator[Block]:
        from polgen.kernels.lfmm import impute_center_columns

        stop = self.n_snps if stop is None else stop
        code = 1 if self.scale == "eigenstrat" else 0
        for s in range(start, stop, self.block_snps):
            e = min(stop, s + self.block_snps)
            yt = np.ascontiguousarray(self._Y[:, self.snp_index[s:e]].T)
            freq = np.empty(e - s)
            nmiss = np.empty(e - s, dtype=np.int64)
            impute_center_columns(yt, code, freq, nmiss)
            yield Block(s, e, yt.T, freq, nmiss)


class BedSource:
    """A PLINK .bed streamed through :class:`polgen.io.bed.BedStream`."""

    def __init__(self, bed: str | os.PathLike, *, snps: np.ndarray | None = None, thin: float | None = None,
                 scale: str = "center", block_snps: int | None = None) -> None:
        from polgen.io.bed import BedStream

        self.path = str(bed)
        self.scale = scale
        self._stream = BedStream(self.path, snps=snps, thin=thin, scale=scale,
                                 block_snps=block_snps)
        self.n_samples = int(self._stream.n_samples)
        self.n_snps = int(self._stream.n_snps)
        self.snp_index = np.asarray(self._stream.snp_index, dtype=np.int64)
        fam = self._stream.fam
        self.fam = fam
        self.sample_ids = fam["IID"].cast(pl.String).to_list()

    @property
    def bim(self) -> pl.DataFrame:
        return self._stream.bim

    def bim_slice(self, start: int, stop: int) -> pl.DataFrame:
        return self._stream.bim.slice(start, stop - start)

    def blocks(self, start: int = 0, stop: int | None = None) -> Iterator[Block]:
        for blk in self._stream.blocks(start, stop):
            yield Block(int(blk.start), int(blk.stop), blk.data, np.asarray(blk.freq, dtype=np.float64),
                        np.asarray(blk.n_miss, dtype=np.int64))


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
