"""Compile the second kernel of a call in a helper process while this process compiles the first.

numba compiles under one global lock per process, so a call that needs two big kernels compiles
them one after the other on one core.  Separate processes compile at the same time into the shared
on-disk cache (every polgen kernel is ``cache=True``), and a process that later needs a signature
another process has saved loads it instead of compiling it.

:data:`PLANS` names, per kernel that starts the work, the kernels a helper compiles meanwhile:
the helper (``polgen.warmup:run_step STEP FIRST SECOND...``) runs the warm-up step ``STEP`` on its
tiny inputs with ``FIRST`` (the kernel compiling here; the plan's ``skip`` too) replaced by a no-op
that zeroes its ``out`` (the next kernels' specialisations depend on its inputs, their *types* on
its outputs), announces each ``SECOND``'s signature as it starts compiling it, and exits once they
are cached.  A plan's ``callees`` names a callee of ``FIRST`` it compiles before the step, from its
signature (commonfactor_gwas: the LM, half of ``_cf_range``'s compilation; this process reaches
its call after the other callees and loads it).  Here, a cache miss of an announced signature
waits for the helper, then loads; any other signature (or a failed helper) compiles as before.

:data:`VARIANTS` names kernels whose rarer specialisation a call may need right after the common
one (the general GWAS kernel's ``smooth=True``, the nearPD refit of the few SNPs whose S_full is
not positive definite): when the common one starts compiling here, a helper compiles the other
from its signature alone (when the load average leaves a core free and no other helper runs;
commonfactor_gwas's ``_cf_range`` and ``_se_range`` have the same switch),
so a batch with such SNPs compiles the two side by side instead of one after the other (about
half the first call on such data).

:data:`CALLEES` names kernels whose biggest callee a helper compiles from its signature (known
from the kernel's argument types) while this process compiles the rest of the kernel: the fast
path's fit (``_fit_fast_dwls`` / ``_fit_fast_ml``, ~6-7 of the ~17 CPU seconds of a cold fast-path
call).  This process reaches the call after its first few callees, waits for the helper there and
loads the fit (linked into the kernel as a fit compiled here would be).  The same helper then goes
on with the kernel's rarer specialisation (:data:`VARIANTS`), when a core is free.

A helper starts only for a top-level compilation (not a cached load) here, once per plan or
signature and process, when the process may use at least two CPUs and ``POLGEN_PRECOMPILE`` is
not ``0``; results are the same bits (the helper compiles the same code; only one process
compiles each signature).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any, NamedTuple

from polgen.kernels._precompile_helper import decode, dispatcher, encode

__all__ = [
    "CALLEES",
    "PLANS",
    "PLANS_CFU",
    "VARIANTS",
    "HelperPlan",
    "install",
    "enabled",
    "plans",
    "start",
    "start_callees",
    "start_variant",
]

log = logging.getLogger("polgen.kernels")

ENV = "POLGEN_PRECOMPILE"
HELPER_ENV = "POLGEN_PRECOMPILE_HELPER"  # set in the helper: it never starts one itself
WAIT = 600.0  # seconds a cache miss waits at most for the helper


class HelperPlan(NamedTuple):
    run: str  # "module:function" the helper calls with ``arg``: runs the work on tiny inputs
    arg: str
    stub: str  # the kernel this process compiles (a no-op in the helper)
    targets: tuple[str, ...]  # the kernels the helper compiles, in the order the work calls them
    skip: tuple[str, ...] = ()  # kernels the work calls before the targets, no-ops (as ``stub``)
    callees: str = ""  # "module:function" (as CALLEES's): callees of ``stub`` compiled first, by signature
    arg_of: str = ""  # "module:function": ``arg`` for the call, from (arg, the call's argument values)


_KERNELS = "polgen.kernels."
PLANS: dict[str, HelperPlan] = {
    # commonfactor_gwas: the reduced fit here; its SEs / Q in closed form and the general kernel
    # (the Q model, SNPs that need nearPD) in the helper
    _KERNELS + "commonfactor._cf_range": HelperPlan(
        "polgen.warmup:run_step",
        "gsem.commonfactor_gwas",
        _KERNELS + "commonfactor._cf_range",
        (_KERNELS + "commonfactor_se._se_range", _KERNELS + "gwas_kernel._snp_range"),
        # first the LM (half of _cf_range's compilation), reached here after the moments and scores
        callees=_KERNELS + "commonfactor_lm:lm_callee",
    ),
}

#: user_gwas(fix_measurement=False) on the common-factor model (polgen.gsem.gwas_cfuser) also starts
#: with the reduced fit; its helper compiles the general kernel of that call (the SEs at the mapped
#: estimates), not commonfactor_gwas's closed-form SE kernel (used with :func:`plans`)
PLANS_CFU: dict[str, HelperPlan] = {
    _KERNELS + "commonfactor._cf_range": HelperPlan(
        _KERNELS + "_precompile_helper:run_step",
        "gsem.user_gwas (fix_measurement=False)",
        _KERNELS + "commonfactor._cf_range",
        (_KERNELS + "gwas_kernel._snp_range",),
        # the psi > 0 search (the stub's psi = 0 needs it): compiled here after the fit, when needed
        (_KERNELS + "commonfactor_feasible._cfu_range",),
        # the step on a covstruc whose V is not positive definite when the call's is not (the
        # general kernel's specialisation without the V_full block shortcut)
        arg_of=_KERNELS + "_precompile_helper:cfu_arg",
    ),
}
#: plans that replace :data:`PLANS`'s for their kernels while a :func:`plans` block runs
_OVERRIDE: dict[str, HelperPlan] = {}

#: kernels whose argument at this position is None (tested ``is None`` inside: that code is left
#: out) in the common specialisation and True in a rarer one the same call may need next: the
#: GWAS kernels' ``smooth`` (nearPD only for the SNPs whose S_full / V_full is not positive
#: definite, refit after the batch).  When the None specialisation starts compiling, a
#: helper compiles the True one from the signature alone; a batch without such SNPs leaves it
#: unused (cached for later calls).
VARIANTS: dict[str, int] = {
    _KERNELS + "gwas_kernel._snp_range": -1,
    # commonfactor_gwas's fit and closed-form SEs: the same switch (their plan's helper usually
    # keeps the other core busy, so this one starts only when that helper has ended)
    _KERNELS + "commonfactor._cf_range": -1,
    _KERNELS + "commonfactor_se._se_range": -1,
}

#: kernels whose big callee a helper compiles meanwhile: ``"module:function"`` that returns, from
#: the kernel's argument types, the ``[(callee, signature)]`` it will call (empty: none)
CALLEES: dict[str, str] = {
    _KERNELS + "gwas_kernel._snp_range": _KERNELS + "gwas_fast:fit_callee",
}

#: the helper imports the polgen this process runs (not one the working directory may hold):
#: its kernels' cache entries are keyed by their source files
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_HELPER = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from polgen.kernels._precompile_helper import main; raise SystemExit(main(sys.argv[1:]))"
)
#: a helper starting with ``--compile`` jobs compiles kernels first: ``polgen`` is an empty package
#: there (its subpackages import as needed), so its ``__init__`` (every method package, polars,
#: scipy: ~2.4 CPU s before the first compilation) is not run
_HELPER_KERNELS = (
    "import sys, types; root = sys.argv.pop(1); sys.path.insert(0, root); "
    "pkg = types.ModuleType('polgen'); pkg.__path__ = [root + '/polgen']; sys.modules['polgen'] = pkg; "
    "from polgen.kernels._precompile_helper import main; raise SystemExit(main(sys.argv[1:]))"
)

_lock = threading.Lock()
_state: dict[str, Any] = {"installed": False}
_helpers: dict[str, _Helper] = {}


def enabled() -> bool:
    """Helpers may start: not disabled, not a helper itself, and two CPUs to run on."""
    if os.environ.get(ENV, "").strip().lower() in {"0", "false", "no", "off"}:
        return False
    if os.environ.get(HELPER_ENV):
        return False
    return _cpus() >= 2


def _exists(qualname: str) -> bool:
    try:
        return hasattr(dispatcher(qualname), "_cache")
    except (ImportError, AttributeError):
        return False


class _Helper:
    """The helper process of one plan and what it has said (signatures compiling / in the cache)."""

    def __init__(
        self, targets: tuple[str, ...], args: list[str], announced: list[tuple[str, tuple]] | None = None
    ) -> None:
        self.owner = os.getpid()  # a forked child inherits this object, not the helper or its reader
        self._cond = threading.Condition()
        self.announced: dict[str, list[tuple]] = {t: [] for t in targets}
        self.saved: dict[str, list[tuple]] = {t: [] for t in targets}
        for t, sig in announced or ():  # a helper told which signatures to compile: known from the start
            self.announced[t].append(sig)
        self.exited = False
        env = dict(os.environ, **{HELPER_ENV: "1", "NUMBA_NUM_THREADS": "1", "POLGEN_PROGRESS": "0"})
        cmd = [sys.executable, "-c", _HELPER_KERNELS if args[:1] == ["--compile"] else _HELPER, _ROOT, *args]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True, env=env
        )
        threading.Thread(target=self._read, name="polgen-precompile", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            what, _, rest = line.strip().partition(" ")
            name, _, text = rest.partition(" ")
            sig = decode(text) if what in {"compiling", "saved"} and name in self.saved else None
            if sig is None:
                continue
            with self._cond:
                (self.announced if what == "compiling" else self.saved)[name].append(sig)
                self._cond.notify_all()
        self.proc.wait()
        with self._cond:
            self.exited = True
            self._cond.notify_all()

    def announces(self, name: str, sig: tuple) -> bool:
        """The helper has said it compiles (or has saved) kernel ``name``'s ``sig``."""
        with self._cond:
            return sig in self.announced[name] or sig in self.saved[name]

    def wait(self, name: str, sig: tuple, timeout: float = WAIT) -> bool:
        """Wait until the helper has saved kernel ``name``'s ``sig`` (True), or compiles another
        signature of it, or has ended without it (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if sig in self.saved[name]:
                    return True
                announced = self.announced[name]
                if self.exited or (announced and sig not in announced):
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)

    def close(self) -> None:
        if os.getpid() == self.owner and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _idle_core() -> bool:
    """The last minute's load leaves a core free beside this process."""
    try:
        return os.getloadavg()[0] <= _cpus() - 1
    except OSError:
        return False


