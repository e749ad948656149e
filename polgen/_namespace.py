"""Register one class as both a DataFrame and a LazyFrame namespace, and build its methods as
typed aliases of the package functions.

A namespace method made by :func:`alias` has the target function's signature without the
parameter the frame fills (``__signature__``), the target's docstring and annotations, so
``help(df.gsem.user_gwas)`` and editors show the real parameters; calling it binds the arguments
against that signature and calls the target with the frame in its place.  Where a namespace
adapts the call (a namespace-only parameter, a different return value) the differences are
declared in the :func:`alias` call and recorded on the method, and
``tests/test_namespace_signatures.py`` checks them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import polars as pl

T = TypeVar("T")

#: every registered namespace: name -> class (tests walk it)
NAMESPACES: dict[str, type] = {}

_KINDS_ORDER = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.VAR_POSITIONAL,
    inspect.Parameter.KEYWORD_ONLY,
    inspect.Parameter.VAR_KEYWORD,
)

_SAME: Any = object()


def register(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: register ``cls`` under ``name`` on ``pl.DataFrame`` and ``pl.LazyFrame``.

    The class receives the frame as ``self._frame``; its methods delegate to typed functions.
    """

    def deco(cls: type[T]) -> type[T]:
        pl.api.register_dataframe_namespace(name)(cls)
        pl.api.register_lazyframe_namespace(name)(cls)
        NAMESPACES[name] = cls
        return cls

    return deco


