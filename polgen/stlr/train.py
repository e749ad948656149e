"""Training: one sparse-group-lasso model per (target gene, cluster), all genes through the engine.

``fit`` writes ``{gene}_betadata.parquet`` (first column ``Cluster``, then ``beta0`` and the
``beta_*`` modulators; run parameters and per-cluster R^2 in the parquet metadata) for every
gene, plus ``stlr_run.json`` (every parameter, the genes, their R^2).  A cluster whose in-sample
R^2 is below ``min_r2`` (0.15, the reference's rule) gets all-zero betas.

The output folder is a polgen run folder (:mod:`polgen.io.sink`, with named parts): each gene's
file is written atomically by the task that trains it and recorded (size, rows, SHA-256) in
``_polgen_manifest.jsonl``; the parameters are in the manifest and in every file's metadata;
while ``fit`` runs it holds the folder's advisory lock, so a second run on the same folder fails
at once with :class:`~polgen.errors.OutputLockedError`.  ``resume=True`` skips genes whose file
is recorded and verifies (a missing, torn or damaged file is retrained), so a killed run
finishes where it stopped with the same bytes as an uninterrupted one.

Orphans (the reference's rule, ``orphans="skip"``, the default): a gene with no TF regulator in
the GRN gets no model and no file - SpaceTravLR 0.1.21 marks it ``{gene}.orphan`` and skips it,
so perturbation treats it as untrained.  Skipped genes are listed in ``FitResult.orphans`` /
``FitResult.skipped`` (with the reason), in ``stlr_run.json``, and logged.
``orphans="train"`` trains them on their ligand-receptor / ligand-TF terms (polgen's former
behaviour).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import numpy as np
import polars as pl

from polgen._blas import single_threaded_blas
from polgen.engine.executor import run_tasks
from polgen.errors import InputError, OutputExistsError, ResumeError
from polgen.io.sink import MANIFEST as SINK_MANIFEST
from polgen.io.sink import BatchSink, OutputLock, PartNames, write_part
from polgen.options import LigandMode, Orphans, Species, StlrSolver, StlrTrainingMode, check_option
from polgen.schema import BETA0, CLUSTER
from polgen.stlr.betadata import BetaData
from polgen.stlr.cnn import LOSS_SCHEMA, cnn_options, read_losses, task_cell_betas
from polgen.stlr.features import ORPHAN_REASON, build_context, orphan_genes
from polgen.stlr.grn import as_links, lr_table, read_cellchat, read_ligand_target
from polgen.stlr.lasso import SOLVER_DEFAULTS, sparse_group_lasso
from polgen.stlr.ligands import MODES
from polgen.stlr.priors import resolve_priors
from polgen.stlr.pruning import prune_links
from polgen.stlr.tissue import as_tissue, has_layer, layer_columns, run_thresholds, source_anndata

log = logging.getLogger("polgen")

MANIFEST = "stlr_run.json"  # the run summary beside the sink's manifest: parameters, genes, orphans, R^2
LEGACY_GENE_LOG = "stlr_genes.jsonl"  # the gene log of polgen runs before the sink's manifest
BETADATA_SUFFIX = "_betadata.parquet"
META_R2 = "polgen.stlr.r2"
ORPHAN_RULES = get_args(Orphans)


@dataclass
class FitResult:
    out: Path
    genes: list[str]
    scores: pl.DataFrame  # gene, cluster, r2, n_modulators, n_iter, converged (trained genes)
    orphans: list[str] = field(default_factory=list)  # requested genes skipped (no TF regulator)
    skipped: pl.DataFrame = field(
        default_factory=lambda: pl.DataFrame(schema={"gene": pl.String, "reason": pl.String})
    )  # gene, reason
    losses: pl.DataFrame = field(
        default_factory=lambda: pl.DataFrame(schema=LOSS_SCHEMA)
    )  # CNN modes: gene, cluster, epoch, loss, score, zeroed (polgen.stlr.cnn.epoch_losses)

    @property
    def files(self) -> list[Path]:
        return [self.out / f"{g}{BETADATA_SUFFIX}" for g in self.genes]


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def cv_r2(
    D, y, groups, *, folds: int, group_reg: float, l1_reg: float, max_iter: int, tol: float, solver="fista"
) -> float:
    """Held-out R^2 of one cluster's model: ``folds``-fold cross-validation (cell k in fold
    ``k % folds``, in the tissue's order), each fold predicted by a model fitted on the others
    (same solver and settings), R^2 = 1 - sum of held-out squared errors / total sum of squares.
    NaN with fewer than 2 folds' worth of cells (< 2 * folds) or no variance."""
    n = len(y)
    sst = float(((y - y.mean()) ** 2).sum())
    if folds < 2 or n < 2 * folds or sst <= 0:
        return float("nan")
    fold = np.arange(n) % folds
    pred = np.empty(n)
    for f in range(folds):
        tr = fold != f
        fit = sparse_group_lasso(D[tr], y[tr], groups, group_reg, l1_reg, max_iter=max_iter, tol=tol, solver=solver)
        pred[~tr] = D[~tr] @ fit.coef + fit.intercept
    return 1.0 - float(((y - pred) ** 2).sum()) / sst


