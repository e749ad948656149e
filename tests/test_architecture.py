"""The architecture contract of docs/architecture.md, checked on the source (no imports run).

* no import cycle among polgen modules, counting module-level and function-level imports
  (``from polgen.x import y`` counts as importing ``polgen.x.y`` when that is a module, else
  ``polgen.x``; imports under ``if TYPE_CHECKING:`` do not run and are not counted);
* layering: ``polgen.errors`` imports nothing from polgen, ``polgen.schema`` / ``polgen.options``
  only ``polgen.errors``; ``polgen.kernels`` imports nothing from polgen but ``polgen.kernels.*``
  and ``polgen.errors``; ``polgen.io`` and ``polgen.engine`` import no method package (``gsem``,
  ``lfmm``, ``stlr``); a method package imports no other method package;
* no module over 800 lines;
* no two public classes of one name in polgen;
* every polgen subpackage is listed in pyproject.toml's ``[tool.setuptools] packages`` (the list
  is explicit because of the ``polgen._sql`` mapping; a missing entry would drop it from wheels).
"""

from __future__ import annotations

import ast
import functools
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "polgen"
MAX_LINES = 800
METHOD_PACKAGES = ("polgen.gsem", "polgen.lfmm", "polgen.stlr")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py")) if "__pycache__" not in p.parts}


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    """Every Import / ImportFrom at any depth (functions, classes, try blocks), except the ones
    guarded by ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(module: str, node: ast.Import | ast.ImportFrom) -> list[tuple[str, int]]:
    """polgen modules that ``node`` (in ``module``) imports, with the line."""
    out: list[tuple[str, int]] = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == "polgen" or alias.name.startswith("polgen."):
                name = alias.name
                while name not in MODULES and "." in name:
                    name = name.rsplit(".", 1)[0]
                out.append((name, node.lineno))
        return out
    if node.level:
        base = module if _is_package(module) else module.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            base = base.rsplit(".", 1)[0]
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    if not (target == "polgen" or target.startswith("polgen.")):
        return out
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append((sub if sub in MODULES else target, node.lineno))
    return out


@functools.cache
def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported polgen module: first line}."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in MODULES.items():
        edges: dict[str, int] = {}
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            for dep, line in _resolve(name, node):
                if dep != name and dep in MODULES:
                    edges.setdefault(dep, line)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a cycle path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    comps: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    out = []
    for comp in comps:  # one concrete cycle through the component's first module
        members = set(comp)
        start = comp[0]
        path, seen = [start], {start}
        prev: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w == start:
                        found = v
                        break
                    if w in members and w not in seen:
                        seen.add(w)
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [start]
        v = found
        back = []
        while v is not None and v != start:
            back.append(v)
            v = prev.get(v)
        path += list(reversed(back)) + [start]
        out.append(path)
    return out


def _fmt_cycle(graph, path: list[str]) -> str:
    hops = [f"{a} (line {graph[a][b]})" for a, b in zip(path, path[1:])]
    return " -> ".join(hops + [path[-1]])


def test_no_import_cycle():
    graph = import_graph()
    cycles = _cycles(graph)
    assert not cycles, "import cycles among polgen modules:\n" + "\n".join(_fmt_cycle(graph, c) for c in cycles)


def _in(name: str, pkg: str) -> bool:
    return name == pkg or name.startswith(pkg + ".")


def test_kernels_import_only_kernels_and_errors():
    graph = import_graph()
    bad = [
        f"{m} imports {d} (line {line})"
        for m, deps in sorted(graph.items())
        if _in(m, "polgen.kernels")
        for d, line in sorted(deps.items())
        if not (_in(d, "polgen.kernels") or d == "polgen.errors")
    ]
    assert not bad, "polgen.kernels reaches above its layer:\n" + "\n".join(bad)


def test_io_imports_no_method_package():
    graph = import_graph()
    bad = [
        f"{m} imports {d} (line {line})"
        for m, deps in sorted(graph.items())
        if _in(m, "polgen.io")
        for d, line in sorted(deps.items())
        if any(_in(d, p) for p in METHOD_PACKAGES)
    ]
    assert not bad, "polgen.io imports a method package:\n" + "\n".join(bad)


def test_engine_imports_no_method_package():
    graph = import_graph()
    bad = [
        f"{m} imports {d} (line {line})"
        for m, deps in sorted(graph.items())
        if _in(m, "polgen.engine")
        for d, line in sorted(deps.items())
        if any(_in(d, p) for p in METHOD_PACKAGES)
    ]
    assert not bad, "polgen.engine imports a method package:\n" + "\n".join(bad)


def test_method_packages_are_independent():
    graph = import_graph()
    bad = [
        f"{m} imports {d} (line {line})"
        for m, deps in sorted(graph.items())
        for p in METHOD_PACKAGES
        if _in(m, p)
        for d, line in sorted(deps.items())
        if any(_in(d, q) for q in METHOD_PACKAGES if q != p)
    ]
    assert not bad, "a method package imports another:\n" + "\n".join(bad)


def test_bottom_layer():
    graph = import_graph()
    schema = {m for m in graph if m == "polgen.schema" or m.startswith("polgen.schema.")}
    allowed = {"polgen.errors": set(), "polgen.options": {"polgen.errors"}}
    # the declarations (polgen.schema.gsem, .lfmm, .stlr) build on polgen.schema.core; the package
    # collects them: the schema modules import each other and polgen.errors, nothing else
    allowed.update({m: {"polgen.errors"} | (schema - {m}) for m in schema})
    bad = [
        f"{m} imports {d} (line {line})"
        for m, ok in allowed.items()
        if m in graph
        for d, line in sorted(graph[m].items())
        if d not in ok
    ]
    assert not bad, "the bottom layer (errors, schema, options) imports upwards:\n" + "\n".join(bad)


def test_no_module_over_800_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: " + ", ".join(
        f"{k} ({v})" for k, v in sorted(long.items(), key=lambda kv: -kv[1])
    )


def test_no_two_public_classes_of_one_name():
    where: dict[str, list[str]] = defaultdict(list)
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where[node.name].append(f"{name}:{node.lineno}")
    dup = {k: v for k, v in where.items() if len(v) > 1}
    assert not dup, "public classes defined more than once: " + "; ".join(
        f"{k} in {', '.join(v)}" for k, v in sorted(dup.items())
    )


def test_every_subpackage_is_packaged():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(cfg["packages"])
    on_disk = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert on_disk | {"polgen._sql"} == packages, (
        f"pyproject [tool.setuptools] packages: missing {sorted(on_disk - packages)}, "
        f"stale {sorted(packages - on_disk - {'polgen._sql'})}"
    )
    assert cfg["package-dir"]["polgen._sql"] == "sql" and any((ROOT / "sql").glob("*.sql"))


# -- the checker itself -------------------------------------------------------------------------------
def test_resolver_counts_function_level_and_relative_imports():
    src = (
        "import polgen.errors\nfrom polgen.io import sink\nfrom polgen.gsem import user_gwas\n"
        "def f():\n    from polgen.kernels import ldsc\n    from . import munge\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from polgen.stlr import tissue\n"
    )
    deps = set()
    for node in _import_nodes(ast.parse(src)):
        deps |= {d for d, _ in _resolve("polgen.gsem.ldsc", node)}
    assert deps == {"polgen.errors", "polgen.io.sink", "polgen.gsem", "polgen.kernels.ldsc", "polgen.gsem.munge"}
    assert _cycles({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 1}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b": 1}, "b": {}}) == []
