"""Multivariable high-definition likelihood (HDL) exactly as R GenomicSEM's ``hdl()`` computes it.

HDL (Ning, Pawitan & Shen, Nature Genetics 2020) fits heritability and genetic covariance by full
likelihood in the eigen-space of each LD piece of a reference panel (:mod:`polgen.io.hdl_panel`).
For every trait the munged statistics are kept on the panel's SNP list with a non-missing Z
(``Z = b / se`` when Z is absent); ``N`` is their median, and per piece ``bhat = Z / sqrt(N)``
(per-SNP N), sign-flipped where the trait's A2 differs from the panel's, zero for panel SNPs the
trait lacks, and ``bstar = V' bhat``.  Then, in R's order over the cells of ``vech(S)``:

* per piece, a weighted least-squares slope of ``bhat^2`` (``bhat1 bhat2``) on the LD scores,
  times the piece's M, starts R ``optim``'s L-BFGS-B on the HDL likelihood
  (:mod:`polgen.kernels.hdl`) over ``(h2, intercept)`` in ``[0, 1] x [0, 10]`` or, for a pair,
  ``(h12, rho)`` in ``[-1, 1] x [-10, 10]`` given the two traits' piece fits (start
  ``rho12 = cor(Z1, Z2)``; ``N0 = min`` of both traits' N, ``p = N0 / N``);
* ``method="piecewise"`` (GenomicSEM's default): ``S`` = sum of the piece estimates, ``I`` = their
  mean, and the pieces' delete-one sums ``P / (P - 1) * sum_{-i}`` as replicates;
* ``method="jackknife"`` (HDL's own): one genome-wide fit (start: the sum of the piece fits,
  ``M = sum(nsnps.list)``) gives ``S`` and ``I``, and each leave-one-piece-out refit (started at it)
  is a replicate;
* ``V = cov(replicates) * (P - 1)``; liability scaling as in :func:`polgen.gsem.ldsc.ldsc`.

The optimiser is R's: L-BFGS-B version 2.3 with ``optim``'s settings (memory 5, ``factr = 1e7``,
``pgtol = 0``, ``maxit = 100``) and R's numerical gradient (central differences, step 1e-3, one-sided
at a bound), ported to numba in :mod:`polgen.kernels.lbfgsb_r` (scipy's version 3.0 projects where
2.3 truncates and stops elsewhere when a bound is met).  Agreement with R, and its limit: R's
own answer is not determined to 1e-6.  Rerun on inputs perturbed by 1e-14 (relative, every Z) or with
its objective summed in another order, R's ``hdl()`` moves its totals in a 3-trait piecewise run by
8e-5 (S) and 4e-3 (V) in the median rerun and by up to 6e-2 and 0.8 in the worst of eleven
(tests/data/gsem/hdl_spread/); the same perturbations move polgen's as much.  The objective is not
the cause (the kernels reproduce R's evaluations bit for bit but for 1-ulp differences in 1e-4 of
them, R summing in extended precision); the optimiser is: on a flat piece likelihood R's numerical
gradient (step 1e-3, as large as a piece's h2) is no descent direction near the optimum, and
rounding-level differences in the first steps (the first generalized Cauchy point cancels terms of
size |g|^2) decide at which of a few points the line search stalls.  Where R is determined (77% of
the piece values of that run) polgen matches it to 1e-7; elsewhere it ends at a point R itself ends
at under such a perturbation, and its totals are as close to R's as a typical R rerun.  Per-piece fits and jackknife
refits run GIL-free on threads.  R reads the ``N`` of the result nowhere; here ``N`` holds the sample
size of each cell (median N, ``sqrt(N1 N2)`` for pairs) and ``m`` the panel's SNP count.  Unlike R,
a chromosome with no piece is skipped (R loops over 1:22 and breaks), piece files are matched exactly
(R's ``grep("chr1.1.*rda")`` also matches piece 10) and the jackknife's retry from other starting
values uses the traits' fitted heritabilities (R's refers to undefined ``h11``/``h22``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from polgen.errors import ConvergenceError, InputError, ModelError, SchemaError
from polgen.gsem.covstruc import CovStruc
from polgen.gsem.ldsc import Munged, _normalise_munged, _per_trait, liability_factor, liability_scale
from polgen.io.hdl_panel import HDLPanel, open_hdl_panel
from polgen.io.sumstats import read_sumstats
from polgen.kernels._threads import run_chunks
from polgen.kernels.lbfgsb_r import lbfgsb_r, loo_fits, piece_fits
from polgen.options import HDLMethod, check_option

log = logging.getLogger("polgen")

__all__ = ["hdl"]

_LIM = math.exp(-18)
_H2_BOX = (np.array([0.0, 0.0]), np.array([1.0, 10.0]))
_GCOV_BOX = (np.array([-1.0, -10.0]), np.array([1.0, 10.0]))


@dataclass
class _Trait:
    label: str
    frame: pl.DataFrame  # SNP, A2, b (= Z / sqrt(N)), Z
    n_med: float
    n_min: float
    k: int


def _load_trait(obj, label: str, snp_list: pl.Series) -> _Trait:
    try:
        df = read_sumstats(obj, required=("SNP",), what="munged file")
    except InputError as exc:
        if exc.path is None:
            exc.path = label
            exc.args = (exc._render(),)
        raise
    for col in ("N", "A2"):
        if col not in df.columns:
            why = "per-SNP sample sizes" if col == "N" else "the allele that orients Z against the panel"
            raise SchemaError(f"munged file has no {col} column (HDL needs {why})", path=label, column=col)
    if "Z" not in df.columns:
        if "BETA" in df.columns and "SE" in df.columns:
            df = df.with_columns((pl.col("BETA") / pl.col("SE")).alias("Z"))
        else:
            raise SchemaError("munged file has no Z column and no b and se to compute it", path=label, column="Z")
    df = df.select("SNP", "A2", pl.col("N").cast(pl.Float64), pl.col("Z").cast(pl.Float64))
    df = df.filter(pl.col("SNP").is_in(snp_list.implode()))
    if df.height == 0:
        raise InputError("no SNP of the munged file is in the HDL panel's SNP list", path=label, column="SNP")
    bad_n = df.filter(pl.col("N").is_null() | pl.col("N").is_nan() | (pl.col("N") <= 0))
    if bad_n.height:
        raise InputError(
            f"missing or non-positive N for {bad_n.height} panel SNPs (first {bad_n['SNP'][0]})", path=label, column="N"
        )
    n_min = float(df["N"].min())  # type: ignore[arg-type]  # R: min over all panel SNPs, before the Z filter
    df = df.filter(pl.col("Z").is_not_null() & pl.col("Z").is_not_nan())
    if df.height == 0:
        raise InputError("no SNP of the HDL panel has a non-missing Z", path=label, column="Z")
    if df["A2"].null_count():
        raise InputError(f"{df['A2'].null_count()} panel SNPs have a missing A2 allele", path=label, column="A2")
    k = df.height
    pct = 100 * k / max(snp_list.len(), 1)
    log.info("%d out of %d (%.2f%%) panel SNPs are available in %s", k, snp_list.len(), pct, label)
    if k < snp_list.len() * 0.99:
        log.warning(
            "more than 1%% of the HDL panel's SNPs are missing from %s: this may bias the estimates "
            "(is it the right reference panel?)",
            label,
        )
    n_med = float(df["N"].median())  # type: ignore[arg-type]
    frame = df.with_columns((pl.col("Z") / pl.col("N").sqrt()).alias("b")).unique(
        "SNP", keep="last", maintain_order=True
    )
    return _Trait(label, frame.select("SNP", "A2", "b", "Z"), n_med, n_min, k)


def _wslope(x: np.ndarray, Y: np.ndarray, W: np.ndarray | None) -> np.ndarray:
    """Slope of each column of Y on x (weighted least squares with column weights W, else OLS)."""
    if W is None:
        xc = x - x.mean()
        return xc @ (Y - Y.mean(axis=0)) / (xc @ xc)
    sw = W.sum(axis=0)
    xm = (W * x[:, None]).sum(axis=0) / sw
    ym = (W * Y).sum(axis=0) / sw
    xc = x[:, None] - xm
    return (W * xc * (Y - ym)).sum(axis=0) / (W * xc * xc).sum(axis=0)


@dataclass
class _Pieces:
    lam: np.ndarray  # K, all pieces' eigenvalues concatenated
    bstar: np.ndarray  # T x K
    offsets: np.ndarray  # P + 1
    m: np.ndarray  # SNPs per piece (length of LDsc)
    start_diag: np.ndarray  # P x T
    start_pair: np.ndarray  # P x pairs


def _stream_pieces(panel: HDLPanel, traits: list[_Trait], pairs, rho, n0) -> _Pieces:
    T = len(traits)
    lams, bstars, ms, sd, sp = [], [], [], [], []
    n1 = np.array([t.n_med for t in traits])
    # one join per trait over the whole panel; per piece, rows [cut[t][i], cut[t][i+1]) of trait t
    table = panel.snp_table()
    hits = []
    for tr in traits:
        j = table.join(tr.frame.select("SNP", "A2", "b"), on="SNP", how="inner").sort("piece", "row")
        sign = np.where((j["A2"] == j["A2_right"]).to_numpy(), 1.0, -1.0)
        pc_idx = j["piece"].to_numpy()
        cut = np.searchsorted(pc_idx, np.arange(panel.n_pieces + 1))
        hits.append((j["row"].to_numpy(), j["b"].to_numpy() * sign, cut))
    for i, pc in enumerate(panel):
        M = pc.ldsc.shape[0]
        B = np.zeros((M, T))
        for t, (rows, vals, cut) in enumerate(hits):
            B[rows[cut[i] : cut[i + 1]], t] = vals[cut[i] : cut[i + 1]]
        x = pc.ldsc
        A = B * B
        h_ols = _wslope(x, A, None) * M
        hv = (h_ols * x[:, None] / M + 1.0 / n1) ** 2
        sd.append(_wslope(x, A, 1.0 / hv) * M)
        if pairs:
            P12 = np.stack([B[:, a] * B[:, b] for a, b in pairs], axis=1)
            h12_ols = _wslope(x, P12, None) * M
            cols = []
            for q, (a, b) in enumerate(pairs):
                p1, p2 = n0[q] / n1[a], n0[q] / n1[b]
                extra = p1 * p2 * rho[q] / n0[q] if n0[q] > 0 else 0.0
                cols.append(np.sqrt(hv[:, a] * hv[:, b]) + (h12_ols[q] * x / M + extra) ** 2)
            sp.append(_wslope(x, P12, 1.0 / np.stack(cols, axis=1)) * M)
        lams.append(pc.lam)
        bstars.append(pc.V.T @ B)
        ms.append(M)
    sizes = np.array([a.shape[0] for a in lams])
    return _Pieces(
        lam=np.ascontiguousarray(np.concatenate(lams)),
        bstar=np.ascontiguousarray(np.concatenate(bstars, axis=0).T),
        offsets=np.concatenate([[0], np.cumsum(sizes)]),
        m=np.asarray(ms, dtype=np.float64),
        start_diag=np.asarray(sd).reshape(len(lams), T),
        start_pair=np.asarray(sp).reshape(len(lams), len(pairs)),
    )


def _optim(kind: int, x0, box, p, lam, b1, b2, skip=(0, 0)) -> tuple[np.ndarray, int]:
    """R ``optim(x0, fn, method = "L-BFGS-B", lower, upper)`` with R's numerical gradient on the HDL
    objective ``kind`` (0: heritability, 1: genetic covariance; :mod:`polgen.kernels.lbfgsb_r`)."""
    lo, up = box
    x0 = np.asarray(x0, dtype=np.float64)
    if not np.all(np.isfinite(x0)):
        raise ModelError(f"HDL optimisation start {x0.tolist()} is not finite (a piece without signal?)")
    x, _, status = lbfgsb_r(kind, x0, lo, up, np.asarray(p, dtype=np.float64), lam, b1, b2, skip[0], skip[1])
    return x, int(status)


def _pieces(kind: int, starts, box, params, lam, b1, b2, offsets) -> np.ndarray:
    """Every piece's fit from its start (``P x 2``: estimate, intercept), on threads."""
    starts = np.ascontiguousarray(starts, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(starts).all(axis=1))
    if bad.size:
        raise ModelError(f"HDL optimisation start {starts[bad[0]].tolist()} of piece {int(bad[0]) + 1} is not finite")
    P = starts.shape[0]
    out = np.empty((P, 2))
    offs = np.ascontiguousarray(offsets, dtype=np.int64)
    prm = np.ascontiguousarray(params, dtype=np.float64)
    run_chunks(piece_fits, P, min(P, 16), kind, starts, box[0], box[1], prm, lam, b1, b2, offs, out)
    return out


