"""Parallel analysis of an LDSC genetic covariance (or correlation) matrix, as R GenomicSEM's
``paLDSC``, with the factor extraction of ``psych::fa`` it uses for ``fa=True``.

Parallel analysis (Horn 1965) on LDSC output: the eigenvalues of ``S`` are compared with the
``p``-quantile of the eigenvalues of ``r`` null matrices, each ``vech^-1(vech(diag(diag(S))) + e)``
with ``e ~ N(0, V)``: the sampling noise of LDSC around a matrix with no genetic covariance.  The
suggested number of components is the number of leading observed eigenvalues before the first one
below its null quantile (R: ``min(which(observed < simulated)) - 1``).  ``diag=True`` repeats the
analysis with only the diagonal of ``V`` (uncorrelated sampling errors); ``fa=True`` repeats it on
the eigenvalues of an exploratory factor solution (``psych::fa(nearPD(., corr = TRUE), nfactors,
fm, SMC = FALSE, rotate = "none")$values``) of the observed and of every null matrix.

The null draws come from a numpy ``Generator`` (R's ``MASS::mvrnorm`` stream cannot be reproduced);
given the same draws (:func:`pa_from_draws`) every number equals R's.  Draws are made in R's order:
``r`` for the full ``V``, then ``r`` for the diagonal ``V`` (``diag``), then ``r`` each for the FA
analyses.

Factor extraction (:func:`fa_values`).  For ``minres``, ``uls`` and maximum likelihood (``ml``)
psych minimises a discrepancy over the uniquenesses ``Psi`` with ``optim(method = "L-BFGS-B",
lower = 0.005, upper = max(smc, 1), parscale = 0.01)`` and psych's own gradient, from
``diag(r) - smc(r)``; the loadings are the first ``nfactors`` eigenvectors of ``r - diag(Psi)`` scaled
by the square roots of their non-negative eigenvalues (``ml``: of ``Psi^-1/2 r Psi^-1/2``, minus
one).  ``pa`` iterates principal axes from unit communalities (``SMC = FALSE``) until the summed
communality changes by at most ``0.001`` (at most 50 iterations).  The values are the eigenvalues
of ``r`` with the model's communalities on the diagonal, decreasing.  The optimiser is scipy's
L-BFGS-B with R's settings (``m = 5``, ``factr = 1e7``, ``pgtol = 0``, ``maxit = 100``, the same
scaling; for ``minres`` run on to a 1e-15 relative reduction, because psych's minres gradient is not
its objective's and on flat, near-diagonal matrices scipy's version stops before R's): the values
agree with R to the optimiser's tolerance, not bit for bit (measured against psych 2.2.9: ``pa``
1e-13, ``ml`` and ``uls`` 1e-6, ``minres`` 4e-5 with one factor and 4e-3 with two; the FA null
quantiles of R's own paLDSC draws 1.4e-6 for minres, 5e-3 for two-factor ml).  psych's ``wls``
and ``gls`` pair those objectives with the ML gradient, and where they stop depends on the
optimiser's path (0.1-0.4 apart here): they are not offered.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import minimize

from polgen._blas import single_threaded_blas
from polgen.errors import InputError, NotPositiveDefiniteError
from polgen.gsem.covstruc import CovStruc, as_covstruc
from polgen.gsem.ldsc import standardise
from polgen.gsem.matrix import near_pd, vech_indices
from polgen.options import FactorMethod, check_option

log = logging.getLogger("polgen")


# -- factor extraction (psych::fa) --------------------------------------------------------------
_EPS = float(np.finfo(np.float64).eps)


def _eigh_desc(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return w[::-1], v[:, ::-1]


def _pinv(a: np.ndarray) -> np.ndarray:
    """psych's ``Pinv``: the Moore-Penrose inverse (singular values below ``sqrt(eps) * max``
    dropped)."""
    u, s, vt = np.linalg.svd(a)
    keep = s > max(np.sqrt(_EPS) * s[0], 0.0)
    return (vt[keep].T / s[keep]) @ u[:, keep].T


def smc(r: np.ndarray) -> np.ndarray:
    """Squared multiple correlations ``1 - 1 / diag(Pinv(cov2cor(r)))`` clipped to [0, 1] (psych)."""
    d = np.sqrt(np.diag(r))
    c = r / np.outer(d, d)
    out = 1.0 - 1.0 / np.diag(_pinv(c))
    return np.clip(out, 0.0, 1.0)


def _loadings_ls(psi: np.ndarray, s: np.ndarray, nf: int) -> np.ndarray:
    """psych's ``FAout.wls``: eigenvectors of ``S - diag(Psi)`` times sqrt(max(eigenvalue, 0))."""
    w, v = _eigh_desc(s - np.diag(psi))
    return v[:, :nf] * np.sqrt(np.maximum(w[:nf], 0.0))


