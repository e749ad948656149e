"""Shared inputs of the constraint tests (tests/gsem/test_constraints*.py,
test_gwas_constraints_snp.py): the stored R covstruc and SNPs of a tests/data/gsem/r/ set."""

from __future__ import annotations

from pathlib import Path

import polars as pl

R = Path(__file__).resolve().parents[1] / "data" / "gsem" / "r"
TRAITS = ["T1", "T2", "T3", "T4", "T5"]


def read_csv(path: Path) -> pl.DataFrame:
    """An R-written CSV (``NA`` as null, every row read for the types)."""
    return pl.read_csv(path, null_values="NA", infer_schema_length=None)


def covstruc_of(d: Path, traits: list[str] | None = None) -> dict:
    """The covstruc (S, V, I; trait names ``traits``, default T1-T5) stored as S.csv / V.csv /
    I.csv in ``d``."""
    return {
        "S": read_csv(d / "S.csv").to_numpy(),
        "V": read_csv(d / "V.csv").to_numpy(),
        "I": read_csv(d / "I.csv").to_numpy(),
        "trait_names": TRAITS if traits is None else traits,
    }


def snps_of(d: Path) -> pl.DataFrame:
    """The SNPs stored as snps.csv in ``d`` (SNP ids as strings)."""
    return read_csv(d / "snps.csv").with_columns(pl.col("SNP").cast(pl.String))
