"""Splash: per-cell derivatives of a trained gene with respect to each modulator gene.

For target gene y with betas beta (per cell, or per cluster mapped to cells):

    dy/dTF        = beta_TF
    dy/dR         = beta_{L$R} * wL_L * bsf        where the receptor's expression is > 0
    dy/dL (LR)    = beta_{L$R} * R * bsf
    dy/dL (TFL)   = beta_{L#T} * T * bsf
    dy/dT (TFL)   = beta_{L#T} * wL_tfl_L * bsf

summed per modulator gene and clipped to +/- ``beta_cap``; ``bsf`` = ``beta_scale_factor``.
Expression is the filtered expression (values <= 1e-9 set to 0), received ligands ``wL`` come
from :func:`polgen.stlr.received_ligands`.  Output columns: ``beta_<gene>`` sorted by code point
(the reference's order), after a ``CellID`` column.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from polgen.errors import InputError
from polgen.options import LigandMode
from polgen.schema import BETA_PREFIX, CELL_ID
from polgen.stlr.betadata import Betabase, BetaData, betadata_from_frame, read_betadata
from polgen.stlr.tissue import as_tissue, filtered, received_for, run_thresholds

log = logging.getLogger("polgen")


@dataclass
class SplashPlan:
    """Flattened betadata of several genes for the splash / propagate kernels."""

    genes: list[str]
    kout: np.ndarray
    ligands: list[str]
    bvals: np.ndarray
    boff: np.ndarray
    bncol: np.ndarray
    rowmaps: np.ndarray
    rmap: np.ndarray
    moff: np.ndarray
    mgene: np.ndarray
    toff: np.ndarray
    tkind: np.ndarray
    tcol: np.ndarray
    tslot: np.ndarray
    tsrc: np.ndarray
    tcond: np.ndarray
    maxmod: int
    modulators: list[list[str]]

    def args(self):
        return (self.bvals, self.boff, self.bncol, self.rowmaps, self.rmap, self.moff)


def build_plan(
    base: Betabase,
    var_names: Sequence[str],
    obs_names: Sequence[str],
    clusters: np.ndarray | None = None,
    cluster_labels: Sequence[str] | None = None,
    genes: Sequence[str] | None = None,
    skip_zero: bool = False,
) -> SplashPlan:
    """Resolve every name to an index once; betadata modulators must be in ``var_names``."""
    gidx = {g: i for i, g in enumerate(var_names)}
    if genes is None:
        genes = [g for g in base.genes if g in gidx]
        dropped = [g for g in base.genes if g not in gidx]
        if dropped:
            log.warning("betadata of %d gene(s) not in var_names ignored: %s", len(dropped), dropped[:10])
    else:
        missing = [g for g in genes if g not in gidx]
        if missing:
            raise InputError(f"trained gene(s) not in var_names: {missing[:10]}")
    bds: list[BetaData] = [base[g] for g in genes]
    if skip_zero:
        bds = [bd for bd in bds if not bd.is_zero]
    for bd in bds:
        miss = [m for m in bd.modulators if m not in gidx]
        if miss:
            raise InputError(
                f"betadata of {bd.gene} uses {len(miss)} modulator gene(s) not in var_names: {miss[:10]}", path=bd.path
            )
    ligands = sorted({lig for bd in bds for lig in bd.ligands + bd.tfl_ligands})
    lidx = {l: i for i, l in enumerate(ligands)}
    maps: dict[tuple, int] = {}
    rowmaps: list[np.ndarray] = []
    bvals, boff, bncol, rmap, moff = [], [0], [], [], [0]
    mgene: list[int] = []  # gene index of each modulator, betadata after betadata
    toff, tkind, tcol, tslot, tsrc, tcond = [0], [], [], [], [], []
    mods_all = []
    off = 0
    for bd in bds:
        key = (bd.id_kind, tuple(bd.ids))
        if key not in maps:
            maps[key] = len(rowmaps)
            rowmaps.append(bd.row_map(obs_names, clusters, cluster_labels))
        rmap.append(maps[key])
        bvals.append(bd.values.ravel())
        off += bd.values.size
        boff.append(off)
        bncol.append(bd.values.shape[1])
        mods = bd.modulators
        mods_all.append(mods)
        slot = {m: moff[-1] + s for s, m in enumerate(mods)}
        mgene.extend(gidx[m] for m in mods)
        moff.append(moff[-1] + len(mods))
        # terms in the reference's concat order: receptor, LR ligand, TFL ligand, TF, TFL regulator
        for (lig, rec), c in zip(bd.lr_pairs, bd.lr_cols):
            tkind.append(1)
            tcol.append(c)
            tslot.append(slot[rec])
            tsrc.append(lidx[lig])
            tcond.append(gidx[rec])
        for (lig, rec), c in zip(bd.lr_pairs, bd.lr_cols):
            tkind.append(2)
            tcol.append(c)
            tslot.append(slot[lig])
            tsrc.append(gidx[rec])
            tcond.append(-1)
        for (lig, reg), c in zip(bd.tfl_pairs, bd.tfl_cols):
            tkind.append(3)
            tcol.append(c)
            tslot.append(slot[lig])
            tsrc.append(gidx[reg])
            tcond.append(-1)
        for tf, c in zip(bd.tfs, bd.tf_cols):
            tkind.append(0)
            tcol.append(c)
            tslot.append(slot[tf])
            tsrc.append(-1)
            tcond.append(-1)
        for (lig, reg), c in zip(bd.tfl_pairs, bd.tfl_cols):
            tkind.append(4)
            tcol.append(c)
            tslot.append(slot[reg])
            tsrc.append(lidx[lig])
            tcond.append(-1)
        toff.append(len(tkind))
    i64 = lambda v: np.ascontiguousarray(np.asarray(v, dtype=np.int64))  # noqa: E731
    n = len(obs_names)
    return SplashPlan(
        genes=[bd.gene for bd in bds],
        kout=i64([gidx[bd.gene] for bd in bds]),
        ligands=ligands,
        bvals=np.ascontiguousarray(np.concatenate(bvals) if bvals else np.zeros(0)),
        boff=i64(boff[:-1]) if bds else i64([]),
        bncol=i64(bncol),
        rowmaps=np.ascontiguousarray(np.stack(rowmaps) if rowmaps else np.zeros((1, n), dtype=np.int64)),
        rmap=i64(rmap),
        moff=i64(moff),
        mgene=i64(mgene),
        toff=i64(toff),
        tkind=i64(tkind),
        tcol=i64(tcol),
        tslot=i64(tslot),
        tsrc=i64(tsrc),
        tcond=i64(tcond),
        maxmod=max([len(m) for m in mods_all], default=1),
        modulators=mods_all,
    )


def _cap(beta_cap) -> float:
    if beta_cap is None:
        return np.inf
    cap = float(beta_cap)
    if not cap > 0:
        raise InputError("beta_cap must be positive (or None)")
    return cap


def splash_plan_gene(
    plan: SplashPlan,
    k: int,
    gexf: np.ndarray,
    wl: np.ndarray,
    wl_tfl: np.ndarray,
    beta_scale_factor: float = 1.0,
    beta_cap: float | None = None,
) -> np.ndarray:
    """Splash matrix (cells x sorted modulators) of the plan's k-th gene."""
    from polgen.kernels.splash import splash_gene

    nm = int(plan.moff[k + 1] - plan.moff[k])
    out = np.empty((gexf.shape[0], nm))
    splash_gene(
        k,
        plan.bvals,
        plan.boff,
        plan.bncol,
        plan.rowmaps,
        plan.rmap,
        plan.moff,
        plan.toff,
        plan.tkind,
        plan.tcol,
        plan.tslot,
        plan.tsrc,
        plan.tcond,
        gexf,
        wl,
        wl_tfl,
        float(beta_scale_factor),
        _cap(beta_cap),
        out,
    )
    return out


