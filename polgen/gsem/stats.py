"""Reference distributions of the Genomic SEM outputs: normal p-values of Wald z, chi-square tails.

One implementation for the SEM tables (:mod:`polgen.gsem.fit_models`) and the per-SNP GWAS rows
(:mod:`polgen.gsem.gwas_batch`).  Both work in log space so that p-values of very large z keep
their ``log10p`` instead of underflowing to 0.  scipy.special only: scipy.stats costs ~1.3 s to
import in every worker process.
"""

from __future__ import annotations

import numpy as np

__all__ = ["chi2_sf", "normal_pvalues"]


def normal_pvalues(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided normal p-values of ``z`` and ``-log10(p)``: ``(p, log10p)``; NaN where z is NaN."""
    from scipy.special import log_ndtr

    az = np.abs(z)
    lp = np.log(2.0) + log_ndtr(-az)  # log p
    p = np.exp(lp)
    return p, -lp / np.log(10.0)


def chi2_sf(x, df) -> np.ndarray:
    """Upper tail of the chi-square distribution, ``chi2.sf(x, df)``, elementwise: NaN where
    ``df <= 0`` or x is NaN, 1 for x < 0."""
    from scipy.special import chdtrc

    x = np.asarray(x, dtype=np.float64)
    if np.isscalar(df) or np.ndim(df) == 0:
        if df is None or df <= 0:
            return np.full(x.shape, np.nan)
    d = np.broadcast_to(np.asarray(df, dtype=np.float64), x.shape)
    with np.errstate(invalid="ignore"):
        out = chdtrc(d, np.where(x < 0.0, 0.0, x))
    return np.where(d > 0.0, out, np.nan)
