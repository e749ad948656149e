"""Deterministic synthetic tissues, networks and betadata for tests, benchmarks and the demo.

Genes are named by role: ``Tf000`` (transcription factors), ``Lig000`` (ligands), ``Rec000``
(receptors), ``Gene000`` (other targets).  The ligand-receptor table is CellChat-shaped (with a
few complexes joined by ``_``), the GRN a long links table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from polgen.schema import CELL_ID, CLUSTER
from polgen.stlr.betadata import Betabase, BetaData


@dataclass
class SyntheticTissue:
    coords: np.ndarray
    X: np.ndarray
    var_names: list[str]
    obs_names: list[str]
    clusters: np.ndarray
    cluster_labels: list[str]
    lr: pl.DataFrame
    links: pl.DataFrame
    tfs: list[str]
    ligands: list[str]
    receptors: list[str]

    def to_anndata(self, layer: str | None = "imputed_count"):
        import anndata as ad
        import pandas as pd

        obs = pd.DataFrame(
            {
                "cell_type": pd.Categorical(
                    [self.cluster_labels[c] for c in self.clusters], categories=self.cluster_labels
                )
            },
            index=pd.Index(self.obs_names),
        )
        a = ad.AnnData(X=self.X.copy(), obs=obs, var=pd.DataFrame(index=pd.Index(self.var_names)))
        a.obsm["spatial"] = self.coords.copy()
        if layer:
            a.layers[layer] = self.X.copy()
        return a


def make_tissue(
    n_cells: int = 300,
    n_genes: int = 40,
    n_clusters: int = 3,
    seed: int = 0,
    extent: float | None = None,
    n_tfs: int | None = None,
    n_ligands: int | None = None,
    n_receptors: int | None = None,
    sparsity: float = 0.3,
) -> SyntheticTissue:
    """Cells on a square (side ``extent``, default ~ 30 * sqrt(n)) in spatial cluster blobs."""
    rng = np.random.default_rng(seed)
    n_tfs = n_tfs or max(2, n_genes // 5)
    n_ligands = n_ligands or max(2, n_genes // 6)
    n_receptors = n_receptors or max(2, n_genes // 6)
    n_other = n_genes - n_tfs - n_ligands - n_receptors
    if n_other < 1:
        raise ValueError("n_genes too small for the requested roles")
    tfs = [f"Tf{i:03d}" for i in range(n_tfs)]
    ligs = [f"Lig{i:03d}" for i in range(n_ligands)]
    recs = [f"Rec{i:03d}" for i in range(n_receptors)]
    others = [f"Gene{i:03d}" for i in range(n_other)]
    var_names = tfs + ligs + recs + others
    extent = float(extent if extent is not None else 30.0 * np.sqrt(n_cells))
    coords = rng.uniform(0, extent, size=(n_cells, 2))
    centers = rng.uniform(0, extent, size=(n_clusters, 2))
    d = ((coords[:, None, :] - centers[None]) ** 2).sum(-1)
    clusters = np.argmin(d, axis=1).astype(np.int64)
    labels = [f"ct{c}" for c in range(n_clusters)]
    base = rng.gamma(2.0, 1.0, size=(n_clusters, n_genes))
    X = rng.gamma(2.0, 0.5, size=(n_cells, n_genes)) * base[clusters]
    X[rng.random(X.shape) < sparsity] = 0.0
    X = np.round(X, 6)
    # CellChat-like LR table: secreted and contact rows, some complexes
    rows = []
    for i, lig in enumerate(ligs):
        r1 = recs[i % n_receptors]
        r2 = recs[(i + 1) % n_receptors]
        sig = "Secreted Signaling" if i % 3 != 2 else ("Cell-Cell Contact" if i % 2 else "ECM-Receptor")
        rows.append((lig, r1, f"P{i}", sig))
        if i % 4 == 1:
            rows.append((lig, f"{r1}_{r2}", f"P{i}", sig))
        if i % 5 == 3:  # a later contact row for a secreted ligand: the first row's radius wins
            rows.append((lig, r2, f"P{i}", "Cell-Cell Contact"))
    rows.append(("NotAGene_" + ligs[0], recs[0], "Px", "Secreted Signaling"))
    lr = pl.DataFrame(rows, schema=["ligand", "receptor", "pathway", "signaling"], orient="row")
    # GRN links: each non-TF gene regulated by 2-4 TFs
    src, tgt = [], []
    for g in var_names:
        k = int(rng.integers(2, 5))
        for tf in rng.choice(tfs, size=min(k, n_tfs), replace=False):
            if tf != g:
                src.append(str(tf))
                tgt.append(g)
    links = pl.DataFrame({"source": src, "target": tgt})
    return SyntheticTissue(
        coords=coords,
        X=X,
        var_names=var_names,
        obs_names=[f"cell{i:06d}" for i in range(n_cells)],
        clusters=clusters,
        cluster_labels=labels,
        lr=lr,
        links=links,
        tfs=tfs,
        ligands=ligs,
        receptors=recs,
    )


def make_betabase(
    t: SyntheticTissue,
    n_trained: int = 10,
    seed: int = 1,
    per_cell: bool = False,
    n_tf: int = 3,
    n_lr: int = 3,
    n_tfl: int = 2,
    scale: float = 0.3,
    zero_cluster: bool = True,
) -> Betabase:
    """Random betadata for ``n_trained`` genes (TF, LR and TFL terms), per cluster or per cell."""
    rng = np.random.default_rng(seed)
    genes = list(t.var_names)
    # a ligand, a receptor and a TF are always trained so perturbations propagate through them
    first = [t.ligands[0], t.receptors[0], t.tfs[0]]
    rest = [g for g in genes if g not in first]
    trained = first + [str(g) for g in rng.choice(rest, size=max(0, min(n_trained, len(genes)) - 3), replace=False)]
    frames = []
    for g in trained:
        tf = [x for x in rng.choice(t.tfs, size=min(n_tf, len(t.tfs)), replace=False) if x != g]
        pairs = []
        for _ in range(n_lr):
            lig = str(rng.choice(t.ligands))
            rec = str(rng.choice(t.receptors))
            if g not in (lig, rec) and (lig, rec) not in pairs:
                pairs.append((lig, rec))
        tfl = []
        for _ in range(n_tfl):
            lig = str(rng.choice(t.ligands))
            reg = str(rng.choice(t.tfs))
            if g not in (lig, reg) and (lig, reg) not in tfl:
                tfl.append((lig, reg))
        cols = (
            ["beta0"]
            + [f"beta_{x}" for x in tf]
            + [f"beta_{a}${b}" for a, b in pairs]
            + [f"beta_{a}#{b}" for a, b in tfl]
        )
        if per_cell:
            ids = list(t.obs_names)
            base = rng.normal(0, scale, size=(len(t.cluster_labels), len(cols)))
            vals = base[t.clusters] + rng.normal(0, scale / 5, size=(len(ids), len(cols)))
            kind = CELL_ID
        else:
            ids = list(t.cluster_labels)
            vals = rng.normal(0, scale, size=(len(ids), len(cols)))
            if zero_cluster and len(ids) > 1:
                vals[-1] = 0.0
            kind = CLUSTER
        frames.append(BetaData(gene=g, id_kind=kind, ids=ids, columns=cols, values=vals))
    return Betabase(frames)
