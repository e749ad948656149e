"""SpaceTravLR benchmark: polgen.stlr vs the Python reference (spacetravlr 0.1.21) on the same data.

    python bench/stlr.py [--sizes 1000,10000,100000] [--ref-max 10000] [--exact-max 100000] [--json out.json]
    GROUP_LASSO_PYTHON=/venv/bin/python python bench/stlr.py --real [--real-genes 20]   (issue 14)
    python bench/stlr.py --wide [--wide-cells 300 --wide-genes 16000 --wide-trained 20]   (issue 14)

Synthetic tissue at constant density (200 genes, 50 trained genes with TF / LR / TFL betas per
cluster, 4 clusters; radius 200, contact distance 50).  Per size: received ligands (all betadata
ligands), splash (all 50 genes), perturb (3 steps, knock-out of a ligand) in every mode, cold
(including the starting received ligands) and warm (a prepared model, as in batch mode); the
fast mode's error against exact; training of the 50 genes at the middle size.  When the reference
venv exists ($TMPDIR/spacetravlr-ref or $SPACETRAVLR_REF) the same operations run in a subprocess
on the same data (up to --ref-max cells: the reference builds N x N matrices) and ratios are printed.
The machine's load average is recorded (timings on a shared machine are noisy); polgen's CPU
time (all its threads) is recorded beside the wall time of received ligands and perturb.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from polgen.stlr.grn import ligand_radii, lr_table  # noqa: E402
from polgen.stlr.ligands import received_ligands  # noqa: E402
from polgen.stlr.perturb import Perturber  # noqa: E402
from polgen.stlr.splash import build_plan, filtered, splash_plan_gene  # noqa: E402
from polgen.stlr.synthetic import make_betabase, make_tissue  # noqa: E402
from polgen.stlr.tissue import Tissue  # noqa: E402
from polgen.stlr.train import fit  # noqa: E402

REF = Path(os.environ.get("SPACETRAVLR_REF", Path(tempfile.gettempdir()) / "spacetravlr-ref"))

REF_SCRIPT = r"""
import json, sys, os, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, pandas as pd, anndata as ad
d = sys.argv[1]
spec = json.load(open(f"{d}/spec.json")); arr = np.load(f"{d}/arrays.npz")
X, xy = arr["X"], arr["xy"]
obs = pd.Index(spec["obs_names"]); var = pd.Index(spec["var_names"])
lr_db = pd.DataFrame(spec["lr_rows"], columns=["ligand", "receptor", "pathway", "signaling"])
import SpaceTravLR.gene_factory as gfm
from SpaceTravLR.models.parallel_estimators import received_ligands, get_filtered_df
gfm.get_cellchat_db = lambda species: lr_db.copy()
models = f"{d}/models"; os.makedirs(models, exist_ok=True)
clusters = np.array(spec["clusters"])
for g, b in spec["betas"].items():
    vals = np.array(b["values"])  # per cluster -> per cell (the reference reads per-cell betadata)
    pos = {c: i for i, c in enumerate(b["ids"])}
    df = pd.DataFrame(vals[[pos[c] for c in clusters]], columns=b["columns"], index=obs)
    df.to_parquet(f"{models}/{g}_betadata.parquet")
a = ad.AnnData(X=X.copy(), obs=pd.DataFrame({"cell_type": clusters}, index=obs), var=pd.DataFrame(index=var))
a.obsm["spatial"] = xy; a.layers["imputed_count"] = X.copy(); a.layers["normalized_count"] = X.copy()
res = {}
gf = gfm.GeneFactory(a, models, annot="cell_type", radius=200, contact_distance=50)
gf.load_betas()
ligs = sorted(set(gf.ligands) | set(gf.tfl_ligands))
gex = pd.DataFrame(X, index=obs, columns=var)
t = time.perf_counter(); c = time.process_time()
rw = received_ligands(xy, get_filtered_df(gex, None, ligs), gf.lr, scale_factor=1)
res["received"] = time.perf_counter() - t; res["received_cpu"] = time.process_time() - c
filt = get_filtered_df(gex, None, var)[var]
t = time.perf_counter()
for g, bf in gf.beta_dict.data.items():
    bf.splash(rw, rw, filt)
