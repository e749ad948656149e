"""The side of :mod:`polgen.kernels._precompile`'s helper process: run a warm-up step with the
kernel the caller compiles stubbed out (:func:`serve`), or compile kernels for given signatures
(:func:`compile_signature`), and say on stdout what is compiling and what is in the cache."""

from __future__ import annotations

import base64
import contextlib
import importlib
import os
import pickle
import sys
from typing import Any

__all__ = ["Done", "cfu_arg", "compile_signature", "decode", "dispatcher", "encode", "main", "serve"]

#: the end of a warm-up step's name (:func:`run_step`): run it with V not positive definite
NOT_PD = " [V not positive definite]"


def dispatcher(qualname: str) -> Any:
    """The dispatcher ``module.name`` (imported by name: the kernels a plan names)."""
    mod, _, name = qualname.rpartition(".")
    return getattr(importlib.import_module(mod), name)


def encode(sig: tuple) -> str:
    return base64.b64encode(pickle.dumps(tuple(sig))).decode("ascii")


def decode(text: str) -> tuple | None:
    try:
        return tuple(pickle.loads(base64.b64decode(text)))
    except Exception:  # a signature that does not unpickle here is one this process cannot use
        return None


def cfu_arg(arg: str, values: tuple) -> str:
    """``_precompile.PLANS_CFU``'s step for a call of ``_cf_range`` with these argument values: the
    warm-up step with :data:`NOT_PD` when the call's ``snp`` batch does not know V_full positive
    definite (its general kernel then builds V_full per SNP: another specialisation)."""
    snp = values[2] if len(values) > 2 else None
    return arg + NOT_PD if snp is not None and not bool(getattr(snp, "v_pd_known", True)) else arg


def run_step(arg: str) -> None:
    """The helper's work for a plan with ``arg_of``: ``polgen.warmup.run_step``, for a step name
    ending with :data:`NOT_PD` on the warm-up covstruc with its V made not positive definite."""
    import numpy as np

    warmup: Any = importlib.import_module("polgen.warmup")  # (the kernels layer imports no method package)
    if arg.endswith(NOT_PD):
        arg, covstruc = arg.removesuffix(NOT_PD), warmup._covstruc

        def not_pd(k: int = 3) -> dict:
            cov = covstruc(k)
            w, U = np.linalg.eigh(np.asarray(cov["V"]))
            w[0] = -0.2 * w[1]
            return dict(cov, V=(U @ np.diag(w) @ U.T).tolist())

        warmup._covstruc = not_pd  # this process only runs this step
    warmup.run_step(arg)


class Done(BaseException):
    """Raised in the helper once every target is in the cache: nothing more to run."""


def _stub(fn: Any) -> Any:
    """The no-op that replaces kernel ``fn`` in the helper: it only zeroes the arrays of its output
    argument ``out`` (a named tuple of arrays: ``ST_OK``, zero estimates), so that the step goes on
    deterministically.  Its inputs stay as they are: the next kernels' specialisations depend on
    them (the GWAS kernel's V_full block shortcut needs a positive-definite V_LD)."""
    import inspect

    import numpy as np

    params = list(inspect.signature(fn.py_func).parameters)
    pos = params.index("out") if "out" in params else None

    def noop(*args: Any, **kwargs: Any) -> None:
        out = kwargs.get("out", args[pos] if pos is not None and pos < len(args) else None)
        if isinstance(out, tuple):
            for x in out:
                if isinstance(x, np.ndarray) and x.flags.writeable:
                    x.fill(0)

    return noop


def serve(stub: str, targets: list[str], run: Any) -> int:
    """The helper's side: ``stub`` (a kernel, or several joined by commas) becomes a no-op
    everywhere polgen refers to it (:func:`_stub`), each compilation of a kernel in ``targets`` is
    announced on stdout (``compiling <kernel> <signature>``) and, once its signature is saved to
    (or found in) the cache, reported (``saved ...``); ``run`` stops when every target has been.
    Returns 0 then, 1 when ``run`` ended first."""
    for name in stub.split(","):
        kernel = dispatcher(name)  # imports its module: that reference is replaced too
        noop = _stub(kernel)
        home = kernel.py_func.__module__
        for mod in list(sys.modules.values()):
            if getattr(mod, "__name__", "").startswith("polgen.") or getattr(mod, "__name__", "") == home:
                for attr, value in list(vars(mod).items()):
                    if value is kernel:
                        setattr(mod, attr, noop)
    left = set(targets)

    def hook(target: str) -> None:
        cache = dispatcher(target)._cache
        save, load = cache.save_overload, cache.load_overload

        def say(what: str, sig: Any) -> None:
            from numba.core import sigutils

            args = tuple(sigutils.normalize_signature(sig)[0])
            print(f"{what} {target} {encode(args)}", flush=True)

        def ready(sig: Any) -> None:
            say("saved", sig)
            left.discard(target)
            if not left:
                raise Done

        def save_overload(sig, data):
            save(sig, data)
            ready(sig)

        def load_overload(sig, target_context):
            cres = load(sig, target_context)
            if cres is not None:
                ready(sig)
            else:
                say("compiling", sig)
            return cres

        cache.save_overload, cache.load_overload = save_overload, load_overload

    for target in targets:
        hook(target)
    try:
        run()
    except Done:
        return 0
    return 1


def compile_signature(name: str, text: str, nice: bool = True) -> int:
    """The helper of ``_precompile.start_variant`` / ``start_callees``: compile kernel ``name`` for the
    encoded signature (saved to the cache by numba), then report it (``saved <kernel> <signature>``)."""
    sig = decode(text)
    if sig is None:
        return 1
    if nice:
        with contextlib.suppress(OSError, AttributeError):
            os.nice(5)  # speculative work: on a busy machine it yields to the caller's own compilation
    dispatcher(name).compile(sig)
    print(f"saved {name} {text}", flush=True)
    return 0


def _compile_jobs(argv: list[str]) -> list[str] | None:
    """``--compile KERNEL SIGNATURE [now]``, repeated: compile each in turn; returns the rest of
    ``argv`` (None after a failure, which ends the helper: the caller's waits end with it)."""
    while argv[:1] == ["--compile"]:
        now = argv[3:4] == ["now"]
        if compile_signature(argv[1], argv[2], nice=not now) != 0:
            return None
        argv = argv[4 if now else 3 :]
    return argv


def main(argv: list[str]) -> int:
    """The helper's command line (``--compile KERNEL SIGNATURE [now]``, repeated, then optionally
    ``MODULE:FUNCTION ARG STUB TARGET...``, see ``_precompile._HELPER``)."""
    rest = _compile_jobs(argv)
    if rest is None:
        return 1
    if not rest:
        return 0
    run, arg, stub, *targets = rest
    mod, _, fn = run.partition(":")
    work = getattr(importlib.import_module(mod), fn)
    return serve(stub, targets, lambda: work(arg))
