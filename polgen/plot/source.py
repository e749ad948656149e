"""Per-SNP results into one lazy layout for the GWAS pictures.

:func:`gwas_source` accepts a polgen run folder (``io/sink.py`` parts + manifest), a parquet file or
glob, a text table (PLINK2 ``.glm``, REGENIE ``.regenie``, GWAS-SSF ``.tsv``, plain TSV/CSV, gzip or
not), a DataFrame or a LazyFrame, and returns a :class:`GwasSource`: a LazyFrame with the columns
``_chr`` (String), ``_bp`` (Int64), ``_y`` (-log10 p, Float64) and ``_snp`` (String, may be null),
one series of tests (one gsem parameter, one LFMM covariate), and where it came from.  Nothing is
collected here except, for LFMM, the first rows of the calibrated P column (is it filled?).

Which columns are used:

* polgen Genomic SEM GWAS (``lhs, op, rhs, p, log10p``): one parameter per series, the SNP effect
  ``<lhs> ~ SNP`` by default; ``lhs=`` (or ``param="F1 ~ SNP"``) picks one when there are several;
* polgen LFMM (``P[_v]``, ``P_CALIBRATED[_v]``, ``LOG10P[_v]``): one covariate per series
  (``covariate=``), the calibrated P when the run calibrated (``calibrated=False`` for the raw one);
* any other table: chromosome, position, P (or -log10 P) and variant id by name, case-insensitive
  (:data:`CHROM_NAMES`, :data:`POS_NAMES`, :data:`P_NAMES`, :data:`LOG10P_NAMES`, :data:`ID_NAMES`);
  ``chrom_col=``, ``pos_col=``, ``p_col=``, ``snp_col=`` name them explicitly.

A table with no P column, two candidate columns for one role, or a named column that does not
exist raises :class:`~polgen.errors.SchemaError` listing the columns it has.
"""

from __future__ import annotations

import glob as _glob
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from polgen.errors import InputError, SchemaError
from polgen.io.sink import MANIFEST, SUCCESS, read_metadata
from polgen.io.sumstats import read_text_table

log = logging.getLogger("polgen")

CHROM_NAMES = ("CHR", "#CHROM", "CHROM", "CHROMOSOME", "#CHR", "CHR_NAME", "CHROM_ID")
POS_NAMES = ("BP", "POS", "GENPOS", "POSITION", "BASE_PAIR_LOCATION", "BP_HG19", "BP_HG38", "PS")
P_NAMES = (
    "P",
    "PVAL",
    "PVALUE",
    "P_VALUE",
    "P-VALUE",
    "P.VALUE",
    "P_VAL",
    "WALD_P",
    "P_BOLT_LMM",
    "P_BOLT_LMM_INF",
    "P_LRT",
    "P_WALD",
    "P_SCORE",
)
LOG10P_NAMES = ("LOG10P", "LOG10_P", "MLOG10P", "NEG_LOG_10_P_VALUE", "NEGLOG10P", "LOG10PVAL")
ID_NAMES = ("SNP", "ID", "RSID", "VARIANT_ID", "MARKERNAME", "SNPID", "RS_ID", "MARKER", "RS")

TEXT_SUFFIXES = (
    ".tsv",
    ".txt",
    ".csv",
    ".gz",
    ".glm",
    ".regenie",
    ".linear",
    ".logistic",
    ".assoc",
    ".hybrid",
    ".firth",
    ".ma",
    ".sumstats",
)


@dataclass
class GwasSource:
    """One series of per-SNP tests in the plotting layout (see the module docs)."""

    lf: pl.LazyFrame
    label: str
    columns: dict[str, str | None]  # role -> the input column used
    path: str | None = None
    series: list[str] = field(default_factory=list)  # every series the input holds
    kind: str = "table"  # "gsem", "lfmm" or "table"


# -- reading -------------------------------------------------------------------------------------
def run_files(folder: Path) -> list[Path]:
    """The parquet files of a polgen run folder (recorded parts, manifest order) or of any folder."""
    manifest = folder / MANIFEST
    if manifest.exists():
        files: dict[int, str] = {}
        for k, line in enumerate(manifest.read_text().splitlines()):
            if not line.strip() or k == 0:
                continue
            try:
                rec = json.loads(line)
                files[int(rec["batch"])] = str(rec["file"])
            except (ValueError, KeyError, TypeError):
                log.warning("skipping an unreadable manifest line %d of %s", k + 1, manifest)
        out = [folder / files[b] for b in sorted(files) if (folder / files[b]).exists()]
        if out:
            return out
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def run_params(path: str | os.PathLike) -> dict[str, Any]:
    """The parameters of a run: the manifest header of a run folder, else the ``polgen.params``
    key-value metadata of a parquet file (empty when there are none)."""
    p = Path(path)
    if p.is_dir():
        manifest = p / MANIFEST
        if manifest.exists():
            first = manifest.read_text().split("\n", 1)[0]
            try:
                head = json.loads(first)
                return dict(head.get("params") or {})
            except (ValueError, AttributeError):
                return {}
        files = run_files(p)
        if not files:
            return {}
        p = files[0]
    try:
        meta = read_metadata(p)
    except (InputError, OSError, ValueError):
        return {}
    try:
        return dict(json.loads(meta.get("polgen.params", "{}")))
    except ValueError:
        return {}


