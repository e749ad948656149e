"""polgen: Genomic SEM, out-of-core LFMM2 and SpaceTravLR as Polars namespaces.

Importing polgen registers the ``gsem``, ``lfmm`` and ``stlr`` namespaces on ``pl.DataFrame``
and ``pl.LazyFrame`` (Dask workers import polgen too, so the namespaces exist there).
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger("polgen").addHandler(logging.NullHandler())

from polgen import errors  # noqa: E402
from polgen.gsem import namespace as _gsem_ns  # noqa: E402,F401
from polgen.lfmm import namespace as _lfmm_ns  # noqa: E402,F401
from polgen.stlr import namespace as _stlr_ns  # noqa: E402,F401

__all__ = ["errors", "__version__"]