def propagate(plan: SplashPlan, gexf, wl, wl_tfl, delta, out, beta_scale_factor=1.0, beta_cap=None):
    """out[:, g] = sum over modulators of splash_g * delta for trained g; 0 elsewhere."""
    from polgen.kernels.splash import propagate as _prop

    nz = np.flatnonzero((delta != 0).any(axis=0)) if delta.size else np.zeros(0, dtype=np.int64)
    changed = np.zeros(delta.shape[1] if delta.ndim == 2 else 0, dtype=bool)
    changed[nz] = True
    cs = np.concatenate([[0], np.cumsum(changed[plan.mgene].astype(np.int64))])
    active = (cs[plan.moff[1:]] - cs[plan.moff[:-1]]).astype(np.int64)
    _prop(
        plan.bvals,
        plan.boff,
        plan.bncol,
        plan.rowmaps,
        plan.rmap,
        plan.moff,
        plan.mgene,
        plan.toff,
        plan.tkind,
        plan.tcol,
        plan.tslot,
        plan.tsrc,
        plan.tcond,
        gexf,
        wl,
        wl_tfl,
        float(beta_scale_factor),
        _cap(beta_cap),
        plan.kout,
        delta,
        out,
        int(plan.maxmod),
        np.ascontiguousarray(active),
    )
    return out


