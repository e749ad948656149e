"""Declared outputs of the Genomic SEM functions (:mod:`polgen.gsem`)."""

from __future__ import annotations

from polgen.schema.core import (
    _BOOL,
    _F64,
    _I64,
    _IN_INPUT,
    _STR,
    A1,
    A2,
    BP,
    CHR,
    MAF,
    META_METHOD,
    META_PARAMS,
    SNP,
    Column,
    N,
    OutputSchema,
    Z,
    _c,
)


def _gwas_ids() -> tuple[Column, ...]:
    return (
        _c(SNP, _STR, "variant id, from the input", when=_IN_INPUT),
        _c(CHR, _STR, "chromosome, from the input", when=_IN_INPUT),
        _c(BP, _I64, "base-pair position, from the input", when=_IN_INPUT),
        _c(MAF, _F64, "minor allele frequency, from the input", when=_IN_INPUT),
        _c(A1, _STR, "effect allele, from the input", when=_IN_INPUT),
        _c(A2, _STR, "other allele, from the input", when=_IN_INPUT),
        _c("Gene", _STR, "gene (TWAS input)", when="TWAS=True"),
        _c("Panel", _STR, "expression panel (TWAS input)", when="TWAS=True"),
        _c("HSQ", _F64, "expression heritability (TWAS input)", when="TWAS=True"),
    )


def _gwas_par() -> tuple[Column, ...]:
    return (
        _c("lhs", _STR, "left-hand side of the parameter (lavaan)"),
        _c("op", _STR, "operator (=~, ~, ~~, :=)"),
        _c("rhs", _STR, "right-hand side of the parameter"),
        _c("est", _F64, "estimate (NaN when the SNP failed)"),
        _c("se", _F64, "standard error (sandwich; NaN when fixed, at a bound or failed)"),
        _c("z", _F64, "est / se"),
        _c("p", _F64, "two-sided normal p-value of z"),
        _c("log10p", _F64, "-log10(p), exact where p underflows"),
    )


_SMOOTH = _c("Z_smooth", _F64, "largest |z| change of the SNP's smoothed S (nearPD)", when="smooth_check=True")
_CONVERGED = _c("converged", _BOOL, "the SNP's fit converged to finite estimates")
_WARNING = _c("warning", _STR, 'why the SNP failed or is suspect ("" when none)', when="printwarn=True (default)")

_USER_GWAS = OutputSchema(
    kind="gsem_user_gwas",
    title="Genomic SEM user_gwas (per SNP x reported parameter)",
    produced_by="`gsem.user_gwas` / `df.gsem.user_gwas`; with `out=`: parquet parts + manifest",
    columns=(
        *_gwas_ids(),
        *_gwas_par(),
        _c("chisq", _F64, "model chi-square of the SNP's fit"),
        _c("chisq_df", _I64, "degrees of freedom of chisq"),
        _c("chisq_p", _F64, "p-value of chisq (NaN when df = 0)"),
        _c("AIC", _F64, "chisq + 2 * free parameters"),
        _c("Q_SNP", _F64, "heterogeneity of the SNP effect on the factor (R's Q_SNP)", when="Q_SNP=True"),
        _c("Q_SNP_df", _I64, "degrees of freedom of Q_SNP", nullable=True, when="Q_SNP=True"),
        _c("Q_SNP_p", _F64, "p-value of Q_SNP", when="Q_SNP=True"),
        _SMOOTH,
        _CONVERGED,
        _WARNING,
    ),
    metadata=(META_PARAMS,),
    note="One row per SNP and reported parameter (`sub=` selects them; `:=` parameters included).",
)

_CF_GWAS = OutputSchema(
    kind="gsem_commonfactor_gwas",
    title="Genomic SEM commonfactor_gwas (per SNP)",
    produced_by="`gsem.commonfactor_gwas` / `df.gsem.commonfactor_gwas`; with `out=`: parquet parts + manifest",
    columns=(
        *_gwas_ids(),
        *_gwas_par(),
        _c("Q", _F64, "heterogeneity statistic (SNP acting through the factor vs directly)"),
        _c("Q_df", _I64, "degrees of freedom of Q (traits - 1)"),
        _c("Q_p", _F64, "p-value of Q"),
        _SMOOTH,
        _CONVERGED,
        _WARNING,
    ),
    metadata=(META_PARAMS,),
    note="One row per SNP: the effect `F1 ~ SNP`.",
)

