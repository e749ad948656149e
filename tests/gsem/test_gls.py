"""summary_gls / summary_gls_bands against R GenomicSEM summaryGLS / summaryGLSbands (stored R outputs,
tests/data/gsem/r/gls_tools/, and the ../shared fixtures summary_gls.json / gls_bands.json) and a
dense numpy GLS."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import gsem_fixture, r_reference
from hostile import SETTINGS, Cases
from polgen.errors import InputError, ModelError, NotPositiveDefiniteError
from polgen.gsem import sub_sv, summary_gls, summary_gls_bands
from polgen.gsem.gls import gls_line_se

RTOL = 1e-6


@pytest.fixture(scope="module")
def r_gls():
    inputs = json.loads(r_reference("gls_tools", "inputs.json").read_text())["gls"]
    out = json.loads(r_reference("gls_tools", "r_out.json").read_text())
    return inputs, out


def _check(table, ref):
    terms = ref["terms"]
    assert table["term"].to_list() == ([terms] if isinstance(terms, str) else terms)
    np.testing.assert_allclose(table["beta"].to_numpy(), ref["betas"], rtol=RTOL)
    np.testing.assert_allclose(table["se"].to_numpy(), ref["se"], rtol=RTOL)
    np.testing.assert_allclose(table["z"].to_numpy(), ref["z"], rtol=RTOL)
    np.testing.assert_allclose(table["p"].to_numpy(), ref["p"], rtol=RTOL)


def test_shared_fixture_summary_gls():
    d = json.loads(gsem_fixture("newer", "summary_gls.json").read_text())
    x = np.array(d["x"])
    for pred, intercept in ((x[:, 1], True), (x, False)):  # the fixture's x holds the intercept column
        t = summary_gls(pred, d["y"], d["v"], intercept=intercept)
        np.testing.assert_allclose(t["beta"].to_numpy(), d["betas"], rtol=RTOL)
        np.testing.assert_allclose(t["se"].to_numpy(), d["se"], rtol=RTOL)
        np.testing.assert_allclose(t["z"].to_numpy(), d["z"], rtol=RTOL)
        np.testing.assert_allclose(t["p"].to_numpy(), d["pvals"], rtol=RTOL)


@pytest.mark.parametrize("case", ["linear", "no_intercept", "two_predictors", "object"])
def test_summary_gls_matches_r(r_gls, case):
    g, out = r_gls
    x = np.array(g["x"])
    pred = np.column_stack([x, g["x2"]]) if case == "two_predictors" else x
    t = summary_gls(pred, g["y"], g["V"], intercept=case != "no_intercept")
    _check(t, out["summary_gls"][case])


def test_summary_gls_equals_dense_gls(r_gls):
    g, _ = r_gls
    X = np.column_stack([np.ones(len(g["x"])), g["x"], g["x2"]])
    Vi = np.linalg.inv(np.array(g["V"]))
    cov = np.linalg.inv(X.T @ Vi @ X)
    beta = cov @ X.T @ Vi @ np.array(g["y"])
    t = summary_gls(np.column_stack([g["x"], g["x2"]]), g["y"], g["V"])
    np.testing.assert_allclose(t["beta"].to_numpy(), beta, rtol=1e-10)
    np.testing.assert_allclose(t["se"].to_numpy(), np.sqrt(np.diag(cov)), rtol=1e-10)


def test_sub_sv_result_is_r_object(r_gls):
    """R's OBJECT form: a subSV() result supplies y and V_y."""
    S = np.array([[0.5, 0.2, 0.1], [0.2, 0.4, 0.15], [0.1, 0.15, 0.6]])
    V = np.diag(np.linspace(1e-3, 2e-3, 6)) + 1e-4
    sub = sub_sv({"S": S, "V": V}, [2, 3, 5])
    a = summary_gls([0.1, 0.4, 0.3], sub)
    b = summary_gls([0.1, 0.4, 0.3], sub.sub_s, sub.sub_v)
    np.testing.assert_array_equal(a["beta"].to_numpy(), b["beta"].to_numpy())


