"""Inputs and R outputs of the issue-12 sets of tests/data/gsem/r/ (``heywood``, ``constraints``).

    python tests/data/make/gsem_issue12.py GENOMICSEM_R_DIR [--only heywood,constraints]

GENOMICSEM_R_DIR is the ``R/`` directory of a checkout of GenomicSEM (GPL-3.0; commit in
tests/data/gsem/PROVENANCE.md), sourced by the R scripts at run time, never copied into polgen.

* ``heywood``: two synthetic 5-trait covstrucs (seeded numpy, below) on which the two-factor model
  ``F1 =~ T1 + T2 + T3; F2 =~ T4 + T5; F1 ~~ F2`` (std.lv) has a Heywood solution far along a flat
  ridge (T5 ~~ T5 of -40 and -24); R's usermodel (gsem_heywood.R) under DWLS and ML.
* ``constraints``: usermodel with general constraints (``a == 2*b``, ``a > b``, ``a == b^2``, ``:=``
  terms in constraints) on the ``r/ml_sign`` covstruc, by R's usermodel and by lavaan directly
  (gsem_constraints.R).

The ``r/ml_sign`` set has its own script (gsem_ml_sign.R).  Inputs are written beside the outputs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE.parents[1] / "data" / "gsem" / "r"
TRAITS = [f"T{i + 1}" for i in range(5)]


def _write_csv(path: Path, m: np.ndarray, header: list[str]) -> None:
    rows = [",".join(header)] + [",".join(f"{v:.17g}" for v in row) for row in m]
    path.write_text("\n".join(rows) + "\n")


def heywood_inputs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """F1 over T1-T3 (loadings .5 .6 .4), F2 over T4 (tiny loading) and T5 (large loading), a
    weak factor correlation, T5's variance well below what its loading implies, noise on S; V a
    PD sampling covariance with SEs 0.01-0.03."""
    rng = np.random.default_rng(seed)
    phi = rng.uniform(0.05, 0.3)
    l4 = rng.uniform(0.02, 0.08)
    l5 = rng.uniform(2, 8)
    L = np.zeros((5, 2))
    L[:3, 0] = [0.5, 0.6, 0.4]
    L[3, 1], L[4, 1] = l4, l5
    P = np.array([[1.0, phi], [phi, 1.0]])
    S = L @ P @ L.T + np.diag([0.3, 0.3, 0.3, 0.2, 0.0])
    S[4, 4] = rng.uniform(0.3, 0.6)
    E = rng.normal(scale=0.005, size=(5, 5))
    S = S + (E + E.T) / 2
    kk = 15
    se = rng.uniform(0.01, 0.03, kk)
    A = rng.normal(size=(kk, kk))
    C = A @ A.T + 30 * np.eye(kk)
    d = np.sqrt(np.diag(C))
    V = se[:, None] * (C / np.outer(d, d)) * se[None, :]
    assert np.linalg.eigvalsh(S).min() > 0.01 and np.linalg.eigvalsh(V).min() > 0
    return S, V


def rscript(*args: str) -> None:
    res = subprocess.run(["Rscript", *args], capture_output=True, text=True, timeout=3600)
    if res.returncode:
        sys.exit(f"Rscript {args[0]} failed:\n{res.stderr[-4000:]}")


def make_heywood(src: str) -> None:
    out = OUT / "heywood"
    out.mkdir(parents=True, exist_ok=True)
    for seed in (27, 32):
        S, V = heywood_inputs(seed)
        _write_csv(out / f"s{seed}_S.csv", S, TRAITS)
        _write_csv(out / f"s{seed}_V.csv", V, [f"V{i + 1}" for i in range(V.shape[0])])
    rscript(str(HERE / "gsem_heywood.R"), src, str(out), "27", "32")


def make_constraints(src: str) -> None:
    out = OUT / "constraints"
    out.mkdir(parents=True, exist_ok=True)
    rscript(str(HERE / "gsem_constraints.R"), src, str(OUT / "ml_sign"), str(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("genomicsem_r_dir")
    ap.add_argument("--only", default="heywood,constraints")
    a = ap.parse_args()
    sets = a.only.split(",")
    if "heywood" in sets:
        make_heywood(a.genomicsem_r_dir)
    if "constraints" in sets:
        make_constraints(a.genomicsem_r_dir)


if __name__ == "__main__":
    main()
