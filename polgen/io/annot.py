"""Read baseline-LD style annotated LD scores, their ``.M`` counts, ``.annot`` and ``.frq`` files.

The stratified LDSC layout (LDSC's ``--ref-ld-chr`` / ``--frqfile-chr`` prefixes, as R GenomicSEM's
``s_ldsc`` reads them): for a prefix such as ``baselineLD.`` (or a directory), per chromosome

* ``{prefix}{chr}.l2.ldscore.gz``: ``CHR SNP BP [CM] [MAF]`` then one LD-score column per annotation
  (``baseL2``, ``Coding_UCSCL2``, ...);
* ``{prefix}{chr}.l2.M_5_50`` (or ``.l2.M``): one line, the number of SNPs (MAF > 5%) per annotation;
* ``{prefix}{chr}.annot.gz``: ``CHR BP SNP CM`` then the annotation values (0/1, or continuous);
* ``{frq_prefix}{chr}.frq``: PLINK allele frequencies (``SNP`` and ``MAF`` are used).

Files are scanned lazily with Polars (tab-separated text, gzip or plain, is read by
``pl.scan_csv``; whitespace-aligned PLINK ``.frq`` files through the sumstats text reader) and
only the columns and SNPs asked for are materialised.  Every problem is an
:class:`~polgen.errors.InputError` / :class:`~polgen.errors.SchemaError` naming the file and column.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from polgen.errors import InputError, SchemaError
from polgen.io.sumstats import ROW, read_text_table

log = logging.getLogger("polgen")

__all__ = [
    "AnnotSet",
    "find_annot_set",
    "read_weight_ldscores",
    "scan_table",
    "read_m_counts",
    "annotation_overlap",
    "frq_files",
    "ldscore_columns",
    "read_ldscore_file",
    "read_snp_ids",
]

_ID_COLS = ("CHR", "SNP", "BP", "CM", "MAF")


def _split(prefix: str | os.PathLike) -> tuple[Path, str]:
    p = os.fspath(prefix)
    if os.path.isdir(p):
        return Path(p), ""
    d, base = os.path.split(p)
    return Path(d or "."), base


def _chrom_files(prefix: str | os.PathLike, pattern: str, what: str) -> dict[int, Path]:
    """``{chromosome: file}`` for the files ``{prefix}{chr}{pattern}`` (pattern a regex tail)."""
    d, base = _split(prefix)
    if not d.is_dir():
        raise InputError(f"{what} directory not found", path=os.fspath(prefix))
    rx = re.compile(re.escape(base) + r"(\d+)" + pattern + "$")
    out: dict[int, Path] = {}
    for f in sorted(os.listdir(d)):
        if m := rx.match(f):
            out[int(m.group(1))] = d / f
    return out


@dataclass
class AnnotSet:
    """The per-chromosome files of one annotation prefix (LD scores, M counts, .annot)."""

    prefix: str
    ldscore: dict[int, Path]
    m: dict[int, Path]
    annot: dict[int, Path]

    @property
    def chromosomes(self) -> list[int]:
        return sorted(self.ldscore)


def find_annot_set(
    prefix: str | os.PathLike, m_suffix: str = "M_5_50", *, need_annot: bool = True, chromosomes=None
) -> AnnotSet:
    """Locate the LD-score, ``.l2.{m_suffix}`` and ``.annot`` files of ``prefix``.

    Raises :class:`InputError` naming the missing file when a chromosome has LD scores but no M
    file (or no ``.annot`` file when ``need_annot``)."""
    ld = _chrom_files(prefix, r"\.l2\.ldscore(\.gz)?", "LD score")
    if chromosomes is not None:
        ld = {c: f for c, f in ld.items() if c in set(chromosomes)}
    if not ld:
        raise InputError("no {chr}.l2.ldscore[.gz] files found for this prefix", path=os.fspath(prefix))
    d, base = _split(prefix)
    m: dict[int, Path] = {}
    annot: dict[int, Path] = {}
    for c in sorted(ld):
        mp = d / f"{base}{c}.l2.{m_suffix}"
        if not mp.is_file():
            raise InputError(f"M file for chromosome {c} not found (the LD scores {ld[c].name} need it)", path=mp)
        m[c] = mp
        if need_annot:
            ap = next((d / f"{base}{c}{s}" for s in (".annot.gz", ".annot") if (d / f"{base}{c}{s}").is_file()), None)
            if ap is None:
                raise InputError(
                    f"annotation file for chromosome {c} not found (the LD scores {ld[c].name} need it)",
                    path=d / f"{base}{c}.annot.gz",
                )
            annot[c] = ap
    return AnnotSet(os.fspath(prefix), ld, m, annot)


def _first_line(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as fh:
            return fh.readline()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read file: {exc}", path=path) from exc


def scan_table(path: Path, numeric: Sequence[str] | None = None) -> pl.LazyFrame:
    """A LazyFrame over a tab-separated (gzip or plain) text table, or an eagerly parsed
    whitespace-aligned one (PLINK ``.frq``).  ``numeric`` columns are read as Float64 (all
    columns but the identifier ones when ``None``)."""
    header = _first_line(path)
    if not header.strip():
        raise InputError("file is empty", path=path)
    if "\t" in header:
        cols = [c.strip() for c in header.rstrip("\r\n").split("\t")]
        want = [c for c in cols if c not in ("CHR", "SNP", "BP", "A1", "A2")] if numeric is None else list(numeric)
        types: dict[str, type[pl.DataType]] = {c: pl.Float64 for c in want if c in cols}
        types.update({c: pl.String for c in ("SNP", "CHR") if c in cols})
        return pl.scan_csv(path, separator="\t", schema_overrides=types, infer_schema=False).with_columns(
            [pl.col(c).cast(pl.Float64) for c in want if c in cols]
        )
    df = read_text_table(path).drop(ROW)
    want = [c for c in df.columns if c not in ("CHR", "SNP", "BP", "A1", "A2")] if numeric is None else list(numeric)
    for c in want:
        if c in df.columns:
            num = df[c].cast(pl.Float64, strict=False)
            bad = (df[c].is_not_null() & num.is_null()).arg_true()
            if bad.len():
                raise InputError(f"non-numeric value {df[c][bad[0]]!r}", path=path, column=c, row=int(bad[0]) + 1)
            df = df.with_columns(num.alias(c))
    return df.lazy()


def _collect(lf: pl.LazyFrame, path: Path) -> pl.DataFrame:
    try:
        return lf.collect()
    except pl.exceptions.ColumnNotFoundError as exc:
        raise SchemaError(f"missing column: {str(exc).splitlines()[0]}", path=path) from exc
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot parse: {str(exc).splitlines()[0]}", path=path) from exc


def ldscore_columns(path: Path) -> list[str]:
    """The annotation LD-score columns of an ``.l2.ldscore`` file (everything after the ids)."""
    header = _first_line(path)
    cols = [c.strip() for c in re.split(r"\t" if "\t" in header else r"\s+", header.strip())]
    for c in ("SNP",):
        if c not in cols:
            raise SchemaError(f"LD score file lacks {c}; found {cols}", path=path, column=c)
    return [c for c in cols if c not in _ID_COLS]


def read_snp_ids(path: Path) -> pl.DataFrame:
    """The ``SNP`` column of a table file."""
    lf = scan_table(path, numeric=[])
    if "SNP" not in lf.collect_schema().names():
        raise SchemaError("file lacks a SNP column", path=path, column="SNP")
    return _collect(lf.select("SNP"), path)


def read_ldscore_file(path: Path, columns: Sequence[str], keep: pl.DataFrame | None = None) -> pl.DataFrame:
    """``SNP CHR BP`` and the LD-score ``columns`` (Float64) of one file, optionally only the SNPs
    in ``keep`` (a frame with a ``SNP`` column), in file order."""
    lf = scan_table(path, numeric=list(columns) + ["BP"])
    have = lf.collect_schema().names()
    for c in ("SNP", "CHR", "BP", *columns):
        if c not in have:
            raise SchemaError(f"LD score file lacks column {c!r}", path=path, column=c)
    lf = lf.select(pl.col("SNP"), pl.col("CHR").cast(pl.String), pl.col("BP"), *[pl.col(c) for c in columns])
    if keep is not None:
        lf = lf.join(keep.lazy().select("SNP"), on="SNP", how="semi", maintain_order="left")
    df = _collect(lf, path)
    for c in columns:
        nulls = df[c].is_null()
        if nulls.any():
            raise InputError("missing LD score", path=path, column=c, row=df["SNP"][int(nulls.arg_true()[0])])
    return df


def read_weight_ldscores(prefix: str | os.PathLike, chromosomes: Sequence[int] | None = None) -> pl.DataFrame:
    """``SNP`` and ``wLD`` (the last column of the regression-weight LD-score files)."""
    files = _chrom_files(prefix, r"\.l2\.ldscore(\.gz)?", "weight LD score")
    if chromosomes is not None:
        files = {c: f for c, f in files.items() if c in set(chromosomes)}
    if not files:
        raise InputError("no {chr}.l2.ldscore[.gz] weight files found for this prefix", path=os.fspath(prefix))
    frames = []
    for c in sorted(files):
        path = files[c]
        cols = ldscore_columns(path)
        if not cols:
            raise SchemaError("weight LD score file has no score column", path=path, column="L2")
        lf = scan_table(path, numeric=[cols[-1]]).select(pl.col("SNP"), pl.col(cols[-1]).alias("wLD"))
        frames.append(_collect(lf, path))
    return pl.concat(frames)


def read_m_counts(path: Path, n_expected: int | None = None) -> np.ndarray:
    """The per-annotation SNP counts of one ``.l2.M_5_50`` / ``.l2.M`` file."""
    try:
        text = path.read_text().split()
    except OSError as exc:
        raise InputError(f"cannot read M file: {exc}", path=path) from exc
    if not text:
        raise InputError("M file is empty", path=path)
    try:
        vals = np.array([float(t) for t in text])
    except ValueError as exc:
        raise InputError(f"M file holds a non-number: {exc}", path=path) from exc
    if n_expected is not None and vals.shape[0] != n_expected:
        raise SchemaError(f"M file has {vals.shape[0]} counts for {n_expected} LD-score annotation columns", path=path)
    return vals


def annotation_overlap(
    annot_files: Sequence[Path],
    frq_file: Path,
    *,
    ld_snps: pl.DataFrame | None = None,
    ld_file: Path | None = None,
    extra_names: Sequence[str | None] = (),
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """One chromosome's annotation cross-product over the SNPs with 0.05 < MAF < 0.95.

    ``annot_files``: the baseline ``.annot`` file then those of extra annotation sets (their
    ``CHR BP CM`` dropped; a single-annotation extra is named by ``extra_names``).  Returns the
    annotation names, ``A'A`` (float64) and, per annotation, whether every value is 0 or 1.
    With ``ld_snps`` (this chromosome's LD-score SNPs) every LD-score SNP must be in the
    annotation file: a mismatch is an :class:`InputError` naming both files and a missing SNP."""
    frames: list[pl.LazyFrame] = []
    names: list[str] = []
    for i, path in enumerate(annot_files):
        lf = scan_table(path)
        cols = lf.collect_schema().names()
        if "SNP" not in cols:
            raise SchemaError("annotation file lacks SNP", path=path, column="SNP")
        ann = [c for c in cols if c not in ("CHR", "BP", "SNP", "CM")]
        if not ann:
            raise SchemaError("annotation file has no annotation columns", path=path)
        if i > 0 and len(ann) == 1 and i - 1 < len(extra_names) and extra_names[i - 1]:
            lf = lf.rename({ann[0]: str(extra_names[i - 1])})
            ann = [str(extra_names[i - 1])]
        dup = [c for c in ann if c in names]
        if dup:
            raise SchemaError(f"annotation {dup[0]!r} appears in two annotation sets", path=path, column=dup[0])
        names += ann
        frames.append(lf.select(pl.col("SNP"), *[pl.col(c) for c in ann]))
        if ld_snps is not None and i == 0:
            snps = _collect(frames[0].select("SNP"), path)
            missing = ld_snps.join(snps, on="SNP", how="anti")
            if missing.height:
                raise InputError(
                    f"{missing.height} of the {ld_snps.height} LD-score SNPs of {ld_file} are not in the "
                    f"annotation file (first: {missing['SNP'][0]}); the .annot and .l2.ldscore files do not match",
                    path=path,
                    column="SNP",
                    row=str(missing["SNP"][0]),
                )
    frq = scan_table(frq_file, numeric=["MAF"])
    if "MAF" not in frq.collect_schema().names() or "SNP" not in frq.collect_schema().names():
        raise SchemaError("frequency file lacks SNP or MAF", path=frq_file, column="MAF")
    lf = frq.select("SNP", "MAF").filter((pl.col("MAF") > 0.05) & (pl.col("MAF") < 0.95)).drop("MAF")
    for f in frames:
        lf = lf.join(f, on="SNP", how="inner")
    df = _collect(lf.select(names), annot_files[0])
    for c in names:
        if df[c].null_count():
            raise InputError("missing annotation value", path=annot_files[0], column=c)
    a = df.to_numpy().astype(np.float64, copy=False)
    if a.shape[0] == 0:
        raise InputError(
            f"no SNP of the annotation file has 0.05 < MAF < 0.95 in {frq_file.name} (do the files match?)",
            path=annot_files[0],
            column="SNP",
        )
    binary = np.all((a == 0.0) | (a == 1.0), axis=0)
    return names, a.T @ a, binary


def frq_files(prefix: str | os.PathLike) -> dict[int, Path]:
    """``{chromosome: file}`` for the ``{prefix}{chr}.frq`` files."""
    return _chrom_files(prefix, r"\.frq(\.gz)?", "frequency")