def _loo(kind: int, x0, box, p, lam, b1, b2, offsets) -> np.ndarray:
    """The jackknife's leave-one-piece-out refits from ``x0`` (first parameter of each), on threads."""
    P = offsets.shape[0] - 1
    out = np.empty(P)
    x0 = np.asarray(x0, dtype=np.float64)
    pa = np.asarray(p, dtype=np.float64)
    offs = np.ascontiguousarray(offsets, dtype=np.int64)
    run_chunks(loo_fits, P, min(P, 16), kind, x0, box[0], box[1], pa, lam, b1, b2, offs, out)
    return out


def _fsum_drop(v: np.ndarray) -> np.ndarray:
    """``sum(v[-i])`` for every i, each correctly rounded (R sums in extended precision)."""
    return np.array([math.fsum(np.delete(v, i)) for i in range(v.shape[0])])


def hdl(
    munged: Munged,
    sample_prev: Sequence[float | None] | float | None = None,
    population_prev: Sequence[float | None] | float | None = None,
    trait_names: Sequence[str] | None = None,
    ld_path: str | os.PathLike | HDLPanel | None = None,
    n_ref: float = 335265,
    method: HDLMethod = "piecewise",
) -> CovStruc:
    """Genetic covariance by high-definition likelihood, as R GenomicSEM's ``hdl()``.

    Parameters
    ----------
    munged
        Munged summary statistics (``SNP``, ``N``, ``Z`` or ``b``/``se``, ``A1``, ``A2``): a dict
        ``{trait: frame or path}``, a sequence, or one frame/path.
    sample_prev, population_prev
        Per-trait sample and population prevalence for liability conversion (None/NaN: continuous).
    trait_names
        Names of the traits (default the dict keys, else ``V1..Vk``).
    ld_path
        The LD reference panel folder (R's ``LD.path``; R or polgen layout, see
        :mod:`polgen.io.hdl_panel`) or an opened :class:`~polgen.io.hdl_panel.HDLPanel`.
    n_ref
        Sample size of the reference panel (R's ``Nref``; 335265 for the UK Biobank panels).
    method
        ``"piecewise"`` (GenomicSEM's default: sum of piece estimates, delete-one-piece replicates)
        or ``"jackknife"`` (HDL's: one genome-wide fit, leave-one-piece-out refits).

    Returns
    -------
    CovStruc
        ``S``, ``V`` (sampling covariance of ``vech(S)``), ``I`` (intercepts), ``N`` (per cell) and
        ``m`` (panel SNPs); ``extra["hdl"]`` has the method, the share (%) of panel SNPs per trait
        (R's ``complete``), the number of pieces, ``rho12`` per pair and ``pieces``: per cell
        (``"A~~B"``, vech order) the piece fits ``[estimate, intercept]`` in panel order.
    """
    check_option("method", method, HDLMethod)
    if ld_path is None:
        raise InputError("hdl needs ld_path, the folder of the HDL LD reference panel")
    if not (isinstance(n_ref, (int, float)) and n_ref > 0):
        raise InputError(f"n_ref must be a positive number, got {n_ref!r}")
    items, names, labels = _normalise_munged(munged, trait_names)
    n = len(items)
    sp = _per_trait(sample_prev, n, "sample_prev")
    pp = _per_trait(population_prev, n, "population_prev")
    if any("-" in nm for nm in names):
        log.warning("trait names containing '-' will be misread by lavaan; rename them with trait_names")
    if n == 1:
        log.warning("GenomicSEM's hdl expects 2 or more traits")
    panel = open_hdl_panel(ld_path)
    P = panel.n_pieces
    if P < 2:
        raise InputError(f"the HDL panel has {P} piece(s); the standard errors need at least 2", path=panel.path)
    snp_list = pl.Series("SNP", panel.snp_list)
    traits = [_load_trait(obj, lab, snp_list) for obj, lab in zip(items, labels)]
    pairs = [(j, d) for j in range(n) for d in range(j + 1, n)]
    rho, n0 = [], []
    for a, b in pairs:
        both = traits[a].frame.select("SNP", "Z").join(traits[b].frame.select("SNP", "Z"), on="SNP", how="inner")
        zz = (both["Z"].to_numpy(), both["Z_right"].to_numpy())
        r = float(np.corrcoef(*zz)[0, 1]) if both.height > 1 else math.nan
        if not math.isfinite(r):
            raise InputError(f"traits {names[a]} and {names[b]} share fewer than 2 panel SNPs with a usable Z")
        rho.append(r)
        n0.append(min(traits[a].n_min, traits[b].n_min))
    pcs = _stream_pieces(panel, traits, pairs, rho, n0)
    off, lam, bst, mref = pcs.offsets, pcs.lam, pcs.bstar, panel.m_ref
    n1 = [t.n_med for t in traits]
    nref = float(n_ref)

    # per-piece fits: every trait's (h2, intercept), then every pair's (h12, rho)
    hd = np.empty((n, P, 2))
    hp = np.empty((len(pairs), P, 2))
    ones = np.ones(P)
    for t in range(n):
        params = np.column_stack([np.full(P, n1[t]), pcs.m, np.full(P, nref), np.full(P, _LIM)])
        hd[t] = _pieces(0, np.column_stack([pcs.start_diag[:, t], ones]), _H2_BOX, params, lam, bst[t], bst[t], off)
    for q, (a, b) in enumerate(pairs):
        params = np.column_stack(
            [hd[a, :, 0], hd[a, :, 1], hd[b, :, 0], hd[b, :, 1], pcs.m]
            + [np.full(P, v) for v in (n1[a], n1[b], n0[q], nref, _LIM)]
        )
        starts = np.column_stack([pcs.start_pair[:, q], np.full(P, rho[q])])
        hp[q] = _pieces(1, starts, _GCOV_BOX, params, lam, bst[a], bst[b], off)

    S = np.empty((n, n))
    I = np.empty((n, n))
    ncell = np.empty((n, n))
    kstar = n * (n + 1) // 2
    hold = np.empty((P, kstar))
    cell = {}
    s = 0
    for j in range(n):
        for d in range(j, n):
            cell[(j, d)] = s
            s += 1
    if method == "piecewise":
        for t in range(n):
            S[t, t] = math.fsum(hd[t, :, 0])
            I[t, t] = math.fsum(hd[t, :, 1]) / P
            hold[:, cell[(t, t)]] = P / (P - 1) * _fsum_drop(hd[t, :, 0])
        for q, (a, b) in enumerate(pairs):
            S[a, b] = S[b, a] = math.fsum(hp[q, :, 0])
            I[a, b] = I[b, a] = math.fsum(hp[q, :, 1]) / P
            hold[:, cell[(a, b)]] = P / (P - 1) * _fsum_drop(hp[q, :, 0])
    else:
        full = np.empty((n, 2))
        for t in range(n):
            p = (n1[t], mref, nref, _LIM)
            full[t] = _optim(0, (math.fsum(hd[t, :, 0]), 1.0), _H2_BOX, p, lam, bst[t], bst[t])[0]
            hold[:, cell[(t, t)]] = _loo(0, full[t], _H2_BOX, p, lam, bst[t], bst[t], off)
            S[t, t], I[t, t] = full[t]
        for q, (a, b) in enumerate(pairs):
            p = (*full[a], *full[b], mref, n1[a], n1[b], n0[q], nref, _LIM)
            arr = (lam, bst[a], bst[b])
            x, status = _optim(1, (math.fsum(hp[q, :, 0]), rho[q]), _GCOV_BOX, p, *arr)
            if status != 0:  # R retries from 0 and -/+ half the geometric mean of the heritabilities
                g = math.sqrt(full[a, 0] * full[b, 0])
                for start in (0.0, -0.5 * g, 0.5 * g):
                    x, status = _optim(1, (start, rho[q]), _GCOV_BOX, p, *arr)
                    if status == 0:
                        break
                else:
                    raise ConvergenceError(
                        f"HDL genetic covariance of {names[a]} and {names[b]} failed to converge "
                        "after trying different initial values"
                    )
            hold[:, cell[(a, b)]] = _loo(1, x, _GCOV_BOX, p, *arr, off)
            S[a, b] = S[b, a] = x[0]
            I[a, b] = I[b, a] = x[1]
    for j in range(n):
        for d in range(j, n):
            ncell[j, d] = ncell[d, j] = n1[j] if j == d else math.sqrt(n1[j]) * math.sqrt(n1[d])
    V = np.atleast_2d(np.cov(hold, rowvar=False)) * (P - 1)
    factors = [liability_factor(a, b) for a, b in zip(sp, pp)]
    S, V = liability_scale(S, V, factors)
    nvech = np.concatenate([ncell[j:, j] for j in range(n)])
    complete = {names[t]: 100 * traits[t].k / max(snp_list.len(), 1) for t in range(n)}
    pieces = {}
    for j, d in cell:
        est = hd[j] if j == d else hp[pairs.index((j, d))]
        pieces[f"{names[j]}~~{names[d]}"] = est.tolist()
    extra = {"hdl": {"method": method, "complete": complete, "n_pieces": P, "rho12": rho, "pieces": pieces}}
    return CovStruc(S=S, V=V, I=I, trait_names=names, N=nvech, m=mref, extra=extra)
