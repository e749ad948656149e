"""Genomic SEM GWAS, start vectors of the fits: lavaan-like start values (loadings 1 or from the
no-SNP fit, observed variances S_ii / 2, ...) and sign patterns of the factors' loadings (several
starts where a factor's sign is free; the lowest objective wins); the starts of commonfactorGWAS's
reduced problem (:func:`cf_starts`) and of user models that are that model re-identified
(:func:`cfu_structure`, fit by :mod:`polgen.gsem.gwas_cfuser`)."""

from __future__ import annotations

import itertools

import numpy as np

from polgen.gsem.ram import Numbering
from polgen.gsem.syntax import ParTable

__all__ = [
    "CF_DIRECTIONS",
    "CFU_DIRECTIONS",
    "CFU_MAX_ITER",
    "CFU_NEIGHBOURS",
    "CFU_TOP",
    "cf_n_fixed_starts",
    "cf_starts",
    "cfu_directions",
    "cfu_structure",
    "sign_starts",
    "start_values",
]

CF_DIRECTIONS = 256  # loading directions scored per SNP (commonfactor_gwas, DWLS)
#: user_gwas(fix_measurement=False) on the common-factor model, SNPs whose lowest reduced minimum
#: has psi <= 0 (polgen.kernels.commonfactor_feasible): directions scored, neighbours per
#: direction, best-scoring directions with psi > 0 always fitted.  On 20,000 bench SNPs (issue 18)
#: 512 / 8 / 4 found 741 of the 743 psi > 0 minima with 77 LM iterations per SNP (fits capped at
#: CFU_MAX_ITER), 512 / 6 / 0 743 with ~260; the old 14 fixed starts 726 with 134.
CFU_DIRECTIONS = 512
CFU_NEIGHBOURS = 8
CFU_TOP = 4
CFU_MAX_ITER = 100  # LM iterations per fit (99% of the fits ending at psi > 0 take <= 57)
#: user_gwas(fix_measurement=False) on the common-factor model: the reduced fit runs from the warm
#: start (the no-SNP fit's loadings) only, further starts only where it fails (commonfactor_gwas
#: also runs starts scoring below its minimum times 1 + CF_TRIGGER, its lowest-objective rule).
#: R's lavaan fits the user model from the no-SNP fit's values and converges to the minimum of
#: that basin: on the 130 of 20,000 bench SNPs where the two rules end at different minima (both
#: converged), R agrees with the warm start's minimum on 105 and with the lowest one found on 24
#: (issue 18; R userGWAS's own per-SNP lavaan call, tests/data/make/gsem_fm_false_ridge.R)
CFU_TRIGGER = -1.0


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


def cf_starts(lam: np.ndarray, phi: float, k: int) -> np.ndarray:
    """Starts of the reduced problem, rows ``(l_2..l_k, phi)``: the warm start (the no-SNP
    loadings ``lam`` and factor variance ``phi``; loadings 1 and 0.05 when not finite), its sign
    patterns at scales 1, 0.3 and 3, lavaan's default (loadings 1), then :data:`CF_DIRECTIONS`
    fixed loading directions.  The first :func:`cf_n_fixed_starts` rows do not depend on the
    random directions."""
    if not (np.all(np.isfinite(lam)) and np.isfinite(phi)):
        lam, phi = np.ones(k - 1), 0.05
    rows = []
    flips = (
        list(itertools.product([1.0, -1.0], repeat=k - 1))
        if k - 1 <= 4
        else ([tuple([1.0] * (k - 1))] + [tuple(-1.0 if i == j else 1.0 for i in range(k - 1)) for j in range(k - 1)])
    )
    for sc in (1.0, 0.3, 3.0):
        for pat in flips:
            rows.append(np.r_[np.abs(lam) * np.array(pat) * sc, phi / sc**2])
    rows.append(np.r_[np.ones(k - 1), 0.05])
    # directions of the loading vector (the objective depends on its direction only): a fixed
    # set, in the l_1 = 1 chart
    u = np.random.default_rng(20240601).normal(size=(CF_DIRECTIONS, k))
    u *= np.sign(u[:, :1])
    u = u[np.abs(u[:, 0]) >= 0.05 * np.abs(u).max(axis=1)]
    for row in u:
        rows.append(np.r_[row[1:] / row[0], phi])
    return np.ascontiguousarray(np.array([np.r_[lam, phi]] + rows))