def run_method(path: str | os.PathLike) -> str | None:
    """``polgen.method`` of a run (``_SUCCESS`` metadata, manifest params or file metadata)."""
    p = Path(path)
    if p.is_dir() and (p / SUCCESS).exists():
        try:
            m = json.loads((p / SUCCESS).read_text()).get("metadata", {}).get("polgen.method")
            if m:
                return str(m)
        except ValueError:
            pass
    m = run_params(p).get("method")
    if m:
        return str(m)
    if p.is_file():
        try:
            return read_metadata(p).get("polgen.method")
        except (InputError, OSError, ValueError):
            return None
    return None


def _is_parquet(p: Path) -> bool:
    if p.suffix.lower() in (".parquet", ".pq"):
        return True
    try:
        with open(p, "rb") as fh:
            return fh.read(4) == b"PAR1"
    except OSError:
        return False


def _scan_text(p: Path) -> pl.LazyFrame:
    """A text table lazily when polars can stream it (plain, one-character delimiter), else read."""
    with open(p, "rb") as fh:
        head = fh.read(1 << 16)
    if head[:2] == b"\x1f\x8b":
        return read_text_table(p).drop("__row").lazy()
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    sep = "\t" if b"\t" in line else "," if b"," in line else " "
    if sep == " " and (line != line.strip() or b"  " in line):
        return read_text_table(p).drop("__row").lazy()  # runs of blanks: normalised in memory
    return pl.scan_csv(
        p,
        separator=sep,
        null_values=["", ".", "NA", "NaN", "nan", "NAN", "na"],
        infer_schema_length=10000,
        quote_char='"',
    )


def scan_any(results: Any) -> tuple[pl.LazyFrame, str | None]:
    """A LazyFrame over a frame, a run folder, a parquet file / glob or a text table."""
    if isinstance(results, pl.LazyFrame):
        return results, None
    if isinstance(results, pl.DataFrame):
        return results.lazy(), None
    if not isinstance(results, (str, os.PathLike)):
        raise InputError(
            f"cannot plot a {type(results).__name__}: pass a DataFrame, a LazyFrame, a polgen "
            "run folder, a parquet file or a text table"
        )
    text = os.fspath(results)
    p = Path(text)
    if p.is_dir():
        files = run_files(p)
        if not files:
            raise InputError("the folder holds no parquet result files", path=p)
        return pl.scan_parquet([str(f) for f in files]), text
    if any(ch in text for ch in "*?["):
        matches = sorted(_glob.glob(text))
        if not matches:
            raise InputError("no file matches the pattern", path=text)
        if all(_is_parquet(Path(m)) for m in matches):
            return pl.scan_parquet(matches), text
        return pl.concat([_scan_text(Path(m)) for m in matches], how="diagonal_relaxed"), text
    if not p.exists():
        raise InputError("no such file or folder", path=p)
    if _is_parquet(p):
        return pl.scan_parquet(p), text
    return _scan_text(p), text


# -- columns -------------------------------------------------------------------------------------
def _find(
    columns: Sequence[str],
    names: Sequence[str],
    role: str,
    path: str | None,
    given: str | None = None,
    required: bool = True,
) -> str | None:
    if given is not None:
        if given not in columns:
            raise SchemaError(f"no column {given!r} for the {role}; columns: {list(columns)}", path=path, column=given)
        return given
    upper: dict[str, list[str]] = {}
    for c in columns:
        upper.setdefault(c.upper(), []).append(c)
    for name in names:  # the first name of the list that is present wins (CHR before CHROM, ...)
        hits = upper.get(name, [])
        if len(hits) > 1:
            raise SchemaError(f"ambiguous {role} columns {hits}; name one explicitly", path=path)
        if hits:
            return hits[0]
    if required:
        raise SchemaError(
            f"no {role} column (looked for {list(names)}); columns: {list(columns)}; name it explicitly", path=path
        )
    return None


_LFMM_P = re.compile(r"^P(?:_CALIBRATED)?(?:_(.+))?$")


def _lfmm_covariates(columns: Sequence[str]) -> list[str]:
    """Covariates of an LFMM result: '' for the single-covariate layout (``P``), else the names."""
    cols = set(columns)
    if "P" in cols:
        return [""]
    out = []
    for c in columns:
        if c.startswith("P_") and not c.startswith("P_CALIBRATED") and c not in ("P_F", "P_F_CALIBRATED"):
            v = c[2:]
            if f"T_{v}" in cols or f"BETA_{v}" in cols:
                out.append(v)
    return out