_ADD_SNPS = OutputSchema(
    kind="gsem_add_snps",
    title="Genomic SEM add_snps / add_genes (per SNP or gene: S_full and V_full)",
    produced_by="`gsem.add_snps`, `gsem.add_genes`: `SnpMatrices.to_frame()`; with `out=`: parquet parts + manifest",
    columns=(
        *(c for c in _gwas_ids() if c.name not in ("Gene", "Panel", "HSQ")),
        _c("Gene", _STR, "gene, from the input", when="add_genes"),
        _c("Panel", _STR, "expression panel, from the input", when="add_genes"),
        _c("HSQ", _F64, "expression heritability (the gene's variance), from the input", when="add_genes"),
        _c("S_{row}_{col}", _F64, "S_full[row, col] (1-based, row >= col; variable 1 the SNP, then the traits)"),
        _c("V_{row}_{col}", _F64, "V_full[row, col] (1-based, row >= col; rows in vech(S_full) order)"),
        _c("S_smoothed", _BOOL, "S_full was smoothed with nearPD"),
        _c("V_smoothed", _BOOL, "V_full was smoothed with nearPD"),
        _c("valid", _BOOL, "the row's inputs were usable (else S/V are NaN)"),
        _c("warning", _STR, 'why the row is invalid ("" when valid)'),
    ),
    metadata=(META_PARAMS,),
    note="One row per SNP (gene); `SnpMatrices.from_frame` rebuilds the matrices.",
)

_ENRICH = OutputSchema(
    kind="gsem_enrich",
    title="Genomic SEM enrich (one row per annotation and parameter)",
    produced_by="`gsem.enrich(...).enrichment`; `polgen gsem enrich --out FILE.parquet`",
    columns=(
        _c("Annotation", _STR, "annotation (its LD-score column name; the baseline first)"),
        _c("lhs", _STR, "parameter: left-hand side"),
        _c("op", _STR, "parameter: operator"),
        _c("rhs", _STR, "parameter: right-hand side"),
        _c("Cov_Smooth", _F64, "largest change of S when smoothed to positive definite", nullable=True),
        _c("Z_smooth", _F64, "largest change of the Z statistics of S when smoothed", nullable=True),
        _c("Enrichment", _F64, "(est / baseline est) / proportion of SNPs in the annotation", nullable=True),
        _c("Enrichment_SE", _F64, "sandwich SE of the enrichment", nullable=True),
        _c("Enrichment_p_value", _F64, "one-sided p-value of enrichment > 1", nullable=True),
        _c("Error", _STR, 'error of the annotation\'s fit ("0": none)'),
        _c("Warning", _STR, 'why the annotation was not analysed or its fit warned ("0": none)'),
    ),
    metadata=("polgen.enrich_params",),
    note="The CLI file also carries the baseline model table as JSON in `polgen.enrich_base` (unless --no-base).",
)

_GLS = OutputSchema(
    kind="gsem_summary_gls",
    title="Genomic SEM summary_gls / summary_gls_bands coefficients",
    produced_by="`gsem.summary_gls`, `gsem.summary_gls_bands(...).coefficients`; `polgen gsem summary-gls --out`",
    columns=(
        _c("term", _STR, "coefficient: b0 intercept, b1.. predictors (then squared predictor, controls)"),
        _c("beta", _F64, "GLS estimate"),
        _c("se", _F64, "its standard error"),
        _c("z", _F64, "beta / se"),
        _c("p", _F64, "two-sided normal p-value"),
    ),
    metadata=("polgen.function",),
)

_GLS_BAND = OutputSchema(
    kind="gsem_gls_band",
    title="Genomic SEM summary_gls_bands band (one row per grid point)",
    produced_by="`gsem.summary_gls_bands(...).band`; `polgen gsem summary-gls --bands --band-out`",
    columns=(
        _c("x", _F64, "grid value of the predictor (min to max)"),
        _c("fit", _F64, "fitted line / parabola at x (controls at 0)"),
        _c("se_at", _F64, "predictor value the standard error is evaluated at (R's shift point or x)"),
        _c("se", _F64, "standard error of the fitted value there"),
        _c("upper", _F64, "fit + band_size * se"),
        _c("lower", _F64, "fit - band_size * se"),
    ),
    metadata=("polgen.function",),
)

