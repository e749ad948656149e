"""Reference CNN training *with ligand modulators* for tests/stlr/test_cnn_ligands_reference.py (issue 19).

    python tests/data/make/stlr_cnn_ligands_reference.py [--ref /tmp/spacetravlr-ref/bin/python]

Writes tests/data/stlr/cnn_ligands/:

- inputs: ``tissue.npz`` (X, xy, clusters), ``names.json``, ``lr.csv`` (CellChat-shaped),
  ``links.csv`` (GRN), ``ligand_target.parquet`` (NicheNet-shaped TF x ligand matrix): a
  ``make_tissue(600 cells, 20 genes, 3 clusters, seed 11, extent 700)`` whose target Gene000 is
  ``1 + sum_k w_k s_k(x, y) D_k + N(0, 0.05)`` over its reference design ``D`` (its TF regulators,
  the ligand-receptor terms ``received ligand x receptor`` and the TF-ligand terms
  ``received ligand x TF``) with slopes ``s_k`` varying in space (TF terms along x, ligand terms
  along y), so the CNN has per-cell betas to learn from every kind of modulator;
- ``ref.npz``: the reference (spacetravlr 0.1.21, its own venv, run here in a subprocess)
  ``SpatialCellularProgramsEstimator(use_ligands=True, regulators=<Gene000's TFs>, tflinks=<the
  matrix>, spatial_dim=16, radius=200, contact_distance=50, scale_factor=1)`` ``.fit(num_epochs=10,
  learning_rate=5e-3, batch_size=32)`` three times with numpy / torch seeded 0, 1, 2: ``columns``
  (the modulators), ``Xn`` / ``yn`` (its design and target), ``anchors_{c}`` (its group-lasso seed
  betas), and per seed ``s``: ``losses_{s}_{c}`` (mini-batch losses in order), ``score_{s}_{c}``
  (the estimator's ``scores[c]``: the seed group-lasso R^2 of the cluster, the same every seed) and
  ``betas_{s}`` (``get_betas``, cells x (1 + p));
- ``make.json``: the settings and the reference version.

The three seeds give the reference's own seed-to-seed spread, against which the test measures
polgen's distance from the reference.  The reference's ``compute_radius_weights_fast`` is
replaced by the same formula in numpy (its numba kernels compile for ~50 s; the formula itself is
checked against the reference to 1e-10 in tests/stlr/test_stlr_reference.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from polgen.stlr.synthetic import make_tissue  # noqa: E402
from polgen.stlr.train import training_context  # noqa: E402

OUT = ROOT / "tests" / "data" / "stlr" / "cnn_ligands"
TARGET = "Gene000"
SETTINGS = dict(
    n_cells=600,
    seed=11,
    spatial_dim=16,
    radius=200.0,
    contact_distance=50.0,
    scale_factor=1.0,
    epochs=10,
    learning_rate=5e-3,
    batch_size=32,
    ref_seeds=[0, 1, 2],
)

REF_SCRIPT = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np, pandas as pd, anndata as ad, torch
d = sys.argv[1]
spec = json.load(open(f"{d}/spec.json")); arr = np.load(f"{d}/arrays.npz")
X, xy, clusters = arr["X"], arr["xy"], arr["clusters"]
obs = pd.Index(spec["obs_names"]); var = pd.Index(spec["var_names"])
lr_db = pd.DataFrame(spec["lr_rows"], columns=["ligand", "receptor", "pathway", "signaling"])
lt = pd.read_parquet(f"{d}/lt.parquet")
import SpaceTravLR.models.parallel_estimators as pe
pe.get_cellchat_db = lambda species: lr_db.copy()
def radius_weights(xy, lig_df, radius, scale_factor):
    d2 = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    W = scale_factor * np.exp(d2 * (-1.0 / (2.0 * radius * radius)))
    return pd.DataFrame(W @ lig_df.values / len(xy), index=lig_df.index, columns=lig_df.columns)
pe.compute_radius_weights_fast = radius_weights
a = ad.AnnData(X=X.copy(), obs=pd.DataFrame({"cell_type_int": clusters.astype(int)}, index=obs),
               var=pd.DataFrame(index=var))
a.obsm["spatial"] = xy.copy(); a.layers["imputed_count"] = X.copy(); a.layers["normalized_count"] = X.copy()
est = pe.SpatialCellularProgramsEstimator(
    a, spec["target"], spatial_dim=spec["spatial_dim"], cluster_annot="cell_type_int", layer="imputed_count",
    radius=spec["radius"], contact_distance=spec["contact_distance"], use_ligands=True,
    regulators=spec["regulators"], tflinks=lt, scale_factor=spec["scale_factor"])
out = {"columns": np.array(list(est.modulators)), "Xn": est.Xn, "yn": est.yn}
for s in spec["ref_seeds"]:
    np.random.seed(s); torch.manual_seed(s)
    est.fit(num_epochs=spec["epochs"], learning_rate=spec["learning_rate"], batch_size=spec["batch_size"],
            use_pbar=False)
    out[f"betas_{s}"] = est.get_betas().loc[obs].values
    for c, m in est.models.items():
        out[f"anchors_{c}"] = m.anchors.numpy().astype(np.float64) if est.scores[c] >= 0.15 else np.zeros(
            len(est.modulators) + 1)
        out[f"losses_{s}_{c}"] = np.array(est.loss_dict.get(c, []), dtype=np.float64)
        out[f"score_{s}_{c}"] = np.array([est.scores[c]])
np.savez(f"{d}/ref.npz", **out)
import importlib.metadata as md
json.dump({"spacetravlr": md.version("SpaceTravLR"), "torch": torch.__version__}, open(f"{d}/versions.json", "w"))
"""


