"""Genomic SEM GWAS, start vectors of the fits: lavaan-like start values (loadings 1 or from the
no-SNP fit, observed variances S_ii / 2, ...) and sign patterns of the factors' loadings (several
starts where a factor's sign is free; the lowest objective wins)."""

from __future__ import annotations

import itertools

import numpy as np

from polgen.gsem.ram import Numbering
from polgen.gsem.syntax import ParTable

__all__ = ["sign_starts", "start_values"]


def start_values(
    pt: ParTable, num: Numbering, S_LD: np.ndarray, traits: list[str], baseline: dict | None = None
) -> np.ndarray:
    """lavaan-like starts: loadings 1 (or from a baseline fit), observed variances S_ii / 2,
    latent variances 0.05, regressions and covariances 0; baseline estimates where given."""
    th = np.zeros(num.n)
    tidx = {t: i for i, t in enumerate(traits)}
    for r, q, val in zip(pt.rows, num.par.tolist(), num.value.tolist()):
        if q < 0:
            continue
        key = (r.lhs, r.op, r.rhs)
        if baseline is not None and key in baseline:
            th[q] = baseline[key]
        elif np.isfinite(val):
            th[q] = val
        elif r.op == "=~":
            th[q] = 1.0
        elif r.op == "~~" and r.lhs == r.rhs:
            th[q] = 0.5 * S_LD[tidx[r.lhs], tidx[r.lhs]] if r.lhs in tidx else 0.05
        else:
            th[q] = 0.0
    return th


def sign_starts(
    pt: ParTable, num: Numbering, th: np.ndarray, max_starts: int = 16, scales: tuple[float, ...] = (1.0, 0.5)
) -> np.ndarray:
    """Start vectors with sign patterns of the free loadings (the first free loading of each
    factor keeps its sign: flipping all of a factor's loadings gives a mirror solution), each at
    the given loading scales."""
    seen_first: set[str] = set()
    flips = []
    par = num.par.tolist()
    fixed_loading = {r.lhs for r, q in zip(pt.rows, par) if r.op == "=~" and q < 0}
    for r, q in zip(pt.rows, par):
        if r.op == "=~" and q >= 0:
            if r.lhs not in seen_first and r.lhs not in fixed_loading:
                seen_first.add(r.lhs)
                continue
            seen_first.add(r.lhs)
            if q not in flips:
                flips.append(q)
    base = np.abs(th.copy())
    for r, q in zip(pt.rows, par):  # only loadings take absolute values
        if q >= 0 and r.op != "=~":
            base[q] = th[q]
    if not flips:
        return th[None, :].copy()
    if 2 ** len(flips) <= max_starts:
        patterns = list(itertools.product([1.0, -1.0], repeat=len(flips)))
    else:
        patterns = [tuple([1.0] * len(flips))]
        for j in range(len(flips)):
            one_flipped = [1.0] * len(flips)
            one_flipped[j] = -1.0
            patterns.append(tuple(one_flipped))
        patterns.append(tuple([-1.0] * len(flips)))
    out = np.empty((len(patterns) * len(scales), len(th)))
    s = 0
    for sc in scales:
        for pat in patterns:
            out[s] = base
            for q, sg in zip(flips, pat):
                out[s, q] = sg * sc * abs(base[q])
            s += 1
    return out
