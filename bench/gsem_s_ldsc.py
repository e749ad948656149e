"""Benchmark polgen's stratified LDSC (``gsem.s_ldsc``) on baseline-LD sized inputs.

    python bench/gsem_s_ldsc.py [--n-snps 1000000] [--n-annot 50] [--n-chr 22] [--traits 3]
                                [--dir /tmp/polgen-bench-sldsc] [--no-reference]

Writes (once; reused while the sizes match) synthetic baseline-LD style files: ``--n-annot``
annotations (the baseline, binary ones and 5 continuous ones) over ``--n-snps`` SNPs in ``--n-chr``
chromosomes (``.l2.ldscore.gz``, ``.l2.M_5_50``, ``.annot.gz``, ``.frq``, weights) and ``--traits``
munged traits (parquet, and ``.sumstats.gz`` for the Rust port), then runs ``s_ldsc`` (200 jackknife
blocks) in a child process and prints its wall time and peak resident set (VmHWM) with the load
average.  When the Rust port of GenomicSEM is installed at /tmp/genomicsem-ref
(``../shared/tools/install-genomicsem-reference.sh``) its ``s_ldsc`` runs on the same files (laid out
as the directories it reads) in a subprocess too.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

REF_PY = Path(os.environ.get("GENOMICSEM_REF", "/tmp/genomicsem-ref")) / "bin" / "python"

_REF_SCRIPT = r"""
import json, sys, time, resource
import genomicsem as gs
cfg = json.loads(sys.argv[1])
t = time.perf_counter()
res = gs.s_ldsc(traits=cfg["gz"], ld=cfg["ref_ld"], wld=cfg["ref_wld"], frq=cfg["ref_frq"],
                trait_names=cfg["names"], n_blocks=200)
