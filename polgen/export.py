"""Export polgen results for other tools: streamed text, GWAS-SSF (with its metadata YAML) and the
LDSC ``.sumstats.gz`` layout.

``export(results, out, format)`` reads a polgen run folder (its ``part-*.parquet``), a parquet file
or a glob lazily and writes one file:

* ``tsv.gz``: every column, tab-separated, gzip-compressed (any polgen result);
* ``ssf``: GWAS Catalog GWAS-SSF v1.0 (``chromosome base_pair_location effect_allele other_allele
  beta standard_error effect_allele_frequency p_value rsid n``) and ``<file>-meta.yaml`` beside it,
  for a per-SNP Genomic SEM GWAS (``user_gwas`` / ``commonfactor_gwas``): one parameter (``param=``
  or ``lhs=``; the only one when there is one), SNPs that did not converge left out;
* ``ldsc``: ``SNP A1 A2 Z N`` as LDSC's ``munge_sumstats.py`` writes (``.sumstats.gz``) for the same
  results.

``n`` (the sample size written) defaults to the effective N of the factor as GenomicSEM's tutorial
computes it: the mean of ``1 / (2 MAF (1 - MAF) SE^2)`` over SNPs with ``0.1 <= MAF <= 0.4``.
``effect_allele_frequency`` is ``NA``: a GWAS result carries the reference panel's *minor* allele
frequency, which is not the effect allele's.  P values are written from ``log10p``, exact where a
double underflows (``p_value`` ``1.5e-400`` is written as such).

The written files are read back in R with ``data.table::fread`` / ``readr``; the parquet results
themselves open in R with ``arrow::open_dataset("gwas/")`` (a run folder is a parquet dataset).
"""

from __future__ import annotations

import glob as _glob
import gzip
import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Literal

import polars as pl

from polgen.errors import InputError, OutputExistsError, SchemaError

log = logging.getLogger("polgen")

ExportFormat = Literal["tsv.gz", "ssf", "ldsc"]
FORMATS: tuple[str, ...] = ("tsv.gz", "ssf", "ldsc")
SSF_COLUMNS = (
    "chromosome",
    "base_pair_location",
    "effect_allele",
    "other_allele",
    "beta",
    "standard_error",
    "effect_allele_frequency",
    "p_value",
    "rsid",
    "n",
)
_GWAS_COLUMNS = ("SNP", "A1", "A2", "lhs", "op", "rhs", "est", "se", "log10p")
_CHROM_CODES = {"X": "23", "Y": "24", "XY": "23", "MT": "25", "M": "25"}


def _files(results: str | os.PathLike) -> list[str]:
    p = Path(results)
    if p.is_dir():
        files = sorted(p.glob("part-*.parquet")) or sorted(
            f for f in p.rglob("*.parquet") if not any(s.startswith(("_", ".")) for s in f.relative_to(p).parts)
        )
        if not files:
            raise InputError("the results directory holds no parquet files", path=p)
        return [str(f) for f in files]
    text = str(results)
    if any(ch in text for ch in "*?["):
        found = sorted(_glob.glob(text))
        if not found:
            raise InputError("no file matches the pattern", path=text)
        return found
    if not p.exists():
        raise InputError("results not found", path=p)
    return [text]


def scan_results(results: str | os.PathLike) -> pl.LazyFrame:
    """A polgen result (run folder, parquet file or glob) as one LazyFrame."""
    files = _files(results)
    try:
        lf = pl.scan_parquet(files)
        lf.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"cannot read as parquet: {str(exc).splitlines()[0]}", path=os.fspath(results)) from None
    return lf


