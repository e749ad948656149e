"""SpaceTravLR training: FISTA sparse group lasso, features, fit (resume), recovery of known betas."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from polgen.errors import InputError, OutputExistsError, ResumeError
from polgen.kernels.fista import ista_sgl, objective, power_lipschitz
from polgen.stlr.betadata import read_betadata
from polgen.stlr.features import build_context
from polgen.stlr.lasso import gram, group_penalties, sparse_group_lasso
from polgen.stlr.synthetic import make_tissue
from polgen.stlr.train import fit


@pytest.mark.parametrize("group_reg,l1", [(0.05, 0.01), (0.2, 0.0), (0.0, 0.03)])
def test_fista_matches_long_proximal_gradient(group_reg, l1):
    rng = np.random.default_rng(1)
    n, p = 300, 14
    X = rng.normal(size=(n, p)) @ np.diag(rng.uniform(0.2, 3, p)) + 2.0
    X[:, 1] = X[:, 0] * 0.9 + rng.normal(scale=0.1, size=n)  # ill-conditioned
    w_true = np.where(rng.random(p) < 0.5, rng.normal(size=p), 0.0)
    y = X @ w_true + 1.5 + rng.normal(scale=0.3, size=n)
    groups = np.array([1] * 5 + [2] * 6 + [3] * 3)
    fitted = sparse_group_lasso(X, y, groups, group_reg, l1)
    assert fitted.converged
    codes, lam = group_penalties(groups, group_reg)
    G, c, yy, xm, ym = gram(X, y)
    L = power_lipschitz(G, 500) * 1.01
    w_ref = ista_sgl(G, c, codes, lam, l1, np.zeros(p), L, 400_000)
    f_ref = objective(G, c, yy, w_ref, codes, lam, l1)
    assert abs(fitted.objective - f_ref) <= 1e-8 * abs(f_ref)
    assert fitted.objective <= f_ref * (1 + 1e-12)
    # the intercept is unpenalised: the residual has mean zero
    resid = y - X @ fitted.coef - fitted.intercept
    assert abs(resid.mean()) < 1e-10
    # penalty 0 -> ordinary least squares
    ols = sparse_group_lasso(X, y, groups, 0.0, 0.0)
    A = np.column_stack([np.ones(n), X])
    beta = np.linalg.lstsq(A, y, rcond=None)[0]
    np.testing.assert_allclose(ols.coef, beta[1:], rtol=1e-6, atol=1e-7)


def test_group_penalty_zeroes_whole_groups():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 6))
    y = X[:, 0] * 2 + rng.normal(scale=0.1, size=200)
    f = sparse_group_lasso(X, y, [0, 0, 1, 1, 2, 2], group_reg=0.3, l1_reg=0.0)
    assert np.all(f.coef[2:] == 0) and f.coef[0] > 1


def _tissue():
    return make_tissue(n_cells=900, n_genes=30, n_clusters=3, seed=7, extent=900.0, sparsity=0.05)


def test_fit_recovers_known_betas(tmp_path):
    t = _tissue()
    ctx = build_context(t.X, t.var_names, t.coords, t.clusters, 3, t.lr, t.links)
    target = next(g for g in t.var_names if g.startswith("Gene") and len(ctx.modulators(g).names) >= 4)
    mods = ctx.modulators(target)
    D = ctx.design(mods)
    rng = np.random.default_rng(3)
    B = rng.normal(0, 1.0, size=(3, D.shape[1])) / (D.std(axis=0) + 1e-9)
    y = np.einsum("ij,ij->i", D, B[t.clusters]) + 2.0 + rng.normal(0, 0.05 * D.std(), size=D.shape[0])
    y = y - min(0.0, y.min())
    X = t.X.copy()
    X[:, t.var_names.index(target)] = y
    t.X = X
    res = fit(t.to_anndata(), [target], out=tmp_path / "fit", lr=t.lr, grn=t.links, cluster_key="cell_type")
    bd = read_betadata(tmp_path / "fit" / f"{target}_betadata.parquet")
    assert bd.id_kind == "Cluster" and bd.columns[1:] == mods.names
    sc = res.scores
    good = sc.filter(pl.col("r2") >= 0.15)
    assert good.height >= 2
    for row in good.iter_rows(named=True):
        c = t.cluster_labels.index(row["cluster"])
        est = bd.values[bd.ids.index(row["cluster"]), 1:]
        assert np.corrcoef(est, B[c])[0, 1] >= 0.9


def test_fit_zeroes_poor_clusters_resume_and_errors(tmp_path):
    t = _tissue()
    a = t.to_anndata()
    genes = [t.ligands[0], t.tfs[1], "Gene003"]
    out = tmp_path / "run"
    res = fit(a, genes, out=out, lr=t.lr, grn=t.links, cluster_key="cell_type")
    man = json.loads((out / "stlr_run.json").read_text())
    assert man["status"] == "done" and man["params"]["radius"] == 200.0 and man["genes"] == genes
    # random expression: models explain little -> clusters under R^2 0.15 are all zero
    for g in genes:
        bd = read_betadata(out / f"{g}_betadata.parquet")
        r2 = res.scores.filter(pl.col("gene") == g)
        for row in r2.iter_rows(named=True):
            vals = bd.values[bd.ids.index(row["cluster"])]
            assert (row["r2"] < 0.15) == bool(np.all(vals == 0))
    mtimes = {g: (out / f"{g}_betadata.parquet").stat().st_mtime_ns for g in genes}
    res2 = fit(a, genes, out=out, lr=t.lr, grn=t.links, cluster_key="cell_type", resume=True)
    assert res2.scores.height == 0
    assert mtimes == {g: (out / f"{g}_betadata.parquet").stat().st_mtime_ns for g in genes}
    with pytest.raises(ResumeError):
        fit(a, genes, out=out, lr=t.lr, grn=t.links, cluster_key="cell_type", resume=True, radius=150.0)
    with pytest.raises(OutputExistsError):
        fit(a, genes, out=out, lr=t.lr, grn=t.links, cluster_key="cell_type")
    with pytest.raises(InputError, match="not in var_names"):
        fit(a, ["NoSuchGene"], out=tmp_path / "x", lr=t.lr, grn=t.links, cluster_key="cell_type")
    with pytest.raises(InputError, match="not in obs"):
        fit(a, genes, out=tmp_path / "y", lr=t.lr, grn=t.links, cluster_key="no_such_column")
    for kw, name in [
        (dict(radius=float("nan")), "radius"),
        (dict(scale_factor=0.0), "scale_factor"),
        (dict(l1_reg=float("nan")), "l1_reg"),
        (dict(group_reg=-1.0), "group_reg"),
        (dict(contact_distance=float("inf")), "contact_distance"),
        (dict(max_iter=0), "max_iter"),
    ]:
        with pytest.raises(InputError, match=f"{name} must be"):
            fit(a, genes, out=tmp_path / "z", lr=t.lr, grn=t.links, cluster_key="cell_type", **kw)
        assert not (tmp_path / "z").exists()


def test_features_follow_reference_rules():
    t = _tissue()
    ctx = build_context(t.X, t.var_names, t.coords, t.clusters, 3, t.lr, t.links)
    target = t.receptors[0]
    m = ctx.modulators(target)
    assert all(target not in pair for pair in m.lr_pairs)
    assert m.regulators == sorted(m.regulators) and target not in m.regulators
    assert len(set(m.lr_pairs)) == len(m.lr_pairs)
    # ligand-target matrix -> top-5 ligands per regulator above the cutoff
    regs = ctx.modulators("Gene000").regulators
    ligs = sorted({a for a, _ in ctx.modulators("Gene000").lr_pairs})
    vals = np.tile(np.linspace(0.5, 0.0, len(ligs)), (len(regs), 1))
    ctx.ligand_target = (vals, regs, ligs)
    m2 = ctx.modulators("Gene000")
    per_tf = {}
    for lig, tf in m2.tfl_pairs:
        per_tf.setdefault(tf, []).append(lig)
    assert set(per_tf) == set(regs)
    assert all(v == [l for l in ligs[:5] if l != ligs[-1]] for v in per_tf.values())


def test_fit_resume_retrains_damaged_files(tmp_path):
    t = make_tissue(n_cells=300, n_genes=24, n_clusters=2, seed=2, extent=600.0)
    a = t.to_anndata()
    genes = [t.tfs[0], "Gene001", t.ligands[1]]
    fit(a, genes, out=tmp_path / "ref", lr=t.lr, grn=t.links, cluster_key="cell_type")
    out = tmp_path / "run"
    fit(a, genes, out=out, lr=t.lr, grn=t.links, cluster_key="cell_type")
    victim = out / f"{genes[1]}_betadata.parquet"
    raw = bytearray(victim.read_bytes())
    for off in range(8, 16):  # inside the first data page; the footer still reads
        raw[off] ^= 0xFF
    victim.write_bytes(bytes(raw))
    other = out / f"{genes[0]}_betadata.parquet"
    mtime = other.stat().st_mtime_ns
    res = fit(a, genes, out=out, lr=t.lr, grn=t.links, cluster_key="cell_type", resume=True)
    assert res.scores["gene"].unique().to_list() == [genes[1]]
    assert other.stat().st_mtime_ns == mtime
    for g in genes:
        assert (out / f"{g}_betadata.parquet").read_bytes() == (tmp_path / "ref" / f"{g}_betadata.parquet").read_bytes()


def _orphan_tissue():
    """A small tissue whose GRN leaves some genes without a TF regulator: links dropped, links
    with p >= 0.05 only, a self-loop only, a regulator absent from var_names only."""
    t = make_tissue(n_cells=240, n_genes=24, n_clusters=2, seed=5, extent=600.0)
    rng = np.random.default_rng(11)
    links = t.links.with_columns(pl.Series("p", rng.uniform(0.0, 0.1, t.links.height)))
    targets = sorted(set(links["target"].to_list()))
    no_links, high_p, selfish, foreign = targets[:4]
    links = links.filter(pl.col("target") != no_links)
    links = links.with_columns(pl.when(pl.col("target") == high_p).then(0.07).otherwise(pl.col("p")).alias("p"))
    links = links.filter(pl.col("target") != selfish).vstack(
        pl.DataFrame({"source": [selfish, "NotAGene"], "target": [selfish, foreign], "p": [0.001, 0.001]})
    )
    links = links.filter((pl.col("target") != foreign) | (pl.col("source") == "NotAGene"))
    return t, links


def _dense_orphans(links: pl.DataFrame, genes, var_names, alpha=0.05):
    var = set(var_names)
    rows = links.rows()
    return [g for g in genes if not any(tg == g and s != g and s in var and p < alpha for s, tg, p in rows)]


def test_orphans_follow_the_reference_rule(tmp_path):
    from polgen.stlr.features import ORPHAN_REASON, orphan_genes

    t, links = _orphan_tissue()
    want = _dense_orphans(links.select("source", "target", "p"), t.var_names, t.var_names)
    assert len(want) >= 4 and orphan_genes(links, t.var_names, t.var_names) == want
    ctx = build_context(t.X, t.var_names, t.coords, t.clusters, 2, t.lr, links)
    assert want == [g for g in t.var_names if not ctx.modulators(g).regulators]  # the training's TF rule
    assert orphan_genes(links, t.var_names, t.var_names, alpha=0.08) == _dense_orphans(
        links.select("source", "target", "p"), t.var_names, t.var_names, 0.08
    )
    a = t.to_anndata()
    kept = [g for g in t.var_names if g not in want][:2]
    genes = want[:3] + kept
    out = tmp_path / "run"
    res = fit(a, genes, out=out, lr=t.lr, grn=links, cluster_key="cell_type", progress=False)
    assert res.orphans == want[:3] and res.genes == kept
    assert res.skipped.rows() == [(g, ORPHAN_REASON) for g in want[:3]]
    assert sorted(res.scores["gene"].unique().to_list()) == sorted(kept)
    assert all(f.exists() for f in res.files)
    assert not any((out / f"{g}_betadata.parquet").exists() for g in want[:3])
    man = json.loads((out / "stlr_run.json").read_text())
    assert man["params"]["orphans"] == "skip" and man["genes"] == kept and sorted(man["orphans"]) == sorted(want[:3])
    assert man["orphans"] == {g: ORPHAN_REASON for g in want[:3]}
    # the run folder's manifest records the trained genes' files only
    manifest = (out / "_polgen_manifest.jsonl").read_text()
    assert [json.loads(x)["file"] for x in manifest.splitlines()[1:]] == [f"{g}_betadata.parquet" for g in kept]
    # resume: nothing retrained, nothing recorded twice, the orphans still reported
    res2 = fit(a, genes, out=out, lr=t.lr, grn=links, cluster_key="cell_type", progress=False, resume=True)
    assert res2.scores.height == 0 and res2.orphans == want[:3]
    assert (out / "_polgen_manifest.jsonl").read_text() == manifest
    assert json.loads((out / "stlr_run.json").read_text())["orphans"] == man["orphans"]
    # the opt-out trains them on their ligand terms only (no beta_<TF> column)
    tr = fit(
        a, genes, out=tmp_path / "train", lr=t.lr, grn=links, cluster_key="cell_type", progress=False, orphans="train"
    )
    assert tr.orphans == [] and tr.genes == genes
    for g in want[:3]:
        bd = read_betadata(tmp_path / "train" / f"{g}_betadata.parquet")
        assert all(("$" in c or "#" in c) for c in bd.columns[1:])
    # a skip run over a train run (overwrite) removes the orphans' stale files
    fit(a, genes, out=tmp_path / "train", lr=t.lr, grn=links, cluster_key="cell_type", progress=False, overwrite=True)
    assert not any((tmp_path / "train" / f"{g}_betadata.parquet").exists() for g in want[:3])
    with pytest.raises(InputError, match="orphans must be"):
        fit(a, genes, out=tmp_path / "bad", lr=t.lr, grn=links, cluster_key="cell_type", orphans="keep")
    # the CLI: skip by default (reported), --orphans train trains them
    from polgen.cli import main

    a.write_h5ad(tmp_path / "t.h5ad")
    links.write_csv(tmp_path / "links.csv")
    t.lr.write_csv(tmp_path / "lr.csv")
    common = [
        "stlr",
        "fit",
        "--h5ad",
        str(tmp_path / "t.h5ad"),
        "--lr",
        str(tmp_path / "lr.csv"),
        "--grn",
        str(tmp_path / "links.csv"),
        "--genes",
        ",".join(want[:2] + kept[:1]),
        "--cluster-key",
        "cell_type",
        "--no-progress",
    ]
    assert main([*common, "--out", str(tmp_path / "cli")]) == 0
    assert sorted(p.name for p in (tmp_path / "cli").glob("*_betadata.parquet")) == [f"{kept[0]}_betadata.parquet"]
    assert json.loads((tmp_path / "cli" / "stlr_run.json").read_text())["params"]["orphans"] == "skip"
    assert main([*common, "--out", str(tmp_path / "cli2"), "--orphans", "train"]) == 0
    assert len(list((tmp_path / "cli2").glob("*_betadata.parquet"))) == 3


REF_ORPHANS = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import pandas as pd, anndata as ad, numpy as np
from SpaceTravLR.tools.network import CellOracleLinks
spec = json.load(open(sys.argv[1]))
a = ad.AnnData(X=np.zeros((2, len(spec["var_names"]))), var=pd.DataFrame(index=spec["var_names"]))
grn = CellOracleLinks()
grn.links = {c: pd.DataFrame(rows, columns=["source", "target", "coef_mean", "p"]) for c, rows in spec["links"].items()}
# SpaceTravLR.run: a gene whose estimator has no regulators is an orphan (add_orphan, not trained)
print(json.dumps([g for g in spec["var_names"] if len(grn.get_regulators(a, g)) == 0]))
"""


