"""Fitting a compiled SEM to a covariance matrix: DWLS / ML, sandwich SEs, fit statistics.

Estimators (as lavaan's, as GenomicSEM calls it):

* ``DWLS``: minimise ``sum_e w_e (s_e - sigma_e(theta))^2`` over ``vech`` elements ``e`` with
  ``w = 1 / diag(V)`` (``V`` in model order), i.e. lavaan's ``estimator="DWLS", WLS.V=W``;
* ``ML``: minimise ``log|Sigma| + tr(S Sigma^-1) - log|S| - p`` (lavaan's ML with
  ``sample.cov.rescale=FALSE``; the sample size only scales lavaan's own SEs and test, which
  GenomicSEM does not use).  With fixed.x covariates the rows/columns of their moments in the
  ML weight are zero, as lavaan's h1 information.

The optimiser is a bounded Levenberg-Marquardt / Fisher-scoring method with analytic gradients
(Gauss-Newton Hessian ``J' W J`` for DWLS, expected information for ML), an active set for
parameters at their bounds and step halving on the true objective.  It is started from lavaan-like
values (loadings 1 or ``sqrt(s_ii/2)`` when the factor variance is fixed, residual variances
``s_ii/2``, latent variances 0.05, everything else 0, user ``start()`` values) and restarted
from other points when it fails (the first start that converges wins, as lavaan's single start
would; if none does, seeded random starts are tried and the lowest converged objective wins).
Latent variables whose sign is not fixed by the model are reported with a positive first free
loading (where lavaan's positive starting values take it).

Equality constraints (shared labels and linear ``==`` constraints) are handled by
reparameterisation ``theta = offset + M z``; bounds (``lower()/upper()`` and ``label > value``) must
then fall on parameters that map to a single ``z``.  Non-linear ``==`` constraints are enforced by
an augmented Lagrangian (method of multipliers, to 1e-10), and so are inequalities between
parameters (``a > b``, ``a + b < 1``); as in lavaan, inequalities do not change ``df``.

Sandwich standard errors exactly as GenomicSEM: with ``Delta = d vech(Sigma)/d theta`` (all free
parameters, lavaan's layout), ``W`` lavaan's ``WLS.V`` (``diag(1/diag(V))`` for DWLS; the structured
expected h1 information ``0.5 D'(Sigma^-1 x Sigma^-1)D`` for ML)::

    bread = (Delta' W Delta)^-1 ;  Omega = bread (W Delta)' V (W Delta) bread ;  SE = sqrt(diag(Omega))

When ``Delta' W Delta`` is singular only because the model is identified through equality
constraints, the constrained bread ``M (M' Delta' W Delta M)^-1 M'`` is used instead.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from polgen.errors import ConvergenceError, ModelError
from polgen.gsem.constraints import Reparam, build_reparam, label_env, sign_flips
from polgen.gsem.ram import CompiledModel
from polgen.gsem.syntax import ParTable

log = logging.getLogger("polgen")

__all__ = [
    "SemFit",
    "default_start",
    "fit_sem",
    "sandwich",
    "defined_values",
    "defined_jacobian",
    "delta_method_se",
    "duplication_matrix",
    "ml_weight",
    "model_chisq",
    "srmr",
    "standardize_all",
    "standardized_varies",
]


# --------------------------------------------------------------------------------------------
# starting values
# --------------------------------------------------------------------------------------------
def default_start(cm: CompiledModel, S: np.ndarray, variant: int = 0) -> np.ndarray:
    """lavaan-like starting values (``variant`` > 0 gives alternative points for restarts)."""
    p = cm.p
    diag = np.clip(np.diag(np.asarray(S, dtype=np.float64)), 1e-8, None)
    th = np.zeros(cm.n_free)
    # is each latent variable's variance fixed?
    var_fixed = {}
    for r in cm.table.rows:
        if r.op == "~~" and r.lhs == r.rhs and r.lhs in cm.latent:
            var_fixed[r.lhs] = r.free == 0
    names = cm.variables
    resid_frac = (0.5, 0.8, 0.2, 0.5)[variant % 4]
    for k in range(cm.n_free):
        kind, i, j = cm.par_kind[k], cm.par_row[k], cm.par_col[k]
        row = cm.table.rows[cm.par_table_row[k]]
        if kind == 0:
            if row.op == "=~":
                obs_var = diag[i] if i < p else 1.0
                if var_fixed.get(names[j], False):
                    th[k] = math.sqrt(max(obs_var * (1 - resid_frac), 1e-8))
                else:
                    th[k] = 1.0 if variant % 2 == 0 else 0.7
            else:
                th[k] = 0.0
        else:
            if i == j:
                th[k] = diag[i] * resid_frac if i < p else (0.05 if variant % 2 == 0 else 0.5)
            else:
                th[k] = 0.0
        if not math.isnan(cm.start[k]):
            th[k] = cm.start[k]
    return th


def _random_start(cm: CompiledModel, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random perturbation of ``base``: loadings/paths scaled by U(0.3, 1.7) with random signs,
    variances by U(0.3, 1.7), covariances U(-0.2, 0.2) times the geometric mean of the variances."""
    th = base.copy()
    for k in range(cm.n_free):
        if not math.isnan(cm.start[k]):
            continue
        if cm.par_kind[k] == 0:
            mag = abs(th[k]) if th[k] != 0 else 0.3
            th[k] = mag * rng.uniform(0.3, 1.7) * (1 if rng.uniform() < 0.5 else -1)
        elif cm.par_row[k] == cm.par_col[k]:
            th[k] = th[k] * rng.uniform(0.3, 1.7)
        else:
            th[k] = rng.uniform(-0.2, 0.2) * 0.1
    return np.clip(th, cm.lower, cm.upper)


