"""polgen.plot.gls_bands: the drawn points, fitted curve and band equal the summary_gls_bands result
(R summaryGLSbands' plot layers: points, stat_function line, SE lines and ribbon); typed errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from polgen.errors import InputError  # noqa: E402
from polgen.gsem import summary_gls_bands  # noqa: E402
from polgen.plot import gls_bands  # noqa: E402


def _data():
    x = np.linspace(-1.5, 1.5, 9)
    V = np.diag(np.linspace(0.005, 0.012, 9)) + 0.001
    y = 0.4 + 0.2 * x - 0.1 * x**2 + np.array([0.03, -0.02, 0.01, 0.0, -0.04, 0.02, 0.01, -0.01, 0.03])
    return x, y, V


def _line(ax, gid):
    return next(ln for ln in ax.lines if ln.get_gid() == gid)


@pytest.mark.parametrize("quad", [False, True])
def test_drawn_data_are_the_result(tmp_path, quad):
    x, y, V = _data()
    res = summary_gls_bands(x, y, V, intervals=7, quad=quad, band_size=1.96)
    r = gls_bands(res, tmp_path / "bands.png", xlab="loading", ylab="rG", title="t")
    ax = r.figure.axes[0]
    pts = next(c for c in ax.collections if c.get_gid() == "gls-points").get_offsets()
    np.testing.assert_array_equal(np.asarray(pts), np.column_stack([x, y]))
    up, lo = _line(ax, "gls-band-upper"), _line(ax, "gls-band-lower")
    np.testing.assert_array_equal(up.get_xdata(), res.band["x"].to_numpy())
    np.testing.assert_array_equal(up.get_ydata(), res.band["upper"].to_numpy())
    np.testing.assert_array_equal(lo.get_ydata(), res.band["lower"].to_numpy())
    fit = _line(ax, "gls-fit")
    b = res.coefficients["beta"].to_numpy()
    cx = np.asarray(fit.get_xdata())
    want = b[0] + b[1] * cx + (b[2] * cx**2 if quad else 0.0)
    np.testing.assert_allclose(fit.get_ydata(), want, rtol=1e-12)
    # the curve passes through the band's centre at the grid points
    np.testing.assert_allclose(
        np.interp(res.band["x"].to_numpy(), cx, np.asarray(fit.get_ydata())),
        res.band["fit"].to_numpy(),
        atol=2e-3 if quad else 1e-12,
    )
    assert any(c.get_gid() == "gls-band" for c in ax.collections)
    assert ax.get_xlabel() == "loading" and ax.get_ylabel() == "rG"
    assert r.info["quad"] is quad and r.info["bands"] is True
    assert (tmp_path / "bands.png").read_bytes()[:4] == b"\x89PNG"


def test_bands_off_and_limits():
    x, y, V = _data()
    res = summary_gls_bands(x, y, V, intervals=5, bands=False)
    r = gls_bands(res, xlim=(-2, 2), ylim=(0, 1))
    ax = r.figure.axes[0]
    gids = {ln.get_gid() for ln in ax.lines}
    assert "gls-fit" in gids and "gls-band-upper" not in gids
    assert ax.get_xlim() == (-2.0, 2.0) and ax.get_ylim() == (0.0, 1.0)
    assert r.info["bands"] is False
    assert {ln.get_gid() for ln in gls_bands(res, bands=True).figure.axes[0].lines} >= {"gls-band-upper"}


def test_not_a_bands_result_is_typed():
    with pytest.raises(InputError, match="summary_gls_bands"):
        gls_bands({"band": 1})
