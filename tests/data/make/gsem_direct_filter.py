"""Inputs and R outputs of the sumstats(direct_filter=True) parity test (tests/gsem/test_gsem_r_options.py).

    python tests/data/make/gsem_direct_filter.py GENOMICSEM_R_DIR

Writes two synthetic meta-analysis files with a DIRECTION column (cohort signs, "?" = missing,
including 0%, 25%, 50% and 75% missing, an empty and a missing DIRECTION) and a reference panel to
tests/data/gsem/r/direct_filter/, then runs R GenomicSEM's sumstats with direct.filter = TRUE and
FALSE there (gsem_direct_filter.R; GenomicSEM's R code is sourced from GENOMICSEM_R_DIR).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
OUT = HERE.parents[1] / "data" / "gsem" / "r" / "direct_filter"


def main() -> None:
    src = Path(sys.argv[1])
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261202)
    n = 400
    snps = [f"rs{i}" for i in range(n)]
    a1 = rng.choice(["A", "C"], n)
    a2 = np.where(a1 == "A", "G", "T")
    ref = pl.DataFrame(
        {"SNP": snps, "CHR": ["1"] * n, "BP": np.arange(1, n + 1), "MAF": rng.uniform(0.05, 0.5, n).round(4),
         "A1": a1, "A2": a2}
    )  # fmt: skip
    ref.write_csv(OUT / "ref.txt", separator="\t")
    for t in range(2):
        beta = rng.normal(0, 0.02, n)
        se = rng.uniform(0.005, 0.02, n)
        from scipy.stats import norm

        p = 2 * norm.sf(np.abs(beta / se))
        n_cohorts = rng.integers(1, 9, n)
        miss = rng.uniform(0, 1, n)
        direction = []
        for i in range(n):
            k = int(n_cohorts[i])
            n_miss = int(round(miss[i] * k))
            signs = ["?"] * n_miss + [rng.choice(["+", "-"]) for _ in range(k - n_miss)]
            rng.shuffle(signs)
            direction.append("".join(signs))
        direction[0] = "????"
        direction[1] = "++??"  # exactly 50%: removed (R keeps < 0.5)
        direction[2] = "+-+?"  # 25%: kept
        direction[3] = ""  # empty: NA share in R, removed
        frame = pl.DataFrame(
            {"SNP": snps, "A1": a1, "A2": a2, "BETA": beta.round(6), "SE": se.round(6), "P": p, "N": [40000.0] * n,
             "MAF": ref["MAF"], "INFO": rng.uniform(0.7, 1.0, n).round(3), "DIRECTION": direction}
        )  # fmt: skip
        frame.write_csv(OUT / f"dir{t}.txt", separator="\t", null_value="NA")
    for f in ("ref.txt", "dir0.txt", "dir1.txt"):
        subprocess.run(["gzip", "-nf", str(OUT / f)], check=True)
    subprocess.run(["Rscript", str(HERE / "gsem_direct_filter.R"), str(src), str(OUT)], check=True)
    for log in OUT.glob("*.log"):
        log.unlink()


if __name__ == "__main__":
    main()
