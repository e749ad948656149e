"""The model language of user_gwas: one parser (polgen.gsem.syntax), labels and equality
constraints (one shared parameter), bounds (active set, as lavaan's constrained solution), defined
parameters (delta method with the sandwich covariance), ``sub=`` on defined parameters.

R parity (per-SNP lavaan calls with lavaan's constrained sandwich, see
tests/test_gsem_gwas_rparity.py; stored R outputs, tests/data/gsem/r/usergwas/) for
``fix_measurement=FALSE``; R's userGWAS itself cannot be the
reference here: with fix_measurement=TRUE it re-attaches ``.pN. == .pM.`` rows to the wrong
parameters, and its bread ignores the constraints (singular for shared labels).
"""

from __future__ import annotations

import importlib

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from test_gsem_gwas_rparity import BOUND_FM, compare, stored_cases, stored_inputs

from polgen.errors import ModelError
from polgen.gsem.gwas import user_gwas
from polgen.gsem.syntax import parse_model

BASE = "F1 =~ T1 + l2*T2 + l3*T3\nF2 =~ T4 + T5\n"
EQ = BASE + "F1 ~ b*SNP\nF2 ~ b*SNP\nl2 == l3"
BOUNDS = BASE + "F1 ~ b1*SNP\nF2 ~ b2*SNP\nb1 > 0.001\nb2 < 0.002\nd := b1 - b2\nh := l2*b1"


@pytest.fixture(scope="module")
def data():
    """The synthetic covstruc and 20 SNPs the stored R outputs were made on."""
    return stored_inputs()


@pytest.fixture(scope="module")
def r_constraints():
    cases = stored_cases()
    assert [cases[c][0] for c in ("eq", "bounds", "bound_fm")] == [EQ, BOUNDS, BOUND_FM]
    return {c: cases[c][1] for c in ("eq", "bounds", "bound_fm")}


def test_equality_constraints_match_lavaan(r_constraints, data):
    """Shared label on the SNP effects, 'l2 == l3' on loadings: one parameter each; est, SE
    (lavaan's constrained sandwich), chisq, df (two fewer parameters) as lavaan."""
    cov, snps = data
    ours = user_gwas(snps.head(8), cov, EQ, fix_measurement=False, long=True)
    j = compare(r_constraints["eq"], ours)
    f = ours.filter(pl.col("op") == "~")
    np.testing.assert_array_equal(f["est"][0::2].to_numpy(), f["est"][1::2].to_numpy())
    l2 = ours.filter(pl.col("rhs") == "T2", pl.col("op") == "=~")["est"].to_numpy()
    l3 = ours.filter(pl.col("rhs") == "T3", pl.col("op") == "=~")["est"].to_numpy()
    np.testing.assert_array_equal(l2, l3)
    assert set(j["df"].to_list()) == {9.0}  # 21 moments - 12 parameters (14 rows, 2 ties)


def test_bounds_and_defined_match_lavaan(r_constraints, data):
    """'b1 > 0.001', 'b2 < 0.002': SNPs whose free estimate leaves the interval are held at the
    bound (SE NA as lavaan), the others keep their free fit; ':=' SEs by the delta method with
    the constrained sandwich, as lavaan."""
    cov, snps = data
    ours = user_gwas(snps.head(6), cov, BOUNDS, fix_measurement=False, long=True)
    compare(r_constraints["bounds"], ours)
    b1 = ours.filter(pl.col("lhs") == "F1", pl.col("rhs") == "SNP")
    b2 = ours.filter(pl.col("lhs") == "F2", pl.col("rhs") == "SNP")
    held1 = b1["se"].is_nan().to_numpy()
    held2 = b2["se"].is_nan().to_numpy()
    assert held1.any() and (~held1).any() and held2.any() and (~held2).any()
    assert (b1["est"].to_numpy()[held1] == 0.001).all() and (b1["est"].to_numpy()[~held1] > 0.001).all()
    assert (b2["est"].to_numpy()[held2] == 0.002).all() and (b2["est"].to_numpy()[~held2] < 0.002).all()
    assert b1["converged"].all()


