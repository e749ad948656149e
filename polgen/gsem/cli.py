"""``polgen gsem``: Genomic SEM data preparation from the command line.

    polgen gsem munge    --files a.txt.gz b.txt.gz --hm3 w_hm3.snplist --trait-names A B --out munged/
    polgen gsem ldsc     --traits munged/A.sumstats.parquet munged/B.sumstats.parquet \\
                         --ld eur_w_ld_chr/ --n-chr 22 --trait-names A B --out ldsc.json
    polgen gsem sumstats --files a.txt.gz b.txt.gz --ref reference.1000G.maf.0.005.txt \\
                         --trait-names A B --se-logit F F --out sumstats.parquet

Per-file options (``--N``, ``--se-logit``, ``--ols``, ``--linprob``, ``--sample-prev``,
``--population-prev``) take one value per file; ``NA`` means "not given" and ``T``/``F``/``TRUE``/
``FALSE`` are accepted for booleans, as in R.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path

from polgen.cli import add_out, add_overwrite, examples, positive_float, positive_int, unit_float
from polgen.errors import InputError, OutputExistsError

log = logging.getLogger("polgen")

# modules that register more ``polgen gsem`` subcommands, each with ``add_parsers(subparsers)``:
# the GWAS, the model fits (usermodel, commonfactor, rgmodel), the LD-score family (hdl, s-ldsc +
# enrich, pa-ldsc + sim-ldsc) and the tools after ldsc (summary-gls, sub-sv, read-fusion, q-trait,
# multi-snp / add-snps / multi-gene)
SUBCOMMAND_MODULES = (
    "polgen.gsem.gwas_cli",
    "polgen.gsem.cli_models",
    "polgen.gsem.cli_hdl",
    "polgen.gsem.cli_stratified",
    "polgen.gsem.cli_simulation",
    "polgen.gsem.cli_gls",
    "polgen.gsem.cli_multi",
)

_TRUE = {"t", "true", "1", "yes", "y"}
_FALSE = {"f", "false", "0", "no", "n"}


def _num_or_na(text: str) -> float | None:
    if text.upper() in ("NA", "NAN", "NONE", ""):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or NA, got {text!r}") from None


def _prev_or_na(text: str) -> float | None:
    value = _num_or_na(text)
    if value is not None and not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a prevalence in (0, 1) or NA, got {text!r}")
    return value


def _bool(text: str) -> bool:
    t = text.lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected T/F/TRUE/FALSE, got {text!r}")


def _select(text: str):
    if text.upper() in ("ODD", "EVEN"):
        return text.upper()
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("--select takes ODD, EVEN or a comma-separated list") from None


class _DeprecatedChr(argparse.Action):
    """``--chr``: the old spelling of ``--n-chr``; still works, with a note on stderr."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        log.warning("--chr is deprecated: it is the number of chromosomes; spell it --n-chr")
        setattr(namespace, self.dest, values)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "gsem",
        help="Genomic SEM: munge, ldsc, sumstats (and GWAS)",
        description=__doc__,
        epilog=examples("polgen gsem munge --help", "polgen gsem user-gwas --help"),
    )
    sub = p.add_subparsers(dest="gsem_command", metavar="COMMAND")
    sub.required = True
    demo = "polgen-demo/gsem"

    m = sub.add_parser(
        "munge",
        help="munge GWAS summary statistics for LDSC (R munge)",
        description="Align summary statistics to a reference SNP list (HapMap3), filter on INFO and MAF, "
        "and write one {trait}.sumstats.parquet per file into --out (R GenomicSEM munge).",
        epilog=examples(
            f"polgen gsem munge --files {demo}/sumstats/TraitA.txt.gz {demo}/sumstats/TraitB.tsv "
            f"--hm3 {demo}/w_hm3.snplist --trait-names A B --out munged/",
            f"polgen gsem munge --files {demo}/sumstats/TraitC.csv.gz --hm3 {demo}/w_hm3.snplist "
            "--N 50000 --out munged_c/ --text",
        ),
    )
    m.add_argument(
        "--files",
        nargs="+",
        required=True,
        metavar="FILE",
        help="summary statistics files (or globs): text, "
        ".gz or parquet; GWAS-SSF, PLINK2, REGENIE and the usual LDSC headers are recognised",
    )
    m.add_argument("--hm3", required=True, metavar="FILE", help="reference SNP list (SNP A1 A2), e.g. w_hm3.snplist")
    m.add_argument(
        "--trait-names",
        nargs="+",
        metavar="NAME",
        help="one name per file (default: the file names without extensions)",
    )
    m.add_argument(
        "--N", nargs="+", type=_num_or_na, metavar="N", help="sample size per file; NA = the file's N column (default)"
    )
    m.add_argument("--info-filter", type=unit_float, default=0.9, help="drop SNPs with INFO below this")
    m.add_argument("--maf-filter", type=unit_float, default=0.01, help="drop SNPs with MAF below this")
    add_out(m, "output directory of {trait}.sumstats.parquet")
    m.add_argument("--text", action="store_true", help="also write R-compatible {trait}.sumstats.gz")
    add_overwrite(m)
    m.set_defaults(func=run_munge)

    ld = sub.add_parser(
        "ldsc",
        help="multivariable LD score regression (R ldsc)",
        description="Multivariable LD score regression over munged traits: the genetic covariance matrix S, "
        "its sampling covariance V and the intercepts I, block-jackknifed (R GenomicSEM ldsc).",
        epilog=examples(
            "polgen gsem ldsc --traits munged/A.sumstats.parquet munged/B.sumstats.parquet "
            f"--ld {demo}/ld --trait-names A B --out ldsc.json",
            "polgen gsem ldsc --traits munged/A.sumstats.parquet munged/B.sumstats.parquet "
            f"--ld {demo}/ld --wld {demo}/ld "
            "--sample-prev NA NA --population-prev NA NA --out ldsc.parquet --overwrite",
        ),
    )
    ld.add_argument(
        "--traits", nargs="+", required=True, metavar="FILE", help="munged files (.parquet or .sumstats.gz)"
    )
    ld.add_argument(
        "--ld", required=True, metavar="DIR", help="directory of {chr}.l2.ldscore.gz + {chr}.l2.M_5_50 (eur_w_ld_chr/)"
    )
    ld.add_argument(
        "--wld", metavar="DIR", help="separate regression-weight LD scores (R sep_weights=TRUE; default: --ld)"
    )
    ld.add_argument("--trait-names", nargs="+", metavar="NAME", help="one name per trait (default: V1, V2, ... as R)")
    ld.add_argument(
        "--sample-prev",
        nargs="+",
        type=_prev_or_na,
        metavar="P",
        help="case proportion per trait for the liability scale; NA = continuous trait (default: all NA)",
    )
    ld.add_argument(
        "--population-prev",
        nargs="+",
        type=_prev_or_na,
        metavar="P",
        help="population prevalence per trait; NA = continuous trait (default: all NA)",
    )
    ld.add_argument("--n-blocks", type=positive_int, default=200, help="jackknife blocks")
    ld.add_argument(
        "--chisq-max",
        type=positive_float,
        metavar="X",
        help="drop SNPs with Z^2 above this (default: per trait max(0.001 max(N), 80))",
    )
    ld.add_argument(
        "--n-chr",
        type=positive_int,
        default=22,
        dest="n_chr",
        metavar="N",
        help="NUMBER of chromosomes to read from --ld (1..N; R's chr argument), not a chromosome to select: "
        "for that use --select",
    )
    ld.add_argument(
        "--chr",
        type=positive_int,
        dest="n_chr",
        action=_DeprecatedChr,
        metavar="N",
        help="deprecated spelling of --n-chr (the number of chromosomes)",
    )
    ld.add_argument(
        "--select", type=_select, help="only these chromosomes: ODD, EVEN or a list such as 1,3,5 (default: all)"
    )
    ld.add_argument("--stand", action="store_true", help="also the standardised S_Stand / V_Stand")
    add_out(ld, "covariance structure file: .json or .parquet")
    add_overwrite(ld)
    ld.set_defaults(func=run_ldsc)

    s = sub.add_parser(
        "sumstats",
        help="standardise summary statistics for GWAS-by-subtraction / userGWAS (R sumstats)",
        description="Align every trait to a reference panel, put effects on the standardised scale "
        "and write one parquet file with beta.{trait} / se.{trait} per SNP (R GenomicSEM sumstats).",
        epilog=examples(
            f"polgen gsem sumstats --files {demo}/sumstats/TraitA.txt.gz {demo}/sumstats/TraitB.tsv "
            f"--ref {demo}/reference.1000G.txt --trait-names A B --se-logit F F --out sumstats.parquet",
            f"polgen gsem sumstats --files {demo}/sumstats/TraitA.txt.gz --ref {demo}/reference.1000G.txt "
            "--se-logit F --ols T --N 50000 --out a.parquet --overwrite",
        ),
    )
    s.add_argument("--files", nargs="+", required=True, metavar="FILE", help="summary statistics files (or globs)")
    s.add_argument("--ref", required=True, metavar="FILE", help="reference panel: SNP CHR BP MAF A1 A2")
    s.add_argument(
        "--trait-names",
        nargs="+",
        metavar="NAME",
        help="one name per file (default: the file names without extensions)",
    )
    s.add_argument(
        "--se-logit", nargs="+", type=_bool, required=True, metavar="T|F", help="per file: SE is on the logistic scale"
    )
    s.add_argument(
        "--ols", nargs="+", type=_bool, metavar="T|F", help="per file: continuous trait, OLS effects (default: all F)"
    )
    s.add_argument(
        "--linprob",
        nargs="+",
        type=_bool,
        metavar="T|F",
        help="per file: binary trait analysed with a linear probability model (default: all F)",
    )
    s.add_argument(
        "--betas",
        nargs="+",
        type=_bool,
        metavar="T|F",
        help="per file: effects are already standardised betas (default: all F)",
    )
    s.add_argument(
        "--N", nargs="+", type=_num_or_na, metavar="N", help="sample size per file; NA = the file's N column (default)"
    )
    s.add_argument("--info-filter", type=unit_float, default=0.6, help="drop SNPs with INFO below this")
    s.add_argument("--maf-filter", type=unit_float, default=0.01, help="drop SNPs with MAF below this")
    s.add_argument("--keep-indel", action="store_true", help="keep insertions / deletions")
    s.add_argument("--ambig", action="store_true", help="remove strand-ambiguous SNPs (A/T, C/G)")
    s.add_argument("--parallel", action="store_true", help="read and align the files in parallel")
    s.add_argument(
        "--direct-filter",
        action="store_true",
        help="drop SNPs missing ('?') in half or more of the cohorts of a DIRECTION column (R direct.filter)",
    )
    add_out(s, "output parquet file")
    add_overwrite(s)
    s.set_defaults(func=run_sumstats)

    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parsers(sub)


