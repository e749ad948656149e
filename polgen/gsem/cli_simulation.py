"""``polgen gsem pa-ldsc | sim-ldsc``: parallel analysis of an LDSC matrix, and simulated GWAS.

    polgen gsem pa-ldsc --covstruc ldsc.json --r 500 --fa --out pa.parquet
    polgen gsem sim-ldsc --covmat S.csv --N 75000 300000 120000 --n-overlap 0.5 \\
        --ld eur_w_ld_chr/ --seed 1 --out sim/

``pa-ldsc`` prints the observed and null eigenvalues and the suggested number of components (and
factors with ``--fa``); ``--out`` keeps the table as parquet (draw it with ``polgen plot scree``).
``sim-ldsc`` writes ``iter{i}{trait}.sumstats.parquet`` per replicate and trait into ``--out``;
``polgen gsem ldsc --traits sim/iter1GWAS1.sumstats.parquet ...`` estimates the covariance back.
Matrices are read from ``.npy`` or delimited text (comma, tab or spaces; a header row and a first
column of row names, as R's ``write.csv`` writes, are skipped).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from polgen.cli import add_out, add_overwrite, examples, positive_float, positive_int, print_frame, unit_float
from polgen.errors import InputError, OutputExistsError

log = logging.getLogger("polgen")

_DEMO = "polgen-demo/gsem/results"
PA_EXAMPLES = examples(
    f"polgen gsem pa-ldsc --covstruc {_DEMO}/ldsc_covstruc.json --r 200 --seed 1",
    f"polgen gsem pa-ldsc --covstruc {_DEMO}/ldsc_covstruc.json --no-stand --diag --fa --nfactors 1 "
    "--out pa.parquet --overwrite",
)
SIM_EXAMPLES = examples(
    "polgen gsem sim-ldsc --covmat S.csv --N 75000 300000 120000 --n-overlap 0.5 --r-pheno 0.3 "
    "--intercepts 1.02 1.01 1.03 --ld eur_w_ld_chr/ --seed 1 --out sim/",
    'polgen gsem sim-ldsc --model "F1 =~ 1*P1 + 0.5*P2 + 0.7*P3; F1 ~~ 0.1*F1" --N 50000 '
    "--ld eur_w_ld_chr/ --r 10 --seed 2 --out sim_model/",
)


def read_matrix(path: str | Path, name: str) -> np.ndarray:
    """A numeric matrix from ``.npy`` or delimited text (header row / row-name column skipped)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{name} file not found", path=p)
    if p.suffix == ".npy":
        return np.asarray(np.load(p), dtype=np.float64)
    rows: list[list[str]] = []
    for line in p.read_text().splitlines():
        if line.strip():
            rows.append(line.replace(",", " ").replace("\t", " ").replace('"', " ").split())

    def numeric(cells: list[str]) -> bool:
        try:
            [float(c) for c in cells]
        except ValueError:
            return False
        return True

    if rows and not numeric(rows[0]):
        rows = rows[1:]  # header
    if rows and not numeric(rows[0]) and numeric(rows[0][1:]):
        rows = [r[1:] for r in rows]  # row names
    bad = next((i for i, r in enumerate(rows) if not numeric(r)), None)
    if not rows or bad is not None:
        raise InputError(f"{name}: not a numeric matrix", path=p, row=None if bad is None else bad + 1)
    if len({len(r) for r in rows}) != 1:
        raise InputError(f"{name}: rows of different lengths", path=p)
    return np.array([[float(c) for c in r] for r in rows])


