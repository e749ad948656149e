"""user_gwas(fix_measurement=False) on the re-identified common-factor model goes through
commonfactorGWAS's reduced problem (polgen.gsem.gwas_cfuser, issue 18): which models qualify, and
the numbers against the general multi-start RAM fit on the PGC ANX/OCD/PTSD covstruc (a Heywood
case: many SNPs have no finite minimum) - the same minima, SEs and statistics where both converge,
an objective never above the general fit's on more than a handful of multi-modal SNPs, and the R
fixture's SNPs (test_gwas_fm_false_ridge.py) through user_gwas."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from constraint_fixtures import R, covstruc_of

from polgen.gsem.gwas_batch import extract_inputs, run_stage
from polgen.gsem.gwas_cfuser import cfu_stage1, cfu_structure
from polgen.gsem.gwas_plan import plan_user, resolve_columns
from polgen.gsem.syntax import parse_model
from polgen.kernels.gwas_codes import ST_NOFINITE, ST_OK

D = R / "fm_false_ridge"
TRAITS = ["T1", "T2", "T3"]
MODEL = "F1 =~ NA*T1 + T2 + T3\nF1 ~ SNP\nF1 ~~ 1*F1\nSNP ~~ SNP"


def _covstruc() -> dict:
    return covstruc_of(D, TRAITS)


def _snps(n: int, seed: int = 7) -> pl.DataFrame:
    """Sumstats like the bench's: correlated z across the traits, SEs 0.01-0.05."""
    rng = np.random.default_rng(seed)
    se = rng.uniform(0.01, 0.05, (n, 3))
    z = 0.6 * rng.normal(0, 1, (n, 1)) + 0.8 * rng.normal(0, 1, (n, 3))
    cols = {"SNP": [f"rs{i}" for i in range(n)], "MAF": rng.uniform(0.01, 0.5, n), "A1": ["A"] * n, "A2": ["G"] * n}
    for j, t in enumerate(TRAITS):
        cols[f"beta.{t}"] = z[:, j] * se[:, j]
        cols[f"se.{t}"] = se[:, j]
    return pl.DataFrame(cols)


def _plan(df: pl.DataFrame, model: str = MODEL, **kw):
    args = dict(estimation="DWLS", fix_measurement=False, std_lv=False)
    args.update(kw)
    plan = plan_user(
        None,
        _covstruc(),
        model,
        args["estimation"],
        "standard",
        args["fix_measurement"],
        args["std_lv"],
        False,
        False,
        None,
        False,
        None,
        None,
        None,
    )
    plan.beta_cols, plan.se_cols, plan.id_cols, plan.var_col = resolve_columns(dict(df.schema), plan.traits, plan.twas)
    return plan


@pytest.mark.parametrize(
    "model, eligible",
    [
        (MODEL, True),
        ("F1 =~ NA*T2 + T1 + T3\nF1 ~ SNP\nF1 ~~ 2*F1\nSNP ~~ SNP", True),  # any order, any fixed variance
        ("F1 =~ NA*T1 + T2 + T3\nF1 ~ SNP\nF1 ~~ 1*F1\nSNP ~~ SNP\nT1 ~~ T2", False),  # a residual covariance
        ("F1 =~ NA*T1 + a*T2 + a*T3\nF1 ~ SNP\nF1 ~~ 1*F1\nSNP ~~ SNP", False),  # equal loadings
        ("F1 =~ NA*T1 + T2\nF1 ~ SNP\nF1 ~~ 1*F1\nSNP ~~ SNP", False),  # not every trait
        ("F1 =~ T1 + T2 + T3\nF1 ~ SNP\nSNP ~~ SNP", False),  # factor variance free (R's own model)
        ("F1 =~ NA*T1 + T2 + T3\nF1 ~ SNP\nF1 ~~ 1*F1\nSNP ~~ SNP\nT1 ~ 0*SNP", False),  # another line
    ],
)
def test_which_models_take_the_reduced_problem(model, eligible):
    plan = _plan(_snps(5), model)
    assert (plan.stage1.cfu is not None) is eligible
    assert _plan(_snps(5), MODEL, estimation="ML").stage1.cfu is None
    assert _plan(_snps(5), MODEL, fix_measurement=True).stage1.cfu is None