def test_bound_with_fixed_measurement_matches_r_usergwas(r_constraints, data):
    """R's userGWAS itself with GenomicSEM's usual guard 'T5 ~~ a*T5; a > 0.06' (binding) and
    fix_measurement=TRUE: estimates (a held at 0.06), chisq and df as R.  SEs differ by design:
    R's sandwich ignores the active constraint (an SE for the held parameter, which stays in the
    bread); polgen's is lavaan's constrained one (NaN for the held parameter, lavaan's NA)."""
    cov, snps = data
    ours = user_gwas(snps.head(3), cov, BOUND_FM, long=True)
    compare(r_constraints["bound_fm"], ours, se=False)
    a = ours.filter(pl.col("lhs") == "T5", pl.col("op") == "~~")
    assert (a["est"] == 0.06).all() and a["se"].is_nan().all()
    assert np.isfinite(ours.filter(pl.col("op") == "~", pl.col("rhs") == "SNP")["se"].to_numpy()).all()


# -- no R reference ---------------------------------------------------------------------------------
def test_one_parser_one_table():
    """The GWAS modules parse with polgen.gsem.syntax and define no parameter table, parser or
    compiled model of their own: one ParTable (syntax), one CompiledModel (ram)."""
    mods = [
        importlib.import_module(f"polgen.gsem.{m}") for m in ("gwas", "gwas_plan", "gwas_batch", "gwas_commonfactor")
    ]
    for mod in mods:
        for name in (
            "split_statements",
            "parse_statements",
            "_parse_term",
            "_OPS",
            "lavaanify",
            "compile_ram",
            "ParRow",
            "ParTable",
            "CompiledModel",
        ):
            obj = getattr(mod, name, None)
            assert obj is None or getattr(obj, "__module__", "") in ("polgen.gsem.syntax", "polgen.gsem.ram"), (
                mod.__name__,
                name,
            )
    from polgen.gsem.gwas_plan import plan_user

    model = "F1 =~ NA*T1 + T2 + a*T3\nF1 ~ SNP\nF1 ~~ 1*F1\nT2 ~~ T3"
    cov = {"S": np.eye(3) * 0.4 + 0.1, "V": np.eye(6) * 1e-4, "I": np.eye(3), "trait_names": ["T1", "T2", "T3"]}
    plan = plan_user(None, cov, model, "DWLS", "standard", False, False, False, False, None, False, None, None, True)
    ref = parse_model(model, fixed_x=False)
    assert [r[:3] for r in plan.out_rows] == [(r.lhs, r.op, r.rhs) for r in ref.rows]
    assert plan.npar == ref.n_free


def test_label_and_equality_forms_agree(data):
    cov, snps = data
    snps = snps.head(6)
    a = user_gwas(snps, cov, BASE + "F1 ~ b*SNP\nF2 ~ b*SNP")
    b = user_gwas(snps, cov, BASE + "F1 ~ b1*SNP\nF2 ~ b2*SNP\nb1 == b2")
    assert_frame_equal(a, b)
    assert a["chisq_df"][0] == user_gwas(snps, cov, BASE + "F1 ~ SNP\nF2 ~ SNP")["chisq_df"][0] + 1
    # 'label == number' fixes the parameter
    c = user_gwas(snps, cov, BASE + "F1 ~ b1*SNP\nF2 ~ b2*SNP\nb2 == 0", long=True)
    f2 = c.filter(pl.col("lhs") == "F2", pl.col("rhs") == "SNP")
    assert (f2["est"] == 0).all() and f2["se"].is_nan().all()