def _busy() -> bool:
    """A helper of this process is still running."""
    return any(h.owner == os.getpid() and h.proc.poll() is None for h in _helpers.values())


def _close_all() -> None:
    for h in list(_helpers.values()):
        h.close()


def _wait_on_miss(name: str, helper: _Helper) -> None:
    """A cache miss of kernel ``name`` waits for ``helper`` when it compiles that signature, then loads."""
    cache = dispatcher(name)._cache
    waits = getattr(cache, "_polgen_waits", None)
    if waits is not None:
        waits[:] = [h for h in waits if h.owner == os.getpid()] + [helper]
        return
    load = cache.load_overload

    def load_overload(sig, target_context):
        cres = load(sig, target_context)
        if cres is None:
            from numba.core import sigutils

            args = tuple(sigutils.normalize_signature(sig)[0])
            mine = [h for h in cache._polgen_waits if h.owner == os.getpid()]
            # a helper that announced this signature first, then any that has not announced yet
            for h in sorted(mine, key=lambda h: not h.announces(name, args)):
                t = time.perf_counter()
                if h.wait(name, args):
                    cres = load(sig, target_context)
                log.debug(
                    "%s: %s a helper's compilation after %.1f s (needed %s; helper: %s)",
                    name,
                    "loaded" if cres is not None else "no use of",
                    time.perf_counter() - t,
                    args,
                    h.announced[name],
                )
                if cres is not None:
                    break
        return cres

    cache._polgen_waits = [helper]
    cache.load_overload = load_overload