def cf_n_fixed_starts(k: int) -> int:
    """How many leading rows of :func:`cf_starts` are the warm start, its sign patterns and
    lavaan's default (the rest are the fixed random directions)."""
    flips = 2 ** (k - 1) if k - 1 <= 4 else k
    return 2 + 3 * flips


def cfu_directions(lam: np.ndarray, phi: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The directions of :mod:`polgen.kernels.commonfactor_feasible`: rows ``l_2..l_k`` of the
    warm start, its sign patterns and scales and lavaan's default (the first
    :func:`cf_n_fixed_starts` rows of :func:`cf_starts`), then those of :data:`CFU_DIRECTIONS`
    fixed random directions over the half-sphere whose first coordinate is at least 0.05 of the
    unit vector; and each direction's :data:`CFU_NEIGHBOURS`
    nearest (by angle, a direction and its negative being the same)."""
    fixed = cf_starts(lam, phi, k)[: cf_n_fixed_starts(k), : k - 1]
    u = np.random.default_rng(20261203).normal(size=(CFU_DIRECTIONS, k))
    u /= np.linalg.norm(u, axis=1)[:, None]
    u *= np.sign(u[:, :1])
    # loadings up to 20 times the scaling trait's: fits from flatter directions are slow (most of
    # the fits' iterations on the bench SNPs) and their minima are reached from others
    u = u[u[:, 0] >= 0.05]
    starts = np.vstack([fixed, u[:, 1:] / u[:, :1]])
    w = np.column_stack([np.ones(len(starts)), starts])
    w /= np.linalg.norm(w, axis=1)[:, None]
    near = np.abs(w @ w.T)
    np.fill_diagonal(near, -1.0)
    nbr = np.argsort(-near, axis=1, kind="stable")[:, :CFU_NEIGHBOURS]
    return np.ascontiguousarray(starts), np.ascontiguousarray(nbr, dtype=np.int64)


def cfu_structure(
    pt: ParTable, num: Numbering, traits: list[str], pred: str, base: dict | None, ml: bool
) -> dict | None:
    """The reduced problem's starts and the user parameter numbers when the user model is the
    common-factor model re-identified (see the module docstring) over all ``traits``; else None."""
    if ml or len(pt.latent) != 1 or len(traits) < 3 or pt.constraints or pt.defined:
        return None
    F = pt.latent[0]
    k = len(traits)
    par = num.par.tolist()
    key: dict[tuple[str, str, str], int] = {}
    fixed_var = None
    for r, q, v in zip(pt.rows, par, num.value.tolist()):
        if np.isfinite(r.lower) or np.isfinite(r.upper):
            return None
        tag = (r.lhs, r.op, r.rhs)
        if tag == (F, "~~", F):
            if q >= 0 or not (v > 0):
                return None
            fixed_var = float(v)
            continue
        ok = (
            (r.op == "=~" and r.lhs == F and r.rhs in traits)
            or tag == (F, "~", pred)
            or tag == (pred, "~~", pred)
            or (r.op == "~~" and r.lhs == r.rhs and r.lhs in traits)
        )
        if not ok or q < 0 or tag in key:
            return None
        key[tag] = q
    want = [(F, "=~", t) for t in traits] + [(F, "~", pred), (pred, "~~", pred)] + [(t, "~~", t) for t in traits]
    if fixed_var is None or set(key) != set(want) or len(set(key.values())) != len(key):
        return None
    pidx = np.array([key[w] for w in want], np.int64)  # lambda'_1..k, b', v, theta_1..k
    if base is not None and all((F, "=~", t) in base for t in traits) and base[(F, "=~", traits[0])] != 0.0:
        # the no-SNP fit in the reduced chart: l_t = lambda'_t / lambda'_1, phi = c lambda'_1^2
        l1 = base[(F, "=~", traits[0])]
        lam = np.array([base[(F, "=~", t)] / l1 for t in traits[1:]], dtype=np.float64)
        phi = fixed_var * l1 * l1
    else:
        lam, phi = np.ones(k - 1), 0.05
    dirs, nbr = cfu_directions(lam, phi, k)
    return {"starts": cf_starts(lam, phi, k), "pidx": pidx, "c": fixed_var, "dirs": dirs, "nbr": nbr}