def _one_per_file(values, n: int, name: str):
    if values is None:
        return None
    if len(values) == 1 and n > 1:
        return values * n
    if len(values) != n:
        raise InputError(f"--{name} has {len(values)} values for {n} files")
    return values


def _check_inputs(option: str, role: str, paths) -> None:
    """Name a missing input by its option and role (the readers only know "input file")."""
    for path in [paths] if isinstance(paths, str) else paths:
        if not any(ch in path for ch in "*?[") and not Path(path).exists():
            raise InputError(f"{role} ({option}) not found", path=path)


def _check_out_file(path: str, overwrite: bool) -> None:
    """Refuse (before any work) an --out file that exists unless --overwrite, or that is a directory."""
    p = Path(path)
    if p.parent.exists() and not p.parent.is_dir():
        raise OutputExistsError("the directory of --out is a file", path=p.parent)
    if p.is_dir():
        raise OutputExistsError("--out is a directory; give a file name", path=p)
    if p.exists() and not overwrite:
        raise OutputExistsError("--out exists; pass --overwrite to replace it", path=p)


def run_munge(args) -> int:
    from polgen.gsem.munge import munge

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError("--out exists and is not a directory", path=out)
    munged = out.is_dir() and (any(out.glob("*.sumstats.parquet")) or any(out.glob("*.sumstats.gz")))
    if munged and not args.overwrite:
        raise OutputExistsError("--out already holds munged files; pass --overwrite to replace them", path=out)

    _check_inputs("--files", "summary statistics file", args.files)
    _check_inputs("--hm3", "reference SNP list", args.hm3)
    N = _one_per_file(args.N, len(args.files), "N")
    res, drops = munge(
        args.files,
        args.hm3,
        trait_names=args.trait_names,
        N=N,
        info_filter=args.info_filter,
        maf_filter=args.maf_filter,
        out=args.out,
        write_text=args.text,
        log=False,  # the command's log is <out>.log (polgen.cli.RunLog)
    )
    for name in res:
        kept = drops.filter((drops["trait"] == name) & (drops["reason"] == "output_rows"))["n_remaining"][0]
        print(f"munge: {name}: {kept} SNPs written to {args.out}")
    shown = drops.filter(drops["n_dropped"] > 0)
    if shown.height:
        print(shown)
    return 0


