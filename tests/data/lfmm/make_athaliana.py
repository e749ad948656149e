"""Make tests/data/lfmm/athaliana/: a real genotype subset from the R package lfmm's example data.

    python tests/data/lfmm/make_athaliana.py path/to/example.data.rda

``example.data.rda`` is ``data/example.data.rda`` of the lfmm R package (GitHub bcm-uga/lfmm,
GPL-3): 170 A. thaliana accessions x 26,943 SNPs coded 0/1, a simulated phenotype and the
chromosome/position of each SNP.  R (base only) reads the .rda; this script keeps every second SNP
(13,472 SNPs, genome-wide, so the spectrum stays as flat as the full data's) and writes them as a
PLINK .bed (dosage 0/1 = count of A1; no missing calls), plus the phenotype as the environment.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from bed_reader import to_bed

OUT = Path(__file__).resolve().parent / "athaliana"
THIN = 2  # keep SNPs 0, 2, 4, ... (1-based 1, 3, 5, ...)


def main(rda: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        r = (
            f'load("{Path(rda).resolve()}"); d <- example.data; '
            f'write.table(d$genotype, "{t}/g.tsv", sep="\\t", row.names=FALSE, col.names=FALSE); '
            f'writeLines(sprintf("%.17g", d$phenotype[, 1]), "{t}/x.tsv"); '
            f'write.table(d$chrpos, "{t}/cp.tsv", sep="\\t", row.names=FALSE, col.names=FALSE)'
        )
        subprocess.run(["Rscript", "-e", r], check=True)
        G = np.loadtxt(t / "g.tsv", dtype=np.int8)
        x = np.loadtxt(t / "x.tsv", dtype=np.float64)
        cp = np.loadtxt(t / "cp.tsv", dtype=np.float64)
    assert G.shape == (170, 26943) and set(np.unique(G)) <= {0, 1}
    keep = np.arange(0, G.shape[1], THIN)
    G, cp = G[:, keep], cp[keep]
    n, p = G.shape
    ids = [f"acc{i + 1}" for i in range(n)]
    OUT.mkdir(exist_ok=True)
    to_bed(
        OUT / "athaliana.bed",
        G.astype(np.float32),
        properties={
            "fid": ids,
            "iid": ids,
            "sid": [f"snp{j + 1}" for j in keep],  # 1-based column of example.data$genotype
            "chromosome": [str(int(c)) for c in cp[:, 0]],
            "bp_position": cp[:, 1].astype(np.int64),
            "allele_1": ["A"] * p,
            "allele_2": ["B"] * p,
        },
    )
    pl.DataFrame({"IID": ids, "phenotype": x}).write_csv(OUT / "athaliana.env.tsv", separator="\t", float_precision=17)
    print(f"wrote {n} x {p} to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
