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