@pytest.mark.parametrize(
    ("case", "kw"),
    [
        ("linear", {"intervals": 20}),
        ("quad", {"intervals": 9, "quad": True, "band_size": 1.96}),
        ("controls", {"intervals": 6, "controls": "all"}),
        ("quad_controls", {"intervals": 7, "quad": True, "controls": "first", "band_size": 2}),
    ],
)
def test_summary_gls_bands_matches_r(r_gls, case, kw):
    g, out = r_gls
    ref = out["summary_gls_bands"][case]
    kw = dict(kw)
    ctl = np.array(g["controls"])
    if "controls" in kw:
        kw["controls"] = ctl if kw["controls"] == "all" else ctl[:, 0]
    b = summary_gls_bands(g["x"], g["y"], g["V"], **kw)
    _check(b.coefficients, ref)
    np.testing.assert_allclose(b.band["x"].to_numpy(), ref["x"], rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(b.band["upper"].to_numpy(), ref["upper"], rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(b.band["lower"].to_numpy(), ref["lower"], rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(b.points["y"].to_numpy(), g["y"])


def test_shared_fixture_gls_bands():
    """The fixture's betas, grid and line are R's; its band SEs are the fitted-value SEs at
    min + i * range / intervals for i = 0..intervals-1 (R 123ec96 uses i = 1..intervals for a line)."""
    d = json.loads(gsem_fixture("newer", "gls_bands.json").read_text())
    b = summary_gls_bands(d["predictors"], d["y"], d["v_y"], intervals=d["intervals"], band_size=d["band_size"])
    np.testing.assert_allclose(b.coefficients["beta"].to_numpy(), d["betas"], rtol=RTOL)
    np.testing.assert_allclose(b.band["x"].to_numpy(), d["grid"], rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(b.band["fit"].to_numpy(), d["line"], rtol=RTOL, atol=1e-12)
    x = np.array(d["predictors"])
    at = x.min() + np.arange(d["intervals"]) * (x.max() - x.min()) / d["intervals"]
    se = gls_line_se(b.cov, at)
    np.testing.assert_allclose(se, d["band_se"], rtol=RTOL)
    np.testing.assert_allclose(np.asarray(d["line"]) + se, d["upper"], rtol=RTOL)
    # R's own shift points: one step further along
    np.testing.assert_allclose(b.band["se_at"].to_numpy(), at + (x.max() - x.min()) / d["intervals"])
    grid = summary_gls_bands(d["predictors"], d["y"], d["v_y"], intervals=5, band_points="grid")
    np.testing.assert_allclose(grid.band["se"].to_numpy(), gls_line_se(b.cov, d["grid"]), rtol=1e-12)


def test_bad_input_is_typed():
    y = [0.1, 0.2, 0.3, 0.4]
    V = np.eye(4) * 0.01
    with pytest.raises(InputError, match="x has 3 rows but y has 4"):
        summary_gls([1, 2, 3], y, V)
    with pytest.raises(InputError, match="v_y is 3x3"):
        summary_gls([1, 2, 3, 4], y, np.eye(3))
    bad = np.eye(4) * 0.01
    bad[0, 1] = bad[1, 0] = 0.02
    with pytest.raises(NotPositiveDefiniteError, match="v_y is not positive definite"):
        summary_gls([1, 2, 3, 4], y, bad)
    with pytest.raises(InputError, match="not symmetric"):
        summary_gls([1, 2, 3, 4], y, np.triu(np.ones((4, 4))) * 0.01 + np.eye(4))
    with pytest.raises(InputError, match="missing or infinite") as e:
        summary_gls([1, 2, np.nan, 4], y, V)
    assert e.value.row == 3
    with pytest.raises(ModelError, match="linearly dependent"):
        summary_gls(np.column_stack([[1, 2, 3, 4], [2, 4, 6, 8]]), y, V)
    with pytest.raises(InputError, match="v_y .* is required"):
        summary_gls([1, 2, 3, 4], y)
    with pytest.raises(InputError, match="intervals must be an integer >= 2"):
        summary_gls_bands([1, 2, 3, 4], y, V, intervals=1)
    with pytest.raises(InputError, match="one predictor"):
        summary_gls_bands(np.ones((4, 2)), y, V)
    with pytest.raises(InputError, match="band_points must be one of"):
        summary_gls_bands([1, 2, 3, 4], y, V, band_points="middle")  # type: ignore[arg-type]


def test_cli_summary_gls_and_bands(r_gls, tmp_path, capsys):
    pl = pytest.importorskip("polars")
    from polgen import cli

    g, out = r_gls
    (tmp_path / "y.txt").write_text("estimate\n" + "\n".join(map(repr, g["y"])))
    np.savetxt(tmp_path / "v.txt", np.array(g["V"]), delimiter=",", fmt="%.17g")
    xs = ",".join(map(repr, g["x"]))
    o = tmp_path / "gls.parquet"
    args = ["gsem", "summary-gls", "--y", str(tmp_path / "y.txt"), "--v-y", str(tmp_path / "v.txt"), f"--x={xs}"]
    assert cli.main([*args, "--out", str(o)]) == 0
    _check(pl.read_parquet(o), out["summary_gls"]["linear"])
    assert cli.main([*args, "--out", str(o)]) == 2  # exists without --overwrite
    band = tmp_path / "band.parquet"
    q = [*args, "--bands", "--quad", "--intervals", "9", "--band-size", "1.96", "--band-out", str(band)]
    assert cli.main([*q, "--out", str(o), "--overwrite"]) == 0
    ref = out["summary_gls_bands"]["quad"]
    _check(pl.read_parquet(o), ref)
    np.testing.assert_allclose(pl.read_parquet(band)["upper"].to_numpy(), ref["upper"], rtol=RTOL)
    assert cli.main([*args, "--quad", "--out", str(tmp_path / "x.parquet")]) == 2  # --quad needs --bands
    assert "need --bands" in capsys.readouterr().err


# -- hostile GLS inputs ------------------------------------------------------------------------
CASES = Cases()
_count_cases = CASES.fixture()
_BAD = [np.nan, np.inf, -np.inf, 0.0, -1.0, 1e300, 1e-300]


@SETTINGS
@given(
    n=st.integers(1, 9),
    nx=st.sampled_from([None, None, None, 0, 1, 5]),  # None: one predictor row per estimate
    k=st.integers(1, 3),
    v_kind=st.sampled_from(["pd", "pd", "pd", "zero", "neg", "asym", "rank1", "small"]),
    junk=st.lists(st.tuples(st.sampled_from(["x", "y", "v"]), st.integers(0, 50), st.sampled_from(_BAD)), max_size=2),
    intercept=st.booleans(),
    bands=st.booleans(),
)
def test_hostile_gls(n, nx, k, v_kind, junk, intercept, bands):
    rng = np.random.default_rng(n * 100 + (nx or 0) * 10 + k)
    y = rng.normal(size=n)
    x = rng.normal(size=(n if nx is None else nx, k))
    A = rng.normal(size=(n, n))
    V = {
        "pd": A @ A.T + np.eye(n),
        "zero": np.zeros((n, n)),
        "neg": -np.eye(n),
        "asym": A + 5 * np.eye(n),
        "rank1": np.outer(A[0], A[0]),
        "small": np.eye(max(n - 1, 1)),
    }[v_kind]
    for what, i, v in junk:
        arr = {"x": x, "y": y, "v": V}[what]
        if arr.size:
            arr.flat[i % arr.size] = v
    if bands:
        res, err = CASES.attempt(summary_gls_bands, x[:, 0] if k == 1 else x, y, V, intervals=4, intercept=intercept)
        table = None if res is None else res.coefficients
    else:
        table, err = CASES.attempt(summary_gls, x, y, V, intercept=intercept)
    if err is not None:
        return
    assert table is not None
    assert table.height == k + (1 if intercept else 0)
    assert np.isfinite(table["beta"].to_numpy()).all() and (table["se"].to_numpy() > 0).all()