res["splash"] = time.perf_counter() - t
t = time.perf_counter(); c = time.process_time()
out = gf.perturb(target=spec["target"], n_propagation=3, gene_expr=0.0)
res["perturb_cold"] = time.perf_counter() - t; res["perturb_cold_cpu"] = time.process_time() - c
if spec.get("warm", True):
    t = time.perf_counter()
    out = gf.perturb(target=spec["target"], n_propagation=3, gene_expr=0.0)
    res["perturb_warm"] = time.perf_counter() - t
np.save(f"{d}/perturb.npy", out.loc[obs, var].values)
json.dump(res, open(f"{d}/ref_times.json", "w"))
"""


def timed(fn, *a, **k):
    t = time.perf_counter()
    out = fn(*a, **k)
    return time.perf_counter() - t, out


def timed_cpu(fn, *a, **k):
    """(wall, CPU of this process (all threads), result)."""
    c = time.process_time()
    t = time.perf_counter()
    out = fn(*a, **k)
    return time.perf_counter() - t, time.process_time() - c, out


def make(n: int, seed: int = 0):
    t = make_tissue(n_cells=n, n_genes=200, n_clusters=4, seed=seed, extent=30.0 * np.sqrt(n))
    base = make_betabase(t, n_trained=50, seed=seed + 1, n_tf=4, n_lr=4, n_tfl=3)
    T = Tissue(
        X=t.X,
        var_names=t.var_names,
        obs_names=t.obs_names,
        coords=t.coords,
        clusters=t.clusters,
        cluster_labels=t.cluster_labels,
    )
    return t, base, T


def run_reference(t, base, target, warm=True):
    py = REF / "bin" / "python"
    if not py.exists():
        return None
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        spec = dict(
            obs_names=t.obs_names,
            var_names=t.var_names,
            clusters=[t.cluster_labels[c] for c in t.clusters],
            lr_rows=t.lr.rows(),
            target=target,
            warm=warm,
            betas={
                g: dict(columns=base[g].columns, ids=base[g].ids, values=base[g].values.tolist()) for g in base.genes
            },
        )
        (d / "spec.json").write_text(json.dumps(spec))
        np.savez(d / "arrays.npz", X=t.X, xy=t.coords)
        (d / "ref.py").write_text(REF_SCRIPT)
        env = dict(os.environ, MPLBACKEND="Agg")
        r = subprocess.run([str(py), str(d / "ref.py"), str(d)], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            print("reference failed:", r.stderr[-2000:], file=sys.stderr)
            return None
        res = json.loads((d / "ref_times.json").read_text())
        res["perturb_out"] = np.load(d / "perturb.npy")
        return res


def bench_size(n: int, args) -> dict:
    t, base, T = make(n)
    rm = ligand_radii(lr_table(t.lr, t.var_names, 200.0, 50.0))
    target = t.ligands[0]
    res: dict = {"n_cells": n, "load_avg": os.getloadavg()[0]}
    res["extent"] = float(30.0 * np.sqrt(n))
    plan = build_plan(base, t.var_names, t.obs_names, t.clusters, t.cluster_labels)
    gi = {g: i for i, g in enumerate(t.var_names)}
    ligs = plan.ligands
    radii = np.array([rm.get(l, np.nan) for l in ligs])
    ok = np.isfinite(radii)
    L = filtered(t.X[:, [gi[l] for l in ligs]])[:, ok]
    res["n_ligands"] = int(ok.sum())
    received_ligands(t.coords[:500], L[:500], radii[ok])  # compile / load the numba cache
    W = {}
    for mode in ("exact", "grid", "fast"):
        if (mode == "exact" and n > args.exact_max) or (mode == "grid" and n > args.grid_max):
            continue
        dt, cpu, W[mode] = timed_cpu(received_ligands, t.coords, L, radii[ok], 1.0, mode)
        res[f"received_{mode}_s"] = dt
        res[f"received_{mode}_cpu_s"] = cpu
    if "exact" not in W and n <= 200_000:
        # exact on a sample of 400 target cells (all sources): accuracy of fast / grid at scale
        from polgen.kernels.ligands import gauss_sum_exact

        rows = np.random.default_rng(0).choice(n, size=400, replace=False)
        x, y = np.ascontiguousarray(t.coords[:, 0]), np.ascontiguousarray(t.coords[:, 1])
        ex = np.zeros((400, L.shape[1]))
        for r in np.unique(radii[ok]):
            cols = np.flatnonzero(radii[ok] == r)
            o = np.empty((400, cols.size))
            gauss_sum_exact(x[rows], y[rows], x, y, np.ascontiguousarray(L[:, cols]), 1 / (2 * r * r), 1.0 / n, o)
            ex[:, cols] = o
        for mode in [m for m in ("fast", "grid") if m in W]:
            res[f"received_{mode}_err_sampled"] = float((np.abs(W[mode][rows] - ex).max(0) / np.abs(ex).max(0)).max())
    elif "exact" in W:
        for mode in ("fast", "grid"):
            if mode not in W:
                continue
            res[f"received_{mode}_err"] = float((np.abs(W[mode] - W["exact"]).max(0) / np.abs(W["exact"]).max(0)).max())
    # splash of all trained genes
    gexf = filtered(t.X)
    Wl = np.zeros((n, len(ligs)))
    Wl[:, ok] = W.get("exact", W["fast"])
    splash_plan_gene(plan, 0, gexf[:50], Wl[:50], Wl[:50])
    t0 = time.perf_counter()
    for k in range(len(plan.genes)):
        splash_plan_gene(plan, k, gexf, Wl, Wl)
    res["splash_50_genes_s"] = time.perf_counter() - t0
    # perturb (3 steps)
    outs = {}
    for mode in ("exact", "fast", "grid"):
        if (mode == "exact" and n > args.exact_max) or (mode == "grid" and n > args.grid_max):
            continue
        dt_prep, cpu_prep, P = timed_cpu(Perturber, T, base, lr=t.lr, mode=mode)
        dt_run, cpu_run, out = timed_cpu(P.run, target, 0.0, n_propagation=3)
        res[f"perturb_{mode}_cold_s"] = dt_prep + dt_run
        res[f"perturb_{mode}_warm_s"] = dt_run
        res[f"perturb_{mode}_cold_cpu_s"] = cpu_prep + cpu_run
        res[f"perturb_{mode}_warm_cpu_s"] = cpu_run
        outs[mode] = out.drop("CellID").to_numpy()
    if "exact" in outs:
        scale = np.abs(outs["exact"]).max(axis=0)
        scale[scale == 0] = 1.0
        for mode in [m for m in ("fast", "grid") if m in outs]:
            res[f"perturb_{mode}_err"] = float((np.abs(outs[mode] - outs["exact"]) / scale).max())
    if args.train and n == args.train_size:
        with tempfile.TemporaryDirectory() as d:
            dt, fr = timed(fit, T, base.genes, out=Path(d) / "fit", lr=t.lr, grn=t.links, progress=False)
        res["train_50_genes_s"] = dt
        res["train_clusters"] = len(t.cluster_labels)
    if n <= args.ref_max:
        ref = run_reference(t, base, target, warm=n <= 2000 or args.ref_warm)
        if ref is not None:
            pout = ref.pop("perturb_out")
            for k, v in ref.items():
                res[f"ref_{k}_s"] = v
            if "exact" in outs:
                scale = np.abs(pout).max(axis=0)
                scale[scale == 0] = 1.0
                res["perturb_exact_vs_ref_err"] = float((np.abs(outs["exact"] - pout) / scale).max())
            res["ratio_received"] = ref["received"] / res.get("received_exact_s", np.nan)
            res["ratio_splash"] = ref["splash"] / res["splash_50_genes_s"]
            if "received_exact_cpu_s" in res:
                res["ratio_received_cpu"] = ref["received_cpu"] / res["received_exact_cpu_s"]
            for mode in ("exact", "fast", "grid"):
                if f"perturb_{mode}_cold_s" in res:
                    res[f"ratio_perturb_{mode}_cold"] = ref["perturb_cold"] / res[f"perturb_{mode}_cold_s"]
                    res[f"ratio_perturb_{mode}_cold_cpu"] = ref["perturb_cold_cpu"] / res[f"perturb_{mode}_cold_cpu_s"]
                    if "perturb_warm" in ref:
                        res[f"ratio_perturb_{mode}_warm"] = ref["perturb_warm"] / res[f"perturb_{mode}_warm_s"]
    res["load_avg_end"] = os.getloadavg()[0]
    return res


def warm_up() -> None:
    """Compile / load every numba kernel once so no timing below includes compilation."""
    t, base, T = make(2500, seed=7)
    for mode in ("exact", "fast", "grid"):
        Perturber(T, base, lr=t.lr, mode=mode).run(t.ligands[0], 0.0, n_propagation=2)
    plan = build_plan(base, t.var_names, t.obs_names, t.clusters, t.cluster_labels)
    gexf = filtered(t.X)
    W = np.zeros((t.X.shape[0], len(plan.ligands)))
    for n in (50, 2500):
        splash_plan_gene(plan, 0, gexf[:n], W[:n], W[:n])
    with tempfile.TemporaryDirectory() as d:
        fit(T, base.genes[:2], out=Path(d) / "w", lr=t.lr, grn=t.links, progress=False)


GL_SCRIPT = """
import sys, time, warnings, numpy as np
from group_lasso import GroupLasso
d = np.load(sys.argv[1]); out = []
for k in range(int(d["n"])):
    gl = GroupLasso(groups=d[f"g{k}"], group_reg=1e-7, l1_reg=1e-9, frobenius_lipschitz=True,
                    scale_reg="inverse_group_size", warm_start=True, random_state=42, supress_warning=True,
                    n_iter=1500, tol=1e-5)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gl.fit(d[f"X{k}"], d[f"y{k}"])
    out.append(time.perf_counter() - t)
