"""polgen: Genomic SEM, out-of-core LFMM2 and SpaceTravLR as Polars namespaces.

Importing polgen registers the ``gsem``, ``lfmm`` and ``stlr`` namespaces on ``pl.DataFrame``
and ``pl.LazyFrame`` (Dask workers import polgen too, so the namespaces exist there).
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger("polgen").addHandler(logging.NullHandler())

# the subpackages import after the logging handler is set (E402 is ignored for this file in pyproject)
from polgen import errors, gsem, lfmm, stlr

# imported for their side effect: they register the df.gsem / df.lfmm / df.stlr namespaces
from polgen.gsem import namespace as _gsem_ns  # noqa: F401
from polgen.lfmm import namespace as _lfmm_ns  # noqa: F401
from polgen.stlr import namespace as _stlr_ns  # noqa: F401

_LAZY = {
    "scan_sumstats": "polgen.io.sumstats",
    "scan_ldscores": "polgen.io.ldscores",
    "BedStream": "polgen.io.bed",
    "read_spatial": "polgen.io.spatial",
}


def __getattr__(name: str):
    # Readers load on first use: anndata and the numba decode kernels are not needed by every job.
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'polgen' has no attribute {name!r}")


__all__ = ["errors", "__version__", "gsem", "lfmm", "stlr", *_LAZY]