def _loadings_ml(psi: np.ndarray, s: np.ndarray, nf: int) -> np.ndarray:
    """psych's ``FAout``: ML loadings from ``Psi^-1/2 S Psi^-1/2``."""
    sc = 1.0 / np.sqrt(psi)
    w, v = _eigh_desc(s * np.outer(sc, sc))
    return np.sqrt(psi)[:, None] * (v[:, :nf] * np.sqrt(np.maximum(w[:nf] - 1.0, 0.0)))


def _residual_fn(fm: str, s: np.ndarray, nf: int):
    """psych's ``fit.residuals`` for ``minres`` (off-diagonal residuals) and ``uls`` (all)."""
    low = np.tril_indices(s.shape[0], -1)

    def fn(psi: np.ndarray) -> float:
        a = s.copy()
        np.fill_diagonal(a, 1.0 - psi)
        w, v = _eigh_desc(a)
        w = np.where(w < _EPS, 100.0 * _EPS, w)
        load = v[:, :nf] * np.sqrt(w[:nf])
        res = a - load @ load.T
        return float(np.sum(res[low] ** 2) if fm == "minres" else np.sum(res**2))

    return fn


def _grad_minres(psi: np.ndarray, s: np.ndarray, nf: int) -> np.ndarray:
    """psych's ``FAgr.minres``."""
    load = _loadings_ls(psi, s, nf)
    return np.sum(load**2, axis=1) + psi - np.diag(s)


def _grad_scaled(psi: np.ndarray, s: np.ndarray, nf: int) -> np.ndarray:
    """psych's ``FAgr`` (``ml``)."""
    load = _loadings_ml(psi, s, nf)
    g = np.sum(load**2, axis=1) + psi - np.diag(s)
    return g / psi**2


def _ml_fn(psi: np.ndarray, s: np.ndarray, nf: int) -> float:
    """psych's ``FAfn``."""
    sc = 1.0 / np.sqrt(psi)
    w = np.linalg.eigvalsh(s * np.outer(sc, sc))[::-1][nf:]
    return -float(np.sum(np.log(w) - w) - nf + s.shape[0])


def _optim(fn, gr, start: np.ndarray, upper: float, ftol: float = 1e7 * _EPS) -> np.ndarray:
    """R's ``optim(start, fn, gr, method = "L-BFGS-B", lower = 0.005, upper, parscale = 0.01)``
    (``ftol``: R's ``factr = 1e7`` times machine epsilon unless given)."""
    scale = 0.01
    res = minimize(
        lambda x: fn(x * scale),
        start / scale,
        jac=lambda x: gr(x * scale) * scale,
        method="L-BFGS-B",
        bounds=[(0.005 / scale, upper / scale)] * start.shape[0],
        options={"maxcor": 5, "ftol": ftol, "gtol": 0.0, "maxiter": 100},
    )
    return np.asarray(res.x) * scale


def _principal_axes(r: np.ndarray, nf: int, min_err: float = 0.001, max_iter: int = 50) -> np.ndarray:
    """psych ``fm = "pa"`` with ``SMC = FALSE``: communalities start at 1; returns the eigenvalues
    of the last reduced matrix."""
    a = r.copy()
    np.fill_diagonal(a, 1.0)
    comm = float(np.trace(a))
    it = 1
    while True:
        w, v = _eigh_desc(a)
        load = v[:, :nf] * np.sqrt(w[:nf])  # R: NaN for a negative eigenvalue, as psych's sqrt
        new = np.sum(load**2, axis=1)
        comm1 = float(new.sum())
        np.fill_diagonal(a, new)
        err = abs(comm - comm1)
        if np.isnan(err):
            log.warning("fa(pa): imaginary eigenvalue encountered (psych: 'Try again with SMC=FALSE')")
            break
        comm = comm1
        it += 1
        if it > max_iter:
            log.info("fa(pa): maximum iteration exceeded")
            break
        if err <= min_err:
            break
    return w


