"""SpaceTravLR training features: cell thresholds, CellOracle links (co_grn) p-value rule, NicheNet
1,000-gene exclusion of TF-ligand pairs, receptor levels from ``normalized_count``.

Each is checked against a dense numpy / plain-Python re-computation of the reference's rules,
and (when the reference venv exists) against the reference's own design matrix
(``SpatialCellularProgramsEstimator.train_df``, spacetravlr 0.1.21) run in a subprocess.
"""

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

from polgen.errors import InputError, ResumeError
from polgen.stlr.features import NICHENET_MIN_GENES
from polgen.stlr.grn import as_links, co_grn_links, regulator_map, regulators
from polgen.stlr.tissue import read_cell_thresholds, uns_cell_thresholds
from polgen.stlr.train import fit, training_context

REF = Path(os.environ.get("SPACETRAVLR_REF", Path(tempfile.gettempdir()) / "spacetravlr-ref"))
PY = REF / "bin" / "python"

TFS = [f"Tf{k}" for k in range(8)]
LIGS = [f"Lg{k}" for k in range(6)]
RECS = [f"Rc{k}" for k in range(6)]
TARGETS = [f"Tg{k}" for k in range(4)]
LR_ROWS = [
    ("Lg0", "Rc0", "P0", "Secreted Signaling"),
    ("Lg1", "Rc1", "P1", "Cell-Cell Contact"),
    ("Lg2", "Rc2", "P2", "Secreted Signaling"),
    ("Lg3", "Rc4_Rc5", "P3", "ECM-Receptor"),
    ("Lg4", "Rc3", "P4", "Secreted Signaling"),
    ("Lg5", "Rc0", "P0", "Secreted Signaling"),
    ("Lg2", "Rc1", "P1", "Secreted Signaling"),
    ("Tg0", "Rc2", "P5", "Secreted Signaling"),  # a target as ligand: excluded for Tg0 only
    ("Lg0", "Tg1", "P6", "Secreted Signaling"),  # a target as receptor: excluded for Tg1 only
]
RADIUS, CONTACT, SCALE, RTHRESH, CUTOFF = 200.0, 50.0, 1.7, 0.02, 0.01


