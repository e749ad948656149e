"""SpaceTravLR training on the real Stahl 2016 mouse olfactory bulb (issue 14): per-gene fit time and
convergence of polgen's solvers on the full 262 spots x 15,928 genes.

Data: MERINGUE's ``mOB`` (JEFworks-Lab/MERINGUE, GPL-3, ``data/mOB.rda``: Stahl et al. 2016,
Science 353:78, replicate 11 - the counts SpatialDE's ``Rep11_MOB_0.csv`` holds; only a git-LFS pointer
is stored in the SpatialDE repository).  Get it with

    git --git-dir=<MERINGUE mirror> show HEAD:data/mOB.rda > /tmp/mob/mOB.rda

(``rdata``, polgen's ``[hdl]`` extra, reads it).  Coordinates are ST array units (spots 200 um apart
centre to centre); ``--um-per-unit 200`` turns them into microns, the unit of the default radius.

Steps: raw counts -> ``prepare`` -> ``fit(genes=N)`` with the bundled mm10 base GRN and mouse CellChat
table, for the default solver (majorise-minimise start + FISTA), ``solver="reference"``
(group-lasso 1.5.0's iteration) and the previous default (FISTA from zero, max_iter 5000, tol 1e-10;
emulated by passing ``w0=0`` to every fit) on the first few genes; cv=0 for the time per gene, then
cv=5 for the held-out R^2.  With ``--gl-python`` (a venv holding group-lasso 1.5.0, e.g. the
SpaceTravLR reference's), group-lasso itself fits the designs of the first ``--gl-genes`` genes.

CPU seconds (``time.process_time``) are reported beside wall time: the shared machine is loaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

GL_SCRIPT = """
import sys, time, warnings, json, numpy as np
from group_lasso import GroupLasso
d = np.load(sys.argv[1]); out = []
for k in range(int(d["n"])):
    gl = GroupLasso(groups=d[f"g{k}"], group_reg=1e-7, l1_reg=1e-9, frobenius_lipschitz=True,
                    scale_reg="inverse_group_size", warm_start=True, random_state=42, supress_warning=True,
                    n_iter=1500, tol=1e-5)
    t = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gl.fit(d[f"X{k}"], d[f"y{k}"])
    out.append([time.process_time() - t, np.asarray(gl.coef_).ravel().tolist()])
print(json.dumps(out))
"""


def mob_layers(path) -> dict[str, str]:
    """MERINGUE's layer annotation of the spots (``mOB$annot``, 260 of 262 spots; rdata drops a
    factor's names, so they are read from the parsed attributes)."""
    import rdata

    parsed = rdata.parser.parse_file(path).object.value[0]
    fields = rdata.conversion.convert(parsed.attributes)["names"]
    annot = parsed.value[list(fields).index("annot")]
    attrs = rdata.conversion.convert(annot.attributes)
    levels = [str(x) for x in attrs["levels"]]
    return {str(s): levels[int(c) - 1] for s, c in zip(attrs["names"], annot.value, strict=True)}


def load_mob(path: Path, um_per_unit: float):
    """AnnData of the raw counts (spots x genes, CSR int32) with ``obsm["spatial"]`` in microns."""
    import anndata as ad
    import rdata
    import scipy.sparse as sp

    m = rdata.conversion.convert(rdata.parser.parse_file(path))["mOB"]
    counts = m["counts"]
    genes = [str(g) for g in counts.coords["dim_0"].values]
    spots = [str(s) for s in counts.coords["dim_1"].values]
    pos = m["pos"].loc[spots]
    X = sp.csr_matrix(np.asarray(counts).T.astype(np.int32))
    a = ad.AnnData(X=X)
    a.obs_names = spots
    a.var_names = genes
    a.obsm["spatial"] = pos[["x", "y"]].to_numpy(dtype=np.float64) * um_per_unit
    layers = mob_layers(path)
    a.obs["layer"] = [layers.get(s) for s in spots]
    return a


def timed(fn, *a, **k):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0, time.process_time() - c0


