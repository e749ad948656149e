"""GLM tests with latent factors (lfmm glm_test / LEA lfmm2.test(linear=FALSE)) equal R glm() per
locus (tests/data/lfmm/r/glm, made by tests/data/make/lfmm_glm.R), from arrays and from a .bed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from bed_reader import to_bed
from scipy import stats

import polgen.lfmm as L
from polgen.errors import InputError, OutputExistsError
from polgen.kernels.lfmm_glm import BINOMIAL, POISSON, fit_glm_block

R = Path(__file__).resolve().parents[1] / "data" / "lfmm" / "r" / "glm"
SETS = [("ath", "binomial", 1), ("ath", "poisson", 1), ("sim", "poisson", 1), ("sim", "binomial", 2)]


def _rd(name: str) -> np.ndarray:
    return np.atleast_2d(np.genfromtxt(R / name, delimiter=",", missing_values="NA", filling_values=np.nan))


def _data(set_: str):
    X = _rd(f"{set_}_X.csv")
    X = X.T if X.shape[0] == 1 else X
    return _rd(f"{set_}_Y.csv"), X, _rd(f"{set_}_U.csv")


def _model(X: np.ndarray, U: np.ndarray, ids=None) -> L.LfmmModel:
    n, K = U.shape
    d = X.shape[1]
    return L.LfmmModel(
        U=U, singular_values=np.ones(K), U1=U, d_lambda=np.ones(d), Q_d=np.zeros((n, d)), sigma_x=np.ones(d),
        X=X, x_names=[f"X{j + 1}" for j in range(d)], sample_ids=ids, params={"K": K},
    )  # fmt: skip


@pytest.mark.parametrize("set_, family, trials", SETS)
def test_glm_test_equals_R_glm(set_, family, trials):
    Y, X, U = _data(set_)
    ref = _rd(f"{set_}_{family}{trials}.csv")
    d = X.shape[1]
    res = L.glm_test(_model(X, U), Y, family=family, trials=trials, calibrate=None)
    f = res.collect()
    sfx = [""] if d == 1 else [f"_X{j + 1}" for j in range(d)]
    for j, s in enumerate(sfx):
        for col, k in (("BETA", 0), ("SE", 1), ("Z", 2), ("P", 3)):
            got, want = f[f"{col}{s}"].to_numpy(), ref[:, k * d + j]
            rel = np.max(np.abs(got / want - 1))
            assert rel < 1e-8, f"{col}{s}: {rel:.2e}"
    assert f["CONVERGED"].all()
    np.testing.assert_array_equal(f["N_ITER"].to_numpy(), ref[:, -1])  # R's glm iterations, step for step
    assert f.height == 200 and not f["MONOMORPHIC"].any()


def test_kernel_irls_is_the_glm_mle():
    """Dense check: at the returned coefficients the score C'(y - mu) vanishes and the SE is the
    inverse Fisher information (independent of R)."""
    Y, X, U = _data("sim")
    C = np.c_[np.ones(len(X)), X - X.mean(0), U]
    coef, se, it, conv = fit_glm_block(Y[:, :20], C, POISSON)
    for j in range(20):
        ok = ~np.isnan(Y[:, j])
        mu = np.exp(C[ok] @ coef[j])
        score = C[ok].T @ (Y[ok, j] - mu)
        assert np.max(np.abs(score)) < 1e-6 * np.abs(Y[ok, j]).sum()
        info = C[ok].T @ (mu[:, None] * C[ok])
        # R's SEs (and ours) use the weights of the iterate before the last: equal to ~1e-4 here
        np.testing.assert_allclose(se[j], np.sqrt(np.diag(np.linalg.inv(info))), rtol=1e-4)
    coef, se, it, conv = fit_glm_block(Y[:, :5], C, BINOMIAL, 2.0)
    for j in range(5):
        ok = ~np.isnan(Y[:, j])
        mu = 1 / (1 + np.exp(-(C[ok] @ coef[j])))
        assert np.max(np.abs(C[ok].T @ (Y[ok, j] - 2 * mu))) < 1e-6 * len(ok)


def test_from_bed_with_calibration_and_snps(tmp_path):
    Y, X, U = _data("sim")
    ref = _rd("sim_poisson1.csv")
    bed = tmp_path / "sim.bed"
    to_bed(bed, Y, count_A1=True)
    model = _model(X, U)
    res = L.glm_test(model, str(bed), family="poisson", batch_snps=7, threads=3, out=tmp_path / "g.parquet")
    f = pl.read_parquet(tmp_path / "g.parquet")
    np.testing.assert_allclose(f["Z_X1"].to_numpy(), ref[:, 4], rtol=1e-8)
    np.testing.assert_array_equal(f["N_MISS"].to_numpy(), np.isnan(Y).sum(0))
    # GIF calibration as lfmm: median(z^2) / qchisq(0.5, 1), p = pchisq(z^2 / gif, 1, upper)
    for j, v in enumerate(("X1", "X2")):
        z = ref[:, 4 + j]
        gif = np.median(z**2) / stats.chi2.ppf(0.5, 1)
        assert abs(res.gif[v] / gif - 1) < 1e-8
        np.testing.assert_allclose(f[f"P_CALIBRATED_{v}"].to_numpy(), stats.chi2.sf(z**2 / gif, 1), rtol=1e-7)
    with pytest.raises(OutputExistsError):
        L.glm_test(model, str(bed), family="poisson", out=tmp_path / "g.parquet")
    sub = L.glm_test(model, str(bed), family="poisson", snps=[5, 0, 199], calibrate=None).collect()
    assert sub["SNP"].to_list() == [f.item(i, "SNP") for i in (0, 5, 199)]
    np.testing.assert_allclose(sub["BETA_X2"].to_numpy(), ref[[0, 5, 199], 1], rtol=1e-8)


def test_bad_input_and_degenerate_loci():
    Y, X, U = _data("sim")
    model = _model(X, U)
    with pytest.raises(InputError, match="more than trials=1"):
        L.glm_test(model, Y, family="binomial", trials=1)
    with pytest.raises(InputError, match="family"):
        L.glm_test(model, Y, family="gamma")
    with pytest.raises(InputError, match="out of range"):
        L.glm_test(model, Y, snps=[0, 200])
    with pytest.raises(InputError, match="samples"):
        L.glm_test(model, Y[:100])
    Yd = Y[:, :3].copy()
    Yd[:, 1] = 1.0  # no variation: no fit, null statistics
    f = L.glm_test(model, Yd, family="poisson", calibrate=None).collect()
    assert f["MONOMORPHIC"].to_list() == [False, True, False]
    assert f["Z_X1"].null_count() == 1 and not f["CONVERGED"][1]


def test_cli_and_namespace(tmp_path):
    from polgen.cli import main

    Y, X, U = _data("sim")
    ref = _rd("sim_binomial2.csv")
    bed = tmp_path / "sim.bed"
    iids = [f"i{k}" for k in range(len(X))]
    to_bed(bed, Y, properties={"iid": iids}, count_A1=True)
    model = _model(X, U, ids=iids)
    model.save(tmp_path / "m.npz")
    (tmp_path / "snps.txt").write_text("1\n2\n200\n")
    out = tmp_path / "g.parquet"
    argv = ["lfmm", "glm", "--bed", str(bed), "--model", str(tmp_path / "m.npz"), "--out", str(out)]
    assert main([*argv, "--snps", str(tmp_path / "snps.txt"), "--calibrate", "none"]) == 0
    f = pl.read_parquet(out)
    np.testing.assert_allclose(f["Z_X2"].to_numpy(), ref[[0, 1, 199], 5], rtol=1e-8)
    assert main(argv) != 0  # exists
    env = pl.DataFrame({"IID": iids, "X1": X[:, 0], "X2": X[:, 1]})
    via = env.lfmm.glm_test(model, str(bed), calibrate=None).collect()
    np.testing.assert_allclose(via["BETA_X1"].to_numpy(), ref[:, 0], rtol=1e-8)


@pytest.mark.parametrize("set_, family, trials", [("ath", "binomial", 1), ("sim", "poisson", 1)])
def test_test_with_a_glm_family_equals_R_glm(set_, family, trials):
    """``test(family=...)`` runs the GLM test: R glm()'s numbers, as glm_test."""
    Y, X, U = _data(set_)
    ref = _rd(f"{set_}_{family}{trials}.csv")
    d = X.shape[1]
    f = L.test(_model(X, U), Y, family=family, trials=trials, calibrate=None).collect()
    sfx = [""] if d == 1 else [f"_X{j + 1}" for j in range(d)]
    for j, s in enumerate(sfx):
        for col, k in (("BETA", 0), ("SE", 1), ("Z", 2), ("P", 3)):
            rel = np.max(np.abs(f[f"{col}{s}"].to_numpy() / ref[:, k * d + j] - 1))
            assert rel < 1e-8, f"{col}{s}: {rel:.2e}"
    np.testing.assert_array_equal(f["N_ITER"].to_numpy(), ref[:, -1])