def run_ldsc(args) -> int:
    from polgen.gsem.ldsc import ldsc, ldsc_table

    _check_out_file(args.out, args.overwrite)
    _check_inputs("--traits", "munged summary statistics file", args.traits)
    n = len(args.traits)
    res = ldsc(
        args.traits,
        args.ld,
        wld=args.wld,
        trait_names=args.trait_names,
        sample_prev=_one_per_file(args.sample_prev, n, "sample-prev"),
        population_prev=_one_per_file(args.population_prev, n, "population-prev"),
        n_blocks=args.n_blocks,
        chisq_max=args.chisq_max,
        stand=args.stand,
        select=args.select,
        chr=args.n_chr,
    )
    res.save(args.out)
    print(ldsc_table(res))
    print(f"ldsc: S, V, I for {res.trait_names} written to {args.out}")
    return 0


def run_sumstats(args) -> int:
    from polgen.gsem.sumstats import sumstats

    _check_out_file(args.out, args.overwrite)
    _check_inputs("--files", "summary statistics file", args.files)
    _check_inputs("--ref", "reference panel", args.ref)
    n = len(args.files)
    lf = sumstats(
        args.files,
        args.ref,
        trait_names=args.trait_names,
        se_logit=_one_per_file(args.se_logit, n, "se-logit"),
        OLS=_one_per_file(args.ols, n, "ols"),
        linprob=_one_per_file(args.linprob, n, "linprob"),
        N=_one_per_file(args.N, n, "N"),
        betas=_one_per_file(args.betas, n, "betas"),
        info_filter=args.info_filter,
        maf_filter=args.maf_filter,
        keep_indel=args.keep_indel,
        parallel=args.parallel,
        ambig=args.ambig,
        direct_filter=args.direct_filter,
        out=args.out,
        log=False,  # the command's log is <out>.log (polgen.cli.RunLog)
    )
    rows = lf.select("SNP").collect().height
    print(f"sumstats: {rows} SNPs x {n} traits written to {args.out}")
    return 0


__all__ = ["add_parser"]
