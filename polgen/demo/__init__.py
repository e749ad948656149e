"""Deterministic synthetic demo data for every polgen method (:mod:`polgen.demo.data`) and
``polgen demo`` (:mod:`polgen.demo.run`), which generates them and runs each method end to end."""

from polgen.demo.data import (
    GsemDemo,
    LfmmDemo,
    StlrDemo,
    make_gsem_demo,
    make_lfmm_demo,
    make_stlr_demo,
    received_ligands_dense,
)
from polgen.demo.run import run_demo

__all__ = [
    "GsemDemo",
    "LfmmDemo",
    "StlrDemo",
    "make_gsem_demo",
    "make_lfmm_demo",
    "make_stlr_demo",
    "received_ligands_dense",
    "run_demo",
]
