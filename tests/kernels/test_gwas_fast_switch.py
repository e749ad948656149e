"""The fast path's fit is chosen while compiling (kernels/gwas_kernel.py, issue 18): the DWLS
specialisation of the batch kernel types the DWLS fit only, the ML one the ML fit only (each call
behind its own None / True switch, ``dwls`` / ``ml``: numba prunes a branch ``x is not None`` only
when ``x`` is None; the ML kernel used to compile the DWLS Levenberg-Marquardt fit too, and the
DWLS SEs' ``_normal_eq``), and :func:`polgen.kernels.gwas_fast.fit_callee` names the signatures
the kernel calls (the compile helper of :mod:`polgen.kernels._precompile` compiles it while the
kernel's first call compiles the rest).  numba's own pipeline up to type inference runs on a copy
of the kernel (its callees compile or load from the cache; nothing is lowered); the numbers of both
fits are covered by the fast-path and ML tests (tests/kernels/test_gwas_fast_ml.py, tests/gsem/test_gsem_gwas.py)."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_calls import calls_of, snp_range_args
from numba import types

from polgen.kernels import gwas_fast, gwas_fast_ml, gwas_kernel, ram_steps

#: the kernel's callees recorded: both fits and the DWLS information matrix of the SEs
FITS = {
    "polgen.kernels.gwas_fast._fit_fast_dwls": gwas_fast._fit_fast_dwls,
    "polgen.kernels.gwas_fast_ml._fit_fast_ml": gwas_fast_ml._fit_fast_ml,
    "polgen.kernels.ram_steps._normal_eq": ram_steps._normal_eq,
}


def _kernel_args(monkeypatch, **kw) -> tuple:
    """The argument types of the batch kernel's first call in a small user_gwas call."""
    return snp_range_args(monkeypatch, run=False, **kw)


def _fit_calls(sig, func=None, targets=None) -> dict[str, set]:
    """The signatures of the kernel's (``func``'s) calls of each of ``targets`` (FITS), from type
    inference of a copy."""
    func = gwas_kernel._snp_range.py_func if func is None else func
    return calls_of(sig, func, FITS if targets is None else targets)


@pytest.mark.parametrize("estimation", ["DWLS", "ML"])
def test_a_specialisation_types_only_its_fit_and_fit_callee_names_it(monkeypatch, estimation):
    args = _kernel_args(monkeypatch, estimation=estimation)
    mine, other = (
        ("polgen.kernels.gwas_fast_ml._fit_fast_ml", "polgen.kernels.gwas_fast._fit_fast_dwls")
        if estimation == "ML"
        else ("polgen.kernels.gwas_fast._fit_fast_dwls", "polgen.kernels.gwas_fast_ml._fit_fast_ml")
    )
    calls = _fit_calls(args)
    assert len(calls[mine]) == 1 and calls[other] == set(), calls
    # the DWLS SEs' J'WJ only in the DWLS specialisation (ML's is _normal_eq_ml)
    assert len(calls["polgen.kernels.ram_steps._normal_eq"]) == (estimation == "DWLS"), calls
    # the helper's signature is the one the kernel calls (else the helper's work goes unused), and
    # those compiled here first are the ones the fit calls
    jobs = gwas_fast.fit_callee(args)
    assert [(name, sig) for name, sig, here in jobs if not here] == [(mine, next(iter(calls[mine])))]
    here = {name: sig for name, sig, h in jobs if h}
    assert len(here) == 2
    targets = {name: _dispatcher(name) for name in here}
    inner = _fit_calls(next(iter(calls[mine])), FITS[mine].py_func, targets)
    for name, sig in here.items():
        assert inner[name] == {sig}, (name, inner[name], sig)


def _dispatcher(qualname: str):
    import importlib

    mod, _, fn = qualname.rpartition(".")
    return getattr(importlib.import_module(mod), fn)


def test_fit_callee_off_the_fast_path(monkeypatch):
    args = _kernel_args(monkeypatch)
    assert gwas_fast.fit_callee(args[:7] + (types.none,) + args[8:]) == []  # the RAM fit: none
    assert gwas_fast.fit_callee(args[:-1]) == []  # not the kernel's argument list


def test_the_dwls_fit_from_python():
    """DWLS on a one-moment model whose only parameter is the SNP variance fits it exactly."""
    theta = np.array([0.5])
    fidx = np.array([0], np.int64)
    ftype = np.array([2], np.int64)  # the SNP variance
    Js, G = np.zeros((1, 1)), np.zeros((1, 1))
    ma = mb = np.zeros(1, np.int64)
    s_vec, w = np.array([2.0]), np.array([1.0])
    n1, n11 = np.zeros(1), np.zeros((1, 1))
    st, it = gwas_fast._fit_fast_dwls(
        theta, fidx, 1, ftype, Js, G, n1.copy(), n1.copy(), 0.0, 0, ma, mb, 1, s_vec, w, 0.0, 50, 1e-12,
        np.zeros(1), np.zeros(1), np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)),
        np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), n11, n11, n11, n1, n11, n11, n1,
    )  # fmt: skip
    assert st == 0 and it >= 1
    assert theta[0] == pytest.approx(2.0, rel=1e-12)