# --------------------------------------------------------------------------------------------
# objective pieces
# --------------------------------------------------------------------------------------------
def duplication_matrix(p: int) -> np.ndarray:
    """D with vec(A) = D vech(A) (column-major vec, lavaan vech order)."""
    from polgen.gsem.matrix import vech_indices

    r, c = vech_indices(p)
    D = np.zeros((p * p, r.size))
    for e in range(r.size):
        D[r[e] + c[e] * p, e] = 1.0
        D[c[e] + r[e] * p, e] = 1.0
    return D


def ml_weight(sigma: np.ndarray) -> np.ndarray:
    """lavaan's ML ``WLS.V``: 0.5 D'(Sigma^-1 x Sigma^-1) D (structured expected information)."""
    p = sigma.shape[0]
    P = np.linalg.inv(sigma)
    D = duplication_matrix(p)
    return 0.5 * D.T @ np.kron(P, P) @ D


class _Objective:
    def __init__(
        self, cm: CompiledModel, S: np.ndarray, estimator: str, w: np.ndarray | None, A0: np.ndarray, S0: np.ndarray
    ):
        self.cm = cm
        self.S = S
        self.s = cm.sample_vech(S)
        self.estimator = estimator
        self.w = w
        self.A0, self.S0 = A0, S0
        p = cm.p
        if estimator == "ML":
            sign, logdet = np.linalg.slogdet(S)
            if sign <= 0:
                raise ModelError("ML needs a positive definite sample covariance matrix")
            self.logdetS = logdet
            self.D = duplication_matrix(p)
            vr, vc = cm.vech_row, cm.vech_col
            self.offmul = np.where(vr == vc, 1.0, 2.0)

    def value(self, theta):
        try:
            sigma = self.cm.implied(theta, self.A0, self.S0)
        except ModelError:
            return np.inf
        if not np.all(np.isfinite(sigma)):
            return np.inf
        if self.estimator == "DWLS":
            r = self.s - self.cm.sample_vech(sigma)
            return float(np.sum(self.w * r * r))
        sign, logdet = np.linalg.slogdet(sigma)
        if sign <= 0:
            return np.inf
        try:
            inv = np.linalg.inv(sigma)
        except np.linalg.LinAlgError:
            return np.inf
        return float(logdet + np.trace(self.S @ inv) - self.logdetS - self.cm.p)

    def grad_hess(self, theta):
        sigma, J = self.cm.implied_jacobian(theta, self.A0, self.S0)
        if self.estimator == "DWLS":
            r = self.s - self.cm.sample_vech(sigma)
            WJ = J * self.w[:, None]
            g = -2.0 * (WJ.T @ r)
            H = 2.0 * (J.T @ WJ)
            return g, H
        inv = np.linalg.inv(sigma)
        Mx = inv @ (sigma - self.S) @ inv
        m = self.cm.sample_vech(Mx) * self.offmul
        g = J.T @ m
        Wml = self.D.T @ np.kron(inv, inv) @ self.D
        H = J.T @ Wml @ J
        return g, H


