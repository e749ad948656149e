"""Per-cell betas: SpaceTravLR's CNN training modes (``hybrid`` / ``full``).

The seed betas of a cluster (its sparse-group-lasso fit, :mod:`polgen.stlr.train`) are the
*anchors* of a small network that reads each cell's neighbourhood and returns one multiplier per
coefficient: ``beta_cell = anchors * g(map_cell, features_cell)``, fitted so that
``y_cell ~ beta0_cell + x_cell . beta_cell`` (the reference's ``CellularNicheNetwork`` behind
``SpatialCellularProgramsEstimator.fit(num_epochs > 0)``, SpaceTravLR 0.1.21):

- inputs: the cell's ``spatial_dim x spatial_dim`` distance map over the tissue's bounding box
  (:func:`polgen.kernels.stlr_maps.spatial_maps`) and its neighbourhood composition - the number
  of cells of every cluster within ``radius``, min-max scaled per cluster over the tissue;
- network: three blocks ``conv 3x3 'same' (weight-normalised) -> batch norm -> PReLU(0.1) ->
  max-pool 2`` with 16, 32, 64 channels, global average pool; plus an MLP of the composition
  (C -> 16 -> 32 -> 64, PReLU between); their sum goes through ``64 -> 64 -> PReLU -> 1 + p``
  with an identity output, times the anchors (each block's ``PReLU -> max-pool`` runs as
  ``max-pool -> PReLU`` while the PReLU slope is >= 0: the same function at a quarter of the work);
- training, per cluster: mean squared error, Adam (``learning_rate``, default 5e-3, no weight
  decay), gradient norm clipped to 2, mini-batches of ``batch_size`` (512) in a shuffled order,
  each map rotated by a random multiple of 90 degrees; a cluster whose seed R^2 is below
  ``min_r2`` keeps all-zero betas, and one whose last-epoch R^2 of the network is below
  ``score_threshold`` (0.2) has its anchors zeroed (both the reference's rules);
- the training curves - the mean mini-batch loss of every epoch, per gene and cluster - are kept in
  each betadata file's metadata and returned as ``FitResult.losses`` (:func:`read_losses` reads
  them from a fit folder);
- per-cell betas are then computed in one pass over the cluster's cells, unrotated, with batch
  norm using that pass's statistics (the reference leaves the networks in training mode).

``training_mode``: ``"seed"`` keeps the per-cluster betas (no torch needed); ``"full"`` trains the
network for every gene; ``"hybrid"`` (the Rust port's default gate) only for genes whose seed
model leaves spatially structured residuals - every cluster has at least ``min_cells`` (80) cells,
every cluster's lasso converged, the mean seed R^2 is at least ``min_r2``, and Moran's I of the
residuals on the symmetrised 8-nearest-neighbour graph is significant (permutation p <= 0.05,
<= 0.01 above 256 modulators, 99 permutations) - the others keep their per-cluster betas.

Coordinates are 2-D.  With x, y, z (serial sections) the reference switches to 3-D maps, a
Conv3d network and 3-D ligand kernels (``SpatialCellularProgramsEstimator3D``); polgen does not:
such a tissue is refused when it is read (:mod:`polgen.io.spatial`, an InputError naming the
columns), in every training mode, perturbation and transition vectors alike.

PyTorch is the optional extra ``polgen[cnn]``, imported inside the functions that train; without
it ``hybrid`` / ``full`` raise :class:`TorchMissingError` naming the extra.  The training is
seeded: same ``seed``, same gene, same data -> the same betas (torch's CPU kernels).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, get_args

import numpy as np
import polars as pl

from polgen.errors import InputError, MissingExtraError
from polgen.kernels.stlr_maps import neighbour_counts, spatial_maps
from polgen.options import StlrTrainingMode, check_option
from polgen.schema import CELL_ID
from polgen.stlr.betadata import BetaData
from polgen.stlr.tissue import as_tissue

log = logging.getLogger("polgen")

TRAINING_MODES = get_args(StlrTrainingMode)
META_CNN = "polgen.stlr.cnn"  # parquet metadata key of a gene's CNN record (gate, scores, loss curve)
MIN_SPATIAL_DIM = 8  # three 2x2 max-pools
MAP_BYTES_MAX = 2 * 1024**3  # the maps of all cells are held in memory (float32)


class TorchMissingError(MissingExtraError):
    """The CNN training modes need PyTorch: ``pip install "polgen[cnn]"``."""


def require_torch() -> Any:
    """The ``torch`` module, or :class:`TorchMissingError` naming the ``polgen[cnn]`` extra."""
    try:
        import torch
    except ImportError as exc:
        raise TorchMissingError(
            'training_mode="hybrid"/"full" trains a CNN with PyTorch: pip install "polgen[cnn]" '
            "(CPU wheels: pip install torch --index-url https://download.pytorch.org/whl/cpu); "
            'training_mode="seed" needs no torch',
            extra="cnn",
        ) from exc
    return torch


@dataclass(frozen=True)
class CnnOptions:
    """Settings of the CNN training modes (see the module docstring)."""

    training_mode: str = "seed"
    epochs: int = 10
    spatial_dim: int = 32
    learning_rate: float = 5e-3
    batch_size: int = 512
    seed: int = 0
    score_threshold: float = 0.2
    min_cells: int = 80
    moran_k: int = 8
    moran_permutations: int = 99
    moran_p: float = 0.05
    moran_p_many: float = 0.01
    many_modulators: int = 256
    threads: int | None = None  # clusters trained at once (None: the CPU count)

    def params(self) -> dict[str, Any]:
        return asdict(self)


def _int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise InputError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def cnn_options(
    training_mode: StlrTrainingMode = "seed",
    *,
    epochs: int = 10,
    spatial_dim: int = 32,
    learning_rate: float = 5e-3,
    batch_size: int = 512,
    seed: int = 0,
    score_threshold: float = 0.2,
    n_cells: int | None = None,
) -> CnnOptions:
    """Checked :class:`CnnOptions`; ``hybrid`` / ``full`` also check that torch is importable.

    Raises
    ------
    InputError
        ``epochs`` / ``batch_size`` < 1, ``spatial_dim`` < 8, a learning rate that is not a positive
        finite number, an unknown ``training_mode``.
    TorchMissingError
        ``hybrid`` / ``full`` without PyTorch.
    """
    check_option("training_mode", training_mode, StlrTrainingMode)
    opts = CnnOptions(
        training_mode=training_mode,
        epochs=_int("epochs", epochs, 1),
        spatial_dim=_int("spatial_dim", spatial_dim, MIN_SPATIAL_DIM),
        learning_rate=float(learning_rate),
        batch_size=_int("batch_size", batch_size, 1),
        seed=_int("seed", seed, 0),
        score_threshold=float(score_threshold),
    )
    lr_ = learning_rate
    if isinstance(lr_, bool) or not isinstance(lr_, (int, float)) or not np.isfinite(lr_) or lr_ <= 0:
        raise InputError(f"learning_rate must be a positive finite number, got {learning_rate!r}")
    if not np.isfinite(opts.score_threshold):
        raise InputError(f"score_threshold must be finite, got {score_threshold!r}")
    if n_cells is not None and training_mode != "seed":
        check_fits(opts.spatial_dim, n_cells)
    if training_mode != "seed":
        require_torch()
    return opts


def check_fits(spatial_dim: int, n_cells: int) -> None:
    """InputError when the maps of ``n_cells`` cells at ``spatial_dim`` would exceed 2 GiB."""
    d = spatial_dim
    if n_cells * d * d * 4 > MAP_BYTES_MAX:
        raise InputError(
            f"spatial_dim={d} does not fit this tissue: {n_cells} cells x {d}x{d} float32 maps need "
            f"{n_cells * d * d * 4 / 1024**3:.1f} GiB (limit 2 GiB); pass a smaller spatial_dim"
        )


# -- inputs -------------------------------------------------------------------------------------
@dataclass
class SpatialInputs:
    """Per-cell network inputs: ``maps`` (cells, d, d) float32, ``features`` (cells, C) float32."""

    maps: np.ndarray
    features: np.ndarray


def spatial_inputs(
    coords: np.ndarray, clusters: np.ndarray, n_clusters: int, spatial_dim: int, radius: float
) -> SpatialInputs:
    """The distance maps and the min-max scaled neighbourhood composition of every cell.

    Raises
    ------
    InputError
        ``spatial_dim`` below 8 (the network pools three times by 2) or maps of all cells that
        would exceed 2 GiB; coordinates that are not (cells, 2) finite numbers.
    """
    d = _int("spatial_dim", spatial_dim, MIN_SPATIAL_DIM)
    xy = np.asarray(coords, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InputError(
            f"the CNN modes need 2-D coordinates (cells x 2: x, y), got shape {xy.shape}; 3-D tissues (x, y, z) "
            "are not supported (the reference's 3-D maps and Conv3d network are not implemented)",
            column="spatial",
        )
    if not np.isfinite(xy).all():
        raise InputError("coordinates hold NaN/inf", row=int(np.flatnonzero(~np.isfinite(xy).all(1))[0]))
    n = xy.shape[0]
    check_fits(d, n)
    maps = spatial_maps(xy, d, d)
    counts = neighbour_counts(xy, np.asarray(clusters, dtype=np.int64), int(n_clusters), float(radius))
    lo = counts.min(axis=0) if n else np.zeros(n_clusters)
    rng = (counts.max(axis=0) - lo) if n else np.ones(n_clusters)
    rng[rng == 0] = 1.0  # a constant column scales to 0 (sklearn's MinMaxScaler)
    feats = ((counts - lo) / rng).astype(np.float32)
    return SpatialInputs(maps=maps, features=np.ascontiguousarray(feats))


# -- the network ------------------------------------------------------------------------------------
def build_network(torch: Any, n_modulators: int, n_clusters: int, anchors: np.ndarray) -> Any:
    """The reference architecture (module docstring) with ``anchors`` (1 + p) as a buffer."""
    nn = torch.nn
    from torch.nn.utils.parametrizations import weight_norm

    def block(cin: int, cout: int) -> list:
        return [
            weight_norm(nn.Conv2d(cin, cout, kernel_size=3, padding="same")),
            nn.BatchNorm2d(cout),
            nn.PReLU(init=0.1),
            nn.MaxPool2d(kernel_size=2, stride=2),
        ]

    class _Blocks(nn.Sequential):  # type: ignore[name-defined]
        """The reference's layer sequence (same modules, same state-dict keys), run with each
        ``PReLU -> MaxPool`` pair as ``MaxPool -> PReLU`` while the PReLU slope is >= 0: PReLU is
        then non-decreasing, so both orders give the same values (rounding is monotone too) and the
        same gradients (the pooled element is the same), at a quarter of the activations; with a
        negative slope the reference's order runs."""

        def forward(self, x: Any) -> Any:
            mods = list(self)
            i = 0
            while i < len(mods):
                m = mods[i]
                nxt = mods[i + 1] if i + 1 < len(mods) else None
                if isinstance(m, nn.PReLU) and isinstance(nxt, nn.MaxPool2d) and bool((m.weight >= 0).all()):
                    x = m(nxt(x))
                    i += 2
                    continue
                x = m(x)
                i += 1
            return x

    class _NicheNet(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("anchors", torch.from_numpy(np.asarray(anchors, dtype=np.float64)).float())
            self.conv_layers = _Blocks(
                *block(1, 16), *block(16, 32), *block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten()
            )
            self.spatial_features_mlp = nn.Sequential(
                nn.Linear(n_clusters, 16),
                nn.PReLU(init=0.1),
                nn.Linear(16, 32),
                nn.PReLU(init=0.1),
                nn.Linear(32, 64),
            )
            self.mlp = nn.Sequential(nn.Linear(64, 64), nn.PReLU(init=0.1), nn.Linear(64, n_modulators + 1))

        def get_betas(self, maps: Any, feats: Any) -> Any:
            h = self.conv_layers(maps) + self.spatial_features_mlp(feats)
            return self.mlp(h) * self.anchors

        def forward(self, maps: Any, x: Any, feats: Any) -> Any:
            b = self.get_betas(maps, feats)
            return (x * b[:, 1:]).sum(dim=1) + b[:, 0]

    return _NicheNet()


@dataclass
class ClusterFit:
    """One cluster's network: per-cell ``betas`` (cells of the cluster, 1 + p), the loss of every
    mini-batch in order, and the network's R^2 over its last epoch."""

    betas: np.ndarray
    losses: list[float]
    score: float
    zeroed: bool
    batches_per_epoch: int = 0

    @property
    def epoch_losses(self) -> list[float]:
        """Mean mini-batch loss of every epoch (the training curve users check)."""
        return epoch_means(self.losses, self.batches_per_epoch)


def epoch_means(losses: list[float], batches_per_epoch: int) -> list[float]:
    """Per-epoch means of a mini-batch loss curve of ``batches_per_epoch`` batches an epoch."""
    if batches_per_epoch < 1 or not losses:
        return []
    a = np.asarray(losses, dtype=np.float64)
    return [float(v) for v in a.reshape(-1, batches_per_epoch).mean(axis=1)]


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    sst = float(((y - y.mean()) ** 2).sum())
    sse = float(((y - p) ** 2).sum())
    if sst == 0:
        return 1.0 if sse == 0 else 0.0  # sklearn's r2_score convention for a constant target
    return 1.0 - sse / sst


_INIT_LOCK = threading.Lock()


@contextmanager
def _one_torch_thread(torch: Any) -> Iterator[None]:
    """Torch's intra-op threads set to 1 (mini-batches of a few hundred small maps: OpenMP threads
    cost more than they give, 20x on a busy machine); clusters run on Python threads instead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_cluster(
    maps: np.ndarray,
    features: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    anchors: np.ndarray,
    opts: CnnOptions,
    seed: int,
) -> ClusterFit:
    """Train one cluster's network (module docstring) and return its per-cell betas.

    ``maps`` (n, d, d) float32, ``features`` (n, C) float32, ``X`` (n, p), ``y`` (n,),
    ``anchors`` (1 + p): the cluster's seed betas.  ``seed`` fixes the initial weights, the batch
    order and the rotations.
    """
    torch = require_torch()
    with _one_torch_thread(torch):  # OpenMP's thread count is per thread: set it in the thread that trains
        return _train(torch, maps, features, X, y, anchors, opts, seed)


def _train(torch: Any, maps, features, X, y, anchors, opts: CnnOptions, seed: int) -> ClusterFit:
    n = X.shape[0]
    with _INIT_LOCK:  # the initial weights come from torch's global generator: one network at a time
        torch.manual_seed(seed)
        net = build_network(torch, X.shape[1], features.shape[1], anchors)
    gen = torch.Generator().manual_seed(seed)
    rot = np.random.default_rng(seed)
    tm = torch.from_numpy(np.ascontiguousarray(maps[:, None, :, :], dtype=np.float32))
    tf = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    tx = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    ty = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    opt = torch.optim.Adam(net.parameters(), lr=opts.learning_rate, weight_decay=0)
    crit = torch.nn.MSELoss()
    losses: list[float] = []
    last_true: list[np.ndarray] = []
    last_pred: list[np.ndarray] = []
    for _epoch in range(opts.epochs):
        net.train()
        last_true, last_pred = [], []
        order = torch.randperm(n, generator=gen)
        for lo in range(0, n, opts.batch_size):
            idx = order[lo : lo + opts.batch_size]
            ks = rot.integers(0, 4, size=len(idx))
            mb = tm[idx]
            for k in (1, 2, 3):
                sel = np.flatnonzero(ks == k)
                if len(sel):
                    s = torch.from_numpy(sel)
                    mb[s] = torch.rot90(mb[s], k, dims=(2, 3))
            opt.zero_grad()
            out = net(mb, tx[idx], tf[idx])
            loss = crit(out, ty[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm=2.0, norm_type=2)
            opt.step()
            losses.append(float(loss.item()))
            last_true.append(ty[idx].numpy())
            last_pred.append(out.detach().numpy())
    score = _r2(np.concatenate(last_true).astype(np.float64), np.concatenate(last_pred).astype(np.float64))
    zeroed = not score >= opts.score_threshold
    per_epoch = -(-n // opts.batch_size)
    if zeroed:
        b = np.zeros((n, X.shape[1] + 1))
    else:
        with torch.no_grad():
            b = net.get_betas(tm, tf).numpy().astype(np.float64)
    return ClusterFit(betas=b, losses=losses, score=score, zeroed=zeroed, batches_per_epoch=per_epoch)


# -- the hybrid gate ---------------------------------------------------------------------------------
def knn_edges(coords: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Both directions of every edge of the symmetrised ``k``-nearest-neighbour graph (no self loops)."""
    from scipy.spatial import cKDTree

    n = coords.shape[0]
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    kk = min(k, n - 1)
    _, nb = cKDTree(coords).query(coords, k=kk + 1)
    rows = np.repeat(np.arange(n), kk + 1)
    cols = nb.reshape(-1)
    keep = rows != cols
    a, b = np.minimum(rows[keep], cols[keep]), np.maximum(rows[keep], cols[keep])
    pairs = np.unique(a * n + b)
    a, b = pairs // n, pairs % n
    return np.concatenate([a, b]), np.concatenate([b, a])


def morans_i(e: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Moran's I of each row of ``e`` (k, n) on the binary graph ``rows -> cols``."""
    e = np.atleast_2d(e)
    z = e - e.mean(axis=1, keepdims=True)
    v = (z * z).sum(axis=1)
    s0 = len(rows)
    out = np.zeros(e.shape[0])
    if s0 == 0:
        return out
    cross = (z[:, rows] * z[:, cols]).sum(axis=1)
    ok = v > 1e-18
    out[ok] = e.shape[1] / s0 * cross[ok] / v[ok]
    return out


def hybrid_gate(
    coords: np.ndarray,
    residuals: np.ndarray,
    n_cells: np.ndarray,
    r2: np.ndarray,
    converged: np.ndarray,
    n_modulators: int,
    min_r2: float,
    opts: CnnOptions,
    seed: int,
) -> tuple[bool, str, float, float]:
    """``(train the CNN?, reason, Moran's I, permutation p)`` of one gene (module docstring)."""
    rows, cols = knn_edges(np.asarray(coords, dtype=np.float64), opts.moran_k)
    i_obs = float(morans_i(residuals, rows, cols)[0])
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(residuals) for _ in range(opts.moran_permutations)])
    i_perm = morans_i(perms, rows, cols)
    p = (1 + int((np.abs(i_perm) >= abs(i_obs) - 1e-15).sum())) / (1 + opts.moran_permutations)
    smallest = int(n_cells.min()) if len(n_cells) else 0
    if smallest < opts.min_cells:
        return False, f"smallest cluster has {smallest} < {opts.min_cells} cells", i_obs, p
    if not bool(np.all(converged)):
        return False, "the seed lasso did not converge in every cluster", i_obs, p
    mean_r2 = float(np.nanmean(r2)) if len(r2) else 0.0
    if not mean_r2 >= min_r2:
        return False, f"mean seed R^2 {mean_r2:.4f} < {min_r2:g}", i_obs, p
    p_max = opts.moran_p_many if n_modulators > opts.many_modulators else opts.moran_p
    if p > p_max:
        return False, f"residuals not spatially structured (Moran's I {i_obs:.4g}, p {p:.3g} > {p_max:g})", i_obs, p
    return True, f"Moran's I {i_obs:.4g}, p {p:.3g}", i_obs, p


