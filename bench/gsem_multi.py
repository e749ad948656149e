"""Benchmark Genomic SEM's multi-SNP model and per-SNP matrices: multi_snp / add_snps.

    python bench/gsem_multi.py                          # multi_snp 10 SNPs; add_snps 1M streamed (+ 200k)
    python bench/gsem_multi.py --snps 2000000 --rss-snps 500000
    python bench/gsem_multi.py --r-dir /tmp/gsemR/R     # also R's multiSNP + usermodel on the same 10 SNPs

* ``multi_snp``: 10 SNPs x 3 traits with a 10 x 10 LD matrix (AR(1), r = 0.4^|i-j|, one allele
  flipped): building S_full (13 x 13) and V_full (91 x 91) alone, and with a one-factor model
  ``F1 =~ T1 + T2 + T3; F1 ~ rs1 + ... + rs10`` fitted by DWLS and by ML (median of repeats, after
  one warm call; the first call's compile time is printed separately).
* ``add_snps``: synthetic sumstats (3 traits) streamed through the run-folder sink (``out=``,
  batches of 50,000 SNPs), each size in its own subprocess: wall time including reading
  the parquet input and writing the parquet output, SNPs/s, and peak RSS (``wait4``), at two sizes
  to show that memory stays flat.

Each figure is printed with the 1-minute load average before it ran; on this shared 2-core
machine a figure taken at a load above ~1.5 is not a quiet-machine figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gsem_gwas import covstruc, generate  # noqa: E402  (bench/ is a folder of scripts)

N_MULTI = 10


def multi_inputs(f: int = N_MULTI):
    import polars as pl

    rng = np.random.default_rng(5)
    lam = np.array([0.55, 0.45, 0.6])
    eff = rng.normal(0, 0.02, f)
    names = [f"rs{i + 1}" for i in range(f)]
    snps = {"SNP": names, "MAF": rng.uniform(0.1, 0.45, f), "A1": ["A"] * f, "A2": ["G"] * f}
    for t in range(3):
        snps[f"beta.T{t + 1}"] = lam[t] * eff + rng.normal(0, 0.003, f)
        snps[f"se.T{t + 1}"] = rng.uniform(0.004, 0.008, f)
    idx = np.arange(f)
    ld = 0.4 ** np.abs(idx[:, None] - idx[None, :])
    ld_names = [f"{n}_A_G" for n in names]
    ld_names[3] = "rs4_G_A"  # rs4 has the other allele first: its LD changes sign
    model = "F1 =~ T1 + T2 + T3\nF1 ~ " + " + ".join(names)
    return covstruc(3), pl.DataFrame(snps), (ld, ld_names), model


def bench_multi(repeats: int) -> None:
    from polgen.gsem import multi_snp

    cs, snps, ld, model = multi_inputs()
    load = os.getloadavg()[0]
    t = time.perf_counter()
    multi_snp(cs, snps, ld, model=model)
    first = time.perf_counter() - t
    print(f"multi_snp {N_MULTI} SNPs x 3 traits: first call (compiles) {first:.2f} s  load {load:.2f}", flush=True)
    for label, kw in (("build only", {}), ("build + DWLS fit", {"model": model}), ("build + ML fit", {"model": model})):
        if label.endswith("ML fit"):
            kw = {**kw, "estimation": "ML"}
        multi_snp(cs, snps, ld, **kw)
        times = []
        load = os.getloadavg()[0]
        for _ in range(repeats):
            t = time.perf_counter()
            res = multi_snp(cs, snps, ld, **kw)
            times.append(time.perf_counter() - t)
        extra = ""
        if res.fit is not None:
            extra = f"  converged={res.fit.converged} chisq={float(res.fit.fit_all['chisq'][0]):.4g}"
        print(
            f"multi_snp {N_MULTI} SNPs {label:18s} median {1e3 * np.median(times):8.2f} ms "
            f"(min {1e3 * min(times):.2f}, {repeats} runs)  load {load:.2f}{extra}",
            flush=True,
        )


def bench_multi_r(rdir: str, work: Path) -> None:
    """R's multiSNP + usermodel (DWLS) on the same inputs, timed inside R."""
    cs, snps, ld, model = multi_inputs()
    d = {
        "S": cs["S"],
        "V": cs["V"],
        "I": cs["I"],
        "traits": cs["trait_names"],
        "snps": snps.to_dict(as_series=False),
        "ld": ld[0].tolist(),
        "ld_names": ld[1],
        "model": model,
    }
    (work / "multi_in.json").write_text(json.dumps(d))
    code = f"""
suppressMessages({{library(lavaan); library(Matrix); library(jsonlite); library(dplyr)
                   library(stringr); library(gdata)}})
for (f in c("utils.R", "utils_sanitychecks.R", "multiSNP.R", "usermodel.R")) source(file.path("{rdir}", f))
d <- fromJSON("{work / "multi_in.json"}")
S <- as.matrix(d$S); colnames(S) <- d$traits
LD <- as.matrix(d$ld); rownames(LD) <- colnames(LD) <- d$ld_names
x <- as.data.frame(d$snps, stringsAsFactors = FALSE)
cv <- list(V = as.matrix(d$V), S = S, I = as.matrix(d$I))
t1 <- system.time(capture.output(r <- suppressWarnings(multiSNP(cv, x, LD))))[["elapsed"]]
t2 <- system.time(capture.output(f <- suppressWarnings(usermodel(list(r$V_Full, r$S_Full),
                                                                 model = d$model))))[["elapsed"]]
cat(t1, t2, "\\n")
"""
    load = os.getloadavg()[0]
    res = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True)
    if res.returncode:
        print(f"R multiSNP failed: {res.stderr[-400:]}")
        return
    t1, t2 = (float(x) for x in res.stdout.split()[-2:])
    print(f"R multiSNP {N_MULTI} SNPs: build {t1:.2f} s, usermodel DWLS {t2:.2f} s  load {load:.2f}", flush=True)


