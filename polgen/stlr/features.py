"""Modulators and design matrices of SpaceTravLR's per-gene models (reference rules).

For a target gene:

* TF modulators: its regulators in the GRN (in var_names, not the target itself), sorted;
* LR pairs: expanded CellChat pairs with both genes in var_names whose receptor's largest
  cluster-mean expression exceeds ``receptor_thresh``, without pairs that involve the target,
  first occurrence of each ``L$R``;
* TFL pairs: for each regulator in the ligand-target matrix, its top 5 LR ligands (ties: first
  column first) with a score above ``tf_ligand_cutoff``.  In a dataset of 1,000 genes or more
  (NicheNet rule of the reference's ``init_ligands_and_receptors``) a pair ``L#TF`` is also
  dropped when the GRN lists the target gene or TF among the regulators of the ligand L
  (regulators with the same ``p < alpha`` rule as the target's TFs); the top 5 are picked
  before this exclusion (no refill).  Below 1,000 genes nothing is excluded.

Design columns, in order ``beta_<TF>..., beta_<L>$<R>..., beta_<L>#<TF>...`` (groups 1, 2, 3):
TF expression; received ligand x filtered receptor expression; received ligand x regulator
expression.

Cell thresholds (the reference's ``adata.uns["cell_thresholds"]``, a cells x genes table whose
entries > 0 allow a gene in a cell; COMMOT derives it from per-cluster communication) mask
modulators as the reference's ``get_filtered_df`` does: the LR received ligands are computed
from ligand expression zeroed where the ligand's threshold is not > 0, and the receptor factor
of each ``L$R`` column is zeroed where the receptor's threshold is not > 0; genes absent from
the table count as not allowed (``fillna(0)``).  The TFL received ligands and the TF and TFL
regulator expression are not masked.  Without thresholds both received-ligand sets are the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from polgen.errors import InputError
from polgen.schema import BETA_PREFIX
from polgen.stlr.grn import expand_complexes, ligand_radii, lr_table, regulator_map
from polgen.stlr.grn import regulators as grn_regulators
from polgen.stlr.tissue import MIN_EXPRESSION, CellThresholds, filtered, received_columns

#: datasets with at least this many genes apply the NicheNet exclusion of TF-ligand pairs
NICHENET_MIN_GENES = 1000
#: why :func:`orphan_genes` leaves a gene untrained (the reference's ``.orphan`` genes)
ORPHAN_REASON = "orphan: no TF regulator in the GRN"


def orphan_genes(links: pl.DataFrame, genes: Sequence[str], var_names: Sequence[str], alpha: float = 0.05) -> list[str]:
    """The genes of ``genes`` with no TF regulator: the reference's orphans.

    SpaceTravLR 0.1.21 (``SpaceTravLR.run``) builds each gene's estimator and, when its
    ``regulators`` - the GRN's TFs of the gene that are in ``var_names``, other than the gene,
    with a link ``p < alpha`` (``get_regulators``) - are empty, marks the gene as an orphan and
    trains nothing for it, whatever its ligand-receptor or ligand-TF modulators.  Same rule as
    :meth:`FeatureContext.modulators` (``grn.regulators``), in one pass over the links.
    """
    want = pl.Series(list(genes), dtype=pl.String).implode()
    regs = regulator_map(links.filter(pl.col("target").is_in(want)), var_names, alpha)
    return [g for g in genes if not regs.get(g)]


@dataclass
class GeneModulators:
    target: str
    regulators: list[str]
    lr_pairs: list[tuple[str, str]]
    tfl_pairs: list[tuple[str, str]]

    @property
    def names(self) -> list[str]:
        return (
            [f"{BETA_PREFIX}{t}" for t in self.regulators]
            + [f"{BETA_PREFIX}{a}${b}" for a, b in self.lr_pairs]
            + [f"{BETA_PREFIX}{a}#{b}" for a, b in self.tfl_pairs]
        )

    @property
    def groups(self) -> np.ndarray:
        return np.array(
            [1] * len(self.regulators) + [2] * len(self.lr_pairs) + [3] * len(self.tfl_pairs), dtype=np.int64
        )


@dataclass
class FeatureContext:
    """Everything shared by all target genes of one training run."""

    X: np.ndarray
    var_names: list[str]
    clusters: np.ndarray
    n_clusters: int
    lr: pl.DataFrame  # expanded, both genes in var_names, with radius
    links: pl.DataFrame
    W: np.ndarray  # received ligands of the LR pairs (n x len(ligands)), threshold-masked
    ligands: list[str]
    receptor_thresh: float = 0.01
    tf_ligand_cutoff: float = 0.01
    ligand_target: tuple[np.ndarray, list[str], list[str]] | None = None
    W_tfl: np.ndarray | None = None  # received ligands of the TFL pairs (unmasked); None: same as W
    cell_thresholds: CellThresholds | None = None
    grn_alpha: float = 0.05
    receptor_levels: np.ndarray | None = None  # (n, n_receptors) for receptor_thresh; None: X
    gidx: dict = field(init=False)
    lidx: dict = field(init=False)
    receptor_ok: set = field(init=False)

    def __post_init__(self) -> None:
        self.gidx = {g: i for i, g in enumerate(self.var_names)}
        self.lidx = {l: i for i, l in enumerate(self.ligands)}
        if self.W_tfl is None:
            self.W_tfl = self.W
        recs = sorted(set(self.lr["receptor"].to_list()))
        ok = set()
        if recs:
            cols = [self.gidx[r] for r in recs]
            lev = self.X[:, cols] if self.receptor_levels is None else self.receptor_levels
            if lev.shape != (self.X.shape[0], len(recs)):
                raise InputError(f"receptor levels must be (cells, {len(recs)} receptors), got {lev.shape}")
            sums = np.zeros((self.n_clusters, len(cols)))
            np.add.at(sums, self.clusters, lev)
            counts = np.bincount(self.clusters, minlength=self.n_clusters).astype(np.float64)
            means = sums[counts > 0] / counts[counts > 0, None]
            mx = means.max(axis=0)
            ok = {r for r, m in zip(recs, mx) if m > self.receptor_thresh}
        self.receptor_ok = ok
        self._gexf = filtered(self.X, MIN_EXPRESSION)
        if self.cell_thresholds is not None and recs:
            # the receptor factor of the LR columns: filtered expression x cell-threshold mask
            rec_cols = np.array([self.gidx[r] for r in recs], dtype=np.int64)
            self._gexf[:, rec_cols] *= self.cell_thresholds.mask(recs)
        self._ligand_regs: dict[str, set[str]] = {}

    def ligand_regulators(self, ligand: str) -> set[str]:
        """Regulators of a ligand in the GRN (same rule as a target's TFs), cached."""
        hit = self._ligand_regs.get(ligand)
        if hit is None:
            hit = set(grn_regulators(self.links, ligand, self.var_names, self.grn_alpha))
            self._ligand_regs[ligand] = hit
        return hit

    def modulators(self, target: str) -> GeneModulators:
        regs = grn_regulators(self.links, target, self.var_names, self.grn_alpha)
        lr = self.lr.filter(
            pl.col("receptor").is_in(pl.Series(sorted(self.receptor_ok), dtype=pl.String).implode())
            & (pl.col("receptor") != target)
            & (pl.col("ligand") != target)
        )
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
                big = len(self.var_names) >= NICHENET_MIN_GENES
                for i, tf in enumerate(rsel):
                    order = np.argsort(-sub[i], kind="stable")[:5]
                    for j in order:
                        if not sub[i, j] > self.tf_ligand_cutoff:
                            continue
                        if big:
                            lregs = self.ligand_regulators(csel[j])
                            if target in lregs or tf in lregs:
                                continue
                        tfl.append((csel[j], tf))
        return GeneModulators(target, regs, pairs, tfl)

    def design(self, mods: GeneModulators) -> np.ndarray:
        n = self.X.shape[0]
        p = len(mods.regulators) + len(mods.lr_pairs) + len(mods.tfl_pairs)
        D = np.empty((n, p))
        W_tfl = self.W if self.W_tfl is None else self.W_tfl  # None only before __post_init__ set it
        k = 0
        for t in mods.regulators:
            D[:, k] = self.X[:, self.gidx[t]]
            k += 1
        for lig, rec in mods.lr_pairs:
            D[:, k] = self.W[:, self.lidx[lig]] * self._gexf[:, self.gidx[rec]]
            k += 1
        for lig, reg in mods.tfl_pairs:
            D[:, k] = W_tfl[:, self.lidx[lig]] * self.X[:, self.gidx[reg]]
            k += 1
        return D


def build_context(
    X,
    var_names,
    coords,
    clusters,
    n_clusters,
    lr,
    links,
    *,
    radius=200.0,
    contact_distance=50.0,
    scale_factor=1.0,
    mode="exact",
    receptor_thresh=0.01,
    tf_ligand_cutoff=0.01,
    ligand_target=None,
    cell_thresholds: CellThresholds | None = None,
    grn_alpha: float = 0.05,
    receptor_levels=None,
) -> FeatureContext:
    """Expand the LR table, compute received ligands of every LR ligand once, and bundle it all.

    ``cell_thresholds`` (aligned with the cells) masks LR ligands and receptors; the TFL received
    ligands then come from the unmasked expression (only for ligands of ``ligand_target``).
    ``receptor_levels``: the (cells x sorted LR receptors) expression whose cluster means are
    compared with ``receptor_thresh`` (default the training expression).
    """
    lrt = lr_table(lr, var_names, radius, contact_distance)
    radii_map = ligand_radii(lrt)
    ligands = sorted(radii_map)
    gidx = {g: i for i, g in enumerate(var_names)}
    W_tfl = None
    if ligands:
        Xf = filtered(X[:, [gidx[l] for l in ligands]])
        radii = np.array([radii_map[l] for l in ligands])
        if cell_thresholds is not None:
            W = received_columns(coords, Xf * cell_thresholds.mask(ligands), radii, scale_factor, mode)
            W_tfl = np.zeros_like(W)
            if ligand_target is not None:
                lt_cols = set(ligand_target[2])
                cols = np.array([j for j, l in enumerate(ligands) if l in lt_cols], dtype=np.int64)
                if cols.size:
                    received_columns(coords, Xf, radii, scale_factor, mode, cols=cols, out=W_tfl)
        else:
            W = received_columns(coords, Xf, radii, scale_factor, mode)
    else:
        W = np.zeros((X.shape[0], 0))
    return FeatureContext(
        X=X,
        var_names=list(var_names),
        clusters=clusters,
        n_clusters=n_clusters,
        lr=lrt,
        links=links,
        W=W,
        ligands=ligands,
        receptor_thresh=receptor_thresh,
        tf_ligand_cutoff=tf_ligand_cutoff,
        ligand_target=ligand_target,
        W_tfl=W_tfl,
        cell_thresholds=cell_thresholds,
        grn_alpha=grn_alpha,
        receptor_levels=receptor_levels,
    )


def cell_thresholds_from_communication(
    communication, lr, obs_names: Sequence[str], cell_types: Sequence, pval: float = 0.3
) -> pl.DataFrame:
    """Cell thresholds from COMMOT cluster-level communication, as the reference's ``run_commot_``.

    ``communication``: ``{"<ligand>-<receptor>": {"communication_matrix": DataFrame,
    "communication_pvalue": DataFrame}}`` (the reference's ``input_data/communication.pkl``; a
    ``(matrix, pvalue)`` pair per name works too), sender cell types as rows, receivers as
    columns.  For every expanded pair of ``lr`` (CellChat table) with an entry, the matrix is kept
    where ``pvalue < pval``; when anything is left, every cell of a sender type gets the row sum
    added to its ligand and every cell of a receiver type the column sum added to its receptor.
    Returns ``CellID`` + one column per ligand / receptor gene of the expanded table (sorted),
    0 where nothing was added.  (COMMOT itself - the optimal-transport communication and its
    permutation p-values - is not part of polgen.)
    """
    ex = expand_complexes(lr if isinstance(lr, pl.DataFrame) else pl.from_pandas(lr))
    genes = sorted(set(ex["ligand"].to_list()) | set(ex["receptor"].to_list()))
    gpos = {g: k for k, g in enumerate(genes)}
    ct = np.asarray([str(c) for c in cell_types])
    if ct.shape[0] != len(obs_names):
        raise InputError(f"cell_types has {ct.shape[0]} labels for {len(obs_names)} cells")
    out = np.zeros((len(obs_names), len(genes)))
    seen = set()
    for lig, rec in zip(ex["ligand"].to_list(), ex["receptor"].to_list()):
        name = f"{lig}-{rec}"
        if name in seen or name not in communication:
            continue
        seen.add(name)
        entry = communication[name]
        if isinstance(entry, Mapping):
            vm, pm = entry["communication_matrix"], entry["communication_pvalue"]
        else:
            vm, pm = entry
        senders = [str(i) for i in vm.index]
        receivers = [str(c) for c in vm.columns]
        v = np.asarray(vm, dtype=np.float64) * (np.asarray(pm, dtype=np.float64) < pval)
        if not v.sum() > 0:
            continue
        # the reference splits the name at its last '-' (a receptor named with '-' is misread there)
        lg, rc = name.rsplit("-", 1)
        for label, s in zip(senders, v.sum(axis=1)):
            if lg in gpos:
                out[ct == label, gpos[lg]] += s
        for label, s in zip(receivers, v.sum(axis=0)):
            if rc in gpos:
                out[ct == label, gpos[rc]] += s
    cols = {"CellID": pl.Series("CellID", [str(o) for o in obs_names], dtype=pl.String)}
    cols.update({g: pl.Series(g, out[:, k]) for k, g in enumerate(genes)})
    return pl.DataFrame(cols)