class _Augmented:
    """Augmented Lagrangian (Powell-Hestenes-Rockafellar) for non-linear equalities ``c(theta) = 0``
    and inequalities ``g(theta) >= 0``; Gauss-Newton curvature, constraint Jacobians by complex step."""

    def __init__(self, obj: _Objective, eq: list, ineq: list, lam: np.ndarray, nu: np.ndarray, mu: float):
        self.obj, self.eq, self.ineq = obj, eq, ineq
        self.lam, self.nu, self.mu = lam, nu, mu

    @staticmethod
    def _vals(funcs, theta):
        return np.array([float(np.real(c(np.asarray(theta).astype(complex)))) for c in funcs])

    @staticmethod
    def _jac(funcs, theta):
        n = theta.size
        h = 1e-30
        J = np.zeros((len(funcs), n))
        for k in range(n):
            th = np.asarray(theta).astype(complex)
            th[k] += 1j * h
            for i, c in enumerate(funcs):
                J[i, k] = complex(c(th)).imag / h
        return J

    def residuals(self, theta):
        return self._vals(self.eq, theta)

    def jac(self, theta):
        return self._jac(self.eq, theta)

    def value(self, theta):
        f = self.obj.value(theta)
        if not np.isfinite(f):
            return f
        try:
            r = self._vals(self.eq, theta)
            g = self._vals(self.ineq, theta)
        except (ZeroDivisionError, ValueError, OverflowError):
            return np.inf
        if not (np.all(np.isfinite(r)) and np.all(np.isfinite(g))):
            return np.inf
        mu = self.mu
        act = mu * g <= self.nu
        pen_in = np.where(act, -self.nu * g + 0.5 * mu * g * g, -(self.nu**2) / (2 * mu))
        return float(f + self.lam @ r + 0.5 * mu * r @ r + pen_in.sum())

    def grad_hess(self, theta):
        grad, H = self.obj.grad_hess(theta)
        mu = self.mu
        if self.eq:
            r = self._vals(self.eq, theta)
            J = self._jac(self.eq, theta)
            grad = grad + J.T @ (self.lam + mu * r)
            H = H + mu * (J.T @ J)
        if self.ineq:
            g = self._vals(self.ineq, theta)
            Jg = self._jac(self.ineq, theta)
            act = mu * g <= self.nu
            coef = np.where(act, -self.nu + mu * g, 0.0)
            grad = grad + Jg.T @ coef
            Ja = Jg[act]
            H = H + mu * (Ja.T @ Ja)
        return grad, H

    def violation(self, theta) -> float:
        r = self._vals(self.eq, theta)
        g = self._vals(self.ineq, theta)
        v = np.concatenate([np.abs(r), np.maximum(0.0, -g)])
        return float(np.max(v, initial=0.0)) if np.all(np.isfinite(v)) else np.inf


def _lm_augmented(obj: _Objective, rp: Reparam, z0: np.ndarray, max_iter: int) -> tuple[np.ndarray, float, bool, int]:
    """Method of multipliers around :func:`_lm_bounded` until the constraints hold to 1e-10."""
    lam = np.zeros(len(rp.nonlinear))
    nu = np.zeros(len(rp.inequal))
    f0 = obj.value(rp.theta(z0))
    mu = 10.0 * (max(1.0, abs(f0)) if np.isfinite(f0) else 1.0)
    z = z0
    total = 0
    prev = np.inf
    conv = False
    viol = np.inf
    for _ in range(40):
        aug = _Augmented(obj, rp.nonlinear, rp.inequal, lam, nu, mu)
        z, _, conv, it = _lm_bounded(aug, rp, z, max_iter=max_iter)
        total += it
        th = rp.theta(z)
        viol = aug.violation(th)
        if not np.isfinite(viol):
            return z, np.inf, False, total
        if viol <= 1e-10 and conv:
            break
        if rp.nonlinear:
            lam = lam + mu * aug.residuals(th)
        if rp.inequal:
            nu = np.maximum(0.0, nu - mu * aug._vals(rp.inequal, th))
        if viol > 0.25 * prev:
            mu *= 10.0
        prev = viol
    else:
        conv = False
    f = obj.value(rp.theta(z))
    return z, f, bool(conv and viol <= 1e-8), total


