"""Named DuckDB queries over polgen results (parquet files, globs, directories) or Polars frames.

The queries live in the top-level ``sql/`` directory, one ``NAME.sql`` file each, opening with a
header comment that documents them::

    -- polgen query: top_hits
    -- What the query returns ...
    -- param source   relation            per-SNP results
    -- param p_max    double    = 5e-8    keep rows with P <= p_max
    -- output: ...

Parameter kinds: ``relation`` (a table: parquet file, glob or directory, a Polars/Arrow frame, or
the name of an entry of ``frames``), ``relations`` (several tables, stacked by column name with
``_src`` = position and ``_src_name`` = name), ``double``, ``integer``, ``count`` (an integer >= 0),
``boolean``, ``varchar``, ``column`` (the name of a column of the query's relation).
A parameter without ``= default`` is required.

Template slots: ``{{rel}}`` is the view of relation parameter ``rel``; ``{{rels:sources}}`` the
name table of a ``relations`` parameter; ``{{col}}`` the quoted identifier a ``column`` parameter
names (``NULL`` when it is unset; ``$col`` is its name as text, or NULL); ``{{rel:column(NAME)}}``
the quoted identifier of ``rel``'s column ``NAME`` (matched case-insensitively) or ``NULL`` when
``rel`` has no such column, for queries that use an optional column.

Safety: relation parameters never reach the SQL text as strings: each table is opened through
DuckDB's Python API (``read_parquet`` on checked paths, ``register`` for frames) as a view whose
name polgen makes up, and ``{{name}}`` in the query is replaced by that view's quoted name.
Column names reach it only as quoted identifiers of columns the relation has (checked first).
Scalar parameters are bound as DuckDB prepared parameters (``$name``), never formatted in.
"""

from __future__ import annotations

import glob as _glob
import json
import logging
import math
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from polgen.errors import InputError, OutputExistsError, SchemaError

log = logging.getLogger("polgen")

__all__ = ["run", "list_queries", "get_query", "sql_dir", "Query", "QueryParam"]

KINDS = ("relation", "relations", "double", "integer", "count", "boolean", "varchar", "column")
_TABLE_KINDS = ("relation", "relations")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_PARAM_RE = re.compile(r"^param\s+([A-Za-z_]\w*)\s+([a-z]+)(?:\s*=\s*(\S+))?\s*(.*)$")
_SLOT_RE = re.compile(r"\{\{\s*([A-Za-z_]\w*)(?::(sources|column\(\s*([A-Za-z_]\w*)\s*\)))?\s*\}\}")
_DOLLAR_RE = re.compile(r"\$([A-Za-z_]\w*)")
_GLOB_CHARS = set("*?[")
_TRUE = {"true", "1", "yes", "y", "on", "t"}
_FALSE = {"false", "0", "no", "n", "off", "f"}


def sql_dir() -> Path:
    """The directory of the packaged queries.

    ``POLGEN_SQL_DIR`` overrides; otherwise the data package ``polgen._sql``, which setuptools maps
    onto the repository's top-level ``sql/`` (an editable install reads the checkout's files, a wheel
    carries copies).
    """
    env = os.environ.get("POLGEN_SQL_DIR")
    if env:
        return Path(env)
    from importlib.util import find_spec

    spec = find_spec("polgen._sql")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            if Path(loc, "top_hits.sql").is_file():
                return Path(loc)
    import polgen

    return Path(polgen.__file__).resolve().parents[1] / "sql"


@dataclass(frozen=True)
class QueryParam:
    name: str
    kind: str
    default: Any
    required: bool
    description: str


@dataclass(frozen=True)
class Query:
    name: str
    path: Path
    description: str
    params: dict[str, QueryParam]
    output: str
    body: str = field(repr=False)


def _parse_default(kind: str, text: str, path: Path, pname: str) -> Any:
    if text.lower() == "null":
        return None
    try:
        return _convert(kind, text, pname)
    except InputError as exc:
        raise InputError(f"bad default for parameter {pname!r}: {exc.message}", path=path) from None