_FUSION = OutputSchema(
    kind="gsem_read_fusion",
    title="Genomic SEM read_fusion gene-level sumstats (user_gwas TWAS input)",
    produced_by="`gsem.read_fusion`; `polgen gsem read-fusion --out`",
    columns=(
        _c("Gene", _STR, "gene (FUSION ID)"),
        _c("Panel", _STR, "weight file without its leading directories (FUSION FILE)"),
        _c("HSQ", _F64, "cis heritability of expression (first file's)"),
        _c("beta.{trait}", _F64, "effect of standardised expression on the trait"),
        _c("se.{trait}", _F64, "its standard error"),
    ),
    metadata=("polgen.function",),
)

_QTRAIT = OutputSchema(
    kind="gsem_q_trait",
    title="Genomic SEM q_trait (R QTrait's Q_mat: one row per external trait)",
    produced_by="`gsem.q_trait(...).table`; `polgen gsem q-trait --out`",
    columns=(
        _c("trait", _STR, "external trait"),
        *(
            _c(f"{name}_{m}", dtype, f"{meaning} ({model})", nullable=True)
            for m, model in (("CPM", "common pathway model"), ("FUM", "last follow-up model"))
            for name, dtype, meaning in (
                ("rGF1Trait", _F64, "F1 ~ trait estimate"),
                ("SErGF1Trait", _F64, "its standard error"),
                ("pvalrGF1Trait", _F64, "its p-value"),
                ("rGF1Trait_significat", _STR, "'*' below the Bonferroni threshold, else 'NS' ('-': not fitted)"),
                ("QTrait", _F64, "QTrait chi-square against the independent pathway model"),
                ("df", _F64, "its degrees of freedom"),
                ("p_value", _F64, "its p-value"),
                ("Qsignificant", _STR, "'*' below the Bonferroni threshold, else 'NS' ('-')"),
                ("lSRMR", _F64, "local SRMR of the trait-indicator genetic correlations"),
                ("lSRMR_above_threshold", _STR, "'Yes' / 'No' ('-')"),
                ("heterogeneity", _STR, "all three criteria met: 'Yes' / 'No' ('-')"),
            )
        ),
        _c("reduction_lSRMR", _STR, "lSRMR reduction by the follow-up model, as R ('45.6%'; '-')", nullable=True),
        _c("Unconstrained_paths", _STR, "indicators with a freed direct path ('None')"),
    ),
    metadata=("polgen.function",),
    note="Column names as R spells them; the table's column order is R's (CPM columns, then FUM columns).",
)

_SEM_PARAMS = OutputSchema(
    kind="gsem_sem_parameters",
    title="Genomic SEM commonfactor / usermodel parameter table",
    produced_by="`gsem.commonfactor`, `gsem.usermodel`: `SEMResult.parameters`, `SEMResult.save(path)`",
    columns=(
        _c("lhs", _STR, "left-hand side of the parameter (lavaan)"),
        _c("op", _STR, "operator (=~, ~, ~~, :=)"),
        _c("rhs", _STR, "right-hand side"),
        _c("free", _BOOL, "estimated (True) or fixed (False)"),
        _c("label", _STR, "parameter label from the model syntax", nullable=True),
        _c("est", _F64, "unstandardised estimate", nullable=True),
        _c("se", _F64, "unstandardised standard error", nullable=True),
        _c("z", _F64, "est / se", nullable=True),
        _c("p", _F64, "two-sided normal p-value", nullable=True),
        _c("log10p", _F64, "-log10(p)", nullable=True),
        _c("est_std", _F64, "estimate of the standardised model (R STD_Genotype)", nullable=True),
        _c("se_std", _F64, "its standard error", nullable=True),
        _c("std_all", _F64, "completely standardised estimate (R STD_All)", nullable=True, when="usermodel"),
    ),
    metadata=("polgen.function", "polgen.model", "polgen.fit"),
    note="`SEMResult.genomicsem()` / `save(genomicsem_names=True)` rename these as R GenomicSEM does.",
)

_UM, _CF = "usermodel", "commonfactor"

