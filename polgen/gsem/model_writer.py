"""R GenomicSEM's ``write.model``: lavaan model syntax from a loading matrix (:func:`write_model`),
and the residual-variance labels it and ``fix_resid`` refits write (:func:`resid_labels`)."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np
import polars as pl

from polgen.errors import InputError
from polgen.gsem.covstruc import as_covstruc

log = logging.getLogger("polgen")

__all__ = ["resid_labels", "write_model"]


def resid_labels(n: int) -> list[str]:
    """Deterministic 4-letter labels (R samples random combn(letters, 4) columns)."""
    out = []
    for combo in itertools.combinations("abcdefghijklmnopqrstuvwxyz", 4):
        out.append("".join(combo))
        if len(out) == n:
            break
    return out


def write_model(
    loadings: Any,
    S_LD: Any,
    cutoff: float,
    fix_resid: bool = True,
    bifactor: bool = False,
    mustload: bool = False,
    common: bool = False,
) -> str:
    """Model syntax from a loading matrix (R ``write.model``).

    ``loadings``: traits x factors (numpy array or numeric Polars frame).  ``S_LD``: anything naming
    the traits in order: a list of names, a :class:`CovStruc` / mapping / path, or a frame whose
    columns are the traits.  Differences from R, on purpose: trait names are matched as whole
    words (R's ``grepl`` lets ``V1`` match ``V10``); the residual-variance labels are deterministic
    (R samples random 4-letter labels); a factor with no loading above the cutoff is dropped with a
    warning (R errors for the first factor and writes an empty line for others).
    """
    names = _trait_names(S_LD)
    L = loadings.to_numpy() if isinstance(loadings, pl.DataFrame) else np.asarray(loadings, dtype=np.float64)
    L = np.array(L, dtype=np.float64)
    if L.ndim == 1:
        L = L[:, None]
    if L.shape[0] != len(names):
        raise InputError(f"loadings have {L.shape[0]} rows but there are {len(names)} traits")
    lines: list[str] = []
    if common:
        lines.append("F1=~" + " + ".join(names))
    else:
        if mustload:
            mx = np.abs(L).max(axis=1)
            for i in range(L.shape[0]):
                L[i, np.abs(L[i]) == mx[i]] = cutoff + 0.01
        nf = L.shape[1]
        factors = []
        for f in range(nf):
            ind = [names[i] for i in range(L.shape[0]) if abs(L[i, f]) > cutoff]
            if not ind:
                log.warning("write_model: factor F%d has no loading above %g and is left out", f + 1, cutoff)
                continue
            factors.append(f + 1)
            lines.append(f"F{f + 1}=~" + " + ".join(ind))
        if bifactor:
            used = [t for t in names if any(t in _tokens(ln) for ln in lines)]
            lines.append("Common_F=~" + " + ".join(used))
            for f in factors:
                lines.append(f"Common_F~~0*F{f}")
            for a, b in itertools.combinations(factors, 2):
                lines.append(f"F{a}~~0*F{b}")
    if fix_resid:
        used = [t for t in names if any(t in _tokens(ln) for ln in lines)]
        labs = resid_labels(len(names))
        for i, t in enumerate(names):
            if t in used:
                lines.append(f"{t} ~~ {labs[i]}*{t}")
                lines.append(f"{labs[i]} > .0001")
    return " \n ".join(lines) + " \n "


def _tokens(line: str) -> set[str]:
    import re

    return set(re.findall(r"[A-Za-z0-9_.]+", line))


def _trait_names(obj: Any) -> list[str]:
    if isinstance(obj, (list, tuple)) and all(isinstance(x, str) for x in obj):
        return list(obj)
    if isinstance(obj, pl.DataFrame):
        return [c for c in obj.columns if c != "trait"]
    if isinstance(obj, np.ndarray):
        return [f"V{i + 1}" for i in range(obj.shape[1])]
    return as_covstruc(obj).trait_names
