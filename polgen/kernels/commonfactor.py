"""commonfactorGWAS (DWLS) kernel: the per-SNP fit of R ``commonfactorGWAS``'s model reduced to a
(k+1)-parameter least-squares problem (the reduction and its Levenberg-Marquardt fit in
:mod:`polgen.kernels.commonfactor_lm`): the starts, the lowest-objective rule, the estimates.

As in the general kernel (:mod:`polgen.kernels.gwas_kernel`), nearPD is its own specialisation:
the batch runs without it (``smooth`` None: a SNP whose S_full or V_full is not positive definite
gets ``ST_SMOOTH_LATER``) and refits those few SNPs with ``smooth=True``, so a first call on data
that needs no smoothing does not compile nearPD (about a quarter of the kernel's compile time)."""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from polgen.kernels._jit import jit_strict
from polgen.kernels._threads import n_chunks, run_chunks
from polgen.kernels.commonfactor_lm import CF_LMAX, CF_RIDGE, _cf_lm, _cf_pair, _cf_scores
from polgen.kernels.gwas_codes import (
    ST_NEARPD_FAIL,
    ST_NOCONV,
    ST_NOFINITE,
    ST_OK,
)
from polgen.kernels.gwas_kernel import ST_SMOOTH_LATER
from polgen.kernels.linalg import _chol, near_pd
from polgen.kernels.snp_moments import (
    _input_status,
    s_full_into,
    snp_batch,
    v_full_into,
    v_snp_into,
)

__all__ = ["CF_RIDGE", "CF_LMAX", "CfSpec", "CfOut", "commonfactor_fit"]

#: Per-batch settings of the commonfactor fit: ``starts`` (n_starts x k rows ``l_2..l_k, phi``),
#: ``n_always`` starts always run, ``max_iter`` LM iterations, ``pidx`` the parameter numbers of
#: ``l_2..l_k, b, th_1..th_k, psi, v`` in the caller's table.
CfSpec = namedtuple("CfSpec", ["starts", "n_always", "max_iter", "pidx", "trigger"])
#: Outputs (n rows): ``theta`` (n x npar), ``fmin``, ``status``, ``iters``.
CfOut = namedtuple("CfOut", ["theta", "fmin", "status", "iters"])


@jit_strict
def _cf_moments(i, snp, vpos, pi, pj, VS, Sf, Vf, tmpK, s, ws, sld, wld, smooth):
    """SNP ``i``'s moments of the reduced problem: S_full (smoothed when ``smooth`` is True, else
    ``ST_SMOOTH_LATER`` if not positive definite), the SNP moments ``s``, trait-pair moments
    ``sld``, their DWLS weights ``ws`` / ``wld`` (from V_full).  Returns (status, largest trait
    variance)."""
    beta, se, var, S_LD, V_LD, I_LD = snp.beta, snp.se, snp.var, snp.S_LD, snp.V_LD, snp.I_LD
    k = beta.shape[1]
    K1 = k + 1
    Kst = K1 * (K1 + 1) // 2
    npair = pi.shape[0]
    v0 = var[i]
    bad = _input_status(v0, beta[i], se[i], k)
    if bad != 0:
        return bad, 0.0
    v_snp_into(se[i], I_LD, v0, snp.gc, VS)
    s_full_into(S_LD, beta[i], v0, Sf)
    for a in range(K1):
        for b in range(K1):
            tmpK[a, b] = Sf[a, b]
    if not _chol(tmpK, K1, 0.0):
        if smooth is None:
            return ST_SMOOTH_LATER, 0.0
        if not near_pd(Sf.copy(), Sf):
            return ST_NEARPD_FAIL, 0.0
    if snp.v_pd_known:
        for t in range(k):
            ws[t] = 1.0 / VS[t, t]
        for q in range(npair):
            wld[q] = 1.0 / V_LD[vpos[q] - K1, vpos[q] - K1]
    else:
        v_full_into(V_LD, VS, snp.varse2, Vf)
        for a in range(Kst):
            for b in range(Kst):
                tmpK[a, b] = Vf[a, b]
        if not _chol(tmpK, Kst, 0.0):
            if smooth is None:
                return ST_SMOOTH_LATER, 0.0
            if not near_pd(Vf.copy(), Vf):
                return ST_NEARPD_FAIL, 0.0
        for t in range(k):
            ws[t] = 1.0 / Vf[1 + t, 1 + t]
        for q in range(npair):
            wld[q] = 1.0 / Vf[vpos[q], vpos[q]]
    smax = 0.0
    for t in range(k):
        s[t] = Sf[t + 1, 0]
        if Sf[t + 1, t + 1] > smax:
            smax = Sf[t + 1, t + 1]
    for q in range(npair):
        sld[q] = Sf[pi[q] + 1, pj[q] + 1]
    return ST_OK, smax


