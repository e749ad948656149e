"""Numba kernels for splash (d target / d modulator per cell) and the perturbation propagation.

A set of trained genes is flattened into arrays (built by :mod:`polgen.stlr.splash`):

* betas: ``bvals`` (all genes' beta matrices, row-major, concatenated), ``boff[k]`` offset and
  ``bncol[k]`` columns of gene k; ``rowmaps[rmap[k], i]`` = beta row of cell i for gene k.
* modulator slots: gene k owns slots ``moff[k]..moff[k+1]``; ``mgene[s]`` = expression column
  of slot s (sorted modulator genes of k).
* terms: gene k owns terms ``toff[k]..toff[k+1]``; term t adds to slot ``tslot[t]``:

  kind 0  TF          beta
  kind 1  receptor    beta * wl[i, tsrc] * bsf   if gexf[i, tcond] > 0
  kind 2  LR ligand   beta * gexf[i, tsrc] * bsf            (receptor expression)
  kind 3  TFL ligand  beta * gexf[i, tsrc] * bsf            (regulator expression)
  kind 4  TFL TF      beta * wl_tfl[i, tsrc] * bsf

  with ``beta = bvals[boff[k] + row * bncol[k] + tcol[t]]``.  Per slot the terms are summed and
  clipped to [-cap, cap] (``cap`` <= 0 or inf: no cap).
"""

from __future__ import annotations

import types

import numba
import numpy as np

from polgen.kernels._jit import jit_fm, jit_fm_inline, jit_fm_parallel

CELL_BLOCK = 64


@jit_fm_inline
def _gene_slots(
    i,
    k,
    bvals,
    boff,
    bncol,
    rowmaps,
    rmap,
    moff,
    toff,
    tkind,
    tcol,
    tslot,
    tsrc,
    tcond,
    gexf,
    wl,
    wl_tfl,
    bsf,
    cap,
    scratch,
):  # pragma: no cover - numba
    m0 = moff[k]
    nm = moff[k + 1] - m0
    for s in range(nm):
        scratch[s] = 0.0
    row = rowmaps[rmap[k], i]
    base = boff[k] + row * bncol[k]
    for t in range(toff[k], toff[k + 1]):
        beta = bvals[base + tcol[t]]
        kind = tkind[t]
        if kind == 0:
            v = beta
        elif kind == 1:
            v = beta * wl[i, tsrc[t]] * bsf if gexf[i, tcond[t]] > 0.0 else 0.0
        elif kind == 2 or kind == 3:
            v = beta * gexf[i, tsrc[t]] * bsf
        else:
            v = beta * wl_tfl[i, tsrc[t]] * bsf
        scratch[tslot[t] - m0] += v
    if cap > 0.0 and cap < np.inf:
        for s in range(nm):
            if scratch[s] > cap:
                scratch[s] = cap
            elif scratch[s] < -cap:
                scratch[s] = -cap
    return nm


def _splash_gene_py(
    k, bvals, boff, bncol, rowmaps, rmap, moff, toff, tkind, tcol, tslot, tsrc, tcond, gexf, wl, wl_tfl, bsf, cap, out
):  # pragma: no cover - numba
    """out[i, s] = splash of gene k for cell i and its s-th (sorted) modulator."""
    n = gexf.shape[0]
    nm = moff[k + 1] - moff[k]
    nblk = (n + CELL_BLOCK - 1) // CELL_BLOCK
    for b in numba.prange(nblk):
        scratch = np.empty(max(nm, 1))
        for i in range(b * CELL_BLOCK, min(n, (b + 1) * CELL_BLOCK)):
            _gene_slots(
                i,
                k,
                bvals,
                boff,
                bncol,
                rowmaps,
                rmap,
                moff,
                toff,
                tkind,
                tcol,
                tslot,
                tsrc,
                tcond,
                gexf,
                wl,
                wl_tfl,
                bsf,
                cap,
                scratch,
            )
            for s in range(nm):
                out[i, s] = scratch[s]


