"""``polgen gsem s-ldsc | enrich``: stratified LDSC and the enrichment of model parameters.

    polgen gsem s-ldsc --traits A.sumstats.gz B.sumstats.gz --ld baselineLD_v2.2/baselineLD. \\
        --wld weights/weights.hm3_noMHC. --frq 1000G_Phase3_frq/1000G.EUR.QC. --out sldsc.npz
    polgen gsem enrich --s-covstruc sldsc.npz --model "F1 =~ A + B + C" --params "F1~~F1" --out enrich.parquet

``s-ldsc`` writes the stratified covariance structure (S, V, S_Tau, V_Tau per annotation, I, N, m,
Prop, Select) as ``.json`` or ``.npz``; ``enrich`` reads it and writes one parquet row per
annotation and parameter (R's columns; the baseline model's table is JSON in the parquet
key-value metadata ``polgen.enrich_base``).  Both print a summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from polgen.cli import add_out, add_overwrite, examples, positive_float, positive_int, print_frame
from polgen.errors import InputError, OutputExistsError

EXAMPLES = examples(
    "polgen gsem s-ldsc --traits munged/A.sumstats.parquet munged/B.sumstats.parquet munged/C.sumstats.parquet "
    "--ld baselineLD. --wld weights. --frq 1000G.EUR.QC. --trait-names A B C --out sldsc.npz",
    'polgen gsem enrich --s-covstruc sldsc.npz --model "F1 =~ A + B + C" --params "F1~~F1" --out enrich.parquet',
    'polgen gsem enrich --s-covstruc sldsc.npz --model "A ~~ B" --params "A~~B" --tau --no-base --out tau.parquet',
)


def _num_or_na(text: str) -> float | None:
    if text.upper() in ("NA", "NAN", "NONE", ""):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a prevalence in (0, 1) or NA, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a prevalence in (0, 1) or NA, got {text!r}")
    return value


def add_parsers(gsem_subparsers) -> None:
    """Register ``s-ldsc`` and ``enrich`` under ``polgen gsem``."""
    s = gsem_subparsers.add_parser(
        "s-ldsc",
        help="stratified multivariable LD score regression over annotations (R s_ldsc)",
        description=__doc__,
        epilog=EXAMPLES,
    )
    s.add_argument("--traits", nargs="+", required=True, metavar="FILE", help="munged files (.parquet or .sumstats.gz)")
    s.add_argument(
        "--ld",
        nargs="+",
        required=True,
        metavar="PREFIX",
        help="annotated LD-score prefix(es): {prefix}{chr}.l2.ldscore.gz, .l2.M_5_50 and .annot.gz; the one "
        "ending in 'baseline' (else the first) is the baseline, the others add annotations",
    )
    s.add_argument(
        "--wld", required=True, metavar="PREFIX", help="regression-weight LD scores {prefix}{chr}.l2.ldscore.gz"
    )
    s.add_argument(
        "--frq", required=True, metavar="PREFIX", help="PLINK allele frequencies {prefix}{chr}.frq (SNP, MAF)"
    )
    s.add_argument("--trait-names", nargs="+", metavar="NAME", help="one name per trait (default: V1, V2, ... as R)")
    s.add_argument(
        "--sample-prev",
        nargs="+",
        type=_num_or_na,
        metavar="P",
        help="case proportion per trait for the liability scale; NA = continuous trait (default: all NA)",
    )
    s.add_argument(
        "--population-prev",
        nargs="+",
        type=_num_or_na,
        metavar="P",
        help="population prevalence per trait; NA = continuous trait (default: all NA)",
    )
    s.add_argument("--n-blocks", type=positive_int, default=200, help="jackknife blocks")
    s.add_argument(
        "--keep-cont",
        dest="exclude_cont",
        action="store_false",
        help="keep continuous (non 0/1) annotations (R exclude_cont=FALSE; default: drop them, as R)",
    )
    s.add_argument(
        "--m-suffix",
        choices=["M_5_50", "M"],
        default="M_5_50",
        help="SNP counts per annotation: .l2.M_5_50 (as R) or .l2.M",
    )
    add_out(s, "stratified covariance structure file: .json or .npz")
    add_overwrite(s)
    s.set_defaults(func=run_s_ldsc)

    e = gsem_subparsers.add_parser(
        "enrich",
        help="enrichment of model parameters across annotations (R enrich)",
        description=__doc__,
        epilog=EXAMPLES,
    )
    e.add_argument("--s-covstruc", required=True, metavar="FILE", help="polgen gsem s-ldsc output (.json or .npz)")
    e.add_argument("--model", required=True, help="lavaan model text (lines or ';'-separated), or a file holding it")
    e.add_argument(
        "--params",
        nargs="+",
        required=True,
        metavar="PARAM",
        help="parameters whose enrichment is estimated, as lhs op rhs (e.g. F1~~F1)",
    )
    e.add_argument(
        "--fix",
        choices=["regressions", "covariances", "variances"],
        default="regressions",
        help="which parameters stay fixed at the baseline estimates",
    )
    e.add_argument(
        "--std-lv", action="store_true", help="identify factors by unit variances (R std.lv=TRUE; default: off)"
    )
    e.add_argument(
        "--keep-flank",
        dest="rm_flank",
        action="store_false",
        help="keep the (not analysed) rows of continuous and flanking annotations "
        "(R rm_flank=FALSE; default: drop them, as R)",
    )
    e.add_argument("--tau", action="store_true", help="use S_Tau / V_Tau instead of S / V (R tau=TRUE; default: off)")
    e.add_argument(
        "--no-base",
        dest="base",
        action="store_false",
        help="skip the baseline model table (R base=FALSE; default: include it, as R)",
    )
    e.add_argument(
        "--toler",
        type=positive_float,
        default=None,
        metavar="TOL",
        help="tolerance for inverting the sandwich bread (R toler; default: machine precision)",
    )
    e.add_argument(
        "--fixparam", nargs="+", metavar="PARAM", help="parameters kept fixed whatever --fix says (default: none)"
    )
    add_out(e, "output parquet file: one row per annotation and parameter (baseline table in its metadata)")
    add_overwrite(e)
    e.set_defaults(func=run_enrich)


def _check_out(path: str, overwrite: bool, suffixes: tuple[str, ...]) -> Path:
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise InputError(f"--out must end in {' or '.join(suffixes)}, got {path!r}", path=path)
    if p.is_dir():
        raise OutputExistsError("--out is a directory; give a file name", path=p)
    if p.exists() and not overwrite:
        raise OutputExistsError("--out exists; pass --overwrite to replace it", path=p)
    if not p.parent.is_dir():
        raise InputError("the directory of --out does not exist", path=p.parent)
    return p


def _per_trait(values, n: int, name: str):
    if values is None:
        return None
    if len(values) == 1 and n > 1:
        return values * n
    if len(values) != n:
        raise InputError(f"--{name} has {len(values)} values for {n} traits")
    return values


def run_s_ldsc(args) -> int:
    import polars as pl

    from polgen.gsem.stratified import s_ldsc

    out = _check_out(args.out, args.overwrite, (".json", ".npz"))
    for f in args.traits:
        if not Path(f).exists():
            raise InputError("munged summary statistics file (--traits) not found", path=f)
    n = len(args.traits)
    res = s_ldsc(
        args.traits,
        sample_prev=_per_trait(args.sample_prev, n, "sample-prev"),
        population_prev=_per_trait(args.population_prev, n, "population-prev"),
        ld=args.ld,
        wld=args.wld,
        frq=args.frq,
        trait_names=args.trait_names,
        n_blocks=args.n_blocks,
        exclude_cont=args.exclude_cont,
        m_suffix=args.m_suffix,
    )
    res.save(out)
    summary = pl.DataFrame(
        {
            "annotation": res.annotations,
            "m": res.m,
            "prop": res.prop,
            **{f"h2.{t}": [float(S[i, i]) for S in res.S] for i, t in enumerate(res.trait_names)},
        }
    )
    print_frame(summary, title="s_ldsc: per-annotation heritabilities", max_rows=30)
    print(f"s_ldsc: {len(res.annotations)} annotations x {res.k} traits written to {out}")
    return 0


def run_enrich(args) -> int:
    from polgen.gsem.enrichment import enrich
    from polgen.gsem.gwas_plan import model_text
    from polgen.io.sink import write_table_atomic

    out = _check_out(args.out, args.overwrite, (".parquet",))
    if not Path(args.s_covstruc).exists():
        raise InputError("stratified covstruc file (--s-covstruc) not found", path=args.s_covstruc)
    res = enrich(
        args.s_covstruc,
        model_text(args.model),
        params=args.params,
        fix=args.fix,
        std_lv=args.std_lv,
        rm_flank=args.rm_flank,
        tau=args.tau,
        base=args.base,
        toler=args.toler,
        fixparam=args.fixparam,
    )
    meta = {"polgen.enrich_params": json.dumps(res.params)}
    if res.base is not None:
        meta["polgen.enrich_base"] = json.dumps(res.base.to_dicts())
        print_frame(res.base, title="enrich: baseline model", max_rows=-1)
    write_table_atomic(out, res.enrichment, metadata=meta)
    print_frame(res.enrichment.drop("Error", "Warning"), title="enrich: enrichment", max_rows=40)
    print(f"enrich: {res.enrichment.height} rows written to {out}")
    return 0


__all__ = ["add_parsers"]
