"""LFMM2 genotype-environment scan streamed from a PLINK .bed.

python examples/lfmm_scan.py [OUTDIR]
"""

import sys
from pathlib import Path

import polars as pl

import polgen  # noqa: F401  (registers df.lfmm)
from polgen.demo import make_lfmm_demo

out = Path(sys.argv[1] if len(sys.argv) > 1 else "example-lfmm")
demo = make_lfmm_demo(out / "inputs", small=True)

env = pl.read_csv(demo.env, separator="\t").select("IID", "env")
model = env.lfmm.fit(str(demo.bed), K=demo.K - 1, est_rate=0.5, seed=1)  # K populations: K - 1 axes
result = env.lfmm.test(model, str(demo.bed), calibrate="gif", out=out / "lfmm", overwrite=True)
print("genomic inflation:", result.gif)

hits = (
    result.frame.lazy()
    .filter(pl.col("P_CALIBRATED") < 0.05 / demo.p)
    .select("CHR", "SNP", "BP", "BETA", "T", "P_CALIBRATED")
    .collect()
)
causal = set(demo.causal.tolist())
print(hits)
print(f"{hits.height} Bonferroni hits; the demo simulated {len(causal)} causal loci")
