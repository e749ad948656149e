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
as the directories it reads) in a subprocess too, and the two results are compared.

The port's input layout (its ``annot_reader``): ``ld``, ``wld`` and ``frq`` are *directories* holding
``{chr}.l2.ldscore.gz`` (CHR SNP BP + one column per annotation; CM/MAF ignored), ``{chr}.l2.M_5_50``,
``{chr}.l2.ldscore.gz`` weights (SNP, L2) and ``{chr}.frq`` (SNP, MAF) for chromosomes 1..22, every one
required; it reads no ``.annot`` file.  Its ``exclude_cont`` tests the *LD scores* for 0/1 values
(never true), so with the default ``exclude_cont=True`` it drops every annotation and stops with
"no annotations provided": the port runs here with ``exclude_cont=False``, and so does polgen, on the
same 50 annotations.  A non-empty ``frq`` makes the port drop regression SNPs with MAF outside
(0.05, 0.95) (R and polgen use ``.frq`` only for the overlap matrix), so the port gets ``frq=""``.

``--r-parity`` instead runs polgen and the port on R's own stored s_ldsc inputs
(tests/data/gsem/r/sldsc_enrich, cases ``all`` and ``cont``; its 2 chromosomes split into 22 files
for the port, M counts in the first file of each, continuous ``CL2`` removed for ``cont``) and prints
each one's largest relative difference from R's S, S_Tau and I.
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
import numpy as np
import genomicsem as gs
cfg = json.loads(sys.argv[1])
out = {}
try:  # the port's default: exclude_cont=True
    gs.s_ldsc(traits=cfg["gz"], ld=cfg["ref_ld"], wld=cfg["ref_wld"], frq="", trait_names=cfg["names"],
              n_blocks=cfg.get("n_blocks", 200), exclude_cont=True)
except Exception as exc:
    out["exclude_cont_true"] = f"{type(exc).__name__}: {exc}"
r0 = resource.getrusage(resource.RUSAGE_SELF)
t = time.perf_counter()
res = gs.s_ldsc(traits=cfg["gz"], sample_prev=cfg.get("sample_prev"), population_prev=cfg.get("population_prev"),
                ld=cfg["ref_ld"], wld=cfg["ref_wld"], frq="", trait_names=cfg["names"],
                n_blocks=cfg.get("n_blocks", 200), exclude_cont=False)
r1 = resource.getrusage(resource.RUSAGE_SELF)
out.update({"seconds": time.perf_counter() - t, "cpu": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
            "maxrss_mb": r1.ru_maxrss / 1024, "annotations": list(res["annotations"]),
            "S": [np.asarray(m).tolist() for m in res["S_annot"]], "I": np.asarray(res["I"]).tolist()})
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
    c0 = time.process_time()
    res = s_ldsc(cfg["traits"], cfg.get("sample_prev"), cfg.get("population_prev"), ld=cfg["ld"], wld=cfg["wld"],
                 frq=cfg["frq"], trait_names=cfg["names"], n_blocks=cfg.get("n_blocks", 200),
                 exclude_cont=cfg.get("exclude_cont", False))  # fmt: skip
    cpu = time.process_time() - c0
    sec = time.perf_counter() - t
    print(json.dumps({"seconds": sec, "cpu": cpu, "maxrss_mb": peak_rss_mb(), "import_rss_mb": base,
                      "annotations": res.annotations, "S": [m.tolist() for m in res.S],
                      "S_Tau": [m.tolist() for m in res.S_Tau], "I": res.I.tolist()}))  # fmt: skip


def _maxrel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def compare(pg: dict, ref: dict) -> None:
    """Print how far the port's per-annotation S and I are from polgen's S (overlap-adjusted) and S_Tau."""
    names = [a.removesuffix("L2") for a in ref["annotations"]]
    idx = {a.removesuffix("L2"): i for i, a in enumerate(pg["annotations"])}
    common = [(i, idx[a]) for i, a in enumerate(names) if a in idx]
    print(f"annotations: polgen {len(pg['annotations'])}, port {len(names)}, in both {len(common)}")
    print(f"I: port vs polgen max rel diff {_maxrel(ref['I'], pg['I']):.2e}")
    for what in ("S", "S_Tau"):
        d = [_maxrel(ref["S"][i], pg[what][j]) for i, j in common]
        print(f"port S vs polgen {what}: max rel diff over annotations {max(d):.2e} (baseline {d[0]:.2e})")
    h2p = np.diag(np.asarray(pg["S"][common[0][1]]))
    h2r = np.diag(np.asarray(ref["S"][common[0][0]]))
    print(f"baseline h2: polgen {np.round(h2p, 5).tolist()}, port {np.round(h2r, 5).tolist()}")


R_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "gsem" / "r" / "sldsc_enrich"