def _ligand_matrix(received, ligands: list[str], required: set[str], n: int, what: str) -> np.ndarray:
    """(n, len(ligands)) matrix of received ligands; ``required`` ligands must be present."""
    out = np.zeros((n, len(ligands)))
    if not required:
        return out
    if received is None:
        raise InputError(f"{what} received ligands are needed for ligands {sorted(required)[:5]}")
    if isinstance(received, Mapping):
        cols = received
    elif isinstance(received, pl.DataFrame):
        cols = {c: received[c].to_numpy() for c in received.columns}
    else:
        try:
            import pandas as pd

            if isinstance(received, pd.DataFrame):
                cols = {str(c): received[c].to_numpy() for c in received.columns}
            else:
                raise TypeError
        except (ImportError, TypeError):
            raise InputError(f"{what} received ligands must be a frame or a {{ligand: vector}} mapping") from None
    for j, lig in enumerate(ligands):
        if lig not in cols:
            if lig in required:
                raise InputError(f"{what} received ligands lack ligand {lig!r}", column=lig)
            continue
        v = np.asarray(cols[lig], dtype=np.float64)
        if v.shape != (n,):
            raise InputError(f"{what} received ligand {lig!r} has {v.shape[0]} values for {n} cells", column=lig)
        out[:, j] = v
    return out


