"""Declared outputs of the LFMM functions (:mod:`polgen.lfmm`)."""

from __future__ import annotations

from polgen.schema.core import (
    _BOOL,
    _F64,
    _I64,
    _STR,
    A1,
    A1FREQ,
    A2,
    BP,
    CHR,
    META_PARAMS,
    N_MISS,
    SNP,
    OutputSchema,
    _c,
)

_LFMM_TEST = OutputSchema(
    kind="lfmm_test",
    title="LFMM2 association test (per SNP)",
    produced_by="`lfmm.test` / `df.lfmm.test` (`LfmmTestResult.frame`); with `out=`: parquet parts + manifest",
    columns=(
        _c(CHR, _STR, "chromosome (.bim)"),
        _c(SNP, _STR, "variant id (.bim)"),
        _c(BP, _I64, "base-pair position (.bim)"),
        _c(A1, _STR, "counted allele (.bim A1)"),
        _c(A2, _STR, "other allele"),
        _c(A1FREQ, _F64, "frequency of A1 in the analysed samples"),
        _c(N_MISS, _I64, "missing genotype calls"),
        _c("MONOMORPHIC", _BOOL, "no variation among the analysed samples (statistics null)"),
        _c("BETA[_{variable}]", _F64, "ridge effect of the covariate per A1 allele", nullable=True),
        _c(
            "SE[_{variable}]",
            _F64,
            "standard error of BETA: sigma ||w|| (BETA = w'y given the latent factors; sigma from the OLS of T)",
            nullable=True,
        ),
        _c("T[_{variable}]", _F64, "t statistic", nullable=True),
        _c("P[_{variable}]", _F64, "uncalibrated p-value of T", nullable=True),
        _c("P_CALIBRATED[_{variable}]", _F64, "calibrated p-value (null when calibrate=None)", nullable=True),
        _c("LOG10P[_{variable}]", _F64, "-log10 of P_CALIBRATED (calibrating) or of P (calibrate=None)", nullable=True),
        _c("F", _F64, "F statistic of all covariates", nullable=True, when="full=True"),
        _c("P_F", _F64, "p-value of F", nullable=True, when="full=True"),
        _c("P_F_CALIBRATED", _F64, "p-value of F / its genomic inflation factor", nullable=True, when="full=True"),
        _c("ADJ_R2", _F64, "adjusted R2 of the genotype on the covariates", nullable=True, when="full=True"),
    ),
    metadata=(META_PARAMS,),
    note="With several covariates each statistic column is suffixed `_<variable>` (e.g. `T_temp`).",
)

_LFMM_CHOOSEK = OutputSchema(
    kind="lfmm_choose_k",
    title="LFMM2 choice of K (one row per K)",
    produced_by="`lfmm.choose_k(...).frame()`",
    columns=(
        _c("K", _I64, "number of latent factors"),
        _c("EIGENVALUE", _F64, "eigenvalue of the residual genotype matrix"),
        _c("VARIANCE_EXPLAINED", _F64, "share of variance explained"),
        _c("TW", _F64, "Tracy-Widom statistic"),
        _c("P", _F64, "Tracy-Widom p-value"),
        _c("N_EFF", _F64, "effective number of samples"),
    ),
)

_LFMM_GLM = OutputSchema(
    kind="lfmm_glm_test",
    title="LFMM GLM association test (per SNP; lfmm glm_test)",
    produced_by="`lfmm.glm_test` / `df.lfmm.glm_test` (`LfmmTestResult.frame`); `polgen lfmm glm --out`",
    columns=(
        *_LFMM_TEST.columns[:8],  # CHR .. MONOMORPHIC (a SNP's missing calls are left out of its GLM)
        _c("BETA[_{variable}]", _F64, "GLM coefficient of the centred covariate (log-odds or log-rate)", nullable=True),
        _c("SE[_{variable}]", _F64, "its standard error (R summary.glm, dispersion 1)", nullable=True),
        _c("Z[_{variable}]", _F64, "Wald statistic BETA / SE", nullable=True),
        _c("P[_{variable}]", _F64, "two-sided normal p-value of Z", nullable=True),
        _c("P_CALIBRATED[_{variable}]", _F64, "calibrated p-value (null when calibrate=None)", nullable=True),
        _c("LOG10P[_{variable}]", _F64, "-log10 of P_CALIBRATED (calibrating) or of P", nullable=True),
        _c("CONVERGED", _BOOL, "IRLS converged within maxit (R glm.fit's rule)"),
        _c("N_ITER", _I64, "IRLS iterations used"),
    ),
    note="With several covariates each statistic column is suffixed `_<variable>`.",
)

