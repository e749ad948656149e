"""``polgen lfmm``: fit LFMM2 on a .bed and test every SNP, streaming results to parquet.

    polgen lfmm --bed geno.bed --covariates env.tsv -K 5 --est-rate 0.01 --out results/

The covariate file (tab/comma separated or parquet) has an ``IID`` column (optionally ``FID``)
and one numeric column per variable; a headerless all-numeric file (R LEA's .env) is taken in
.fam order.  The fitted model is saved as ``<out>/lfmm_model.npz``; ``--resume`` reuses it and
continues an interrupted test pass; ``--qvalue BH|storey`` adds q-values.

Further analyses are subcommands: ``polgen lfmm offset|gap`` (R LEA genetic.offset / genetic.gap),
``polgen lfmm qvalue`` (q-values of a finished run), ``polgen lfmm glm`` (per-SNP logistic / Poisson
tests, lfmm glm_test), ``polgen lfmm lasso`` (lfmm_lasso) and ``polgen lfmm cv`` (lfmm_ridge_CV).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import polars as pl

from polgen.cli import (
    add_executor,
    add_out,
    add_overwrite,
    add_progress,
    add_resume,
    examples,
    fraction_float,
    nonneg_int,
    positive_float,
    positive_int,
)
from polgen.errors import InputError, OutputExistsError

log = logging.getLogger("polgen")


def read_covariates(path: str | Path) -> pl.DataFrame:
    """Read a covariate table: parquet, or delimited text with or without a header."""
    path = Path(path)
    if not path.exists():
        raise InputError("covariate file not found", path=path)
    if path.is_dir():
        raise InputError("covariate path is a directory, not a file", path=path)
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            return pl.read_parquet(path)
        except pl.exceptions.PolarsError as exc:
            raise InputError(f"cannot read covariates: {exc}", path=path) from None
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise InputError("covariate file is neither a delimited text table nor parquet", path=path) from None
    if not text.strip():
        raise InputError("covariate file is empty", path=path)
    first = text.splitlines()[0]
    sep = "\t" if "\t" in first else "," if "," in first else " "
    fields = [f for f in first.replace(sep, " ").split() if f]

    def _num(x):
        try:
            float(x)
            return True
        except ValueError:
            return False

    header = not all(_num(f) for f in fields)
    try:
        if sep == " ":
            lines = [ln.split() for ln in text.splitlines() if ln.strip()]
            names = lines[0] if header else [f"X{j + 1}" for j in range(len(lines[0]))]
            body = lines[1:] if header else lines
            df = pl.DataFrame([list(r) for r in zip(*body)] if body else [], schema=names, orient="col")
            return df.with_columns(pl.col(c).cast(pl.Float64, strict=False) for c in names if c not in ("FID", "IID"))
        df = pl.read_csv(path, separator=sep, has_header=header, infer_schema_length=10000)
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read covariates: {exc}", path=path) from None
    if not header:
        df.columns = [f"X{j + 1}" for j in range(df.width)]
    return df.with_columns(pl.col(c).cast(pl.String) for c in ("FID", "IID") if c in df.columns)


def add_parser(subparsers) -> None:
    demo = "polgen-demo/lfmm"
    p = subparsers.add_parser(
        "lfmm",
        help="LFMM2 gene-environment association on a PLINK .bed",
        description=__doc__,
        epilog=examples(
            f"polgen lfmm --bed {demo}/genotypes.bed --covariates {demo}/env.tsv --choose-k 8",
            f"polgen lfmm --bed {demo}/genotypes.bed --covariates {demo}/env.tsv -K 3 --out lfmm_out/",
            f"polgen lfmm --bed {demo}/genotypes.bed --covariates {demo}/env.tsv -K 3 --est-rate 0.5 "
            "--calibrate median+MAD --out lfmm_out/ --overwrite --executor processes",
        ),
    )
    p.add_argument(
        "--bed",
        metavar="FILE",
        help="PLINK .bed (with .bim/.fam beside it), or a PLINK 2 .pgen (.pvar/.psam; extra polgen[pgen]); required",
    )
    p.add_argument(
        "--covariates", metavar="FILE", help="covariates: IID [+FID] + numeric columns (tsv/csv/parquet); required"
    )
    p.add_argument("-K", type=positive_int, help="number of latent factors (required unless --choose-k)")
    add_out(
        p, "output run folder (parquet parts + manifest + lfmm_model.npz; required unless --choose-k)", required=False
    )
    p.add_argument("--lam", type=positive_float, default=1e-5, help="ridge penalty lambda")
    est = p.add_mutually_exclusive_group()
    est.add_argument(
        "--est-rate",
        type=fraction_float,
        metavar="F",
        help="fraction of SNPs used to estimate the latent factors U (default: all SNPs)",
    )
    est.add_argument("--est-bed", metavar="FILE", help="separate (e.g. LD-pruned) .bed used to estimate U")
    p.add_argument(
        "--power-iter",
        type=nonneg_int,
        default=None,
        metavar="N",
        help="exactly N power iterations of the randomized SVD (default: iterate until converged, see --tol)",
    )
    p.add_argument(
        "--tol",
        type=positive_float,
        default=1e-7,
        help="convergence tolerance of the randomized SVD: estimated remaining change of the top-K singular "
        "values (relative) and of their subspace (sine of the largest angle), from the changes between passes",
    )
    p.add_argument(
        "--max-power-iter",
        type=nonneg_int,
        default=20,
        metavar="N",
        help="cap of the iteration (at most N+1 passes; a warning when reached)",
    )
    p.add_argument(
        "--oversampling",
        type=nonneg_int,
        default=None,
        metavar="N",
        help="extra sketch columns per pass of the randomized SVD (default: 2 when iterating until converged, "
        "10 with --power-iter)",
    )
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed of the randomized SVD and --est-rate")
    p.add_argument(
        "--scale",
        choices=["center", "eigenstrat"],
        default="center",
        help="genotype scaling: centred (LEA) or EIGENSTRAT-standardised",
    )
    p.add_argument(
        "--dlambda",
        choices=["lea", "exact"],
        default="lea",
        help="ridge shrinkage of the singular values: LEA's formula or the exact one",
    )
    p.add_argument(
        "--calibrate",
        choices=["gif", "median+MAD", "none"],
        default="gif",
        help="P calibration: genomic inflation factor, median+MAD of the z-scores, or none",
    )
    p.add_argument("--full", action="store_true", help="also LEA's full-model F test")
    p.add_argument(
        "--family",
        choices=["gaussian", "binomial", "poisson"],
        default="gaussian",
        help="per-locus model: linear (LEA lfmm2.test) or a logistic / Poisson GLM (LEA linear=FALSE, lfmm "
        "glm_test; the table of polgen lfmm glm)",
    )
    p.add_argument(
        "--trials",
        type=positive_int,
        default=2,
        help="with --family binomial: trials per sample (2 for diploid dosages, 1 for haploid / 0-1 data)",
    )
    p.add_argument(
        "--qvalue",
        choices=["none", "BH", "storey"],
        default="none",
        help="after the test, add q-values Q[_<variable>] of the calibrated P (Benjamini-Hochberg, or Storey's "
        "with qvalue's default smoother pi0) and write them to --qvalue-out",
    )
    p.add_argument(
        "--fdr",
        type=fraction_float,
        default=None,
        metavar="Q",
        help="with --qvalue: keep only the candidates with Q <= this FDR (default: every SNP)",
    )
    p.add_argument(
        "--qvalue-out",
        metavar="FILE",
        default=None,
        help="parquet file of the q-values (default: <out>.qvalues.parquet beside the run folder)",
    )
    add_resume(p)
    add_overwrite(p)
    add_executor(p)
    p.add_argument(
        "--choose-k",
        type=positive_int,
        metavar="KMAX",
        help="instead of testing: print the top KMAX eigenvalues and Tracy-Widom tests",
    )
    add_progress(p)
    p.set_defaults(func=run)
    tools = p.add_subparsers(
        dest="lfmm_command",
        required=False,
        metavar="{offset,gap,qvalue,glm,lasso,cv}",
        title="further LFMM analyses (polgen lfmm <analysis> --help)",
    )
    add_offset_parsers(tools)
    add_qvalue_parser(tools)
    add_glm_parser(tools)
    add_lasso_cv_parsers(tools)


def run(args) -> int:
    from polgen.lfmm import choose_k, fit, load_model, test

    missing = [flag for flag, v in (("--bed", args.bed), ("--covariates", args.covariates)) if v is None]
    if missing:
        raise InputError(f"polgen lfmm needs {' and '.join(missing)}")

    if args.choose_k:
        ck = choose_k(args.bed, k_max=args.choose_k, est_rate=args.est_rate, seed=args.seed, progress=args.progress)
        print(ck.frame())
        print(f"suggested K (Tracy-Widom, alpha=0.05): {ck.suggested_k()}")
        return 0
    if args.K is None or args.out is None:
        raise InputError("polgen lfmm needs -K and --out (or --choose-k)")
    from polgen.engine import check_executor
    from polgen.io.sink import MANIFEST, make_output_dir

    check_executor(args.executor)  # before the fit, not after it
    out = Path(args.out)
    if (out / MANIFEST).exists() and not (args.resume or args.overwrite):
        # refuse before fitting: the fit would replace the saved model of the previous run
        raise OutputExistsError(
            "--out holds a previous run; pass --resume to continue it or --overwrite to replace it", path=out
        )
    env = read_covariates(args.covariates)
    make_output_dir(out)
    model_path = out / "lfmm_model.npz"
    if args.resume and model_path.exists():
        model = load_model(model_path)
        if model.K != args.K:
            raise InputError(f"the saved model has K={model.K}, not {args.K}", path=model_path)
    else:
        model = fit(
            env,
            args.bed,
            args.K,
            lam=args.lam,
            est_rate=args.est_rate,
            est_bed=args.est_bed,
            power_iter=args.power_iter,
            tol=args.tol,
            max_power_iter=args.max_power_iter,
            oversampling=args.oversampling,
            seed=args.seed,
            scale=args.scale,
            dlambda=args.dlambda,
            progress=args.progress,
        )
        model.save(model_path)
    calibrate = None if args.calibrate == "none" else args.calibrate
    res = test(
        model,
        args.bed,
        env,
        calibrate=calibrate,
        full=args.full,
        out=out,
        resume=args.resume,
        overwrite=args.overwrite,
        executor=args.executor,
        progress=args.progress,
        family=args.family,
        trials=args.trials,
    )
    n = res.frame.select(pl.len()).collect().item()
    print(f"lfmm: {n} SNPs tested, K={model.K}; results in {out}")
    for v, g in res.gif.items():
        print(f"  GIF[{v}] = {g:.4f}")
    if args.qvalue != "none":
        from polgen.lfmm import fdr

        qout = Path(args.qvalue_out) if args.qvalue_out else out.with_name(out.name + ".qvalues.parquet")
        fr = fdr(res, method=args.qvalue, fdr=args.fdr, out=qout, overwrite=args.overwrite or args.resume)
        for q, k in fr.n_candidates.items():
            print(f"  {q}: pi0 {fr.pi0[q]:.4f}, {k} SNPs with Q <= {args.fdr or 0.05:g}")
        print(f"  q-values in {qout}")
    elif args.fdr is not None or args.qvalue_out is not None:
        raise InputError("--fdr and --qvalue-out need --qvalue BH or --qvalue storey")
    return 0


def add_offset_parsers(tools) -> None:
    """``polgen lfmm offset`` and ``polgen lfmm gap`` (R LEA genetic.offset / genetic.gap)."""
    for name, lea in (("offset", "genetic.offset"), ("gap", "genetic.gap, the same computation")):
        o = tools.add_parser(
            name,
            help=f"genetic {name} per individual/location under an environmental change (R LEA {lea})",
            description=f"Genetic {name} (R LEA {lea}): per row of --pred-env, OFFSET = mean over the loci of "
            "((X_new - X_pred) B')^2 and DISTANCE = mean of |(X_new - X_pred) B'|, with the LFMM2 ridge effect "
            "sizes B streamed from the .bed; the eigenvalues/vectors of cov(B) go to the parquet metadata and, "
            "with --eigen-out, to their own table.",
            epilog=examples(
                f"polgen lfmm {name} --bed geno.bed --env env.tsv --pred-env env_2050.tsv -K 2 --out {name}.parquet",
                f"polgen lfmm {name} --bed geno.bed --env env.tsv --pred-env env_2050.tsv -K 2 3 4 --scale "
                f"--candidate-loci hits.txt --out {name}.parquet --eigen-out eigen.parquet",
            ),
        )
        o.add_argument("--bed", required=True, metavar="FILE", help="PLINK .bed (with .bim/.fam beside it)")
        o.add_argument(
            "--env",
            required=True,
            metavar="FILE",
            help="current environment of the genotyped samples: IID [+FID] + numeric columns (tsv/csv/parquet; "
            "a headerless numeric table is taken in .fam order, as LEA's .env)",
        )
        o.add_argument(
            "--pred-env",
            required=True,
            metavar="FILE",
            help="predicted environment: the same variable columns (an IID column keys the rows)",
        )
        o.add_argument(
            "--new-env",
            metavar="FILE",
            default=None,
            help="current environment of the --pred-env rows (default: --env, the rows being the individuals)",
        )
        o.add_argument(
            "-K",
            type=positive_int,
            nargs="+",
            required=True,
            help="number(s) of latent factors; with several, B is averaged over one fit per K (as LEA)",
        )
        o.add_argument(
            "--scale",
            action="store_true",
            help="standardise the three environment tables by --env's means and SDs (LEA's scale=TRUE; default off)",
        )
        o.add_argument(
            "--candidate-loci",
            metavar="FILE",
            default=None,
            help="text file of 1-based .bim row numbers (LEA's candidate.loci), one per line (default: all SNPs)",
        )
        o.add_argument("--lam", type=positive_float, default=1e-5, help="ridge penalty lambda of the fit")
        o.add_argument("--tol", type=positive_float, default=1e-9, help="convergence tolerance of the fit's SVD")
        o.add_argument("--max-power-iter", type=nonneg_int, default=40, metavar="N", help="cap of the fit's iteration")
        o.add_argument("--seed", type=nonneg_int, default=0, help="random seed of the fit's randomized SVD")
        add_out(o, "output parquet file (IID, OFFSET, DISTANCE)")
        o.add_argument(
            "--eigen-out",
            metavar="PATH",
            default=None,
            help="also write the eigen decomposition of cov(B) (COMPONENT, EIGENVALUE, VECTOR_<variable>) here",
        )
        add_overwrite(o)
        add_progress(o)
        o.set_defaults(func=run_offset, offset_kind=name)


def run_offset(args) -> int:
    import numpy as np

    from polgen.io.sink import write_table_atomic
    from polgen.lfmm import genetic_gap, genetic_offset, write_offset

    out = Path(args.out)
    for target in (out, None if args.eigen_out is None else Path(args.eigen_out)):
        if target is not None and target.exists() and not args.overwrite:
            raise OutputExistsError("the output exists; pass --overwrite to replace it", path=target)
    cand = None
    if args.candidate_loci is not None:
        cpath = Path(args.candidate_loci)
        if not cpath.is_file():
            raise InputError("candidate loci file not found", path=cpath)
        try:
            rows = [int(x) for x in cpath.read_text().split()]
        except ValueError:
            raise InputError("candidate loci must be whole 1-based .bim row numbers", path=cpath) from None
        if rows and min(rows) < 1:
            raise InputError(f"candidate loci are 1-based .bim row numbers; got {min(rows)}", path=cpath)
        cand = np.asarray(rows, dtype=np.int64) - 1
    fn = genetic_offset if args.offset_kind == "offset" else genetic_gap
    res = fn(
        args.bed,
        read_covariates(args.env),
        read_covariates(args.pred_env),
        new_env=None if args.new_env is None else read_covariates(args.new_env),
        K=args.K,
        scale=args.scale,
        candidate_loci=cand,
        lam=args.lam,
        tol=args.tol,
        max_power_iter=args.max_power_iter,
        seed=args.seed,
        progress=args.progress,
    )
    write_offset(res, out)
    if args.eigen_out is not None:
        write_table_atomic(args.eigen_out, res.eigen_frame())
    print(f"lfmm {args.offset_kind}: {res.frame.height} rows over {res.n_loci} loci, K={list(res.K)}; written to {out}")
    return 0


def add_qvalue_parser(tools) -> None:
    """``polgen lfmm qvalue``: q-values of a finished ``polgen lfmm`` run (DuckDB, out of core)."""
    q = tools.add_parser(
        "qvalue",
        help="q-values (BH or Storey) of an LFMM result, and the candidates at an FDR",
        description="Add Q[_<variable>] columns to an LFMM result: Benjamini-Hochberg (R p.adjust) or Storey "
        "q-values (R qvalue: pi0 by the lambda-grid smoother or the closed-form bootstrap) of the calibrated P "
        "(P when the run is uncalibrated), streamed through DuckDB; written in the result's row order.",
        epilog=examples(
            "polgen lfmm qvalue --results lfmm_out/ --out lfmm_q.parquet",
            "polgen lfmm qvalue --results lfmm_out/ --method storey --fdr 0.05 --out candidates.parquet",
        ),
    )
    q.add_argument("--results", required=True, metavar="DIR", help="the run folder (or parquet file) of polgen lfmm")
    q.add_argument(
        "--method", choices=["BH", "storey"], default="BH", help="Benjamini-Hochberg, or Storey's q-values (qvalue)"
    )
    q.add_argument(
        "--fdr", type=fraction_float, default=None, metavar="Q", help="keep only rows with Q <= this (default: all)"
    )
    q.add_argument(
        "--p-col",
        action="append",
        default=None,
        metavar="COLUMN",
        help="P column to adjust (repeatable; default: P_CALIBRATED[_v] of each variable, else P[_v])",
    )
    q.add_argument(
        "--pi0-method",
        choices=["smoother", "bootstrap"],
        default="smoother",
        help="Storey pi0: qvalue's smoothing spline (df 3) over the lambda grid, or its closed-form bootstrap",
    )
    q.add_argument(
        "--lambda",
        dest="lambda_",
        type=float,
        nargs="+",
        default=None,
        metavar="L",
        help="Storey lambda value(s) (default: qvalue's 0.05, 0.10, ..., 0.95)",
    )
    q.add_argument("--pi0", type=positive_float, default=None, help="fixed Storey pi0 in (0, 1] (default: estimated)")
    add_out(q, "output parquet file (the result's columns + Q[_<variable>])")
    add_overwrite(q)
    q.set_defaults(func=run_qvalue)


def run_qvalue(args) -> int:
    from polgen.lfmm import fdr

    if Path(args.out).suffix.lower() != ".parquet":
        raise InputError("--out must be a .parquet file", path=args.out)
    res = fdr(
        args.results,
        method=args.method,
        p_col=args.p_col,
        fdr=args.fdr,
        pi0=args.pi0,
        lambda_=args.lambda_,
        pi0_method=args.pi0_method,
        out=args.out,
        overwrite=args.overwrite,
    )
    for qc, k in res.n_candidates.items():
        print(f"{qc} (from {res.p_columns[qc]}): pi0 {res.pi0[qc]:.4f}, {k} rows with Q <= {args.fdr or 0.05:g}")
    print(f"written to {args.out}")
    return 0


def add_glm_parser(tools) -> None:
    """``polgen lfmm glm``: per-SNP logistic / Poisson GLM tests with a fitted model's factors."""
    g = tools.add_parser(
        "glm",
        help="per-SNP GLM tests (logistic or Poisson) with the latent factors as covariates (lfmm glm_test)",
        description="For every SNP fit glm(y ~ X + U, family) by IRLS exactly as R's glm.fit (the lfmm package's "
        "glm_test, LEA's lfmm2.test(linear = FALSE)), with U the latent factors of a model saved by polgen lfmm "
        "(<out>/lfmm_model.npz); Wald Z and p-values, calibrated by the genomic inflation factor.",
        epilog=examples(
            "polgen lfmm glm --bed geno.bed --model lfmm_out/lfmm_model.npz --out glm.parquet",
            "polgen lfmm glm --bed haploid.bed --model m.npz --trials 1 --snps hits.txt --out g.parquet",
        ),
    )
    g.add_argument(
        "--bed", required=True, metavar="FILE", help="PLINK .bed (with .bim/.fam beside it) or PLINK 2 .pgen"
    )
    g.add_argument("--model", required=True, metavar="FILE", help="LFMM model saved by polgen lfmm (lfmm_model.npz)")
    g.add_argument("--covariates", metavar="FILE", default=None, help="covariates to test (default: the model's own)")
    g.add_argument(
        "--family",
        choices=["binomial", "poisson"],
        default="binomial",
        help="logistic regression of y out of --trials, or Poisson regression of the counts",
    )
    g.add_argument(
        "--trials",
        type=positive_int,
        default=2,
        help="binomial trials per sample: 2 for diploid dosages, 1 for haploid/binary 0/1 genotypes",
    )
    g.add_argument(
        "--calibrate",
        choices=["gif", "median+MAD", "none"],
        default="gif",
        help="P calibration: genomic inflation factor, median+MAD of the z-scores, or none",
    )
    g.add_argument(
        "--snps", metavar="FILE", default=None, help="text file of 1-based .bim row numbers to test (default: all)"
    )
    g.add_argument("--maxit", type=positive_int, default=25, help="IRLS iterations at most (R glm.control maxit)")
    add_out(g, "output parquet file")
    add_overwrite(g)
    g.set_defaults(func=run_glm)


