"""Genomic SEM GWAS, the fit without SNP effects: the model without its SNP lines fitted once to
``S_LD`` (DWLS weights ``diag(V_LD)^-1``, or ML), whose estimates fix the measurement model
(``fix_measurement``) and start the per-SNP fits.  Bounds by an active set (lavaan's solution),
several sign starts (the lowest objective wins), lavaan's factor signs; constraints the kernels'
numbering cannot express go through :func:`polgen.gsem.sem.fit_sem`.

The fit is one small problem per call, so it runs in numpy (:func:`fit_cov_np`), not in a numba
kernel: a first call in a new process compiles nothing for it (the numba twin,
:func:`polgen.kernels.ram_fit.fit_cov`, took ~4.5 CPU seconds off a first fast-path call; the
per-SNP kernels of fix_measurement=False and ML compile its ``_fit_one`` anyway).  :func:`fit_cov_np`
is the same Levenberg-Marquardt (Gauss-Newton for DWLS, Fisher scoring for ML) over the same RAM
entry layout, with the same steps, damping and stopping rules, so it returns the same estimates
(``tests/gsem/test_baseline_fit.py`` compares the two).

A sign start that provably cannot beat the best start so far is abandoned before its iteration cap
(:func:`_abandon_level`, ``abandon_at`` of :func:`fit_cov_np`): such starts, run off along a
Heywood ridge (a loading growing like a square root of the iteration count while the objective
flattens above the best), took ~1,000 of the ML bench fit's 1,089 iterations and ended not
converged anyway.  The chosen start, its estimates and their bits are those of the full run (the
rule's one assumption: a fit's decrease left is at most 10x its recent decrements times the
iterations left; ``tests/gsem/test_baseline_abandon.py``)."""

from __future__ import annotations

import copy

import numpy as np

from polgen.errors import ConvergenceError, ModelError
from polgen.gsem.constraints import canonical_signs_rows, kernel_constraints, number_parameters, sign_flips
from polgen.gsem.gwas_starts import sign_starts, start_values
from polgen.gsem.ram import Numbering, compile_model, kernel_layout, vech_index
from polgen.gsem.sem import fit_sem
from polgen.gsem.syntax import ParTable, parse_model
from polgen.kernels.gwas_codes import ST_ML_NOTPD, ST_NOCONV, ST_NONFINITE, ST_OK, ftol

__all__ = ["fit_baseline", "fit_cov_bounded", "fit_cov_np"]


class _Ram:
    """The RAM entry layout of a compiled model (``CompiledModel.arrays()``) as numpy index arrays:
    ``Sigma = B S B'`` (observed block) with ``B = (I - A)^-1`` and the analytic Jacobian of the
    vech moments ``(ma, mb)`` with respect to the parameters (as :mod:`polgen.kernels.ram`)."""

    def __init__(self, model, npar: int) -> None:
        i64 = np.int64
        self.nv, self.p = int(model["nv"]), int(model["p"])
        self.ma = np.asarray(model["ma"], i64)
        self.mb = np.asarray(model["mb"], i64)
        kind = np.asarray(model["ent_kind"], i64)
        r = np.asarray(model["ent_r"], i64)
        c = np.asarray(model["ent_c"], i64)
        par = np.asarray(model["ent_par"], i64)
        val = np.asarray(model["ent_val"], np.float64)
        self.r, self.c = r, c
        self.free = par >= 0
        self.par = np.maximum(par, 0)
        self.val = val
        self.pa = np.flatnonzero(kind == 0)
        self.sy = np.flatnonzero(kind != 0)
        # each entry's column of the Jacobian adds into its parameter's column
        self.inc = np.zeros((len(par), npar))
        self.inc[np.flatnonzero(self.free), par[self.free]] = 1.0
        self.path = (kind == 0)[None, :]
        self.var = ((kind == 1) & (r == c))[None, :]
        self.eye = np.eye(self.nv)

    def implied(self, theta: np.ndarray):
        """``(B, C)`` with ``C = B S B'[:, :p]`` (nv x p), or None when ``I - A`` is singular."""
        nv = self.nv
        vals = np.where(self.free, theta[self.par], self.val)
        A = np.zeros((nv, nv))
        S = np.zeros((nv, nv))
        pa, sy = self.pa, self.sy
        A[self.r[pa], self.c[pa]] = vals[pa]
        S[self.r[sy], self.c[sy]] = vals[sy]
        S[self.c[sy], self.r[sy]] = vals[sy]
        _, _, B, info = _lapack().dgesv(self.eye - A, self.eye)
        if info != 0 or not np.isfinite(B).all():
            return None
        return B, B @ (S @ B[: self.p].T)

    def jacobian(self, B: np.ndarray, C: np.ndarray, fidx: np.ndarray) -> np.ndarray:
        """``J[m, f] = d sigma_m / d theta[fidx[f]]`` (nmom x nf)."""
        ma, mb = self.ma[:, None], self.mb[:, None]
        i, j = self.r[None, :], self.c[None, :]
        Bai, Bbi, Baj, Bbj = B[ma, i], B[mb, i], B[ma, j], B[mb, j]
        je = np.where(
            self.path,
            Bai * C[j, mb] + C[j, ma] * Bbi,
            np.where(self.var, Bai * Bbi, Bai * Bbj + Baj * Bbi),
        )
        return je @ self.inc[:, fidx]