def fit_gene(
    ctx,
    gene: str,
    cluster_labels: Sequence[str],
    *,
    group_reg: float,
    l1_reg: float,
    min_r2: float,
    max_iter: int,
    tol: float,
    cv: int = 0,
    solver: StlrSolver = "fista",
):
    """Betas (clusters x (1 + p)) of one gene and per-cluster diagnostics
    ``(cluster, r2, n_iter, converged, cv_r2, n_cells, zeroed)``."""
    mods = ctx.modulators(gene)
    D = ctx.design(mods)
    y = ctx.X[:, ctx.gidx[gene]]
    groups = mods.groups
    C = len(cluster_labels)
    B = np.zeros((C, 1 + D.shape[1]))
    diag = []
    for c in range(C):
        m = ctx.clusters == c
        nc = int(m.sum())
        if nc < 2:
            diag.append((c, float("nan"), 0, False, float("nan"), nc, True))
            continue
        fitc = sparse_group_lasso(D[m], y[m], groups, group_reg, l1_reg, max_iter=max_iter, tol=tol, solver=solver)
        kept = fitc.r2 >= min_r2
        if kept:
            B[c, 0] = fitc.intercept
            B[c, 1:] = fitc.coef
        held = (
            cv_r2(
                D[m],
                y[m],
                groups,
                folds=cv,
                group_reg=group_reg,
                l1_reg=l1_reg,
                max_iter=max_iter,
                tol=tol,
                solver=solver,
            )
            if cv
            else float("nan")
        )
        diag.append((c, fitc.r2, fitc.n_iter, fitc.converged, held, nc, not kept))
    bd = BetaData(gene=gene, id_kind=CLUSTER, ids=list(cluster_labels), columns=[BETA0] + mods.names, values=B)
    return bd, diag, len(mods.names)


def tissue_scale(coords: np.ndarray) -> tuple[float, float]:
    """(extent, spacing) of a tissue: the larger side of its bounding box and the median distance
    from a cell to its nearest other cell."""
    from scipy.spatial import cKDTree

    if len(coords) < 2:
        return 0.0, 0.0
    extent = float(np.ptp(coords, axis=0).max())
    d, _ = cKDTree(coords).query(coords, k=2)
    return extent, float(np.median(d[:, 1]))


def check_radius_units(coords: np.ndarray, radius: float, contact_distance: float) -> list[str]:
    """Warnings (logged, and returned) when ``radius`` / ``contact_distance`` are out of scale with the tissue:
    larger than its extent (every cell receives about the same amount) or below half the spacing
    between neighbouring cells (a cell receives mostly its own ligand)."""
    extent, spacing = tissue_scale(coords)
    out = []
    for name, r in (("radius", radius), ("contact_distance", contact_distance)):
        if extent > 0 and r > extent:
            out.append(
                f"{name}={r:g} is larger than the tissue's extent ({extent:.4g} coordinate units across): every "
                "cell receives nearly the same ligand amounts; are the coordinates in other units (pixels vs "
                "microns)? Scale the coordinates or pass a smaller " + name
            )
        elif spacing > 0 and r < 0.5 * spacing:
            out.append(
                f"{name}={r:g} is below half the spacing between neighbouring cells ({spacing:.4g} coordinate "
                f"units): cells receive mostly their own ligands; pass a larger {name}"
            )
    for msg in out:  # logged once (a warnings.warn beside it printed every message twice in the CLI)
        log.warning("stlr fit: %s", msg)
    return out