def run_glm(args) -> int:
    import numpy as np

    from polgen.lfmm import glm_test, load_model

    snps = None
    if args.snps is not None:
        spath = Path(args.snps)
        if not spath.is_file():
            raise InputError("SNP list not found", path=spath)
        try:
            rows = [int(x) for x in spath.read_text().split()]
        except ValueError:
            raise InputError("the SNP list must hold whole 1-based .bim row numbers", path=spath) from None
        if rows and min(rows) < 1:
            raise InputError(f"SNP rows are 1-based; got {min(rows)}", path=spath)
        snps = np.asarray(rows, dtype=np.int64) - 1
    if Path(args.out).suffix.lower() != ".parquet":
        raise InputError("--out must be a .parquet file", path=args.out)
    res = glm_test(
        load_model(args.model),
        args.bed,
        None if args.covariates is None else read_covariates(args.covariates),
        family=args.family,
        trials=args.trials,
        calibrate=None if args.calibrate == "none" else args.calibrate,
        snps=snps,
        maxit=args.maxit,
        out=args.out,
        overwrite=args.overwrite,
    )
    n = res.frame.select(pl.len()).collect().item()
    print(f"lfmm glm ({args.family}): {n} SNPs tested; results in {args.out}")
    for v, gif in res.gif.items():
        print(f"  GIF[{v}] = {gif:.4f}")
    return 0


