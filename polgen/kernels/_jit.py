"""The one place that sets numba options for polgen's kernels.

Every kernel is compiled with ``cache=True`` (a cached kernel loads in ~0.5 s instead of compiling
for 1-3 s) and ``nogil=True`` (batches run on threads).  What differs between kernels is named
here once, as a decorator per option set; kernel modules pick one and never call ``numba.njit``
themselves:

============================  ===================  ==============  ========  ======
decorator                     fastmath             error_model     parallel  inline
============================  ===================  ==============  ========  ======
``jit``                       FM                   ``"numpy"``     no        never
``jit_fm``                    FM                   ``"python"``    no        never
``jit_fm_inline``             FM                   ``"python"``    no        always
``jit_fm_parallel``           FM                   ``"python"``    yes       never
``jit_exact``                 off                  ``"python"``    no        never
``jit_exact_parallel``        off                  ``"python"``    yes       never
``jit_contract``              ``{"contract"}``     ``"python"``    no        never
``jit_contract_parallel``     ``{"contract"}``     ``"python"``    yes       never
``jit_rc``                    ``{"reassoc",        ``"python"``    no        never
                              "contract"}``
``jit_strict``                off                  ``"numpy"``     no        never
``jit_strict_noref``          off                  ``"numpy"``     no        never
============================  ===================  ==============  ========  ======

``jit_strict_noref`` also leaves out numba's reference counting (see its comment).

``FM = {"reassoc", "contract", "arcp"}``: never ``fastmath=True``, which lets LLVM assume no NaN
and deletes ``np.isnan`` checks.  ``error_model="numpy"`` (division by zero gives inf/NaN instead of
raising) is what the Genomic SEM kernels use: it removes a branch per division in the inner loops.
Changing a kernel's option set changes its results in the last bits; the tests of bit-identity
(user_gwas before/after) rely on each kernel keeping its set.

numba *inherits* ``fastmath`` and ``error_model`` when a kernel leaves them unset and is compiled
as the callee of one that sets them, and the cache keeps whichever compilation came first, so
:func:`kernel` always sets both: a kernel's code never depends on its callers.

Fast-math flags also let LLVM reorder arithmetic *across* an inlined call, and a kernel whose
callees come from the cache is linked, not inlined: its last bits can differ between the process
that compiled it and one that loaded it (seen in the commonfactor LM: 4e-10 in the estimates, so a
Dask worker's rows differed from the driver's).  Kernels whose outputs feed an iterative optimiser
that amplifies rounding use ``jit_strict`` (IEEE arithmetic, numpy's error model), which gives the
same bits however they were compiled; ``tests/engine/test_scaleout_dask.py`` checks it.

:func:`kernel` builds any other combination (e.g. a parallel and a serial twin of one function).
"""

from __future__ import annotations

from typing import Any

import numba

from polgen.kernels import _notice, _precompile

__all__ = [
    "FM",
    "kernel",
    "jit",
    "jit_fm",
    "jit_fm_inline",
    "jit_fm_parallel",
    "jit_exact",
    "jit_exact_parallel",
    "jit_contract",
    "jit_contract_parallel",
    "jit_rc",
    "jit_strict",
    "jit_strict_noref",
]

FM = frozenset({"reassoc", "contract", "arcp"})
CONTRACT = frozenset({"contract"})
REASSOC_CONTRACT = frozenset({"reassoc", "contract"})


def kernel(
    *, fastmath=FM, error_model: str = "python", parallel: bool = False, inline: str = "never", nrt: bool = True
):
    """A ``numba.njit`` decorator with ``cache=True, nogil=True`` and the given options
    (``fastmath``: a set of LLVM fast-math flags or ``False``; ``nrt`` False: no reference
    counting in the function, which then may not allocate or return arrays, see
    :data:`jit_strict_noref`)."""
    # Both are always set explicitly: numba lets a callee that leaves them unset inherit its
    # caller's, so its code (and its last bits) would depend on who compiled it first.
    opts: dict[str, Any] = {"cache": True, "nogil": True, "error_model": error_model}
    opts["fastmath"] = set(fastmath) if fastmath else False  # numba wants a set (not a frozenset)
    if parallel:
        opts["parallel"] = True
    if inline != "never":
        opts["inline"] = inline
    if not nrt:
        opts["_nrt"] = False
    return numba.njit(**opts)


jit = kernel(fastmath=FM, error_model="numpy")
jit_fm = kernel(fastmath=FM)
jit_fm_inline = kernel(fastmath=FM, inline="always")
jit_fm_parallel = kernel(fastmath=FM, parallel=True)
jit_exact = kernel(fastmath=False)
jit_strict = kernel(fastmath=False, error_model="numpy")
jit_exact_parallel = kernel(fastmath=False, parallel=True)
jit_contract = kernel(fastmath=CONTRACT)
jit_contract_parallel = kernel(fastmath=CONTRACT, parallel=True)
jit_rc = kernel(fastmath=REASSOC_CONTRACT)
#: jit_strict without numba's reference counting (its ``_nrt`` flag): for helpers called per
#: iteration of an optimiser that only read and write their array arguments (a call otherwise
#: increments and decrements every array argument's count: ~0.1 us with ten arrays), compiled once
#: instead of inlined at each call site.  Numerics are jit_strict's; such a function must not
#: allocate, slice or return arrays.
jit_strict_noref = kernel(fastmath=False, error_model="numpy", nrt=False)

# an INFO line when a first call compiles for more than a second (see polgen.kernels._notice)
_notice.install()
# commonfactor_gwas: its next kernels compile in a helper process meanwhile (polgen.kernels._precompile)
_precompile.install()
