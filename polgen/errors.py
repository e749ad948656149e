"""Typed errors raised by polgen.

Every error names what is at fault: the file, the column, the row (or SNP / cell / gene) where
that is known.  Callers catch :class:`PolgenError` for anything polgen raises on purpose; numba,
pyarrow or numpy exceptions never escape a public function for bad input.
"""

from __future__ import annotations

import os
from typing import Any


class PolgenError(Exception):
    """Base class of every error polgen raises deliberately."""

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        column: str | None = None,
        row: int | str | None = None,
        **context: Any,
    ) -> None:
        self.message = message
        self.path = None if path is None else os.fspath(path)
        self.column = column
        self.row = row
        self.context = context
        super().__init__(self._render())

    def __reduce__(self):
        # Keep path/column/row/context when an error crosses a process boundary (pools, Dask).
        return (_rebuild, (type(self), self.message, self.path, self.column, self.row, self.context))

    def _render(self) -> str:
        where = []
        if self.path is not None:
            where.append(f"file {self.path!r}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        if self.row is not None:
            where.append(f"row {self.row}")
        return f"{self.message} ({', '.join(where)})" if where else self.message


def _rebuild(cls, message, path, column, row, context):
    return cls(message, path=path, column=column, row=row, **context)


class InputError(PolgenError, ValueError):
    """Input data are malformed: unreadable file, wrong size, bad values."""


class SchemaError(InputError):
    """A table lacks required columns, has ambiguous ones, or has the wrong types."""


class BedFormatError(InputError):
    """A PLINK .bed/.bim/.fam trio is malformed (magic bytes, sizes, counts)."""


class ModelSyntaxError(InputError):
    """A lavaan-style model string cannot be parsed."""

    # 1-based position of the fault in the model text (None: unknown), set by polgen.gsem.expr.syntax_error
    line: int | None
    col: int | None


class ModelError(PolgenError, ValueError):
    """A model is unidentified, refers to unknown variables, or is otherwise unusable."""


class NotPositiveDefiniteError(PolgenError, ValueError):
    """A matrix that must be positive definite is not, and cannot be smoothed."""


class ConvergenceError(PolgenError, RuntimeError):
    """An optimiser did not converge."""


class ResumeError(PolgenError, RuntimeError):
    """An output directory cannot be resumed (different parameters, corrupt manifest)."""


class OutputError(PolgenError, OSError):
    """An output cannot be written: its directory cannot be created, the disk refused the write."""


class OutputExistsError(OutputError, FileExistsError):
    """An output exists and neither ``resume`` nor ``overwrite`` was asked for."""


class OutputLockedError(OutputExistsError):
    """Another run (in this or another process) is writing the same output directory right now."""


class MissingExtraError(PolgenError, ImportError):
    """An optional dependency is not installed; the message names the extra that provides it
    (``pip install "polgen[plot]"``, ``[cnn]``, ``[hdl]``, ``[dask]``); ``context["extra"]`` is its name."""


class EngineError(PolgenError, RuntimeError):
    """A batch task failed inside the engine; the message names the batch."""


__all__ = [
    "PolgenError",
    "InputError",
    "SchemaError",
    "BedFormatError",
    "ModelSyntaxError",
    "ModelError",
    "NotPositiveDefiniteError",
    "ConvergenceError",
    "ResumeError",
    "OutputError",
    "OutputExistsError",
    "OutputLockedError",
    "EngineError",
]
