"""commonfactor_gwas: the reduced (variable-projection) DWLS fit against R GenomicSEM itself
(``.commonfactorGWAS_main`` run under Rscript with lavaan; stored outputs in
tests/data/gsem/r/commonfactor_gwas/, made by tests/data/make/gsem_r.py, no R needed here), against
the general per-SNP kernel's multi-start fit, and its speed-independent properties.

The SNPs R was run on are synthetic (bench/gsem_gwas.py's generator, seed 1) on the PGC
ANX/OCD/PTSD covstruc of the ../shared fixture gwas_per_snp.json (stored with the R outputs);
rs774, rs785 and rs1190 are SNPs the earlier multi-start fit reported as not converged although
lavaan converges on them (their no-SNP fit is a Heywood case and the per-SNP surface has a local
minimum per sign pattern of the loadings).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from conftest import r_reference
from polgen.gsem.gwas import commonfactor_gwas
from polgen.gsem.gwas_batch import extract_inputs, run_stage
from polgen.gsem.gwas_commonfactor import plan_commonfactor
from polgen.gsem.gwas_plan import resolve_columns
from polgen.kernels.gwas import ST_OK


def _cov():
    """The PGC ANX/OCD/PTSD S, V, I (gwas_per_snp.json) as given to R (column-major)."""
    d = r_reference("commonfactor_gwas")
    k = int((d / "k.txt").read_text())
    traits = (d / "traits.txt").read_text().split()
    mat = lambda f, n: np.array((d / f).read_text().split(), dtype=np.float64).reshape(n, n, order="F")  # noqa: E731
    return {"S": mat("S.txt", k), "V": mat("V.txt", k * (k + 1) // 2), "I": mat("I.txt", k), "trait_names": traits}


def _frame(traits, snps) -> pl.DataFrame:
    rows = []
    for i, (name, maf, b, s) in enumerate(snps):
        r = {"SNP": name, "CHR": "1", "BP": 100 * i + 1, "MAF": maf, "A1": "A", "A2": "G"}
        for t, bb, ss in zip(traits, b, s):
            r[f"beta.{t}"] = bb
            r[f"se.{t}"] = ss
        rows.append(r)
    return pl.DataFrame(rows)


def test_commonfactor_gwas_matches_r_lavaan():
    """est / se / Q as R's .commonfactorGWAS_main under lavaan, including SNPs the earlier fit
    reported as not converged."""
    cov = _cov()
    d = r_reference("commonfactor_gwas")
    df = pl.read_csv(d / "snps.csv", schema_overrides={"SNP": pl.String, "CHR": pl.String})
    ref = pl.read_csv(d / "r_out.csv", infer_schema_length=0).with_columns(
        pl.col("est", "se_c", "Q").replace("NA", None).cast(pl.Float64)
    )
    ours = commonfactor_gwas(df, cov)
    assert ref["SNP"].to_list() == ours["SNP"].to_list()
    assert ref["se_c"].is_not_null().all() and ref["Q"].is_not_null().all()
    assert ours["converged"].all(), ours.select("SNP", "warning")
    np.testing.assert_allclose(ours["est"].to_numpy(), ref["est"].to_numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours["se"].to_numpy(), ref["se_c"].to_numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours["Q"].to_numpy(), ref["Q"].to_numpy(), atol=1e-3, rtol=0)


def _gen(cov, n=300, seed=5):
    k = len(cov["trait_names"])
    rng = np.random.default_rng(seed)
    se = rng.uniform(0.01, 0.05, (n, k))
    z = 0.6 * rng.normal(0, 1, (n, 1)) + 0.8 * rng.normal(0, 1, (n, k))
    snps = [(f"rs{i}", float(m), tuple(z[i] * se[i]), tuple(se[i])) for i, m in enumerate(rng.uniform(0.01, 0.5, n))]
    return _frame(cov["trait_names"], snps)


def test_reduced_fit_equals_general_multistart_fit():
    """On SNPs where the general kernel's multi-start fit (8 starts, full parameter space)
    converges to the same minimum, the reduced fit gives the same estimates and SEs; it converges
    on (almost) every SNP."""
    cov = _cov()
    df = _gen(cov)
    new = commonfactor_gwas(df, cov)
    assert new["converged"].mean() > 0.97
    plan = plan_commonfactor(None, cov, "DWLS", "standard", False, None, False, None)
    plan.beta_cols, plan.se_cols, plan.id_cols, plan.var_col = resolve_columns(df.schema, plan.traits, False)
    beta, se, var = extract_inputs(plan, df)
    old = run_stage(plan, plan.stage1, beta, se, var)
    ok = (old["status"] == ST_OK) & new["converged"].to_numpy()
    ob = old["est"][:, plan.est_row]
    same = ok & (np.abs(ob - new["est"].to_numpy()) < 1e-5)
    assert same.sum() > 0.9 * len(df)
    np.testing.assert_allclose(new["est"].to_numpy()[same], ob[same], atol=1e-7, rtol=0)
    np.testing.assert_allclose(new["se"].to_numpy()[same], old["se"][same, plan.est_row], atol=1e-7, rtol=0)
    # where the two differ, the reduced fit found the lower DWLS objective
    from polgen.gsem.gwas_commonfactor import cf_stage1

    red = cf_stage1(plan, beta, se, var)
    diff = ok & ~same
    assert np.all(red["fmin"][diff] <= old["fmin"][diff] * (1 + 1e-9))


def test_batching_does_not_change_results():
    cov = _cov()
    df = _gen(cov, n=60, seed=9)
    a = commonfactor_gwas(df, cov, batch_size=10_000)
    b = commonfactor_gwas(df, cov, batch_size=7)
    from polars.testing import assert_frame_equal

    assert_frame_equal(a, b)


def _plan_inputs(cov, df, smooth_check=False):
    plan = plan_commonfactor(None, cov, "DWLS", "standard", smooth_check, None, False, None)
    plan.beta_cols, plan.se_cols, plan.id_cols, plan.var_col = resolve_columns(df.schema, plan.traits, False)
    return (plan, *extract_inputs(plan, df))


def _general_q(plan, beta, se, var, est, rows):
    """The Q model by the general kernel's LM from cf_q_start (the earlier path of compute_batch)."""
    from polgen.gsem.gwas_commonfactor import cf_q_start

    theta0 = np.zeros((rows.size, plan.stage2.starts.shape[1]))
    theta0[:, : plan.npar] = est[rows]
    theta0[:, plan.npar :] = cf_q_start(plan, est[rows], beta[rows])
    return run_stage(plan, plan.stage2, beta[rows], se[rows], var[rows], theta0=theta0)