def run_child(data: str, cov: str, out: str) -> None:
    """Inside the measured subprocess: add_snps streamed through the sink."""
    import polars as pl

    from polgen.gsem import add_snps

    t = time.perf_counter()
    lf = add_snps(cov, data, out=out, progress=False)
    wall = time.perf_counter() - t
    n, bad = lf.select(pl.len(), (~pl.col("valid")).sum()).collect().row(0)
    print(json.dumps({"wall": wall, "rows": n, "invalid": bad}))


def measure(args: list[str]) -> tuple[dict, float]:
    proc = subprocess.Popen(
        [sys.executable, __file__, *args],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, POLGEN_PROGRESS="0"),
        cwd=str(ROOT),
    )
    _, status, ru = os.wait4(proc.pid, 0)
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    if status != 0:
        raise RuntimeError(f"benchmark child failed ({status}): {out}")
    return json.loads(out.strip().splitlines()[-1]), ru.ru_maxrss / 1024.0


def bench_add(work: Path, sizes: list[int]) -> None:
    cj = work / "cov_k3.json"
    cj.write_text(json.dumps(covstruc(3)))
    # a first small run compiles the kernels into the numba cache (not timed)
    small = work / "sumstats_k3_n1000.parquet"
    generate(small, 1000, 3)
    _, base = measure(["--child", str(small), str(cj), str(work / "warm")])
    print(f"add_snps baseline: peak RSS of the same process on 1,000 SNPs {base:.0f} MB (imports, numba)", flush=True)
    for n in sizes:
        data = work / f"sumstats_k3_n{n}.parquet"
        if not data.exists():
            generate(data, n, 3)
        out = work / f"add_{n}"
        shutil.rmtree(out, ignore_errors=True)
        load = os.getloadavg()[0]
        res, rss = measure(["--child", str(data), str(cj), str(out)])
        size = sum(p.stat().st_size for p in out.glob("*.parquet")) / 1e6
        print(
            f"add_snps {n:>9,d} SNPs x 3 traits streamed: {res['wall']:6.2f} s  {n / res['wall']:>10,.0f} SNPs/s  "
            f"peak RSS {rss:6.0f} MB  output {size:.0f} MB  invalid {res['invalid']}  load {load:.2f}",
            flush=True,
        )
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        run_child(*sys.argv[2:5])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--snps", type=int, default=1_000_000, help="add_snps size (default: %(default)s)")
    ap.add_argument("--rss-snps", type=int, default=200_000, help="smaller add_snps size for the memory comparison")
    ap.add_argument("--repeats", type=int, default=20, help="multi_snp repeats (default: %(default)s)")
    ap.add_argument("--r-dir", default=None, help="GenomicSEM R/ directory: also time R's multiSNP + usermodel")
    ap.add_argument("--only", choices=["multi", "add"], default=None, help="run one part only")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="polgen_bench_multi_") as tmp:
        work = Path(tmp)
        if a.only in (None, "multi"):
            bench_multi(a.repeats)
            if a.r_dir:
                bench_multi_r(a.r_dir, work)
        if a.only in (None, "add"):
            bench_add(work, sorted({a.rss_snps, a.snps}))


if __name__ == "__main__":
    main()
