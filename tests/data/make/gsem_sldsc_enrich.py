"""Produce the stored R s_ldsc / enrich reference outputs (tests/data/gsem/r/sldsc_enrich/) with R.

    python tests/data/make/gsem_sldsc_enrich.py GENOMICSEM_R_DIR [--out DIR]

Writes small synthetic baseline-LD style inputs (two chromosomes; annotations ``base`` (all SNPs),
``A`` and ``B`` (binary), ``Aflanking.500`` (binary, a flanking window), ``C`` (continuous); an
extra single-annotation set ``extra/extra.`` for R's ``ld = c(baseline, extra)`` form), regression
weights, ``.frq`` files with MAF on both sides of the 5% filter and three traits simulated from the
stratified LDSC model (a one-factor genetic covariance, per-annotation taus, SNPs missing from one
trait, flipped alleles, chi^2 outliers), then runs ``gsem_sldsc_enrich.R`` (R GenomicSEM's own
``s_ldsc`` and ``enrich``, sourced from GENOMICSEM_R_DIR) on the cases listed below and keeps the
inputs and R's outputs.  Needs Rscript with data.table, plyr, gdata, stringr, Matrix and lavaan.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
OUT = ROOT / "tests" / "data" / "gsem" / "r" / "sldsc_enrich"

N_PER_CHR = 1500
ANNOTS = ["base", "A", "B", "Aflanking.500", "C"]
TAU = {"base": 0.6, "A": 1.2, "B": 0.5, "Aflanking.500": 0.1, "C": 0.05}
# (case, n_blocks, exclude_cont, prevalences for T1, ld prefixes)
SLDSC_CASES = [
    ("cont", 20, True, False, "annot/baseline."),
    ("all", 30, False, True, "annot/baseline."),
    ("extra", 25, True, False, "annot/baseline.,extra/extra."),
]
# (case, s_ldsc case, model, params, fix, std_lv, rm_flank, tau)
ENRICH_CASES = [
    ("var", "cont", "F1 =~ T1 + T2 + T3\\nF1 ~~ F1", "F1~~F1", "regressions", False, True, False),
    ("stdlv", "cont", "F1 =~ T1 + T2 + T3", "F1=~T1,F1=~T2", "variances", True, True, False),
    ("tau", "all", "F1 =~ T1 + T2 + T3", "F1~~F1", "regressions", False, False, True),
    ("rg", "extra", "T1 ~~ T2", "T1~~T2", "regressions", False, True, False),
    ("cov", "cont", "T1 ~~ T2 + T3\\nT2 ~~ T3", "T1~~T1,T2~~T3", "covariances", False, True, False),
]


def _gz(path: Path, df: pl.DataFrame) -> None:
    with gzip.open(path, "wb") as fh:
        fh.write(df.write_csv(separator="\t", float_precision=None).encode())


def make_inputs(d: Path, seed: int = 11) -> None:
    rng = np.random.default_rng(seed)
    for sub in ("annot", "weights", "frq", "extra"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    ld_rows, sid = [], 0
    for chrom in (1, 2):
        n = N_PER_CHR
        snp = [f"rs{sid + i + 1}" for i in range(n)]
        sid += n
        bp = np.sort(rng.choice(np.arange(1000, 10_000_000), n, replace=False))
        cm = np.round(bp / 1e6, 4)
        maf = np.round(rng.uniform(0.01, 0.5, n), 4)
        ann = {
            "base": np.ones(n),
            "A": (rng.uniform(size=n) < 0.3).astype(float),
            "B": (rng.uniform(size=n) < 0.2).astype(float),
            "Aflanking.500": (rng.uniform(size=n) < 0.25).astype(float),
            "C": np.round(rng.normal(0.0, 1.0, n), 3),
        }
        extra = (rng.uniform(size=n) < 0.15).astype(float)
        # LD scores: a smooth local LD level times each annotation's local share
        level = np.round(rng.gamma(4.0, 2.5, n), 3)
        l2 = {"base": level}
        for a in ANNOTS[1:]:
            share = rng.uniform(0.05, 0.5, n) if a != "C" else rng.normal(0.0, 0.5, n)
            l2[a] = np.round(level * share + ann[a] * (a != "C"), 3)
        l2_extra = np.round(level * rng.uniform(0.05, 0.3, n) + extra, 3)
        base_cols = {"CHR": [chrom] * n, "SNP": snp, "BP": bp}
        _gz(
            d / "annot" / f"baseline.{chrom}.l2.ldscore.gz",
            pl.DataFrame({**base_cols, **{f"{a}L2": l2[a] for a in ANNOTS}}),
        )
        _gz(d / "extra" / f"extra.{chrom}.l2.ldscore.gz", pl.DataFrame({**base_cols, "L2": l2_extra}))
        _gz(
            d / "weights" / f"weights.{chrom}.l2.ldscore.gz",
            pl.DataFrame({**base_cols, "L2": np.round(level * rng.uniform(0.7, 1.0, n), 3)}),
        )
        common = maf > 0.05
        m = [float(ann[a][common].sum()) for a in ANNOTS]
        (d / "annot" / f"baseline.{chrom}.l2.M_5_50").write_text("\t".join(f"{v:g}" for v in m) + "\n")
        (d / "annot" / f"baseline.{chrom}.l2.M").write_text("\t".join(f"{ann[a].sum():g}" for a in ANNOTS) + "\n")
        (d / "extra" / f"extra.{chrom}.l2.M_5_50").write_text(f"{extra[common].sum():g}\n")
        _gz(
            d / "annot" / f"baseline.{chrom}.annot.gz",
            pl.DataFrame({"CHR": [chrom] * n, "BP": bp, "SNP": snp, "CM": cm, **ann}),
        )
        _gz(
            d / "extra" / f"extra.{chrom}.annot.gz",
            pl.DataFrame({"CHR": [chrom] * n, "BP": bp, "SNP": snp, "CM": cm, "ANNOT": extra}),
        )
        a1 = rng.choice(["A", "C", "G", "T"], n)
        a2 = np.where(a1 == "A", "G", "A")
        (d / "frq" / f"1000G.{chrom}.frq").write_text(
            pl.DataFrame(
                {"CHR": [chrom] * n, "SNP": snp, "A1": a1, "A2": a2, "MAF": maf, "NCHROBS": [1000] * n}
            ).write_csv(separator="\t")
        )
        ld_rows.append(pl.DataFrame({"SNP": snp, "A1": a1, "A2": a2, **{a: l2[a] for a in ANNOTS}}))
    ld = pl.concat(ld_rows)
    nsnp = ld.height
    # per-SNP genetic variance sum_c tau_c l_c / M, a one-factor genetic covariance
    lam = np.array([0.8, 0.7, 0.6])
    G = np.outer(lam, lam) + np.diag([0.2, 0.3, 0.4])
    per = sum(TAU[a] * ld[a].to_numpy() for a in ANNOTS) / nsnp * 0.15
    Ns = [6000.0, 8000.0, 5000.0]
    Nvec = np.sqrt(np.outer(Ns, Ns))
    Iint = np.array([[1.02, 0.1, 0.05], [0.1, 1.0, 0.08], [0.05, 0.08, 1.04]])
    cov = Iint[None] + per[:, None, None] * G[None] * Nvec[None]
    L = np.linalg.cholesky(cov)
    Z = np.einsum("nij,nj->ni", L, rng.standard_normal((nsnp, 3)))
    for t in range(3):
        z = Z[:, t].copy()
        keep = rng.uniform(size=nsnp) > 0.04  # SNPs missing from this trait
        a1, a2 = ld["A1"].to_numpy().copy(), ld["A2"].to_numpy().copy()
        flip = rng.uniform(size=nsnp) < (0.3 if t == 1 else 0.0)
        a1[flip], a2[flip] = ld["A2"].to_numpy()[flip], ld["A1"].to_numpy()[flip]
        z[flip] = -z[flip]
        z[rng.choice(nsnp, 3, replace=False)] = 10.0  # chi^2 outliers
        N = np.round(Ns[t] * rng.uniform(0.9, 1.1, nsnp))
        df = pl.DataFrame({"SNP": ld["SNP"], "N": N, "Z": np.round(z, 5), "A1": a1, "A2": a2}).filter(pl.Series(keep))
        df = df.sample(fraction=1.0, shuffle=True, seed=seed + t)
        _gz(d / f"T{t + 1}.sumstats.gz", df)
    (d / "sldsc_cases.tsv").write_text(
        "case\tnb\texclude_cont\tprev\tld\n"
        + "".join(f"{c}\t{nb}\t{str(e).upper()}\t{str(p).upper()}\t{ld}\n" for c, nb, e, p, ld in SLDSC_CASES)
    )
    (d / "enrich_cases.tsv").write_text(
        "case\tsldsc\tmodel\tparams\tfix\tstd_lv\trm_flank\ttau\n"
        + "".join(
            f"{c}\t{s}\t{m}\t{p}\t{f}\t{str(sl).upper()}\t{str(rf).upper()}\t{str(ta).upper()}\n"
            for c, s, m, p, f, sl, rf, ta in ENRICH_CASES
        )
    )


def make_handmade(d: Path, seed: int = 3) -> None:
    """A hand-made stratified covstruc for enrich's smoothing paths: annotation AL2 with a non
    positive definite S (a covariance above the product of the SDs), BL2 with every heritability
    negative, CL2 with a non positive definite V."""
    rng = np.random.default_rng(seed)
    lam = np.array([0.35, 0.3, 0.25])

    def s_of(scale, resid):
        return scale * np.outer(lam, lam) + np.diag(resid)

    S = [
        s_of(1.0, [0.02, 0.03, 0.02]),
        s_of(0.6, [0.0, 0.0, 0.0]),
        -s_of(0.2, [0.01] * 3),
        s_of(0.25, [0.01, 0.005, 0.01]),
    ]
    S[1][0, 1] = S[1][1, 0] = S[1][0, 1] * 1.6

    def v_of(sc):
        a = rng.normal(0, 1, (6, 6))
        return sc * (a @ a.T / 6 + np.eye(6)) * 1e-4

    V = [v_of(1), v_of(2), v_of(2), v_of(3)]
    w, q = np.linalg.eigh(V[3])
    w[0] = -abs(w[0]) * 0.5
    V[3] = q @ np.diag(w) @ q.T
    V[3] = (V[3] + V[3].T) / 2
    obj = {
        "annotations": ["baseL2", "AL2", "BL2", "CL2"],
        "trait_names": ["T1", "T2", "T3"],
        "S": [x.tolist() for x in S],
        "V": [x.tolist() for x in V],
        "prop": [1, 0.3, 0.2, 0.1],
        "select_names": ["A", "B", "C"],
        "select": [1, 1, 1],
    }
    (d / "handmade.json").write_text(json.dumps(obj, indent=1))


def parse_out(path: Path) -> dict:
    out: dict = {}
    for line in path.read_text().splitlines():
        if not line.startswith("@@"):
            continue
        parts = line.split()
        key, vals = parts[1], parts[2:]
        if key in ("names", "Select_names", "base_fixed") or key.startswith(("ann.", "par.", "base_par")):
            out[key] = vals
        else:
            out[key] = [float(v) if v not in ("NA", "NaN") else None for v in vals]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("genomicsem_r", type=Path)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--only",
        choices=["all", "handmade"],
        default="all",
        help="handmade: only the hand-made enrich case, merged into the existing r_out.json",
    )
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.only == "all":
        make_inputs(a.out)
    make_handmade(a.out)
    cmd = ["Rscript", str(HERE / "gsem_sldsc_enrich.R"), str(a.genomicsem_r), str(a.out), a.only]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"Rscript failed:\n{res.stderr[-4000:]}")
    if a.only == "all":
        ref = {
            "sldsc": {c[0]: parse_out(a.out / f"sldsc_{c[0]}.txt") for c in SLDSC_CASES},
            "enrich": {c[0]: parse_out(a.out / f"enrich_{c[0]}.txt") for c in ENRICH_CASES},
        }
    else:
        ref = json.loads((a.out / "r_out.json").read_text())
    ref["enrich"]["handmade"] = parse_out(a.out / "enrich_handmade.txt")
    (a.out / "r_out.json").write_text(json.dumps(ref, indent=1))
    for f in list(a.out.glob("sldsc_*.txt")) + list(a.out.glob("enrich_*.txt")) + list(a.out.glob("log_*")):
        f.unlink()


if __name__ == "__main__":
    main()
