"""Readers and writers: summary statistics, LD scores, PLINK .bed, AnnData, parquet sinks.

Exports load on first use (PEP 562) so that ``import polgen`` does not pull in anndata or the
numba decode kernels until they are needed.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "BedStream": "bed",
    "BedBlock": "bed",
    "BimIndex": "bed",
    "read_bim": "bed",
    "read_fam": "bed",
    "scan_ldscores": "ldscores",
    "read_ldscores": "ldscores",
    "scan_sumstats": "sumstats",
    "read_sumstats": "sumstats",
    "read_spatial": "spatial",
    "SpatialData": "spatial",
    "BatchSink": "sink",
    "write_table_atomic": "sink",
    "read_metadata": "sink",
    "HDLPanel": "hdl_panel",
    "open_hdl_panel": "hdl_panel",
    "write_hdl_panel": "hdl_panel",
    "convert_hdl_panel": "hdl_panel",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(f"polgen.io.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'polgen.io' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(_EXPORTS)
