"""The no-SNP fit's abandonment rule (gsem/baseline_fit.py, issue 18): a sign start that cannot beat
the best start so far stops early instead of running to the iteration cap.  It must drop exactly
the starts that run off (each abandoned start ends not converged in the full run), cut their
iterations, and leave the chosen estimates bit for bit those of the full run: on the ML bench
model (PGC fixture's S/V, 3 traits, one factor; the fifth start wins by the lowest sum of squared
residuals), under DWLS there, and on the fixtures of test_baseline_fit where starts run off under
DWLS and ML (a marker-identified one-factor model, a two-factor regression model whose winning
start is not the first)."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from test_baseline_fit import CASES, _problem

import polgen.gsem.baseline_fit as bf
from conftest import gsem_fixture
from polgen.gsem.baseline_fit import _abandon_level, _fit_baseline, fit_cov_np
from polgen.gsem.constraints import number_parameters
from polgen.gsem.ram import kernel_layout, vech_index
from polgen.gsem.syntax import parse_model
from polgen.kernels.gwas_codes import ST_OK


def _bench():
    d = json.loads(gsem_fixture("gwas_per_snp.json").read_text())
    return (np.array(d["s"]), np.array(d["v"]), ["T1", "T2", "T3"]), "F1 =~ NA*T1 + T2 + T3\nF1 ~~ 1*F1"


def _inputs(case):
    return _bench() if case == "bench" else CASES[case]


@functools.cache
def _run(case, ml: bool, abandon: bool):
    """(estimates, [(theta, status, iterations, implied vech)] per start) of one no-SNP fit (the
    models here are unbounded: one fit per start)."""
    (S, V, traits), model = _inputs(case)
    starts = []

    def fit(*args, **kw):
        out = fit_cov_np(*args, **kw)
        starts.append(out)
        return out

    _, _, est = _fit_baseline(model, S, V, traits, std_lv=False, ml=ml, fit=fit, abandon=abandon)
    return est, starts


def _winner(case, ml: bool, starts) -> int:
    """The start _fit_baseline chooses, its rule replayed: the lowest DWLS objective (ML: sum of
    squared residuals), a later start only when lower by more than 1e-12 relative."""
    (S, V, traits), model = _inputs(case)
    pt0 = parse_model(model, std_lv=False, fixed_x=False)
    num0 = number_parameters(pt0)
    cm = kernel_layout(pt0, num0, traits, snp_name="\0none", observed=pt0.observed)
    tix = [int(j) - 1 for j in cm.obs_map]
    k = len(traits)
    s = np.array([S[tix[a], tix[b]] for a, b in zip(cm.ma, cm.mb)])
    w = np.array([1.0 / V[vech_index(tix[a], tix[b], k), vech_index(tix[a], tix[b], k)] for a, b in zip(cm.ma, cm.mb)])
    weight = np.ones_like(w) if ml else w
    best, who = None, -1
    for i, (_, st, _, sig) in enumerate(starts):
        if st != ST_OK:
            continue
        f = float(np.sum(weight * (s - sig) ** 2))
        if best is None or f < best - 1e-12 * abs(best):
            best, who = f, i
    return who


@pytest.mark.parametrize(
    ("case", "ml", "runoff", "iters_full", "iters_max"),
    [
        ("bench", True, 2, 1089, 140),
        ("1f_marker", False, 2, 1057, 260),
        ("1f_marker", True, 2, 1050, 200),
        ("2f_regression", False, 5, 2617, 800),
        ("2f_regression", True, 6, 3148, 2100),
    ],
    ids=["bench-ML", "marker-DWLS", "marker-ML", "2f_regression-DWLS", "2f_regression-ML"],
)
def test_runoff_starts_are_dropped_and_the_estimates_kept(case, ml, runoff, iters_full, iters_max):
    full_est, full = _run(case, ml, abandon=False)
    est, fast = _run(case, ml, abandon=True)
    assert est == full_est  # bit for bit, every parameter
    assert len(fast) == len(full)
    assert sum(it for _, _, it, _ in full) == iters_full
    assert sum(it for _, _, it, _ in fast) <= iters_max
    # the run-off starts: not converged at the cap in the full run
    assert sum(st != ST_OK for _, st, _, _ in full) == runoff
    cut = [i for i, (a, b) in enumerate(zip(full, fast)) if a[2] != b[2]]
    assert cut  # some start was abandoned
    for i in range(len(full)):
        if i in cut:
            assert full[i][1] != ST_OK and full[i][2] == 500 and fast[i][1] != ST_OK and fast[i][2] < 500
        else:  # every other start ran exactly as before
            assert fast[i][1] == full[i][1] and fast[i][2] == full[i][2]
            np.testing.assert_array_equal(fast[i][0], full[i][0])
    assert _winner(case, ml, fast) == _winner(case, ml, full)


@pytest.mark.parametrize(
    ("case", "ml", "winner"), [("bench", True, 4), ("1f_marker", False, 1), ("2f_regression", True, 13)]
)
def test_a_non_first_start_wins(case, ml, winner):
    """Models whose chosen start is not the first: the best so far changed along the way (the
    bench ML model: start 4 has the lowest sum of squares of the five that agree to rounding; the
    two-factor regression model's start 13 comes after four abandoned run-offs and before two)."""
    _, full = _run(case, ml, abandon=False)
    _, fast = _run(case, ml, abandon=True)
    assert _winner(case, ml, full) == _winner(case, ml, fast) == winner


def test_dwls_bench_fit_is_unchanged():
    """Under DWLS every start of the bench model converges: nothing is abandoned, the same fits."""
    full_est, full = _run("bench", False, abandon=False)
    est, fast = _run("bench", False, abandon=True)
    assert est == full_est
    assert [(st, it) for _, st, it, _ in fast] == [(st, it) for _, st, it, _ in full]


def _ml_f(S: np.ndarray, Sig: np.ndarray) -> float:
    lam = np.linalg.eigvals(np.linalg.solve(Sig, S)).real
    return float(np.sum(lam - np.log(lam) - 1.0))


def test_ml_level_bounds_the_objective_by_the_sum_of_squares():
    """_abandon_level's ML inequality: any Sigma whose vech sum of squared residuals is ``r`` has an
    ML objective no higher than ``_abandon_level(r)`` (else a start could be abandoned although it
    would win).  Random covariances around S, and the near-extreme ones: Sigma shrunk along S's
    smallest eigenvector (the direction the bound is built on)."""
    rng = np.random.default_rng(7)
    (S, _, _), _ = _bench()
    vals, vecs = np.linalg.eigh(S)
    lam_min = float(vals[0])
    iu = np.triu_indices(3)
    checked = 0
    tight = 0.0
    sigmas = []
    for scale in (1e-4, 1e-3, 1e-2, 0.05, 0.2):
        for _ in range(200):
            E = rng.normal(0, scale, (3, 3))
            sigmas.append(S + (E + E.T) / 2)
    v = vecs[:, 0]
    for e in np.linspace(1e-6, 0.999, 400):
        sigmas.append(S - e * lam_min * np.outer(v, v))
    for Sig in sigmas:
        if np.linalg.eigvalsh(Sig)[0] <= 0:
            continue
        r = float(np.sum((S - Sig)[iu] ** 2))
        f = _ml_f(S, Sig)
        level = _abandon_level(r, True, lam_min)
        assert f <= level * (1 + 1e-9) + 1e-15, (r, f, level)
        checked += 1
        if np.isfinite(level) and level > 1e-12:
            tight = max(tight, f / level)
    assert checked > 1000
    assert tight > 0.4  # the shrunk Sigmas come close to the bound: it is not vacuous


def test_dwls_level_is_the_best_objective():
    assert _abandon_level(0.25, False, 0.1) == 0.25
    assert _abandon_level(1.0, True, 0.1) == np.inf  # e* >= 1: no level


def test_fit_without_level_runs_to_the_cap():
    """abandon_at=None (the default, as the numba fit's comparisons use): a run-off start runs its
    500 iterations; with a level below its objective it stops early, status not OK."""
    s, w, arrays, npar, starts = _problem("1f_marker", False)
    fidx = np.arange(npar, dtype=np.int64)
    runoff = [st for st in starts if fit_cov_np(s, w, arrays, fidx, st)[1] != ST_OK]
    assert runoff
    th, st, it, _ = fit_cov_np(s, w, arrays, fidx, runoff[0])
    assert it == 500 and st != ST_OK
    th2, st2, it2, _ = fit_cov_np(s, w, arrays, fidx, runoff[0], abandon_at=0.0)
    assert st2 != ST_OK and bf.ABANDON_WINDOW <= it2 < 150
