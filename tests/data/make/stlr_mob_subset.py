"""Make tests/data/stlr/mob/mob_rep11_subset.h5ad from MERINGUE's mOB (Stahl 2016 mouse olfactory bulb).

Usage: python tests/data/make/stlr_mob_subset.py <mOB.rda>
where mOB.rda is ``data/mOB.rda`` of JEFworks-Lab/MERINGUE (GPL-3; git blob 0ed8a6c, commit ca9e2cc).

Keeps all 262 spots and 300 genes: the 150 of largest variance of log1p(counts / spot total * 1e4)
(totals over all 15,928 genes), then the most expressed TFs of polgen's bundled mouse base GRN and the
most expressed ligands/receptors of the bundled mouse CellChat table not already kept, 75 each.
Counts int32 CSR; ``obs["total_counts"]`` the spot's total over all genes; ``obsm["spatial"]`` the
ST array coordinates (x, y) of ``mOB$pos``, as stored; ``obs["layer"]`` MERINGUE's annotation
(``mOB$annot``: 5 olfactory-bulb layers from its vignette's clustering; missing for the 2 spots its
``cleanCounts(min.reads=100)`` drops, with 2 and 4 counts).
"""

from __future__ import annotations

import sys

import anndata as ad
import numpy as np
import pandas as pd
import rdata
import scipy.sparse as sp

from polgen.stlr.priors import bundled_grn, bundled_lr


def mob_layers(path) -> dict[str, str]:
    """MERINGUE's layer annotation of the spots (``mOB$annot``, 260 of 262 spots; rdata drops a
    factor's names, so they are read from the parsed attributes)."""
    parsed = rdata.parser.parse_file(path).object.value[0]
    fields = rdata.conversion.convert(parsed.attributes)["names"]
    annot = parsed.value[list(fields).index("annot")]
    attrs = rdata.conversion.convert(annot.attributes)
    levels = [str(x) for x in attrs["levels"]]
    return {str(s): levels[int(c) - 1] for s, c in zip(attrs["names"], annot.value, strict=True)}


m = rdata.conversion.convert(rdata.parser.parse_file(sys.argv[1]))["mOB"]
counts = m["counts"]
genes = np.array([str(g) for g in counts.coords["dim_0"].values])
spots = [str(s) for s in counts.coords["dim_1"].values]
X = np.asarray(counts).T.astype(np.int64)  # spots x genes
tot = X.sum(axis=1)
norm = np.log1p(X / np.maximum(tot, 1)[:, None] * 1e4)
var = norm.var(axis=0)
order = sorted(range(len(genes)), key=lambda j: (-var[j], genes[j]))
keep = list(order[:150])
mean = X.mean(axis=0)
tfs = set(bundled_grn("mouse")["source"].to_list())
lrg = set(bundled_lr("mouse")["ligand"].to_list()) | set(bundled_lr("mouse")["receptor"].to_list())
for pool in (tfs, lrg):
    cand = [j for j in np.argsort(-mean, kind="stable") if genes[j] in pool and j not in keep]
    keep += [int(j) for j in cand[:75]]
keep = sorted(keep)
a = ad.AnnData(X=sp.csr_matrix(X[:, keep].astype(np.int32)))
a.obs_names = spots
a.var_names = list(genes[keep])
a.obs["total_counts"] = tot.astype(np.int64)
layers = mob_layers(sys.argv[1])
a.obs["layer"] = pd.Categorical([layers.get(s_) for s_ in spots])  # NaN: the 2 near-empty spots
a.obsm["spatial"] = m["pos"].loc[spots][["x", "y"]].to_numpy(dtype=np.float64)
a.uns["source"] = "MERINGUE mOB (Stahl et al. 2016 Science 353:78, MOB replicate 11); GPL-3"
a.write_h5ad("tests/data/stlr/mob/mob_rep11_subset.h5ad", compression="gzip")
print(a, pd.Series(a.var_names).head().tolist())