def port_layout_from_r(out: Path, drop: tuple[str, ...] = ()) -> dict:
    """R's 2-chromosome s_ldsc inputs as the port's 22 directories: each chromosome's rows split in 11
    files in order (the SNP order, hence the jackknife blocks, unchanged), its M counts in the first."""
    for sub in ("ld", "wld"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    c = 1
    for chrom in (1, 2):
        ld = pl.read_csv(R_DIR / "annot" / f"baseline.{chrom}.l2.ldscore.gz", separator="\t")
        keep = [i for i, a in enumerate(ld.columns[3:]) if a not in drop]
        ld = ld.select([x for x in ld.columns if x not in drop])
        m = np.array((R_DIR / "annot" / f"baseline.{chrom}.l2.M_5_50").read_text().split(), dtype=float)[keep]
        w = pl.read_csv(R_DIR / "weights" / f"weights.{chrom}.l2.ldscore.gz", separator="\t")
        for j, rows in enumerate(np.array_split(np.arange(ld.height), 11)):
            sub = ld[rows]
            _gz(out / "ld" / f"{c}.l2.ldscore.gz", sub)
            (out / "ld" / f"{c}.l2.M_5_50").write_text("\t".join(f"{v:g}" for v in (m if j == 0 else 0 * m)) + "\n")
            _gz(out / "wld" / f"{c}.l2.ldscore.gz", w.filter(pl.col("SNP").is_in(sub["SNP"].implode())))
            c += 1
    return {"ref_ld": str(out / "ld"), "ref_wld": str(out / "wld")}


def r_parity(work: Path) -> None:
    R = json.loads((R_DIR / "r_out.json").read_text())["sldsc"]
    cases = {"all": (30, False, [0.5, None, None], [0.1, None, None]), "cont": (20, True, None, None)}
    for case, (nb, excl, sp, pp) in cases.items():
        r = R[case]
        k = 3
        n_f = len(r["names"])
        rS = [np.asarray(r[f"S.{f + 1}"]).reshape(k, k, order="F") for f in range(n_f)]
        rT = [np.asarray(r[f"S_Tau.{f + 1}"]).reshape(k, k, order="F") for f in range(n_f)]
        rI = np.asarray(r["I"]).reshape(k, k, order="F")
        cfg = {"traits": [str(R_DIR / f"T{i}.sumstats.gz") for i in (1, 2, 3)], "names": ["T1", "T2", "T3"],
               "ld": str(R_DIR / "annot" / "baseline."), "wld": str(R_DIR / "weights" / "weights."),
               "frq": str(R_DIR / "frq" / "1000G."), "n_blocks": nb, "exclude_cont": excl,
               "sample_prev": sp, "population_prev": pp}  # fmt: skip
        cfg["gz"] = cfg["traits"]
        cfg.update(port_layout_from_r(work / f"rparity_{case}", drop=("CL2",) if excl else ()))
        p = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True, text=True)
        if p.returncode:
            sys.exit(p.stderr[-3000:])
        pg = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"R case {case!r} ({n_f} annotations, {nb} blocks, exclude_cont={excl}):")
        pg_s = max(_maxrel(a, b) for a, b in zip(pg["S"], rS))
        pg_t = max(_maxrel(a, b) for a, b in zip(pg["S_Tau"], rT))
        print(f"  polgen vs R: S {pg_s:.1e}, S_Tau {pg_t:.1e}, I {_maxrel(pg['I'], rI):.1e}")
        if not REF_PY.exists():
            continue
        rr = subprocess.run([str(REF_PY), "-c", _REF_SCRIPT, json.dumps(cfg)], capture_output=True, text=True)
        if rr.returncode:
            print(f"  port failed: {rr.stderr.strip().splitlines()[-1:]}")
            continue
        ref = json.loads(rr.stdout.strip().splitlines()[-1])
        rf_s = max(_maxrel(a, b) for a, b in zip(ref["S"], rS))
        rf_t = max(_maxrel(a, b) for a, b in zip(ref["S"], rT))
        print(f"  port vs R:   S {rf_s:.1e}, S_Tau {rf_t:.1e}, I {_maxrel(ref['I'], rI):.1e}")

        def h2(m) -> list:
            return np.round(np.diag(np.asarray(m)), 4).tolist()

        print(f"  baseline h2: R S {h2(rS[0])}, R S_Tau {h2(rT[0])}, polgen S {h2(pg['S'][0])}, port {h2(ref['S'][0])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-snps", type=int, default=1_000_000)
    ap.add_argument("--n-annot", type=int, default=50)
    ap.add_argument("--n-chr", type=int, default=22)
    ap.add_argument("--traits", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/polgen-bench-sldsc"))
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--r-parity", action="store_true", help="compare polgen and the port with R's stored outputs")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(json.loads(a.child))
        return
    a.dir.mkdir(parents=True, exist_ok=True)
    if a.r_parity:
        r_parity(a.dir)
        return
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
        f"polgen s_ldsc (exclude_cont=False): {a.n_snps} SNPs x {a.n_annot} annotations x {a.traits} traits: "
        f"{res['seconds']:.1f} s wall, {res['cpu']:.1f} s CPU, peak RSS {res['maxrss_mb']:.0f} MB "
        f"(after imports {res['import_rss_mb']:.0f} MB); load {load0[0]:.1f} -> {load1[0]:.1f}; cpus {os.cpu_count()}"
    )
    if not a.no_reference and REF_PY.exists():
        load0 = os.getloadavg()
        rr = subprocess.run([str(REF_PY), "-c", _REF_SCRIPT, json.dumps(cfg)], capture_output=True, text=True)
        if rr.returncode:
            print(f"genomicsem (Rust) s_ldsc failed: {rr.stderr.strip().splitlines()[-1:]}")
            return
        ref = json.loads(rr.stdout.strip().splitlines()[-1])
        print(f"genomicsem (Rust) s_ldsc, default exclude_cont=True: {ref.get('exclude_cont_true', 'ran')}")
        print(
            f"genomicsem (Rust) s_ldsc (exclude_cont=False, frq=''): {ref['seconds']:.1f} s wall, "
            f"{ref['cpu']:.1f} s CPU, peak RSS {ref['maxrss_mb']:.0f} MB; "
            f"load {load0[0]:.1f} -> {os.getloadavg()[0]:.1f}"
        )
        print(f"CPU ratio polgen / port: {res['cpu'] / max(ref['cpu'], 1e-9):.2f}")
        compare(res, ref)


if __name__ == "__main__":
    main()