def _lapack():
    from scipy.linalg import lapack  # imported by polgen.gsem already

    return lapack


def _ml_weight(Sinv: np.ndarray, ma: np.ndarray, mb: np.ndarray) -> np.ndarray:
    """``W = 0.5 D' (Sigma^-1 (x) Sigma^-1) D`` in vech space (lavaan's ML WLS.V)."""
    h = np.where(ma == mb, 0.5, 1.0)
    a, b = ma[:, None], mb[:, None]
    c, d = ma[None, :], mb[None, :]
    return (Sinv[a, c] * Sinv[b, d] + Sinv[a, d] * Sinv[b, c]) * h[:, None] * h[None, :]


#: the abandonment rule of :func:`fit_cov_np` (``abandon_at``): the window of recent objective
#: decrements (also the first iteration the rule is tried at) and its safety factor on the decrease left
ABANDON_WINDOW = 10
ABANDON_FACTOR = 10.0


def fit_cov_np(s_vec, w, model, fidx, theta0, *, ml=False, max_iter=500, xtol=1e-12, abandon_at=None):
    """Fit one covariance (vech ``s_vec`` over the model's observed variables) by DWLS with
    weights ``w`` or by ML, in numpy.  Returns (theta, status, iterations, implied vech), as
    :func:`polgen.kernels.ram_fit.fit_cov` (same algorithm and stopping rules).

    ``abandon_at``: an objective level (:func:`_abandon_level`) the fit must be able to reach, or
    None.  From iteration ``ABANDON_WINDOW`` on, with ``D`` the largest of the last
    ``ABANDON_WINDOW`` objective decrements and ``R`` the iterations left before ``max_iter``, the
    fit can still lose at most ``ABANDON_FACTOR * D * R``; when the decrements are not growing (the
    window's second half decreased the objective no more than its first) and even that loss leaves
    the objective above ``abandon_at``, the fit stops as ``ST_NOCONV`` (a caller choosing the lowest
    objective would never take it).  The factor is the margin for the Levenberg-Marquardt
    damping's occasional larger steps: on the ML bench run-off starts a single decrement reached 10x
    its window's largest, their total remaining decrease 0.98x ``D * R`` at most."""
    theta = np.array(theta0, dtype=np.float64, copy=True)
    npar = len(theta)
    ram = _Ram(model, npar)
    ma, mb, p = ram.ma, ram.mb, ram.p
    nmom = len(ma)
    s_vec = np.asarray(s_vec, np.float64)
    w = np.asarray(w, np.float64)
    fidx = np.asarray(fidx, np.int64)
    Smat = np.empty((p, p))
    Smat[ma, mb] = s_vec
    Smat[mb, ma] = s_vec
    ldS = 0.0
    if ml:
        sign, ldS = np.linalg.slogdet(Smat)
        if sign <= 0:
            return theta, ST_NONFINITE, 0, np.full(nmom, np.nan)

    lapack = _lapack()
    iu = np.triu_indices(p, 1)
    il = (iu[1], iu[0])
    dg = np.diag_indices(p)
    eye_p = np.eye(p)

    def objective(th):
        """(f, B, C, resid, Sinv) at ``th``; f = inf when not evaluable."""
        bc = ram.implied(th)
        if bc is None:
            return np.inf, None
        B, C = bc
        sig = C[ma, mb]
        resid = s_vec - sig
        Sinv = None
        if ml:
            Sig = np.empty((p, p))
            Sig[ma, mb] = sig
            Sig[mb, ma] = sig
            L, info = lapack.dpotrf(Sig, lower=1, clean=1)
            if info != 0:
                return np.inf, None
            # Sigma^-1 by dpotrs on I (dpotri took milliseconds on a 5 x 5 under load: threads)
            Sinv, info = lapack.dpotrs(L, eye_p, lower=1)
            if info != 0:
                return np.inf, None
            Sinv[iu] = Sinv[il]
            f = 2.0 * float(np.log(L[dg]).sum()) + float((Smat * Sinv).sum()) - ldS - p
        else:
            f = float(w @ (resid * resid))
        if not np.isfinite(f):
            return np.inf, None
        return f, (B, C, sig, resid, Sinv)

    with np.errstate(all="ignore"):
        return _lm(objective, ram, theta, fidx, w, ml, max_iter, xtol, abandon_at)


