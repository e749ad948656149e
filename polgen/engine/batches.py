"""Batch planning: split ``n_rows`` into contiguous ranges that fit a memory budget."""

from __future__ import annotations

import math
import numbers

from polgen.errors import InputError


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def rows_per_batch(row_bytes: float, budget_bytes: float, min_rows: int = 1, max_rows: int | None = None) -> int:
    """How many rows of ``row_bytes`` each fit in ``budget_bytes``, clamped to [min_rows, max_rows]."""
    if not (isinstance(row_bytes, numbers.Real) and math.isfinite(row_bytes) and row_bytes > 0):
        raise InputError(f"row_bytes must be a positive number, got {row_bytes!r}")
    if not (isinstance(budget_bytes, numbers.Real) and math.isfinite(budget_bytes) and budget_bytes > 0):
        raise InputError(f"budget_bytes must be a positive number, got {budget_bytes!r}")
    min_rows = _check_int("min_rows", min_rows, 1)
    if max_rows is not None:
        max_rows = _check_int("max_rows", max_rows, 1)
        if max_rows < min_rows:
            raise InputError(f"max_rows ({max_rows}) is smaller than min_rows ({min_rows})")
    rows = max(min_rows, int(budget_bytes // row_bytes))
    if max_rows is not None:
        rows = min(rows, max_rows)
    return rows


def plan_batches(
    n_rows: int, row_bytes: float, budget_bytes: float, min_rows: int = 1, max_rows: int | None = None
) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` ranges covering ``range(n_rows)`` in order.

    Each batch holds ``budget_bytes // row_bytes`` rows, clamped to ``[min_rows, max_rows]``
    (``min_rows`` wins over the budget: a batch always makes progress); the last batch may be
    shorter.  The plan depends only on its arguments, so the same job plans the same batches on
    every machine (and a resumed run finds its parts).  ``n_rows == 0`` gives no batches.
    """
    n_rows = _check_int("n_rows", n_rows, 0)
    size = rows_per_batch(row_bytes, budget_bytes, min_rows, max_rows)
    return [(start, min(start + size, n_rows)) for start in range(0, n_rows, size)]