def fa_values(r: np.ndarray, nfactors: int = 1, fm: FactorMethod = "minres") -> np.ndarray:
    """Eigenvalues of the common-factor solution, as ``psych::fa(r, nfactors, fm = fm, SMC = FALSE,
    rotate = "none")$values`` (decreasing).

    Parameters
    ----------
    r : ndarray
        Correlation (or covariance) matrix, k x k, symmetric.
    nfactors : int
        Number of factors to extract (1 <= nfactors <= k).
    fm : {"minres", "uls", "ml", "pa"}
        psych's factoring method.

    Returns
    -------
    ndarray
        The k eigenvalues of ``r`` with the model's communalities on its diagonal.
    """
    check_option("fm", fm, FactorMethod)
    with single_threaded_blas():  # tiny eigen problems and L-BFGS-B: threads only cost here
        return _fa_values(np.array(r, dtype=np.float64), int(nfactors), fm)


def _fa_values(a: np.ndarray, nfactors: int, fm: FactorMethod) -> np.ndarray:
    k = a.shape[0]
    if a.ndim != 2 or a.shape[1] != k:
        raise InputError(f"fa needs a square matrix, got shape {a.shape}")
    if not 1 <= int(nfactors) <= k:
        raise InputError(f"nfactors must lie in 1..{k} for a {k}x{k} matrix, got {nfactors}")
    nf = int(nfactors)
    if fm == "pa":
        return _principal_axes(a, nf)
    s_smc = smc(a)
    upper = max(float(s_smc.max()), 1.0)
    if fm == "ml":
        psi = _optim(lambda p: _ml_fn(p, a, nf), lambda p: _grad_scaled(p, a, nf), np.diag(a) - s_smc, upper)
        load = _loadings_ml(psi, a, nf)
    else:
        # minres: psych's gradient is not its objective's, and on flat (near-diagonal) matrices
        # scipy's L-BFGS-B stops by relative reduction before R's does; run it on to 1e-15
        ftol = 1e-15 if fm == "minres" else 1e7 * _EPS
        psi = _optim(_residual_fn(fm, a, nf), lambda p: _grad_minres(p, a, nf), np.diag(a) - s_smc, upper, ftol)
        load = _loadings_ls(psi, a, nf)
    reduced = a.copy()
    np.fill_diagonal(reduced, np.sum(load**2, axis=1))
    return np.linalg.eigvalsh((reduced + reduced.T) / 2)[::-1]


# -- parallel analysis ----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PALDSCResult:
    """Result of :func:`pa_ldsc`: observed eigenvalues, the null ``p``-quantiles and the suggested
    numbers of components (and factors with ``fa=True``).

    ``null*`` hold every null draw's eigenvalues (``r`` x ``k``, decreasing within a row); the
    ``*_diag`` fields are set with ``diag=True``, the ``*_fa`` fields with ``fa=True``.
    """

    observed: np.ndarray
    simulated: np.ndarray
    n_components: int
    null: np.ndarray
    p: float
    r: int
    trait_names: tuple[str, ...]
    simulated_diag: np.ndarray | None = None
    n_components_diag: int | None = None
    null_diag: np.ndarray | None = None
    observed_fa: np.ndarray | None = None
    simulated_fa: np.ndarray | None = None
    n_factors: int | None = None
    null_fa: np.ndarray | None = None
    simulated_fa_diag: np.ndarray | None = None
    n_factors_diag: int | None = None
    null_fa_diag: np.ndarray | None = None
    fm: str = "minres"
    nfactors: int = 1

    @property
    def k(self) -> int:
        return int(self.observed.shape[0])

    def suggested_k(self) -> int:
        """The suggested number of components (what a scree plot marks)."""
        return self.n_components

    @property
    def scree_columns(self) -> tuple[str, ...]:
        """The eigenvalue columns of :meth:`to_frame` a scree plot draws (not the differences)."""
        cols = ["observed", "simulated"]
        if self.simulated_diag is not None:
            cols.append("simulated_diag")
        if self.observed_fa is not None:
            cols += ["observed_fa", "simulated_fa"]
            if self.simulated_fa_diag is not None:
                cols.append("simulated_fa_diag")
        return tuple(cols)

    def to_frame(self) -> pl.DataFrame:
        """One row per component: ``component`` (1..k), ``observed``, ``simulated`` (the null
        ``p``-quantile), ``difference`` (observed - simulated, R's second scree), and with
        ``diag=True`` / ``fa=True`` the same for the diagonal-V and factor-solution analyses."""
        cols: dict[str, Any] = {
            "component": pl.Series(np.arange(1, self.k + 1), dtype=pl.Int64),
            "observed": self.observed,
            "simulated": self.simulated,
            "difference": self.observed - self.simulated,
        }
        if self.simulated_diag is not None:
            cols["simulated_diag"] = self.simulated_diag
            cols["difference_diag"] = self.observed - self.simulated_diag
        if self.observed_fa is not None and self.simulated_fa is not None:
            cols["observed_fa"] = self.observed_fa
            cols["simulated_fa"] = self.simulated_fa
            cols["difference_fa"] = self.observed_fa - self.simulated_fa
            if self.simulated_fa_diag is not None:
                cols["simulated_fa_diag"] = self.simulated_fa_diag
                cols["difference_fa_diag"] = self.observed_fa - self.simulated_fa_diag
        return pl.DataFrame(
            {c: (v if isinstance(v, pl.Series) else pl.Series(c, v, dtype=pl.Float64)) for c, v in cols.items()}
        )