# -- one gene ---------------------------------------------------------------------------------------
def gene_seed(seed: int, gene: str) -> int:
    """The training seed of one gene: independent of the order and executor genes run in."""
    return (int(seed) * 1_000_003 + zlib.crc32(gene.encode())) % (2**31 - 1)


def cell_betas(
    seed_betas: BetaData,
    X: np.ndarray,
    y: np.ndarray,
    clusters: np.ndarray,
    inputs: SpatialInputs,
    obs_names: list[str],
    opts: CnnOptions,
    *,
    coords: np.ndarray | None = None,
    diag: list | None = None,
    min_r2: float = 0.15,
) -> tuple[BetaData, dict[str, Any]]:
    """Per-cell betadata of one gene from its per-cluster ``seed_betas`` (rows in cluster-code order),
    design ``X`` (cells x p, columns as ``seed_betas.columns[1:]``) and target ``y``.

    Returns ``(betadata, record)``: the betadata has ``CellID`` rows (``seed_betas`` itself when the
    hybrid gate declines or ``training_mode="seed"``); the record holds the gate decision and, per
    cluster, the network's score, whether its anchors were zeroed, the mini-batch loss curve
    (``losses``) and its per-epoch means (``epoch_losses``; :func:`epoch_losses` makes a frame of them).
    """
    gene = seed_betas.gene
    record: dict[str, Any] = {"training_mode": opts.training_mode, "cnn": False, "clusters": {}}
    if opts.training_mode == "seed":
        return seed_betas, record
    if X.shape != (len(y), seed_betas.values.shape[1] - 1):
        raise InputError(
            f"design of {gene} has shape {X.shape}; betadata has {seed_betas.values.shape[1] - 1} modulators"
        )
    s = gene_seed(opts.seed, gene)
    if opts.training_mode == "hybrid":
        if coords is None or diag is None:
            raise InputError("the hybrid gate needs the coordinates and the seed fit's per-cluster diagnostics")
        B = seed_betas.values
        pred = B[clusters, 0] + np.einsum("ij,ij->i", X, B[clusters, 1:])
        n_cells = np.array([d[5] for d in diag])
        r2 = np.array([d[1] for d in diag], dtype=np.float64)
        conv = np.array([bool(d[3]) or bool(d[6]) for d in diag])
        ok, reason, i_obs, p = hybrid_gate(coords, y - pred, n_cells, r2, conv, X.shape[1], min_r2, opts, s)
        record.update(gate=reason, morans_i=i_obs, moran_p=p)
        if not ok:
            log.info("stlr fit: %s keeps its per-cluster betas (hybrid gate: %s)", gene, reason)
            return seed_betas, record
    out = np.zeros((len(y), seed_betas.values.shape[1]))
    jobs = []
    for c, label in enumerate(seed_betas.ids):
        m = np.flatnonzero(clusters == c)
        if len(m) == 0:
            continue
        if not np.any(seed_betas.values[c]):  # R^2 < min_r2: the reference's zero-anchor network gives zeros
            record["clusters"][label] = {"score": None, "zeroed": True, "losses": [], "epoch_losses": []}
            continue
        jobs.append((c, label, m))
    torch = require_torch()

    def one(job: tuple[int, str, np.ndarray]) -> ClusterFit:
        c, _, m = job
        return train_cluster(inputs.maps[m], inputs.features[m], X[m], y[m], seed_betas.values[c], opts, s + c)

    workers = max(1, min(len(jobs), opts.threads or (os.cpu_count() or 1)))
    with _one_torch_thread(torch), ThreadPoolExecutor(max_workers=workers) as pool:
        fits = list(pool.map(one, jobs))  # each cluster's result depends only on its seed: same at any width
    for (_, label, m), fit in zip(jobs, fits):
        out[m] = fit.betas
        record["clusters"][label] = {
            "score": fit.score,
            "zeroed": fit.zeroed,
            "losses": fit.losses,
            "epoch_losses": fit.epoch_losses,
        }
    record["cnn"] = True
    bd = BetaData(gene=gene, id_kind=CELL_ID, ids=list(obs_names), columns=list(seed_betas.columns), values=out)
    return bd, record


