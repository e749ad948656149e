"""Priors that ship with polgen: CellChat ligand-receptor tables and a base GRN, and the species.

Package data (``polgen/stlr/data/``, provenance in its ``PROVENANCE.md``):

* ``cellchat_mouse.parquet``, ``cellchat_human.parquet``: the CellChat tables the Python SpaceTravLR
  reference ships (``ligand, receptor, pathway, signaling``; row for row the reference's csv files);
* ``base_grn_mouse.parquet``: TF -> target links (``source, target``; 2,678,188 links, 1,079 TFs,
  24,541 targets) of CellOracle's mm10 promoter base GRN (gimmemotifs v5, fpr 1, threshold 10): a TF
  regulates a gene when any of the gene's promoter peaks has the TF's motif (:func:`base_grn_links`);
* ``base_grn_human.parquet``: TF -> target links (454,504 links, 1,333 TFs, 20,295 targets) of
  DoRothEA's human regulons (saezlab/dorothea 1.7.4, GPL-3), every confidence level A-E, signs
  dropped.  CellOracle's human promoter base GRNs and SpaceTravLR's ``human_base_grn.parquet`` (the
  reference's) are downloaded by those tools at run time and carry no licence that allows shipping
  them; DoRothEA is a curated + ChIP-seq + motif + expression-inferred collection, so human fits use
  different candidate regulators than the reference's motif GRN would give.

:func:`detect_species` tells mouse from human by the case of the gene symbols (``Actb`` / ``ACTB``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import polars as pl

from polgen.errors import InputError
from polgen.options import Species, check_option
from polgen.stlr.grn import read_cellchat

log = logging.getLogger("polgen")

DATA = Path(__file__).resolve().parent / "data"
SPECIES: tuple[str, ...] = ("mouse", "human")
#: share of the case-classifiable symbols one species needs for :func:`detect_species`
SPECIES_SHARE = 0.9
#: fewest case-classifiable symbols :func:`detect_species` decides on
MIN_CLASSIFIED = 20

_LETTERS = re.compile(r"[A-Za-z]")
_ENSEMBL = re.compile(r"^ENS[A-Z]*[GTP]\d{6,}")


def _symbol_case(symbol: str) -> str | None:
    """'human' (letters all upper: ACTB, HLA-A), 'mouse' (first letter upper, others lower: Actb,
    mt-Co1 counts by its letters after the prefix) or None (no letters, or too few to tell)."""
    if _ENSEMBL.match(symbol):  # ENSG00000141510, ENSMUSG...: ids, not symbols
        return None
    s = symbol.split("-", 1)[1] if symbol.startswith(("mt-", "MT-")) else symbol
    letters = _LETTERS.findall(s)
    if len(letters) < 2:
        return None
    if all(c.isupper() for c in letters):
        return "human"
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return "mouse"
    if s.endswith("Rik"):  # 1110008P14Rik: RIKEN clones are mouse
        return "mouse"
    return None


def detect_species(var_names: Sequence[str]) -> str:
    """``"mouse"`` or ``"human"`` from the case of the gene symbols.

    A species is chosen when at least :data:`MIN_CLASSIFIED` symbols can be classified and at least
    :data:`SPECIES_SHARE` of them have its case; otherwise :class:`~polgen.errors.InputError` (pass
    ``species=`` then, e.g. for Ensembl ids).
    """
    counts = {"mouse": 0, "human": 0}
    for g in var_names:
        kind = _symbol_case(str(g))
        if kind is not None:
            counts[kind] += 1
    total = counts["mouse"] + counts["human"]
    if total >= MIN_CLASSIFIED:
        for sp in SPECIES:
            if counts[sp] >= SPECIES_SHARE * total:
                return sp
    raise InputError(
        f"cannot tell the species from the gene names ({counts['mouse']} mouse-like symbols such as 'Actb', "
        f"{counts['human']} human-like such as 'ACTB', of {len(var_names)}); pass species='mouse' or 'human', "
        "or give lr= and grn= tables"
    )


def resolve_species(species: Species | None, var_names: Sequence[str]) -> str:
    """``species`` checked, or detected from ``var_names`` when None."""
    if species is None:
        sp = detect_species(var_names)
        log.info("stlr: species detected from gene-symbol case: %s", sp)
        return sp
    check_option("species", species, Species)
    return species


@lru_cache(maxsize=4)
def _bundled_lr(species: str) -> pl.DataFrame:
    return read_cellchat(DATA / f"cellchat_{species}.parquet")


def bundled_lr(species: Species) -> pl.DataFrame:
    """The bundled CellChat table of ``species`` (``ligand, receptor, pathway, signaling``)."""
    check_option("species", species, Species)
    return _bundled_lr(species)


@lru_cache(maxsize=2)
def _bundled_grn(species: str) -> pl.DataFrame:
    return pl.read_parquet(DATA / f"base_grn_{species}.parquet")


def bundled_grn(species: Species) -> pl.DataFrame:
    """The bundled base GRN of ``species`` as ``source`` (TF), ``target`` links: CellOracle's mm10
    promoter GRN (mouse) or DoRothEA's regulons, levels A-E (human); see the module docstring."""
    check_option("species", species, Species)
    path = DATA / f"base_grn_{species}.parquet"
    if not path.exists():
        raise InputError(
            f"the bundled {species} base GRN is missing from this installation; pass grn= a CellOracle base "
            "GRN (peak x TF 0/1 parquet), a links table (source, target) or CellOracle links",
            path=path,
        )
    return _bundled_grn(species)


def bundled_path(kind: str, species: Species) -> Path:
    """Path of a bundled table: ``kind`` "lr" (CellChat) or "grn" (base GRN links) of ``species``."""
    check_option("species", species, Species)
    if kind == "grn":
        bundled_grn(species)  # the typed error for a species without one
        return DATA / f"base_grn_{species}.parquet"
    if kind == "lr":
        return DATA / f"cellchat_{species}.parquet"
    raise InputError(f"kind must be 'lr' or 'grn', got {kind!r}")


def resolve_priors(lr, grn, species: Species | None, var_names: Sequence[str]):
    """``(lr, grn, species)`` with the bundled tables' paths in place of ``lr=None`` / ``grn=None``.

    ``species`` is detected only when a bundled table is needed (None when both are given)."""
    if lr is not None and grn is not None:
        return lr, grn, species
    sp = resolve_species(species, var_names)
    if lr is None:
        lr = bundled_path("lr", sp)  # type: ignore[arg-type]
        log.info("stlr: using the bundled CellChat %s ligand-receptor table", sp)
    if grn is None:
        grn = bundled_path("grn", sp)  # type: ignore[arg-type]
        log.info("stlr: using the bundled %s base GRN", sp)
    return lr, grn, sp