def add_parsers(gsem_subparsers) -> None:
    """Register ``pa-ldsc`` and ``sim-ldsc`` under ``polgen gsem``."""
    p = gsem_subparsers.add_parser(
        "pa-ldsc",
        help="parallel analysis of an LDSC genetic covariance/correlation matrix (R paLDSC)",
        description=__doc__,
        epilog=PA_EXAMPLES,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--covstruc", metavar="FILE", help="ldsc output (.json or .parquet)")
    src.add_argument("--S", dest="S", metavar="FILE", help="the k x k matrix (with --V), .npy or delimited text")
    p.add_argument("--V", dest="V", metavar="FILE", help="sampling covariance of vech(S) matching --S's scaling")
    p.add_argument(
        "--stand",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --covstruc: use S_Stand/V_Stand (computed when absent) or S/V; "
        "default: the standardised pair when the covstruc has it",
    )
    p.add_argument("--r", type=positive_int, default=500, metavar="N", help="number of null matrices drawn")
    p.add_argument("--p", type=unit_float, default=0.95, metavar="Q", help="quantile of the null eigenvalues to exceed")
    p.add_argument("--diag", action="store_true", help="also the diagonalised analysis (only the diagonal of V)")
    p.add_argument("--fa", action="store_true", help="also the analysis of factor-solution eigenvalues (psych::fa)")
    p.add_argument(
        "--fm", choices=["minres", "uls", "ml", "pa"], default="minres", help="factor extraction method with --fa"
    )
    p.add_argument("--nfactors", type=positive_int, default=1, metavar="K", help="factors extracted with --fa")
    p.add_argument("--seed", type=int, default=None, metavar="INT", help="seed of the null draws (default: random)")
    add_out(p, "parquet file for the eigenvalue table (default: print only)", required=False)
    add_overwrite(p)
    p.set_defaults(func=run_pa_ldsc)

    s = gsem_subparsers.add_parser(
        "sim-ldsc",
        help="simulate GWAS summary statistics under multivariable LDSC (R simLDSC)",
        description=__doc__,
        epilog=SIM_EXAMPLES,
    )
    cov = s.add_mutually_exclusive_group(required=True)
    cov.add_argument("--covmat", metavar="FILE", help="population genetic covariance matrix (.npy or text)")
    cov.add_argument("--model", metavar="TEXT", help="lavaan syntax (or a file holding it) giving the covariance")
    s.add_argument(
        "--N",
        dest="N",
        nargs="+",
        required=True,
        metavar="N",
        help="sample sizes: one number, one per trait, or a k x k matrix file with the overlaps off the diagonal",
    )
    s.add_argument("--ld", required=True, metavar="DIR", help="LD-score folder ({chr}.l2.ldscore.gz, .l2.M_5_50)")
    s.add_argument(
        "--r-pheno",
        default=None,
        metavar="R|FILE",
        help="phenotypic correlation: one number or a k x k matrix file (default: the genetic correlations)",
    )
    s.add_argument(
        "--intercepts", nargs="+", type=positive_float, default=None, metavar="I", help="LDSC intercepts (default 1)"
    )
    s.add_argument(
        "--n-overlap",
        type=unit_float,
        default=0.0,
        metavar="F",
        help="sample overlap proportion when --N is not a matrix",
    )
    s.add_argument("--r", type=positive_int, default=1, metavar="N", help="number of replicates")
    s.add_argument("--seed", type=int, default=None, metavar="INT", help="seed (default: random)")
    s.add_argument("--n-chr", type=positive_int, default=22, metavar="N", help="chromosomes read from --ld (1..N)")
    s.add_argument("--trait-names", nargs="+", default=None, metavar="NAME", help="trait names (default GWAS1..k)")
    add_out(s, "folder for the iter{i}{trait}.sumstats.parquet files")
    add_overwrite(s)
    s.set_defaults(func=run_sim_ldsc)


def run_pa_ldsc(args: argparse.Namespace) -> int:
    from polgen.gsem.parallel_analysis import pa_ldsc
    from polgen.io.sink import params_to_json, write_table_atomic
    from polgen.schema import META_METHOD, META_PARAMS

    if args.out is not None and Path(args.out).exists() and not args.overwrite:
        raise OutputExistsError("output exists (pass --overwrite)", path=args.out)
    if args.covstruc is not None:
        if args.V is not None:
            raise InputError("--V goes with --S, not with --covstruc")
        res = pa_ldsc(
            args.covstruc, None, args.r, args.p, args.diag, args.fa, args.fm, args.nfactors, args.seed, stand=args.stand
        )
    else:
        if args.V is None:
            raise InputError("--S needs --V (the sampling covariance of vech(S))")
        S, V = read_matrix(args.S, "--S"), read_matrix(args.V, "--V")
        res = pa_ldsc(S, V, args.r, args.p, args.diag, args.fa, args.fm, args.nfactors, args.seed)
    frame = res.to_frame()
    print_frame(frame, title=f"parallel analysis ({res.r} null draws, {res.p:g} quantile)")
    lines = [f"Parallel Analysis suggests extracting {res.n_components} components"]
    if res.n_components_diag is not None:
        lines.append(f"Diagonalized Parallel Analysis suggests extracting {res.n_components_diag} components")
    if res.n_factors is not None:
        lines.append(f"Parallel Analysis suggests extracting {res.n_factors} factors")
    if res.n_factors_diag is not None:
        lines.append(f"Diagonalized Parallel Analysis suggests extracting {res.n_factors_diag} factors")
    print("\n".join(lines))
    if args.out is not None:
        params = {
            "r": res.r,
            "p": res.p,
            "seed": args.seed,
            "fm": args.fm,
            "nfactors": args.nfactors,
            "n_components": res.n_components,
            "n_factors": res.n_factors,
            "trait_names": list(res.trait_names),
        }
        write_table_atomic(args.out, frame, metadata={META_METHOD: "gsem.pa_ldsc", META_PARAMS: params_to_json(params)})
        print(f"wrote {args.out}")
    return 0


def _sizes(values: list[str]):
    if len(values) == 1 and not _is_number(values[0]):
        return read_matrix(values[0], "--N")
    try:
        nums = [float(v) for v in values]
    except ValueError:
        raise InputError(f"--N takes numbers or one matrix file, got {values}") from None
    return nums[0] if len(nums) == 1 else nums


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def run_sim_ldsc(args: argparse.Namespace) -> int:
    from polgen.gsem.simulate import sim_ldsc

    covmat: np.ndarray | str
    if args.covmat is not None:
        covmat = read_matrix(args.covmat, "--covmat")
    else:
        mp = Path(args.model)
        text = mp.read_text() if len(args.model) < 4096 and "\n" not in args.model and mp.is_file() else args.model
        covmat = text.replace(";", "\n")
    rp = args.r_pheno
    r_pheno = None if rp is None else (float(rp) if _is_number(rp) else read_matrix(rp, "--r-pheno"))
    sims = sim_ldsc(
        covmat,
        _sizes(args.N),
        args.ld,
        r_pheno=r_pheno,
        intercepts=args.intercepts,
        n_overlap=args.n_overlap,
        r=args.r,
        seed=args.seed,
        out=args.out,
        chr=args.n_chr,
        trait_names=args.trait_names,
        overwrite=args.overwrite,
    )
    n = sum(len(s.paths) for s in sims)
    print(f"wrote {n} files ({len(sims)} replicate(s) x {len(sims[0])} traits) to {args.out}")
    return 0