def _lm_bounded(
    obj: _Objective | _Augmented,
    rp: Reparam,
    z0: np.ndarray,
    max_iter: int = 500,
    gtol: float = 1e-9,
    rel_tol: float = 1e-10,
    dx_tol: float = 0.01,
) -> tuple[np.ndarray, float, bool, int]:
    """Bounded Levenberg-Marquardt on z.

    Stops when the projected gradient is below ``gtol * max(1, |f|)`` (converged), or - as
    nlminb's relative function convergence - after three accepted steps in a row that lower the
    objective by less than ``rel_tol`` relatively, or when no step lowers it; those count as
    converged when the projected gradient of lavaan's objective (half of ours) is below ``dx_tol``
    (lavaan's ``optim.dx.tol``, 0.01 as GenomicSEM sets it).
    """
    lo, hi = rp.z_lower, rp.z_upper
    lo_f, hi_f = np.isfinite(lo), np.isfinite(hi)
    lo_0, hi_0 = np.where(lo_f, lo, 0.0), np.where(hi_f, hi, 0.0)
    z = np.clip(z0, lo, hi)
    f = obj.value(rp.theta(z))
    if not np.isfinite(f):
        return z, f, False, 0
    lam = 1e-4  # damping: /3 after an accepted step, x2 after a rejected one (Nielsen-style; a third
    # of the iterations of /10 x10 along the curved ridges of Heywood solutions)
    converged = False
    it = 0
    flat = 0
    g_th, H_th = obj.grad_hess(rp.theta(z))
    g = rp.M.T @ g_th
    H = rp.M.T @ H_th @ rp.M

    def projected(z, g):
        act = (lo_f & (z <= lo_0 + 1e-14 * (1 + np.abs(lo_0))) & (g > 0)) | (
            hi_f & (z >= hi_0 - 1e-14 * (1 + np.abs(hi_0))) & (g < 0)
        )
        return act, np.where(act, 0.0, g)

    for it in range(1, max_iter + 1):  # noqa: B007 - the last iteration count is returned
        act, pg = projected(z, g)
        fr = ~act
        if np.max(np.abs(pg), initial=0.0) <= gtol * max(1.0, abs(f)):
            converged = True
            break
        Hf = H[np.ix_(fr, fr)]
        gf = g[fr]
        dH = np.diag(Hf).copy()
        dH[dH <= 0] = 1.0
        accepted = False
        while lam < 1e16:
            try:
                step = np.linalg.solve(Hf + lam * np.diag(dH), -gf)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            d = np.zeros_like(z)
            d[fr] = step
            z_new = np.clip(z + d, lo, hi)
            f_new = obj.value(rp.theta(z_new))
            if np.isfinite(f_new) and f_new <= f:
                accepted = True
                break
            lam *= 2
        if not accepted:
            converged = 0.5 * np.max(np.abs(pg), initial=0.0) <= dx_tol
            break
        rel = (f - f_new) / max(abs(f), 1e-300)
        flat = flat + 1 if rel <= rel_tol else 0
        z, f = z_new, f_new
        lam = max(lam / 3, 1e-12)
        g_th, H_th = obj.grad_hess(rp.theta(z))
        g = rp.M.T @ g_th
        H = rp.M.T @ H_th @ rp.M
        if flat >= 3:
            _, pg = projected(z, g)
            converged = 0.5 * np.max(np.abs(pg), initial=0.0) <= dx_tol
            break
    return z, f, converged, it