print(sum(out))
"""


def bench_real(args) -> dict:
    """Issue 14's real tissue (tests/data/stlr/visium_mouse_brain_counts.h5ad, 49 spots x 1,999 genes):
    raw counts -> prepare -> fit(genes=N) with the bundled priors -> knock-out, per-gene training time
    of each solver, and group-lasso 1.5.0 itself on the stored reference problems (when a venv with
    it is given by $GROUP_LASSO_PYTHON)."""
    import warnings

    import anndata as ad
    import polars as pl

    from polgen.stlr import perturb, prepare, top_regulators
    from polgen.stlr.lasso import sparse_group_lasso

    data = Path(__file__).resolve().parents[1] / "tests" / "data" / "stlr"
    r: dict = {"what": "real tissue", "load_avg": os.getloadavg()[0]}
    counts = ad.read_h5ad(data / "visium_mouse_brain_counts.h5ad")
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        a = prepare(counts, copy=True)
        r["prepare_s"] = time.perf_counter() - t0
        for solver in ("fista", "reference"):
            for cv in (0, 5):
                t1 = time.perf_counter()
                res = fit(a, genes=args.real_genes, out=Path(d) / f"{solver}{cv}", progress=False, solver=solver, cv=cv)
                dt = time.perf_counter() - t1
                r[f"fit_{solver}_cv{cv}_per_gene_s"] = dt / len(res.genes)
                r[f"{solver}_models_not_converged"] = int((~res.scores["converged"]).sum())
                r["models"] = res.scores.height
        out = Path(d) / "fista0"
        tf = top_regulators(out, 1000).filter(pl.col("kind") == "tf")["term"][0]
        for changed in (False, True):
            t2 = time.perf_counter()
            perturb(a, out, tf, changed_only=changed)
            r[f"knockout_{'changed' if changed else 'dense'}_s"] = time.perf_counter() - t2
        r["raw_to_knockout_s"] = time.perf_counter() - t0
    inp = np.load(data / "group_lasso_ref" / "inputs.npz")
    n = int(inp["n"])
    t3 = time.perf_counter()
    for k in range(n):
        sparse_group_lasso(inp[f"X{k}"], inp[f"y{k}"], inp[f"g{k}"], 1e-7, 1e-9, solver="reference")
    r["polgen_reference_solver_7_problems_s"] = time.perf_counter() - t3
    gl = os.environ.get("GROUP_LASSO_PYTHON")
    if gl and Path(gl).exists():
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(GL_SCRIPT)
        out_gl = subprocess.run(
            [gl, f.name, str(data / "group_lasso_ref" / "inputs.npz")], capture_output=True, text=True
        )
        r["group_lasso_150_7_problems_s"] = float(out_gl.stdout.strip().splitlines()[-1])
        r["speedup_reference_solver"] = r["group_lasso_150_7_problems_s"] / r["polgen_reference_solver_7_problems_s"]
    r["load_avg_end"] = os.getloadavg()[0]
    return r


WIDE_CHILD = """
import sys, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
from polgen.stlr import perturb
import anndata as ad
a = ad.read_h5ad(sys.argv[1])
t1 = time.perf_counter()
perturb(a, sys.argv[2], sys.argv[3], lr=sys.argv[4], n_propagation=4, changed_only=sys.argv[5] == "1")
print(time.perf_counter() - t1, t1 - t0)
"""


def bench_wide(args) -> dict:
    """Issue 14's knock-out on a wide tissue (``--wide-cells`` x ``--wide-genes``, sparse like real
    counts, ``--wide-trained`` trained genes): the first :func:`perturb` call in a fresh process
    (numba kernels from the cache), and in a warm process the first call and a repeat, each with
    every gene in the output and with ``changed_only``; AnnData in memory and .h5ad path."""
    import warnings

    import scipy.sparse as sp

    from polgen.stlr import perturb
    from polgen.stlr.betadata import write_betadata

    warnings.simplefilter("ignore")
    n, g = args.wide_cells, args.wide_genes
    t = make_tissue(n, g, 4, seed=3, n_tfs=100, n_ligands=60, n_receptors=60, sparsity=0.9)
    base = make_betabase(t, n_trained=args.wide_trained, seed=1)
    a = t.to_anndata()
    a.X = sp.csr_matrix(a.X)
    a.layers["imputed_count"] = sp.csr_matrix(a.layers["imputed_count"])
    uses: dict[str, int] = {}  # knock out the modulator most trained genes use
    for gene in base.genes:
        for m in base[gene].modulators:
            uses[m] = uses.get(m, 0) + 1
    target = max(sorted(uses), key=lambda m: uses[m])
    r: dict = {"what": f"wide tissue {n} x {g}, {args.wide_trained} trained", "load_avg": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as d:
        h5 = Path(d) / "wide.h5ad"
        a.write_h5ad(h5)
        bdir = Path(d) / "betas"
        bdir.mkdir()
        for gene in base.genes:
            write_betadata(base[gene], bdir / f"{gene}_betadata.parquet")
        lr = Path(d) / "lr.csv"
        t.lr.write_csv(lr)
        for changed in (False, True):
            tag = "changed" if changed else "dense"
            out = subprocess.run(
                [sys.executable, "-c", WIDE_CHILD, str(h5), str(bdir), target, str(lr), "1" if changed else "0"],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            )
            first, imports = (float(v) for v in out.stdout.split()[-2:])
            r[f"fresh_process_first_call_{tag}_s"] = first
            r["fresh_process_import_and_read_s"] = imports
        for src_name, src in (("anndata", a), ("h5ad", str(h5))):
            for changed in (False, True):
                tag = f"{src_name}_{'changed' if changed else 'dense'}"
                t0 = time.perf_counter()
                perturb(src, base, target, lr=t.lr, n_propagation=4, changed_only=changed)
                r[f"first_call_{tag}_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                perturb(src, base, target, lr=t.lr, n_propagation=4, changed_only=changed)
                r[f"repeat_call_{tag}_s"] = time.perf_counter() - t0
                model = Perturber(src, base, lr=t.lr)
                model.run(target, 0.0, n_propagation=4, changed_only=changed)
                t0 = time.perf_counter()
                res = model.run(target, 0.0, n_propagation=4, changed_only=changed)
                r[f"prepared_model_run_{tag}_s"] = time.perf_counter() - t0
                r["changed_genes"] = res.width - 1 if changed else r.get("changed_genes")
    r["load_avg_end"] = os.getloadavg()[0]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", action="store_true", help="issue 14's real-tissue path (see bench_real) instead")
    ap.add_argument("--real-genes", type=int, default=20, help="genes trained in --real")
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--ref-max", type=int, default=10000, help="largest size the reference runs at")
    ap.add_argument("--ref-warm", action="store_true", help="also time the reference's second perturbation")
    ap.add_argument("--exact-max", type=int, default=20000, help="largest size for the exact mode")
    ap.add_argument(
        "--grid-max",
        type=int,
        default=20000,
        help="largest size for the grid mode (its anchors grow with the tissue area)",
    )
    ap.add_argument("--train-size", type=int, default=10000)
    ap.add_argument("--no-train", dest="train", action="store_false")
    ap.add_argument("--json", default=None)
    ap.add_argument("--wide", action="store_true", help="issue 14's knock-out on a wide tissue (bench_wide)")
    ap.add_argument("--wide-cells", type=int, default=300)
    ap.add_argument("--wide-genes", type=int, default=16000)
    ap.add_argument("--wide-trained", type=int, default=20)
    args = ap.parse_args()
    if args.wide:
        warm_up()
        r = bench_wide(args)
        print(json.dumps({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(r, indent=1))
        return
    if args.real:
        bench_real(args)  # first pass compiles the kernels
        r = bench_real(args)
        print(json.dumps({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(r, indent=1))
        return
    warm_up()
    results = []
    for n in [int(s) for s in args.sizes.split(",") if s]:
        r = bench_size(n, args)
        results.append(r)
        print(json.dumps({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
