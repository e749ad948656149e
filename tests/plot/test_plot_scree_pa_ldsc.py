"""polgen.plot.scree of a Genomic SEM pa_ldsc result: the drawn lines are its eigenvalues."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from polgen.gsem import pa_ldsc  # noqa: E402
from polgen.plot import scree  # noqa: E402


def _result(**kw):
    L = np.array([[0.8, 0.0], [0.7, 0.0], [0.6, 0.3], [0.0, 0.7], [0.0, 0.6]])
    S = L @ L.T
    np.fill_diagonal(S, 1.0)
    V = np.eye(15) * 0.003
    return pa_ldsc(S, V, r=40, seed=1, **kw)


def test_scree_of_pa_ldsc_result_marks_suggested_components(tmp_path):
    res = _result()
    r = scree(res, out=tmp_path / "pa.png")
    ax = r.figure.axes[0]
    lines = {ln.get_gid(): ln for ln in ax.lines}
    assert set(lines) == {"scree-observed", "scree-simulated", "suggested-k"}  # not the differences
    np.testing.assert_array_equal(lines["scree-observed"].get_ydata(), res.observed)
    np.testing.assert_array_equal(lines["scree-simulated"].get_ydata(), res.simulated)
    np.testing.assert_array_equal(lines["scree-observed"].get_xdata(), np.arange(1, 6))
    assert r.info["suggested_k"] == res.n_components == 2
    assert lines["suggested-k"].get_xdata()[0] == 2.5
    assert (tmp_path / "pa.png").read_bytes()[:4] == b"\x89PNG"


def test_scree_of_pa_ldsc_frame_and_fa_columns(tmp_path):
    res = _result(diag=True, fa=True)
    r = scree(res)
    gids = {ln.get_gid() for ln in r.figure.axes[0].lines}
    assert gids >= {f"scree-{c}" for c in res.scree_columns}
    assert not any("difference" in g for g in gids)
    # the saved table (what `polgen gsem pa-ldsc --out` writes) draws the same eigenvalue lines
    path = tmp_path / "pa.parquet"
    res.to_frame().write_parquet(path)
    r2 = scree(path, suggested_k=res.n_components)
    assert {ln.get_gid() for ln in r2.figure.axes[0].lines} == gids