def test_orphans_match_the_python_reference(tmp_path):
    import os
    import subprocess
    import tempfile
    from pathlib import Path

    from polgen.stlr.features import orphan_genes

    ref = Path(os.environ.get("SPACETRAVLR_REF", Path(tempfile.gettempdir()) / "spacetravlr-ref"))
    py = ref / "bin" / "python"
    if not py.exists():
        pytest.skip(f"SpaceTravLR reference venv not found at {ref}")
    t, links = _orphan_tissue()
    # CellOracle's {cluster: links}: split the links over two clusters (a TF counts in any cluster)
    rows = [(s, g, 0.5, p) for s, g, p in links.select("source", "target", "p").rows()]
    spec = {"var_names": t.var_names, "links": {"c0": rows[::2], "c1": rows[1::2]}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "ref.py").write_text(REF_ORPHANS)
    r = subprocess.run(
        [str(py), str(tmp_path / "ref.py"), str(tmp_path / "spec.json")],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, MPLBACKEND="Agg", TQDM_DISABLE="1"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    want = json.loads(r.stdout.strip().splitlines()[-1])
    co = {
        c: pl.DataFrame(v, schema=["source", "target", "coef_mean", "p"], orient="row")
        for c, v in spec["links"].items()
    }
    from polgen.stlr.grn import as_links

    assert len(want) >= 4
    assert orphan_genes(as_links(co), t.var_names, t.var_names) == want
    assert orphan_genes(links, t.var_names, t.var_names) == want
