"""user_gwas(fix_measurement=False) on the common-factor model against R on the SNPs where the
reduced-problem route (polgen.gsem.gwas_cfuser) is hardest: SNPs whose lowest common-factor
minimum has psi <= 0, so that the user model's solution, if any, is another local minimum
(tests/data/gsem/r/fm_false_cfu/: R userGWAS's own per-SNP lavaan call, see PROVENANCE.md).

Issue 18 asks for convergence >= R's on the same SNPs: every SNP R converges on converges here, at
R's estimates (up to the factor's sign), except one that R calls converged on the ridge itself (a
residual variance of -64); R's non-converged fits run along the ridge to its iteration limit."""

from __future__ import annotations

import numpy as np
import polars as pl
from constraint_fixtures import R, covstruc_of, read_csv

from polgen.gsem import user_gwas

D = R / "fm_false_cfu"
MODEL = "F1 =~ NA*T1 + T2 + T3\nF1 ~ SNP\nF1 ~~ 1*F1\nSNP ~~ SNP"
TRAITS = ["T1", "T2", "T3"]


def test_every_snp_r_converges_on_converges_at_rs_estimates():
    ref = read_csv(D / "persnp.csv")
    snps = read_csv(D / "snps.csv").with_columns(pl.col("SNP").cast(pl.String), pl.col("CHR").cast(pl.String))
    out = user_gwas(snps, covstruc_of(D, TRAITS), MODEL, fix_measurement=False, long=True, progress=False)
    assert ref.height == 59 and ref["converged"].sum() == 15
    n_more = 0
    n_ridge = 0
    for row in ref.iter_rows(named=True):
        mine = out.filter(pl.col("SNP") == row["SNP"])
        theta = [row[f"theta{j}"] for j in (1, 2, 3)]
        if not row["converged"] or min(theta) < -1.0:
            # R stops at its iteration limit along the ridge, leaves it after 800-8,700 iterations,
            # or (once) calls a point on it converged: T2's residual variance -64 (its observed
            # variance is 0.1) after 6,619 iterations, where the objective is flat to nlminb's
            # tolerance but still falls.  No finite minimum with a positive factor variance exists.
            assert row["iterations"] > 800
            if row["converged"]:
                n_ridge += 1
                assert not mine["converged"].any()
                assert mine["warning"][0].startswith("no finite optimum")
            n_more += bool(mine["converged"].all())
            continue
        assert mine["converged"].all(), row["SNP"]
        est = {(r["lhs"], r["op"], r["rhs"]): r["est"] for r in mine.iter_rows(named=True)}
        sign = np.sign(est[("F1", "=~", "T1")]) * np.sign(row["lambda1"])  # the factor's sign
        # R's nlminb stops at its own tolerance: agreement to ~1e-5 of the estimates' scale
        assert abs(sign * est[("F1", "~", "SNP")] - row["b"]) < 5e-5, row["SNP"]
        for j, t in enumerate(TRAITS, start=1):
            assert abs(sign * est[("F1", "=~", t)] - row[f"lambda{j}"]) < 5e-5, (row["SNP"], t)
            assert abs(est[(t, "~~", t)] - row[f"theta{j}"]) < 5e-5, (row["SNP"], t)
        se = mine.filter(pl.col("op").is_in(["=~", "~"]))["se"].cast(pl.Float64).to_numpy()
        assert se.size == 4 and np.isfinite(se).all() and (se > 0).all()
    assert n_ridge == 1
    # and a finite minimum on some of the SNPs where R's fit runs off
    assert n_more >= 5


def test_several_minima_the_warm_starts_one_as_r():
    """Where the reduced problem has several minima with psi > 0, R's lavaan (started from the
    no-SNP fit's loading direction) ends in the warm start's basin far more often than at the
    lowest minimum (tests/data/gsem/r/fm_false_warm/: the 130 of 20,000 bench SNPs where the two
    rules differ): polgen's fit from the warm start matches R on 105, the lowest-minimum rule on 24."""
    d = R / "fm_false_warm"
    ref = read_csv(d / "persnp.csv")
    snps = read_csv(d / "snps.csv").with_columns(pl.col("SNP").cast(pl.String), pl.col("CHR").cast(pl.String))
    out = user_gwas(snps, covstruc_of(d, TRAITS), MODEL, fix_measurement=False, long=True, progress=False)
    assert ref.height == 130 and ref["converged"].all()
    b = out.filter((pl.col("op") == "~") & (pl.col("rhs") == "SNP")).select("SNP", "est", "converged")
    lam = out.filter((pl.col("op") == "=~") & (pl.col("rhs") == "T1")).select("SNP", pl.col("est").alias("l1"))
    j = ref.join(b, on="SNP").join(lam, on="SNP")
    assert j.height == 130 and j["converged_right"].all()
    sign = np.sign(j["l1"].to_numpy()) * np.sign(j["lambda1"].to_numpy())
    same = np.abs(sign * j["est"].to_numpy() - j["b"].to_numpy()) < 5e-5
    assert same.sum() >= 104, int(same.sum())
