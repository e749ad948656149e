"""Benchmark: out-of-core LFMM2 on a synthetic PLINK .bed vs bed-reader's decode and plink2 --glm.

    python bench/lfmm.py                      # n=2000, p=200k, with and without 0.2% missing
    python bench/lfmm.py --n 1000 --p 50000   # quicker
    python bench/lfmm.py --memory             # peak RSS of fit+test at p and 10 p (subprocesses)
    python bench/lfmm.py --memory --path spill   # ... of the spilled calibrated path (or nocal)
    python bench/lfmm.py --reps 5             # fastest of 5 runs per step (for a loaded machine)

For each file it times: bed-reader reading the whole file in SNP chunks (float64), polgen's
``lfmm.fit`` (est_rate=0.05), ``lfmm.test`` (the fused pass + calibration, written to parquet)
and ``plink2 --glm`` with the same phenotype (X) and covariates (U), then prints SNPs/s and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

# code per genotype: number of A1 alleles 2 -> 00, 1 -> 10, 0 -> 11, missing -> 01
_CODES = np.array([3, 2, 0, 1], dtype=np.uint8)  # index: a1 count 0,1,2, 3 = missing


def write_synthetic_bed(
    prefix: Path,
    n: int,
    p: int,
    *,
    missing: float = 0.0,
    seed: int = 0,
    chunk: int = 20000,
    tile: int = 1,
    pops: int = 2,
) -> None:
    """A .bed/.bim/.fam with ``pops`` populations (Fst ~0.05) and HWE genotypes; ``tile`` repeats the
    genotype block (fast way to make a big file for the memory benchmark).  ``pops`` populations
    span ``pops - 1`` axes: a K-factor fit needs ``pops = K + 1`` to fit structure, not noise."""
    rng = np.random.default_rng(seed)
    pop = (np.arange(n) * pops // n).astype(np.int64)
    nbytes = (n + 3) // 4
    with open(prefix.with_suffix(".bed"), "wb") as fh:
        fh.write(b"\x6c\x1b\x01")
        blocks = []
        for a in range(0, p, chunk):
            b = min(p, a + chunk)
            base = rng.uniform(0.05, 0.95, b - a)
            f = np.clip(base[None, :] + rng.normal(0, 0.05, (pops, b - a)), 0.01, 0.99)[pop]  # n x k
            u1 = rng.random((n, b - a), dtype=np.float32)
            u2 = rng.random((n, b - a), dtype=np.float32)
            g = (u1 < f).astype(np.uint8) + (u2 < f).astype(np.uint8)
            if missing:
                g[rng.random((n, b - a), dtype=np.float32) < missing] = 3
            codes = _CODES[g.T]  # k x n
            pad = nbytes * 4 - n
            if pad:
                codes = np.concatenate([codes, np.zeros((codes.shape[0], pad), np.uint8)], axis=1)
            c = codes.reshape(codes.shape[0], nbytes, 4)
            packed = (c[:, :, 0] | (c[:, :, 1] << 2) | (c[:, :, 2] << 4) | (c[:, :, 3] << 6)).astype(np.uint8)
            if tile > 1:
                blocks.append(packed)
            fh.write(packed.tobytes())
        for _ in range(tile - 1):
            for packed in blocks:
                fh.write(packed.tobytes())
    total = p * tile
    ids = [f"i{i}" for i in range(n)]
    pl.DataFrame({"FID": ids, "IID": ids, "P": ["0"] * n, "M": ["0"] * n, "S": ["0"] * n, "PH": ["-9"] * n}).write_csv(
        prefix.with_suffix(".fam"), separator=" ", include_header=False
    )
    j = np.arange(total)
    pl.DataFrame(
        {
            "CHR": ["1"] * total,
            "SNP": pl.Series(j).cast(pl.String),
            "CM": ["0"] * total,
            "BP": j + 1,
            "A1": ["A"] * total,
            "A2": ["G"] * total,
        }
    ).with_columns(("rs" + pl.col("SNP")).alias("SNP")).write_csv(
        prefix.with_suffix(".bim"), separator="\t", include_header=False
    )
    # the environment: population + noise
    env = pl.DataFrame({"IID": ids, "temp": pop + rng.normal(0, 1, n)})
    env.write_csv(prefix.with_name(prefix.name + ".env.tsv"), separator="\t")


def write_random_bed(prefix: Path, n: int, p: int, *, seed: int = 0, chunk: int = 50000) -> None:
    """A fast .bed of independent genotypes (codes uniform over hom/het/hom, no missing) for
    memory measurements: random bytes with the missing code 01 mapped to 10."""
    rng = np.random.default_rng(seed)
    lut = np.arange(256, dtype=np.uint8)
    for k in range(4):
        sel = ((lut >> (2 * k)) & 3) == 1
        lut[sel] = lut[sel] ^ np.uint8(3 << (2 * k))  # 01 -> 10
    nbytes = (n + 3) // 4
    with open(prefix.with_suffix(".bed"), "wb") as fh:
        fh.write(b"\x6c\x1b\x01")
        for a in range(0, p, chunk):
            k = min(chunk, p - a)
            fh.write(lut[rng.integers(0, 256, size=k * nbytes, dtype=np.uint8)].tobytes())
    ids = [f"i{i}" for i in range(n)]
    pl.DataFrame({"FID": ids, "IID": ids, "P": ["0"] * n, "M": ["0"] * n, "S": ["0"] * n, "PH": ["-9"] * n}).write_csv(
        prefix.with_suffix(".fam"), separator=" ", include_header=False
    )
    j = pl.int_range(0, p, eager=True)
    pl.DataFrame(
        {
            "CHR": pl.repeat("1", p, eager=True),
            "SNP": "rs" + j.cast(pl.String),
            "CM": pl.repeat("0", p, eager=True),
            "BP": j + 1,
            "A1": pl.repeat("A", p, eager=True),
            "A2": pl.repeat("G", p, eager=True),
        }
    ).write_csv(prefix.with_suffix(".bim"), separator="\t", include_header=False)
    pl.DataFrame({"IID": ids, "temp": rng.normal(0, 1, n)}).write_csv(
        prefix.with_name(prefix.name + ".env.tsv"), separator="\t"
    )


def time_bed_reader(bed: Path, chunk: int = 8192) -> float:
    from bed_reader import open_bed

    t = time.perf_counter()
    with open_bed(bed) as ob:
        p = ob.sid_count
        for a in range(0, p, chunk):
            ob.read(index=np.s_[:, a : min(p, a + chunk)], dtype="float64", order="F")
    return time.perf_counter() - t


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU time of this process (all its threads) or of its waited-for children:
    unlike wall time, roughly independent of the machine's load."""
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def time_plink2(prefix: Path, env: pl.DataFrame, U: np.ndarray, work: Path, threads: int) -> tuple[float, float] | None:
    exe = shutil.which("plink2")
    if exe is None:
        return None
    ids = env["IID"].to_list()
    pl.DataFrame({"#FID": ids, "IID": ids, "ENV": env["temp"]}).write_csv(work / "pheno.txt", separator="\t")
    Us = (U - U.mean(0)) / U.std(0)
    pl.DataFrame({"#FID": ids, "IID": ids, **{f"U{k + 1}": Us[:, k] for k in range(U.shape[1])}}).write_csv(
        work / "covar.txt", separator="\t"
    )
    t = time.perf_counter()
    c = cpu_seconds(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [
            exe,
            "--bfile",
            str(prefix),
            "--pheno",
            str(work / "pheno.txt"),
            "--covar",
            str(work / "covar.txt"),
            "--glm",
            "hide-covar",
            "--threads",
            str(threads),
            "--out",
            str(work / "plink"),
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t, cpu_seconds(resource.RUSAGE_CHILDREN) - c


def run_one(prefix: Path, K: int, threads: int, work: Path, reps: int = 1, power_iter: int | None = None) -> dict:
    """Timings of one file; with ``reps`` > 1 each polgen step runs that many times and the
    fastest run counts (a loaded machine adds noise, never speed)."""
    import polgen.lfmm as L

    env = pl.read_csv(prefix.with_name(prefix.name + ".env.tsv"), separator="\t")
    bed = prefix.with_suffix(".bed")
    out = {}
    out["bed_reader_s"] = time_bed_reader(bed)
    keys = ("fit_s", "test_s", "test_in_memory_nocal_s")
    runs: dict[str, list[float]] = {k: [] for k in keys + tuple(k[:-2] + "_cpu_s" for k in keys)}

    def timed(key: str, fn):
        t, c = time.perf_counter(), cpu_seconds()
        result = fn()
        runs[key].append(time.perf_counter() - t)
        runs[key[:-2] + "_cpu_s"].append(cpu_seconds() - c)
        return result

    for _ in range(max(1, reps)):
        model = timed("fit_s", lambda: L.fit(env, bed, K, est_rate=0.05, power_iter=power_iter, progress=False))
        out["fit_convergence"] = model.convergence
        res = timed(
            "test_s", lambda m=model: L.test(m, bed, env, out=work / "lfmm_out", overwrite=True, progress=False)
        )
        timed(
            "test_in_memory_nocal_s",
            lambda m=model: L.test(m, bed, env, calibrate=None, progress=False).frame.select(pl.len()).collect(),
        )
    out.update({k: min(v) for k, v in runs.items()})
    out["gif"] = res.gif["temp"]
    # plink2 gets the same number of runs as each polgen step (the fastest counts for both)
    pl2s = [time_plink2(prefix, env, model.U, work, threads) for _ in range(max(1, reps))]
    pl2s = [t for t in pl2s if t]
    out["plink2_s"], out["plink2_cpu_s"] = (min(t[0] for t in pl2s), min(t[1] for t in pl2s)) if pl2s else (None, None)
    return out


#: the three ways ``lfmm.test(out=...)`` runs: calibrated with T held until the calibration is
#: known (the default), calibrated with everything spilled to uncalibrated parts, uncalibrated
MEMORY_PATHS = ("one", "spill", "nocal")


def memory_child(bed: str, K: int, out: str, path: str = "one") -> None:
    import polgen.lfmm as L
    import polgen.lfmm.assoc_disk as D

    env = pl.read_csv(bed[:-4] + ".env.tsv", separator="\t")
    model = L.fit(env, bed, K, est_rate=0.01, progress=False)
    if path == "spill":
        D.HOLD_STATS_BYTES = 0
    calibrate = None if path == "nocal" else "gif"
    L.test(model, bed, env, out=out, overwrite=True, progress=False, calibrate=calibrate)
    print(json.dumps({"maxrss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """Peak resident set of this process image: VmHWM (ru_maxrss would include the parent's peak,
    which Linux carries across fork + exec)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_memory(work: Path, n: int, p: int, K: int, path: str = "one") -> dict:
    res = {}
    for tile in (1, 10):
        prefix = work / f"mem{tile}"
        write_random_bed(prefix, n, p * tile, seed=1)
        t = time.perf_counter()
        r = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(prefix.with_suffix(".bed")),
                "-K",
                str(K),
                "--out",
                str(work / f"memout{tile}"),
                "--path",
                path,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        res[p * tile] = {
            "maxrss_mb": json.loads(r.stdout.strip().splitlines()[-1])["maxrss_mb"],
            "seconds": time.perf_counter() - t,
        }
        for ext in (".bed", ".bim", ".fam"):
            prefix.with_suffix(ext).unlink()
        shutil.rmtree(work / f"memout{tile}", ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--p", type=int, default=200_000)
    ap.add_argument("-K", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, default=1, help="runs of each polgen step; the fastest counts")
    ap.add_argument(
        "--power-iter", type=int, default=None, help="fixed power iterations of the fit (default: until converged)"
    )
    ap.add_argument("--missing", default="0,0.002", help="comma-separated missing-call rates, one synthetic file each")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--child")
    ap.add_argument("--path", choices=MEMORY_PATHS, default="one", help="with --memory: which test path")
    ap.add_argument("--out")
    ap.add_argument("--workdir")
    args = ap.parse_args()
    if args.child:
        memory_child(args.child, args.K, args.out, args.path)
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="polgen-bench-lfmm-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.memory:
            res = measure_memory(work, args.n, args.p, args.K, args.path)
            (p1, r1), (p2, r2) = sorted(res.items())
            print(
                f"peak RSS fit+test ({args.path}) n={args.n}: "
                f"p={p1}: {r1['maxrss_mb']:.0f} MB ({r1['seconds']:.1f} s), "
                f"p={p2}: {r2['maxrss_mb']:.0f} MB ({r2['seconds']:.1f} s); "
                f"difference {r2['maxrss_mb'] - r1['maxrss_mb']:.0f} MB"
            )
            return
        # warm-up: numba caches, imports and first-use costs on a tiny file, not timed
        write_synthetic_bed(work / "warm", 300, 3000, missing=0.01, seed=3)
        run_one(work / "warm", args.K, args.threads, work)
        rows = []
        for miss in (float(x) for x in args.missing.split(",")):
            prefix = work / f"bench_miss{int(round(miss * 10000))}"
            t = time.perf_counter()
            write_synthetic_bed(prefix, args.n, args.p, missing=miss, seed=2, pops=args.K + 1)
            print(
                f"wrote {prefix}.bed ({args.n} x {args.p}, missing {miss}) in {time.perf_counter() - t:.1f} s",
                flush=True,
            )
            r = run_one(prefix, args.K, args.threads, work, reps=args.reps, power_iter=args.power_iter)
            r["missing"] = miss
            rows.append(r)
            for ext in (".bed", ".bim", ".fam"):
                prefix.with_suffix(ext).unlink()
        p = args.p
        best = f", fastest of {args.reps} runs per step (polgen's and plink2's)" if args.reps > 1 else ""
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"\nLFMM2 n={args.n} p={p} K={args.K} d=1, {args.threads} threads{best}; load average {load}")
        for r in rows:
            sp = lambda s: f"{p / s:,.0f} SNPs/s" if s else "n/a"  # noqa: E731
            pl2 = r["plink2_s"]
            print(
                f"missing={r['missing']}: bed-reader decode {r['bed_reader_s']:.2f} s ({sp(r['bed_reader_s'])}); "
                f"fit {r['fit_s']:.2f} s ({r['fit_convergence'].passes} passes, {r['fit_convergence'].describe()}); "
                f"test {r['test_s']:.2f} s ({sp(r['test_s'])}, GIF {r['gif']:.3f}); "
                f"test in memory w/o calibration {r['test_in_memory_nocal_s']:.2f} s; "
                f"plink2 --glm {pl2:.2f} s ({sp(pl2)})"
                if pl2
                else "plink2 absent"
            )
            print(
                f"   CPU seconds (all threads): fit {r['fit_cpu_s']:.2f}, test {r['test_cpu_s']:.2f}, in memory "
                f"w/o calibration {r['test_in_memory_nocal_cpu_s']:.2f}, plink2 {r['plink2_cpu_s']:.2f} "
                f"(test vs plink2 in CPU: {r['plink2_cpu_s'] / r['test_cpu_s']:.2f}x)"
                if pl2
                else ""
            )
            print(
                f"   test speed vs plink2: {pl2 / r['test_s']:.2f}x; fit+test / test: "
                f"{(r['fit_s'] + r['test_s']) / r['test_s']:.2f}; test vs bed-reader decode: "
                f"{r['bed_reader_s'] / r['test_s']:.2f}x"
                if pl2
                else ""
            )
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
