"""Run-off acceleration for the DWLS RAM fit with closed-form residual variances (issue 18).

A SNP whose objective has no finite minimum (a Heywood residual variance running off to minus
infinity while a loading grows without bound) makes Levenberg-Marquardt crawl along a curved
valley: the loading grows by a roughly constant amount per iteration, the other loadings and the
SNP path shrink in proportion, and the ridge check of :mod:`polgen.kernels.gwas_kernel` (explained
variance above ``RIDGE`` times the largest trait variance) fires only after 100-200 iterations.

Along such a valley every parameter changes by a nearly constant *factor* per round, so the
kernel extrapolates geometrically between two round ends: ``theta_j * (theta_j / prev_j) ** m`` for
m = 2, 4, 8, ... (only parameters that kept their sign), accepting each trial while the objective
falls.  A trial is accepted only when it lowers the objective, so a fit that has a finite minimum
goes on from a better point; the ridge verdict is the same test as the kernel's own.

A second run-off leaves every trait's explained variance finite: a factor collapse (seen from
flipped half-scale starts), where the loadings shrink towards 0 while the factor's regression on
the SNP grows without bound.  :func:`_collapsed` ends it once a latent variable with a fixed
residual variance has a total variance above ``RIDGE`` times it (Levenberg-Marquardt crawled there
to the iteration cap).
"""

from __future__ import annotations

from polgen.kernels._jit import jit
from polgen.kernels.gwas_codes import RIDGE
from polgen.kernels.ram_fit import _objective
from polgen.kernels.ram_steps import _load_state, _save_state

__all__ = ["JUMP_TRIALS"]

#: doublings of the extrapolation exponent tried per round end (2 ** (JUMP_TRIALS + 1) at most)
JUMP_TRIALS = 12


@jit
def _geometric(theta, prev, fidx, nf, mult, out):
    """``out`` = theta with each free parameter that kept its sign since ``prev`` moved on by the
    factor (theta / prev) ** mult; the others as in theta."""
    for q in range(theta.shape[0]):
        out[q] = theta[q]
    for a in range(nf):
        q = fidx[a]
        x1 = theta[q]
        x0 = prev[q]
        if x1 != 0.0 and x0 != 0.0 and (x1 > 0.0) == (x0 > 0.0):
            out[q] = x1 * (x1 / x0) ** mult


@jit
def _ran_off(elim_mom, s_vec, resid, smax):
    """The kernel's ridge test: an eliminated trait's explained variance above RIDGE * smax."""
    for e in range(elim_mom.shape[0]):
        m = elim_mom[e]
        if not (s_vec[m] - resid[m] <= RIDGE * smax):
            return True
    return False


@jit
def _collapsed(theta, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, B):
    """A latent variable whose residual variance is fixed (e.g. ``F1 ~~ 1*F1``) and whose total
    variance (B S B')_ll exceeds RIDGE times it: the factor has become (to 1/RIDGE) a linear
    function of its predictors, its loadings shrinking towards 0 while its regression on the SNP
    grows without bound (a factor collapse; the objective falls towards a limit it never
    attains).  B must describe ``theta``."""
    for e in range(ent_kind.shape[0]):
        lat = ent_r[e]
        if ent_kind[e] != 1 or lat < p or ent_c[e] != lat or ent_par[e] >= 0 or not (ent_val[e] > 0.0):
            continue
        tot = 0.0
        for e2 in range(ent_kind.shape[0]):
            if ent_kind[e2] != 1:
                continue
            q = ent_par[e2]
            val = ent_val[e2] if q < 0 else theta[q]
            r = ent_r[e2]
            c = ent_c[e2]
            x = val * B[lat, r] * B[lat, c]
            tot += x if r == c else 2.0 * x
        if not (tot <= RIDGE * ent_val[e]):
            return True
    return False


@jit
def _ridge_jump(
    theta,
    prev,
    trial,
    fidx,
    nf,
    elim_mom,
    smax,
    s_vec,
    w,
    ent_kind,
    ent_r,
    ent_c,
    ent_par,
    ent_val,
    nv,
    p,
    A,
    S,
    IA,
    B,
    T,
    C,
    ma,
    mb,
    resid,
    Sig,
    Sinv,
    col,
    Smat,
    ldS,
    fio,
    sv,
):
    """Geometric extrapolation of a DWLS fit from ``prev`` (the previous round's end) through
    ``theta``.  Returns True when an accepted trial passes the ridge bound (``theta`` is left
    there: the SNP has no finite minimum); else moves ``theta`` to the last accepted trial (or
    leaves it) and returns False.  Either way the scratch (resid, B, C ...) describes ``theta`` on
    return, as after :func:`polgen.kernels.ram_fit._fit_one`, and ``fio[0]`` is the objective there.
    On entry ``fio[0]`` is the objective at ``theta`` with the scratch describing it (or NaN);
    ``sv`` (:func:`polgen.kernels.ram_steps.sv_size` elements) keeps the scratch of the last
    accepted point, restored at the end instead of re-evaluated (same bits)."""
    nmom = ma.shape[0]
    f = fio[0]
    if not (f == f):
        f = _objective(
            None, theta, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA, B, T, C,
            s_vec, w, ma, mb, resid, Sig, Sinv, col, Smat, ldS,
        )  # fmt: skip
    _save_state(B, C, resid, nv, p, nmom, sv)
    mult = 2.0
    good = 0.0
    for _x in range(JUMP_TRIALS):
        _geometric(theta, prev, fidx, nf, mult, trial)
        fx = _objective(
            None, trial, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA, B, T, C,
            s_vec, w, ma, mb, resid, Sig, Sinv, col, Smat, ldS,
        )  # fmt: skip
        if not fx < f:
            break
        f = fx
        good = mult
        if _ran_off(elim_mom, s_vec, resid, smax):
            for q in range(theta.shape[0]):
                theta[q] = trial[q]
            fio[0] = f
            return True
        _save_state(B, C, resid, nv, p, nmom, sv)
        mult *= 2.0
    if good > 0.0:
        _geometric(theta, prev, fidx, nf, good, trial)
        for q in range(theta.shape[0]):
            theta[q] = trial[q]
    _load_state(B, C, resid, nv, p, nmom, sv)
    fio[0] = f
    return False
