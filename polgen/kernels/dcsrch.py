"""MINPACK-2 ``dcsrch`` / ``dcstep`` (More & Thuente 1994), the line search of L-BFGS-B, in numba.

Reverse communication through a 17-slot state vector (see :func:`search_step`), with L-BFGS-B's
constants ``ftol = 1e-3``, ``gtol = 0.9``, ``xtol = 0.1``; used by :mod:`polgen.kernels.lbfgsb_r`.
"""

from __future__ import annotations

import math

from polgen.kernels._jit import jit_strict

__all__ = ["dcstep", "search_step"]


@jit_strict
def dcstep(stx, fx, dx, sty, fy, dy, stp, fp, dp, brackt, stpmin, stpmax):  # pragma: no cover - numba
    sgnd = dp * (1.0 if dx >= 0 else -1.0)
    if fp > fx:
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        s = max(abs(theta), abs(dx), abs(dp))
        gamma = s * math.sqrt((theta / s) ** 2 - (dx / s) * (dp / s))
        if stp < stx:
            gamma = -gamma
        p = (gamma - dx) + theta
        q = ((gamma - dx) + gamma) + dp
        stpc = stx + p / q * (stp - stx)
        stpq = stx + ((dx / ((fx - fp) / (stp - stx) + dx)) / 2.0) * (stp - stx)
        stpf = stpc if abs(stpc - stx) < abs(stpq - stx) else stpc + (stpq - stpc) / 2.0
        brackt = True
    elif sgnd < 0:
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        s = max(abs(theta), abs(dx), abs(dp))
        gamma = s * math.sqrt((theta / s) ** 2 - (dx / s) * (dp / s))
        if stp > stx:
            gamma = -gamma
        p = (gamma - dp) + theta
        q = ((gamma - dp) + gamma) + dx
        stpc = stp + p / q * (stx - stp)
        stpq = stp + (dp / (dp - dx)) * (stx - stp)
        stpf = stpc if abs(stpc - stp) > abs(stpq - stp) else stpq
        brackt = True
    elif abs(dp) < abs(dx):
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        s = max(abs(theta), abs(dx), abs(dp))
        gamma = s * math.sqrt(max(0.0, (theta / s) ** 2 - (dx / s) * (dp / s)))
        if stp > stx:
            gamma = -gamma
        p = (gamma - dp) + theta
        q = (gamma + (dx - dp)) + gamma
        r = p / q
        if r < 0 and gamma != 0:
            stpc = stp + r * (stx - stp)
        elif stp > stx:
            stpc = stpmax
        else:
            stpc = stpmin
        stpq = stp + (dp / (dp - dx)) * (stx - stp)
        if brackt:
            stpf = stpc if abs(stpc - stp) < abs(stpq - stp) else stpq
            if stp > stx:
                stpf = min(stp + 0.66 * (sty - stp), stpf)
            else:
                stpf = max(stp + 0.66 * (sty - stp), stpf)
        else:
            stpf = stpc if abs(stpc - stp) > abs(stpq - stp) else stpq
            stpf = max(stpmin, min(stpmax, stpf))
    else:
        if brackt:
            theta = 3.0 * (fp - fy) / (sty - stp) + dy + dp
            s = max(abs(theta), abs(dy), abs(dp))
            gamma = s * math.sqrt((theta / s) ** 2 - (dy / s) * (dp / s))
            if stp > sty:
                gamma = -gamma
            p = (gamma - dp) + theta
            q = ((gamma - dp) + gamma) + dy
            stpf = stp + p / q * (sty - stp)
        elif stp > stx:
            stpf = stpmax
        else:
            stpf = stpmin
    if fp > fx:
        sty, fy, dy = stp, fp, dp
    else:
        if sgnd < 0:
            sty, fy, dy = stx, fx, dx
        stx, fx, dx = stp, fp, dp
    return stx, fx, dx, sty, fy, dy, stpf, brackt


@jit_strict
def search_step(st, stp, f, g):  # pragma: no cover - numba
    """One MINPACK-2 ``dcsrch`` call after the start; ``st`` holds its state.  Returns the next step and
    0 (evaluate there), 1 (converged) or 2 (warning: accept the current step)."""
    # st: 0 brackt, 1 stage, 2 finit, 3 ginit, 4 gtest, 5 width, 6 width1, 7 stx, 8 fx, 9 gx,
    #     10 sty, 11 fy, 12 gy, 13 stmin, 14 stmax, 15 stpmin, 16 stpmax
    gtol, xtol = 0.9, 0.1  # ftol = 1e-3 enters through gtest = ftol * ginit (set at the start)
    ftest = st[2] + stp * st[4]
    if st[1] == 1 and f <= ftest and g >= 0:
        st[1] = 2
    brackt = st[0] != 0
    task = 0
    if brackt and (stp <= st[13] or stp >= st[14]):
        task = 2
    if brackt and st[14] - st[13] <= xtol * st[14]:
        task = 2
    if stp == st[16] and f <= ftest and g <= st[4]:
        task = 2
    if stp == st[15] and (f > ftest or g >= st[4]):
        task = 2
    if f <= ftest and abs(g) <= gtol * -st[3]:
        task = 1
    if task != 0:
        return stp, task
    gt = st[4]
    if st[1] == 1 and f <= st[8] and f > ftest:
        stx, fxm, gxm, sty, fym, gym, stp, brackt = dcstep(
            st[7], st[8] - st[7] * gt, st[9] - gt, st[10], st[11] - st[10] * gt, st[12] - gt,
            stp, f - stp * gt, g - gt, brackt, st[13], st[14],
        )  # fmt: skip
        st[7], st[10] = stx, sty
        st[8], st[11] = fxm + stx * gt, fym + sty * gt
        st[9], st[12] = gxm + gt, gym + gt
    else:
        stx, fx, gx, sty, fy, gy, stp, brackt = dcstep(
            st[7], st[8], st[9], st[10], st[11], st[12], stp, f, g, brackt, st[13], st[14]
        )
        st[7], st[8], st[9], st[10], st[11], st[12] = stx, fx, gx, sty, fy, gy
    st[0] = 1.0 if brackt else 0.0
    if brackt:
        if abs(st[10] - st[7]) >= 0.66 * st[6]:
            stp = st[7] + 0.5 * (st[10] - st[7])
        st[6] = st[5]
        st[5] = abs(st[10] - st[7])
        st[13] = min(st[7], st[10])
        st[14] = max(st[7], st[10])
    else:
        st[13] = stp + 1.1 * (stp - st[7])
        st[14] = stp + 4.0 * (stp - st[7])
    stp = max(stp, st[15])
    stp = min(stp, st[16])
    if brackt and (stp <= st[13] or stp >= st[14] or st[14] - st[13] <= xtol * st[14]):
        stp = st[7]
    return stp, 0