def test_defined_parameter_identities(data):
    """d := 2*b1 has est 2 b1 and SE 2 se(b1); d := b1 the same numbers as b1 (delta method)."""
    cov, snps = data
    snps = snps.head(6)
    res = user_gwas(snps, cov, BASE + "F1 ~ b1*SNP\nF2 ~ b2*SNP\nd := 2*b1\ne := b1\ng := exp(b1) - 1")
    b1 = res.filter(pl.col("lhs") == "F1")
    d = res.filter(pl.col("lhs") == "d")
    e = res.filter(pl.col("lhs") == "e")
    g = res.filter(pl.col("lhs") == "g")
    np.testing.assert_allclose(d["est"].to_numpy(), 2 * b1["est"].to_numpy(), rtol=1e-14)
    np.testing.assert_allclose(d["se"].to_numpy(), 2 * b1["se"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(e["se"].to_numpy(), b1["se"].to_numpy(), rtol=1e-9)
    x = b1["est"].to_numpy()
    np.testing.assert_allclose(g["est"].to_numpy(), np.expm1(x), rtol=1e-9)
    np.testing.assert_allclose(g["se"].to_numpy(), np.exp(x) * b1["se"].to_numpy(), rtol=1e-9)
    assert d["rhs"][0] == "2*b1" and d["op"][0] == ":="
    ml = user_gwas(snps, cov, BASE + "F1 ~ b1*SNP\nF2 ~ b2*SNP\nd := 2*b1", estimation="ML")
    dm = ml.filter(pl.col("lhs") == "d")
    assert dm["se"].is_nan().all() and np.isfinite(dm["est"].to_numpy()).all()  # as R: no ML SE


def test_bounds_with_fixed_measurement_and_batches(data):
    """With fix_measurement=TRUE (where R cannot take constraints on SNP labels), a SNP whose free
    fit leaves the bound is refit with it held; the others are untouched; results do not depend
    on the batch size."""
    cov, snps = data
    free = user_gwas(snps, cov, BASE + "F1 ~ b1*SNP\nF2 ~ b2*SNP")
    model = BASE + "F1 ~ b1*SNP\nF2 ~ b2*SNP\nb1 > 0.001"
    res = user_gwas(snps, cov, model, batch_size=10_000)
    b1 = res.filter(pl.col("lhs") == "F1")
    b1_free = free.filter(pl.col("lhs") == "F1")
    viol = b1_free["est"].to_numpy() < 0.001
    assert viol.any() and (~viol).any()
    assert (b1["est"].to_numpy()[viol] == 0.001).all() and b1["se"].is_nan().to_numpy()[viol].all()
    np.testing.assert_allclose(b1["est"].to_numpy()[~viol], b1_free["est"].to_numpy()[~viol], rtol=1e-12)
    chi, chi_free = b1["chisq"].to_numpy(), b1_free["chisq"].to_numpy()
    assert (chi[viol] > chi_free[viol]).all()
    assert res["converged"].all() and res["chisq_df"][0] == free["chisq_df"][0]
    for bs in (1, 7):
        assert_frame_equal(user_gwas(snps, cov, model, batch_size=bs), res)


def test_sub_selects_defined_and_bad_constraints_raise(data):
    cov, snps = data
    snps = snps.head(3)
    model = BASE + "F1 ~ b1*SNP\nF2 ~ b2*SNP\nd := b1 - b2"
    a = user_gwas(snps, cov, model, sub="d")
    b = user_gwas(snps, cov, model, sub=["d := b1 - b2"])
    assert_frame_equal(a, b)
    assert a["lhs"].to_list() == ["d"] * 3
    with pytest.raises(ModelError, match="not in the model"):
        user_gwas(snps, cov, model, sub="e")
    # general constraints on SNP effects are fitted now (test_gwas_constraints_snp.py); these stay errors
    for bad in ("b1 == zz", "b1 == 0\nb2 == 0.1\nb1 == b2", "b1 + b2 == 0.01\nb1 + b2 == 0.02"):
        with pytest.raises(ModelError):
            user_gwas(snps, cov, BASE + "F1 ~ b1*SNP\nF2 ~ b2*SNP\n" + bad)
    with pytest.raises(ModelError, match="exclude"):
        user_gwas(snps, cov, BASE + "F1 ~ b1*SNP\nF2 ~ b2*SNP\nb1 > 1\nb1 < 0")


def test_non_finite_defined_parameter_is_reported(data):
    """A defined parameter that is not finite at a SNP's estimates (0 denominator) is NaN-free
    in its meaning: est inf, se NaN, and the SNP's warning says so (never a silent value)."""
    cov, snps = data
    res = user_gwas(snps.head(3), cov, BASE + "F1 ~ b1*SNP\nF2 ~ b2*SNP\nr := b1/(b2 - b2)")
    r = res.filter(pl.col("lhs") == "r")
    assert np.isinf(r["est"].to_numpy()).all() and r["se"].is_nan().all()
    assert all("defined parameter (r)" in w for w in res["warning"].to_list())
