"""In-silico perturbation (knock-out / over-expression) propagated through the trained models.

Follows the Python reference's ``GeneFactory.perturb`` step by step (see
../shared/notes/spacetravlr-reference-behaviour.md):

1. X0 = expression (``imputed_count`` layer by default); the perturbed gene is set to
   ``gene_expr`` in ``cells`` -> ``delta_input``; delta = delta_input.
2. W0 = received ligands of the filtered X0 (values <= 1e-9 are 0) for every ligand of the
   betadata (LR and TFL ligands); a ligand's radius from its first CellChat row.  The TFL
   received ligands stay W0 for the whole run.
3. For each of ``n_propagation`` steps:
   a. splash every trained gene with the expression and LR received ligands that entered the
      *previous* step (step 0: X0, W0);
   b. X1 = X0 + delta; W1 = received ligands of X1;
   c. delta swap on ligand columns: delta = (delta + (W1 - W0)) - ((X0 + delta) - X0);
   d. delta'[:, g] = sum_m splash_g[:, m] * delta[:, m] for trained genes g, 0 for the others;
   e. re-pin: delta' = delta_input where delta_input != 0;
   f. clip X0 + delta' to [0, per-gene observed max]  (``clip=False``: no upper bound, still >= 0).
4. Output X0 + delta with the perturbed gene set to ``gene_expr`` in ``cells``.

With cell thresholds (``uns["cell_thresholds"]`` or ``cell_thresholds=``; genes absent from the
table allowed): W of LR ligands comes from the masked filtered expression, W of TF-ligand
ligands from the unmasked one; W0 / W1 in (c) are their elementwise max (a ligand of one kind
only: that kind's value); splash sees the masked expression of every gene, with the LR received
ligands alone at step 0 and the max afterwards; the TF-ligand terms keep the unmasked W0.
``co_grn=`` zeroes the direct TF betas without a TF -> gene link (:func:`restrict_to_co_grn`).

Only ligand columns whose filtered expression changed are recomputed in (b) (the others are
bit-identical), so the exact mode does the O(N^2) work only where it matters.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl

from polgen.engine.executor import run_to_sink
from polgen.errors import InputError, ModelError
from polgen.options import LigandMode
from polgen.schema import CELL_ID
from polgen.stlr.betadata import Betabase
from polgen.stlr.grn import restrict_to_co_grn
from polgen.stlr.ligands import MODES
from polgen.stlr.splash import SplashPlan, build_plan, propagate
from polgen.stlr.tissue import (
    MIN_EXPRESSION,
    Tissue,
    as_tissue,
    filtered,
    kept_outside,
    ligand_radius_map,
    received_columns,
    run_thresholds,
    source_index,
)

log = logging.getLogger("polgen")


def _check_number(name: str, value, *, positive: bool = False) -> None:
    ok = (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > 0 if positive else True)
    )
    if not ok:
        raise InputError(f"{name} must be a {'positive ' if positive else ''}finite number, got {value!r}")


def _perturb_thresholds(cell_thresholds, adata, tissue):
    """CellThresholds of a perturbation: None -> ``uns["cell_thresholds"]`` when present (the
    reference's behaviour), False -> none, else a frame or a parquet / csv path."""
    if cell_thresholds is True:
        cell_thresholds = None
    return run_thresholds(cell_thresholds, adata, tissue.obs_names, None)


class Perturber:
    """A prepared perturbation model: tissue, betadata plan and starting received ligands.

    Build once, call :meth:`run` for many targets (the batch mode does this).
    """

    def __init__(
        self,
        adata,
        betas,
        *,
        lr=None,
        radius: float = 200.0,
        contact_distance: float = 50.0,
        scale_factor: float = 1.0,
        beta_scale_factor: float = 1.0,
        beta_cap: float | None = None,
        mode: LigandMode = "exact",
        layer: str | None = None,
        cluster_key=None,
        spatial_key=None,
        cell_thresholds=None,
        co_grn=None,
    ) -> None:
        from polgen.kernels.ligands import GaussTiles

        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}")
        _check_number("radius", radius, positive=True)
        _check_number("contact_distance", contact_distance, positive=True)
        _check_number("scale_factor", scale_factor)
        _check_number("beta_scale_factor", beta_scale_factor)
        if beta_cap is not None:
            _check_number("beta_cap", beta_cap, positive=True)
        self.base = Betabase.coerce(betas)
        if co_grn is not None:
            self.base = restrict_to_co_grn(self.base, co_grn)
        need_clusters = any(bd.id_kind != CELL_ID for bd in self.base.data.values())
        # the working arrays hold the trained genes and their modulators only: a perturbation reaches
        # nothing else (other genes keep their expression, clipped at 0), so the cost follows them
        work = set(self.base.genes)
        for g in self.base.genes:
            work.update(self.base[g].modulators)
        self.tissue: Tissue = as_tissue(
            adata,
            layer=layer,
            cluster_key=cluster_key,
            spatial_key=spatial_key,
            need_clusters=need_clusters,
            genes=sorted(work),
        )
        t = self.tissue
        self.mode = mode
        self.scale_factor = float(scale_factor)
        self.beta_scale_factor = float(beta_scale_factor)
        self.beta_cap = beta_cap
        self.plan: SplashPlan = build_plan(
            self.base, t.var_names, t.obs_names, t.clusters, t.cluster_labels, skip_zero=True
        )
        self.all_plan_genes = set(self.plan.genes)
        gidx = {g: i for i, g in enumerate(t.var_names)}
        self.ligands = self.plan.ligands
        self.lig_gene = np.array([gidx[l] for l in self.ligands], dtype=np.int64)
        if self.ligands:
            rmap = ligand_radius_map(lr, t.source_var_names, radius, contact_distance)
            self.radii = np.array([rmap.get(l, np.nan) for l in self.ligands], dtype=np.float64)
            none = [l for l, r in zip(self.ligands, self.radii) if not np.isfinite(r)]
            if none:
                log.warning(
                    "ligand(s) %s have no ligand-receptor row with both genes in var_names; their "
                    "received amount is 0 (as in the reference)",
                    none[:10],
                )
        else:
            self.radii = np.zeros(0)
        self.X0 = t.X
        self.maxv = np.ascontiguousarray(self.X0.max(axis=0)) if self.X0.size else np.zeros(0)
        self.gexf0 = filtered(self.X0)
        self.Xf0_lig = self.gexf0[:, self.lig_gene] if self.ligands else np.zeros((len(t.obs_names), 0))
        # exact mode: the k-d tiling of the cells is built once and reused by every step
        self.tiles = GaussTiles(t.coords[:, 0], t.coords[:, 1]) if mode == "exact" else None
        self.thresholds = _perturb_thresholds(cell_thresholds, adata, t)
        if self.thresholds is None:
            self.W0 = received_columns(t.coords, self.Xf0_lig, self.radii, self.scale_factor, mode, tiles=self.tiles)
            self.W0_lr = self.W0_tfl = self.W0
        else:
            self._init_thresholds()
        self._last: tuple | None = None  # the last run: working simulation, other targets, steps
        self._full_X0: np.ndarray | None = None
        self.used = set()
        for g in self.plan.genes:
            self.used.update(self.base[g].modulators)
        self.zeroed_in: dict[
            str, list[str]
        ] = {}  # modulator -> trained genes that list it but whose betas are all zero
        for g in self.base.genes:
            if g not in self.all_plan_genes:
                for m in self.base[g].modulators:
                    self.zeroed_in.setdefault(m, []).append(g)

    def _init_thresholds(self) -> None:
        """Received ligands under cell thresholds, as the reference's ``GeneFactory.perturb``.

        Genes absent from the table are allowed (the reference re-indexes with 1).  LR ligands are
        received from the masked expression, TF-ligand ligands from the unmasked one; the swap
        baseline W0 is their elementwise max (a ligand of one kind only: that kind's value);
        splash sees the masked expression of every gene.
        """
        t = self.tissue
        self.mask = np.ascontiguousarray(self.thresholds.mask(t.var_names, fill=1.0))
        self.mask_lig = (
            np.ascontiguousarray(self.mask[:, self.lig_gene]) if self.ligands else np.zeros((len(t.obs_names), 0))
        )
        lr_set = {l for g in self.plan.genes for l in self.base[g].ligands}
        tfl_set = {l for g in self.plan.genes for l in self.base[g].tfl_ligands}
        self.is_lr = np.array([l in lr_set for l in self.ligands], dtype=bool)
        self.is_tfl = np.array([l in tfl_set for l in self.ligands], dtype=bool)
        self.gexf0 = self.gexf0 * self.mask
        self.W0_lr, self.W0_tfl = self._received_pair(self.Xf0_lig, None, None, None)
        self.W0 = np.maximum(self.W0_lr, self.W0_tfl)

    def _received_pair(self, Xf_lig, Xf_prev_lig, W_lr_prev, W_tfl_prev):
        """(LR, TFL) received ligands of the filtered ligand expression ``Xf_lig`` under thresholds;
        only the columns that changed since ``Xf_prev_lig`` are recomputed (None: all)."""
        t = self.tissue
        n, nl = Xf_lig.shape
        out = []
        for kind, masked, W_prev in ((self.is_lr, True, W_lr_prev), (self.is_tfl, False, W_tfl_prev)):
            x = Xf_lig * self.mask_lig if masked else Xf_lig
            if W_prev is None:
                W = np.zeros((n, nl))
                cols = np.flatnonzero(kind)
            else:
                xp = Xf_prev_lig * self.mask_lig if masked else Xf_prev_lig
                cols = np.flatnonzero(kind & (x != xp).any(axis=0))
                W = W_prev.copy() if cols.size else W_prev
            if cols.size:
                received_columns(
                    t.coords,
                    np.ascontiguousarray(x),
                    self.radii,
                    self.scale_factor,
                    self.mode,
                    cols=cols,
                    out=W,
                    tiles=self.tiles,
                )
            out.append(W)
        return out[0], out[1]

    # ---------------------------------------------------------------------------------------
    def _cells(self, cells) -> np.ndarray | None:
        if cells is None:
            return None
        n = len(self.tissue.obs_names)
        arr = np.asarray(cells)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise InputError(f"a boolean cells mask must have {n} values")
            return np.flatnonzero(arr)
        if arr.dtype.kind in "US O".replace(" ", ""):
            pos = {c: i for i, c in enumerate(self.tissue.obs_names)}
            bad = [c for c in arr.tolist() if c not in pos]
            if bad:
                raise InputError(f"{len(bad)} cell name(s) not in obs_names: {bad[:5]}", column=CELL_ID)
            return np.array([pos[c] for c in arr.tolist()], dtype=np.int64)
        idx = arr.astype(np.int64)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise InputError(f"cell indices out of range for {n} cells")
        return idx

    def run(
        self,
        target: str | Sequence[str],
        gene_expr: float | Sequence[float] = 0.0,
        *,
        cells=None,
        n_propagation: int = 4,
        clip: bool = True,
        return_delta: bool = False,
        changed_only: bool = False,
    ):
        """Simulated expression (Polars: CellID + genes), and the final delta when ``return_delta``.

        ``changed_only``: only the genes whose value changed in some cell (the targets always), so
        the output's cost follows the genes the perturbation reached, not the data set's width.
        The full simulated matrix of the last run stays in :attr:`last_simulated` (numpy)."""
        from polgen.kernels.splash import filter_sum, pin_and_clip, swap_and_step

        t = self.tissue
        targets = [target] if isinstance(target, str) else list(target)
        exprs: list[float]
        if isinstance(gene_expr, (list, tuple, np.ndarray)):
            exprs = list(gene_expr)
        else:  # one value for every target
            exprs = [cast(float, gene_expr)] * len(targets)
        if not targets:
            raise InputError("no target gene to perturb")
        if len(exprs) != len(targets):
            raise InputError("give one gene_expr per target")
        source_index(t, targets)  # every target must be a gene of the data set
        work = {g: i for i, g in enumerate(t.var_names)}
        inner = [k for k, g in enumerate(targets) if g in work]
        outer = [(targets[k], float(exprs[k])) for k in range(len(targets)) if targets[k] not in work]
        tcols = np.array([work[targets[k]] for k in inner], dtype=np.int64)
        for g, e in zip(targets, exprs):
            if not (np.isfinite(e) and e >= 0):
                raise InputError(f"gene_expr for {g} must be a finite value >= 0, got {e}")
            if g not in self.used and g not in self.ligands:
                zeroed = self.zeroed_in.get(g, [])
                if zeroed:
                    msg = (
                        f"perturbed gene {g!r} is a modulator of {len(zeroed)} trained gene(s) ({zeroed[:5]}) whose "
                        "betas are all zero (every cluster's R^2 was below min_r2 in training): the perturbation "
                        "does not propagate and only its own expression changes"
                    )
                else:
                    msg = (
                        f"perturbed gene {g!r} is not a modulator of any of the {len(self.base.genes)} trained "
                        "gene(s) (no TF, ligand or receptor term names it): the perturbation does not propagate "
                        "and only its own expression changes"
                    )
                warnings.warn(msg, UserWarning, stacklevel=3)  # once: a log record beside it printed it twice
        if isinstance(n_propagation, bool) or not isinstance(n_propagation, (int, np.integer)) or n_propagation < 0:
            raise InputError(f"n_propagation must be a whole number >= 0, got {n_propagation!r}")
        rows = self._cells(cells)
        X0 = self.X0
        n, G = X0.shape
        in_exprs = [exprs[k] for k in inner]
        dinput = np.zeros((n, len(tcols)))
        for k, (c, e) in enumerate(zip(tcols, in_exprs)):
            sim = X0[:, c].copy()
            if rows is None:
                sim[:] = e
            else:
                sim[rows] = e
            dinput[:, k] = sim - X0[:, c]
        delta = np.zeros((n, G))
        for k, c in enumerate(tcols):
            delta[:, c] = dinput[:, k]
        maxv = self.maxv if clip else np.full(G, np.inf)
        W0 = self.W0
        W_prev = W0
        thr = self.thresholds is not None
        if thr:  # step 0 splashes with the LR received ligands alone (the reference's rw_ligands_0)
            W_prev, W_lr_prev, W_tfl_prev = self.W0_lr, self.W0_lr, self.W0_tfl
        Xf_prev_lig = self.Xf0_lig
        gexf_prev = self.gexf0
        bufs = (np.empty((n, G)), np.empty((n, G))) if n_propagation else ()
        result = np.empty((n, G))
        for step in range(int(n_propagation)):
            # filtered X1 = X0 + delta (before the swap): this step's ligands, the next step's splash
            gexf1 = bufs[step % 2]
            filter_sum(X0, delta, MIN_EXPRESSION, gexf1)
            Xf1_lig = gexf1[:, self.lig_gene] if self.ligands else Xf_prev_lig
            changed = np.flatnonzero((Xf1_lig != Xf_prev_lig).any(axis=0)) if self.ligands else np.zeros(0, int)
            if thr:
                W_lr_prev, W_tfl_prev = self._received_pair(Xf1_lig, Xf_prev_lig, W_lr_prev, W_tfl_prev)
                W1 = np.maximum(W_lr_prev, W_tfl_prev)
            elif changed.size:
                W1 = W_prev.copy()
                received_columns(
                    t.coords, Xf1_lig, self.radii, self.scale_factor, self.mode, cols=changed, out=W1, tiles=self.tiles
                )
            else:
                W1 = W_prev
            if self.ligands:
                swap_and_step(delta, X0, W1, W0, self.lig_gene)
            propagate(self.plan, gexf_prev, W_prev, self.W0_tfl, delta, result, self.beta_scale_factor, self.beta_cap)
            if pin_and_clip(delta, result, X0, dinput, tcols, maxv, 0.0):
                raise ModelError(
                    f"the perturbation diverged (non-finite expression at step {step + 1}); "
                    f"gene_expr={exprs} is too large for these betas",
                    column=str(targets[0]),
                )
            if thr:
                np.multiply(gexf1, self.mask, out=gexf1)  # its own double buffer: no per-step allocation
            gexf_prev, W_prev, Xf_prev_lig = gexf1, W1, Xf1_lig
        sim = X0 + delta
        for c, e in zip(tcols, in_exprs):
            if rows is None:
                sim[:, c] = e
            else:
                sim[rows, c] = e
        self._last = (sim, outer, rows, int(n_propagation))
        if changed_only:
            names, sim, X0 = self._changed(sim, tcols, outer, rows, int(n_propagation))
        else:
            names, sim, X0 = list(t.source_var_names), cast(np.ndarray, self.last_simulated), self.full_X0()
        out = _frame(t.obs_names, names, sim)
        if return_delta:
            return out, _frame(t.obs_names, names, sim - X0)
        return out

    def full_X0(self) -> np.ndarray:
        """The starting expression of every gene of the data set (densified once, then cached)."""
        if self._full_X0 is None:
            self._full_X0 = self.tissue.source_dense()
        return self._full_X0

    def _set_outer(self, sim: np.ndarray, cols: np.ndarray, outer, rows) -> None:
        for (_, e), c in zip(outer, cols):
            if rows is None:
                sim[:, c] = e
            else:
                sim[rows, c] = e

    @property
    def last_simulated(self) -> np.ndarray | None:
        """Simulated expression of every gene of the data set in the last run (cells x genes)."""
        if self._last is None:
            return None
        simw, outer, rows, steps = self._last
        t = self.tissue
        X0 = self.full_X0()
        if t.all_var_names is None:
            return simw
        sim = kept_outside(X0, steps)
        sim[:, source_index(t, t.var_names)] = simw
        self._set_outer(sim, source_index(t, [g for g, _ in outer]), outer, rows)
        return sim

    def _changed(self, simw, tcols, outer, rows, steps) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(genes, simulated, starting) of the genes whose value changed in some cell and the targets,
        in the data set's gene order; outside the working set only targets and negative values change."""
        t = self.tissue
        keep = np.union1d(np.flatnonzero((simw != self.X0).any(axis=0)), tcols)
        names = [t.var_names[k] for k in keep]
        sims, x0s = [simw[:, keep]], [self.X0[:, keep]]
        if t.all_var_names is not None:
            extra = [g for g, _ in outer]
            if steps:  # genes outside the working set holding negative values are clipped to 0
                extra += [g for g in t.negative_outside() if g not in set(extra)]
            if extra:
                x0 = t.source_columns(extra)
                sim = kept_outside(x0, steps)
                self._set_outer(sim, np.arange(len(outer)), outer, rows)
                names += extra
                sims.append(sim)
                x0s.append(x0)
            order = np.argsort(source_index(t, names), kind="stable")
            names = [names[k] for k in order]
            return names, np.hstack(sims)[:, order], np.hstack(x0s)[:, order]
        return names, sims[0], x0s[0]