_SEM_PARAMS_R = OutputSchema(
    kind="gsem_sem_parameters_r",
    title="Genomic SEM parameter table with R GenomicSEM's column names",
    produced_by="`SEMResult.genomicsem()` / `SEMResult.results`, `SEMResult.save(path, genomicsem_names=True)`",
    columns=(
        _c("lhs", _STR, "left-hand side of the parameter (lavaan)"),
        _c("op", _STR, "operator (=~, ~, ~~, :=)"),
        _c("rhs", _STR, "right-hand side"),
        _c("Unstand_Est", _F64, "unstandardised estimate (est)", nullable=True, when=_UM),
        _c("Unstandardized_Estimate", _F64, "unstandardised estimate (est)", nullable=True, when=_CF),
        _c("Unstand_SE", _F64, "its standard error (se)", nullable=True, when=_UM),
        _c("Unstandardized_SE", _F64, "its standard error (se)", nullable=True, when=_CF),
        _c("STD_Genotype", _F64, "standardised estimate (est_std)", nullable=True, when=_UM),
        _c("Standardized_Est", _F64, "standardised estimate (est_std)", nullable=True, when=_CF),
        _c("STD_Genotype_SE", _F64, "its standard error (se_std)", nullable=True, when=_UM),
        _c("Standardized_SE", _F64, "its standard error (se_std)", nullable=True, when=_CF),
        _c("STD_All", _F64, "completely standardised estimate (std_all)", nullable=True, when=_UM),
        _c("p_value", _F64, "two-sided normal p-value (p)", nullable=True),
    ),
    exactly_one_of=(
        ("Unstand_Est", "Unstandardized_Estimate"),
        ("Unstand_SE", "Unstandardized_SE"),
        ("STD_Genotype", "Standardized_Est"),
        ("STD_Genotype_SE", "Standardized_SE"),
    ),
    note="The columns of `gsem_sem_parameters` renamed as R's usermodel / commonfactor name them.",
)

_SEM_FIT = OutputSchema(
    kind="gsem_sem_fit",
    title="Genomic SEM model fit (one row)",
    produced_by="`gsem.commonfactor`, `gsem.usermodel`: `SEMResult.fit` (saved as the `polgen.fit` metadata)",
    columns=(
        _c("chisq", _F64, "model chi-square", nullable=True),
        _c("df", _I64, "degrees of freedom"),
        _c("p_chisq", _F64, "p-value of chisq", nullable=True),
        _c("AIC", _F64, "chisq + 2 * free parameters", nullable=True),
        _c("CFI", _F64, "comparative fit index", nullable=True),
        _c("SRMR", _F64, "standardised root mean square residual", nullable=True),
    ),
    note="Statistics R leaves missing (df = 0, failed standardised fit) are null.",
)

_MUNGE = OutputSchema(
    kind="gsem_munge",
    title="Genomic SEM munge (per SNP, one table per trait)",
    produced_by="`gsem.munge` / `df.gsem.munge`; with `out=`: `<out>/<trait>.sumstats.parquet`",
    columns=(
        _c(SNP, _STR, "variant id (HapMap3 list order)"),
        _c(N, _F64, "sample size"),
        _c(Z, _F64, "z statistic aligned to A1"),
        _c(A1, _STR, "effect allele (reference A1)"),
        _c(A2, _STR, "other allele"),
    ),
    metadata=(META_METHOD, META_PARAMS),
)

_SUMSTATS = OutputSchema(
    kind="gsem_sumstats",
    title="Genomic SEM sumstats (per SNP, all traits)",
    produced_by="`gsem.sumstats` / `df.gsem.sumstats`; with `out=`: one parquet file",
    columns=(
        _c(SNP, _STR, "variant id (reference order)"),
        _c(CHR, _STR, "chromosome (reference)"),
        _c(BP, _I64, "base-pair position (reference)"),
        _c(MAF, _F64, "minor allele frequency (reference)"),
        _c(A1, _STR, "effect allele (reference)"),
        _c(A2, _STR, "other allele (reference)"),
        _c("beta.{trait}", _F64, "standardised effect of A1 on the trait"),
        _c("se.{trait}", _F64, "its standard error"),
    ),
    metadata=(META_METHOD, META_PARAMS),
)

