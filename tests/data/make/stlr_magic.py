"""Reference MAGIC outputs for tests/stlr/test_stlr_magic.py, made with magic-impute 3.0.0 (graphtools 2.1.0,
scikit-learn 1.9.1, numpy 2.4.6) in its own venv:

    python -m venv /tmp/magic-venv && /tmp/magic-venv/bin/pip install magic-impute anndata
    /tmp/magic-venv/bin/python tests/data/make/stlr_magic.py

Input: the MOB subset (tests/data/stlr/mob/mob_rep11_subset.h5ad), log1p(counts / spot total * 1e4) of
its 300 genes (the reference's ``normalized_count``).  Each case runs ``magic.MAGIC(**params)
.fit_transform(X, genes="all_genes")`` as SpaceTravLR's ``knn_imputation(method="MAGIC")`` does (defaults:
knn=5, knn_max=15, decay=1, t=3, n_pca=100, solver="exact"), and stores the input, the output, the
parameters (and for ``nopca`` the diffusion operator) in tests/data/stlr/magic/magic_ref.npz:

* ``nopca``: the first 120 spots x the first 80 genes (80 <= n_pca: MAGIC runs no PCA), defaults;
* ``pca``: all 262 spots x the first 150 genes (randomized PCA to 100 components, random_state=0), defaults;
* ``params``: the first 150 spots x 80 genes, knn=8, decay=2, t=4;
* ``pca_seed_spread``: the largest difference between the ``pca`` outputs of random_state 0..4;
* ``pca_exact_Y``: graphtools' graph (same parameters) on an exact PCA of the ``pca`` input, P^3 X.
"""

from __future__ import annotations

import anndata as ad
import graphtools
import magic
import numpy as np
from sklearn.decomposition import PCA

a = ad.read_h5ad("tests/data/stlr/mob/mob_rep11_subset.h5ad")
C = np.asarray(a.X.toarray(), dtype=np.float64)
tot = C.sum(axis=1, keepdims=True)
N = np.log1p(C / np.maximum(tot, 1) * 1e4)
cases = {
    "nopca": (N[:120, :80], {}),
    "pca": (N[:, :150], {"random_state": 0}),
    "params": (N[:150, :80], {"knn": 8, "decay": 2, "t": 4}),
}
out = {}
for name, (X, params) in cases.items():
    op = magic.MAGIC(verbose=0, **params)
    Y = op.fit_transform(X, genes="all_genes")
    P = op.graph.diff_op
    out[f"{name}_X"] = X
    out[f"{name}_Y"] = np.asarray(Y)
    if name == "nopca":  # the diffusion operator of one case (the others' are n x n and add 0.5 MB)
        out[f"{name}_P"] = P.toarray() if hasattr(P, "toarray") else np.asarray(P)
    out[f"{name}_knn"] = params.get("knn", 5)
    out[f"{name}_decay"] = params.get("decay", 1)
    out[f"{name}_t"] = params.get("t", 3)
# The "pca" case's reference is random (randomized PCA; SpaceTravLR leaves random_state=None): its spread
# over seeds 0-4, and the same graph on an exact PCA (scikit-learn svd_solver="full"), diffused as MAGIC's
# exact solver does (P^t X).
X = cases["pca"][0]
runs = [np.asarray(magic.MAGIC(verbose=0, random_state=s).fit_transform(X, genes="all_genes")) for s in range(5)]
out["pca_seed_spread"] = max(np.abs(r1 - r2).max() for r1 in runs for r2 in runs)
Z = PCA(100, svd_solver="full").fit_transform(X)
P = graphtools.Graph(Z, n_pca=None, knn=5, knn_max=15, decay=1, thresh=1e-4, verbose=0).diff_op
Y = X.copy()
for _ in range(3):
    Y = P @ Y
out["pca_exact_Y"] = np.asarray(Y)
np.savez_compressed("tests/data/stlr/magic/magic_ref.npz", **out)
print({k: v.shape for k, v in out.items() if hasattr(v, "shape")})
