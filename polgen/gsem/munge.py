"""Munge GWAS summary statistics for LDSC exactly as R GenomicSEM's ``munge()`` does.

Per file, in R's order (every removed row is counted by reason in the returned summary):

1. columns recognised through the alias table of :mod:`polgen.io.sumstats` (``NEFF_HALF`` /
   ``NEFFDIV2`` doubled into ``N``); a given ``N`` overrides the file's column;
2. ``MAF`` folded to ``<= 0.5``; alleles upper-cased, anything but A/C/G/T becomes missing;
3. inner merge with the reference SNP list (``hm3``: SNP A1 A2) — ``not_in_reference``;
4. rows with a missing P (``missing_p``) or a missing effect (``missing_effect``) removed;
5. odds ratios detected per file by ``round(median(effect)) == 1`` and logged (effect -> log);
6. effect sign flipped where the reference A1 equals the file's A2; rows whose A1 matches neither
   reference allele (``allele_a1_mismatch``), then rows whose A2 matches neither
   (``allele_a2_mismatch``) removed, with R's three-valued logic for missing alleles;
7. ``Z = sign(effect) * sqrt(qchisq(P, 1, lower = FALSE))``, computed as ``-ndtri(P / 2)`` and
   on the log scale (``ndtri_exp``) below 1e-300, so P = 1e-310 or 5e-324 give the exact Z
   (no cap);
8. INFO filter (``INFO >= info_filter``), then MAF filter (``MAF >= maf_filter``), rows with a
   missing INFO / MAF removed with them.

Output per trait: ``SNP N Z A1 A2`` with the reference's alleles.  Stricter than R where R would
write garbage: P outside (0, 1] or non-numeric raises :class:`InputError` naming the file, column
and row; a file without N and no ``N=`` raises; a trait with no SNP left raises.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
from scipy.special import ndtri, ndtri_exp

from polgen import schema as S
from polgen.engine.method_log import default_stem, log_path, method_log
from polgen.errors import InputError, SchemaError
from polgen.io.sink import write_table_atomic
from polgen.io.sumstats import NEG_LOG10_P, ROW, read_sumstats

log = logging.getLogger("polgen")

ACGT = ["A", "C", "G", "T"]
_LOG2 = math.log(2.0)
_LN10 = math.log(10.0)


# ---------------------------------------------------------------------------------------------
# helpers shared with polgen.gsem.sumstats
# ---------------------------------------------------------------------------------------------
def abs_z_from_p(p: np.ndarray) -> np.ndarray:
    """``sqrt(qchisq(p, 1, lower.tail = FALSE))`` = ``-qnorm(p / 2)`` without underflow."""
    p = np.asarray(p, dtype=np.float64)
    out = np.empty_like(p)
    big = p > 1e-300
    out[big] = -ndtri(p[big] * 0.5)
    small = ~big
    if small.any():
        with np.errstate(divide="ignore"):
            out[small] = -ndtri_exp(np.log(p[small]) - _LOG2)
    return out


def z_from_p(p: np.ndarray, effect: np.ndarray) -> np.ndarray:
    """``sign(effect) * sqrt(qchisq(p, 1, lower = FALSE))`` (R's ``sign(0) == 0``)."""
    return np.sign(np.asarray(effect, dtype=np.float64)) * abs_z_from_p(p)


def z_from_neglog10p(x: np.ndarray, effect: np.ndarray) -> np.ndarray:
    """:func:`z_from_p` of ``P = 10^-x`` on the log scale: exact where P is below the double range."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(np.asarray(effect, dtype=np.float64)) * -ndtri_exp(-x * _LN10 - _LOG2)


def z_expr(p: str = "P", effect: str = "effect", neglog: str | None = None) -> pl.Expr:
    """Polars expression for :func:`z_from_p` (nulls propagate); where ``P`` is 0 and the column
    ``neglog`` (-log10 P, see :data:`polgen.io.sumstats.NEG_LOG10_P`) holds a value, Z comes from it."""
    if neglog is None:
        return pl.struct(p, effect).map_batches(
            lambda s: pl.Series(
                z_from_p(
                    s.struct.field(p).to_numpy().astype(np.float64),
                    s.struct.field(effect).to_numpy().astype(np.float64),
                )
            ),
            return_dtype=pl.Float64,
        )

    def fn(s: pl.Series) -> pl.Series:
        pv = s.struct.field(p).to_numpy().astype(np.float64)
        ef = s.struct.field(effect).to_numpy().astype(np.float64)
        x = s.struct.field(neglog).cast(pl.Float64).to_numpy().astype(np.float64)
        z = z_from_p(pv, ef)
        tiny = (pv == 0.0) & np.isfinite(x)
        if tiny.any():
            z[tiny] = z_from_neglog10p(x[tiny], ef[tiny])
        return pl.Series(z)

    return pl.struct(p, effect, neglog).map_batches(fn, return_dtype=pl.Float64)


def is_odds_ratio(effect: pl.Series) -> bool:
    """R: ``round(median(effect, na.rm = TRUE)) == 1`` (round half to even, as R)."""
    med = effect.drop_nulls().drop_nans().median()
    # polars types median() as any literal; of a numeric series it is a float (None when empty)
    return med is not None and float(np.round(cast(float, med))) == 1.0


def check_p(df: pl.DataFrame, path: str | None, column: str = "P") -> None:
    """P must lie in (0, 1] (0 where the reader kept -log10 P beside it, P below the double range):
    otherwise InputError naming the first bad row."""
    low = pl.col(column) <= 0
    if NEG_LOG10_P in df.columns:  # P = 0 from 10^-x or 1e-400: -log10 P says how small
        low = (pl.col(column) < 0) | ((pl.col(column) == 0) & ~(pl.col(NEG_LOG10_P) > 300).fill_null(False))
    bad = df.select(((low | (pl.col(column) > 1) | pl.col(column).is_nan()).fill_null(False)).arg_true().first()).item()
    if bad is not None:
        row = df[ROW][bad] if ROW in df.columns else bad + 1
        raise InputError(f"P-value {df[column][bad]!r} outside (0, 1]", path=path, column=column, row=row)


def clean_alleles(keep_indel: bool = False) -> list[pl.Expr]:
    """Upper-case A1/A2; unless ``keep_indel``, anything but A/C/G/T becomes null (R's factor)."""
    out = []
    for c in (S.A1, S.A2):
        e = pl.col(c).str.to_uppercase()
        if not keep_indel:
            e = pl.when(e.is_in(ACGT)).then(e).otherwise(None)
        out.append(e.alias(c))
    return out


def pick_effect(df: pl.DataFrame, path: str | None, allow_z: bool = True) -> str:
    for c in (S.BETA, S.OR):
        if c in df.columns:
            if c == S.BETA and S.OR in df.columns:
                log.warning("%s: both BETA and OR columns present; using BETA", path)
            return c
    if allow_z and S.Z in df.columns:
        log.info("%s: no effect column; interpreting Z as the effect column", path)
        return S.Z
    raise SchemaError(
        "cannot find an effect column (BETA/OR/LOGOR/EFFECT..."
        + ("/Z" if allow_z else "")
        + f"); found columns {[c for c in df.columns if c != ROW]}",
        path=path,
        column="effect",
    )


def align_to_reference(df: pl.DataFrame, counts: DropCounter) -> pl.DataFrame:
    """R's flip-then-filter on A1/A2 against reference alleles ``A1_ref``/``A2_ref``.

    Uses Kleene (three-valued) logic like R: a null comparison in ``subset`` drops the row, in
    ``ifelse`` makes the effect missing.  The two filters are added to ``counts``' plan."""
    a1, a2, r1, r2 = pl.col(S.A1), pl.col(S.A2), pl.col("A1_ref"), pl.col("A2_ref")
    flip = (r1 != a1) & (r1 == a2)
    df = df.with_columns(
        pl.when(flip.is_null())
        .then(None)
        .when(flip)
        .then(-pl.col("effect"))
        .otherwise(pl.col("effect"))
        .alias("effect")
    )
    df = counts.step(df, ~((r1 != a1) & (r1 != a2)), "allele_a1_mismatch")
    df = counts.step(df, ~((r2 != a2) & (r2 != a1)), "allele_a2_mismatch")
    return df


class DropCounter:
    """Applies filters and records how many rows each removed.

    ``filter`` filters at once; ``step`` adds a cumulative keep-mask column (null counts as
    dropped, as in R's ``subset``) and ``finish`` counts every step in one pass and filters once."""

    def __init__(self, trait: str) -> None:
        self.trait = trait
        self.rows: list[dict] = []
        self._steps: list[tuple[str, str]] = []

    def filter(self, df: pl.DataFrame, keep: pl.Expr, reason: str) -> pl.DataFrame:
        before = df.height
        df = df.filter(keep)  # null -> dropped, as R's subset()
        self.add(reason, before - df.height, df.height)
        return df

    def current(self) -> pl.Expr:
        return pl.col(self._steps[-1][1]) if self._steps else pl.lit(True)

    def step(self, df: pl.DataFrame, keep: pl.Expr, reason: str) -> pl.DataFrame:
        name = f"__keep{len(self._steps)}"
        df = df.with_columns((self.current() & keep.fill_null(False)).alias(name))
        self._steps.append((reason, name))
        return df

    def kept(self, df: pl.DataFrame) -> int:
        return int(df.select(self.current().sum()).item()) if self._steps else df.height

    def finish(self, df: pl.DataFrame) -> pl.DataFrame:
        if not self._steps:
            return df
        sums = df.select([pl.col(n).sum() for _, n in self._steps]).row(0)
        before = df.height
        for (reason, _), n in zip(self._steps, sums):
            self.add(reason, before - n, n)
            before = n
        df = df.filter(self.current()).drop([n for _, n in self._steps])
        self._steps = []
        return df

    def add(self, reason: str, n: int, remaining: int) -> None:
        self.rows.append({"trait": self.trait, "reason": reason, "n_dropped": int(n), "n_remaining": int(remaining)})

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            self.rows, schema={"trait": pl.String, "reason": pl.String, "n_dropped": pl.Int64, "n_remaining": pl.Int64}
        )


def odds_ratio_plan(
    df: pl.DataFrame, counts: DropCounter, what: str, trait: str, label: str
) -> tuple[pl.DataFrame, bool]:
    """R's per-file OR detection (``round(median(effect)) == 1``) over the rows still kept; when
    detected, rows with a negative 'odds ratio' are dropped and the effect is logged."""
    kept, med = df.select(counts.current().sum(), pl.col("effect").filter(counts.current()).drop_nans().median()).row(0)
    if not kept:
        raise InputError(
            "no SNPs left after merging with the reference and removing missing P/effect values", path=label
        )
    is_or = med is not None and float(np.round(med)) == 1.0
    if is_or:
        log.info("%s %s: the effect column was determined to be coded as an odds ratio (OR); taking logs", what, trait)
        df = counts.step(df, pl.col("effect") >= 0, "negative_odds_ratio")
        df = df.with_columns(
            pl.when(pl.col("effect") >= 0).then(pl.col("effect").log()).otherwise(None).alias("effect")
        )
    else:
        log.info("%s %s: the effect column was determined NOT to be an odds ratio", what, trait)
    return df, is_or


_DANER = re.compile(r"^FRQ_([AU])_(\d+)$", re.IGNORECASE)
_CASE_CONTROL_COLUMNS = {"N_CASE", "N_CTRL", "N.CASES", "N.CONTROLS", "N_CASES", "N_CONTROLS", "NCASE", "NCONTROL"}


def case_control_hint(columns: Sequence[str]) -> str:
    """A hint for a file without N that carries case / control counts: Ricopili (daner) headers
    ``FRQ_A_<cases>`` / ``FRQ_U_<controls>`` (LDSC ``--daner`` sums them) or per-row counts (SAIGE's
    ``N_case`` / ``N_ctrl``).  polgen does not pick an N for the user: GenomicSEM asks for the sum of
    effective sample sizes of a case-control trait, LDSC uses the total."""
    counts = {m.group(1).upper(): int(m.group(2)) for c in columns if (m := _DANER.match(c.strip()))}
    if set(counts) == {"A", "U"} and counts["A"] > 0 and counts["U"] > 0:
        cases, controls = counts["A"], counts["U"]
        neff = 4.0 / (1.0 / cases + 1.0 / controls)
        return (
            f"; the header names {cases} cases and {controls} controls (Ricopili FRQ_A_/FRQ_U_ columns): give N, "
            f"e.g. the effective N 4/(1/{cases} + 1/{controls}) = {neff:.1f} (GenomicSEM) or the total "
            f"{cases + controls} (LDSC --daner)"
        )
    found = [c for c in columns if c.strip().upper() in _CASE_CONTROL_COLUMNS]
    if found:
        return f"; the file has case / control counts {found}: give N (GenomicSEM: the effective N of the trait)"
    return ""


def normalise_inputs(files: Any, trait_names: Sequence[str] | None) -> tuple[list, list[str], list[str]]:
    """(inputs, trait names, labels for messages) from a dict, a sequence, or one input."""
    if isinstance(files, Mapping):
        items, keys = list(files.values()), [str(k) for k in files]
    elif isinstance(files, (str, os.PathLike, pl.DataFrame, pl.LazyFrame)):
        items, keys = [files], None
    else:
        items, keys = list(files), None
    if not items:
        raise InputError("no summary statistics given")
    labels = []
    for i, x in enumerate(items):
        labels.append(str(x) if isinstance(x, (str, os.PathLike)) else (keys[i] if keys else f"frame {i + 1}"))
    if trait_names is not None:
        names = [str(t) for t in trait_names]
        if len(names) != len(items):
            raise InputError(f"{len(names)} trait names for {len(items)} files")
    elif keys is not None:
        names = keys
    else:
        names = []
        for i, x in enumerate(items):
            if isinstance(x, (str, os.PathLike)):
                base = Path(str(x)).name
                base = re.sub(r"[*?\[\]]", "", base).split(".")[0] or f"V{i + 1}"
                names.append(base)
            else:
                names.append(f"V{i + 1}")
    if len(set(names)) != len(names):
        raise InputError(f"trait names must be unique, got {names}")
    return items, names, labels


def per_trait(values, n: int, name: str, default=None) -> list:
    if values is None:
        return [default] * n
    if isinstance(values, (str, bytes)) or np.isscalar(values):
        return [values] * n
    vals = list(values)
    if len(vals) != n:
        raise InputError(f"{name} has {len(vals)} values for {n} files")
    return vals


def _read_reference(hm3) -> pl.DataFrame:
    ref = read_sumstats(hm3, required=(S.SNP, S.A1, S.A2))
    return ref.select(S.SNP, pl.col(S.A1).alias("A1_ref"), pl.col(S.A2).alias("A2_ref"))


def _with_label(exc: InputError, label: str) -> InputError:
    if exc.path is None:
        exc.path = label
        exc.args = (exc._render(),)
    return exc


# ---------------------------------------------------------------------------------------------
# munge one file
# ---------------------------------------------------------------------------------------------
def munge_one(
    obj,
    ref: pl.DataFrame,
    trait: str,
    label: str,
    N: float | None = None,
    info_filter: float = 0.9,
    maf_filter: float = 0.01,
    column_names: Mapping[str, str] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Munge one trait's statistics against a prepared reference (SNP, A1_ref, A2_ref)."""
    counts = DropCounter(trait)
    try:
        df = read_sumstats(obj, required=(S.SNP, S.A1, S.A2, S.P), keep_row=True, column_names=column_names)
    except InputError as exc:
        _with_label(exc, label)  # adds the file label to this exception, which re-raises unchanged
        raise
    effect = pick_effect(df, label)
    if N is not None and not (isinstance(N, float) and math.isnan(N)):  # N given
        if not float(N) > 0:
            raise InputError(f"N must be positive, got {N}", path=label)
        log.info("munge %s: using provided N = %s", trait, N)
        df = df.with_columns(pl.lit(float(N)).alias(S.N))
    elif S.N not in df.columns:
        cols = [c for c in df.columns if c != ROW]
        raise SchemaError(
            f"no sample-size column (N/NEFF/...) and no N given; found columns {cols}{case_control_hint(cols)}",
            path=label,
            column="N",
        )
    # only the columns the method uses travel through the joins and filters
    keep = (ROW, S.SNP, S.A1, S.A2, effect, S.P, NEG_LOG10_P, S.N, S.MAF, S.INFO, S.SE)
    df = df.select([c for c in keep if c in df.columns])
    check_p(df, label)
    counts.add("input_rows", 0, df.height)
    df = df.with_columns(pl.col(effect).alias("effect"), *clean_alleles())
    if S.MAF in df.columns:
        df = df.with_columns(
            pl.when(pl.col(S.MAF) <= 0.5).then(pl.col(S.MAF)).otherwise(1 - pl.col(S.MAF)).alias(S.MAF)
        )
    before = df.height
    df = ref.join(df, on=S.SNP, how="inner", maintain_order="left")
    counts.add("not_in_reference", before - df.height, df.height)
    df = counts.step(df, pl.col(S.P).is_not_null(), "missing_p")
    df = counts.step(df, pl.col("effect").is_not_null(), "missing_effect")
    df, _ = odds_ratio_plan(df, counts, "munge", trait, label)
    df = align_to_reference(df, counts)
    df = counts.step(df, pl.col("effect").is_not_null() & pl.col("effect").is_not_nan(), "missing_z")
    if S.INFO in df.columns:
        df = counts.step(df, pl.col(S.INFO) >= info_filter, "info_below_filter")
    else:
        log.info("munge %s: no INFO column, cannot filter on INFO", trait)
    if S.MAF in df.columns:
        df = counts.step(df, pl.col(S.MAF) >= maf_filter, "maf_below_filter")
    else:
        log.info("munge %s: no MAF column, cannot filter on MAF", trait)
    df = counts.finish(df)
    df = df.with_columns(z_expr(S.P, "effect", NEG_LOG10_P if NEG_LOG10_P in df.columns else None).alias(S.Z))
    out = df.select(
        S.SNP, pl.col(S.N).cast(pl.Float64), S.Z, pl.col("A1_ref").alias(S.A1), pl.col("A2_ref").alias(S.A2)
    )
    if out.height == 0:
        raise InputError("no SNPs left after munging (see the dropped-row summary)", path=label)
    log.info("munge %s: %d SNPs left after QC", trait, out.height)
    counts.add("output_rows", 0, out.height)
    return out, counts.frame()


def _write_text_gz(path: Path, df: pl.DataFrame) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        data = df.write_csv(separator="\t", float_precision=None).encode()
        with gzip.open(tmp, "wb", compresslevel=6) as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def munge(
    files,
    hm3,
    trait_names: Sequence[str] | None = None,
    N=None,
    info_filter: float = 0.9,
    maf_filter: float = 0.01,
    out: str | os.PathLike | None = None,
    write_text: bool = False,
    column_names: Mapping[str, str] | None = None,
    log: bool | str | os.PathLike | None = None,
) -> tuple[dict[str, pl.LazyFrame], pl.DataFrame]:
    """Munge summary statistics (R GenomicSEM ``munge``; rules in the module docstring).

    files: paths, globs (one glob = one trait's files), frames, or a dict {trait: input}.
    hm3: the reference SNP list (path or frame with SNP A1 A2).  N: per-file sample sizes
    (None/NaN = use the file's N column).  out: a directory; each trait is written atomically as
    ``{trait}.sumstats.parquet`` (and ``{trait}.sumstats.gz``, R's tab-separated text, when
    ``write_text``).  column_names: {canonical (SNP, A1, A2, effect, P, N, MAF, INFO, Z): column}
    overriding the alias table for every file, as R's ``column.names``.  Returns
    ({trait: LazyFrame SNP N Z A1 A2}, dropped-row summary frame with trait, reason, n_dropped,
    n_remaining).  A file that fails raises, naming the file.

    log: R's ``log.name``: a path prefix ``P`` writes ``P_munge.log``; ``True`` writes
    ``<trait names joined by _>_munge.log`` in the working directory; ``None`` (default) writes that
    file inside ``out`` when ``out`` is given; ``False`` writes none.  The log holds the parameters,
    every step's message (columns interpreted, rows dropped and why) and the timings.
    """
    items, names, labels = normalise_inputs(files, trait_names)
    by_default = False  # R's log beside the output (none if the call fails)
    if log is None and out is not None:
        by_default = True
        Path(out).mkdir(parents=True, exist_ok=True)
        log = Path(out) / default_stem(names, "munge")
    params = {
        "files": labels,
        "hm3": hm3 if isinstance(hm3, (str, os.PathLike)) else type(hm3).__name__,
        "trait_names": names,
        "N": N,
        "info_filter": info_filter,
        "maf_filter": maf_filter,
        "out": None if out is None else os.fspath(out),
    }
    with method_log(log_path(log, "munge", names), "munge", params, keep_failed=not by_default):
        result = _munge(items, names, labels, hm3, N, info_filter, maf_filter, out, write_text, column_names)
        summary = result[1]
        for row in summary.iter_rows(named=True):
            if row["reason"] in ("input_rows", "output_rows") or not row["n_dropped"]:
                continue
            logging.getLogger("polgen").info(
                "munge %s: %d rows removed (%s), %d remain",
                row["trait"],
                row["n_dropped"],
                row["reason"],
                row["n_remaining"],
            )
    return result


def _munge(
    items: list,
    names: list[str],
    labels: list[str],
    hm3: Any,
    N: Any,
    info_filter: float,
    maf_filter: float,
    out: str | os.PathLike | None,
    write_text: bool,
    column_names: Mapping[str, str] | None,
) -> tuple[dict[str, pl.LazyFrame], pl.DataFrame]:
    Ns = per_trait(N, len(items), "N")
    for f in (info_filter, maf_filter):
        if not 0 <= float(f) <= 1:
            raise InputError(f"filters must lie in [0, 1], got {f}")
    ref = _read_reference(hm3)
    outdir = None
    if out is not None:
        outdir = Path(out)
        outdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, pl.LazyFrame] = {}
    summaries = []
    for obj, name, label, n in zip(items, names, labels, Ns):
        log.info("munge: munging %s (%s)", name, label)
        df, summary = munge_one(obj, ref, name, label, n, info_filter, maf_filter, column_names)
        summaries.append(summary)
        if outdir is not None:
            stem = name.replace(" ", "")
            pq_path = outdir / f"{stem}.sumstats.parquet"
            write_table_atomic(
                pq_path,
                df,
                metadata={
                    S.META_METHOD: "polgen.gsem.munge",
                    S.META_PARAMS: json.dumps(
                        {"trait": name, "source": label, "info_filter": info_filter, "maf_filter": maf_filter, "N": n},
                        default=str,
                    ),
                },
            )
            if write_text:
                _write_text_gz(outdir / f"{stem}.sumstats.gz", df)
            results[name] = pl.scan_parquet(pq_path)
        else:
            results[name] = df.lazy()
    return results, pl.concat(summaries)


__all__ = ["munge", "munge_one", "abs_z_from_p", "z_from_p", "z_from_neglog10p", "is_odds_ratio"]
