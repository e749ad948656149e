"""Produce the R reference outputs of tests/data/gsem/r/gls_tools/ once, with R.

    python tests/data/make/gsem_gls_tools.py GENOMICSEM_R_DIR [--out DIR]

Writes the inputs (``inputs.json`` and the FUSION ``.dat`` files, made here with numpy seeds) and
runs ``gsem_gls_tools.R``, which sources R GenomicSEM's own ``summaryGLS.R``, ``summaryGLSbands.R``,
``subSV.R``, ``indexS.R``, ``read_fusion.R``, ``qtrait.r``, ``localSRMD.R`` (and ``usermodel.R``,
``utils.R`` for QTrait) from GENOMICSEM_R_DIR and writes ``r_out.json`` (17 significant digits).
QTrait loads ggrepel, corrplot and ggpubr, which only draw; the R script installs empty stand-in
packages of those names (and of GenomicSEM itself, whose functions are the sourced ones) into a
temporary library.  Needs Rscript with lavaan, Matrix, gdata, stringr, data.table, dplyr, tidyr,
ggplot2 and jsonlite.
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
OUT = ROOT / "tests" / "data" / "gsem" / "r" / "gls_tools"


def vech(m: np.ndarray) -> np.ndarray:
    return np.concatenate([m[j:, j] for j in range(m.shape[0])])


def pd_cov(rng: np.random.Generator, n: int, scale: float, off: float) -> np.ndarray:
    A = rng.normal(size=(n, n)) * off
    return A @ A.T + np.diag(rng.uniform(0.5, 1.5, n) * scale)


def gls_inputs(rng: np.random.Generator) -> dict:
    n = 12
    x = np.sort(rng.uniform(-2.0, 2.0, n))
    x2 = rng.normal(size=n)
    ctl = rng.normal(size=(n, 2))
    V = pd_cov(rng, n, 0.004, 0.02)
    y = 0.3 + 0.12 * x - 0.04 * x * x + 0.05 * ctl[:, 0] + rng.multivariate_normal(np.zeros(n), V)
    return {"x": x.tolist(), "x2": x2.tolist(), "controls": ctl.tolist(), "y": y.tolist(), "V": V.tolist()}


def subsv_inputs(rng: np.random.Generator) -> dict:
    k = 5
    L = rng.uniform(0.3, 0.7, k)
    S = np.outer(L, L) * 0.5 + np.diag(rng.uniform(0.05, 0.2, k))
    kst = k * (k + 1) // 2
    V = pd_cov(rng, kst, 2e-4, 0.004)
    ratio = np.outer(1 / np.sqrt(np.diag(S)), 1 / np.sqrt(np.diag(S)))
    sc = vech(ratio)
    R = S * ratio
    kr = k * (k - 1) // 2
    V_R = pd_cov(rng, kr, 1e-3, 0.01)
    return {
        "S": S.tolist(),
        "V": V.tolist(),
        "S_Stand": R.tolist(),
        "V_Stand": (V * np.outer(sc, sc)).tolist(),
        "R": R.tolist(),
        "V_R": V_R.tolist(),
        "index_s": [2, 5, 7, 9, 14],
        "index_r": [1, 3, 4, 8, 10],
    }


def fusion_inputs(rng: np.random.Generator, out: Path) -> dict:
    genes = [f"ENSG{i:05d}" for i in range(10)]
    panels = ["/data/weights/GTEx.Brain", "/data//weights/YFS.BLOOD"]
    rows = [(g, p) for g in genes for p in panels][:16]
    hsq = rng.uniform(0.02, 0.4, len(rows))
    files = []
    for t in range(3):
        fn = f"trait{t + 1}.dat"
        lines = ["PANEL\tFILE\tID\tATTR.CHR\tTWAS.Z\tHSQ\tTWAS.P\tPERM.PV\tPERM.N"]
        for r, (g, p) in enumerate(rows):
            if t == 2 and r in (3, 11):
                continue  # gene models absent from the third file
            z = rng.normal() * 2.0
            h = "NA" if (t == 0 and r == 5) else ("." if (t == 1 and r == 8) else f"{hsq[r]:.6f}")
            zz = "NA" if (t == 1 and r == 13) else f"{z:.4f}"
            pn = int(rng.choice([100, 1000, 10000]))
            pv = rng.choice([0.0, 1.0, round(float(rng.uniform()), 4)], p=[0.15, 0.15, 0.7])
            lines.append(f"{p.split('/')[-1]}\t{p}/{g}.wgt.RDat\t{g}\t1\t{zz}\t{h}\t0.5\t{pv}\t{pn}")
        (out / fn).write_text("\n".join(lines) + "\n")
        files.append(fn)
    return {
        "files": files,
        "trait_names": ["A", "B", "C"],
        "binary": [True, False, True],
        "N": [20000, 15000, 9000],
    }


def qtrait_inputs(rng: np.random.Generator) -> dict:
    """Six indicators of one factor and two external traits: X1 with extra (direct) genetic
    correlations with I1 (+) and I4 (-), so that two follow-up models are fitted, X2 related to
    the indicators only through the factor."""
    ind = [f"I{i}" for i in range(1, 7)]
    names = [*ind, "X1", "X2"]
    lam = np.array([0.75, 0.6, 0.7, 0.5, 0.65, 0.6])
    k = len(names)
    R = np.eye(k)
    R[:6, :6] = np.outer(lam, lam) + np.diag(1 - lam**2)
    for j, g in ((6, 0.5), (7, 0.35)):
        R[:6, j] = R[j, :6] = lam * g
    R[6, 7] = R[7, 6] = 0.2
    R[0, 6] = R[6, 0] = R[0, 6] + 0.35
    R[3, 6] = R[6, 3] = R[3, 6] - 0.35
    h2 = rng.uniform(0.1, 0.4, k)
    D = np.diag(np.sqrt(h2))
    S = D @ R @ D
    kst = k * (k + 1) // 2
    A = rng.normal(size=(kst, kst)) * 0.0015
    V = A @ A.T + np.diag(rng.uniform(0.004, 0.012, kst) ** 2)
    # a sampling error on S, so that no model fits exactly
    E = rng.normal(size=(k, k)) * 0.004
    S = S + (E + E.T) / 2
    ratio = np.outer(1 / np.sqrt(np.diag(S)), 1 / np.sqrt(np.diag(S)))
    sc = vech(ratio)
    return {
        "S": S.tolist(),
        "V": V.tolist(),
        "I": np.eye(k).tolist(),
        "N": [10000.0] * kst,
        "m": 1000000.0,
        "S_Stand": (S * ratio).tolist(),
        "V_Stand": (V * np.outer(sc, sc)).tolist(),
        "trait_names": names,
        "indicators": ind,
        "traits": ["X1", "X2"],
    }


def srmd_inputs(rng: np.random.Generator) -> dict:
    h, g = 4, 3
    u = rng.normal(size=h * g) * 0.3
    c = u + rng.normal(size=h * g) * 0.05
    u[5] = np.nan
    lhs = rng.uniform(0.5, 2.0, (h, g))
    rhs = rng.uniform(0.5, 2.0, (h, g))
    return {
        "unconstrained": [None if np.isnan(v) else v for v in u],
        "constrained": c.tolist(),
        "lhsvar": lhs.tolist(),
        "rhsvar": rhs.tolist(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="R/ directory of a GenomicSEM checkout")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261202)
    inputs = {
        "gls": gls_inputs(rng),
        "subsv": subsv_inputs(rng),
        "fusion": fusion_inputs(rng, out),
        "qtrait": qtrait_inputs(rng),
        "srmd": srmd_inputs(rng),
    }
    (out / "inputs.json").write_text(json.dumps(inputs, indent=1))
    res = subprocess.run(
        ["Rscript", str(HERE / "gsem_gls_tools.R"), str(Path(a.src).resolve()), str(out.resolve())],
        capture_output=True,
        text=True,
    )
    if res.returncode:
        sys.exit(f"Rscript failed:\n{res.stdout[-3000:]}\n{res.stderr[-4000:]}")
    print(res.stdout[-2000:])


if __name__ == "__main__":
    main()
