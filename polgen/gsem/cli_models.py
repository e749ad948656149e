"""``polgen gsem usermodel | commonfactor | rgmodel``: the model fits between ldsc and the GWAS.

    polgen gsem usermodel --covstruc ldsc.json --model "F1 =~ NA*A + B + C; F1 ~~ 1*F1" --out fit.parquet
    polgen gsem commonfactor --covstruc ldsc.json --out cf.parquet
    polgen gsem rgmodel --covstruc ldsc.json --out rg.json

``--covstruc`` is ``polgen gsem ldsc``'s output (or any CovStruc file).  ``--model`` takes lavaan
text (lines or ``;``-separated) or a file holding it.  ``usermodel`` / ``commonfactor`` write the
parameter table as parquet (the fit indices, model, convergence and warnings in its key-value
metadata: ``polgen.fit``, ``polgen.model``, ...), with R GenomicSEM's column names under
``--genomicsem-names``; ``rgmodel`` writes ``R``, ``V_R`` and the trait names as JSON.  The
parameter table and the fit indices are printed.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from polgen.cli import add_out, add_overwrite, examples, positive_float, print_frame
from polgen.errors import InputError, OutputExistsError

_DEMO = "polgen-demo/gsem/results/ldsc_covstruc.json"
EXAMPLES = examples(
    f'polgen gsem usermodel --covstruc {_DEMO} --model "F1 =~ NA*TraitA + TraitB + TraitC; F1 ~~ 1*F1" '
    "--out usermodel.parquet",
    f"polgen gsem usermodel --covstruc {_DEMO} --model model.lav --estimation ML --std-lv --out fit.parquet "
    "--genomicsem-names --overwrite",
    f"polgen gsem commonfactor --covstruc {_DEMO} --out commonfactor.parquet",
    f"polgen gsem rgmodel --covstruc {_DEMO} --out rg.json",
)


def _covstruc_and_estimation(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--covstruc", required=True, metavar="FILE", help="ldsc output (.json or .parquet written by polgen gsem ldsc)"
    )
    p.add_argument(
        "--estimation", choices=["DWLS", "ML"], default="DWLS", help="estimator (default: %(default)s, as R)"
    )


def add_parsers(gsem_subparsers) -> None:
    """Register ``usermodel``, ``commonfactor`` and ``rgmodel`` under ``polgen gsem``."""
    u = gsem_subparsers.add_parser(
        "usermodel",
        help="fit a user-specified lavaan model to the genetic covariance matrix (R usermodel)",
        description=__doc__,
        epilog=EXAMPLES,
    )
    _covstruc_and_estimation(u)
    u.add_argument("--model", required=True, help="lavaan model text (lines or ';'-separated), or a file holding it")
    u.add_argument(
        "--std-lv", action="store_true", help="identify factors by unit variances (R std.lv=TRUE; default: off)"
    )
    u.add_argument(
        "--no-fix-resid",
        dest="fix_resid",
        action="store_false",
        help="do not refit with residual variances bounded above 0.0001 when the first fit fails "
        "(R fix_resid=FALSE; default: refit, as R)",
    )
    u.add_argument(
        "--fix-resid-when",
        choices=["error", "nonconverged"],
        default="error",
        help="when the bounded refit applies: 'error' (the first fit fails outright, as R's usermodel) or "
        "'nonconverged' (also when it stops before converging: the bounded solution instead of a Heywood "
        "one; default: %(default)s)",
    )
    u.add_argument(
        "--no-CFI",
        "--no-cfi",
        dest="CFIcalc",
        action="store_false",
        help="skip the independence model and the CFI (R CFIcalc=FALSE; default: compute it)",
    )
    u.add_argument(
        "--imp-cov",
        action="store_true",
        help="also print the model-implied and residual covariance matrices (R imp_cov=TRUE; default: off)",
    )
    u.add_argument(
        "--toler",
        type=positive_float,
        default=None,
        metavar="TOL",
        help="tolerance for inverting the weight matrix (R toler; default: machine precision)",
    )
    u.add_argument(
        "--Q-factor",
        "--q-factor",
        dest="Q_Factor",
        action="store_true",
        help="factor-level heterogeneity Q statistics (R Q_Factor=TRUE; default: off)",
    )
    _table_out(u)
    u.set_defaults(func=run_usermodel)

    c = gsem_subparsers.add_parser(
        "commonfactor",
        help="one common factor over all traits (R commonfactor)",
        description=__doc__,
        epilog=EXAMPLES,
    )
    _covstruc_and_estimation(c)
    _table_out(c)
    c.set_defaults(func=run_commonfactor)

    r = gsem_subparsers.add_parser(
        "rgmodel",
        help="genetic correlation matrix R and its sampling covariance V_R (R rgmodel)",
        description=__doc__,
        epilog=EXAMPLES,
    )
    _covstruc_and_estimation(r)
    add_out(r, "output JSON file with trait_names, R and V_R")
    add_overwrite(r)
    r.set_defaults(func=run_rgmodel)


def _table_out(p: argparse.ArgumentParser) -> None:
    add_out(p, "output parquet file: the parameter table (fit, model and warnings in its metadata)")
    p.add_argument(
        "--genomicsem-names",
        action="store_true",
        help="write R GenomicSEM's column names (Unstand_Est, STD_Genotype, ...) instead of polgen's",
    )
    add_overwrite(p)


def _check_out(path: str, overwrite: bool, suffixes: tuple[str, ...]) -> None:
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise InputError(f"--out must end in {' or '.join(suffixes)}, got {path!r}", path=path)
    if p.is_dir():
        raise InputError("--out is a directory; give a file name", path=path)
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists (use --overwrite to replace it)", path=path)
    if not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)


def _check_covstruc(path: str) -> None:
    if not os.path.exists(path):
        raise InputError("covstruc file not found", path=path)


def _report(res, out: str) -> None:
    print_frame(res.parameters, title=f"{res.function}: parameters", max_rows=-1)
    print_frame(res.fit_all, title="model fit", max_rows=-1)
    for w in res.warnings:
        print(f"warning: {w}")
    print(f"{res.function}: {res.parameters.height} parameters written to {out} (converged: {res.converged})")


def run_usermodel(args) -> int:
    from polgen.gsem.fit_models import usermodel
    from polgen.gsem.gwas_plan import model_text

    _check_covstruc(args.covstruc)
    _check_out(args.out, args.overwrite, (".parquet",))
    res = usermodel(
        args.covstruc,
        model_text(args.model),
        estimation=args.estimation,
        std_lv=args.std_lv,
        fix_resid=args.fix_resid,
        CFIcalc=args.CFIcalc,
        imp_cov=args.imp_cov,
        toler=args.toler,
        Q_Factor=args.Q_Factor,
        fix_resid_when=args.fix_resid_when,
    )
    res.save(args.out, genomicsem_names=args.genomicsem_names)
    _report(res, args.out)
    if args.imp_cov:
        for name, frame in (("model-implied covariance", res.implied), ("residual covariance", res.residual)):
            if frame is not None:
                print_frame(frame, title=name, max_rows=-1)
    return 0


def run_commonfactor(args) -> int:
    from polgen.gsem.fit_models import commonfactor

    _check_covstruc(args.covstruc)
    _check_out(args.out, args.overwrite, (".parquet",))
    res = commonfactor(args.covstruc, estimation=args.estimation)
    res.save(args.out, genomicsem_names=args.genomicsem_names)
    _report(res, args.out)
    return 0


def run_rgmodel(args) -> int:
    import numpy as np
    import polars as pl

    from polgen.gsem.fit_models import rgmodel
    from polgen.io.sink import write_bytes_atomic

    _check_covstruc(args.covstruc)
    _check_out(args.out, args.overwrite, (".json",))
    res = rgmodel(args.covstruc, estimation=args.estimation)
    payload = {
        "trait_names": res.trait_names,
        "R": res.R.tolist(),
        "V_R": res.V_R.tolist(),
        "estimation": args.estimation,
        "converged": res.result.converged,
    }
    write_bytes_atomic(args.out, json.dumps(payload, indent=1).encode())
    names = res.trait_names
    se = np.sqrt(np.diag(res.V_R))
    pairs = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
    print_frame(
        pl.DataFrame(
            {
                "trait1": [a for a, _ in pairs],
                "trait2": [b for _, b in pairs],
                "rg": [float(res.R[names.index(a), names.index(b)]) for a, b in pairs],
                "se": se.tolist(),
            }
        ),
        title="rgmodel: genetic correlations",
        max_rows=-1,
    )
    print(f"rgmodel: R and V_R for {names} written to {args.out}")
    return 0


__all__ = ["add_parsers"]
