"""``polgen stlr fit ...``, ``polgen stlr perturb ...``, ``polgen stlr splash ...`` and
``polgen stlr transitions ...``."""

from __future__ import annotations

import argparse
from pathlib import Path

from polgen.cli import (
    add_executor,
    add_out,
    add_overwrite,
    add_progress,
    add_resume,
    examples,
    nonneg_float,
    nonneg_int,
    positive_float,
    unit_float,
)
from polgen.errors import InputError, OutputExistsError
from polgen.io.sink import params_to_json, write_table_atomic
from polgen.stlr.perturb import perturb, perturb_batch, resolve_run_args, run_params
from polgen.stlr.splash import splash
from polgen.stlr.train import fit
from polgen.stlr.transitions import transitions


def _genes(v: str | None) -> list[str] | None:
    if not v:
        return None
    p = Path(v)
    if p.exists():
        return [g.strip() for g in p.read_text().replace(",", "\n").splitlines() if g.strip() and not g.startswith("#")]
    return [g.strip() for g in v.split(",") if g.strip()]


def _spatial_key(v: str | None):
    """An obsm key, or "x,y": a pair of obs columns."""
    if not v:
        return None
    parts = [c.strip() for c in v.split(",")]
    return tuple(parts) if len(parts) == 2 else v


def _common(p: argparse.ArgumentParser, *, from_run: bool = False) -> None:
    """Options every command takes; ``from_run``: tissue options default to the training run's."""
    run = " (default: the training run's, from stlr_run.json)" if from_run else ""
    p.add_argument(
        "--h5ad", required=True, metavar="FILE", help="AnnData .h5ad with spatial coordinates and a cluster column"
    )
    p.add_argument(
        "--lr",
        default=None,
        metavar="FILE",
        help="CellChat ligand-receptor table (csv/parquet)" + (run or " (default: the bundled table of the species)"),
    )
    p.add_argument("--layer", default=None, help="expression layer (default: imputed_count when present, else X)" + run)
    p.add_argument("--cluster-key", default=None, help="obs column of cluster labels (default: the usual names)" + run)
    p.add_argument("--one-cluster", action="store_true", help="every cell in one cluster (no cluster column needed)")
    p.add_argument(
        "--spatial-key",
        default=None,
        help="obsm key of the coordinates, or two obs columns 'x,y' (default: obsm spatial / X_spatial / spatial_loc)"
        + run,
    )
    d = None if from_run else 200.0
    p.add_argument("--radius", type=positive_float, default=d, help="secreted-signalling radius" + (run or " (200)"))
    p.add_argument(
        "--contact-distance",
        type=positive_float,
        default=None if from_run else 50.0,
        help="contact / ECM radius" + (run or " (50)"),
    )
    p.add_argument(
        "--scale-factor",
        type=positive_float,
        default=None if from_run else 1.0,
        help="scale of the received-ligand kernel" + (run or " (1)"),
    )
    p.add_argument(
        "--mode",
        choices=("exact", "grid", "fast"),
        default=None if from_run else "exact",
        help="how received ligands are computed: exact pairs, a grid, or the fast approximation" + run,
    )
    add_executor(p)
    add_progress(p)


def _cluster_key(args):
    return False if args.one_cluster else args.cluster_key


