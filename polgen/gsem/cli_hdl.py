"""``polgen gsem hdl`` (R GenomicSEM hdl) and ``polgen gsem hdl-panel`` (convert or build HDL LD panels)."""

from __future__ import annotations

import argparse
from pathlib import Path

from polgen.cli import add_out, add_overwrite, examples, positive_float, positive_int
from polgen.errors import InputError
from polgen.gsem.cli import _check_inputs, _check_out_file, _one_per_file, _prev_or_na

_PANEL = "hdl_panel"


def _unit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _decay(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not -1 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (-1, 1), got {text!r}")
    return value


def add_parsers(gsem_subparsers) -> None:
    """Register ``hdl`` and ``hdl-panel`` under ``polgen gsem``."""
    h = gsem_subparsers.add_parser(
        "hdl",
        help="genetic covariance by high-definition likelihood (R hdl)",
        description="Multivariable high-definition likelihood (Ning, Pawitan & Shen 2020) over munged traits and "
        "an HDL LD reference panel: the genetic covariance matrix S, its sampling covariance V and the "
        "intercepts I (R GenomicSEM hdl), written as a covariance structure for usermodel/commonfactor.",
        epilog=examples(
            f"polgen gsem hdl-panel --make --out {_PANEL} --seed 1",
            f"polgen gsem hdl --traits A.sumstats.gz B.sumstats.gz --ld-path {_PANEL} --trait-names A B --out hdl.json",
            "polgen gsem hdl --traits A.sumstats.gz B.sumstats.gz --ld-path UKB_array_SVD_eigen90_extraction "
            "--method jackknife --sample-prev 0.5 NA --population-prev 0.01 NA --out hdl.parquet --overwrite",
        ),
    )
    h.add_argument(
        "--traits", nargs="+", required=True, metavar="FILE", help="munged files (.parquet or .sumstats.gz) with A2"
    )
    h.add_argument(
        "--ld-path",
        required=True,
        metavar="DIR",
        help="HDL LD reference panel folder: R's layout (*snp_counter*.RData, *snp_list*.RData, per piece "
        ".rda + .bim; needs polgen[hdl]) or polgen's (hdl_panel.json, made by hdl-panel)",
    )
    h.add_argument("--trait-names", nargs="+", metavar="NAME", help="one name per trait (default: V1, V2, ...)")
    h.add_argument(
        "--sample-prev",
        nargs="+",
        type=_prev_or_na,
        metavar="P",
        help="case proportion per trait for the liability scale; NA = continuous trait (default: all NA)",
    )
    h.add_argument(
        "--population-prev",
        nargs="+",
        type=_prev_or_na,
        metavar="P",
        help="population prevalence per trait; NA = continuous trait (default: all NA)",
    )
    h.add_argument(
        "--n-ref",
        type=positive_float,
        default=335265,
        metavar="N",
        help="sample size of the LD reference panel (R's Nref; default: 335265, the UK Biobank panels)",
    )
    h.add_argument(
        "--method",
        choices=("piecewise", "jackknife"),
        default="piecewise",
        help="piecewise: sum of per-piece fits, delete-one-piece replicates (GenomicSEM's default); "
        "jackknife: one genome-wide fit and leave-one-piece-out refits (HDL's own) (default: piecewise)",
    )
    add_out(h, "covariance structure file: .json or .parquet")
    add_overwrite(h)
    h.set_defaults(func=run_hdl)

    p = gsem_subparsers.add_parser(
        "hdl-panel",
        help="convert an R HDL LD panel to polgen's layout, or build a synthetic one",
        description="Convert an HDL LD reference panel in R's layout (.rda/.RData/.bim; needs polgen[hdl]) into "
        "polgen's layout (parquet + one .npz per piece, read without rdata), or build a small synthetic "
        "panel (AR(1) LD inside each piece) for tests and demos.",
        epilog=examples(
            f"polgen gsem hdl-panel --convert UKB_array_SVD_eigen90_extraction --out {_PANEL}",
            f"polgen gsem hdl-panel --make --n-chromosomes 22 --pieces-per-chromosome 3 --out {_PANEL} --overwrite",
        ),
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--convert", metavar="DIR", help="R-layout panel folder to convert")
    what.add_argument("--make", action="store_true", help="build a synthetic panel")
    p.add_argument(
        "--n-chromosomes", type=positive_int, default=22, metavar="N", help="--make: chromosomes (default: 22)"
    )
    p.add_argument(
        "--pieces-per-chromosome",
        type=positive_int,
        default=2,
        metavar="N",
        help="--make: pieces per chromosome (default: 2)",
    )
    p.add_argument(
        "--snps-per-piece", type=positive_int, default=50, metavar="N", help="--make: SNPs per piece (default: 50)"
    )
    p.add_argument(
        "--decay",
        type=_decay,
        default=0.6,
        metavar="R",
        help="--make: LD decay^|i-j| between SNPs of a piece (default: 0.6)",
    )
    p.add_argument(
        "--eigen-cut",
        type=_unit,
        default=0.99,
        metavar="F",
        help="--make: keep eigenpairs explaining this share of the LD trace (default: 0.99)",
    )
    p.add_argument("--seed", type=int, default=None, help="--make: random seed for the alleles (default: none)")
    add_out(p, "panel folder to write")
    add_overwrite(p)
    p.set_defaults(func=run_hdl_panel)


def run_hdl(args) -> int:
    from polgen.gsem.hdl import hdl

    _check_out_file(args.out, args.overwrite)
    _check_inputs("--traits", "munged summary statistics file", args.traits)
    if not Path(args.ld_path).is_dir():
        raise InputError("--ld-path is not a folder (the HDL LD reference panel)", path=args.ld_path)
    n = len(args.traits)
    res = hdl(
        args.traits,
        sample_prev=_one_per_file(args.sample_prev, n, "sample-prev"),
        population_prev=_one_per_file(args.population_prev, n, "population-prev"),
        trait_names=args.trait_names,
        ld_path=args.ld_path,
        n_ref=args.n_ref,
        method=args.method,
    )
    res.save(args.out)
    pieces = res.extra["hdl"]["n_pieces"]
    print(f"hdl ({args.method}, {pieces} pieces): S, V, I for {res.trait_names} written to {args.out}")
    return 0


def run_hdl_panel(args) -> int:
    from polgen.gsem.hdl_panel import make_hdl_panel
    from polgen.io.hdl_panel import convert_hdl_panel

    if args.convert:
        out = convert_hdl_panel(args.convert, args.out, overwrite=args.overwrite)
        print(f"hdl-panel: converted {args.convert} to {out}")
    else:
        panel = make_hdl_panel(
            args.out,
            n_chromosomes=args.n_chromosomes,
            pieces_per_chromosome=args.pieces_per_chromosome,
            snps_per_piece=args.snps_per_piece,
            decay=args.decay,
            eigen_cut=args.eigen_cut,
            seed=args.seed,
            overwrite=args.overwrite,
        )
        print(f"hdl-panel: wrote a synthetic panel of {panel.n_pieces} pieces ({int(panel.m_ref)} SNPs) to {args.out}")
    return 0
