"""Cross-check of the SEM engine against R lavaan 0.6.x run directly: stored outputs of
tests/data/make/gsem_sem_lavaan.R (tests/data/gsem/r/sem_lavaan/, made by tests/data/make/gsem_r.py
with Debian's lavaan 0.6.14; no R needed here).

The R script follows GenomicSEM's usermodel steps with lavaan: reorder V to lavaan's variable
order, DWLS with W = diag(1/diag(V)), sandwich SEs from lavInspect(fit, "delta") / "WLS.V", delta
method for := from lavaan's complex-step Jacobian, Q by eigen-decomposition, CFI closed form,
lavaan's SRMR, and the standardized refit with standardizedSolution().  Debian's lavaan 0.6.14
matches the GenomicSEM fixtures for DWLS to ~2e-8.  For ML only the estimates are compared (lavaan
0.6.14's ML WLS.V differs from the version the fixtures were made with).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import r_reference
from polgen.gsem.fit_models import usermodel

MODELS = {
    "cross_loading_defined": (
        "F1 =~ NA*V1 + a*V2 + V3\nF2 =~ NA*V3 + b*V4 + V5\nF1 ~~ 1*F1\nF2 ~~ 1*F2\n"
        "F1 ~~ F2\nab := a*b\nr := ab/(1 + a^2)"
    ),
    "structural_marker": "F1 =~ V1 + V2 + V3\nF2 =~ V4 + V5\nF2 ~ F1\nV1 ~~ V4",
    "observed_outcome": "F1 =~ NA*V1 + V2 + V3 + V4\nF1 ~~ 1*F1\nV5 ~ c*F1\nc2 := c^2",
    # traits that only predict: lavaan's DWLS resolves fixed.x to FALSE (free variances/covariance)
    "trait_predictors": "F1 =~ V1 + V2 + V3\nF1 ~ V4 + V5",
    # six traits
    "higher_order": "F1 =~ V1 + V2\nF2 =~ V3 + V4\nF3 =~ V5 + V6\nG =~ NA*F1 + F2 + F3\nG ~~ 1*G",
    "equal_labels": "F1 =~ NA*V1 + a*V2 + a*V3 + V4 + V5 + V6\nF1 ~~ 1*F1",
    "linear_constraint": "F1 =~ NA*V1 + a*V2 + b*V3 + V4 + V5 + V6\nF1 ~~ 1*F1\na == b + 0.05",
    "nonlinear_constraint": (
        "F1 =~ NA*V1 + a*V2\nF2 =~ NA*V3 + b*V4\nF3 =~ NA*V5 + V6\nF1~~1*F1\nF2~~1*F2\nF3~~1*F3\na == b^2\nd := a - b"
    ),
    "inequality": (
        "F1 =~ NA*V1 + a*V2\nF2 =~ NA*V3 + b*V4\nF3 =~ NA*V5 + V6\nF1~~1*F1\nF2~~1*F2\nF3~~1*F3\na > b + 0.15"
    ),
}
# a Heywood case (V3 wants -0.15) with GenomicSEM's fix_resid bound: lavaan's inequality constraint
MODELS["bounded_heywood"] = "F1 =~ NA*V1 + V2\nF2 =~ NA*V3 + V4\nF1 ~~ 1*F1\nF2 ~~ 1*F2\nV3 ~~ abcd*V3\nabcd > .0001"
QF_MODEL = "F1 =~ NA*V1 + V2\nF2 =~ NA*V3 + V4\nF3 =~ NA*V5 + V6 + V4\nF1~~1*F1\nF2~~1*F2\nF3~~1*F3"


@pytest.fixture(scope="module")
def stored():
    return json.loads(r_reference("sem_lavaan", "sem_lavaan.json").read_text())


def _case(stored, name, model):
    """(S, V, R's outputs) of a stored case; the model R fitted is the one tested."""
    c = stored["cases"][name]
    assert c["model"] == model, name
    d = stored["data"][c["data"]]
    return np.array(d["S"]), np.array(d["V"]), c["r"]


@pytest.mark.parametrize("name", list(MODELS))
def test_usermodel_dwls_matches_lavaan(stored, name):
    model = MODELS[name]
    S, V, r = _case(stored, name, model)
    assert stored["cases"][name]["estimation"] == "DWLS"
    assert "ERROR" not in r, r.get("ERROR")
    res = usermodel({"S": S, "V": V, "trait_names": [f"V{i}" for i in range(1, S.shape[0] + 1)]}, model)
    p = res.parameters
    free = p.filter(p["free"])
    # lavaan's constrained optimiser stops ~2e-6 from the optimum with equality constraints
    np.testing.assert_allclose(free["est"].to_numpy(), np.array(r["EST"], float), rtol=0, atol=1e-5)
    np.testing.assert_allclose(free["se"].to_numpy(), np.array(r["SE"], float), rtol=1e-4, atol=1e-6)
    if "DEF" in r:
        d = p.filter(p["op"] == ":=")
        np.testing.assert_allclose(d["est"].to_numpy(), np.array(r["DEF"], float), rtol=0, atol=1e-5)
        np.testing.assert_allclose(d["se"].to_numpy(), np.array(r["DEFSE"], float), rtol=1e-4, atol=1e-7)
    q, df, npar, srmr, cfi = (float(x) for x in r["FIT"])
    f = res.fit_all.row(0, named=True)
    assert f["chisq"] == pytest.approx(q, abs=1e-3, rel=1e-4)
    assert f["df"] == int(df)
    assert f["AIC"] == pytest.approx(q + 2 * npar, abs=1e-3, rel=1e-4)
    assert f["SRMR"] == pytest.approx(srmr, abs=1e-5)
    assert f["CFI"] == pytest.approx(cfi, abs=1e-5)
    np.testing.assert_allclose(free["est_std"].to_numpy(), np.array(r["STD"], float), rtol=0, atol=1e-5)
    np.testing.assert_allclose(free["se_std"].to_numpy(), np.array(r["STDSE"], float), rtol=1e-4, atol=1e-6)
    keys = [tuple(k.split("|")) for k in r["STDALL"]]
    vals = np.array(r["STDALLV"], float)
    for key, v in zip(keys, vals):
        row = p.filter((p["lhs"] == key[0]) & (p["op"] == key[1]) & (p["rhs"] == key[2]))
        assert row.height == 1, key
        assert row["std_all"][0] == pytest.approx(v, abs=1e-5), key


def test_usermodel_ml_estimates_match_lavaan(stored):
    model = MODELS["structural_marker"]
    S, V, r = _case(stored, "ml_structural", model)
    assert stored["cases"]["ml_structural"]["estimation"] == "ML"
    res = usermodel({"S": S, "V": V, "trait_names": [f"V{i}" for i in range(1, 6)]}, model, estimation="ML")
    free = res.parameters.filter(res.parameters["free"])
    np.testing.assert_allclose(free["est"].to_numpy(), np.array(r["EST"], float), rtol=0, atol=1e-5)
    np.testing.assert_allclose(free["est_std"].to_numpy(), np.array(r["STD"], float), rtol=0, atol=1e-5)
    # lavaan 0.6.14's ML WLS.V is the structured expected information 0.5 D'(Sigma^-1 x Sigma^-1) D,
    # which is also what current lavaan returns without fixed.x covariates: SEs compared too
    np.testing.assert_allclose(free["se"].to_numpy(), np.array(r["SE"], float), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(free["se_std"].to_numpy(), np.array(r["STDSE"], float), rtol=1e-3, atol=1e-6)
    assert res.fit_all["df"][0] == int(float(r["FIT"][1]))
    assert res.fit_all["SRMR"][0] == pytest.approx(float(r["FIT"][3]), abs=1e-5)


def test_q_factor_matches_genomicsem_algorithm_in_r(stored):
    model = QF_MODEL
    S, V, r = _case(stored, "q_factor", model)
    res = usermodel({"S": S, "V": V, "trait_names": [f"V{i}" for i in range(1, 7)]}, model, Q_Factor=True)
    qf = res.q_factor
    assert qf.height == 3
    for row in qf.iter_rows(named=True):
        q, df = r[f"QF_{row['Factor1']}_{row['Factor2']}"]
        assert row["QFactor_chisq"] == pytest.approx(float(q), rel=1e-4, abs=1e-6)
        assert row["QFactor_df"] == int(float(df))


def test_usermodel_ml_fixed_x_matches_lavaan(stored):
    """ML resolves fixed.x to TRUE: predictor variances fixed, their block zeroed in WLS.V."""
    S, V, r = _case(stored, "ml_fixed_x", MODELS["trait_predictors"])
    assert stored["cases"]["ml_fixed_x"]["estimation"] == "ML"
    res = usermodel(
        {"S": S, "V": V, "trait_names": [f"V{i}" for i in range(1, 6)]}, MODELS["trait_predictors"], estimation="ML"
    )
    free = res.parameters.filter(res.parameters["free"])
    np.testing.assert_allclose(free["est"].to_numpy(), np.array(r["EST"], float), rtol=0, atol=1e-5)
    np.testing.assert_allclose(free["se"].to_numpy(), np.array(r["SE"], float), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(free["se_std"].to_numpy(), np.array(r["STDSE"], float), rtol=1e-4, atol=1e-6)
    f = res.fit_all.row(0, named=True)
    assert f["df"] == int(float(r["FIT"][1]))
    assert f["chisq"] == pytest.approx(float(r["FIT"][0]), rel=1e-4)
    assert f["AIC"] == pytest.approx(float(r["FIT"][0]) + 2 * float(r["FIT"][2]), rel=1e-4)
