"""fix_measurement=False, the factor-collapse run-off (kernels.ram_ridge._collapsed, issue 18).

On the bench's Heywood covstruc (the PGC ANX/OCD/PTSD S, V, I of tests/data/gsem/r/fm_false_ridge/)
some SNPs fitted from a flipped, half-scale start run off along a direction the trait ridge test
does not see: every loading shrinks towards 0 while the factor's regression on the SNP grows
without bound (their product, the traits' covariance with the SNP, stays finite), so F1's total
variance 1 + b^2 var(SNP) passes any bound while the objective falls towards a limit it never
attains.  Levenberg-Marquardt crawled along it to the 300-iteration cap of the other starts
(ST_NOCONV); the collapse test ends such a fit as ST_NOFINITE once F1's variance exceeds RIDGE
times its fixed residual variance.  Checked here: the test against F1's variance computed by hand,
the three bench SNPs that collapsed (ST_NOFINITE in 75-180 iterations, was ST_NOCONV at 300; the estimates of a
collapse), and the multi-start results of those SNPs (the lowest objective over the starts, equal
to the best of the starts fitted one by one)."""

from __future__ import annotations

import numpy as np
import polars as pl
from constraint_fixtures import R, read_csv

D = R / "fm_false_ridge"
MODEL = "F1 =~ NA*T1 + T2 + T3\nF1 ~ SNP\nF1 ~~ 1*F1\nSNP ~~ SNP"
TRAITS = ["T1", "T2", "T3"]
# three SNPs of the bench's 20,000 synthetic SNPs (bench/gsem_gwas.py generate, seed 1) that
# collapsed from the eighth start (loadings flipped as (+, -, +) at half scale)
SNPS = {
    "SNP": ["rs85", "rs92", "rs129"],
    "CHR": ["1", "1", "1"],
    "BP": [8501, 9201, 12901],
    "MAF": [0.030394806599362216, 0.42425889251365395, 0.37736490415596446],
    "A1": ["A", "C", "C"],
    "A2": ["T", "T", "T"],
    "beta.T1": [-0.042599476097590475, -0.0009639964510017033, 0.013579677708255074],
    "se.T1": [0.025426313786302033, 0.047072208094343454, 0.03455579982412148],
    "beta.T2": [0.007776196844548542, 0.034259381465125124, 0.022959004031605248],
    "se.T2": [0.010793365818797475, 0.0348925345486104, 0.020008789346718407],
    "beta.T3": [-0.009768475174315358, -0.028348427759894473, -0.03312878345541683],
    "se.T3": [0.013274319883089683, 0.014668394271240089, 0.014018891590027453],
}


def _plan_inputs():
    from polgen.gsem.gwas_batch import extract_inputs
    from polgen.gsem.gwas_plan import plan_user, resolve_columns

    cov = {
        "S": read_csv(D / "S.csv").to_numpy(),
        "V": read_csv(D / "V.csv").to_numpy(),
        "I": read_csv(D / "I.csv").to_numpy(),
        "trait_names": TRAITS,
    }
    snps = pl.DataFrame(SNPS)
    plan = plan_user(None, cov, MODEL, "DWLS", "standard", False, False, False, False, 0.0005, False, None, None, None)
    plan.beta_cols, plan.se_cols, plan.id_cols, plan.var_col = resolve_columns(
        dict(snps.schema), plan.traits, plan.twas
    )
    return plan, *extract_inputs(plan, snps)


def _pars(plan) -> tuple[list[int], int, int]:
    """The parameters of the loadings (paths latent -> observed trait in the RAM layout), of
    F1 ~ SNP (a reported row) and of the SNP variance."""
    from polgen.kernels.ram import ram_layout

    lay = ram_layout(plan.stage1.model)
    lam = [
        int(q)
        for k, r, c, q in zip(lay.ent_kind, lay.ent_r, lay.ent_c, lay.ent_par)
        if k == 0 and c >= lay.p and 0 < r < lay.p and q >= 0
    ]
    b_q = next(q for a, o, b, q, _v in plan.out_rows if (a, o, b) == ("F1", "~", "SNP"))
    return sorted(lam), int(b_q), int(plan.stage1.snpvar_par)


def test_collapse_test_against_the_factor_variance_by_hand():
    from polgen.kernels.gwas_codes import RIDGE
    from polgen.kernels.ram import _implied, ram_layout
    from polgen.kernels.ram_ridge import _collapsed

    plan, *_ = _plan_inputs()
    lay = ram_layout(plan.stage1.model)
    nv, p = lay.nv, lay.p
    _lam, b_q, v_q = _pars(plan)
    work = [np.empty((nv, nv)) for _ in range(4)] + [np.empty((nv, p)) for _ in range(2)]
    for v in (0.05, 0.4):
        for ratio, want in ((0.0, False), (0.5, False), (998.0, False), (1001.0, True), (1e6, True)):
            theta = plan.stage1.starts[0].copy()
            theta[v_q] = v
            # F1's variance by hand: 1 (fixed residual) + b^2 var(SNP) = RIDGE * ratio / 1e3 + 1
            theta[b_q] = np.sqrt(RIDGE * ratio / 1e3 / v)
            assert _implied(theta, lay.ent_kind, lay.ent_r, lay.ent_c, lay.ent_par, lay.ent_val, nv, p, *work)
            B = work[3]
            got = _collapsed(theta, lay.ent_kind, lay.ent_r, lay.ent_c, lay.ent_par, lay.ent_val, nv, p, B)
            assert got is want, (v, ratio)


def test_collapsing_starts_end_no_finite_and_the_multistart_result_is_the_best_start():
    from polgen.gsem.gwas_batch import MULTISTART_MAX_ITER, run_stage
    from polgen.kernels.gwas import ST_NOFINITE, ST_OK, gwas_batch

    plan, beta, se, var = _plan_inputs()
    st = plan.stage1
    lam, b_q, _v_q = _pars(plan)
    assert len(lam) == 3
    args = (beta, se, var, *plan.ld_args(), st.model, st.fidx)
    kw = dict(toler=plan.toler, max_iter=MULTISTART_MAX_ITER)
    fits = [gwas_batch(*args, st.starts[s : s + 1], st.snpvar_par, **kw) for s in range(st.starts.shape[0])]
    six = fits[6]
    assert (six["status"] == ST_NOFINITE).all() and (six["iters"] < 200).all(), six["iters"]
    # the estimates of a collapse: loadings near 0, the SNP path beyond sqrt(RIDGE / var(SNP))
    assert (np.abs(six["est"][:, lam]) < 1e-2).all()
    assert (np.abs(six["est"][:, b_q]) > 30.0).all()
    # the multi-start result: the lowest objective over the starts that converge (rs92's fit from
    # the warm start converges; rs85 and rs129 have no finite minimum from any start)
    best = run_stage(plan, st, beta, se, var)
    assert best["status"].tolist() == [ST_NOFINITE, ST_OK, ST_NOFINITE]
    ok = np.array([f["status"][1] == ST_OK for f in fits])
    f1 = np.array([f["fmin"][1] for f in fits])
    assert best["fmin"][1] <= f1[ok].min() * (1 + 1e-10)