def run(args) -> dict:
    import polgen.stlr.train as train_mod
    from polgen.stlr import fit, prepare
    from polgen.stlr.lasso import sparse_group_lasso

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.simplefilter("ignore")
    r: dict = {"load_avg_start": os.getloadavg()[0], "genes_trained": args.genes}
    a = load_mob(Path(args.rda), args.um_per_unit)
    tot = np.asarray(a.X.sum(axis=1)).ravel()
    keep = tot >= args.min_counts  # two spots hold 2 and 4 counts (k-means made them clusters of their own)
    r["spots_dropped_min_counts"] = int((~keep).sum())
    a = a[keep].copy()
    r["spots"], r["genes"] = a.n_obs, a.n_vars
    key = None
    if args.clusters == "layer":  # MERINGUE's 5 layers (annotated for exactly the 260 spots kept)
        a = a[a.obs["layer"].notna()].copy()
        key = "layer"
    a, r["prepare_wall_s"], r["prepare_cpu_s"] = timed(prepare, a, impute=args.impute, cluster_key=key)
    r["cluster_key"] = a.uns["stlr_prepare"]["cluster_key"]
    r["clusters"] = a.obs[r["cluster_key"]].value_counts().sort_index().to_dict()
    designs: list = []

    def recording(X, y, groups, *p, **k):
        if len(designs) < args.gl_models:
            designs.append((np.array(X), np.array(y), np.array(groups)))
        return sparse_group_lasso(X, y, groups, *p, **k)

    def from_zero(X, y, groups, *p, **k):  # the previous default: FISTA from w = 0
        return sparse_group_lasso(X, y, groups, *p, w0=np.zeros(np.shape(X)[1]), **k)

    with tempfile.TemporaryDirectory() as d:
        runs = [("fista", 0, args.genes, None), ("reference", 0, args.genes, None)]
        if args.old_genes:
            runs.append(("fista_from_zero", 0, args.old_genes, from_zero))
        if args.cv:
            runs += [("fista", args.cv, args.genes, None), ("reference", args.cv, args.genes, None)]
        for name, cv, ng, patch in runs:
            solver = "fista" if name == "fista_from_zero" else name
            if name == "fista" and cv == 0:
                patch = recording
            orig = train_mod.sparse_group_lasso
            if patch is not None:
                train_mod.sparse_group_lasso = patch
            try:
                res, wall, cpu = timed(
                    fit,
                    a,
                    genes=ng,
                    out=Path(d) / f"{name}{cv}",
                    progress=False,
                    solver=solver,
                    cv=cv,
                    cluster_key=r["cluster_key"],
                )
            finally:
                train_mod.sparse_group_lasso = orig
            s = res.scores
            key = f"{name}_cv{cv}"
            r[key] = {
                "genes": len(res.genes),
                "models": s.height,
                "wall_per_gene_s": wall / max(len(res.genes), 1),
                "cpu_per_gene_s": cpu / max(len(res.genes), 1),
                "not_converged": int((~s["converged"] & ~s["zeroed"]).sum()),
                "not_converged_incl_zeroed": int((~s["converged"]).sum()),
                "zeroed": int(s["zeroed"].sum()),
                "n_modulators_median": float(s["n_modulators"].median()),
                "r2_median": float(s["r2"].median()),
            }
            if cv:
                h = s["cv_r2"].drop_nans()
                r[key] |= {
                    "cv_r2_median": float(h.median()) if h.len() else None,
                    "cv_r2_q10_q90": [float(h.quantile(0.1)), float(h.quantile(0.9))] if h.len() else None,
                    "cv_r2_negative": int((h < 0).sum()),
                }
            if name == "fista" and cv == 0:
                r["gene_list"] = res.genes
            logging.getLogger("polgen").warning("bench: %s done: %s", key, r[key])
    r["speedup_cpu_default_vs_from_zero"] = (
        r["fista_from_zero_cv0"]["cpu_per_gene_s"] / r["fista_cv0"]["cpu_per_gene_s"] if args.old_genes else None
    )
    if args.gl_python and Path(args.gl_python).exists() and designs:
        with tempfile.TemporaryDirectory() as d:
            npz = Path(d) / "designs.npz"
            arrs = {"n": len(designs)}
            for k, (X, y, g) in enumerate(designs):
                arrs |= {f"X{k}": X, f"y{k}": y, f"g{k}": g}
            np.savez(npz, **arrs)
            script = Path(d) / "gl.py"
            script.write_text(GL_SCRIPT)
            out = subprocess.run([args.gl_python, str(script), str(npz)], capture_output=True, text=True, check=True)
            gl = json.loads(out.stdout.strip().splitlines()[-1])
        pol_cpu = 0.0
        diffs = []
        for (X, y, g), (_, coef) in zip(designs, gl, strict=True):
            f, _, c = timed(sparse_group_lasso, X, y, g, 1e-7, 1e-9, solver="reference")
            pol_cpu += c
            diffs.append(float(np.max(np.abs(f.coef - np.asarray(coef)))))
        r["group_lasso_150"] = {
            "models": len(designs),
            "cpu_s": sum(t for t, _ in gl),
            "polgen_reference_cpu_s": pol_cpu,
            "max_abs_coef_diff_vs_polgen_reference": max(diffs),
        }
    r["load_avg_end"] = os.getloadavg()[0]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rda", default="/tmp/mob/mOB.rda")
    ap.add_argument("--um-per-unit", type=float, default=200.0)
    ap.add_argument("--impute", default="knn")
    ap.add_argument("--clusters", default="layer", help="'layer' (MERINGUE's annotation) or 'kmeans' (prepare's)")
    ap.add_argument("--min-counts", type=int, default=100, help="spots with fewer counts are dropped")
    ap.add_argument("--genes", type=int, default=20, help="genes trained per solver (top variance with regulators)")
    ap.add_argument("--old-genes", type=int, default=3, help="genes trained by the previous default (0: skip)")
    ap.add_argument("--cv", type=int, default=5, help="folds of the held-out R^2 run (0: skip)")
    ap.add_argument("--gl-python", default="/tmp/spacetravlr-ref/bin/python")
    ap.add_argument("--gl-models", type=int, default=14, help="cluster models group-lasso 1.5.0 fits")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    r = run(args)
    text = json.dumps(r, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
