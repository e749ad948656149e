"""The randomized SVD of lfmm.fit iterates until converged (issue 13): defaults equal an exact
dense LEA fit on real genotypes; a clear gap stops early; the cap warns; the report is saved."""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from bed_reader import open_bed

import polgen.lfmm as L
from polgen.errors import InputError

ATH = Path(__file__).resolve().parents[1] / "data" / "lfmm" / "athaliana" / "athaliana"


def dense_lea_t(Y: np.ndarray, X: np.ndarray, K: int, lam: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """R LEA ``lfmm2`` (ridge, exact: full SVD of D Q' Yc) + ``lfmm2.test`` (t of X in lm(Y ~ X + U)),
    with numpy's dense SVD and least squares; returns (t: d x p, singular values)."""
    n, d = X.shape
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Q, sx, _ = np.linalg.svd(Xc, full_matrices=True)
    dl = np.r_[np.sqrt(lam / (lam + sx)), np.ones(n - d)]
    u, sv, _ = np.linalg.svd(dl[:, None] * (Q.T @ Yc), full_matrices=False)
    U = Q @ ((1 / dl)[:, None] * (u[:, :K] * sv[:K]))
    C = np.c_[np.ones(n), X, U]
    coef, *_ = np.linalg.lstsq(C, Y, rcond=None)
    rss = ((Y - C @ coef) ** 2).sum(0)
    se = np.sqrt(np.outer(np.diag(np.linalg.inv(C.T @ C))[1 : d + 1], rss / (n - 1 - d - K)))
    return coef[1 : d + 1] / se, sv


@pytest.fixture(scope="module")
def ath():
    """170 A. thaliana accessions x 13,472 SNPs (0/1) and a phenotype: lfmm's example data."""
    with open_bed(ATH.with_suffix(".bed")) as ob:
        Y = ob.read(dtype="float64")
    env = pl.read_csv(ATH.with_name("athaliana.env.tsv"), separator="\t")
    X = env["phenotype"].to_numpy()[:, None]
    poly = Y.std(0) > 0
    t, sv = dense_lea_t(Y[:, poly], X, 6)
    return dict(Y=Y, env=env, X=X, poly=poly, t=t[0], sv=sv)


def test_real_genotypes_default_fit_equals_exact_lea(ath):
    assert ath["Y"].shape == (170, 13472) and set(np.unique(ath["Y"])) == {0.0, 1.0}
    sv = ath["sv"]
    assert sv[6] / sv[5] > 0.9  # a flat spectrum: 81.7 | 76.8
    bed = ATH.with_suffix(".bed")
    model = L.fit(ath["env"], bed, 6, progress=False)
    conv = model.convergence
    assert conv is not None and conv.converged and conv.stop == "tol"
    # converged by the rule, not because the Krylov basis filled R^n (K + 2 columns per pass, n = 170)
    assert model.params["oversampling"] == 2
    assert 5 <= conv.passes and conv.passes * 8 < 170
    assert conv.error_estimate is not None and conv.error_estimate <= 1e-7
    assert len(conv.history) == conv.passes - 1
    np.testing.assert_allclose(model.singular_values, sv[:6], rtol=1e-10)
    t = L.test(model, bed, ath["env"], progress=False).collect()["T"].to_numpy()
    assert np.max(np.abs(t[ath["poly"]] - ath["t"])) < 1e-6
    # the old default (power_iter=2, 3 passes) was off by ~0.1 on these data
    old = L.fit(ath["env"], bed, 6, power_iter=2, progress=False)
    assert old.convergence.passes == 3 and old.convergence.stop == "fixed" and not old.convergence.converged
    t_old = L.test(old, bed, ath["env"], progress=False).collect()["T"].to_numpy()
    assert np.max(np.abs(t_old[ath["poly"]] - ath["t"])) > 1e-2


def test_clear_gap_stops_within_three_passes():
    rng = np.random.default_rng(1)
    n, p, K = 300, 3000, 2
    pop = rng.integers(0, K + 1, n)  # K+1 strongly drifted populations: s_{K+1} / s_K = 0.06
    f = np.clip(rng.beta(0.1, 0.1, (K + 1, p))[pop], 0.001, 0.999)
    Y = rng.binomial(2, f).astype(np.float64)
    Y = Y[:, Y.std(0) > 0]
    X = rng.normal(size=(n, 1)) + pop[:, None]
    model = L.fit(X, Y, K, progress=False)
    conv = model.convergence
    assert conv is not None and conv.converged and conv.passes <= 3
    t, sv = dense_lea_t(Y, X, K)
    np.testing.assert_allclose(model.singular_values, sv[:K], rtol=1e-10)
    t_fit = L.test(model, Y, X, progress=False).collect()["T"].to_numpy()
    assert np.max(np.abs(t_fit - t[0])) < 1e-6


def test_cap_warns_and_reports(ath, caplog):
    with pytest.warns(L.LfmmConvergenceWarning, match=r"did not converge in 3 passes.*tol=1e-07") as got:
        model = L.fit(ath["env"], ATH.with_suffix(".bed"), 6, max_power_iter=2, progress=False)
    assert got[0].filename == __file__  # the warning names the caller's line
    conv = model.convergence
    assert conv is not None and conv.passes == 3 and conv.stop == "cap" and not conv.converged
    assert conv.subspace_change is not None and conv.subspace_change > 1e-3
    assert any("did not converge" in r.getMessage() for r in caplog.records)


def test_convergence_saved_and_loaded(ath, tmp_path):
    model = L.fit(ath["env"], ATH.with_suffix(".bed"), 3, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = L.load_model(model.save(tmp_path / "m.npz"))
    assert back.convergence == model.convergence
    assert back.params["power_iter"] == "auto" and back.params["tol"] == 1e-7
    # a model saved before the convergence report: None, not an error
    old = dict(model.params)
    old.pop("convergence")
    model.params = old
    assert L.load_model(model.save(tmp_path / "old.npz")).convergence is None


def test_invariant_krylov_space_is_exact():
    """Few samples: the Krylov basis reaches all of R^n and the fit stops, exact."""
    rng = np.random.default_rng(0)
    Y = rng.binomial(2, 0.3, (30, 400)).astype(np.float64)  # no structure at all
    X = rng.normal(size=(30, 1))
    model = L.fit(X, Y, 3, progress=False)
    assert model.convergence is not None and model.convergence.stop == "invariant" and model.convergence.converged
    _, sv = dense_lea_t(Y, X, 3)
    np.testing.assert_allclose(model.singular_values, sv[:3], rtol=1e-10)


@pytest.mark.parametrize(
    "kw", [dict(tol=0.0), dict(tol=1.5), dict(tol=True), dict(max_power_iter=-1), dict(power_iter=1.5)]
)
def test_bad_convergence_settings(kw):
    Y = np.random.default_rng(0).binomial(2, 0.3, (20, 50)).astype(np.float64)
    with pytest.raises(InputError):
        L.fit(np.arange(20.0)[:, None], Y, 2, **kw)


def test_cli_convergence_options(ath, tmp_path):
    from polgen.lfmm.cli import main

    args = ["lfmm", "--bed", str(ATH.with_suffix(".bed")), "--covariates", str(ATH.with_name("athaliana.env.tsv"))]
    with pytest.warns(L.LfmmConvergenceWarning):
        rc = main([*args, "-K", "6", "--max-power-iter", "3", "--out", str(tmp_path / "capped")])
    assert rc == 0
    conv = L.load_model(tmp_path / "capped" / "lfmm_model.npz").convergence
    assert conv is not None and conv.passes == 4 and conv.stop == "cap"
    assert main([*args, "-K", "2", "--tol", "1e-4", "--out", str(tmp_path / "loose")]) == 0
    model = L.load_model(tmp_path / "loose" / "lfmm_model.npz")
    assert model.params["tol"] == 1e-4 and model.convergence is not None and model.convergence.converged
    # every result part's parquet metadata carries the fit's convergence report
    part = sorted((tmp_path / "loose").glob("*.parquet"))[0]
    meta = json.loads(pq.read_schema(part).metadata[b"polgen.params"])
    assert meta["model"]["convergence"] == model.convergence.to_dict()
    assert main([*args, "-K", "2", "--power-iter", "1", "--out", str(tmp_path / "fixed")]) == 0
    conv = L.load_model(tmp_path / "fixed" / "lfmm_model.npz").convergence
    assert conv is not None and conv.passes == 2 and conv.stop == "fixed"


def _spy_passes(monkeypatch):
    """Record the precision of every pass over the held byte dosages (``low``: float32)."""
    fit_mod = importlib.import_module("polgen.lfmm.fit")
    seen: list[bool] = []
    start = fit_mod._HeldPasses.start

    def spy(self, G, low=False):
        seen.append(low)
        return start(self, G, low)

    monkeypatch.setattr(fit_mod._HeldPasses, "start", spy)
    monkeypatch.setattr(fit_mod, "LOW_MIN_CALLS", 0)  # A. thaliana: 2.3M calls
    return fit_mod, seen


def test_float32_passes_then_float64_equal_exact_lea(ath, monkeypatch):
    """The first passes in float32, then a float64 basis from their Ritz vectors: the same
    stopping rule and LEA's t statistics to 1e-6 (float32 products carry ~1e-7 relative error:
    the result must come from the float64 passes only)."""
    fit_mod, seen = _spy_passes(monkeypatch)
    bed = ATH.with_suffix(".bed")
    model = L.fit(ath["env"], bed, 6, progress=False)
    conv = model.convergence
    assert conv is not None and conv.converged and conv.stop == "tol"
    assert conv.error_estimate is not None and conv.error_estimate <= 1e-7
    assert len(conv.history) == conv.passes - 1
    # the first pass (made with the decode) is float32 too; the float64 passes come last
    low = [True, *seen]
    assert len(low) == conv.passes and low.count(True) >= 5 and low.count(False) >= 2
    assert low == sorted(low, reverse=True)
    np.testing.assert_allclose(model.singular_values, ath["sv"][:6], rtol=1e-10)
    t = L.test(model, bed, ath["env"], progress=False).collect()["T"].to_numpy()
    assert np.max(np.abs(t[ath["poly"]] - ath["t"])) < 1e-6


def test_float32_passes_fall_back_to_rayleigh_ritz(ath, monkeypatch):
    """When float32 rounding leaves Q'H too far from positive definite for the Nyström step, the
    float32 passes are checked (and restarted from) with a Rayleigh-Ritz step: the same result."""
    fit_mod, seen = _spy_passes(monkeypatch)
    made: list = []

    class Failing(fit_mod._Krylov):
        def __init__(self, *a):
            super().__init__(*a)
            made.append(self)

        def estimate(self, *a, **k):
            if self is made[0]:  # the float32 passes' basis
                raise np.linalg.LinAlgError("Matrix is not positive definite")
            return super().estimate(*a, **k)

    monkeypatch.setattr(fit_mod, "_Krylov", Failing)
    bed = ATH.with_suffix(".bed")
    model = L.fit(ath["env"], bed, 6, progress=False)
    conv = model.convergence
    assert len(made) == 2 and conv is not None and conv.converged and conv.stop == "tol"
    assert seen.count(True) >= 4 and seen[-1] is False
    np.testing.assert_allclose(model.singular_values, ath["sv"][:6], rtol=1e-10)
    t = L.test(model, bed, ath["env"], progress=False).collect()["T"].to_numpy()
    assert np.max(np.abs(t[ath["poly"]] - ath["t"])) < 1e-6


def test_float32_switch_rule():
    from polgen.lfmm.krylov import _at_floor

    assert not _at_floor([(0.5, 0.9)])
    assert not _at_floor([(0.5, 0.9), (0.4, 0.85)])  # slow start: still far from the floor
    assert not _at_floor([(1e-6, 4e-5), (1e-7, 9e-6)])  # shrinking by 0.2 a pass
    assert _at_floor([(1e-9, 3e-6), (1e-9, 6e-6)])  # grew: the float32 rounding floor


def test_float32_passes_near_the_cap_keep_their_basis(ath, monkeypatch):
    """Float32 passes that have not converged when the cap nears: the last two passes in float64
    on the same basis (no restart, which would throw its Krylov space away): as close to LEA as
    the float64 fit capped at the same number of passes."""
    bed = ATH.with_suffix(".bed")

    def t_error(model):
        t = L.test(model, bed, ath["env"], progress=False).collect()["T"].to_numpy()
        return np.max(np.abs(t[ath["poly"]] - ath["t"]))

    with pytest.warns(L.LfmmConvergenceWarning):
        plain = L.fit(ath["env"], bed, 6, max_power_iter=7, progress=False)
    fit_mod, seen = _spy_passes(monkeypatch)
    with pytest.warns(L.LfmmConvergenceWarning):
        model = L.fit(ath["env"], bed, 6, max_power_iter=7, progress=False)
    conv = model.convergence
    assert conv is not None and conv.passes == 8 and conv.stop == "cap" and len(conv.history) == 7
    # passes 1-6 in float32 (a 7th started ahead in float32 may have been dropped), 7-8 in float64
    assert seen[-2:] == [False, False] and seen[:-2] in ([True] * 5, [True] * 6)
    err, plain_err = t_error(model), t_error(plain)
    assert 1e-5 < plain_err < 1e-3 and abs(err - plain_err) < 0.05 * plain_err
    np.testing.assert_allclose(model.singular_values, plain.singular_values, rtol=1e-7)
