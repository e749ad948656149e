"""``df.stlr`` / ``lf.stlr``: thin delegates to the typed functions of :mod:`polgen.stlr`.

* on a betadata frame (``Cluster``/``CellID`` + ``beta*`` columns, e.g. ``read_betadata(f).to_polars()``)
  or a long Betabase table (``gene, id_kind, id, term, beta``): ``splash``, ``perturb``,
  ``betabase``;
* on a cell table with ``x``, ``y`` and ligand columns: ``received_ligands``.
"""

from __future__ import annotations

from typing import Sequence

import polars as pl

from polgen._namespace import register


def _eager(frame) -> pl.DataFrame:
    return frame.collect() if isinstance(frame, pl.LazyFrame) else frame


@register("stlr")
class StlrNamespace:
    def __init__(self, frame: pl.DataFrame | pl.LazyFrame) -> None:
        self._frame = frame

    def betabase(self, gene: str | None = None):
        """This frame as a :class:`~polgen.stlr.betadata.Betabase` (long table, or one gene's betadata)."""
        from polgen.stlr.betadata import Betabase, betabase_from_long, betadata_from_frame

        df = _eager(self._frame)
        if {"gene", "term", "beta"} <= set(df.columns):
            return betabase_from_long(df)
        if gene is None:
            raise TypeError("a single-gene betadata frame needs gene= (its target gene)")
        return Betabase([betadata_from_frame(gene, df)])

    def splash(self, adata=None, *, gene: str | None = None, **kwargs) -> pl.DataFrame:
        """:func:`polgen.stlr.splash` of this betadata frame (``gene``: its target)."""
        from polgen.stlr.betadata import betadata_from_frame
        from polgen.stlr.splash import splash

        return splash(betadata_from_frame(gene or "target", _eager(self._frame)), adata, **kwargs)

    def perturb(self, adata, target: str | Sequence[str], gene_expr: float = 0.0, *, gene: str | None = None,
                **kwargs):
        """:func:`polgen.stlr.perturb` with this frame's betadata."""
        from polgen.stlr.perturb import perturb

        return perturb(adata, self.betabase(gene), target, gene_expr, **kwargs)

    def received_ligands(self, ligands: Sequence[str], radius, *, x: str = "x", y: str = "y",
                         scale_factor: float = 1.0, mode: str = "exact", suffix: str = "") -> pl.DataFrame:
        """Append received amounts of ``ligands`` (:func:`polgen.stlr.received_ligands`) as columns."""
        from polgen.stlr.ligands import received_ligands

        df = _eager(self._frame)
        coords = df.select(pl.col(x).cast(pl.Float64), pl.col(y).cast(pl.Float64)).to_numpy()
        expr = df.select([pl.col(c).cast(pl.Float64) for c in ligands])
        out = received_ligands(coords, expr, radius, scale_factor, mode)
        return df.with_columns([out[c].alias(f"{c}{suffix}") for c in ligands] if suffix
                               else [out[c] for c in ligands])
