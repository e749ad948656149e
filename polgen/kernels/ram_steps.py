"""The step models of the RAM fit (:func:`polgen.kernels.ram_fit._fit_one`): the normal equations J'WJ,
J'W r (DWLS and ML weights) and the secant (quasi-Newton) term of its DWLS steps.

Gauss-Newton uses J'WJ for the Hessian of f/2 = sum_m w_m r_m^2 / 2 and drops the residuals'
second-order term -sum_m w_m r_m Hess(sigma_m): exact where the model fits, but where it does not (a
GWAS SNP under a misfitting measurement model, a Heywood baseline) Gauss-Newton converges only
linearly.  Dennis, Gay and Welsch's structured secant update (NL2SOL, as in R's ``nls`` port
routines) keeps an approximation S2 of that term from the Jacobians of successive steps, so the
augmented model J'WJ + S2 converges superlinearly.
"""

from __future__ import annotations

from polgen.kernels._jit import jit

__all__ = ["qn_rows", "sv_size"]


@jit
def _normal_eq(nf, nmom, J, w, WJ, resid, H, g):
    """DWLS: WJ = diag(w) J; H = J' W J; g = J' W resid."""
    for m in range(nmom):
        for fq in range(nf):
            WJ[m, fq] = w[m] * J[m, fq]
    _normal_sums(nf, nmom, J, WJ, resid, H, g)


@jit
def _normal_eq_ml(nf, nmom, J, Wm, WJ, resid, H, g):
    """ML: WJ = Wm J; H = J' Wm J; g = J' Wm resid."""
    for m in range(nmom):
        for fq in range(nf):
            s = 0.0
            for m2 in range(nmom):
                s += Wm[m, m2] * J[m2, fq]
            WJ[m, fq] = s
    _normal_sums(nf, nmom, J, WJ, resid, H, g)


@jit
def _normal_sums(nf, nmom, J, WJ, resid, H, g):
    for a in range(nf):
        s = 0.0
        for m in range(nmom):
            s += WJ[m, a] * resid[m]
        g[a] = s
        for b in range(a, nf):
            s = 0.0
            for m in range(nmom):
                s += WJ[m, a] * J[m, b]
            H[a, b] = s
            H[b, a] = s


def qn_rows(nmom: int, nf: int) -> int:
    """Rows of :func:`_fit_one`'s secant scratch ``qn`` (``max(nf, 1)`` columns)."""
    return nmom + 2 * nf + 6


@jit
def _secant_update(nf, nmom, J, w, resid, g, qn):
    """Dennis-Gay-Welsch update of S2 (qn rows nmom:nmom+nf), the secant approximation of
    -sum_m w_m r_m Hess(sigma_m), with the last step s (row qb+1) from the point whose J and g are in
    rows 0:nmom and qb: y# = -(J - J0)' W r (the second-order term's change along s), y = g0 - g
    (the gradient's change of f/2); S2 first sized by min(1, |s'y#| / |s'S2 s|) (NL2SOL)."""
    qb = nmom + nf
    ss2 = 0.0
    sy = 0.0
    ys = 0.0
    for a in range(nf):
        x = 0.0
        for m in range(nmom):
            x -= (J[m, a] - qn[m, a]) * w[m] * resid[m]
        qn[qb + 2, a] = x
        u = 0.0
        for b in range(nf):
            u += qn[nmom + a, b] * qn[qb + 1, b]
        qn[qb + 3, a] = u
        ss2 += qn[qb + 1, a] * u
        sy += qn[qb + 1, a] * x
        ys += (qn[qb, a] - g[a]) * qn[qb + 1, a]
    qn[qb + 5, 0] = 0.0
    if ss2 != 0.0:
        tau = min(1.0, abs(sy) / abs(ss2))
        for a in range(nf):
            qn[qb + 3, a] *= tau
            for b in range(nf):
                qn[nmom + a, b] *= tau
    if not (ys > 0.0):
        return
    rs = 0.0
    for a in range(nf):
        rs += (qn[qb + 2, a] - qn[qb + 3, a]) * qn[qb + 1, a]
    for a in range(nf):
        ra = qn[qb + 2, a] - qn[qb + 3, a]
        ya = qn[qb, a] - g[a]
        for b in range(nf):
            rb = qn[qb + 2, b] - qn[qb + 3, b]
            yb = qn[qb, b] - g[b]
            qn[nmom + a, b] += (ra * yb + ya * rb) / ys - rs * ya * yb / (ys * ys)


@jit
def _secant_reset(nf, nmom, qn):
    """S2 = 0, no pending step."""
    for a in range(nf):
        for b in range(nf):
            qn[nmom + a, b] = 0.0
    qn[nmom + nf + 5, 0] = 0.0


def sv_size(nv: int, p: int, nmom: int) -> int:
    """Elements of :func:`_fit_one`'s saved scratch ``sv``: B (nv x nv), C (nv x p), resid (nmom)."""
    return nv * nv + nv * p + nmom


@jit
def _save_state(B, C, resid, nv, p, nmom, sv):
    """sv = (B, C, resid): what describes a point of the DWLS fit (its Jacobian and residuals)."""
    k = 0
    for i in range(nv):
        for j in range(nv):
            sv[k] = B[i, j]
            k += 1
        for j in range(p):
            sv[k] = C[i, j]
            k += 1
    for m in range(nmom):
        sv[k + m] = resid[m]


@jit
def _load_state(B, C, resid, nv, p, nmom, sv):
    """(B, C, resid) = sv, as saved by :func:`_save_state`."""
    k = 0
    for i in range(nv):
        for j in range(nv):
            B[i, j] = sv[k]
            k += 1
        for j in range(p):
            C[i, j] = sv[k]
            k += 1
    for m in range(nmom):
        resid[m] = sv[k + m]
