"""General constraints in user_gwas (issue 12): constraints on the measurement model (``a == 2*b``,
``b > a``, ...) are fitted on the no-SNP model with fix_measurement=True (R's default), by the SEM
fitter, against R GenomicSEM's userGWAS and usermodel (tests/data/gsem/r/constraints/, made by
tests/data/make/gsem_issue12.py with gsem_constraints.R); constraints on parameters estimated per
SNP are fitted per SNP under DWLS (test_gwas_constraints_snp.py) and ML (test_constraints_gwas_ml.py).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from constraint_fixtures import R, covstruc_of, read_csv

from polgen.gsem import user_gwas

C = R / "constraints"
BASE = "F1 =~ NA*T1 + a*T2 + b*T3\nF2 =~ NA*T4 + c*T5\nF1 ~~ 1*F1\nF2 ~~ 1*F2\nF1 ~~ F2\n"


@pytest.fixture(scope="module")
def covstruc() -> dict:
    return covstruc_of(R / "ml_sign")


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.nanmax(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


GWAS = BASE + "F1 ~ SNP\nF2 ~ SNP\n"


def test_user_gwas_inequality_on_measurement_matches_r(covstruc):
    """fix_measurement=True (R's default): the no-SNP model with its active b > a is fitted once
    (R: lavaan's constrained fit), then every SNP with the measurement model fixed there."""
    ref = read_csv(C / "usergwas.csv").filter(pl.col("case") == "gw_ineq_active", ~pl.col("op").is_in(["==", "<", ">"]))
    snps = read_csv(R / "ml_sign" / "snps.csv").head(4)
    ours = user_gwas(snps, covstruc, GWAS + "b > a", long=True)
    j = ref.join(ours, on=["SNP", "lhs", "op", "rhs"], how="left", suffix="_py")
    assert j.height == ref.height and j["est_py"].null_count() == 0
    # the measurement values come from R's approximately-active inequality (b - a ~ 5e-7)
    np.testing.assert_allclose(j["est_py"].to_numpy(), j["est"].to_numpy(), rtol=2e-5, atol=1e-7)
    free = j.filter(pl.col("se").is_not_null())
    np.testing.assert_allclose(free["se_py"].to_numpy(), free["se"].to_numpy(), rtol=2e-5)
    np.testing.assert_allclose(j["chisq_py"].to_numpy(), j["chisq"].to_numpy(), rtol=2e-5)
    assert (j["chisq_df"] == j["df"]).all()


def test_user_gwas_linear_equality_on_measurement(covstruc):
    """a == 2*b on the measurement model: the baseline is usermodel's constrained solution (R's,
    to 1e-5), and the per-SNP fits equal those of the same model with the measurement values
    written as fixed numbers (R's own userGWAS returns a degenerate fit on this model: chisq of
    2.5e6 and SNP ~~ SNP of 1, tests/data/gsem/r/constraints/usergwas.csv case gw_eq_lin)."""
    snps = read_csv(R / "ml_sign" / "snps.csv").head(4)
    ours = user_gwas(snps, covstruc, GWAS + "a == 2*b", long=True)
    r_um = read_csv(C / "usermodel.csv").filter(pl.col("case") == "eq_lin", pl.col("op") == "=~")
    meas = ours.filter(pl.col("SNP") == "rs0", pl.col("op") == "=~")
    j = r_um.join(meas, on=["lhs", "op", "rhs"], suffix="_py")
    assert j.height == 5 and _rel(j["est_py"], j["est"]) < 1e-5
    lam = {r["rhs"]: r["est"] for r in meas.iter_rows(named=True)}
    assert lam["T2"] == pytest.approx(2 * lam["T3"], rel=1e-12)
    phi = ours.filter(pl.col("SNP") == "rs0", pl.col("lhs") == "F1", pl.col("op") == "~~", pl.col("rhs") == "F2")
    written = (
        "F1 =~ "
        + " + ".join(f"{lam[t]!r}*{t}" for t in ("T1", "T2", "T3"))
        + "\nF2 =~ "
        + " + ".join(f"{lam[t]!r}*{t}" for t in ("T4", "T5"))
        + f"\nF1 ~~ 1*F1\nF2 ~~ 1*F2\nF1 ~~ {phi['est'][0]!r}*F2\nF1 ~ SNP\nF2 ~ SNP"
    )
    dense = user_gwas(snps, covstruc, written, fix_measurement=False)
    snp_rows = ours.filter(pl.col("op") == "~", pl.col("rhs") == "SNP")
    k = snp_rows.join(dense, on=["SNP", "lhs", "op", "rhs"], suffix="_w")
    assert k.height == 8
    np.testing.assert_allclose(k["est"].to_numpy(), k["est_w"].to_numpy(), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(k["se"].to_numpy(), k["se_w"].to_numpy(), rtol=1e-7)
    np.testing.assert_allclose(k["chisq"].to_numpy(), k["chisq_w"].to_numpy(), rtol=1e-7)


@pytest.mark.parametrize(
    ("model", "fm", "check"),
    [
        (GWAS + "a == b^2", False, lambda e: e["F1=~T2"] - e["F1=~T3"] ** 2),  # a and b estimated per SNP
        (BASE + "F1 ~ b1*SNP\nF2 ~ b2*SNP\nb1 == b2^2", True, lambda e: e["F1~SNP"] - e["F2~SNP"] ** 2),
        (BASE + "F1 ~ b1*SNP\nF2 ~ b2*SNP\nd := b1*b2\nd > 0", True, lambda e: min(0.0, e["F1~SNP"] * e["F2~SNP"])),
    ],
)
def test_user_gwas_constraints_on_per_snp_parameters_under_ml(covstruc, model, fm, check):
    """Constraints on per-SNP parameters are fitted under ML too (against R and scipy in
    test_constraints_gwas_ml.py): every SNP converges and the constraint holds there."""
    snps = read_csv(R / "ml_sign" / "snps.csv").head(2)
    out = user_gwas(snps, covstruc, model, fix_measurement=fm, estimation="ML", long=True)
    assert out["converged"].all()
    for snp in ("rs0", "rs1"):
        rows = out.filter(pl.col("SNP") == snp)
        e = {f"{r['lhs']}{r['op']}{r['rhs']}": r["est"] for r in rows.iter_rows(named=True)}
        assert abs(check(e)) < 1e-9


def test_user_gwas_defined_parameter_in_measurement_constraint(covstruc):
    """``d := a - b; d == 0.1``: R's userGWAS drops every ':=' line from the no-SNP model (and its
    lavaan call then fails on the constraint); polgen keeps a ':=' line that names measurement
    labels only, so the baseline is usermodel's constrained solution (R's, to 1e-5)."""
    snps = read_csv(R / "ml_sign" / "snps.csv").head(2)
    ours = user_gwas(snps, covstruc, GWAS + "d := a - b\nd == 0.1", long=True)
    r_um = read_csv(C / "usermodel.csv").filter(pl.col("case") == "def_con", pl.col("op") == "=~")
    meas = ours.filter(pl.col("SNP") == "rs1", pl.col("op") == "=~")
    j = r_um.join(meas, on=["lhs", "op", "rhs"], suffix="_py")
    assert j.height == 5 and _rel(j["est_py"], j["est"]) < 1e-5
    lam = {r["rhs"]: r["est"] for r in meas.iter_rows(named=True)}
    assert lam["T2"] - lam["T3"] == pytest.approx(0.1, abs=1e-10)
    d = ours.filter(pl.col("op") == ":=")
    assert d.height == 2 and np.allclose(d["est"].to_numpy(), 0.1, atol=1e-10)
    assert ours.filter(pl.col("op") == "~", pl.col("rhs") == "SNP")["converged"].all()
