"""Test helpers for what a numba kernel calls: the argument types of the general GWAS kernel in a
small user_gwas call, and the signatures of a kernel's calls of given callees from numba's own
pipeline up to type inference on a copy of the kernel (not cached, never lowered; its callees
compile or load from the cache).  Used by tests/kernels/test_gwas_fast_switch.py and
tests/kernels/test_precompile.py."""

from __future__ import annotations

import pytest


class _Got(Exception):
    """Raised by the spy once it has the kernel's argument types (the kernel never runs)."""


def snp_range_args(monkeypatch, run: bool = True, **kw) -> tuple:
    """The argument types of gwas_kernel._snp_range's first call in a small user_gwas call; with
    ``run`` False the call stops there (the kernel is never compiled or run)."""
    from numba import typeof

    from polgen.gsem.gwas import user_gwas
    from polgen.kernels import gwas
    from polgen.warmup import GWAS_MODEL, _covstruc, _sumstats

    real, seen = gwas._snp_range, []

    def spy(*args):
        seen.append(tuple(typeof(a) for a in args))
        if not run:
            raise _Got
        return real(*args)

    monkeypatch.setattr(gwas, "_snp_range", spy)
    if run:
        user_gwas(_sumstats(8), _covstruc(3), GWAS_MODEL, progress=False, **kw)
    else:
        with pytest.raises(Exception):  # noqa: B017 (the engine wraps _Got in its own error)
            user_gwas(_sumstats(8), _covstruc(3), GWAS_MODEL, progress=False, **kw)
    assert seen
    return seen[0]


class _Typed(Exception):
    """Raised once :func:`calls_of` has what it needs: nothing is lowered."""


def calls_of(sig, func, targets: dict) -> dict[str, set]:
    """The signatures of ``func``'s calls (typed for ``sig``) of each of ``targets`` (name ->
    dispatcher), from type inference of a copy of ``func``."""
    import numba
    from numba.core import compiler, ir
    from numba.core.compiler_machinery import FunctionPass, register_pass
    from numba.core.typed_passes import NopythonTypeInference

    found: dict[str, set] = {name: set() for name in targets}
    by_func = {disp.py_func: name for name, disp in targets.items()}

    @register_pass(mutates_CFG=False, analysis_only=True)
    class Record(FunctionPass):
        _name = "polgen_record_calls"

        def __init__(self) -> None:
            FunctionPass.__init__(self)

        def run_pass(self, state):
            for inst, s in state.calltypes.items():
                if isinstance(inst, ir.Expr) and inst.op == "call":
                    disp = getattr(state.typemap[inst.func.name], "dispatcher", None)
                    name = by_func.get(getattr(disp, "py_func", None))
                    if name is not None:
                        found[name].add(tuple(s.args))
            raise _Typed

    class TypeOnly(compiler.CompilerBase):
        def define_pipelines(self):
            pm = compiler.DefaultPassBuilder.define_untyped_pipeline(self.state)
            pm.add_pass(NopythonTypeInference, "nopython type inference")
            pm.add_pass(Record, "record the calls")
            pm.finalize()
            return [pm]

    copy = numba.njit(pipeline_class=TypeOnly, error_model="numpy")(func)
    with pytest.raises(_Typed):
        copy.compile(sig)
    return found