def _flippable_latents(cm: CompiledModel) -> list[tuple[int, list[int], int]]:
    """Latent variables whose sign can be flipped without changing Sigma (see
    :func:`polgen.gsem.constraints.sign_flips`): (latent, free indices to negate, free index of
    its first loading)."""
    par = np.array([r.free - 1 for r in cm.table.rows], np.int64)
    return [(cm.latent.index(lv), neg.tolist(), first) for lv, neg, first in sign_flips(cm.table, par)]


def canonical_signs(cm: CompiledModel, theta: np.ndarray, rp: Reparam | None = None) -> np.ndarray:
    """Flip latent variables (where that leaves Sigma unchanged) so that each one's first free
    loading is positive - where lavaan's positive starting values take it.  A flip that would
    break a bound or a constraint of ``rp`` (e.g. ``a == b^2``, ``a > b``) is not made."""
    th = np.array(theta, dtype=np.float64)
    flips = cm._cache.get("flippable")
    if flips is None:
        flips = _flippable_latents(cm)
        cm._cache["flippable"] = flips
    for _, negate, first in flips:
        if th[first] >= 0:
            continue
        trial = th.copy()
        trial[negate] = -trial[negate]
        if rp is not None and not _feasible(rp, cm, trial):
            continue
        th = trial
    return th


def _feasible(rp: Reparam, cm: CompiledModel, theta: np.ndarray) -> bool:
    """Whether ``theta`` satisfies the bounds and every constraint of ``rp`` (to 1e-8)."""
    scale = 1.0 + float(np.max(np.abs(theta), initial=0.0))
    if np.any(theta < cm.lower - 1e-12 * scale) or np.any(theta > cm.upper + 1e-12 * scale):
        return False
    back = rp.theta(rp.z_of(theta))
    if np.max(np.abs(back - theta), initial=0.0) > 1e-9 * scale:
        return False
    if rp.nonlinear and np.max(np.abs(_Augmented._vals(rp.nonlinear, theta)), initial=0.0) > 1e-8 * scale:
        return False
    return not (rp.inequal and np.min(_Augmented._vals(rp.inequal, theta), initial=0.0) < -1e-10 * scale)


# --------------------------------------------------------------------------------------------
# fitting
# --------------------------------------------------------------------------------------------
@dataclass
class SemFit:
    """A fitted model: estimates, implied covariance and Jacobian at the solution."""

    model: CompiledModel
    estimator: str
    theta: np.ndarray  # free parameters (lavaan free order)
    values: np.ndarray  # every ParTable row
    objective: float
    converged: bool
    iterations: int
    sigma: np.ndarray  # implied covariance (observed order)
    jacobian: np.ndarray  # d vech(Sigma) / d theta (kstar x n_free)
    weight: np.ndarray  # lavaan WLS.V (kstar x kstar)
    reparam: Reparam
    A0: np.ndarray = field(repr=False)
    S0: np.ndarray = field(repr=False)
    con_jac: np.ndarray | None = field(default=None, repr=False)  # Jacobian of non-linear == constraints

    @property
    def n_eq(self) -> int:
        """Independent equality constraints (linear ones, plus non-linear ones at the solution)."""
        extra = 0
        if self.con_jac is not None and self.con_jac.size:
            extra = int(np.linalg.matrix_rank(self.con_jac @ self.reparam.M, tol=1e-9))
        return self.reparam.n_eq + extra

    @property
    def npar(self) -> int:
        """lavaan's ``fitMeasures(fit, "npar")``: free parameters minus independent equality constraints."""
        return self.model.n_free - self.n_eq

    @property
    def df(self) -> int:
        """lavaan's df: sample moments (without the fixed.x block) - npar."""
        return self.model.table.n_data - self.npar

    def implied_all(self) -> np.ndarray:
        return self.model.implied_all(self.theta, self.A0, self.S0)