def _propagate_py(
    bvals,
    boff,
    bncol,
    rowmaps,
    rmap,
    moff,
    mgene,
    toff,
    tkind,
    tcol,
    tslot,
    tsrc,
    tcond,
    gexf,
    wl,
    wl_tfl,
    bsf,
    cap,
    kout,
    delta,
    out,
    maxmod,
    active,
):  # pragma: no cover - numba
    """out[i, kout[k]] = sum_s splash_k[i, s] * delta[i, mgene[s]] for every trained gene k.

    Columns of ``out`` not in ``kout`` are set to 0 (genes without betadata do not change).
    Only the slots whose delta is non-zero in cell i are evaluated (the others add exactly 0:
    splash values are finite), which skips most terms in the first steps of a perturbation.
    """
    n = delta.shape[0]
    G = out.shape[1]
    nk = kout.shape[0]
    nblk = (n + CELL_BLOCK - 1) // CELL_BLOCK
    for b in numba.prange(nblk):
        scratch = np.empty(max(maxmod, 1))
        dz = np.empty(max(maxmod, 1))
        for i in range(b * CELL_BLOCK, min(n, (b + 1) * CELL_BLOCK)):
            for g in range(G):
                out[i, g] = 0.0
            for k in range(nk):
                if active[k] == 0:  # no modulator of gene k has changed: its delta stays 0
                    continue
                m0 = moff[k]
                nm = moff[k + 1] - m0
                nz = 0
                for s in range(nm):
                    d = delta[i, mgene[m0 + s]]
                    dz[s] = d
                    scratch[s] = 0.0
                    if d != 0.0:
                        nz += 1
                if nz == 0:
                    continue
                row = rowmaps[rmap[k], i]
                base = boff[k] + row * bncol[k]
                for t in range(toff[k], toff[k + 1]):
                    s = tslot[t] - m0
                    if dz[s] == 0.0:
                        continue
                    beta = bvals[base + tcol[t]]
                    kind = tkind[t]
                    if kind == 0:
                        v = beta
                    elif kind == 1:
                        v = beta * wl[i, tsrc[t]] * bsf if gexf[i, tcond[t]] > 0.0 else 0.0
                    elif kind == 2 or kind == 3:
                        v = beta * gexf[i, tsrc[t]] * bsf
                    else:
                        v = beta * wl_tfl[i, tsrc[t]] * bsf
                    scratch[s] += v
                acc = 0.0
                clipped = cap > 0.0 and cap < np.inf
                for s in range(nm):
                    d = dz[s]
                    if d != 0.0:
                        v = scratch[s]
                        if clipped:
                            if v > cap:
                                v = cap
                            elif v < -cap:
                                v = -cap
                        acc += v * d
                out[i, kout[k]] = acc


def _filter_expr_py(x, thresh, out):  # pragma: no cover - numba
    """out = x where x > thresh else 0 (the reference's min_expression filter)."""
    n, g = x.shape
    for i in numba.prange(n):
        for j in range(g):
            v = x[i, j]
            out[i, j] = v if v > thresh else 0.0


def _filter_sum_py(x, d, thresh, out):  # pragma: no cover - numba
    """out = (x + d) where (x + d) > thresh else 0: the filtered expression of X0 + delta."""
    n, g = x.shape
    for i in numba.prange(n):
        for j in range(g):
            v = x[i, j] + d[i, j]
            out[i, j] = v if v > thresh else 0.0


def _swap_and_step_py(delta, x0, W1, W0, lig_gene):  # pragma: no cover - numba
    """Delta swap on ligand columns: delta += (W1 - W0) - ((x0 + delta) - x0), in the reference's order."""
    n = delta.shape[0]
    nl = lig_gene.shape[0]
    for i in numba.prange(n):
        for c in range(nl):
            g = lig_gene[c]
            d = delta[i, g]
            dl = (x0[i, g] + d) - x0[i, g]
            delta[i, g] = (d + (W1[i, c] - W0[i, c])) - dl


def _pin_and_clip_py(delta, result, x0, dinput, tcols, maxv, lo):  # pragma: no cover - numba
    """delta = clip(x0 + where(dinput != 0, dinput, result), lo, maxv) - x0 (dinput only on tcols).

    Returns the number of non-finite values left in delta (0 unless the perturbation diverged).
    """
    n, G = delta.shape
    nt = tcols.shape[0]
    bad = 0
    for i in numba.prange(n):
        for g in range(G):
            delta[i, g] = result[i, g]
        for t in range(nt):
            di = dinput[i, t]
            if di != 0.0:
                delta[i, tcols[t]] = di
        for g in range(G):
            v = x0[i, g] + delta[i, g]
            if v < lo:
                v = lo
            if v > maxv[g]:
                v = maxv[g]
            d = v - x0[i, g]
            delta[i, g] = d
            if not np.isfinite(d):
                bad += 1
    return bad


