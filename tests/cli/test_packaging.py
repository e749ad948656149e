"""Packaging (issue 16): every third-party module polgen imports is a declared dependency (or in
the extra that needs it), LICENSE holds the GPL-3.0 text pyproject declares, CITATION.cff cites
polgen and the methods it implements."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _imports() -> dict[str, set[str]]:
    """Top-level third-party module -> polgen files importing it."""
    found: dict[str, set[str]] = {}
    for f in (ROOT / "polgen").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                top = n.split(".")[0]
                if top != "polgen" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(f.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    extras = {_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    dists = packages_distributions()
    missing = {}
    for module, files in _imports().items():
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if module == "distributed":  # dask's scheduler comes with the dask[distributed] extra
            names.add("dask")
        if not names & (declared | extras):
            missing[module] = sorted(files)
    assert missing == {}, f"imported but not declared in pyproject.toml: {missing}"
    assert {"pandas", "h5py"} <= declared


def test_license_is_the_declared_gpl3():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "GPL-3.0-or-later"
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE")
    assert "Version 3, 29 June 2007" in text and "END OF TERMS AND CONDITIONS" in text
    assert len(text.splitlines()) > 600  # the full text, not a pointer to it


def test_citation_cites_polgen_and_the_methods():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["title"].startswith("polgen") and cff["license"] == "GPL-3.0-or-later"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert str(cff["version"]) == project["version"]
    refs = {r["title"]: r for r in cff["references"]}
    gsem = next(r for t, r in refs.items() if t.startswith("Genomic structural equation modelling"))
    assert gsem["doi"] == "10.1038/s41562-019-0566-x" and gsem["year"] == 2019
    assert gsem["authors"][0]["family-names"] == "Grotzinger"
    lfmm = next(r for t, r in refs.items() if t.startswith("LFMM 2"))
    assert lfmm["doi"] == "10.1093/molbev/msz008" and lfmm["authors"][0]["family-names"] == "Caye"
    assert any("SpaceTravLR" in t for t in refs)
    for r in cff["references"]:
        assert r["authors"] and r["type"] and r["title"]