def _parse(path: Path) -> Query:
    text = path.read_text()
    lines = text.splitlines()
    header: list[str] = []
    k = 0
    while k < len(lines) and lines[k].lstrip().startswith("--"):
        header.append(lines[k].lstrip()[2:])
        k += 1
    body = "\n".join(lines[k:]).strip().rstrip(";").strip()
    if not header or not header[0].strip().startswith("polgen query:"):
        raise InputError("a query file must open with '-- polgen query: NAME'", path=path)
    name = header[0].split(":", 1)[1].strip()
    if name != path.stem:
        raise InputError(f"query header names {name!r} but the file is {path.name}", path=path)
    desc: list[str] = []
    output: list[str] = []
    params: dict[str, QueryParam] = {}
    last: list[str] | None = desc
    last_param: str | None = None
    for raw in header[1:]:
        line = raw.strip()
        m = _PARAM_RE.match(line)
        if m:
            pname, kind, default, pdesc = m.groups()
            if kind not in KINDS:
                raise InputError(f"parameter {pname!r} has unknown kind {kind!r} (use {', '.join(KINDS)})", path=path)
            if pname in params:
                raise InputError(f"parameter {pname!r} is declared twice", path=path)
            if default is not None and kind in ("relation", "relations"):
                raise InputError(f"relation parameter {pname!r} cannot have a default", path=path)
            params[pname] = QueryParam(
                pname,
                kind,
                None if default is None else _parse_default(kind, default, path, pname),
                default is None,
                pdesc.strip(),
            )
            last, last_param = None, pname
        elif line.startswith("output:"):
            output.append(line[len("output:") :].strip())
            last, last_param = output, None
        elif last_param is not None and line:
            p = params[last_param]
            params[last_param] = QueryParam(p.name, p.kind, p.default, p.required, (p.description + " " + line).strip())
        elif last is not None and line:
            last.append(line)
    for m in _SLOT_RE.finditer(body):
        pname, suffix, _ = m.groups()
        kind = params[pname].kind if pname in params else None
        if kind not in (*_TABLE_KINDS, "column") or (kind == "column" and suffix):
            raise InputError(f"template slot {m.group(0)} does not name a relation or column parameter", path=path)
        if suffix == "sources" and kind != "relations":
            raise InputError(f"template slot {m.group(0)}: ':sources' needs a 'relations' parameter", path=path)
    if sum(p.kind in _TABLE_KINDS for p in params.values()) != 1 and any(p.kind == "column" for p in params.values()):
        raise InputError("a query with a column parameter must have exactly one relation parameter", path=path)
    for dollar in _DOLLAR_RE.findall(body):
        if dollar not in params or params[dollar].kind in _TABLE_KINDS:
            raise InputError(f"${dollar} does not name a scalar parameter", path=path)
    return Query(name, path, " ".join(desc), params, " ".join(output), body)


def list_queries() -> list[str]:
    """Names of the queries in ``sql/`` (files starting with ``_`` are helpers, not queries)."""
    d = sql_dir()
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.sql") if not p.name.startswith("_"))


