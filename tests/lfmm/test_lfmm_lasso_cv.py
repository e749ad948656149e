"""lfmm_lasso and lfmm_ridge_cv equal the lfmm R package's lfmm_lasso / lfmm_ridge_CV on its A. thaliana
example (tests/data/lfmm/r/lasso, made by tests/data/make/lfmm_lasso.R), and dense numpy versions of
the same algorithms; streamed from a .bed with tiny blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from bed_reader import to_bed

import polgen.lfmm as L
from polgen.errors import InputError

R = Path(__file__).resolve().parents[1] / "data" / "lfmm" / "r" / "lasso"


@pytest.fixture(scope="module")
def data():
    Y = np.loadtxt(R / "Y.csv.gz", delimiter=",")
    X = np.loadtxt(R / "X.csv")[:, None]
    return Y, X


def _csv(name: str) -> np.ndarray:
    return np.loadtxt(R / name, delimiter=",", ndmin=1)


def _same_factors(U: np.ndarray, Ur: np.ndarray) -> None:
    """Columns equal up to sign."""
    Ur = Ur.reshape(U.shape)
    s = np.sign(np.sum(U * Ur, axis=0))
    np.testing.assert_allclose(U * s, Ur, rtol=1e-7, atol=1e-9 * np.abs(Ur).max())


def test_lasso_path_equals_R(data):
    Y, X = data
    res = L.lfmm_lasso(X, Y, 3, nozero_prop=0.02)
    gl = _csv("path_gamma_lambdas.csv")
    assert abs(res.gamma / gl[0] - 1) < 1e-12
    np.testing.assert_allclose(res.lambda_range, gl[1:], rtol=1e-12)
    B = _csv("path_B.csv")
    assert np.array_equal(res.B[:, 0] != 0, B != 0) and np.count_nonzero(B) == 38
    np.testing.assert_allclose(res.B[:, 0], B, rtol=1e-9, atol=1e-14)
    _same_factors(res.U, _csv("path_U.csv"))
    assert res.nozero_prop > 0.02 and len(res.iterations) == 3


def test_lasso_fixed_lambda_from_bed_equals_R(data, tmp_path):
    Y, X = data
    to_bed(tmp_path / "a.bed", Y, count_A1=True)
    lam = float(_csv("fixed_lambda.csv")[0])
    res = L.lfmm_lasso(X, str(tmp_path / "a.bed"), 3, lam=lam, batch_snps=64)
    np.testing.assert_allclose(res.B[:, 0], _csv("fixed_B.csv"), rtol=1e-9, atol=1e-14)
    _same_factors(res.U, _csv("fixed_U.csv"))


def _dense_lasso_step(Y, X, U, V, lam):
    """One alternation of the lfmm package's lasso, dense (B step then the soft SVD)."""
    R0 = np.linalg.inv(X.T @ X)
    Bh = ((Y - U @ V.T).T @ X) @ R0
    B = np.sign(Bh) * np.maximum(np.abs(Bh) - lam, 0)
    return B


def test_lasso_first_alternation_is_the_dense_one(data):
    Y, X = data
    Yc, Xc = Y - Y.mean(0), X - X.mean(0)
    s = np.sqrt(np.maximum(np.linalg.eigvalsh(Yc @ Yc.T)[::-1], 0.0))
    gamma = (s[2] + s[3]) / 2
    lam = float(_csv("fixed_lambda.csv")[0])
    res = L.lfmm_lasso(X, Y, 3, lam=lam, it_max=1)
    B = _dense_lasso_step(Yc, Xc, np.zeros((170, 3)), np.zeros((1500, 3)), lam)
    np.testing.assert_allclose(res.B, B, atol=1e-14)
    u, sv, vt = np.linalg.svd(Yc - Xc @ B.T, full_matrices=False)
    keep = sv[:5] > gamma
    _same_factors(res.U, u[:, :5][:, keep] * (sv[:5][keep] - gamma))
    _same_factors(res.V, vt[:5][keep].T)


def _r_folds(case: int):
    F: dict[int, list[np.ndarray]] = {}
    for line in (R / "cv_folds.txt").read_text().split("\n"):
        v = [int(x) for x in line.split()] if line else []
        if v and v[0] == case:
            F.setdefault(v[1], []).append(np.array(v[3:]) - 1)
    return list(zip(F[1], [F[i] for i in sorted(F) if i > 1]))


@pytest.mark.parametrize("case", [1, 4])
def test_ridge_cv_equals_R(data, case):
    Y, X = data
    ref = pl.read_csv(R / "cv_err.csv").filter(pl.col("case") == case)
    out = L.lfmm_ridge_cv(X, Y, int(ref["K"][0]), float(ref["lambda"][0]), folds=_r_folds(case))
    assert out.height == ref.height == 12
    np.testing.assert_allclose(out["err"].to_numpy(), ref["err"].to_numpy(), rtol=1e-9)