def loss_curves(records: dict[str, dict[str, Any]]) -> pl.DataFrame:
    """Long frame ``gene, cluster, step, loss`` of the CNN records of :func:`cell_betas` (by gene)."""
    rows = [
        (g, c, k, float(v))
        for g, rec in records.items()
        for c, cl in rec.get("clusters", {}).items()
        for k, v in enumerate(cl.get("losses", []))
    ]
    return pl.DataFrame(
        rows, schema={"gene": pl.String, "cluster": pl.String, "step": pl.Int64, "loss": pl.Float64}, orient="row"
    )


LOSS_SCHEMA = {
    "gene": pl.String,
    "cluster": pl.String,
    "epoch": pl.Int64,
    "loss": pl.Float64,
    "score": pl.Float64,
    "zeroed": pl.Boolean,
}


def epoch_losses(records: dict[str, dict[str, Any]]) -> pl.DataFrame:
    """Long frame ``gene, cluster, epoch, loss, score, zeroed`` of the CNN records (by gene): the
    mean mini-batch training loss (MSE) of every epoch (``epoch`` from 1), the network's R^2 over
    its last epoch and whether its anchors were zeroed (R^2 below ``score_threshold``).  Genes the
    hybrid gate kept per-cluster and clusters with zero seed betas have no rows."""
    rows = [
        (g, c, k + 1, float(v), cl.get("score"), bool(cl.get("zeroed")))
        for g, rec in sorted(records.items())
        for c, cl in rec.get("clusters", {}).items()
        for k, v in enumerate(cl.get("epoch_losses", []))
    ]
    return pl.DataFrame(rows, schema=LOSS_SCHEMA, orient="row")


