"""Factor signs follow lavaan (issue 12): a two-factor model with fixed factor variances and all
loadings free (``NA*``) has two mirror solutions per factor with equal fit; lavaan's positive
starting values put every factor's first loading positive.  Checked against R GenomicSEM's own
usermodel and userGWAS (tests/data/gsem/r/ml_sign/, made by tests/data/make/gsem_ml_sign.R; no R
needed here) under ML and DWLS, with and without fix_measurement, and on mirror starting points.

Debian's lavaan 0.6.14 made the stored outputs: its DWLS matches lavaan 0.6-21 to ~2e-8, but its
ML standard errors of userGWAS differ (lavaan's ML WLS.V changed between versions), so under ML the
estimates and chi-square are compared tightly and the userGWAS SEs not at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from polgen.gsem import user_gwas, usermodel
from polgen.gsem.constraints import canonical_signs_rows, sign_flips
from polgen.gsem.ram import compile_model
from polgen.gsem.sem import fit_sem
from polgen.gsem.syntax import parse_model

D = Path(__file__).resolve().parents[1] / "data" / "gsem" / "r" / "ml_sign"
TRAITS = ["T1", "T2", "T3", "T4", "T5"]
MODEL = "F1 =~ NA*T1 + T2 + T3\nF2 =~ NA*T4 + T5\nF1 ~~ 1*F1\nF2 ~~ 1*F2\nF1 ~~ F2"
GWAS_MODEL = MODEL + "\nF1 ~ SNP\nF2 ~ SNP"


def _csv(name: str) -> pl.DataFrame:
    return pl.read_csv(D / name, null_values="NA", infer_schema_length=None)


@pytest.fixture(scope="module")
def covstruc() -> dict:
    return {
        "S": _csv("S.csv").to_numpy(),
        "V": _csv("V.csv").to_numpy(),
        "I": _csv("I.csv").to_numpy(),
        "trait_names": TRAITS,
    }


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


@pytest.mark.parametrize("estimation", ["ML", "DWLS"])
def test_usermodel_signs_match_r(covstruc, estimation):
    r = _csv("usermodel.csv").filter(pl.col("estimation") == estimation)
    ours = usermodel(covstruc, MODEL, estimation=estimation).parameters
    j = r.join(ours, on=["lhs", "op", "rhs"], how="left", suffix="_py")
    assert j["est_py"].null_count() == 0
    assert _rel(j["est_py"].to_numpy(), j["est"].to_numpy()) < 1e-6
    free = j.filter(pl.col("se").is_not_null())
    assert _rel(free["se_py"].to_numpy(), free["se"].to_numpy()) < 1e-5
    assert _rel(free["est_std"].to_numpy(), free["std"].to_numpy()) < 1e-5
    assert (j.filter(pl.col("op") == "=~")["est_py"] > 0).all()


@pytest.mark.parametrize(("estimation", "fm"), [("ML", True), ("ML", False), ("DWLS", False)])
def test_user_gwas_signs_match_r(covstruc, estimation, fm):
    r = _csv("usergwas.csv").filter(pl.col("estimation") == estimation, pl.col("fix_measurement") == fm)
    snps = _csv("snps.csv")
    ours = user_gwas(snps, covstruc, GWAS_MODEL, estimation=estimation, fix_measurement=fm, long=True)
    if estimation == "ML":
        # R's ML userGWAS keeps the first SNP's fixed.x variance (SNP ~~ SNP) for every SNP of the
        # run (a known R quirk, see test_gsem_gwas_rparity.py), so only the first SNP's chi-square
        # and no SNP ~~ SNP row are comparable
        r = r.filter(~((pl.col("lhs") == "SNP") & (pl.col("rhs") == "SNP")))
        r = r.with_columns(pl.when(pl.col("SNP") == "rs0").then(pl.col("chisq")).alias("chisq"))
    j = r.join(ours, on=["SNP", "lhs", "op", "rhs"], how="left", suffix="_py")
    assert j.height == r.height and j["est_py"].null_count() == 0
    # fix_measurement: one baseline fit (R's ML stops ~1e-7 short); free measurement: per-SNP fits that R's lavaan stops
    # at optim.dx.tol = 0.01, equal to ~1e-5 absolute (as tests/gsem/test_gsem_gwas_rparity.py)
    atol = 1e-6 if fm else 1e-5
    np.testing.assert_allclose(j["est_py"].to_numpy(), j["est"].to_numpy(), atol=atol, rtol=1e-6)
    # the mirror solution would flip these: every loading and factor-on-SNP sign equals R's
    key = j.filter(pl.col("op").is_in(["=~", "~"]))
    assert (np.sign(key["est_py"].to_numpy()) == np.sign(key["est"].to_numpy())).all()
    chi = j.filter(pl.col("chisq").is_not_null())
    assert chi.height > 0
    assert _rel(chi["chisq_py"].to_numpy(), chi["chisq"].to_numpy()) < (1e-5 if fm else 1e-4)
    if estimation == "DWLS":
        free = j.filter(pl.col("se").is_not_null())
        np.testing.assert_allclose(free["se_py"].to_numpy(), free["se"].to_numpy(), atol=1e-5, rtol=0)


def test_fit_sem_from_mirror_start_comes_back(covstruc):
    """From a start on the mirror side of both factors, the fit reports lavaan's signs under
    every estimator; a constraint the flip would break keeps the fit where it is."""
    S = np.asarray(covstruc["S"])
    V = np.asarray(covstruc["V"])
    cm = compile_model(MODEL)
    for est in ("ML", "DWLS"):
        ref = fit_sem(cm, S, V=V, estimator=est)
        start = ref.theta.copy()
        start[[0, 1, 2, 3, 4]] *= -1
        fit = fit_sem(cm, S, V=V, estimator=est, start=start, restarts=0)
        np.testing.assert_allclose(fit.theta, ref.theta, rtol=1e-6, atol=1e-9)
        assert fit.theta[0] > 0 and fit.theta[3] > 0
    # F1's loadings tied to a positive bound on F2's: flipping F1 alone is never possible
    cm2 = compile_model("F1 =~ NA*T1 + a*T2 + T3\nF2 =~ NA*T4 + b*T5\nF1 ~~ 1*F1\nF2 ~~ 1*F2\na == b")
    flips = sign_flips(cm2.table, np.array([r.free - 1 for r in cm2.table.rows]))
    assert [lv for lv, _, _ in flips] == ["F1", "F2"]


def test_sign_flips_rules():
    pt = parse_model("F1 =~ NA*A + B + C\nF2 =~ D + E\nF1 ~~ 1*F1\nF1 ~~ F2\nF1 ~ SNP")
    par = np.array([r.free - 1 for r in pt.rows])
    flips = {lv: (neg.tolist(), first) for lv, neg, first in sign_flips(pt, par)}
    assert list(flips) == ["F1"]  # F2 has a marker loading fixed at 1
    rows = {(r.lhs, r.op, r.rhs): r.free - 1 for r in pt.rows}
    neg, first = flips["F1"]
    assert first == rows[("F1", "=~", "A")]
    assert set(neg) == {
        rows[k]
        for k in [("F1", "=~", "A"), ("F1", "=~", "B"), ("F1", "=~", "C"), ("F1", "~~", "F2"), ("F1", "~", "SNP")]
    }
    est = np.arange(1.0, par.max() + 2)[None, :].repeat(3, axis=0)
    q = rows[("F1", "~", "SNP")]
    est[:, q] = 0.1
    est[1, neg] *= -1
    est[2, neg] *= -1
    lo = np.full(est.shape[1], -np.inf)
    hi = np.full(est.shape[1], np.inf)
    hi[q] = 0.5  # row 2 cannot flip without leaving this bound
    est[2, q] = -5.0
    done = canonical_signs_rows(sign_flips(pt, par), est, lo, hi)
    assert done[:, 0].tolist() == [False, True, False]
    assert (est[1, neg] > 0).all() and est[2, first] < 0