def get_query(name: str) -> Query:
    """The parsed query ``name`` (header, parameters, body)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InputError(f"not a query name: {name!r}")
    path = sql_dir() / f"{name}.sql"
    if not path.is_file():
        raise InputError(f"no query named {name!r}; available: {', '.join(list_queries()) or 'none'}", path=sql_dir())
    return _parse(path)


# -- parameter values ----------------------------------------------------------------------------
def _convert(kind: str, value: Any, pname: str) -> Any:
    """A scalar parameter value of ``kind`` from a Python value or a command-line string."""
    try:
        if kind == "double":
            if isinstance(value, bool):
                raise ValueError("a boolean is not a number")
            out = float(value)
            if math.isnan(out):
                raise ValueError("NaN")
            return out
        if kind in ("integer", "count"):
            if isinstance(value, bool):
                raise ValueError("a boolean is not an integer")
            if isinstance(value, str):
                out = int(value.strip())
            else:
                f = float(value)
                if not f.is_integer():
                    raise ValueError("not a whole number")
                out = int(value)
            if kind == "count" and out < 0:
                raise ValueError("negative")
            return out
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError("not true/false")
        if kind == "varchar":
            if not isinstance(value, str):
                raise ValueError("not a string")
            return value
        if kind == "column":
            if not isinstance(value, str) or not value.strip() or "\x00" in value:
                raise ValueError("not a column name")
            return value.strip()
    except (TypeError, ValueError, OverflowError) as exc:
        what = "a non-negative integer" if kind == "count" else kind
        raise InputError(f"parameter {pname!r} must be {what}: got {value!r} ({exc})") from None
    raise InputError(f"parameter {pname!r} has unknown kind {kind!r}")  # pragma: no cover


def _is_frame(obj: Any) -> bool:
    import pyarrow as pa

    return isinstance(obj, (pl.DataFrame, pl.LazyFrame, pa.Table, pa.RecordBatch))


def _parquet_files(spec: str | os.PathLike, pname: str) -> list[str]:
    """Checked parquet files for a path, glob or directory (a polgen output: its parts)."""
    text = os.fspath(spec)
    if "\x00" in text or not text.strip():
        raise InputError(f"parameter {pname!r}: not a usable path", path=text)
    if any(c in _GLOB_CHARS for c in text):
        files = sorted(f for f in _glob.glob(text, recursive=True) if os.path.isfile(f))
        if not files:
            raise InputError(f"parameter {pname!r}: no files match the pattern", path=text)
        return files
    p = Path(text)
    if p.is_dir():
        # a polgen output's parts; else every parquet file below, skipping _hidden / .hidden
        # entries (Spark/Hive convention: _SUCCESS, _raw work directories, temp files)
        parts = sorted(p.glob("part-*.parquet")) or sorted(
            f for f in p.rglob("*.parquet") if not any(part.startswith(("_", ".")) for part in f.relative_to(p).parts)
        )
        if not parts:
            raise InputError(f"parameter {pname!r}: the directory holds no parquet files", path=text)
        return [str(f) for f in parts]
    if not p.is_file():
        raise InputError(f"parameter {pname!r}: file not found", path=text)
    return [text]


def _source_name(item: Any, fallback: str) -> str:
    if isinstance(item, (str, os.PathLike)):
        text = os.fspath(item).rstrip("/")
        base = os.path.basename(text)
        for suffix in (".parquet", ".pq"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
        return base if base and not any(c in _GLOB_CHARS for c in base) else fallback
    return fallback


def _literal(text: str) -> str:
    """A DuckDB string literal (standard SQL quoting; DuckDB has no backslash escapes)."""
    return "'" + str(text).replace("'", "''") + "'"


def _quote_ident(name: str) -> str:
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):  # names are made here; guard anyway
        raise InputError(f"bad identifier {name!r}")
    return '"' + name + '"'


def _quote_column(name: str) -> str:
    """Any column name as a DuckDB identifier (standard SQL quoting: ``"`` doubled)."""
    return '"' + name.replace('"', '""') + '"'


class _Session:
    """One DuckDB connection with polgen's macros, UDFs and the views of one query run."""

    def __init__(self) -> None:
        import duckdb

        self.duckdb = duckdb
        self.con = duckdb.connect(":memory:")
        self._keep: list[Any] = []
        macros = sql_dir() / "_macros.sql"
        if macros.is_file():
            self.con.execute(macros.read_text())
        from duckdb.sqltypes import DOUBLE

        self.con.create_function(  # type: ignore[call-overload]  # duckdb's stub lacks the string forms
            "chisq_from_p", _chisq_from_p, [DOUBLE], DOUBLE, type="arrow", null_handling="special", side_effects=False
        )

    def close(self) -> None:
        self.con.close()

    def view_of(self, view: str, item: Any, frames: Mapping[str, Any], pname: str) -> str:
        """Create ``view`` over one table; returns a description for the output metadata."""
        if isinstance(item, str) and item in frames:
            self.view_of(view, frames[item], {}, pname)
            return f"frame:{item}"
        if _is_frame(item):
            self._keep.append(item)
            self.con.register(view, item)
            return "frame"
        if isinstance(item, (str, os.PathLike)):
            files = _parquet_files(item, pname)
            try:
                hive = any("=" in part for f in files for part in Path(f).parts[:-1])
                rel = self.con.read_parquet(files, union_by_name=True, hive_partitioning=hive)
                rel.to_view(view, replace=True)
            except self.duckdb.Error as exc:
                raise InputError(
                    f"parameter {pname!r}: cannot read as parquet: {_first_line(exc)}", path=os.fspath(item)
                ) from None
            return os.fspath(item)
        raise InputError(
            f"parameter {pname!r} must be a parquet path, a frame or a frame name, got {type(item).__name__}"
        )

    def columns(self, view: str) -> list[str]:
        """The column names of a view."""
        return [row[0] for row in self.con.execute(f"DESCRIBE {_quote_ident(view)}").fetchall()]

    def relations_view(self, view: str, value: Any, frames: Mapping[str, Any], pname: str) -> list[str]:
        if isinstance(value, Mapping):
            items = [(str(k), v) for k, v in value.items()]
        elif isinstance(value, (str, os.PathLike)) or _is_frame(value):
            items = [(_source_name(value, "t0"), value)]
        elif isinstance(value, Sequence):
            items = [
                (item if isinstance(item, str) and item in frames else _source_name(item, f"t{k}"), item)
                for k, item in enumerate(value)
            ]
        else:
            raise InputError(f"parameter {pname!r} must be a list of tables, got {type(value).__name__}")
        if not items:
            raise InputError(f"parameter {pname!r} needs at least one table")
        names: list[str] = []
        for item_name, _ in items:
            names.append(item_name if item_name not in names else f"{item_name}_{len(names)}")
        described, selects = [], []
        for k, (_, item) in enumerate(items):
            sub = f"{view}_{k}"
            described.append(self.view_of(sub, item, frames, pname))
            selects.append(f"SELECT {k} AS _src, {_literal(names[k])} AS _src_name, * FROM {_quote_ident(sub)}")
        try:
            self.con.execute(
                f"CREATE OR REPLACE TEMP VIEW {_quote_ident(view)} AS " + "\nUNION ALL BY NAME\n".join(selects)
            )
        except self.duckdb.Error as exc:
            raise SchemaError(f"parameter {pname!r}: the tables cannot be stacked: {_first_line(exc)}") from None
        sources = pl.DataFrame({"_src": list(range(len(items))), "_src_name": names})
        self._keep.append(sources)
        self.con.register(f"{view}_sources", sources)
        return [f"{n}={d}" for n, d in zip(names, described)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _chisq_from_p(p):
    """Vectorised qchisq(1 - p, 1) for DuckDB: NULL outside [0, 1] and for NaN."""
    import numpy as np
    import pyarrow as pa
    from scipy.special import ndtri

    a = p.to_numpy(zero_copy_only=False).astype(np.float64)
    with np.errstate(invalid="ignore"):
        ok = (a >= 0.0) & (a <= 1.0)
    out = np.full(a.shape, np.nan)
    out[ok] = ndtri(0.5 * a[ok]) ** 2  # = chi2.isf(p, 1), ~100x faster than its gamma inverse
    # 0.5 * p underflows to 0 for denormal p (p = 5e-324 would give inf): use the exact inverse there.
    tiny = ok & (a > 0.0) & (a < 1e-290)
    if tiny.any():
        from scipy.stats import chi2

        out[tiny] = chi2.isf(a[tiny], 1)
    return pa.array(out, mask=~ok)


def _bind(query: Query, params: Mapping[str, Any] | None, frames: Mapping[str, Any]) -> dict[str, Any]:
    given = dict(params or {})
    unknown = sorted(set(given) - set(query.params))
    if unknown:
        raise InputError(
            f"query {query.name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters: {', '.join(query.params)}"
        )
    out: dict[str, Any] = {}
    for name, p in query.params.items():
        if name in given and given[name] is not None:
            value = given[name]
        elif p.kind in ("relation", "relations") and name in frames:
            value = frames[name]
        elif not p.required:
            value = p.default
        else:
            raise InputError(f"query {query.name!r} needs parameter {name!r} ({p.kind}: {p.description})")
        out[name] = value if p.kind in _TABLE_KINDS or value is None else _convert(p.kind, value, name)
    return out


def _find_column(columns: Sequence[str], name: str) -> str | None:
    """The column called ``name``: exactly, else the only case-insensitive match (DuckDB's rule)."""
    if name in columns:
        return name
    folded = [c for c in columns if c.lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


def run(
    name: str,
    params: Mapping[str, Any] | None = None,
    frames: Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
) -> pl.DataFrame | pl.LazyFrame:
    """Run the named query and return its result as a Polars DataFrame.

    ``params`` maps parameter names to values: scalars (numbers, booleans, strings; command-line
    strings are converted), and for relation parameters a parquet path / glob / directory, a
    Polars or Arrow frame, or the name of an entry of ``frames`` (a relation parameter not given
    in ``params`` is looked up in ``frames`` by its own name).  With ``out`` the result is
    written as one file (DuckDB ``COPY`` to a temp name, then an atomic rename) in the format its
    extension names: ``.parquet`` (zstd; the query name and parameters go into its key-value
    metadata), ``.tsv``, ``.csv``, ``.tsv.gz``, ``.csv.gz`` (text with a header line; nulls are
    empty fields); any other name is refused with an :class:`~polgen.errors.InputError` before
    the query runs.  A LazyFrame over the file is returned instead; an existing ``out`` needs
    ``overwrite=True``.
    """
    frames = dict(frames or {})
    query = get_query(name)
    if out is not None:
        output_format(out)  # an unknown extension is refused before any work
    values = _bind(query, params, frames)
    session = _Session()
    try:
        views: dict[str, str] = {}
        view_names: dict[str, str] = {}
        described: dict[str, Any] = {}
        for pname, p in query.params.items():
            if p.kind in _TABLE_KINDS:
                view_names[pname] = f"polgen_src_{pname}"
            if p.kind == "relation":
                view = f"polgen_src_{pname}"
                described[pname] = session.view_of(view, values[pname], frames, pname)
                views[pname] = _quote_ident(view)
            elif p.kind == "relations":
                view = f"polgen_src_{pname}"
                described[pname] = session.relations_view(view, values[pname], frames, pname)
                views[pname] = _quote_ident(view)
                views[f"{pname}:sources"] = _quote_ident(f"{view}_sources")
            else:
                described[pname] = values[pname]
        columns = {pname: session.columns(view) for pname, view in view_names.items()}
        for pname, p in query.params.items():
            if p.kind == "column" and values[pname] is not None:
                ((rel, cols),) = columns.items()
                found = _find_column(cols, values[pname])
                if found is None:
                    raise SchemaError(
                        f"query {query.name!r}: parameter {pname!r} names a column that "
                        f"{rel!r} does not have (its columns: {', '.join(cols)})",
                        column=values[pname],
                    )
                views[pname] = _quote_column(found)
            elif p.kind == "column":
                views[pname] = "NULL"
        if "p_col" in query.params and values.get("p_col") is None:
            _require_p(query, columns)

        def fill_slot(m: re.Match) -> str:
            pname, suffix, col = m.groups()
            if col is not None:
                found = _find_column(columns[pname], col)
                return "NULL" if found is None else _quote_column(found)
            return views[f"{pname}:{suffix}" if suffix else pname]

        body = _SLOT_RE.sub(fill_slot, query.body)
        used = set(_DOLLAR_RE.findall(body))
        bound = {k: values[k] for k in used}
        if out is None:
            try:
                return session.con.sql(body, params=bound).pl()
            except session.duckdb.Error as exc:
                raise _query_error(query, exc) from None
        return _copy_out(session, query, body, bound, described, Path(out), overwrite)
    finally:
        session.close()


def _require_p(query: Query, columns: Mapping[str, list[str]]) -> None:
    """A query with a ``p_col`` parameter reads P, LOG10P or P_CALIBRATED (or Z, where the query
    falls back to it) when ``p_col`` is unset: a table with none of them (a multi-variable LFMM result
    has ``P_<variable>`` columns) would give no row at all, silently; name the candidates instead."""
    stats = ("P", "LOG10P", "P_CALIBRATED") + (("Z",) if re.search(r"\bAS Z\b", query.body) else ())
    for rel, cols in columns.items():
        if any(_find_column(cols, c) is not None for c in stats):
            continue
        cands = [c for c in cols if c.upper().startswith(("P_", "LOG10P_"))]
        hint = f"; pass p_col= one of {cands}" if cands else "; pass p_col= the column that holds P"
        raise SchemaError(
            f"query {query.name!r}: {rel!r} has none of the columns {', '.join(stats)}{hint}",
            column="P",
        )


def _query_error(query: Query, exc: BaseException):
    msg = f"query {query.name!r} failed: {_first_line(exc)}"
    kind = type(exc).__name__
    if kind in ("BinderException", "CatalogException"):
        return SchemaError(msg + " (check the input columns: " + (query.output or query.description) + ")")
    return InputError(msg)


#: --out formats by file extension: (DuckDB COPY options, separator for reading it back or None for parquet)
OUTPUT_FORMATS: dict[str, tuple[str, str | None]] = {
    ".parquet": ("FORMAT parquet, COMPRESSION zstd", None),
    ".tsv": ("FORMAT csv, DELIMITER '\t', HEADER true, COMPRESSION none", "\t"),
    ".csv": ("FORMAT csv, DELIMITER ',', HEADER true, COMPRESSION none", ","),
    ".tsv.gz": ("FORMAT csv, DELIMITER '\t', HEADER true, COMPRESSION gzip", "\t"),
    ".csv.gz": ("FORMAT csv, DELIMITER ',', HEADER true, COMPRESSION gzip", ","),
}


def output_format(out: str | os.PathLike) -> str:
    """The output format of ``out``, chosen by its extension (case-insensitive): one of
    :data:`OUTPUT_FORMATS`' keys; any other name is refused with an :class:`InputError`."""
    name = Path(out).name.lower()
    for ext in sorted(OUTPUT_FORMATS, key=len, reverse=True):  # .tsv.gz before .gz-less names
        if name.endswith(ext) and len(name) > len(ext):
            return ext
    raise InputError(
        "cannot tell the output format from the file name; end it with one of " + ", ".join(OUTPUT_FORMATS),
        path=os.fspath(out),
    )


def _copy_out(
    session: _Session, query: Query, body: str, bound: dict, described: dict, out: Path, overwrite: bool
) -> pl.LazyFrame:
    fmt = output_format(out)
    if out.exists() and not overwrite:
        raise OutputExistsError("output file exists; pass overwrite=True (CLI: --overwrite) to replace it", path=out)
    if out.exists() and out.is_dir():
        raise OutputExistsError("output path is a directory", path=out)
    if not out.parent.is_dir():
        raise InputError("the output directory does not exist", path=out.parent)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    options, separator = OUTPUT_FORMATS[fmt]
    if separator is None:  # parquet carries the query and its parameters in its key-value metadata
        meta = {"polgen.query": query.name, "polgen.params": json.dumps(described, sort_keys=True, default=str)}
        kv = ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in meta.items())
        options += f", KV_METADATA {{{kv}}}"
    sql = f"COPY ({body}) TO {_literal(str(tmp))} ({options})"
    try:
        try:
            session.con.execute(sql, bound)
        except session.duckdb.Error as exc:
            raise _query_error(query, exc) from None
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("query %s written to %s", query.name, out)
    if separator is None:
        return pl.scan_parquet(out)
    if fmt.endswith(".gz"):  # polars scans only uncompressed text
        return pl.read_csv(out, separator=separator, infer_schema_length=10000).lazy()
    return pl.scan_csv(out, separator=separator, infer_schema_length=10000)
