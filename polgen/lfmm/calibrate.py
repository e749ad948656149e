"""p-values on the log scale and LEA's calibration (genomic inflation, median + MAD).

* ``"gif"`` (R LEA ``lfmm2.test(genomic.control=TRUE)``): ``GIF = median(z^2) / qchisq(0.5, 1)``
  per variable, calibrated ``p = pchisq(z^2 / GIF, 1, lower.tail = FALSE)``; for the full-model F
  test ``GIF = median(F) / qf(0.5, d, n - d - 1)`` and ``p = pf(F / GIF, d, n - d - 1, upper)``.
* ``"median+MAD"`` (empirical null, Efron 2004): ``z' = (z - median(z)) / (1.4826 MAD)`` with
  ``MAD = median(|z - median(z)|)``, ``p = 2 Phi(-|z'|)`` — the null is re-centred as well as
  re-scaled.  The F test is calibrated by its GIF in both modes.

SNPs whose statistic is NaN (monomorphic) are left out of the medians.  Medians of a streamed
output are computed exactly in a few passes over the stored column (histogram refinement), so
memory stays flat in the number of SNPs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from scipy import special

from polgen.errors import InputError

CHI2_MEDIAN = float(special.chdtri(1, 0.5))  # qchisq(0.5, 1, lower.tail = FALSE) = 0.45493642
MAD_CONSTANT = 1.4826
_LN10 = np.log(10.0)
CALIBRATIONS = ("gif", "median+MAD", None)


def check_calibrate(calibrate):
    if calibrate not in CALIBRATIONS:
        raise InputError(f"calibrate must be 'gif', 'median+MAD' or None, got {calibrate!r}")
    return calibrate


# -- p-values -----------------------------------------------------------------------------------
def _log_betainc_small(a, b, x):
    """log I_x(a, b) for small x via I_x = x^a (1-x)^b / (a B(a,b)) 2F1(a+b, 1; a+1; x)."""
    x = np.asarray(x, dtype=np.float64)
    term = np.ones_like(x)
    ssum = np.ones_like(x)
    for k in range(200):
        term = term * (a + b + k) / (a + 1 + k) * x
        ssum = ssum + term
        if np.all(term <= 1e-17 * ssum):
            break
    return a * np.log(x) + b * np.log1p(-x) - np.log(a) - special.betaln(a, b) + np.log(ssum)


def t_pvalue(t: np.ndarray, df: float) -> np.ndarray:
    """Two-sided Student p-values (the ``p`` of :func:`t_log10p`)."""
    return 2.0 * special.stdtr(df, -np.abs(np.asarray(t, dtype=np.float64)))


def t_log10p(t: np.ndarray, df: float, p: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Student p-values and -log10 p (exact also where p underflows); ``p``: the
    p-values of :func:`t_pvalue` when already known."""
    t = np.asarray(t, dtype=np.float64)
    if p is None:
        p = t_pvalue(t, df)
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = -np.log10(p)
        tiny = (p < 1e-280) & np.isfinite(t)
        if tiny.any():
            x = df / (df + t[tiny] ** 2)
            lp[tiny] = -_log_betainc_small(df / 2.0, 0.5, x) / _LN10
    return p, lp


def f_log10p(f: np.ndarray, d1: float, d2: float) -> tuple[np.ndarray, np.ndarray]:
    """Upper-tail F p-values and -log10 p."""
    f = np.asarray(f, dtype=np.float64)
    p = special.fdtrc(d1, d2, f)
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = -np.log10(p)
        tiny = (p < 1e-280) & np.isfinite(f)
        if tiny.any():
            x = d2 / (d2 + d1 * f[tiny])
            lp[tiny] = -_log_betainc_small(d2 / 2.0, d1 / 2.0, x) / _LN10
    return p, lp


