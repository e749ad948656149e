"""Benchmark Genomic SEM GWAS: user_gwas / commonfactor_gwas on synthetic sumstats with out=.

    python bench/gsem_gwas.py                       # 1M SNPs: 3 traits, 5 traits, 2-factor; cf on 100k
    python bench/gsem_gwas.py --only commonfactor_3trait commonfactor_5trait   # commonfactor only
    python bench/gsem_gwas.py --snps 200000 --cf-snps 20000 --ref-snps 50000
    python bench/gsem_gwas.py --cf-snps 200000 --ref-snps 0 --only commonfactor_3trait --warm   # warm
    python bench/gsem_gwas.py --rss-snps 5000000    # also the 5M-SNP peak-RSS run (3 traits)
    python bench/gsem_gwas.py --cold                # cold start: first call with an empty numba cache
    python bench/gsem_gwas.py --cold --cold-kinds user cf --cold-quick --src /tmp/old  # old tree

``--cold`` times, on 2,000 SNPs (3 traits), the first call of a brand-new process with an empty
``NUMBA_CACHE_DIR`` (compiles everything it needs), of a second process on that cache, and of a
process after ``polgen warmup`` (``polgen.warmup.warmup(("gsem",))``, timed once, its cache copied
for each kind) for ``--cold-kinds``: ``user`` (user_gwas, default fast path), ``full``
(fix_measurement=False), ``ml`` (estimation="ML") and ``cf`` (commonfactor_gwas); all four by
default.  ``--cold-quick`` times only the empty-cache call.  Every figure has the call's CPU
seconds beside its wall time (on a loaded machine the CPU time is the comparable one), the import
time, and under it each numba kernel compiled during the empty-cache call with its seconds (a
kernel compiled after the warm-up is named: the warm-up missed it).  A call that starts a compile
helper (``polgen.kernels._precompile``: commonfactor_gwas) shows its CPU seconds as ``+ helper``
(on an idle two-core machine the wall time is the comparable figure; ``POLGEN_PRECOMPILE=0``
turns helpers off for the serial figure).  ``--src DIR`` puts DIR first
on the children's PYTHONPATH (another checkout's ``polgen/``: before/after in one session).

``user_3trait_full`` (fix_measurement=False) and ``user_3trait_ml`` (estimation="ML") are the other
two user_gwas configurations (run them with ``--only`` and a smaller ``--snps``).

Each run happens in its own subprocess so its wall time and peak RSS (``wait4`` rusage) are its
own; timings include reading the parquet input and writing the parquet output.  When the Rust
GenomicSEM port is installed (``/tmp/genomicsem-ref/bin/python``, see
../shared/tools/install-genomicsem-reference.sh) it runs on the same input (as TSV) in a
subprocess and the SNPs/s ratio is printed.  ``--r-snps N`` also times R GenomicSEM's own
userGWAS / commonfactorGWAS (serial, bench/gsem_gwas_rref.py) on the first N SNPs of each run's
input and prints polgen's ratio to it (R at 0.1-7 SNPs/s: keep N small, 20-100).
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
from gsem_gwas_rref import r_gwas_rate

ROOT = Path(__file__).resolve().parents[1]
REF_PY = Path(os.environ.get("GENOMICSEM_REF", "/tmp/genomicsem-ref")) / "bin" / "python"

MODELS = {
    "user_3trait_1factor": (3, "F1 =~ NA*T1 + T2 + T3\nF1 ~ SNP\nF1 ~~ 1*F1\nSNP ~~ SNP"),
    "user_5trait_1factor": (5, "F1 =~ NA*T1 + T2 + T3 + T4 + T5\nF1 ~ SNP\nF1 ~~ 1*F1\nSNP ~~ SNP"),
    "user_5trait_2factor": (
        5,
        "F1 =~ NA*T1 + T2 + T3\nF2 =~ NA*T4 + T5\nF1 ~~ 1*F1\nF2 ~~ 1*F2\nF1 ~~ F2\nF1 ~ SNP\nF2 ~ SNP\nSNP ~~ SNP",
    ),
}
#: user_gwas configurations besides the default fast path: (traits, model, keyword arguments)
VARIANTS = {
    "user_3trait_full": (3, MODELS["user_3trait_1factor"][1], {"fix_measurement": False}),
    "user_3trait_ml": (3, MODELS["user_3trait_1factor"][1], {"estimation": "ML"}),
}
COLD_KW = {"user": {}, "full": {"fix_measurement": False}, "ml": {"estimation": "ML"}}
SRC: list[str] = []  # --src: PYTHONPATH of the children


def covstruc(k: int) -> dict:
    """A realistic LDSC covstruc: the PGC ANX/OCD/PTSD fixture for k=3 when ../shared is present,
    else a synthetic one (loadings 0.3-0.5, intercepts near 1)."""
    fx = ROOT.parent / "shared" / "fixtures" / "gsem" / "gwas_per_snp.json"
    names = [f"T{i + 1}" for i in range(k)]
    if k == 3 and fx.exists():
        d = json.loads(fx.read_text())
        return {"S": d["s"], "V": d["v"], "I": d["i_mat"], "trait_names": names}
    rng = np.random.default_rng(11)
    lam = rng.uniform(0.3, 0.5, k)
    S = np.outer(lam, lam) + np.diag(rng.uniform(0.05, 0.15, k))
    kst = k * (k + 1) // 2
    A = rng.normal(0, 1, (kst, kst))
    V = 1e-4 * (np.eye(kst) * 5 + A @ A.T / kst)
    I = np.eye(k) + 0.01 * (np.ones((k, k)) - np.eye(k))
    I[np.diag_indices(k)] = rng.uniform(0.99, 1.05, k)
    return {"S": S.tolist(), "V": V.tolist(), "I": I.tolist(), "trait_names": names}


def generate(path: Path, n: int, k: int, seed: int = 1, chunk: int = 500_000) -> None:
    """Synthetic sumstats() output, written in row groups (memory stays flat)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer = None
    try:
        for off in range(0, n, chunk):
            m = min(chunk, n - off)
            se = rng.uniform(0.01, 0.05, (m, k))
            common = rng.normal(0, 1, (m, 1))
            z = 0.6 * common + 0.8 * rng.normal(0, 1, (m, k))
            cols = {
                "SNP": pa.array([f"rs{off + i}" for i in range(m)]),
                "CHR": pa.array(np.char.mod("%d", 1 + (np.arange(off, off + m) * 22) // max(n, 1))),
                "BP": pa.array(np.arange(off, off + m, dtype=np.int64) * 100 + 1),
                "MAF": pa.array(rng.uniform(0.01, 0.5, m)),
                "A1": pa.array(np.where(rng.random(m) < 0.5, "A", "C")),
                "A2": pa.array(np.where(rng.random(m) < 0.5, "G", "T")),
            }
            for j in range(k):
                cols[f"beta.T{j + 1}"] = pa.array(z[:, j] * se[:, j])
                cols[f"se.T{j + 1}"] = pa.array(se[:, j])
            tbl = pa.table(cols)
            if writer is None:
                writer = pq.ParquetWriter(path, tbl.schema, compression="zstd")
            writer.write_table(tbl, row_group_size=200_000)
    finally:
        if writer is not None:
            writer.close()


def run_child(kind: str, data: str, cov: str, out: str, model: str, batch: int) -> None:
    """Inside the measured subprocess (``kind``: cf, user or a VARIANTS name)."""
    from polgen.gsem.gwas import commonfactor_gwas, user_gwas

    kw = VARIANTS[kind][2] if kind in VARIANTS else {}
    if os.environ.get("POLGEN_BENCH_WARM") == "1":  # --warm: a 2,000-SNP call first (kernels loaded)
        import polars as pl

        small = pl.scan_parquet(data).head(2000).collect()
        if kind == "cf":
            commonfactor_gwas(small, cov, progress=False)
        else:
            user_gwas(small, cov, model, progress=False, **kw)
    t = time.perf_counter()
    c = time.process_time()
    if kind == "cf":
        lf = commonfactor_gwas(data, cov, out=out, batch_size=batch, progress=False)
    else:
        lf = user_gwas(data, cov, model, out=out, batch_size=batch, progress=False, **kw)
    wall = time.perf_counter() - t
    call_cpu = time.process_time() - c
    import polars as pl

    conv = lf.select(pl.col("converged").mean()).collect().item()
    print(json.dumps({"wall": wall, "call_cpu": call_cpu, "converged": conv}))


def _compile_recorder() -> list[dict]:
    """Records every top-level numba compilation of the process (name, wall and CPU seconds)."""
    from numba.core import event as ev

    recs: list[dict] = []

    class Rec(ev.Listener):
        def __init__(self) -> None:
            self.stack: list[tuple[str, float, float]] = []

        def on_start(self, event) -> None:
            fn = getattr((event.data or {}).get("dispatcher"), "py_func", None)
            name = f"{fn.__module__}.{fn.__qualname__}" if fn is not None else "?"
            self.stack.append((name, time.perf_counter(), time.process_time()))

        def on_end(self, event) -> None:
            name, t, c = self.stack.pop()
            if not self.stack:
                short = name.removeprefix("polgen.kernels.")
                recs.append({"name": short, "wall": time.perf_counter() - t, "cpu": time.process_time() - c})

    ev.register("numba:compile", Rec())
    return recs


def run_cold_child(kind: str, data: str, cov: str) -> None:
    """Inside a cold-start subprocess: import, then the first call (no out=); prints the call's
    wall and CPU seconds, the import's, and the kernels compiled during the call."""
    t0, c0 = time.perf_counter(), time.process_time()
    import polars as pl

    from polgen.gsem.gwas import commonfactor_gwas, user_gwas

    t_import, c_import = time.perf_counter() - t0, time.process_time() - c0
    recs = _compile_recorder()
    snps = pl.read_parquet(data)
    t, c = time.perf_counter(), time.process_time()
    if kind == "warmup":
        from polgen.warmup import warmup

        warmup(("gsem",), progress=False)
    elif kind == "cf":
        commonfactor_gwas(snps, cov, progress=False)
    else:
        user_gwas(snps, cov, MODELS["user_3trait_1factor"][1], progress=False, **COLD_KW[kind])
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    helper_cpu = _helpers_cpu()
    print(
        json.dumps(
            {
                "wall": wall,
                "call_cpu": cpu,
                "helper_cpu": helper_cpu,
                "import": t_import,
                "import_cpu": c_import,
                "compiled": recs,
            }
        )
    )


def _helpers_cpu() -> float:
    """CPU seconds of the compile helpers (polgen.kernels._precompile) the call started; they end
    by themselves once their kernels are cached (waited for here, after the call was timed)."""
    import resource

    from polgen.kernels import _precompile

    for h in list(_precompile._helpers.values()):
        try:
            h.proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            h.close()
    time.sleep(0.2)  # the reader thread reaps the helper
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


COLD_LABELS = {
    "user": "user_gwas (fast path)",
    "full": "user_gwas (fix_meas=False)",
    "ml": "user_gwas (ML)",
    "cf": "commonfactor_gwas",
}


def cold_start(work: Path, n: int = 2000, kinds=("user", "full", "ml", "cf"), quick: bool = False) -> None:
    """First-call times with an empty numba cache, on a second process (that cache), and after
    ``polgen warmup`` (one warm-up into its own empty cache, copied for each kind so that no
    kind's call compiles for the next)."""
    data = work / f"sumstats_k3_n{n}.parquet"
    if not data.exists():
        generate(data, n, 3)
    cj = work / "cov_k3.json"
    cj.write_text(json.dumps(covstruc(3)))

    def child(kind: str, cache: Path) -> dict:
        res, _ = measure(["--cold-child", kind, str(data), str(cj)], env={"NUMBA_CACHE_DIR": str(cache)})
        return res

    def fmt(res: dict) -> str:
        helper = f" + helper {res['helper_cpu']:4.1f}s" if res.get("helper_cpu") else ""
        return f"{res['wall']:6.1f}s (cpu {res['call_cpu']:5.1f}s{helper})"

    with tempfile.TemporaryDirectory(prefix="polgen_numba_warm_") as dw:
        warm_cache = Path(dw) / "cache"
        if not quick:
            load = os.getloadavg()[0]
            wu = child("warmup", warm_cache)
            print(f"polgen warmup (gsem): {fmt(wu)}, process cpu {wu['cpu']:.1f}s  load {load:.1f}", flush=True)
        for kind in kinds:
            label = COLD_LABELS[kind]
            with tempfile.TemporaryDirectory(prefix="polgen_numba_") as d1, tempfile.TemporaryDirectory() as d2:
                load = os.getloadavg()[0]
                cold = child(kind, Path(d1))
                more = ""
                if not quick:
                    warm = child(kind, Path(d1))
                    shutil.copytree(warm_cache, Path(d2) / "cache")
                    after = child(kind, Path(d2) / "cache")
                    more = f"  cached {fmt(warm)}  after warmup {fmt(after)}"
                    if after["compiled"]:
                        more += " [compiled after warmup: " + ", ".join(r["name"] for r in after["compiled"]) + "]"
            print(
                f"cold start {label:27s} {n:,d} SNPs: empty cache {fmt(cold)}{more}  "
                f"import {cold['import']:.1f}s (cpu {cold['import_cpu']:.1f}s)  load {load:.1f}",
                flush=True,
            )
            for r in cold["compiled"]:
                print(f"    compiled {r['name']:40s} {r['cpu']:6.2f}s cpu {r['wall']:6.2f}s wall")


def measure(args: list[str], env: dict | None = None) -> tuple[dict, float]:
    proc = subprocess.Popen(
        [sys.executable, __file__, *args],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, POLGEN_PROGRESS="0", **(env or {}), **({"PYTHONPATH": SRC[0]} if SRC else {})),
        cwd=str(ROOT),
    )
    _, status, ru = os.wait4(proc.pid, 0)
    out = proc.stdout.read()
    proc.stdout.close()
    if status != 0:
        raise RuntimeError(f"benchmark child failed ({status}): {out}")
    res = json.loads(out.strip().splitlines()[-1])
    res["cpu"] = ru.ru_utime + ru.ru_stime
    return res, ru.ru_maxrss / 1024.0


def run_reference(data: Path, cov: dict, model: str, n: int, work: Path) -> float | None:
    """SNPs/s of the Rust port (genomicsem 0.2.0) on the first n SNPs, or None when absent."""
    if not REF_PY.exists():
        return None
    import polars as pl

    tsv = work / f"ref_{n}.tsv"
    pl.scan_parquet(data).head(n).collect().write_csv(tsv, separator="\t")
    cj = work / "ref_cov.json"
    cj.write_text(json.dumps(cov))
    code = (
        "import genomicsem as gs, json, time, numpy as np, sys\n"
        "c = json.load(open(sys.argv[1]))\n"
        "cov = {'s': np.array(c['S']), 'v': np.array(c['V']), 'i_mat': np.array(c['I'])}\n"
        "t = time.perf_counter()\n"
        "r = gs.user_gwas(cov, sys.argv[2], model=sys.argv[3])\n"
        "print(json.dumps({'wall': time.perf_counter() - t, 'n': len(r['snps']['SNP'])}))\n"
    )
    res = subprocess.run([str(REF_PY), "-c", code, str(cj), str(tsv), model], capture_output=True, text=True)
    if res.returncode != 0:
        print("reference failed:", res.stderr[-500:])
        return None
    d = json.loads(res.stdout.strip().splitlines()[-1])
    return d["n"] / d["wall"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snps", type=int, default=1_000_000)
    ap.add_argument("--cf-snps", type=int, default=100_000, help="SNPs for commonfactor_gwas")
    ap.add_argument("--ref-snps", type=int, default=100_000, help="SNPs for the Rust reference run")
    ap.add_argument("--r-snps", type=int, default=0, help="also time R GenomicSEM on this many SNPs")
    ap.add_argument("--rss-snps", type=int, default=0, help="also a 3-trait run of this many SNPs (RSS)")
    ap.add_argument("--batch", type=int, default=200_000)
    ap.add_argument("--work", default=None)
    ap.add_argument("--only", nargs="*", default=None, help="subset of scenarios to run")
    ap.add_argument("--cold", action="store_true", help="cold-start times (empty numba cache) instead")
    ap.add_argument(
        "--cold-kinds", nargs="*", default=["user", "full", "ml", "cf"], choices=["user", "full", "ml", "cf"]
    )
    ap.add_argument("--cold-quick", action="store_true", help="only the empty-cache first call")
    ap.add_argument("--src", default=None, help="first on the children's PYTHONPATH (another polgen tree)")
    ap.add_argument(
        "--warm", action="store_true", help="time the call after a 2,000-SNP warm-up call in the same process"
    )
    ap.add_argument("--cold-child", nargs=3, metavar=("KIND", "DATA", "COV"), help=argparse.SUPPRESS)
    ap.add_argument(
        "--child", nargs=6, metavar=("KIND", "DATA", "COV", "OUT", "MODEL", "BATCH"), help=argparse.SUPPRESS
    )
    a = ap.parse_args()
    if a.child:
        kind, data, cov, out, model, batch = a.child
        run_child(kind, data, cov, out, model, int(batch))
        return
    if a.cold_child:
        run_cold_child(*a.cold_child)
        return
    work = Path(a.work or tempfile.mkdtemp(prefix="polgen_bench_gwas_"))
    work.mkdir(parents=True, exist_ok=True)
    if a.src:
        SRC.append(a.src)
    if a.cold:
        cold_start(work, kinds=a.cold_kinds, quick=a.cold_quick)
        print(f"\ncpus: {os.cpu_count()}  load: {os.getloadavg()}  work dir: {work}")
        return
    rows = []
    jobs = [(name, k, model, a.snps, "user") for name, (k, model) in MODELS.items()]
    # the slow configurations only when named in --only (fix_measurement=False at 1M SNPs takes long)
    jobs += [(name, k, model, a.snps, name) for name, (k, model, _) in VARIANTS.items() if a.only and name in a.only]
    jobs.append(("commonfactor_3trait", 3, "", a.cf_snps, "cf"))
    jobs.append(("commonfactor_5trait", 5, "", a.cf_snps, "cf"))
    if a.rss_snps:
        jobs.append(("user_3trait_1factor_rss", 3, MODELS["user_3trait_1factor"][1], a.rss_snps, "user"))
    for name, k, model, n, kind in jobs:
        if a.only and name not in a.only:
            continue
        data = work / f"sumstats_k{k}_n{n}.parquet"
        if not data.exists():
            t = time.perf_counter()
            generate(data, n, k)
            print(f"generated {data.name} in {time.perf_counter() - t:.1f}s")
        cov = covstruc(k)
        cj = work / f"cov_k{k}.json"
        cj.write_text(json.dumps(cov))
        out = work / f"out_{name}"
        shutil.rmtree(out, ignore_errors=True)
        res, rss = measure(
            ["--child", kind, str(data), str(cj), str(out), model or "-", str(a.batch)],
            env={"POLGEN_BENCH_WARM": "1"} if a.warm else None,
        )
        rate = n / res["wall"]
        ref_rate = None
        if kind == "user" and not name.endswith("_rss") and a.ref_snps:
            ref_rate = run_reference(data, cov, model, min(n, a.ref_snps), work)
        r_s = ""
        if a.r_snps and not name.endswith("_rss"):
            r_kind = {"cf": "cf", "user_3trait_full": "full", "user_3trait_ml": "ml"}.get(kind, "user")
            rr = r_gwas_rate(data, cov, r_kind, model, min(n, a.r_snps))
            r_s = (
                f"  R GenomicSEM {rr['snps_per_s']:,.2f} SNPs/s ({rr['ok']}/{min(n, a.r_snps)} SNPs, {rr['mode']}) "
                f"ratio {rate / rr['snps_per_s']:,.0f}x"
                if "error" not in rr
                else f"  R: {rr['error']}"
            )
        rows.append((name, n, res["wall"], rate, rss, res["converged"], ref_rate))
        ratio = f"{rate / ref_rate:.1f}x" if ref_rate else "n/a"
        ref_s = f"{ref_rate:,.0f}" if ref_rate else "n/a"
        # CPU seconds of the whole child (startup, plan, read, fit, write): on a shared machine
        # SNPs per CPU-second x cores is the honest throughput of an idle one
        print(
            f"{name:28s} {n:>9,d} SNPs  {res['wall']:7.1f}s  {rate:>10,.0f} SNPs/s  "
            f"cpu {res['cpu']:6.1f}s ({n / res['cpu']:,.0f} SNPs/cpu-s, call {res['call_cpu']:.1f}s)  "
            f"peak RSS {rss:7.0f} MB  "
            f"converged {res['converged']:.4f}  Rust port {ref_s} SNPs/s  ratio {ratio}{r_s}",
            flush=True,
        )
        shutil.rmtree(out, ignore_errors=True)
    print(f"\ncpus: {os.cpu_count()}  load: {os.getloadavg()}  work dir: {work}")


if __name__ == "__main__":
    main()
