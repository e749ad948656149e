"""Make tests/data/stlr/group_lasso_ref/: group-lasso 1.5.0's fits of real SpaceTravLR designs.

Step 1 (polgen's environment): the design matrices polgen trains on for 3 genes of the real Visium
tissue (tests/data/stlr/visium_mouse_brain_counts.h5ad after ``prepare``, bundled mouse priors), one
problem per (gene, cluster with >= 10 cells), plus one synthetic ill-conditioned problem, saved as
``inputs.npz``.  Step 2 (a venv with ``pip install group-lasso==1.5.0 scikit-learn``): each problem
fitted by ``group_lasso.GroupLasso`` with the Python SpaceTravLR reference's settings
(``group_reg=1e-7, l1_reg=1e-9, frobenius_lipschitz=True, scale_reg="inverse_group_size",
warm_start=True, random_state=42, supress_warning=True, n_iter=1500, tol=1e-5``), saved as
``outputs.npz`` (intercept, coefficients, number of iterations taken).

    python tests/data/make/stlr_group_lasso_ref.py inputs
    /path/to/venv/bin/python tests/data/make/stlr_group_lasso_ref.py outputs
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1] / "stlr" / "group_lasso_ref"
GENES = ["Pcp4", "Baiap2", "Mapk1"]


def inputs() -> None:
    import anndata as ad

    from polgen.stlr import prepare, training_context

    a = prepare(ad.read_h5ad(HERE.parent / "visium_mouse_brain_counts.h5ad"))
    ctx, _ = training_context(a, None, None)
    out: dict[str, np.ndarray] = {}
    k = 0
    for g in GENES:
        mods = ctx.modulators(g)
        D = ctx.design(mods)
        y = ctx.X[:, ctx.gidx[g]]
        _, codes = np.unique(np.asarray(mods.groups), return_inverse=True)
        for c in range(int(ctx.clusters.max()) + 1):
            m = ctx.clusters == c
            if m.sum() < 10:
                continue
            out[f"X{k}"], out[f"y{k}"], out[f"g{k}"] = D[m], y[m], codes.astype(np.int64)
            k += 1
    rng = np.random.default_rng(14)
    Z = rng.normal(size=(40, 6))
    X = np.hstack([Z, Z @ rng.normal(size=(6, 30)) + 1e-3 * rng.normal(size=(40, 30))])  # condition ~1e4
    out[f"X{k}"], out[f"y{k}"] = X, X[:, :5].sum(axis=1) + 0.1 * rng.normal(size=40)
    out[f"g{k}"] = np.repeat(np.arange(12), 3).astype(np.int64)
    np.savez_compressed(HERE / "inputs.npz", n=np.array(k + 1), **out)
    print(f"{k + 1} problems -> {HERE / 'inputs.npz'}")


def outputs() -> None:
    import warnings

    from group_lasso import GroupLasso

    data = np.load(HERE / "inputs.npz")
    out: dict[str, np.ndarray] = {}
    for k in range(int(data["n"])):
        its: list[int] = []
        gl = GroupLasso(
            groups=data[f"g{k}"],
            group_reg=1e-7,
            l1_reg=1e-9,
            frobenius_lipschitz=True,
            scale_reg="inverse_group_size",
            warm_start=True,
            random_state=42,
            supress_warning=True,
            n_iter=1500,
            tol=1e-5,
        )
        gl.LOG_LOSSES = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gl.fit(data[f"X{k}"], data[f"y{k}"])
        its.append(len(gl.losses_) - 1)
        out[f"b{k}"] = np.asarray(gl.intercept_, dtype=np.float64).ravel()
        out[f"w{k}"] = np.asarray(gl.coef_, dtype=np.float64).ravel()
        out[f"it{k}"] = np.array(its[0])
        print(k, data[f"X{k}"].shape, its[0], float(np.abs(out[f"w{k}"]).max()))
    np.savez_compressed(HERE / "outputs.npz", **out)


if __name__ == "__main__":
    {"inputs": inputs, "outputs": outputs}[sys.argv[1]]()
