"""R usermodel's "standardized model failed to converge" (issue 12).  R (``R/usermodel.R``) refits
the model to ``S_Stand`` with ``optim.force.converged=FALSE``; when that refit errors, does not
converge, or its bread ``solve(t(Delta) W Delta, tol=toler)`` fails, R warns "The standardized
model failed to converge ..." and its usermodel returns NULL.  polgen mirrors the rule (the
refit from lavaan's one start, not forced; the same bread test as R's ``solve``) and returns the
unstandardized results with ``est_std`` / ``se_std`` / ``std_all`` and the fit statistics null,
a logged warning and ``standardized_converged=False``.

Inputs: tests/data/gsem/r/std_fail/ (tests/data/make/gsem_std_fail.py: a Heywood solution far along
a flat ridge, T5 ~~ T5 of about -200, whose standardized bread is singular) and the r/heywood
covstruc (seed 27, where R's standardized refit converges).
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pytest
from constraint_fixtures import TRAITS, R, read_csv

import polgen.gsem.fit_models as fm
from polgen.gsem import usermodel
from polgen.gsem.sem import sandwich

MODEL = "F1 =~ T1 + T2 + T3\nF2 =~ T4 + T5\nF1 ~~ F2"
STD = ["est_std", "se_std", "std_all"]


def _cs(S_path, V_path) -> dict:
    return {"S": read_csv(S_path).to_numpy(), "V": read_csv(V_path).to_numpy(), "I": np.eye(5), "trait_names": TRAITS}


def _check_null(res) -> None:
    assert res.standardized_converged is False and res.standardized_fit is None
    p = res.parameters
    for c in STD:
        assert p[c].null_count() == p.height  # null, not NaN: R returns no standardized results
    fit = res.fit_all.row(0, named=True)
    assert fit["chisq"] is None and fit["CFI"] is None and fit["SRMR"] is None
    assert any(w.startswith("The standardized model failed to converge") for w in res.warnings)
    assert p["est"].null_count() == 0 and np.isfinite(p.filter(pl.col("free"))["se"].to_numpy()).all()


def test_singular_standardized_bread_returns_null_std(caplog):
    """ML on the std_fail covstruc: the first fit is R's kind of answer (converged on the Heywood
    solution, no fix_resid refit); the standardized refit's bread is singular (checked here with
    the sandwich of a refit run directly), so no standardized results."""
    cs = _cs(R / "std_fail" / "S.csv", R / "std_fail" / "V.csv")
    with caplog.at_level(logging.WARNING, logger="polgen"):
        res = usermodel(cs, MODEL, estimation="ML", std_lv=True)
    assert res.converged and "> .0001" not in res.model
    t5 = res.parameters.filter(pl.col("lhs") == "T5", pl.col("rhs") == "T5")["est"][0]
    assert t5 < -100
    _check_null(res)
    assert any("standardized model failed to converge" in r.getMessage() for r in caplog.records)
    # the same refit as usermodel's, run directly: converged, but R's solve() would fail on its bread
    S, V = cs["S"], cs["V"]
    S_st, V_st, vdiag = fm._standardize_inputs(S, V)
    cm = res.unstandardized_fit.model
    pos = [TRAITS.index(t) for t in cm.observed]
    perm = fm.reorder_indices(TRAITS, cm.observed)
    refit = fm.fit_sem(
        cm, S_st[np.ix_(pos, pos)], W_diag=1.0 / vdiag[perm], estimator="ML", restarts=1, random_starts=0
    )
    with pytest.raises(fm.ModelError, match="singular"):
        sandwich(refit, V_st[np.ix_(perm, perm)])
    info = refit.jacobian.T @ refit.weight @ refit.jacobian
    assert 1.0 / np.linalg.cond(info, 1) < np.finfo(float).eps


def test_nonconverged_standardized_refit_returns_null_std(monkeypatch):
    """R's other condition (the refit not converged, ``lavInspect(Fit_stand, "converged")`` FALSE):
    the r/heywood seed-27 covstruc, whose standardized refit converges (R's STD_Genotype there is
    tested in test_gsem_sem_heywood.py), with the refit's iterations capped; the unstandardized
    results stay those of the full run."""
    d = R / "heywood"
    cs = _cs(d / "s27_S.csv", d / "s27_V.csv")
    full = usermodel(cs, MODEL, std_lv=True)
    assert full.standardized_converged is True and full.parameters["est_std"].null_count() == 0
    real = fm.fit_sem

    def capped(cm, S, **kw):
        if "W_diag" in kw:  # the standardized refit only
            kw["max_iter"] = 3
        return real(cm, S, **kw)

    monkeypatch.setattr(fm, "fit_sem", capped)
    res = usermodel(cs, MODEL, std_lv=True)
    _check_null(res)
    assert "did not converge" in next(w for w in res.warnings if w.startswith("The standardized"))
    j = res.parameters.join(full.parameters, on=["lhs", "op", "rhs"], suffix="_full")
    np.testing.assert_array_equal(j["est"].to_numpy(), j["est_full"].to_numpy())
    np.testing.assert_array_equal(j["se"].to_numpy(), j["se_full"].to_numpy())
