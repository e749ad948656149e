"""Pick estimates and their sampling covariance out of an LDSC covstruc (R GenomicSEM ``subSV`` / ``indexS``).

:func:`index_s` numbers the elements of ``S`` as they are stacked in ``vech(S)`` (lower triangle,
column by column, 1-based as in R): with ``r=True`` only the off-diagonal elements are numbered
(the order of the genetic correlations in rgmodel's ``V_R``), the diagonal is 0.  :func:`sub_sv`
takes those numbers and returns the chosen estimates with their block of ``V`` - the ``y`` and
``V_y`` of :func:`~polgen.gsem.gls.summary_gls`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from polgen.errors import InputError, SchemaError
from polgen.gsem.covstruc import as_covstruc
from polgen.options import SubSVType, check_option

__all__ = ["SubSV", "index_s", "sub_sv"]


@dataclass
class SubSV:
    """:func:`sub_sv` output: ``sub_s`` (the chosen estimates), ``sub_v`` (their sampling
    covariance), ``index`` (their 1-based numbers from :func:`index_s`), ``labels``
    (``"T1~~T2"``), ``type`` (``"S"``, ``"S_Stand"`` or ``"R"``)."""

    sub_s: np.ndarray
    sub_v: np.ndarray
    index: np.ndarray
    labels: list[str]
    type: str

    def __repr__(self) -> str:
        vals = ", ".join(f"{lab}={v:.4g}" for lab, v in zip(self.labels, self.sub_s, strict=True))
        return f"SubSV({self.type}: {vals})"


def _numbering(k: int, r: bool) -> np.ndarray:
    num = np.zeros((k, k), dtype=np.int64)
    n = 0
    for j in range(k):
        for i in range(j + 1 if r else j, k):
            n += 1
            num[i, j] = num[j, i] = n
    return num


def _get(obj: Any, *names: str) -> Any:
    for name in names:
        if isinstance(obj, Mapping) and name in obj:
            return obj[name]
        if not isinstance(obj, Mapping) and getattr(obj, name, None) is not None:
            return getattr(obj, name)
    return None


def _matrices(covstruc: Any, type: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if type == "R":
        R = _get(covstruc, "R")
        V = _get(covstruc, "V_R")
        if R is None or V is None:
            raise SchemaError(
                "type='R' needs genetic correlations R and their sampling covariance V_R, as rgmodel() returns",
                column="R" if R is None else "V_R",
            )
        R = np.asarray(R, dtype=np.float64)
        names = _get(covstruc, "trait_names") or [f"V{i + 1}" for i in range(R.shape[0])]
        return R, np.asarray(V, dtype=np.float64), [str(t) for t in names]
    if not isinstance(covstruc, Mapping) and getattr(covstruc, "covstruc", None) is not None:
        covstruc = covstruc.covstruc  # an rgmodel result carries its covstruc
    cs = as_covstruc(covstruc)
    if type == "S_Stand":
        if cs.S_Stand is None or cs.V_Stand is None:
            raise SchemaError("type='S_Stand' needs S_Stand and V_Stand: run ldsc(stand=True)", column="S_Stand")
        return cs.S_Stand, cs.V_Stand, cs.trait_names
    return cs.S, cs.V, cs.trait_names


def index_s(covstruc: Any = None, matrix: Any = None, r: bool = False) -> np.ndarray:
    """The ``vech`` numbers of the elements of ``S`` (R ``indexS``).

    Parameters
    ----------
    covstruc
        An LDSC covstruc (its ``S`` is numbered); or None and ``matrix`` given.
    matrix
        Any square matrix (R ``MATRIX``), used when ``covstruc`` is None.
    r
        Number only the off-diagonal elements (genetic correlations; the diagonal is 0).

    Returns
    -------
    numpy.ndarray
        A symmetric ``k x k`` integer matrix of 1-based positions in ``vech(S)`` (or in the
        correlations' vector with ``r=True``).
    """
    if covstruc is not None:
        S = _get(covstruc, "S")
        if S is None:
            S = as_covstruc(covstruc).S
    elif matrix is not None:
        S = matrix
    else:
        raise InputError("index_s needs a covstruc or a matrix")
    S = np.asarray(S)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise InputError(f"index_s needs a square matrix, got shape {S.shape}", column="matrix")
    return _numbering(S.shape[0], r)


def sub_sv(covstruc: Any, index: Sequence[int] | np.ndarray, type: SubSVType = "S") -> SubSV:
    """Chosen elements of ``S`` (or ``S_Stand``, or rgmodel's ``R``) with their block of ``V`` (R ``subSV``).

    Parameters
    ----------
    covstruc
        :func:`~polgen.gsem.ldsc` output (``type="S"`` / ``"S_Stand"``) or
        :func:`~polgen.gsem.rgmodel` output / a mapping with ``R`` and ``V_R`` (``type="R"``).
    index
        1-based numbers of the elements, as :func:`index_s` gives them (``r=True`` for ``"R"``).
    type
        ``"S"`` (genetic covariances with ``V``), ``"S_Stand"`` (``S_Stand`` with ``V_Stand``) or
        ``"R"`` (genetic correlations with ``V_R``).

    Returns
    -------
    SubSV
        ``sub_s`` and ``sub_v`` in the order of ``index`` (R returns ``subS`` in ``vech`` order and
        ``subV`` in the given order, which agree only for an increasing ``index``).

    Raises
    ------
    InputError
        An index out of range, not an integer, or repeated.
    """
    check_option("type", type, SubSVType)
    S, V, names = _matrices(covstruc, type)
    k = S.shape[0]
    num = _numbering(k, type == "R")
    n = int(num.max())
    if V.shape != (n, n):
        what = "V_R" if type == "R" else ("V_Stand" if type == "S_Stand" else "V")
        raise InputError(f"{what} is {V.shape[0]}x{V.shape[1]}; expected {n}x{n} for {k} traits", column=what)
    idx = np.asarray(index).reshape(-1)
    if idx.size == 0:
        raise InputError("index is empty", column="index")
    if not np.all(np.isfinite(idx.astype(np.float64))) or np.any(idx.astype(np.float64) % 1 != 0):
        raise InputError(f"index must be whole numbers, got {idx.tolist()}", column="index")
    idx = idx.astype(np.int64)
    bad = idx[(idx < 1) | (idx > n)]
    if bad.size:
        raise InputError(
            f"index {int(bad[0])} is out of range: {type} has {n} elements, numbered 1..{n} (see index_s)",
            column="index",
        )
    if np.unique(idx).size != idx.size:
        raise InputError(f"index repeats elements: {idx.tolist()}", column="index")
    rows, cols = np.nonzero(np.tril(num, -1 if type == "R" else 0))
    pos = {int(num[i, j]): (int(i), int(j)) for i, j in zip(rows, cols, strict=True)}
    cells = [pos[int(i)] for i in idx]
    sub_s = np.array([S[i, j] for i, j in cells])
    sub_v = V[np.ix_(idx - 1, idx - 1)].copy()
    labels = [f"{names[j]}~~{names[i]}" for i, j in cells]
    return SubSV(sub_s=sub_s, sub_v=sub_v, index=idx, labels=labels, type=type)
