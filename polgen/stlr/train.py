"""Training: one sparse-group-lasso model per (target gene, cluster), all genes through the engine.

``fit`` writes ``{gene}_betadata.parquet`` (first column ``Cluster``, then ``beta0`` and the
``beta_*`` modulators; run parameters and per-cluster R^2 in the parquet metadata) for every
gene, atomically, plus ``stlr_run.json`` (every parameter, the genes, their R^2).  A cluster whose
in-sample R^2 is below ``min_r2`` (0.15, the reference's rule) gets all-zero betas.  Re-running
with ``resume=True`` skips genes whose file already holds the same parameters.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import polars as pl

from polgen.errors import InputError, OutputExistsError, ResumeError
from polgen.schema import CLUSTER
from polgen.stlr.betadata import BetaData, write_betadata

log = logging.getLogger("polgen")

MANIFEST = "stlr_run.json"
GENE_LOG = "stlr_genes.jsonl"  # one line per trained gene: file size and sha256, appended as genes finish
META_PARAMS = "polgen.params"
META_R2 = "polgen.stlr.r2"


@dataclass
class FitResult:
    out: Path
    genes: list[str]
    scores: pl.DataFrame  # gene, cluster, r2, n_modulators, n_iter, converged

    @property
    def files(self) -> list[Path]:
        return [self.out / f"{g}_betadata.parquet" for g in self.genes]


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def fit_gene(ctx, gene: str, cluster_labels: Sequence[str], *, group_reg: float, l1_reg: float,
             min_r2: float, max_iter: int, tol: float):
    """Betas (clusters x (1 + p)) of one gene and per-cluster diagnostics."""
    from polgen.stlr.lasso import sparse_group_lasso

    mods = ctx.modulators(gene)
    D = ctx.design(mods)
    y = ctx.X[:, ctx.gidx[gene]]
    groups = mods.groups
    C = len(cluster_labels)
    B = np.zeros((C, 1 + D.shape[1]))
    diag = []
    for c in range(C):
        m = ctx.clusters == c
        if m.sum() < 2:
            diag.append((c, float("nan"), 0, False))
            continue
        fitc = sparse_group_lasso(D[m], y[m], groups, group_reg, l1_reg, max_iter=max_iter, tol=tol)
        if fitc.r2 >= min_r2:
            B[c, 0] = fitc.intercept
            B[c, 1:] = fitc.coef
        diag.append((c, fitc.r2, fitc.n_iter, fitc.converged))
    bd = BetaData(gene=gene, id_kind=CLUSTER, ids=list(cluster_labels), columns=["beta0"] + mods.names, values=B)
    return bd, diag, len(mods.names)


# -- engine task --------------------------------------------------------------------------------
_CTX: dict[str, tuple] = {}


def _prepare(spec: dict):
    key = spec["key"]
    hit = _CTX.get(key)
    if hit is not None:
        return hit
    from polgen.stlr._data import as_tissue
    from polgen.stlr.features import build_context
    from polgen.stlr.grn import as_links, read_cellchat, read_ligand_target

    p = spec["params"]
    t = as_tissue(spec["adata"], layer=p["layer"], cluster_key=p["cluster_key"], spatial_key=p["spatial_key"])
    lr = read_cellchat(spec["lr"]) if isinstance(spec["lr"], str) else spec["lr"]
    lt = spec.get("ligand_target")
    lt = read_ligand_target(lt) if lt is not None else None
    ctx = build_context(t.X, t.var_names, t.coords, t.clusters, len(t.cluster_labels), lr, as_links(spec["grn"]),
                        radius=p["radius"], contact_distance=p["contact_distance"], scale_factor=p["scale_factor"],
                        mode=p["mode"], receptor_thresh=p["receptor_thresh"],
                        tf_ligand_cutoff=p["tf_ligand_cutoff"], ligand_target=lt)
    _CTX.clear()
    _CTX[key] = (ctx, t.cluster_labels)
    return _CTX[key]


def _train_task(task: dict) -> dict:
    from polgen._blas import single_threaded_blas

    # Single-threaded BLAS: multi-threaded OpenBLAS reductions change the last bits with the thread
    # count, and betas must be bit-identical locally, on Dask workers and after a resume.
    with single_threaded_blas():
        ctx, labels = _prepare(task["spec"])
        p = task["spec"]["params"]
        bd, diag, nmod = fit_gene(ctx, task["gene"], labels, group_reg=p["group_reg"], l1_reg=p["l1_reg"],
                                  min_r2=p["min_r2"], max_iter=p["max_iter"], tol=p["tol"])
    meta = {META_PARAMS: task["params_json"],
            META_R2: json.dumps({labels[c]: r2 for c, r2, _, _ in diag})}
    out = Path(task["out"]) / f"{task['gene']}_betadata.parquet"
    write_betadata(bd, out, meta)
    return {"gene": task["gene"], "diag": diag, "n_modulators": nmod, "bytes": out.stat().st_size,
            "sha256": _sha256(out)}


def _sha256(path: Path) -> str:
    from polgen.io.sink import sha256_file

    return sha256_file(path)


def _read_gene_log(path: Path) -> dict[str, dict]:
    """{gene: record} from the append-only gene log; torn or foreign lines are ignored."""
    recs: dict[str, dict] = {}
    if not path.exists():
        return recs
    for line in path.read_bytes().split(b"\n"):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and {"gene", "bytes", "sha256"} <= set(r):
            recs[str(r["gene"])] = r
    return recs


def _append_gene_log(path: Path, rec: dict) -> None:
    with open(path, "ab") as fh:
        fh.write((json.dumps(rec, sort_keys=True) + "\n").encode())
        fh.flush()
        os.fsync(fh.fileno())


def fit(adata, genes: Sequence[str] | None = None, *, out: str | os.PathLike, lr, grn,
        ligand_target=None, radius: float = 200.0, contact_distance: float = 50.0, scale_factor: float = 1.0,
        group_reg: float = 1e-7, l1_reg: float = 1e-9, receptor_thresh: float = 0.01,
        tf_ligand_cutoff: float = 0.01, min_r2: float = 0.15, max_iter: int = 5000, tol: float = 1e-10,
        mode: str = "exact", layer: str | None = None, cluster_key=None, spatial_key=None,
        resume: bool = False, overwrite: bool = False, executor=None, progress: bool | None = None) -> FitResult:
    """Train every gene in ``genes`` (default: all var_names) and write its betadata to ``out``.

    ``lr``: CellChat table (path or frame); ``grn``: TF links (long table, CellOracle base GRN,
    path, or ``{target: [TFs]}``); ``ligand_target``: optional NicheNet matrix (path or frame) for
    the ligand-TF pairs.  Genes are trained through :func:`polgen.engine.run_tasks` (``executor``:
    None = in this process; with a pool, ``adata``, ``lr``, ``grn`` must be paths, and a process
    pool should use the "spawn" start method - polars' thread pool does not survive fork).
    Results are identical whatever the executor.
    """
    from polgen.engine.executor import run_tasks
    from polgen.io.sink import params_to_json
    from polgen.stlr._data import as_tissue
    from polgen.stlr.ligands import MODES

    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    if not 0 <= min_r2 <= 1:
        raise InputError("min_r2 must be in [0, 1]")
    out = Path(out)
    local = executor is None or executor == "local"
    is_path = lambda v: isinstance(v, (str, os.PathLike))  # noqa: E731
    if not local and not all(v is None or is_path(v) or isinstance(v, Mapping) for v in (adata, lr, grn, ligand_target)):
        raise InputError("fit with an executor needs adata, lr, grn (and ligand_target) given as paths")
    t = as_tissue(adata, layer=layer, cluster_key=cluster_key, spatial_key=spatial_key)
    if genes is None:
        genes = list(t.var_names)
    else:
        genes = list(dict.fromkeys(genes))
        t.gene_index(genes)  # InputError naming genes absent from the AnnData
    params = {"method": "stlr.fit", "radius": float(radius), "contact_distance": float(contact_distance),
              "scale_factor": float(scale_factor), "group_reg": float(group_reg), "l1_reg": float(l1_reg),
              "receptor_thresh": float(receptor_thresh), "tf_ligand_cutoff": float(tf_ligand_cutoff),
              "min_r2": float(min_r2), "max_iter": int(max_iter), "tol": float(tol), "mode": mode,
              "layer": t.layer, "cluster_key": t.cluster_key, "spatial_key": spatial_key,
              "adata": str(adata) if is_path(adata) else "<AnnData>", "lr": str(lr) if is_path(lr) else "<table>",
              "grn": str(grn) if is_path(grn) else "<table>",
              "ligand_target": None if ligand_target is None else (str(ligand_target) if is_path(ligand_target) else "<table>"),
              "n_cells": len(t.obs_names), "n_genes": len(t.var_names), "clusters": t.cluster_labels}
    pjson = params_to_json(params)
    out.mkdir(parents=True, exist_ok=True)
    man = out / MANIFEST
    done: set[str] = set()
    if man.exists():
        prev = json.loads(man.read_text())
        if resume:
            if params_to_json(prev.get("params", {})) != pjson:
                raise ResumeError("the run in this directory used different parameters", path=man)
        elif not overwrite:
            raise OutputExistsError("output holds a previous stlr run; pass resume=True or overwrite=True", path=out)
    glog = out / GENE_LOG
    if resume:
        # a gene is done when the gene log records its file and the file still has that size and
        # sha256 (a damaged or foreign file is retrained) and holds this run's parameters
        from polgen.io.sink import read_metadata

        recs = _read_gene_log(glog)
        for g in genes:
            f = out / f"{g}_betadata.parquet"
            r = recs.get(g)
            if r is None or not f.exists() or f.stat().st_size != r["bytes"]:
                continue
            try:
                if _sha256(f) == r["sha256"] and read_metadata(f).get(META_PARAMS) == pjson:
                    done.add(g)
            except Exception:  # noqa: BLE001 - unreadable -> retrained
                pass
    else:
        glog.unlink(missing_ok=True)
    _atomic_json(man, {"params": json.loads(pjson), "genes": genes, "status": "running"})
    todo = [g for g in genes if g not in done]
    if done:
        log.info("resuming %s: %d of %d genes already trained", out, len(done), len(genes))
    key = f"fit-{id(adata)}-{os.getpid()}-{pjson.__hash__()}"
    spec = {"key": key, "adata": str(adata) if is_path(adata) else (t if local else None),
            "lr": str(lr) if is_path(lr) else lr, "grn": str(grn) if is_path(grn) else grn,
            "ligand_target": str(ligand_target) if is_path(ligand_target) else ligand_target,
            "params": params}
    if local:
        _CTX.clear()
    tasks = [{"spec": spec, "gene": g, "out": str(out), "params_json": pjson} for g in todo]
    rows = []
    try:
        for res in run_tasks(_train_task, tasks, executor=executor, progress=progress, description="stlr fit"):
            _append_gene_log(glog, {"gene": res["gene"], "bytes": res["bytes"], "sha256": res["sha256"]})
            for c, r2, it, conv in res["diag"]:
                rows.append((res["gene"], t.cluster_labels[c], r2, res["n_modulators"], it, conv))
    finally:
        if local:
            _CTX.clear()
    scores = pl.DataFrame(rows, schema={"gene": pl.String, "cluster": pl.String, "r2": pl.Float64,
                                        "n_modulators": pl.Int64, "n_iter": pl.Int64, "converged": pl.Boolean},
                          orient="row")
    _atomic_json(man, {"params": json.loads(pjson), "genes": genes, "status": "done",
                       "r2": {g: {c: r for gg, c, r, *_ in rows if gg == g} for g in todo}})
    return FitResult(out=out, genes=genes, scores=scores)
