"""Demo data generators: files readable, shapes right, true parameters recoverable."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import polars as pl
import pytest

from polgen.demo import make_gsem_demo, make_lfmm_demo, make_stlr_demo, received_ligands_dense
from polgen.errors import InputError


@pytest.fixture(scope="module")
def gsem(tmp_path_factory):
    return make_gsem_demo(tmp_path_factory.mktemp("gsem"), small=True)


@pytest.fixture(scope="module")
def lfmm(tmp_path_factory):
    return make_lfmm_demo(tmp_path_factory.mktemp("lfmm"), small=True)


@pytest.fixture(scope="module")
def stlr(tmp_path_factory):
    return make_stlr_demo(tmp_path_factory.mktemp("stlr"), small=True)


# -- Genomic SEM ------------------------------------------------------------------------------------


def _read_trait_files(g) -> pl.DataFrame:
    """Z per trait aligned to the reference A1, read with plain polars (independent of polgen.io)."""
    a = pl.read_csv(g.sumstats[0], separator="\t").select(
        "SNP", pl.col("A1").alias("a1_0"), (pl.col("BETA") / pl.col("SE")).alias("z0")
    )
    b = pl.read_csv(g.sumstats[1], separator=" ").select(
        pl.col("rsid").alias("SNP"),
        pl.col("effect_allele").alias("a1_1"),
        (pl.col("beta") / pl.col("standard_error")).alias("z1"),
    )
    c = pl.read_csv(g.sumstats[2], separator=",").select(
        pl.col("MarkerName").alias("SNP"),
        pl.col("Allele1").alias("a1_2"),
        (pl.col("OR").log() / pl.col("StdErrLogOR")).alias("z2"),
    )
    ref = pl.read_csv(g.hm3, separator="\t")
    ld = pl.concat([pl.read_csv(g.ld / f"{c}.l2.ldscore.gz", separator="\t") for c in range(1, 23)])
    df = ld.join(ref, on="SNP").join(a, on="SNP").join(b, on="SNP").join(c, on="SNP")
    for k in range(3):
        df = df.with_columns(
            pl.when(pl.col(f"a1_{k}") == pl.col("A1")).then(pl.col(f"z{k}")).otherwise(-pl.col(f"z{k}")).alias(f"z{k}")
        )
    return df


def test_gsem_files_layout(gsem):
    g = gsem
    assert [p.name for p in g.sumstats] == ["TraitA.txt.gz", "TraitB.tsv", "TraitC.csv.gz"]
    with gzip.open(g.sumstats[0], "rt") as fh:
        assert fh.readline().split() == ["SNP", "CHR", "BP", "A1", "A2", "FRQ", "INFO", "BETA", "SE", "P", "N"]
    with gzip.open(g.sumstats[2], "rt") as fh:
        assert "OR" in fh.readline().strip().split(",")
    chroms = sorted(int(p.name.split(".")[0]) for p in g.ld.glob("*.l2.ldscore.gz"))
    assert chroms == list(range(1, 23))
    m = sum(int((g.ld / f"{c}.l2.M_5_50").read_text()) for c in range(1, 23))
    assert abs(m - g.M) <= 22
    ld1 = pl.read_csv(g.ld / "1.l2.ldscore.gz", separator="\t")
    assert ld1.columns == ["CHR", "SNP", "BP", "L2"] and ld1["BP"].is_sorted()
    ref = pl.read_csv(g.reference, separator="\t")
    assert ref.columns == ["SNP", "CHR", "BP", "MAF", "A1", "A2"] and ref.height == g.n_snps
    assert ref["MAF"].max() <= 0.5 and ref["SNP"].n_unique() == g.n_snps
    assert g.model == "F1 =~ TraitA + TraitB + TraitC"
    # truth: positive definite, rg = l l'
    assert np.all(np.linalg.eigvalsh(g.S_true) > 0)
    np.testing.assert_allclose(g.rg[0, 1], 0.6 * 0.5)
    np.testing.assert_allclose(np.diag(g.S_true), g.h2)


def test_gsem_files_read_by_scan_sumstats(gsem):
    scan = pytest.importorskip("polgen.io.sumstats").scan_sumstats
    for path in gsem.sumstats:
        df = scan(path).collect()
        assert {"SNP", "A1", "A2", "P", "N", "SE"} <= set(df.columns)
        assert ("BETA" in df.columns) or ("OR" in df.columns)
        assert df.height > 0.95 * gsem.n_snps


def test_gsem_ldsc_model_recoverable(gsem):
    """E[z_i z_k] = I_ik + sqrt(N_i N_k) Sigma_g[i,k] l / M: OLS of z_i z_k on l recovers both."""
    g = gsem
    df = _read_trait_files(g)
    ell = df["L2"].to_numpy()
    Z = df.select("z0", "z1", "z2").to_numpy()
    X = np.column_stack([np.ones_like(ell), ell])
    XtX_inv = np.linalg.inv(X.T @ X)
    for i, k in [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]:
        y = Z[:, i] * Z[:, k]
        coef = XtX_inv @ (X.T @ y)
        r = y - X @ coef
        cov = XtX_inv @ ((X * (r * r)[:, None]).T @ X) @ XtX_inv  # HC0: SNPs are independent here
        scale = g.M / np.sqrt(g.N[i] * g.N[k])
        gcov, gse = coef[1] * scale, np.sqrt(cov[1, 1]) * scale
        ise = np.sqrt(cov[0, 0])
        assert gse < 0.02 and ise < 0.08  # precise enough for the check below to mean something
        assert abs(gcov - g.S_true[i, k]) < 4 * gse, (i, k, gcov, gse)
        assert abs(coef[0] - g.I_true[i, k]) < 4 * ise, (i, k, coef[0], ise)
    # P is consistent with |z| (munge derives Z from P)
    from scipy.stats import norm

    a = pl.read_csv(g.sumstats[0], separator="\t")
    np.testing.assert_allclose(a["P"].to_numpy(), 2 * norm.sf(np.abs(a["BETA"] / a["SE"])), rtol=1e-9)


def test_gsem_deterministic(tmp_path, gsem):
    g2 = make_gsem_demo(tmp_path, small=True)
    for p1, p2 in zip(gsem.sumstats, g2.sumstats):
        assert hashlib.sha256(p1.read_bytes()).digest() == hashlib.sha256(p2.read_bytes()).digest()
    with pytest.raises(InputError):
        make_gsem_demo(tmp_path / "x", n_snps=100)


# -- LFMM -------------------------------------------------------------------------------------------


def test_lfmm_bed_readable_and_sensible(lfmm):
    from polgen.io.bed import BedStream

    d = lfmm
    bs = BedStream(d.bed, scale="raw")
    assert (bs.n_samples, bs.n_snps) == (d.n, d.p)
    blk = bs.read()
    miss = blk.n_miss.sum() / (d.n * d.p)
    assert 0.0003 < miss < 0.003
    assert np.all((blk.freq > 0.0) & (blk.freq < 1.0))
    assert 0.1 < blk.freq.mean() < 0.6
    env = pl.read_csv(d.env, separator="\t")
    assert env.columns == ["FID", "IID", "env"]
    assert env["IID"].to_list() == bs.fam["IID"].to_list()
    np.testing.assert_allclose(env["env"].to_numpy(), d.env_values)
    causal = pl.read_csv(d.causal_file, separator="\t")
    np.testing.assert_array_equal(causal["index"].to_numpy(), d.causal)
    assert bs.bim["SNP"].gather(d.causal).to_list() == causal["SNP"].to_list()
    assert sorted(bs.bim["CHR"].unique().cast(pl.Int64).to_list()) == list(range(1, 23))
    np.testing.assert_allclose(d.Q.sum(axis=1), 1.0)


def test_lfmm_structure_and_causal_loci(lfmm):
    """Ancestry drives the top PCs; with ancestry as covariate the causal loci stand out."""
    from polgen.io.bed import BedStream

    d = lfmm
    G = BedStream(d.bed, scale="center").read().data
    # the leading K-1 principal components span the admixture proportions
    w, vecs = np.linalg.eigh(G @ G.T)  # left singular vectors of G (n x n: cheap)
    u = vecs[:, np.argsort(w)[::-1][: d.K - 1]]
    Qc = d.Q[:, : d.K - 1] - d.Q[:, : d.K - 1].mean(axis=0)
    fit = np.linalg.lstsq(u, Qc, rcond=None)[0]
    r2 = 1 - ((Qc - u @ fit) ** 2).sum() / (Qc**2).sum()
    assert r2 > 0.8
    assert abs(np.corrcoef(d.env_values, d.Q @ np.arange(d.K))[0, 1]) > 0.6
    # association of each SNP with env, adjusted for Q: causal |t| ranked above null
    X = np.column_stack([np.ones(d.n), d.env_values, d.Q[:, : d.K - 1]])
    beta, *_ = np.linalg.lstsq(X, G, rcond=None)
    resid = G - X @ beta
    s2 = (resid**2).sum(axis=0) / (d.n - X.shape[1])
    se = np.sqrt(s2 * np.linalg.inv(X.T @ X)[1, 1])
    t = np.abs(beta[1] / se)
    is_c = np.zeros(d.p, dtype=bool)
    is_c[d.causal] = True
    auc = (t[is_c][:, None] > t[~is_c][None, :]).mean()
    assert auc > 0.9


# -- SpaceTravLR ------------------------------------------------------------------------------------


def test_stlr_h5ad_loads_with_read_spatial(stlr):
    from polgen.io.spatial import read_spatial

    s = stlr
    sd = read_spatial(s.h5ad, layer=s.layer, cluster_key=s.cluster_key)
    assert sd.n_cells == s.n_cells and sd.coords.shape == (s.n_cells, 2)
    assert sd.cluster_labels == s.cell_types
    assert isinstance(sd.X, np.ndarray) and np.all(sd.X >= 0)
    assert set(s.tfs + s.ligands + s.receptors + s.targets) <= set(sd.var_names)
    raw = read_spatial(s.h5ad)
    assert raw.is_sparse and np.all(raw.X.data >= 0)
    np.testing.assert_array_equal(raw.X.data, np.round(raw.X.data))  # counts
    # spatial domains: a cell's nearest neighbour usually shares its type
    d2 = ((sd.coords[:, None, :] - sd.coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    same = (sd.clusters[np.argmin(d2, axis=1)] == sd.clusters).mean()
    assert same > 0.7


def test_stlr_tables(stlr):
    lr = pl.read_csv(stlr.lr)
    assert lr.columns == ["ligand", "receptor", "pathway", "signaling"]
    assert set(lr["signaling"]) == {"Secreted Signaling", "Cell-Cell Contact"}
    assert lr["receptor"].str.contains("_").any()
    links = pl.read_parquet(stlr.grn_links)
    assert {"source", "target"} <= set(links.columns)
    assert set(links["source"]) <= set(stlr.tfs) and set(links["target"]) <= set(stlr.targets)
    base = pl.read_parquet(stlr.base_grn)
    assert base.columns[:2] == ["peak_id", "gene_short_name"] and set(base.columns[2:]) == set(stlr.tfs)
    # the base GRN holds every candidate link (true edges and decoys), like a CellOracle base GRN
    long = (
        base.unpivot(index=["peak_id", "gene_short_name"], variable_name="source")
        .filter(pl.col("value") == 1)
        .select("source", pl.col("gene_short_name").alias("target"))
    )
    assert long.sort("target", "source").equals(links.select("source", "target").sort("target", "source"))
    assert 0 < links["true_edge"].sum() < links.height


def _lr_features(s, sd):
    expr = sd.X
    lig = expr[:, sd.gene_index(s.ligands)]
    lr = pl.read_csv(s.lr)
    radii = np.where(lr["signaling"].to_numpy() == "Secreted Signaling", s.radius, s.contact_distance)
    wL = received_ligands_dense(sd.coords, lig, radii)
    feats = {}
    for k, row in enumerate(lr.iter_rows(named=True)):
        rec = np.minimum.reduce([expr[:, sd.gene_index(g)[0]] for g in row["receptor"].split("_")])
        feats[f"{row['ligand']}${row['receptor']}"] = wL[:, k] * rec
    return wL, feats


def test_stlr_betas_recoverable(stlr):
    """Per cluster, OLS of each target on its true features recovers the true betas."""
    from polgen.io.spatial import read_spatial

    s = stlr
    sd = read_spatial(s.h5ad, layer=s.layer, cluster_key=s.cluster_key)
    wL, lr_feats = _lr_features(s, sd)
    z_max, rel = 0.0, []
    for (target,), grp in s.betas.filter(pl.col("feature") != "intercept").group_by(["target"]):
        feats = sorted(set(grp["feature"]))
        y = sd.gene(target)
        cols = [lr_feats[f] if "$" in f else sd.gene(f) for f in feats]
        for c in range(len(s.cell_types)):
            m = sd.clusters == c
            X = np.column_stack([np.ones(m.sum())] + [col[m] for col in cols])
            coef, res, *_ = np.linalg.lstsq(X, y[m], rcond=None)
            s2 = float(res[0]) / (m.sum() - X.shape[1])
            se = np.sqrt(s2 * np.diag(np.linalg.inv(X.T @ X)))[1:]
            want = np.array([grp.filter((pl.col("feature") == f) & (pl.col("cluster") == c))["beta"][0] for f in feats])
            z_max = max(z_max, float(np.max(np.abs(coef[1:] - want) / se)))
            rel.extend(np.abs(coef[1:] - want) / np.abs(want))
    assert z_max < 5.0  # the truth is the model the data follow
    assert np.median(rel) < 0.05  # and it is well identified
    assert np.quantile(rel, 0.9) < 0.25


def test_stlr_received_ligands_match_polgen_kernel(stlr):
    """The demo's dense received-ligand sum agrees with polgen.stlr's exact kernel."""
    ligands = pytest.importorskip("polgen.stlr.ligands")
    from polgen.io.spatial import read_spatial

    s = stlr
    sd = read_spatial(s.h5ad, layer=s.layer, cluster_key=s.cluster_key)
    wL, _ = _lr_features(s, sd)
    lr = pl.read_csv(s.lr)
    radii = np.where(lr["signaling"].to_numpy() == "Secreted Signaling", s.radius, s.contact_distance)
    got = ligands.received_ligands(sd.coords, sd.X[:, sd.gene_index(s.ligands)], radii, mode="exact")
    got = got.to_numpy() if hasattr(got, "to_numpy") else np.asarray(got)
    np.testing.assert_allclose(got, wL, rtol=1e-10, atol=1e-12)


def test_bad_arguments(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError):
        make_lfmm_demo(f, small=True)
    with pytest.raises(InputError):
        make_stlr_demo(tmp_path, n_cells=10)


# -- run_demo ----------------------------------------------------------------------------------------


def test_run_demo_small_end_to_end(tmp_path):
    from polgen.demo import run_demo

    summary = run_demo(tmp_path, small=True, progress=False)
    assert summary.columns == ["method", "step", "status", "seconds", "result"]
    assert set(summary["method"]) == {"gsem", "lfmm", "stlr"}
    gen = summary.filter(pl.col("step") == "generate")
    assert gen["status"].to_list() == ["ok", "ok", "ok"]
    failed = summary.filter(pl.col("status") == "failed")
    assert failed.height == 0, failed.to_dicts()
    assert set(summary["status"]) == {"ok"}, summary.filter(pl.col("status") != "ok").to_dicts()
    stored = pl.read_parquet(tmp_path / "demo_summary.parquet")
    assert stored.drop("seconds").equals(summary.drop("seconds"))
    ok = {(r["method"], r["step"]): r["result"] for r in summary.iter_rows(named=True) if r["status"] == "ok"}
    if ("lfmm", "test") in ok:  # environment-driven loci found
        import re

        auc = float(re.search(r"causal loci ([0-9.]+)", ok[("lfmm", "test")]).group(1))
        assert auc > 0.9
    if ("gsem", "ldsc") in ok:
        import re

        h2a = float(re.search(r"h2 TraitA ([0-9.]+)", ok[("gsem", "ldsc")]).group(1))
        assert abs(h2a - 0.3) < 0.06
    # running again into the same directory works (outputs replaced)
    again = run_demo(tmp_path, small=True, progress=False, methods=("lfmm",))
    assert again.filter(pl.col("status") == "failed").height == 0
    with pytest.raises(InputError):
        run_demo(tmp_path, methods=("nope",))


def test_lfmm_bed_deterministic(tmp_path, lfmm):
    d2 = make_lfmm_demo(tmp_path, small=True)
    assert d2.bed.read_bytes() == lfmm.bed.read_bytes()
    assert d2.env.read_bytes() == lfmm.env.read_bytes()
