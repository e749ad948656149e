"""PLINK 2 ``.pgen`` genotypes (with ``.pvar`` / ``.psam``) as a genotype stream, read by ``pgenlib``.

``pgenlib`` (plink2's own Python reader) is the optional extra ``pgen``
(``pip install "polgen[pgen]"``); it is imported only when a .pgen is opened, and its absence is a
:class:`~polgen.errors.MissingExtraError`.

The stream counts the **ALT** allele of each biallelic variant, which is the .bim ``A1`` of a
.bed converted by ``plink2 --bfile x --make-pgen`` (plink2 reads A1 as ALT, A2 as REF), so a .pgen
gives the same dosages, and the same LFMM results, as the .bed it was made from.  ``bim_slice``
therefore reports ``A1 = ALT`` and ``A2 = REF``.  Multi-allelic variants are an
:class:`~polgen.errors.InputError` naming the .pvar row.

It offers what LFMM uses of :class:`polgen.io.bed.BedStream`: ``n_samples``, ``n_snps``,
``sample_ids``, ``fam`` (FID / IID), ``scale``, ``blocks(start, stop, block_snps=, parallel=)`` of
mean-imputed, centred (or eigenstrat-scaled) float64 columns, ``raw(start, stop)`` (dosages, NaN
missing) and ``bim_slice``.  A pgenlib reader is not shareable between threads: each thread opens
its own (the stream pickles as its path and options).
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from polgen.errors import InputError, MissingExtraError
from polgen.io.bed import BedBlock, read_bim, read_fam, thin_positions
from polgen.kernels.lfmm import impute_center_columns

PGEN_SUFFIXES = (".pgen", ".pvar", ".psam")
_BIM_SCHEMA = {"CHR": pl.String, "SNP": pl.String, "CM": pl.Float64, "BP": pl.Int64, "A1": pl.String, "A2": pl.String}


def _pgenlib() -> Any:
    try:
        pgenlib = importlib.import_module("pgenlib")
    except ImportError as exc:
        raise MissingExtraError("reading .pgen files needs pgenlib: pip install 'polgen[pgen]'", extra="pgen") from exc
    return pgenlib


def pgen_path(obj) -> str | None:
    """The .pgen path of a path / prefix naming a PLINK 2 fileset (``x.pgen``, ``x.pvar``, ``x.psam``,
    or ``x`` with ``x.pgen`` and no ``x.bed``), else None."""
    if not isinstance(obj, (str, os.PathLike)):
        return None
    p = os.fspath(obj)
    low = p.lower()
    if low.endswith(PGEN_SUFFIXES):
        return p[:-5] + ".pgen"
    if not low.endswith(".bed") and not Path(p + ".bed").exists() and Path(p + ".pgen").exists():
        return p + ".pgen"
    return None


def _header_lines(path: Path) -> tuple[int, list[str] | None]:
    """Lines starting with ``##`` to skip, and the ``#``-header's column names (None: headerless)."""
    skip = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("##"):
                skip += 1
                continue
            if line.startswith("#"):
                return skip, line[1:].split()
            return skip, None
    return skip, None


def _read_table(path: Path, what: str) -> tuple[pl.DataFrame, list[str] | None]:
    if not path.is_file():
        raise InputError(f"PLINK 2 {what} file not found", path=path)
    skip, header = _header_lines(path)
    try:
        df = pl.read_csv(
            path,
            separator="\t",
            has_header=False,
            skip_rows=skip + (header is not None),
            infer_schema=False,
            truncate_ragged_lines=False,
        )
    except Exception as exc:  # polars raises several error types for malformed text
        raise InputError(f"cannot read the {what} file: {exc}", path=path) from None
    return df, header


