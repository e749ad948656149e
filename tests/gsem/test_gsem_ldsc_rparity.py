"""Parity with R GenomicSEM itself: its munge(), sumstats() and ldsc() R sources were run by Rscript
on messy synthetic inputs (tests/data/make/gsem_munge_ldsc.R via tests/data/make/gsem_r.py); the
inputs and R's outputs are stored in tests/data/gsem/r/munge_ldsc/ and compared here with
polgen's (no R needed).

Inputs: three raw GWAS files with R-relevant mess (NA P/effects, lower-case and non-ACGT alleles,
P = 1, duplicated ids, an odds-ratio file, INFO values either side of the filters) simulated from
the LDSC model (test_gsem_ldsc.simulate, 3000 SNPs on 2 chromosomes; 6 significant digits, LD scores
with 3 decimals), the HapMap3 list, a
reference file and LD scores; for ldsc, R's munged files with shuffled rows, per-SNP N and chi^2
outliers in B.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from conftest import r_reference
from polgen.gsem.ldsc import ldsc
from polgen.gsem.munge import munge
from polgen.gsem.sumstats import sumstats


@pytest.fixture(scope="module")
def raw():
    d = r_reference("munge_ldsc")
    return dict(
        d=d, files=[d / f"raw{i}.txt.gz" for i in range(3)], hm3=d / "hm3.snplist.gz", ref=d / "ref.txt.gz", ld=d / "ld"
    )


def test_munge_and_sumstats_match_r_genomicsem(raw):
    d, names = raw["d"], ["A", "B", "C"]
    # as in gsem_munge_ldsc.R
    se_logit, ols, linprob = [False, False, True], [True, False, False], [False, True, False]
    ours, _ = munge(raw["files"], raw["hm3"], trait_names=names)
    for t in names:
        R = pl.read_csv(d / f"{t}.sumstats.gz", separator="\t").sort(["SNP", "Z"])
        O = ours[t].collect().sort(["SNP", "Z"])
        assert R["SNP"].to_list() == O["SNP"].to_list(), t  # same rows, duplicates included
        assert R["A1"].to_list() == O["A1"].to_list() and R["A2"].to_list() == O["A2"].to_list()
        np.testing.assert_allclose(O["N"].to_numpy(), R["N"].to_numpy())
        # R writes 15 significant digits and its qchisq(P, 1, lower = FALSE) is off by up to
        # ~5e-10 relative near P ~ 1e-14 (polgen's Z agrees with 50-digit mpmath there)
        np.testing.assert_allclose(O["Z"].to_numpy(), R["Z"].to_numpy(), rtol=1e-9, atol=1e-12)
    Rs = pl.read_csv(d / "sumstats_R.tsv.gz", separator="\t", infer_schema_length=0)
    Os = sumstats(raw["files"], raw["ref"], trait_names=names, se_logit=se_logit, OLS=ols, linprob=linprob).collect()
    assert Rs["SNP"].to_list() == Os["SNP"].to_list()  # same SNPs in the reference's order
    for c in Os.columns[6:]:
        np.testing.assert_allclose(
            Os[c].to_numpy(), Rs[c].str.strip_chars().cast(pl.Float64).to_numpy(), rtol=1e-9, err_msg=c
        )


@pytest.mark.parametrize("nb,prev", [(40, False), (200, True)])
def test_ldsc_matches_r_genomicsem(raw, nb, prev):
    d = raw["d"]
    cases = pl.read_csv(d / "ldsc_cases.tsv", separator="\t")
    assert (nb, prev) in zip(cases["nb"], cases["prev"])
    files = [d / f"{t}.{nb}.sumstats.gz" for t in ("A", "B", "C")]
    # as in gsem_munge_ldsc.R
    sp = [0.5, None, 0.3] if prev else [None] * 3
    pp = [0.1, None, 0.02] if prev else [None] * 3
    R = {
        ln.split()[1]: np.array([float(x) for x in ln.split()[2:]])
        for ln in (d / f"ldsc_{nb}.txt").read_text().splitlines()
        if ln.startswith("@@")
    }
    res = ldsc(files, raw["ld"], chr=2, n_blocks=nb, sample_prev=sp, population_prev=pp, stand=True)
    for k, ours in [("S", res.S), ("V", res.V), ("I", res.I), ("S_Stand", res.S_Stand), ("V_Stand", res.V_Stand)]:
        np.testing.assert_allclose(ours.reshape(-1, order="F"), R[k], rtol=1e-10, atol=1e-18, err_msg=k)
    np.testing.assert_allclose(res.N, R["N"], rtol=1e-14)
