"""The fast path's fit is chosen by the type of ``ml`` while compiling (kernels/gwas_fast.py,
issue 18): the ML specialisation of a kernel calling ``_fit_fast`` compiles the ML fit only, the
DWLS one the DWLS fit only (``if ml is not None`` is pruned by numba only when ``ml`` is None:
the ML batch kernel used to compile the DWLS Levenberg-Marquardt fit too).  Each case compiles
a small caller in a fresh interpreter (kernels load from the on-disk cache when present) and
reads which fit its LLVM code links; the numbers of both fits are covered by the fast-path
and ML tests (tests/kernels/test_gwas_fast_ml.py, tests/gsem/test_gsem_gwas.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from numba import types

from polgen.kernels.gwas_fast import _fast_dwls_entry, _fast_ml_entry, _fit_fast, _fit_fast_select

_CHILD = r"""
import json, sys
import numba
import numpy as np
from numba import typeof
from polgen.kernels.gwas_fast import _fit_fast

ml = True if sys.argv[1] == "ml" else None
f1, i1, f2 = np.zeros(2), np.zeros(2, np.int64), np.zeros((2, 2))
# the argument kinds of gwas_kernel._snp_range's call (arrays C-contiguous, scalars int64/float64)
args = (f1, i1, 1, i1, f2, f2, f1, f1, 0.0, -1, i1, i1, 2, f1, f1, 0.0, 10, 1e-10, f1, f1, f2, f2,
        f2, f2, f1, f1, f1, f1, f2, f2, f2, f1, f2, f2, f1)

names = ", ".join(f"a{i}" for i in range(len(args)))
exec(f"def caller(ml, {names}):\n    return _fit_fast(ml, {names})\n")
caller = numba.njit(nogil=True)(caller)
caller.compile((typeof(ml),) + tuple(typeof(x) for x in args))
# the fits linked into the compiled caller (compiled here or loaded from the cache alike)
ir = "".join(caller.inspect_llvm().values())
print(json.dumps({"ml": ir.count("_fit_fast_ml"), "dwls": ir.count("_fit_fast_dwls")}))
"""


def test_the_type_of_ml_selects_the_entry():
    assert _fit_fast_select(types.none, types.float64) is _fast_dwls_entry
    assert _fit_fast_select(types.Omitted(None), types.float64) is _fast_dwls_entry
    assert _fit_fast_select(types.boolean, types.float64) is _fast_ml_entry


@pytest.mark.parametrize("kind", ["ml", "dwls"])
def test_a_specialisation_compiles_only_its_fit(kind):
    out = subprocess.run([sys.executable, "-c", _CHILD, kind], capture_output=True, text=True, timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    mine, other = ("ml", "dwls") if kind == "ml" else ("dwls", "ml")
    assert got[mine] > 0 and got[other] == 0, got


def test_python_call_dispatches_too():
    """Outside numba, ``_fit_fast`` calls the chosen fit itself: DWLS on a one-moment model whose
    only parameter is the SNP variance fits it exactly."""
    theta = np.array([0.5])
    fidx = np.array([0], np.int64)
    ftype = np.array([2], np.int64)  # the SNP variance
    Js, G = np.zeros((1, 1)), np.zeros((1, 1))
    ma = mb = np.zeros(1, np.int64)
    s_vec, w = np.array([2.0]), np.array([1.0])
    n1, n11 = np.zeros(1), np.zeros((1, 1))
    st, it = _fit_fast(
        None, theta, fidx, 1, ftype, Js, G, n1.copy(), n1.copy(), 0.0, 0, ma, mb, 1, s_vec, w, 0.0, 50, 1e-12,
        np.zeros(1), np.zeros(1), np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)),
        np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), n11, n11, n11, n1, n11, n11, n1,
    )  # fmt: skip
    assert st == 0 and it >= 1
    assert theta[0] == pytest.approx(2.0, rel=1e-12)