def make_case(n_genes: int = 1005, n_cells: int = 150, seed: int = 11):
    """A tissue (AnnData with imputed/normalized layers and uns cell_thresholds), LR rows,
    CellOracle per-cluster links and a NicheNet matrix."""
    import anndata

    rng = np.random.default_rng(seed)
    noise = [f"Nz{k:04d}" for k in range(n_genes - len(TFS) - len(LIGS) - len(RECS) - len(TARGETS))]
    genes = TFS + LIGS + RECS + TARGETS + noise
    gi = {g: i for i, g in enumerate(genes)}
    xy = rng.uniform(0, 600, (n_cells, 2))
    cl = (xy[:, 0] // 200).astype(int)  # 3 spatial domains
    X = rng.gamma(2.0, 0.5, (n_cells, len(genes)))
    X[rng.random(X.shape) < 0.15] = 0.0
    X[:, gi["Rc3"]] *= 0.012  # passes receptor_thresh on imputed_count, not on normalized_count (x 0.5)
    X[:, gi["Rc3"]][X[:, gi["Rc3"]] > 0] += 0.02
    obs_names = [f"cell{i:03d}" for i in range(n_cells)]
    obs = pd.DataFrame({"cell_type_int": cl}, index=obs_names)
    a = anndata.AnnData(X=X.copy(), obs=obs, var=pd.DataFrame(index=genes))
    a.obsm["spatial"] = xy
    a.layers["imputed_count"] = X.copy()
    a.layers["normalized_count"] = X * 0.5
    # cell thresholds: per cluster (as COMMOT gives them) with a few per-cell exceptions; Lg5 and
    # Rc5 are absent from the table (-> masked everywhere), NaN counts as 0
    cols = [g for g in LIGS + RECS if g not in ("Lg5", "Rc5")]
    per_cluster = rng.random((3, len(cols))) < 0.6
    T = per_cluster[cl].astype(np.float64) * rng.uniform(0.5, 3.0, (n_cells, len(cols)))
    flip = rng.random(T.shape) < 0.05
    T[flip] = np.where(T[flip] > 0, 0.0, 1.0)
    T[3, 0] = np.nan
    a.uns["cell_thresholds"] = pd.DataFrame(T, index=obs_names, columns=cols)
    # CellOracle links per cluster: TF -> targets / ligands, p in [0, 0.1]; targets regulate
    # some ligands (Tg0 -> Lg1, Tg2 -> Lg3) for the NicheNet rule
    links = {}
    for c in range(3):
        rows = []
        for tg in TARGETS + LIGS:
            for tf in rng.choice(TFS, size=4, replace=False):
                rows.append((str(tf), tg, float(rng.normal()), float(rng.uniform(0, 0.1))))
        rows += [("Tg0", "Lg1", 0.5, 0.001), ("Tg2", "Lg3", 0.4, 0.01), ("Tf1", "Tg1", 0.3, 0.2)]
        links[c] = pd.DataFrame(rows, columns=["source", "target", "coef_mean", "p"])
    tfl = pd.DataFrame(rng.uniform(0, 0.05, (len(TFS) + 2, len(LIGS))), index=TFS + ["Zz1", "Zz2"], columns=LIGS)
    tfl.iloc[0, :] = 0.03  # ties: nlargest keeps the first columns
    tfl.iloc[1, 4] = 0.005  # below the cutoff
    lr = pl.DataFrame(LR_ROWS, schema=["ligand", "receptor", "pathway", "signaling"], orient="row")
    return a, lr, links, tfl


def polgen_context(a, lr, links, tfl, **kw):
    ctx, t = training_context(
        a,
        lr,
        links,
        ligand_target=tfl,
        radius=RADIUS,
        contact_distance=CONTACT,
        scale_factor=SCALE,
        receptor_thresh=RTHRESH,
        tf_ligand_cutoff=CUTOFF,
        cluster_key="cell_type_int",
        **kw,
    )
    return ctx, t


# -- dense re-computation ------------------------------------------------------------------------
def dense_design(a, lr_rows, links, tfl, target, thresholds=True, alpha=0.05):
    """The reference's design columns for ``target``, recomputed with numpy and plain Python."""
    X = np.asarray(a.layers["imputed_count"], dtype=np.float64)
    genes = list(a.var_names)
    gi = {g: i for i, g in enumerate(genes)}
    n = X.shape[0]
    flat = pd.concat(list(links.values()))

    def regs(g):
        s = flat[(flat.target == g) & (flat.p < alpha)].source
        return sorted({x for x in s if x in gi and x != g})

    exp = [(l, r, s) for L, R, _, s in lr_rows for l in L.split("_") for r in R.split("_")]
    exp = [(l, r, s) for l, r, s in exp if l in gi and r in gi]
    radius = {}
    for l, _, s in exp:
        radius.setdefault(l, RADIUS if s == "Secreted Signaling" else CONTACT)
    lev = np.asarray(a.layers["normalized_count"])
    cl = a.obs["cell_type_int"].to_numpy()
    means = np.stack([lev[cl == c].mean(axis=0) for c in np.unique(cl)]).max(axis=0)
    pairs = []
    for l, r, _ in exp:
        if means[gi[r]] > RTHRESH and target not in (l, r) and (l, r) not in pairs:
            pairs.append((l, r))
    Th = a.uns["cell_thresholds"]

    def mask(g):
        if not thresholds:
            return np.ones(n)
        if g not in Th.columns:
            return np.zeros(n)
        return (Th[g].fillna(0).to_numpy() > 0).astype(float)

    Xf = np.where(X > 1e-9, X, 0.0)
    d2 = ((a.obsm["spatial"][:, None, :] - a.obsm["spatial"][None]) ** 2).sum(-1)

    def wl(l, masked):
        K = np.exp(-d2 / (2 * radius[l] ** 2))
        return SCALE / n * K @ (Xf[:, gi[l]] * (mask(l) if masked else 1.0))

    rg = regs(target)
    lr_ligs = sorted({l for l, _ in pairs})
    tf_rows = sorted(set(tfl.index) & set(rg))
    big = len(genes) >= 1000
    tfl_pairs = []
    for tf in tf_rows:
        row = tfl.loc[tf, [c for c in sorted(tfl.columns) if c in lr_ligs]]
        for lig, v in row.nlargest(5).items():
            lregs = set(regs(lig)) if big else set()
            if v > CUTOFF and target not in lregs and tf not in lregs:
                tfl_pairs.append((lig, tf))
    names = [f"beta_{t}" for t in rg] + [f"beta_{l}${r}" for l, r in pairs] + [f"beta_{l}#{t}" for l, t in tfl_pairs]
    cols = [X[:, gi[t]] for t in rg]
    cols += [wl(l, True) * Xf[:, gi[r]] * mask(r) for l, r in pairs]
    cols += [wl(l, False) * X[:, gi[t]] for l, t in tfl_pairs]
    return names, (np.column_stack(cols) if cols else np.zeros((n, 0)))


@pytest.fixture(scope="module")
def case():
    return make_case()


def test_design_matches_dense_recomputation(case):
    a, lr, links, tfl = case
    ctx, t = polgen_context(a, lr, links, tfl)
    assert len(t.var_names) >= NICHENET_MIN_GENES
    seen_tfl = 0
    for target in TARGETS:
        mods = ctx.modulators(target)
        names, D = dense_design(a, LR_ROWS, links, tfl, target)
        assert mods.names == names, target
        np.testing.assert_allclose(ctx.design(mods), D, rtol=1e-12, atol=1e-300)
        seen_tfl += len(mods.tfl_pairs)
    assert seen_tfl > 0
    # the features exercised something: masks zero some LR entries, Rc3 fails receptor_thresh on
    # normalized_count, Lg5 (absent from the table) receives nothing
    assert "Rc3" not in ctx.receptor_ok
    assert np.all(ctx.W[:, ctx.lidx["Lg5"]] == 0) and np.any(ctx.W_tfl[:, ctx.lidx["Lg0"]] != ctx.W[:, ctx.lidx["Lg0"]])


def test_thresholds_off_and_nichenet_rule(case):
    a, lr, links, tfl = case
    ctx, _ = polgen_context(a, lr, links, tfl, cell_thresholds=False)
    for target in TARGETS:
        names, D = dense_design(a, LR_ROWS, links, tfl, target, thresholds=False)
        mods = ctx.modulators(target)
        assert mods.names == names
        np.testing.assert_allclose(ctx.design(mods), D, rtol=1e-12, atol=1e-300)
    assert ctx.W is ctx.W_tfl
    # the NicheNet rule removed pairs: below 1000 genes (a gene subset) they come back
    small = a[:, : len(TFS) + len(LIGS) + len(RECS) + len(TARGETS) + 20].copy()
    csmall, _ = polgen_context(small, lr, links, tfl, cell_thresholds=False)
    dropped = 0
    for target in TARGETS:
        big_pairs = set(ctx.modulators(target).tfl_pairs)
        small_pairs = set(csmall.modulators(target).tfl_pairs)
        assert big_pairs <= small_pairs
        dropped += len(small_pairs - big_pairs)
        for lig, tf in small_pairs - big_pairs:
            lregs = set(regulators(as_links(links), lig, list(a.var_names)))
            assert target in lregs or tf in lregs
    assert dropped > 0


def test_celloracle_links_p_rule():
    links = {
        "B": pd.DataFrame(
            {
                "source": ["A", "B", "C", "G"],
                "target": ["G", "G", "G", "G"],
                "coef_mean": [1.0, 2.0, 3.0, 1.0],
                "p": [0.01, 0.2, 0.049999, 0.0],
            }
        ),
        "T": pd.DataFrame(
            {
                "source": ["D", "A", "E"],
                "target": ["G", "H", "G"],
                "coef_mean": [1.0, 2.0, 0.5],
                "p": [0.05, 0.001, np.nan],
            }
        ),
    }
    long = as_links(links)
    assert set(long["cluster"].to_list()) == {"B", "T"}
    # p < alpha (strict), NaN fails, the target itself never regulates itself, any cluster counts
    assert regulators(long, "G") == ["A", "C"]
    assert regulators(long, "G", alpha=0.0500001) == ["A", "C", "D"]
    assert regulators(long, "G", var_names=["C", "G"]) == ["C"]
    assert regulator_map(long) == {"G": ["A", "C"], "H": ["A"]}
    # the perturbation-side flattening keeps every link once, highest coef_mean first, no p filter
    flat = co_grn_links(links)
    assert flat.height == 7 - 0 and flat.select("source", "target").is_unique().all()
    # a long table without p keeps every link
    assert regulators(as_links(pl.DataFrame({"source": ["X", "Y"], "target": ["G", "G"]})), "G") == ["X", "Y"]
    with pytest.raises(InputError):
        as_links({"B": pd.DataFrame({"src": ["A"], "target": ["G"]})})


def test_read_cell_thresholds_alignment(tmp_path, case):
    a, *_ = case
    obs = list(a.obs_names)
    df = a.uns["cell_thresholds"]
    shuffled = df.iloc[::-1]
    th = read_cell_thresholds(shuffled, obs)
    np.testing.assert_array_equal(th.allowed, df.fillna(0).to_numpy() > 0)
    m = th.mask(["Lg0", "Lg5", "Rc0"])
    np.testing.assert_array_equal(m[:, 1], 0.0)
    assert th.mask(["Lg5"], fill=1.0).min() == 1.0
    # parquet (pandas index) and polars frames give the same digest
    df.to_parquet(tmp_path / "th.parquet")
    assert read_cell_thresholds(tmp_path / "th.parquet", obs).digest() == th.digest()
    assert read_cell_thresholds(pl.from_pandas(df.reset_index(names="CellID")), obs).digest() == th.digest()
    with pytest.raises(InputError, match="no row"):
        read_cell_thresholds(df.iloc[:-1], obs)
    with pytest.raises(InputError, match="twice"):
        read_cell_thresholds(pd.concat([df, df.iloc[:1]]), obs)
    with pytest.raises(InputError):
        read_cell_thresholds(pd.DataFrame({"Lg0": ["x"] * len(obs)}, index=obs), obs)
    # uns from an AnnData and from its .h5ad path
    a.write_h5ad(tmp_path / "t.h5ad")
    assert read_cell_thresholds(uns_cell_thresholds(str(tmp_path / "t.h5ad")), obs).digest() == th.digest()
    assert uns_cell_thresholds(a) is df


def test_fit_uses_thresholds_and_records_them(tmp_path, case):
    a, lr, links, tfl = case
    small = a[:, : len(TFS) + len(LIGS) + len(RECS) + len(TARGETS) + 4].copy()
    kw = dict(
        lr=lr,
        grn=links,
        ligand_target=tfl,
        radius=RADIUS,
        contact_distance=CONTACT,
        scale_factor=SCALE,
        receptor_thresh=RTHRESH,
        cluster_key="cell_type_int",
        progress=False,
    )
    path = tmp_path / "t.h5ad"
    small.write_h5ad(path)
    r1 = fit(str(path), TARGETS[:2], out=tmp_path / "a", **kw)
    r2 = fit(small, TARGETS[:2], out=tmp_path / "b", **kw)
    r3 = fit(small, TARGETS[:2], out=tmp_path / "c", cell_thresholds=False, **kw)
    # a pool worker re-reads uns["cell_thresholds"] and the normalized_count layer from the file
    lr_path, links_path = tmp_path / "lr.csv", tmp_path / "links.parquet"
    lr.write_csv(lr_path)
    as_links(links).write_parquet(links_path)
    kw_paths = dict(kw, lr=str(lr_path), grn=str(links_path), ligand_target=None)
    r4 = fit(str(path), TARGETS[:2], out=tmp_path / "d", executor="threads", **kw_paths)
    r5 = fit(small, TARGETS[:2], out=tmp_path / "e", **kw_paths)
    man = json.loads((tmp_path / "a" / "stlr_run.json").read_text())["params"]
    assert (
        man["cell_thresholds"]
        == read_cell_thresholds(small.uns["cell_thresholds"], list(small.obs_names), LIGS + RECS).digest()
    )
    assert man["receptor_layer"] == "normalized_count" and man["grn_alpha"] == 0.05
    for g in TARGETS[:2]:
        # an .h5ad path and the in-memory AnnData train the same betas; without thresholds they differ
        assert (r1.out / f"{g}_betadata.parquet").read_bytes()[4:] != b""
        A = pl.read_parquet(r1.out / f"{g}_betadata.parquet")
        B = pl.read_parquet(r2.out / f"{g}_betadata.parquet")
        C = pl.read_parquet(r3.out / f"{g}_betadata.parquet")
        assert A.equals(B)
        assert not A.equals(C)
        # (the file bytes differ only by the recorded 'adata' parameter: path vs in-memory)
        assert pl.read_parquet(r4.out / f"{g}_betadata.parquet").equals(
            pl.read_parquet(r5.out / f"{g}_betadata.parquet")
        )
    # resuming with other thresholds is refused
    with pytest.raises(ResumeError):
        fit(str(path), TARGETS[:2], out=tmp_path / "a", resume=True, cell_thresholds=False, **kw)


# -- the reference in a subprocess ----------------------------------------------------------------
SCRIPT = r"""
import json, sys, pickle, warnings
warnings.filterwarnings("ignore")
import numpy as np, pandas as pd, anndata as ad
d = sys.argv[1]
spec = json.load(open(f"{d}/spec.json"))
a = ad.read_h5ad(f"{d}/tissue.h5ad")
links = {int(k): pd.read_parquet(f"{d}/links_{k}.parquet") for k in spec["clusters"]}
tfl = pd.read_parquet(f"{d}/tfl.parquet")
lr_db = pd.DataFrame(spec["lr_rows"], columns=["ligand", "receptor", "pathway", "signaling"])
import SpaceTravLR.models.parallel_estimators as pe
from SpaceTravLR.tools.network import RegulatoryFactory
pe.get_cellchat_db = lambda species: lr_db.copy()

def radius_weights(xy, lig_df, radius, scale_factor):
    # the reference's compute_radius_weights_fast in numpy (its numba kernels take ~50 s of JIT
    # compilation; the formula itself is checked against the reference in test_stlr_reference)
    d2 = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    W = scale_factor * np.exp(d2 * (-1.0 / (2.0 * radius * radius)))
    return pd.DataFrame(W @ lig_df.values / len(xy), index=lig_df.index, columns=lig_df.columns)

pe.compute_radius_weights_fast = radius_weights
grn = RegulatoryFactory(links=links, annot="cell_type_int")
out = {}
for case, n in (("big", None), ("small", spec["n_small"])):
    ad_ = a.copy() if n is None else a[:, :n].copy()
    # CNN inputs, irrelevant to the design matrix: skip their (slow) construction
    ad_.obsm["spatial_maps"] = np.zeros((ad_.n_obs, 3, 4, 4), dtype=np.float32)
    ad_.obsm["spatial_features"] = pd.DataFrame(np.zeros((ad_.n_obs, 3)), index=ad_.obs_names)
    for target in spec["targets"]:
        est = pe.SpatialCellularProgramsEstimator(
            ad_, target_gene=target, spatial_dim=4, cluster_annot="cell_type_int", layer="imputed_count",
            radius=spec["radius"], contact_distance=spec["contact"], tf_ligand_cutoff=spec["cutoff"],
            receptor_thresh=spec["rthresh"], grn=grn, tflinks=tfl, scale_factor=spec["scale"])
        df = est.train_df
        out[f"{case}:{target}:cols"] = [str(c) for c in df.columns]
        out[f"{case}:{target}:vals"] = df.to_numpy(dtype=float).tolist()
json.dump(out, open(f"{d}/out.json", "w"))
"""


@pytest.fixture(scope="module")
def reference_design(tmp_path_factory, case):
    if not PY.exists():
        pytest.skip(
            f"SpaceTravLR reference venv not found at {REF} (run ../shared/tools/install-spacetravlr-reference.sh)"
        )
    a, lr, links, tfl = case
    d = tmp_path_factory.mktemp("stlr_feat_ref")
    a.write_h5ad(d / "tissue.h5ad")
    for k, df in links.items():
        df.to_parquet(d / f"links_{k}.parquet")
    tfl.to_parquet(d / "tfl.parquet")
    n_small = len(TFS) + len(LIGS) + len(RECS) + len(TARGETS) + 20
    spec = dict(
        clusters=[str(k) for k in links],
        lr_rows=[list(r) for r in LR_ROWS],
        targets=TARGETS,
        radius=RADIUS,
        contact=CONTACT,
        cutoff=CUTOFF,
        rthresh=RTHRESH,
        scale=SCALE,
        n_small=n_small,
    )
    (d / "spec.json").write_text(json.dumps(spec))
    (d / "ref.py").write_text(SCRIPT)
    env = dict(os.environ, MPLBACKEND="Agg", TQDM_DISABLE="1", NUMBA_NUM_THREADS="2")
    r = subprocess.run([str(PY), str(d / "ref.py"), str(d)], capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((d / "out.json").read_text()), n_small


@pytest.mark.parametrize("which", ["big", "small"])
def test_design_matches_reference(case, reference_design, which):
    a, lr, links, tfl = case
    out, n_small = reference_design
    ad_ = a if which == "big" else a[:, :n_small].copy()
    ctx, _ = polgen_context(ad_, lr, links, tfl)
    n_tfl = 0
    for target in TARGETS:
        cols = out[f"{which}:{target}:cols"]
        vals = np.array(out[f"{which}:{target}:vals"], dtype=np.float64)
        assert cols[0] == target
        mods = ctx.modulators(target)
        assert mods.names == [f"beta_{c}" for c in cols[1:]], target
        np.testing.assert_allclose(ctx.design(mods), vals[:, 1:], rtol=1e-10, atol=1e-300)
        n_tfl += len(mods.tfl_pairs)
    assert n_tfl > 0


def test_restrict_to_co_grn_removes_only_unlinked_tf_terms():
    from polgen.stlr import restrict_to_co_grn, splash
    from polgen.stlr.synthetic import make_betabase, make_tissue

    t = make_tissue(n_cells=120, n_genes=30, n_clusters=3, seed=4, extent=400.0)
    base = make_betabase(t, n_trained=6, seed=3, per_cell=True)
    rng = np.random.default_rng(5)
    # a CellOracle-style co-GRN linking about half of each gene's TFs (in one cluster or the other)
    rows = {0: [], 1: []}
    kept: dict[str, set] = {}
    for g in base.genes:
        for tf in base[g].tfs:
            if rng.random() < 0.5:
                rows[int(rng.integers(2))].append((tf, g, float(rng.normal()), 0.5))  # p ignored here
                kept.setdefault(g, set()).add(tf)
        rows[0].append((g, base[g].tfs[0], 1.0, 0.01))  # reversed direction: must not count
    co = {c: pd.DataFrame(r, columns=["source", "target", "coef_mean", "p"]) for c, r in rows.items()}
    rb = restrict_to_co_grn(base, co)
    rw = {l: np.linspace(0.1, 1.0, 120) * (k + 1) for k, l in enumerate(t.ligands)}
    n_dropped = 0
    for g in base.genes:
        bd = base[g]
        kw = dict(expr=t.X, var_names=t.var_names, obs_names=t.obs_names, received=rw)
        S0 = splash(bd, **kw)
        S1 = splash(rb[g], **kw)
        want = S0.drop("CellID").to_numpy().copy()
        cols = S0.columns[1:]
        for tf, c in zip(bd.tfs, bd.tf_cols):
            if tf not in kept.get(g, set()):
                want[:, cols.index(f"beta_{tf}")] -= bd.values[:, c]  # its dy/dTF term removed
                n_dropped += 1
        np.testing.assert_allclose(S1.drop("CellID").to_numpy(), want, rtol=1e-12, atol=1e-14)
        # nothing but the TF columns changed
        other = [k for k, c in enumerate(bd.columns) if k not in set(bd.tf_cols.tolist())]
        np.testing.assert_array_equal(rb[g].values[:, other], bd.values[:, other])
    assert n_dropped > 0


def test_cell_thresholds_from_communication():
    from polgen.stlr.features import cell_thresholds_from_communication

    lr = pl.DataFrame(
        {
            "ligand": ["La", "Lb", "La"],
            "receptor": ["Ra_Rb", "Rc", "Ra"],
            "pathway": ["x", "y", "x"],
            "signaling": ["Secreted Signaling"] * 3,
        }
    )
    types = ["T", "B"]
    idx = pd.Index(types)
    comm = {
        # La -> Ra: kept entries (p < 0.3): T->T 1.0, B->T 2.0 ; T->B 5.0 dropped (p = 0.5)
        "La-Ra": {
            "communication_matrix": pd.DataFrame([[1.0, 5.0], [2.0, 0.0]], index=idx, columns=idx),
            "communication_pvalue": pd.DataFrame([[0.1, 0.5], [0.2, 0.0]], index=idx, columns=idx),
        },
        # La -> Rb: nothing significant -> ignored
        "La-Rb": (
            pd.DataFrame([[3.0, 3.0], [3.0, 3.0]], index=idx, columns=idx),
            pd.DataFrame([[0.9, 0.9], [0.9, 0.9]], index=idx, columns=idx),
        ),
        # Lb -> Rc: B->B 4.0
        "Lb-Rc": (
            pd.DataFrame([[0.0, 0.0], [0.0, 4.0]], index=idx, columns=idx),
            pd.DataFrame([[0.0, 0.0], [0.0, 0.01]], index=idx, columns=idx),
        ),
        "Zz-Rc": (pd.DataFrame([[9.0]]), pd.DataFrame([[0.0]])),  # not in the LR table
    }
    cells = ["c0", "c1", "c2"]
    ct = ["T", "B", "T"]
    got = cell_thresholds_from_communication(comm, lr, cells, ct)
    assert got.columns == ["CellID", "La", "Lb", "Ra", "Rb", "Rc"]
    # La: sender row sums T = 1, B = 2 (La-Ra counted once although listed twice); Ra: receiver
    # column sums T = 3, B = 0; Lb / Rc: B row / column = 4
    want = {"La": [1.0, 2.0, 1.0], "Lb": [0.0, 4.0, 0.0], "Ra": [3.0, 0.0, 3.0], "Rb": [0.0] * 3, "Rc": [0.0, 4.0, 0.0]}
    for g, v in want.items():
        assert got[g].to_list() == v, g
    th = read_cell_thresholds(got, cells)
    np.testing.assert_array_equal(th.mask(["La", "Rb", "Rc"]), [[1, 0, 0], [1, 0, 1], [1, 0, 0]])
