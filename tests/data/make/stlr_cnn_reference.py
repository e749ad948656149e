"""Reference outputs for tests/stlr/test_stlr_cnn.py and test_stlr_transitions.py (issue 19).

    python tests/data/make/stlr_cnn_reference.py [--ref /tmp/spacetravlr-ref/bin/python]

Writes tests/data/stlr/cnn/:

- ``tissue.npz``: a synthetic tissue (polgen.stlr.synthetic.make_tissue, 400 cells, 20 genes, 3
  clusters) whose target genes Gene000..Gene002 follow their GRN regulators with a slope that
  varies along x (so per-cell betas have something to learn), and the CellChat / GRN tables;
- ``betadata/{gene}_betadata.parquet``: per-cell (CellID) betadata written by polgen's
  ``fit(training_mode="full")`` on that tissue;
- ``ref_perturb.npz``: the Python reference's ``GeneFactory.perturb`` (spacetravlr 0.1.21) on those
  same betadata files (knock-out of a TF and of a ligand, 3 propagation steps), cells x genes;
- ``ref_cnn.npz``: the reference's ``SpatialCellularProgramsEstimator(..., use_ligands=False,
  regulators=<TFs>, spatial_dim=16, radius=200).fit(num_epochs=10, batch_size=32)`` for Gene000
  with numpy / torch seeded 0: per cluster its anchors (the lasso betas), its mini-batch loss
  curve, and the per-cell betas (``get_betas``), with the design (TF expression) it used;
- ``ref_transitions.npz``: the reference's transition vectors (see test_stlr_transitions.py).

The reference runs in its own venv, in a subprocess (never imported by polgen or the tests).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from polgen.stlr.synthetic import make_tissue  # noqa: E402
from polgen.stlr.train import fit  # noqa: E402

OUT = ROOT / "tests" / "data" / "stlr" / "cnn"
TARGETS = ["Gene000", "Gene001", "Gene002"]


def spatial_tissue(n_cells: int = 400, seed: int = 7):
    """make_tissue with Gene000..2 = 1 + slope(x) * sum of their GRN regulators + noise."""
    t = make_tissue(n_cells=n_cells, n_genes=20, n_clusters=3, seed=seed, extent=700.0, sparsity=0.05)
    rng = np.random.default_rng(seed + 1)
    slope = 1.0 + 0.8 * np.sin(t.coords[:, 0] / 120.0)
    for g in TARGETS:
        regs = t.links.filter(pl.col("target") == g)["source"].to_list()
        ri = [t.var_names.index(r) for r in regs]
        t.X[:, t.var_names.index(g)] = 1.0 + (t.X[:, ri] * slope[:, None]).sum(1) + rng.normal(0, 0.1, n_cells)
    t.X[:] = np.round(t.X, 6)
    return t


REF_SCRIPT = r"""
import json, sys, os, warnings
warnings.filterwarnings("ignore")
import numpy as np, pandas as pd, anndata as ad, torch
d = sys.argv[1]
spec = json.load(open(f"{d}/spec.json")); arr = np.load(f"{d}/arrays.npz")
X, xy, clusters = arr["X"], arr["xy"], arr["clusters"]
obs = pd.Index(spec["obs_names"]); var = pd.Index(spec["var_names"])
lr_db = pd.DataFrame(spec["lr_rows"], columns=["ligand", "receptor", "pathway", "signaling"])
import SpaceTravLR.gene_factory as gfm
gfm.get_cellchat_db = lambda species: lr_db.copy()
def tissue():
    a = ad.AnnData(X=X.copy(), obs=pd.DataFrame({"cell_type": clusters}, index=obs), var=pd.DataFrame(index=var))
    a.obsm["spatial"] = xy.copy(); a.layers["imputed_count"] = X.copy(); a.layers["normalized_count"] = X.copy()
    return a
# 1. perturbation on polgen's per-cell betadata
gf = gfm.GeneFactory(tissue(), spec["models"], annot="cell_type", radius=200, contact_distance=50)
gf.load_betas()
res = {}
for name, target in spec["perturb_targets"].items():
    out = gf.perturb(target=target, n_propagation=3, gene_expr=0.0)
    res[name] = out.loc[obs, var].values
np.savez(f"{d}/ref_perturb.npz", **res)
# 2. the reference's CNN training of one gene, TF modulators only
from SpaceTravLR.models.parallel_estimators import SpatialCellularProgramsEstimator
a = tissue()
a.obs["cell_type_int"] = clusters.astype(int)
a.uns["received_ligands"] = pd.DataFrame(index=obs); a.uns["received_ligands_tfl"] = pd.DataFrame(index=obs)
np.random.seed(0); torch.manual_seed(0)
est = SpatialCellularProgramsEstimator(a, spec["cnn_gene"], spatial_dim=16, cluster_annot="cell_type_int",
    layer="imputed_count", radius=200, use_ligands=False, regulators=spec["cnn_regs"])
est.fit(num_epochs=10, learning_rate=5e-3, batch_size=32, use_pbar=False)
b = est.get_betas()
out = {"betas": b.loc[obs].values, "columns": np.array(list(b.columns)), "Xn": est.Xn, "yn": est.yn}
for c, m in est.models.items():
    out[f"anchors_{c}"] = m.anchors.numpy().astype(np.float64)
    out[f"losses_{c}"] = np.array(est.loss_dict.get(c, []), dtype=np.float64)
    out[f"r2_{c}"] = np.array([est.scores[c]])