def _param_frame(lf: pl.LazyFrame, param: str | None, lhs: str | None, results: Any) -> tuple[pl.LazyFrame, str]:
    """The rows of one GWAS parameter (``"F1 ~ SNP"``)."""
    cols = lf.collect_schema().names()
    missing = [c for c in _GWAS_COLUMNS if c not in cols]
    if missing:
        raise SchemaError(
            f"not a per-SNP Genomic SEM GWAS result (no {', '.join(missing)}); GWAS-SSF and LDSC exports take "
            "user_gwas / commonfactor_gwas results (use --format tsv.gz for any other result)",
            path=os.fspath(results),
            column=missing[0],
        )
    params = lf.select("lhs", "op", "rhs").unique().sort("lhs", "op", "rhs").collect()
    names = [f"{a} {o} {b}" for a, o, b in params.iter_rows()]
    if param is not None:
        want = " ".join(param.replace("~", " ~ ").replace("= ~", "=~").split())
        chosen = [n for n in names if " ".join(n.split()) == want]
    elif lhs is not None:
        chosen = [n for n in names if n.split(" ")[0] == lhs and n.endswith(" ~ SNP")]
    else:
        chosen = names if len(names) == 1 else [n for n in names if n.endswith(" ~ SNP")]
    if len(chosen) != 1:
        what = "choose one with --param (param=) or --lhs (lhs=)" if len(chosen) != 0 or param is lhs else "none is"
        raise InputError(f"the result holds the parameters {names}: {what}", path=os.fspath(results))
    a, o, b = chosen[0].split(" ", 2)
    rows = lf.filter((pl.col("lhs") == a) & (pl.col("op") == o) & (pl.col("rhs") == b))
    return rows, chosen[0]


def effective_n(lf: pl.LazyFrame) -> float | None:
    """GenomicSEM tutorial's effective sample size of a factor GWAS: mean of
    ``1 / (2 MAF (1 - MAF) SE^2)`` over SNPs with ``0.1 <= MAF <= 0.4`` (None without MAF / SNPs)."""
    if "MAF" not in lf.collect_schema().names():
        return None
    maf, se = pl.col("MAF"), pl.col("se")
    value = (
        lf.filter(maf.is_between(0.1, 0.4) & se.is_finite() & (se > 0))
        .select((1.0 / (2.0 * maf * (1.0 - maf) * se**2)).mean())
        .collect()
        .item()
    )
    return None if value is None else float(value)


def _p_text(log10p: pl.Expr) -> pl.Expr:
    """``10^-x`` as text, exact below the double range: mantissa in [1, 10) and an integer exponent."""
    e = log10p.ceil()
    m = pl.lit(10.0).pow(e - log10p)
    return (
        pl.when(log10p.is_finite() & (log10p >= 0))
        .then(pl.format("{}e-{}", m.round_sig_figs(6), e.cast(pl.Int64)))
        .otherwise(None)
    )


def _sink(lf: pl.LazyFrame, out: Path, *, gz: bool) -> None:
    """Stream ``lf`` to tab-separated text at ``out`` (atomic: a temp name, then a rename)."""
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp_text = out.with_name(f".{out.name}.tmp-{tag}.tsv")
    tmp_out = out.with_name(f".{out.name}.tmp-{tag}")
    try:
        lf.sink_csv(tmp_text, separator="\t", null_value="NA")
        if gz:
            with open(tmp_text, "rb") as src, gzip.open(tmp_out, "wb", compresslevel=6) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            tmp_text.unlink()
        else:
            os.replace(tmp_text, tmp_out)
        os.replace(tmp_out, out)
    finally:
        tmp_text.unlink(missing_ok=True)
        tmp_out.unlink(missing_ok=True)


def _yaml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v))  # a JSON string is a YAML string


def _write_ssf_meta(out: Path, meta: dict[str, Any]) -> Path:
    lines = ["---", "# GWAS-SSF metadata written by polgen"]
    for k, v in meta.items():
        if isinstance(v, list):
            lines.append(f"{k}:")
            for item in v:
                if isinstance(item, dict):
                    first = True
                    for ik, iv in item.items():
                        lines.append(f"  {'- ' if first else '  '}{ik}: {_yaml_value(iv)}")
                        first = False
                else:
                    lines.append(f"  - {_yaml_value(item)}")
        else:
            lines.append(f"{k}: {_yaml_value(v)}")
    path = out.with_name(out.name + "-meta.yaml")
    path.write_text("\n".join(lines) + "\n")
    return path


