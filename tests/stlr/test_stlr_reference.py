"""polgen.stlr against the Python SpaceTravLR reference (spacetravlr 0.1.21), run in a subprocess.

The reference is installed by ../shared/tools/install-spacetravlr-reference.sh into
$TMPDIR/spacetravlr-ref (or $SPACETRAVLR_REF).  On a tiny synthetic tissue the reference computes
received ligands (``parallel_estimators.received_ligands``), splash (``BetaFrame.splash``) and
perturb (``GeneFactory.perturb``); polgen must agree to 1e-10.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from polgen.stlr import perturb, received_ligands, splash
from polgen.stlr.grn import ligand_radii, lr_table
from polgen.stlr.splash import filtered
from polgen.stlr.synthetic import make_betabase, make_tissue

REF = Path(os.environ.get("SPACETRAVLR_REF", Path(tempfile.gettempdir()) / "spacetravlr-ref"))
PY = REF / "bin" / "python"

SCRIPT = r"""
import json, sys, os, warnings
warnings.filterwarnings("ignore")
import numpy as np, pandas as pd, anndata as ad
d = sys.argv[1]
spec = json.load(open(f"{d}/spec.json"))
arr = np.load(f"{d}/arrays.npz")
X, xy = arr["X"], arr["xy"]
obs = pd.Index(spec["obs_names"]); var = pd.Index(spec["var_names"])
lr_db = pd.DataFrame(spec["lr_rows"], columns=["ligand", "receptor", "pathway", "signaling"])
import SpaceTravLR.gene_factory as gfm
from SpaceTravLR.tools.network import expand_paired_interactions
from SpaceTravLR.models.parallel_estimators import received_ligands, get_filtered_df
from SpaceTravLR.beta import BetaFrame
gfm.get_cellchat_db = lambda species: lr_db.copy()
models = f"{d}/models"; os.makedirs(models, exist_ok=True)
for g, b in spec["betas"].items():
    df = pd.DataFrame(np.array(b["values"]), columns=b["columns"], index=obs)
    df.to_parquet(f"{models}/{g}_betadata.parquet")
a = ad.AnnData(X=X.copy(), obs=pd.DataFrame({"cell_type": spec["clusters"]}, index=obs), var=pd.DataFrame(index=var))
a.obsm["spatial"] = xy
a.layers["imputed_count"] = X.copy(); a.layers["normalized_count"] = X.copy()
out = {}
# received ligands through the reference function and its LR table
lr = expand_paired_interactions(lr_db)
lr = lr[lr.ligand.isin(var) & lr.receptor.isin(var)]
lr["radius"] = np.where(lr["signaling"] == "Secreted Signaling", 200, 50)
gex = pd.DataFrame(X, index=obs, columns=var)
ligs = spec["ligands"]
rw = received_ligands(xy, get_filtered_df(gex, None, ligs), lr, scale_factor=spec["scale_factor"])
out["received"] = rw[ligs].values
# splash of each betadata with those received ligands (TFL: half of them)
filt = get_filtered_df(gex, None, var)[var]
for g in spec["betas"]:
    bf = BetaFrame.from_path(f"{models}/{g}_betadata.parquet", obs_names=obs)
    s = bf.splash(rw, rw * 0.5, filt, scale_factor=spec["bsf"], beta_cap=spec["cap"])
    out[f"splash:{g}"] = s.values
    out[f"splashcols:{g}"] = np.array(list(s.columns))
for k, case in enumerate(spec["cases"]):
    gf = gfm.GeneFactory(a, models, annot="cell_type", radius=200, contact_distance=50,
                         scale_factor=spec["scale_factor"], beta_scale_factor=case["bsf"], beta_cap=case["cap"])
    gf.load_betas()
    res = gf.perturb(target=case["target"], n_propagation=case["n"], gene_expr=case["expr"], cells=case["cells"])
    out[f"perturb:{k}"] = res.loc[obs, var].values
np.savez(f"{d}/out.npz", **out)
"""


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    if not PY.exists():
        pytest.skip(
            f"SpaceTravLR reference venv not found at {REF} (run ../shared/tools/install-spacetravlr-reference.sh)"
        )
    d = tmp_path_factory.mktemp("stlr_ref")
    t = make_tissue(n_cells=150, n_genes=30, n_clusters=3, seed=21, extent=500.0)
    base = make_betabase(t, n_trained=10, seed=8, per_cell=True)
    ligs = sorted(t.ligands)
    xmax = t.X.max(axis=0)
    rec0 = t.receptors[0]
    cases = [
        dict(target=t.ligands[0], expr=0.0, n=3, cells=None, bsf=1.0, cap=None),
        dict(target=t.tfs[0], expr=0.0, n=4, cells=list(range(0, 150, 2)), bsf=1.0, cap=None),
        dict(target=rec0, expr=float(xmax[t.var_names.index(rec0)] * 1.5), n=2, cells=None, bsf=1.3, cap=0.1),
    ]
    spec = dict(
        obs_names=t.obs_names,
        var_names=t.var_names,
        clusters=[t.cluster_labels[c] for c in t.clusters],
        lr_rows=t.lr.rows(),
        ligands=ligs,
        scale_factor=1.7,
        bsf=0.8,
        cap=0.15,
        cases=cases,
        betas={g: dict(columns=base[g].columns, values=base[g].values.tolist()) for g in base.genes},
    )
    (d / "spec.json").write_text(json.dumps(spec))
    np.savez(d / "arrays.npz", X=t.X, xy=t.coords)
    (d / "ref.py").write_text(SCRIPT)
    env = dict(os.environ, MPLBACKEND="Agg", TQDM_DISABLE="1", NUMBA_NUM_THREADS="2")
    r = subprocess.run([str(PY), str(d / "ref.py"), str(d)], capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = dict(np.load(d / "out.npz", allow_pickle=False))
    return t, base, spec, out


def test_received_ligands_match_reference(reference_run):
    t, base, spec, out = reference_run
    radii = ligand_radii(lr_table(t.lr, t.var_names, 200.0, 50.0))
    gi = {g: i for i, g in enumerate(t.var_names)}
    ligs = spec["ligands"]
    ok = [l for l in ligs if l in radii]
    got = received_ligands(
        t.coords, filtered(t.X[:, [gi[l] for l in ok]]), [radii[l] for l in ok], scale_factor=spec["scale_factor"]
    )
    want = out["received"][:, [ligs.index(l) for l in ok]]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_splash_matches_reference(reference_run):
    t, base, spec, out = reference_run
    rw = {l: out["received"][:, k] for k, l in enumerate(spec["ligands"])}
    rwt = {l: v * 0.5 for l, v in rw.items()}
    for g in base.genes:
        got = splash(
            base[g],
            expr=t.X,
            var_names=t.var_names,
            obs_names=t.obs_names,
            received=rw,
            received_tfl=rwt,
            beta_scale_factor=spec["bsf"],
            beta_cap=spec["cap"],
        )
        cols = [str(c) for c in out[f"splashcols:{g}"]]
        assert got.columns[1:] == cols
        np.testing.assert_allclose(got.drop("CellID").to_numpy(), out[f"splash:{g}"], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_perturb_matches_reference(reference_run, k):
    t, base, spec, out = reference_run
    case = spec["cases"][k]
    a = t.to_anndata()
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
        beta_scale_factor=case["bsf"],
        beta_cap=case["cap"],
    )
    want = out[f"perturb:{k}"]
    M = got.drop("CellID").to_numpy()
    np.testing.assert_allclose(M, want, rtol=1e-10, atol=1e-11)
    assert np.abs(want - t.X).max() > 1e-3  # the case exercises propagation
