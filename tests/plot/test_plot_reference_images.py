"""polgen.plot pictures against stored reference images (tests/data/plot/), within a tolerance.

The Manhattan, QQ, scree and spatial pictures of small seeded data are drawn again by
tests/data/make/plot_reference.py's ``render`` (fixed canvas and dpi, matplotlib's defaults plus
DejaVu Sans and no hinting, Agg) and compared with ``matplotlib.testing.compare.compare_images``.

The tolerance (RMS of the pixel difference, 0-255) is chosen between what freetype builds change and
what a content change does, measured with ``plot_reference.py --measure`` (matplotlib 3.11.2,
freetype 2.14.3):

=========  =====  =================  =================  ======================  =========
picture    again  text coverage^0.7  text coverage^0.5  text not antialiased    perturbed
=========  =====  =================  =================  ======================  =========
manhattan  0      3.16               6.09               9.33                    12.82
qq         0      3.97               7.64               12.09                   18.02
scree      0      3.67               7.08               10.96                   10.29
spatial    0      1.87               3.57               5.82                    32.55
=========  =====  =================  =================  ======================  =========

"text coverage^g": every text pixel's antialiasing coverage c made c**g (the size of a gamma or
stem-darkening difference between freetype builds; glyph positions are unhinted metrics, the same in
every build); "text not antialiased" bounds it from above; "perturbed": another genome-wide line,
other P values, another suggested K, the values on other cells.  TOL = 6 is 1.5x the largest
antialiasing difference (3.97) and 0.58x the smallest content change (10.29).  When a matplotlib
release changes the rendering beyond it, regenerate the references with the script (see
tests/data/plot/PROVENANCE.md).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

import matplotlib  # noqa: E402
from matplotlib.testing.compare import compare_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
REF = ROOT / "tests" / "data" / "plot"
TOL = 6.0


def _maker():
    path = ROOT / "tests" / "data" / "make" / "plot_reference.py"
    spec = importlib.util.spec_from_file_location("plot_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MAKE = _maker()


def _compare(name: str, tmp_path: Path, variant: str = "reference") -> dict | None:
    actual = tmp_path / f"{name}-{variant}.png"
    actual.write_bytes(MAKE.render(name, variant))
    return compare_images(str(REF / f"{name}.png"), str(actual), tol=TOL, in_decorator=True)


def test_every_picture_has_a_reference():
    assert {p.stem for p in REF.glob("*.png")} == set(MAKE.PICTURES)
    assert "matplotlib" in (REF / "PROVENANCE.md").read_text()


@pytest.mark.parametrize("name", MAKE.PICTURES)
def test_picture_matches_its_reference(name, tmp_path):
    err = _compare(name, tmp_path)
    assert err is None, (
        f"{name}: RMS {err['rms']:.2f} > {TOL} against tests/data/plot/{name}.png (diff: {err['diff']}); if "
        "matplotlib changed its rendering, regenerate with tests/data/make/plot_reference.py"
    )


@pytest.mark.parametrize("name", MAKE.PICTURES)
def test_a_different_picture_exceeds_the_tolerance(name, tmp_path):
    err = _compare(name, tmp_path, "perturbed")
    assert err is not None and err["rms"] > TOL, err


def test_rc_settings_neither_reach_the_picture_nor_leak_out(tmp_path):
    with matplotlib.rc_context(
        {"font.size": 17, "lines.linewidth": 4, "axes.facecolor": "#ffe0e0", "font.family": "monospace"}
    ):
        before = dict(matplotlib.rcParams)
        assert _compare("scree", tmp_path) is None
        assert dict(matplotlib.rcParams) == before
