"""LD Score regression kernels: per-block cross-products and the block jackknife.

The regression is ``y*w ~ [l*w, w]`` (slope, intercept) over SNPs in a fixed order, cut into
``n_blocks`` contiguous blocks.  ``block_sums`` makes one pass over the SNPs; ``jackknife`` solves
the full and the leave-one-block-out 2x2 systems from the block sums and returns the
pseudo-values ``nb * reg - (nb - 1) * delete``, as R GenomicSEM's ``ldsc`` does.
"""

from __future__ import annotations

import numpy as np

from polgen.kernels._jit import jit_exact, jit_fm


@jit_fm
def block_sums(l2, w, y, starts, ends, xtx, xty):  # pragma: no cover - compiled
    """xtx[b] = (sum (lw)^2, sum lw*w, sum w^2), xty[b] = (sum lw*yw, sum w*yw) over block b.

    ``l2``, ``w``, ``y`` are float64 of length n; ``starts``/``ends`` int64 (end exclusive);
    ``w`` multiplies both the regressors and ``y`` (R's weighted.LD / weighted.chi)."""
    nb = starts.shape[0]
    for b in range(nb):
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        t0 = 0.0
        t1 = 0.0
        for i in range(starts[b], ends[b]):
            wi = w[i]
            a = l2[i] * wi
            yy = y[i] * wi
            s0 += a * a
            s1 += a * wi
            s2 += wi * wi
            t0 += a * yy
            t1 += wi * yy
        xtx[b, 0] = s0
        xtx[b, 1] = s1
        xtx[b, 2] = s2
        xty[b, 0] = t0
        xty[b, 1] = t1


@jit_exact
def _solve2(a, b, c, u, v):  # pragma: no cover - compiled
    det = a * c - b * b
    return (c * u - b * v) / det, (a * v - b * u) / det


@jit_exact
def jackknife(xtx, xty, reg, delete, pseudo):  # pragma: no cover - compiled
    """Full solution ``reg`` (slope, intercept), leave-one-block-out ``delete`` and
    pseudo-values ``pseudo`` (both nb x 2)."""
    nb = xtx.shape[0]
    a = 0.0
    b = 0.0
    c = 0.0
    u = 0.0
    v = 0.0
    for k in range(nb):
        a += xtx[k, 0]
        b += xtx[k, 1]
        c += xtx[k, 2]
        u += xty[k, 0]
        v += xty[k, 1]
    r0, r1 = _solve2(a, b, c, u, v)
    reg[0] = r0
    reg[1] = r1
    for k in range(nb):
        d0, d1 = _solve2(a - xtx[k, 0], b - xtx[k, 1], c - xtx[k, 2], u - xty[k, 0], v - xty[k, 1])
        delete[k, 0] = d0
        delete[k, 1] = d1
        pseudo[k, 0] = nb * r0 - (nb - 1) * d0
        pseudo[k, 1] = nb * r1 - (nb - 1) * d1


def block_bounds(n: int, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """R's ``floor(seq(1, n, length.out = nb + 1))`` block starts, as 0-based [start, end)."""
    n1 = n_blocks
    by = (n - 1) / n1
    seq = np.empty(n_blocks + 1, dtype=np.float64)
    seq[0] = 1.0
    seq[1:n1] = 1.0 + np.arange(1, n1, dtype=np.float64) * by
    seq[n1] = float(n)
    frm = np.floor(seq).astype(np.int64)
    starts = frm[:n_blocks] - 1
    ends = np.empty(n_blocks, dtype=np.int64)
    ends[:-1] = frm[1:n_blocks] - 1
    ends[-1] = n
    return starts, ends


def regress(l2: np.ndarray, w: np.ndarray, y: np.ndarray, n_blocks: int):
    """Weighted LDSC regression with block jackknife.

    Returns ``(reg, delete, pseudo)``: reg = (slope, intercept) on the scale of ``l2``;
    delete/pseudo are (n_blocks, 2)."""
    l2 = np.ascontiguousarray(l2, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    starts, ends = block_bounds(l2.shape[0], n_blocks)
    xtx = np.empty((n_blocks, 3))
    xty = np.empty((n_blocks, 2))
    block_sums(l2, w, y, starts, ends, xtx, xty)
    reg = np.empty(2)
    delete = np.empty((n_blocks, 2))
    pseudo = np.empty((n_blocks, 2))
    jackknife(xtx, xty, reg, delete, pseudo)
    return reg, delete, pseudo


@jit_exact
def _shell_sort_with_index(x, indx):  # pragma: no cover - compiled
    """In-place Shell sort (gaps 1, 4, 13, ...) of ``x`` carrying ``indx`` along: the (unstable)
    order R's ``merge()`` produces for duplicated keys comes from exactly this sort."""
    n = x.shape[0]
    h = 1
    while h <= n // 9:
        h = 3 * h + 1
    while h > 0:
        for i in range(h, n):
            v = x[i]
            iv = indx[i]
            j = i
            while j >= h and x[j - h] > v:
                x[j] = x[j - h]
                indx[j] = indx[j - h]
                j -= h
            x[j] = v
            indx[j] = iv
        h //= 3


@jit_exact
def _merge_pairs(xs, ix, ys, iy):  # pragma: no cover - compiled
    """Pairs of (x row, y row) for equal non-zero codes, walking both sorted code arrays."""
    nx = xs.shape[0]
    ny = ys.shape[0]
    i = 0
    while i < nx and xs[i] <= 0:
        i += 1
    j = 0
    while j < ny and ys[j] <= 0:
        j += 1
    total = 0
    a, b = i, j
    while a < nx:
        t = xs[a]
        na = a
        while na < nx and xs[na] == t:
            na += 1
        while b < ny and ys[b] < t:
            b += 1
        nb = b
        while nb < ny and ys[nb] == t:
            nb += 1
        total += (na - a) * (nb - b)
        a, b = na, nb
    li = np.empty(total, dtype=np.int64)
    ri = np.empty(total, dtype=np.int64)
    k = 0
    a, b = i, j
    while a < nx:
        t = xs[a]
        na = a
        while na < nx and xs[na] == t:
            na += 1
        while b < ny and ys[b] < t:
            b += 1
        nb = b
        while nb < ny and ys[nb] == t:
            nb += 1
        for p in range(a, na):
            for q in range(b, nb):
                li[k] = ix[p]
                ri[k] = iy[q]
                k += 1
        a, b = na, nb
    return li, ri


def r_merge_order(xcode: np.ndarray, ycode: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs of an inner ``merge(x, y, sort = FALSE)`` in R's order, from R's key codes
    (1-based position of each key's first occurrence among the matched x rows, 0 = no match)."""
    xs = np.ascontiguousarray(xcode, dtype=np.int64).copy()
    ys = np.ascontiguousarray(ycode, dtype=np.int64).copy()
    ix = np.arange(xs.shape[0], dtype=np.int64)
    iy = np.arange(ys.shape[0], dtype=np.int64)
    _shell_sort_with_index(xs, ix)
    _shell_sort_with_index(ys, iy)
    return _merge_pairs(xs, ix, ys, iy)
