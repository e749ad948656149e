"""Benchmark polgen's ``gsem.hdl`` against the Rust GenomicSEM port's ``hdl`` (issue 11).

    python bench/gsem_hdl.py [--pieces-per-chr 20] [--snps-per-piece 200] [--traits 3]
                             [--dir /tmp/polgen-bench-hdl] [--method piecewise] [--r-parity]

Builds (once) a synthetic HDL panel with ``make_hdl_panel`` (22 chromosomes, AR(1) LD 0.8, eigenpairs
to 99% of the trace) and draws munged statistics on it with ``simulate_hdl_sumstats``, then runs, each
in its own process, polgen's ``hdl`` on the panel and the port's ``hdl`` on the same panel written in
the port's layout, and prints CPU seconds (user + system of the call, all threads), wall seconds, peak
RSS and the two results side by side.

The port's panel layout (``gsem::io::hdl_reader`` of genomicsem 0.2.0, read from its error messages
and its public sources): a folder with ``pieces.tsv`` (tab separated, one header line, rows
``chr piece n_snps``) and per piece ``chr{c}.{p}.snps.tsv`` (header, then ``SNP A1 A2 LDsc`` rows,
tab separated) and ``chr{c}.{p}.eigen.tsv`` (no header: first row the eigenvalues ``lam``, then one
row per SNP, its row of ``V``).  (Version 0.1.3's reader and its R ``convert_hdl_panels`` wrote no
eigen file; 0.2.0 requires it.)  The port reads as many vector rows as there are eigenvalues, so a
truncated decomposition (HDL's panels keep the eigenpairs to 99% of the trace: ``k < M``) makes it
index past its matrix and panic (``row < self.nrows()``, hdl.rs:276); the eigen files are therefore
written square, the dropped eigenpairs as zeros: in HDL's likelihood a zero eigenvalue has
``bstar = 0`` and a variance clipped to ``lim``, a constant that does not move the optimum.  Written
from polgen's opened panel at 17 significant digits.

``--r-parity`` runs the port on R GenomicSEM's stored hdl inputs (tests/data/gsem/r/hdl: the panel
converted to the port's layout, cases ``abc_piecewise``, ``abc_jackknife``, ``de_piecewise``,
``de_jackknife``) and prints its largest relative difference from R's S, I and V next to polgen's.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

REF_PY = Path(os.environ.get("GENOMICSEM_REF", "/tmp/genomicsem-ref")) / "bin" / "python"
R_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "gsem" / "r" / "hdl"

_REF_SCRIPT = r"""
import json, sys, time, resource
import numpy as np
import genomicsem as gs
cfg = json.loads(sys.argv[1])
r0 = resource.getrusage(resource.RUSAGE_SELF)
t = time.perf_counter()
res = gs.hdl(traits=cfg["gz"], sample_prev=cfg.get("sample_prev"), population_prev=cfg.get("population_prev"),
             trait_names=cfg["names"], ld_path=cfg["ref_panel"], n_ref=cfg["n_ref"], method=cfg["method"])
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": time.perf_counter() - t, "maxrss_mb": r1.ru_maxrss / 1024,
                  "cpu": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
                  "S": np.asarray(res.s).tolist(), "V": np.asarray(res.v).tolist(),
                  "I": np.asarray(res.i_mat).tolist()}))