def _is_lfmm(columns: Sequence[str]) -> bool:
    cols = set(columns)
    return (
        "MONOMORPHIC" in cols
        or any(c.startswith("P_CALIBRATED") for c in cols)
        or (any(c == "T" or c.startswith("T_") for c in cols) and any(_LFMM_P.match(c) for c in cols))
    )


def _filled(lf: pl.LazyFrame, column: str, rows: int = 20000) -> bool:
    return bool(lf.select(pl.col(column)).head(rows).select(pl.col(column).is_not_null().any()).collect().item())


def series_of(results: Any) -> list[dict[str, str]]:
    """The series a result holds, each as the keyword arguments that select it in
    :func:`gwas_source`: ``[{"param": "F1 ~ SNP"}, ...]`` (gsem: the SNP effects, else every
    parameter), ``[{"covariate": "temp"}, ...]`` (LFMM) or ``[{}]`` (one series)."""
    lf, _ = scan_any(results)
    columns = lf.collect_schema().names()
    if {"lhs", "op", "rhs", "p"} <= set(columns):
        params = lf.select("lhs", "op", "rhs").unique().sort("lhs", "op", "rhs").collect(engine="streaming")
        names = [f"{a} {o} {b}" for a, o, b in params.iter_rows()]
        return [{"param": s} for s in ([s for s in names if s.endswith(" ~ SNP")] or names)]
    if _is_lfmm(columns):
        return [{"covariate": v} for v in _lfmm_covariates(columns)]
    return [{}]


def _mlog10(p: str, log10p: str | None) -> pl.Expr:
    """-log10 p from a P column; where P underflows to 0, the matching -log10 column."""
    y = -pl.col(p).cast(pl.Float64).log10()
    if log10p is not None:
        y = pl.when(pl.col(p) > 0).then(y).otherwise(pl.col(log10p).cast(pl.Float64))
    return y


def gwas_source(
    results: Any,
    *,
    p_col: str | None = None,
    log10p_col: str | None = None,
    chrom_col: str | None = None,
    pos_col: str | None = None,
    snp_col: str | None = None,
    lhs: str | None = None,
    param: str | None = None,
    covariate: str | None = None,
    calibrated: bool = True,
    need_position: bool = True,
) -> GwasSource:
    """Resolve ``results`` into one series of per-SNP tests (see the module docs)."""
    lf, path = scan_any(results)
    try:
        columns = lf.collect_schema().names()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the results: {str(exc).splitlines()[0]}", path=path) from None
    chrom = _find(columns, CHROM_NAMES, "chromosome", path, chrom_col, required=need_position)
    pos = _find(columns, POS_NAMES, "position", path, pos_col, required=need_position)
    snp = _find(columns, ID_NAMES, "variant id", path, snp_col, required=False)
    filt: pl.Expr | None = None
    p: str | None
    log10p: str | None
    series: list[str] = []
    kind = "table"
    label = ""
    explicit = p_col is not None or log10p_col is not None
    if not explicit and {"lhs", "op", "rhs", "p"} <= set(columns):
        kind = "gsem"
        params = lf.select("lhs", "op", "rhs").unique().sort("lhs", "op", "rhs").collect(engine="streaming")
        series = [f"{a} {o} {b}" for a, o, b in params.iter_rows()]
        snp_effects = [s for s in series if s.endswith(" ~ SNP")]
        if param is not None:
            if param not in series:
                raise InputError(f"parameter {param!r} not in the results; they hold {series}", path=path)
            chosen = param
        elif lhs is not None:
            cand = [s for s in (snp_effects or series) if s.split(" ", 1)[0] == lhs]
            if not cand:
                raise InputError(f"no parameter with lhs {lhs!r}; the results hold {series}", path=path)
            chosen = cand[0]
        elif len(snp_effects) == 1 or (not snp_effects and len(series) == 1):
            chosen = (snp_effects or series)[0]
        else:
            raise InputError(
                f"the results hold several parameters {snp_effects or series}; choose one with lhs= or param=",
                path=path,
            )
        a, o, b = chosen.split(" ", 2)
        filt = (pl.col("lhs") == a) & (pl.col("op") == o) & (pl.col("rhs") == b)
        p, log10p = "p", ("log10p" if "log10p" in columns else None)
        label = chosen
    elif not explicit and _is_lfmm(columns):
        kind = "lfmm"
        series = _lfmm_covariates(columns)
        if not series:
            raise SchemaError(f"an LFMM result without P columns; columns: {columns}", path=path)
        if covariate is None:
            if len(series) > 1:
                raise InputError(f"the results hold several covariates {series}; choose one with covariate=", path=path)
            covariate = series[0]
        if covariate not in series:
            raise InputError(f"covariate {covariate!r} not in the results; they hold {series}", path=path)
        sfx = f"_{covariate}" if covariate else ""
        raw, cal = f"P{sfx}", f"P_CALIBRATED{sfx}"
        use_cal = calibrated and cal in columns and _filled(lf, cal)
        p = cal if use_cal else raw
        # LOG10P is -log10 of the calibrated P when the run calibrated, of P otherwise
        log10p = (
            f"LOG10P{sfx}"
            if f"LOG10P{sfx}" in columns and (use_cal or cal not in columns or not _filled(lf, cal))
            else None
        )
        label = p  # the column drawn: P_CALIBRATED[_v] or P[_v]
        series = [s or "P" for s in series]
    else:
        p = _find(
            columns,
            ("P_CALIBRATED", *P_NAMES),
            "P",
            path,
            p_col,
            required=log10p_col is None and not any(c.upper() in LOG10P_NAMES for c in columns),
        )
        log10p = (
            _find(columns, LOG10P_NAMES, "-log10 P", path, log10p_col, required=False)
            if (p is None or log10p_col is not None)
            else None
        )
        if p is None and log10p is None:
            raise SchemaError(f"no P column; columns: {columns}", path=path)
        label = p or log10p or ""
    y = _mlog10(p, log10p) if p is not None else pl.col(str(log10p)).cast(pl.Float64)
    sel = [
        (pl.col(chrom).cast(pl.String) if chrom else pl.lit(None, pl.String)).alias("_chr"),
        (pl.col(pos).cast(pl.Int64, strict=False) if pos else pl.lit(None, pl.Int64)).alias("_bp"),
        y.alias("_y"),
        (pl.col(p).cast(pl.Float64) if p is not None else pl.lit(None, pl.Float64)).alias("_p"),
        (pl.col(snp).cast(pl.String) if snp is not None else pl.lit(None, pl.String)).alias("_snp"),
    ]
    out = lf.filter(filt) if filt is not None else lf
    roles = {"chrom": chrom, "pos": pos, "p": p, "log10p": log10p, "snp": snp}
    return GwasSource(lf=out.select(sel), label=label, columns=roles, path=path, series=series, kind=kind)