def test_ridge_cv_dense_and_random_folds(data, tmp_path):
    """The streamed errors equal a dense evaluation of the same folds; a .bed in tiny blocks too."""
    Y, X = data
    Y = Y[:, :300]
    Yc, Xc = Y - Y.mean(0), X - X.mean(0)
    out = L.lfmm_ridge_cv(X, Y, [2, 3], 1.0, row_folds=3, col_folds=2, seed=4)
    assert out.height == 2 * 3 * 2 and set(out["K"]) == {2, 3} and out["err"].min() > 0
    # dense check of one fold with explicit folds
    test = np.arange(0, 170, 4)
    cols = [np.arange(0, 300, 2), np.arange(1, 300, 2)]
    got = L.lfmm_ridge_cv(X, Y, 2, 1.0, folds=[(test, cols)])
    tr = np.setdiff1d(np.arange(170), test)
    Xt, Yt = Xc[tr], Yc[tr]
    Q, sig, _ = np.linalg.svd(Xt, full_matrices=True)
    dl = np.ones(len(tr))
    dl[:1] = np.sqrt(1.0 / (1.0 + sig))
    u, s, vt = np.linalg.svd((dl[:, None] * Q.T) @ Yt, full_matrices=False)
    U = Q @ ((1 / dl)[:, None] * (u[:, :2] * s[:2]))
    V = vt[:2].T
    B = ((Yt - U @ V.T).T @ Xt) @ np.linalg.inv(Xt.T @ Xt + 1.0)
    order = np.argsort(((Yt - U @ V.T - Xt @ B.T) ** 2).sum(0), kind="stable")
    for k, pos in enumerate(cols):
        J = order[pos]
        rest = np.setdiff1d(np.arange(300), J)
        Ute = (Yc[test][:, rest] - Xc[test] @ B[rest].T) @ V[rest]
        pred = Ute @ V[J].T + Xc[test] @ B[J].T
        assert abs(got["err"][k] / np.mean((pred - Yc[test][:, J]) ** 2) - 1) < 1e-10
    to_bed(tmp_path / "a.bed", np.ascontiguousarray(Y), count_A1=True)
    via_bed = L.lfmm_ridge_cv(X, str(tmp_path / "a.bed"), 2, 1.0, folds=[(test, cols)], batch_snps=16)
    np.testing.assert_allclose(via_bed["err"].to_numpy(), got["err"].to_numpy(), rtol=1e-10)


def test_bad_input(data):
    Y, X = data
    with pytest.raises(InputError, match="K must"):
        L.lfmm_lasso(X, Y, 169)
    with pytest.raises(InputError, match="nozero_prop"):
        L.lfmm_lasso(X, Y, 2, nozero_prop=0)
    with pytest.raises(InputError, match="lam values"):
        L.lfmm_ridge_cv(X, Y, 2, [-1.0])
    with pytest.raises(InputError, match="row_folds"):
        L.lfmm_ridge_cv(X, Y, 2, 1.0, row_folds=0)
    with pytest.raises(InputError, match="row fold"):
        L.lfmm_ridge_cv(X, Y, 2, 1.0, folds=[(np.array([0, 500]), [np.arange(10)])])
    Xna = X.copy()
    Xna[3, 0] = np.nan
    with pytest.raises(InputError, match="missing") as e:
        L.lfmm_lasso(Xna, Y, 2)
    assert e.value.row == 3


def test_cli_lasso_and_cv(data, tmp_path):
    from polgen.cli import main

    Y, X = data
    to_bed(tmp_path / "a.bed", np.ascontiguousarray(Y[:, :400]), count_A1=True)
    pl.DataFrame({"IID": [f"iid{i + 1}" for i in range(170)], "pheno": X[:, 0]}).write_csv(
        tmp_path / "env.tsv", separator="\t"
    )
    base = ["--bed", str(tmp_path / "a.bed"), "--covariates", str(tmp_path / "env.tsv")]
    out = tmp_path / "lasso.parquet"
    assert main(["lfmm", "lasso", *base, "-K", "3", "--out", str(out)]) == 0
    got = pl.read_parquet(out)
    want = L.lfmm_lasso(X, Y[:, :400], 3)
    np.testing.assert_allclose(got["BETA"].to_numpy(), want.B[:, 0], atol=1e-14)
    assert got.columns == ["CHR", "SNP", "BP", "A1", "A2", "BETA"]
    cv = tmp_path / "cv.parquet"
    assert main(["lfmm", "cv", *base, "-K", "1", "2", "--lam", "1e-5", "--row-folds", "2", "--col-folds", "2",
                 "--out", str(cv)]) == 0  # fmt: skip
    assert pl.read_parquet(cv).height == 2 * 2 * 2
    assert main(["lfmm", "cv", *base, "-K", "1", "--out", str(cv)]) != 0  # exists
