"""Per-SNP DWLS or ML fits under linear constraints (Genomic SEM GWAS with ``a == 2*b``, ``a > b``
on parameters estimated per SNP).

For each SNP: ``S_full`` / ``V_full`` as the batch kernel builds them (nearPD smoothing included,
:func:`polgen.kernels.snp_matrices._one_snp`), the model moments ``s``, then the minimum of the
fit function subject to ``A_eq theta = b_eq`` and ``A_in theta >= b_in``.  The fit function is
DWLS's ``sum w (s - sigma(theta))^2`` with ``w = 1 / diag(V_full)``, or ML's
``log|Sigma| + tr(S Sigma^-1) - log|S| - p`` (lavaan's ML discrepancy, twice its ``fmin``; S the
model's block of ``S_full``).  Both have the gradient ``-2 J' W r`` (``r = s - sigma``, ``W``
diagonal for DWLS, lavaan's ML weight ``0.5 D' (Sigma^-1 (x) Sigma^-1) D`` at the current
``Sigma`` for ML), so one method serves both: Levenberg-Marquardt damped Gauss-Newton (Fisher
scoring for ML) in the null space of the active rows (equalities plus the inequalities held
active), from the start projected onto them; an active set around it adds the inequalities a fit
leaves and releases the active one with the most negative Lagrange multiplier (least squares of
``A_act' mu = grad f``) until none is negative, as lavaan's constrained solution.  The estimator
is a compile-time choice (``ml`` None or True, as in :mod:`polgen.kernels.ram_fit`).

Only the estimates come from here: the batch kernel evaluates
chi-square, Q_SNP and the sandwich SEs at them (``max_iter=0``), as R's userGWAS evaluates its
sandwich at lavaan's constrained estimates.
"""

from __future__ import annotations

import numpy as np

from polgen.kernels._jit import jit
from polgen.kernels._threads import n_chunks, run_chunks
from polgen.kernels.gwas_codes import ST_NOCONV, ST_NONFINITE, ST_OK
from polgen.kernels.linalg import _chol
from polgen.kernels.ram import implied_jacobian_into
from polgen.kernels.ram_fit import _ml_pieces, _ml_weight
from polgen.kernels.snp_matrices import _one_snp

__all__ = ["constrained_batch"]


@jit
def _objective(ml, theta, lay, s_vec, w, sig, jac, resid, ws):
    """The fit function at ``theta`` (DWLS ``sum w r^2`` with ``r = s - sigma(theta)``, or ML's
    discrepancy); fills ``jac``, ``resid`` and for ML ``ws.Sinv``; inf when ``I - A`` is singular
    or (ML) Sigma is not positive definite."""
    if not implied_jacobian_into(
        theta,
        lay.ent_kind,
        lay.ent_r,
        lay.ent_c,
        lay.ent_par,
        lay.ent_val,
        lay.nv,
        lay.p,
        lay.ma,
        lay.mb,
        lay.par_ptr,
        lay.par_ent,
        sig,
        jac,
    ):
        return np.inf
    f = 0.0
    for m in range(s_vec.shape[0]):
        r = s_vec[m] - sig[lay.ma[m], lay.mb[m]]
        resid[m] = r
        f += w[m] * r * r
    if ml is not None:
        Sig, Sinv, col, Smat, ldS = ws
        f = _ml_pieces(sig, s_vec, lay.ma, lay.mb, lay.p, Sig, Sinv, col, Smat, ldS[0])
    return f if np.isfinite(f) else np.inf


@jit
def _weighted(ml, lay, jac, w, ws, Wm):
    """``W J`` at the current fit: ``diag(w) J`` (DWLS) or ``Wm J`` with lavaan's ML weight from
    the ``Sigma^-1`` the last objective call left in ``ws``."""
    if ml is None:
        return jac * w.reshape(-1, 1)
    _ml_weight(ws[1], lay.ma, lay.mb, Wm)
    return Wm @ jac


@jit
def _null_space(A):
    """Orthonormal basis (npar x nz) of the null space of the rows of ``A`` (r x npar)."""
    npar = A.shape[1]
    if A.shape[0] == 0:
        return np.eye(npar)
    _, sv, vt = np.linalg.svd(A)
    tol = 1e-10 * max(1.0, sv.max())
    rank = 0
    for x in sv:
        if x > tol:
            rank += 1
    return np.ascontiguousarray(vt[rank:].T)


