"""FDR of LFMM results: BH equals R p.adjust, Storey q-values equal R qvalue (stored outputs,
tests/data/make/lfmm_fdr.R), and the DuckDB-streamed table equals the dense computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

import polgen.lfmm as L
from polgen.errors import InputError, OutputExistsError, SchemaError
from polgen.lfmm import multitest as F

R = Path(__file__).resolve().parents[1] / "data" / "lfmm" / "r" / "fdr"
COLS = ["P", "P_CALIBRATED", "P_TIES"]
CASES = {
    "smoother": dict(),
    "bootstrap": dict(pi0_method="bootstrap"),
    "lambda05": dict(lambda_=0.5),
    "grid_df4": dict(lambda_=np.minimum(0.1 + np.arange(8) * 0.1, 0.8), smooth_df=4),  # R seq(0.1, 0.8, 0.1)
}
# polgen's smoother solves df = 3 exactly; R's smooth.spline stops its search at df = 3.0003
TOL = {"smoother": 1e-4, "grid_df4": 1e-4, "bootstrap": 1e-13, "lambda05": 1e-13}


@pytest.fixture(scope="module")
def ref():
    P = pl.read_csv(R / "p.csv", null_values="NA")
    Q = pl.read_csv(R / "q.csv.gz", null_values="NA")
    pi0 = {k: float(v) for k, v in pl.read_csv(R / "pi0.csv").iter_rows()}
    return P, Q, pi0


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(b)
    assert np.array_equal(np.isfinite(a), ok)
    return float(np.max(np.abs(a[ok] / b[ok] - 1)))


@pytest.mark.parametrize("col", COLS)
def test_bh_equals_R_p_adjust(ref, col):
    P, Q, _ = ref
    p = P[col].to_numpy().astype(float)
    assert _rel(F.p_adjust_bh(p), Q[f"{col}_BH"].to_numpy().astype(float)) < 1e-14
    q, pi0 = F.qvalues(p)
    assert pi0 == 1.0 and _rel(q, Q[f"{col}_BH"].to_numpy().astype(float)) < 1e-14


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("col", COLS)
def test_storey_equals_R_qvalue(ref, col, case):
    P, Q, pi0 = ref
    p = P[col].to_numpy().astype(float)
    q, p0 = F.qvalues(p, method="storey", **CASES[case])
    assert abs(p0 / pi0[f"{col}_{case}"] - 1) < TOL[case]
    assert _rel(q, Q[f"{col}_{case}"].to_numpy().astype(float)) < TOL[case]


def test_smoother_is_the_df3_smoothing_spline():
    """The smoother's fit has trace 3 and minimises the penalised criterion (a dense check)."""
    rng = np.random.default_rng(1)
    x = F.LAMBDA_GRID
    y = 0.8 + 0.05 * rng.standard_normal(x.size)
    fit = F.smoothing_spline_df(x, y, 3.0)
    # hat matrix column by column: trace 3
    H = np.column_stack([F.smoothing_spline_df(x, e, 3.0) for e in np.eye(x.size)])
    assert abs(np.trace(H) - 3.0) < 1e-9
    np.testing.assert_allclose(H @ y, fit, rtol=1e-12)
    # a straight line is reproduced exactly (the penalty ignores linear functions)
    np.testing.assert_allclose(F.smoothing_spline_df(x, 2 - x, 3.0), 2 - x, rtol=1e-10)


def _table(P: pl.DataFrame, cols: list[str]) -> pl.DataFrame:
    n = P.height
    return pl.DataFrame(
        {"SNP": [f"s{i}" for i in range(n)], "T": np.linspace(-3, 3, n)} | {c: P[c] for c in cols}
    ).with_columns(pl.col(c).cast(pl.Float64) for c in cols)


@pytest.mark.parametrize("method", ["BH", "storey"])
def test_streamed_equals_dense_on_parts(ref, tmp_path, method):
    P, _, _ = ref
    tab = _table(P, ["P", "P_CALIBRATED"])
    runs = tmp_path / "run"
    runs.mkdir()
    for k, a in enumerate(range(0, tab.height, 500)):  # parts in order, as a run folder
        tab[a : a + 500].write_parquet(runs / f"part-{k:06d}.parquet")
    res = L.fdr(runs, method=method, out=tmp_path / "q.parquet")
    got = pl.read_parquet(tmp_path / "q.parquet")
    assert got["SNP"].to_list() == tab["SNP"].to_list()  # the input row order
    q, pi0 = F.qvalues(tab["P_CALIBRATED"].to_numpy(), method=method)
    assert res.p_columns == {"Q": "P_CALIBRATED"} and res.pi0["Q"] == pi0
    np.testing.assert_allclose(got["Q"].fill_null(np.nan).to_numpy(), q, rtol=1e-14)
    # in memory, from a frame: the same numbers
    mem = L.fdr(tab, method=method).collect()
    np.testing.assert_allclose(mem["Q"].fill_null(np.nan).to_numpy(), q, rtol=1e-14)
    with pytest.raises(OutputExistsError):
        L.fdr(runs, out=tmp_path / "q.parquet")