def norm_log10p(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided normal p-values (= pchisq(z^2, 1, upper)) and -log10 p."""
    z = np.asarray(z, dtype=np.float64)
    logp = np.log(2.0) + special.log_ndtr(-np.abs(z))
    return np.exp(logp), -logp / _LN10


# -- calibration constants -------------------------------------------------------------------------
def gif(z: np.ndarray) -> float:
    """Genomic inflation factor ``median(z^2) / qchisq(0.5, 1)`` over the finite z."""
    z = np.asarray(z, dtype=np.float64)
    z = z[np.isfinite(z)]  # a copy: squared and partitioned in place (one p-long array, not three)
    if z.size == 0:
        return float("nan")
    np.multiply(z, z, out=z)
    return float(np.median(z, overwrite_input=True) / CHI2_MEDIAN)


def f_gif(f: np.ndarray, d1: float, d2: float) -> float:
    f = np.asarray(f, dtype=np.float64)
    f = f[np.isfinite(f)]
    if f.size == 0:
        return float("nan")
    return float(np.median(f) / special.fdtri(d1, d2, 0.5))


def median_mad(z: np.ndarray) -> tuple[float, float]:
    """``(median(z), 1.4826 * median(|z - median(z)|))`` over the finite z."""
    z = np.asarray(z, dtype=np.float64)
    z = z[np.isfinite(z)]
    if z.size == 0:
        return float("nan"), float("nan")
    med = float(np.median(z))
    return med, float(MAD_CONSTANT * np.median(np.abs(z - med)))


def calibrated(z: np.ndarray, how: str, consts: dict) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated p-values and -log10 p of z given the constants of :func:`calibration_constants`."""
    z = np.asarray(z, dtype=np.float64)
    if how == "gif":
        return norm_log10p(z / np.sqrt(consts["gif"]))
    if how == "median+MAD":
        return norm_log10p((z - consts["median"]) / consts["mad"])
    raise InputError(f"unknown calibration {how!r}")


def calibration_constants(z: np.ndarray, how: str | None) -> dict:
    out = {"gif": gif(z)}
    if how == "median+MAD":
        out["median"], out["mad"] = median_mad(z)
    return out


def _finite_median_inplace(v: np.ndarray) -> float:
    """``np.median`` of the finite values of the float64 array ``v``, reordering ``v`` in place
    (non-finite values are set to NaN, which partitions after every number): no copy of ``v``."""
    bad = ~np.isfinite(v)
    v[bad] = np.nan
    m = v.size - int(np.count_nonzero(bad))
    del bad
    if m == 0:
        return float("nan")
    hi = m // 2
    if m % 2:
        v.partition(hi)
        return float(v[hi])
    v.partition([hi - 1, hi])
    return float(np.mean(v[hi - 1 : hi + 1]))


def calibration_constants_inplace(z: np.ndarray, how: str | None) -> dict:
    """:func:`calibration_constants` (the same numbers) from the float64 array ``z``, which is
    overwritten: with ``"gif"`` the squares and the median are found in ``z`` itself (one p-long
    array instead of three).  ``"median+MAD"`` needs z and |z - median| beside each other: it works
    on a copy, as :func:`calibration_constants`."""
    if how == "median+MAD":
        return calibration_constants(z, how)
    np.multiply(z, z, out=z)
    return {"gif": _finite_median_inplace(z) / CHI2_MEDIAN}


def f_gif_inplace(f: np.ndarray, d1: float, d2: float) -> float:
    """:func:`f_gif` computed in ``f`` itself (reordered and overwritten)."""
    return _finite_median_inplace(f) / float(special.fdtri(d1, d2, 0.5))


# -- exact order statistics of a streamed column ---------------------------------------------------
def streamed_order_stat(
    chunks: Callable[[], Iterable[np.ndarray]], k: int, *, bins: int = 4096, direct: int = 1 << 20
) -> float:
    """The k-th smallest (0-based) finite value over ``chunks()`` (called once per pass)."""
    lo, hi, count = np.inf, -np.inf, 0
    for c in chunks():
        c = c[np.isfinite(c)]
        if c.size:
            lo, hi, count = min(lo, c.min()), max(hi, c.max()), count + c.size
    if not 0 <= k < count:
        raise InputError(f"order statistic {k} out of range for {count} finite values")
    below = 0  # values < lo
    for _ in range(64):
        inside = 0
        if hi > lo:
            edges = np.linspace(lo, hi, bins + 1)
            hist = np.zeros(bins, dtype=np.int64)
            for c in chunks():
                c = c[np.isfinite(c) & (c >= lo) & (c <= hi)]
                hist += np.histogram(c, bins=edges)[0]
            cum = np.cumsum(hist)
            j = int(np.searchsorted(cum, k - below + 1))
            new_below = below + (int(cum[j - 1]) if j > 0 else 0)
            inside = int(hist[j])
            nlo, nhi = edges[j], edges[j + 1]
            if inside <= direct or nlo == lo and nhi == hi:
                vals = []
                for c in chunks():
                    c = c[np.isfinite(c)]
                    sel = (c >= nlo) & ((c < nhi) if j < bins - 1 else (c <= nhi))
                    vals.append(c[sel])
                v = np.sort(np.concatenate(vals))
                return float(v[k - new_below])
            below, lo, hi = new_below, nlo, nhi
            # the last bin is closed; inner bins are half-open: keep values == hi out
            if j < bins - 1:
                hi = np.nextafter(hi, -np.inf)
        else:
            return float(lo)
    return float(lo)


def streamed_median(chunks: Callable[[], Iterable[np.ndarray]]) -> float:
    """R's ``median`` (mean of the two middle values for an even count) of a streamed column."""
    count = sum(int(np.isfinite(c).sum()) for c in chunks())
    if count == 0:
        return float("nan")
    if count % 2:
        return streamed_order_stat(chunks, count // 2)
    return 0.5 * (streamed_order_stat(chunks, count // 2 - 1) + streamed_order_stat(chunks, count // 2))


def streamed_constants(chunks: Callable[[], Iterable[np.ndarray]], how: str | None) -> dict:
    """:func:`calibration_constants` computed from a streamed column of z."""
    out = {"gif": streamed_median(lambda: (c * c for c in chunks())) / CHI2_MEDIAN}
    if how == "median+MAD":
        med = streamed_median(chunks)
        mad = streamed_median(lambda: (np.abs(c - med) for c in chunks()))
        out["median"], out["mad"] = med, MAD_CONSTANT * mad
    return out


def streamed_f_gif(chunks: Callable[[], Iterable[np.ndarray]], d1: float, d2: float) -> float:
    return streamed_median(chunks) / float(special.fdtri(d1, d2, 0.5))