def top_variable_genes(t, candidates: Sequence[str], n: int) -> list[str]:
    """The ``n`` of ``candidates`` with the largest expression variance in the tissue (ties by name)."""
    idx = t.gene_index(list(candidates))
    var = t.X[:, idx].var(axis=0)
    order = sorted(range(len(candidates)), key=lambda k: (-var[k], candidates[k]))
    return [candidates[k] for k in order[:n]]


# -- inputs beside the expression ---------------------------------------------------------------
RECEPTOR_LAYER = "normalized_count"  # the reference's receptor levels come from this layer when present


def _lr_genes(lr, var_names, radius, contact_distance) -> tuple[list[str], list[str]]:
    """Sorted (ligands, receptors) of the expanded LR table restricted to var_names."""
    lrt = lr_table(lr, var_names, radius, contact_distance)
    return sorted(set(lrt["ligand"].to_list())), sorted(set(lrt["receptor"].to_list()))


# -- engine task --------------------------------------------------------------------------------
_CTX: dict[str, tuple] = {}


def _inputs(adata, t, lr, radius, contact_distance, cell_thresholds):
    """(cell thresholds, receptor layer, receptor levels) of a run on tissue ``t`` read from ``adata``."""
    ligs, recs = _lr_genes(lr, t.var_names, radius, contact_distance)
    thr = run_thresholds(cell_thresholds, adata, t.obs_names, set(ligs) | set(recs))
    src = adata if isinstance(adata, (str, os.PathLike)) else source_anndata(adata)
    if src is not None and recs and t.layer != RECEPTOR_LAYER and has_layer(src, RECEPTOR_LAYER):
        return thr, RECEPTOR_LAYER, layer_columns(src, RECEPTOR_LAYER, t.var_names, recs)
    return thr, t.layer, None


def training_context(
    adata,
    lr,
    grn,
    *,
    ligand_target=None,
    radius: float = 200.0,
    contact_distance: float = 50.0,
    scale_factor: float = 1.0,
    mode: LigandMode = "exact",
    receptor_thresh: float = 0.01,
    tf_ligand_cutoff: float = 0.01,
    cell_thresholds=None,
    grn_alpha: float = 0.05,
    layer: str | None = None,
    cluster_key=None,
    spatial_key=None,
):
    """The feature context :func:`fit` trains on (modulators and design matrices of every gene),
    and the tissue: ``(FeatureContext, Tissue)``.  Arguments as in :func:`fit`."""
    t = as_tissue(adata, layer=layer, cluster_key=cluster_key, spatial_key=spatial_key)
    lr, grn, _ = resolve_priors(lr, grn, None, t.var_names)
    lr = read_cellchat(lr) if isinstance(lr, (str, os.PathLike)) else lr
    lt = read_ligand_target(ligand_target) if ligand_target is not None else None
    thr, _, levels = _inputs(adata, t, lr, radius, contact_distance, cell_thresholds)
    clusters, cluster_labels = t.require_clusters()
    ctx = build_context(
        t.X,
        t.var_names,
        t.coords,
        clusters,
        len(cluster_labels),
        lr,
        as_links(grn),
        radius=radius,
        contact_distance=contact_distance,
        scale_factor=scale_factor,
        mode=mode,
        receptor_thresh=receptor_thresh,
        tf_ligand_cutoff=tf_ligand_cutoff,
        ligand_target=lt,
        cell_thresholds=thr,
        grn_alpha=grn_alpha,
        receptor_levels=levels,
    )
    return ctx, t