def test_test_family_to_a_run_folder_namespace_and_cli(tmp_path):
    from polgen.cli import main

    Y, X, U = _data("sim")
    ref = _rd("sim_binomial2.csv")
    bed = tmp_path / "sim.bed"
    iids = [f"i{k}" for k in range(len(X))]
    to_bed(bed, Y, properties={"iid": iids}, count_A1=True)
    model = _model(X, U, ids=iids)
    env = pl.DataFrame({"IID": iids, "X1": X[:, 0], "X2": X[:, 1]})
    res = env.lfmm.test(model, str(bed), family="binomial", out=tmp_path / "run")
    f = res.collect()
    np.testing.assert_allclose(f["Z_X2"].to_numpy(), ref[:, 5], rtol=1e-8)
    gif = np.median(ref[:, 4] ** 2) / stats.chi2.ppf(0.5, 1)
    assert abs(res.gif["X1"] / gif - 1) < 1e-8
    np.testing.assert_allclose(f["P_CALIBRATED_X1"].to_numpy(), stats.chi2.sf(ref[:, 4] ** 2 / gif, 1), rtol=1e-7)
    assert (tmp_path / "run" / "_SUCCESS").exists()
    with pytest.raises(OutputExistsError):
        L.test(model, str(bed), env, family="binomial", out=tmp_path / "run")
    again = L.test(model, str(bed), env, family="binomial", out=tmp_path / "run", resume=True)
    assert again.gif == res.gif and again.collect().equals(f)
    with pytest.raises(InputError, match="family"):
        L.test(model, str(bed), env, family="gamma")
    with pytest.raises(InputError, match="full=True"):
        L.test(model, str(bed), env, family="poisson", full=True)
    # the CLI: fit + GLM test in one run folder, equal to glm_test with the saved model
    envf = tmp_path / "env.tsv"
    env.write_csv(envf, separator="\t")
    out = tmp_path / "cli"
    assert main(["lfmm", "--bed", str(bed), "--covariates", str(envf), "-K", "2", "--family", "poisson",
                 "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    got = pl.read_parquet(sorted(out.glob("part-*.parquet")))
    want = L.glm_test(L.load_model(out / "lfmm_model.npz"), str(bed), env, family="poisson").collect()
    np.testing.assert_allclose(got["Z_X1"].to_numpy(), want["Z_X1"].to_numpy(), rtol=1e-12)
    assert "CONVERGED" in got.columns and "T_X1" not in got.columns
