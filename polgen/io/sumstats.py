"""Read GWAS summary statistics of any common layout into a frame with canonical column names.

``scan_sumstats`` accepts whitespace-, tab- or comma-delimited text (optionally gzip-compressed;
the delimiter is sniffed from the header line), parquet files, a glob of either (the matches are
concatenated in sorted order), or an in-memory Polars frame.  Column names are matched
case-insensitively against an alias table modelled on R GenomicSEM's
``.get_renamed_colnames`` (see :data:`ALIASES`):

* a column already carrying the canonical name wins, other aliases of it are left untouched;
* otherwise exactly one alias must be present — two or more raise :class:`SchemaError`, with one
  exception: several SNP-id columns of which one is spelled ``rsid`` (GWAS Catalog GWAS-SSF files
  carry both ``rsid`` and ``variant_id`` by design) read ``rsid`` as ``SNP`` — LD scores and
  HapMap3 lists are keyed by rs ids — and keep the others under their own names;
* ``NEFF_HALF`` / ``NEFFDIV2`` (effective N cut in half) are doubled into ``N``;
* without a P column, ``neg_log_10_p_value`` (GWAS-SSF) / ``LOG10P`` (REGENIE) give ``P = 10^-x``;
  where P is below the double range (x > 323.3, or P text such as ``1.5e-400``) P reads as 0 with
  -log10 P kept in :data:`NEG_LOG10_P`, from which munge / sumstats take Z exactly;
* tools' own layouts: PLINK2 ``--glm`` (``A1`` + ``OMITTED`` / ``AX``: the other allele is that, never
  ``REF``; without ``OMITTED`` (older PLINK 2 / default columns) the other allele is ``ALT`` on rows
  where ``A1`` is ``REF`` and ``REF`` elsewhere), REGENIE (``ALLELE1`` / ``ALLELE0``, ``LOG10P``),
  BOLT-LMM (``P_BOLT_LMM`` over ``P_BOLT_LMM_INF``), SAIGE (``BETA`` is Allele2's: ``Allele2`` is
  read as A1, ``AF_Allele2`` as its frequency); see :data:`PREFERRED`, :data:`SAIGE_COLUMNS`;
* a ``chr`` prefix of chromosome names is dropped (``chr1`` -> ``1``);
* a ``TEST`` column (PLINK 1.9 / PLINK 2 ``--glm``, REGENIE) with tests other than ``ADD`` (covariate
  rows, dominant / recessive / interaction tests) keeps the ``ADD`` rows only; a file without
  ``ADD`` rows raises :class:`SchemaError`;
* PLINK 1.9's ``NMISS`` (like PLINK 2's ``OBS_CT``) is the per-variant ``N``.

Canonical numeric columns (``BP``, ``BETA``, ``OR``, ``Z``, ``SE``, ``P``, ``N``, ``MAF``,
``INFO``) are parsed as numbers; a value that is neither a number nor a missing-value token
(``""``, ``"."``, ``"NA"``, GWAS-SSF's ``"#NA"``, ``"NaN"``; BOLT-LMM's ``-nan`` reads as NaN)
raises :class:`InputError` naming the file, the column and the first bad data row (1-based, the
header not counted).  Identity columns (``SNP``, ``CHR``,
``A1``, ``A2``) are strings.  Unrecognised columns are kept under their original names.

Frequencies (``MAF``, ``FRQ``, ``FREQ``, ``EAF``, ``A1FREQ``, ...) all land in ``MAF`` exactly as
written in the file; folding to the minor allele is left to the methods (``munge``,
``sumstats``), as in R.  ``ALT`` is read as the effect allele ``A1`` and ``REF`` as ``A2``
(R GenomicSEM reads them the other way round; a warning is logged when these aliases are used).

GWAS-SSF (the GWAS Catalog's summary-statistics format: ``chromosome``, ``base_pair_location``,
``effect_allele``, ``other_allele``, ``beta`` / ``odds_ratio``, ``standard_error``,
``effect_allele_frequency``, ``p_value``, ``variant_id``, ``rsid``, ``info``, ``n``, ...) is read
through the same table: ``effect_allele`` is A1, ``other_allele`` A2, ``rsid`` the SNP.

Error messages list a file's columns as the file spells them; the reader's internal row-number
column (``__row``) never appears in them.
"""

