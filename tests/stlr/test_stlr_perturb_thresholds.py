"""Perturbation and splash under ``cell_thresholds`` and ``co_grn`` (the reference's
``GeneFactory.perturb`` / ``splash_betas``), against a dense numpy re-computation and, when its
venv is present, against the Python SpaceTravLR reference run in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from polgen.errors import InputError
from polgen.stlr import perturb, splash
from polgen.stlr.grn import ligand_radii, lr_table, restrict_to_co_grn
from polgen.stlr.perturb import perturb_batch
from polgen.stlr.synthetic import make_betabase, make_tissue

MIN_EXPR = 1e-9
REF = Path(os.environ.get("SPACETRAVLR_REF", Path(tempfile.gettempdir()) / "spacetravlr-ref"))
PY = REF / "bin" / "python"


# -- dense reference (written from the formulas) ---------------------------------------------
def filt(x):
    return np.where(x > MIN_EXPR, x, 0.0)


def dense_received(xy, L, radii, s=1.0):
    n = xy.shape[0]
    d2 = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    out = np.zeros(L.shape)
    for l in range(L.shape[1]):
        if np.isfinite(radii[l]):
            out[:, l] = s * (np.exp(-d2 / (2.0 * radii[l] ** 2)) @ L[:, l]) / n
    return out


def rows_of(bd, t):
    pos = {c: i for i, c in enumerate(bd.ids)}
    if bd.id_kind == "Cluster":
        return np.array([pos[t.cluster_labels[c]] for c in t.clusters])
    return np.array([pos[c] for c in t.obs_names])


def dense_splash(bd, t, gexf, wl, wl_tfl, bsf=1.0, cap=None):
    B = bd.values[rows_of(bd, t)]
    out: dict[str, np.ndarray] = {}

    def add(g, v):
        out[g] = out.get(g, 0.0) + v

    for k, c in enumerate(bd.columns):
        if not c.startswith("beta_"):
            continue
        v, m = B[:, k], c[5:]
        if "$" in m:
            lig, rec = m.split("$")
            add(rec, np.where(gexf[rec] > 0, v * wl[lig], 0.0) * bsf)
            add(lig, v * gexf[rec] * bsf)
        elif "#" in m:
            lig, reg = m.split("#")
            add(lig, v * gexf[reg] * bsf)
            add(reg, v * wl_tfl[lig] * bsf)
        else:
            add(m, v.copy())
    if cap is not None:
        out = {k: np.clip(v, -cap, cap) for k, v in out.items()}
    return out


def dense_perturb_thr(t, base, radii_map, M, target, gene_expr, n_prop, cells=None, bsf=1.0, s=1.0):
    """GeneFactory.perturb with a 0/1 mask M (cells x genes, absent genes already 1)."""
    X0 = t.X.copy()
    gi = {g: i for i, g in enumerate(t.var_names)}
    trained = [g for g in base.genes if not base[g].is_zero]
    lr_l = sorted({l for g in trained for l in base[g].ligands})
    tfl_l = sorted({l for g in trained for l in base[g].tfl_ligands})
    ligs = sorted(set(lr_l) | set(tfl_l))

    def recv(X, which, masked):
        Xf = filt(X) * (M if masked else 1.0)
        idx = [gi[l] for l in which]
        W = dense_received(t.coords, Xf[:, idx], np.array([radii_map.get(l, np.nan) for l in which]), s)
        out = np.zeros((X.shape[0], X.shape[1]))  # over var_names, 0 elsewhere (reindex fill 0)
        out[:, idx] = W
        return out

    tc = gi[target]
    sim = X0.copy()
    if cells is None:
        sim[:, tc] = gene_expr
    else:
        sim[cells, tc] = gene_expr
    dinput = sim - X0
    delta = dinput.copy()
    Wlr0, Wtfl0 = recv(X0, lr_l, True), recv(X0, tfl_l, False)
    W0 = np.maximum(Wlr0, Wtfl0)
    W_prev, X_prev = Wlr0, X0
    maxv = X0.max(0)
    for _ in range(n_prop):
        gexf = filt(X_prev) * M
        gd = {g: gexf[:, i] for g, i in gi.items()}
        wl = {g: W_prev[:, i] for g, i in gi.items()}
        wlt = {g: Wtfl0[:, i] for g, i in gi.items()}
        S = {g: dense_splash(base[g], t, gd, wl, wlt, bsf) for g in trained}
        X1 = X0 + delta
        W1 = np.maximum(recv(X1, lr_l, True), recv(X1, tfl_l, False))
        for l in ligs:
            j = gi[l]
            delta[:, j] = delta[:, j] + (W1[:, j] - W0[:, j]) - ((X0[:, j] + delta[:, j]) - X0[:, j])
        res = np.zeros_like(delta)
        for g in trained:
            res[:, gi[g]] = sum(v * delta[:, gi[m]] for m, v in S[g].items())
        delta = np.where(dinput != 0, dinput, res)
        delta = np.clip(X0 + delta, 0.0, maxv) - X0
        X_prev, W_prev = X1, W1
    out = X0 + delta
    if cells is None:
        out[:, tc] = gene_expr
    else:
        out[cells, tc] = gene_expr
    return out


def thresholds_table(t, seed):
    """Thresholds over the ligands and receptors but not every gene: 0, > 0 and NaN values."""
    rng = np.random.default_rng(seed)
    genes = sorted(set(t.ligands) | set(t.receptors))
    genes = genes[: max(2, 2 * len(genes) // 3)]  # some ligands/receptors absent from the table
    vals = rng.choice([0.0, 0.5, 1.0, np.nan], size=(len(t.obs_names), len(genes)), p=[0.35, 0.3, 0.3, 0.05])
    return pd.DataFrame(vals, index=list(t.obs_names), columns=genes)


def mask_of(t, thr: pd.DataFrame, fill):
    M = np.full((len(t.obs_names), len(t.var_names)), float(fill))
    for j, g in enumerate(t.var_names):
        if g in thr.columns:
            v = thr.loc[list(t.obs_names), g].to_numpy()
            M[:, j] = np.where(v > 0, 1.0, 0.0)
    return M


@pytest.fixture(scope="module")
def setup():
    t = make_tissue(n_cells=160, n_genes=32, n_clusters=3, seed=5, extent=500.0)
    base = make_betabase(t, n_trained=12, seed=6)
    radii = ligand_radii(lr_table(t.lr, t.var_names, radius=200.0, contact_distance=50.0))
    thr = thresholds_table(t, 1)
    return t, base, radii, thr


# -- perturb -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["ko_ligand", "ko_tf_cells", "overexpress_receptor"])
def test_perturb_thresholds_match_dense(setup, case, tmp_path):
    t, base, radii, thr = setup
    cells = None
    if case == "ko_ligand":
        target, expr = t.ligands[0], 0.0
    elif case == "ko_tf_cells":
        target, expr, cells = t.tfs[0], 0.0, np.arange(0, len(t.obs_names), 3)
    else:
        r = t.receptors[0]
        target, expr = r, float(t.X[:, t.var_names.index(r)].max() * 2)
    kw = dict(
        cells=cells,
        n_propagation=3,
        lr=t.lr,
        radius=200.0,
        contact_distance=50.0,
        cluster_key="cell_type",
        scale_factor=1.3,
    )
    a = t.to_anndata()
    got = perturb(a, base, target, expr, cell_thresholds=thr, **kw).drop("CellID").to_numpy()
    want = dense_perturb_thr(t, base, radii, mask_of(t, thr, 1.0), target, expr, 3, cells=cells, s=1.3)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    plain = perturb(a, base, target, expr, **kw).drop("CellID").to_numpy()
    assert np.abs(got - plain).max() > 1e-4  # the thresholds matter in this case
    # read from uns (default) and from a parquet path: the same numbers
    a.uns["cell_thresholds"] = thr
    np.testing.assert_array_equal(perturb(a, base, target, expr, **kw).drop("CellID").to_numpy(), got)
    p = tmp_path / "thr.parquet"
    pl.from_pandas(thr.rename_axis("CellID").reset_index()).write_parquet(p)
    np.testing.assert_array_equal(
        perturb(a, base, target, expr, cell_thresholds=p, **kw).drop("CellID").to_numpy(), got
    )
    # False ignores the uns table: bit-identical to the unthresholded run
    np.testing.assert_array_equal(
        perturb(a, base, target, expr, cell_thresholds=False, **kw).drop("CellID").to_numpy(), plain
    )


def test_perturb_all_allowed_thresholds_equal_plain(setup):
    """A table allowing every gene in every cell changes nothing (up to rounding of the max)."""
    t, base, radii, _ = setup
    thr = pd.DataFrame(1.0, index=list(t.obs_names), columns=list(t.var_names))
    kw = dict(n_propagation=2, lr=t.lr, cluster_key="cell_type")
    a = t.to_anndata()
    got = perturb(a, base, t.ligands[0], 0.0, cell_thresholds=thr, **kw).drop("CellID").to_numpy()
    plain = perturb(a, base, t.ligands[0], 0.0, **kw).drop("CellID").to_numpy()
    np.testing.assert_allclose(got, plain, rtol=1e-12, atol=1e-14)


def test_perturb_co_grn(setup):
    t, base, radii, thr = setup
    # keep half of the TF -> gene links of the betadata
    pairs = sorted({(tf, g) for g in base.genes for tf in base[g].tfs})
    keep = pairs[::2]
    links = pl.DataFrame({"source": [p[0] for p in keep], "target": [p[1] for p in keep]})
    kw = dict(n_propagation=3, lr=t.lr, cluster_key="cell_type")
    a = t.to_anndata()
    target = t.tfs[0]
    got = perturb(a, base, target, 0.0, co_grn=links, cell_thresholds=thr, **kw).drop("CellID").to_numpy()
    restricted = restrict_to_co_grn(base, links)
    for g in base.genes:  # the restriction zeroed exactly the unlinked TF columns
        bd, rb = base[g], restricted[g]
        for tf, c in zip(bd.tfs, bd.tf_cols):
            if (tf, g) in set(keep):
                np.testing.assert_array_equal(rb.values[:, c], bd.values[:, c])
            else:
                assert not rb.values[:, c].any()
    want = dense_perturb_thr(t, restricted, radii, mask_of(t, thr, 1.0), target, 0.0, 3)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    full = perturb(a, base, target, 0.0, cell_thresholds=thr, **kw).drop("CellID").to_numpy()
    assert np.abs(got - full).max() > 1e-4


def test_perturb_thresholds_bad_input(setup, tmp_path):
    t, base, _, thr = setup
    a = t.to_anndata()
    with pytest.raises(InputError, match="no row"):
        perturb(a, base, t.ligands[0], 0.0, lr=t.lr, cluster_key="cell_type", cell_thresholds=thr.iloc[5:])
    with pytest.raises(InputError, match="not found"):
        perturb(
            a, base, t.ligands[0], 0.0, lr=t.lr, cluster_key="cell_type", cell_thresholds=tmp_path / "missing.parquet"
        )


def test_perturb_batch_thresholds(setup, tmp_path):
    t, base, radii, thr = setup
    a = t.to_anndata()
    p = tmp_path / "thr.parquet"
    pl.from_pandas(thr.rename_axis("CellID").reset_index()).write_parquet(p)
    targets = [t.ligands[0], t.tfs[0]]
    sink = perturb_batch(
        a,
        base,
        targets,
        tmp_path / "out",
        n_propagation=2,
        lr=t.lr,
        cluster_key="cell_type",
        cell_thresholds=p,
        progress=False,
    )
    res = sink.scan().collect()
    M = mask_of(t, thr, 1.0)
    for tg in targets:
        got = res.filter(pl.col("target") == tg).drop("target", "CellID").to_numpy()
        np.testing.assert_allclose(got, dense_perturb_thr(t, base, radii, M, tg, 0.0, 2), rtol=1e-10, atol=1e-12)
    with pytest.raises(InputError, match="cell_thresholds given as a path"):
        perturb_batch(
            str(tmp_path / "x.h5ad"),
            str(tmp_path),
            targets,
            tmp_path / "o2",
            lr=radii,
            cell_thresholds=thr,
            executor="dask",
        )


# -- standalone splash ---------------------------------------------------------------------------
def test_splash_thresholds_fill_zero(setup):
    t, base, radii, thr = setup
    a = t.to_anndata()
    a.uns["cell_thresholds"] = thr
    M0 = mask_of(t, thr, 0.0)  # splash_betas: genes absent from the table are masked out
    gi = {g: i for i, g in enumerate(t.var_names)}
    gexf = filt(t.X) * M0
    for g in base.genes[:4]:
        bd = base[g]
        ligs = sorted(set(bd.ligands + bd.tfl_ligands))
        rr = np.array([radii.get(l, np.nan) for l in ligs])
        idx = [gi[l] for l in ligs]
        Wm = dense_received(t.coords, (filt(t.X) * M0)[:, idx], rr)
        Wu = dense_received(t.coords, filt(t.X)[:, idx], rr)
        got = splash(bd, a, lr=t.lr, cluster_key="cell_type")
        want = dense_splash(
            bd,
            t,
            {k: gexf[:, i] for k, i in gi.items()},
            {l: Wm[:, k] for k, l in enumerate(ligs)},
            {l: Wu[:, k] for k, l in enumerate(ligs)},
        )
        for m, v in want.items():
            np.testing.assert_allclose(got[f"beta_{m}"].to_numpy(), v, rtol=1e-10, atol=1e-14)
        plain = splash(bd, a, lr=t.lr, cluster_key="cell_type", cell_thresholds=False)
        del a.uns["cell_thresholds"]
        np.testing.assert_array_equal(splash(bd, a, lr=t.lr, cluster_key="cell_type").to_numpy(), plain.to_numpy())
        a.uns["cell_thresholds"] = thr


# -- the Python reference --------------------------------------------------------------------------
SCRIPT = r"""
import json, sys, os, warnings
warnings.filterwarnings("ignore")
import numpy as np, pandas as pd, anndata as ad
d = sys.argv[1]
spec = json.load(open(f"{d}/spec.json"))
arr = np.load(f"{d}/arrays.npz")
X, xy, thr = arr["X"], arr["xy"], arr["thr"]
obs = pd.Index(spec["obs_names"]); var = pd.Index(spec["var_names"])
lr_db = pd.DataFrame(spec["lr_rows"], columns=["ligand", "receptor", "pathway", "signaling"])
import SpaceTravLR.gene_factory as gfm
gfm.get_cellchat_db = lambda species: lr_db.copy()
models = f"{d}/models"; os.makedirs(models, exist_ok=True)
for g, b in spec["betas"].items():
    pd.DataFrame(np.array(b["values"]), columns=b["columns"], index=obs).to_parquet(f"{models}/{g}_betadata.parquet")
