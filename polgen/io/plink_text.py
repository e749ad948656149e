"""PLINK text tables: the .bim and .fam parsed with Polars (typed errors naming the file, column and
row), line counting, and :class:`BimIndex`, the sparse byte-offset index of a .bim that lets
:class:`polgen.io.bed.BedStream` parse only the rows of a block (memory flat in the number of SNPs)."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from polgen.errors import BedFormatError, InputError
from polgen.kernels.bed_decode import count_nonblank_lines

BIM_COLUMNS = ("CHR", "SNP", "CM", "BP", "A1", "A2")
FAM_COLUMNS = ("FID", "IID", "PAT", "MAT", "SEX", "PHENO")

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