"""


def port_panel(panel_path: Path, out: Path) -> Path:
    """Write an HDL panel (any layout polgen reads) in the port's text layout."""
    from polgen.io.hdl_panel import open_hdl_panel

    if (out / "pieces.tsv").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    panel = open_hdl_panel(panel_path)
    rows = []
    for pc in panel:
        a1 = np.full(pc.snps.shape[0], "N")  # the port reads A1 but HDL orients by A2 only
        if panel.fmt == "polgen":
            assert panel._snps is not None
            sub = panel._snps.filter((pl.col("CHR") == pc.chrom) & (pl.col("PIECE") == pc.piece))
            a1 = sub["A1"].to_numpy()
        pl.DataFrame({"SNP": pc.snps, "A1": a1, "A2": pc.a2, "LDsc": pc.ldsc}).write_csv(
            out / f"chr{pc.chrom}.{pc.piece}.snps.tsv", separator="\t", float_precision=17
        )
        m, k = pc.V.shape
        lam = np.zeros(m)
        lam[:k] = pc.lam
        V = np.zeros((m, m))
        V[:, :k] = pc.V
        np.savetxt(
            out / f"chr{pc.chrom}.{pc.piece}.eigen.tsv", np.vstack([lam[None, :], V]), fmt="%.17g", delimiter="\t"
        )
        rows.append((pc.chrom, pc.piece, pc.snps.shape[0]))
    pl.DataFrame(rows, schema=["chr", "piece", "n_snps"], orient="row").write_csv(out / "pieces.tsv", separator="\t")
    return out


def make_inputs(d: Path, per_chr: int, snps: int, k: int, eigen_cut: float, seed: int = 1) -> dict:
    from polgen.gsem import make_hdl_panel, simulate_hdl_sumstats

    key = {"per_chr": per_chr, "snps": snps, "k": k, "seed": seed, "eigen_cut": eigen_cut}
    stamp = d / "inputs.json"
    names = [f"T{i + 1}" for i in range(k)]
    cfg = {"panel": str(d / "panel"), "ref_panel": str(d / "panel_port"), "names": names,
           "gz": [str(d / f"{n}.sumstats.gz") for n in names], "n_ref": 335265.0}  # fmt: skip
    if stamp.exists() and json.loads(stamp.read_text()) == key:
        return cfg
    d.mkdir(parents=True, exist_ok=True)
    panel = make_hdl_panel(d / "panel", pieces_per_chromosome=per_chr, snps_per_piece=snps, decay=0.8,
                           eigen_cut=eigen_cut, seed=seed, overwrite=True)  # fmt: skip
    lam = np.linspace(0.7, 0.4, k)
    S = np.outer(lam, lam) * 0.5
    np.fill_diagonal(S, np.linspace(0.5, 0.3, k))
    frames = simulate_hdl_sumstats(panel, S, np.linspace(200_000, 100_000, k), trait_names=names, seed=seed)
    for n, path in zip(names, cfg["gz"]):
        with gzip.open(path, "wb", compresslevel=1) as fh:
            frames[n].select("SNP", "N", "Z", "A1", "A2").write_csv(fh, separator="\t")
    shutil.rmtree(d / "panel_port", ignore_errors=True)
    port_panel(d / "panel", d / "panel_port")
    stamp.write_text(json.dumps(key))
    return cfg


def child(cfg: dict) -> None:
    from polgen.gsem import hdl

    hdl(cfg["gz"][:2], trait_names=cfg["names"][:2], ld_path=cfg["warm_panel"], n_ref=cfg["n_ref"])  # numba load
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    res = hdl(cfg["gz"], cfg.get("sample_prev"), cfg.get("population_prev"), cfg["names"], ld_path=cfg["panel"],
              n_ref=cfg["n_ref"], method=cfg["method"])  # fmt: skip
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": time.perf_counter() - t, "maxrss_mb": r1.ru_maxrss / 1024,
                      "cpu": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
                      "S": res.S.tolist(), "V": res.V.tolist(), "I": res.I.tolist()}))  # fmt: skip