sec = time.perf_counter() - t
out = {"seconds": sec, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
try:
    S = res["S"]
    S0 = S[0] if isinstance(S, list) else list(S.values())[0]
    out["h2"] = [float(S0[i][i]) for i in range(len(cfg["names"]))]
except Exception as exc:
    out["note"] = f"no S[0] in the result ({type(exc).__name__}: {exc}); keys {list(res)}"
print(json.dumps(out))
"""


def _gz(path: Path, df: pl.DataFrame) -> None:
    with gzip.open(path, "wb", compresslevel=1) as fh:
        df.write_csv(fh, separator="\t")


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(src)


def make_inputs(d: Path, n: int, n_annot: int, n_chr: int, n_traits: int, seed: int = 1) -> dict:
    cfg = {"n": n, "n_annot": n_annot, "n_chr": n_chr, "traits": n_traits, "seed": seed}
    stamp = d / "inputs.json"
    out = {
        "ld": str(d / "annot" / "baseline."),
        "wld": str(d / "weights" / "weights."),
        "frq": str(d / "frq" / "1000G."),
        "traits": [str(d / f"T{t + 1}.parquet") for t in range(n_traits)],
        "names": [f"T{t + 1}" for t in range(n_traits)],
        "gz": [str(d / f"T{t + 1}.sumstats.gz") for t in range(n_traits)],
        # the Rust port reads directories of {chr}.l2.ldscore.gz / {chr}.annot.gz / {chr}.frq
        "ref_ld": str(d / "ref_ld"),
        "ref_wld": str(d / "ref_wld"),
        "ref_frq": str(d / "ref_frq"),
    }
    if stamp.exists() and json.loads(stamp.read_text()) == cfg:
        return out
    rng = np.random.default_rng(seed)
    for sub in ("annot", "weights", "frq", "ref_ld", "ref_wld", "ref_frq"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    n_cont = 5
    names = ["base"] + [f"bin{i}" for i in range(n_annot - 1 - n_cont)] + [f"cont{i}" for i in range(n_cont)]
    frac = rng.uniform(0.02, 0.4, len(names))
    tau = rng.normal(0.0, 0.5, len(names))
    tau[0] = 1.0
    per_chr = np.full(n_chr, n // n_chr)
    per_chr[: n - per_chr.sum()] += 1
    Ns = 50_000.0 + 10_000.0 * np.arange(n_traits)
    lam = np.linspace(0.8, 0.5, n_traits)
    G = np.outer(lam, lam) + np.diag(np.full(n_traits, 0.3))
    Lg = np.linalg.cholesky(G)
    z_all, ids_all = [], []
    start = 0
    for c in range(1, n_chr + 1):
        m = int(per_chr[c - 1])
        snp = np.array([f"rs{start + i + 1}" for i in range(m)])
        start += m
        bp = np.cumsum(rng.integers(1, 200, m))
        ann = np.empty((m, len(names)))
        ann[:, 0] = 1.0
        nb = len(names) - 1 - n_cont
        ann[:, 1 : 1 + nb] = rng.uniform(size=(m, nb)) < frac[1 : 1 + nb]
        ann[:, 1 + nb :] = np.round(rng.normal(0, 1, (m, n_cont)), 3)
        level = rng.gamma(4.0, 2.5, m)
        l2 = np.round(level[:, None] * np.abs(ann + rng.normal(0, 0.1, ann.shape)) * 0.5 + ann * 0.5, 3)
        l2[:, 0] = np.round(level, 3)
        maf = np.round(rng.uniform(0.01, 0.5, m), 4)
        ids = {"CHR": np.full(m, c), "SNP": snp, "BP": bp}
        _gz(d / "annot" / f"baseline.{c}.l2.ldscore.gz",
            pl.DataFrame({**ids, **{f"{a}L2": l2[:, i] for i, a in enumerate(names)}}))  # fmt: skip
        _gz(d / "weights" / f"weights.{c}.l2.ldscore.gz", pl.DataFrame({**ids, "L2": np.round(level * 0.9, 3)}))
        common = maf > 0.05
        (d / "annot" / f"baseline.{c}.l2.M_5_50").write_text(
            "\t".join(f"{v:g}" for v in ann[common].sum(axis=0)) + "\n"
        )
        annot = pl.DataFrame({"CHR": ids["CHR"], "BP": bp, "SNP": snp, "CM": np.zeros(m)}).with_columns(
            [pl.Series(a, ann[:, i].astype(np.int64) if i <= nb else ann[:, i]) for i, a in enumerate(names)]
        )
        _gz(d / "annot" / f"baseline.{c}.annot.gz", annot)
        pl.DataFrame({"CHR": ids["CHR"], "SNP": snp, "A1": "A", "A2": "G", "MAF": maf, "NCHROBS": 1000}).write_csv(
            d / "frq" / f"1000G.{c}.frq", separator="\t"
        )
        for suffix in ("l2.ldscore.gz", "l2.M_5_50", "annot.gz"):
            _link(d / "annot" / f"baseline.{c}.{suffix}", d / "ref_ld" / f"{c}.{suffix}")
        _link(d / "weights" / f"weights.{c}.l2.ldscore.gz", d / "ref_wld" / f"{c}.l2.ldscore.gz")
        _link(d / "frq" / f"1000G.{c}.frq", d / "ref_frq" / f"{c}.frq")
        per = np.clip(l2 @ tau, 0.0, None) / n * 0.3
        sd = np.sqrt(per)[:, None] * (rng.standard_normal((m, n_traits)) @ Lg.T) * np.sqrt(Ns)[None, :]
        z_all.append(sd + rng.standard_normal((m, n_traits)))
        ids_all.append(snp)
    snp = np.concatenate(ids_all)
    z = np.concatenate(z_all)
    for t in range(n_traits):
        pl.DataFrame({"SNP": snp, "N": np.full(snp.shape[0], Ns[t]), "Z": z[:, t], "A1": "A", "A2": "G"}).write_parquet(
            out["traits"][t]
        )
        _gz(Path(out["gz"][t]), pl.read_parquet(out["traits"][t]))
    stamp.write_text(json.dumps(cfg))
    return out


def peak_rss_mb() -> float:
    """Peak resident set of this process (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(cfg: dict) -> None:
    from polgen.gsem.stratified import s_ldsc

    base = peak_rss_mb()
    t = time.perf_counter()
    res = s_ldsc(cfg["traits"], ld=cfg["ld"], wld=cfg["wld"], frq=cfg["frq"], trait_names=cfg["names"], n_blocks=200)
    sec = time.perf_counter() - t
    h2 = [float(res.S[0][i, i]) for i in range(res.k)]
    print(json.dumps({"seconds": sec, "maxrss_mb": peak_rss_mb(), "import_rss_mb": base,
                      "annotations": len(res.annotations), "h2": h2}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-snps", type=int, default=1_000_000)
    ap.add_argument("--n-annot", type=int, default=50)
    ap.add_argument("--n-chr", type=int, default=22)
    ap.add_argument("--traits", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/polgen-bench-sldsc"))
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(json.loads(a.child))
        return
    a.dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    cfg = make_inputs(a.dir, a.n_snps, a.n_annot, a.n_chr, a.traits)
    print(f"inputs ready in {time.perf_counter() - t:.1f} s ({a.dir})")
    load0 = os.getloadavg()
    r = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True, text=True)
    load1 = os.getloadavg()
    if r.returncode:
        sys.exit(r.stderr[-3000:])
    res = json.loads(r.stdout.strip().splitlines()[-1])
    print(
        f"polgen s_ldsc: {a.n_snps} SNPs x {a.n_annot} annotations x {a.traits} traits: {res['seconds']:.1f} s, "
        f"peak RSS {res['maxrss_mb']:.0f} MB (after imports {res['import_rss_mb']:.0f} MB), "
        f"{res['annotations']} annotations kept; load {load0[0]:.1f} -> {load1[0]:.1f}; cpus {os.cpu_count()}"
    )
    if not a.no_reference and REF_PY.exists():
        load0 = os.getloadavg()
        rr = subprocess.run([str(REF_PY), "-c", _REF_SCRIPT, json.dumps(cfg)], capture_output=True, text=True)
        if rr.returncode:
            print(f"genomicsem (Rust) s_ldsc failed: {rr.stderr.strip().splitlines()[-1:]}")
        else:
            ref = json.loads(rr.stdout.strip().splitlines()[-1])
            print(
                f"genomicsem (Rust) s_ldsc: {ref['seconds']:.1f} s, peak RSS {ref['maxrss_mb']:.0f} MB; "
                f"load {load0[0]:.1f} -> {os.getloadavg()[0]:.1f}"
            )
            if "h2" in ref:
                rel = np.max(np.abs(np.array(res["h2"]) - ref["h2"]) / np.abs(ref["h2"]))
                print(f"baseline h2 polgen {res['h2']} vs Rust {ref['h2']}: max rel diff {rel:.2e}")
            else:
                print(ref.get("note", ""))


if __name__ == "__main__":
    main()
