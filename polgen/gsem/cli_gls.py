"""``polgen gsem summary-gls | sub-sv | read-fusion | q-trait``: tools on LDSC output and TWAS results.

    polgen gsem sub-sv --covstruc ldsc.json --print-index
    polgen gsem sub-sv --covstruc ldsc.json --index 2,3,5 --out rg_sub.json
    polgen gsem summary-gls --subsv rg_sub.json --x 0.1,0.5,0.9 --out gls.parquet
    polgen gsem summary-gls --y y.txt --v-y v.txt --x x.txt --bands --quad --plot bands.png --out gls.parquet
    polgen gsem read-fusion A.dat B.dat --trait-names A B --binary T F --N 20000 15000 --out twas.parquet
    polgen gsem q-trait --covstruc ldsc.json --indicators A B C D --traits E --out qtrait.parquet

Numbers (``--y``, ``--x``, ``--controls``, ``--index``) are given inline, comma-separated (with
``=`` when the first is negative: ``--x=-0.5,0.1,0.9``), or as a text file (whitespace- or
comma-separated, one row per estimate, an optional header line); ``--v-y`` is a square matrix in
such a file.  Tables are written as parquet, atomically.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from polgen.cli import add_out, add_overwrite, examples, nonneg_float, print_frame
from polgen.errors import InputError, OutputExistsError

_DEMO = "polgen-demo/gsem/results/ldsc_covstruc.json"
EXAMPLES = examples(
    f"polgen gsem sub-sv --covstruc {_DEMO} --print-index",
    f"polgen gsem sub-sv --covstruc {_DEMO} --index 2,3,5 --out sub.json",
    "polgen gsem summary-gls --subsv sub.json --x 0.2,0.5,0.7 --out gls.parquet",
    "polgen gsem summary-gls --subsv sub.json --x 0.2,0.5,0.7 --bands --intervals 10 --plot bands.png "
    "--out gls.parquet --band-out band.parquet",
    "polgen gsem read-fusion A.dat B.dat --trait-names A B --binary T F --N 20000 15000 --out twas.parquet",
    f"polgen gsem q-trait --covstruc {_DEMO} --indicators TraitA TraitB TraitC --traits TraitD --out q.parquet",
)

_TRUE = {"t", "true", "1", "yes", "y"}
_FALSE = {"f", "false", "0", "no", "n"}


def _bool(text: str) -> bool:
    t = text.lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected T/F/TRUE/FALSE, got {text!r}")


def _numbers(text: str, option: str):
    """Inline comma-separated numbers or a text file of rows (optional header): a 1-D or 2-D array."""
    import numpy as np

    if os.path.exists(text):
        try:
            lines = [ln.replace(",", " ").split() for ln in Path(text).read_text().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read {option}: {exc}", path=text) from None
        if lines:
            try:
                [float(v) for v in lines[0]]
            except ValueError:
                lines = lines[1:]  # a header line
        rows = []
        for i, ln in enumerate(lines):
            try:
                rows.append([float(v) for v in ln])
            except ValueError:
                raise InputError(f"{option}: a value is not a number: {ln}", path=text, row=i + 1) from None
        if not rows:
            raise InputError(f"{option} file holds no numbers", path=text)
        if len({len(r) for r in rows}) != 1:
            raise InputError(f"{option} file has rows of different lengths", path=text)
        arr = np.array(rows, dtype=np.float64)
        return arr[:, 0] if arr.shape[1] == 1 else arr
    try:
        return np.array([float(v) for v in text.split(",") if v.strip()], dtype=np.float64)
    except ValueError:
        raise InputError(f"{option} must be comma-separated numbers or an existing file, got {text!r}") from None


def _check_out(path: str, overwrite: bool, suffixes: tuple[str, ...], option: str = "--out") -> None:
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise InputError(f"{option} must end in {' or '.join(suffixes)}, got {path!r}", path=path)
    if p.is_dir():
        raise InputError(f"{option} is a directory; give a file name", path=path)
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists (use --overwrite to replace it)", path=path)
    p.parent.mkdir(parents=True, exist_ok=True)


def _check_in(path: str, role: str, option: str) -> None:
    if not os.path.exists(path):
        raise InputError(f"{role} ({option}) not found", path=path)


# -- parsers ------------------------------------------------------------------------------------
def add_parsers(gsem_subparsers) -> None:
    """Register ``summary-gls``, ``sub-sv``, ``read-fusion`` and ``q-trait`` under ``polgen gsem``."""
    _add_summary_gls(gsem_subparsers)
    _add_sub_sv(gsem_subparsers)
    _add_read_fusion(gsem_subparsers)
    _add_q_trait(gsem_subparsers)


def _add_summary_gls(sub) -> None:
    p = sub.add_parser(
        "summary-gls",
        help="GLS regression of estimates on predictors with their sampling covariance (R summaryGLS, summaryGLSbands)",
        description=__doc__,
        epilog=EXAMPLES,
    )
    p.add_argument("--subsv", metavar="FILE", help="sub-sv output (JSON): its estimates and V are --y and --v-y")
    p.add_argument("--y", metavar="NUMBERS|FILE", help="the estimates (instead of --subsv)")
    p.add_argument("--v-y", metavar="FILE", help="their sampling covariance, a square matrix (instead of --subsv)")
    p.add_argument(
        "--x",
        required=True,
        metavar="NUMBERS|FILE",
        help="predictors: one value per estimate, or a file with one row per estimate and a column per predictor",
    )
    p.add_argument(
        "--no-intercept",
        dest="intercept",
        action="store_false",
        help="fit without an intercept (R INTERCEPT=FALSE; default: with one)",
    )
    p.add_argument(
        "--bands",
        action="store_true",
        help="also compute the fitted line and its standard-error band (R summaryGLSbands; one predictor)",
    )
    p.add_argument("--intervals", type=int, default=20, help="band grid points (R INTERVALS; default: %(default)s)")
    p.add_argument(
        "--controls", metavar="NUMBERS|FILE", help="control variables for --bands (R CONTROLVARS; default: none)"
    )
    p.add_argument("--quad", action="store_true", help="add the squared predictor for --bands (R QUAD; default: off)")
    p.add_argument(
        "--band-size",
        type=nonneg_float,
        default=1.0,
        help="band half-width in standard errors (R BAND_SIZE; default: %(default)s)",
    )
    p.add_argument(
        "--band-points",
        choices=["genomicsem", "grid"],
        default="genomicsem",
        help="where the band's standard errors are evaluated: R's shift points or the drawn grid "
        "(default: %(default)s)",
    )
    p.add_argument("--band-out", metavar="FILE", help="with --bands: parquet file for the band table (default: none)")
    p.add_argument(
        "--plot", metavar="FILE", help="with --bands: draw the band plot to this .png/.svg/.pdf (default: none)"
    )
    p.add_argument("--xlab", default="", help="plot x-axis label (R XLAB; default: empty)")
    p.add_argument("--ylab", default="", help="plot y-axis label (R YLAB; default: empty)")
    p.add_argument("--title", default="", help="plot title (R TITLELAB; default: empty)")
    add_out(p, "output parquet file: the coefficient table (term, beta, se, z, p)")
    add_overwrite(p)
    p.set_defaults(func=run_summary_gls)


def _add_sub_sv(sub) -> None:
    p = sub.add_parser(
        "sub-sv",
        help="chosen elements of S (or S_Stand, rgmodel's R) with their block of V (R subSV, indexS)",
        description=__doc__,
        epilog=EXAMPLES,
    )
    p.add_argument(
        "--covstruc",
        required=True,
        metavar="FILE",
        help="ldsc output (.json/.parquet), or rgmodel's JSON (R and V_R) for --type R",
    )
    p.add_argument("--index", metavar="NUMBERS|FILE", help="1-based vech numbers of the elements (see --print-index)")
    p.add_argument(
        "--type",
        choices=["S", "S_Stand", "R"],
        default="S",
        help="which matrix: S with V, S_Stand with V_Stand, or R with V_R (default: %(default)s)",
    )
    p.add_argument(
        "--print-index",
        action="store_true",
        help="print the numbering of the elements (R indexS; off-diagonal only for --type R) and stop",
    )
    add_out(p, "output JSON file: index, labels, sub_s, sub_v (the input of summary-gls --subsv)", required=False)
    add_overwrite(p)
    p.set_defaults(func=run_sub_sv)


def _add_read_fusion(sub) -> None:
    p = sub.add_parser(
        "read-fusion",
        help="FUSION TWAS .dat files as gene-level sumstats for user-gwas --TWAS (R read_fusion)",
        description=__doc__,
        epilog=EXAMPLES,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="FUSION output, one file per trait in ldsc's trait order")
    p.add_argument("--trait-names", nargs="+", metavar="NAME", help="names of the traits (default: 1, 2, ... as R)")
    p.add_argument(
        "--binary",
        nargs="+",
        type=_bool,
        metavar="T|F",
        help="per trait: binary (T) or continuous (F); one value for all (default: all binary, as R)",
    )
    p.add_argument("--N", "--n", dest="N", nargs="+", type=float, required=True, help="per trait: the GWAS sample size")
    p.add_argument(
        "--perm", action="store_true", help="use FUSION's permutation p-values PERM.PV/PERM.N (default: off)"
    )
    p.add_argument(
        "--missing-hsq",
        choices=["drop", "error"],
        default="drop",
        help="gene models without HSQ or TWAS.Z: drop them as R does, or stop (default: %(default)s)",
    )
    add_out(p, "output parquet file: Gene, Panel, HSQ, beta.<trait>, se.<trait>")
    add_overwrite(p)
    p.set_defaults(func=run_read_fusion)


def _add_q_trait(sub) -> None:
    p = sub.add_parser(
        "q-trait",
        help="heterogeneity of external traits' genetic associations through a common factor (R QTrait)",
        description=__doc__,
        epilog=EXAMPLES,
    )
    p.add_argument("--covstruc", required=True, metavar="FILE", help="ldsc output with S_Stand/V_Stand (ldsc --stand)")
    p.add_argument("--indicators", nargs="+", required=True, metavar="TRAIT", help="indicators of the factor (>= 3)")
    p.add_argument("--traits", nargs="+", required=True, metavar="TRAIT", help="external traits to test")
    p.add_argument(
        "--mresid",
        type=nonneg_float,
        default=0.25,
        help="outlier residual as a share of the RMS genetic correlation (R mresid; default: %(default)s)",
    )
    p.add_argument(
        "--mresid-threshold",
        type=nonneg_float,
        default=0.10,
        help="smallest residual correlation of an outlier (R mresidthreshold; default: %(default)s)",
    )
    p.add_argument(
        "--lsrmr",
        type=nonneg_float,
        default=0.25,
        help="local SRMR threshold as a share of the RMS genetic correlation (R lsrmr; default: %(default)s)",
    )
    p.add_argument(
        "--lsrmr-threshold",
        type=nonneg_float,
        default=0.10,
        help="absolute local SRMR threshold (R lsrmrthreshold; default: %(default)s)",
    )
    add_out(p, "output parquet file: one row per trait with R's QTrait columns")
    add_overwrite(p)
    p.set_defaults(func=run_q_trait)


# -- commands -----------------------------------------------------------------------------------
def run_summary_gls(args) -> int:
    from polgen.gsem.gls import summary_gls, summary_gls_bands
    from polgen.io.sink import write_table_atomic

    if args.subsv:
        if args.y or args.v_y:
            raise InputError("give either --subsv or --y with --v-y, not both")
        _check_in(args.subsv, "sub-sv output", "--subsv")
        try:
            obj = json.loads(Path(args.subsv).read_text())
            y, v_y = obj["sub_s"], obj["sub_v"]
        except (json.JSONDecodeError, KeyError, OSError) as exc:
            raise InputError(f"not a sub-sv output (JSON with sub_s and sub_v): {exc}", path=args.subsv) from None
    elif args.y and args.v_y:
        _check_in(args.v_y, "sampling covariance", "--v-y")
        y, v_y = _numbers(args.y, "--y"), _numbers(args.v_y, "--v-y")
    else:
        raise InputError("summary-gls needs --subsv, or --y and --v-y")
    x = _numbers(args.x, "--x")
    _check_out(args.out, args.overwrite, (".parquet",))
    if not args.bands and (args.band_out or args.plot or args.quad or args.controls):
        raise InputError("--band-out, --plot, --quad and --controls need --bands")
    if args.band_out:
        _check_out(args.band_out, args.overwrite, (".parquet",), "--band-out")
    if args.bands:
        controls = None if args.controls is None else _numbers(args.controls, "--controls")
        res = summary_gls_bands(
            x,
            y,
            v_y,
            intervals=args.intervals,
            controls=controls,
            intercept=args.intercept,
            quad=args.quad,
            band_size=args.band_size,
            band_points=args.band_points,
        )
        table = res.coefficients
        if args.band_out:
            write_table_atomic(args.band_out, res.band, metadata={"polgen.function": "summary_gls_bands"})
        print_frame(res.band, title="summary-gls: band", max_rows=-1)
        if args.plot:
            from polgen.plot.gls_bands import gls_bands

            gls_bands(res, args.plot, xlab=args.xlab, ylab=args.ylab, title=args.title)
            print(f"summary-gls: band plot written to {args.plot}")
    else:
        table = summary_gls(x, y, v_y, intercept=args.intercept)
    write_table_atomic(args.out, table, metadata={"polgen.function": "summary_gls"})
    print_frame(table, title="summary-gls: GLS coefficients", max_rows=-1)
    print(f"summary-gls: {table.height} coefficients written to {args.out}")
    return 0


def _load_for_subsv(path: str, kind: str):
    if kind == "R" or path.lower().endswith(".json"):
        try:
            obj = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, OSError, UnicodeDecodeError) as exc:
            if kind == "R":
                raise InputError(f"cannot read rgmodel JSON: {exc}", path=path) from None
            return path
        if kind == "R" or "R" in obj:
            return obj
    return path


def run_sub_sv(args) -> int:
    import numpy as np
    import polars as pl

    from polgen.gsem.subset import index_s, sub_sv
    from polgen.io.sink import write_bytes_atomic

    _check_in(args.covstruc, "covstruc file", "--covstruc")
    obj = _load_for_subsv(args.covstruc, args.type)
    if args.print_index:
        if args.type == "R":
            num = index_s(matrix=np.asarray(obj["R"]), r=True)
            names = obj.get("trait_names") or [f"V{i + 1}" for i in range(num.shape[0])]
        else:
            from polgen.gsem.covstruc import as_covstruc

            cs = as_covstruc(obj)
            num, names = index_s(cs), cs.trait_names
        print_frame(
            pl.DataFrame({"trait": names, **{n: num[:, j] for j, n in enumerate(names)}}),
            title=f"sub-sv: numbering of {'R (off-diagonal)' if args.type == 'R' else args.type}",
            max_rows=-1,
        )
        return 0
    if args.index is None or args.out is None:
        raise InputError("sub-sv needs --index and --out (or --print-index)")
    _check_out(args.out, args.overwrite, (".json",))
    res = sub_sv(obj, _numbers(args.index, "--index"), type=args.type)
    payload = {
        "type": res.type,
        "index": res.index.tolist(),
        "labels": res.labels,
        "sub_s": res.sub_s.tolist(),
        "sub_v": res.sub_v.tolist(),
    }
    write_bytes_atomic(args.out, json.dumps(payload, indent=1).encode())
    print_frame(
        pl.DataFrame(
            {"index": res.index, "element": res.labels, "estimate": res.sub_s, "se": np.sqrt(np.diag(res.sub_v))}
        ),
        title=f"sub-sv: {res.type}",
        max_rows=-1,
    )
    print(f"sub-sv: {len(res.labels)} elements written to {args.out}")
    return 0


def run_read_fusion(args) -> int:
    from polgen.gsem.fusion import read_fusion
    from polgen.io.sink import write_table_atomic

    for f in args.files:
        _check_in(f, "FUSION file", "FILE")
    _check_out(args.out, args.overwrite, (".parquet",))
    binary = args.binary
    if binary is not None and len(binary) == 1:
        binary = binary * len(args.files)
    n = args.N * len(args.files) if len(args.N) == 1 else args.N
    frame = read_fusion(args.files, args.trait_names, binary=binary, N=n, perm=args.perm, missing_hsq=args.missing_hsq)
    write_table_atomic(args.out, frame, metadata={"polgen.function": "read_fusion"})
    print_frame(frame, title="read-fusion")
    print(f"read-fusion: {frame.height} gene models written to {args.out} (user-gwas --TWAS input)")
    return 0


def run_q_trait(args) -> int:
    from polgen.gsem.heterogeneity import q_trait
    from polgen.io.sink import write_table_atomic

    _check_in(args.covstruc, "covstruc file", "--covstruc")
    _check_out(args.out, args.overwrite, (".parquet",))
    res = q_trait(
        args.covstruc,
        args.indicators,
        args.traits,
        mresid=args.mresid,
        mresid_threshold=args.mresid_threshold,
        lsrmr=args.lsrmr,
        lsrmr_threshold=args.lsrmr_threshold,
    )
    write_table_atomic(
        args.out, res.table, metadata={"polgen.function": "q_trait", "polgen.bonferroni": str(res.bonferroni)}
    )
    print_frame(res.table.transpose(include_header=True, header_name="column"), title="q-trait", max_rows=-1)
    for w in res.warnings:
        print(f"warning: {w}")
    print(f"q-trait: {res.table.height} traits written to {args.out} (Bonferroni p < {res.bonferroni:.3g})")
    return 0


__all__ = ["add_parsers"]
