"""Produce the stored R reference of the LFMM tests (tests/data/lfmm/r/) once, with R.

    python tests/data/make/lfmm_r.py [--out DIR]

Writes Y.csv (genotypes of the first 60 SNPs of tests/test_lfmm.py's ``small`` simulation, mean-
imputed, monomorphic SNPs dropped), X.csv (its two covariates), U.csv (the latent factors polgen's
``lfmm.fit(X, Y, 3, power_iter=4)`` gave for them) and runs lfmm_lm.R (base R ``lm``) on them:
lm.csv (t of X1, t of X2, F, adjusted R^2 per SNP).  Needs ``Rscript``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "lfmm" / "r" / "lm")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    import polgen.lfmm as L
    from test_lfmm import impute, simulate

    # tests/test_lfmm.py's ``small`` fixture
    Y, X, _ = simulate(150, 1200, K=3, fst=0.3, n_causal=20, missing=0.01, d=2, seed=3, alpha=0.2, x_noise=0.5)
    Y[:, 7] = 2.0
    Y[:, 11] = np.where(np.isnan(Y[:, 11]), np.nan, 0.0)
    Y = impute(Y)[:, :60]
    Y = Y[:, Y.std(0) > 0]
    model = L.fit(X, Y, 3, power_iter=4)
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    for name, m in (("Y", Y), ("X", X), ("U", model.U)):
        np.savetxt(out / f"{name}.csv", m, delimiter=",", fmt="%.17g")
    res = subprocess.run(["Rscript", str(HERE / "lfmm_lm.R"), str(out)], capture_output=True, text=True, timeout=600)
    if res.returncode:
        sys.exit(res.stderr[-3000:])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