from __future__ import annotations

import glob as _glob
import io
import logging
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from polgen import schema as S
from polgen.errors import InputError, SchemaError

log = logging.getLogger("polgen")

#: an eager or a lazy frame; the function returns the same kind
_Frame = TypeVar("_Frame", pl.DataFrame, pl.LazyFrame)

#: canonical name -> accepted spellings (upper case; the canonical name itself first)
ALIASES: dict[str, tuple[str, ...]] = {
    S.SNP: (
        "SNP",
        "SNPID",
        "RSID",
        "RS_NUMBER",
        "RS_NUMBERS",
        "MARKERNAME",
        "MARKER",
        "ID",
        "PREDICTOR",
        "SNP_ID",
        "VARIANTID",
        "VARIANT_ID",
        "RSIDS",
        "RS_ID",
        "MARKERID",
    ),
    S.A1: ("A1", "ALLELE1", "EFFECT_ALLELE", "INC_ALLELE", "REFERENCE_ALLELE", "EA", "ALT"),
    S.A2: (
        "A2",
        "ALLELE2",
        "ALLELE0",
        "OTHER_ALLELE",
        "NON_EFFECT_ALLELE",
        "DEC_ALLELE",
        "OA",
        "NEA",
        "A0",
        "REF",
        "OMITTED",
        "AX",
    ),
    S.BETA: ("BETA", "B", "LOG_ODDS", "LOGOR", "EFFECTS", "EFFECT", "SIGNED_SUMSTAT", "EST", "BETA1"),
    S.OR: ("OR", "ODDS_RATIO"),
    S.Z: ("Z", "ZSCORE", "Z-SCORE", "ZSTATISTIC", "ZSTAT", "Z-STATISTIC", "Z_STAT"),
    S.SE: ("SE", "STDERR", "STDERRLOGOR", "SEBETA", "STANDARDERROR", "STANDARD_ERROR", "LOG_OR_SE", "LOG(OR)_SE"),
    S.P: (
        "P",
        "PVALUE",
        "PVAL",
        "P_VALUE",
        "P-VALUE",
        "P.VALUE",
        "P_VAL",
        "GC_PVALUE",
        "WALD_P",
        "P_BOLT_LMM",
        "P_BOLT_LMM_INF",
    ),
    S.N: (
        "N",
        "WEIGHT",
        "NCOMPLETESAMPLES",
        "TOTALSAMPLESIZE",
        "TOTALN",
        "TOTAL_N",
        "N_COMPLETE_SAMPLES",
        "SAMPLESIZE",
        "NEFF",
        "N_EFF",
        "N_EFFECTIVE",
        "SUMNEFF",
        "OBS_CT",
        "NMISS",
    ),
    S.MAF: (
        "MAF",
        "FRQ",
        "FREQ",
        "EAF",
        "FREQ1",
        "CEUAF",
        "FREQ1.HAPMAP",
        "FREQALLELE1HAPMAPCEU",
        "FREQ.ALLELE1.HAPMAPCEU",
        "EFFECT_ALLELE_FREQ",
        "FREQ.A1",
        "A1FREQ",
        "A1_FREQ",
        "ALLELEFREQ",
        "EFFECT_ALLELE_FREQUENCY",
    ),
    S.INFO: ("INFO", "IMPINFO", "IMPUTATIONINFO"),
    S.DIRECTION: ("DIRECTION", "DIREC", "DIRE", "SIGN"),
    S.CHR: ("CHR", "CHROM", "#CHROM", "CHROMOSOME"),
    S.BP: ("BP", "POS", "POSITION", "GENPOS", "BASE_PAIR_LOCATION"),
}

