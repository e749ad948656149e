"""commonfactor_gwas's kernels (kernels/commonfactor._cf_range, kernels/commonfactor_se._se_range)
leave nearPD out of the batch's specialisation (``smooth`` None) and redo the few SNPs whose
S_full is not positive definite with ``smooth=True``: a batch without such SNPs never compiles
nearPD, and the redone rows are the rows that were smoothed, with the numbers they get alone, and
the general RAM kernel's (its own nearPD path) where both reach the same minimum."""

from __future__ import annotations

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

from conftest import r_reference
from polgen.gsem.gwas import commonfactor_gwas
from polgen.gsem.gwas_batch import extract_inputs, run_stage
from polgen.gsem.gwas_commonfactor import plan_commonfactor
from polgen.gsem.gwas_plan import resolve_columns
from polgen.kernels import commonfactor, commonfactor_se
from polgen.kernels.gwas import FLAG_S_SMOOTHED, ST_OK


def _cov():
    """The PGC ANX/OCD/PTSD S, V, I as stored with the R commonfactorGWAS outputs."""
    d = r_reference("commonfactor_gwas")
    k = int((d / "k.txt").read_text())
    traits = (d / "traits.txt").read_text().split()
    mat = lambda f, n: np.array((d / f).read_text().split(), dtype=np.float64).reshape(n, n, order="F")  # noqa: E731
    return {"S": mat("S.txt", k), "V": mat("V.txt", k * (k + 1) // 2), "I": mat("I.txt", k), "trait_names": traits}


def _frame(cov, n, seed, hits=()):
    """n synthetic SNPs; the rows in ``hits`` get a beta of T1 far beyond what S_LD allows (their
    S_full is not positive definite)."""
    traits = cov["trait_names"]
    rng = np.random.default_rng(seed)
    se = rng.uniform(0.01, 0.05, (n, len(traits)))
    z = 0.6 * rng.normal(0, 1, (n, 1)) + 0.8 * rng.normal(0, 1, (n, len(traits)))
    beta = z * se
    for j, h in enumerate(hits):
        beta[h, 0] += (1.0 + 0.5 * j) * (-1) ** j
    cols = {"SNP": [f"rs{i}" for i in range(n)], "CHR": ["1"] * n, "BP": np.arange(n) * 100 + 1}
    cols |= {"MAF": rng.uniform(0.05, 0.5, n), "A1": ["A"] * n, "A2": ["G"] * n}
    for t, name in enumerate(traits):
        cols[f"beta.{name}"] = beta[:, t]
        cols[f"se.{name}"] = se[:, t]
    return pl.DataFrame(cols)


def _spy(monkeypatch, module, name):
    """Record (rows, smooth) of every call of kernel ``module.name``."""
    real = getattr(module, name)
    calls = []

    def spy(lo, hi, *args):
        calls.append((hi - lo, args[-1]))
        return real(lo, hi, *args)

    monkeypatch.setattr(module, name, spy)
    return calls


HITS = (3, 17, 33)


def test_smooth_specialisation_only_for_the_snps_that_need_it(monkeypatch):
    cov = _cov()
    fit = _spy(monkeypatch, commonfactor, "_cf_range")
    ses = _spy(monkeypatch, commonfactor_se, "_se_range")
    plain = commonfactor_gwas(_frame(cov, 40, 1), cov, progress=False)
    # (a second None call is stage 1's fallback on the rows with a singular information matrix)
    assert fit[0] == (40, None) and ses[0] == (40, None)
    assert all(s is None for _, s in fit + ses)
    assert plain["converged"].mean() > 0.9
    fit.clear()
    ses.clear()
    out = commonfactor_gwas(_frame(cov, 40, 1, HITS), cov, progress=False)
    assert fit[0] == (40, None) and ses[0] == (40, None)
    assert [c for c in fit if c[1] is not None] == [(len(HITS), True)]
    assert [c for c in ses if c[1] is not None] == [(len(HITS), True)]
    smoothed = out["warning"].str.contains("S_full smoothed").fill_null(False).to_numpy()
    np.testing.assert_array_equal(np.flatnonzero(smoothed), HITS)
    assert out["converged"].to_numpy()[list(HITS)].all()
    # the other rows are the plain batch's
    keep = np.setdiff1d(np.arange(40), HITS)
    same = plain.drop("warning")[keep]
    assert_frame_equal(out.drop("warning")[keep], same)


def test_smoothed_rows_as_alone_and_as_the_general_kernel():
    cov = _cov()
    df = _frame(cov, 40, 2, HITS)
    mixed = commonfactor_gwas(df, cov, progress=False)
    alone = commonfactor_gwas(df[list(HITS)], cov, progress=False)
    assert_frame_equal(mixed[list(HITS)], alone)
    # the general RAM kernel (multi-start, nearPD in its smooth=True specialisation) on the same rows
    plan = plan_commonfactor(None, cov, "DWLS", "standard", False, None, False, None)
    plan.beta_cols, plan.se_cols, plan.id_cols, plan.var_col = resolve_columns(df.schema, plan.traits, False)
    beta, se, var = extract_inputs(plan, df[list(HITS)])
    gen = run_stage(plan, plan.stage1, beta, se, var)
    np.testing.assert_array_equal(gen["status"], ST_OK)
    assert ((gen["flags"] & FLAG_S_SMOOTHED) != 0).all()
    est = gen["est"][:, plan.est_row]
    same = np.abs(est - alone["est"].to_numpy()) < 1e-5
    assert same.sum() >= 2
    np.testing.assert_allclose(alone["est"].to_numpy()[same], est[same], atol=1e-7, rtol=0)
    np.testing.assert_allclose(alone["se"].to_numpy()[same], gen["se"][same, plan.est_row], atol=1e-7, rtol=0)
