"""Canonical column names and dtypes, and the declared output of every result kind.

Per-SNP inputs and outputs follow the de-facto GWAS layout (regenie/plink2 spellings where they
exist) so results load in the tools people already use.

:data:`OUTPUTS` declares, once, the columns each method writes (name, dtype, nullable, when an
optional column appears, one-line meaning); :func:`validate` checks a frame, a schema or a parquet
file against a declaration, and the README's "Output reference" is generated from it
(:func:`output_reference_markdown`; a test keeps the two equal).  The declarations describe what the
writers produce today; writers import their names from here as they are reworked.

Column names may be templates: ``{trait}`` stands for one or more characters (``beta.{trait}`` is
one column per trait) and ``[...]`` is an optional part (``BETA[_{variable}]`` is ``BETA`` with one
covariate, ``BETA_<variable>`` per covariate with several).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from polgen.errors import SchemaError

# --- per-SNP identity -----------------------------------------------------------------------
SNP = "SNP"  # variant id (rsid)
CHR = "CHR"  # chromosome as string ("1".."22", "X", ...)
BP = "BP"  # base-pair position, Int64
A1 = "A1"  # effect allele (upper case)
A2 = "A2"  # other allele (upper case)
MAF = "MAF"  # minor/effect allele frequency
A1FREQ = "A1FREQ"  # frequency of A1 in the analysed samples
N_MISS = "N_MISS"  # missing genotype calls

# --- summary statistics -----------------------------------------------------------------------
BETA = "BETA"
OR = "OR"
Z = "Z"
SE = "SE"
P = "P"
N = "N"
INFO = "INFO"
LOG10P = "LOG10P"
DIRECTION = "DIRECTION"  # per-cohort effect signs of a meta-analysis ("+-?+"; "?" = cohort missing)

SNP_ID_COLUMNS = (SNP, CHR, BP, A1, A2)

DTYPES: dict[str, Any] = {
    SNP: pl.String,
    CHR: pl.String,
    BP: pl.Int64,
    A1: pl.String,
    A2: pl.String,
    MAF: pl.Float64,
    A1FREQ: pl.Float64,
    N_MISS: pl.Int64,
    BETA: pl.Float64,
    OR: pl.Float64,
    Z: pl.Float64,
    SE: pl.Float64,
    P: pl.Float64,
    N: pl.Float64,
    INFO: pl.Float64,
    LOG10P: pl.Float64,
}

# --- spatial ----------------------------------------------------------------------------------
CELL_ID = "CellID"
CLUSTER = "Cluster"
BETA0 = "beta0"  # betadata intercept column
BETA_PREFIX = "beta_"  # betadata / splash modulator columns: beta_<TF>, beta_<ligand>$<receptor>, ...

# --- parquet key-value metadata keys ------------------------------------------------------------
META_PARAMS = "polgen.params"
META_METHOD = "polgen.method"
META_VERSION = "polgen.version"


# =================================================================================================
# declared outputs
# =================================================================================================
@dataclass(frozen=True)
class Column:
    """One declared output column.

    ``name`` may be a template (see the module docs); ``when`` is None for a column every run
    writes, else the condition under which it is written; ``nullable``: the column may hold nulls
    (NaN in a float column is a value, not a null).
    """

    name: str
    dtype: Any  # a polars data type (class or instance)
    meaning: str
    nullable: bool = False
    when: str | None = None

    @property
    def is_template(self) -> bool:
        return "{" in self.name or "[" in self.name

    @property
    def pattern(self) -> re.Pattern[str]:
        return _template_regex(self.name)

    @property
    def literal_length(self) -> int:
        """Characters of the name outside the template fields (more specific templates match first)."""
        return len(re.sub(r"\{[^}]*\}|[\[\]]", "", self.name))


@dataclass(frozen=True)
class OutputSchema:
    """The declared columns of one result kind."""

    kind: str
    title: str
    produced_by: str  # the function(s) and the file(s) they write
    columns: tuple[Column, ...]
    exactly_one_of: tuple[tuple[str, ...], ...] = ()  # groups of alternatives, e.g. Cluster | CellID
    metadata: tuple[str, ...] = ()  # parquet key-value keys every written file carries
    note: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        """The declared column names (templates as written), in output order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def match(self, name: str) -> Column | None:
        """The declared column an actual column ``name`` belongs to (exact names before templates,
        more specific templates before looser ones)."""
        for c in self.columns:
            if not c.is_template and c.name == name:
                return c
        for c in sorted((c for c in self.columns if c.is_template), key=lambda c: -c.literal_length):
            if c.pattern.fullmatch(name):
                return c
        return None