_LFMM_LASSO = OutputSchema(
    kind="lfmm_lasso",
    title="LFMM lasso effect sizes (per SNP; lfmm lfmm_lasso)",
    produced_by="`lfmm.lfmm_lasso(...).frame()`; `polgen lfmm lasso --out`",
    columns=(*_LFMM_TEST.columns[:5], _c("BETA[_{variable}]", _F64, "L1-penalised effect size (0: not selected)")),
)
_LFMM_CV = OutputSchema(
    kind="lfmm_cv",
    title="LFMM ridge cross-validation (per K x lambda x row fold x column fold; lfmm lfmm_ridge_CV)",
    produced_by="`lfmm.lfmm_ridge_cv`; `polgen lfmm cv --out`",
    columns=(
        _c("K", _I64, "number of latent factors"),
        _c("lam", _F64, "ridge penalty"),
        _c("row_fold", _I64, "sample fold (1-based)"),
        _c("col_fold", _I64, "SNP fold (1-based)"),
        _c("err", _F64, "mean squared prediction error of the held-out samples x SNPs"),
        _c("nozero_prop", _F64, "share of non-zero effect sizes"),
    ),
)
_LFMM_QVALUES = OutputSchema(
    kind="lfmm_qvalues",
    title="LFMM2 association test with q-values (per SNP)",
    produced_by="`lfmm.fdr(result, out=)` (`FdrResult.frame`); `polgen lfmm qvalue --out`, "
    "`polgen lfmm --qvalue` (`<out>.qvalues.parquet`)",
    columns=_LFMM_TEST.columns
    + (_c("Q[_{variable}]", _F64, "q-value (BH, or Storey's: pi0 x BH) of the calibrated P (else P)", nullable=True),),
    note="Rows in the result's order; with `fdr=` only the rows with a Q <= fdr.",
)

_LFMM_OFFSET = OutputSchema(
    kind="lfmm_offset",
    title="LFMM2 genetic offset / gap (one row per individual or location)",
    produced_by="`lfmm.genetic_offset` / `lfmm.genetic_gap` (`GeneticOffsetResult.frame`); "
    "`polgen lfmm offset|gap --out` (parquet, eigen results in its metadata)",
    columns=(
        _c("IID", _STR, "sample id of the row (pred_env's, else new_env's, else the .fam's; else the 1-based row)"),
        _c("OFFSET", _F64, "mean over the loci of ((X_new - X_pred) B')^2 (R LEA's offset)"),
        _c("DISTANCE", _F64, "mean over the loci of |(X_new - X_pred) B'| (R LEA's distance)"),
    ),
)

_LFMM_OFFSET_EIGEN = OutputSchema(
    kind="lfmm_offset_eigen",
    title="LFMM2 genetic offset: eigen decomposition of cov(B) (one row per component)",
    produced_by="`GeneticOffsetResult.eigen_frame()`; `polgen lfmm offset|gap --eigen-out`",
    columns=(
        _c("COMPONENT", _I64, "component number (1 = largest eigenvalue)"),
        _c("EIGENVALUE", _F64, "eigenvalue of the covariance of the effect sizes B"),
        _c("VECTOR_{variable}", _F64, "the component's eigenvector entry for the environmental variable"),
    ),
)
