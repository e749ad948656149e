"""The new Genomic SEM functions on real data: the LDSC output of PGC anxiety, OCD and PTSD summary
statistics and 20 real SNPs (../shared fixture gwas_per_snp.json, copied to tests/data, GPL-3.0)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from polgen.gsem import add_snps, pa_ldsc, rgmodel, sub_sv
from tests.conftest import gsem_fixture


def _pgc():
    d = json.loads(gsem_fixture("gwas_per_snp.json").read_text())
    cov = {"S": d["s"], "V": d["v"], "I": d["i_mat"], "trait_names": d["trait_names"]}
    rows = []
    for i, s in enumerate(d["snps"]):
        r = {"SNP": s["SNP"], "CHR": "1", "BP": 1000 + i, "MAF": s["MAF"], "A1": s["A1"], "A2": s["A2"]}
        for t, b, se in zip(d["trait_names"], s["beta"], s["se"]):
            r[f"beta.{t}"], r[f"se.{t}"] = b, se
        rows.append(r)
    return d, cov, pl.DataFrame(rows)


def test_pa_ldsc_on_real_pgc_covstruc():
    d, cov, _ = _pgc()
    S = np.asarray(d["s"])
    res = pa_ldsc(S, np.asarray(d["v"]), r=200, seed=1)
    np.testing.assert_allclose(np.sort(res.observed)[::-1], np.sort(np.linalg.eigvalsh(S))[::-1], rtol=1e-12)
    # R's rule: the leading observed eigenvalues above their null quantile (on these noisy real data
    # the first is already below it: 0 components, as R's paLDSC reports)
    above = res.observed > res.simulated
    expect = int(np.argmin(above)) if not above.all() else len(above)
    assert res.n_components == expect
    assert np.all(np.isfinite(res.to_frame()["simulated"].to_numpy()))


def test_add_snps_on_real_pgc_snps_matches_the_r_s_full_rule():
    d, cov, snps = _pgc()
    res = add_snps(cov, snps)
    S = np.asarray(d["s"])
    k = S.shape[0]
    assert res.S_full.shape == (snps.height, k + 1, k + 1)
    assert bool(np.all(res.valid))
    # the trait block of every S_full is the LDSC S; the SNP variance is 2 MAF (1 - MAF)
    np.testing.assert_allclose(res.S_full[:, 1:, 1:], np.broadcast_to(S, (snps.height, k, k)), rtol=1e-12)
    maf = snps["MAF"].to_numpy()
    np.testing.assert_allclose(res.S_full[:, 0, 0], 2 * maf * (1 - maf), rtol=1e-12)


def test_rgmodel_and_sub_sv_on_real_pgc_covstruc():
    d, cov, _ = _pgc()
    rg = rgmodel(cov)
    S = np.asarray(d["s"])
    sd = np.sqrt(np.diag(S))
    np.testing.assert_allclose(rg.R, S / np.outer(sd, sd), atol=1e-6)  # saturated: R = cov2cor(S)
    sub = sub_sv(cov, [1, 2], type="S")  # R's 1-based vech indices: S[1,1] and S[2,1]
    np.testing.assert_allclose(np.ravel(sub.sub_s), [S[0, 0], S[1, 0]], rtol=1e-12)