np.savez(f"{d}/ref_cnn.npz", **out)
"""


TRANSITIONS_SCRIPT = r"""
import sys, types, json
import numpy as np
d = sys.argv[1]
arr = np.load(f"{d}/tr_in.npz")
# velocyto is not installed in the reference venv: a stand-in for velocyto.estimation's
# colDeltaCorpartial (out[i, j] = Pearson(e[:, j] - e[:, i], d[:, i]) for j in neighbours of i, else 0)
def colDeltaCorpartial(e, dm, ixs, threads=None):
    n = e.shape[1]; out = np.zeros((n, n))
    for i in range(n):
        dv = dm[:, i] - dm[:, i].mean()
        for j in ixs[i]:
            t = e[:, j] - e[:, i]; t = t - t.mean()
            with np.errstate(invalid="ignore", divide="ignore"):
                out[i, j] = (t * dv).sum() / np.sqrt((t * t).sum() * (dv * dv).sum())
    return out
m = types.ModuleType("velocyto"); est = types.ModuleType("velocyto.estimation")
est.colDeltaCorpartial = colDeltaCorpartial; est.colDeltaCor = None
sys.modules["velocyto"] = m; sys.modules["velocyto.estimation"] = est
sys.modules.setdefault("pqdm", types.ModuleType("pqdm"))
pp = types.ModuleType("pqdm.processes"); pp.pqdm = None; sys.modules.setdefault("pqdm.processes", pp)
import anndata as ad
from SpaceTravLR.plotting.shift import estimate_transition_probabilities, project_probabilities
X, P1, E = arr["X"], arr["perturbed"], arr["E"]
a = ad.AnnData(X=X.copy()); a.layers["imputed_count"] = X.copy()
out = {}
for k in (30, 200):
    dX = (P1 - X).round(3)
    P = estimate_transition_probabilities(a, dX, E, n_neighbors=k)
    P0 = estimate_transition_probabilities(a, dX * 0, E, n_neighbors=k)
    out[f"V_{k}"] = project_probabilities(P - P0, E, normalize=False)
    out[f"Vunit_{k}"] = project_probabilities(P - P0, E, normalize=True)
    out[f"Vkeep_{k}"] = project_probabilities(P, E, normalize=False)
np.savez(f"{d}/ref_transitions.npz", **out)
"""


def make_transitions(ref: str) -> None:
    """The reference's transition vectors of its own TF knock-out on the tissue coordinates."""
    tis = np.load(OUT / "tissue.npz")
    pert = np.load(OUT / "ref_perturb.npz")["tf"]
    with tempfile.TemporaryDirectory() as d:
        np.savez(Path(d) / "tr_in.npz", X=tis["X"], perturbed=pert, E=tis["xy"])
        (Path(d) / "tr.py").write_text(TRANSITIONS_SCRIPT)
        subprocess.run([ref, str(Path(d) / "tr.py"), d], check=True)
        (OUT / "ref_transitions.npz").write_bytes((Path(d) / "ref_transitions.npz").read_bytes())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", default="/tmp/spacetravlr-ref/bin/python")
    ap.add_argument("--transitions-only", action="store_true", help="only rerun the transition vectors")
    a = ap.parse_args()
    if a.transitions_only:
        make_transitions(a.ref)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    t = spatial_tissue()
    np.savez(OUT / "tissue.npz", X=t.X, xy=t.coords, clusters=t.clusters)
    t.lr.write_csv(OUT / "lr.csv")
    t.links.write_csv(OUT / "links.csv")
    (OUT / "names.json").write_text(
        json.dumps({"obs_names": t.obs_names, "var_names": t.var_names, "cluster_labels": t.cluster_labels})
    )
    bdir = OUT / "betadata"
    with tempfile.TemporaryDirectory() as tmp:
        r = fit(
            t.to_anndata(),
            genes=TARGETS + [t.var_names[i] for i in range(8, 10)],
            out=Path(tmp) / "fit",
            lr=t.lr,
            grn=t.links,
            training_mode="full",
            epochs=10,
            spatial_dim=16,
            batch_size=64,
            cv=0,
            seed=3,
        )
        bdir.mkdir(exist_ok=True)
        for f in bdir.glob("*_betadata.parquet"):
            f.unlink()
        for f in r.files:
            # the reference's betadata layout: cell id as the pandas index, beta columns
            df = pl.read_parquet(f).to_pandas().set_index("CellID")
            df.index.name = None
            df.to_parquet(bdir / f.name)
    regs = sorted(set(t.links.filter(pl.col("target") == "Gene000")["source"].to_list()))
    spec = {
        "obs_names": t.obs_names,
        "var_names": t.var_names,
        "lr_rows": t.lr.rows(),
        "models": str(bdir),
        "perturb_targets": {"tf": t.tfs[1], "ligand": t.ligands[0]},
        "cnn_gene": "Gene000",
        "cnn_regs": regs,
    }
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "spec.json").write_text(json.dumps(spec))
        np.savez(Path(d) / "arrays.npz", X=t.X, xy=t.coords, clusters=t.clusters)
        (Path(d) / "ref.py").write_text(REF_SCRIPT)
        subprocess.run([a.ref, str(Path(d) / "ref.py"), d], check=True)
        for name in ("ref_perturb.npz", "ref_cnn.npz"):
            (OUT / name).write_bytes((Path(d) / name).read_bytes())
    (OUT / "perturb_targets.json").write_text(json.dumps(spec["perturb_targets"]))
    make_transitions(a.ref)
    print("wrote", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