@jit
def _eq_fit(ml, theta, A, b, lay, s_vec, w, max_iter, xtol, sig, jac, resid, ws, Wm):
    """LM on ``theta`` (in place) subject to ``A theta = b``; returns (status, f)."""
    if A.shape[0] > 0:
        corr = np.linalg.lstsq(A, A @ theta - b)[0]
        theta -= corr
    N = _null_space(A)
    nz = N.shape[1]
    f = _objective(ml, theta, lay, s_vec, w, sig, jac, resid, ws)
    if not np.isfinite(f):
        return ST_NONFINITE, f
    if nz == 0:
        return ST_OK, f
    Sinv = ws[1]
    lam = 0.0
    for _ in range(max_iter):
        Jz = jac @ N
        WJ = _weighted(ml, lay, Jz, w, ws, Wm)
        H = Jz.T @ WJ
        g = WJ.T @ resid
        if np.abs(g).max() == 0.0:
            return ST_OK, f
        hmax = max(np.abs(np.diag(H)).max(), 1e-300)
        accepted = False
        for _t in range(40):
            Hd = H.copy()
            for a in range(nz):
                Hd[a, a] += lam * hmax
            try:
                d = np.linalg.solve(Hd, g)
            except Exception:  # noqa: BLE001 - numba: a singular system raises
                lam = 1e-8 if lam == 0.0 else lam * 10.0
                continue
            step = N @ d
            th_new = theta + step
            jac_old = jac.copy()
            resid_old = resid.copy()
            sinv_old = Sinv.copy()
            f_new = _objective(ml, th_new, lay, s_vec, w, sig, jac, resid, ws)
            if np.isfinite(f_new) and f_new <= f:
                accepted = True
                theta[:] = th_new
                small = np.abs(step).max() <= xtol * (1.0 + np.abs(theta).max())
                f_old = f
                f = f_new
                lam = lam * 0.1 if lam > 1e-12 else 0.0
                if small or f_old - f_new <= 1e-15 * f_old:
                    _objective(ml, theta, lay, s_vec, w, sig, jac, resid, ws)
                    return ST_OK, f
                break
            jac[:, :] = jac_old
            resid[:] = resid_old
            Sinv[:, :] = sinv_old
            lam = 1e-8 if lam == 0.0 else lam * 10.0
        if not accepted:
            return ST_OK, f  # no step lowers f: a stationary point to working precision
    return ST_NOCONV, f


@jit
def _multipliers(ml, lay, A, jac, w, resid, ws, Wm):
    """Lagrange multipliers ``mu`` of the rows ``A`` at the current fit: least squares of
    ``A' mu = grad f`` with ``grad f = -2 J' W r`` (an inequality held active is right when its
    multiplier is not negative); also returns ``max |grad f|``."""
    grad = -2.0 * (_weighted(ml, lay, jac, w, ws, Wm).T @ resid)
    mu = np.linalg.lstsq(np.ascontiguousarray(A.T), grad)[0]
    return mu, np.abs(grad).max()