@jit_strict
def _cf_store(th, xb, k, Sf, pidx):
    """The model's parameters (at ``pidx`` in ``th``) from the reduced problem's solution ``xb``
    (l_2..l_k, phi, c) and S_full."""
    v = Sf[0, 0]
    c = xb[k]
    phi = xb[k - 1]
    b_ = c / v
    for t in range(1, k):
        th[pidx[t - 1]] = xb[t - 1]
    th[pidx[k - 1]] = b_
    for t in range(k):
        lt = 1.0 if t == 0 else xb[t - 1]
        th[pidx[k + t]] = Sf[t + 1, t + 1] - lt * lt * phi
    th[pidx[2 * k]] = phi - b_ * b_ * v
    th[pidx[2 * k + 1]] = v


@jit_strict
def _cf_work(k):
    """Scratch of one thread's reduced fits over k traits: S_full / V_full and their moments, the
    trait pairs (``pi``, ``pj``; ``vpos`` their place in vech(S_full)) and the LM's arrays."""
    K1 = k + 1
    Kst = K1 * (K1 + 1) // 2
    npair = k * (k - 1) // 2
    n = k + 1
    nr = k + npair
    VS = np.empty((k, k))
    Sf = np.empty((K1, K1))
    Vf = np.empty((Kst, Kst))
    tmpK = np.empty((Kst, Kst))
    s = np.empty(k)
    ws = np.empty(k)
    sld = np.empty(max(npair, 1))
    wld = np.empty(max(npair, 1))
    pi = np.empty(npair, np.int64)
    pj = np.empty(npair, np.int64)
    vpos = np.empty(npair, np.int64)
    q = 0
    for b in range(k):
        for a in range(b + 1, k):
            pi[q] = a
            pj[q] = b
            # vech(S_full) position of trait pair (a, b) = K1 + vech position in S_LD
            vpos[q] = (b + 1) * K1 - (b + 1) * b // 2 + (a - b)
            q += 1
    r = np.empty(nr)
    J = np.empty((nr, n))
    H = np.empty((n, n))
    HW = np.empty((n, n))
    g = np.empty(n)
    d = np.empty(n)
    xn = np.empty(n)
    x = np.empty(n)
    xb = np.empty(n)
    Hn = np.empty((n, n))
    gp = np.empty(n)
    rp = np.empty(nr)
    d2 = np.empty(n)
    xt = np.empty(n)
    rt = np.empty(nr)
    return VS, Sf, Vf, tmpK, s, ws, sld, wld, pi, pj, vpos, r, J, H, HW, g, d, xn, x, xb, Hn, gp, rp, d2, xt, rt


def cf_out(n, npar):
    """Per-SNP outputs of a reduced fit (:class:`CfOut`) for n SNPs, npar parameters.  The kernel
    writes every entry; the status starts at ``ST_NOCONV`` so that a compile helper, where the
    kernel is a no-op (:mod:`polgen.kernels._precompile`), takes the same later paths as a real
    call (user_gwas fix_measurement=False: the psi > 0 search, then the SEs at max_iter=0)."""
    return CfOut(np.empty((n, npar)), np.empty(n), np.full(n, ST_NOCONV, np.int64), np.empty(n, np.int64))