def _prepare(spec: dict):
    key = spec["key"]
    hit = _CTX.get(key)
    if hit is not None:
        return hit
    p = spec["params"]
    t = as_tissue(spec["adata"], layer=p["layer"], cluster_key=p["cluster_key"], spatial_key=p["spatial_key"])
    lr = read_cellchat(spec["lr"]) if isinstance(spec["lr"], str) else spec["lr"]
    lt = spec.get("ligand_target")
    lt = read_ligand_target(lt) if lt is not None else None
    if "local" in spec:  # thresholds and receptor levels prepared by fit in this process
        thr, levels = spec["local"]
    else:
        src = spec.get("cell_thresholds") if p["cell_thresholds"] is not None else False
        thr, rl, levels = _inputs(spec["adata"], t, lr, p["radius"], p["contact_distance"], src)
        if (None if thr is None else thr.digest()) != p["cell_thresholds"] or rl != p["receptor_layer"]:
            raise InputError("cell_thresholds or the receptor layer changed since the run started", path=spec["adata"])
    clusters, cluster_labels = t.require_clusters()
    ctx = build_context(
        t.X,
        t.var_names,
        t.coords,
        clusters,
        len(cluster_labels),
        lr,
        as_links(spec["grn"]),
        radius=p["radius"],
        contact_distance=p["contact_distance"],
        scale_factor=p["scale_factor"],
        mode=p["mode"],
        receptor_thresh=p["receptor_thresh"],
        tf_ligand_cutoff=p["tf_ligand_cutoff"],
        ligand_target=lt,
        cell_thresholds=thr,
        grn_alpha=p["grn_alpha"],
        receptor_levels=levels,
    )
    _CTX.clear()
    _CTX[key] = (ctx, cluster_labels)
    return _CTX[key]


def _train_task(task: dict) -> dict:
    """Train one gene and write its betadata as a named part of the run (a pure function)."""
    # Single-threaded BLAS: multi-threaded OpenBLAS reductions change the last bits with the thread
    # count, and betas must be bit-identical locally, on Dask workers and after a resume.
    with single_threaded_blas():
        ctx, labels = _prepare(task["spec"])
        p = task["spec"]["params"]
        bd, diag, nmod = fit_gene(
            ctx,
            task["gene"],
            labels,
            group_reg=p["group_reg"],
            l1_reg=p["l1_reg"],
            min_r2=p["min_r2"],
            max_iter=p["max_iter"],
            tol=p["tol"],
            cv=p["cv"],
            solver=p["solver"],
        )
    meta = {META_R2: json.dumps({labels[c]: r2 for c, r2, *_ in diag})}
    if "cnn" in p:  # training_mode hybrid / full: per-cell betas (polgen.stlr.cnn)
        bd, cnn_meta = task_cell_betas(task["spec"], ctx, bd, diag, task["gene"])
        meta.update(cnn_meta)
    part = write_part(
        task["out"], task["batch"], bd.to_polars().to_arrow(), task["params_json"], name=task["file"], metadata=meta
    )
    return {"gene": task["gene"], "diag": diag, "n_modulators": nmod, "part": part}


def _refuse_legacy_run(out: Path, resume: bool, overwrite: bool) -> None:
    """A folder written by a polgen before the run-folder manifest cannot be resumed."""
    if not (out / MANIFEST).exists() or (out / SINK_MANIFEST).exists():
        return
    if overwrite:
        (out / LEGACY_GENE_LOG).unlink(missing_ok=True)
        return
    msg = f"output holds an stlr run of an earlier polgen (no {SINK_MANIFEST}); pass overwrite=True to retrain it"
    raise (ResumeError if resume else OutputExistsError)(msg, path=out)


def _numbers(**checks) -> None:
    """Typed errors for options that must be finite numbers (positive or non-negative)."""
    for name, (value, kind) in checks.items():
        ok = (
            isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and (value > 0 if kind == "positive" else value >= 0)
        )
        if not ok:
            what = "a positive" if kind == "positive" else "a non-negative"
            raise InputError(f"{name} must be {what} finite number, got {value!r}")