def _cells(args) -> list[str] | None:
    """--cells: a file of cell names (one a line or comma-separated), or cluster:LABEL (the cells of
    one cluster of the cluster column: --cluster-key, else training's)."""
    v = args.cells
    if not v:
        return None
    if v.startswith("cluster:"):
        import anndata

        label = v.split(":", 1)[1]
        key = args.cluster_key or (run_params(args.betas) or {}).get("cluster_key")
        if not key:
            raise InputError("--cells cluster:LABEL needs --cluster-key (or a training run that recorded one)")
        obs = anndata.read_h5ad(args.h5ad, backed="r").obs
        if key not in obs.columns:
            raise InputError(f"cluster column {key!r} not in obs", path=args.h5ad, column=key)
        col = obs[key].astype(str)
        cells = [str(c) for c in obs.index[col.to_numpy() == label]]
        if not cells:
            raise InputError(f"no cell has {key} == {label!r} (labels: {sorted(set(col))[:20]})", column=key)
        return cells
    p = Path(v)
    if not p.is_file():
        raise InputError("--cells must be a file of cell names or cluster:LABEL", path=p)
    cells = [c.strip() for c in p.read_text().replace(",", "\n").splitlines() if c.strip() and not c.startswith("#")]
    if not cells:
        raise InputError("--cells file names no cell", path=p)
    return cells


def _check_tables(*paths: str | None) -> None:
    """A parquet --lr / --grn / --ligand-target that is not parquet fails here, naming the file
    (inside the training batches its error would not name it)."""
    import polars as pl

    for v in paths:
        p = Path(v) if v else None
        if p is None or p.suffix.lower() != ".parquet" or not p.is_file():
            continue
        try:
            pl.read_parquet_schema(p)
        except Exception as exc:  # noqa: BLE001 - polars raises several kinds
            raise InputError(f"cannot read as parquet: {exc}", path=p) from None