def add_lasso_cv_parsers(tools) -> None:
    """``polgen lfmm lasso`` (lfmm_lasso) and ``polgen lfmm cv`` (lfmm_ridge_CV)."""
    demo = "polgen-demo/lfmm"
    la = tools.add_parser(
        "lasso",
        help="sparse LFMM: L1-penalised effect sizes along a lambda path (the lfmm package's lfmm_lasso)",
        description="The lfmm package's lfmm_lasso, streamed: alternate soft-thresholded effect sizes and a "
        "soft-thresholded SVD of Y - XB' along a decreasing lambda path until the share of non-zero effects "
        "exceeds --nozero-prop (or at one --lam); writes the per-SNP effect sizes.",
        epilog=examples(
            f"polgen lfmm lasso --bed {demo}/genotypes.bed --covariates {demo}/env.tsv -K 3 --out lasso.parquet"
        ),
    )
    cv = tools.add_parser(
        "cv",
        help="cross-validated prediction error of the ridge LFMM over K and lambda (lfmm_ridge_CV)",
        description="The lfmm package's lfmm_ridge_CV, streamed in three passes: for every K x lambda, row fold "
        "and column fold, the mean squared error of predicting held-out samples' held-out SNPs.",
        epilog=examples(
            f"polgen lfmm cv --bed {demo}/genotypes.bed --covariates {demo}/env.tsv -K 1 2 3 4 --lam 1e-5 1 "
            "--out cv.parquet"
        ),
    )
    for q in (la, cv):
        q.add_argument("--bed", required=True, metavar="FILE", help="PLINK .bed (with .bim/.fam beside it)")
        q.add_argument("--covariates", required=True, metavar="FILE", help="covariates: IID [+FID] + numeric columns")
    la.add_argument("-K", type=positive_int, required=True, help="number of latent factors")
    la.add_argument(
        "--nozero-prop", type=fraction_float, default=0.01, help="stop the path above this share of non-zero effects"
    )
    la.add_argument("--lambda-num", type=positive_int, default=100, help="length of the lambda path")
    la.add_argument("--lambda-min-ratio", type=fraction_float, default=0.01, help="last / first lambda of the path")
    la.add_argument("--lam", type=positive_float, default=None, help="run this one lambda instead of the path")
    la.add_argument("--it-max", type=positive_int, default=100, help="alternations per lambda at most")
    la.add_argument(
        "--epsilon", type=positive_float, default=1e-6, help="relative change of the squared error that stops them"
    )
    add_out(la, "output parquet file (CHR, SNP, BP, A1, A2, BETA[_<variable>])")
    add_overwrite(la)
    la.set_defaults(func=run_lasso)
    cv.add_argument("-K", type=positive_int, nargs="+", required=True, help="numbers of latent factors to try")
    cv.add_argument("--lam", type=positive_float, nargs="+", default=[1e-5], help="ridge penalties to try")
    cv.add_argument("--row-folds", type=positive_int, default=5, help="sample folds")
    cv.add_argument("--col-folds", type=positive_int, default=5, help="SNP folds")
    cv.add_argument(
        "--col-prop", type=fraction_float, default=1.0, help="share of SNPs (smallest training error) cross-validated"
    )
    cv.add_argument("--seed", type=nonneg_int, default=0, help="seed of the random folds")
    add_out(cv, "output parquet file (K, lam, row_fold, col_fold, err, nozero_prop)")
    add_overwrite(cv)
    cv.set_defaults(func=run_cv)


