"""Benchmark the Genomic SEM sim_ldsc -> ldsc round trip (issue 11: 1M SNPs x 3 traits under a minute).

    python bench/gsem_sim_ldsc.py [--n-snps 1000000] [--traits 3] [--dir /tmp/polgen-bench-simldsc] [--seed 1]

Writes a synthetic LD-score folder once (22 chromosomes, ``L2 ~ Gamma(2, 30)`` to 3 decimals,
``M_5_50`` = 5 x the SNPs; not timed), then times, in this process: ``sim_ldsc`` writing one parquet
file per trait, ``ldsc`` on those files (200 jackknife blocks), and the two together.  Prints the
figures, the recovered S against the simulated covariance (in jackknife SEs) and the load average
before and after, as JSON; ``sim_ldsc_cpu_s`` is the CPU time (all threads) of the ``sim_ldsc`` call.

When the Rust GenomicSEM port is installed at /tmp/genomicsem-ref its ``sim_ldsc`` runs too, in a
subprocess, on the same LD scores.  Its API differs: ``sim_ldsc(s_matrix, n_per_trait, ld_scores,
m, intercepts, r_pheno, n_overlap)`` takes the LD scores as a Python list and ``M`` as a number (it
reads no files, writes none, has no seed) and returns a ``k x n_snps`` array of Z; intercepts are a
``k x k`` matrix (here ``diag(1.02)``), ``r_pheno`` a matrix (0.3 off the diagonal), ``n_overlap`` the
same 0.5.  Its CPU time covers the call only (list conversion included, file reading not: the LD
scores are handed over as a ``.npy``); its Z are written as munged frames and go through polgen's
``ldsc`` like polgen's own, so both are judged by the issue's criterion (the recovered S within 3
jackknife SEs of the simulated covariance).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import polars as pl

REF_PY = Path(os.environ.get("GENOMICSEM_REF", "/tmp/genomicsem-ref")) / "bin" / "python"

_REF_SCRIPT = r"""
import json, sys, resource
import numpy as np
import genomicsem as gs
cfg = json.loads(sys.argv[1])
l2 = np.load(cfg["l2"])
k = len(cfg["N"])
rp = np.full((k, k), cfg["r_pheno"]); np.fill_diagonal(rp, 1.0)
r0 = resource.getrusage(resource.RUSAGE_SELF)
z = gs.sim_ldsc(np.asarray(cfg["S"]), list(cfg["N"]), l2.tolist(), float(cfg["M"]), np.diag([cfg["intercept"]] * k), rp,
                float(cfg["n_overlap"]))
r1 = resource.getrusage(resource.RUSAGE_SELF)
np.save(cfg["z"], np.asarray(z))
print(json.dumps({"cpu": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime), "maxrss_mb": r1.ru_maxrss / 1024}))
"""


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
    ap.add_argument("--no-reference", action="store_true", help="skip the Rust port")
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
    c0 = time.process_time()
    sims = sim_ldsc(S, N, ld, r_pheno=0.3, intercepts=1.02, n_overlap=0.5, seed=a.seed, out=out)
    sim_cpu = time.process_time() - c0
    t1 = time.perf_counter()
    cs = ldsc({t: str(p) for t, p in sims[0].paths.items()}, ld)
    t2 = time.perf_counter()
    load_after = os.getloadavg()
    z = (vech(cs.S) - vech(S)) / np.sqrt(np.diag(cs.V))
    report = {
        "n_snps": a.n_snps,
        "traits": k,
        "sim_ldsc_s": round(t1 - t0, 2),
        "sim_ldsc_cpu_s": round(sim_cpu, 2),
        "ldsc_s": round(t2 - t1, 2),
        "round_trip_s": round(t2 - t0, 2),
        "max_abs_z_recovered": round(float(np.max(np.abs(z))), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
    }
    print(json.dumps(report))
    if REF_PY.exists() and not a.no_reference:
        print(json.dumps(reference(ld, S, N, cs, base, sims)))
    return 0


def reference(ld: Path, S: np.ndarray, N: np.ndarray, polgen_cs, base: Path, sims) -> dict:
    """The port's sim_ldsc on the same LD scores; its Z through polgen's ldsc."""
    from polgen.gsem import ldsc
    from polgen.gsem.matrix import vech

    first = next(iter(sims[0].paths.values()))
    snps = pl.scan_parquet(first).select("SNP", "L2").collect()  # polgen's SNP order and L2
    M = sum(float((ld / f"{c}.l2.M_5_50").read_text().split()[0]) for c in range(1, 23))
    np.save(base / "l2.npy", snps["L2"].to_numpy().astype(np.float64))
    cfg = {"l2": str(base / "l2.npy"), "z": str(base / "z_port.npy"), "S": S.tolist(), "N": N.tolist(), "M": M,
           "intercept": 1.02, "r_pheno": 0.3, "n_overlap": 0.5}  # fmt: skip
    p = subprocess.run([str(REF_PY), "-c", _REF_SCRIPT, json.dumps(cfg)], capture_output=True, text=True)
    if p.returncode:
        return {"port_error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    ref = json.loads(p.stdout.strip().splitlines()[-1])
    z = np.load(base / "z_port.npy")
    frames = {
        f"GWAS{t + 1}": pl.DataFrame(
            {"SNP": snps["SNP"], "N": np.full(z.shape[1], N[t]), "Z": z[t], "A1": "A", "A2": "G"}
        )
        for t in range(z.shape[0])
    }
    cs = ldsc(frames, ld)
    zs = (vech(cs.S) - vech(S)) / np.sqrt(np.diag(cs.V))
    return {
        "port_sim_ldsc_cpu_s": round(ref["cpu"], 2),
        "port_peak_rss_mb": round(ref["maxrss_mb"]),
        "port_max_abs_z_recovered": round(float(np.max(np.abs(zs))), 2),
        "port_recovered_diag_I": np.round(np.diag(cs.I), 3).tolist(),
        "polgen_recovered_diag_I": np.round(np.diag(polgen_cs.I), 3).tolist(),
        "port_recovered_offdiag_I": round(float(cs.I[0, 1]), 3),
        "polgen_recovered_offdiag_I": round(float(polgen_cs.I[0, 1]), 3),
    }


if __name__ == "__main__":
    raise SystemExit(main())
