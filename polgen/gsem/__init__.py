"""Genomic SEM (parity target: R GenomicSEM).

Pipeline: :func:`munge` -> :func:`ldsc` (a :class:`CovStruc` with S, V, I) -> :func:`commonfactor` /
:func:`usermodel` / :func:`rgmodel`; for multivariate GWAS :func:`sumstats` -> :func:`user_gwas` /
:func:`commonfactor_gwas` streamed over SNP batches.  ``df.gsem.*`` / ``lf.gsem.*`` delegate here.
"""

from polgen.gsem.covstruc import CovStruc, as_covstruc
from polgen.gsem.enrichment import EnrichResult, enrich
from polgen.gsem.fit_models import GENOMICSEM_NAMES, RGModelResult, SEMResult, commonfactor, rgmodel, usermodel
from polgen.gsem.fusion import read_fusion
from polgen.gsem.gls import GLSBands, summary_gls, summary_gls_bands
from polgen.gsem.gwas import commonfactor_gwas, user_gwas
from polgen.gsem.hdl import hdl
from polgen.gsem.hdl_panel import make_hdl_panel, simulate_hdl_sumstats
from polgen.gsem.heterogeneity import QTraitResult, local_srmd, q_trait
from polgen.gsem.ldsc import ldsc, ldsc_table
from polgen.gsem.matrix import cov_to_cor, is_pd, near_pd, reorder_v, vech, vech_reverse
from polgen.gsem.model_writer import write_model
from polgen.gsem.multi import MultiResult, multi_gene, multi_snp, read_ld
from polgen.gsem.munge import munge
from polgen.gsem.parallel_analysis import PALDSCResult, pa_ldsc
from polgen.gsem.ram import CompiledModel, compile_model
from polgen.gsem.sem import SemFit, fit_sem, sandwich
from polgen.gsem.simulate import SimulatedSumstats, sim_ldsc
from polgen.gsem.snp_matrices import SnpMatrices, add_genes, add_snps
from polgen.gsem.stratified import StratifiedCovStruc, s_ldsc
from polgen.gsem.subset import SubSV, index_s, sub_sv
from polgen.gsem.sumstats import sumstats
from polgen.gsem.syntax import ParTable, parse_model

__all__ = [
    "EnrichResult",
    "StratifiedCovStruc",
    "enrich",
    "s_ldsc",
    "GLSBands",
    "QTraitResult",
    "SubSV",
    "index_s",
    "local_srmd",
    "q_trait",
    "read_fusion",
    "sub_sv",
    "summary_gls",
    "summary_gls_bands",
    "CompiledModel",
    "CovStruc",
    "GENOMICSEM_NAMES",
    "PALDSCResult",
    "ParTable",
    "RGModelResult",
    "SEMResult",
    "SemFit",
    "SimulatedSumstats",
    "compile_model",
    "fit_sem",
    "is_pd",
    "reorder_v",
    "sandwich",
    "as_covstruc",
    "commonfactor",
    "commonfactor_gwas",
    "cov_to_cor",
    "hdl",
    "ldsc",
    "ldsc_table",
    "make_hdl_panel",
    "munge",
    "near_pd",
    "pa_ldsc",
    "parse_model",
    "rgmodel",
    "sim_ldsc",
    "simulate_hdl_sumstats",
    "sumstats",
    "user_gwas",
    "usermodel",
    "vech",
    "vech_reverse",
    "write_model",
    "MultiResult",
    "SnpMatrices",
    "add_genes",
    "add_snps",
    "multi_gene",
    "multi_snp",
    "read_ld",
]
