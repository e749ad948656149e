"""``df.gsem`` / ``lf.gsem``: thin delegates to the typed functions of :mod:`polgen.gsem`.

The frame is the per-SNP input of the step: a trait's raw summary statistics for ``munge`` and
``sumstats``, the merged ``sumstats()`` output for ``user_gwas`` / ``commonfactor_gwas``.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from polgen._namespace import register


@register("gsem")
class GsemNamespace:
    def __init__(self, frame: pl.DataFrame | pl.LazyFrame) -> None:
        self._frame = frame

    def munge(self, hm3: Any, trait_name: str = "trait", **kwargs: Any) -> pl.LazyFrame:
        """Munge this frame's summary statistics as one trait (see :func:`polgen.gsem.munge`).

        Returns the munged LazyFrame (SNP, N, Z, A1, A2); dropped-row counts are logged.
        """
        from polgen.gsem.munge import munge

        munged, _dropped = munge({trait_name: self._frame}, hm3, **kwargs)
        return munged[trait_name]

    def sumstats(self, ref: Any, trait_name: str = "trait", **kwargs: Any) -> pl.LazyFrame:
        """Standardise this frame's statistics as one trait (see :func:`polgen.gsem.sumstats`)."""
        from polgen.gsem.sumstats import sumstats

        kwargs.setdefault("se_logit", False)
        return sumstats({trait_name: self._frame}, ref, **kwargs)

    def user_gwas(self, covstruc: Any, model: str, **kwargs: Any) -> pl.DataFrame | pl.LazyFrame:
        """Per-SNP user model over this ``sumstats()`` frame (see :func:`polgen.gsem.user_gwas`)."""
        from polgen.gsem.gwas import user_gwas

        return user_gwas(self._frame, covstruc, model, **kwargs)

    def commonfactor_gwas(self, covstruc: Any, **kwargs: Any) -> pl.DataFrame | pl.LazyFrame:
        """Per-SNP common factor over this ``sumstats()`` frame (see :func:`polgen.gsem.commonfactor_gwas`)."""
        from polgen.gsem.gwas import commonfactor_gwas

        return commonfactor_gwas(self._frame, covstruc, **kwargs)

    def write_model(self, S_LD: Any, cutoff: float, **kwargs: Any) -> str:
        """Model syntax from this loadings frame (traits x factors; see :func:`polgen.gsem.write_model`)."""
        from polgen.gsem.models import write_model

        frame = self._frame.collect() if isinstance(self._frame, pl.LazyFrame) else self._frame
        return write_model(frame, S_LD, cutoff, **kwargs)
