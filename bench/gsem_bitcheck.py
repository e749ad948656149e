"""Bit-identity check of every Genomic SEM GWAS configuration between two source trees.

    python bench/gsem_bitcheck.py --before /tmp/polgen_before      # runs both, then compares
    python bench/gsem_bitcheck.py --run OUTDIR                      # one tree (the importable one)
    python bench/gsem_bitcheck.py --compare DIR_A DIR_B

``--before SRC`` runs this script's ``--run`` twice, each in a subprocess with an empty
``NUMBA_CACHE_DIR`` (every kernel compiled fresh in that process): once with ``SRC`` first on
``PYTHONPATH`` (a copy of the old ``polgen/`` package, e.g. ``git archive HEAD polgen | tar -x -C
SRC``) and once with this checkout, then compares the result frames with
``assert_frame_equal(check_exact=True)``.  The configurations: the DWLS fast path,
fix_measurement=False, ML, GC conserv + smooth_check (with SNPs whose S_full needs nearPD), a
2-factor model with Q_SNP under DWLS and ML, ``:=`` parameters with bounds (fast and full), and
commonfactor_gwas (DWLS 3 and 5 traits, ML 3 traits).  Each run prints its wall and CPU time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

ONE = "F1 =~ NA*T1 + T2 + T3\nF1 ~ SNP\nF1 ~~ 1*F1\nSNP ~~ SNP"
TWO = "F1 =~ NA*T1 + T2 + T3\nF2 =~ NA*T4 + T5\nF1 ~~ 1*F1\nF2 ~~ 1*F2\nF1 ~~ F2\nF1 ~ SNP\nF2 ~ SNP\nSNP ~~ SNP"
BOUNDS = (
    "F1 =~ T1 + l2*T2 + l3*T3\nF2 =~ T4 + T5\nF1 ~ b1*SNP\nF2 ~ b2*SNP\n"
    "b1 > 0.001\nb2 < 0.002\nd := b1 - b2\nh := l2*b1"
)

#: name -> (function, traits, model, keyword arguments)
CONFIGS: dict[str, tuple[str, int, str, dict]] = {
    "dwls_fast": ("user", 3, ONE, {}),
    "dwls_full": ("user", 3, ONE, {"fix_measurement": False}),
    "ml": ("user", 3, ONE, {"estimation": "ML"}),
    "gc_conserv_smooth": ("user", 3, ONE, {"GC": "conserv", "smooth_check": True}),
    "q_snp_2factor_dwls": ("user", 5, TWO, {"Q_SNP": True}),
    "q_snp_2factor_ml": ("user", 5, TWO, {"Q_SNP": True, "estimation": "ML"}),
    "defined_bound_fast": ("user", 5, BOUNDS, {}),
    "defined_bound_full": ("user", 5, BOUNDS, {"fix_measurement": False}),
    "cf_dwls_3": ("cf", 3, "", {}),
    "cf_dwls_5": ("cf", 5, "", {}),
    "cf_ml_3": ("cf", 3, "", {"estimation": "ML"}),
}


def inputs(k: int, n: int):
    """Synthetic sumstats (bench/gsem_gwas.py's generator) with a few SNPs whose S_full is not
    positive definite (huge effects), and the covstruc."""
    import polars as pl

    sys.path.insert(0, str(ROOT / "bench"))
    from gsem_gwas import covstruc, generate

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.parquet"
        generate(p, n, k, seed=7)
        df = pl.read_parquet(p)
    big = np.zeros(n)
    big[::37] = 25.0  # |beta| of 25 SEs-worth on every 37th SNP: S_full smoothed by nearPD
    df = df.with_columns(pl.col("beta.T1") * (1.0 + pl.Series(big)))
    return df, covstruc(k)


def run(out: Path, n_user: int, n_cf: int, only: list[str] | None) -> None:
    from polgen.gsem.gwas import commonfactor_gwas, user_gwas

    out.mkdir(parents=True, exist_ok=True)
    data = {}
    for name, (fn, k, model, kw) in CONFIGS.items():
        if only and name not in only:
            continue
        n = n_cf if fn == "cf" else n_user
        if (k, n) not in data:
            data[k, n] = inputs(k, n)
        snps, cov = data[k, n]
        t, c = time.perf_counter(), time.process_time()
        if fn == "cf":
            res = commonfactor_gwas(snps, cov, progress=False, **kw)
        else:
            res = user_gwas(snps, cov, model, progress=False, **kw)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        res.write_parquet(out / f"{name}.parquet")
        conv = res["converged"].mean()
        print(f"{name:22s} rows {res.height:6d}  converged {conv:.4f}  wall {wall:6.1f}s  cpu {cpu:6.1f}s", flush=True)


def compare(a: Path, b: Path) -> bool:
    import polars as pl
    from polars.testing import assert_frame_equal

    ok = True
    for name in CONFIGS:
        pa, pb = a / f"{name}.parquet", b / f"{name}.parquet"
        if not (pa.exists() and pb.exists()):
            print(f"{name:22s} MISSING")
            ok = False
            continue
        fa, fb = pl.read_parquet(pa), pl.read_parquet(pb)
        try:
            assert_frame_equal(fa, fb, check_exact=True)
            print(f"{name:22s} identical ({fa.height} rows)")
        except AssertionError as e:
            ok = False
            diff = ""
            if fa.shape == fb.shape:
                for c in ("est", "se", "chisq", "Q", "Q_SNP"):
                    if c in fa.columns:
                        x, y = fa[c].to_numpy(), fb[c].to_numpy()
                        with np.errstate(invalid="ignore", divide="ignore"):
                            r = np.nanmax(np.abs(x - y) / np.maximum(np.abs(y), 1e-300)) if len(x) else 0.0
                        diff += f" {c} max rel {r:.2e};"
            print(f"{name:22s} DIFFERENT:{diff} {str(e).splitlines()[0]}")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", help="source tree holding the old polgen/ package")
    ap.add_argument("--run", help="write this tree's results here")
    ap.add_argument("--compare", nargs=2)
    ap.add_argument("--work", default=None)
    ap.add_argument("--snps", type=int, default=600)
    ap.add_argument("--cf-snps", type=int, default=300)
    ap.add_argument("--only", nargs="*", default=None)
    a = ap.parse_args()
    if a.run:
        run(Path(a.run), a.snps, a.cf_snps, a.only)
        return
    if a.compare:
        sys.exit(0 if compare(Path(a.compare[0]), Path(a.compare[1])) else 1)
    if not a.before:
        ap.error("give --before SRC, --run OUTDIR or --compare A B")
    work = Path(a.work or tempfile.mkdtemp(prefix="gsem_bitcheck_"))
    dirs = []
    for label, src in (("before", a.before), ("after", str(ROOT))):
        cache = work / f"cache_{label}"
        cache.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=src)
        cmd = [sys.executable, __file__, "--run", str(work / label), "--snps", str(a.snps), "--cf-snps", str(a.cf_snps)]
        if a.only:
            cmd += ["--only", *a.only]
        print(f"== {label}: {src}", flush=True)
        subprocess.run(cmd, env=env, check=True, cwd=src)
        dirs.append(work / label)
    sys.exit(0 if compare(*dirs) else 1)


if __name__ == "__main__":
    main()
