"""High-definition likelihood (HDL, Ning, Pawitan & Shen 2020) objectives over eigen-decomposed LD.

In the rotated space of one LD piece (eigenvalues ``lam``, rotated effects ``bstar = V' bhat``) the
HDL model makes every component independent normal; the negative log-likelihood (up to constants) is

* heritability: ``sum(log(v)) + sum(bstar^2 / v)`` with
  ``v = h2 / M * lam^2 - h2 * lam / Nref + icpt * lam / N`` clipped below at ``lim``;
* genetic covariance, given both traits' ``(h2, icpt)``: the conditional likelihood of trait 2's
  ``bstar2`` given trait 1's, with ``v12 = h12 / M * lam^2 + p1 p2 icpt * lam / N0``
  (``p = N0 / N``; the overlap term is dropped when ``N0 == 0``).

The kernels evaluate these exactly in R GenomicSEM's operation order (no fast-math) with compensated
summation (R's ``sum`` accumulates in extended precision), skipping the index range ``[skip_lo,
skip_hi)`` so that a jackknife's leave-one-piece-out objective runs on the concatenated arrays without
copying.  ``*_fg`` return the value and R ``optim``'s numerical gradient: central differences with
step ``ndeps`` shortened to one side at a bound (``(f(x + e1) - f(x - e2)) / (e1 + e2)``).
"""

from __future__ import annotations

import math

import numpy as np

from polgen.kernels._jit import jit_strict

__all__ = ["gcov_fg", "gcov_value", "h2_fg", "h2_value"]


@jit_strict
def h2_value(h2, icpt, n, m, nref, lam, bstar, skip_lo, skip_hi, lim):  # pragma: no cover - numba
    s1 = 0.0
    c1 = 0.0
    s2 = 0.0
    c2 = 0.0
    for i in range(lam.shape[0]):
        if skip_lo <= i < skip_hi:
            continue
        lm = lam[i]
        v = h2 / m * (lm * lm) - h2 * lm / nref + icpt * lm / n
        if v < lim:
            v = lim
        a = math.log(v)
        t = s1 + a
        if abs(s1) >= abs(a):
            c1 += (s1 - t) + a
        else:
            c1 += (a - t) + s1
        s1 = t
        b = bstar[i]
        a = b * b / v
        t = s2 + a
        if abs(s2) >= abs(a):
            c2 += (s2 - t) + a
        else:
            c2 += (a - t) + s2
        s2 = t
    return (s1 + c1) + (s2 + c2)


@jit_strict
def gcov_value(
    h12, icpt, h11, i11, h22, i22, m, n1, n2, n0, nref, lam, b1, b2, skip_lo, skip_hi, lim
):  # pragma: no cover - numba
    p1 = n0 / n1
    p2 = n0 / n2
    s1 = 0.0
    c1 = 0.0
    s2 = 0.0
    c2 = 0.0
    for i in range(lam.shape[0]):
        if skip_lo <= i < skip_hi:
            continue
        lm = lam[i]
        l11 = h11 / m * (lm * lm) - h11 * lm / nref + i11 * lm / n1
        if l11 < lim:
            l11 = lim
        l22 = h22 / m * (lm * lm) - h22 * lm / nref + i22 * lm / n2
        if l22 < lim:
            l22 = lim
        if n0 > 0:
            l12 = h12 / m * lm * lm + p1 * p2 * icpt * lm / n0
        else:
            l12 = h12 / m * lm * lm
        u = b2[i] - l12 / l11 * b1[i]
        l221 = l22 - (l12 * l12) / l11
        if l221 < lim:
            l221 = lim
        a = math.log(l221)
        t = s1 + a
        if abs(s1) >= abs(a):
            c1 += (s1 - t) + a
        else:
            c1 += (a - t) + s1
        s1 = t
        a = u * u / l221
        t = s2 + a
        if abs(s2) >= abs(a):
            c2 += (s2 - t) + a
        else:
            c2 += (a - t) + s2
        s2 = t
    return (s1 + c1) + (s2 + c2)


@jit_strict
def _steps(x, k, lower, upper, ndeps):  # pragma: no cover - numba
    up = x[k] + ndeps
    e1 = ndeps
    if up > upper[k]:
        up = upper[k]
        e1 = up - x[k]
    dn = x[k] - ndeps
    e2 = ndeps
    if dn < lower[k]:
        dn = lower[k]
        e2 = x[k] - dn
    return up, dn, e1 + e2


@jit_strict
def h2_fg(x, lower, upper, ndeps, n, m, nref, lam, bstar, skip_lo, skip_hi, lim):  # pragma: no cover - numba
    f = h2_value(x[0], x[1], n, m, nref, lam, bstar, skip_lo, skip_hi, lim)
    g = np.empty(2)
    up, dn, den = _steps(x, 0, lower, upper, ndeps)
    g[0] = (
        h2_value(up, x[1], n, m, nref, lam, bstar, skip_lo, skip_hi, lim)
        - h2_value(dn, x[1], n, m, nref, lam, bstar, skip_lo, skip_hi, lim)
    ) / den
    up, dn, den = _steps(x, 1, lower, upper, ndeps)
    g[1] = (
        h2_value(x[0], up, n, m, nref, lam, bstar, skip_lo, skip_hi, lim)
        - h2_value(x[0], dn, n, m, nref, lam, bstar, skip_lo, skip_hi, lim)
    ) / den
    return f, g


@jit_strict
def gcov_fg(
    x, lower, upper, ndeps, h11, i11, h22, i22, m, n1, n2, n0, nref, lam, b1, b2, skip_lo, skip_hi, lim
):  # pragma: no cover - numba
    f = gcov_value(x[0], x[1], h11, i11, h22, i22, m, n1, n2, n0, nref, lam, b1, b2, skip_lo, skip_hi, lim)
    g = np.empty(2)
    up, dn, den = _steps(x, 0, lower, upper, ndeps)
    g[0] = (
        gcov_value(up, x[1], h11, i11, h22, i22, m, n1, n2, n0, nref, lam, b1, b2, skip_lo, skip_hi, lim)
        - gcov_value(dn, x[1], h11, i11, h22, i22, m, n1, n2, n0, nref, lam, b1, b2, skip_lo, skip_hi, lim)
    ) / den
    up, dn, den = _steps(x, 1, lower, upper, ndeps)
    g[1] = (
        gcov_value(x[0], up, h11, i11, h22, i22, m, n1, n2, n0, nref, lam, b1, b2, skip_lo, skip_hi, lim)
        - gcov_value(x[0], dn, h11, i11, h22, i22, m, n1, n2, n0, nref, lam, b1, b2, skip_lo, skip_hi, lim)
    ) / den
    return f, g
