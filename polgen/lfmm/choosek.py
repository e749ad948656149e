"""Choosing K: eigenvalues of the genotype covariance and the Tracy-Widom test (Patterson et al.
2006, as in EIGENSOFT's twstats), streamed from a .bed."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from polgen._blas import single_threaded_blas
from polgen.engine.progress import progress_bar
from polgen.errors import InputError
from polgen.lfmm.fit import _gram_pass
from polgen.lfmm.genotypes import open_source, thin_index
from polgen.options import ChooseKMethod, GenotypeScale

log = logging.getLogger("polgen")


# -- the Tracy-Widom (beta = 1) distribution -------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _tw1_table():
    from scipy import integrate, special

    s0 = 10.0
    ai, aip, _, _ = special.airy(s0)
    q2 = integrate.quad(lambda x: special.airy(x)[0] ** 2, s0, np.inf, epsabs=0, epsrel=1e-12)[0]
    xq2 = integrate.quad(lambda x: (x - s0) * special.airy(x)[0] ** 2, s0, np.inf, epsabs=0, epsrel=1e-12)[0]
    qint = integrate.quad(lambda x: special.airy(x)[0], s0, np.inf, epsabs=0, epsrel=1e-12)[0]

    def rhs(s, y):
        q, qp, i2, j2, i1 = y
        return [qp, s * q + 2.0 * q**3, -q * q, -i2, -q]

    grid = np.linspace(s0, -9.0, 3801)
    sol = integrate.solve_ivp(
        rhs, (s0, grid[-1]), [ai, aip, q2, xq2, qint], method="DOP853", t_eval=grid, rtol=1e-13, atol=1e-300
    )
    s = sol.t[::-1]
    expo = 0.5 * (sol.y[3] + sol.y[4])[::-1]  # F1(s) = exp(-expo)
    log_sf = np.log(-np.expm1(-expo))
    log_cdf = -expo
    return s, log_sf, log_cdf


def tracy_widom_sf(x) -> np.ndarray:
    """Upper tail ``P(TW1 > x)`` of the Tracy-Widom distribution for beta = 1 (real matrices)."""
    x = np.asarray(x, dtype=np.float64)
    s, log_sf, _ = _tw1_table()
    out = np.exp(np.interp(x, s, log_sf))
    hi = x > s[-1]
    if np.any(hi):  # right tail: 1 - F1 ~ (1/2) int_x^inf Ai ~ exp(-2/3 x^1.5) / (4 sqrt(pi) x^0.75)
        xh = x[hi]
        out[hi] = np.exp(-2.0 / 3.0 * xh**1.5) / (4.0 * np.sqrt(np.pi) * xh**0.75)
    out[x < s[0]] = 1.0
    out[np.isnan(x)] = np.nan
    return out


def tracy_widom_cdf(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    s, _, log_cdf = _tw1_table()
    out = np.exp(np.interp(x, s, log_cdf, left=-np.inf))
    out[x > s[-1]] = 1.0 - tracy_widom_sf(x[x > s[-1]])
    return out


def tracy_widom_test(eigenvalues: np.ndarray, m: int, sum1: float, sum2: np.ndarray | float | None = None):
    """Patterson et al. (2006) TW statistics for the leading ``eigenvalues`` of a Gram matrix
    with ``m`` non-zero eigenvalues, total ``sum1`` and (optionally) sum of squares ``sum2``.

    For eigenvalue i the remaining spectrum (i..m) gives the effective number of markers
    ``n' = (m'+1) S1^2 / ((m'-1) S2 - S1^2)``, ``l = m' lambda_i / S1`` and
    ``x = (l - mu) / sigma`` with ``mu = (sqrt(n'-1) + sqrt(m'))^2 / n'`` and
    ``sigma = (sqrt(n'-1) + sqrt(m'))/n' (1/sqrt(n'-1) + 1/sqrt(m'))^(1/3)``.
    Returns ``(x, p, n_eff)`` arrays.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    k = lam.size
    x = np.full(k, np.nan)
    neff = np.full(k, np.nan)
    s1 = float(sum1)
    s2 = None if sum2 is None else float(sum2)
    for i in range(k):
        mp = m - i
        if mp < 2 or s1 <= 0:
            break
        if s2 is None:
            continue
        den = (mp - 1) * s2 - s1 * s1
        nprime = (mp + 1) * s1 * s1 / den if den > 0 else np.inf
        l_ = mp * lam[i] / s1
        if np.isfinite(nprime) and nprime > 1:
            a = np.sqrt(nprime - 1) + np.sqrt(mp)
            mu = a * a / nprime
            sig = a / nprime * (1 / np.sqrt(nprime - 1) + 1 / np.sqrt(mp)) ** (1.0 / 3.0)
            x[i] = (l_ - mu) / sig
            neff[i] = nprime
        s1 -= lam[i]
        s2 -= lam[i] ** 2
    return x, tracy_widom_sf(x), neff


# -- choose_k ----------------------------------------------------------------------------------------
@dataclass
class ChooseKResult:
    """Leading eigenvalues of ``Y Y' / p`` (centred or eigenstrat-scaled genotypes) and TW tests."""

    eigenvalues: np.ndarray
    tw_statistic: np.ndarray
    p_values: np.ndarray
    n_eff: np.ndarray
    trace: float
    n_snps: int
    method: str

    @property
    def variance_explained(self) -> np.ndarray:
        return self.eigenvalues / self.trace

    def suggested_k(self, alpha: float = 0.05) -> int:
        """Number of leading eigenvalues significant in a row at level ``alpha``."""
        sig = self.p_values < alpha
        return int(np.argmin(sig)) if not sig.all() else int(sig.size)

    def frame(self) -> pl.DataFrame:
        """One row per component: K, EIGENVALUE, VARIANCE_EXPLAINED, TW, P, N_EFF (scree plot)."""
        k = self.eigenvalues.size
        return pl.DataFrame(
            {
                "K": np.arange(1, k + 1),
                "EIGENVALUE": self.eigenvalues,
                "VARIANCE_EXPLAINED": self.variance_explained,
                "TW": self.tw_statistic,
                "P": self.p_values,
                "N_EFF": self.n_eff,
            }
        )


def choose_k(
    bed: Any,
    *,
    k_max: int = 20,
    est_rate: float | None = None,
    est_index: Any = None,
    method: ChooseKMethod = "randomized",
    scale: GenotypeScale = "eigenstrat",
    power_iter: int = 4,
    oversampling: int = 10,
    seed: int = 0,
    batch_snps: int | None = None,
    progress: bool | None = None,
) -> ChooseKResult:
    """Eigenvalues of the genotype covariance for a scree plot and the Tracy-Widom test.

    ``method="exact"`` accumulates the n x n Gram matrix over the (thinned) SNPs and takes all
    its eigenvalues (memory 8 n^2 bytes: use a thinned subset for large n); ``"randomized"``
    keeps only n x (k_max + oversampling) matrices: the top eigenvalues come from a randomized
    range finder with ``power_iter`` passes, the trace is exact, and the sum of squares of the
    remaining eigenvalues (needed by the TW test) is a Hutchinson estimate on the deflated Gram.
    The leading (structured) eigenvalues converge to ~1e-6 relative; eigenvalues inside the
    Marchenko-Pastur bulk are underestimated by the sketch, so their TW statistics are biased low
    (conservative) — use ``method="exact"`` on a thinned subset when the boundary K matters.
    """
    if method not in ("randomized", "exact"):
        raise InputError(f"method must be 'randomized' or 'exact', got {method!r}")
    if est_rate is not None and est_index is not None:
        raise InputError("give at most one of est_rate, est_index")
    if est_index is not None:
        src = open_source(
            bed, snps=np.unique(np.asarray(est_index, dtype=np.int64)), scale=scale, block_snps=batch_snps
        )
    elif est_rate is not None:
        if isinstance(bed, np.ndarray):
            src = open_source(bed, snps=thin_index(bed.shape[1], est_rate), scale=scale, block_snps=batch_snps)
        else:
            src = open_source(bed, thin=est_rate, scale=scale, block_snps=batch_snps)
    else:
        src = open_source(bed, scale=scale, block_snps=batch_snps)
    n, p = src.n_samples, src.n_snps
    m = min(n - 1, p)
    if not 1 <= k_max <= m:
        raise InputError(f"k_max must be in 1..{m} (min(n - 1, n_snps)), got {k_max}")
    if method == "exact":
        with progress_bar("lfmm choose_k", 1, progress) as bar:
            gram = _gram_pass(src, None, bar, block_snps=batch_snps) / p
        w = np.linalg.eigvalsh(gram)[::-1]
        w = np.maximum(w, 0.0)
        trace = float(w.sum())
        x, pv, neff = tracy_widom_test(w[:k_max] * p, m, trace * p, float(np.sum((w[:m] * p) ** 2)))
        return ChooseKResult(w[:k_max], x, pv, neff, trace, p, method)

    ell = min(k_max + oversampling, n)
    l2 = min(32, n)
    rng = np.random.default_rng(seed)
    with single_threaded_blas():
        G, _ = np.linalg.qr(rng.standard_normal((n, ell)))
    probe = rng.standard_normal((n, l2))  # independent Hutchinson probes for the bulk
    basis, accs = [], []
    with progress_bar("lfmm choose_k", power_iter + 1, progress) as bar:
        for it in range(power_iter + 1):
            if it == 0:
                acc, trace = _gram_pass(src, np.hstack([G, probe]), bar, block_snps=batch_snps, want_trace=True)
            else:
                acc = _gram_pass(src, G, bar, block_snps=batch_snps)
            if it == 0:
                acc, gprobe = acc[:, :ell], acc[:, ell:]
            basis.append(G)
            accs.append(acc)
            if it < power_iter:
                with single_threaded_blas():
                    G, _ = np.linalg.qr(acc)
    with single_threaded_blas():
        return _finish_randomized(basis, accs, gprobe, probe, k_max, m, trace, p, method, l2)


def _finish_randomized(basis, accs, gprobe, probe, k_max, m, trace, p, method, l2):
    # Rayleigh-Ritz on the block Krylov space of all passes
    W, S, Vt = np.linalg.svd(np.hstack(basis), full_matrices=False)
    keep = S > 1e-10 * S[0]
    Q = W[:, keep]
    GQ = np.hstack(accs) @ (Vt[keep].T / S[keep])
    T = Q.T @ GQ
    lam_all, Wr = np.linalg.eigh(0.5 * (T + T.T))
    order = np.argsort(lam_all)[::-1][:k_max]
    lam = np.maximum(lam_all[order], 0.0)
    V = Q @ Wr[:, order]
    GV = GQ @ Wr[:, order]
    # ||P G P||_F^2 with P = I - V V' (the eigenvalues beyond k_max), by Hutchinson:
    # G P z = G z - (G V)(V' z), then project
    Rz = gprobe - GV @ (V.T @ probe)
    Rz -= V @ (V.T @ Rz)
    s2_rest = float(np.sum(Rz * Rz) / l2)
    s2 = s2_rest + float(np.sum(lam**2))
    x, pv, neff = tracy_widom_test(lam, m, trace, s2)
    return ChooseKResult(lam / p, x, pv, neff, trace / p, p, method)
