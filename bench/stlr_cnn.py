"""SpaceTravLR CNN training (issue 19): polgen fit(training_mode="hybrid", epochs=5) vs the Python
reference's torch CNN (spacetravlr 0.1.21 SpatialCellularProgramsEstimator.fit(num_epochs=5)).

    python bench/stlr_cnn.py [--cells 1500] [--genes 20] [--epochs 5] [--no-ref] [--json out.json]

Synthetic tissue (make_tissue: 60-gene panel, 4 spatial clusters, extent ~ 30 * sqrt(cells)); each
of the ``--genes`` targets follows its GRN regulators with a slope varying along x, so the seed
residuals are spatially structured and the hybrid gate sends them to the CNN.  polgen trains all
targets with ``fit`` (spatial_dim 32, batch 512, its seed lasso + CNN); the reference, in its venv
($SPACETRAVLR_REF, default $TMPDIR/spacetravlr-ref) in a subprocess, trains the same targets on the
same data with ``use_ligands=False, regulators=<the gene's TFs>`` (its ligand set-up needs the
network download; the CNN's cost does not depend on the number of modulators), spatial_dim 32,
batch 512.  Wall and CPU times and the load average before / after are printed (the machine is
shared: a figure taken at load > 2 overstates both sides).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from polgen.stlr.cnn import read_cnn_records  # noqa: E402
from polgen.stlr.synthetic import make_tissue  # noqa: E402
from polgen.stlr.train import fit  # noqa: E402

REF = Path(os.environ.get("SPACETRAVLR_REF", Path(tempfile.gettempdir()) / "spacetravlr-ref"))

REF_SCRIPT = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, pandas as pd, anndata as ad, torch
from SpaceTravLR.models.parallel_estimators import SpatialCellularProgramsEstimator
d = sys.argv[1]
spec = json.load(open(f"{d}/spec.json")); arr = np.load(f"{d}/arrays.npz")
X, xy, cl = arr["X"], arr["xy"], arr["clusters"]
obs = pd.Index(spec["obs_names"]); var = pd.Index(spec["var_names"])
a = ad.AnnData(X=X.copy(), obs=pd.DataFrame({"cell_type_int": cl.astype(int)}, index=obs), var=pd.DataFrame(index=var))
a.obsm["spatial"] = xy; a.layers["imputed_count"] = X.copy()
a.uns["received_ligands"] = pd.DataFrame(index=obs); a.uns["received_ligands_tfl"] = pd.DataFrame(index=obs)
torch.manual_seed(0); np.random.seed(0)
t0 = time.perf_counter(); c0 = time.process_time()
for g, regs in spec["regs"].items():
    est = SpatialCellularProgramsEstimator(a, g, spatial_dim=32, cluster_annot="cell_type_int",
        layer="imputed_count", radius=200, use_ligands=False, regulators=regs)
    est.fit(num_epochs=spec["epochs"], learning_rate=5e-3, batch_size=512, use_pbar=False)
    est.get_betas()
json.dump({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "torch_threads": torch.get_num_threads()},
          open(f"{d}/ref.json", "w"))
"""


def tissue(n_cells: int, n_targets: int, seed: int = 0):
    t = make_tissue(n_cells=n_cells, n_genes=60, n_clusters=4, seed=seed, sparsity=0.05)
    rng = np.random.default_rng(seed + 1)
    slope = 1.0 + 0.8 * np.sin(t.coords[:, 0] / (0.1 * np.ptp(t.coords[:, 0])))
    targets = [g for g in t.var_names if g.startswith("Gene")][:n_targets]
    regs = {}
    for g in targets:
        regs[g] = sorted(set(t.links.filter(pl.col("target") == g)["source"].to_list()))
        ri = [t.var_names.index(r) for r in regs[g]]
        t.X[:, t.var_names.index(g)] = 1.0 + (t.X[:, ri] * slope[:, None]).sum(1) + rng.normal(0, 0.1, n_cells)
    return t, targets, regs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=1500)
    ap.add_argument("--genes", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--mode", default="hybrid", choices=("hybrid", "full"))
    ap.add_argument("--no-ref", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    t, targets, regs = tissue(a.cells, a.genes)
    res: dict = {
        "cells": a.cells,
        "genes": a.genes,
        "epochs": a.epochs,
        "mode": a.mode,
        "clusters": np.bincount(t.clusters).tolist(),
        "load_before": os.getloadavg(),
    }
    adata = t.to_anndata()
    with tempfile.TemporaryDirectory() as d:
        t0, c0 = time.perf_counter(), time.process_time()
        r = fit(
            adata,
            targets,
            out=Path(d) / "fit",
            lr=t.lr,
            grn=t.links,
            cv=0,
            training_mode=a.mode,
            epochs=a.epochs,
            spatial_dim=32,
            batch_size=512,
            progress=False,
        )
        res["polgen_wall"], res["polgen_cpu"] = time.perf_counter() - t0, time.process_time() - c0
        rec = read_cnn_records(str(r.out))
        res["polgen_cnn_genes"] = sum(1 for v in rec.values() if v.get("cnn"))
        res["polgen_trained"] = len(r.genes)
        print(
            f"polgen fit({a.mode}, epochs={a.epochs}): {res['polgen_wall']:.1f} s wall, {res['polgen_cpu']:.1f} s CPU,"
            f" {res['polgen_cnn_genes']}/{len(r.genes)} genes through the CNN; load {os.getloadavg()}"
        )
    py = REF / "bin" / "python"
    if not a.no_ref and py.exists():
        with tempfile.TemporaryDirectory() as d:
            spec = {"obs_names": t.obs_names, "var_names": t.var_names, "regs": regs, "epochs": a.epochs}
            (Path(d) / "spec.json").write_text(json.dumps(spec))
            np.savez(Path(d) / "arrays.npz", X=t.X, xy=t.coords, clusters=t.clusters)
            (Path(d) / "ref.py").write_text(REF_SCRIPT)
            t0 = time.perf_counter()
            subprocess.run([str(py), str(Path(d) / "ref.py"), d], check=True, stdout=subprocess.DEVNULL)
            ref = json.loads((Path(d) / "ref.json").read_text())
            res["ref_wall"], res["ref_cpu"], res["ref_process_wall"] = ref["wall"], ref["cpu"], time.perf_counter() - t0
            print(
                f"reference CNN fit (num_epochs={a.epochs}): {ref['wall']:.1f} s wall, {ref['cpu']:.1f} s CPU "
                f"(torch threads {ref['torch_threads']}); process incl. imports {res['ref_process_wall']:.1f} s"
            )
    res["load_after"] = os.getloadavg()
    print(json.dumps(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