def cmd_fit(args) -> int:
    _check_tables(args.lr, args.grn, args.ligand_target, args.cell_thresholds)

    genes: list[str] | int | None = int(args.genes) if args.genes and args.genes.isdigit() else _genes(args.genes)
    res = fit(
        args.h5ad,
        genes,
        out=args.out,
        lr=args.lr,
        grn=args.grn,
        species=args.species,
        ligand_target=args.ligand_target,
        radius=args.radius,
        contact_distance=args.contact_distance,
        scale_factor=args.scale_factor,
        group_reg=args.group_reg,
        l1_reg=args.l1_reg,
        min_r2=args.min_r2,
        solver=args.solver,
        cv=args.cv,
        prune=args.prune,
        prune_alpha=args.prune_alpha,
        mode=args.mode,
        layer=args.layer,
        cluster_key=_cluster_key(args),
        spatial_key=_spatial_key(args.spatial_key),
        cell_thresholds=False if args.no_cell_thresholds else args.cell_thresholds,
        grn_alpha=args.grn_alpha,
        orphans=args.orphans,
        resume=args.resume,
        overwrite=args.overwrite,
        executor=args.executor,
        progress=args.progress,
        training_mode=args.training_mode,
        epochs=args.epochs,
        spatial_dim=args.spatial_dim,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    import polars as pl

    zero = res.scores.group_by("gene").agg(pl.col("zeroed").all()).filter(pl.col("zeroed")).height
    print(
        f"trained {res.scores['gene'].n_unique()} genes -> {res.out}"
        + (f"; {zero} of them have all-zero betas (every cluster R2 < --min-r2)" if zero else "")
        + (f" ({len(res.orphans)} orphan genes without a TF regulator skipped)" if res.orphans else "")
    )
    if res.losses.height:  # the CNN modes: how the training went, in one line
        ends = res.losses.group_by("gene", "cluster").agg(
            (pl.col("loss").sort_by("epoch").last() / pl.col("loss").sort_by("epoch").first()).alias("ratio"),
            pl.col("zeroed").first(),
        )
        import statistics

        median = statistics.median(float(v) for v in ends["ratio"].to_list())
        print(
            f"CNN: {ends.height} gene x cluster networks, last / first epoch loss median "
            f"{median:.3g}, {int(ends['zeroed'].sum())} zeroed (R2 < 0.2); per-epoch losses in "
            "each betadata file's metadata (polgen.stlr.cnn.read_losses)"
        )
    return 0


def _exprs(v: str, n_targets: int) -> float | list[float]:
    """--gene-expr: one value for every target, or comma-separated values, one per target."""
    try:
        vals = [float(x) for x in str(v).split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--gene-expr must be a number or one number per target, got {v!r}") from None
    if not vals or any(not (x >= 0 and x < float("inf")) for x in vals):
        raise InputError(f"--gene-expr values must be finite and >= 0, got {v!r}")
    if len(vals) == 1:
        return vals[0]
    if len(vals) != n_targets:
        raise InputError(f"--gene-expr gives {len(vals)} values for {n_targets} targets; give one, or one per target")
    return vals


def cmd_perturb(args) -> int:
    _check_tables(args.lr, args.cell_thresholds, args.co_grn)
    targets = _genes(args.target)
    if not targets:
        raise InputError(f"--target names no gene: {args.target!r}")
    kw = dict(
        gene_expr=_exprs(args.gene_expr, len(targets)),
        n_propagation=args.n_propagation,
        mode=args.mode,
        lr=args.lr,
        radius=args.radius,
        contact_distance=args.contact_distance,
        scale_factor=args.scale_factor,
        beta_scale_factor=args.beta_scale_factor,
        beta_cap=args.beta_cap,
        layer=args.layer,
        cluster_key=_cluster_key(args),
        spatial_key=_spatial_key(args.spatial_key),
        co_grn=args.co_grn,
        cell_thresholds=False if args.no_cell_thresholds else args.cell_thresholds,
        cells=_cells(args),
        allow_mismatch=args.allow_mismatch,
    )
    if len(targets) == 1 and args.out.endswith(".parquet"):
        out = Path(args.out)
        if out.is_dir() or (out.exists() and not args.overwrite):
            raise OutputExistsError(
                "--out exists; pass --overwrite to replace it"
                if not out.is_dir()
                else "--out is a directory; give a .parquet file name",
                path=out,
            )
        sim = perturb(args.h5ad, args.betas, targets[0], changed_only=args.changed_only, **kw)
        write_table_atomic(
            args.out, sim, {"polgen.params": params_to_json({**kw, "cells": args.cells, "target": targets[0]})}
        )
        print(f"{targets[0]} -> {args.out}")
        return 0
    sink = perturb_batch(
        args.h5ad,
        args.betas,
        targets,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        executor=args.executor,
        progress=args.progress,
        **kw,
    )
    print(f"{len(targets)} perturbations -> {sink.path}")
    return 0


def cmd_splash(args) -> int:
    out = Path(args.out)
    if out.is_dir() or (out.exists() and not args.overwrite):
        raise OutputExistsError("--out exists; pass --overwrite to replace it", path=out)
    betas = Path(args.betas)
    f = betas / f"{args.gene}_betadata.parquet" if betas.is_dir() else betas
    if not f.exists():
        raise InputError(f"no betadata for {args.gene!r} (no model was trained for it)", path=f)
    given = {
        "radius": args.radius,
        "contact_distance": args.contact_distance,
        "scale_factor": args.scale_factor,
        "mode": args.mode,
        "layer": args.layer,
        "cluster_key": _cluster_key(args),
        "spatial_key": _spatial_key(args.spatial_key),
        "lr": args.lr,
    }
    run = resolve_run_args(betas, given, args.allow_mismatch)
    df = splash(
        f,
        args.h5ad,
        gene=args.gene,
        layer=run["layer"],
        cluster_key=run["cluster_key"],
        spatial_key=run["spatial_key"],
        lr=run["lr"],
        radius=run["radius"],
        contact_distance=run["contact_distance"],
        scale_factor=run["scale_factor"],
        mode=run["mode"],
        beta_scale_factor=args.beta_scale_factor,
        beta_cap=args.beta_cap,
    )
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in run.items()}
    write_table_atomic(out, df, {"polgen.params": params_to_json({**params, "gene": args.gene})})
    print(f"{args.gene}: splash of {df.width - 1} modulators x {df.height} cells -> {out}")
    return 0


def _perturbed_frame(path: str, target: str | None):
    """The perturbation to draw: a ``stlr perturb`` .parquet file, or its run folder of several
    targets (``target, CellID, <genes>`` parts) with ``--target`` picking one."""
    import polars as pl

    p = Path(path)
    if p.is_dir():
        files = sorted(str(f) for f in p.glob("*.parquet") if not f.name.startswith("."))
        if not files:
            raise InputError("--perturbed folder holds no parquet part", path=p)
    elif p.is_file():
        files = [str(p)]
    else:
        raise InputError("--perturbed not found", path=p)
    try:
        lf = pl.scan_parquet(files)
        names = lf.collect_schema().names()
    except Exception as exc:  # noqa: BLE001 - polars raises several kinds
        raise InputError(f"cannot read as parquet: {exc}", path=p) from None
    if "target" not in names:
        if target is not None:
            raise InputError("--target given, but --perturbed holds one perturbation (no target column)", path=p)
        return lf.collect()
    found = lf.select(pl.col("target").unique(maintain_order=True)).collect()["target"].to_list()
    if target is None:
        if len(found) != 1:
            raise InputError(f"--perturbed holds {len(found)} targets {found[:10]}; pick one with --target", path=p)
        target = found[0]
    if target not in found:
        raise InputError(f"target {target!r} is not in --perturbed (targets: {found[:10]})", path=p, column="target")
    return lf.filter(pl.col("target") == target).drop("target").collect()


def cmd_transitions(args) -> int:
    out = Path(args.out)
    if out.is_dir() or (out.exists() and not args.overwrite):
        raise OutputExistsError(
            "--out is a directory; give a .parquet file name"
            if out.is_dir()
            else "--out exists; pass --overwrite to replace it",
            path=out,
        )
    if args.decimals is not None and args.decimals < 0:
        raise InputError(f"--decimals must be >= 0 (or omitted: no rounding), got {args.decimals}")
    frame = _perturbed_frame(args.perturbed, args.target)
    kw = dict(
        embedding=args.embedding,
        n_neighbors=args.n_neighbors,
        temperature=args.temperature,
        remove_null=args.remove_null,
        unit_vectors=args.unit_vectors,
        rescale=args.rescale,
        decimals=None if args.no_rounding else args.decimals,
        layer=args.layer,
        cluster_key=_cluster_key(args),
        spatial_key=_spatial_key(args.spatial_key),
    )
    df = transitions(args.h5ad, frame, **kw)
    params = {**kw, "h5ad": args.h5ad, "perturbed": args.perturbed, "target": args.target}
    write_table_atomic(out, df, {"polgen.params": params_to_json(params)})
    moved = int(((df["dx"] != 0) | (df["dy"] != 0)).sum())
    print(f"transition vectors of {df.height} cells ({moved} moving) -> {out}")
    return 0


def _add_transitions(sub, demo: str) -> None:
    tr = sub.add_parser(
        "transitions",
        help="transition vectors of a perturbation (where each cell is pushed)",
        description="Per-cell transition vectors of a perturbation, as the reference's "
        "compute_transition_vector_field (CellOracle / velocyto): each cell's simulated change is "
        "correlated with the expression differences to its nearest cells on the tissue coordinates "
        "(or an embedding), turned into transition probabilities and projected onto the layout. "
        "Writes CellID, x, y, dx, dy (+ cluster) to a .parquet file, the frame polgen.plot.transitions "
        "draws.",
        epilog=examples(
            f"polgen stlr perturb --h5ad {demo}/tissue.h5ad --lr {demo}/lr_pairs.csv --betas betas/ "
            "--target Pax5 --out pax5_ko.parquet",
            f"polgen stlr transitions --h5ad {demo}/tissue.h5ad --perturbed pax5_ko.parquet --out pax5_tr.parquet",
            "polgen plot transitions pax5_tr.parquet --out pax5_tr.png",
            f"polgen stlr perturb --h5ad {demo}/tissue.h5ad --lr {demo}/lr_pairs.csv --betas betas/ "
            "--target Pax5,Ebf1 --out perturbations/",
            f"polgen stlr transitions --h5ad {demo}/tissue.h5ad --perturbed perturbations/ --target Ebf1 "
            "--n-neighbors 150 --unit-vectors --out ebf1_tr.parquet --overwrite",
        ),
    )
    tr.add_argument(
        "--h5ad",
        required=True,
        metavar="FILE",
        help="AnnData .h5ad the perturbation ran on (expression, layout)",
    )
    tr.add_argument(
        "--perturbed",
        required=True,
        metavar="PATH",
        help="output of `polgen stlr perturb`: a .parquet file (CellID + genes), or its run folder of several "
        "targets (then --target picks one)",
    )
    tr.add_argument(
        "--target",
        default=None,
        help="which target of a several-target --perturbed folder to draw (default: its only target)",
    )
    tr.add_argument(
        "--embedding",
        default=None,
        metavar="KEY",
        help="obsm key of a 2-D layout, e.g. X_umap (default: the tissue coordinates, --spatial-key)",
    )
    tr.add_argument(
        "--n-neighbors",
        type=int,
        default=200,
        metavar="K",
        help="nearest cells on the layout each cell may move towards (default: %(default)s, as the reference)",
    )
    tr.add_argument(
        "--temperature",
        type=positive_float,
        default=0.05,
        help="softmax temperature of the transition probabilities (default: %(default)s)",
    )
    tr.add_argument(
        "--remove-null",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="subtract the probabilities with no change (uniform over the neighbours) (default: on)",
    )
    tr.add_argument(
        "--unit-vectors",
        action="store_true",
        help="project unit differences to the neighbours (the reference's normalize=True) (default: off)",
    )
    tr.add_argument(
        "--rescale",
        type=positive_float,
        default=1.0,
        help="multiplier of the simulated change before the correlation (default: %(default)s)",
    )
    tr.add_argument(
        "--decimals",
        type=int,
        default=3,
        help="round the simulated change to this many decimals, as the reference (default: %(default)s)",
    )
    tr.add_argument("--no-rounding", action="store_true", help="do not round the simulated change")
    tr.add_argument("--layer", default=None, help="expression layer (default: imputed_count when present, else X)")
    tr.add_argument(
        "--cluster-key",
        default=None,
        help="obs column of the output's cluster column (default: the usual names: cell_type, cluster, ...)",
    )
    tr.add_argument("--one-cluster", action="store_true", help="no cluster column in the output")
    tr.add_argument(
        "--spatial-key",
        default=None,
        help="obsm key of the coordinates, or two obs columns 'x,y' (default: obsm spatial / X_spatial / spatial_loc)",
    )
    add_progress(tr)  # the shared vocabulary (transitions itself is one numba pass, no bar)
    add_out(tr, "output .parquet file (CellID, x, y, dx, dy, cluster)")
    add_overwrite(tr)
    tr.set_defaults(func=cmd_transitions)


def add_parser(subparsers) -> None:
    demo = "polgen-demo/stlr"
    p = subparsers.add_parser(
        "stlr",
        help="SpaceTravLR: spatial GRN training and in-silico perturbation",
        description="SpaceTravLR: train per-gene, per-cluster spatial regulatory models (fit) and "
        "simulate knock-outs / over-expression propagated through them (perturb).",
        epilog=examples(
            "polgen stlr fit --help",
            "polgen stlr perturb --help",
            "polgen stlr splash --help",
            "polgen stlr transitions --help",
        ),
    )
    sub = p.add_subparsers(dest="stlr_command", metavar="COMMAND")
    sub.required = True
    f = sub.add_parser(
        "fit",
        help="train one sparse-group-lasso model per gene and cluster",
        description="Train one sparse-group-lasso model per target gene and cluster over TF, "
        "ligand-receptor and TF-ligand modulators; writes {gene}_betadata.parquet into --out.",
        epilog=examples(
            f"polgen stlr fit --h5ad {demo}/tissue.h5ad --lr {demo}/lr_pairs.csv "
            f"--grn {demo}/grn_links.parquet --out betas/",
            f"polgen stlr fit --h5ad {demo}/tissue.h5ad --lr {demo}/lr_pairs.csv "
            f"--grn {demo}/grn_links.parquet --genes Cd19,Myc --out betas/ --resume",
        ),
    )
    _common(f)
    f.add_argument(
        "--grn",
        default=None,
        metavar="FILE",
        help="TF links (source,target csv/parquet) or a CellOracle base GRN parquet (default: the bundled "
        "base GRN of the species; mouse only)",
    )
    f.add_argument(
        "--species",
        choices=("mouse", "human"),
        default=None,
        help="species of the bundled priors (default: from the gene-symbol case)",
    )
    f.add_argument(
        "--solver",
        choices=("fista", "reference"),
        default="fista",
        help="fista (default, runs to convergence) or reference (group-lasso 1.5.0's iteration, the Python "
        "reference's betas)",
    )
    f.add_argument("--cv", type=nonneg_int, default=5, help="folds of the held-out R2 (0: none)")
    f.add_argument(
        "--prune",
        action="store_true",
        help="replace the GRN by CellOracle's per-cluster bagging-ridge links of the trained genes, filtered by "
        "--grn-alpha (default: off, the GRN as given)",
    )
    f.add_argument(
        "--prune-alpha",
        type=positive_float,
        default=5.0,
        help="ridge penalty of the pruning fits (default: %(default)s, as the reference's run_celloracle_)",
    )
    f.add_argument(
        "--ligand-target", default=None, metavar="FILE", help="NicheNet ligand-target matrix (parquet) for L#TF pairs"
    )
    f.add_argument(
        "--genes",
        default=None,
        help="comma-separated genes, a file, or a number N: the N most variable genes with a TF regulator "
        "(default: all)",
    )
    add_out(f, "output run folder of {gene}_betadata.parquet")
    f.add_argument("--group-reg", type=nonneg_float, default=1e-7, help="group-lasso penalty")
    f.add_argument("--l1-reg", type=nonneg_float, default=1e-9, help="lasso penalty")
    f.add_argument("--min-r2", type=unit_float, default=0.15, help="a cluster model below this R2 is not kept")
    f.add_argument(
        "--cell-thresholds",
        default=None,
        metavar="FILE",
        help="cells x genes table (parquet/csv; > 0 = allowed) masking LR ligands and receptors "
        "(default: the h5ad's uns['cell_thresholds'] when present)",
    )
    f.add_argument("--no-cell-thresholds", action="store_true", help="ignore uns['cell_thresholds']")
    f.add_argument(
        "--grn-alpha",
        type=unit_float,
        default=0.05,
        help="a TF regulates a gene when one of its links has p < this (links with a p column)",
    )
    f.add_argument(
        "--orphans",
        choices=("skip", "train"),
        default="skip",
        help="genes without a TF regulator in the GRN: skip them (default, as the reference) "
        "or train them on their ligand terms",
    )
    f.add_argument(
        "--training-mode",
        choices=("seed", "hybrid", "full"),
        default="seed",
        help="seed: per-cluster betas (default); full / hybrid: per-cell betas from the reference's CNN "
        "(hybrid: only genes with spatially structured residuals); needs pip install 'polgen[cnn]'",
    )
    f.add_argument("--epochs", type=int, default=10, help="CNN training epochs (hybrid / full)")
    f.add_argument("--spatial-dim", type=int, default=32, help="side of each cell's spatial map (>= 8)")
    f.add_argument("--learning-rate", type=positive_float, default=5e-3, help="Adam learning rate of the CNN")
    f.add_argument("--batch-size", type=int, default=512, help="CNN mini-batch size")
    f.add_argument("--seed", type=int, default=0, help="seed of the CNN training (weights, batches, rotations)")
    add_resume(f)
    add_overwrite(f)
    f.set_defaults(func=cmd_fit)
    q = sub.add_parser(
        "perturb",
        help="knock out / over-express genes and propagate",
        description="Set one or more genes' expression (0 = knock-out) and propagate the change through "
        "the fitted betadata; one target to a .parquet file, several to a run folder.",
        epilog=examples(
            f"polgen stlr perturb --h5ad {demo}/tissue.h5ad --lr {demo}/lr_pairs.csv "
            "--betas betas/ --target Pax5 --out pax5_ko.parquet",
            f"polgen stlr perturb --h5ad {demo}/tissue.h5ad --lr {demo}/lr_pairs.csv "
            "--betas betas/ --target Pax5,Ebf1 --gene-expr 2 --out perturbations/ --overwrite",
        ),
    )
    _common(q, from_run=True)
    q.add_argument("--betas", required=True, metavar="DIR", help="directory of *_betadata.{parquet,feather}")
    q.add_argument(
        "--cells",
        default=None,
        help="perturb only these cells: a file of cell names, or cluster:LABEL (default: all cells)",
    )
    q.add_argument("--changed-only", action="store_true", help="write only the genes that changed (one target)")
    q.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="allow radius / layer / ... different from training's (a warning instead of an error)",
    )
    q.add_argument("--target", required=True, help="gene, comma-separated genes, or a file of genes")
    q.add_argument(
        "--gene-expr",
        default="0",
        help="value to set (0 = knock-out); comma-separated: one value per target (default 0)",
    )
    q.add_argument("--n-propagation", type=nonneg_int, default=4, metavar="N", help="propagation steps")
    q.add_argument("--beta-scale-factor", type=nonneg_float, default=1.0, help="multiplier of every coefficient")
    q.add_argument("--beta-cap", type=positive_float, default=None, help="cap on |coefficient| (default: no cap)")
    q.add_argument(
        "--cell-thresholds",
        default=None,
        metavar="FILE",
        help="cells x genes table (parquet/csv; > 0 = allowed) masking LR ligands and the splash "
        "expression (default: the h5ad's uns['cell_thresholds'] when present)",
    )
    q.add_argument("--no-cell-thresholds", action="store_true", help="ignore uns['cell_thresholds']")
    q.add_argument(
        "--co-grn",
        default=None,
        metavar="FILE",
        help="TF links (source,target csv/parquet): keep direct TF terms only for TF -> gene links",
    )
    add_out(q, "a .parquet file (one target) or a run folder (several targets)")
    add_resume(q)
    add_overwrite(q)
    q.set_defaults(func=cmd_perturb)
    sp = sub.add_parser(
        "splash",
        help="one gene's splash: d(gene)/d(modulator) per cell",
        description="The derivative of a trained gene's expression by each of its modulators in every cell "
        "(the reference's splash), written as CellID + beta_<modulator> columns.",
        epilog=examples(f"polgen stlr splash --h5ad {demo}/tissue.h5ad --betas betas/ --gene Pax5 --out pax5.parquet"),
    )
    _common(sp, from_run=True)
    sp.add_argument("--betas", required=True, metavar="DIR", help="training run folder (or one betadata file)")
    sp.add_argument("--gene", required=True, help="the trained gene")
    sp.add_argument("--beta-scale-factor", type=nonneg_float, default=1.0, help="multiplier of every coefficient")
    sp.add_argument("--beta-cap", type=positive_float, default=None, help="cap on |coefficient| (default: no cap)")
    sp.add_argument("--allow-mismatch", action="store_true", help="allow options different from training's")
    add_out(sp, "output .parquet file")
    add_overwrite(sp)
    sp.set_defaults(func=cmd_splash)
    _add_transitions(sub, demo)
