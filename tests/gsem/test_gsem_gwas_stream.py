"""Streaming GWAS: a SIGKILLed run resumes to the same result; CLI; process executor; the fast
path agrees with the general per-SNP fitter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.conftest import gsem_fixture

MODEL = "F1 =~ NA*ANX + OCD + PTSD\nF1 ~ SNP\nF1 ~~ 1*F1\nSNP ~~ SNP"


def _inputs(tmp_path: Path, n: int = 3000):
    d = json.loads(gsem_fixture("gwas_per_snp.json").read_text())
    cov = {"S": d["s"], "V": d["v"], "I": d["i_mat"], "trait_names": d["trait_names"]}
    rng = np.random.default_rng(7)
    se = rng.uniform(0.02, 0.07, (n, 3))
    beta = rng.normal(0, 1, (n, 3)) * se
    cols = {
        "SNP": [f"rs{i}" for i in range(n)],
        "CHR": ["1"] * n,
        "BP": np.arange(n, dtype=np.int64),
        "MAF": rng.uniform(0.01, 0.5, n),
        "A1": ["A"] * n,
        "A2": ["G"] * n,
    }
    for j, t in enumerate(d["trait_names"]):
        cols[f"beta.{t}"] = beta[:, j]
        cols[f"se.{t}"] = se[:, j]
    path = tmp_path / "sumstats.parquet"
    pl.DataFrame(cols).write_parquet(path)
    cov_path = tmp_path / "cov.json"
    cov_path.write_text(json.dumps(cov))
    return path, cov_path


_SCRIPT = """
import sys
from polgen.gsem.gwas import user_gwas
user_gwas(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=25, out=sys.argv[4], progress=False)
"""


def test_sigkill_and_resume_gives_identical_output(tmp_path):
    from polgen.gsem.gwas import user_gwas

    path, cov = _inputs(tmp_path)
    ref = user_gwas(str(path), str(cov), MODEL, batch_size=25)
    out = tmp_path / "run"
    env = dict(os.environ, POLGEN_PROGRESS="0")
    proc = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, str(path), str(cov), MODEL, str(out)],
        env=env,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    killed = False
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if out.exists() and len(list(out.glob("part-*.parquet"))) >= 3:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait()
    if not killed:
        pytest.skip("the run finished before it could be killed")
    n_parts = len(list(out.glob("part-*.parquet")))
    assert n_parts < 120  # really interrupted
    res = user_gwas(str(path), str(cov), MODEL, batch_size=25, out=out, resume=True).collect()
    assert_frame_equal(res, ref)
    # and equal to an uninterrupted run written to disk
    clean = user_gwas(str(path), str(cov), MODEL, batch_size=25, out=tmp_path / "clean").collect()
    assert_frame_equal(clean, ref)


def test_process_executor_and_cli(tmp_path):
    from polgen.gsem.gwas import commonfactor_gwas, user_gwas

    path, cov = _inputs(tmp_path, n=300)
    ref = user_gwas(str(path), str(cov), MODEL, batch_size=100)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: forking a process whose polars / numba thread pools are running can deadlock
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as ex:
        got = user_gwas(str(path), str(cov), MODEL, batch_size=100, executor=ex)
    assert_frame_equal(got, ref)
    model_file = tmp_path / "model.txt"
    model_file.write_text(MODEL)
    env = dict(os.environ, POLGEN_PROGRESS="0")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "polgen.cli",
            "gsem",
            "user-gwas",
            "--sumstats",
            str(path),
            "--covstruc",
            str(cov),
            "--model",
            str(model_file),
            "--out",
            str(tmp_path / "cli"),
            "--batch-size",
            "128",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    assert r.returncode == 0, r.stderr
    assert "300 SNPs" in r.stdout
    assert_frame_equal(pl.scan_parquet(str(tmp_path / "cli" / "part-*.parquet")).collect(), ref)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "polgen.cli",
            "gsem",
            "commonfactor-gwas",
            "--sumstats",
            str(path),
            "--covstruc",
            str(cov),
            "--out",
            str(tmp_path / "cf"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    assert r.returncode == 0, r.stderr
    cf = pl.scan_parquet(str(tmp_path / "cf" / "part-*.parquet")).collect()
    assert_frame_equal(cf, commonfactor_gwas(str(path), str(cov)))


def test_fast_path_equals_general_fitter(tmp_path):
    """The closed-form fast path and the general RAM fitter give the same per-SNP results."""
    from polgen.gsem.gwas_plan import plan_user
    from polgen.kernels.gwas import gwas_batch

    d = json.loads(gsem_fixture("gwas_per_snp.json").read_text())
    cov = {"S": d["s"], "V": d["v"], "I": d["i_mat"], "trait_names": d["trait_names"]}
    for model, q in ((MODEL, False), ("F1 =~ ANX + OCD + PTSD\nF1 ~ SNP\nOCD ~ SNP", True)):
        plan = plan_user(None, cov, model, "DWLS", "standard", True, False, q, False, None, False, None, None, True)
        st = plan.stage1
        assert st.fast is not None
        rng = np.random.default_rng(3)
        n = 500
        se = rng.uniform(0.02, 0.07, (n, 3))
        beta = rng.normal(0, 1, (n, 3)) * se
        var = 2 * (m := rng.uniform(0.01, 0.5, n)) * (1 - m)
        args = (
            beta,
            se,
            var,
            plan.S_LD,
            plan.V_LD,
            plan.I_LD,
            plan.gc,
            plan.varse2,
            plan.v_pd_known,
            st.model,
            st.fidx,
            st.starts,
            st.snpvar_par,
        )
        kw = dict(q_ptr=plan.q_ptr, q_obs=plan.q_obs, q_trait=plan.q_trait)
        b = gwas_batch(*args, **kw)
        assert (b["status"] == 0).all()
        for elim in (False, True):
            a = gwas_batch(*args, fast=st.fast, eliminate=elim, **kw)
            assert (a["status"] == 0).all()
            np.testing.assert_allclose(a["est"], b["est"], rtol=1e-6, atol=1e-9)
            ok = np.isfinite(a["se"])
            if elim:  # closed-form residual variances carry no SE; the SNP paths do
                assert len(st.fast["elim_pos"]) >= 2 and ok.sum(axis=1).min() >= 2
                snp = [r[3] for r in plan.out_rows if r[1] == "~" and r[2] == "SNP" and r[3] >= 0]
                assert ok[:, snp].all()
            else:
                assert ok.all()
            np.testing.assert_allclose(a["se"][ok], b["se"][ok], rtol=1e-6, atol=1e-12)
            np.testing.assert_allclose(a["chisq"], b["chisq"], rtol=1e-6, atol=1e-9)
            if q:
                np.testing.assert_allclose(a["qsnp"], b["qsnp"], rtol=1e-6, atol=1e-9)