def fit_sem(
    model: CompiledModel,
    S: np.ndarray,
    *,
    estimator: str = "DWLS",
    V: np.ndarray | None = None,
    W_diag: np.ndarray | None = None,
    start: np.ndarray | None = None,
    max_iter: int = 10_000,
    check_identified: bool = True,
    restarts: int = 4,
    random_starts: int = 12,
) -> SemFit:
    """Fit ``model`` to the sample covariance ``S`` (observed order of ``model``).

    DWLS weights: ``W_diag`` or ``1/diag(V)`` (``V`` in the model's ``vech`` order).  Raises
    :class:`ModelError` for an unidentified model (more parameters than moments, or a
    rank-deficient Jacobian at the solution) and :class:`ConvergenceError` when no start converges
    to a finite objective.  A run that stops without meeting the convergence tests is returned with
    ``converged=False``.  ``max_iter`` bounds the iterations from the first start (10,000: lavaan's
    nlminb ``iter.max``; weakly identified solutions such as Heywood cases far along a flat ridge
    take thousands); the alternative starts tried when it fails get at most 1,000 each.
    """
    est = estimator.upper()
    if est not in ("DWLS", "ML"):
        raise ModelError(f"estimation must be 'DWLS' or 'ML', got {estimator!r}")
    S = np.asarray(S, dtype=np.float64)
    if S.shape != (model.p, model.p):
        raise ModelError(f"sample covariance is {S.shape}, the model has {model.p} observed variables")
    rp = build_reparam(model)
    n_eff = rp.n_z
    if n_eff > model.table.n_data:
        raise ModelError(
            f"model is not identified: {n_eff} free parameters (after constraints) for "
            f"{model.table.n_data} sample moments (df = {model.table.n_data - n_eff})"
        )
    w = None
    if est == "DWLS":
        if W_diag is None:
            if V is None:
                raise ModelError("DWLS needs V (or W_diag)")
            dv = np.diag(np.asarray(V, dtype=np.float64))
            if np.any(dv <= 0):
                raise ModelError("V has non-positive diagonal entries: DWLS weights undefined")
            w = 1.0 / dv
        else:
            w = np.asarray(W_diag, dtype=np.float64).reshape(-1)
        if w.shape[0] != model.kstar:
            raise ModelError(f"DWLS weights have {w.shape[0]} entries, expected {model.kstar}")
    A0, S0 = model.base_matrices(S)
    obj = _Objective(model, S, est, w, A0, S0)
    starts = [np.asarray(start, dtype=np.float64)] if start is not None else []
    starts += [default_start(model, S, v) for v in range(restarts)]
    best = None

    def consider(th0, iters):
        nonlocal best
        if rp.augmented:
            z, f, conv, it = _lm_augmented(obj, rp, rp.z_of(th0), max_iter=iters)
        else:
            z, f, conv, it = _lm_bounded(obj, rp, rp.z_of(th0), max_iter=iters)
        if not np.isfinite(f):
            return False
        if best is None or (conv and not best[0]) or (conv == best[0] and f < best[3] - 1e-12 * max(1, abs(f))):
            best = (conv, -f, z, f, it)
        return conv

    # like lavaan: the first start that converges wins; other starts only when it does not
    for i, th0 in enumerate(starts):
        if consider(th0, max_iter if i == 0 else min(max_iter, 1000)):
            break
    if (best is None or not best[0]) and random_starts > 0:
        rng = np.random.default_rng(20260101)
        base = default_start(model, S, 0)
        for _ in range(random_starts):
            consider(_random_start(model, base, rng), min(max_iter, 1000))
    if best is None:
        raise ConvergenceError(
            "the optimiser found no finite objective from any starting point "
            "(implied covariance singular / not positive definite)"
        )
    conv, _, z, f, it = best
    theta = canonical_signs(model, rp.theta(z), rp)
    sigma, J = model.implied_jacobian(theta, A0, S0)
    con_jac = _Augmented._jac(rp.nonlinear, theta) if rp.nonlinear else None
    if check_identified:
        JM = J @ rp.M
        if w is not None:
            JM = JM * np.sqrt(w)[:, None]
        if con_jac is not None:
            cj = con_jac @ rp.M
            JM = np.vstack([JM, cj * (float(np.linalg.norm(JM)) / max(float(np.linalg.norm(cj)), 1e-300))])
        if JM.shape[1]:
            sv = np.linalg.svd(JM, compute_uv=False)
            if sv[-1] <= 1e-8 * sv[0]:
                raise ModelError(
                    "model is not identified: the Jacobian of the implied covariance is rank "
                    f"deficient at the solution (condition {float(sv[0]) / max(float(sv[-1]), 1e-300):.3g})"
                )
    if est == "DWLS":
        assert w is not None  # DWLS always has its weights
        weight = np.diag(w)
    else:
        weight = ml_weight(sigma)
        if model.table.exogenous:
            # lavaan zeroes the fixed.x block of the h1 information (lav_mvn_zero_x_idx)
            xs = [model.observed.index(x) for x in model.table.exogenous]
            xb = np.isin(model.vech_row, xs) & np.isin(model.vech_col, xs)
            weight[xb, :] = 0.0
            weight[:, xb] = 0.0
    values = model.values(theta, A0, S0)
    if not conv:
        log.warning("SEM optimiser stopped before meeting its convergence tests (objective %.6g)", f)
    return SemFit(
        model=model,
        estimator=est,
        theta=theta,
        values=values,
        objective=f,
        converged=bool(conv),
        iterations=it,
        sigma=sigma,
        jacobian=J,
        weight=weight,
        reparam=rp,
        A0=A0,
        S0=S0,
        con_jac=con_jac,
    )