def _lm(
    objective,
    ram: _Ram,
    theta: np.ndarray,
    fidx: np.ndarray,
    w: np.ndarray,
    ml: bool,
    max_iter: int,
    xtol: float,
    abandon_at: float | None = None,
):
    """The Levenberg-Marquardt loop of :func:`fit_cov_np` (that of ``ram_fit._fit_one``), with its
    abandonment rule (``abandon_at``)."""
    ma, mb, nmom, nf = ram.ma, ram.mb, len(ram.ma), len(fidx)
    lapack = _lapack()
    diag = np.diag_indices(nf)
    f, cur = objective(theta)
    if cur is None:
        return theta, (ST_ML_NOTPD if ml else ST_NONFINITE), 0, np.full(nmom, np.nan)
    if nf == 0 or max_iter == 0:
        return theta, ST_OK, 0, cur[2].copy()
    lam = 0.0
    it = 0
    win = ABANDON_WINDOW
    dec = np.zeros(win)  # the last `win` objective decrements, cyclically
    while it < max_iter:
        it += 1
        B, C, _, resid, Sinv = cur
        J = ram.jacobian(B, C, fidx)
        WJ = _ml_weight(Sinv, ma, mb) @ J if ml else w[:, None] * J
        H = J.T @ WJ
        g = WJ.T @ resid
        if np.max(np.abs(g)) == 0.0:
            return theta, ST_OK, it, cur[2].copy()
        dH = np.diag(H)
        accepted = False
        tries = 0
        while not accepted and tries < 40:
            tries += 1
            HW = H.copy()
            HW[diag] = dH + lam * np.where(dH > 0, dH, 1.0)
            L, info = lapack.dpotrf(HW, lower=1, clean=0)
            if info != 0:
                lam = 1e-8 if lam == 0.0 else lam * 10.0
                continue
            delta, _ = lapack.dpotrs(L, g, lower=1)
            th_new = theta.copy()
            th_new[fidx] += delta
            fn, new = objective(th_new)
            if new is not None and fn <= f:
                accepted = True
                small = bool(np.all(np.abs(delta) <= xtol * (np.abs(th_new[fidx]) + 1e-6)))
                theta = th_new
                cur = new
                fold, f = f, fn
                lam = 0.0 if lam <= 1e-8 else lam * 0.1
                if small or (fold - fn) <= ftol * fold or fn == 0.0:
                    return theta, ST_OK, it, cur[2].copy()
                dec[it % win] = fold - fn
                if abandon_at is not None and it >= win and _hopeless(fn, dec, it, max_iter, abandon_at):
                    return theta, ST_NOCONV, it, cur[2].copy()
            else:
                lam = 1e-8 if lam == 0.0 else lam * 10.0
        if not accepted:
            # no decrease along any damped direction: a stationary point (to rounding)
            return theta, ST_OK, it, cur[2].copy()
    return theta, ST_NOCONV, it, cur[2].copy()