@jit_strict
def _cf_range(lo, hi, snp, cf, out, smooth):
    """SNPs ``lo:hi`` of ``snp`` (:class:`~polgen.kernels.snp_moments.SnpBatch`) with the starts and
    parameter numbers of ``cf`` (:class:`CfSpec`) into ``out`` (:class:`CfOut`).  ``smooth`` None
    (tested ``is None``: the nearPD code is not compiled) leaves a SNP whose S_full or V_full is not
    positive definite at ``ST_SMOOTH_LATER``; True smooths it."""
    beta, S_LD, V_LD = snp.beta, snp.S_LD, snp.V_LD
    starts, n_always, max_iter, pidx, trigger = cf.starts, cf.n_always, cf.max_iter, cf.pidx, cf.trigger
    theta, fmin, status, iters = out.theta, out.fmin, out.status, out.iters
    k = beta.shape[1]
    K1 = k + 1
    npair = k * (k - 1) // 2
    n = k + 1
    nst = starts.shape[0]
    (VS, Sf, Vf, tmpK, s, ws, sld, wld, pi, pj, vpos, r, J, H, HW, g, d, xn, x, xb, Hn, gp, rp, d2, xt, rt) = _cf_work(
        k
    )
    score = np.empty(nst)
    used = np.empty(nst, np.bool_)
    sld0 = np.empty(max(npair, 1))
    wld0 = np.empty(max(npair, 1))
    for q in range(npair):
        sld0[q] = S_LD[pi[q], pj[q]]
        wld0[q] = 1.0 / V_LD[vpos[q] - K1, vpos[q] - K1]
    pscore = np.empty(nst)
    for st in range(nst):
        for a in range(k - 1):
            x[a] = starts[st, a]
        pscore[st] = _cf_pair(x, k, sld0, wld0, pi, pj)
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
        best_f = np.inf
        best_st = ST_NOCONV
        nit = 0
        # the LM runs from the warm start (row 0), then from the best-scoring others (score: the
        # projected objective of the start): n_always runs, more only while none converged or
        # (trigger >= 0) while an unused start scores below the best converged objective times
        # 1 + trigger.  The trait-pair part of a score is the same for every SNP whose S_full and
        # V_full were not smoothed (pscore, per chunk) and bounds it from below, so after a
        # converged warm fit only the starts whose pair part is under that threshold are scored.
        same = True
        for q in range(npair):
            if sld[q] != sld0[q] or wld[q] != wld0[q]:
                same = False
        lazy = same and n_always <= 1
        for st in range(nst):
            used[st] = False
            score[st] = np.inf
        if not lazy:
            _cf_scores(starts, k, s, ws, sld, wld, pi, pj, x, r, used, score, np.inf, pscore)
        score[0] = -np.inf
        for run in range(nst):
            st = -1
            bs = np.inf
            for q2 in range(nst):
                if not used[q2] and (st < 0 or score[q2] < bs):
                    st = q2
                    bs = score[q2]
            used[st] = True
            for a in range(k - 1):
                x[a] = starts[st, a]
            code, f, it = _cf_lm(
                x,
                k,
                s,
                ws,
                sld,
                wld,
                pi,
                pj,
                smax,
                max_iter,
                r,
                J,
                H,
                HW,
                g,
                d,
                xn,
                Hn,
                gp,
                rp,
                d2,
                xt,
                rt,
                xb,
                best_f if best_st == ST_OK else np.inf,
            )
            nit += it
            if code == ST_OK:
                if best_st != ST_OK or f < best_f:
                    best_f = f
                    best_st = ST_OK
                    for a in range(n):
                        xb[a] = x[a]
            elif best_st != ST_OK and code == ST_NOFINITE:
                best_st = ST_NOFINITE
            if lazy and run == 0:
                if best_st != ST_OK:
                    _cf_scores(starts, k, s, ws, sld, wld, pi, pj, x, r, used, score, np.inf, pscore)
                elif trigger >= 0.0:
                    thr = best_f * (1.0 + trigger)
                    _cf_scores(starts, k, s, ws, sld, wld, pi, pj, x, r, used, score, thr, pscore)
            if run + 1 >= n_always and best_st == ST_OK:
                # trigger >= 0: go on while an unused start scores below the best converged
                # objective (times 1 + trigger): its basin may hold a lower minimum
                if trigger < 0.0:
                    break
                nxt = np.inf
                for q2 in range(nst):
                    if not used[q2] and score[q2] < nxt:
                        nxt = score[q2]
                if not (nxt < best_f * (1.0 + trigger)):
                    break
        iters[i] = nit
        status[i] = best_st
        if best_st != ST_OK:
            continue
        fmin[i] = best_f
        _cf_store(theta[i], xb, k, Sf, pidx)


def commonfactor_fit(
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
    pidx,
    npar,
    *,
    n_always=1,
    max_iter=500,
    trigger=-1.0,
    parallel=None,
):
    """Per-SNP DWLS estimates of commonfactorGWAS's model (reduced problem, see above).

    ``starts``: (n_starts, k) rows ``(l_2..l_k, phi)``; the first ``n_always`` are always run,
    the others only for SNPs where none of those converged; the lowest objective among the
    converged fits wins (as R's fit from the first SNP's estimates lands on the fixtures).
    ``pidx``: parameter numbers of ``l_2..l_k, b, th_1..th_k, psi, v`` in the caller's table.
    Returns (theta (n x npar), fmin, status, iters).
    """
    n, k = beta.shape
    f64 = np.float64
    res = cf_out(n, npar)
    if n == 0:
        return res
    snp = snp_batch(beta, se, var, S_LD, V_LD, I_LD, gc, varse2, v_pd_known)
    cf = CfSpec(
        np.ascontiguousarray(starts, f64),
        int(n_always),
        int(max_iter),
        np.ascontiguousarray(pidx, np.int64),
        float(trigger),
    )
    run_smoothed(_cf_range, snp, cf, res, parallel)
    return res


def run_smoothed(range_fn, snp, spec, res, parallel=None) -> None:
    """Run ``range_fn(lo, hi, snp, spec, res, smooth)`` over all SNPs of ``snp`` (threads when
    ``parallel``, default: 2,048 SNPs or more) without nearPD, then refit the few SNPs left at
    ``ST_SMOOTH_LATER`` with the nearPD specialisation.  ``res``: a namedtuple of per-SNP arrays
    whose ``status`` holds the codes."""
    n = snp.beta.shape[0]
    if parallel is None:
        parallel = n >= 2048
    if parallel:
        run_chunks(range_fn, n, n_chunks(n), snp, spec, res, None)
    else:
        range_fn(0, n, snp, spec, res, None)
    redo = np.flatnonzero(res.status == ST_SMOOTH_LATER)
    if redo.size:
        # the few SNPs whose S_full / V_full needs nearPD: the kernel specialisation with it
        sub_snp = snp._replace(beta=snp.beta[redo], se=snp.se[redo], var=snp.var[redo])
        sub = type(res)(*(a[redo] for a in res))
        range_fn(0, redo.size, sub_snp, spec, sub, True)
        for a, b in zip(res, sub):
            a[redo] = b
