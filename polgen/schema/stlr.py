"""Declared outputs of the SpaceTravLR functions (:mod:`polgen.stlr`)."""

from __future__ import annotations

from polgen.schema.core import (
    _BOOL,
    _F64,
    _I64,
    _STR,
    BETA0,
    BETA_PREFIX,
    CELL_ID,
    CLUSTER,
    META_PARAMS,
    OutputSchema,
    _c,
)

_BETADATA = OutputSchema(
    kind="stlr_betadata",
    title="SpaceTravLR betadata (one file per target gene)",
    produced_by="`stlr.fit(..., out=)`: `<out>/<gene>_betadata.parquet`; `stlr.write_betadata`",
    columns=(
        _c(CLUSTER, _STR, "cluster label (one row per cluster: seed-only training)", when="per-cluster rows"),
        _c(CELL_ID, _STR, "cell id (one row per cell)", when="per-cell rows"),
        _c(BETA0, _F64, "intercept"),
        _c(BETA_PREFIX + "{modulator}", _F64, "coefficient of a modulator: <TF>, <ligand>$<receptor> or <ligand>#<TF>"),
    ),
    exactly_one_of=((CLUSTER, CELL_ID),),
    metadata=(META_PARAMS,),
)

_STLR_SCORES = OutputSchema(
    kind="stlr_fit_scores",
    title="SpaceTravLR training diagnostics (per gene x cluster)",
    produced_by="`stlr.fit`: `FitResult.scores`",
    columns=(
        _c("gene", _STR, "target gene"),
        _c("cluster", _STR, "cluster label"),
        _c("r2", _F64, "in-sample R2 of the cluster's model"),
        _c("n_modulators", _I64, "modulators in the gene's design"),
        _c("n_iter", _I64, "FISTA iterations"),
        _c("converged", _BOOL, "FISTA converged within max_iter"),
        _c("cv_r2", _F64, "held-out R2 of the cluster's model (cv-fold cross-validation; NaN: cv=0 or too few cells)"),
        _c("n_cells", _I64, "cells in the cluster"),
        _c("zeroed", _BOOL, "betas set to 0 (R2 < min_r2, or fewer than 2 cells)"),
    ),
)

_STLR_LOSSES = OutputSchema(
    kind="stlr_fit_losses",
    title="SpaceTravLR CNN training curves (per gene x cluster x epoch)",
    produced_by='`stlr.fit(training_mode="hybrid"|"full")`: `FitResult.losses`; `stlr.read_losses(out)`',
    columns=(
        _c("gene", _STR, "target gene"),
        _c("cluster", _STR, "cluster label"),
        _c("epoch", _I64, "epoch, from 1"),
        _c("loss", _F64, "mean mini-batch training loss (MSE) of the epoch"),
        _c("score", _F64, "the network's R2 over its last epoch"),
        _c("zeroed", _BOOL, "anchors zeroed (R2 below score_threshold)"),
    ),
)

_SPLASH = OutputSchema(
    kind="stlr_splash",
    title="SpaceTravLR splash (per cell)",
    produced_by="`stlr.splash` / `df.stlr.splash`",
    columns=(
        _c(CELL_ID, _STR, "cell id"),
        _c(BETA_PREFIX + "{modulator}", _F64, "derivative of the target's expression by the modulator"),
    ),
)

_PERTURB = OutputSchema(
    kind="stlr_perturb",
    title="SpaceTravLR perturbation (per cell)",
    produced_by="`stlr.perturb` / `df.stlr.perturb`",
    columns=(
        _c(CELL_ID, _STR, "cell id"),
        _c("{gene}", _F64, "simulated expression of the gene after propagation"),
    ),
)

_PERTURB_BATCH = OutputSchema(
    kind="stlr_perturb_batch",
    title="SpaceTravLR batch perturbation (per target x cell)",
    produced_by="`stlr.perturb_batch(..., out)`: parquet parts + manifest",
    columns=(
        _c("target", _STR, "perturbed gene"),
        _c(CELL_ID, _STR, "cell id"),
        _c("{gene}", _F64, "simulated expression of the gene after propagation"),
    ),
    metadata=(META_PARAMS,),
)

_TRANSITIONS = OutputSchema(
    kind="stlr_transitions",
    title="SpaceTravLR transition vectors (per cell)",
    produced_by="`stlr.transitions(adata, perturbed)`; drawn by `polgen.plot.transitions`",
    columns=(
        _c(CELL_ID, _STR, "cell id"),
        _c("x", _F64, "layout position (tissue coordinates or the embedding)"),
        _c("y", _F64, "layout position (second axis)"),
        _c("dx", _F64, "transition vector, first axis"),
        _c("dy", _F64, "transition vector, second axis"),
        _c("cluster", _STR, "the cell's cluster", when="the tissue has clusters"),
    ),
)
