"""Benchmark the Genomic SEM sim_ldsc -> ldsc round trip (issue 11: 1M SNPs x 3 traits under a minute).

    python bench/gsem_sim_ldsc.py [--n-snps 1000000] [--traits 3] [--dir /tmp/polgen-bench-simldsc] [--seed 1]

Writes a synthetic LD-score folder once (22 chromosomes, ``L2 ~ Gamma(2, 30)`` to 3 decimals,
``M_5_50`` = 5 x the SNPs; not timed), then times, in this process: ``sim_ldsc`` writing one parquet
file per trait, ``ldsc`` on those files (200 jackknife blocks), and the two together.  Prints the
figures, the recovered S against the simulated covariance (in jackknife SEs) and the load average
before and after, as JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl


def make_ld(d: Path, n_snps: int, seed: int = 0) -> Path:
    """22 chromosomes of synthetic LD scores (skipped when the folder already holds them)."""
    if (d / "22.l2.M_5_50").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per = np.full(22, n_snps // 22)
    per[: n_snps - per.sum()] += 1
    for c, n in enumerate(per, start=1):
        df = pl.DataFrame(
            {
                "CHR": np.full(n, c),
                "SNP": [f"rs{c}_{i}" for i in range(n)],
                "BP": np.arange(n, dtype=np.int64) * 50 + 1,
                "L2": np.round(rng.gamma(2.0, 30.0, n), 3),
            }
        )
        with gzip.open(d / f"{c}.l2.ldscore.gz", "wb", compresslevel=1) as fh:
            df.write_csv(fh, separator="\t")
        (d / f"{c}.l2.M_5_50").write_text(f"{int(n) * 5}\n")
    return d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-snps", type=int, default=1_000_000)
    ap.add_argument("--traits", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/polgen-bench-simldsc")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)

    from polgen.gsem import ldsc, sim_ldsc
    from polgen.gsem.matrix import vech

    base = Path(a.dir)
    ld = make_ld(base / f"ld_{a.n_snps}", a.n_snps)
    k = a.traits
    lam = np.linspace(0.9, 0.5, k)
    S = np.outer(lam, lam) * 0.1
    np.fill_diagonal(S, 0.1)
    N = np.linspace(50_000, 300_000, k)
    out = base / "sim"
    shutil.rmtree(out, ignore_errors=True)
    # first calls compile/load the numba kernels: warm them on a small run, not timed
    sim_ldsc(S, N, ld, r_pheno=0.3, n_overlap=0.5, seed=0, chr=1)

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    sims = sim_ldsc(S, N, ld, r_pheno=0.3, intercepts=1.02, n_overlap=0.5, seed=a.seed, out=out)
    t1 = time.perf_counter()
    cs = ldsc({t: str(p) for t, p in sims[0].paths.items()}, ld)
    t2 = time.perf_counter()
    load_after = os.getloadavg()
    z = (vech(cs.S) - vech(S)) / np.sqrt(np.diag(cs.V))
    report = {
        "n_snps": a.n_snps,
        "traits": k,
        "sim_ldsc_s": round(t1 - t0, 2),
        "ldsc_s": round(t2 - t1, 2),
        "round_trip_s": round(t2 - t0, 2),
        "max_abs_z_recovered": round(float(np.max(np.abs(z))), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
