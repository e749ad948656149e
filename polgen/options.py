"""String options of the public API as ``Literal`` types, and their one check.

Each alias lists the values a function accepts, so editors, ``help()`` and type checkers show
them; :func:`check_option` raises :class:`~polgen.errors.InputError` naming the argument and the
allowed values (the same message everywhere).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from polgen.errors import InputError

__all__ = [
    "BandPoints",
    "Calibrate",
    "ChooseKMethod",
    "DLambda",
    "EnrichFix",
    "FdrMethod",
    "GlmFamily",
    "Pi0Method",
    "Estimation",
    "FactorMethod",
    "GCMode",
    "GenotypeScale",
    "LigandMode",
    "MLStandardErrors",
    "FixResidWhen",
    "HDLMethod",
    "MissingHSQ",
    "Orphans",
    "Species",
    "StlrImpute",
    "StlrSolver",
    "StlrTrainingMode",
    "SubSVType",
    "check_option",
]

#: Genomic SEM enrich(): which baseline-model parameters stay fixed across annotations.
EnrichFix = Literal["regressions", "covariances", "variances"]
#: Genomic SEM estimator (lavaan's): diagonally weighted least squares or maximum likelihood.
Estimation = Literal["DWLS", "ML"]
#: Genomic SEM hdl: sum of per-piece fits (GenomicSEM's default) or one genome-wide fit + jackknife (HDL's).
HDLMethod = Literal["piecewise", "jackknife"]
#: psych::fa factor extraction method of Genomic SEM pa_ldsc(fa=True).
FactorMethod = Literal["minres", "uls", "ml", "pa"]
#: Genomic SEM GWAS genomic control of the SNP's V: R's ``GC`` argument.
GCMode = Literal["standard", "conserv", "conservative", "none"]
#: ML sandwich SEs of user_gwas: R GenomicSEM's pairing of moments, or the consistent one.
MLStandardErrors = Literal["R", "aligned"]
#: Genomic SEM usermodel: when fix_resid refits with residual variances >= 1e-4: only when the first
#: fit fails outright (R's usermodel: lavaan's optim.force.converged counts any finished fit as
#: converged) or also when it stops before converging (R's commonfactor / rgmodel).
FixResidWhen = Literal["error", "nonconverged"]
#: LFMM p-value calibration (genomic inflation factor, or median + MAD of the z-scores).
Calibrate = Literal["gif", "median+MAD"]
#: LFMM ridge lambda derivative (LEA's approximation or exact).
DLambda = Literal["lea", "exact"]
#: LFMM false discovery rate: Benjamini-Hochberg (R p.adjust) or Storey q-values (R qvalue).
FdrMethod = Literal["BH", "storey"]
#: Storey pi0 estimate (R qvalue pi0.method): smoothing spline over the lambda grid or closed-form bootstrap.
Pi0Method = Literal["smoother", "bootstrap"]
#: LFMM per-locus GLM test family (R glm / lfmm glm_test): logistic or Poisson regression.
GlmFamily = Literal["binomial", "poisson"]
#: LFMM choose_k singular values: randomized (streamed) or exact.
ChooseKMethod = Literal["randomized", "exact"]
#: Genotype scaling of the .bed reader.
GenotypeScale = Literal["center", "eigenstrat"]
#: SpaceTravLR received-ligand computation: exact Gaussian sums, a grid approximation, or the fast tiles.
LigandMode = Literal["exact", "grid", "fast"]
#: Genomic SEM summary_gls_bands: standard errors at R's shift points or at the drawn grid points.
BandPoints = Literal["genomicsem", "grid"]
#: Genomic SEM sub_sv: which matrix to subset (S with V, S_Stand with V_Stand, rgmodel's R with V_R).
SubSVType = Literal["S", "S_Stand", "R"]
#: Genomic SEM read_fusion: gene models without HSQ (or TWAS.Z) are dropped as R does, or an error.
MissingHSQ = Literal["drop", "error"]
#: SpaceTravLR genes without a TF regulator: skip them (the reference) or train on ligand terms.
Orphans = Literal["skip", "train"]
#: SpaceTravLR species of the bundled priors (CellChat table, base GRN).
Species = Literal["mouse", "human"]
#: SpaceTravLR prepare: imputed_count by CellOracle's kNN smoothing in PCA space, MAGIC diffusion,
#: or a copy of the log layer.
StlrImpute = Literal["knn", "magic", "none"]
#: SpaceTravLR training solver: polgen's converging FISTA, or group-lasso 1.5.0's iteration (the reference's).
StlrSolver = Literal["fista", "reference"]

#: SpaceTravLR fit(): per-cluster betas only ("seed"), per-cell CNN betas for every gene ("full") or
#: for genes whose seed residuals are spatially structured ("hybrid").
StlrTrainingMode = Literal["seed", "hybrid", "full"]


def check_option(name: str, value: Any, alias: Any) -> str:
    """``value`` if it is one of ``alias``'s values, else :class:`InputError` naming ``name``."""
    allowed = get_args(alias)
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise InputError(f"{name} must be one of {choices}; got {value!r}")
    return value
