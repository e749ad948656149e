"""Compare polgen's HDL kernels and R-optim port with R's own optim calls inside hdl() (abc_piecewise).

    python tests/data/make/gsem_hdl_diagnose.py WORK_DIR [--out FILE]

WORK_DIR holds ``calls.txt`` and ``evals.tsv`` written by tests/data/make/gsem_hdl_diagnose.R (R's optim
inputs and results, every objective evaluation).  Reports, into ``--out`` (default
tests/data/gsem/hdl_spread/diagnosis.txt):

1. the objective: polgen's ``h2_value`` / ``gcov_value`` at every point R evaluated, against R's value;
2. the optimiser: polgen's ``lbfgsb_r`` from R's exact start and inputs, against R's ``par``; for each
   call that ends elsewhere, both objective values and the first evaluation point where the traces part.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import polgen.kernels.lbfgsb_r as L
from polgen.kernels.hdl import gcov_value, h2_value

ROOT = Path(__file__).resolve().parents[3]
BOX = {0: (np.array([0.0, 0.0]), np.array([1.0, 10.0])), 1: (np.array([-1.0, -10.0]), np.array([1.0, 10.0]))}


def read_calls(path: Path) -> list[dict]:
    calls: list[dict] = []
    for line in path.read_text().splitlines():
        key, *v = line.split()
        if key == "call":
            calls.append({"i": int(v[0]), "cell": int(v[1]), "piece": int(v[2]), "kind": int(v[3])})
        else:
            calls[-1][key] = np.array([float(x) for x in v])
    return calls


def value(c: dict, x0: float, x1: float) -> float:
    p = c["p"]
    if c["kind"] == 0:
        return h2_value(x0, x1, p[0], p[1], p[2], c["lam"], c["b1"], 0, 0, p[3])
    return gcov_value(x0, x1, *p[:9], c["lam"], c["b1"], c["b2"], 0, 0, p[9])


def trace(c: dict) -> tuple[np.ndarray, float, list[np.ndarray]]:
    """polgen's optimiser from R's start, run as Python over the compiled pieces to log its points."""
    orig, pts = L._fg, []

    def fg(*a):
        pts.append(a[1].copy())
        return orig(*a)

    L._fg = fg
    try:
        lo, up = BOX[c["kind"]]
        x, f, _ = L.lbfgsb_r.py_func(c["kind"], c["par"].copy(), lo, up, c["p"], c["lam"], c["b1"], c["b2"], 0, 0)
    finally:
        L._fg = orig
    return x, f, pts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work")
    ap.add_argument("--out", default=str(ROOT / "tests/data/gsem/hdl_spread/diagnosis.txt"))
    a = ap.parse_args()
    work = Path(a.work)
    calls = read_calls(work / "calls.txt")
    ev = np.loadtxt(work / "evals.tsv")
    out = [f"R optim calls in hdl(abc_piecewise): {len(calls)}; objective evaluations: {ev.shape[0]}"]
    ulps = []
    for row in ev:
        f = value(calls[int(row[0]) - 1], row[2], row[3])
        ulps.append(abs(f - row[4]) / np.spacing(abs(row[4])))
    u = np.array(ulps)
    out.append(f"1. objective: identical to R's bit for bit in {int(np.sum(u == 0))}; max difference {u.max():.0f} ulp")
    out.append("2. optimiser from R's exact start and inputs (par relative difference > 1e-7):")
    same = 0
    for c in calls:
        x, f, pts = trace(c)
        r = c["res"]
        d = float(np.max(np.abs(x - r[:2]) / np.maximum(np.abs(r[:2]), 1e-9)))
        if d <= 1e-7:
            same += 1
            continue
        rx = ev[ev[:, 0] == c["i"]][::5, 2:4]  # R's points (every 5th: value, then 4 gradient evaluations)
        k = next(j for j in range(min(len(pts), len(rx))) if not np.array_equal(pts[j], rx[j]))
        dx = float(np.max(np.abs(pts[k] - rx[k]) / np.maximum(np.abs(rx[k]), 1e-300)))
        fr = value(c, r[0], r[1])
        out.append(
            f"   call {c['i']} (cell {c['cell']}, piece {c['piece']}, {'h2' if c['kind'] == 0 else 'gcov'}): par "
            f"{d:.1e} apart; objective polgen - R {(f - fr) / abs(fr):+.1e} (relative); points "
            f"{len(pts)} vs R {len(rx)}, first differing point #{k} by {dx:.1e}"
        )
    out.append(f"   {same} of {len(calls)} calls end at R's par to 1e-7")
    Path(a.out).write_text("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
