"""Produce tests/data/gsem/r/multi/ (inputs.json + outputs.json) with R GenomicSEM's addSNPs,
addGenes, multiSNP, multiGene and usermodel (on the multiSNP / multiGene output, DWLS and ML).

    python tests/data/make/gsem_multi.py GENOMICSEM_R_DIR [--out DIR]

GENOMICSEM_R_DIR is the ``R/`` directory of a checkout of the public GenomicSEM repository
(https://github.com/GenomicSEM/GenomicSEM, GPL-3.0; commit in tests/data/gsem/PROVENANCE.md); its
code is sourced at run time by gsem_multi.R and never copied into polgen.  Needs ``Rscript`` with
lavaan, Matrix, jsonlite, dplyr, stringr and gdata.

The inputs are synthetic: a 3-trait covstruc whose diag(I) has a value below 1 (clamped to 1 by R)
and unequal cross-trait intercepts, a second one with equal cross-trait intercepts, a third whose
intercepts make every V_full non positive definite (nearPD smoothing); 8 SNPs (one whose S_full
needs nearPD), 5 TWAS genes; LD matrices named ``rs_A1_A2`` with one allele flipped against the
sumstats.  multiSNP/multiGene cases keep to the inputs where R's construction of the cross-SNP
cross-trait block is self-consistent (two SNPs, or equal LD and equal cross-trait intercepts), plus
one case (``ms_k2_f3_unequal``) that records R's use of the last SNP pair's LD there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def _covstruc(I_off: tuple[float, float, float], diag: tuple[float, float, float]) -> dict:
    traits = ["T1", "T2", "T3"]
    lam = np.array([0.55, 0.45, 0.6])
    S = np.outer(lam, lam) + np.diag([0.12, 0.2, 0.1])
    rng = np.random.default_rng(7)
    A = rng.normal(size=(6, 6)) * 0.01
    V = A @ A.T + np.diag(rng.uniform(2e-4, 6e-4, 6))
    I = np.diag(diag)
    I[1, 0] = I[0, 1] = I_off[0]
    I[2, 0] = I[0, 2] = I_off[1]
    I[2, 1] = I[1, 2] = I_off[2]
    return {"traits": traits, "S": S.tolist(), "V": V.tolist(), "I": I.tolist()}


def _sub2(c: dict) -> dict:
    """The first two traits of a covstruc (V rows of vech(S) positions 0, 1, 3)."""
    S, V, I = np.array(c["S"]), np.array(c["V"]), np.array(c["I"])
    keep = [0, 1, 3]
    return {
        "traits": c["traits"][:2],
        "S": S[:2, :2].tolist(),
        "V": V[np.ix_(keep, keep)].tolist(),
        "I": I[:2, :2].tolist(),
    }


def inputs() -> dict:
    rng = np.random.default_rng(11)
    cov = {
        "main": _covstruc((0.06, 0.03, 0.09), (1.04, 0.97, 1.08)),
        "equal": _covstruc((0.05, 0.05, 0.05), (1.03, 1.0, 1.06)),
        "vnpd": _covstruc((1.3, 0.03, 0.09), (1.01, 1.02, 1.0)),
    }
    cov["main2"] = _sub2(cov["main"])
    n = 8
    snps: dict[str, list] = {
        "SNP": [f"rs{i + 1}" for i in range(n)],
        "CHR": ["1"] * n,
        "BP": [1000 + 37 * i for i in range(n)],
        "MAF": rng.uniform(0.08, 0.45, n).round(4).tolist(),
        "A1": ["A", "C", "G", "T", "A", "C", "G", "T"],
        "A2": ["G", "T", "A", "C", "G", "T", "A", "C"],
    }
    lam = (0.55, 0.45, 0.6)  # effects through one factor plus a little noise: models that fit
    eff = rng.normal(0, 0.03, n)
    for t, lt in zip(("T1", "T2", "T3"), lam):
        snps[f"beta.{t}"] = (lt * eff + rng.normal(0, 0.003, n)).round(5).tolist()
        snps[f"se.{t}"] = rng.uniform(0.004, 0.009, n).round(5).tolist()
    snps["beta.T1"][5] = 1.9  # S_full of rs6 is not positive definite: nearPD
    g = 5
    genes: dict[str, list] = {
        "Gene": [f"G{i + 1}" for i in range(g)],
        "Panel": ["P1", "P1", "P2", "P2", "P1"],
        "HSQ": rng.uniform(0.01, 0.08, g).round(4).tolist(),
    }
    geff = rng.normal(0, 0.3, g)
    for t, lt in zip(("T1", "T2", "T3"), lam):
        genes[f"beta.{t}"] = (lt * geff + rng.normal(0, 0.02, g)).round(4).tolist()
        genes[f"se.{t}"] = rng.uniform(0.04, 0.09, g).round(4).tolist()
    ld = {
        # rs2 is named with the other allele first (C is its A1 in the sumstats): R flips its LD signs
        "snp2": {"names": ["rs1_A_G", "rs2_T_C"], "matrix": [[1.0, 0.3], [0.3, 1.0]]},
        "snp3eq": {
            "names": ["rs1_A_G", "rs3_G_A", "rs4_T_C"],
            "matrix": [[1.0, 0.15, 0.15], [0.15, 1.0, 0.15], [0.15, 0.15, 1.0]],
        },
        "snp3uneq": {
            "names": ["rs1_A_G", "rs3_G_A", "rs4_T_C"],
            "matrix": [[1.0, 0.3, -0.1], [0.3, 1.0, 0.2], [-0.1, 0.2, 1.0]],
        },
        "gene2": {"names": ["G1", "G2"], "matrix": [[1.0, 0.25], [0.25, 1.0]]},
        "gene3eq": {"names": ["G3", "G4", "G5"], "matrix": [[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.2, 1.0]]},
    }
    one = "F1 =~ T1 + T2 + T3\nF1 ~ {x}"
    add_cases = [
        {"case": "add_standard", "kind": "snps", "covstruc": "main", "GC": "standard", "SNPSE": None},
        {"case": "add_conserv", "kind": "snps", "covstruc": "main", "GC": "conserv", "SNPSE": None},
        {"case": "add_none_snpse", "kind": "snps", "covstruc": "main", "GC": "none", "SNPSE": 0.002},
        {"case": "add_vnpd", "kind": "snps", "covstruc": "vnpd", "GC": "standard", "SNPSE": None},
        {"case": "genes_standard", "kind": "genes", "covstruc": "main", "GC": "standard", "SNPSE": None},
        {"case": "genes_conserv", "kind": "genes", "covstruc": "main", "GC": "conserv", "SNPSE": None},
    ]
    multi_cases = [
        {"case": "ms_k3_f2", "kind": "snps", "covstruc": "main", "ld": "snp2", "model": one.format(x="rs1 + rs2")},
        {
            "case": "ms_k3_f3_equal",
            "kind": "snps",
            "covstruc": "equal",
            "ld": "snp3eq",
            "model": one.format(x="rs1 + rs3 + rs4"),
        },
        {"case": "ms_k2_f3_unequal", "kind": "snps", "covstruc": "main2", "ld": "snp3uneq", "model": None},
        {"case": "mg_k3_f2", "kind": "genes", "covstruc": "main", "ld": "gene2", "model": one.format(x="G1 + G2")},
        {
            "case": "mg_k3_f3_equal",
            "kind": "genes",
            "covstruc": "equal",
            "ld": "gene3eq",
            "model": one.format(x="G3 + G4 + G5"),
        },
    ]
    # rows of the sumstats each multi case passes (R orders them by the LD names itself)
    multi_rows = {
        "ms_k3_f2": [2, 1],
        "ms_k3_f3_equal": [1, 3, 4],
        "ms_k2_f3_unequal": [1, 3, 4],
        "mg_k3_f2": [1, 2],
        "mg_k3_f3_equal": [3, 4, 5],
    }
    return {
        "covstruc": cov,
        "snps": snps,
        "genes": genes,
        "ld": ld,
        "add_cases": add_cases,
        "multi_cases": multi_cases,
        "multi_rows": multi_rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rdir", help="GenomicSEM R/ directory")
    ap.add_argument("--out", default=str(ROOT / "tests/data/gsem/r/multi"), help="output directory")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "inputs.json").write_text(json.dumps(inputs(), indent=1))
    res = subprocess.run(["Rscript", str(HERE / "gsem_multi.R"), a.rdir, str(out)], capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"gsem_multi.R failed:\n{res.stderr[-4000:]}")
    print(f"wrote {out / 'inputs.json'} and {out / 'outputs.json'}")


if __name__ == "__main__":
    main()
