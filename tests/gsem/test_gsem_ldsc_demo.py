"""munge -> ldsc and sumstats on polgen.demo's synthetic Genomic SEM data (three file layouts)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from polgen.demo import make_gsem_demo
from polgen.gsem.ldsc import ldsc, ldsc_table
from polgen.gsem.munge import munge
from polgen.gsem.sumstats import sumstats


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = make_gsem_demo(tmp_path_factory.mktemp("gsem_demo"), small=True)
    munged, drops = munge(d.sumstats, d.hm3, trait_names=d.trait_names)
    return d, munged, drops


def test_demo_munge_drops_and_ldsc_recovery(demo):
    d, munged, drops = demo
    got = {(r["trait"], r["reason"]): r["n_dropped"] for r in drops.iter_rows(named=True)}
    assert got[("TraitA", "info_below_filter")] > 0 and got[("TraitB", "allele_a1_mismatch")] == 0
    res = ldsc(munged, d.ld, stand=True)
    k = len(d.trait_names)
    se = np.zeros((k, k))
    se[np.tril_indices(k)[1], np.tril_indices(k)[0]] = np.sqrt(np.diag(res.V))
    se = se + se.T - np.diag(np.diag(se))
    assert np.all(np.abs(res.S - d.S_true) < 3.5 * se), (res.S, d.S_true, se)
    tab = ldsc_table(res)
    for r in tab.iter_rows(named=True):
        i, j = d.trait_names.index(r["trait1"]), d.trait_names.index(r["trait2"])
        assert abs(r["intercept"] - d.I_true[i, j]) < 3.5 * r["intercept_se"], r


def test_demo_sumstats_ols_ratio_equals_munged_z(demo):
    d, munged, _ = demo
    lf = sumstats(d.sumstats, d.reference, trait_names=d.trait_names, se_logit=d.se_logit, OLS=d.OLS, linprob=d.linprob)
    got = lf.collect()
    assert got.height > 0.9 * d.n_snps * 0.98**3 * 0.97
    for t, ols in zip(d.trait_names, d.OLS):
        if not ols:
            continue
        # OLS: beta / se = Z aligned to the reference A1, i.e. munge's Z for the same SNP
        j = got.select("SNP", (pl.col(f"beta.{t}") / pl.col(f"se.{t}")).alias("r")).join(munged[t].collect(), on="SNP")
        assert j.height > 0.9 * got.height
        np.testing.assert_allclose(j["r"].to_numpy(), j["Z"].to_numpy(), rtol=1e-10)