def report_fit(scores: pl.DataFrame, min_r2: float) -> dict[str, list[str]]:
    """Log what training produced beyond "trained N genes": models with more modulators than cells
    (in-sample R^2 near 1 means nothing there; read ``cv_r2``), models that stopped at ``max_iter``,
    and genes whose every cluster was zeroed (R^2 < ``min_r2``: no effect in perturbation).
    Returns those gene lists (``overfit``, ``not_converged``, ``all_zero``)."""
    if scores.height == 0:
        return {"overfit": [], "not_converged": [], "all_zero": []}
    over = scores.filter(pl.col("n_modulators") >= pl.col("n_cells"))
    nonconv = scores.filter(~pl.col("converged") & ~pl.col("zeroed"))
    per_gene = scores.group_by("gene", maintain_order=True).agg(pl.col("zeroed").all().alias("all_zero"))
    all_zero = per_gene.filter(pl.col("all_zero"))["gene"].to_list()
    out = {
        "overfit": over["gene"].unique(maintain_order=True).to_list(),
        "not_converged": nonconv["gene"].unique(maintain_order=True).to_list(),
        "all_zero": all_zero,
    }
    if over.height:
        log.warning(
            "stlr fit: %d of %d cluster models have at least as many modulators as cells (e.g. %s: %d modulators, "
            "%d cells); their in-sample R^2 is no evidence of fit - see the cv_r2 column (held-out R^2)",
            over.height,
            scores.height,
            over["gene"][0],
            over["n_modulators"][0],
            over["n_cells"][0],
        )
    if nonconv.height:
        log.warning(
            "stlr fit: %d cluster model(s) stopped at max_iter before converging (genes %s); their betas are "
            "not the optimum - raise max_iter or the penalties",
            nonconv.height,
            out["not_converged"][:10],
        )
    if all_zero:
        log.warning(
            "stlr fit: %d of %d trained gene(s) have all-zero betas (every cluster's R^2 < min_r2=%g): %s; "
            "perturbations do not propagate through them",
            len(all_zero),
            per_gene.height,
            min_r2,
            all_zero[:10],
        )
    n_ok = per_gene.height - len(all_zero)
    log.info("stlr fit: %d gene(s) with at least one non-zero cluster model, %d all-zero", n_ok, len(all_zero))
    return out


