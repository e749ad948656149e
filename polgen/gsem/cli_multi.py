"""``polgen gsem add-snps | add-genes | multi-snp | multi-gene``: per-SNP and multi-SNP structures.

    polgen gsem add-snps --sumstats sumstats.parquet --covstruc ldsc.json --out add_snps/
    polgen gsem multi-snp --sumstats sumstats.parquet --covstruc ldsc.json --ld ld.csv \\
        --model "F1 =~ A + B + C; F1 ~ rs1 + rs2" --out joint.json --fit-out fit.parquet

``add-snps`` / ``add-genes`` write each SNP's (gene's) S_full and V_full as one row of a resumable
parquet run folder (lower triangles as ``S_r_c`` / ``V_r_c`` columns; R ``addSNPs`` /
``addGenes``).  ``multi-snp`` / ``multi-gene`` build one covariance structure over several SNPs
(genes) and the traits from their LD matrix (a CSV/TSV whose header names the SNPs ``rs_A1_A2``,
optionally with a first column of row names; R ``multiSNP`` / ``multiGene``), write it as a
covstruc file that ``polgen gsem usermodel --covstruc`` reads, and with ``--model`` fit it and
print (and with ``--fit-out`` write) the parameter table.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from polgen.cli import (
    add_executor,
    add_out,
    add_overwrite,
    add_progress,
    add_resume,
    examples,
    positive_float,
    positive_int,
    print_frame,
)
from polgen.errors import InputError, OutputExistsError

_DEMO = "polgen-demo/gsem/results"
EXAMPLES = examples(
    f"polgen gsem add-snps --sumstats {_DEMO}/sumstats.parquet --covstruc {_DEMO}/ldsc_covstruc.json --out add_snps/",
    f"polgen gsem multi-snp --sumstats {_DEMO}/sumstats.parquet --covstruc {_DEMO}/ldsc_covstruc.json "
    '--ld ld.csv --model "F1 =~ TraitA + TraitB + TraitC; F1 ~ rs1 + rs2" --out joint.json --fit-out fit.parquet',
    "polgen gsem multi-gene --genes twas.parquet --covstruc ldsc.json --ld gene_cor.csv --out joint.json",
)


def _covstruc(p: argparse.ArgumentParser) -> None:
    p.add_argument("--covstruc", required=True, metavar="FILE", help="ldsc output (.json or .parquet)")


def _gc(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--GC",
        "--gc",
        dest="GC",
        choices=["standard", "conserv", "none"],
        default="standard",
        help="correction of the SNP SEs by the LDSC intercepts (R GC; default: %(default)s)",
    )


def _stream(p: argparse.ArgumentParser) -> None:
    add_out(p, "output run folder (parquet parts + manifest; one row per SNP or gene)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="rows per batch / part file (default: 50000)",
    )
    add_executor(p)
    add_progress(p)
    g = p.add_mutually_exclusive_group()
    add_resume(g)
    add_overwrite(g)


def _multi(p: argparse.ArgumentParser, genes: bool) -> None:
    _covstruc(p)
    p.add_argument(
        "--ld",
        required=True,
        metavar="FILE",
        help="CSV/TSV correlation matrix; its header names the "
        + ("genes" if genes else "SNPs (rs_A1_A2 or rs)")
        + ", an optional first column repeats them as row names",
    )
    p.add_argument(
        "--model",
        default=None,
        help="lavaan model over the traits and the "
        + ("gene" if genes else "SNP")
        + " ids, text (lines or ';'-separated) or a file; default: none (build the structure only)",
    )
    p.add_argument(
        "--estimation",
        choices=["DWLS", "ML"],
        default="DWLS",
        help="estimator of the --model fit (default: %(default)s)",
    )
    name = "GeneSE" if genes else "SNPSE"
    p.add_argument(
        f"--{name}",
        f"--{name.lower()}",
        dest="se",
        type=positive_float,
        default=None,
        metavar="SE",
        help=f"SE of the {'gene' if genes else 'SNP'} variances (default: R's {'1e-8' if genes else '0.0005'})",
    )
    p.add_argument(
        f"--{'Genelist' if genes else 'SNPlist'}",
        f"--{'genelist' if genes else 'snplist'}",
        dest="keep",
        nargs="+",
        default=None,
        metavar="ID",
        help=f"{'genes' if genes else 'SNPs'} to use (the LD must name exactly these; default: those the LD names)",
    )
    add_out(p, "output covstruc file (.json or .parquet) of the joint S_full / V_full (usermodel --covstruc reads it)")
    p.add_argument(
        "--fit-out",
        default=None,
        metavar="FILE",
        help="with --model: write the parameter table here (.parquet; default: print only)",
    )
    add_overwrite(p)


def add_parsers(gsem_subparsers) -> None:
    """Register ``add-snps``, ``add-genes``, ``multi-snp`` and ``multi-gene`` under ``polgen gsem``."""
    a = gsem_subparsers.add_parser(
        "add-snps", help="per-SNP S_full and V_full (R addSNPs)", description=__doc__, epilog=EXAMPLES
    )
    a.add_argument(
        "--sumstats", required=True, metavar="PATH", help="sumstats() output: parquet file, directory or glob"
    )
    _covstruc(a)
    _gc(a)
    a.add_argument(
        "--SNPSE",
        "--snpse",
        dest="SNPSE",
        type=positive_float,
        default=None,
        metavar="SE",
        help="SE of the SNP variance (default: R's 0.0005)",
    )
    _stream(a)
    a.set_defaults(func=run_add_snps)
    g = gsem_subparsers.add_parser(
        "add-genes", help="per-gene S_full and V_full for TWAS genes (R addGenes)", description=__doc__, epilog=EXAMPLES
    )
    g.add_argument(
        "--genes", required=True, metavar="PATH", help="gene associations (Gene, Panel, HSQ, beta.*, se.*): parquet"
    )
    _covstruc(g)
    _gc(g)
    _stream(g)
    g.set_defaults(func=run_add_genes)
    m = gsem_subparsers.add_parser(
        "multi-snp",
        help="several SNPs and their LD in one model (R multiSNP, then usermodel)",
        description=__doc__,
        epilog=EXAMPLES,
    )
    m.add_argument("--sumstats", required=True, metavar="PATH", help="sumstats() output with the SNPs (parquet file)")
    _multi(m, genes=False)
    m.set_defaults(func=run_multi)
    mg = gsem_subparsers.add_parser(
        "multi-gene",
        help="several TWAS genes and their correlations in one model (R multiGene, then usermodel)",
        description=__doc__,
        epilog=EXAMPLES,
    )
    mg.add_argument(
        "--genes", required=True, metavar="PATH", help="gene associations (Gene, Panel, HSQ, beta.*, se.*): parquet"
    )
    _multi(mg, genes=True)
    mg.set_defaults(func=run_multi)


def _check_file(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise InputError(f"{what} not found", path=path)


def _check_out(path: str, overwrite: bool, suffixes: tuple[str, ...]) -> None:
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise InputError(f"output must end in {' or '.join(suffixes)}, got {path!r}", path=path)
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists (use --overwrite to replace it)", path=path)
    p.parent.mkdir(parents=True, exist_ok=True)


def _report_add(lf, out) -> None:
    import polars as pl

    rows, bad, smoothed = (
        lf.select(pl.len(), (~pl.col("valid")).sum(), (pl.col("S_smoothed") | pl.col("V_smoothed")).sum())
        .collect()
        .row(0)
    )
    print(f"wrote S_full/V_full of {rows} rows to {out} ({bad} invalid, {smoothed} smoothed)")


def run_add_snps(args) -> int:
    from polgen.gsem.snp_matrices import add_snps

    _check_file(args.covstruc, "covstruc file")
    lf = add_snps(
        args.covstruc,
        args.sumstats,
        SNPSE=args.SNPSE,
        GC=args.GC,
        out=args.out,
        batch_size=args.batch_size,
        resume=args.resume,
        overwrite=args.overwrite,
        executor=args.executor,
        progress=args.progress,
    )
    _report_add(lf, args.out)
    return 0


def run_add_genes(args) -> int:
    from polgen.gsem.snp_matrices import add_genes

    _check_file(args.covstruc, "covstruc file")
    lf = add_genes(
        args.covstruc,
        args.genes,
        GC=args.GC,
        out=args.out,
        batch_size=args.batch_size,
        resume=args.resume,
        overwrite=args.overwrite,
        executor=args.executor,
        progress=args.progress,
    )
    _report_add(lf, args.out)
    return 0


def run_multi(args) -> int:
    from polgen.gsem.gwas_plan import model_text
    from polgen.gsem.multi import multi_gene, multi_snp

    genes = getattr(args, "genes", None) is not None
    _check_file(args.covstruc, "covstruc file")
    _check_file(args.ld, "LD matrix file")
    _check_out(args.out, args.overwrite, (".json", ".parquet"))
    if args.fit_out is not None:
        if args.model is None:
            raise InputError("--fit-out needs --model")
        _check_out(args.fit_out, args.overwrite, (".parquet",))
    model = None if args.model is None else model_text(args.model)
    fn = multi_gene if genes else multi_snp
    res = fn(
        args.covstruc,
        args.genes if genes else args.sumstats,
        args.ld,
        model,
        args.se,
        args.keep,
        args.estimation,
    )
    res.covstruc.save(args.out)
    f = res.ld.shape[0]
    print(
        f"{'multi-gene' if genes else 'multi-snp'}: S_full/V_full over {f} {'genes' if genes else 'SNPs'} and "
        f"{len(res.names) - f} traits written to {args.out}"
        + (" (S_full smoothed)" if res.S_smoothed else "")
        + (" (V_full smoothed)" if res.V_smoothed else "")
    )
    if res.fit is not None:
        print_frame(res.fit.parameters, title="usermodel: parameters", max_rows=-1)
        print_frame(res.fit.fit_all, title="model fit", max_rows=-1)
        for w in res.fit.warnings:
            print(f"warning: {w}")
        if args.fit_out is not None:
            res.fit.save(args.fit_out)
            print(f"parameters written to {args.fit_out}")
    return 0
