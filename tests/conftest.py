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
