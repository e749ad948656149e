"""``df.stlr`` / ``lf.stlr``: typed aliases of the functions of :mod:`polgen.stlr`.

* on a betadata frame (``Cluster``/``CellID`` + ``beta*`` columns, e.g. ``read_betadata(f).to_polars()``)
  or a long Betabase table (``gene, id_kind, id, term, beta``): ``splash``, ``perturb``,
  ``betabase``;
* on a cell table with ``x``, ``y`` and ligand columns: ``received_ligands``;
* on a perturbation frame (``CellID`` + simulated genes): ``transitions``.

``splash`` and ``perturb`` have their function's signature without the parameter the frame fills
(see :func:`polgen._namespace.alias`); ``perturb`` adds ``gene=`` (the target gene of a
single-gene betadata frame).  ``betabase`` and ``received_ligands`` are frame helpers with their
own typed signatures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from polgen._namespace import alias, eager, keyword, register
from polgen.stlr.betadata import Betabase, betabase_from_long, betadata_from_frame
from polgen.stlr.ligands import received_ligands as _received_ligands
from polgen.stlr.perturb import perturb as _perturb
from polgen.stlr.splash import splash as _splash
from polgen.stlr.transitions import transitions as _transitions


def _as_betabase(frame: pl.DataFrame | pl.LazyFrame, gene: str | None) -> Betabase:
    df = eager(frame)
    if {"gene", "term", "beta"} <= set(df.columns):
        return betabase_from_long(df)
    if gene is None:
        raise TypeError("a single-gene betadata frame needs gene= (its target gene)")
    return Betabase([betadata_from_frame(gene, df)])


@register("stlr")
class StlrNamespace:
    def __init__(self, frame: pl.DataFrame | pl.LazyFrame) -> None:
        self._frame = frame

    def betabase(self, gene: str | None = None) -> Betabase:
        """This frame as a :class:`~polgen.stlr.betadata.Betabase` (long table, or one gene's betadata)."""
        return _as_betabase(self._frame, gene)

    splash = alias(
        _splash,
        "betadata",
        convert=lambda frame, args: eager(frame),
        doc=":func:`polgen.stlr.splash` of this betadata frame (``gene``: its target).",
    )
    perturb = alias(
        _perturb,
        "betas",
        convert=lambda frame, args: _as_betabase(frame, args["gene"]),
        extra=(keyword("gene", None, "str | None"),),
        doc=":func:`polgen.stlr.perturb` with this frame's betadata (a long Betabase table, or one gene's "
        "betadata with ``gene=``).",
    )

    transitions = alias(
        _transitions,
        "perturbed",
        doc=":func:`polgen.stlr.transitions` of this perturbation frame (``CellID`` + simulated genes, as "
        "``stlr.perturb`` returns it).",
    )

    def received_ligands(
        self,
        ligands: Sequence[str],
        radius: Any,
        *,
        x: str = "x",
        y: str = "y",
        scale_factor: float = 1.0,
        mode: str = "exact",
        suffix: str = "",
    ) -> pl.DataFrame:
        """Append received amounts of ``ligands`` (:func:`polgen.stlr.received_ligands`) as columns.

        ``radius``: one radius or one per ligand; ``x``/``y``: the coordinate columns;
        ``suffix``: appended to the new columns' names (empty: the ligand columns are replaced).
        """
        df = eager(self._frame)
        coords = df.select(pl.col(x).cast(pl.Float64), pl.col(y).cast(pl.Float64)).to_numpy()
        expr = df.select([pl.col(c).cast(pl.Float64) for c in ligands])
        out = _received_ligands(coords, expr, radius, scale_factor, mode)  # type: ignore[arg-type]
        return df.with_columns([out[c].alias(f"{c}{suffix}") for c in ligands] if suffix else [out[c] for c in ligands])
