"""SpaceTravLR as polgen functions: networks, received ligands, training, betadata, splash, perturb.

Typed functions here; ``df.stlr.*`` (:mod:`polgen.stlr.namespace`) delegates to them.

Modules, bottom up (each imports only lower ones, at module level; tests/test_stlr_imports.py
checks it): ``betadata``, ``lasso``, ``ligands`` -> ``grn`` -> ``tissue`` (the tissue inputs
every step shares: expression and its filter, ligand radii and received ligands, cell
thresholds, AnnData layers) and ``priors`` (the bundled CellChat tables and base GRN, species
detection) -> ``features``, ``splash``, ``prepare`` (raw counts to the layers, clusters and
coordinates training needs), ``cnn`` (per-cell betas of the CNN training modes), ``transitions``
(per-cell transition vectors of a perturbation), ``pruning`` (CellOracle's per-cluster bagging-ridge
links with p-values, for ``fit(grn=...)``) -> ``train``, ``perturb`` -> ``cli``, ``namespace``.
"""

from polgen.stlr.betadata import Betabase, BetaData, betabase_from_long, read_betadata, top_regulators, write_betadata
from polgen.stlr.features import cell_thresholds_from_communication
from polgen.stlr.grn import (
    base_grn_links,
    celloracle_links,
    co_grn_links,
    expand_complexes,
    ligand_radii,
    lr_table,
    read_base_grn,
    read_cellchat,
    read_ligand_target,
    read_links,
    regulators,
    restrict_to_co_grn,
)
from polgen.stlr.lasso import LassoFit, sparse_group_lasso
from polgen.stlr.ligands import received_ligands
from polgen.stlr.perturb import Perturber, perturb, perturb_batch
from polgen.stlr.prepare import prepare
from polgen.stlr.priors import bundled_grn, bundled_lr, detect_species
from polgen.stlr.pruning import filter_links, prune_links
from polgen.stlr.splash import splash
from polgen.stlr.tissue import CellThresholds, read_cell_thresholds
from polgen.stlr.train import FitResult, fit, training_context
from polgen.stlr.transitions import transitions

__all__ = [
    "BetaData",
    "Betabase",
    "CellThresholds",
    "cell_thresholds_from_communication",
    "celloracle_links",
    "co_grn_links",
    "read_cell_thresholds",
    "regulators",
    "restrict_to_co_grn",
    "training_context",
    "FitResult",
    "LassoFit",
    "betabase_from_long",
    "fit",
    "sparse_group_lasso",
    "Perturber",
    "base_grn_links",
    "expand_complexes",
    "ligand_radii",
    "lr_table",
    "perturb",
    "perturb_batch",
    "read_base_grn",
    "read_betadata",
    "read_cellchat",
    "read_ligand_target",
    "read_links",
    "received_ligands",
    "splash",
    "write_betadata",
    "prepare",
    "prune_links",
    "filter_links",
    "bundled_grn",
    "bundled_lr",
    "detect_species",
    "top_regulators",
    "transitions",
]
