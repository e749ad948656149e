"""Canonical column names and dtypes, and the building blocks of the output declarations.

Per-SNP inputs and outputs follow the de-facto GWAS layout (regenie/plink2 spellings where they
exist) so results load in the tools people already use.  :class:`Column` and :class:`OutputSchema`
describe one declared output; the declarations themselves are in :mod:`polgen.schema.gsem`,
:mod:`polgen.schema.lfmm` and :mod:`polgen.schema.stlr`, collected in :data:`polgen.schema.OUTPUTS`.

Column names may be templates: ``{trait}`` stands for one or more characters (``beta.{trait}`` is
one column per trait) and ``[...]`` is an optional part (``BETA[_{variable}]`` is ``BETA`` with one
covariate, ``BETA_<variable>`` per covariate with several).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import polars as pl

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