# --------------------------------------------------------------------------------------------
# standard errors
# --------------------------------------------------------------------------------------------
def sandwich(fit: SemFit, V: np.ndarray, *, toler: float | None = None) -> np.ndarray:
    """GenomicSEM's sandwich covariance of the free parameters (lavaan free order).

    ``V`` in the model's ``vech`` order.  ``toler``: R ``solve(tol=)``, the reciprocal condition
    number below which the bread counts as singular (default machine epsilon, as R).
    """
    D = fit.jacobian
    W = fit.weight
    V = np.asarray(V, dtype=np.float64)
    info = D.T @ W @ D
    tol = np.finfo(float).eps if toler is None else toler
    bread = None
    if info.shape[0]:
        rc = 1.0 / np.linalg.cond(info, 1) if np.all(np.isfinite(info)) else 0.0
        if rc >= tol:
            bread = np.linalg.inv(info)
    else:
        return np.zeros((0, 0))
    if bread is None:
        M = fit.reparam.M
        if fit.con_jac is not None and fit.con_jac.size:
            cj = fit.con_jac @ M
            _, sv, vt = np.linalg.svd(cj)
            rank = int(np.sum(sv > 1e-9 * max(1.0, sv.max(initial=0.0))))
            M = M @ vt[rank:].T
        infoc = M.T @ info @ M
        rc = 1.0 / np.linalg.cond(infoc, 1)
        if rc < tol:
            raise ModelError("model is not identified: the information matrix (Delta' W Delta) is singular")
        bread = M @ np.linalg.inv(infoc) @ M.T
        log.info("bread singular without the equality constraints; using the constrained bread")
    lettuce = W @ D
    omega = bread @ lettuce.T @ V @ lettuce @ bread
    return (omega + omega.T) / 2


def defined_values(table: ParTable, theta: np.ndarray) -> np.ndarray:
    env = label_env(table, len(theta))(np.asarray(theta))
    return np.array([float(np.real(env[d.name])) for d in table.defined])


def defined_jacobian(table: ParTable, theta: np.ndarray) -> np.ndarray:
    """d defined / d theta by complex step (lavaan's lav_func_jacobian_complex), (n_def x n_free)."""
    n = len(theta)
    envf = label_env(table, n)
    out = np.zeros((len(table.defined), n))
    h = 1e-20 * max(1.0, float(np.max(np.abs(theta), initial=1.0)))
    for k in range(n):
        th = np.asarray(theta, dtype=complex).copy()
        th[k] += 1j * h
        env = envf(th)
        for i, d in enumerate(table.defined):
            out[i, k] = complex(env[d.name]).imag / h
    return out