def test_structure_maps_the_user_parameters():
    pt = parse_model(MODEL, std_lv=False, fixed_x=False)
    from polgen.gsem.constraints import number_parameters

    num = number_parameters(pt)
    cfu = cfu_structure(
        pt, num, TRAITS, "SNP", {("F1", "=~", "T1"): 0.5, ("F1", "=~", "T2"): 0.25, ("F1", "=~", "T3"): -1.0}, False
    )
    assert cfu is not None and cfu["c"] == 1.0
    # lambda'_1..3, b', v, theta_1..3 in the user's numbering
    assert cfu["pidx"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    # warm start in the reduced chart: l_t = lambda'_t / lambda'_1, phi = c lambda'_1^2
    np.testing.assert_allclose(cfu["starts"][0], [0.5, -2.0, 0.25])
    # the psi > 0 search's directions: the warm start and its 13 sign patterns / scales / lavaan's
    # default first, then fixed random ones; each with its nearest directions (never itself)
    dirs, nbr = cfu["dirs"], cfu["nbr"]
    np.testing.assert_array_equal(dirs[:14], cfu["starts"][:14, :2])
    assert 400 < len(dirs) < 14 + 512 and nbr.shape == (len(dirs), 8)
    assert not (nbr == np.arange(len(dirs))[:, None]).any()
    w = np.column_stack([np.ones(len(dirs)), dirs])
    w /= np.linalg.norm(w, axis=1)[:, None]
    cos = np.abs(w @ w.T)
    np.fill_diagonal(cos, -1.0)
    # the neighbours are the 8 nearest by angle
    np.testing.assert_allclose(np.take_along_axis(cos, nbr, 1)[:, -1], np.sort(cos, axis=1)[:, -8])


def test_reduced_problem_equals_the_general_multistart_fit():
    df = _snps(600)
    plan = _plan(df)
    beta, se, var = extract_inputs(plan, df)
    new = cfu_stage1(plan, beta, se, var, run_stage)
    old = run_stage(plan, plan.stage1, beta, se, var)
    plan.canonical_signs(new["est"])
    plan.canonical_signs(old["est"])
    ok_n, ok_o = new["status"] == ST_OK, old["status"] == ST_OK
    # a Heywood covstruc: many SNPs without a finite minimum, reported as such by both
    assert (old["status"] == ST_NOFINITE).sum() > 30
    assert abs(int(ok_n.sum()) - int(ok_o.sum())) <= 3
    assert ((new["status"] == ST_NOFINITE) == (old["status"] == ST_NOFINITE)).mean() > 0.99
    both = ok_n & ok_o
    rel = (new["fmin"][both] - old["fmin"][both]) / np.abs(old["fmin"][both])
    assert (rel > 1e-8).sum() <= 3  # a lower minimum the reduced problem's starts missed: rare
    same = both.copy()
    same[both] = np.abs(rel) <= 1e-8
    assert same.sum() > 0.95 * both.sum()
    # the same minimum: the same estimates, SEs and chi-square (to the fits' tolerances)
    d_est = np.abs(new["est"][same] - old["est"][same]) / old["se"][same]
    assert np.nanmax(d_est) < 5e-4
    np.testing.assert_allclose(new["se"][same], old["se"][same], rtol=2e-3)
    np.testing.assert_allclose(new["chisq"][same], old["chisq"][same], rtol=1e-4, atol=1e-6)
    # not converged: no estimates, no SEs
    assert np.isnan(new["se"][~ok_n]).all()


def test_results_do_not_depend_on_the_batch():
    df = _snps(300, seed=3)
    plan = _plan(df)
    beta, se, var = extract_inputs(plan, df)
    whole = cfu_stage1(plan, beta, se, var, run_stage)
    for a, b in ((0, 97), (97, 300)):
        part = cfu_stage1(plan, beta[a:b], se[a:b], var[a:b], run_stage)
        np.testing.assert_array_equal(part["status"], whole["status"][a:b])
        np.testing.assert_array_equal(part["est"], whole["est"][a:b])
        np.testing.assert_array_equal(part["se"], whole["se"][a:b])