def test_candidates_p_col_and_uncalibrated(ref):
    P, Q, _ = ref
    tab = _table(P, ["P", "P_CALIBRATED"])
    bh = Q["P_BH"].to_numpy().astype(float)
    res = L.fdr(tab, p_col="P", fdr=0.2)
    got = res.collect()
    assert res.p_columns == {"Q": "P"}
    assert got.height == res.n_candidates["Q"] == int(np.sum(bh <= 0.2)) > 0
    assert got["Q"].max() <= 0.2
    # an uncalibrated run (P_CALIBRATED all null) adjusts P
    unc = tab.with_columns(pl.lit(None, dtype=pl.Float64).alias("P_CALIBRATED"))
    assert L.fdr(unc).p_columns == {"Q": "P"}


def test_multi_variable_result(tmp_path):
    rng = np.random.default_rng(3)
    p1, p2 = rng.uniform(size=400) ** 2, rng.uniform(size=400)
    tab = pl.DataFrame({"T_a": rng.standard_normal(400), "P_a": p1, "P_CALIBRATED_a": p1, "T_b": p1, "P_b": p2})
    tab = tab.with_columns(pl.lit(None, dtype=pl.Float64).alias("P_CALIBRATED_b"))
    res = L.fdr(tab, method="storey", pi0_method="bootstrap")
    got = res.collect()
    assert res.p_columns == {"Q_a": "P_CALIBRATED_a", "Q_b": "P_b"}
    for q, p in (("Q_a", p1), ("Q_b", p2)):
        np.testing.assert_allclose(got[q].to_numpy(), F.qvalues(p, method="storey", pi0_method="bootstrap")[0])


def test_lfmm_test_result_and_cli(tmp_path):
    from polgen.cli import main
    from polgen.demo import make_lfmm_demo

    d = make_lfmm_demo(tmp_path / "in", small=True)
    out = tmp_path / "run"
    argv = ["lfmm", "--bed", str(d.bed), "--covariates", str(d.env), "-K", "2", "--out", str(out)]
    assert main([*argv, "--qvalue", "storey", "--fdr", "0.5"]) == 0
    run = L.fdr(out, method="storey").collect()
    cand = pl.read_parquet(out.parent / "run.qvalues.parquet")
    assert cand.height == int((run["Q"] <= 0.5).sum())
    np.testing.assert_allclose(cand["Q"].to_numpy(), run.filter(pl.col("Q") <= 0.5)["Q"].to_numpy())
    assert main(["lfmm", "qvalue", "--results", str(out), "--out", str(tmp_path / "all.tsv")]) != 0  # not parquet
    assert main(["lfmm", "qvalue", "--results", str(out), "--out", str(tmp_path / "all.parquet")]) == 0
    bh = pl.read_parquet(tmp_path / "all.parquet")
    np.testing.assert_allclose(bh["Q"].to_numpy(), F.p_adjust_bh(run["P_CALIBRATED"].to_numpy()), rtol=1e-14)


def test_bad_input():
    tab = pl.DataFrame({"T": [1.0, 2.0, 3.0, 4.0], "P": [0.1, 0.2, 1.5, 0.3]})
    with pytest.raises(InputError, match="outside"):
        L.fdr(tab)
    with pytest.raises(InputError, match=r"p-values must be in \[0, 1\]"):
        F.p_adjust_bh([0.1, -0.2])
    with pytest.raises(InputError, match="method"):
        L.fdr(tab, method="holm")
    with pytest.raises(InputError, match="fdr must be"):
        L.fdr(tab, fdr=0.0)
    with pytest.raises(SchemaError, match="no column"):
        L.fdr(tab, p_col="P_x")
    with pytest.raises(SchemaError, match="cannot tell"):
        L.fdr(pl.DataFrame({"x": [0.1]}))
    with pytest.raises(InputError, match="at least 4"):
        F.qvalues([0.1, 0.5], method="storey", lambda_=[0.1, 0.2])
    with pytest.raises(InputError, match="pi0 is"):
        F.qvalues(np.zeros(10), method="storey", pi0_method="bootstrap")


def test_sql_lfmm_fdr_query(ref, tmp_path):
    from polgen import sql

    P, Q, pi0 = ref
    tab = _table(P, ["P", "P_CALIBRATED"])
    tab.write_parquet(tmp_path / "r.parquet")
    bh = Q["P_CALIBRATED_BH"].to_numpy().astype(float)
    got = sql.run("lfmm_fdr", {"source": str(tmp_path / "r.parquet"), "fdr": 0.9})
    assert got.height == int(np.sum(bh <= 0.9)) > 0
    want = np.sort(bh[bh <= 0.9])
    np.testing.assert_allclose(np.sort(got["Q"].to_numpy()), want, rtol=1e-14)
    # Storey: the pi0 of qvalue's bootstrap and the uncalibrated P
    p0 = pi0["P_bootstrap"]
    got = sql.run("lfmm_fdr", {"source": tab, "fdr": 1.0, "pi0": p0, "p_col": "P"})
    ref_q = Q["P_bootstrap"].to_numpy().astype(float)
    ref_q = np.sort(ref_q[np.isfinite(ref_q)])  # the monomorphic SNPs (P NA) are not tested
    np.testing.assert_allclose(np.sort(got["Q"].to_numpy()), ref_q, rtol=1e-13)
