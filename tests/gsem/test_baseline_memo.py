"""The no-SNP fit (gsem/baseline_fit.fit_baseline) is remembered per process by its inputs: a
repeated user_gwas call (per chromosome, per file) fits the same model once.  The remembered result
must equal a fresh fit, be returned as a copy (a caller changing it changes nothing for the next),
and any change of the inputs (S_LD, V_LD, model, traits, estimator) must fit again."""

from __future__ import annotations

import numpy as np
import pytest

import polgen.gsem.baseline_fit as bf

TRAITS = ["T1", "T2", "T3"]
MODEL = "F1 =~ NA*T1 + T2 + T3\nF1 ~~ 1*F1"


def _cov() -> tuple[np.ndarray, np.ndarray]:
    lam = np.array([0.4, 0.5, 0.3])
    S = np.outer(lam, lam) + np.diag([0.1, 0.08, 0.12])
    S[0, 1] = S[1, 0] = S[0, 1] * 1.1
    V = 1e-4 * (np.eye(6) * 5 + 0.5)
    return S, V


@pytest.fixture
def counted(monkeypatch):
    calls = []
    orig = bf._fit_baseline

    def wrap(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    monkeypatch.setattr(bf, "_fit_baseline", wrap)
    monkeypatch.setattr(bf, "_MEMO", {})
    return calls


@pytest.mark.parametrize("ml", [False, True])
def test_memo_returns_the_fit_once_and_copies(counted, ml):
    S, V = _cov()
    a = bf.fit_baseline(MODEL, S, V, TRAITS, std_lv=False, ml=ml)
    a[2][("F1", "=~", "T1")] = 99.0  # the caller's copy
    b = bf.fit_baseline(MODEL, S.copy(), V.copy(), TRAITS, std_lv=False, ml=ml)
    assert len(counted) == 1
    fresh = bf._fit_baseline(MODEL, S, V, TRAITS, std_lv=False, ml=ml, fit=bf.fit_cov_np)
    assert b[2] == fresh[2]
    assert b[2][("F1", "=~", "T1")] != 99.0
    np.testing.assert_array_equal(b[1].par, fresh[1].par)
    assert [r.lhs + r.op + r.rhs for r in b[0].rows] == [r.lhs + r.op + r.rhs for r in fresh[0].rows]


def test_memo_refits_when_an_input_changes(counted):
    S, V = _cov()
    base = bf.fit_baseline(MODEL, S, V, TRAITS, std_lv=False, ml=True)
    S2 = S.copy()
    S2[2, 2] += 1e-9
    changed = [
        bf.fit_baseline(MODEL, S2, V, TRAITS, std_lv=False, ml=True),
        bf.fit_baseline(MODEL, S, V * 1.5, TRAITS, std_lv=False, ml=False),
        bf.fit_baseline(MODEL, S, V, TRAITS, std_lv=False, ml=False),
        bf.fit_baseline(MODEL.replace("NA*T1", "T1"), S, V, TRAITS, std_lv=False, ml=True),
    ]
    assert len(counted) == 5
    assert changed[0][2][("T3", "~~", "T3")] != base[2][("T3", "~~", "T3")]
    assert changed[3][2][("F1", "=~", "T1")] == 1.0  # marker-identified: a different model


def test_memo_is_bounded(counted):
    S, V = _cov()
    for i in range(bf._MEMO_MAX + 3):
        S2 = S.copy()
        S2[0, 0] += 1e-6 * i
        bf.fit_baseline(MODEL, S2, V, TRAITS, std_lv=False, ml=False)
    assert len(bf._MEMO) == bf._MEMO_MAX
    bf.fit_baseline(MODEL, S, V, TRAITS, std_lv=False, ml=False)  # the oldest: evicted, refitted
    assert len(counted) == bf._MEMO_MAX + 4
