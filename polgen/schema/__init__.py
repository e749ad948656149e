"""Canonical column names and dtypes, and the declared output of every result kind.

Per-SNP inputs and outputs follow the de-facto GWAS layout (regenie/plink2 spellings where they
exist) so results load in the tools people already use.

:data:`OUTPUTS` declares, once, the columns each method writes (name, dtype, nullable, when an
optional column appears, one-line meaning); :func:`validate` checks a frame, a schema or a parquet
file against a declaration, and the README's "Output reference" is generated from it
(:func:`output_reference_markdown`; a test keeps the two equal).  The declarations describe what the
writers produce today; writers import their names from here as they are reworked.

Column names may be templates: ``{trait}`` stands for one or more characters (``beta.{trait}`` is
one column per trait) and ``[...]`` is an optional part (``BETA[_{variable}]`` is ``BETA`` with one
covariate, ``BETA_<variable>`` per covariate with several).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import polars as pl

from polgen.errors import SchemaError
from polgen.schema.core import (
    A1,
    A1FREQ,
    A2,
    BETA,
    BETA0,
    BETA_PREFIX,
    BP,
    CELL_ID,
    CHR,
    CLUSTER,
    DIRECTION,
    DTYPES,
    INFO,
    LOG10P,
    MAF,
    META_METHOD,
    META_PARAMS,
    META_VERSION,
    N_MISS,
    OR,
    SE,
    SNP,
    SNP_ID_COLUMNS,
    Column,
    N,
    OutputSchema,
    P,
    Z,
)
from polgen.schema.gsem import (
    _ADD_SNPS,
    _CF_GWAS,
    _COVSTRUC,
    _DROPS,
    _ENRICH,
    _FUSION,
    _GLS,
    _GLS_BAND,
    _LDSC_TABLE,
    _MUNGE,
    _PA_LDSC,
    _QTRAIT,
    _SEM_FIT,
    _SEM_PARAMS,
    _SEM_PARAMS_R,
    _SIM_SUMSTATS,
    _SUMSTATS,
    _USER_GWAS,
)
from polgen.schema.lfmm import (
    _LFMM_CHOOSEK,
    _LFMM_CV,
    _LFMM_GLM,
    _LFMM_LASSO,
    _LFMM_OFFSET,
    _LFMM_OFFSET_EIGEN,
    _LFMM_QVALUES,
    _LFMM_TEST,
)
from polgen.schema.stlr import (
    _BETADATA,
    _PERTURB,
    _PERTURB_BATCH,
    _SPLASH,
    _STLR_LOSSES,
    _STLR_SCORES,
    _TRANSITIONS,
)

OUTPUTS: dict[str, OutputSchema] = {
    s.kind: s
    for s in (
        _MUNGE,
        _DROPS,
        _SUMSTATS,
        _COVSTRUC,
        _LDSC_TABLE,
        _SEM_PARAMS,
        _SEM_PARAMS_R,
        _SEM_FIT,
        _USER_GWAS,
        _CF_GWAS,
        _ADD_SNPS,
        _ENRICH,
        _GLS,
        _GLS_BAND,
        _FUSION,
        _QTRAIT,
        _PA_LDSC,
        _SIM_SUMSTATS,
        _LFMM_TEST,
        _LFMM_CHOOSEK,
        _LFMM_GLM,
        _LFMM_QVALUES,
        _LFMM_LASSO,
        _LFMM_CV,
        _LFMM_OFFSET,
        _LFMM_OFFSET_EIGEN,
        _BETADATA,
        _STLR_SCORES,
        _STLR_LOSSES,
        _SPLASH,
        _PERTURB,
        _PERTURB_BATCH,
        _TRANSITIONS,
    )
}


def output_schema(kind: str) -> OutputSchema:
    """The declaration of ``kind`` (a key of :data:`OUTPUTS`)."""
    try:
        return OUTPUTS[kind]
    except KeyError:
        raise SchemaError(f"unknown output kind {kind!r}; declared kinds: {sorted(OUTPUTS)}") from None


def _dtype_name(dt: Any) -> str:
    return str(dt() if isinstance(dt, type) else dt)


def _read(obj: Any) -> tuple[dict[str, Any], pl.DataFrame | None, dict[str, str] | None, str | None]:
    """(name -> dtype, the frame when eager, parquet metadata when read from a file, path)."""
    if isinstance(obj, pl.DataFrame):
        return dict(obj.schema), obj, None, None
    if isinstance(obj, pl.LazyFrame):
        return dict(obj.collect_schema()), None, None, None
    if isinstance(obj, (str, os.PathLike)):
        import pyarrow.parquet as pq

        path = os.fspath(obj)
        arrow = pq.read_schema(path)
        md = {k.decode(): v.decode() for k, v in (arrow.metadata or {}).items()}
        return dict(pl.read_parquet_schema(path)), None, md, path
    if isinstance(obj, Mapping):
        return dict(obj), None, None, None
    try:  # pyarrow Schema / Table
        import pyarrow as pa

        if isinstance(obj, pa.Table):
            return _read(pl.from_arrow(obj))
        if isinstance(obj, pa.Schema):  # metadata is checked for files only
            frame = pl.from_arrow(obj.empty_table())
            assert isinstance(frame, pl.DataFrame)
            return dict(frame.schema), None, None, None
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pass
    raise SchemaError(f"cannot validate a {type(obj).__name__}: pass a frame, a schema or a parquet path")


def validate(frame_or_schema: Any, kind: str) -> None:
    """Check an output against its declaration; raise :class:`SchemaError` naming the column.

    ``frame_or_schema``: a DataFrame (columns, dtypes and nulls in non-nullable columns are
    checked), a LazyFrame / ``pl.Schema`` / mapping / pyarrow schema (columns and dtypes), or a
    parquet file or output folder (every ``*.parquet`` in it: columns, dtypes and the declared
    metadata keys).  Missing
    always-written columns, extra undeclared columns and wrong dtypes are errors.
    """
    decl = output_schema(kind)
    if isinstance(frame_or_schema, (str, os.PathLike)) and os.path.isdir(frame_or_schema):
        folder = os.fspath(frame_or_schema)
        files = sorted(f for f in os.listdir(folder) if f.endswith(".parquet") and not f.startswith("."))
        if not files:
            raise SchemaError(f"{kind}: no parquet files in the output folder", path=folder)
        for f in files:  # every part (schemas only: cheap)
            validate(os.path.join(folder, f), kind)
        return
    schema, frame, metadata, path = _read(frame_or_schema)
    seen: dict[str, list[str]] = {}
    for name, dtype in schema.items():
        col = decl.match(name)
        if col is None:
            raise SchemaError(f"{kind}: extra column {name!r} is not declared", path=path, column=name)
        seen.setdefault(col.name, []).append(name)
        if dtype != col.dtype:
            raise SchemaError(
                f"{kind}: column {name!r} has dtype {dtype}, declared {_dtype_name(col.dtype)}",
                path=path,
                column=name,
            )
        if frame is not None and not col.nullable and frame.get_column(name).null_count():
            raise SchemaError(f"{kind}: column {name!r} holds nulls, declared not nullable", path=path, column=name)
    for col in decl.columns:
        if col.when is None and col.name not in seen:
            raise SchemaError(f"{kind}: missing column {col.name!r}", path=path, column=col.name)
    for group in decl.exactly_one_of:
        present = [g for g in group if g in seen]
        if len(present) != 1:
            raise SchemaError(
                f"{kind}: needs exactly one of {list(group)}, found {present or 'none'}",
                path=path,
                column=group[0],
            )
    if metadata is not None:
        for key in decl.metadata:
            if key not in metadata:
                raise SchemaError(f"{kind}: parquet metadata lacks key {key!r}", path=path)


def output_reference_markdown() -> str:
    """The README's "Output reference" section body, generated from :data:`OUTPUTS`."""
    lines = [
        "Every result kind is declared once in `polgen/schema/` (`polgen.schema.OUTPUTS`) and tests",
        "validate each method's output against it (`polgen.schema.validate(frame_or_path, kind)`).",
        "`{x}` in a name stands for one column per trait / covariate / gene / modulator; `[...]` is a",
        "part present only in some runs (see the kind's note). *When* empty: always written.",
        "",
    ]
    for s in OUTPUTS.values():
        lines.append(f"### `{s.kind}`: {s.title}")
        lines.append("")
        lines.append(f"Produced by {s.produced_by}.")
        extra = []
        if s.exactly_one_of:
            extra.append("exactly one of " + " / ".join(", ".join(f"`{g}`" for g in grp) for grp in s.exactly_one_of))
        if s.metadata:
            extra.append("parquet metadata keys " + ", ".join(f"`{k}`" for k in s.metadata))
        if s.note:
            extra.append(s.note.rstrip("."))
        if extra:
            lines.append(" ".join(e[0].upper() + e[1:].rstrip(".") + "." for e in extra))
        lines.append("")
        lines.append("| column | dtype | nullable | when | meaning |")
        lines.append("|---|---|---|---|---|")
        for c in s.columns:
            name = c.name.replace("|", "\\|")
            lines.append(
                f"| `{name}` | {_dtype_name(c.dtype)} | {'yes' if c.nullable else 'no'} | {c.when or ''} "
                f"| {c.meaning.replace('|', chr(92) + '|')} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


__all__ = [
    "A1",
    "A1FREQ",
    "A2",
    "BETA",
    "BETA0",
    "BETA_PREFIX",
    "BP",
    "CELL_ID",
    "CHR",
    "CLUSTER",
    "Column",
    "DIRECTION",
    "DTYPES",
    "INFO",
    "LOG10P",
    "MAF",
    "META_METHOD",
    "META_PARAMS",
    "META_VERSION",
    "N",
    "N_MISS",
    "OR",
    "OUTPUTS",
    "OutputSchema",
    "P",
    "SE",
    "SNP",
    "SNP_ID_COLUMNS",
    "Z",
    "output_reference_markdown",
    "output_schema",
    "validate",
]