def delta_method_se(table: ParTable, theta: np.ndarray, vcov: np.ndarray) -> np.ndarray:
    """SEs of ``:=`` parameters as GenomicSEM (restricted to used columns, PSD-projected if needed)."""
    if not table.defined:
        return np.zeros(0)
    J = defined_jacobian(table, theta)
    use = np.nonzero(np.abs(J).sum(axis=0) > 0)[0]
    if use.size == 0:
        return np.zeros(len(table.defined))
    Js = J[:, use]
    Vs = vcov[np.ix_(use, use)]
    Vs = 0.5 * (Vs + Vs.T)
    do_psd = False
    if not np.all(np.isfinite(Vs)):
        do_psd = True
        Vs = np.where(np.isfinite(Vs), Vs, 0.0)
        Vs = 0.5 * (Vs + Vs.T)
    ev = np.linalg.eigvalsh(Vs)
    if not np.all(np.isfinite(ev)) or ev.min() < -1e-10:
        do_psd = True
    if do_psd:
        w, q = np.linalg.eigh(Vs)
        Vs = (q * np.maximum(w, 0)) @ q.T
        Vs = 0.5 * (Vs + Vs.T)
    var = np.diag(Js @ Vs @ Js.T).copy()
    var[~np.isfinite(var)] = np.nan
    var[var < 0] = 0.0
    return np.sqrt(var)


# --------------------------------------------------------------------------------------------
# fit statistics
# --------------------------------------------------------------------------------------------
def model_chisq(eta: np.ndarray, V: np.ndarray) -> float:
    """GenomicSEM's Q = eta' P diag(1/lambda) P' eta with (P, lambda) the eigen-decomposition of V."""
    lam, P = np.linalg.eigh(np.asarray(V, dtype=np.float64))
    proj = P.T @ np.asarray(eta, dtype=np.float64)
    return float(np.sum(proj * proj / lam))


def srmr(S: np.ndarray, sigma: np.ndarray) -> float:
    """lavaan's SRMR (Bentler): residuals scaled by the sample SDs, averaged over vech incl. diagonal."""
    S = np.asarray(S, dtype=np.float64)
    sd = np.sqrt(np.diag(S))
    R = (S - sigma) / np.outer(sd, sd)
    iu = np.tril_indices(S.shape[0])
    return float(np.sqrt(np.mean(R[iu] ** 2)))


def standardize_all(fit: SemFit, theta: np.ndarray | None = None) -> np.ndarray:
    """lavaan's ``std.all`` for every ParTable row (cov.std=TRUE: residual covariances become
    residual correlations; variances are divided by total variances).  ``theta`` defaults to the
    estimates."""
    cm = fit.model
    th = fit.theta if theta is None else np.asarray(theta, dtype=np.float64)
    A, S = cm.fill(th, fit.A0, fit.S0)
    B = np.linalg.inv(np.eye(cm.m) - A)
    C = B @ S @ B.T
    tot = np.diag(C)
    values = cm._row_values(A, S)
    kind, rr, cc = cm.row_cells()
    out = np.full(len(cm.table.rows), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        for t, row in enumerate(cm.table.rows):
            v = values[t]
            if row.op == "=~":  # A[ind, lv]
                ind, lv = rr[t], cc[t]
                out[t] = v * np.sqrt(tot[lv]) / np.sqrt(tot[ind])
            elif row.op == "~":  # A[y, x]
                y, x = rr[t], cc[t]
                out[t] = v * np.sqrt(tot[x]) / np.sqrt(tot[y])
            else:
                i, j = rr[t], cc[t]
                if i == j:
                    out[t] = v / tot[i]
                else:
                    out[t] = v / np.sqrt(S[i, i] * S[j, j])
    return out


def standardized_varies(fit: SemFit, rel: float = 1e-7) -> np.ndarray:
    """Which rows' std.all depend on the free parameters (lavaan reports a p-value for them)."""
    base = standardize_all(fit)
    out = np.zeros(base.shape, dtype=bool)
    th = fit.theta
    for k in range(th.size):
        h = 1e-5 * max(1.0, abs(th[k]))
        e = th.copy()
        e[k] += h
        d = standardize_all(fit, e) - base
        out |= np.abs(np.nan_to_num(d)) > rel * h
    return out
