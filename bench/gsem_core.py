"""Benchmark polgen's Genomic SEM data preparation: munge, ldsc, sumstats.

    python bench/gsem_core.py [--n-snps 1000000] [--dir /tmp/polgen-bench-gsem] [--no-reference]

Generates the demo's 3 traits (``polgen.demo.make_gsem_demo``: three file layouts, LD scores over
22 chromosomes) with ``--n-snps`` SNPs, then times polgen's munge (writing parquet), ldsc (200
jackknife blocks) and sumstats (writing parquet).  When the Rust port of GenomicSEM is installed
at /tmp/genomicsem-ref (``../shared/tools/install-genomicsem-reference.sh``), its munge / ldsc /
sumstats run on the same files in a subprocess and the ratios and the largest S difference are
printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REF_PY = Path(os.environ.get("GENOMICSEM_REF", "/tmp/genomicsem-ref")) / "bin" / "python"

_REF_SCRIPT = r"""
import json, sys, time, os
import genomicsem as gs
cfg = json.loads(sys.argv[1])
out = {}
os.makedirs(cfg["dir"], exist_ok=True)
t = time.perf_counter()
gs.munge(files=cfg["files"], hm3=cfg["hm3"], trait_names=cfg["traits"], out=cfg["dir"])
out["munge"] = time.perf_counter() - t
munged = [os.path.join(cfg["dir"], f"{x}.sumstats.gz") for x in cfg["traits"]]
t = time.perf_counter()
res = gs.ldsc(traits=munged, sample_prev=[None] * len(munged), population_prev=[None] * len(munged),
              ld=cfg["ld"], wld=cfg["ld"], trait_names=cfg["traits"])
out["ldsc"] = time.perf_counter() - t
out["S"] = [list(map(float, r)) for r in res.s]
out["V"] = [list(map(float, r)) for r in res.v]
t = time.perf_counter()
try:
    gs.sumstats(files=cfg["files"], ref_dir=cfg["ref"], trait_names=cfg["traits"], se_logit=cfg["se_logit"],
                ols=cfg["ols"], linprob=cfg["linprob"], out=os.path.join(cfg["dir"], "merged.tsv"))
    out["sumstats"] = time.perf_counter() - t
except Exception as exc:  # report, do not hide
    out["sumstats_error"] = repr(exc)
print(json.dumps(out))
"""


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-snps", type=int, default=1_000_000)
    ap.add_argument("--dir", default=None, help="working directory (default: a temp dir)")
    ap.add_argument("--no-reference", action="store_true", help="skip the Rust port comparison")
    args = ap.parse_args(argv)
    os.environ.setdefault("POLGEN_PROGRESS", "0")

    from polgen.demo import make_gsem_demo
    from polgen.gsem.ldsc import ldsc
    from polgen.gsem.munge import munge
    from polgen.gsem.sumstats import sumstats

    work = Path(args.dir or tempfile.mkdtemp(prefix="polgen-bench-gsem-"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    d = make_gsem_demo(work / "data", n_snps=args.n_snps)
    t_gen = time.perf_counter() - t
    print(f"generated 3 traits x {args.n_snps:,} SNPs in {t_gen:.1f}s under {work}")

    times: dict[str, float] = {}
    t = time.perf_counter()
    munged, drops = munge(d.sumstats, d.hm3, trait_names=d.trait_names, out=work / "munged")
    times["munge"] = time.perf_counter() - t
    t = time.perf_counter()
    cs = ldsc(munged, d.ld, trait_names=d.trait_names)
    times["ldsc"] = time.perf_counter() - t
    t = time.perf_counter()
    lf = sumstats(
        d.sumstats,
        d.reference,
        trait_names=d.trait_names,
        se_logit=d.se_logit,
        OLS=d.OLS,
        linprob=d.linprob,
        out=work / "sumstats.parquet",
    )
    times["sumstats"] = time.perf_counter() - t
    n_out = lf.select("SNP").collect().height
    rss = _rss_mb()

    print(f"\npolgen (3 traits x {args.n_snps:,} SNPs; peak RSS {rss:.0f} MB)")
    for k, v in times.items():
        print(f"  {k:<9} {v:8.2f} s")
    print(f"  sumstats rows: {n_out:,}")
    print("  S =", np.array2string(cs.S, precision=4).replace("\n", "\n      "))
    print("  S_true =", np.array2string(d.S_true, precision=4).replace("\n", "\n           "))

    if not args.no_reference and REF_PY.exists():
        # the port cannot read comma-separated files: give it a tab-separated copy of those
        port_files = []
        (work / "ref").mkdir(parents=True, exist_ok=True)
        for p in d.sumstats:
            if p.name.endswith((".csv", ".csv.gz")):
                import gzip

                import polars as pl

                tab = work / "ref" / (p.name.split(".")[0] + ".tsv.gz")
                with gzip.open(tab, "wb", compresslevel=1) as fh:
                    fh.write(pl.read_csv(p, infer_schema=False).write_csv(separator="\t").encode())
                port_files.append(str(tab))
            else:
                port_files.append(str(p))
        cfg = {
            "files": port_files,
            "hm3": str(d.hm3),
            "traits": d.trait_names,
            "ld": str(d.ld) + "/",
            "ref": str(d.reference),
            "dir": str(work / "ref"),
            "se_logit": d.se_logit,
            "ols": d.OLS,
            "linprob": d.linprob,
        }
        proc = subprocess.run(
            [str(REF_PY), "-c", _REF_SCRIPT, json.dumps(cfg)], capture_output=True, text=True, timeout=3600
        )
        if proc.returncode != 0:
            print("\nRust port failed:\n" + proc.stderr[-2000:])
        else:
            ref = json.loads(proc.stdout.strip().splitlines()[-1])
            print("\nRust port genomicsem 0.2.0 (subprocess)")
            for k in times:
                if k in ref:
                    print(f"  {k:<9} {ref[k]:8.2f} s   polgen/port time ratio {times[k] / ref[k]:.2f}")
                else:
                    print(f"  {k:<9} failed: {ref.get(k + '_error')}")
            S_ref = np.array(ref["S"])
            V_ref = np.array(ref["V"])
            print(
                f"  max |S_polgen - S_port| = {np.abs(cs.S - S_ref).max():.3g} "
                f"(max |S| {np.abs(S_ref).max():.3g}); "
                f"max rel. diff of diag(V) = {np.max(np.abs(np.diag(cs.V) / np.diag(V_ref) - 1)):.3g}"
            )
    elif not args.no_reference:
        print(f"\n(Rust port not found at {REF_PY}; skipped the comparison)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
