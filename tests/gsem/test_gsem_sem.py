"""SEM engine and GenomicSEM model functions against the R fixtures in tests/data/gsem/fixtures
(copies of ../shared/fixtures/gsem).

Tolerances (from the brief): estimates 1e-4, SEs 1e-4, chi-square 1e-3, CFI/SRMR 1e-5,
linear algebra 1e-10.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import polars as pl
import pytest

from conftest import gsem_fixture
from polgen.errors import ModelError, ModelSyntaxError, NotPositiveDefiniteError
from polgen.gsem.covstruc import CovStruc
from polgen.gsem.fit_models import commonfactor, rgmodel, usermodel, write_model
from polgen.gsem.matrix import vech
from polgen.gsem.ram import compile_model
from polgen.gsem.sem import fit_sem, model_chisq, sandwich, srmr
from polgen.gsem.syntax import parse_model

EST_TOL = 1e-4
SE_TOL = 1e-4
CHI_TOL = 1e-3
FIT_TOL = 1e-5


def _fx(*parts):
    return json.loads(gsem_fixture(*parts).read_text())


def _cs(d):
    k = len(d["s"])
    return {"S": d["s"], "V": d["v"], "trait_names": [f"V{i + 1}" for i in range(k)]}


def _lookup(params: pl.DataFrame, lhs, op, rhs, col):
    row = params.filter((pl.col("lhs") == lhs) & (pl.col("op") == op) & (pl.col("rhs") == rhs))
    if row.height == 0 and op == "~~":
        row = params.filter((pl.col("lhs") == rhs) & (pl.col("op") == op) & (pl.col("rhs") == lhs))
    assert row.height == 1, (lhs, op, rhs)
    return row[col][0]


# -------------------------------------------------------------------------------------------
# engine-level fixtures (lavaan sem() fits)
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [("sem_1factor.json",), ("sem_2factor.json",), ("newer", "sem_3factor.json")])
def test_dwls_estimates_and_fit_match_fixture(name):
    d = _fx(*name)
    S, V = np.array(d["s"]), np.array(d["v"])
    cm = compile_model(d["model"])
    fit = fit_sem(cm, S, V=V)
    assert fit.converged
    for e in d["estimates"]:
        i = cm.table.index(e["lhs"], e["op"], e["rhs"])
        assert fit.values[i] == pytest.approx(e["est"], abs=EST_TOL), e
    if "sandwich_se" in d:
        se = np.sqrt(np.diag(sandwich(fit, V)))
        np.testing.assert_allclose(se, d["sandwich_se"], rtol=0, atol=SE_TOL)
    fi = d["fit_indices"]
    assert fit.df == fi["df"]
    q = model_chisq(vech(S - fit.sigma), V)
    assert q == pytest.approx(fi["chisq"], abs=CHI_TOL)
    assert srmr(S, fit.sigma) == pytest.approx(fi["srmr"], abs=FIT_TOL)


def test_heywood_two_factor_lands_on_negative_residual():
    d = _fx("sem_2factor.json")
    res = usermodel(_cs(d), d["model"])
    # the fixture's lavaan solution has V3 ~~ V3 = -0.15 (Heywood); fix_resid must not kick in
    assert _lookup(res.parameters, "V3", "~~", "V3", "est") == pytest.approx(-0.15, abs=EST_TOL)
    # lavaan's "some estimated ov variances are negative", no fix_resid refit
    assert res.converged and res.warnings == ["some estimated residual variances are negative (V3): a Heywood solution"]
    for e, se in zip(d["estimates"], d["sandwich_se"]):
        assert _lookup(res.parameters, e["lhs"], e["op"], e["rhs"], "est") == pytest.approx(e["est"], abs=EST_TOL)
        assert _lookup(res.parameters, e["lhs"], e["op"], e["rhs"], "se") == pytest.approx(se, abs=SE_TOL)
    fa = res.fit_all.row(0, named=True)
    assert fa["df"] == 1
    assert fa["chisq"] == pytest.approx(d["fit_indices"]["chisq"], abs=CHI_TOL)
    assert fa["p_chisq"] == pytest.approx(d["fit_indices"]["p_chisq"], abs=1e-6)
    assert fa["CFI"] == pytest.approx(d["fit_indices"]["cfi"], abs=FIT_TOL)
    assert fa["SRMR"] == pytest.approx(d["fit_indices"]["srmr"], abs=FIT_TOL)


def test_commonfactor_fixture():
    d = _fx("commonfactor.json")
    res = commonfactor(_cs(d))
    p = res.parameters
    assert p["lhs"].to_list() == [e["lhs"] for e in d["parameters"]]
    np.testing.assert_allclose(p["est"].to_numpy(), [e["est"] for e in d["parameters"]], atol=EST_TOL, rtol=0)
    np.testing.assert_allclose(p["se"].to_numpy(), d["sandwich_se"], atol=SE_TOL, rtol=0)
    fa = res.fit_all.row(0, named=True)
    assert fa["chisq"] == pytest.approx(d["chisq"], abs=CHI_TOL)
    assert fa["df"] == d["df"]
    assert fa["CFI"] == pytest.approx(d["cfi"], abs=FIT_TOL)
    assert fa["SRMR"] == pytest.approx(d["srmr"], abs=FIT_TOL)
    # R commonfactor blanks chisq/AIC/p_chisq for df == 0 but keeps CFI and SRMR
    f = res.fit.row(0, named=True)
    assert f["chisq"] is None and f["AIC"] is None and f["p_chisq"] is None
    assert f["CFI"] == pytest.approx(1.0)
    assert res.genomicsem().columns == [
        "lhs",
        "op",
        "rhs",
        "Unstandardized_Estimate",
        "Unstandardized_SE",
        "Standardized_Est",
        "Standardized_SE",
        "p_value",
    ]


def test_sem_1factor_usermodel_fixture_and_saturated_blanks():
    d = _fx("sem_1factor.json")
    res = usermodel(_cs(d), d["model"], imp_cov=True)
    for e, se in zip(d["estimates"], d["sandwich_se"]):
        assert _lookup(res.parameters, e["lhs"], e["op"], e["rhs"], "est") == pytest.approx(e["est"], abs=EST_TOL)
        assert _lookup(res.parameters, e["lhs"], e["op"], e["rhs"], "se") == pytest.approx(se, abs=SE_TOL)
    fa = res.fit_all.row(0, named=True)
    assert fa["chisq"] == pytest.approx(0.0, abs=CHI_TOL) and fa["df"] == 0
    assert fa["SRMR"] == pytest.approx(d["fit_indices"]["srmr"], abs=FIT_TOL)
    assert fa["CFI"] == pytest.approx(d["fit_indices"]["cfi"], abs=FIT_TOL)
    f = res.fit.row(0, named=True)
    assert all(f[k] is None for k in ("chisq", "AIC", "p_chisq", "CFI", "SRMR"))  # R: NA when df == 0
    np.testing.assert_allclose(res.implied.drop("trait").to_numpy(), _fx("commonfactor.json")["implied_cov"], atol=1e-8)
    # fixed rows come last, with the fixed value
    last = res.parameters.row(-1, named=True)
    assert (last["lhs"], last["op"], last["rhs"], last["est"]) == ("F1", "~~", "F1", 1.0)


def test_misspecified_fit_indices():
    d = _fx("newer", "sem_misspecified.json")
    res = usermodel(_cs(d), d["model"])
    f = res.fit.row(0, named=True)
    fi = d["fit_indices"]
    assert f["df"] == fi["df"]
    assert f["chisq"] == pytest.approx(fi["chisq"], abs=CHI_TOL)
    assert f["p_chisq"] == pytest.approx(fi["p_chisq"], rel=1e-5)
    assert f["CFI"] == pytest.approx(fi["cfi"], abs=FIT_TOL)
    assert f["SRMR"] == pytest.approx(fi["srmr"], abs=FIT_TOL)
    assert f["AIC"] == pytest.approx(fi["chisq"] + 2 * 8, abs=CHI_TOL)


def test_ml_one_factor_fixture():
    d = _fx("newer", "sem_1factor_ml.json")
    S = np.array(d["s"])
    cm = compile_model(d["model"])
    fit = fit_sem(cm, S, estimator="ML")
    for e in d["estimates"]:
        assert fit.values[cm.table.index(e["lhs"], e["op"], e["rhs"])] == pytest.approx(e["est"], abs=EST_TOL)
    # through usermodel too (V only enters the SEs)
    res = usermodel({"S": S, "V": np.eye(6) * 1e-3, "trait_names": ["V1", "V2", "V3"]}, d["model"], estimation="ML")
    for e in d["estimates"]:
        assert _lookup(res.parameters, e["lhs"], e["op"], e["rhs"], "est") == pytest.approx(e["est"], abs=EST_TOL)


def test_rgmodel_fixture():
    d = _fx("newer", "rgmodel.json")
    rg = rgmodel(_cs(d))
    np.testing.assert_allclose(rg.R, d["r"], rtol=0, atol=EST_TOL)
    np.testing.assert_allclose(rg.V_R, d["v_r"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(
        rg.R,
        np.diag(1 / np.sqrt(np.diag(d["s"]))) @ np.array(d["s"]) @ np.diag(1 / np.sqrt(np.diag(d["s"]))),
        atol=1e-7,
    )


def test_write_model_fixture():
    d = _fx("newer", "write_model.json")
    text = write_model(np.array(d["loadings"]), d["names"], d["cutoff"])
    t = parse_model(text)
    assert t.latent == d["factors"]
    for f, inds in zip(d["factors"], d["indicators"]):
        assert [r.rhs for r in t.rows if r.op == "=~" and r.lhs == f] == inds
    # fix_resid: every used trait gets a residual variance bounded at 1e-4
    for name in d["names"]:
        r = t.rows[t.index(name, "~~", name)]
        assert r.lower == pytest.approx(1e-4) and r.label
    # common / bifactor / mustload variants parse and have the expected structure
    t2 = parse_model(write_model(np.array(d["loadings"]), d["names"], d["cutoff"], common=True, fix_resid=False))
    assert [r.rhs for r in t2.rows if r.op == "=~"] == d["names"]
    t3 = parse_model(write_model(np.array(d["loadings"]), d["names"], d["cutoff"], bifactor=True))
    assert "Common_F" in t3.latent
    assert t3.rows[t3.index("Common_F", "~~", "F1")].ustart == 0.0
    t4 = parse_model(write_model(np.array(d["loadings"]), d["names"], 0.9, mustload=True, fix_resid=False))
    assert sorted(r.rhs for r in t4.rows if r.op == "=~") == sorted(d["names"])


# -------------------------------------------------------------------------------------------
# behaviour
# -------------------------------------------------------------------------------------------
def test_compiled_model_jacobian_and_pickle():
    cm = compile_model("F1 =~ V1 + V2 + V3\nF2 =~ V4 + V5 + V6\nF2 ~ F1 + SNP\nF1 ~ SNP\nV1 ~~ V4")
    rng = np.random.default_rng(0)
    th = rng.uniform(0.2, 0.8, cm.n_free)
    S = np.eye(cm.p) * 2
    A0, S0 = cm.base_matrices(S)
    sig, J = cm.implied_jacobian(th, A0, S0)
    h = 1e-6
    for k in range(cm.n_free):
        e = np.zeros_like(th)
        e[k] = h
        num = (cm.sample_vech(cm.implied(th + e, A0, S0)) - cm.sample_vech(cm.implied(th - e, A0, S0))) / (2 * h)
        np.testing.assert_allclose(J[:, k], num, atol=1e-8)
    cm2 = pickle.loads(pickle.dumps(cm))
    np.testing.assert_array_equal(cm2.implied(th, A0, S0), sig)
    assert cm.exo_row.tolist() == [cm.observed.index("SNP")]


def test_std_lv_and_equality_labels():
    d = _fx("newer", "sem_3factor.json")
    cs = _cs(d)
    res = usermodel(cs, "F1 =~ V1 + V2\nF2 =~ V3 + V4\nF3 =~ V5 + V6", std_lv=True)
    assert _lookup(res.parameters, "F1", "=~", "V1", "est") == pytest.approx(0.7, abs=EST_TOL)
    assert _lookup(res.parameters, "F2", "~~", "F3", "est") == pytest.approx(0.35, abs=EST_TOL)
    # equal loadings via a shared label: estimates equal, df grows by one
    res2 = usermodel(cs, "F1 =~ NA*V1 + V2\nF2 =~ NA*V3 + a*V4\nF3 =~ NA*V5 + a*V6\nF1~~1*F1\nF2~~1*F2\nF3~~1*F3")
    a4 = _lookup(res2.parameters, "F2", "=~", "V4", "est")
    a6 = _lookup(res2.parameters, "F3", "=~", "V6", "est")
    assert a4 == pytest.approx(a6, abs=1e-10)
    assert res2.fit_all["df"][0] == 7


def test_defined_parameter_delta_method_matches_numeric():
    d = _fx("newer", "sem_3factor.json")
    model = (
        "F1 =~ NA*V1 + a*V2\nF2 =~ NA*V3 + b*V4\nF3 =~ NA*V5 + V6\nF1~~1*F1\nF2~~1*F2\nF3~~1*F3\n"
        "ab := a*b\nratio := a/b"
    )
    res = usermodel(_cs(d), model)
    p = res.parameters
    a, b = _lookup(p, "F1", "=~", "V2", "est"), _lookup(p, "F2", "=~", "V4", "est")
    assert _lookup(p, "ab", ":=", "a*b", "est") == pytest.approx(a * b, abs=1e-10)
    # delta method by hand with the sandwich vcov
    fit = res.unstandardized_fit
    ia = [r.free for r in res.table.rows if r.label == "a"][0] - 1
    ib = [r.free for r in res.table.rows if r.label == "b"][0] - 1
    g = np.zeros(fit.theta.size)
    g[ia], g[ib] = b, a
    want = np.sqrt(g @ res.vcov @ g)
    assert _lookup(p, "ab", ":=", "a*b", "se") == pytest.approx(want, rel=1e-8)


def test_traits_not_in_model_are_dropped_and_order_is_lavaan():
    d = _fx("newer", "sem_3factor.json")
    cs = _cs(d)
    # reversed trait order in the model: lavaan order V6, V5, V4 ... must not change the answer
    res = usermodel(cs, "F3 =~ NA*V6 + V5\nF2 =~ NA*V4 + V3\nF3~~1*F3\nF2~~1*F2")
    ref = usermodel(
        {"S": np.array(d["s"])[2:, 2:], "V": np.eye(10) * 1e-3, "trait_names": ["V3", "V4", "V5", "V6"]},
        "F2 =~ NA*V3 + V4\nF3 =~ NA*V5 + V6\nF3~~1*F3\nF2~~1*F2",
    )
    for key in [("F3", "=~", "V6"), ("F2", "=~", "V3"), ("F2", "~~", "F3")]:
        assert _lookup(res.parameters, *key, "est") == pytest.approx(_lookup(ref.parameters, *key, "est"), abs=1e-8)
        assert _lookup(res.parameters, *key, "se") == pytest.approx(_lookup(ref.parameters, *key, "se"), rel=1e-6)
    assert res.fit_all["chisq"][0] == pytest.approx(ref.fit_all["chisq"][0], rel=1e-6)


def test_non_pd_s_is_smoothed_with_warning(caplog):
    S = np.array([[0.5, 0.45, 0.45, 0.1], [0.45, 0.5, -0.05, 0.1], [0.45, -0.05, 0.5, 0.1], [0.1, 0.1, 0.1, 0.5]])
    assert np.linalg.eigvalsh(S)[0] < 0
    cs = {"S": S, "V": np.eye(10) * 1e-3, "trait_names": ["V1", "V2", "V3", "V4"]}
    with caplog.at_level("WARNING", logger="polgen"):
        res = commonfactor(cs)
    assert res.smoothing["S_diff"] > 0
    assert any("smoothed" in r.message for r in caplog.records)


def test_bad_inputs():
    d = _fx("newer", "sem_3factor.json")
    cs = _cs(d)
    with pytest.raises(ModelError, match="V9"):
        usermodel(cs, "F1 =~ V1 + V2 + V9")
    with pytest.raises(ModelSyntaxError, match="line 2"):
        usermodel(cs, "F1 =~ V1 + V2\nF1 =~ + V3")
    with pytest.raises(ModelError, match="not identified"):
        usermodel(cs, "F1 =~ NA*V1 + V2\nV1 ~~ V2")  # 5 parameters for 3 moments
    with pytest.raises(ModelError, match="not identified"):
        # two free loadings and a free factor variance: rank-deficient Jacobian
        usermodel(cs, "F1 =~ NA*V1 + V2 + V3")
    with pytest.raises(ModelError, match="only 2 traits"):
        commonfactor({"S": np.eye(2), "V": np.eye(3), "trait_names": ["A", "B"]})
    bad_v = -np.eye(21)
    with pytest.raises(NotPositiveDefiniteError, match="V"):
        usermodel({"S": d["s"], "V": bad_v, "trait_names": cs["trait_names"]}, d["model"])
    with pytest.raises(ModelError, match="contradict"):
        usermodel(cs, "F1 =~ NA*V1 + a*V2\nF2 =~ NA*V3 + b*V4\nF1~~1*F1\nF2~~1*F2\na == b\na == b + 1")


def test_fix_resid_bounds_when_not_converged(monkeypatch):
    import polgen.gsem.fit_models as models_mod

    calls = []
    real = models_mod.fit_sem

    def fake(cm, S, **kw):
        fit = real(cm, S, **kw)
        calls.append([r.lower for r in cm.table.rows if r.op == "~~" and r.lhs == r.rhs and r.lhs in cm.observed])
        if len(calls) == 1:
            fit.converged = False
        return fit

    monkeypatch.setattr(models_mod, "fit_sem", fake)
    d = _fx("sem_2factor.json")
    model = "F1 =~ NA*V1 + V2\nF2 =~ NA*V3 + V4\nF1 ~~ 1*F1\nF2 ~~ 1*F2"
    # R's usermodel rule (lavaan with optim.force.converged): a finished fit is reported as it is
    res = usermodel(_cs(d), model)
    assert len(calls) == 2  # the fit and the standardized fit, no bounded refit
    assert not res.converged and "failed to converge" in res.warnings[0]
    assert _lookup(res.parameters, "V3", "~~", "V3", "est") < 0
    calls.clear()
    res = usermodel(_cs(d), model, fix_resid_when="nonconverged")
    assert all(lo == -np.inf for lo in calls[0])
    assert all(lo == pytest.approx(1e-4) for lo in calls[1])
    # with the bound the Heywood variance sits at the bound
    assert _lookup(res.parameters, "V3", "~~", "V3", "est") == pytest.approx(1e-4, abs=1e-9)
    assert "lower bound" in res.warnings[0]
    assert "abcd > .0001" in res.model


def test_covstruc_object_and_path(tmp_path):
    d = _fx("commonfactor.json")
    cs = CovStruc(S=np.array(d["s"]), V=np.array(d["v"]), I=np.eye(3), trait_names=["V1", "V2", "V3"])
    path = cs.save(tmp_path / "cs.json")
    a = commonfactor(cs).parameters["est"].to_numpy()
    b = commonfactor(str(path)).parameters["est"].to_numpy()
    np.testing.assert_allclose(a, b)


def test_pvalues_do_not_underflow():
    d = _fx("commonfactor.json")
    cs = _cs(d)
    cs["V"] = np.eye(6) * 1e-9  # tiny SEs -> z in the hundreds
    res = commonfactor(cs)
    p = res.parameters
    assert (p["log10p"] > 300).any()  # -log10(p), as the GWAS outputs
    assert p.filter(pl.col("log10p") > 330)["p"].to_list() == [0.0] * p.filter(pl.col("log10p") > 330).height
    assert p["log10p"].is_finite().all()


def test_sign_canonicalisation_and_start_independence():
    d = _fx("newer", "sem_3factor.json")
    S, V = np.array(d["s"]), np.array(d["v"])
    cm = compile_model(d["model"])
    ref = fit_sem(cm, S, V=V)
    # start from negative loadings: same objective, loadings flipped back to positive
    start = np.abs(ref.theta)
    for k in range(cm.n_free):
        if cm.table.rows[cm.par_table_row[k]].op == "=~":
            start[k] = -0.5
    fit = fit_sem(cm, S, V=V, start=start, restarts=0)
    assert fit.objective == pytest.approx(ref.objective, abs=1e-12)
    np.testing.assert_allclose(fit.theta, ref.theta, atol=1e-7)
    # a marker-identified factor is not flipped (its fixed loading 1 fixes the sign)
    cm2 = compile_model("F1 =~ V1 + V2\nF2 =~ V3 + V4\nF3 =~ V5 + V6")
    from polgen.gsem.sem import _flippable_latents

    assert _flippable_latents(cm2) == []
    assert len(_flippable_latents(cm)) == 3


def test_result_save_roundtrip(tmp_path):
    import pyarrow.parquet as pq

    d = _fx("commonfactor.json")
    res = commonfactor(_cs(d))
    path = res.save(tmp_path / "cf.parquet")
    back = pl.read_parquet(path)
    assert back.equals(res.parameters)
    md = pq.read_schema(path).metadata
    fit = json.loads(md[b"polgen.fit"])
    assert fit["df"] == 0 and fit["CFI"] == pytest.approx(1.0)
    assert b"F1 =~" in md[b"polgen.model"]
    res.save(tmp_path / "cf_r.parquet", genomicsem_names=True)
    assert "Unstandardized_Estimate" in pl.read_parquet(tmp_path / "cf_r.parquet").columns


def test_bound_on_parameter_inside_linear_constraint():
    d = _fx("newer", "sem_3factor.json")
    base = "F1 =~ NA*V1 + a*V2\nF2 =~ NA*V3 + b*V4\nF3 =~ NA*V5 + V6\nF1~~1*F1\nF2~~1*F2\nF3~~1*F3\na + b == 1.3\n"
    free = usermodel(_cs(d), base)
    pf = free.parameters
    b_free = pf.filter(pl.col("label") == "b")["est"][0]
    assert b_free > 0.5  # so that the bound below is active
    res = usermodel(_cs(d), base + "b < 0.5")
    p = res.parameters
    a, b = p.filter(pl.col("label") == "a")["est"][0], p.filter(pl.col("label") == "b")["est"][0]
    assert a + b == pytest.approx(1.3, abs=1e-9)
    assert b == pytest.approx(0.5, abs=1e-8)
    assert res.fit_all["df"][0] == free.fit_all["df"][0]  # inequalities do not change df (lavaan)
