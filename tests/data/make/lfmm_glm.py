"""Produce tests/data/lfmm/r/glm/ once: per-locus R glm() fits with LFMM latent factors as covariates.

    python tests/data/make/lfmm_glm.py [--out DIR]

Two sets, each with Y (loci in columns; NA = missing), X and U (polgen's ``lfmm.fit`` factors,
stored so that R and the test use the same covariates):

* ``ath``: 200 polymorphic 0/1 SNPs of tests/data/lfmm/athaliana (the first 200 after skipping
  monomorphic ones), X = its phenotype, U of a K=6 fit on all its SNPs; logistic regression
  (``binomial1``) and Poisson (``poisson1``);
* ``sim``: 150 diploid samples x 200 dosages (0/1/2) from 3 admixed populations with 1% missing
  calls, 2 covariates, U of a K=3 fit; Poisson (``poisson1``) and binomial with 2 trials
  (``binomial2``: ``cbind(y, 2 - y)``).

then runs lfmm_glm.R (base R glm).  Needs ``Rscript``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
ATH = ROOT / "tests" / "data" / "lfmm" / "athaliana" / "athaliana"


def _write(out: Path, name: str, m: np.ndarray) -> None:
    rows = [",".join("NA" if np.isnan(v) else f"{v:.17g}" for v in r) for r in np.atleast_2d(m)]
    (out / f"{name}.csv").write_text("\n".join(rows) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "lfmm" / "r" / "glm")
    a = ap.parse_args(argv)
    from bed_reader import open_bed

    import polgen.lfmm as L

    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    env = pl.read_csv(ATH.with_name("athaliana.env.tsv"), separator="\t")
    with open_bed(ATH.with_suffix(".bed")) as ob:
        Y = ob.read(dtype="float64")
    model = L.fit(env, str(ATH.with_suffix(".bed")), 6, progress=False)
    poly = np.flatnonzero(Y.std(0) > 0)[:200]
    _write(out, "ath_Y", Y[:, poly])
    _write(out, "ath_X", env["phenotype"].to_numpy()[:, None])
    _write(out, "ath_U", model.U)

    rng = np.random.default_rng(11)
    n, p = 150, 200
    anc = rng.dirichlet(np.full(3, 0.5), size=n)
    base = rng.uniform(0.1, 0.9, size=p)
    freq = np.clip(base + 0.25 * rng.standard_normal((3, p)), 0.02, 0.98)
    X = np.c_[anc[:, 0] + 0.3 * rng.standard_normal(n), rng.standard_normal(n)]
    f = np.clip(anc @ freq + 0.05 * X[:, :1] * (np.arange(p) < 20), 0.01, 0.99)
    G = rng.binomial(2, f).astype(float)
    G[rng.uniform(size=G.shape) < 0.01] = np.nan
    model = L.fit(X, G, 3, progress=False)
    _write(out, "sim_Y", G)
    _write(out, "sim_X", X)
    _write(out, "sim_U", model.U)
    for set_, fam, t in (("ath", "binomial", 1), ("ath", "poisson", 1), ("sim", "poisson", 1), ("sim", "binomial", 2)):
        r = subprocess.run(
            ["Rscript", str(HERE / "lfmm_glm.R"), str(out), set_, fam, str(t)], capture_output=True, text=True
        )
        if r.returncode:
            sys.exit(r.stderr[-3000:])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
