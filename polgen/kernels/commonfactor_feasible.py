"""The common-factor reduced problem's minima with a positive factor residual variance.

user_gwas(fix_measurement=False) on the common-factor model is the reduced problem of
:mod:`polgen.kernels.commonfactor_lm` restricted to ``psi > 0`` (see
:mod:`polgen.gsem.gwas_cfuser`).  Where the reduced problem's lowest minimum has ``psi <= 0`` the
user model's solution, if it has one, is another local minimum of the reduced problem, one with
``psi > 0``.  This kernel looks for it.

The reduced objective depends on the loading direction only (``phi`` and ``c`` are projected out),
so a fixed set of directions (:func:`polgen.gsem.gwas_starts.cfu_directions`: the warm start and
its sign patterns, and quasi-random directions over the half-sphere) is scored for each SNP (the
projected objective and ``psi`` at each direction, ~30 ns each) and the Levenberg-Marquardt fit
runs only from the directions that are

* local minima of the scores among their nearest directions that have ``psi > 0`` (a basin of a
  minimum with ``psi > 0`` is entered from such a direction), and
* the ``n_top`` best-scoring directions with ``psi > 0``,

best score first; the lowest converged minimum with ``psi > 0`` is kept, and a fit that comes next
to it stops there (as in commonfactorGWAS's multi-start).  None: ``ST_NOFINITE``.

On the 2,972 SNPs of 20,000 bench SNPs whose lowest minimum has ``psi <= 0`` (issue 18), 512
directions with 8 neighbours and ``n_top=4`` find a ``psi > 0`` minimum on 739 of the 743 SNPs
where a 767-start brute force finds one (always the lowest), with ~6 fits per SNP; the fits from
the warm start's 14 sign patterns and scales found 726 with 14 fits.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from polgen.kernels._jit import jit_strict
from polgen.kernels.commonfactor import _cf_moments, _cf_store, _cf_work, cf_out, run_smoothed
from polgen.kernels.commonfactor_lm import _cf_eval, _cf_lm
from polgen.kernels.gwas_codes import ST_NOFINITE, ST_OK
from polgen.kernels.snp_moments import snp_batch

__all__ = ["CfuSpec", "cfu_feasible_fit"]

#: ``starts`` (n_dir x (k-1): l_2..l_k of each direction), ``nbr`` (n_dir x n_nbr: each
#: direction's nearest directions), ``n_top`` best-scoring directions always fitted, ``max_iter``
#: LM iterations, ``pidx`` the parameter numbers of ``l_2..l_k, b, th_1..th_k, psi, v``.
CfuSpec = namedtuple("CfuSpec", ["starts", "nbr", "n_top", "max_iter", "pidx"])


@jit_strict
def _pair_part(lk, sld, wld, pi, pj):
    """(phi, trait-pair part of the projected objective) at the loadings ``lk`` (l_1 = 1 first)."""
    num = 0.0
    den = 0.0
    for q in range(pi.shape[0]):
        pq = lk[pi[q]] * lk[pj[q]]
        num += wld[q] * pq * sld[q]
        den += wld[q] * pq * pq
    phi = num / den if den > 0.0 else 0.0
    f = 0.0
    for q in range(pi.shape[0]):
        e = sld[q] - lk[pi[q]] * lk[pj[q]] * phi
        f += wld[q] * e * e
    return phi, f


@jit_strict
def _cfu_range(lo, hi, snp, fs, out, smooth):
    """SNPs ``lo:hi`` of ``snp``: the lowest minimum with ``psi > 0`` from the directions of
    ``fs`` (:class:`CfuSpec`) into ``out`` (:class:`~polgen.kernels.commonfactor.CfOut`).
    ``smooth``: as in :func:`polgen.kernels.commonfactor._cf_range`."""
    starts, nbr, n_top, max_iter, pidx = fs.starts, fs.nbr, fs.n_top, fs.max_iter, fs.pidx
    theta, fmin, status, iters = out.theta, out.fmin, out.status, out.iters
    k = snp.beta.shape[1]
    K1 = k + 1
    npair = k * (k - 1) // 2
    n = k + 1
    nst = starts.shape[0]
    nnb = nbr.shape[1]
    (VS, Sf, Vf, tmpK, s, ws, sld, wld, pi, pj, vpos, r, J, H, HW, g, d, xn, x, xb, Hn, gp, rp, d2, xt, rt) = _cf_work(
        k
    )
    fpos = np.empty(nst)  # the direction's score (projected objective) where psi > 0, else inf
    run = np.empty(nst, np.bool_)
    top = np.empty(nst, np.bool_)
    # the trait-pair part of each direction's score and its phi: the same for every SNP whose
    # S_full / V_full were not smoothed (the pair moments and weights are S_LD's and V_LD's)
    sld0 = np.empty(max(npair, 1))
    wld0 = np.empty(max(npair, 1))
    for q in range(npair):
        sld0[q] = snp.S_LD[pi[q], pj[q]]
        wld0[q] = 1.0 / snp.V_LD[vpos[q] - K1, vpos[q] - K1]
    pphi = np.empty(nst)
    pf = np.empty(nst)
    lk = np.empty((nst, k))
    for st in range(nst):
        lk[st, 0] = 1.0
        for a in range(k - 1):
            lk[st, a + 1] = starts[st, a]
        pphi[st], pf[st] = _pair_part(lk[st], sld0, wld0, pi, pj)
    npar = theta.shape[1]
    for i in range(lo, hi):
        for p in range(npar):
            theta[i, p] = np.nan
        fmin[i] = np.nan
        iters[i] = 0
        code, smax = _cf_moments(i, snp, vpos, pi, pj, VS, Sf, Vf, tmpK, s, ws, sld, wld, smooth)
        if code != ST_OK:
            status[i] = code
            continue
        v = Sf[0, 0]
        same = True
        for q in range(npair):
            if sld[q] != sld0[q] or wld[q] != wld0[q]:
                same = False
        ss = 0.0
        for t in range(k):
            ss += ws[t] * s[t] * s[t]
        for st in range(nst):
            if same:
                # the SNP part in closed form: c = sum w l s / sum w l^2
                num = 0.0
                den = 0.0
                for t in range(k):
                    num += ws[t] * lk[st, t] * s[t]
                    den += ws[t] * lk[st, t] * lk[st, t]
                c = num / den if den > 0.0 else 0.0
                f0 = pf[st] + ss - c * num
                phi = pphi[st]
            else:
                for a in range(k - 1):
                    x[a] = starts[st, a]
                f0 = _cf_eval(x, k, s, ws, sld, wld, pi, pj, r)
                phi = x[k - 1]
                c = x[k]
            fpos[st] = f0 if np.isfinite(f0) and phi - c * c / v > 0.0 else np.inf
        # the directions to fit: local minima of the scores among the neighbours with psi > 0
        for st in range(nst):
            ok = fpos[st] < np.inf
            if ok:
                for m in range(nnb):
                    if fpos[nbr[st, m]] < fpos[st]:
                        ok = False
                        break
            run[st] = ok
        # ... and the n_top best-scoring directions with psi > 0
        for st in range(nst):
            top[st] = False
        for _ in range(n_top):
            sel = -1
            bs = np.inf
            for st in range(nst):
                if fpos[st] < bs and not top[st]:
                    bs = fpos[st]
                    sel = st
            if sel < 0:
                break
            top[sel] = True
            run[sel] = True
        best_f = np.inf
        nit = 0
        while True:
            # best-scoring direction not yet fitted
            sel = -1
            bs = np.inf
            for st in range(nst):
                if run[st] and (sel < 0 or fpos[st] < bs):
                    sel = st
                    bs = fpos[st]
            if sel < 0:
                break
            run[sel] = False
            for a in range(k - 1):
                x[a] = starts[sel, a]
            code, f, it = _cf_lm(
                x, k, s, ws, sld, wld, pi, pj, smax, max_iter, r, J, H, HW, g, d, xn, Hn, gp, rp, d2, xt, rt, xb, best_f
            )
            nit += it
            if code == ST_OK and f < best_f and x[k - 1] - x[k] * x[k] / v > 0.0:
                best_f = f
                for a in range(n):
                    xb[a] = x[a]
        iters[i] = nit
        if best_f == np.inf:
            status[i] = ST_NOFINITE
            continue
        status[i] = ST_OK
        fmin[i] = best_f
        _cf_store(theta[i], xb, k, Sf, pidx)


def cfu_feasible_fit(
    beta,
    se,
    var,
    S_LD,
    V_LD,
    I_LD,
    gc,
    varse2,
    v_pd_known,
    starts,
    nbr,
    n_top,
    pidx,
    npar,
    *,
    max_iter=500,
    parallel=None,
):
    """Per-SNP lowest minimum with ``psi > 0`` of the reduced common-factor problem (see the module
    docstring).  ``starts``: (n_dir, k - 1) directions ``l_2..l_k``; ``nbr``: (n_dir, n_nbr) their
    nearest directions.  Returns (theta (n x npar), fmin, status, iters); status ``ST_NOFINITE``
    where no fit ends at ``psi > 0``."""
    n = beta.shape[0]
    res = cf_out(n, npar)
    if n == 0:
        return res
    snp = snp_batch(beta, se, var, S_LD, V_LD, I_LD, gc, varse2, v_pd_known)
    fs = CfuSpec(
        np.ascontiguousarray(starts, np.float64),
        np.ascontiguousarray(nbr, np.int64),
        int(n_top),
        int(max_iter),
        np.ascontiguousarray(pidx, np.int64),
    )
    run_smoothed(_cfu_range, snp, fs, res, parallel)
    return res
