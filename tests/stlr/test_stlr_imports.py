"""The import graph of polgen.stlr: its modules import downwards only (so no circle inside it), never
gsem / lfmm / demo, and no polgen module inside a function other than the lazily compiled numba
kernels (``polgen.kernels.*``) and the AnnData reader (``polgen.io.spatial``, which pulls pandas /
scipy.sparse only when a tissue is read).  Cycles across the whole package:
tests/test_architecture.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "polgen"
LAZY_OK = ("polgen.kernels", "polgen.io.spatial")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The polgen module an import name refers to (the longest existing prefix)."""
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def import_edges(mods: dict[str, Path] | None = None) -> list[tuple[str, str, bool, int]]:
    """(importer, imported, inside a function, line) for every import of a polgen module."""
    mods = _modules() if mods is None else mods
    edges = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == "__init__.py"
        func_nodes: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                func_nodes.update(id(n) for n in ast.walk(node) if n is not node)
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                # ``from polgen.x import y`` imports the module polgen.x.y when y is a module
                names = [f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src for a in node.names]
            for name in names:
                if not name.startswith("polgen"):
                    continue
                target = _resolve(name, mods)
                edge = (mod, target, id(node) in func_nodes, node.lineno)
                if target is not None and target != mod and edge not in edges:
                    edges.append(edge)
    return edges


def _is_package_init(importer: str, target: str) -> bool:
    """``polgen.stlr.x`` importing ``polgen.stlr`` (its package) is how Python loads x, not an edge."""
    return importer.startswith(target + ".")


def test_stlr_has_no_function_level_import_of_polgen_modules():
    lazy = [
        (a, b, line)
        for a, b, inside, line in import_edges()
        if inside and a.startswith("polgen.stlr") and not b.startswith(LAZY_OK)
    ]
    assert lazy == []


#: polgen.stlr's layers, bottom up: a module imports only modules of lower layers
STLR_LAYERS = [
    {"betadata", "lasso", "ligands"},
    {"grn", "synthetic"},
    {"tissue", "priors"},  # the tissue inputs and bundled priors shared by everything above
    {"features", "splash", "prepare", "cnn", "transitions", "pruning"},  # cnn: per-cell betas; transitions: vectors
    {"train", "perturb"},
    {"cli", "namespace"},
]


def test_stlr_modules_import_downwards_only():
    layer = {f"polgen.stlr.{m}": k for k, mods in enumerate(STLR_LAYERS) for m in mods}
    stlr = {m for m in _modules() if m.startswith("polgen.stlr.")}
    assert stlr == set(layer), "place new stlr modules in STLR_LAYERS"
    upward = [(a, b, line) for a, b, _, line in import_edges() if a in layer and b in layer and layer[b] >= layer[a]]
    assert upward == []


def test_stlr_imports_nothing_above_it():
    """stlr may use io/, kernels/, engine/, errors/schema and its own modules; never gsem or lfmm."""
    bad = [
        (a, b)
        for a, b, *_ in import_edges()
        if a.startswith("polgen.stlr") and b.startswith(("polgen.gsem", "polgen.lfmm", "polgen.demo"))
    ]
    assert bad == []