def _sym(name: str, value: Any, k: int | None = None) -> np.ndarray:
    a = np.array(value, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise InputError(f"{name} must be a square matrix, got shape {a.shape}", column=name)
    if k is not None and a.shape[0] != k:
        raise InputError(
            f"{name} is {a.shape[0]}x{a.shape[0]}; S with {k} phenotypes needs {k}x{k}"
            if name == "S"
            else f"{name} is {a.shape[0]}x{a.shape[0]}, expected {k}x{k} (vech of S)",
            column=name,
        )
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} has NaN or infinite entries", column=name)
    if not np.allclose(a, a.T, rtol=1e-10, atol=1e-12):
        raise InputError(f"{name} is not symmetric", column=name)
    return (a + a.T) / 2


def _inputs(S: Any, V: Any, stand: bool | None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if V is None and isinstance(S, (np.ndarray, list, tuple, pl.DataFrame)):
        raise InputError("V (the sampling covariance of vech(S)) is required with a matrix S", column="V")
    if V is None or isinstance(S, CovStruc):
        if V is not None:
            raise InputError("pass V only with a matrix S (a covstruc carries its own V)", column="V")
        cs = as_covstruc(S)
        use_stand = (cs.S_Stand is not None) if stand is None else bool(stand)
        if use_stand:
            if cs.S_Stand is not None and cs.V_Stand is not None:
                s, v = cs.S_Stand, cs.V_Stand
            else:
                s, v = standardise(cs.S, cs.V)
            log.info("pa_ldsc: using the standardised S_Stand / V_Stand of the covstruc")
        else:
            s, v = cs.S, cs.V
        names = tuple(cs.trait_names)
    else:
        s, v = S, V
        names = ()
    s = _sym("S", s)
    k = s.shape[0]
    if k < 2:
        raise InputError(f"parallel analysis needs at least 2 phenotypes, S is {k}x{k}", column="S")
    v = _sym("V", v, k * (k + 1) // 2)
    return s, v, names or tuple(f"V{i + 1}" for i in range(k))


def _draw_null(mu: np.ndarray, cov: np.ndarray, r: int, rng: np.random.Generator, name: str) -> np.ndarray:
    """``r`` rows of ``MASS::mvrnorm(1, mu, cov)`` (eigen factor of ``cov``; semi-definite allowed
    within MASS's tolerance)."""
    w, vec = np.linalg.eigh(cov)
    if not np.all(w >= -1e-6 * abs(w[-1])):
        raise NotPositiveDefiniteError(
            f"the sampling covariance matrix {name} is not positive semi-definite "
            f"(smallest eigenvalue {w[0]:.3g}); cannot draw null matrices",
            column=name,
        )
    factor = vec * np.sqrt(np.maximum(w, 0.0))
    return mu + rng.standard_normal((r, mu.shape[0])) @ factor.T


def _null_eigen(draws: np.ndarray, k: int) -> np.ndarray:
    """Eigenvalues (decreasing) of every null matrix ``vech^-1(draw)``; ``draws`` is r x kstar."""
    rows, cols = vech_indices(k)
    mats = np.zeros((draws.shape[0], k, k))
    mats[:, rows, cols] = draws
    mats[:, cols, rows] = draws
    return np.linalg.eigvalsh(mats)[:, ::-1]


def _null_fa(draws: np.ndarray, k: int, nfactors: int, fm: FactorMethod) -> np.ndarray:
    rows, cols = vech_indices(k)
    out = np.empty((draws.shape[0], k))
    m = np.zeros((k, k))
    with single_threaded_blas():
        for i in range(draws.shape[0]):  # one small nearPD + L-BFGS-B fit per null matrix (r of them)
            m[rows, cols] = draws[i]
            m[cols, rows] = draws[i]
            out[i] = _fa_values(near_pd(m, corr=True), nfactors, fm)
    return out


def _suggest(observed: np.ndarray, simulated: np.ndarray) -> int | None:
    """R's ``min(which(observed < simulated)) - 1``; None where R has ``Inf`` (none falls below)."""
    below = np.flatnonzero(observed < simulated)
    return int(below[0]) if below.size else None


def pa_from_draws(
    S: np.ndarray,
    null: np.ndarray,
    *,
    p: float = 0.95,
    null_diag: np.ndarray | None = None,
    null_fa: np.ndarray | None = None,
    null_fa_diag: np.ndarray | None = None,
    fm: FactorMethod = "minres",
    nfactors: int = 1,
    trait_names: tuple[str, ...] = (),
) -> PALDSCResult:
    """The deterministic part of :func:`pa_ldsc`: the analysis of given null draws.

    Parameters
    ----------
    S : ndarray
        The observed k x k matrix.
    null, null_diag, null_fa, null_fa_diag : ndarray
        r x k(k+1)/2 null draws of vech(S_null) (rows as R's ``mvrnorm`` returns them) for the
        full-V, diagonal-V, FA and diagonal FA analyses (``None``: that analysis is not run; the
        FA ones also need ``null_fa``).
    p : float
        Quantile of the null eigenvalues an observed one must exceed (R's type-7 quantile).
    fm, nfactors
        Factor method and number of factors of the FA analyses.
    trait_names : tuple of str
        Names of S's phenotypes (for the record).

    Returns
    -------
    PALDSCResult
    """
    s = _sym("S", S)
    k = s.shape[0]
    w = np.linalg.eigvalsh(s)
    if not w[0] > 0:
        raise NotPositiveDefiniteError(
            f"S is not positive definite (smallest eigenvalue {w[0]:.4g}); parallel analysis needs a positive "
            "definite genetic covariance/correlation matrix (smooth it first, e.g. polgen.gsem.near_pd)",
            column="S",
        )
    observed = w[::-1].copy()

    def quantile(draws: np.ndarray, eig: np.ndarray) -> np.ndarray:
        if draws.ndim != 2 or draws.shape[1] != k * (k + 1) // 2:
            raise InputError(f"null draws must be r x {k * (k + 1) // 2}, got shape {draws.shape}")
        return np.quantile(eig, p, axis=0)

    eig = _null_eigen(null, k)
    sim = quantile(null, eig)
    n_comp = _suggest(observed, sim)
    if n_comp is None:
        log.warning("pa_ldsc: every observed eigenvalue exceeds its null quantile (R reports Inf)")
        n_comp = k
    log.info("Parallel Analysis suggests extracting %d components", n_comp)
    extra: dict[str, Any] = {}
    if null_diag is not None:
        eig_d = _null_eigen(null_diag, k)
        sim_d = quantile(null_diag, eig_d)
        n_d = _suggest(observed, sim_d)
        n_d = k if n_d is None else n_d
        log.info("Diagonalized Parallel Analysis suggests extracting %d components", n_d)
        extra.update(simulated_diag=sim_d, n_components_diag=n_d, null_diag=eig_d)
    if null_fa is not None:
        obs_fa = fa_values(near_pd(s, corr=True), nfactors, fm)
        eig_fa = _null_fa(null_fa, k, nfactors, fm)
        sim_fa = quantile(null_fa, eig_fa)
        n_fa = _suggest(obs_fa, sim_fa)
        n_fa = 1 if n_fa is None else n_fa  # R: nfactPAfa == Inf -> 1
        log.info("Parallel Analysis suggests extracting %d factors", n_fa)
        extra.update(observed_fa=obs_fa, simulated_fa=sim_fa, n_factors=n_fa, null_fa=eig_fa)
        if null_fa_diag is not None:
            eig_fad = _null_fa(null_fa_diag, k, nfactors, fm)
            sim_fad = quantile(null_fa_diag, eig_fad)
            n_fad = _suggest(obs_fa, sim_fad)
            n_fad = 1 if n_fad is None else n_fad
            log.info("Diagonalized Parallel Analysis suggests extracting %d factors", n_fad)
            extra.update(simulated_fa_diag=sim_fad, n_factors_diag=n_fad, null_fa_diag=eig_fad)
    return PALDSCResult(
        observed=observed,
        simulated=sim,
        n_components=n_comp,
        null=eig,
        p=float(p),
        r=int(null.shape[0]),
        trait_names=tuple(trait_names) or tuple(f"V{i + 1}" for i in range(k)),
        fm=fm,
        nfactors=int(nfactors),
        **extra,
    )


def pa_ldsc(
    S: Any,
    V: Any = None,
    r: int = 500,
    p: float = 0.95,
    diag: bool = False,
    fa: bool = False,
    fm: FactorMethod = "minres",
    nfactors: int = 1,
    seed: int | np.random.Generator | None = None,
    *,
    stand: bool | None = None,
) -> PALDSCResult:
    """Parallel analysis based on multivariate LDSC (R GenomicSEM ``paLDSC``).

    Parameters
    ----------
    S : ndarray or CovStruc
        Genetic correlation (``S_Stand``, recommended) or covariance matrix from LDSC, k x k and
        positive definite; or the :class:`CovStruc` ``ldsc`` returns (then ``V`` is not given).
    V : ndarray, optional
        Sampling covariance of vech(S) matching S's scaling (``V_Stand`` or ``V``).
    r : int
        Number of null matrices drawn (R's default 500).
    p : float
        Quantile of the null eigenvalues an observed eigenvalue must exceed, in (0, 1).
    diag : bool
        Also run the diagonalised analysis (null draws with only the diagonal of V).
    fa : bool
        Also run the analysis on the eigenvalues of an exploratory factor solution
        (``psych::fa`` of ``nearPD(., corr = TRUE)``).
    fm : {"minres", "uls", "ml", "pa"}
        Factor extraction method for ``fa=True`` (psych's ``fm``).
    nfactors : int
        Number of factors extracted for ``fa=True``.
    seed : int or numpy Generator, optional
        Seed of the null draws (None: fresh entropy).
    stand : bool, optional
        With a covstruc: use ``S_Stand``/``V_Stand`` (computed when absent) or ``S``/``V``; default
        the standardised pair when the covstruc has it.

    Returns
    -------
    PALDSCResult
        Observed eigenvalues of S, the null ``p``-quantiles and the suggested numbers of
        components (``n_components``; k where R reports ``Inf``) and factors (``n_factors``; R's 1
        when every factor eigenvalue exceeds its null quantile).  ``.to_frame()`` gives a table;
        ``polgen.plot.scree(result)`` draws it.

    Raises
    ------
    NotPositiveDefiniteError
        S is not positive definite, or V is not positive semi-definite.
    InputError
        Shapes disagree, values are not finite, or an option is out of range.
    """
    check_option("fm", fm, FactorMethod)
    s, v, names = _inputs(S, V, stand)
    k = s.shape[0]
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
        raise InputError(f"r (the number of null draws) must be a positive integer, got {r!r}")
    if not (isinstance(p, (int, float)) and 0 < float(p) < 1) or math.isnan(float(p)):
        raise InputError(f"p must lie in (0, 1), got {p!r}")
    if isinstance(nfactors, bool) or not isinstance(nfactors, (int, np.integer)) or not 1 <= nfactors <= k:
        raise InputError(f"nfactors must be an integer in 1..{k}, got {nfactors!r}")
    if not np.linalg.eigvalsh(s)[0] > 0:
        pa_from_draws(s, np.zeros((1, k * (k + 1) // 2)))  # raises the NotPositiveDefiniteError naming S
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    rows, cols = vech_indices(k)
    mu = np.where(rows == cols, s[rows, cols], 0.0)
    v_diag = np.diag(np.diag(v))
    r = int(r)
    null = _draw_null(mu, v, r, rng, "V")
    null_diag = _draw_null(mu, v_diag, r, rng, "V") if diag else None
    null_fa = _draw_null(mu, v, r, rng, "V") if fa else None
    null_fa_diag = _draw_null(mu, v_diag, r, rng, "V") if fa and diag else None
    return pa_from_draws(
        s,
        null,
        p=float(p),
        null_diag=null_diag,
        null_fa=null_fa,
        null_fa_diag=null_fa_diag,
        fm=fm,
        nfactors=int(nfactors),
        trait_names=names,
    )


__all__ = ["PALDSCResult", "fa_values", "pa_from_draws", "pa_ldsc", "smc"]