def _frame(obs_names, var_names, M) -> pl.DataFrame:
    if M.shape[1] == 0:
        return pl.DataFrame([pl.Series(CELL_ID, obs_names, dtype=pl.String)])
    df = pl.from_numpy(np.ascontiguousarray(M, dtype=np.float64), schema=list(var_names), orient="row")
    return df.insert_column(0, pl.Series(CELL_ID, obs_names, dtype=pl.String))


RUN_FILE = "stlr_run.json"  # the training run's summary (polgen.stlr.train.MANIFEST)
#: perturb arguments read from the training run (its stlr_run.json) when not given
RUN_DEFAULTS = {
    "radius": 200.0,
    "contact_distance": 50.0,
    "scale_factor": 1.0,
    "mode": "exact",
    "layer": None,
    "cluster_key": None,
    "spatial_key": None,
}


def run_params(betas) -> dict | None:
    """The training parameters recorded beside a betadata folder or file (its ``stlr_run.json``), or None."""
    if not isinstance(betas, (str, os.PathLike)):
        return None
    p = Path(betas)
    run = (p if p.is_dir() else p.parent) / RUN_FILE
    if not run.exists():
        return None
    try:
        return json.loads(run.read_text())["params"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read the training parameters ({type(exc).__name__}: {exc})", path=run) from None


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return list(a) == list(b) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else False
    return a == b


def resolve_run_args(betas, given: dict, allow_mismatch: bool) -> dict:
    """Perturb arguments: each one given, else the training run's (``stlr_run.json`` beside
    ``betas``), else :data:`RUN_DEFAULTS`; plus ``lr`` from the run when not given.  A given value
    that differs from training's is an :class:`InputError` (``allow_mismatch=True``: a warning)."""
    params = run_params(betas) or {}
    out = {}
    for k, default in RUN_DEFAULTS.items():
        trained = params.get(k, default) if params else default
        v = given.get(k)
        if v is None:
            out[k] = trained
            continue
        if params and k in params and params[k] is not None and not _same(v, trained):
            msg = (
                f"perturb {k}={v!r} differs from training's {k}={trained!r} (recorded in {RUN_FILE}); the "
                "betas were fitted with the training value"
            )
            if not allow_mismatch:
                raise InputError(
                    msg + "; pass allow_mismatch=True (CLI: --allow-mismatch) to use another value", column=k
                )
            warnings.warn(msg, UserWarning, stacklevel=3)
        out[k] = v
    lr = given.get("lr")
    if lr is None and params:
        rec = params.get("lr")
        if isinstance(rec, str) and rec != "<table>" and Path(rec).exists():
            lr = rec
        elif rec == "<table>":
            raise InputError(
                f"training used an in-memory ligand-receptor table ({RUN_FILE} has no path for it); pass lr="
            )
    out["lr"] = lr
    if isinstance(out["spatial_key"], list):
        out["spatial_key"] = tuple(out["spatial_key"])
    return out


def perturb(
    adata,
    betas,
    target: str | Sequence[str],
    gene_expr: float | Sequence[float] = 0.0,
    *,
    cells=None,
    n_propagation: int = 4,
    mode: LigandMode | None = None,
    clip: bool = True,
    lr=None,
    radius: float | None = None,
    contact_distance: float | None = None,
    scale_factor: float | None = None,
    beta_scale_factor: float = 1.0,
    beta_cap: float | None = None,
    layer: str | None = None,
    cluster_key=None,
    spatial_key=None,
    return_delta: bool = False,
    cell_thresholds=None,
    co_grn=None,
    changed_only: bool = False,
    write_to=None,
    allow_mismatch: bool = False,
):
    """Perturb ``target`` (set to ``gene_expr``; 0 = knock-out) and propagate ``n_propagation`` steps.

    ``adata``: AnnData / .h5ad path / SpatialData (``layer`` default ``imputed_count`` when present);
    ``betas``: betadata folder, file, :class:`~polgen.stlr.betadata.Betabase` or mapping;
    ``lr``: CellChat table (path or frame) giving each ligand's radius (``radius`` for secreted
    signalling, ``contact_distance`` otherwise) or a ``{ligand: radius}`` mapping; ``cells``:
    positional indices, a boolean mask or cell names to perturb (default all); ``mode``:
    ``exact`` | ``grid`` | ``fast`` received ligands.  Returns a Polars frame ``CellID`` + one column
    per gene of simulated expression (and the delta frame when ``return_delta``).

    When ``betas`` is a training run folder (or a file in one) with ``stlr_run.json``, ``radius``,
    ``contact_distance``, ``scale_factor``, ``mode``, ``layer``, ``cluster_key``, ``spatial_key``
    and ``lr`` default to training's; a different given value is an
    :class:`~polgen.errors.InputError` unless ``allow_mismatch=True`` (then a warning).  Without a
    run file the defaults are 200, 50, 1, "exact" and the data's own layer / keys.

    ``changed_only``: the frames hold only ``CellID`` and the genes whose values changed in some
    cell (the target included).  ``write_to``: an AnnData (the one perturbed, same cells and genes)
    that receives ``layers["{target}_perturbed"]`` and ``layers["{target}_delta"]`` (all genes) and
    the parameters in ``uns["stlr_perturb"]["{target}"]`` (several targets: joined by ``+``).

    ``cell_thresholds``: a cells x genes table (frame or parquet / csv path; genes absent from it
    are allowed) masking the expression that sends LR ligands and that splash sees, as the
    reference's ``GeneFactory.perturb``; None (default) reads ``adata.uns["cell_thresholds"]`` when
    present, False ignores it.  ``co_grn``: links (see :func:`polgen.stlr.grn.restrict_to_co_grn`)
    restricting the direct TF terms to TF -> gene links.
    """
    given = {
        "radius": radius,
        "contact_distance": contact_distance,
        "scale_factor": scale_factor,
        "mode": mode,
        "layer": layer,
        "cluster_key": cluster_key,
        "spatial_key": spatial_key,
        "lr": lr,
    }
    args = resolve_run_args(betas, given, allow_mismatch)
    model = Perturber(
        adata,
        betas,
        lr=args["lr"],
        radius=args["radius"],
        contact_distance=args["contact_distance"],
        scale_factor=args["scale_factor"],
        beta_scale_factor=beta_scale_factor,
        beta_cap=beta_cap,
        mode=args["mode"],
        layer=args["layer"],
        cluster_key=args["cluster_key"],
        spatial_key=args["spatial_key"],
        cell_thresholds=cell_thresholds,
        co_grn=co_grn,
    )
    res = model.run(
        target,
        gene_expr,
        cells=cells,
        n_propagation=n_propagation,
        clip=clip,
        return_delta=return_delta,
        changed_only=changed_only,
    )
    if write_to is not None:
        name = target if isinstance(target, str) else "+".join(target)
        params = {k: (v if v is None or isinstance(v, (int, float, str, bool)) else str(v)) for k, v in args.items()}
        params.update(
            gene_expr=gene_expr if isinstance(gene_expr, (int, float)) else str(list(gene_expr)),
            n_propagation=int(n_propagation),
            clip=bool(clip),
        )
        sim = model.last_simulated
        assert sim is not None
        write_perturbation(write_to, model.tissue, name, sim, model.full_X0(), params)
    return res


def write_perturbation(adata, tissue: Tissue, name: str, sim: np.ndarray, X0: np.ndarray, params: dict) -> None:
    """Store a perturbation in ``adata``: layers ``{name}_perturbed`` (``sim``) and ``{name}_delta``
    (``sim - X0``), and ``uns["stlr_perturb"][name]`` (the parameters)."""
    if not all(hasattr(adata, a) for a in ("layers", "uns", "obs_names", "var_names")):
        raise InputError(f"write_to must be an AnnData, got {type(adata).__name__}")
    if [str(o) for o in adata.obs_names] != list(tissue.obs_names) or [str(v) for v in adata.var_names] != list(
        tissue.source_var_names
    ):
        raise InputError("write_to must have the perturbed tissue's cells and genes, in the same order")
    adata.layers[f"{name}_perturbed"] = np.array(sim, dtype=np.float64)
    adata.layers[f"{name}_delta"] = np.asarray(sim, dtype=np.float64) - X0
    store = dict(adata.uns.get("stlr_perturb", {}))
    store[name] = {k: ("None" if v is None else v) for k, v in params.items()}
    adata.uns["stlr_perturb"] = store


# -- batch mode ------------------------------------------------------------------------------
_MODELS: dict[str, Perturber] = {}


def _batch_task(task: dict) -> pl.DataFrame:
    """One target of a batch: long-free wide table ``target, CellID, genes...`` (a pure function)."""
    key = task["key"]
    model = _MODELS.get(key)
    if model is None:
        model = Perturber(task["adata"], task["betas"], **task["model_kw"])
        _MODELS.clear()
        _MODELS[key] = model
    sim = model.run(
        task["target"], task["gene_expr"], cells=task["cells"], n_propagation=task["n_propagation"], clip=task["clip"]
    )
    return sim.select(pl.lit(task["target"]).alias("target"), pl.all())


def _param_repr(v):
    if v is None or isinstance(v, bool):
        return v
    return os.fspath(v) if isinstance(v, (str, os.PathLike)) else f"<{type(v).__name__}>"


def perturb_batch(
    adata,
    betas,
    targets: Sequence[str],
    out,
    *,
    gene_expr: float | Sequence[float] = 0.0,
    cells=None,
    n_propagation: int = 4,
    mode: LigandMode | None = None,
    clip: bool = True,
    lr=None,
    radius: float | None = None,
    contact_distance: float | None = None,
    scale_factor: float | None = None,
    beta_scale_factor: float = 1.0,
    beta_cap: float | None = None,
    layer: str | None = None,
    cluster_key=None,
    spatial_key=None,
    resume: bool = False,
    overwrite: bool = False,
    executor=None,
    progress: bool | None = None,
    cell_thresholds=None,
    co_grn=None,
    allow_mismatch: bool = False,
):
    """Perturb each of ``targets`` in turn, streaming one parquet part per target to ``out``.

    ``gene_expr``: one value for every target, or one per target (in ``targets``' order).
    ``radius``, ``contact_distance``, ``scale_factor``, ``mode``, ``layer``, ``cluster_key``,
    ``spatial_key`` and ``lr`` default to the training run's (``stlr_run.json`` beside ``betas``)
    and are checked against it, as in :func:`perturb`.

    Parts hold ``target, CellID, <genes>``; returns the engine's :class:`~polgen.io.sink.BatchSink`
    (``.scan()`` gives all results lazily).  With an executor other than the local one, ``adata``,
    ``betas`` and ``lr`` must be paths (tasks are small picklable specs; each worker prepares the
    model once and reuses it).
    """
    if isinstance(gene_expr, (list, tuple, np.ndarray)):
        exprs = [float(e) for e in gene_expr]
        if len(exprs) != len(targets):
            raise InputError(f"give one gene_expr per target ({len(targets)} targets, {len(exprs)} values)")
    else:
        exprs = [float(gene_expr)] * len(targets)  # type: ignore[arg-type]
    run = resolve_run_args(
        betas,
        {
            "radius": radius,
            "contact_distance": contact_distance,
            "scale_factor": scale_factor,
            "mode": mode,
            "layer": layer,
            "cluster_key": cluster_key,
            "spatial_key": spatial_key,
            "lr": lr,
        },
        allow_mismatch,
    )
    lr = run["lr"]
    model_kw = dict(
        lr=lr,
        radius=run["radius"],
        contact_distance=run["contact_distance"],
        scale_factor=run["scale_factor"],
        beta_scale_factor=beta_scale_factor,
        beta_cap=beta_cap,
        mode=run["mode"],
        layer=run["layer"],
        cluster_key=run["cluster_key"],
        spatial_key=run["spatial_key"],
        cell_thresholds=cell_thresholds,
        co_grn=co_grn,
    )
    local = executor is None or executor == "local"
    is_path = lambda v: isinstance(v, (str, os.PathLike))  # noqa: E731
    if not local and not (is_path(adata) and is_path(betas) and (lr is None or is_path(lr) or isinstance(lr, Mapping))):
        raise InputError("perturb_batch with an executor needs adata, betas and lr given as paths")
    if not local and not (cell_thresholds is None or isinstance(cell_thresholds, bool) or is_path(cell_thresholds)):
        raise InputError("perturb_batch with an executor needs cell_thresholds given as a path (or None / False)")
    if not local and not (co_grn is None or is_path(co_grn)):
        raise InputError("perturb_batch with an executor needs co_grn given as a path")
    key = f"{id(adata)}-{id(betas)}-{os.getpid()}"
    if local:
        _MODELS.clear()
        _MODELS[key] = Perturber(adata, betas, **model_kw)
        model = _MODELS[key]
        for tg in targets:
            source_index(model.tissue, [tg])
    cells_l = None if cells is None else np.asarray(cells).tolist()
    tasks = [
        dict(
            key=key,
            adata=str(adata) if is_path(adata) else None,
            betas=str(betas) if is_path(betas) else None,
            model_kw={k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in model_kw.items()},
            target=tg,
            gene_expr=float(e),
            cells=cells_l,
            n_propagation=int(n_propagation),
            clip=bool(clip),
        )
        for tg, e in zip(targets, exprs)
    ]
    params = {
        "method": "stlr.perturb_batch",
        "targets": list(targets),
        "gene_expr": exprs[0] if len(set(exprs)) == 1 else exprs,
        "n_propagation": int(n_propagation),
        "mode": run["mode"],
        "clip": bool(clip),
        "radius": run["radius"],
        "contact_distance": run["contact_distance"],
        "scale_factor": run["scale_factor"],
        "beta_scale_factor": beta_scale_factor,
        "beta_cap": beta_cap,
        "layer": run["layer"],
        "adata": str(adata) if is_path(adata) else "<AnnData>",
        "betas": str(betas) if is_path(betas) else "<betas>",
        "cells": cells_l,
        "cell_thresholds": _param_repr(cell_thresholds),
        "co_grn": _param_repr(co_grn),
    }
    try:
        return run_to_sink(
            _batch_task,
            tasks,
            out,
            params,
            resume=resume,
            overwrite=overwrite,
            executor=executor,
            progress=progress,
            description="stlr perturb",
        )
    finally:
        if local:
            _MODELS.clear()
