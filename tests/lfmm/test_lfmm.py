"""LFMM2: streamed fit + fused test against a dense numpy reference of R LEA's formulas, R's lm,
plink2 --glm, and the calibration / output / resume / bad-input behaviour."""

from __future__ import annotations

import dataclasses
import importlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from bed_reader import to_bed
from polars.testing import assert_frame_equal
from scipy import stats

import polgen.lfmm as L
from polgen.errors import BedFormatError, InputError, OutputExistsError
from polgen.lfmm import calibrate as cal


# -- simulation helpers -----------------------------------------------------------------------------
def simulate(n, p, K=3, *, fst=0.1, n_causal=0, effect=0.1, missing=0.0, d=1, seed=0, alpha=0.5, x_noise=1.0):
    """Admixed genotypes from K+1 Balding-Nichols populations, env correlated with ancestry,
    ``n_causal`` loci whose allele frequency shifts with the first env variable.

    (With env mostly ancestry, ``x_noise`` << 1, LEA's ridge LFMM under-corrects: the ancestry
    direction left after removing X is weak and noisy, GIF ~1.1-1.4 as R LEA would give too.)"""
    rng = np.random.default_rng(seed)
    q = rng.dirichlet(np.full(K + 1, alpha), size=n)
    base = rng.uniform(0.05, 0.95, p)
    a, b = base * (1 - fst) / fst, (1 - base) * (1 - fst) / fst
    F = rng.beta(a, b, size=(K + 1, p))
    X = q @ rng.normal(0, 1, (K + 1, d)) + rng.normal(0, x_noise, (n, d))
    X = (X - X.mean(0)) / X.std(0)
    f = q @ F
    causal = np.sort(rng.choice(p, n_causal, replace=False)) if n_causal else np.array([], dtype=int)
    f[:, causal] += effect * X[:, :1]
    f = np.clip(f, 0.01, 0.99)
    Y = rng.binomial(2, f).astype(np.float64)
    if missing:
        Y[rng.random(Y.shape) < missing] = np.nan
    return Y, X, causal


def write_bed(path: Path, Y: np.ndarray, ids=None) -> Path:
    n, p = Y.shape
    ids = ids or [f"s{i}" for i in range(n)]
    to_bed(
        path,
        np.where(np.isnan(Y), np.nan, Y).astype(np.float32),
        properties={
            "fid": ids,
            "iid": ids,
            "sid": [f"rs{j}" for j in range(p)],
            "chromosome": ["1"] * p,
            "bp_position": list(range(1, p + 1)),
            "allele_1": ["A"] * p,
            "allele_2": ["G"] * p,
        },
    )
    return path


def impute(Y):
    Y = Y.copy()
    m = np.nanmean(Y, axis=0)
    i, j = np.nonzero(np.isnan(Y))
    Y[i, j] = m[j]
    return Y


def lea_dense(Y, X, K, lam=1e-5, dlambda="lea"):
    """R LEA lfmm2 + lfmm2.test(linear=TRUE) with full n x n matrices (small data only)."""
    n, d = X.shape
    Xs, Ys = X - X.mean(0), Y - Y.mean(0)
    Q, s, _ = np.linalg.svd(Xs, full_matrices=True)
    sig = s if dlambda == "lea" else s**2
    dl = np.r_[np.sqrt(lam / (lam + sig)), np.ones(n - d)]
    u, sv, vt = np.linalg.svd(np.diag(dl) @ Q.T @ Ys, full_matrices=False)
    U = Q @ np.diag(1 / dl) @ u[:, :K] @ np.diag(sv[:K])
    W = U @ vt[:K]
    Rr = np.linalg.inv(Xs.T @ Xs + lam * np.eye(d))
    B = (Ys - W).T @ Xs @ Rr
    # B is linear in each SNP's y given the latent subspace: B = w' y with w = (I - P)' Xs Rr,
    # P = Q D^-1 u_K u_K' D Q' (W = P Ys); its standard error with the lm residual variance
    P = Q @ np.diag(1 / dl) @ u[:, :K] @ u[:, :K].T @ np.diag(dl) @ Q.T
    w = (np.eye(n) - P).T @ Xs @ Rr
    # lm(Y ~ ., data.frame(X, U)): t of the X coefficients
    C = np.c_[np.ones(n), X, U]
    coef = np.linalg.solve(C.T @ C, C.T @ Y)
    rss = ((Y - C @ coef) ** 2).sum(0)
    df = n - 1 - d - K
    se = np.sqrt(np.outer(np.diag(np.linalg.inv(C.T @ C))[1 : d + 1], rss / df))
    t = coef[1 : d + 1] / se
    se_B = np.sqrt(np.outer(rss / df, (w * w).sum(0)))  # (p, d) like B
    # full=TRUE: lm(res_Y ~ res_X) after regressing both on U (with intercept)
    CU = np.c_[np.ones(n), U]
    rY = Y - CU @ np.linalg.lstsq(CU, Y, rcond=None)[0]
    rX = X - CU @ np.linalg.lstsq(CU, X, rcond=None)[0]
    CX = np.c_[np.ones(n), rX]
    rss1 = ((rY - CX @ np.linalg.lstsq(CX, rY, rcond=None)[0]) ** 2).sum(0)
    tss = ((rY - rY.mean(0)) ** 2).sum(0)
    Fst = ((tss - rss1) / d) / (rss1 / (n - d - 1))
    r2adj = 1 - (rss1 / tss) * (n - 1) / (n - d - 1)
    return dict(U=U, B=B, se_B=se_B, t=t, F=Fst, r2adj=r2adj, sv=sv[:K], df=df)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """n=150, p=1200, d=2, 1% missing, 2 monomorphic SNPs; written as a .bed."""
    tmp = tmp_path_factory.mktemp("lfmm_small")
    Y, X, _ = simulate(150, 1200, K=3, fst=0.3, n_causal=20, missing=0.01, d=2, seed=3, alpha=0.2, x_noise=0.5)
    Y[:, 7] = 2.0
    Y[:, 11] = np.where(np.isnan(Y[:, 11]), np.nan, 0.0)
    bed = write_bed(tmp / "small.bed", Y)
    return dict(Y=Y, X=X, bed=bed, tmp=tmp)


