"""Modulators and design matrices of SpaceTravLR's per-gene models (reference rules).

For a target gene:

* TF modulators: its regulators in the GRN (in var_names, not the target itself), sorted;
* LR pairs: expanded CellChat pairs with both genes in var_names whose receptor's largest
  cluster-mean expression exceeds ``receptor_thresh``, without pairs that involve the target,
  first occurrence of each ``L$R``;
* TFL pairs: for each regulator in the ligand-target matrix, its top 5 LR ligands (ties: first
  column first) with a score above ``tf_ligand_cutoff``.

Design columns, in order ``beta_<TF>..., beta_<L>$<R>..., beta_<L>#<TF>...`` (groups 1, 2, 3):
TF expression; received ligand x filtered receptor expression; received ligand x regulator
expression.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from polgen.stlr.grn import ligand_radii, lr_table, regulators as grn_regulators
from polgen.stlr.splash import MIN_EXPRESSION, filtered


@dataclass
class GeneModulators:
    target: str
    regulators: list[str]
    lr_pairs: list[tuple[str, str]]
    tfl_pairs: list[tuple[str, str]]

    @property
    def names(self) -> list[str]:
        return ([f"beta_{t}" for t in self.regulators] + [f"beta_{a}${b}" for a, b in self.lr_pairs]
                + [f"beta_{a}#{b}" for a, b in self.tfl_pairs])

    @property
    def groups(self) -> np.ndarray:
        return np.array([1] * len(self.regulators) + [2] * len(self.lr_pairs) + [3] * len(self.tfl_pairs),
                        dtype=np.int64)


@dataclass
class FeatureContext:
    """Everything shared by all target genes of one training run."""

    X: np.ndarray
    var_names: list[str]
    clusters: np.ndarray
    n_clusters: int
    lr: pl.DataFrame  # expanded, both genes in var_names, with radius
    links: pl.DataFrame
    W: np.ndarray  # received ligands (n x len(ligands))
    ligands: list[str]
    receptor_thresh: float = 0.01
    tf_ligand_cutoff: float = 0.01
    ligand_target: tuple[np.ndarray, list[str], list[str]] | None = None
    gidx: dict = field(init=False)
    lidx: dict = field(init=False)
    receptor_ok: set = field(init=False)

    def __post_init__(self) -> None:
        self.gidx = {g: i for i, g in enumerate(self.var_names)}
        self.lidx = {l: i for i, l in enumerate(self.ligands)}
        recs = sorted(set(self.lr["receptor"].to_list()))
        ok = set()
        if recs:
            cols = [self.gidx[r] for r in recs]
            sums = np.zeros((self.n_clusters, len(cols)))
            np.add.at(sums, self.clusters, self.X[:, cols])
            counts = np.bincount(self.clusters, minlength=self.n_clusters).astype(np.float64)
            means = sums[counts > 0] / counts[counts > 0, None]
            mx = means.max(axis=0)
            ok = {r for r, m in zip(recs, mx) if m > self.receptor_thresh}
        self.receptor_ok = ok
        self._gexf = filtered(self.X, MIN_EXPRESSION)

    def modulators(self, target: str) -> GeneModulators:
        regs = grn_regulators(self.links, target, self.var_names)
        lr = self.lr.filter(pl.col("receptor").is_in(pl.Series(sorted(self.receptor_ok), dtype=pl.String).implode())
                            & (pl.col("receptor") != target) & (pl.col("ligand") != target))
        pairs, seen = [], set()
        for lig, rec in zip(lr["ligand"].to_list(), lr["receptor"].to_list()):
            if (lig, rec) not in seen:
                seen.add((lig, rec))
                pairs.append((lig, rec))
        tfl = []
        if self.ligand_target is not None and regs and pairs:
            vals, rows, cols = self.ligand_target
            lr_ligs = {a for a, _ in pairs}
            rpos = {r: i for i, r in enumerate(rows)}
            cpos = {c: j for j, c in enumerate(cols)}
            rsel = sorted(set(rows) & set(regs))
            csel = sorted(set(cols) & lr_ligs)
            if rsel and csel:
                sub = vals[np.ix_([rpos[r] for r in rsel], [cpos[c] for c in csel])]
                for i, tf in enumerate(rsel):
                    order = np.argsort(-sub[i], kind="stable")[:5]
                    for j in order:
                        if sub[i, j] > self.tf_ligand_cutoff:
                            tfl.append((csel[j], tf))
        return GeneModulators(target, regs, pairs, tfl)

    def design(self, mods: GeneModulators) -> np.ndarray:
        n = self.X.shape[0]
        p = len(mods.regulators) + len(mods.lr_pairs) + len(mods.tfl_pairs)
        D = np.empty((n, p))
        k = 0
        for t in mods.regulators:
            D[:, k] = self.X[:, self.gidx[t]]
            k += 1
        for lig, rec in mods.lr_pairs:
            D[:, k] = self.W[:, self.lidx[lig]] * self._gexf[:, self.gidx[rec]]
            k += 1
        for lig, reg in mods.tfl_pairs:
            D[:, k] = self.W[:, self.lidx[lig]] * self.X[:, self.gidx[reg]]
            k += 1
        return D


def build_context(X, var_names, coords, clusters, n_clusters, lr, links, *, radius=200.0,
                  contact_distance=50.0, scale_factor=1.0, mode="exact", receptor_thresh=0.01,
                  tf_ligand_cutoff=0.01, ligand_target=None) -> FeatureContext:
    """Expand the LR table, compute received ligands of every LR ligand once, and bundle it all."""
    from polgen.stlr.perturb import _received_cols

    lrt = lr_table(lr, var_names, radius, contact_distance)
    radii_map = ligand_radii(lrt)
    ligands = sorted(radii_map)
    gidx = {g: i for i, g in enumerate(var_names)}
    if ligands:
        Xf = filtered(X[:, [gidx[l] for l in ligands]])
        W = _received_cols(coords, Xf, np.array([radii_map[l] for l in ligands]), scale_factor, mode)
    else:
        W = np.zeros((X.shape[0], 0))
    return FeatureContext(X=X, var_names=list(var_names), clusters=clusters, n_clusters=n_clusters, lr=lrt,
                          links=links, W=W, ligands=ligands, receptor_thresh=receptor_thresh,
                          tf_ligand_cutoff=tf_ligand_cutoff, ligand_target=ligand_target)