# Each kernel is compiled twice: parallel for big inputs, serial for small ones (a parallel launch
# costs tens of microseconds, and much more on an oversubscribed machine).
PARALLEL_MIN = 2_000_000  # work items (cells x terms) below which the serial version runs
PARALLEL_MIN_ELEMENTWISE = 20_000_000  # memory-bound element-wise passes: serial below this


def _clone(py, suffix: str):
    """A copy of ``py`` under another name, so the two compilations get their own cache files."""
    f = types.FunctionType(py.__code__, py.__globals__, py.__name__ + suffix, py.__defaults__, py.__closure__)
    f.__qualname__ = py.__qualname__ + suffix
    f.__module__ = py.__module__
    return f


def _dual(py):
    par = jit_fm_parallel(_clone(py, "_par"))
    ser = jit_fm(_clone(py, "_ser"))
    return par, ser


_splash_gene_par, _splash_gene_ser = _dual(_splash_gene_py)
_propagate_par, _propagate_ser = _dual(_propagate_py)
_filter_expr_par, _filter_expr_ser = _dual(_filter_expr_py)
_filter_sum_par, _filter_sum_ser = _dual(_filter_sum_py)
_swap_par, _swap_ser = _dual(_swap_and_step_py)
_pin_par, _pin_ser = _dual(_pin_and_clip_py)


def splash_gene(
    k, bvals, boff, bncol, rowmaps, rmap, moff, toff, tkind, tcol, tslot, tsrc, tcond, gexf, wl, wl_tfl, bsf, cap, out
):
    """out[i, s] = splash of gene k for cell i and its s-th (sorted) modulator."""
    work = out.shape[0] * max(1, int(toff[k + 1] - toff[k]))
    f = _splash_gene_par if work >= PARALLEL_MIN else _splash_gene_ser
    f(
        k,
        bvals,
        boff,
        bncol,
        rowmaps,
        rmap,
        moff,
        toff,
        tkind,
        tcol,
        tslot,
        tsrc,
        tcond,
        gexf,
        wl,
        wl_tfl,
        bsf,
        cap,
        out,
    )


def propagate(
    bvals,
    boff,
    bncol,
    rowmaps,
    rmap,
    moff,
    mgene,
    toff,
    tkind,
    tcol,
    tslot,
    tsrc,
    tcond,
    gexf,
    wl,
    wl_tfl,
    bsf,
    cap,
    kout,
    delta,
    out,
    maxmod,
    active=None,
):
    """out[i, kout[k]] = sum_s splash_k[i, s] * delta[i, mgene[s]]; other columns 0.

    ``active[k] == 0`` skips gene k (all its modulators' deltas are zero: the sum is exactly 0).
    """
    if active is None:
        active = np.ones(kout.shape[0], dtype=np.int64)
    work = delta.shape[0] * max(1, int(sum(int(toff[k + 1] - toff[k]) for k in np.flatnonzero(active))))
    f = _propagate_par if work >= PARALLEL_MIN else _propagate_ser
    f(
        bvals,
        boff,
        bncol,
        rowmaps,
        rmap,
        moff,
        mgene,
        toff,
        tkind,
        tcol,
        tslot,
        tsrc,
        tcond,
        gexf,
        wl,
        wl_tfl,
        bsf,
        cap,
        kout,
        delta,
        out,
        maxmod,
        active,
    )


def filter_expr(x, thresh, out):
    """out = x where x > thresh else 0."""
    (_filter_expr_par if x.size >= PARALLEL_MIN_ELEMENTWISE else _filter_expr_ser)(x, thresh, out)


def filter_sum(x, d, thresh, out):
    """out = x + d where that is > thresh else 0."""
    (_filter_sum_par if x.size >= PARALLEL_MIN_ELEMENTWISE else _filter_sum_ser)(x, d, thresh, out)


def swap_and_step(delta, x0, W1, W0, lig_gene):
    """Delta swap on ligand columns (see :func:`_swap_and_step_py`)."""
    (_swap_par if W1.size >= PARALLEL_MIN_ELEMENTWISE else _swap_ser)(delta, x0, W1, W0, lig_gene)


def pin_and_clip(delta, result, x0, dinput, tcols, maxv, lo) -> int:
    """Re-pin the perturbed genes and clip (see :func:`_pin_and_clip_py`); the count of non-finite values."""
    return int(
        (_pin_par if delta.size >= PARALLEL_MIN_ELEMENTWISE else _pin_ser)(delta, result, x0, dinput, tcols, maxv, lo)
    )