@jit
def _range(lo, hi, snp, lay, theta0, snpvar_par, A_eq, b_eq, A_in, b_in, max_iter, xtol, est, status, fmin, mult, ml):
    k = snp.beta.shape[1]
    K1 = k + 1
    Kst = K1 * (K1 + 1) // 2
    nmom = lay.ma.shape[0]
    npar = theta0.shape[1]
    n_eq = A_eq.shape[1]
    n_in = A_in.shape[1]
    p = lay.p
    Sf = np.empty((K1, K1))
    Vf = np.empty((Kst, Kst))
    VS = np.empty((k, k))
    tmp = np.empty((Kst, Kst))
    s_vec = np.empty(nmom)
    w = np.empty(nmom)
    sig = np.empty((p, p))
    jac = np.empty((nmom, npar))
    resid = np.empty(nmom)
    ldS = np.zeros(1)
    ws = (np.empty((p, p)), np.zeros((p, p)), np.empty(max(p, nmom)), np.empty((p, p)), ldS)
    Wm = np.empty((nmom, nmom))
    for i in range(lo, hi):
        est[i, :] = np.nan
        fmin[i] = np.nan
        mult[i, :] = np.nan
        st, _ = _one_snp(i, snp, Sf, Vf, VS, tmp)
        if st != 0:
            status[i] = st
            continue
        for m in range(nmom):
            s_vec[m] = Sf[lay.obs_map[lay.ma[m]], lay.obs_map[lay.mb[m]]]
            w[m] = 1.0 / Vf[lay.vidx[m], lay.vidx[m]]
        if ml is not None:
            # log|S| of the model's observed block of S_full (the ML discrepancy's constant)
            Sm = ws[3]
            for a in range(p):
                for c in range(p):
                    Sm[a, c] = Sf[lay.obs_map[a], lay.obs_map[c]]
            if not _chol(Sm, p, 0.0):
                status[i] = ST_NONFINITE
                continue
            ldS[0] = 0.0
            for a in range(p):
                ldS[0] += 2.0 * np.log(Sm[a, a])
        theta = theta0[i if theta0.shape[0] > 1 else 0].copy()
        if snpvar_par >= 0:
            theta[snpvar_par] = Sf[0, 0]
        ci = i if A_eq.shape[0] > 1 else 0  # one set of rows for the batch, or one per SNP
        Ae, be, Ai, bi = A_eq[ci], b_eq[ci], A_in[ci], b_in[ci]
        active = np.zeros(n_in, np.bool_)
        st = ST_OK
        f = np.inf
        A = np.empty((n_eq, npar))
        for _outer in range(2 * n_in + 2):
            na = 0
            for j in range(n_in):
                if active[j]:
                    na += 1
            A = np.empty((n_eq + na, npar))
            b = np.empty(n_eq + na)
            A[:n_eq] = Ae
            b[:n_eq] = be
            r = n_eq
            for j in range(n_in):
                if active[j]:
                    A[r] = Ai[j]
                    b[r] = bi[j]
                    r += 1
            st, f = _eq_fit(ml, theta, A, b, lay, s_vec, w, max_iter, xtol, sig, jac, resid, ws, Wm)
            if st != ST_OK:
                break
            added = False
            for j in range(n_in):
                if not active[j] and Ai[j] @ theta - bi[j] < -1e-10 * (1.0 + abs(bi[j])):
                    active[j] = True
                    added = True
            if added:
                continue
            if na == 0:
                break
            # release the active inequality of the most negative multiplier
            mu, gmax = _multipliers(ml, lay, A, jac, w, resid, ws, Wm)
            worst = -1
            wv = -1e-8 * (1.0 + gmax)
            r = n_eq
            for j in range(n_in):
                if active[j]:
                    if mu[r] < wv:
                        wv = mu[r]
                        worst = j
                    r += 1
            if worst < 0:
                break
            active[worst] = False
        status[i] = st
        fmin[i] = f
        if st == ST_OK:
            est[i, :] = theta
            if n_eq > 0:
                mu, _ = _multipliers(ml, lay, A, jac, w, resid, ws, Wm)
                mult[i, :] = mu[:n_eq]


def _rows(A, b, npar):
    """Constraint rows as (m, r, npar) / (m, r) arrays, m = 1 (whole batch) or n (per SNP)."""
    A = np.asarray(A, np.float64)
    b = np.asarray(b, np.float64)
    if A.ndim < 3:
        A = A.reshape(1, -1, npar)
        b = b.reshape(1, -1)
    return np.ascontiguousarray(A), np.ascontiguousarray(b)


def constrained_batch(
    snp, lay, theta0, snpvar_par, A_eq, b_eq, A_in, b_in, *, ml=False, max_iter=1000, xtol=1e-10, multipliers=False
):
    """Constrained DWLS (or ``ml=True``: ML) estimates of a batch: ``(est [n, npar], status [n],
    fmin [n])`` (NaN estimates where the status is not OK; ``fmin`` the DWLS sum or the ML
    discrepancy), with ``multipliers=True`` also the Lagrange multipliers of the equality rows at
    the solution (n x r_eq; ``grad f = A_eq' mu + ...``, f as ``fmin``), as a fourth item;
    ``snp`` a :class:`~polgen.kernels.snp_moments.SnpBatch`,
    ``lay`` a :class:`~polgen.kernels.ram.RamLayout`, ``theta0`` one start row or one per SNP;
    ``A_eq`` (r x npar) / ``b_eq`` (r) for the batch, or (n x r x npar) / (n x r) per SNP (the
    linearised non-linear constraints), likewise ``A_in`` / ``b_in``."""
    n = snp.beta.shape[0]
    f64 = np.float64
    npar = theta0.shape[1]
    est = np.empty((n, npar))
    status = np.zeros(n, np.int64)
    fmin = np.empty(n)
    Ae, be = _rows(A_eq, b_eq, npar)
    mult = np.empty((n, Ae.shape[1]))
    args = (
        lay,
        np.ascontiguousarray(theta0, f64),
        int(snpvar_par),
        Ae,
        be,
        *_rows(A_in, b_in, npar),
        int(max_iter),
        float(xtol),
        est,
        status,
        fmin,
        mult,
        True if ml else None,  # None: DWLS, the ML code not compiled
    )
    if n >= 2048:
        run_chunks(_range, n, n_chunks(n), snp, *args)
    elif n:
        _range(0, n, snp, *args)
    if multipliers:
        return est, status, fmin, mult
    return est, status, fmin
