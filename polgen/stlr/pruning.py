"""CellOracle-style pruning of a base GRN: per-cluster bagging-ridge links with p-values.

SpaceTravLR's reference builds its TF links with CellOracle (``Oracle.get_links(alpha=...)`` then
``Links.filter_links()``) and trains each gene on the regulators with ``p < 0.05`` in any cluster.
:func:`prune_links` computes the same per-cluster links table from an expression layer and a base
GRN; :func:`filter_links` is CellOracle's ``filter_links`` (p-value cut, then the top links by a
weight).  The result feeds ``fit(grn=...)`` directly (its ``p`` column is honoured there).

Per cluster and target gene (CellOracle's ``get_bagging_ridge_coefs`` / ``_get_stats_df_bagging_ridge``):

* regulators: the target's base-GRN TFs present in the data, the target itself removed, in sorted
  order (CellOracle takes Python set order, which depends on the hash seed; sorted is one of the
  orders it can take, and the one the parity fixture fixes);
* design: the expression of every cell divided by its per-gene population standard deviation over
  *all* cells (``StandardScaler(with_mean=False)``; a constant gene keeps scale 1), restricted to
  the cluster and rounded to float32, as CellOracle's ``Net`` does; response: the unscaled float32
  expression of the target;
* ``bagging_number`` ridge fits (``Ridge(alpha)`` with intercept), each on ``max(1, int(0.8 p))``
  of the p regulators drawn without replacement and a bootstrap of the cells (as counts, i.e.
  sample weights), with scikit-learn's ``BaggingRegressor(random_state=123)`` draws: estimator
  seeds ``RandomState(123).randint(2**31 - 1, size=B)``, then per estimator
  ``RandomState(seed).permutation(p)[:k]`` for the regulators (scikit-learn >= 1.6's
  ``sample_without_replacement``) and ``randint(0, n, n)`` for the cells;
* per regulator over the fits that drew it: ``coef_mean``, ``coef_abs = |coef_mean|``, the
  one-sample t-test p-value against 0 (two-sided, n - 1 degrees of freedom; NaN with fewer than
  two fits) and ``-logp = -log10(p)`` (0 where p is NaN).

The ridge solves run in float64 on the float32 data; scikit-learn solves in float32: against
CellOracle's own output the coefficients agree to 1.3e-7 (relative to the largest) and the p-values
to 7.3e-6 relative (tests/stlr/test_stlr_pruning.py).  The bagging draws are scikit-learn 1.9.1's
(the reference venv's); older scikit-learn versions drew the regulators differently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import polars as pl

from polgen.errors import InputError
from polgen.stlr.grn import as_links
from polgen.stlr.tissue import as_tissue

log = logging.getLogger("polgen")

#: scikit-learn's bagging seed bound (``np.iinfo(np.int32).max``)
_MAX_INT = np.iinfo(np.int32).max
LINK_COLUMNS = ("cluster", "source", "target", "coef_mean", "coef_abs", "p", "-logp")


def bagging_draws(n_cells: int, n_regulators: int, bagging_number: int, random_state: int = 123):
    """``[(regulator positions, cell counts)]`` of scikit-learn's ``BaggingRegressor(bootstrap=True,
    max_features=0.8, random_state=random_state)`` on an ``n_cells x n_regulators`` design."""
    k = max(1, int(0.8 * n_regulators))
    seeds = np.random.RandomState(random_state).randint(_MAX_INT, size=bagging_number)
    out = []
    for s in seeds:
        rs = np.random.RandomState(s)
        feats = rs.permutation(n_regulators)[:k]
        cells = rs.randint(0, n_cells, n_cells)
        out.append((feats, np.bincount(cells, minlength=n_cells).astype(np.float64)))
    return out


#: the draws depend only on the design's shape: every target of a cluster with as many regulators shares them
_cached_draws = lru_cache(maxsize=512)(bagging_draws)


def _weighted_ridge(X: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge coefficients with an unpenalised intercept and sample weights ``w``."""
    sw = w.sum()
    xm = (w @ X) / sw
    ym = (w @ y) / sw
    Xc = X - xm
    A = Xc.T @ (w[:, None] * Xc)
    A[np.diag_indices_from(A)] += alpha
    return np.linalg.solve(A, Xc.T @ (w * (y - ym)))


def _scale(X: np.ndarray) -> np.ndarray:
    """StandardScaler(with_mean=False)'s scale: the population sd, 1 for constant genes."""
    n = X.shape[0]
    mean = X.mean(axis=0)
    var = X.var(axis=0)
    eps = np.finfo(np.float64).eps
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    sd = np.sqrt(var)
    sd[constant | (sd == 0)] = 1.0
    return sd