#: among several SNP-id columns, this spelling is read as SNP (GWAS-SSF has rsid and variant_id)
PREFERRED_SNP = "RSID"

#: when several aliases of one column are present, the first of these present wins (documented tools'
#: layouts): PLINK2 --glm writes REF, ALT, A1 and OMITTED (AX in PLINK 2.00a3's cols=+ax) - A1 may be
#: REF or ALT, so the other allele is OMITTED / AX; BOLT-LMM writes P_BOLT_LMM_INF and, when it fits the
#: non-infinitesimal model, P_BOLT_LMM (the one its manual recommends)
PREFERRED = {S.SNP: (PREFERRED_SNP,), S.A2: ("OMITTED", "AX"), S.P: ("P_BOLT_LMM",)}

#: SAIGE's BETA is the effect of Allele2 (its AC_Allele2 / AF_Allele2 columns say so): in a file with
#: these columns Allele2 is read as A1 and Allele1 as A2, and AF_Allele2 is the effect-allele frequency
SAIGE_SIGNATURE = ("AC_ALLELE2", "AF_ALLELE2")
SAIGE_COLUMNS = {S.A1: "ALLELE2", S.A2: "ALLELE1", S.MAF: "AF_ALLELE2"}

#: columns holding half the effective sample size; doubled into N (as R GenomicSEM does)
HALF_N_ALIASES = ("NEFF_HALF", "NEFFDIV2")

#: columns holding -log10 P (GWAS-SSF neg_log_10_p_value, REGENIE LOG10P); read as P = 10^-x when
#: the file has no P column
NEG_LOG10_P_ALIASES = ("NEG_LOG_10_P_VALUE", "LOG10P", "MLOG10P", "NEG_LOG10_P")
#: -log10 P beside P where P may lie below the double range (P = 0 there): from a -log10 P column,
#: or from P written as text such as ``1.5e-400``; munge / sumstats take Z from it where P is 0
NEG_LOG10_P = "NEG_LOG10_P"

NUMERIC = (S.BP, S.BETA, S.OR, S.Z, S.SE, S.P, S.N, S.MAF, S.INFO)
STRINGS = (S.SNP, S.CHR, S.A1, S.A2, S.DIRECTION)
#: missing-value tokens; "#NA" is the one the GWAS-SSF specification recommends
NA_TOKENS = ("", ".", "NA", "#NA", "NaN", "nan", "NAN", "na", "N/A")

#: PLINK 1.9 / PLINK 2 --glm and REGENIE write one row per variant and test (TEST = ADD, DOM, REC,
#: a covariate's name, ADD-INT_..., ...); only the additive test's rows are the SNP's effect
TEST_COLUMN = "TEST"
ADDITIVE_TEST = "ADD"

ROW = "__row"  # 1-based data-row number kept by readers that validate (dropped by scan_sumstats)