def _refuse_existing(out: str, overwrite: bool) -> Path:
    path = Path(out)
    if path.suffix.lower() != ".parquet":
        raise InputError("--out must be a .parquet file", path=path)
    if path.exists() and not overwrite:
        raise OutputExistsError("the output exists; pass --overwrite to replace it", path=path)
    return path


def run_lasso(args) -> int:
    import json

    from polgen.io.sink import write_table_atomic
    from polgen.lfmm import lfmm_lasso

    out = _refuse_existing(args.out, args.overwrite)
    res = lfmm_lasso(
        read_covariates(args.covariates),
        args.bed,
        args.K,
        nozero_prop=args.nozero_prop,
        lambda_num=args.lambda_num,
        lambda_min_ratio=args.lambda_min_ratio,
        lam=args.lam,
        it_max=args.it_max,
        epsilon=args.epsilon,
    )
    meta = {"lam": res.lam, "gamma": res.gamma, "nozero_prop": res.nozero_prop, "K_used": int(res.U.shape[1])}
    write_table_atomic(out, res.frame(), metadata={"polgen.lfmm.lasso": json.dumps(meta)})
    print(f"lfmm lasso: lambda {res.lam:.4g}, {res.nozero_prop:.2%} non-zero effects; written to {out}")
    return 0


def run_cv(args) -> int:
    from polgen.io.sink import write_table_atomic
    from polgen.lfmm import lfmm_ridge_cv

    out = _refuse_existing(args.out, args.overwrite)
    frame = lfmm_ridge_cv(
        read_covariates(args.covariates),
        args.bed,
        args.K,
        args.lam,
        row_folds=args.row_folds,
        col_folds=args.col_folds,
        col_prop=args.col_prop,
        seed=args.seed,
    )
    write_table_atomic(out, frame)
    summary = frame.group_by("K", "lam").agg(pl.col("err").mean()).sort("err")
    best = summary.row(0, named=True)
    print(f"lfmm cv: best K={best['K']}, lam={best['lam']:g} (mean error {best['err']:.6g}); written to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m polgen.lfmm.cli ...``)."""
    parser = argparse.ArgumentParser(prog="polgen")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
