"""The SQL queries on the Genomic SEM demo's sumstats (three layouts, 30% flipped alleles)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import chi2

from polgen import sql

demo = pytest.importorskip("polgen.demo")
sumstats_io = pytest.importorskip("polgen.io.sumstats")


@pytest.fixture(scope="module")
def demo_parquet(tmp_path_factory):
    d = tmp_path_factory.mktemp("gsemdemo")
    g = demo.make_gsem_demo(d, small=True)
    paths = []
    for name, src in zip(g.trait_names, g.sumstats):
        df = sumstats_io.scan_sumstats(src).collect()
        if "BETA" not in df.columns:
            df = df.with_columns(BETA=pl.col("OR").log())
        path = d / f"{name}.parquet"
        df.write_parquet(path)
        paths.append(path)
    return g, paths


def test_merge_demo_sumstats(demo_parquet):
    g, paths = demo_parquet
    got = sql.run("merge_sumstats", {"sumstats": [str(p) for p in paths]})
    tables = [pl.read_parquet(p) for p in paths]
    ref = tables[0].select("SNP", rA1="A1", rA2="A2")
    want_snps = None
    expected = []
    for k, t in enumerate(tables):
        j = (
            t.join(ref, on="SNP")
            .with_columns(
                same=(pl.col("A1").str.to_uppercase() == pl.col("rA1"))
                & (pl.col("A2").str.to_uppercase() == pl.col("rA2")),
                swap=(pl.col("A1").str.to_uppercase() == pl.col("rA2"))
                & (pl.col("A2").str.to_uppercase() == pl.col("rA1")),
            )
            .filter(pl.col("same") | pl.col("swap"))
        )
        j = j.with_columns(
            BETA=pl.when(pl.col("swap")).then(-pl.col("BETA")).otherwise(pl.col("BETA")), trait_idx=pl.lit(k)
        )
        expected.append(j.select("SNP", "trait_idx", "BETA", "swap"))
        want_snps = set(j["SNP"]) if want_snps is None else want_snps & set(j["SNP"])
    assert set(got["SNP"]) == want_snps
    assert len(got) == 3 * len(want_snps) > 3 * 0.9 * g.n_snps
    exp = pl.concat(expected).filter(pl.col("SNP").is_in(list(want_snps)))
    joined = got.join(exp, on=["SNP", "trait_idx"], suffix="_want")
    assert len(joined) == len(got)
    np.testing.assert_array_equal(joined["BETA"].to_numpy(), joined["BETA_want"].to_numpy())
    assert (joined["flipped"] == joined["swap"]).all()
    # TraitB reports ~30% of SNPs on the other orientation; after alignment its effects agree in
    # sign with TraitA's (positive genetic correlation) far more often than not
    assert 0.25 < joined.filter(pl.col("trait_idx") == 1)["flipped"].mean() < 0.35
    wide = got.pivot("trait", index="SNP", values="BETA")
    a, b = wide[g.trait_names[0]].to_numpy(), wide[g.trait_names[1]].to_numpy()
    assert np.corrcoef(a, b)[0, 1] > 0.05


def test_summary_and_top_hits_on_demo(demo_parquet):
    g, paths = demo_parquet
    t = pl.read_parquet(paths[0])
    summ = sql.run("per_chrom_summary", {"source": str(paths[0])})
    assert summ["CHR"].to_list() == [str(c) for c in range(1, 23)] + ["all"]
    assert summ["n_snps"][-1] == len(t) == summ["n_snps"][:-1].sum()
    p = t["P"].to_numpy()
    assert summ["lambda_gc"][-1] == pytest.approx(np.median(chi2.isf(p, 1)) / 0.4549364, rel=1e-9)
    per = t.group_by("CHR").agg(pl.col("P").min().alias("min_p"), pl.len().alias("n"))
    chk = summ[:-1].join(per, on="CHR")
    assert len(chk) == 22
    assert (chk["min_p"] == chk["min_p_right"]).all() and (chk["n_snps"] == chk["n"]).all()
    hits = sql.run("top_hits", {"source": str(paths[0]), "p_max": 1e-4, "limit": 0})
    assert hits["SNP"].to_list() == t.filter(pl.col("P") <= 1e-4).sort("P")["SNP"].to_list()
