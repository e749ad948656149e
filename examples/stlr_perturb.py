"""SpaceTravLR: train spatial GRN betas per cluster, then knock a TF out in silico.

python examples/stlr_perturb.py [OUTDIR]
"""

import sys
from pathlib import Path

import numpy as np

from polgen import stlr
from polgen.demo import make_stlr_demo
from polgen.io.spatial import read_spatial

out = Path(sys.argv[1] if len(sys.argv) > 1 else "example-stlr")
demo = make_stlr_demo(out / "inputs", small=True)
common = dict(
    lr=str(demo.lr),
    radius=demo.radius,
    contact_distance=demo.contact_distance,
    layer=demo.layer,
    cluster_key=demo.cluster_key,
)

fitted = stlr.fit(str(demo.h5ad), demo.targets, out=out / "betadata", grn=str(demo.grn_links), overwrite=True, **common)
print(fitted.scores.head())

tf = demo.tfs[0]
simulated = stlr.perturb(str(demo.h5ad), str(out / "betadata"), tf, 0.0, n_propagation=4, **common)
before = read_spatial(demo.h5ad, layer=demo.layer, cluster_key=demo.cluster_key)
after = simulated.select(demo.targets).to_numpy()
change = np.abs(after - before.X[:, before.gene_index(demo.targets)]).mean(axis=0)
for gene, d in sorted(zip(demo.targets, change), key=lambda x: -x[1])[:5]:
    print(f"{tf} knock-out moves {gene} by {d:.3f} on average")