@contextlib.contextmanager
def plans(override: dict[str, HelperPlan]):
    """Start ``override``'s helper plans instead of :data:`PLANS`'s for the kernels it names while
    the block runs (process-wide, not per thread: the kernels compile in whichever thread calls
    them first; a concurrent call of another method that takes the other plan's helper only loses
    the time a helper saves, never a result)."""
    with _lock:
        saved = dict(_OVERRIDE)
        _OVERRIDE.update(override)
    try:
        yield
    finally:
        with _lock:
            _OVERRIDE.clear()
            _OVERRIDE.update(saved)


def start(plan: HelperPlan, args: tuple = (), values: tuple | None = None) -> _Helper | None:
    """Start the helper of ``plan`` (once per process; ``args``: the argument types its stub
    compiles for, which give its callees' signatures, ``values`` the call's arguments, for its
    ``arg_of``); None when helpers are off or it failed."""
    if plan.arg_of and values is not None:
        mod, _, fn = plan.arg_of.partition(":")
        plan = plan._replace(arg=getattr(importlib.import_module(mod), fn)(plan.arg, values))
    with _lock:
        if plan.stub in _helpers and _helpers[plan.stub].owner == os.getpid():
            return _helpers[plan.stub]
        if not enabled():
            return None
        plan = plan._replace(targets=tuple(t for t in plan.targets if _exists(t)))
        if not plan.targets:
            return None
        jobs = _callee_jobs(plan.stub, args, plan.callees)[0] if plan.callees else []
        argv = [a for c, sig, _ in jobs for a in ("--compile", c, encode(sig), "now")]
        names = tuple(dict.fromkeys([*plan.targets, *(c for c, _, _ in jobs)]))
        try:
            stubs = ",".join((plan.stub, *plan.skip))
            announced = [(c, sig) for c, sig, _ in jobs]
            helper = _Helper(names, [*argv, plan.run, plan.arg, stubs, *plan.targets], announced)
        except OSError:
            return None
        for name in names:
            _wait_on_miss(name, helper)
        if not _helpers:
            atexit.register(_close_all)
        _helpers[plan.stub] = helper
        return helper