def _hopeless(f: float, dec: np.ndarray, it: int, max_iter: int, level: float) -> bool:
    """:func:`fit_cov_np`'s abandonment test after iteration ``it`` (objective ``f``, the last
    decrements cyclically in ``dec``): not growing, and ``f`` minus ``ABANDON_FACTOR`` times the
    largest of them for every iteration left still above ``level``."""
    win = len(dec)
    order = dec[(np.arange(it + 1, it + 1 + win)) % win]  # oldest first
    half = win // 2
    if order[half:].sum() > order[:half].sum():
        return False
    return f - ABANDON_FACTOR * float(order.max()) * (max_iter - it) > level


def _abandon_level(best: float, ml: bool, lam_min: float) -> float:
    """The objective level a sign start must be able to reach to beat the best start so far, whose
    selection value is ``best`` (:func:`_fit_baseline`: the DWLS objective; under ML the unweighted
    sum of squared residuals over the vech moments).

    DWLS: ``best`` itself.  ML: the fit's objective ``F = sum(l - log l - 1)`` over the eigenvalues
    ``l`` of ``Sigma^-1 S``; with ``u = 1/l`` (the eigenvalues of ``M = S^-1/2 Sigma S^-1/2``),
    ``||Sigma - S||_F >= lam_min(S) ||M - I||_F`` and the vech sum of squares is at least half
    of ``||Sigma - S||_F^2``.  For one eigenvalue, ``(u - 1)^2 >= psi(F_u)`` with ``psi(t) = e^2``,
    ``t = g(e) = e/(1-e) + log(1-e)`` (the branch ``u = 1 - e < 1`` reaches a given ``F_u`` with the
    smaller ``|u - 1|``: ``g(e)`` exceeds its ``u = 1 + e`` twin by ``2(e/(1-e^2) - artanh e) > 0``);
    ``psi`` is increasing and concave (``psi' = 2(1-e)^2``) with ``psi(0) = 0``, so subadditive:
    ``sum (u_i - 1)^2 >= psi(F)``.  Hence a fit ending at ``F`` has a sum of squares of at least
    ``lam_min^2 psi(F) / 2``, which is ``>= best`` once ``F >= g(e*)``, ``e* = sqrt(2 best) / lam_min``
    (no level when ``e* >= 1``: ``psi < 1``)."""
    if not ml:
        return best
    if not lam_min > 0.0:
        return np.inf
    e = np.sqrt(2.0 * max(best, 0.0)) / lam_min
    if e >= 1.0:
        return np.inf
    if e < 1e-3:  # g(e) = sum_{n >= 2} (n - 1)/n e^n without the cancellation of the closed form
        return float(sum((n - 1) / n * e**n for n in range(2, 9)))
    return float(e / (1.0 - e) + np.log1p(-e))


