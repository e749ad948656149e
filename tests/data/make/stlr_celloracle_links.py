"""CellOracle's own per-cluster bagging-ridge links on a small tissue (fixture for tests/stlr/test_stlr_pruning.py).

Run with the SpaceTravLR reference venv (celloracle_tmp + scikit-learn 1.9.1):

    /tmp/spacetravlr-ref/bin/python tests/data/make/stlr_celloracle_links.py tests/data/stlr/celloracle_links

Writes inputs.npz (expression, clusters, gene names, the base GRN as target -> TFs) and links.parquet
(cluster, source, target, coef_mean, coef_abs, p, -logp) from celloracle's
``_fit_GRN_for_network_analysis`` (what ``Oracle.get_links`` runs) and ``filtered.parquet`` from
``Links.filter_links(p=0.001, weight="coef_abs", threshold_number=...)``.  CellOracle orders each
target's regulators by Python set order (hash-seed dependent); ``intersect`` is replaced by a
sorted intersection so the result is deterministic (sorted is one of the orders it can take).
"""

import sys
import types
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

# celloracle's package __init__ imports every module; the ones not used here need packages the venv
# lacks (igraph for network scores, genomepy / gimmemotifs for motif analysis, IPython for notebooks): stand-in modules
STUBS = {"igraph", "genomepy", "gimmemotifs", "pybedtools", "velocyto", "goatools", "IPython", "ipywidgets"}


class _Stub(types.ModuleType):
    __path__: list = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "get_ipython":  # matplotlib asks whether it runs in IPython: no
            return lambda: None
        return type(name, (), {})


class _StubFinder:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in STUBS:
            import importlib.machinery

            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Stub(spec.name)

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _StubFinder())

import celloracle_tmp.network.net_core as net_core  # noqa: E402
import celloracle_tmp.network.regression_models as rm  # noqa: E402
from celloracle_tmp.network_analysis import network_construction as nc  # noqa: E402
from celloracle_tmp.network_analysis.links_object import Links  # noqa: E402

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)


def sorted_intersect(a, b):
    return sorted(set(a).intersection(b))


rm.intersect = sorted_intersect
net_core.intersect = sorted_intersect

rng = np.random.RandomState(7)
n, n_tf, n_tg = 150, 8, 6
tfs = [f"Tf{i}" for i in range(n_tf)]
tgs = [f"Gene{i}" for i in range(n_tg)]
genes = tfs + tgs
clusters = np.array(["b", "a", "c"])[rng.randint(0, 3, n)]
T = rng.gamma(2.0, 1.0, size=(n, n_tf))
T[:, 5] = 0.0  # a constant regulator
T[rng.rand(n, n_tf) < 0.2] = 0.0
B = rng.normal(0, 0.8, size=(n_tf, n_tg)) * (rng.rand(n_tf, n_tg) < 0.5)
Y = np.clip(T @ B + rng.normal(0, 0.5, size=(n, n_tg)) + 2.0, 0, None)
X = np.hstack([T, Y])
tfdict = {g: [tfs[i] for i in range(n_tf) if rng.rand() < 0.7] + ["NotInData"] for g in tgs}
tfdict["Tf0"] = ["Tf1", "Tf2", "Tf0"]  # a TF target (itself removed)
tfdict["Gene5"] = ["Tf3"]  # one regulator: k = max(1, int(0.8)) = 1

a = ad.AnnData(X=X.copy(), obs=pd.DataFrame({"cluster": clusters}, index=[f"c{i}" for i in range(n)]))
a.var_names = genes
a.layers["imputed_count"] = X.copy()


class Stand:  # the two attributes _fit_GRN_for_network_analysis reads from an Oracle
    adata = a
    TFdict = tfdict


links = nc._fit_GRN_for_network_analysis(Stand(), "cluster", alpha=10, bagging_number=20, verbose_level=0, n_jobs=1)
frames = []
for cl, df in links.items():
    df = df.copy()
    df.insert(0, "cluster", str(cl))
    frames.append(df)
pd.concat(frames).reset_index(drop=True).to_parquet(out / "links.parquet")
L = Links(name="cluster", links_dict=links)
L.cluster = list(links.keys())
L.filter_links(p=0.05, weight="coef_abs", threshold_number=5)
frames = []
for cl, df in L.filtered_links.items():
    df = df.copy()
    df.insert(0, "cluster", str(cl))
    frames.append(df)
pd.concat(frames).reset_index(drop=True).to_parquet(out / "filtered.parquet")
np.savez(
    out / "inputs.npz",
    X=X,
    clusters=clusters,
    genes=np.array(genes),
    grn_source=np.array([s for g, ss in tfdict.items() for s in ss]),
    grn_target=np.array([g for g, ss in tfdict.items() for _ in ss]),
)
print("wrote", out)