def test_closed_form_se_chisq_q_equal_general_kernel():
    """cf_stage1's SE of F1 ~ SNP, chi-square, Z_smooth, status and Q (kernels/commonfactor_se.py,
    closed forms) against the general RAM kernel at the same estimates: stage 1 with
    max_iter=0, the Q model fitted by its own LM (which stops ~1e-8 short of the minimum, hence
    rtol 1e-6 on the Wald statistic)."""
    from polgen.gsem.gwas_commonfactor import cf_q_result, cf_stage1
    from polgen.kernels.gwas import gwas_batch

    cov = _cov()
    df = _gen(cov, n=400, seed=13)
    plan, beta, se, var = _plan_inputs(cov, df, smooth_check=True)
    st = plan.stage1
    red = cf_stage1(plan, beta, se, var)
    ok = red["status"] == ST_OK
    assert ok.mean() > 0.97
    est = np.ascontiguousarray(np.where(ok[:, None], red["est"], st.starts[0]))
    gen = gwas_batch(
        beta, se, var, *plan.ld_args(), st.model, st.fidx, est, st.snpvar_par, max_iter=0, smooth_check=True
    )
    np.testing.assert_array_equal(gen["status"][ok], ST_OK)
    b = plan.est_row
    np.testing.assert_allclose(red["se"][ok, b], gen["se"][ok, b], rtol=1e-7, atol=0)
    others = np.arange(plan.npar) != b
    assert np.isnan(red["se"][:, others]).all()  # only the reported SE is computed
    np.testing.assert_allclose(red["chisq"][ok], gen["chisq"][ok], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(red["zsmooth"], gen["zsmooth"])
    np.testing.assert_array_equal(red["flags"], gen["flags"])
    rows = np.flatnonzero(ok)
    r2 = _general_q(plan, beta, se, var, est, rows)
    np.testing.assert_array_equal(r2["status"], ST_OK)
    q = cf_q_result(red, ok)
    np.testing.assert_array_equal(q["status"][ok], ST_OK)
    assert (q["status"][~ok] == -1).all() and np.isnan(q["wald"][~ok]).all()
    np.testing.assert_allclose(q["wald"][ok], r2["wald"], rtol=1e-6, atol=1e-8)
    # and commonfactor_gwas reports that Q (whichever route compute_batch takes)
    out = commonfactor_gwas(df, cov)
    np.testing.assert_allclose(out["Q"].to_numpy()[ok], r2["wald"], rtol=1e-6, atol=1e-8)


def test_v_full_not_pd_goes_through_general_kernel():
    """A V_LD that is not positive definite makes every V_full need nearPD: those SNPs take the
    general kernel (the closed form assumes blockdiag V_full) and get the same numbers as it."""
    from polgen.gsem.gwas_commonfactor import cf_stage1
    from polgen.kernels.commonfactor_se import ST_CF_GENERAL

    cov = _cov()
    V = np.array(cov["V"])
    lam, U = np.linalg.eigh(V)
    cov = dict(cov, V=V - (lam[0] + 1e-3 * lam[-1]) * np.outer(U[:, 0], U[:, 0]))
    df = _gen(cov, n=40, seed=21)
    plan, beta, se, var = _plan_inputs(cov, df)
    assert not plan.v_pd_known
    red = cf_stage1(plan, beta, se, var)
    assert not (red["status"] == ST_CF_GENERAL).any()
    ok = red["status"] == ST_OK
    assert ok.sum() >= 10
    assert (red["flags"][ok] != 0).all()  # V_full smoothed
    r2 = _general_q(plan, beta, se, var, red["est"], np.flatnonzero(ok))
    np.testing.assert_allclose(red["q_wald"][ok], r2["wald"], rtol=1e-12, atol=0)


def test_projected_hessian_against_finite_differences():
    """kernels/commonfactor_lm._cf_hess (analytic half Hessian of the projected objective, from
    _cf_normal) against central differences of the exact projected gradient J'W r, for 2, 3 and
    5 traits."""
    from polgen.kernels.commonfactor_lm import _cf_eval, _cf_normal

    rng = np.random.default_rng(3)
    for k in (2, 3, 5):
        pi = np.array([a for b in range(k) for a in range(b + 1, k)], np.int64)
        pj = np.array([b for b in range(k) for a in range(b + 1, k)], np.int64)
        npair, n = len(pi), k - 1
        s = rng.normal(size=k) * 1e-2
        ws = rng.uniform(1e3, 1e4, k)
        sld = rng.uniform(0.05, 0.2, npair)
        wld = rng.uniform(1e3, 1e4, npair)
        x = np.r_[rng.uniform(0.5, 1.5, n) * rng.choice([-1.0, 1.0], n), 0.0, 0.0]
        r = np.empty(k + npair)
        J, H, g = np.empty((k + npair, n)), np.empty((n, n)), np.empty(n)
        Hn, Hs, dc, dp = np.empty((n, n)), np.empty((n, n)), np.empty(n), np.empty(n)
        _cf_eval(x, k, s, ws, sld, wld, pi, pj, r)
        _cf_normal(x, k, ws, wld, pi, pj, r, J, H, g, s, sld, Hn, dc, dp)
        fd = np.empty((n, n))
        for b in range(n):
            h = 1e-5 * (abs(x[b]) + 1e-3)
            gs = []
            for sign in (1.0, -1.0):
                xt = x.copy()
                xt[b] += sign * h
                _cf_eval(xt, k, s, ws, sld, wld, pi, pj, r)
                _cf_normal(xt, k, ws, wld, pi, pj, r, J, H, g, s, sld, Hs, dc, dp)
                gs.append(g.copy())
            fd[:, b] = -(gs[0] - gs[1]) / (2 * h)
        np.testing.assert_allclose(Hn, fd, rtol=0, atol=1e-7 * np.abs(fd).max())
        assert np.abs(Hn - Hn.T).max() == 0.0