def splash(
    betadata,
    adata=None,
    *,
    gene: str | None = None,
    layer: str | None = None,
    cluster_key=None,
    spatial_key=None,
    lr=None,
    radius: float = 200.0,
    contact_distance: float = 50.0,
    scale_factor: float = 1.0,
    beta_scale_factor: float = 1.0,
    beta_cap: float | None = None,
    received=None,
    received_tfl=None,
    mode: LigandMode = "exact",
    expr=None,
    var_names: Sequence[str] | None = None,
    obs_names: Sequence[str] | None = None,
    clusters: np.ndarray | None = None,
    cluster_labels: Sequence[str] | None = None,
    cell_thresholds=None,
) -> pl.DataFrame:
    """Splash one gene's betadata over the cells of ``adata``.

    ``betadata``: a :class:`BetaData`, a betadata file, or a frame in betadata layout (then
    ``gene`` names its target).  Cells and expression come from ``adata`` (AnnData, .h5ad path
    or :class:`~polgen.io.spatial.SpatialData`; ``layer`` defaults to ``imputed_count`` when
    present) or from ``expr`` (cells x genes) + ``var_names`` + ``obs_names`` (+ ``clusters`` /
    ``cluster_labels`` for per-cluster betadata).  Received ligands are ``received`` /
    ``received_tfl`` (frames or ``{ligand: vector}``; TFL defaults to ``received``) or computed with
    ``lr`` (a CellChat table or path), ``radius``, ``contact_distance``, ``scale_factor``, ``mode``.
    Returns ``CellID`` + ``beta_<modulator>`` columns sorted by code point.

    ``cell_thresholds`` (a cells x genes frame or parquet / csv path; None reads
    ``adata.uns["cell_thresholds"]`` when present, False ignores it) masks the expression splash
    sees, and the LR ligands' sending expression when the received ligands are computed here, as
    the reference's ``splash_betas``: genes absent from the table are masked out (filled with 0,
    unlike ``perturb`` which fills with 1); TF-ligand received ligands stay unmasked.
    """
    if isinstance(betadata, BetaData):
        bd = betadata
    elif isinstance(betadata, (str, bytes)) or hasattr(betadata, "__fspath__"):
        bd = read_betadata(betadata)
    else:
        bd = betadata_from_frame(gene or "target", betadata)
    if adata is not None:
        t = as_tissue(
            adata, layer=layer, cluster_key=cluster_key, spatial_key=spatial_key, need_clusters=bd.id_kind != CELL_ID
        )
        X, var_names, obs_names = t.X, t.var_names, t.obs_names
        clusters, cluster_labels, coords = t.clusters, t.cluster_labels, t.coords
    else:
        if expr is None or var_names is None or obs_names is None:
            raise InputError("pass adata, or expr with var_names and obs_names")
        X = np.ascontiguousarray(np.asarray(expr, dtype=np.float64))
        coords = None
    mask = None
    if cell_thresholds is not False:
        if cell_thresholds is True:
            cell_thresholds = None
        if cell_thresholds is not None or adata is not None:
            thr = run_thresholds(cell_thresholds, adata, list(obs_names), None)
            if thr is not None:
                mask = thr.mask(list(var_names), fill=0.0)
    gnames = list(var_names) if bd.gene in var_names else list(var_names) + [bd.gene]
    plan = build_plan(Betabase([bd]), gnames, list(obs_names), clusters, cluster_labels)
    n = len(obs_names)
    lr_ligs = sorted(set(bd.ligands))
    tfl_ligs = sorted(set(bd.tfl_ligands))
    if received is None and (lr_ligs or tfl_ligs):
        if lr is None or coords is None:
            raise InputError("splash needs received= ligands, or adata with lr= (a CellChat table) to compute them")
        W = received_for(coords, X, list(var_names), plan.ligands, lr, radius, contact_distance, scale_factor, mode)
        if mask is not None:
            if received_tfl is None:
                received_tfl = {l: W[:, j] for j, l in enumerate(plan.ligands)}
            W = received_for(
                coords, X * mask, list(var_names), plan.ligands, lr, radius, contact_distance, scale_factor, mode
            )
        received = {l: W[:, j] for j, l in enumerate(plan.ligands)}
    if received_tfl is None:
        received_tfl = received
    wl = _ligand_matrix(received, plan.ligands, set(lr_ligs), n, "LR")
    wl_tfl = _ligand_matrix(received_tfl, plan.ligands, set(tfl_ligs), n, "TFL")
    gexf = filtered(X)
    if mask is not None:
        gexf *= mask
    S = splash_plan_gene(
        plan, 0, gexf, np.ascontiguousarray(wl), np.ascontiguousarray(wl_tfl), beta_scale_factor, beta_cap
    )
    data = {CELL_ID: pl.Series(CELL_ID, list(obs_names), dtype=pl.String)}
    for j, m in enumerate(plan.modulators[0]):
        data[f"{BETA_PREFIX}{m}"] = pl.Series(f"{BETA_PREFIX}{m}", S[:, j])
    return pl.DataFrame(data)