def _run(cmd: list[str]) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _maxrel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def r_parity(work: Path) -> None:
    cases = pl.read_csv(R_DIR / "cases.tsv", separator="\t", infer_schema=False)
    ref_panel = port_panel(R_DIR / "panel", work / "r_panel_port")
    for c in cases.iter_rows(named=True):
        prev = [None if v == "NA" or float(v) < 0 else float(v) for v in c["sample_prev"].split(",")]
        pop = [None if v == "NA" or float(v) < 0 else float(v) for v in c["population_prev"].split(",")]
        cfg = {"gz": [str(R_DIR / f) for f in c["files"].split(",")], "names": c["names"].split(","),
               "ref_panel": str(ref_panel), "panel": str(R_DIR / "panel"),
               "warm_panel": str(R_DIR / "panel"),
               "n_ref": float(c["nref"]), "method": c["method"],
               "sample_prev": prev if len(prev) > 1 else None,
               "population_prev": pop if len(pop) > 1 else None}  # fmt: skip
        R = {x: np.loadtxt(R_DIR / f"{c['case']}_{x}.tsv") for x in "SIV"}
        line = [f"{c['case']}:"]
        for who, cmd in (("polgen", [sys.executable, __file__, "--child", json.dumps(cfg)]),
                         ("port", [str(REF_PY), "-c", _REF_SCRIPT, json.dumps(cfg)])):  # fmt: skip
            if who == "port" and not REF_PY.exists():
                continue
            out = _run(cmd)
            if "error" in out:
                line.append(f"{who} failed ({out['error']})")
                continue
            rel = ", ".join(f"{x} {_maxrel(out[x], R[x]):.1e}" for x in "SIV")
            line.append(f"{who} vs R: {rel} (S[0,0] {out['S'][0][0]:.5f})")
        print("  ".join(line) + f"  R S[0,0] {R['S'][0, 0]:.5f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pieces-per-chr", type=int, default=20)
    ap.add_argument("--snps-per-piece", type=int, default=200)
    ap.add_argument("--traits", type=int, default=3)
    ap.add_argument("--eigen-cut", type=float, default=0.99, help="1.0: full decompositions (no zero padding)")
    ap.add_argument("--method", default="piecewise", choices=["piecewise", "jackknife"])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/polgen-bench-hdl"))
    ap.add_argument("--r-parity", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(json.loads(a.child))
        return
    if a.r_parity:
        r_parity(a.dir)
        return
    t = time.perf_counter()
    cfg = make_inputs(a.dir, a.pieces_per_chr, a.snps_per_piece, a.traits, a.eigen_cut)
    cfg.update(method=a.method, warm_panel=str(R_DIR / "panel"))
    cfg["gz_warm"] = cfg["gz"]
    n = 22 * a.pieces_per_chr * a.snps_per_piece
    print(f"inputs ready in {time.perf_counter() - t:.1f} s ({a.dir}): {n} SNPs, {22 * a.pieces_per_chr} pieces")
    load0 = os.getloadavg()[0]
    pg = _run([sys.executable, __file__, "--child", json.dumps(cfg)])
    load1 = os.getloadavg()[0]
    if "error" in pg:
        sys.exit(f"polgen failed: {pg['error']}")
    print(f"polgen hdl ({a.method}, {a.traits} traits): {pg['cpu']:.1f} s CPU, {pg['seconds']:.1f} s wall, "
          f"peak RSS {pg['maxrss_mb']:.0f} MB; load {load0:.1f} -> {load1:.1f}")  # fmt: skip
    if not REF_PY.exists():
        return
    ref = _run([str(REF_PY), "-c", _REF_SCRIPT, json.dumps(cfg)])
    if "error" in ref:
        print(f"genomicsem (Rust) hdl failed: {ref['error']}")
        return
    print(f"genomicsem (Rust) hdl ({a.method}): {ref['cpu']:.1f} s CPU, {ref['seconds']:.1f} s wall, "
          f"peak RSS {ref['maxrss_mb']:.0f} MB; load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"CPU ratio polgen / port: {pg['cpu'] / max(ref['cpu'], 1e-9):.2f}")
    for x in "SIV":
        print(f"{x}: port vs polgen max rel diff {_maxrel(ref[x], pg[x]):.2e}")
    print(f"diag(S): polgen {np.round(np.diag(pg['S']), 4).tolist()}, port {np.round(np.diag(ref['S']), 4).tolist()}")


if __name__ == "__main__":
    main()
