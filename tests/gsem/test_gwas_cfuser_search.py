"""The search for minima with psi > 0 of the common-factor reduced problem
(polgen.kernels.commonfactor_feasible: user_gwas(fix_measurement=False) where commonfactorGWAS's
lowest minimum is outside the user model) against a brute force, every direction as a start, and
against the user model's objective in numpy: what it reports is a minimum of the user model."""

from __future__ import annotations

import numpy as np
from test_gwas_cfuser import _plan, _snps

from polgen.gsem.gwas_batch import extract_inputs
from polgen.gsem.gwas_commonfactor import CF_LM_RUNS, CF_TRIGGER
from polgen.gsem.gwas_starts import CFU_MAX_ITER, CFU_TOP
from polgen.kernels.commonfactor_feasible import cfu_feasible_fit
from polgen.kernels.gwas import commonfactor_fit
from polgen.kernels.gwas_codes import ST_NOFINITE, ST_OK
from polgen.kernels.snp_moments import s_full_into, v_full_into, v_snp_into

PSI = 6  # psi's column in the reduced chart's table (l_2, l_3, b, th_1..3, psi, v)


def _setup(n=900, seed=11):
    df = _snps(n, seed=seed)
    plan = _plan(df)
    beta, se, var = extract_inputs(plan, df)
    return plan, beta, se, var


def _user_objective(x, s, ws, sld, wld, v, c0):
    """The user model's DWLS objective (residual variances at their closed form) at
    x = (lambda'_1..3, b')."""
    lam, b = x[:3], x[3]
    r1 = s - lam * b * v
    pq = np.array([lam[1] * lam[0], lam[2] * lam[0], lam[2] * lam[1]])
    r2 = sld - pq * (b * b * v + c0)
    return float(ws @ (r1 * r1) + wld @ (r2 * r2))


def test_search_finds_the_brute_force_minima_and_they_are_user_model_minima():
    plan, beta, se, var = _setup()
    cfu = plan.stage1.cfu
    ld = plan.ld_args()
    cidx = np.arange(8)
    th, f, st, _ = cfu_feasible_fit(
        beta, se, var, *ld, cfu["dirs"], cfu["nbr"], CFU_TOP, cidx, 8, max_iter=CFU_MAX_ITER
    )
    assert set(np.unique(st)) <= {ST_OK, ST_NOFINITE}
    ok = st == ST_OK
    assert (th[ok, PSI] > 0).all()
    # brute force: every direction as its own start, the lowest converged minimum with psi > 0
    best = np.full(beta.shape[0], np.inf)
    for j in range(len(cfu["dirs"])):
        start = np.r_[cfu["dirs"][j], 0.05][None, :]
        t2, f2, s2, _ = commonfactor_fit(beta, se, var, *ld, start, cidx, 8, n_always=1, trigger=-1.0)
        with np.errstate(invalid="ignore"):
            take = (s2 == ST_OK) & (t2[:, PSI] > 0) & (f2 < best)
        best[take] = f2[take]
    has = np.isfinite(best)
    # the hard case is well represented: SNPs whose common-factor fit (commonfactor_gwas's rule)
    # ends at psi <= 0, with and without a psi > 0 minimum elsewhere
    t1, _, s1, _ = commonfactor_fit(beta, se, var, *ld, cfu["starts"], cidx, 8, n_always=CF_LM_RUNS, trigger=CF_TRIGGER)
    with np.errstate(invalid="ignore"):
        outside = (s1 == ST_OK) & ~(t1[:, PSI] > 0)
    assert (outside & has).sum() >= 15 and (outside & ~has).sum() >= 50
    assert (ok <= has).all()  # found only where the brute force finds one too
    assert ok.sum() >= 0.98 * has.sum()
    same = ok & (np.abs(f - best) <= 1e-8 * best)
    assert same.sum() >= 0.98 * has.sum()
    assert (f[ok] >= best[ok] * (1 - 1e-10)).all()
    # the user model's parameters at each minimum; its objective there equals the reduced one's
    # and no small step in any direction lowers it (a local minimum of the user model)
    S_LD, V_LD, I_LD, gc, varse2, _ = ld
    c0 = cfu["c"]
    VS, Sf, Vf = np.empty((3, 3)), np.empty((4, 4)), np.empty((10, 10))
    pi, pj = np.array([1, 2, 2]), np.array([0, 0, 1])
    vpos = np.array([(b + 1) * 4 - (b + 1) * b // 2 + (a - b) for a, b in zip(pi, pj)])
    rng = np.random.default_rng(0)
    for i in rng.choice(np.flatnonzero(ok), 40, replace=False):
        v_snp_into(se[i], I_LD, var[i], gc, VS)
        s_full_into(S_LD, beta[i], var[i], Sf)
        v_full_into(V_LD, VS, varse2, Vf)
        s, ws = Sf[1:, 0], 1.0 / np.diag(Vf)[1:4]
        sld, wld, v = Sf[pi + 1, pj + 1], 1.0 / Vf[vpos, vpos], Sf[0, 0]
        sc = np.sqrt(th[i, PSI] / c0)
        x = np.r_[sc, th[i, 0] * sc, th[i, 1] * sc, th[i, 2] / sc]
        f0 = _user_objective(x, s, ws, sld, wld, v, c0)
        np.testing.assert_allclose(f0, f[i], rtol=1e-9)
        for _ in range(20):
            d = rng.normal(size=4) * 1e-4 * np.abs(x).max()
            assert _user_objective(x + d, s, ws, sld, wld, v, c0) >= f0 * (1 - 1e-12)
