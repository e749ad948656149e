"""SpaceTravLR core: received ligands, splash and perturb against a dense numpy reference.

The reference below is written from the formulas (issue 6 and the reference-behaviour notes),
independently of polgen's kernels: full N x N Gaussian matrices, per-gene dictionaries, no numba.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from polgen.errors import InputError, ModelError
from polgen.stlr import perturb, received_ligands, splash
from polgen.stlr.grn import ligand_radii, lr_table
from polgen.stlr.synthetic import make_betabase, make_tissue

MIN_EXPR = 1e-9


# -- dense reference ---------------------------------------------------------------------------
def ref_received(xy, L, radii, s=1.0):
    n = xy.shape[0]
    d2 = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    out = np.zeros(L.shape)
    for l in range(L.shape[1]):
        K = np.exp(-d2 / (2.0 * radii[l] ** 2))
        out[:, l] = s * (K @ L[:, l]) / n
    return out


def filt(x):
    return np.where(x > MIN_EXPR, x, 0.0)


def bd_rows(bd, t):
    if bd.id_kind == "Cluster":
        pos = {c: i for i, c in enumerate(bd.ids)}
        return np.array([pos[t.cluster_labels[c]] for c in t.clusters])
    pos = {c: i for i, c in enumerate(bd.ids)}
    return np.array([pos[c] for c in t.obs_names])


def ref_splash(bd, t, gexf, wl, wl_tfl, bsf=1.0, cap=None):
    """{modulator: per-cell derivative} for one betadata; gexf/wl/wl_tfl are {gene: vector}."""
    B = bd.values[bd_rows(bd, t)]
    col = {c: B[:, k] for k, c in enumerate(bd.columns)}
    out = {}

    def add(g, v):
        out[g] = out.get(g, 0.0) + v

    for c, v in col.items():
        if not c.startswith("beta_"):
            continue
        m = c[5:]
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
    return {k: out[k] for k in sorted(out)}


def ref_perturb(t, base, radii_map, target, gene_expr, n_prop, cells=None, bsf=1.0, cap=None, s=1.0, clip=True):
    X0 = t.X.copy()
    genes = list(t.var_names)
    gi = {g: i for i, g in enumerate(genes)}
    trained = [g for g in base.genes if g in gi]
    ligs = sorted({l for g in trained for l in base[g].ligands + base[g].tfl_ligands})
    radii = np.array([radii_map.get(l, np.nan) for l in ligs])

    def recv(X):
        L = filt(X[:, [gi[l] for l in ligs]])
        out = np.zeros(L.shape)
        ok = np.isfinite(radii)
        if ok.any():
            out[:, ok] = ref_received(t.coords, L[:, ok], radii[ok], s)
        return out

    sim_in = X0.copy()
    tc = gi[target]
    if cells is None:
        sim_in[:, tc] = gene_expr
    else:
        sim_in[cells, tc] = gene_expr
    dinput = sim_in - X0
    delta = dinput.copy()
    W0 = recv(X0)
    Wtfl = W0
    W_prev, X_prev = W0, X0
    maxv = X0.max(0) if clip else np.inf
    for _ in range(n_prop):
        gexf = filt(X_prev)
        gd = {g: gexf[:, i] for g, i in gi.items()}
        wl = {l: W_prev[:, k] for k, l in enumerate(ligs)}
        wlt = {l: Wtfl[:, k] for k, l in enumerate(ligs)}
        S = {g: ref_splash(base[g], t, gd, wl, wlt, bsf, cap) for g in trained}
        X1 = X0 + delta
        W1 = recv(X1)
        for k, l in enumerate(ligs):
            j = gi[l]
            delta[:, j] = delta[:, j] + (W1[:, k] - W0[:, k]) - ((X0[:, j] + delta[:, j]) - X0[:, j])
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


@pytest.fixture(scope="module")
def tissue():
    return make_tissue(n_cells=240, n_genes=36, n_clusters=3, seed=3, extent=600.0)


@pytest.fixture(scope="module")
def radii_map(tissue):
    return ligand_radii(lr_table(tissue.lr, tissue.var_names, radius=200.0, contact_distance=50.0))


# -- received ligands --------------------------------------------------------------------------
def test_received_exact_matches_dense(tissue):
    rng = np.random.default_rng(0)
    L = tissue.X[:, :7]
    radii = rng.choice([30.0, 50.0, 200.0], size=7)
    got = received_ligands(tissue.coords, L, radii, scale_factor=2.5)
    want = ref_received(tissue.coords, L, radii, 2.5)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_received_scalar_radius_polars_and_filter(tissue):
    L = pl.DataFrame({"a": tissue.X[:, 0], "b": tissue.X[:, 1] * 4e-11})
    got = received_ligands(tissue.coords, L, 120.0, min_expression=1e-9)
    assert got.columns == ["a", "b"]
    np.testing.assert_allclose(
        got["a"].to_numpy(), ref_received(tissue.coords, tissue.X[:, :1], [120.0])[:, 0], rtol=1e-12
    )
    assert (got["b"].to_numpy() == 0).all()


@pytest.mark.parametrize("radius", [25.0, 60.0, 200.0])
def test_received_fast_within_1e6_of_exact(radius):
    rng = np.random.default_rng(5)
    n = 3000
    xy = np.concatenate([rng.uniform(0, 1500, (n // 2, 2)), rng.normal(700, 80, (n - n // 2, 2))])
    L = rng.gamma(1.0, 1.0, (n, 4)) * (rng.random((n, 4)) < 0.6)
    ex = received_ligands(xy, L, radius, mode="exact")
    fa = received_ligands(xy, L, radius, mode="fast")
    err = np.abs(fa - ex) / np.abs(ex).max(axis=0)
    assert err.max() < 1e-6
    big = ex > 1e-3 * ex.max(axis=0)
    assert (np.abs(fa - ex)[big] / ex[big]).max() < 1e-6


def test_received_grid_is_approximate(tissue):
    L = tissue.X[:, :3]
    ex = received_ligands(tissue.coords, L, 200.0)
    gr = received_ligands(tissue.coords, L, 200.0, mode="grid")
    rel = np.abs(gr - ex).max() / np.abs(ex).max()
    assert 0 < rel < 0.1


def test_received_bad_input(tissue):
    xy = tissue.coords.copy()
    xy[7, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        received_ligands(xy, tissue.X[:, :2], 100.0)
    with pytest.raises(InputError):
        received_ligands(tissue.coords, tissue.X[:10, :2], 100.0)
    with pytest.raises(InputError):
        received_ligands(tissue.coords, tissue.X[:, :2], 100.0, mode="nope")
    with pytest.raises(InputError):
        received_ligands(tissue.coords, tissue.X[:, :2], -1.0)


# -- radii from the LR table -------------------------------------------------------------------
def test_lr_table_complexes_and_first_row_radius(tissue):
    lr = lr_table(tissue.lr, tissue.var_names, radius=200.0, contact_distance=50.0)
    # complexes split into every ligand x receptor subunit pair, genes outside var_names dropped
    assert not lr["receptor"].str.contains("_").any()
    assert not lr["ligand"].str.contains("NotAGene").any()
    rm = ligand_radii(lr)
    # Lig003 has a secreted row first and a later contact row: it keeps the secreted radius
    assert rm["Lig003"] == 200.0
    assert rm["Lig002"] == 50.0


# -- splash ------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_cell,bsf,cap", [(False, 1.0, None), (True, 0.7, 0.05)])
def test_splash_matches_dense(tissue, radii_map, per_cell, bsf, cap):
    base = make_betabase(tissue, n_trained=5, seed=11, per_cell=per_cell)
    gexf = filt(tissue.X)
    gi = {g: i for i, g in enumerate(tissue.var_names)}
    ligs = sorted(tissue.ligands)
    W = received_ligands(
        tissue.coords, filt(tissue.X[:, [gi[l] for l in ligs]]), [radii_map.get(l, 200.0) for l in ligs]
    )
    Wt = W * 0.5  # a different TFL matrix so the two roles are told apart
    rec = {l: W[:, k] for k, l in enumerate(ligs)}
    rect = {l: Wt[:, k] for k, l in enumerate(ligs)}
    for g in base.genes:
        bd = base[g]
        got = splash(
            bd,
            expr=tissue.X,
            var_names=tissue.var_names,
            obs_names=tissue.obs_names,
            clusters=tissue.clusters,
            cluster_labels=tissue.cluster_labels,
            received=rec,
            received_tfl=rect,
            beta_scale_factor=bsf,
            beta_cap=cap,
        )
        want = ref_splash(bd, tissue, {k: gexf[:, i] for k, i in gi.items()}, rec, rect, bsf, cap)
        assert got.columns == ["CellID"] + [f"beta_{m}" for m in want]
        for m, v in want.items():
            np.testing.assert_allclose(got[f"beta_{m}"].to_numpy(), v, rtol=1e-10, atol=1e-14)


def test_splash_computes_received_from_anndata(tissue, radii_map):
    base = make_betabase(tissue, n_trained=3, seed=2)
    bd = base[base.genes[0]]
    a = tissue.to_anndata()
    got = splash(bd, a, lr=tissue.lr, radius=200.0, contact_distance=50.0, cluster_key="cell_type")
    gi = {g: i for i, g in enumerate(tissue.var_names)}
    ligs = sorted(set(bd.ligands + bd.tfl_ligands))
    W = received_ligands(tissue.coords, filt(tissue.X[:, [gi[l] for l in ligs]]), [radii_map[l] for l in ligs])
    rec = {l: W[:, k] for k, l in enumerate(ligs)}
    want = ref_splash(bd, tissue, {k: filt(tissue.X)[:, i] for k, i in gi.items()}, rec, rec)
    for m, v in want.items():
        np.testing.assert_allclose(got[f"beta_{m}"].to_numpy(), v, rtol=1e-10, atol=1e-14)


# -- perturb -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["ko_ligand", "ko_tf_cells", "overexpress_receptor", "capped"])
def test_perturb_matches_dense(tissue, radii_map, case):
    base = make_betabase(tissue, n_trained=12, seed=4)
    a = tissue.to_anndata()
    kw = dict(n_propagation=3)
    bsf, cap, cells = 1.0, None, None
    if case == "ko_ligand":
        target, expr = tissue.ligands[0], 0.0
    elif case == "ko_tf_cells":
        target, expr = tissue.tfs[0], 0.0
        cells = np.arange(0, tissue.X.shape[0], 3)
    elif case == "overexpress_receptor":
        target, expr = tissue.receptors[0], float(tissue.X[:, tissue.var_names.index(tissue.receptors[0])].max() * 2)
    else:
        target, expr, bsf, cap = tissue.ligands[0], 0.0, 1.5, 0.2
    got = perturb(
        a,
        base,
        target,
        expr,
        cells=cells,
        lr=tissue.lr,
        radius=200.0,
        contact_distance=50.0,
        beta_scale_factor=bsf,
        beta_cap=cap,
        cluster_key="cell_type",
        **kw,
    )
    want = ref_perturb(tissue, base, radii_map, target, expr, 3, cells=cells, bsf=bsf, cap=cap)
    M = got.drop("CellID").to_numpy()
    assert got.columns[1:] == tissue.var_names
    np.testing.assert_allclose(M, want, rtol=1e-10, atol=1e-12)
    # the perturbation did something beyond the target itself
    others = [j for j, g in enumerate(tissue.var_names) if g != target]
    assert np.abs(M[:, others] - tissue.X[:, others]).max() > 1e-3


def test_perturb_fast_mode_close_to_exact():
    # above 2,000 cells the fast mode uses the particle-mesh transform (below it is exact)
    t = make_tissue(n_cells=2500, n_genes=24, n_clusters=3, seed=12, extent=1500.0)
    base = make_betabase(t, n_trained=8, seed=4)
    a = t.to_anndata()
    ex = perturb(a, base, t.ligands[0], 0.0, lr=t.lr, n_propagation=2, cluster_key="cell_type")
    fa = perturb(a, base, t.ligands[0], 0.0, lr=t.lr, n_propagation=2, cluster_key="cell_type", mode="fast")
    E, F = ex.drop("CellID").to_numpy(), fa.drop("CellID").to_numpy()
    assert np.abs(E - t.X).max() > 1e-3
    scale = np.maximum(np.abs(E).max(axis=0), 1e-300)
    assert (np.abs(F - E) / scale).max() < 1e-6


def test_perturb_unused_gene_warns_and_keeps_others(tissue):
    base = make_betabase(tissue, n_trained=4, seed=9)
    used = set()
    for g in base.genes:
        used.update(base[g].modulators)
    free = next(g for g in tissue.var_names if g not in used and g not in base.genes)
    a = tissue.to_anndata()
    with pytest.warns(UserWarning, match="not a modulator"):
        out = perturb(a, base, free, 0.0, lr=tissue.lr, cluster_key="cell_type")
    M = out.drop("CellID").to_numpy()
    j = tissue.var_names.index(free)
    assert (M[:, j] == 0).all()
    keep = [k for k in range(M.shape[1]) if k != j]
    np.testing.assert_array_equal(M[:, keep], tissue.X[:, keep])


def test_perturb_bad_input(tissue):
    base = make_betabase(tissue, n_trained=4, seed=9)
    a = tissue.to_anndata()
    with pytest.raises(InputError, match="not in var_names"):
        perturb(a, base, "NoSuchGene", 0.0, lr=tissue.lr, cluster_key="cell_type")
    with pytest.raises(InputError, match=">= 0"):
        perturb(a, base, tissue.tfs[0], -1.0, lr=tissue.lr, cluster_key="cell_type")
    # betadata whose modulators are not genes of the dataset
    b2 = make_betabase(tissue, n_trained=4, seed=9)
    bd = b2[b2.genes[0]]
    bd.columns[1] = "beta_Ghost1"
    bd.__post_init__()
    with pytest.raises(InputError, match="Ghost1"):
        perturb(a, b2, tissue.tfs[0], 0.0, lr=tissue.lr, cluster_key="cell_type")
    # cluster labels in betadata absent from obs
    b3 = make_betabase(tissue, n_trained=4, seed=9)
    b3[b3.genes[0]].ids[0] = "no_such_cluster"
    with pytest.raises(InputError, match="cluster"):
        perturb(a, b3, tissue.tfs[0], 0.0, lr=tissue.lr, cluster_key="cell_type")
    # NaN coordinates
    a2 = a.copy()
    a2.obsm["spatial"][3, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        perturb(a2, base, tissue.tfs[0], 0.0, lr=tissue.lr, cluster_key="cell_type")
    # cluster column absent from obs
    with pytest.raises(InputError, match="not in obs"):
        perturb(a, base, tissue.tfs[0], 0.0, lr=tissue.lr, cluster_key="nope")
    with pytest.raises(InputError, match="no target"):
        perturb(a, base, [], 0.0, lr=tissue.lr, cluster_key="cell_type")
    with pytest.raises(InputError):
        perturb(a, base, tissue.tfs[0], float("nan"), lr=tissue.lr, cluster_key="cell_type")
    with pytest.raises(InputError):
        perturb(a, base, tissue.tfs[0], 0.0, n_propagation=-1, lr=tissue.lr, cluster_key="cell_type")
    for kw, name in [
        (dict(beta_scale_factor=float("nan")), "beta_scale_factor"),
        (dict(radius=float("nan")), "radius"),
        (dict(radius=0.0), "radius"),
        (dict(contact_distance=-5.0), "contact_distance"),
        (dict(scale_factor=float("inf")), "scale_factor"),
        (dict(beta_cap=0.0), "beta_cap"),
    ]:
        with pytest.raises(InputError, match=f"{name} must be a"):
            perturb(a, base, tissue.tfs[0], 0.0, lr=tissue.lr, cluster_key="cell_type", **kw)
    # an absurd over-expression overflows: a typed error, never NaN output
    big = make_betabase(tissue, n_trained=12, seed=4, scale=50.0)
    with pytest.raises(ModelError, match="diverged"):
        perturb(a, big, tissue.tfs[0], 1e306, lr=tissue.lr, cluster_key="cell_type", clip=False)
    # radii outside 1e-100..1e100
    with pytest.raises(InputError, match="radius"):
        received_ligands(tissue.coords, tissue.X[:, :2], 1e-300)