def _stats(coefs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per column of ``coefs`` (fits x regulators, NaN where not drawn): mean, |mean|, t-test p, -log10 p."""
    from scipy import stats

    drawn = ~np.isnan(coefs)
    m = drawn.sum(axis=0)
    mean = np.nansum(coefs, axis=0) / np.maximum(m, 1)
    dev = np.where(drawn, coefs - mean, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt((dev**2).sum(axis=0) / (m - 1))
        t = mean / (sd / np.sqrt(m))
        p = 2.0 * stats.t.sf(np.abs(t), m - 1)
    p = np.where(m >= 2, p, np.nan)
    logp = -np.log10(np.where(np.isnan(p), 1.0, p))
    return mean, np.abs(mean), p, logp


def prune_links(
    adata,
    grn,
    *,
    alpha: float = 10.0,
    bagging_number: int = 20,
    layer: str | None = None,
    cluster_key=None,
    targets: Sequence[str] | None = None,
    random_state: int = 123,
) -> pl.DataFrame:
    """Per-cluster TF -> target links of a base GRN with bagging-ridge p-values (CellOracle's ``get_links``).

    Parameters
    ----------
    adata
        AnnData / .h5ad path / SpatialData; ``layer`` (default ``imputed_count`` when present, as
        CellOracle) is the expression; clusters from ``cluster_key`` (default: detected).
    grn
        Base GRN: links table (``source``, ``target``), CellOracle base GRN (peak x TF 0/1 with
        ``gene_short_name``), a path to either, or a ``{target: [TFs]}`` mapping.
    alpha, bagging_number
        Ridge penalty and number of bagged fits (CellOracle's ``get_links`` defaults 10 and 20;
        SpaceTravLR's ``run_celloracle_`` passes alpha 5).
    targets
        Genes to fit (default: every gene of the data with a base-GRN regulator in it).
    random_state
        The bagging seed (CellOracle: 123).

    Returns
    -------
    polars.DataFrame
        ``cluster, source, target, coef_mean, coef_abs, p, -logp``, clusters in sorted label order,
        targets sorted, regulators sorted; a regulator never drawn for a target has no row.
    """
    if not (isinstance(alpha, (int, float)) and np.isfinite(alpha) and alpha > 0):
        raise InputError(f"alpha must be a positive number, got {alpha!r}")
    if isinstance(bagging_number, bool) or not isinstance(bagging_number, (int, np.integer)) or bagging_number < 1:
        raise InputError(f"bagging_number must be a whole number >= 1, got {bagging_number!r}")
    links = as_links(grn)
    t = as_tissue(adata, layer=layer, cluster_key=cluster_key)
    clusters, labels = t.require_clusters()
    gidx = {g: i for i, g in enumerate(t.var_names)}
    tfdict: dict[str, list[str]] = {}
    for s, g in zip(links["source"].to_list(), links["target"].to_list()):
        if s is not None and g is not None:
            tfdict.setdefault(str(g), []).append(str(s))
    if targets is None:
        genes = sorted(g for g in tfdict if g in gidx)
    else:
        missing = [g for g in targets if g not in gidx]
        if missing:
            raise InputError(f"{len(missing)} target gene(s) not in var_names: {missing[:10]}", column=str(missing[0]))
        genes = sorted(set(targets))
    regs = {g: sorted({r for r in tfdict.get(g, []) if r in gidx and r != g}) for g in genes}
    genes = [g for g in genes if regs[g]]
    if not genes:
        log.warning("prune_links: no target gene has a base-GRN regulator in the data")
    Xs = (t.X / _scale(t.X)).astype(np.float32).astype(np.float64)
    X32 = t.X.astype(np.float32).astype(np.float64)
    rows: dict[str, list] = {c: [] for c in LINK_COLUMNS}
    order = sorted(range(len(labels)), key=lambda c: labels[c])
    for c in order:
        cells = np.flatnonzero(clusters == c)
        if cells.size == 0:
            continue
        Xc, Yc = Xs[cells], X32[cells]
        for g in genes:
            cols = np.array([gidx[r] for r in regs[g]], dtype=np.int64)
            D, y = Xc[:, cols], Yc[:, gidx[g]]
            coefs = np.full((bagging_number, cols.size), np.nan)
            for b, (feats, w) in enumerate(_cached_draws(cells.size, cols.size, bagging_number, random_state)):
                coefs[b, feats] = _weighted_ridge(D[:, feats], y, w, float(alpha))
            seen = ~np.isnan(coefs).all(axis=0)
            mean, absm, p, logp = _stats(coefs[:, seen])
            src = [r for r, s in zip(regs[g], seen) if s]
            rows["cluster"] += [labels[c]] * len(src)
            rows["source"] += src
            rows["target"] += [g] * len(src)
            for name, v in (("coef_mean", mean), ("coef_abs", absm), ("p", p), ("-logp", logp)):
                rows[name] += v.tolist()
    schema = {c: (pl.String if c in ("cluster", "source", "target") else pl.Float64) for c in LINK_COLUMNS}
    return pl.DataFrame(rows, schema=schema)


def filter_links(
    links: pl.DataFrame, *, p: float | None = 0.001, weight: str = "coef_abs", threshold_number: int | None = 10000
) -> pl.DataFrame:
    """CellOracle's ``Links.filter_links``: per cluster, the links with ``p <= p`` (None: all), the
    ``threshold_number`` largest by ``weight`` (None: all), largest first."""
    for c in ("cluster", weight) + (("p",) if p is not None else ()):
        if c not in links.columns:
            raise InputError(f"links lack column {c!r} (make them with prune_links)", column=c)
    parts = []
    for cl in links["cluster"].unique(maintain_order=True).to_list():
        li = links.filter(pl.col("cluster") == cl)
        if p is not None:
            li = li.filter(pl.col("p") <= float(p))
        li = li.sort(weight, descending=True, maintain_order=True)
        if threshold_number is not None:
            li = li.head(int(threshold_number))
        parts.append(li)
    return pl.concat(parts) if parts else links.clear()


__all__ = ["prune_links", "filter_links", "bagging_draws", "LINK_COLUMNS"]