def fit_cov_bounded(s, w, arrays, npar, start, lo, hi, ml, fit=fit_cov_np, abandon_at=None):
    """``fit`` (:func:`fit_cov_np`; or the numba :func:`polgen.kernels.ram_fit.fit_cov`, which
    takes the same arguments) with bounds by an active set (as lavaan's solution: parameters that
    would leave their interval are held at the bound, one is released when it moves back inside).
    ``abandon_at`` (:func:`fit_cov_np`'s, for ``fit_cov_np`` only) applies to a round whose free
    parameters have no finite bound: that round is the last one (nothing can leave its interval),
    so its objective is the start's."""
    at = np.zeros(npar, np.int8)  # 0 free, 1 at lower, 2 at upper
    th0 = np.array(start, dtype=np.float64, copy=True)
    for _ in range(2 * npar + 2):
        th0[at == 1] = lo[at == 1]
        th0[at == 2] = hi[at == 2]
        fidx = np.nonzero(at == 0)[0].astype(np.int64)
        if abandon_at is not None and (lo[fidx] == -np.inf).all() and (hi[fidx] == np.inf).all():
            th, st, _, sig = fit(s, w, arrays, fidx, th0, ml=ml, abandon_at=abandon_at)
        else:
            th, st, _, sig = fit(s, w, arrays, fidx, th0, ml=ml)
        if st != ST_OK:
            return th, st, sig
        viol = np.where(th < lo, 1, np.where(th > hi, 2, 0)).astype(np.int8)
        viol[at != 0] = 0
        if not viol.any():
            return th, st, sig
        at = np.where(viol != 0, viol, at)
        th0 = np.where(viol != 0, th0, th)
    return th, st, sig


def _fit_baseline_sem(
    pt0: ParTable, S_LD: np.ndarray, V_LD: np.ndarray, traits: list[str], ml: bool
) -> tuple[Numbering, dict]:
    """The no-SNP model fit by the SEM fitter (:func:`polgen.gsem.sem.fit_sem`), for constraints
    the per-SNP kernels' numbering cannot express (``a == 2*b``, ``a > b``, ``a == b^2``, ...):
    DWLS with weights ``1 / diag(V_LD)`` of the model's moments, or ML, as R's userGWAS."""
    cm = compile_model(pt0)
    k = len(traits)
    pos = [traits.index(t) for t in cm.observed]
    S = S_LD[np.ix_(pos, pos)]
    idx = np.array([vech_index(pos[a], pos[b], k) for a, b in zip(cm.vech_row, cm.vech_col)], np.int64)
    fit = fit_sem(cm, S, estimator="ML" if ml else "DWLS", W_diag=1.0 / np.diag(V_LD)[idx])
    if not fit.converged:
        raise ConvergenceError("the model without SNP effects (fix_measurement) did not converge")
    rows = cm.table.rows
    num0 = Numbering(
        np.array([r.free - 1 for r in rows], np.int64),
        np.array([r.ustart if r.free == 0 else np.nan for r in rows], np.float64),
        np.array([r.lower for r in rows], np.float64),
        np.array([r.upper for r in rows], np.float64),
        cm.n_free,
    )
    est = {(r.lhs, r.op, r.rhs): float(v) for r, v in zip(rows, fit.values)}
    return num0, est


#: :func:`fit_baseline` results of this process by their inputs (a repeated user_gwas call, e.g. one
#: per chromosome or per input file, fits the same no-SNP model once); the oldest goes beyond 16
_MEMO: dict[tuple, tuple[ParTable, Numbering, dict]] = {}
_MEMO_MAX = 16


