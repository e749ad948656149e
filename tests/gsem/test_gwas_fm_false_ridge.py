"""fix_measurement=False on a Heywood covstruc (the bench's PGC ANX/OCD/PTSD S, V, I: T2's no-SNP
residual variance is -0.073): SNPs whose DWLS objective has no finite minimum (T2's loading grows
without bound and its residual variance goes to minus infinity) end as not converged with the
"no finite optimum" reason, where R's lavaan stops at its 10,000-iteration limit without a
solution; SNPs with a finite minimum, including one reached only from another start, equal R's
per-SNP lavaan fits (tests/data/gsem/r/fm_false_ridge/, tests/data/make/gsem_fm_false_ridge.R).

The RAM fit solves the indicator residual variances in closed form (each fits its own diagonal
moment); the second test checks that against the fit over every parameter, SEs included."""

from __future__ import annotations

import numpy as np
import polars as pl
from constraint_fixtures import R, covstruc_of, read_csv

from polgen.gsem import user_gwas

D = R / "fm_false_ridge"
MODEL = "F1 =~ NA*T1 + T2 + T3\nF1 ~ SNP\nF1 ~~ 1*F1\nSNP ~~ SNP"
TRAITS = ["T1", "T2", "T3"]


def _covstruc() -> dict:
    return covstruc_of(D, TRAITS)


def _snps() -> pl.DataFrame:
    return read_csv(D / "snps.csv").with_columns(pl.col("SNP").cast(pl.String), pl.col("CHR").cast(pl.String))


def test_no_finite_minimum_is_not_converged_and_finite_minima_match_r():
    ref = read_csv(D / "persnp.csv")
    out = user_gwas(_snps(), _covstruc(), MODEL, fix_measurement=False, long=True, progress=False)
    assert ref.height == 5 and ref["converged"].sum() == 3
    for row in ref.iter_rows(named=True):
        mine = out.filter(pl.col("SNP") == row["SNP"])
        if not row["converged"]:
            # R: lavaan stops at 10,000 iterations, T2's loading 15.8, its residual variance -250
            assert row["iterations"] == 10000 and row["lambda2"] > 10 and row["theta2"] < -100
            assert not mine["converged"].any()
            assert mine["warning"][0].startswith("no finite optimum")
            continue
        assert mine["converged"].all()
        est = {(r["lhs"], r["op"], r["rhs"]): r["est"] for r in mine.iter_rows(named=True)}
        # R's nlminb stops at its own tolerance: agreement to ~1e-5 of the estimates' scale
        assert abs(est[("F1", "~", "SNP")] - row["b"]) < 2e-5
        for j, t in enumerate(TRAITS, start=1):
            assert abs(abs(est[("F1", "=~", t)]) - abs(row[f"lambda{j}"])) < 2e-5
            assert abs(est[(t, "~~", t)] - row[f"theta{j}"]) < 2e-5


def test_closed_form_residual_variances_equal_the_full_fit():
    """gwas_batch with the residual variances solved in closed form (eliminate=True, the default)
    equals the Levenberg-Marquardt fit over all eight parameters (eliminate=False): estimates,
    chi-square and every SE (the eliminated variances' own SEs from the full sandwich)."""
    from polgen.gsem.gwas_batch import extract_inputs
    from polgen.gsem.gwas_plan import plan_user, resolve_columns
    from polgen.kernels.gwas import ST_OK, gwas_batch

    snps = _snps()
    plan = plan_user(
        None, _covstruc(), MODEL, "DWLS", "standard", False, False, False, False, 0.0005, False, None, None, None
    )
    plan.beta_cols, plan.se_cols, plan.id_cols, plan.var_col = resolve_columns(
        dict(snps.schema), plan.traits, plan.twas
    )
    beta, se, var = extract_inputs(plan, snps)
    st = plan.stage1
    from polgen.gsem.gwas_batch import run_stage

    best = run_stage(plan, st, beta, se, var)  # the multi-start fit: rows 0, 3 and 4 converge
    assert (best["status"] == ST_OK).tolist() == [True, False, False, True, True]
    rows = np.flatnonzero(best["status"] == ST_OK)
    theta0 = best["est"][rows] * 1.05  # both fits from a start near the finite minimum
    args = (beta[rows], se[rows], var[rows], *plan.ld_args(), st.model, st.fidx, theta0, st.snpvar_par)
    kw = dict(toler=plan.toler, max_iter=5000, xtol=1e-14)
    a = gwas_batch(*args, eliminate=True, **kw)
    b = gwas_batch(*args, eliminate=False, **kw)
    assert (a["status"] == ST_OK).all() and (b["status"] == ST_OK).all()
    # the same minimum (to the optimiser's tolerance in these flat valleys: the objectives agree
    # to 1e-12, the estimates to ~2e-6 relative)
    np.testing.assert_allclose(a["fmin"], b["fmin"], rtol=1e-10)
    np.testing.assert_allclose(a["est"], b["est"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a["est"], best["est"][rows], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a["chisq"], b["chisq"], rtol=1e-6)
    se_a, se_b = a["se"][:, st.fidx], b["se"][:, st.fidx]
    assert np.isfinite(se_a).all()  # the eliminated variances' SEs too
    np.testing.assert_allclose(se_a, se_b, rtol=1e-5)
    # and from every start the two ridge SNPs end as ST_NOFINITE within 100 iterations: the
    # geometric run-off extrapolation (kernels.ram_ridge) reaches the ridge bound in 25-55; plain
    # Levenberg-Marquardt crawled there in 100-200 (the loading grew by ~0.4 per iteration)
    for s in range(st.starts.shape[0]):
        w = gwas_batch(
            beta[1:3], se[1:3], var[1:3], *plan.ld_args(), st.model, st.fidx, st.starts[s : s + 1], st.snpvar_par,
            toler=plan.toler,
        )  # fmt: skip
        assert (w["status"] == 9).all() and (w["iters"] < 100).all(), (s, w["iters"])
