"""Inputs of tests/gsem/test_usermodel_null_std.py (tests/data/gsem/r/std_fail/): a synthetic 5-trait
covstruc on which ``F1 =~ T1 + T2 + T3; F2 =~ T4 + T5; F1 ~~ F2`` (std.lv, ML) ends on a Heywood
solution far along a flat ridge (T5 ~~ T5 of about -200), where the standardized refit's bread
``Delta' W Delta`` is singular - one of the conditions of R usermodel's "standardized model failed
to converge" (``R/usermodel.R``: the bread solve fails, the refit does not converge, or it errors).

    python tests/data/make/gsem_std_fail.py

The generator is gsem_issue12.py's ``heywood_inputs`` with a weaker second factor (F2 loading on
T4 0.005-0.03, on T5 5-15, factor correlation 0.02-0.1), numpy seed 1030.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "gsem" / "r" / "std_fail"
TRAITS = [f"T{i + 1}" for i in range(5)]


def inputs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    phi = rng.uniform(0.02, 0.1)
    l4 = rng.uniform(0.005, 0.03)
    l5 = rng.uniform(5, 15)
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


def _write_csv(path: Path, m: np.ndarray, header: list[str]) -> None:
    rows = [",".join(header)] + [",".join(f"{v:.17g}" for v in row) for row in m]
    path.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    S, V = inputs(1030)
    _write_csv(OUT / "S.csv", S, TRAITS)
    _write_csv(OUT / "V.csv", V, [f"V{i + 1}" for i in range(V.shape[0])])
