"""Shared test helpers: the stored test data (tests/data), and where ../shared is for what still needs it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("POLGEN_PROGRESS", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("POLGEN_SHARED", ROOT.parent / "shared"))


def require_shared(*parts: str) -> Path:
    """Path of a file under ../shared; skip when absent, fail when POLGEN_REQUIRE_SHARED=1.

    Not for fixture data: the tests read their copies in tests/data (:func:`gsem_fixture`,
    :func:`stlr_data`), so that a clone without ../shared runs them."""
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


DATA = ROOT / "tests" / "data"


def _stored(path: Path) -> Path:
    if not path.exists():
        pytest.fail(
            f"stored test data {path.relative_to(ROOT)} missing (tests/data/make/copy_shared_fixtures.py copies it)"
        )
    return path


def gsem_fixture(*parts: str) -> Path:
    """Path of an R GenomicSEM parity fixture under tests/data/gsem/fixtures/ (``gsem_fixture("newer",
    "sem_3factor.json")``): byte-for-byte copies of ../shared/fixtures/gsem, made and checked against
    ../shared by tests/data/make/copy_shared_fixtures.py; provenance in its PROVENANCE.md.

    Part of the repository: a missing file is a failure, never a skip, and no test needs ../shared."""
    return _stored(DATA.joinpath("gsem", "fixtures", *parts))


def stlr_data(*parts: str) -> Path:
    """Path of SpaceTravLR reference data under tests/data/stlr/ (CellChat table, a base-GRN subset,
    human tonsil betadata subsets): copies or exact subsets of ../shared/data/stlr, made and checked by
    tests/data/make/copy_shared_fixtures.py; provenance in its PROVENANCE.md.  A failure if missing."""
    return _stored(DATA.joinpath("stlr", *parts))


def r_reference(*parts: str) -> Path:
    """Path of a stored R reference file under tests/data/gsem/r/ (R outputs with their inputs,
    produced once by tests/data/make/gsem_r.py; provenance in tests/data/gsem/PROVENANCE.md).

    Part of the repository: a missing file is a failure, never a skip, and no test needs R."""
    path = DATA.joinpath("gsem", "r", *parts)
    if not path.exists():
        pytest.fail(f"stored R reference {path.relative_to(ROOT)} missing (tests/data/make/gsem_r.py makes it)")
    return path


def live_r() -> Path | None:
    """The GenomicSEM ``R/`` directory for opt-in live R runs (``POLGEN_LIVE_R=1`` and
    ``POLGEN_GENOMICSEM_R=<dir>``), else None.  Live runs only check that the stored references
    regenerate; the parity tests never need R."""
    if os.environ.get("POLGEN_LIVE_R") != "1":
        return None
    src = os.environ.get("POLGEN_GENOMICSEM_R")
    if not src or not (Path(src) / "userGWAS.R").exists():
        pytest.fail("POLGEN_LIVE_R=1 needs POLGEN_GENOMICSEM_R=<GenomicSEM checkout>/R")
    return Path(src)
