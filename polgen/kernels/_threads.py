"""Run a ``nogil`` range kernel over chunks on Python threads instead of a ``prange`` outer loop.

A ``parallel=True`` kernel whose ``prange`` body calls the per-range kernel costs a parfor
compilation (several seconds, more under load) on top of the range kernel, in every fresh
environment; the range kernel is compiled with ``nogil=True`` anyway, so Python threads over the
same chunks run it in parallel at the same speed, with the one compiled specialisation the serial
path uses (results identical to the serial call: each row is computed by the same code).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba as nb

__all__ = ["n_chunks", "run_chunks"]


def n_chunks(n: int, min_rows: int = 256, per_thread: int = 8) -> int:
    """Chunks for ``n`` rows: at least ``min_rows`` rows each, up to ``per_thread`` per thread."""
    return max(1, min(n // min_rows, per_thread * nb.get_num_threads()))


def run_chunks(kernel: Any, n: int, nchunks: int, *args: Any) -> None:
    """``kernel(lo, hi, *args)`` over ``nchunks`` equal chunks of ``range(n)`` on
    ``numba.get_num_threads()`` threads (the cap a caller set with ``numba.set_num_threads``)."""
    step = (n + nchunks - 1) // max(nchunks, 1)
    bounds = [(lo, min(n, lo + step)) for lo in range(0, n, max(step, 1))]
    threads = min(nb.get_num_threads(), len(bounds))
    if threads <= 1:
        for lo, hi in bounds:
            kernel(lo, hi, *args)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="polgen-kernel") as pool:
        for fut in [pool.submit(kernel, lo, hi, *args) for lo, hi in bounds]:
            fut.result()