def read_pvar(path: str | os.PathLike) -> pl.DataFrame:
    """A .pvar (header ``#CHROM POS ID REF ALT ...``, or headerless .bim column order) as the .bim
    columns ``CHR, SNP, CM, BP, A1 (= ALT), A2 (= REF)``."""
    path = Path(path)
    df, header = _read_table(path, ".pvar")
    if header is None:  # the .bim layout
        bim = read_bim(path)
        df = bim.rename({"CHR": "CHROM", "SNP": "ID", "BP": "POS", "A1": "ALT", "A2": "REF"})
        cols = {c: c for c in df.columns}
    else:
        header = [h.upper() for h in header]
        need = [c for c in ("CHROM", "POS", "ID", "REF", "ALT") if c not in header]
        if need or len(header) != df.width:
            raise InputError(f".pvar header lacks {need or 'matching columns'}", path=path)
        cols = {h: c for h, c in zip(header, df.columns)}
    cm = df[cols["CM"]].cast(pl.Float64, strict=False) if "CM" in cols else pl.repeat(0.0, df.height, eager=True)
    out = pl.DataFrame(
        {
            "CHR": df[cols["CHROM"]],
            "SNP": df[cols["ID"]],
            "CM": cm,
            "BP": df[cols["POS"]].cast(pl.Int64, strict=False),
            "A1": df[cols["ALT"]],
            "A2": df[cols["REF"]],
        }
    )
    bad = out["BP"].is_null().arg_true()
    if len(bad):
        row = int(bad[0])
        raise InputError(
            f".pvar position {df[cols['POS']][row]!r} is not an integer", path=path, column="POS", row=row + 1
        )
    multi = out["A1"].str.contains(",").arg_true()
    if len(multi):
        row = int(multi[0])
        raise InputError(
            f"variant {out['SNP'][row]!r} is multi-allelic (ALT {out['A1'][row]!r}); split it first "
            "(plink2 --max-alleles 2 or bcftools norm -m-)",
            path=path,
            row=row + 1,
        )
    return out


def read_psam(path: str | os.PathLike) -> pl.DataFrame:
    """A .psam (``#FID IID ...`` or ``#IID ...``) or a .fam as ``FID, IID`` strings."""
    path = Path(path)
    if path.suffix.lower() == ".fam" or _header_lines(path)[1] is None:  # the .fam layout
        return read_fam(path).select(pl.col("FID").cast(pl.String), pl.col("IID").cast(pl.String))
    df, header = _read_table(path, ".psam")
    assert header is not None
    header = [h.upper() for h in header]
    if "IID" not in header or len(header) != df.width:
        raise InputError(".psam header has no IID column (or a row has another number of fields)", path=path)
    iid = df[df.columns[header.index("IID")]]
    fid = df[df.columns[header.index("FID")]] if "FID" in header else iid
    return pl.DataFrame({"FID": fid, "IID": iid})