def make_inputs():
    s = SETTINGS
    t = make_tissue(n_cells=s["n_cells"], n_genes=20, n_clusters=3, seed=s["seed"], extent=700.0, sparsity=0.05)
    rng = np.random.default_rng(s["seed"] + 1)
    tfs = t.tfs
    lt = pd.DataFrame(rng.uniform(0.0, 0.05, (len(tfs), len(t.ligands))), index=tfs, columns=t.ligands)
    a = t.to_anndata()
    a.layers["normalized_count"] = t.X.copy()
    ctx, _ = training_context(
        a,
        t.lr,
        t.links,
        ligand_target=lt,
        radius=s["radius"],
        contact_distance=s["contact_distance"],
        scale_factor=s["scale_factor"],
    )
    mods = ctx.modulators(TARGET)
    D = ctx.design(mods)
    kinds = ["lr" if "$" in n else "tfl" if "#" in n else "tf" for n in mods.names]
    assert "lr" in kinds and "tfl" in kinds, kinds
    sx = 1.0 + 0.8 * np.sin(t.coords[:, 0] / 120.0)
    sy = 1.0 + 0.6 * np.cos(t.coords[:, 1] / 150.0)
    sd = D.std(axis=0)
    w = np.where(sd > 0, rng.uniform(0.3, 0.8, D.shape[1]) / np.where(sd > 0, sd, 1.0), 0.0)
    slope = np.column_stack([sx if k == "tf" else sy for k in kinds])
    y = 1.0 + (D * w * slope).sum(1) + rng.normal(0, 0.05, s["n_cells"])
    t.X[:, t.var_names.index(TARGET)] = np.round(y, 6)
    regs = [n[len("beta_") :] for n, k in zip(mods.names, kinds) if k == "tf"]
    return t, lt, regs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", default="/tmp/spacetravlr-ref/bin/python")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    t, lt, regs = make_inputs()
    np.savez(OUT / "tissue.npz", X=t.X, xy=t.coords, clusters=t.clusters)
    t.lr.write_csv(OUT / "lr.csv")
    t.links.write_csv(OUT / "links.csv")
    lt.to_parquet(OUT / "ligand_target.parquet")
    (OUT / "names.json").write_text(
        json.dumps({"obs_names": t.obs_names, "var_names": t.var_names, "cluster_labels": t.cluster_labels})
    )
    spec = {
        **SETTINGS,
        "obs_names": t.obs_names,
        "var_names": t.var_names,
        "lr_rows": t.lr.rows(),
        "target": TARGET,
        "regulators": regs,
    }
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "spec.json").write_text(json.dumps(spec))
        np.savez(Path(d) / "arrays.npz", X=t.X, xy=t.coords, clusters=t.clusters)
        lt.to_parquet(Path(d) / "lt.parquet")
        (Path(d) / "ref.py").write_text(REF_SCRIPT)
        subprocess.run([a.ref, str(Path(d) / "ref.py"), d], check=True)
        (OUT / "ref.npz").write_bytes((Path(d) / "ref.npz").read_bytes())
        versions = json.loads((Path(d) / "versions.json").read_text())
    (OUT / "make.json").write_text(
        json.dumps({**SETTINGS, "target": TARGET, "regulators": regs, "reference": versions}, indent=1) + "\n"
    )
    ref = np.load(OUT / "ref.npz")
    print("modulators:", list(ref["columns"]))
    for s in SETTINGS["ref_seeds"]:
        print(s, [float(ref[f"score_{s}_{c}"][0]) for c in range(3)])
    assert pl.read_csv(OUT / "lr.csv").height > 0


if __name__ == "__main__":
    main()