# -- chromosomes ---------------------------------------------------------------------------------
_SEX = {"X": 0, "Y": 1, "XY": 2, "PAR": 2, "PAR1": 2, "PAR2": 2, "M": 3, "MT": 3, "MITO": 3}
_SEX_LABEL = ("X", "Y", "XY", "MT")
UNKNOWN_CHROM = ("error", "drop", "last")


def chrom_order(
    names: Sequence[str], unknown: str = "error", *, path: str | None = None
) -> tuple[dict[str, int], list[str], list[str]]:
    """Order chromosome names: numeric ones ascending, then X, Y, XY (PAR), MT; a ``chr`` prefix
    is ignored.  Returns ``(name -> code 0.., labels by code, dropped names)``.

    Names that are none of these (``chrUn_...``, ``6_ssto_hap7``, contig accessions) raise
    :class:`InputError` (``unknown="error"``), are dropped (``"drop"``, with a warning) or go last in
    sorted order (``"last"``).
    """
    if unknown not in UNKNOWN_CHROM:
        raise InputError(f"unknown_chrom must be one of {UNKNOWN_CHROM}, got {unknown!r}")
    keyed: dict[str, tuple] = {}
    labels: dict[tuple, str] = {}
    bad: list[str] = []
    for name in names:
        if name is None:
            continue
        s = str(name).strip()
        core = re.sub(r"^chr", "", s, flags=re.IGNORECASE).upper()
        if core.isdigit():
            key: tuple = (0, int(core), "")
            lab = str(int(core))
        elif core in _SEX:
            key = (1, _SEX[core], "")
            lab = _SEX_LABEL[_SEX[core]]
        else:
            bad.append(s)
            continue
        keyed[name] = key
        labels.setdefault(key, lab)
    dropped: list[str] = []
    if bad:
        shown = sorted(bad)[:8]
        if unknown == "error":
            raise InputError(
                f"unknown chromosome name(s) {shown}{' ...' if len(bad) > 8 else ''}; pass "
                "unknown_chrom='last' to draw them after MT or 'drop' to leave them out",
                path=path,
            )
        if unknown == "drop":
            log.warning("dropping SNPs on %d unknown chromosome(s): %s", len(bad), shown)
            dropped = bad
        else:
            for s in bad:
                key = (2, 0, s)
                keyed[s] = key
                labels.setdefault(key, s)
    order = sorted(set(keyed.values()))
    code = {k: i for i, k in enumerate(order)}
    return {n: code[k] for n, k in keyed.items()}, [labels[k] for k in order], dropped