class PgenStream:
    """A .pgen fileset read in blocks of SNPs (see the module docs).

    ``snps``: sorted unique 0-based .pvar rows to read; ``thin``: keep an evenly spaced fraction
    (:func:`polgen.io.bed.thin_positions`, as ``BedStream``); ``scale``: ``"center"``,
    ``"eigenstrat"`` or ``"raw"``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        snps: np.ndarray | None = None,
        thin: float | None = None,
        scale: str = "center",
        block_snps: int | None = None,
    ) -> None:
        self._pgenlib = _pgenlib()
        self.pgen_path = Path(pgen_path(path) or path)
        if not self.pgen_path.is_file():
            raise InputError("PLINK 2 .pgen file not found", path=self.pgen_path)
        if scale not in ("center", "eigenstrat", "raw"):
            raise InputError(f"scale must be 'center', 'eigenstrat' or 'raw', got {scale!r}")
        self.pvar_path = self.pgen_path.with_suffix(".pvar")
        psam = self.pgen_path.with_suffix(".psam")
        self.psam_path = psam if psam.exists() else self.pgen_path.with_suffix(".fam")
        self.fam = read_psam(self.psam_path)
        self._pvar: pl.DataFrame | None = None
        self.n_samples = self.fam.height
        self.sample_ids = self.fam["IID"].to_list()
        self.sample_index = None
        self.scale = scale
        self.count_a1 = True
        self.block_snps = int(block_snps or max(256, min(65536, (64 << 20) // max(1, 8 * self.n_samples))))
        reader = self._open()
        if reader.get_raw_sample_ct() != self.n_samples:
            raise InputError(
                f"the .pgen holds {reader.get_raw_sample_ct()} samples but {self.psam_path.name} lists "
                f"{self.n_samples}",
                path=self.pgen_path,
            )
        self.n_variants = int(reader.get_variant_ct())
        self._local = threading.local()
        self._local.reader = reader
        if snps is not None:
            idx = np.unique(np.asarray(snps, dtype=np.int64))
            if idx.size and (idx[0] < 0 or idx[-1] >= self.n_variants):
                raise InputError(f"SNP index out of range (the .pgen has {self.n_variants} variants)")
            self.snp_index = idx
        else:
            self.snp_index = np.arange(self.n_variants, dtype=np.int64)
        if thin is not None:
            self.snp_index = self.snp_index[thin_positions(self.snp_index.size, float(thin))]
        self.n_snps = int(self.snp_index.size)

    # a pgenlib reader is neither picklable nor thread-safe: one per thread, reopened after pickling
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_local", None)
        state.pop("_pgenlib", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pgenlib = _pgenlib()
        self._local = threading.local()

    def _open(self):
        try:
            return self._pgenlib.PgenReader(os.fsencode(self.pgen_path), raw_sample_ct=self.n_samples)
        except Exception as exc:  # pgenlib raises RuntimeError with plink2's message
            raise InputError(f"cannot read the .pgen file: {exc}", path=self.pgen_path) from None

    def _reader(self):
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = self._open()
        return reader

    @property
    def bim(self) -> pl.DataFrame:
        if self._pvar is None:
            pvar = read_pvar(self.pvar_path)
            if pvar.height != self.n_variants:
                raise InputError(
                    f"the .pvar lists {pvar.height} variants but the .pgen holds {self.n_variants}", path=self.pvar_path
                )
            self._pvar = pvar
        return self._pvar

    def bim_slice(self, start: int = 0, stop: int | None = None) -> pl.DataFrame:
        """The .pvar rows of selected SNPs ``start:stop`` as .bim columns (A1 = ALT, A2 = REF)."""
        stop = self.n_snps if stop is None else stop
        idx = self.snp_index[start:stop]
        if idx.size == 0:
            return pl.DataFrame(schema=_BIM_SCHEMA)
        if idx[-1] - idx[0] + 1 == idx.size:
            return self.bim.slice(int(idx[0]), int(idx.size))
        return self.bim[idx.tolist()]

    def _codes(self, start: int, stop: int) -> np.ndarray:
        """ALT counts of selected SNPs ``start:stop``, ``(k, n)`` int8, -9 missing."""
        k = stop - start
        out = np.empty((k, self.n_samples), dtype=np.int8)
        if k == 0:
            return out
        idx = self.snp_index[start:stop]
        reader = self._reader()
        if idx[-1] - idx[0] + 1 == k:
            reader.read_range(int(idx[0]), int(idx[-1]) + 1, out)
        else:
            reader.read_list(np.ascontiguousarray(idx, dtype=np.uint32), out)
        return out

    def raw(self, start: int, stop: int) -> np.ndarray:
        """Dosages (ALT counts) of selected SNPs ``start:stop``: ``(n, k)`` float64 Fortran, NaN missing."""
        g = self._codes(start, stop)
        y = g.astype(np.float64)
        y[g < 0] = np.nan
        return np.asfortranarray(y.T)

    def blocks(
        self, start: int = 0, stop: int | None = None, *, block_snps: int | None = None, parallel: bool | None = None
    ) -> Iterator[BedBlock]:
        """Blocks of selected SNPs ``start:stop``: mean-imputed, centred (eigenstrat: scaled) float64
        columns as :meth:`polgen.io.bed.BedStream.blocks` gives for the .bed of the same calls."""
        stop = self.n_snps if stop is None else stop
        bs = int(block_snps or self.block_snps)
        for s in range(start, stop, bs):
            e = min(stop, s + bs)
            g = self._codes(s, e)
            yt = g.astype(np.float64)
            yt[g < 0] = np.nan
            freq = np.empty(e - s)
            nmiss = np.empty(e - s, dtype=np.int64)
            if self.scale == "raw":
                seen = g >= 0
                nmiss[:] = self.n_samples - seen.sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    freq[:] = np.where(seen, g, 0).sum(axis=1) / (self.n_samples - nmiss) / 2.0
            else:
                impute_center_columns(yt, 1 if self.scale == "eigenstrat" else 0, freq, nmiss)
            yield BedBlock(s, e, yt.T, freq, nmiss)

    def close(self) -> None:
        reader = getattr(self._local, "reader", None)
        if reader is not None:
            reader.close()
            self._local.reader = None


__all__ = ["PgenStream", "pgen_path", "read_pvar", "read_psam", "PGEN_SUFFIXES"]
