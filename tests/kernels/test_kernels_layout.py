"""polgen.kernels house rules: numba options set in one place (kernels/_jit.py), every kernel cached
and GIL-free, modules < 500 lines, no import cycle, kernels import nothing above them, and the
GWAS entry points still importable from polgen.kernels.gwas."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import numba
import pytest

import polgen.kernels

KDIR = Path(polgen.kernels.__file__).parent
MODULES = sorted(m.name for m in pkgutil.iter_modules([str(KDIR)]))


def _imports(path: Path) -> set[str]:
    """Every module imported anywhere in the file (module- and function-level)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_numba_options_only_in_jit_module():
    for name in MODULES:
        if name == "_jit":
            continue
        src = (KDIR / f"{name}.py").read_text()
        assert "njit(" not in src and "numba.jit(" not in src and "nb.jit(" not in src, name


@pytest.mark.parametrize("name", MODULES)
def test_every_kernel_is_cached_and_nogil(name):
    mod = importlib.import_module(f"polgen.kernels.{name}")
    found = 0
    for obj in vars(mod).values():
        if isinstance(obj, numba.core.registry.CPUDispatcher) and obj.py_func.__module__ == mod.__name__:
            found += 1
            assert obj.targetoptions.get("nogil") is True, obj
            assert type(obj._cache).__name__ != "NullCache", obj
            fm = obj.targetoptions.get("fastmath")
            flags = set(getattr(fm, "flags", fm or ()))
            assert "fast" not in flags and "nnan" not in flags, obj  # keeps the isnan checks
    if name in ("gwas_kernel", "ram", "ram_fit", "linalg", "snp_moments", "commonfactor", "gwas_fast", "ligands_tiles"):
        assert found, f"no kernels found in {name}"


def test_module_sizes():
    for name in MODULES:
        n = len((KDIR / f"{name}.py").read_text().splitlines())
        assert n < 500, (name, n)


def test_kernels_import_nothing_above_them_and_no_cycle():
    graph = {}
    for name in MODULES:
        deps = set()
        for imp in _imports(KDIR / f"{name}.py"):
            if imp.startswith("polgen"):
                assert imp.startswith("polgen.kernels") or imp.startswith("polgen.errors"), (name, imp)
                parts = imp.split(".")
                if len(parts) >= 3 and parts[1] == "kernels" and parts[2] in MODULES:
                    deps.add(parts[2])
        graph[name] = deps - {name}
    state = {}

    def visit(n, stack):
        state[n] = 1
        for d in graph[n]:
            if state.get(d) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(stack + [n, d])}")
            if d not in state:
                visit(d, stack + [n])
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n, [])


def test_gwas_entry_points_reexported():
    from polgen.kernels import gwas as K

    for name in [
        "gwas_batch",
        "fit_cov",
        "fast_structure",
        "reduce_fast",
        "commonfactor_fit",
        "near_pd",
        "v_snp_into",
        "s_full_into",
        "v_full_into",
        "z_pre_into",
        "sandwich_into",
        "STATUS_REASONS",
        "FLAG_S_SMOOTHED",
        "FLAG_V_SMOOTHED",
        "GC_STANDARD",
        "GC_CONSERV",
        "GC_NONE",
        "ST_OK",
        "ST_NOCONV",
        "ST_SINGULAR",
        "ST_NEARPD_FAIL",
        "ST_NONFINITE",
        "ST_ML_NOTPD",
        "ST_NOFINITE",
        "ST_BAD_VAR",
        "ST_BAD_BETA",
        "ST_BAD_SE",
        "CF_RIDGE",
        "CF_LMAX",
        "implied_jacobian",
    ]:
        assert hasattr(K, name), name
    from polgen.kernels.gwas_defined import defined_se_batch  # noqa: F401
