"""polgen.kernels._precompile: a helper process compiles the next kernel of a call into the shared
numba cache while this process compiles the first; a cache miss of the next kernel waits for it and
loads instead of compiling.  Two small kernels in a module written to a temporary directory stand
for commonfactor_gwas's (the helper imports it by name, as it imports polgen's)."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import time

import numpy as np
import pytest
from kernel_calls import calls_of, snp_range_args

from polgen.gsem.gwas import commonfactor_gwas
from polgen.kernels import _precompile

MODULE = '''
import numpy as np
from polgen.kernels._jit import jit_strict

SIZE = np.zeros(1, np.int64)

@jit_strict
def first(inp, out):
    x = inp.x
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i] * x[i]
    out.total[0] = s

@jit_strict
def middle(x, out):
    out.total[0] += x[0] * 2.0

@jit_strict
def second(x, total):
    y = np.empty_like(x)
    for i in range(x.shape[0]):
        y[i] = np.sqrt(abs(x[i] * total)) + np.log1p(abs(x[i]))
    return y

@jit_strict
def third(x, smooth):
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i]
    if smooth is not None:  # left out of the None specialisation
        s += np.sqrt(abs(s)) + np.log1p(abs(s))
    return s

@jit_strict
def leaf(x):
    s = 0.0
    for i in range(x.shape[0]):
        s += np.sqrt(abs(x[i])) + np.log1p(abs(x[i]))
    return s

@jit_strict
def leaf2(x):
    return np.sum(np.exp(-x * x))

@jit_strict
def outer(x, smooth):
    s = leaf(x) + leaf2(x)
    if smooth is not None:  # left out of the None specialisation
        s += np.sqrt(abs(s))
    return s

def outer_callees(args):
    """what _precompile.CALLEES names for outer: its callees, the signatures it calls, and which
    one this process compiles first"""
    return [(__name__ + ".leaf", (args[0],), False), (__name__ + ".leaf2", (args[0],), True)]

def work(arg):
    """the helper's run: the first kernel's output feeds the second (its types are what counts)"""
    from collections import namedtuple
    Inp = namedtuple("Inp", ["x"])
    Out = namedtuple("Out", ["total"])
    x = np.linspace(0.0, 1.0, int(arg))
    out = Out(np.empty(1))
    first(Inp(x), out)
    SIZE[0] = out.total[0] == 0.0  # the stub zeroed it
    if not x[-1] == 1.0:
        raise SystemExit("the stub changed its input")  # (the next kernels' types may depend on it)
    middle("not an array", out)  # would not compile: the plan's skip leaves it out of the helper
    second(x, out.total[0])
'''


@pytest.fixture
def kernels(tmp_path, monkeypatch):
    """The two kernels, importable here and in the helper."""
    name = f"polgen_precompile_fake_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv(_precompile.ENV, raising=False)
    monkeypatch.delenv(_precompile.HELPER_ENV, raising=False)
    importlib.invalidate_caches()
    # a new source file: nothing of it is cached (the helper inherits NUMBA_CACHE_DIR, if set)
    mod = importlib.import_module(name)
    plan = _precompile.HelperPlan(f"{name}:work", "5", f"{name}.first", (f"{name}.second",), (f"{name}.middle",))
    monkeypatch.setitem(_precompile.PLANS, f"{name}.first", plan)
    monkeypatch.setitem(_precompile.VARIANTS, f"{name}.third", -1)
    monkeypatch.setattr(_precompile, "_idle_core", lambda: True)  # the shared test machine is busy
    yield mod, plan
    for key in [k for k in _precompile._helpers if name in k]:
        _precompile._helpers.pop(key).close()
    sys.modules.pop(name, None)


def _compiled_here(fn):
    """Names of the kernels this process compiles (not loads) while ``fn`` runs."""
    from numba.core import event as ev

    names: list[str] = []

    class L(ev.Listener):
        def on_start(self, e):
            names.append(e.data["dispatcher"].py_func.__name__)

        def on_end(self, e):
            pass

    with ev.install_listener("numba:compile", L()):
        fn()
    return names


@pytest.mark.skipif(not _precompile.enabled(), reason="needs two CPUs (helpers off)")
def test_helper_compiles_the_second_kernel_and_this_process_loads_it(kernels, tmp_path, monkeypatch):
    mod, plan = kernels
    # a working directory holding another `polgen` (a checkout): the helper imports this one
    other = tmp_path / "cwd" / "polgen"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("raise ImportError('the polgen of the working directory')\n")
    monkeypatch.chdir(other.parent)
    from collections import namedtuple

    x = np.linspace(0.0, 1.0, 7)
    out = namedtuple("Out", ["total"])(np.empty(1))
    # (the helper's stub of first leaves its input alone and its middle is a no-op too, else the
    # helper's work ends before second)
    compiled = _compiled_here(lambda: mod.first(namedtuple("Inp", ["x"])(x), out))  # starts the helper
    assert compiled[:1] == ["first"]
    helper = _precompile._helpers[plan.stub]
    compiled = _compiled_here(lambda: mod.second(x, out.total[0]))
    assert "second" not in compiled, "the second kernel compiled here instead of loading the helper's"
    assert helper.proc.wait(timeout=120) == 0
    assert len(helper.saved[f"{mod.__name__}.second"]) == 1
    ref = np.sqrt(np.abs(x * np.sum(x * x))) + np.log1p(np.abs(x))
    np.testing.assert_allclose(mod.second(x, out.total[0]), ref, rtol=1e-14)
    # only one helper per plan and process
    assert _precompile.start(plan) is helper
    # a signature the helper did not compile (float32) compiles here, without waiting
    t = time.perf_counter()
    assert _compiled_here(lambda: mod.second(x.astype(np.float32), 2.0))[:1] == ["second"]
    assert time.perf_counter() - t < 60.0


@pytest.mark.skipif(not _precompile.enabled(), reason="needs two CPUs (helpers off)")
def test_the_rarer_specialisation_compiles_in_a_helper(kernels):
    """third(x, None) compiling starts a helper on third(x, True): the call that needs it next
    (the general GWAS kernel's nearPD refit) loads it."""
    mod, _ = kernels
    x = np.linspace(0.0, 2.0, 9)
    assert _compiled_here(lambda: mod.third(x, None))[:1] == ["third"]
    assert _compiled_here(lambda: mod.third(x, True)) == [], "compiled here instead of loading the helper's"
    s = x.sum()
    assert mod.third(x, True) == pytest.approx(s + np.sqrt(s) + np.log1p(s), rel=1e-14)
    assert mod.third(x, None) == pytest.approx(s, rel=1e-14)


@pytest.mark.skipif(not _precompile.enabled(), reason="needs two CPUs (helpers off)")
def test_a_helper_compiles_the_callee_meanwhile_then_the_rarer_specialisation(kernels, monkeypatch):
    """outer(x, None) compiling starts a helper on its callee leaf(x) (CALLEES), which this process
    loads when its type inference reaches the call, then on outer(x, True) (VARIANTS); leaf2(x)
    compiles here first."""
    mod, _ = kernels
    outer = f"{mod.__name__}.outer"
    monkeypatch.setitem(_precompile.CALLEES, outer, f"{mod.__name__}:outer_callees")
    monkeypatch.setitem(_precompile.VARIANTS, outer, -1)
    x = np.linspace(-1.0, 2.0, 11)
    compiled = _compiled_here(lambda: mod.outer(x, None))
    assert {"outer", "leaf2"} <= set(compiled) and "leaf" not in compiled, compiled
    assert _compiled_here(lambda: mod.outer(x, True)) == [], "compiled here instead of loading the helper's"
    s = np.sum(np.sqrt(np.abs(x)) + np.log1p(np.abs(x))) + np.sum(np.exp(-x * x))
    assert mod.outer(x, None) == pytest.approx(s, rel=1e-14)
    assert mod.outer(x, True) == pytest.approx(s + np.sqrt(s), rel=1e-14)
    # the callee already cached: no helper for it (only the rarer specialisation's, on a free core)
    from numba import typeof

    assert _precompile._callee_jobs(outer, (typeof(x), typeof(None))) == ([], [])


def test_a_forked_child_does_not_wait_for_its_parents_helper(kernels):
    """After a fork the helper (and the thread reading it) belong to the parent: a miss here
    compiles at once (a helper object that would never answer stands for it)."""
    import threading

    mod, _ = kernels
    parents = object.__new__(_precompile._Helper)
    parents.owner = os.getpid() + 1  # as seen from a forked child
    parents._cond = threading.Condition()
    name = f"{mod.__name__}.second"
    parents.announced, parents.saved, parents.exited = {name: []}, {name: []}, False
    _precompile._wait_on_miss(name, parents)
    t = time.perf_counter()
    assert _compiled_here(lambda: mod.second(np.linspace(0.0, 1.0, 3), 1.0))[:1] == ["second"]
    assert time.perf_counter() - t < 60.0  # it would wait WAIT = 600 s for a helper of its own


def test_no_speculative_helper_on_a_busy_machine(kernels, monkeypatch):
    from numba import typeof

    mod, _ = kernels
    monkeypatch.setattr(_precompile, "_idle_core", lambda: False)
    sig = (typeof(np.ones(3)), typeof(None))
    assert _precompile.start_variant(f"{mod.__name__}.third", sig) is None


def test_off_switch_and_helper_env(monkeypatch):
    monkeypatch.setenv(_precompile.ENV, "0")
    assert not _precompile.enabled()
    monkeypatch.delenv(_precompile.ENV)
    monkeypatch.setenv(_precompile.HELPER_ENV, "1")
    assert not _precompile.enabled()  # a helper never starts another


def test_a_failed_helper_releases_the_waiter():
    """A helper that ends without the signature: the waiter returns False at once."""
    h = _precompile._Helper(("x.y",), ["polgen_no_such_module:work", "1", "polgen.kernels.linalg._chol", "x.y"])
    try:
        assert h.wait("x.y", ("sig",), timeout=60) is False
        assert h.exited and h.proc.returncode != 0
    finally:
        h.close()


def test_signatures_round_trip():
    from numba import typeof

    from polgen.kernels.gwas import GwasOut

    out = GwasOut(*(np.empty((2, 2)) for _ in range(10)))
    sig = (typeof(1), typeof(out), typeof(None))
    assert _precompile.decode(_precompile.encode(sig)) == sig
    assert _precompile.decode("not base64 pickle") is None


def test_plans_name_existing_kernels():
    for trigger, plan in [*_precompile.PLANS.items(), *_precompile.PLANS_CFU.items()]:
        assert plan.stub == trigger
        assert all(_precompile._exists(name) for name in (plan.stub, *plan.skip, *plan.targets))
        mod, _, fn = plan.run.partition(":")
        assert callable(getattr(importlib.import_module(mod), fn))


def _objective_calls(sig):
    """The signatures of _snp_range's calls of ram_fit._objective (type inference of a copy)."""
    from polgen.kernels import gwas_kernel, ram_fit

    return calls_of(sig, gwas_kernel._snp_range.py_func, {"objective": ram_fit._objective})["objective"]


def test_the_fast_path_ml_never_types_the_ram_objective(monkeypatch):
    """ML on the fast path takes its ``fmin`` from its own fit (``fval``), so its specialisation of
    _snp_range never types ram_fit._objective (about 5 CPU s of a cold first call); the RAM fit's ML
    (fix_measurement=False) types it once, the DWLS fast path never."""
    assert _objective_calls(snp_range_args(monkeypatch, estimation="ML")) == set()
    assert _objective_calls(snp_range_args(monkeypatch)) == set()
    full = _objective_calls(snp_range_args(monkeypatch, estimation="ML", fix_measurement=False))
    assert len(full) == 1


@pytest.mark.parametrize("v_pd", [True, False])
def test_the_fm_false_helper_types_the_general_kernel_as_the_call_does(monkeypatch, v_pd):
    """user_gwas(fix_measurement=False)'s helper runs its warm-up step with the reduced fit and the
    psi > 0 search stubbed (PLANS_CFU): it must reach the general kernel with the argument types of
    the call itself, with V positive definite (the block shortcut) or not (V_full per SNP).  (The
    stub once zeroed its inputs too, V_LD among them: the helper compiled the specialisation
    without the block shortcut, and the call compiled its own.)"""
    from numba import typeof

    import polgen.warmup as warmup
    from polgen.gsem.gwas import user_gwas
    from polgen.kernels import commonfactor, gwas
    from polgen.kernels._precompile_helper import _stub, run_step

    cov = warmup._covstruc(3)
    if not v_pd:
        w, U = np.linalg.eigh(np.asarray(cov["V"]))
        w[0] = -0.5 * w[1]
        cov["V"] = (U @ np.diag(w) @ U.T).tolist()
    real_fit, values, seen = commonfactor._cf_range, [], []

    def spy_fit(*args):
        values.append(args)
        return real_fit(*args)

    def spy(*args):
        seen.append(tuple(typeof(a) for a in args))
        raise RuntimeError("typed")

    monkeypatch.setattr(commonfactor, "_cf_range", spy_fit)
    monkeypatch.setattr(gwas, "_snp_range", spy)
    with pytest.raises(Exception):  # noqa: B017 (the engine may wrap the spy's error)
        user_gwas(warmup._sumstats(8), cov, warmup.GWAS_MODEL, progress=False, fix_measurement=False)
    want = seen.pop()
    assert want[-2:] == ((typeof(None),) if v_pd else (typeof(True),)) + (typeof(None),)
    plan = _precompile.PLANS_CFU["polgen.kernels.commonfactor._cf_range"]
    arg = _precompile.dispatcher(plan.arg_of.replace(":", "."))(plan.arg, values[0])
    monkeypatch.setattr(commonfactor, "_cf_range", real_fit)
    for name in (plan.stub, *plan.skip):
        disp = _precompile.dispatcher(name)
        monkeypatch.setattr(sys.modules[disp.py_func.__module__], name.rpartition(".")[2], _stub(disp))
    monkeypatch.setattr(warmup, "_covstruc", warmup._covstruc)  # run_step may replace it
    # (the stubs' zero estimates map to NaN starts: only the types count)
    with pytest.raises(Exception), np.errstate(all="ignore"):  # noqa: B017 (the engine may wrap the spy's error)
        run_step(arg)
    assert seen[:1] == [want]


def test_the_lm_signature_is_the_one_the_commonfactor_kernel_calls(monkeypatch):
    """PLANS's commonfactor_gwas helper compiles _cf_lm first, for the signature lm_callee works
    out from _cf_range's argument types: the one _cf_range's type inference asks for."""
    from numba import typeof

    from polgen.kernels import commonfactor, commonfactor_lm
    from polgen.warmup import _covstruc, _sumstats

    real, seen = commonfactor._cf_range, []

    def spy(*args):
        seen.append(tuple(typeof(a) for a in args))
        raise RuntimeError("typed")

    monkeypatch.setattr(commonfactor, "_cf_range", spy)
    with pytest.raises(Exception):  # noqa: B017 (the engine may wrap the spy's error)
        commonfactor_gwas(_sumstats(8), _covstruc(3), progress=False)
    plan = _precompile.PLANS["polgen.kernels.commonfactor._cf_range"]
    assert plan.callees == "polgen.kernels.commonfactor_lm:lm_callee"
    [(name, sig, here)] = commonfactor_lm.lm_callee(seen[0])
    assert name == "polgen.kernels.commonfactor_lm._cf_lm" and not here
    called = calls_of(seen[0], real.py_func, {"lm": commonfactor_lm._cf_lm})["lm"]
    assert called == {sig}