# ---------------------------------------------------------------------------------------------
# column resolution
# ---------------------------------------------------------------------------------------------
def resolve_columns(
    columns: Sequence[str],
    *,
    path: str | None = None,
    required: Iterable[str] = (),
    warn: bool = True,
    column_names: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Map original column names to canonical ones.  Returns {original: canonical} for renamed
    columns only (a canonical column that is already spelled canonically maps to itself).

    ``column_names`` ({canonical: column in the file}, R munge's ``column.names``; ``"effect"``
    means BETA) takes precedence over the alias table."""
    columns = [c for c in columns if c != ROW]  # the reader's row numbers are not the file's
    upper: dict[str, str] = {}
    for c in columns:
        u = c.strip().upper()
        if u in upper:
            raise SchemaError(
                f"columns {upper[u]!r} and {c!r} have the same name ignoring case; found columns {list(columns)}",
                path=path,
                column=c,
            )
        upper[u] = c
    mapping: dict[str, str] = {}
    used: set[str] = set()
    fixed: set[str] = set()
    for key, col in (column_names or {}).items():
        canon = S.BETA if key.lower() == "effect" else key.upper()
        if canon not in ALIASES:
            raise SchemaError(
                f"column_names key {key!r} is not one of effect, {', '.join(ALIASES)}", path=path, column=key
            )
        orig = upper.get(str(col).strip().upper())
        if orig is None:
            raise SchemaError(
                f"column_names maps {key} to {col!r}, which is not in the file; found columns {list(columns)}",
                path=path,
                column=str(col),
            )
        if canon in upper and upper[canon] != orig:
            raise SchemaError(
                f"column_names maps {key} to {col!r} but the file also has a {canon} column; rename one of them",
                path=path,
                column=canon,
            )
        mapping[orig] = canon
        used.add(orig)
        fixed.add(canon)
    if any(k in upper for k in SAIGE_SIGNATURE) and all(v in upper for v in SAIGE_COLUMNS.values()):
        saige = {canon: upper[col] for canon, col in SAIGE_COLUMNS.items() if canon not in fixed}
        saige = {k: v for k, v in saige.items() if k not in upper and v not in used}
        if saige:
            log.info("%s: SAIGE layout: BETA is the effect of Allele2, read as A1 (Allele1 as A2)", path or "sumstats")
        for canon, orig in saige.items():
            mapping[orig] = canon
            used.add(orig)
            fixed.add(canon)
    half = [upper[h] for h in HALF_N_ALIASES if h in upper]
    neglog = [upper[h] for h in NEG_LOG10_P_ALIASES if h in upper]
    for canon, aliases in ALIASES.items():
        if canon in fixed:
            continue
        if canon in upper and upper[canon] not in used:
            mapping[upper[canon]] = canon
            used.add(upper[canon])
            continue
        found = [upper[a] for a in aliases[1:] if a in upper and upper[a] not in used]
        if canon == S.N and not found and half:
            found = half[:1] if len(half) == 1 else half
        if canon == S.P and not found and neglog:
            found = neglog
        preferred = [upper[a] for a in PREFERRED.get(canon, ()) if a in upper and upper[a] in found]
        if len(found) > 1 and preferred:
            others = [c for c in found if c != preferred[0]]
            log.info(
                "%s: %s read from column %r (also present: %s, kept under their own names)",
                path or "sumstats",
                "SNP ids" if canon == S.SNP else canon,
                preferred[0],
                ", ".join(repr(c) for c in others),
            )
            found = preferred[:1]
        if len(found) > 1:
            raise SchemaError(
                f"ambiguous {canon} column: {found} all mean {canon}; rename or drop "
                f"all but one (found columns {list(columns)})",
                path=path,
                column=canon,
            )
        if found:
            mapping[found[0]] = canon
            used.add(found[0])
    plink2 = "A1" in upper and "ALT" in upper and upper["ALT"] not in mapping  # A2 settled per row
    if (
        warn
        and not plink2
        and (
            "ALT" in upper and mapping.get(upper["ALT"]) == S.A1 or "REF" in upper and mapping.get(upper["REF"]) == S.A2
        )
    ):
        log.warning(
            "%s: reading ALT as the effect allele A1 and REF as A2 (R GenomicSEM reads REF as "
            "A1); check that this is right for this file",
            path or "sumstats",
        )
    missing = [r for r in required if r not in mapping.values()]
    if missing:
        raise SchemaError(
            f"missing required column(s) {missing}; found columns {list(columns)} "
            f"(accepted spellings: " + "; ".join(f"{m}: {', '.join(ALIASES.get(m, (m,)))}" for m in missing) + ")",
            path=path,
            column=missing[0],
        )
    return mapping


# ---------------------------------------------------------------------------------------------
# text readers
# ---------------------------------------------------------------------------------------------
def _gunzip(raw: bytes) -> bytes:
    """Decompress every member of a gzip (or bgzip) stream in one pass per member."""
    out = []
    while raw:
        d = zlib.decompressobj(31)
        out.append(d.decompress(raw))
        if not d.eof:
            raise EOFError("compressed file ended before the end-of-stream marker was reached")
        raw = d.unused_data
        if raw and not raw.startswith(b"\x1f\x8b"):
            break  # trailing garbage/padding, as gzip tolerates
    return b"".join(out)


def _open_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            return _gunzip(raw)
        return raw
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read summary statistics: {exc}", path=path) from exc


def _sniff(header: bytes) -> str:
    if b"\t" in header:
        return "\t"
    if b"," in header:
        return ","
    return " "


def _normalise_blanks(data: bytes) -> bytes:
    """R's read.table: any run of blanks separates fields; leading/trailing blanks ignored."""
    return b"\n".join(b" ".join(line.split()) for line in data.splitlines() if line.strip())


def _padded(line: bytes) -> bool:
    line = line.rstrip(b"\r")
    return line != line.strip() or b"  " in line or b"\t" in line


def read_text_table(path: str | os.PathLike, overrides=None) -> pl.DataFrame:
    """Read a delimited text table (tab / comma / runs of whitespace; gzip or plain) with a 1-based
    data-row column ``__row``.  Columns are strings except those ``overrides(columns)`` maps to a
    dtype; if those fail to parse, everything is re-read as strings (the caller's validation then
    names the bad row)."""
    path = Path(path)
    data = _open_bytes(path)
    if not data or data.isspace():
        raise InputError("file is empty", path=path)
    nl = data.find(b"\n")
    header = data if nl < 0 else data[:nl]
    sep = _sniff(header.rstrip(b"\r"))
    if sep == " " and _padded(header):
        data = _normalise_blanks(data)
    kw: dict[str, Any] = dict(  # read_csv options shared by the three reads below
        separator=sep,
        infer_schema=False,
        quote_char='"',
        null_values=list(NA_TOKENS),
        truncate_ragged_lines=False,
        comment_prefix=None,
        raise_if_empty=True,
    )

    def parse(data: bytes) -> pl.DataFrame:
        cols = pl.read_csv(io.BytesIO(data), n_rows=0, **kw).columns
        types = overrides(cols) if overrides is not None else {}
        try:
            return pl.read_csv(io.BytesIO(data), schema_overrides=types or None, **kw)
        except pl.exceptions.ComputeError:
            if not types:
                raise
            return pl.read_csv(io.BytesIO(data), **kw)  # strings: validation names the bad row

    try:
        try:
            df = parse(data)
        except pl.exceptions.PolarsError:
            if sep != " ":
                raise
            df = parse(_normalise_blanks(data))  # runs of blanks inside the data lines
    except (pl.exceptions.PolarsError, OSError) as exc:  # ragged lines, bad quoting
        raise InputError(
            f"cannot parse summary statistics as {sep!r}-delimited text: {str(exc).splitlines()[0]}", path=path
        ) from exc
    df = df.rename({c: c.strip() for c in df.columns if c != c.strip()})
    return df.with_row_index(ROW, offset=1)


def _numeric_overrides(path, column_names=None):
    def fn(cols: list[str]) -> dict[str, type[pl.DataType]]:
        try:
            mapping = resolve_columns([c.strip() for c in cols], path=str(path), warn=False, column_names=column_names)
        except SchemaError:
            return {}
        stripped = {c.strip(): c for c in cols}
        # P stays text until _check_and_cast, which tells a P below the double range from a 0
        return {
            stripped[o]: (pl.Int64 if k == S.BP else pl.Float64)
            for o, k in mapping.items()
            if k in NUMERIC and k != S.P
        }

    return fn


def _standardise(
    frame: _Frame,
    *,
    path: str | None,
    required: Iterable[str],
    column_names: Mapping[str, str] | None = None,
) -> tuple[_Frame, dict[str, str]]:
    cols = [c for c in frame.collect_schema().names() if c != ROW]
    mapping = resolve_columns(cols, path=path, required=required, column_names=column_names)
    half = {c for c, k in mapping.items() if k == S.N and c.strip().upper() in HALF_N_ALIASES}
    neglog = [c for c, k in mapping.items() if k == S.P and c.strip().upper() in NEG_LOG10_P_ALIASES]
    by_upper = {c.strip().upper(): c for c in cols}
    plink2_other = (  # PLINK 2 --glm without OMITTED: A1 is REF or ALT, the other allele is the other one
        "ALT" in by_upper
        and mapping.get(by_upper.get("A1", "")) == S.A1
        and mapping.get(by_upper.get("REF", "")) == S.A2
        and by_upper["ALT"] not in mapping
    )
    frame = frame.rename(mapping)
    if plink2_other:
        log.info(
            "%s: PLINK 2 layout (REF, ALT, A1): the other allele is ALT where A1 is REF, else REF", path or "sumstats"
        )
        alt = pl.col(by_upper["ALT"]).cast(pl.String).str.strip_chars()
        a1, ref = pl.col(S.A1).cast(pl.String).str.strip_chars(), pl.col(S.A2).cast(pl.String).str.strip_chars()
        frame = frame.with_columns(pl.when(a1 == ref).then(alt).otherwise(ref).alias(S.A2))
    if neglog:
        log.info("%s: no P column; P = 10^-%s", path or "sumstats", neglog[0])
        x = pl.col(S.P).cast(pl.String).str.strip_chars() if frame.collect_schema()[S.P] == pl.String else pl.col(S.P)
        x = x.cast(pl.Float64, strict=False)
        # P = 10^-x underflows to 0 above x = 323.3: -log10 P is kept beside it (Z from it)
        frame = frame.with_columns(pl.lit(10.0).pow(-x).alias(S.P), x.alias(NEG_LOG10_P))
    if half:
        log.info(
            "%s: column %s holds half the effective sample size; doubling it into N",
            path or "sumstats",
            sorted(half)[0],
        )
        frame = frame.with_columns(pl.col(S.N).cast(pl.Float64, strict=False) * 2.0)
    return frame, mapping


def _additive_rows(frame: _Frame, *, path: str | None) -> _Frame:
    """Keep only the additive test's rows of a file with a ``TEST`` column (PLINK ``--glm`` without
    ``hide-covar`` writes a row per covariate, REGENIE ``--test dom`` / interaction tests add more):
    the other rows carry another term's BETA / P under the SNP's id.  A file without ``ADD`` rows
    raises :class:`SchemaError` naming the tests it holds."""
    names = [c for c in frame.collect_schema().names() if c.strip().upper() == TEST_COLUMN]
    if len(names) != 1:
        return frame
    test = pl.col(names[0]).cast(pl.String).str.strip_chars()
    tests = frame.select(test.unique().drop_nulls().sort())
    values = (tests.collect() if isinstance(tests, pl.LazyFrame) else tests).to_series().to_list()
    if values == [ADDITIVE_TEST]:
        return frame
    if ADDITIVE_TEST not in values:
        raise SchemaError(
            f"column {names[0]} holds the tests {values[:10]} but no additive ({ADDITIVE_TEST}) rows; "
            "polgen reads the additive test's effects only",
            path=path,
            column=names[0],
        )
    log.info(
        "%s: column %s holds the tests %s; reading the %s rows only",
        path or "sumstats",
        names[0],
        ", ".join(values[:10]),
        ADDITIVE_TEST,
    )
    return frame.filter(test == ADDITIVE_TEST)


def _check_and_cast(df: pl.DataFrame, *, path: str | None) -> pl.DataFrame:
    """Cast canonical columns to their dtypes; a non-numeric entry raises naming the first bad row."""
    exprs = []
    checks = []
    schema = df.schema
    for c in NUMERIC:
        if c not in schema:
            continue
        dt = S.DTYPES[c]
        if schema[c] == pl.String:
            raw = pl.col(c).str.strip_chars()
            num = raw.cast(pl.Float64, strict=False)
            bad = raw.is_not_null() & ~raw.is_in(list(NA_TOKENS)) & num.is_null()
            checks.append(bad.arg_true().first().alias(c))
            if dt == pl.Int64:
                num = num.cast(pl.Int64, strict=False)
            exprs.append(pl.when(raw.is_in(list(NA_TOKENS))).then(None).otherwise(num).alias(c))
        elif schema[c].is_numeric() or schema[c] == pl.Boolean or schema[c] == pl.Null:
            exprs.append(pl.col(c).cast(dt, strict=False))
        else:
            raise SchemaError(f"column {c} has type {schema[c]}, expected numbers", path=path, column=c)
    for c in STRINGS:
        if c in schema:
            e = pl.col(c).cast(pl.String)
            if schema[c] == pl.String:
                e = e.str.strip_chars()
            if c == S.CHR:  # chr1 / CHR1 / chrX -> 1 / X (UCSC-style names, as in SAIGE and many VCF-based files)
                e = e.str.replace(r"^(?i)chr", "")
            exprs.append(e)
    if checks:
        res = df.select(checks).row(0)
        for c, idx in zip([c for c in NUMERIC if c in schema and schema[c] == pl.String], res):
            if idx is not None:
                row = df[ROW][idx] if ROW in df.columns else idx + 1
                raise InputError(f"non-numeric value {df[c][idx]!r} in column {c}", path=path, column=c, row=row)
    if S.P in schema and schema[S.P] == pl.String:  # a P written below the smallest double reads as 0
        raw = pl.col(S.P).str.strip_chars()
        nonzero = raw.str.replace(r"[eE].*$", "").str.contains(r"[1-9]")
        under = (raw.cast(pl.Float64, strict=False) == 0) & nonzero
        if df.select(under.any()).item():
            # mantissa and exponent of the text: -log10 P = -(log10 m + e), kept beside P = 0
            m = raw.str.extract(r"^\+?([0-9]*\.?[0-9]+)[eE]", 1).cast(pl.Float64, strict=False)
            e = raw.str.extract(r"[eE]([-+]?[0-9]+)$", 1).cast(pl.Float64, strict=False)
            neglog = pl.when(under).then(-(m.log10() + e)).otherwise(None)
            bad = df.select((under & ~neglog.is_finite().fill_null(False)).arg_true().first()).item()
            if bad is not None:
                raise _underflow(df, bad, repr(df[S.P][bad].strip()), path, S.P)
            if NEG_LOG10_P not in schema:
                exprs.append(neglog.alias(NEG_LOG10_P))
    return df.with_columns(exprs) if exprs else df


def _underflow(df: pl.DataFrame, idx: int, value: str, path: str | None, column: str) -> InputError:
    row = df[ROW][idx] if ROW in df.columns else idx + 1
    return InputError(
        f"P value {value} is below the smallest positive double (about 5e-324) and is not written as "
        "mantissa and exponent (such as 1.5e-400), so polgen cannot read it",
        path=path,
        column=column,
        row=row,
    )


def _expand(path_or_glob: str | os.PathLike, what: str = "input file") -> list[Path]:
    p = str(path_or_glob)
    if any(ch in p for ch in "*?["):
        files = sorted(Path(f) for f in _glob.glob(p))
        if not files:
            raise InputError("no file matches the pattern", path=p)
        return files
    path = Path(p)
    if not path.exists():
        raise InputError(f"{what} not found", path=path)
    if path.is_dir():
        raise InputError(f"{what} is a directory, not a file", path=path)
    return [path]


def _is_parquet(path: Path) -> bool:
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"PAR1"
    except OSError:
        return False


def read_sumstats(
    path_or_frame,
    *,
    required: Iterable[str] = (S.SNP,),
    keep_row: bool = False,
    column_names: Mapping[str, str] | None = None,
    what: str = "input file",
) -> pl.DataFrame:
    """Eager twin of :func:`scan_sumstats`; ``keep_row=True`` keeps the 1-based ``__row`` column
    (file row number, counted over the concatenated matches of a glob).  ``what`` names the file's
    role in a not-found message (``"reference SNP list (hm3)"``; default ``"input file"``)."""
    required = tuple(required)
    if isinstance(path_or_frame, (pl.DataFrame, pl.LazyFrame)):
        df = path_or_frame.collect() if isinstance(path_or_frame, pl.LazyFrame) else path_or_frame
        if ROW not in df.columns:
            df = df.with_row_index(ROW, offset=1)
        df, _ = _standardise(df, path=None, required=required, column_names=column_names)
        df = _check_and_cast(_additive_rows(df, path=None), path=None)
        return df if keep_row else df.drop(ROW)
    files = _expand(path_or_frame, what)
    parts = []
    offset = 0
    for f in files:
        if _is_parquet(f):
            try:
                part = pl.read_parquet(f)
            except (pl.exceptions.PolarsError, OSError) as exc:
                raise InputError(f"cannot read parquet: {str(exc).splitlines()[0]}", path=f) from exc
            part = part.with_row_index(ROW, offset=1)
        else:
            part = read_text_table(f, _numeric_overrides(f, column_names))
        part, _ = _standardise(part, path=str(f), required=required, column_names=column_names)
        part = _check_and_cast(_additive_rows(part, path=str(f)), path=str(f))
        if offset:
            part = part.with_columns(pl.col(ROW) + offset)
        offset += part.height
        parts.append(part)
    df = parts[0] if len(parts) == 1 else pl.concat(parts, how="diagonal_relaxed")
    return df if keep_row else df.drop(ROW)


def scan_sumstats(
    path_or_glob,
    *,
    required: Iterable[str] = (S.SNP,),
    column_names: Mapping[str, str] | None = None,
    what: str = "input file",
) -> pl.LazyFrame:
    """GWAS summary statistics as a LazyFrame with canonical column names (see module docstring).

    Parquet inputs are scanned lazily when their canonical columns are already typed; text is
    parsed once, validated (non-numeric entries raise :class:`InputError` naming the row) and
    handed back lazily.  ``required`` lists canonical columns that must be present
    (:class:`SchemaError` otherwise).
    """
    required = tuple(required)
    if not isinstance(path_or_glob, (pl.DataFrame, pl.LazyFrame)):
        files = _expand(path_or_glob, what)
        if all(_is_parquet(f) for f in files):
            try:
                lf = pl.scan_parquet([str(f) for f in files])
                schema = lf.collect_schema()
            except (pl.exceptions.PolarsError, OSError) as exc:
                raise InputError(f"cannot read parquet: {str(exc).splitlines()[0]}", path=str(path_or_glob)) from exc
            lf, mapping = _standardise(lf, path=str(path_or_glob), required=required, column_names=column_names)
            lf = _additive_rows(lf, path=str(path_or_glob))
            schema = lf.collect_schema()
            if all(schema[c] != pl.String for c in NUMERIC if c in schema):
                return lf.with_columns(
                    [pl.col(c).cast(S.DTYPES[c], strict=False) for c in NUMERIC if c in schema]
                    + [
                        pl.col(c).cast(pl.String).str.replace(r"^(?i)chr", "")
                        if c == S.CHR
                        else pl.col(c).cast(pl.String)
                        for c in STRINGS
                        if c in schema
                    ]
                )
    return read_sumstats(path_or_glob, required=required, column_names=column_names, what=what).lazy()


__all__ = [
    "ALIASES",
    "NEG_LOG10_P",
    "PREFERRED_SNP",
    "scan_sumstats",
    "read_sumstats",
    "resolve_columns",
    "read_text_table",
]
