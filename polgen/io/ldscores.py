"""Read LD Score files in the LDSC layout.

A directory (or a path prefix such as ``baseline/baseline.``) holds per-chromosome files
``{prefix}{chr}.l2.ldscore.gz`` (tab-separated: ``CHR SNP BP [CM] [MAF] L2 ...``) and
``{prefix}{chr}.l2.M_5_50`` / ``{prefix}{chr}.l2.M`` (one line: the number of SNPs, one number per
annotation).  Regression-weight directories (``weights.hm3_noMHC.``, ``eur_w_ld_chr/``) have the
same layout.  Plain (uncompressed) ``.l2.ldscore`` and ``.l2.ldscore.parquet`` files are accepted
too.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import polars as pl

from polgen.errors import InputError, SchemaError
from polgen.io.sumstats import ROW, read_text_table

log = logging.getLogger("polgen")

_SUFFIXES = (".l2.ldscore.gz", ".l2.ldscore.parquet", ".l2.ldscore", ".l2.ldscore.bz2")


def _prefix(path: str | os.PathLike) -> str:
    p = str(path)
    if os.path.isdir(p):
        return os.path.join(p, "")
    return p


def available_chromosomes(ld: str | os.PathLike) -> list[int]:
    """Chromosome numbers for which an ``.l2.ldscore`` file exists under ``ld``."""
    pre = _prefix(ld)
    d, base = os.path.split(pre)
    d = d or "."
    if not os.path.isdir(d):
        raise InputError("LD score directory not found", path=ld)
    pat = re.compile(re.escape(base) + r"(\d+)\.l2\.ldscore(\.gz|\.parquet|\.bz2)?$")
    out = sorted({int(m.group(1)) for f in os.listdir(d) if (m := pat.match(f))})
    return out


def _chromosomes(ld, chromosomes: Iterable[int] | None) -> list[int]:
    if chromosomes is None:
        chroms = available_chromosomes(ld)
        if not chromosomes and not chroms:
            raise InputError("no {chr}.l2.ldscore.gz files found", path=ld)
        return chroms
    return [int(c) for c in chromosomes]


def _ldscore_file(ld, chrom: int) -> Path:
    pre = _prefix(ld)
    for suf in _SUFFIXES:
        p = Path(f"{pre}{chrom}{suf}")
        if p.exists():
            return p
    d = os.path.dirname(pre) or "."
    if not os.path.isdir(d) or (not os.path.isdir(str(ld)) and not available_chromosomes(ld)):
        raise InputError("LD score directory (or file prefix) not found", path=os.fspath(ld))
    found = available_chromosomes(ld)
    hint = f"; it holds chromosomes {_ranges(found)}" if found else "; it holds no .l2.ldscore files"
    raise InputError(
        f"LD score file for chromosome {chrom} not found (looked for {pre}{chrom}.l2.ldscore.gz){hint}",
        path=f"{pre}{chrom}.l2.ldscore.gz",
    )


def _ranges(chroms: Sequence[int]) -> str:
    """``1-3, 5, 7-22``."""
    out: list[str] = []
    for c in sorted(chroms):
        if out and "-" in out[-1] and int(out[-1].split("-")[1]) == c - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{c}"
        elif out and "-" not in out[-1] and int(out[-1]) == c - 1:
            out[-1] = f"{out[-1]}-{c}"
        else:
            out.append(str(c))
    return ", ".join(out)


def _types(cols: list[str]) -> dict[str, type[pl.DataType]]:
    """Typed fast path: BP integer, scores numeric (a bad value falls back to strings, and the
    check below then names its row)."""
    return {c: (pl.Int64 if c.strip() == "BP" else pl.Float64) for c in cols if c.strip() not in ("CHR", "SNP")}


def _read_one(path: Path) -> pl.DataFrame:
    if path.suffix == ".parquet":
        df = pl.read_parquet(path)
    elif path.suffix == ".bz2":
        import bz2
        import tempfile

        with bz2.open(path, "rb") as fh, tempfile.NamedTemporaryFile(suffix=".txt") as tmp:
            tmp.write(fh.read())
            tmp.flush()
            df = read_text_table(tmp.name, _types).drop(ROW)
    else:
        df = read_text_table(path, _types).drop(ROW)
    missing = [c for c in ("CHR", "SNP", "BP") if c not in df.columns]
    if missing:
        raise SchemaError(f"LD score file lacks {missing}; found {df.columns}", path=path, column=missing[0])
    casts = [pl.col("CHR").cast(pl.String), pl.col("SNP").cast(pl.String)]
    for c in df.columns:
        if c in ("CHR", "SNP"):
            continue
        if df.schema[c] == pl.String:
            num = pl.col(c).cast(pl.Float64, strict=False)
            bad = df.select((pl.col(c).is_not_null() & num.is_null()).arg_true().first()).item()
            if bad is not None:
                raise InputError(f"non-numeric value {df[c][bad]!r}", path=path, column=c, row=bad + 1)
            casts.append((num.cast(pl.Int64) if c == "BP" else num).alias(c))
        else:
            casts.append(pl.col(c).cast(pl.Int64 if c == "BP" else pl.Float64))
    return df.with_columns(casts)


def read_ldscores(ld: str | os.PathLike, chromosomes: Iterable[int] | None = None) -> pl.DataFrame:
    """Eager concatenation of the per-chromosome LD score files (chromosome order as given)."""
    frames = [_read_one(_ldscore_file(ld, c)) for c in _chromosomes(ld, chromosomes)]
    cols = frames[0].columns
    for f, c in zip(frames[1:], _chromosomes(ld, chromosomes)[1:]):
        if f.columns != cols:
            raise SchemaError(f"chromosome {c} LD score columns {f.columns} differ from {cols}", path=ld)
    return pl.concat(frames, how="vertical_relaxed")


def scan_ldscores(ld: str | os.PathLike, chromosomes: Iterable[int] | None = None) -> pl.LazyFrame:
    """LD scores of ``chromosomes`` (default: every chromosome found) as a LazyFrame with
    ``CHR`` (string), ``SNP``, ``BP`` (Int64) and the score columns (Float64) as in the files."""
    return read_ldscores(ld, chromosomes).lazy()


def read_m(ld: str | os.PathLike, chromosomes: Iterable[int] | None = None, suffix: str = "M_5_50") -> float:
    """Total number of SNPs behind the LD scores: the sum of every number in the
    ``{chr}.l2.M_5_50`` files (``suffix="M"`` for ``.l2.M``); as R GenomicSEM's ``sum(m)``."""
    pre = _prefix(ld)
    total = 0.0
    for c in _chromosomes(ld, chromosomes):
        p = Path(f"{pre}{c}.l2.{suffix}")
        if not p.exists():
            raise InputError(f"M file for chromosome {c} not found", path=p)
        text = p.read_text().split()
        try:
            total += sum(float(t) for t in text)
        except ValueError as exc:
            raise InputError(f"M file holds a non-number: {exc}", path=p) from exc
        if not text:
            raise InputError("M file is empty", path=p)
    return total


def m_per_chromosome(
    ld: str | os.PathLike, chromosomes: Sequence[int] | None = None, suffix: str = "M_5_50"
) -> pl.DataFrame:
    """One row per chromosome: CHR and M (summed over annotations)."""
    chroms = _chromosomes(ld, chromosomes)
    return pl.DataFrame({"CHR": [str(c) for c in chroms], "M": [read_m(ld, [c], suffix) for c in chroms]})


__all__ = ["scan_ldscores", "read_ldscores", "read_m", "m_per_chromosome", "available_chromosomes"]