def fit(
    adata,
    genes: Sequence[str] | int | None = None,
    *,
    out: str | os.PathLike,
    lr=None,
    grn=None,
    species: Species | None = None,
    ligand_target=None,
    radius: float = 200.0,
    contact_distance: float = 50.0,
    scale_factor: float = 1.0,
    group_reg: float = 1e-7,
    l1_reg: float = 1e-9,
    receptor_thresh: float = 0.01,
    tf_ligand_cutoff: float = 0.01,
    min_r2: float = 0.15,
    max_iter: int | None = None,
    tol: float | None = None,
    solver: StlrSolver = "fista",
    cv: int = 5,
    mode: LigandMode = "exact",
    layer: str | None = None,
    cluster_key=None,
    spatial_key=None,
    cell_thresholds=None,
    grn_alpha: float = 0.05,
    prune: bool = False,
    prune_alpha: float = 5.0,
    orphans: Orphans = "skip",
    resume: bool = False,
    overwrite: bool = False,
    executor=None,
    progress: bool | None = None,
    training_mode: StlrTrainingMode = "seed",
    epochs: int = 10,
    spatial_dim: int = 32,
    learning_rate: float = 5e-3,
    batch_size: int = 512,
    seed: int = 0,
) -> FitResult:
    """Train every gene in ``genes`` (default: all var_names) and write its betadata to ``out``.

    ``genes``: names, or a number N - the N most variable genes with a TF regulator in the GRN.
    ``lr`` / ``grn`` None use the bundled priors of ``species`` (:mod:`polgen.stlr.priors`; the
    species is detected from the gene-symbol case when not given).  ``solver``: "fista" (default;
    runs to ``tol`` = 1e-10, ``max_iter`` = 5000) or "reference" (group-lasso 1.5.0's iteration,
    1500 iterations, tol 1e-5: the Python reference's betas).  ``cv``: folds of the held-out R^2
    reported as ``cv_r2`` (0: none).  After training, models with at least as many modulators as
    cells, models stopped at ``max_iter`` and genes whose every cluster was zeroed are logged
    (:func:`report_fit`); a ``radius`` / ``contact_distance`` out of scale with the tissue warns.

    ``lr``: CellChat table (path or frame); ``grn``: TF links (long table with optional
    ``cluster`` / ``p``, CellOracle's ``{cluster: links}`` - the reference's ``co_grn`` -, a
    CellOracle base GRN, a path, or ``{target: [TFs]}``); a TF counts when one of its links has
    ``p < grn_alpha`` (the reference's ``get_regulators(alpha=0.05)``; tables without ``p`` keep
    every link).  ``prune``: first replace the GRN by CellOracle's per-cluster bagging-ridge links of
    the trained genes with p-values (:func:`polgen.stlr.pruning.prune_links`, ridge ``prune_alpha``,
    5 as the reference's ``run_celloracle_``), so a TF counts only where the data support it.
    ``ligand_target``: optional NicheNet matrix (path or frame) for the ligand-TF
    pairs (with 1,000+ genes, pairs whose ligand is regulated by the target or the TF are
    dropped, as in the reference).  ``cell_thresholds``: a cells x genes table (frame or
    parquet/csv path; > 0 = allowed) masking LR ligands and receptors; None uses
    ``adata.uns["cell_thresholds"]`` when present (the reference's behaviour), False ignores it.
    ``orphans``: "skip" (default, the reference's rule) trains nothing for a gene without a TF
    regulator in the GRN (:func:`polgen.stlr.features.orphan_genes`; reported in
    ``FitResult.orphans`` / ``skipped`` and ``stlr_run.json``); "train" trains such genes
    on their ligand-receptor and ligand-TF terms.  ``FitResult.genes`` lists the trained genes.
    Receptor levels for ``receptor_thresh`` come from the ``normalized_count`` layer when the
    AnnData has one (reference rule), else from the training expression.
    Genes are trained through :func:`polgen.engine.run_tasks` (``executor``:
    None = in this process; with a pool, ``adata``, ``lr``, ``grn`` must be paths, and a process
    pool should use the "spawn" start method - polars' thread pool does not survive fork).
    Results are identical whatever the executor.

    ``training_mode``: "seed" (default) writes per-cluster betas; "full" / "hybrid" turn them into
    per-cell betas (``CellID`` rows) with the reference's CNN over each cell's neighbourhood
    (:mod:`polgen.stlr.cnn`: ``epochs``, ``spatial_dim`` x ``spatial_dim`` maps, Adam with
    ``learning_rate``, ``batch_size``, ``seed``; "hybrid" only for genes whose seed residuals are
    spatially structured); they need the ``polgen[cnn]`` extra (PyTorch).  Their training curves
    (mean loss of every epoch per gene and cluster) are ``FitResult.losses``, also stored in each
    betadata file's metadata (:func:`polgen.stlr.cnn.read_losses` reads them from a run folder).

    ``out`` is a run folder (:class:`polgen.io.sink.BatchSink` with one named part per gene) that
    ``fit`` locks while it runs (a second run on it raises
    :class:`~polgen.errors.OutputLockedError`).  An existing run there needs ``resume=True``
    (same parameters: genes already recorded and verified are kept, the others trained) or
    ``overwrite=True`` (its betadata files are removed first).
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    check_option("solver", solver, StlrSolver)
    max_iter = SOLVER_DEFAULTS[solver][0] if max_iter is None else max_iter
    tol = SOLVER_DEFAULTS[solver][1] if tol is None else tol
    if not 0 <= min_r2 <= 1:
        raise InputError("min_r2 must be in [0, 1]")
    _numbers(
        radius=(radius, "positive"),
        contact_distance=(contact_distance, "positive"),
        scale_factor=(scale_factor, "positive"),
        group_reg=(group_reg, "nonneg"),
        l1_reg=(l1_reg, "nonneg"),
        receptor_thresh=(receptor_thresh, "nonneg"),
        tf_ligand_cutoff=(tf_ligand_cutoff, "nonneg"),
        tol=(tol, "positive"),
    )
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise InputError(f"max_iter must be a positive integer, got {max_iter!r}")
    out = Path(out)
    local = executor is None or executor == "local"
    is_path = lambda v: isinstance(v, (str, os.PathLike))  # noqa: E731
    if not local and not all(
        v is None or is_path(v) or isinstance(v, Mapping) for v in (adata, lr, grn, ligand_target)
    ):
        raise InputError("fit with an executor needs adata, lr, grn (and ligand_target) given as paths")
    if not local and not (cell_thresholds is None or cell_thresholds is False or is_path(cell_thresholds)):
        raise InputError("fit with an executor needs cell_thresholds given as a path (or None / False)")
    if not (0 < grn_alpha <= 1):
        raise InputError("grn_alpha must be in (0, 1]")
    if orphans not in ORPHAN_RULES:
        raise InputError(f"orphans must be one of {ORPHAN_RULES}, got {orphans!r}")
    if isinstance(cv, bool) or not isinstance(cv, (int, np.integer)) or cv < 0 or cv == 1:
        raise InputError(f"cv must be 0 (no cross-validation) or a number of folds >= 2, got {cv!r}")
    t = as_tissue(adata, layer=layer, cluster_key=cluster_key, spatial_key=spatial_key)
    bundled = (lr is None, grn is None)
    lr, grn, species = resolve_priors(lr, grn, species, t.var_names)
    links = as_links(grn)
    top_n: int | None = None
    if isinstance(genes, (int, np.integer)) and not isinstance(genes, bool):
        if genes < 1:
            raise InputError(f"genes as a number must be >= 1, got {genes!r}")
        top_n = int(genes)
        genes = None
    if genes is None:
        genes = list(t.var_names)
    else:
        genes = list(dict.fromkeys(genes))  # type: ignore[arg-type]
        t.gene_index(genes)  # InputError naming genes absent from the AnnData
    # after the gene names are checked (a typo is reported whether or not torch is installed)
    cnn = cnn_options(
        training_mode,
        epochs=epochs,
        spatial_dim=spatial_dim,
        learning_rate=learning_rate,
        batch_size=batch_size,
        seed=seed,
        n_cells=len(t.obs_names),
    )
    if top_n is not None:
        skip0 = set(orphan_genes(links, genes, t.var_names, grn_alpha))
        with_regs = [g for g in genes if g not in skip0]
        if not with_regs:
            raise InputError("no gene of the data has a TF regulator in the GRN; check grn= and the gene symbols")
        genes = top_variable_genes(t, with_regs, top_n)
        log.info(
            "stlr fit: the %d most variable of %d genes with a TF regulator: %s", len(genes), len(with_regs), genes
        )
    if prune:  # the reference's CellOracle links, fitted here for the genes to train
        grn = links = prune_links(t, links, targets=genes, alpha=prune_alpha)
    check_radius_units(t.coords, float(radius), float(contact_distance))
    orphan_list: list[str] = []
    if orphans == "skip":
        orphan_list = orphan_genes(links, genes, t.var_names, grn_alpha)
        if orphan_list:
            shown = ", ".join(orphan_list[:10]) + (" ..." if len(orphan_list) > 10 else "")
            log.info(
                "stlr fit: %d of %d genes are orphans (no TF regulator in the GRN), not trained: %s",
                len(orphan_list),
                len(genes),
                shown,
            )
    requested = genes
    skip = set(orphan_list)
    genes = [g for g in requested if g not in skip]
    thr, receptor_layer, levels = _inputs(
        adata, t, read_cellchat(lr) if is_path(lr) else lr, radius, contact_distance, cell_thresholds
    )
    params = {
        "method": "stlr.fit",
        "radius": float(radius),
        "contact_distance": float(contact_distance),
        "scale_factor": float(scale_factor),
        "group_reg": float(group_reg),
        "l1_reg": float(l1_reg),
        "receptor_thresh": float(receptor_thresh),
        "tf_ligand_cutoff": float(tf_ligand_cutoff),
        "min_r2": float(min_r2),
        "max_iter": int(max_iter),
        "tol": float(tol),
        "solver": solver,
        "mode": mode,
        "layer": t.layer,
        "cluster_key": False if cluster_key is False else t.cluster_key,
        "spatial_key": spatial_key,
        "adata": str(adata) if is_path(adata) else "<AnnData>",
        "lr": str(lr) if is_path(lr) else "<table>",
        "grn": str(grn) if is_path(grn) else "<table>",
        "species": species,
        "bundled_lr": bundled[0],
        "bundled_grn": bundled[1],
        "cv": int(cv),
        "ligand_target": None
        if ligand_target is None
        else (str(ligand_target) if is_path(ligand_target) else "<table>"),
        "n_cells": len(t.obs_names),
        "n_genes": len(t.var_names),
        "clusters": t.cluster_labels,
        "grn_alpha": float(grn_alpha),
        "cell_thresholds": None if thr is None else thr.digest(),
        "receptor_layer": receptor_layer,
        "orphans": orphans,
    }
    if prune:  # runs without pruning keep their parameters (and resume) unchanged
        params["prune_alpha"] = float(prune_alpha)
    if cnn.training_mode != "seed":  # seed runs keep their parameters (and resume) unchanged
        params["cnn"] = cnn.params()
    orphan_json = {g: ORPHAN_REASON for g in orphan_list}
    skipped = pl.DataFrame(
        {"gene": orphan_list, "reason": [ORPHAN_REASON] * len(orphan_list)},
        schema={"gene": pl.String, "reason": pl.String},
    )
    parts = PartNames(tuple(f"{g}{BETADATA_SUFFIX}" for g in genes), f"*{BETADATA_SUFFIX}")
    with OutputLock(out):
        _refuse_legacy_run(out, resume, overwrite)
        sink = BatchSink(out, params, resume=resume, overwrite=overwrite, parts=parts)
        pjson = sink.params_json
        man = out / MANIFEST
        summary = {"params": json.loads(pjson), "genes": genes, "orphans": orphan_json}
        _atomic_json(man, {**summary, "status": "running"})
        todo = sink.pending(range(len(genes)))
        if len(todo) < len(genes):
            log.info("resuming %s: %d of %d genes already trained", out, len(genes) - len(todo), len(genes))
        key = f"fit-{id(adata)}-{os.getpid()}-{pjson.__hash__()}"
        spec = {
            "key": key,
            "adata": str(adata) if is_path(adata) else (t if local else None),
            "lr": str(lr) if is_path(lr) else lr,
            "grn": str(grn) if is_path(grn) else grn,
            "ligand_target": str(ligand_target) if is_path(ligand_target) else ligand_target,
            "cell_thresholds": str(cell_thresholds) if is_path(cell_thresholds) else None,
            "params": params,
        }
        if local:
            spec["local"] = (thr, levels)
            _CTX.clear()
        tasks = [
            {
                "spec": spec,
                "gene": genes[b],
                "batch": b,
                "file": parts.names[b],
                "out": str(sink.path),
                "params_json": pjson,
            }
            for b in todo
        ]
        rows = []
        cluster_labels = t.require_clusters()[1]
        try:
            for res in run_tasks(_train_task, tasks, executor=executor, progress=progress, description="stlr fit"):
                sink.record(res["part"])
                for c, r2, it, conv, held, nc, zeroed in res["diag"]:
                    rows.append((res["gene"], cluster_labels[c], r2, res["n_modulators"], it, conv, held, nc, zeroed))
        finally:
            if local:
                _CTX.clear()
        sink.finalize(n_batches=len(genes), metadata={"stlr.fit": {"genes": len(genes), "orphans": orphan_list}})
        _atomic_json(
            man,
            {
                **summary,
                "status": "done",
                "r2": {g: {c: r for gg, c, r, *_ in rows if gg == g} for g in (genes[b] for b in todo)},
                "cv_r2": {g: {r[1]: r[6] for r in rows if r[0] == g} for g in (genes[b] for b in todo)},
                "zeroed": {g: [r[1] for r in rows if r[0] == g and r[8]] for g in (genes[b] for b in todo)},
            },
        )
    scores = pl.DataFrame(
        rows,
        schema={
            "gene": pl.String,
            "cluster": pl.String,
            "r2": pl.Float64,
            "n_modulators": pl.Int64,
            "n_iter": pl.Int64,
            "converged": pl.Boolean,
            "cv_r2": pl.Float64,
            "n_cells": pl.Int64,
            "zeroed": pl.Boolean,
        },
        orient="row",
    )
    report_fit(scores, float(min_r2))
    losses = read_losses(out, genes) if cnn.training_mode != "seed" else pl.DataFrame(schema=LOSS_SCHEMA)
    return FitResult(out=out, genes=genes, scores=scores, orphans=orphan_list, skipped=skipped, losses=losses)
