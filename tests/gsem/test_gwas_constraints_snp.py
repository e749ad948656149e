"""Constraints on parameters estimated per SNP (issue 12), against R GenomicSEM's userGWAS
(tests/data/gsem/r/gwas_constraints/, made by tests/data/make/gsem_gwas_constraints.R).

What R does there, pinned by the stored outputs:

* fix_measurement=TRUE (R's default) with a constraint on SNP effects (``b1 == 2*b2``, ``b1 > b2``,
  ``b1 == b2^2``): R's userGWAS stops (its no-SNP fit keeps the constraint line, whose labels the
  SNP lines it dropped carried; "object 'ReorderModelnoSNP' not found").
* fix_measurement=FALSE: lavaan fits the constrained model per SNP, and R's sandwich takes lavaan's
  ``delta`` and ``WLS.V`` of that fit - the *unconstrained* bread ``(Delta' W Delta)^-1`` over every
  free parameter, evaluated at the constrained estimates (the SEs of ``b1`` and ``b2`` under
  ``b1 == 2*b2`` are not in ratio 2); lavaan's df counts the equalities (npar - n_eq), not the
  inequalities.

polgen fits linear constraints per SNP (kernels.gwas_constrained: null-space Gauss-Newton with an
active set for inequalities; non-linear ones by sequential linearisation in gsem/gwas_constrained, a held
non-linear inequality released on a negative multiplier) and
evaluates chi-square and the sandwich at the constrained estimates as R; checked against R where
R answers (fix_measurement=FALSE) and against a dense scipy SLSQP fit of the same objective where
R stops (fix_measurement=TRUE).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from constraint_fixtures import TRAITS, R, covstruc_of, read_csv, snps_of

from polgen.gsem import user_gwas
from polgen.gsem.gwas_batch import extract_inputs
from polgen.gsem.gwas_plan import plan_user, resolve_columns
from polgen.kernels.gwas_defined import defined_se_batch
from polgen.kernels.ram import implied_jacobian
from polgen.kernels.snp_matrices import add_batch
from polgen.kernels.snp_moments import snp_batch

D = R / "gwas_constraints"
BASE = "F1 =~ NA*T1 + T2 + T3\nF2 =~ NA*T4 + T5\nF1 ~~ 1*F1\nF2 ~~ 1*F2\nF1 ~~ F2\nF1 ~ b1*SNP\nF2 ~ b2*SNP\n"


@pytest.fixture(scope="module")
def covstruc() -> dict:
    return covstruc_of(D)


@pytest.fixture(scope="module")
def snps() -> pl.DataFrame:
    return snps_of(D)


@pytest.fixture(scope="module")
def ref() -> pl.DataFrame:
    return read_csv(D / "usergwas.csv")


def test_r_stops_on_snp_constraints_with_fixed_measurement(ref):
    """R's userGWAS has no answer for SNP-effect constraints under fix_measurement=TRUE."""
    for case in ("eq_lin", "ineq_12", "ineq_21", "nonlin"):
        rows = ref.filter(pl.col("case") == case)
        assert rows.height == 1 and rows["warning"][0].startswith("R error:")