def _template_regex(name: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(name):
        ch = name[i]
        if ch == "{":
            j = name.index("}", i)
            out.append(".+")
            i = j + 1
        elif ch == "[":
            out.append("(?:")
            i += 1
        elif ch == "]":
            out.append(")?")
            i += 1
        else:
            out.append(re.escape(ch))
            i += 1
    return re.compile("".join(out))


def _c(name: str, dtype: Any, meaning: str, *, nullable: bool = False, when: str | None = None) -> Column:
    return Column(name, dtype, meaning, nullable, when)


_F64, _I64, _STR, _BOOL = pl.Float64, pl.Int64, pl.String, pl.Boolean

_IN_INPUT = "present in the input"


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
    produced_by="`gsem.ldsc`: `CovStruc.save(path)` for a path not ending in `.json`",
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

_BETADATA = OutputSchema(
    kind="stlr_betadata",
    title="SpaceTravLR betadata (one file per target gene)",
    produced_by="`stlr.fit(..., out=)`: `<out>/<gene>_betadata.parquet`; `stlr.write_betadata`",
    columns=(
        _c(CLUSTER, _STR, "cluster label (one row per cluster: seed-only training)", when="per-cluster rows"),
        _c(CELL_ID, _STR, "cell id (one row per cell)", when="per-cell rows"),
        _c(BETA0, _F64, "intercept"),
        _c(BETA_PREFIX + "{modulator}", _F64, "coefficient of a modulator: <TF>, <ligand>$<receptor> or <ligand>#<TF>"),
    ),
    exactly_one_of=((CLUSTER, CELL_ID),),
    metadata=(META_PARAMS,),
)

_STLR_SCORES = OutputSchema(
    kind="stlr_fit_scores",
    title="SpaceTravLR training diagnostics (per gene x cluster)",
    produced_by="`stlr.fit`: `FitResult.scores`",
    columns=(
        _c("gene", _STR, "target gene"),
        _c("cluster", _STR, "cluster label"),
        _c("r2", _F64, "in-sample R2 of the cluster's model"),
        _c("n_modulators", _I64, "modulators in the gene's design"),
        _c("n_iter", _I64, "FISTA iterations"),
        _c("converged", _BOOL, "FISTA converged within max_iter"),
        _c("cv_r2", _F64, "held-out R2 of the cluster's model (cv-fold cross-validation; NaN: cv=0 or too few cells)"),
        _c("n_cells", _I64, "cells in the cluster"),
        _c("zeroed", _BOOL, "betas set to 0 (R2 < min_r2, or fewer than 2 cells)"),
    ),
)

_SPLASH = OutputSchema(
    kind="stlr_splash",
    title="SpaceTravLR splash (per cell)",
    produced_by="`stlr.splash` / `df.stlr.splash`",
    columns=(
        _c(CELL_ID, _STR, "cell id"),
        _c(BETA_PREFIX + "{modulator}", _F64, "derivative of the target's expression by the modulator"),
    ),
)

_PERTURB = OutputSchema(
    kind="stlr_perturb",
    title="SpaceTravLR perturbation (per cell)",
    produced_by="`stlr.perturb` / `df.stlr.perturb`",
    columns=(
        _c(CELL_ID, _STR, "cell id"),
        _c("{gene}", _F64, "simulated expression of the gene after propagation"),
    ),
)

_PERTURB_BATCH = OutputSchema(
    kind="stlr_perturb_batch",
    title="SpaceTravLR batch perturbation (per target x cell)",
    produced_by="`stlr.perturb_batch(..., out)`: parquet parts + manifest",
    columns=(
        _c("target", _STR, "perturbed gene"),
        _c(CELL_ID, _STR, "cell id"),
        _c("{gene}", _F64, "simulated expression of the gene after propagation"),
    ),
    metadata=(META_PARAMS,),
)

_TRANSITIONS = OutputSchema(
    kind="stlr_transitions",
    title="SpaceTravLR transition vectors (per cell)",
    produced_by="`stlr.transitions(adata, perturbed)`; drawn by `polgen.plot.transitions`",
    columns=(
        _c(CELL_ID, _STR, "cell id"),
        _c("x", _F64, "layout position (tissue coordinates or the embedding)"),
        _c("y", _F64, "layout position (second axis)"),
        _c("dx", _F64, "transition vector, first axis"),
        _c("dy", _F64, "transition vector, second axis"),
        _c("cluster", _STR, "the cell's cluster", when="the tissue has clusters"),
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

OUTPUTS: dict[str, OutputSchema] = {
    s.kind: s
    for s in (
        _MUNGE,
        _DROPS,
        _SUMSTATS,
        _COVSTRUC,
        _LDSC_TABLE,
        _SEM_PARAMS,
        _SEM_PARAMS_R,
        _SEM_FIT,
        _USER_GWAS,
        _CF_GWAS,
        _ADD_SNPS,
        _ENRICH,
        _GLS,
        _GLS_BAND,
        _FUSION,
        _QTRAIT,
        _PA_LDSC,
        _SIM_SUMSTATS,
        _LFMM_TEST,
        _LFMM_CHOOSEK,
        _LFMM_GLM,
        _LFMM_QVALUES,
        _LFMM_LASSO,
        _LFMM_CV,
        _LFMM_OFFSET,
        _LFMM_OFFSET_EIGEN,
        _BETADATA,
        _STLR_SCORES,
        _SPLASH,
        _PERTURB,
        _PERTURB_BATCH,
        _TRANSITIONS,
    )
}


def output_schema(kind: str) -> OutputSchema:
    """The declaration of ``kind`` (a key of :data:`OUTPUTS`)."""
    try:
        return OUTPUTS[kind]
    except KeyError:
        raise SchemaError(f"unknown output kind {kind!r}; declared kinds: {sorted(OUTPUTS)}") from None


def _dtype_name(dt: Any) -> str:
    return str(dt() if isinstance(dt, type) else dt)


def _read(obj: Any) -> tuple[dict[str, Any], pl.DataFrame | None, dict[str, str] | None, str | None]:
    """(name -> dtype, the frame when eager, parquet metadata when read from a file, path)."""
    if isinstance(obj, pl.DataFrame):
        return dict(obj.schema), obj, None, None
    if isinstance(obj, pl.LazyFrame):
        return dict(obj.collect_schema()), None, None, None
    if isinstance(obj, (str, os.PathLike)):
        import pyarrow.parquet as pq

        path = os.fspath(obj)
        arrow = pq.read_schema(path)
        md = {k.decode(): v.decode() for k, v in (arrow.metadata or {}).items()}
        return dict(pl.read_parquet_schema(path)), None, md, path
    if isinstance(obj, Mapping):
        return dict(obj), None, None, None
    try:  # pyarrow Schema / Table
        import pyarrow as pa

        if isinstance(obj, pa.Table):
            return _read(pl.from_arrow(obj))
        if isinstance(obj, pa.Schema):  # metadata is checked for files only
            frame = pl.from_arrow(obj.empty_table())
            assert isinstance(frame, pl.DataFrame)
            return dict(frame.schema), None, None, None
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pass
    raise SchemaError(f"cannot validate a {type(obj).__name__}: pass a frame, a schema or a parquet path")


def validate(frame_or_schema: Any, kind: str) -> None:
    """Check an output against its declaration; raise :class:`SchemaError` naming the column.

    ``frame_or_schema``: a DataFrame (columns, dtypes and nulls in non-nullable columns are
    checked), a LazyFrame / ``pl.Schema`` / mapping / pyarrow schema (columns and dtypes), or a
    parquet file or output folder (every ``*.parquet`` in it: columns, dtypes and the declared
    metadata keys).  Missing
    always-written columns, extra undeclared columns and wrong dtypes are errors.
    """
    decl = output_schema(kind)
    if isinstance(frame_or_schema, (str, os.PathLike)) and os.path.isdir(frame_or_schema):
        folder = os.fspath(frame_or_schema)
        files = sorted(f for f in os.listdir(folder) if f.endswith(".parquet") and not f.startswith("."))
        if not files:
            raise SchemaError(f"{kind}: no parquet files in the output folder", path=folder)
        for f in files:  # every part (schemas only: cheap)
            validate(os.path.join(folder, f), kind)
        return
    schema, frame, metadata, path = _read(frame_or_schema)
    seen: dict[str, list[str]] = {}
    for name, dtype in schema.items():
        col = decl.match(name)
        if col is None:
            raise SchemaError(f"{kind}: extra column {name!r} is not declared", path=path, column=name)
        seen.setdefault(col.name, []).append(name)
        if dtype != col.dtype:
            raise SchemaError(
                f"{kind}: column {name!r} has dtype {dtype}, declared {_dtype_name(col.dtype)}",
                path=path,
                column=name,
            )
        if frame is not None and not col.nullable and frame.get_column(name).null_count():
            raise SchemaError(f"{kind}: column {name!r} holds nulls, declared not nullable", path=path, column=name)
    for col in decl.columns:
        if col.when is None and col.name not in seen:
            raise SchemaError(f"{kind}: missing column {col.name!r}", path=path, column=col.name)
    for group in decl.exactly_one_of:
        present = [g for g in group if g in seen]
        if len(present) != 1:
            raise SchemaError(
                f"{kind}: needs exactly one of {list(group)}, found {present or 'none'}",
                path=path,
                column=group[0],
            )
    if metadata is not None:
        for key in decl.metadata:
            if key not in metadata:
                raise SchemaError(f"{kind}: parquet metadata lacks key {key!r}", path=path)


def output_reference_markdown() -> str:
    """The README's "Output reference" section body, generated from :data:`OUTPUTS`."""
    lines = [
        "Every result kind is declared once in `polgen/schema.py` (`polgen.schema.OUTPUTS`) and tests",
        "validate each method's output against it (`polgen.schema.validate(frame_or_path, kind)`).",
        "`{x}` in a name stands for one column per trait / covariate / gene / modulator; `[...]` is a",
        "part present only in some runs (see the kind's note). *When* empty: always written.",
        "",
    ]
    for s in OUTPUTS.values():
        lines.append(f"### `{s.kind}`: {s.title}")
        lines.append("")
        lines.append(f"Produced by {s.produced_by}.")
        extra = []
        if s.exactly_one_of:
            extra.append("exactly one of " + " / ".join(", ".join(f"`{g}`" for g in grp) for grp in s.exactly_one_of))
        if s.metadata:
            extra.append("parquet metadata keys " + ", ".join(f"`{k}`" for k in s.metadata))
        if s.note:
            extra.append(s.note.rstrip("."))
        if extra:
            lines.append(" ".join(e[0].upper() + e[1:].rstrip(".") + "." for e in extra))
        lines.append("")
        lines.append("| column | dtype | nullable | when | meaning |")
        lines.append("|---|---|---|---|---|")
        for c in s.columns:
            name = c.name.replace("|", "\\|")
            lines.append(
                f"| `{name}` | {_dtype_name(c.dtype)} | {'yes' if c.nullable else 'no'} | {c.when or ''} "
                f"| {c.meaning.replace('|', chr(92) + '|')} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


__all__ = [
    "A1",
    "A1FREQ",
    "A2",
    "BETA",
    "BETA0",
    "BETA_PREFIX",
    "BP",
    "CELL_ID",
    "CHR",
    "CLUSTER",
    "Column",
    "DTYPES",
    "INFO",
    "LOG10P",
    "MAF",
    "META_METHOD",
    "META_PARAMS",
    "META_VERSION",
    "N",
    "N_MISS",
    "OR",
    "OUTPUTS",
    "OutputSchema",
    "P",
    "SE",
    "SNP",
    "SNP_ID_COLUMNS",
    "Z",
    "output_reference_markdown",
    "output_schema",
    "validate",
]
