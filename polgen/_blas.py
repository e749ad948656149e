"""Run small dense linear algebra with single-threaded OpenBLAS.

On a busy machine a multi-threaded OpenBLAS spends far longer synchronising its threads than
computing a QR or SVD of an n x 50 matrix (measured here under load: 0.2-1.9 s instead of 2-15 ms
for n = 1000, worse right after a numba parallel region).  ``single_threaded_blas()`` lowers the
thread count of the OpenBLAS builds bundled with numpy and scipy for the duration of a block
and restores it after; when the libraries cannot be found it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import threading
from contextlib import contextmanager

_LOCK = threading.RLock()


@functools.lru_cache(maxsize=1)
def _handles() -> list[tuple]:
    import numpy
    import scipy

    found = []
    for pkg in (numpy, scipy):
        if pkg.__file__ is None:  # not an installed package with files: no bundled libs to look in
            continue
        libdir = os.path.join(os.path.dirname(pkg.__file__), os.pardir, f"{pkg.__name__}.libs")
        for path in glob.glob(os.path.join(libdir, "*openblas*.so*")):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for suffix in ("64_", ""):
                try:
                    get = getattr(lib, f"scipy_openblas_get_num_threads{suffix}")
                    set_ = getattr(lib, f"scipy_openblas_set_num_threads{suffix}")
                except AttributeError:
                    continue
                get.restype = ctypes.c_int
                set_.argtypes = [ctypes.c_int]
                found.append((get, set_))
                break
    return found


_DEPTH = 0
_SAVED: list[int] = []


@contextmanager
def single_threaded_blas():
    """Single-threaded OpenBLAS inside the block; re-entrant and safe from several threads (the
    first entrant saves and lowers the thread counts, the last one out restores them)."""
    global _DEPTH, _SAVED
    with _LOCK:
        handles = _handles()
        if _DEPTH == 0:
            _SAVED = [get() for get, _ in handles]
            for _, set_ in handles:
                set_(1)
        _DEPTH += 1
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH -= 1
            if _DEPTH == 0:
                for (_, set_), k in zip(handles, _SAVED):
                    set_(max(1, k))