def test_unconstrained_free_measurement_matches_r(covstruc, snps, ref):
    """The reference case: the same model without a constraint, fix_measurement=FALSE."""
    r = ref.filter(pl.col("case") == "none_free")
    ours = user_gwas(snps, covstruc, BASE, fix_measurement=False, long=True)
    j = r.join(ours, on=["SNP", "lhs", "op", "rhs"], how="left", suffix="_py")
    assert j.height == r.height == 6 * 16 and j["est_py"].null_count() == 0
    np.testing.assert_allclose(j["est_py"].to_numpy(), j["est"].to_numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(j["chisq_py"].to_numpy(), j["chisq"].to_numpy(), rtol=1e-4)
    sel = j.filter(pl.col("op") == "~")
    np.testing.assert_allclose(sel["se_py"].to_numpy(), sel["se"].to_numpy(), rtol=1e-4)


@pytest.mark.parametrize("case", ["eq_lin_free", "ineq_12_free"])
def test_r_se_is_unconstrained_sandwich_at_constrained_estimates(covstruc, snps, ref, case):
    """R's SEs under a per-SNP constraint = polgen's per-SNP sandwich (unconstrained bread over
    all free parameters of the model without the constraint) at R's constrained estimates."""
    plan = plan_user(
        snps.schema, covstruc, BASE, "DWLS", "standard", False, False, False, False, None, False, None, False, True
    )
    plan.beta_cols, plan.se_cols, plan.id_cols, plan.var_col = resolve_columns(dict(snps.schema), TRAITS, False)
    beta, se, var = extract_inputs(plan, snps)
    r = ref.filter(pl.col("case") == case, ~pl.col("op").is_in(["==", ">", "<"]))
    n = snps.height
    est = np.full((n, plan.npar), np.nan)
    key = {f"{a}{o}{b}": q for a, o, b, q, _ in plan.out_rows if q >= 0}
    snp_pos = {s: i for i, s in enumerate(snps["SNP"].to_list())}
    for row in r.iter_rows(named=True):
        q = key.get(f"{row['lhs']}{row['op']}{row['rhs']}")
        if q is not None:
            est[snp_pos[row["SNP"]], q] = row["est"]
    assert np.isfinite(est).all()
    rep = [key["F1~SNP"], key["F2~SNP"]]
    jd = np.zeros((n, 2, plan.npar))
    jd[:, 0, rep[0]] = 1.0
    jd[:, 1, rep[1]] = 1.0
    se_py = defined_se_batch(
        se,
        var,
        plan.V_LD,
        plan.I_LD,
        plan.gc,
        plan.varse2,
        plan.v_pd_known,
        plan.stage1.model,
        est,
        np.ones((n, plan.npar), bool),
        jd,
        np.ones(n, bool),
    )
    for c, lhs in enumerate(("F1", "F2")):
        want = (
            r.filter(pl.col("lhs") == lhs, pl.col("op") == "~")
            .sort(pl.col("SNP").replace_strict(snp_pos, return_dtype=pl.Int64))["se"]
            .to_numpy()
        )
        np.testing.assert_allclose(se_py[:, c], want, rtol=1e-5)


def _plan(snps, covstruc, model, fix):
    plan = plan_user(
        snps.schema, covstruc, model, "DWLS", "standard", fix, False, False, False, None, False, None, False, True
    )
    plan.beta_cols, plan.se_cols, plan.id_cols, plan.var_col = resolve_columns(dict(snps.schema), TRAITS, False)
    return plan


def test_linear_equality_on_snp_effects_matches_r(covstruc, snps, ref):
    """b1 == 2*b2 with fix_measurement=FALSE: estimates, R's SEs, chi-square and df (8 = 7 + 1)."""
    r = ref.filter(pl.col("case") == "eq_lin_free", pl.col("op") != "==")
    ours = user_gwas(snps, covstruc, BASE + "b1 == 2*b2", fix_measurement=False, long=True)
    j = r.join(ours, on=["SNP", "lhs", "op", "rhs"], how="left", suffix="_py")
    assert j.height == r.height == 6 * 16 and j["est_py"].null_count() == 0
    np.testing.assert_allclose(j["est_py"].to_numpy(), j["est"].to_numpy(), rtol=2e-5, atol=1e-9)
    np.testing.assert_allclose(j["se_py"].to_numpy(), j["se"].to_numpy(), rtol=2e-6)
    np.testing.assert_allclose(j["chisq_py"].to_numpy(), j["chisq"].to_numpy(), rtol=5e-6)
    assert (j["chisq_df"] == j["df"]).all() and (j["chisq_df"] == 8).all()
    b = ours.filter(pl.col("op") == "~", pl.col("rhs") == "SNP").sort("SNP", "lhs")["est"].to_numpy()
    np.testing.assert_allclose(b[0::2], 2.0 * b[1::2], rtol=1e-12)
    assert ours["converged"].all()


def test_inequality_on_snp_effects_matches_r(covstruc, snps, ref):
    """b1 > b2 with fix_measurement=FALSE: active for rs1-rs5 (b1 = b2 there; R's constrained
    optimiser stops up to 9e-7 inside the boundary (rs2), hence the absolute tolerance on the estimates),
    inactive for rs0 (the unconstrained fit); df stays 7 as lavaan's."""
    r = ref.filter(pl.col("case") == "ineq_12_free", pl.col("op") != ">")
    ours = user_gwas(snps, covstruc, BASE + "b1 > b2", fix_measurement=False, long=True)
    j = r.join(ours, on=["SNP", "lhs", "op", "rhs"], how="left", suffix="_py")
    assert j.height == r.height == 6 * 16 and j["est_py"].null_count() == 0
    np.testing.assert_allclose(j["est_py"].to_numpy(), j["est"].to_numpy(), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(j["se_py"].to_numpy(), j["se"].to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(j["chisq_py"].to_numpy(), j["chisq"].to_numpy(), rtol=1e-5)
    assert (j["chisq_df"] == 7).all()
    snp = ours.filter(pl.col("op") == "~", pl.col("rhs") == "SNP").sort("SNP", "lhs")
    b1, b2 = snp["est"].to_numpy()[0::2], snp["est"].to_numpy()[1::2]
    assert b1[0] > b2[0] + 1e-3  # rs0: inactive
    np.testing.assert_allclose(b1[1:], b2[1:], rtol=1e-10)  # active: on the boundary
    free = user_gwas(snps.head(1), covstruc, BASE, fix_measurement=False, long=True)
    k = ours.filter(pl.col("SNP") == "rs0").join(free, on=["SNP", "lhs", "op", "rhs"], suffix="_u")
    np.testing.assert_allclose(k["est"].to_numpy(), k["est_u"].to_numpy(), rtol=1e-6, atol=1e-10)


def _dense_check(plan, snps, ours_est, con):
    """Each SNP's constrained DWLS minimum by scipy SLSQP from a perturbed start: polgen's
    objective is not above it and its estimates agree."""
    from scipy.optimize import minimize

    beta, se, var = extract_inputs(plan, snps)
    Sf, Vf, st, _ = add_batch(snp_batch(beta, se, var, *plan.ld_args()))
    m = plan.stage1.model
    ma, mb, om, vidx = m["ma"], m["mb"], m["obs_map"], m["vidx"]
    for i in range(snps.height):
        assert st[i] == 0
        s = Sf[i][om[ma], om[mb]]
        w = 1.0 / Vf[i][vidx, vidx]

        def f(th, s=s, w=w):
            sig, _ = implied_jacobian(m, th)
            return float(np.sum(w * (s - sig[ma, mb]) ** 2))

        x0 = ours_est[i] * 1.05 + 1e-3
        ref = minimize(f, x0, method="SLSQP", constraints=con, options={"ftol": 1e-16, "maxiter": 2000})
        # SLSQP may end a hair outside the constraint set: charge its violation at its multipliers
        viol = np.array([abs(c["fun"](ref.x)) if c["type"] == "eq" else max(0.0, -c["fun"](ref.x)) for c in con])
        slack = float(np.abs(getattr(ref, "multipliers", np.full(len(con), 1e3))) @ viol) if con else 0.0
        assert f(ours_est[i]) <= ref.fun * (1 + 1e-8) + slack + 1e-14
        np.testing.assert_allclose(ours_est[i], ref.x, rtol=2e-3, atol=2e-6)


@pytest.mark.parametrize("extra", ["b1 == 2*b2", "b1 > b2", "b2 > b1", "d := b1 - b2\nd > 0.01"])
def test_fixed_measurement_snp_constraints_dense(covstruc, snps, extra):
    """fix_measurement=TRUE (where R stops): the per-SNP fit under the constraint against scipy."""
    from polgen.gsem.gwas_batch import compute_batch

    plan = _plan(snps, covstruc, BASE + extra, True)
    assert plan.lincon is not None and plan.stage1.fast is None
    A_eq, b_eq, A_in, b_in = plan.lincon
    con = [{"type": "eq", "fun": lambda th, a=a, b=b: a @ th - b} for a, b in zip(A_eq, b_eq)]
    con += [{"type": "ineq", "fun": lambda th, a=a, b=b: a @ th - b} for a, b in zip(A_in, b_in)]
    plan.out_rows = [r for r in plan.out_rows if r[3] >= 0]
    out = compute_batch(plan, snps)
    assert out["converged"].all()
    est = np.full((snps.height, plan.npar), np.nan)
    for j, r in enumerate(plan.out_rows):
        est[:, r[3]] = out["est"].to_numpy().reshape(snps.height, -1)[:, j]
    assert np.isfinite(est).all()
    assert plan.df == 13 + (1 if "==" in extra else 0)
    _dense_check(plan, snps, est, con)


def test_nonlinear_equality_on_snp_effects_matches_r(covstruc, snps, ref):
    """b1 == b2^2 with fix_measurement=FALSE (sequential linearisation per SNP) against R."""
    r = ref.filter(pl.col("case") == "nonlin_free", pl.col("op") != "==")
    ours = user_gwas(snps, covstruc, BASE + "b1 == b2^2", fix_measurement=False, long=True)
    j = r.join(ours, on=["SNP", "lhs", "op", "rhs"], how="left", suffix="_py")
    assert j.height == r.height == 6 * 16 and j["est_py"].null_count() == 0
    np.testing.assert_allclose(j["est_py"].to_numpy(), j["est"].to_numpy(), rtol=2e-5, atol=1e-8)
    np.testing.assert_allclose(j["se_py"].to_numpy(), j["se"].to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(j["chisq_py"].to_numpy(), j["chisq"].to_numpy(), rtol=1e-6)
    assert (j["chisq_df"] == 8).all()
    snp = ours.filter(pl.col("op") == "~", pl.col("rhs") == "SNP").sort("SNP", "lhs")["est"].to_numpy()
    np.testing.assert_allclose(snp[0::2], snp[1::2] ** 2, rtol=1e-9, atol=1e-15)


def test_nonlinear_inequality_on_snp_effects_matches_r(covstruc, snps, ref):
    """b1*b2 > 0.0001: active for rs0-rs3 and rs5 (R's answer, including rs1 whose unconstrained
    fit lies between the two branches of the hyperbola); at rs4 the unconstrained fit is feasible
    (b1*b2 = 2.1e-4) and polgen keeps it, where R's lavaan ends on the boundary of the other
    branch with a higher chi-square (19.6 vs 10.5): R is wrong there, so rs4 is checked against
    the unconstrained fit instead."""
    r = ref.filter(pl.col("case") == "nonlin_ineq_free", pl.col("op") != ">")
    ours = user_gwas(snps, covstruc, BASE + "b1*b2 > 0.0001", fix_measurement=False, long=True)
    j = r.join(ours, on=["SNP", "lhs", "op", "rhs"], how="left", suffix="_py")
    assert j.height == r.height == 6 * 16 and j["est_py"].null_count() == 0
    good = j.filter(pl.col("SNP") != "rs4")
    np.testing.assert_allclose(good["est_py"].to_numpy(), good["est"].to_numpy(), rtol=2e-5, atol=1e-8)
    np.testing.assert_allclose(good["se_py"].to_numpy(), good["se"].to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(good["chisq_py"].to_numpy(), good["chisq"].to_numpy(), rtol=1e-6)
    rs4 = j.filter(pl.col("SNP") == "rs4")
    assert rs4["chisq_py"][0] < rs4["chisq"][0] - 5
    free = user_gwas(snps.slice(4, 1), covstruc, BASE, fix_measurement=False, long=True)
    k = rs4.join(free, on=["SNP", "lhs", "op", "rhs"], suffix="_u")
    np.testing.assert_allclose(k["est_py"].to_numpy(), k["est_u"].to_numpy(), rtol=1e-6, atol=1e-10)
    snp = ours.filter(pl.col("op") == "~", pl.col("rhs") == "SNP").sort("SNP", "lhs")["est"].to_numpy()
    assert (snp[0::2] * snp[1::2] >= 0.0001 * (1 - 1e-9)).all()


def test_held_nonlinear_inequality_is_released(covstruc, snps):
    """``b1*b2 > 0.0001; b1^2 + b2^2 < 0.0014``: at rs0 and rs2 the unconstrained fit breaks both,
    both are held, and at the point where both hold the second's multiplier is negative (the
    objective falls moving inside the circle): it must be released, leaving the fit of the first
    constraint alone (where b1^2 + b2^2 is 0.00136 / 0.00022).  At rs5 the first alone breaks the
    second, so both stay active.  Every SNP against scipy SLSQP on the per-SNP DWLS objective."""
    one = "b1*b2 > 0.0001"
    two = one + "\nb1^2 + b2^2 < 0.0014"
    ours = user_gwas(snps, covstruc, BASE + two, fix_measurement=False, long=True)
    ref1 = user_gwas(snps, covstruc, BASE + one, fix_measurement=False, long=True)
    assert ours["converged"].all()

    def b(frame):
        return frame.filter(pl.col("op") == "~", pl.col("rhs") == "SNP").sort("SNP", "lhs")["est"].to_numpy()

    b2, b1 = b(ours).reshape(-1, 2), b(ref1).reshape(-1, 2)
    r2 = (b2**2).sum(axis=1)
    for i in (0, 2):  # released: the fit of the first constraint alone, strictly inside the circle
        np.testing.assert_allclose(b2[i], b1[i], rtol=1e-7)
        assert r2[i] < 0.0014 - 1e-5
        k = ours.filter(pl.col("SNP") == f"rs{i}").join(ref1, on=["SNP", "lhs", "op", "rhs"], suffix="_1")
        np.testing.assert_allclose(k["est"].to_numpy(), k["est_1"].to_numpy(), rtol=1e-6, atol=1e-10)
        np.testing.assert_allclose(k["chisq"].to_numpy(), k["chisq_1"].to_numpy(), rtol=1e-7)
    assert r2[5] == pytest.approx(0.0014, rel=1e-8) and b2[5].prod() == pytest.approx(1e-4, rel=1e-8)
    assert (b2.prod(axis=1) >= 1e-4 * (1 - 1e-9)).all() and (r2 <= 0.0014 * (1 + 1e-9)).all()
    plan = _plan(snps, covstruc, BASE + two, False)
    rows = {(a, o, r): q for a, o, r, q, _ in plan.out_rows if q >= 0}
    q1, q2 = rows[("F1", "~", "SNP")], rows[("F2", "~", "SNP")]
    est = np.full((snps.height, plan.npar), np.nan)
    pos = {s: i for i, s in enumerate(snps["SNP"].to_list())}
    for row in ours.iter_rows(named=True):
        q = rows.get((row["lhs"], row["op"], row["rhs"]))
        if q is not None:
            est[pos[row["SNP"]], q] = row["est"]
    con = [
        {"type": "ineq", "fun": lambda t: t[q1] * t[q2] - 1e-4},
        {"type": "ineq", "fun": lambda t: 0.0014 - t[q1] ** 2 - t[q2] ** 2},
    ]
    _dense_check(plan, snps, est, con)