def fit_baseline(
    text: str,
    S_LD: np.ndarray,
    V_LD: np.ndarray,
    traits: list[str],
    *,
    std_lv: bool,
    ml: bool,
    fit=fit_cov_np,
) -> tuple[ParTable, Numbering, dict]:
    """Fit the model without its SNP lines to S_LD (DWLS weights diag(V_LD)^-1, or ML).
    ``fit``: the fit of one start (:func:`fit_cov_np`; the numba ``fit_cov`` for comparisons).
    With the default ``fit`` the result is remembered for the same inputs (a copy is returned)."""
    if fit is not fit_cov_np:
        return _fit_baseline(text, S_LD, V_LD, traits, std_lv=std_lv, ml=ml, fit=fit)
    S = np.ascontiguousarray(S_LD, np.float64)
    V = np.ascontiguousarray(V_LD, np.float64)
    key = (text, S.shape, S.tobytes(), V.shape, V.tobytes(), tuple(traits), bool(std_lv), bool(ml))
    hit = _MEMO.get(key)
    if hit is None:
        hit = _fit_baseline(text, S, V, traits, std_lv=std_lv, ml=ml, fit=fit)
        while len(_MEMO) >= _MEMO_MAX:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = copy.deepcopy(hit)
    return copy.deepcopy(hit)


def _fit_baseline(
    text: str,
    S_LD: np.ndarray,
    V_LD: np.ndarray,
    traits: list[str],
    *,
    std_lv: bool,
    ml: bool,
    fit,
    abandon: bool | None = None,
) -> tuple[ParTable, Numbering, dict]:
    """:func:`fit_baseline` without the memo.  The sign starts run in their order; the best so far
    (lowest DWLS objective, under ML lowest sum of squared residuals; a later start replaces it
    only when lower by more than 1e-12 relative) sets the level a later start is abandoned at
    (:func:`_abandon_level`).  ``abandon``: that rule (default: with ``fit_cov_np``, whose
    ``abandon_at`` it needs; False runs every start to its end, for comparisons)."""
    pt0 = parse_model(text, std_lv=std_lv, fixed_x=False)
    missing = [v for v in pt0.observed if v not in traits]
    if missing:
        raise ModelError(f"model variables {missing} are not traits of the covstruc {traits}")
    if not kernel_constraints(pt0):
        num_s, est_s = _fit_baseline_sem(pt0, S_LD, V_LD, traits, ml)
        return pt0, num_s, est_s
    num0 = number_parameters(pt0)
    npar = num0.n
    cm = kernel_layout(pt0, num0, traits, snp_name="\0none", observed=pt0.observed)
    k = len(traits)
    tix = [int(j) - 1 for j in cm.obs_map]
    s = np.array([S_LD[tix[a], tix[b]] for a, b in zip(cm.ma, cm.mb)])
    w = np.array(
        [1.0 / V_LD[vech_index(tix[a], tix[b], k), vech_index(tix[a], tix[b], k)] for a, b in zip(cm.ma, cm.mb)]
    )
    th0 = start_values(pt0, num0, S_LD, traits)
    lo, hi = num0.bounds()
    if abandon is None:
        abandon = fit is fit_cov_np
    lam_min = 0.0
    if abandon and ml:
        Smat = np.empty((len(tix), len(tix)))
        Smat[cm.ma, cm.mb] = s
        Smat[cm.mb, cm.ma] = s
        lam_min = float(np.linalg.eigvalsh(Smat)[0])
    best = None
    for start in sign_starts(pt0, num0, th0):
        level = _abandon_level(best[0], ml, lam_min) if abandon and best is not None else None
        th, st, sig = fit_cov_bounded(s, w, cm.arrays(), npar, start, lo, hi, ml, fit, abandon_at=level)
        if st != ST_OK:
            continue
        if ml:
            f = float(np.sum((s - sig) ** 2))
        else:
            f = float(np.sum(w * (s - sig) ** 2))
        if best is None or f < best[0] - 1e-12 * abs(best[0]):
            best = (f, th)
    if best is None:
        raise ConvergenceError("the model without SNP effects (fix_measurement) did not converge")
    th = best[1][None, :].copy()
    canonical_signs_rows(sign_flips(pt0, num0.par), th, lo, hi)
    th = th[0]
    est = {}
    for r, q, val in zip(pt0.rows, num0.par.tolist(), num0.value.tolist()):
        est[(r.lhs, r.op, r.rhs)] = float(th[q]) if q >= 0 else float(val)
    return pt0, num0, est
