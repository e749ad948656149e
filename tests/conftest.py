"""Shared test helpers: where ../shared is, and how a test that needs it skips or fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("POLGEN_PROGRESS", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("POLGEN_SHARED", ROOT.parent / "shared"))


def require_shared(*parts: str) -> Path:
    """Path of a file under ../shared; skip when absent, fail when POLGEN_REQUIRE_SHARED=1."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        msg = f"../shared is not beside the project ({path} missing)"
        if os.environ.get("POLGEN_REQUIRE_SHARED") == "1":
            pytest.fail(msg + " and POLGEN_REQUIRE_SHARED=1")
        pytest.skip(msg)
    return path


@pytest.fixture
def shared():
    """Callable fixture: ``shared("fixtures", "gsem", "commonfactor.json")``."""
    return require_shared


GENOMICSEM_MIRROR = Path(os.environ.get("POLGEN_GENOMICSEM_MIRROR", "/work/.mirror/GenomicSEM+GenomicSEM/repo"))


def genomicsem_r_sources(dest: Path, files: tuple[str, ...], r_packages: tuple[str, ...] = ("lavaan",)) -> Path:
    """A directory holding R GenomicSEM's ``R/<file>`` sources for a cross-check run by Rscript.

    Skips (never fails: R GenomicSEM is not part of ../shared) when Rscript or one of ``r_packages``
    is missing or the sources cannot be found. Sources come from ``$POLGEN_GENOMICSEM_R`` (a
    directory of the R files) or from a git mirror of the GenomicSEM repository
    (``$POLGEN_GENOMICSEM_MIRROR``, default the local mirror), read with ``git show HEAD:R/<file>``.
    """
    import shutil
    import subprocess

    if shutil.which("Rscript") is None:
        pytest.skip("Rscript not installed")
    if r_packages:
        test = " || ".join(f"!requireNamespace('{p}', quietly = TRUE)" for p in r_packages)
        if subprocess.run(["Rscript", "-e", f"quit(status = {test})"], capture_output=True).returncode:
            pytest.skip(f"R package(s) {', '.join(r_packages)} not installed")
    env = os.environ.get("POLGEN_GENOMICSEM_R")
    if env and all((Path(env) / f).exists() for f in files):
        return Path(env)
    if not (GENOMICSEM_MIRROR / "HEAD").exists() and not (GENOMICSEM_MIRROR / ".git").exists():
        pytest.skip("GenomicSEM R sources not available (set POLGEN_GENOMICSEM_R or POLGEN_GENOMICSEM_MIRROR)")
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        out = subprocess.run(["git", "-C", str(GENOMICSEM_MIRROR), "show", f"HEAD:R/{f}"], capture_output=True)
        if out.returncode:
            pytest.skip(f"cannot read R/{f} from the GenomicSEM mirror {GENOMICSEM_MIRROR}")
        (dest / f).write_bytes(out.stdout)
    return dest
