"""``polgen gsem user-gwas`` / ``polgen gsem commonfactor-gwas``: Genomic SEM GWAS from the shell.

    polgen gsem user-gwas --sumstats sumstats.parquet --covstruc ldsc.json \\
        --model "F1 =~ NA*A + B + C
    F1 ~ SNP
    F1 ~~ 1*F1" --out gwas_out/
    polgen gsem commonfactor-gwas --sumstats sumstats.parquet --covstruc ldsc.json --out cf_out/

``--model`` takes lavaan text or a file holding it.  Results go to a resumable parquet directory
(``--resume`` continues a killed run); query it with ``polgen sql`` or DuckDB.
"""

from __future__ import annotations

import argparse

from polgen.cli import (
    add_executor,
    add_out,
    add_overwrite,
    add_progress,
    add_resume,
    examples,
    positive_float,
    positive_int,
)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sumstats", required=True, metavar="PATH", help="sumstats() output: parquet file, directory or glob"
    )
    p.add_argument("--covstruc", required=True, metavar="FILE", help="ldsc output (.json or .parquet)")
    add_out(p, "output run folder (parquet parts + manifest; query it with polgen sql)")
    p.add_argument("--estimation", choices=["DWLS", "ML"], default="DWLS", help="estimator")
    p.add_argument(
        "--GC",
        "--gc",
        dest="GC",
        choices=["standard", "conserv", "none"],
        default="standard",
        help="genomic control of the SNP SEs by the LDSC intercepts (R GC)",
    )
    p.add_argument(
        "--smooth-check", action="store_true", help="report the largest Z change from smoothing each SNP's matrix"
    )
    p.add_argument(
        "--SNPSE",
        "--snpse",
        dest="SNPSE",
        type=positive_float,
        default=None,
        metavar="SE",
        help="SE of the SNP variance (default: R's 0.0005)",
    )
    p.add_argument("--TWAS", "--twas", dest="TWAS", action="store_true", help="inputs are genes (TWAS), not SNPs")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="SNPs per batch / part file (default: chosen from the model size)",
    )
    add_executor(p)
    add_progress(p)
    g = p.add_mutually_exclusive_group()
    add_resume(g)
    add_overwrite(g)


_DEMO = "polgen-demo/gsem/results"
EXAMPLES = examples(
    f"polgen gsem user-gwas --sumstats {_DEMO}/sumstats.parquet --covstruc {_DEMO}/ldsc_covstruc.json "
    '--model "F1 =~ TraitA + TraitB + TraitC; F1 ~ SNP" --out gwas/',
    f"polgen gsem user-gwas --sumstats {_DEMO}/sumstats.parquet --covstruc {_DEMO}/ldsc_covstruc.json "
    '--model "F1 =~ TraitA + TraitB + TraitC; F1 ~ SNP" --sub "F1~SNP" --out gwas/ --resume --executor processes',
    f"polgen gsem commonfactor-gwas --sumstats {_DEMO}/sumstats.parquet --covstruc {_DEMO}/ldsc_covstruc.json "
    "--out cf_gwas/ --overwrite",
)


def add_parsers(gsem_subparsers) -> None:
    """Register ``user-gwas`` and ``commonfactor-gwas`` under ``polgen gsem``."""
    u = gsem_subparsers.add_parser(
        "user-gwas",
        help="multivariate GWAS with a user model (R userGWAS)",
        description=__doc__,
        epilog=EXAMPLES,
    )
    u.add_argument("--model", required=True, help="lavaan model text (lines or ';'-separated), or a file holding it")
    _common(u)
    u.add_argument(
        "--no-fix-measurement",
        dest="fix_measurement",
        action="store_false",
        help="re-estimate the measurement model for every SNP (R fix_measurement=FALSE)",
    )
    u.add_argument("--std-lv", action="store_true", help="standardise latent variances (R std.lv=TRUE)")
    u.add_argument("--Q-SNP", "--q-snp", dest="Q_SNP", action="store_true", help="also the Q_SNP heterogeneity test")
    u.add_argument(
        "--sub", nargs="+", default=None, metavar="PARAM", help="parameters to report, e.g. 'F1~SNP' (default: all)"
    )
    u.add_argument("--long", action="store_true", help="report every parameter of the model")
    u.add_argument(
        "--no-printwarn",
        dest="printwarn",
        action="store_false",
        help="leave out the per-SNP warning column (R printwarn=FALSE; default: keep it)",
    )
    u.set_defaults(func=run_user_gwas)
    c = gsem_subparsers.add_parser(
        "commonfactor-gwas",
        help="common-factor GWAS (R commonfactorGWAS)",
        description=__doc__,
        epilog=EXAMPLES,
    )
    _common(c)
    c.set_defaults(func=run_commonfactor_gwas)


def _report(lf, out) -> None:
    import polars as pl

    s = lf.select(
        pl.col("SNP").n_unique().alias("snps") if "SNP" in lf.collect_schema() else pl.len().alias("snps"),
        pl.len().alias("rows"),
        (~pl.col("converged")).sum().alias("failed"),
    ).collect()
    snps, rows, failed = s.row(0)
    print(f"wrote {rows} rows for {snps} SNPs to {out} ({failed} rows not converged)")


def run_user_gwas(args) -> int:
    from polgen.gsem.gwas import user_gwas

    lf = user_gwas(
        args.sumstats,
        args.covstruc,
        args.model,
        estimation=args.estimation,
        GC=args.GC,
        fix_measurement=args.fix_measurement,
        std_lv=args.std_lv,
        Q_SNP=args.Q_SNP,
        smooth_check=args.smooth_check,
        SNPSE=args.SNPSE,
        TWAS=args.TWAS,
        sub=args.sub,
        long=args.long,
        printwarn=args.printwarn,
        batch_size=args.batch_size,
        out=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        executor=args.executor,
        progress=args.progress,
    )
    _report(lf, args.out)
    return 0


def run_commonfactor_gwas(args) -> int:
    from polgen.gsem.gwas import commonfactor_gwas

    lf = commonfactor_gwas(
        args.sumstats,
        args.covstruc,
        estimation=args.estimation,
        GC=args.GC,
        smooth_check=args.smooth_check,
        SNPSE=args.SNPSE,
        TWAS=args.TWAS,
        batch_size=args.batch_size,
        out=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        executor=args.executor,
        progress=args.progress,
    )
    _report(lf, args.out)
    return 0
