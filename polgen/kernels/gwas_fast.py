"""Genomic SEM GWAS fast path: the SNP is exogenous and every non-SNP path is fixed
(``fix_measurement`` models under DWLS), so the implied moments are linear in the free
(co)variances and quadratic in the SNP paths; no RAM inverse per iteration.

:func:`fast_structure` finds that structure in a compiled model, :func:`reduce_fast` solves the
indicator residual variances in closed form, :func:`fast_path` packs it as the :class:`FastPath`
named tuple the batch kernel (:mod:`polgen.kernels.gwas`) takes.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from polgen.kernels._jit import jit
from polgen.kernels.gwas_codes import ST_NOCONV, ST_NONFINITE, ST_OK, ftol
from polgen.kernels.gwas_fast_ml import _fast_jac, _fast_sigma
from polgen.kernels.linalg import _damped_solve
from polgen.kernels.ram_steps import _normal_eq

__all__ = ["FastPath", "fast_path", "fast_structure", "ram_closed_form", "reduce_fast"]

#: The fast-path structure as the batch kernel takes it.  ``on``: use it (else the RAM fit runs and
#: the arrays are unused stand-ins); per free parameter ``f`` of the iterative fit ``ftype[f]`` (0 a
#: non-SNP (co)variance with moment column ``Js[:, f]``, 1 a SNP path with loadings ``G[:, f]``,
#: 2 the SNP variance); ``C0`` the fixed part of the moments; ``u0`` the fixed SNP loadings;
#: ``vfix`` / ``vpos`` the fixed SNP variance or its position in ``fidx``; ``elim_par`` /
#: ``elim_mom`` the residual variances solved in closed form and their moments.
FastPath = namedtuple("FastPath", ["on", "ftype", "Js", "G", "C0", "u0", "vfix", "vpos", "elim_par", "elim_mom"])


# ----------------------------------------------------------------------------------------------
# fast path: SNP exogenous, every non-SNP path fixed (fix_measurement models under DWLS)
#   u = u0 + G a;  Sigma_tt = C0 + sum_k s_k Js_k + v u u';  Sigma_tS = v u;  Sigma_SS = v
# ----------------------------------------------------------------------------------------------
@jit
def _fast_f(sig, s_vec, w, ma):
    """The DWLS objective at the fast-path moments ``sig``."""
    f = 0.0
    for m in range(ma.shape[0]):
        r = s_vec[m] - sig[m]
        f += w[m] * r * r
    return f


@jit
def _fit_fast_dwls(
    theta,
    fidx,
    nf,
    ftype,
    Js,
    G,
    C0,
    u0,
    vfix,
    vpos,
    ma,
    mb,
    p,
    s_vec,
    w,
    ldS,
    max_iter,
    xtol,
    u,
    sig,
    J,
    WJ,
    H,
    HW,
    g,
    delta,
    th_new,
    resid,
    Cp,
    Sig,
    Sinv,
    col,
    Smat,
    Wm,
    fval,
):
    """DWLS on the fast-path structure: Levenberg-Marquardt (Gauss-Newton with the weights ``w``;
    ``ldS``, ``Cp``, ``Sig``, ``Sinv``, ``col``, ``Smat``, ``Wm`` and ``fval`` are the ML fit's,
    unused).  Leaves resid and J at the solution.  Returns (status, iterations)."""
    nmom = ma.shape[0]
    npar = theta.shape[0]
    v = _fast_sigma(theta, fidx, nf, ftype, Js, G, C0, u0, vfix, vpos, ma, mb, p, u, sig)
    f = _fast_f(sig, s_vec, w, ma)
    for m in range(nmom):
        resid[m] = s_vec[m] - sig[m]
    if not np.isfinite(f):
        return ST_NONFINITE, 0
    lam = 0.0
    it = 0
    while it < max_iter:
        it += 1
        _fast_jac(theta, fidx, nf, ftype, Js, G, v, ma, mb, u, J)
        _normal_eq(nf, nmom, J, w, WJ, resid, H, g)
        accepted = False
        tries = 0
        while not accepted and tries < 40:
            tries += 1
            for a in range(nf):
                delta[a] = g[a]
            if not _damped_solve(H, nf, lam, delta, HW):
                lam = 1e-8 if lam == 0.0 else lam * 10.0
                continue
            for q in range(npar):
                th_new[q] = theta[q]
            for a in range(nf):
                th_new[fidx[a]] += delta[a]
            vn = _fast_sigma(th_new, fidx, nf, ftype, Js, G, C0, u0, vfix, vpos, ma, mb, p, u, sig)
            fn = _fast_f(sig, s_vec, w, ma)
            if fn <= f:
                accepted = True
                small = True
                for a in range(nf):
                    if abs(delta[a]) > xtol * (abs(th_new[fidx[a]]) + 1e-6):
                        small = False
                for q in range(npar):
                    theta[q] = th_new[q]
                for m in range(nmom):
                    resid[m] = s_vec[m] - sig[m]
                v = vn
                fold = f
                f = fn
                lam = 0.0 if lam <= 1e-8 else lam * 0.1
                if small or (fold - fn) <= ftol * fold or fn == 0.0:
                    _fast_jac(theta, fidx, nf, ftype, Js, G, v, ma, mb, u, J)
                    return ST_OK, it
            else:
                lam = 1e-8 if lam == 0.0 else lam * 10.0
        if not accepted:
            # no decrease along any damped direction: stationary to rounding; scratch at theta
            v = _fast_sigma(theta, fidx, nf, ftype, Js, G, C0, u0, vfix, vpos, ma, mb, p, u, sig)
            _fast_jac(theta, fidx, nf, ftype, Js, G, v, ma, mb, u, J)
            return ST_OK, it
    return ST_NOCONV, it


def fit_callee(args):
    """The fit a specialisation of :func:`polgen.kernels.gwas_kernel._snp_range` calls and its
    numba signature, from the kernel's argument types ``args``, for :mod:`polgen.kernels._precompile`:
    ``[(kernel, signature, here)]`` (empty when not known here).  A helper process compiles the fit
    (``here`` False) while this process compiles, before the kernel, a few of the fit's callees
    (``here`` True: the helper's type inference of the fit loads them; this process would reach
    the fit long before the helper had compiled all of it).  tests/kernels/test_gwas_fast_switch.py
    checks the signatures."""
    from numba.core import types

    if len(args) != 13 or args[7] == types.none:  # only the fast path's fits
        return []
    fld = {}
    for t in args[3:6]:  # lay, spec, fp: the named tuples' fields
        fld.update(zip(t.fields, t))
    f1, f2 = types.Array(types.float64, 1, "C"), types.Array(types.float64, 2, "C")
    i8, f8 = types.int64, types.float64
    fidx, ftype, G, u0, ma, mb = (fld[x] for x in ("fidx", "ftype", "G", "u0", "ma", "mb"))
    sig = (
        *(f1, fidx, i8),
        *(fld[x] for x in ("ftype", "Js", "G", "C0", "u0", "vfix", "vpos", "ma", "mb", "p")),
        *(f1, f1, f8, fld["max_iter"], fld["xtol"]),
        *(f1, f1, f2, f2, f2, f2, f1, f1, f1, f1, f2, f2, f2, f1, f2, f2, f1),
    )
    k = "polgen.kernels."
    if args[9] != types.none:  # ML: the GLS start and the Jacobian here (~1/4 of the fit's time)
        return [
            (k + "gwas_fast_ml._fit_fast_ml", sig, False),
            (k + "gwas_fast_ml._ml_gls_start", (f1, fidx, i8, ftype, G, u0, i8, f1, f8, f2, f2, f1, f1, f2, f2, f1),
             True),
            (k + "gwas_fast_ml._fast_jac", (f1, fidx, i8, ftype, fld["Js"], G, f8, ma, mb, f1, f2), True),
        ]  # fmt: skip
    return [  # DWLS: the normal equations (the SEs' too) and the damped solve here
        (k + "gwas_fast._fit_fast_dwls", sig, False),
        (k + "ram_steps._normal_eq", (i8, i8, f2, f1, f2, f1, f2, f1), True),
        (k + "linalg._damped_solve", (f2, i8, f8, f1, f2), True),
    ]


def fast_path(fast, nmom, p, nf, elim_par=None, elim_mom=None):
    """The :class:`FastPath` tuple the batch kernel takes: from a (reduced) :func:`fast_structure`
    dict, or an inert one (``on=False``, empty stand-in arrays of the right types) when ``fast`` is None."""
    i64 = np.int64
    ep = np.zeros(0, i64) if elim_par is None else np.ascontiguousarray(elim_par, i64)
    em = np.zeros(0, i64) if elim_mom is None else np.ascontiguousarray(elim_mom, i64)
    if fast is None:
        return FastPath(
            False,
            np.zeros(max(nf, 1), i64),
            np.zeros((nmom, max(nf, 1))),
            np.zeros((p, max(nf, 1))),
            np.zeros(nmom),
            np.zeros(p),
            0.0,
            -1,
            ep,
            em,
        )
    return FastPath(
        True,
        fast["ftype"],
        fast["Js"],
        fast["G"],
        fast["C0"],
        fast["u0"],
        float(fast["vfix"]),
        int(fast["vpos"]),
        ep,
        em,
    )


def fast_structure(model, fidx, theta0, snp_index=0):
    """Precompute the fast-path structure, or None when the model does not have it.

    Needs: nothing points to the SNP; the SNP covaries with nothing; every path that does not
    start at the SNP is fixed; each free parameter is all-variance/covariance (not touching the
    SNP), all SNP paths, or the SNP variance.  Fixed values come from ``theta0`` (one row).
    """
    nv, p = int(model["nv"]), int(model["p"])
    kind, er, ec, ep, ev = (model["ent_kind"], model["ent_r"], model["ent_c"], model["ent_par"], model["ent_val"])
    fidx = [int(q) for q in fidx]
    fpos = {q: i for i, q in enumerate(fidx)}
    th = np.asarray(theta0, dtype=np.float64).reshape(-1)
    nf = len(fidx)
    ftype = -np.ones(nf, np.int64)
    A0 = np.zeros((nv, nv))
    S0 = np.zeros((nv, nv))
    snp_paths = []  # (target, param position or -1, value)
    vpos, vfix = -1, None
    s_entries = []  # (i, j, param position)
    for e in range(len(kind)):
        q = int(ep[e])
        free = q >= 0 and q in fpos
        val = float(ev[e]) if q < 0 else float(th[q])
        r, c = int(er[e]), int(ec[e])
        if kind[e] == 0:
            if r == snp_index:
                return None
            if c == snp_index:
                snp_paths.append((r, fpos[q] if free else -1, val))
                if free:
                    if ftype[fpos[q]] not in (-1, 1):
                        return None
                    ftype[fpos[q]] = 1
            else:
                if free:
                    return None
                A0[r, c] = val
        else:
            if r == snp_index or c == snp_index:
                if r != c:
                    return None
                if free:
                    if ftype[fpos[q]] not in (-1, 2) or vpos not in (-1, fpos[q]):
                        return None
                    ftype[fpos[q]] = 2
                    vpos = fpos[q]
                else:
                    vfix = val
            else:
                if free:
                    if ftype[fpos[q]] not in (-1, 0):
                        return None
                    ftype[fpos[q]] = 0
                    s_entries.append((r, c, fpos[q]))
                else:
                    S0[r, c] = val
                    S0[c, r] = val
    if (ftype < 0).any():
        return None
    if vpos < 0 and vfix is None:
        vfix = 0.0
    try:
        T = np.linalg.inv(np.eye(nv) - A0)
    except np.linalg.LinAlgError:
        return None
    ma, mb = model["ma"], model["mb"]
    nmom = len(ma)
    Cfull = T @ S0 @ T.T
    C0 = np.array([0.0 if b == 0 else Cfull[a, b] for a, b in zip(ma, mb)])
    Js = np.zeros((nmom, max(nf, 1)))
    for i, j, f in s_entries:
        hi, hj = T[:, i], T[:, j]
        for m, (a, b) in enumerate(zip(ma, mb)):
            if b == 0:
                continue
            Js[m, f] += hi[a] * hj[b] + (hj[a] * hi[b] if i != j else 0.0)
    G = np.zeros((p, max(nf, 1)))
    u0 = np.zeros(p)
    for t, f, val in snp_paths:
        if f >= 0:
            G[:, f] += T[:p, t]
        else:
            u0 += T[:p, t] * val
    G[0] = 0.0
    u0[0] = 0.0
    # residual variances of observed indicators: one entry (i, i), nothing leaves variable i;
    # each only moves its own diagonal moment, which it fits exactly -> solved in closed form
    n_ent = {}
    for _i, _j, f in s_entries:
        n_ent[f] = n_ent.get(f, 0) + 1
    elim_pos, elim_mom = [], []
    for i, j, f in s_entries:
        if i == j and 1 <= i < p and n_ent[f] == 1 and np.allclose(T[:, i], np.eye(nv)[:, i]):
            m = [mm for mm, (a, b) in enumerate(zip(ma, mb)) if a == i and b == i][0]
            elim_pos.append(f)
            elim_mom.append(m)
    return {
        "ftype": ftype,
        "Js": Js,
        "G": np.ascontiguousarray(G),
        "C0": C0,
        "u0": u0,
        "vfix": float(vfix if vfix is not None else 0.0),
        "vpos": vpos,
        "elim_pos": np.array(elim_pos, np.int64),
        "elim_mom": np.array(elim_mom, np.int64),
    }


def ram_closed_form(model, fidx, snpvar_par=-1):
    """The residual variances a DWLS RAM fit can solve in closed form: a free parameter with one
    entry, the variance ``S[i, i]`` of an observed variable ``i`` (not the SNP) from which no path
    leaves (no ``A[., i]`` entry, free or fixed) moves only the diagonal moment ``(i, i)``, with
    coefficient 1, and no other parameter's derivative depends on it; with diagonal weights it
    fits that moment exactly at every value of the others (variable projection).  Returns
    (positions in ``fidx`` kept in the iterative fit, eliminated parameters, their moments)."""
    kind, er, ec, ep = model["ent_kind"], model["ent_r"], model["ent_c"], model["ent_par"]
    p = int(model["p"])
    ma, mb = np.asarray(model["ma"]), np.asarray(model["mb"])
    fidx = np.asarray(fidx, np.int64)
    has_out = set(int(c) for c, k in zip(ec, kind) if k == 0)  # variables with a path leaving them
    n_ent: dict[int, int] = {}
    for q in ep:
        if q >= 0:
            n_ent[int(q)] = n_ent.get(int(q), 0) + 1
    elim_par, elim_mom, drop = [], [], set()
    for f, q in enumerate(fidx.tolist()):
        if q == snpvar_par or n_ent.get(q, 0) != 1:
            continue
        e = int(np.flatnonzero(np.asarray(ep) == q)[0])
        i = int(er[e])
        if kind[e] != 1 or int(ec[e]) != i or not (1 <= i < p) or i in has_out:
            continue
        mom = np.flatnonzero((ma == i) & (mb == i))
        if mom.size != 1 or int(mom[0]) in elim_mom:
            continue
        elim_par.append(q)
        elim_mom.append(int(mom[0]))
        drop.add(f)
    keep = np.array([f for f in range(len(fidx)) if f not in drop], np.int64)
    return keep, np.array(elim_par, np.int64), np.array(elim_mom, np.int64)


def reduce_fast(fast, fidx):
    """Drop the closed-form parameters from the iterative fit: (fast', fidx', elim_par, elim_mom)."""
    fidx = np.asarray(fidx, np.int64)
    ep = fast.get("elim_pos", np.zeros(0, np.int64))
    if len(ep) == 0:
        return fast, fidx, np.zeros(0, np.int64), np.zeros(0, np.int64)
    keep = np.array([f for f in range(len(fidx)) if f not in set(ep.tolist())], np.int64)
    vpos = int(fast["vpos"])
    red = dict(fast)
    red["ftype"] = np.ascontiguousarray(fast["ftype"][keep])
    red["Js"] = np.ascontiguousarray(fast["Js"][:, keep]) if len(keep) else np.zeros((fast["Js"].shape[0], 1))
    red["G"] = np.ascontiguousarray(fast["G"][:, keep]) if len(keep) else np.zeros((fast["G"].shape[0], 1))
    red["vpos"] = int(np.where(keep == vpos)[0][0]) if vpos >= 0 else -1
    return red, fidx[keep], fidx[ep], np.asarray(fast["elim_mom"], np.int64)