_DROPS = OutputSchema(
    kind="gsem_drop_summary",
    title="Genomic SEM munge / sumstats dropped-row summary",
    produced_by="`gsem.munge` (second value), `gsem.sumstats(..., return_summary=True)`",
    columns=(
        _c("trait", _STR, "trait name"),
        _c("reason", _STR, "QC step that dropped rows"),
        _c("n_dropped", _I64, "rows dropped by the step"),
        _c("n_remaining", _I64, "rows left after the step"),
    ),
)

_COVSTRUC = OutputSchema(
    kind="gsem_covstruc",
    title="Genomic SEM ldsc covariance structure (parquet form)",
    produced_by="`gsem.ldsc`, `gsem.hdl`: `CovStruc.save(path)` for a path not ending in `.json`",
    columns=(_c("trait", _STR, "trait names in S / V order"),),
    metadata=("polgen.covstruc",),
    note="S, V, I, N, m (and S_Stand, V_Stand) are JSON in the `polgen.covstruc` metadata key.",
)

_LDSC_TABLE = OutputSchema(
    kind="gsem_ldsc_table",
    title="Genomic SEM ldsc regressions (one row per trait pair)",
    produced_by="`gsem.ldsc_table(covstruc)`",
    columns=(
        _c("trait1", _STR, "first trait"),
        _c("trait2", _STR, "second trait (= trait1 for a heritability)"),
        _c("n_snps", _I64, "SNPs in the regression"),
        _c("estimate", _F64, "heritability or genetic covariance (observed scale)"),
        _c("se", _F64, "block-jackknife standard error"),
        _c("intercept", _F64, "LD score regression intercept"),
        _c("intercept_se", _F64, "its standard error"),
        _c("mean_chi2", _F64, "mean chi-square (heritability rows)", nullable=True),
        _c("lambda_gc", _F64, "genomic control lambda (heritability rows)", nullable=True),
        _c("ratio", _F64, "(intercept - 1) / (mean_chi2 - 1) (heritability rows)", nullable=True),
        _c("mean_zz", _F64, "mean product of z statistics (covariance rows)", nullable=True),
    ),
)

_PA_LDSC = OutputSchema(
    kind="gsem_pa_ldsc",
    title="Genomic SEM pa_ldsc (one row per component)",
    produced_by="`gsem.pa_ldsc(...).to_frame()`; `polgen gsem pa-ldsc --out FILE.parquet`",
    columns=(
        _c("component", _I64, "component / factor number (1..k)"),
        _c("observed", _F64, "eigenvalue of S"),
        _c("simulated", _F64, "p-quantile of the null eigenvalues (S_null + N(0, V) noise)"),
        _c("difference", _F64, "observed - simulated"),
        _c("simulated_diag", _F64, "null quantile with only the diagonal of V", when="diag=True"),
        _c("difference_diag", _F64, "observed - simulated_diag", when="diag=True"),
        _c("observed_fa", _F64, "eigenvalue of the factor solution (psych::fa) of S", when="fa=True"),
        _c("simulated_fa", _F64, "p-quantile of the null factor-solution eigenvalues", when="fa=True"),
        _c("difference_fa", _F64, "observed_fa - simulated_fa", when="fa=True"),
        _c("simulated_fa_diag", _F64, "simulated_fa with only the diagonal of V", when="fa=True and diag=True"),
        _c("difference_fa_diag", _F64, "observed_fa - simulated_fa_diag", when="fa=True and diag=True"),
    ),
    note="The CLI file carries r, p, seed and the suggested numbers in `polgen.params`.",
)

_SIM_SUMSTATS = OutputSchema(
    kind="gsem_sim_sumstats",
    title="Genomic SEM sim_ldsc (per SNP, one table per trait and replicate)",
    produced_by="`gsem.sim_ldsc(...)`; with `out=`: `<out>/iter{i}{trait}.sumstats.parquet`",
    columns=(
        _c(CHR, _STR, "chromosome (LD-score files)"),
        _c(SNP, _STR, "variant id (LD-score file order)"),
        _c(BP, _I64, "base-pair position (LD-score files)"),
        _c("L2", _F64, "LD score the z statistic was simulated with"),
        _c(Z, _F64, "simulated z statistic"),
        _c(N, _F64, "sample size of the trait"),
        _c(A1, _STR, 'effect allele ("A", as R simLDSC)'),
    ),
    metadata=(META_METHOD, META_PARAMS),
)
