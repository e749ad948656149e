"""Canonical column names and dtypes, defined once and used everywhere.

Per-SNP inputs and outputs follow the de-facto GWAS layout (regenie/plink2 spellings where they
exist) so results load in the tools people already use.
"""

from __future__ import annotations

import polars as pl

# --- per-SNP identity -----------------------------------------------------------------------
SNP = "SNP"          # variant id (rsid)
CHR = "CHR"          # chromosome as string ("1".."22", "X", ...)
BP = "BP"            # base-pair position, Int64
A1 = "A1"            # effect allele (upper case)
A2 = "A2"            # other allele (upper case)
MAF = "MAF"          # minor/effect allele frequency
A1FREQ = "A1FREQ"    # frequency of A1 in the analysed samples
N_MISS = "N_MISS"    # missing genotype calls

# --- summary statistics -----------------------------------------------------------------------
BETA = "BETA"
OR = "OR"
Z = "Z"
SE = "SE"
P = "P"
N = "N"
INFO = "INFO"
LOG10P = "LOG10P"

SNP_ID_COLUMNS = (SNP, CHR, BP, A1, A2)

DTYPES: dict[str, pl.DataType] = {
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

# --- parquet key-value metadata keys ------------------------------------------------------------
META_PARAMS = "polgen.params"
META_METHOD = "polgen.method"
META_VERSION = "polgen.version"