def read_losses(folder: str | os.PathLike, genes: list[str] | None = None) -> pl.DataFrame:
    """:func:`epoch_losses` of a fit folder, read from its betadata files' metadata (``genes``:
    only these)."""
    recs = read_cnn_records(str(folder))
    if genes is not None:
        keep = set(genes)
        recs = {g: r for g, r in recs.items() if g in keep}
    return epoch_losses(recs)


def read_cnn_records(folder: str) -> dict[str, dict[str, Any]]:
    """The CNN record of every betadata file of a fit folder (from its parquet metadata), by gene."""
    import glob
    import os

    import pyarrow.parquet as pq

    out: dict[str, dict[str, Any]] = {}
    for f in sorted(glob.glob(os.path.join(folder, "*_betadata.parquet"))):
        md = pq.read_schema(f).metadata or {}
        raw = md.get(META_CNN.encode())
        if raw is not None:
            out[os.path.basename(f)[: -len("_betadata.parquet")]] = json.loads(raw)
    return out


# -- the engine task's side (polgen.stlr.train calls this) -------------------------------------------
_INPUTS: dict[str, tuple[SpatialInputs, np.ndarray, list[str]]] = {}


def task_cell_betas(
    spec: dict, ctx: Any, seed_betas: BetaData, diag: list, gene: str
) -> tuple[BetaData, dict[str, str]]:
    """Per-cell betas of ``gene`` inside a ``stlr.fit`` task; returns the betadata and the parquet
    metadata (``polgen.stlr.cnn``: the record of :func:`cell_betas`) to write with it."""
    p = spec["params"]
    opts = CnnOptions(**p["cnn"])
    if opts.training_mode == "seed":
        return seed_betas, {}
    key = spec["key"]
    hit = _INPUTS.get(key)
    if hit is None:
        t = as_tissue(spec["adata"], layer=p["layer"], cluster_key=p["cluster_key"], spatial_key=p["spatial_key"])
        clusters, labels = t.require_clusters()
        inp = spatial_inputs(t.coords, clusters, len(labels), opts.spatial_dim, p["radius"])
        _INPUTS.clear()
        hit = _INPUTS[key] = (inp, np.asarray(t.coords, dtype=np.float64), list(t.obs_names))
    inp, coords, obs = hit
    mods = ctx.modulators(gene)
    X = ctx.design(mods)
    y = ctx.X[:, ctx.gidx[gene]]
    bd, rec = cell_betas(seed_betas, X, y, ctx.clusters, inp, obs, opts, coords=coords, diag=diag, min_r2=p["min_r2"])
    return bd, {META_CNN: json.dumps(rec)}
