"""String options of the public API as ``Literal`` types, and their one check.

Each alias lists the values a function accepts, so editors, ``help()`` and type checkers show
them; :func:`check_option` raises :class:`~polgen.errors.InputError` naming the argument and the
allowed values (the same message everywhere).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from polgen.errors import InputError

__all__ = [
    "Calibrate",
    "ChooseKMethod",
    "DLambda",
    "Estimation",
    "GCMode",
    "GenotypeScale",
    "LigandMode",
    "MLStandardErrors",
    "Orphans",
    "check_option",
]

#: Genomic SEM estimator (lavaan's): diagonally weighted least squares or maximum likelihood.
Estimation = Literal["DWLS", "ML"]
#: Genomic SEM GWAS genomic control of the SNP's V: R's ``GC`` argument.
GCMode = Literal["standard", "conserv", "conservative", "none"]
#: ML sandwich SEs of user_gwas: R GenomicSEM's pairing of moments, or the consistent one.
MLStandardErrors = Literal["R", "aligned"]
#: LFMM p-value calibration (genomic inflation factor, or median + MAD of the z-scores).
Calibrate = Literal["gif", "median+MAD"]
#: LFMM ridge lambda derivative (LEA's approximation or exact).
DLambda = Literal["lea", "exact"]
#: LFMM choose_k singular values: randomized (streamed) or exact.
ChooseKMethod = Literal["randomized", "exact"]
#: Genotype scaling of the .bed reader.
GenotypeScale = Literal["center", "eigenstrat"]
#: SpaceTravLR received-ligand computation: exact Gaussian sums, a grid approximation, or the fast tiles.
LigandMode = Literal["exact", "grid", "fast"]
#: SpaceTravLR genes without a TF regulator: skip them (the reference) or train on ligand terms.
Orphans = Literal["skip", "train"]


def check_option(name: str, value: Any, alias: Any) -> str:
    """``value`` if it is one of ``alias``'s values, else :class:`InputError` naming ``name``."""
    allowed = get_args(alias)
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise InputError(f"{name} must be one of {choices}; got {value!r}")
    return value