def _variant_job(name: str, args: tuple) -> tuple[str, tuple, bool] | None:
    """The job compiling kernel ``name``'s (in :data:`VARIANTS`) rarer specialisation: ``args``
    with a boolean where it has None (None when it has not)."""
    from numba.core import types

    pos = VARIANTS[name]
    if not args or args[pos] != types.none:
        return None
    variant = list(args)
    variant[pos] = types.boolean
    return (name, tuple(variant), True)


def start_variant(name: str, args: tuple) -> _Helper | None:
    """When kernel ``name`` (in :data:`VARIANTS`) compiles ``args`` with None at its position,
    start a helper compiling the signature with a boolean there (once per signature)."""
    job = _variant_job(name, args)
    return None if job is None else _start_jobs([job])


def _cached(name: str, sig: tuple) -> bool:
    """Kernel ``name``'s ``sig`` is in this process or in the on-disk cache (nothing to compile)."""
    try:
        disp = dispatcher(name)
        if sig in disp.overloads:
            return True
        cache = disp._cache
        return cache._index_key(sig, disp.targetctx.codegen()) in cache._cache_file._load_index()
    except Exception:  # numba internals that moved: assume it is not cached (a helper only saves time)
        return False


def _callee_jobs(
    name: str, args: tuple, spec: str = ""
) -> tuple[list[tuple[str, tuple, bool]], list[tuple[str, tuple]]]:
    """The callees ``spec`` (default: :data:`CALLEES`'s entry) names for kernel ``name``'s ``args``
    that are not cached yet: (the helper's jobs, those to compile here first)."""
    try:
        mod, _, fn = (spec or CALLEES[name]).partition(":")
        callees = [(c, tuple(sig), here) for c, sig, here in getattr(importlib.import_module(mod), fn)(args)]
    except Exception:  # a signature this process cannot work out: no helper, nothing else changes
        log.debug("%s: no callee signature for %s", name, args, exc_info=True)
        return [], []
    callees = [c for c in callees if not _cached(c[0], c[1])]
    return [(c, sig, False) for c, sig, here in callees if not here], [(c, sig) for c, sig, here in callees if here]