def eager(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The frame as a DataFrame (a LazyFrame is collected)."""
    return frame.collect() if isinstance(frame, pl.LazyFrame) else frame


def _param(
    name: str,
    kind: inspect._ParameterKind,
    default: Any = inspect.Parameter.empty,
    annotation: Any = inspect.Parameter.empty,
) -> inspect.Parameter:
    return inspect.Parameter(name, kind, default=default, annotation=annotation)


def keyword(name: str, default: Any = None, annotation: Any = inspect.Parameter.empty) -> inspect.Parameter:
    """A keyword-only parameter a namespace method adds to its target's."""
    return _param(name, inspect.Parameter.KEYWORD_ONLY, default, annotation)


def positional(
    name: str, default: Any = inspect.Parameter.empty, annotation: Any = inspect.Parameter.empty
) -> inspect.Parameter:
    """A positional-or-keyword parameter a namespace method adds to (or puts in place of) its target's."""
    return _param(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default, annotation)


def _alias_signature(
    target_sig: inspect.Signature,
    frame: str,
    replace: Mapping[str, inspect.Parameter],
    extra: Sequence[inspect.Parameter],
    drop: Sequence[str],
    returns: Any,
) -> inspect.Signature:
    params: list[inspect.Parameter] = []
    for p in target_sig.parameters.values():
        if p.name == frame or p.name in drop:
            continue
        params.append(replace.get(p.name, p))
    for e in extra:  # keep the kinds ordered: an added positional goes after the last positional
        at = len(params)
        for i, p in enumerate(params):
            if _KINDS_ORDER.index(p.kind) > _KINDS_ORDER.index(e.kind):
                at = i
                break
        params.insert(at, e)
    self_param = _param("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ret = target_sig.return_annotation if returns is _SAME else returns
    return inspect.Signature([self_param, *params], return_annotation=ret)


def _call(target: Callable[..., Any], target_sig: inspect.Signature, arguments: Mapping[str, Any]) -> Any:
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in target_sig.parameters.values():
        if p.name not in arguments:
            continue
        v = arguments[p.name]
        if p.kind is inspect.Parameter.POSITIONAL_ONLY:
            args.append(v)
        elif p.kind is inspect.Parameter.VAR_POSITIONAL:
            args.extend(v)
        elif p.kind is inspect.Parameter.VAR_KEYWORD:
            kwargs.update(v)
        else:
            kwargs[p.name] = v
    return target(*args, **kwargs)


def alias(
    target: Callable[..., Any],
    frame: str,
    *,
    convert: Callable[[pl.DataFrame | pl.LazyFrame, dict[str, Any]], Any] | None = None,
    extra: Sequence[inspect.Parameter] = (),
    replace: Mapping[str, inspect.Parameter] | None = None,
    drop: Sequence[str] = (),
    result: Callable[[Any, dict[str, Any]], Any] | None = None,
    returns: Any = _SAME,
    doc: str = "",
    name: str | None = None,
) -> Callable[..., Any]:
    """A namespace method that calls ``target`` with the namespace's frame as parameter ``frame``.

    The method's signature is ``target``'s without ``frame`` (and ``drop``), with ``replace``
    swapping a target parameter for a namespace one at the same place and ``extra`` namespace-only
    parameters added; ``returns`` overrides the return annotation.  ``convert(frame, arguments)``
    turns the frame into the target's argument (default: the frame itself); it receives every
    bound argument (defaults applied) in a dict it may update (e.g. to fill a dropped target
    parameter); namespace-only arguments are never passed on to the target.
    ``result(value, arguments)`` post-processes the return value.

    The signature is the runtime one (``__signature__``), which ``help()``, ``inspect``, IPython
    and Jupyter show; ``df.gsem`` itself is registered at runtime, so static checkers see neither.
    ``doc`` is a first paragraph put before the target's docstring; ``name`` the method's name
    when it is not the target's.
    """
    target_sig = inspect.signature(target)
    if frame not in target_sig.parameters:
        raise TypeError(f"{target.__qualname__} has no parameter {frame!r}")
    replace = dict(replace or {})
    sig = _alias_signature(target_sig, frame, replace, extra, drop, returns)
    # namespace-only names: the extras and replacements that rename (a same-name replacement only
    # changes the default or annotation and is passed on to the target)
    own = {p.name for p in extra} | {new.name for old, new in replace.items() if new.name != old}
    passthrough = [p.name for p in sig.parameters.values() if p.name != "self" and p.name not in own]

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop("self")
        namespace_args = {k: arguments[k] for k in own if k in arguments}
        call_args = {k: arguments[k] for k in passthrough if k in arguments}
        fr = self._frame
        if convert is not None:
            conv_args = {**call_args, **namespace_args}
            fr = convert(fr, conv_args)
            # convert may rewrite target arguments (e.g. fill one from a namespace-only argument)
            call_args = {k: v for k, v in conv_args.items() if k not in own}
        call_args[frame] = fr
        out = _call(target, target_sig, call_args)
        if result is not None:
            out = result(out, {**call_args, **namespace_args})
        return out

    functools.update_wrapper(method, target, assigned=("__module__",), updated=())
    method.__name__ = method.__qualname__ = name or target.__name__
    lead = doc.strip() or f"Alias of :func:`{target.__module__}.{target.__qualname__}` with this frame as ``{frame}``."
    method.__doc__ = lead + ("\n\n" + inspect.cleandoc(target.__doc__) if target.__doc__ else "")
    method.__signature__ = sig  # type: ignore[attr-defined]
    method.__annotations__ = {
        p.name: p.annotation for p in sig.parameters.values() if p.annotation is not inspect.Parameter.empty
    }
    if sig.return_annotation is not inspect.Signature.empty:
        method.__annotations__["return"] = sig.return_annotation
    method.__polgen_target__ = target  # type: ignore[attr-defined]
    method.__polgen_frame__ = frame  # type: ignore[attr-defined]
    method.__polgen_extra__ = tuple(p.name for p in extra)  # type: ignore[attr-defined]
    method.__polgen_replace__ = {k: v.name for k, v in replace.items()}  # type: ignore[attr-defined]
    method.__polgen_drop__ = tuple(drop)  # type: ignore[attr-defined]
    method.__polgen_returns__ = returns is not _SAME  # type: ignore[attr-defined]
    return method


__all__ = ["NAMESPACES", "alias", "eager", "keyword", "positional", "register"]