def export(
    results: str | os.PathLike,
    out: str | os.PathLike,
    format: ExportFormat = "tsv.gz",
    *,
    param: str | None = None,
    lhs: str | None = None,
    n: float | None = None,
    genome_assembly: str = "unknown",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``results`` to ``out`` in ``format`` (see the module docstring); returns what was
    written (rows, parameter, n, the metadata file)."""
    import polgen

    if format not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    out = Path(out)
    meta_path = out.with_name(out.name + "-meta.yaml")
    for target in [out] + ([meta_path] if format == "ssf" else []):
        if target.is_dir():
            raise OutputExistsError("output path is a directory", path=target)
        if target.exists() and not overwrite:
            raise OutputExistsError("output file exists; pass overwrite=True (CLI: --overwrite)", path=target)
    if not out.parent.is_dir():
        raise InputError("the output directory does not exist", path=out.parent)
    if format == "ssf" and not out.name.endswith((".tsv", ".tsv.gz")):
        raise InputError("a GWAS-SSF file name ends with .tsv or .tsv.gz", path=out)
    if n is not None and not (n > 0):
        raise InputError(f"n must be positive, got {n!r}")
    lf = scan_results(results)
    info: dict[str, Any] = {"path": str(out), "format": format}
    if format == "tsv.gz":
        _sink(lf, out, gz=True)
        info["rows"] = pl.scan_csv(out, separator="\t").select(pl.len()).collect().item()
        return info
    rows, chosen = _param_frame(lf, param, lhs, results)
    ok = pl.col("est").is_finite() & pl.col("se").is_finite() & (pl.col("se") > 0)
    if "converged" in rows.collect_schema().names():
        ok = ok & pl.col("converged")
    counts = rows.select(pl.len().alias("all"), ok.sum().alias("ok")).collect().row(0)
    if counts[1] == 0:
        raise InputError(f"no SNP of {chosen!r} has a finite estimate and SE", path=os.fspath(results))
    rows = rows.filter(ok)
    n_value = n if n is not None else effective_n(rows)
    if n_value is None:
        raise InputError("no MAF column to compute the effective N from: give n= (CLI: --n)", path=os.fspath(results))
    info.update(parameter=chosen, rows=counts[1], dropped=counts[0] - counts[1], n=n_value)
    if format == "ldsc":
        frame = rows.select(
            "SNP", "A1", "A2", (pl.col("est") / pl.col("se")).alias("Z"), pl.lit(round(n_value, 3)).alias("N")
        )
        _sink(frame, out, gz=out.name.endswith(".gz"))
        log.info("export: %d SNPs of %s in LDSC format to %s (N = %.1f)", counts[1], chosen, out, n_value)
        return info
    cols = rows.collect_schema().names()
    chrom = pl.col("CHR").cast(pl.String).str.strip_chars().str.replace(r"^(?i)chr", "") if "CHR" in cols else None
    chrom_code = chrom.str.to_uppercase().replace(_CHROM_CODES) if chrom is not None else pl.lit(None, pl.String)
    snp = pl.col("SNP").cast(pl.String)
    frame = rows.select(
        chrom_code.alias("chromosome"),
        (pl.col("BP") if "BP" in cols else pl.lit(None, pl.Int64)).alias("base_pair_location"),
        pl.col("A1").alias("effect_allele"),
        pl.col("A2").alias("other_allele"),
        pl.col("est").alias("beta"),
        pl.col("se").alias("standard_error"),
        pl.lit(None, pl.Float64).alias("effect_allele_frequency"),
        _p_text(pl.col("log10p")).alias("p_value"),
        pl.when(snp.str.starts_with("rs")).then(snp).otherwise(None).alias("rsid"),
        pl.lit(int(round(n_value))).alias("n"),
    )
    _sink(frame, out, gz=out.name.endswith(".gz"))
    md5 = hashlib.md5(out.read_bytes(), usedforsecurity=False).hexdigest()
    meta = {
        "data_file_name": out.name,
        "file_type": "GWAS-SSF v1.0",
        "data_file_md5sum": md5,
        "is_harmonised": False,
        "is_sorted": False,
        "genome_assembly": genome_assembly,
        "coordinate_system": "1-based",
        "analysis_software": f"polgen {polgen.__version__} (Genomic SEM GWAS)",
        "author_notes": (
            f"Genomic SEM GWAS parameter {chosen}; {counts[0] - counts[1]} SNPs without a finite estimate left out. "
            + (
                "n as given by the user"
                if n is not None
                else "n is the effective sample size of the factor (GenomicSEM tutorial: mean of "
                "1/(2 MAF (1-MAF) SE^2) over SNPs with 0.1 <= MAF <= 0.4)"
            )
            + "; effect_allele_frequency is NA (the reference MAF is not the effect allele's frequency)."
        ),
        "samples": [{"sample_size": int(round(n_value))}],
    }
    info["metadata"] = str(_write_ssf_meta(out, meta))
    log.info("export: %d SNPs of %s as GWAS-SSF to %s (n = %.1f)", counts[1], chosen, out, n_value)
    return info


# -- the command line: polgen export --------------------------------------------------------------
def add_parser(subparsers: Any) -> None:
    """Register ``polgen export RESULTS --format tsv.gz|ssf|ldsc --out FILE``."""
    from polgen.cli import add_out, add_overwrite, examples, positive_float

    x = subparsers.add_parser(
        "export",
        help="write results for other tools: tsv.gz, GWAS-SSF, LDSC .sumstats.gz",
        description="Stream a polgen result (run folder, parquet file or glob) to one file: tsv.gz (every "
        "column), GWAS-SSF with its -meta.yaml, or LDSC's SNP A1 A2 Z N .sumstats.gz (the last two for a "
        "Genomic SEM GWAS: one parameter, the effective N of the factor as GenomicSEM's tutorial computes it). "
        'In R, the parquet results themselves open with arrow::open_dataset("gwas/").',
        epilog=examples(
            "polgen export polgen-demo/lfmm/results/associations --out lfmm.tsv.gz",
            "polgen export polgen-demo/gsem/results/commonfactor_gwas --format ssf --out F1.tsv.gz "
            "--genome-assembly GRCh37",
            "polgen export polgen-demo/gsem/results/commonfactor_gwas --format ldsc --out F1.sumstats.gz",
        ),
    )
    x.add_argument("results", help="polgen run folder, parquet file or glob")
    x.add_argument(
        "--format",
        choices=("tsv.gz", "ssf", "ldsc"),
        default="tsv.gz",
        help="tsv.gz: every column; ssf: GWAS-SSF v1.0 + metadata YAML; ldsc: SNP A1 A2 Z N",
    )
    add_out(x, "file to write (ssf: .tsv or .tsv.gz; ldsc: .sumstats.gz)")
    add_overwrite(x)
    x.add_argument("--param", help='Genomic SEM GWAS parameter to export, e.g. "F1 ~ SNP" (default: the only one)')
    x.add_argument("--lhs", help="Genomic SEM GWAS: the parameter LHS ~ SNP (default: the only one)")
    x.add_argument(
        "--n",
        type=positive_float,
        help="sample size to write (default: the effective N of the factor, GenomicSEM's tutorial formula)",
    )
    x.add_argument(
        "--genome-assembly",
        default="unknown",
        metavar="NAME",
        help="GWAS-SSF metadata genome_assembly (GRCh37, GRCh38, ...)",
    )
    x.set_defaults(func=_cli)


def _cli(args: Any) -> int:
    info = export(
        args.results,
        args.out,
        args.format,
        param=args.param,
        lhs=args.lhs,
        n=args.n,
        genome_assembly=args.genome_assembly,
        overwrite=args.overwrite,
    )
    what = ""
    if "parameter" in info:
        what = f" of {info['parameter']} (n = {info['n']:.1f}; {info['dropped']} SNPs without an estimate left out)"
    print(f"wrote {info['rows']} rows{what} to {info['path']}")
    if "metadata" in info:
        print(f"wrote the GWAS-SSF metadata to {info['metadata']}")
    return 0


__all__ = ["FORMATS", "SSF_COLUMNS", "add_parser", "effective_n", "export", "scan_results"]
