"""``df.gsem`` / ``lf.gsem``: typed aliases of the functions of :mod:`polgen.gsem`.

The frame is the per-SNP input of the step: a trait's raw summary statistics for ``munge`` and
``sumstats``, one trait's munged statistics for ``hdl``, the merged ``sumstats()`` output for
``user_gwas`` / ``commonfactor_gwas``, a loadings table (traits x factors) for ``write_model``.
Each method has its function's signature without the parameter the frame fills (see :func:`polgen._namespace.alias`).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from polgen._namespace import alias, eager, keyword, positional, register

# from the package, whose public names stay put while its modules are reorganised
from polgen.gsem import add_genes as _add_genes
from polgen.gsem import add_snps as _add_snps
from polgen.gsem import commonfactor_gwas as _commonfactor_gwas
from polgen.gsem import hdl as _hdl
from polgen.gsem import multi_gene as _multi_gene
from polgen.gsem import multi_snp as _multi_snp
from polgen.gsem import munge as _munge
from polgen.gsem import sumstats as _sumstats
from polgen.gsem import user_gwas as _user_gwas
from polgen.gsem import write_model as _write_model


def _one_trait(frame: pl.DataFrame | pl.LazyFrame, args: dict[str, Any]) -> dict[str, Any]:
    return {args["trait_name"]: frame}


def _munged_trait(out: tuple[dict[str, pl.LazyFrame], pl.DataFrame], args: dict[str, Any]) -> pl.LazyFrame:
    munged, _dropped = out
    return munged[args["trait_name"]]


_TRAIT_NAME = positional("trait_name", "trait", "str")


@register("gsem")
class GsemNamespace:
    def __init__(self, frame: pl.DataFrame | pl.LazyFrame) -> None:
        self._frame = frame

    munge = alias(
        _munge,
        "files",
        convert=_one_trait,
        replace={"trait_names": _TRAIT_NAME},
        result=_munged_trait,
        returns="pl.LazyFrame",
        doc="Munge this frame's summary statistics as one trait named ``trait_name`` (see "
        ":func:`polgen.gsem.munge`); returns the munged LazyFrame (SNP, N, Z, A1, A2), dropped-row "
        "counts are logged.",
    )
    sumstats = alias(
        _sumstats,
        "files",
        convert=_one_trait,
        replace={"trait_names": _TRAIT_NAME, "se_logit": keyword("se_logit", False, "bool")},
        doc="Standardise this frame's statistics as one trait named ``trait_name`` (see "
        ":func:`polgen.gsem.sumstats`; ``se_logit`` defaults to False here).",
    )
    hdl = alias(
        _hdl,
        "munged",
        doc="HDL on this frame's munged statistics as one trait (SNP, N, Z, A1, A2; see "
        ":func:`polgen.gsem.hdl`): its heritability, intercept and their sampling variance.",
    )
    user_gwas = alias(_user_gwas, "snps")
    commonfactor_gwas = alias(_commonfactor_gwas, "snps")
    add_snps = alias(_add_snps, "snps")
    add_genes = alias(_add_genes, "genes")
    multi_snp = alias(_multi_snp, "snps")
    multi_gene = alias(_multi_gene, "genes")
    write_model = alias(
        _write_model,
        "loadings",
        convert=lambda frame, args: eager(frame),
        doc="Model syntax from this loadings frame (traits x factors; see :func:`polgen.gsem.write_model`).",
    )