def start_callees(name: str, args: tuple) -> _Helper | None:
    """When kernel ``name`` (in :data:`CALLEES`) starts compiling ``args``, start a helper compiling
    its big callees (then, for a kernel also in :data:`VARIANTS`, its rarer specialisation when a
    core is free) and compile the callees meant for this process; without a helper,
    :func:`start_variant` (the callees then compile in the kernel's own order)."""
    jobs, here = _callee_jobs(name, args)
    variant = _variant_job(name, args) if name in VARIANTS else None
    if not jobs:
        return None if variant is None else _start_jobs([variant])
    if variant is not None and _idle_core():
        jobs.append(variant)
    helper = _start_jobs(jobs)
    if helper is not None:
        for callee, sig in here:
            try:
                dispatcher(callee).compile(sig)  # nested in the kernel's compilation, as a callee's
            except Exception:  # a wrong signature: the kernel compiles what it calls as before
                log.debug("%s: could not compile %s for %s", name, callee, sig, exc_info=True)
    return helper


def _start_jobs(jobs: list[tuple[str, tuple, bool]]) -> _Helper | None:
    """A helper compiling each ``(kernel, signature, nice)`` of ``jobs`` in turn (the ``nice`` ones
    last, at a lower priority; :func:`polgen.kernels._precompile_helper.compile_signature`); a
    cache miss of one of those signatures here waits for it."""
    jobs = sorted(jobs, key=lambda j: j[2])
    key = " ".join(f"{name} {encode(sig)}" for name, sig, _ in jobs)
    with _lock:
        if key in _helpers and _helpers[key].owner == os.getpid():
            return _helpers[key]
        if not enabled() or _busy() or (jobs[0][2] and not _idle_core()):
            # one helper at a time; a speculative one (nice) only on a core nobody uses
            return None
        args: list[str] = []
        for name, sig, nice in jobs:
            args += ["--compile", name, encode(sig)] + ([] if nice else ["now"])
        names = tuple(dict.fromkeys(name for name, _, _ in jobs))
        try:
            helper = _Helper(names, args, announced=[(name, sig) for name, sig, _ in jobs])
        except OSError:
            return None
        for name in names:
            _wait_on_miss(name, helper)
        if not _helpers:
            atexit.register(_close_all)
        _helpers[key] = helper
        return helper


def _call_values(disp: Any) -> tuple | None:
    """The argument values of the call that compiles ``disp`` (numba's ``_compile_for_args`` up the
    stack; None when it is not there, e.g. an explicit ``compile``)."""
    f: Any = sys._getframe(1)
    while f is not None:
        if f.f_code.co_name == "_compile_for_args" and f.f_locals.get("self") is disp:
            return tuple(f.f_locals.get("args") or ())
        f = f.f_back
    return None


def _make_listener():
    from numba.core import event as ev

    class _Trigger(ev.Listener):
        """Starts a plan's helper when its first kernel starts compiling at the top level."""

        def __init__(self) -> None:
            self._local = threading.local()

        def on_start(self, event) -> None:
            depth = getattr(self._local, "depth", 0)
            self._local.depth = depth + 1
            if depth:
                return
            fn = getattr((event.data or {}).get("dispatcher"), "py_func", None)
            name = f"{fn.__module__}.{fn.__qualname__}" if fn is not None else ""
            plan = _OVERRIDE.get(name) or PLANS.get(name)
            args = tuple(event.data.get("args") or ())
            if plan is not None:
                start(plan, args, _call_values(event.data.get("dispatcher")) if plan.arg_of else None)
            if name in CALLEES:
                start_callees(name, args)
            elif name in VARIANTS:
                start_variant(name, args)

        def on_end(self, event) -> None:
            self._local.depth = max(getattr(self._local, "depth", 1) - 1, 0)

    return _Trigger()


def install() -> None:
    """Register the trigger listener (idempotent)."""
    with _lock:
        if _state["installed"]:
            return
        _state["installed"] = True
    from numba.core import event as ev

    ev.register("numba:compile", _make_listener())
