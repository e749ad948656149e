"""Status codes, flags, GC modes and the convergence tolerance shared by the Genomic SEM GWAS kernels.

Plain Python constants (numba freezes module-level ints and floats into the kernels that read them).
"""

from __future__ import annotations

# stop when an accepted step lowers the objective by less than this fraction (lavaan/nlminb
# stops at rel.tol = 1e-10 on the objective)
ftol = 1e-13

# the RAM fit with closed-form residual variances checks for a ridge every RIDGE_CHECK iterations:
# a trait whose explained variance (its diagonal moment less the residual variance) exceeds RIDGE
# times the largest eliminated trait variance has no finite optimum (ST_NOFINITE), as commonfactor
# (whose kernels.commonfactor.CF_RIDGE is 1e4).  1e3 (a residual variance of -999 times the trait's)
# gave the estimates of 1e4 (within 3e-7 SE) on 20,000 bench SNPs with 18% fewer iterations (a
# run-off SNP passes it about two rounds earlier); 3 SNPs went from ST_SINGULAR to ST_NOFINITE
# (the singular information of a run-off); 1e2 also moved a converged SNP to ST_NOFINITE.
RIDGE_CHECK = 5
RIDGE = 1e3

GC_STANDARD = 0
GC_CONSERV = 1
GC_NONE = 2

# status codes of a per-SNP fit
ST_OK = 0
ST_BAD_VAR = 1  # MAF (or HSQ) gives a SNP variance that is not finite and > 0
ST_BAD_BETA = 2  # a beta is NaN / infinite
ST_BAD_SE = 3  # an SE is NaN / infinite / <= 0
ST_NOCONV = 4  # the optimiser did not converge
ST_SINGULAR = 5  # information matrix singular: SEs not computable
ST_NEARPD_FAIL = 6  # nearPD smoothing failed
ST_NONFINITE = 7  # non-finite implied covariance / objective
ST_ML_NOTPD = 8  # ML: implied covariance not positive definite at the start
ST_NOFINITE = 9  # no finite optimum (the fit runs off along a ridge: a Heywood variance to -inf)

STATUS_REASONS = {
    ST_OK: "",
    ST_BAD_VAR: "SNP variance 2*MAF*(1-MAF) is not > 0 (MAF 0, 1 or missing)",
    ST_BAD_BETA: "beta is missing or not finite",
    ST_BAD_SE: "SE is missing, not finite or <= 0",
    ST_NOCONV: "the optimiser did not converge",
    ST_SINGULAR: "information matrix is singular: standard errors not computable",
    ST_NEARPD_FAIL: "nearPD smoothing failed",
    ST_NONFINITE: "implied covariance or objective not finite",
    ST_ML_NOTPD: "ML: model-implied covariance matrix not positive definite",
    ST_NOFINITE: (
        "no finite optimum: the fit runs off along a ridge (a trait's explained "
        "variance grows without bound, its residual variance to minus infinity; lavaan "
        "stops there with a convergence or gradient warning)"
    ),
}

FLAG_S_SMOOTHED = 1
FLAG_V_SMOOTHED = 2