# -- dense reference ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dlambda", ["lea", "exact"])
def test_streamed_fit_and_test_match_dense_lea(small, dlambda):
    Y, X, bed = small["Y"], small["X"], small["bed"]
    Yi = impute(Y)
    poly = Yi.std(0) > 0
    ref = lea_dense(Yi[:, poly], X, 3, dlambda=dlambda)
    model = L.fit(X, bed, 3, power_iter=4, dlambda=dlambda, batch_snps=97)
    np.testing.assert_allclose(model.singular_values, ref["sv"], rtol=1e-7)  # sigma_3 / sigma_4 = 51 / 25
    # U equals LEA's U column by column up to sign
    for k in range(3):
        sgn = np.sign(model.U[:, k] @ ref["U"][:, k])
        np.testing.assert_allclose(
            sgn * model.U[:, k], ref["U"][:, k], rtol=0, atol=1e-4 * np.abs(ref["U"][:, k]).max()
        )
    res = L.test(model, bed, X, full=True, batch_snps=64, task_snps=500)
    df = res.collect()
    assert df.height == Y.shape[1]
    assert df["MONOMORPHIC"].to_list() == (~poly).tolist()
    np.testing.assert_array_equal(df["N_MISS"].to_numpy(), np.isnan(Y).sum(0))
    np.testing.assert_allclose(df["A1FREQ"].to_numpy(), np.nanmean(Y, axis=0) / 2, rtol=1e-12)
    for j, name in enumerate(["X1", "X2"]):
        t = df[f"T_{name}"].to_numpy()[poly]
        assert np.max(np.abs(t - ref["t"][j])) < 1e-4
        np.testing.assert_allclose(
            df[f"BETA_{name}"].to_numpy()[poly], ref["B"][:, j], rtol=0, atol=2e-5 * np.abs(ref["B"]).max()
        )
        np.testing.assert_allclose(df[f"SE_{name}"].to_numpy()[poly], ref["se_B"][:, j], rtol=1e-4)
        p = df[f"P_{name}"].to_numpy()[poly]
        np.testing.assert_allclose(p, 2 * stats.t.sf(np.abs(ref["t"][j]), ref["df"]), rtol=1e-3)
        # LEA's genomic control on the stored z = t
        gif = np.median(ref["t"][j] ** 2) / stats.chi2.ppf(0.5, 1)
        assert res.gif[name] == pytest.approx(gif, rel=1e-4)
        pc = df[f"P_CALIBRATED_{name}"].to_numpy()[poly]
        np.testing.assert_allclose(pc, stats.chi2.sf(ref["t"][j] ** 2 / gif, 1), rtol=1e-3)
        np.testing.assert_allclose(df[f"LOG10P_{name}"].to_numpy()[poly], -np.log10(pc), rtol=1e-6)
    np.testing.assert_allclose(df["F"].to_numpy()[poly], ref["F"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(df["ADJ_R2"].to_numpy()[poly], ref["r2adj"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(df["P_F"].to_numpy()[poly], stats.f.sf(ref["F"], 2, 150 - 2 - 1), rtol=1e-3)
    gif_f = np.median(ref["F"]) / stats.f.isf(0.5, 2, 150 - 2 - 1)
    assert res.calibration["gif_F"] == pytest.approx(gif_f, rel=1e-4)
    # monomorphic SNPs: flagged, statistics null, no crash
    mono = df.filter(pl.col("MONOMORPHIC"))
    assert mono.height == (~poly).sum() >= 2
    assert mono["T_X1"].null_count() == mono.height and mono["F"].null_count() == mono.height
    assert mono["SE_X1"].null_count() == mono.height


def test_se_of_beta_matches_dense_reference_converged(small):
    """SE of the ridge BETA = sigma ||w||, against the dense n x n map of LEA's B on a converged fit."""
    Y, X, bed = small["Y"], small["X"], small["bed"]
    Yi = impute(Y)
    poly = Yi.std(0) > 0
    ref = lea_dense(Yi[:, poly], X, 3)
    model = L.fit(X, bed, 3)
    assert model.convergence.converged
    df = L.test(model, bed, X, calibrate=None).collect()
    for j, name in enumerate(["X1", "X2"]):
        se = df[f"SE_{name}"].to_numpy()[poly]
        np.testing.assert_allclose(se, ref["se_B"][:, j], rtol=1e-7)
        # a genuine standard error: the same order as the spread of BETA across null SNPs, not 0
        assert 0.2 < np.median(se) / np.std(df[f"BETA_{name}"].to_numpy()[poly]) < 5


def test_eigenstrat_scaling_matches_dense(small):
    Y, X = impute(small["Y"]), small["X"]
    Y = Y[:, Y.std(0) > 0]
    f = Y.mean(0) / 2
    Z = (Y - Y.mean(0)) / np.sqrt(2 * f * (1 - f))
    ref = lea_dense(Z, X, 3)
    model = L.fit(X, Y, 3, scale="eigenstrat", power_iter=4)
    np.testing.assert_allclose(model.singular_values, ref["sv"], rtol=1e-7)
    # t is scale invariant: test() on the raw dosages reproduces lm(Z ~ X + U)
    t = L.test(model, Y, X).collect()["T_X1"].to_numpy()
    assert np.max(np.abs(t - ref["t"][0])) < 1e-4


def test_array_input_matches_bed_and_est_subsets(small):
    Y, X, bed = small["Y"], small["X"], small["bed"]
    m_arr = L.fit(X, Y, 3, est_rate=0.5, power_iter=3)
    m_bed = L.fit(X, bed, 3, est_rate=0.5, power_iter=3)
    np.testing.assert_allclose(m_arr.U, m_bed.U, rtol=1e-10, atol=1e-10)
    idx = np.arange(0, Y.shape[1], 2)
    m_idx = L.fit(X, bed, 3, est_index=idx, power_iter=3)
    assert m_idx.params["n_est_snps"] == idx.size
    # est_bed: a separate file with the same samples (every other SNP)
    est = write_bed(small["tmp"] / "est.bed", Y[:, idx])
    m_est = L.fit(X, bed, 3, est_bed=est, power_iter=3)
    np.testing.assert_allclose(np.abs(m_est.U), np.abs(m_idx.U), rtol=1e-8, atol=1e-8)
    ta = L.test(m_arr, Y, X).collect()["T_X1"].to_numpy()
    tb = L.test(m_bed, bed, X).collect()["T_X1"].to_numpy()
    np.testing.assert_allclose(ta, tb, rtol=1e-10, equal_nan=True)


def test_lm_statistics_match_R():
    """R's lm/summary on the same Y, X, U: t of X, LEA's full F and adjusted R^2.  Stored R output
    (tests/data/lfmm/r/lm/, made by tests/data/make/lfmm_r.py: the first 60 SNPs of ``small``,
    imputed, and the U polgen's fit gave; no R needed here); polgen's test is given R's U."""
    d = Path(__file__).resolve().parents[1] / "data" / "lfmm" / "r" / "lm"
    Y, X, U = (np.loadtxt(d / f"{m}.csv", delimiter=",", ndmin=2) for m in ("Y", "X", "U"))
    r = np.loadtxt(d / "lm.csv", delimiter=",")
    model = dataclasses.replace(L.fit(X, Y, 3, power_iter=4), U=U)
    df = L.test(model, Y, X, full=True, calibrate=None).collect()
    np.testing.assert_allclose(df["T_X1"].to_numpy(), r[0], rtol=1e-8)
    np.testing.assert_allclose(df["T_X2"].to_numpy(), r[1], rtol=1e-8)
    np.testing.assert_allclose(df["F"].to_numpy(), r[2], rtol=1e-8)
    np.testing.assert_allclose(df["ADJ_R2"].to_numpy(), r[3], rtol=1e-7, atol=1e-10)


# -- simulation with population structure; plink2 parity --------------------------------------------------
@pytest.fixture(scope="module")
def structured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lfmm_sim")
    # GIF is a random draw: over seeds 1..20 of this design LFMM's GIF has mean 1.07 (70% in
    # [0.9, 1.1]; 1% causal loci alone add ~3%), with x_noise=2 mean 1.04 (95%); seed 1: 1.02
    Y, X, causal = simulate(500, 5000, K=3, fst=0.1, n_causal=50, effect=0.1, seed=1)
    bed = write_bed(tmp / "sim.bed", Y)
    model = L.fit(X, bed, 3, est_rate=0.5)
    res = L.test(model, bed, X)
    return dict(Y=Y, X=X, causal=causal, bed=bed, model=model, res=res, tmp=tmp)


def test_simulation_gif_and_auc(structured):
    df = structured["res"].collect()
    gif = structured["res"].gif["X1"]
    assert 0.9 <= gif <= 1.1
    score = df["LOG10P"].to_numpy()
    truth = np.zeros(df.height, dtype=bool)
    truth[structured["causal"]] = True
    auc = stats.mannwhitneyu(score[truth], score[~truth]).statistic / (truth.sum() * (~truth).sum())
    assert auc >= 0.99


@pytest.mark.skipif(shutil.which("plink2") is None, reason="plink2 not installed (Debian package plink2)")
def test_t_equals_plink2_glm(structured):
    tmp, model, X = structured["tmp"], structured["model"], structured["X"]
    ids = [f"s{i}" for i in range(X.shape[0])]
    pl.DataFrame({"#FID": ids, "IID": ids, "ENV": X[:, 0]}).write_csv(tmp / "pheno.txt", separator="\t")
    Us = (model.U - model.U.mean(0)) / model.U.std(0)  # rescaling covariates leaves every t unchanged
    pl.DataFrame({"#FID": ids, "IID": ids, **{f"U{k + 1}": Us[:, k] for k in range(model.K)}}).write_csv(
        tmp / "covar.txt", separator="\t"
    )
    subprocess.run(
        [
            "plink2",
            "--bfile",
            str(tmp / "sim"),
            "--pheno",
            str(tmp / "pheno.txt"),
            "--covar",
            str(tmp / "covar.txt"),
            "--glm",
            "hide-covar",
            "--threads",
            "2",
            "--out",
            str(tmp / "pl"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    out = pl.read_csv(next(tmp.glob("pl*.glm.linear")), separator="\t", null_values="NA")
    ours = structured["res"].collect()
    assert out.height == ours.height and out["ID"].to_list() == ours["SNP"].to_list()
    sign = np.where(out["A1"].to_numpy() == ours["A1"].to_numpy(), 1.0, -1.0)
    t_plink = sign * out["T_STAT"].to_numpy()
    np.testing.assert_allclose(ours["T"].to_numpy(), t_plink, rtol=2e-4, atol=2e-4)


# -- calibration -----------------------------------------------------------------------------------------
def test_median_mad_calibration_recentres(small):
    Y, X = small["Y"], small["X"][:, :1]
    model = L.fit(X, Y, 3, power_iter=3)
    res = L.test(model, Y, X, calibrate="median+MAD")
    df = res.collect().filter(~pl.col("MONOMORPHIC"))
    z = df["T"].to_numpy()
    med = np.median(z)
    mad = 1.4826 * np.median(np.abs(z - med))
    c = res.calibration["variables"]["X1"]
    assert c["median"] == pytest.approx(med) and c["mad"] == pytest.approx(mad)
    np.testing.assert_allclose(df["P_CALIBRATED"].to_numpy(), 2 * stats.norm.sf(np.abs((z - med) / mad)), rtol=1e-9)
    none = L.test(model, Y, X, calibrate=None).collect()
    assert none["P_CALIBRATED"].null_count() == none.height
    np.testing.assert_allclose(none["LOG10P"].to_numpy(), -np.log10(none["P"].to_numpy()), rtol=1e-9)


def test_streamed_median_is_exact():
    rng = np.random.default_rng(5)
    for trial in range(20):
        size = int(rng.integers(1, 3000))
        v = rng.standard_normal(size) ** 2
        if trial % 3 == 0:
            v = np.round(v, 1)  # many ties
        v[rng.random(size) < 0.05] = np.nan
        chunks = np.array_split(v, int(rng.integers(1, 7)))
        fin = v[np.isfinite(v)]
        got = cal.streamed_median(lambda chunks=chunks: iter(chunks))
        if fin.size == 0:
            assert np.isnan(got)
        else:
            assert got == np.median(fin)
        for k in rng.integers(0, max(fin.size, 1), 3):
            if fin.size:
                assert (
                    cal.streamed_order_stat(lambda chunks=chunks: iter(chunks), int(k), bins=8, direct=5)
                    == np.sort(fin)[k]
                )


def test_log10p_beyond_double_underflow():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    t = np.array([3.0, 40.0, 120.0, 900.0])
    df = 400.0
    _, lp = cal.t_log10p(t, df)
    for ti, li in zip(t, lp):
        x = df / (df + ti * ti)
        exact = -mpmath.log10(mpmath.betainc(df / 2, 0.5, 0, x, regularized=True))
        assert li == pytest.approx(float(exact), rel=1e-10)
    _, lf = cal.f_log10p(np.array([2.0, 5e4]), 2, 300)
    for fi, li in zip([2.0, 5e4], lf):
        x = 300 / (300 + 2 * fi)
        exact = -mpmath.log10(mpmath.betainc(150, 1, 0, x, regularized=True))
        assert li == pytest.approx(float(exact), rel=1e-10)


# -- streamed output, resume -------------------------------------------------------------------------------
def test_out_equals_in_memory_and_resume(small, tmp_path, monkeypatch):
    X, bed = small["X"], small["bed"]
    env = pl.DataFrame({"IID": [f"s{i}" for i in range(150)][::-1], "temp": X[::-1, 0], "rain": X[::-1, 1]})
    model = env.lfmm.fit(bed, 3, power_iter=3)
    mem = env.lfmm.test(model, bed, full=True).collect()
    res = env.lfmm.test(model, bed, full=True, out=tmp_path / "o", task_snps=250)
    disk = res.collect()
    assert_frame_equal(mem, disk)
    assert sorted(res.gif) == ["rain", "temp"] and "T_temp" in disk.columns
    meta = L.assoc_disk.pq.read_schema(res.sink.files[0]).metadata
    assert b"polgen.lfmm.calibration" in meta
    from polgen.io.sink import read_metadata

    assert read_metadata(tmp_path / "o")["lfmm"]["variables"]["temp"]["gif"] == pytest.approx(res.gif["temp"])
    assert not (tmp_path / "o" / "_uncalibrated").exists()
    with pytest.raises(OutputExistsError):
        env.lfmm.test(model, bed, full=True, out=tmp_path / "o", task_snps=250)

    # the statistics are held in memory and the table written once: no uncalibrated parts; a run
    # killed while computing (nothing recorded) or while writing the final parts resumes to
    # byte-identical files
    D = L.assoc_disk
    for stage, name in (("compute", "_range_stats"), ("write", "_final_part")):
        calls = {"n": 0}
        real = getattr(D, name)

        def flaky(task, real=real, calls=calls):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt("killed")
            return real(task)

        monkeypatch.setattr(D, name, flaky)
        with pytest.raises(KeyboardInterrupt):
            env.lfmm.test(model, bed, full=True, out=tmp_path / stage, task_snps=250)
        monkeypatch.setattr(D, name, real)
        manifest = (tmp_path / stage / "_polgen_manifest.jsonl").read_text().splitlines()
        assert len(manifest) - 1 == (0 if stage == "compute" else 2)  # the header, then one line per part
        assert not (tmp_path / stage / D._RAW).exists()
        again = env.lfmm.test(model, bed, full=True, out=tmp_path / stage, task_snps=250, resume=True)
        assert_frame_equal(again.collect(), disk)
        _assert_same_parts(tmp_path / "o", tmp_path / stage)

    # above the memory cap the statistics spill to uncalibrated parts first (two passes): the same
    # files; a run killed in the middle of the first pass resumes to identical files
    monkeypatch.setattr(D, "HOLD_STATS_BYTES", 0)
    calls = {"n": 0}
    real = D._raw_part

    def flaky_raw(task):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(task)

    monkeypatch.setattr(D, "_raw_part", flaky_raw)
    with pytest.raises(KeyboardInterrupt):
        env.lfmm.test(model, bed, full=True, out=tmp_path / "r", task_snps=250)
    assert (tmp_path / "r" / D._RAW).exists()
    monkeypatch.setattr(D, "_raw_part", real)
    again = env.lfmm.test(model, bed, full=True, out=tmp_path / "r", task_snps=250, resume=True)
    assert_frame_equal(again.collect(), disk)
    _assert_same_parts(tmp_path / "o", tmp_path / "r")
    assert not (tmp_path / "r" / D._RAW).exists()
    # ... and a finished run asked to resume is returned as is
    done = env.lfmm.test(model, bed, full=True, out=tmp_path / "r", task_snps=250, resume=True)
    assert done.gif == res.gif
    # overwrite replaces it
    env.lfmm.test(model, bed, out=tmp_path / "r", task_snps=500, overwrite=True, calibrate=None)


def _assert_same_parts(a: Path, b: Path) -> None:
    pa_, pb_ = sorted(a.glob("part-*.parquet")), sorted(b.glob("part-*.parquet"))
    assert [f.name for f in pa_] == [f.name for f in pb_] and pa_
    for x, y in zip(pa_, pb_):
        assert x.read_bytes() == y.read_bytes(), f"{y} differs from {x}"


def test_executors_give_identical_output(small, tmp_path):
    X, bed = small["X"], small["bed"]
    model = L.fit(pl.DataFrame({"IID": [f"s{i}" for i in range(150)], "a": X[:, 0]}).lazy(), bed, 3, power_iter=2)
    ref = L.test(model, bed, task_snps=300).collect()
    thr = L.test(model, bed, task_snps=300, executor="threads").collect()
    assert_frame_equal(ref, thr)
    # spawn, not fork: forking a process whose Polars/OpenMP thread pools are running can deadlock
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        proc = L.test(model, bed, task_snps=300, executor=pool, out=tmp_path / "p").collect()
    assert_frame_equal(ref, proc)


def test_model_save_load_roundtrip(small, tmp_path):
    model = L.fit(small["X"], small["bed"], 2, power_iter=1)
    path = model.save(tmp_path / "m.npz")
    back = L.load_model(path)
    np.testing.assert_array_equal(back.U, model.U)
    assert back.params == model.params and back.sample_ids == model.sample_ids
    a = L.test(path, small["bed"]).collect()
    b = L.test(model, small["bed"]).collect()
    assert_frame_equal(a, b)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError):
        L.load_model(tmp_path / "junk.npz")


# -- bad input ---------------------------------------------------------------------------------------------
def _copy_trio(src: Path, dst: Path) -> Path:
    for ext in (".bed", ".bim", ".fam"):
        shutil.copy(src.with_suffix(ext), dst.with_suffix(ext))
    return dst.with_suffix(".bed")


def test_bad_bed_files(small, tmp_path):
    X = small["X"]
    bed = _copy_trio(small["bed"], tmp_path / "t")
    raw = bed.read_bytes()
    bed.write_bytes(raw[:-7])
    with pytest.raises(BedFormatError, match="truncated"):
        L.fit(X, bed, 2)
    bed.write_bytes(b"\x00\x00\x01" + raw[3:])
    with pytest.raises(BedFormatError, match="not a PLINK .bed"):
        L.fit(X, bed, 2)
    bed.write_bytes(raw)
    bim = bed.with_suffix(".bim")
    bim.write_text(bim.read_text() + "1\trsX\t0\t99999\tA\tG\n")
    with pytest.raises(BedFormatError, match="does not match"):
        L.test(L.fit(X, small["bed"], 2, power_iter=0), bed, X)
    shutil.copy(small["bed"].with_suffix(".bim"), bim)
    fam = bed.with_suffix(".fam")
    fam.write_text(fam.read_text() + "e1 e1 0 0 1 -9\ne2 e2 0 0 1 -9\ne3 e3 0 0 1 -9\n")
    with pytest.raises(BedFormatError, match="does not match"):
        L.fit(X, bed, 2)
    with pytest.raises(InputError, match="not found"):
        L.fit(X, tmp_path / "missing.bed", 2)


def test_bad_covariates_and_K(small):
    bed, X = small["bed"], small["X"]
    ids = [f"s{i}" for i in range(150)]
    wrong = pl.DataFrame({"IID": ids[:-2] + ["zz1", "zz2"], "temp": X[:, 0]})
    with pytest.raises(InputError, match=r"s148.*s149|s149.*s148"):
        L.fit(wrong, bed, 2)
    with pytest.raises(InputError, match="K must"):
        L.fit(X, bed, 0)
    with pytest.raises(InputError, match="K must"):
        L.fit(X, bed, 150)
    with pytest.raises(InputError, match="K must"):
        L.fit(X, bed, 2.5)
    for lam in (0.0, -1.0, float("inf"), float("nan"), "1e-5"):
        with pytest.raises(InputError, match="lam must be a positive finite"):
            L.fit(X, bed, 2, lam=lam)
    for seed in (-1, 1.5, None):
        with pytest.raises(InputError, match="seed must be a non-negative integer"):
            L.fit(X, bed, 2, seed=seed)
    Xn = X.copy()
    Xn[4, 1] = np.nan
    with pytest.raises(InputError, match="non-finite") as e:
        L.fit(Xn, bed, 2)
    assert e.value.row == 4
    with pytest.raises(InputError, match="no variance"):
        L.fit(np.c_[X[:, 0], np.ones(150)], bed, 2)
    with pytest.raises(InputError, match="rows"):
        L.fit(X[:100], bed, 2)
    with pytest.raises(InputError, match="lam"):
        L.fit(X, bed, 2, lam=0)
    with pytest.raises(InputError, match="at most one"):
        L.fit(X, bed, 2, est_rate=0.5, est_index=[1, 2])
    model = L.fit(X, bed, 2, power_iter=0)
    with pytest.raises(InputError, match="calibrate"):
        L.test(model, bed, calibrate="bonferroni")
    with pytest.raises(InputError, match="samples"):
        L.test(model, small["Y"][:120])


# -- choose_k ------------------------------------------------------------------------------------------------
def test_choose_k_eigenvalues_and_tracy_widom(structured):
    from polgen.lfmm.choosek import _tw1_table

    s, _, log_cdf = _tw1_table()
    pdf = np.gradient(np.exp(log_cdf), s)
    assert np.trapezoid(s * pdf, s) == pytest.approx(-1.2065335745820, abs=1e-6)  # TW1 mean
    Y = structured["Y"][:, ::2]
    ex = L.choose_k(Y, k_max=8, method="exact")
    Z = impute(Y)
    Z = (Z - Z.mean(0)) / np.sqrt(2 * Z.mean(0) / 2 * (1 - Z.mean(0) / 2))
    ref = np.linalg.eigvalsh(Z @ Z.T / Z.shape[1])[::-1]
    np.testing.assert_allclose(ex.eigenvalues, ref[:8], rtol=1e-9)
    rnd = L.choose_k(Y, k_max=8)
    np.testing.assert_allclose(rnd.eigenvalues[:3], ex.eigenvalues[:3], rtol=1e-6)
    assert ex.suggested_k(1e-3) == 3 and rnd.suggested_k(1e-3) == 3
    assert ex.frame().columns == ["K", "EIGENVALUE", "VARIANCE_EXPLAINED", "TW", "P", "N_EFF"]


def test_cli_end_to_end(small, tmp_path, capsys):
    from polgen.lfmm.cli import main

    ids = [f"s{i}" for i in range(150)]
    pl.DataFrame({"IID": ids, "temp": small["X"][:, 0]}).write_csv(tmp_path / "env.tsv", separator="\t")
    rc = main(
        [
            "lfmm",
            "--bed",
            str(small["bed"]),
            "--covariates",
            str(tmp_path / "env.tsv"),
            "-K",
            "3",
            "--est-rate",
            "0.5",
            "--out",
            str(tmp_path / "res"),
        ]
    )
    assert rc == 0 and "GIF[temp]" in capsys.readouterr().out
    out = pl.read_parquet(tmp_path / "res" / "*.parquet")
    assert out.height == 1200 and {"T", "P_CALIBRATED", "LOG10P"} <= set(out.columns)
    rc = main(
        [
            "lfmm",
            "--bed",
            str(small["bed"]),
            "--covariates",
            str(tmp_path / "nope.tsv"),
            "-K",
            "3",
            "--out",
            str(tmp_path / "res2"),
        ]
    )
    assert rc == 2


# -- a BedStream as the genotypes ------------------------------------------------------------------------
def test_bedstream_input_equals_path_input(small):
    from polgen.io.bed import BedStream

    X, bed = small["X"], small["bed"]
    model = L.fit(X, bed, 3, power_iter=2)
    want = L.test(model, bed, X, task_snps=500).collect()
    for stream in (BedStream(bed), BedStream(bed, scale="eigenstrat", dtype=np.float32)):
        m = L.fit(X, stream, 3, power_iter=2)
        np.testing.assert_array_equal(m.U, model.U)
        got = L.test(model, stream, X, task_snps=500).collect()
        assert got.equals(want)
    # a stream's own SNP selection is kept, in memory and on disk (the tasks ship the stream itself)
    raw = L.test(model, bed, X, calibrate=None).collect()
    sel = np.arange(100, 1100, 3)
    sub = L.test(model, BedStream(bed, snps=sel), X, calibrate=None, task_snps=97).collect()
    assert sub.equals(raw[sel.tolist()])
    disk = L.test(
        model, BedStream(bed, snps=sel), X, calibrate=None, task_snps=97, out=small["tmp"] / "stream_sel"
    ).collect()
    assert disk.equals(raw[sel.tolist()])
    # A2 counted: the same tests with the other sign
    a2 = L.test(model, BedStream(bed, count_a1=False), X, calibrate=None).collect()
    t_cols = [c for c in raw.columns if c.startswith("T")]
    assert t_cols
    np.testing.assert_allclose(a2.select(t_cols).to_numpy(), -raw.select(t_cols).to_numpy(), rtol=1e-9, atol=1e-12)


def test_bedstream_sample_subset_equals_a_file_of_those_samples(small, tmp_path):
    """LFMM on BedStream(samples=...) gives the numbers of a .bed holding only those samples."""
    from polgen.io.bed import BedStream

    Y, X, bed = small["Y"], small["X"], small["bed"]
    keep = np.flatnonzero(np.arange(150) % 5 != 2)
    sub_bed = write_bed(tmp_path / "sub.bed", Y[keep], ids=[f"s{i}" for i in keep])
    model = L.fit(X[keep], sub_bed, 3, power_iter=2)
    m2 = L.fit(X[keep], BedStream(bed, samples=keep), 3, power_iter=2, scale="eigenstrat")
    m1 = L.fit(X[keep], sub_bed, 3, power_iter=2, scale="eigenstrat")
    np.testing.assert_allclose(m2.U, m1.U, rtol=1e-9, atol=1e-12)
    want = L.test(model, sub_bed, X[keep], task_snps=400).collect()
    got = L.test(model, BedStream(bed, samples=keep), X[keep], task_snps=400).collect()
    num = [c for c, t in want.schema.items() if t.is_float()]
    np.testing.assert_allclose(got.select(num).to_numpy(), want.select(num).to_numpy(), rtol=1e-9, atol=1e-12)
    disk = L.test(model, BedStream(bed, samples=keep), X[keep], task_snps=400, out=tmp_path / "o").collect()
    np.testing.assert_allclose(disk.select(num).to_numpy(), want.select(num).to_numpy(), rtol=1e-9, atol=1e-12)


def test_fit_reads_the_estimation_snps_once(small, monkeypatch):
    """The fit holds the packed estimation rows in memory (one read of the .bed for all its
    passes) and gets the same bits as streaming them from the file every pass."""
    import importlib

    from polgen.io.bed import BedStream

    lfmm_fit = importlib.import_module("polgen.lfmm.fit")  # the module (polgen.lfmm.fit is the function)

    X, bed = small["X"], small["bed"]
    held = L.fit(X, bed, 3, est_rate=0.5)
    monkeypatch.setattr(lfmm_fit, "HOLD_BYTES", 0)
    streamed = L.fit(X, bed, 3, est_rate=0.5)
    assert held.convergence.passes == streamed.convergence.passes >= 3
    np.testing.assert_array_equal(held.U, streamed.U)
    # the held copy decodes to the file's values, with and without a sample subset
    sel = np.arange(1, 1200, 7)
    for kw in ({}, {"samples": np.arange(0, 150, 2)}):
        a, b = BedStream(bed, snps=sel, **kw), BedStream(bed, snps=sel, **kw)
        assert a.hold_in_memory(1 << 30) and not BedStream(bed).hold_in_memory(10)
        for x, y in zip(a.blocks(block_snps=50), b.blocks(block_snps=50)):
            np.testing.assert_array_equal(x.data, y.data)
            np.testing.assert_array_equal(x.freq, y.freq)
            np.testing.assert_array_equal(x.n_miss, y.n_miss)


def test_fit_products_from_packed_rows_equal_dense(small):
    """The fit's pass ``Yc Yc' G`` from uncentred packed dosages (the centring and the missing
    calls applied to the small products) equals the dense product of the centred genotypes."""
    from polgen.io.bed import BedStream

    fit_mod = importlib.import_module("polgen.lfmm.fit")

    class Bar:
        def advance(self):
            pass

    Y = BedStream(small["bed"]).read_all()
    assert (Y == 0).any() and small["Y"].shape[0] % 4  # missing calls (0 after centring), a partial last byte
    G = np.random.default_rng(1).standard_normal((Y.shape[0], 7))
    want = Y @ (Y.T @ G)
    for threads in (1, 2):
        got = fit_mod._gram_pass(BedStream(small["bed"]), G, Bar(), threads=threads, block_snps=37)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-10 * np.abs(want).max())


@pytest.mark.parametrize("n", [1, 7, 150, 1001])
def test_packed_decode_equals_the_bed_decoder(n):
    """The test pass's decoder (dosages in one pass, y'y from integer counts, the centring applied
    to the products) gives the general .bed decoder's dosages bit for bit, its frequencies and
    missing counts, y'y to rounding, and the centred products T'y to rounding, with missing calls
    and n % 4 != 0."""
    from polgen.kernels.bed_decode import DOSAGE_A1, DOSAGE_A2, decode_rows
    from polgen.kernels.lfmm_decode import center_projection, decode_dosage_yy, packed_byte_table, pair_table

    rng = np.random.default_rng(n)
    p = 300
    packed = rng.integers(0, 256, (p, (n + 3) // 4), dtype=np.uint8)
    packed[::3] &= np.uint8(0b10101010)  # codes 00 / 10 only: no missing calls
    packed[5] = 0b01010101  # every call missing
    rows = np.r_[5, rng.permutation(p)[:199]]
    T = rng.standard_normal((n, 8))
    for a1, dosage in ((True, DOSAGE_A1), (False, DOSAGE_A2)):
        raw = np.empty((n, rows.size), order="F")
        wf, wm = np.empty(rows.size), np.empty(rows.size, dtype=np.int64)
        decode_rows(packed, rows, n, 0, raw, wf, wm, count_a1=a1, parallel=False)
        centred = np.empty((n, rows.size), order="F")
        decode_rows(packed, rows, n, 1, centred, np.empty(rows.size), np.empty(rows.size, np.int64), count_a1=a1)
        got = np.full((n, rows.size), 7.0, order="F")
        mean, gf, gm, yy = (
            np.empty(rows.size),
            np.empty(rows.size),
            np.empty(rows.size, np.int64),
            np.empty(rows.size),
        )
        miss_idx, miss_start = np.empty(n * rows.size, dtype=np.int64), np.empty(rows.size + 1, dtype=np.int64)
        luts = packed_byte_table(dosage), pair_table(dosage)
        decode_dosage_yy(packed, rows, n, dosage, *luts, got, mean, gf, gm, yy, miss_idx, miss_start)
        missing = [set(np.flatnonzero(np.isnan(raw[:, j]))) for j in range(rows.size)]
        assert [set(miss_idx[miss_start[j] : miss_start[j + 1]]) for j in range(rows.size)] == missing
        np.testing.assert_array_equal(got, np.nan_to_num(raw, nan=0.0))
        np.testing.assert_array_equal(gf, wf)
        np.testing.assert_array_equal(gm, wm)
        np.testing.assert_allclose(yy, (centred * centred).sum(axis=0), rtol=1e-13, atol=1e-12)
        PT = got.T @ T
        center_projection(mean, miss_idx, miss_start, T.sum(axis=0), T, PT)
        np.testing.assert_allclose(PT, centred.T @ T, rtol=1e-12, atol=1e-12 * np.abs(T).sum(axis=0).max())
        assert (gm == n).any() and (gm == 0).any()