out = {}
for k, case in enumerate(spec["cases"]):
    a = ad.AnnData(X=X.copy(), obs=pd.DataFrame({"cell_type": spec["clusters"]}, index=obs),
                   var=pd.DataFrame(index=var))
    a.obsm["spatial"] = xy
    a.layers["imputed_count"] = X.copy(); a.layers["normalized_count"] = X.copy()
    a.uns["cell_thresholds"] = pd.DataFrame(thr, index=obs, columns=spec["thr_genes"])
    gf = gfm.GeneFactory(a, models, annot="cell_type", radius=200, contact_distance=50,
                         scale_factor=spec["scale_factor"], beta_scale_factor=1.0, beta_cap=None)
    gf.load_betas()
    res = gf.perturb(target=case["target"], n_propagation=case["n"], gene_expr=case["expr"], cells=case["cells"])
    out[f"perturb:{k}"] = res.loc[obs, var].values
np.savez(f"{d}/out.npz", **out)
"""


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    if not PY.exists():
        pytest.skip(f"SpaceTravLR reference venv not found at {REF}")
    d = tmp_path_factory.mktemp("stlr_thr_ref")
    t = make_tissue(n_cells=120, n_genes=28, n_clusters=3, seed=31, extent=450.0)
    base = make_betabase(t, n_trained=10, seed=9, per_cell=True)
    thr = thresholds_table(t, 4)
    cases = [
        dict(target=t.ligands[0], expr=0.0, n=3, cells=None),
        dict(target=t.tfs[0], expr=0.0, n=2, cells=list(range(0, 120, 2))),
    ]
    spec = dict(
        obs_names=t.obs_names,
        var_names=t.var_names,
        clusters=[t.cluster_labels[c] for c in t.clusters],
        lr_rows=t.lr.rows(),
        scale_factor=1.7,
        cases=cases,
        thr_genes=list(thr.columns),
        betas={g: dict(columns=base[g].columns, values=base[g].values.tolist()) for g in base.genes},
    )
    (d / "spec.json").write_text(json.dumps(spec))
    np.savez(d / "arrays.npz", X=t.X, xy=t.coords, thr=thr.to_numpy())
    (d / "ref.py").write_text(SCRIPT)
    env = dict(os.environ, MPLBACKEND="Agg", TQDM_DISABLE="1", NUMBA_NUM_THREADS="2")
    r = subprocess.run([str(PY), str(d / "ref.py"), str(d)], capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return t, base, thr, spec, dict(np.load(d / "out.npz", allow_pickle=False))


@pytest.mark.parametrize("k", [0, 1])
def test_perturb_thresholds_match_reference(reference_run, k):
    t, base, thr, spec, out = reference_run
    case = spec["cases"][k]
    a = t.to_anndata()
    a.uns["cell_thresholds"] = thr
    got = perturb(
        a,
        base,
        case["target"],
        case["expr"],
        cells=case["cells"],
        n_propagation=case["n"],
        lr=t.lr,
        radius=200.0,
        contact_distance=50.0,
        scale_factor=spec["scale_factor"],
    )
    want = out[f"perturb:{k}"]
    np.testing.assert_allclose(got.drop("CellID").to_numpy(), want, rtol=1e-8, atol=1e-10)
    plain = perturb(
        a,
        base,
        case["target"],
        case["expr"],
        cells=case["cells"],
        n_propagation=case["n"],
        lr=t.lr,
        scale_factor=spec["scale_factor"],
        cell_thresholds=False,
    )
    assert np.abs(plain.drop("CellID").to_numpy() - want).max() > 1e-4  # the thresholds are exercised


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_perturb_thresholds_and_co_grn(setup, tmp_path):
    from polgen.cli import main
    from polgen.stlr.betadata import write_betadata

    t, base, radii, thr = setup
    a = t.to_anndata()
    a.write_h5ad(tmp_path / "tissue.h5ad")
    t.lr.write_csv(tmp_path / "lr.csv")
    (tmp_path / "betas").mkdir()
    for g in base.genes:
        write_betadata(base[g], tmp_path / "betas" / f"{g}_betadata.parquet")
    pl.from_pandas(thr.rename_axis("CellID").reset_index()).write_parquet(tmp_path / "thr.parquet")
    pairs = sorted({(tf, g) for g in base.genes for tf in base[g].tfs})[::2]
    links = pl.DataFrame({"source": [p[0] for p in pairs], "target": [p[1] for p in pairs]})
    links.write_csv(tmp_path / "co.csv")
    target = t.tfs[0]
    common = [
        "stlr",
        "perturb",
        "--h5ad",
        str(tmp_path / "tissue.h5ad"),
        "--lr",
        str(tmp_path / "lr.csv"),
        "--betas",
        str(tmp_path / "betas"),
        "--target",
        target,
        "--n-propagation",
        "2",
        "--cluster-key",
        "cell_type",
        "--no-progress",
    ]
    assert (
        main(
            common
            + [
                "--cell-thresholds",
                str(tmp_path / "thr.parquet"),
                "--co-grn",
                str(tmp_path / "co.csv"),
                "--out",
                str(tmp_path / "a.parquet"),
            ]
        )
        == 0
    )
    want = perturb(
        a, base, target, 0.0, n_propagation=2, lr=t.lr, cluster_key="cell_type", cell_thresholds=thr, co_grn=links
    )
    np.testing.assert_allclose(
        pl.read_parquet(tmp_path / "a.parquet").drop("CellID").to_numpy(),
        want.drop("CellID").to_numpy(),
        rtol=1e-12,
        atol=1e-14,
    )
    assert main(common + ["--no-cell-thresholds", "--out", str(tmp_path / "b.parquet")]) == 0
    plain = perturb(a, base, target, 0.0, n_propagation=2, lr=t.lr, cluster_key="cell_type")
    np.testing.assert_allclose(
        pl.read_parquet(tmp_path / "b.parquet").drop("CellID").to_numpy(),
        plain.drop("CellID").to_numpy(),
        rtol=1e-12,
        atol=1e-14,
    )
    assert (
        main(common + ["--cell-thresholds", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "c.parquet")]) == 2
    )
    assert not (tmp_path / "c.parquet").exists()
    # thresholds stored in the h5ad's uns are read from the path (as a batch worker does)
    a.uns["cell_thresholds"] = thr
    a.write_h5ad(tmp_path / "tissue_thr.h5ad")
    got = perturb(
        tmp_path / "tissue_thr.h5ad",
        tmp_path / "betas",
        target,
        0.0,
        n_propagation=2,
        lr=t.lr,
        cluster_key="cell_type",
        co_grn=tmp_path / "co.csv",
    )
    np.testing.assert_allclose(got.drop("CellID").to_numpy(), want.drop("CellID").to_numpy(), rtol=1e-12, atol=1e-14)


def test_perturb_batch_thresholds_on_dask(setup, tmp_path):
    """Thresholds and co-GRN given as paths reach the workers (picklable task specs)."""
    distributed = pytest.importorskip("distributed")
    from polgen.stlr.betadata import write_betadata

    t, base, radii, thr = setup
    a = t.to_anndata()
    a.write_h5ad(tmp_path / "tissue.h5ad")
    (tmp_path / "betas").mkdir()
    for g in base.genes:
        write_betadata(base[g], tmp_path / "betas" / f"{g}_betadata.parquet")
    pl.from_pandas(thr.rename_axis("CellID").reset_index()).write_parquet(tmp_path / "thr.parquet")
    pairs = sorted({(tf, g) for g in base.genes for tf in base[g].tfs})[1::2]
    pl.DataFrame({"source": [p[0] for p in pairs], "target": [p[1] for p in pairs]}).write_csv(tmp_path / "co.csv")
    targets = [t.ligands[1], t.tfs[0]]
    kw = dict(
        n_propagation=2,
        lr=radii,
        cluster_key="cell_type",
        cell_thresholds=str(tmp_path / "thr.parquet"),
        co_grn=str(tmp_path / "co.csv"),
        progress=False,
    )
    local = perturb_batch(str(tmp_path / "tissue.h5ad"), str(tmp_path / "betas"), targets, tmp_path / "local", **kw)
    cluster = distributed.LocalCluster(
        processes=True, n_workers=1, threads_per_worker=1, dashboard_address=None, silence_logs=40
    )
    client = distributed.Client(cluster)
    try:
        remote = perturb_batch(
            str(tmp_path / "tissue.h5ad"),
            str(tmp_path / "betas"),
            targets,
            tmp_path / "dask",
            executor=client.get_executor(),
            **kw,
        )
        a_, b_ = local.scan().collect(), remote.scan().collect()
    finally:
        client.close()
        cluster.close()
    assert a_.equals(b_)
    M = mask_of(t, thr, 1.0)
    restricted = restrict_to_co_grn(base, pl.read_csv(tmp_path / "co.csv"))
    for tg in targets:
        got = a_.filter(pl.col("target") == tg).drop("target", "CellID").to_numpy()
        np.testing.assert_allclose(got, dense_perturb_thr(t, restricted, radii, M, tg, 0.0, 2), rtol=1e-10, atol=1e-12)
