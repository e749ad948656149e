"""Resume after a real SIGKILL, for every resumable method, and detection of damaged parts.

Each method runs in a child process with small batches; once at least ``k`` part files exist
(``k`` and an extra sub-batch delay drawn at random) the child is SIGKILLed.  Re-running with
``resume=True`` must give part files byte-identical to an uninterrupted run.  Then a part is
corrupted (bytes flipped in the middle / truncated / replaced by a stray temp file) and a resumed
run must detect it and recompute it, again byte-identical.
"""

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

from tests.engine.test_scaleout_dask import USER_MODEL, gsem_inputs

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

CHILD = r"""
import json, sys
spec = json.loads(sys.argv[1])
kind, out = spec["kind"], spec["out"]
if kind == "user_gwas":
    from polgen.gsem import user_gwas
    user_gwas(spec["snps"], spec["cov"], spec["model"], batch_size=spec["batch"], out=out, progress=False)
elif kind == "lfmm":
    import polgen.lfmm as lfmm
    lfmm.test(spec["model"], spec["bed"], out=out, task_snps=spec["batch"], progress=False)
elif kind == "perturb_batch":
    import polgen.stlr as stlr
    stlr.perturb_batch(spec["h5ad"], spec["betas"], spec["targets"], out, progress=False, **spec["common"])
elif kind == "stlr_fit":
    import polgen.stlr as stlr
    stlr.fit(spec["h5ad"], spec["genes"], out=out, grn=spec["grn"], progress=False,
             resume=spec.get("resume", False), **spec["common"])
print("FINISHED", flush=True)
"""


def parts(out: Path, pattern: str = "part-*.parquet") -> list[Path]:
    return sorted(out.rglob(pattern))


def run_child(spec: dict) -> None:
    """Run the child to completion (same interpreter settings as the killed run)."""
    env = dict(os.environ, POLGEN_PROGRESS="0", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(ROOT),
        timeout=300,
    )
    assert proc.returncode == 0 and "FINISHED" in proc.stdout, proc.stderr[-3000:]


def kill_midway(
    spec: dict, out: Path, n_parts: int, rng: np.random.Generator, pattern="part-*.parquet", timeout: float = 180.0
) -> int:
    """Start the child, SIGKILL it once >= k parts exist (plus a random delay); return k."""
    k = int(rng.integers(1, max(2, n_parts // 2)))
    delay = float(rng.uniform(0.0, 0.02))
    env = dict(os.environ, POLGEN_PROGRESS="0", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=str(ROOT),
    )
    t0 = time.monotonic()
    try:
        while len(parts(out, pattern)) < k:
            if proc.poll() is not None:
                raise AssertionError(
                    f"child ended before the kill: rc={proc.returncode}\n"
                    f"{proc.stderr.read().decode(errors='replace')[-3000:]}"
                )
            if time.monotonic() - t0 > timeout:
                raise AssertionError("no part appeared in time")
            time.sleep(0.002)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    out_text = proc.stdout.read().decode()
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL and "FINISHED" not in out_text, (
        "the child finished before it could be killed; use smaller batches"
    )
    return k


def assert_identical_parts(a_dir: Path, b_dir: Path, pattern: str = "part-*.parquet", min_parts: int = 2):
    a, b = parts(a_dir, pattern), parts(b_dir, pattern)
    assert len(a) >= min_parts
    assert [p.relative_to(a_dir) for p in a] == [p.relative_to(b_dir) for p in b]
    for x, y in zip(a, b):
        assert x.read_bytes() == y.read_bytes(), f"{x.name} differs after resume"


def no_stray_files(out: Path) -> None:
    stray = [p for p in out.rglob("*") if ".tmp" in p.name]
    assert not stray, f"temporary files left behind: {stray}"


def damage(files: list[Path], rng: np.random.Generator) -> None:
    """Flip bytes in the middle of one part and truncate another."""
    i, j = rng.choice(len(files), size=2, replace=False)
    raw = bytearray(files[i].read_bytes())
    mid = len(raw) // 2
    for off in range(mid, min(mid + 8, len(raw))):
        raw[off] ^= 0xFF
    files[i].write_bytes(bytes(raw))
    data = files[j].read_bytes()
    files[j].write_bytes(data[: len(data) // 3])


# -- user_gwas ---------------------------------------------------------------------------------
def test_user_gwas_killed_and_resumed(tmp_path):
    from polgen.gsem import user_gwas

    rng = np.random.default_rng(101)
    df, cov = gsem_inputs(1500, seed=5)
    snps = tmp_path / "snps.parquet"
    df.write_parquet(snps)
    ref = tmp_path / "ref"
    user_gwas(str(snps), cov, USER_MODEL, batch_size=40, out=ref, progress=False)
    n_parts = len(parts(ref))
    assert n_parts == 38
    out = tmp_path / "run"
    spec = {"kind": "user_gwas", "snps": str(snps), "cov": cov, "model": USER_MODEL, "batch": 40, "out": str(out)}
    k = kill_midway(spec, out, n_parts, rng)
    assert k <= len(parts(out)) < n_parts
    res = user_gwas(str(snps), cov, USER_MODEL, batch_size=40, out=out, resume=True, progress=False)
    assert_identical_parts(ref, out)
    no_stray_files(out)
    assert_frame_equal(res.collect(), pl.scan_parquet(str(ref / "part-*.parquet")).collect())
    # damaged parts are detected and recomputed; a stray temp file is removed
    damage(parts(out), rng)
    (out / ".part-000003.parquet.tmp-1-deadbeef").write_bytes(b"PAR1 half written")
    user_gwas(str(snps), cov, USER_MODEL, batch_size=40, out=out, resume=True, progress=False)
    assert_identical_parts(ref, out)
    no_stray_files(out)


# -- lfmm.test ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lfmm_case(tmp_path_factory):
    import polgen.lfmm as lfmm
    from polgen.demo import make_lfmm_demo

    root = tmp_path_factory.mktemp("lfmm")
    d = make_lfmm_demo(root, small=True)
    env = pl.read_csv(d.env, separator="\t").select("IID", "env")
    model = lfmm.fit(env, str(d.bed), K=d.K)
    model.save(root / "model")
    return d, root / "model"


def test_lfmm_test_killed_and_resumed(tmp_path, lfmm_case):
    import polgen.lfmm as lfmm

    rng = np.random.default_rng(202)
    d, model = lfmm_case
    ref = tmp_path / "ref"
    r = lfmm.test(str(model), str(d.bed), out=ref, task_snps=50, progress=False)
    n_parts = len(parts(ref))
    assert n_parts == d.p // 50
    out = tmp_path / "run"
    spec = {"kind": "lfmm", "model": str(model), "bed": str(d.bed), "batch": 50, "out": str(out)}
    # raw and calibrated passes both write parts: kill anywhere among the 2 * n_parts
    kill_midway(spec, out, 2 * n_parts, rng)
    res = lfmm.test(str(model), str(d.bed), out=out, task_snps=50, resume=True, progress=False)
    assert_identical_parts(ref, out)
    no_stray_files(out)
    assert res.gif == r.gif
    assert_frame_equal(res.collect(), r.collect())
    damage(parts(out), rng)
    lfmm.test(str(model), str(d.bed), out=out, task_snps=50, resume=True, progress=False)
    assert_identical_parts(ref, out)


# -- stlr ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stlr_case(tmp_path_factory):
    import polgen.stlr as stlr
    from polgen.demo import make_stlr_demo

    root = tmp_path_factory.mktemp("stlr")
    d = make_stlr_demo(root, small=True)
    common = dict(
        lr=str(d.lr), radius=d.radius, contact_distance=d.contact_distance, layer=d.layer, cluster_key=d.cluster_key
    )
    stlr.fit(str(d.h5ad), d.targets, out=root / "betas", grn=str(d.grn_links), progress=False, **common)
    return d, common, root


def test_stlr_perturb_batch_killed_and_resumed(tmp_path, stlr_case):
    import polgen.stlr as stlr

    rng = np.random.default_rng(303)
    d, common, root = stlr_case
    targets = list(d.tfs)
    ref = tmp_path / "ref"
    stlr.perturb_batch(str(d.h5ad), str(root / "betas"), targets, ref, progress=False, **common)
    assert len(parts(ref)) == len(targets)
    out = tmp_path / "run"
    spec = {
        "kind": "perturb_batch",
        "h5ad": str(d.h5ad),
        "betas": str(root / "betas"),
        "targets": targets,
        "common": common,
        "out": str(out),
    }
    kill_midway(spec, out, len(targets), rng)
    sink = stlr.perturb_batch(str(d.h5ad), str(root / "betas"), targets, out, resume=True, progress=False, **common)
    assert_identical_parts(ref, out)
    no_stray_files(out)
    assert sink.scan().collect()["target"].unique(maintain_order=True).to_list() == targets
    damage(parts(out), rng)
    stlr.perturb_batch(str(d.h5ad), str(root / "betas"), targets, out, resume=True, progress=False, **common)
    assert_identical_parts(ref, out)


def _betadata(out: Path) -> dict[str, pl.DataFrame]:
    return {p.name: pl.read_parquet(p) for p in sorted(out.glob("*_betadata.parquet"))}


def _source_stamp() -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every polgen source file."""
    return {
        str(p.relative_to(ROOT)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted((ROOT / "polgen").rglob("*.py"))
    }


def test_stlr_fit_killed_and_resumed(tmp_path, stlr_case):
    """Reference, killed run and resume run in three fresh interpreters, importing polgen anew.

    Their outputs can only be compared when all three ran the same code: in a shared checkout
    that other people edit, a change to polgen between the children (e.g. to the BLAS set-up of
    the fit or to the received-ligand kernels) changes the last bits of the betas the later
    children write - this was the "flaky" Cd19 mismatch: the killed child's genes differed from
    both other runs.  So the attempt is repeated when a source file changed under it (CI never
    edits the tree, so there it runs once).
    """
    rng = np.random.default_rng(404)
    d, common, root = stlr_case
    changed: list[str] = []
    for attempt in range(3):
        before = _source_stamp()
        ref = tmp_path / f"ref{attempt}"
        out = tmp_path / f"run{attempt}"
        spec = {
            "kind": "stlr_fit",
            "h5ad": str(d.h5ad),
            "genes": d.targets,
            "grn": str(d.grn_links),
            "common": common,
            "out": str(ref),
        }
        run_child(spec)
        spec["out"] = str(out)
        kill_midway(spec, out, len(d.targets), rng, pattern="*_betadata.parquet")
        run_child(dict(spec, resume=True))
        after = _source_stamp()
        if after == before:
            assert_identical_parts(ref, out, pattern="*_betadata.parquet", min_parts=len(d.targets))
            no_stray_files(out)
            return
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    pytest.skip(f"polgen sources changed during each of 3 attempts (concurrent edits): {changed[:5]}")


def test_stlr_fit_resume_detects_corrupted_betadata(tmp_path, stlr_case):
    import polgen.stlr as stlr

    d, common, root = stlr_case
    ref = root / "betas"
    genes = d.targets[:3]
    out = tmp_path / "run"
    stlr.fit(str(d.h5ad), genes, out=out, grn=str(d.grn_links), progress=False, **common)
    victim = out / f"{genes[1]}_betadata.parquet"
    raw = bytearray(victim.read_bytes())
    for off in range(8, 16):  # the first data page, just after the PAR1 magic
        raw[off] ^= 0xFF
    victim.write_bytes(bytes(raw))
    stlr.fit(str(d.h5ad), genes, out=out, grn=str(d.grn_links), resume=True, progress=False, **common)
    assert victim.read_bytes() == (ref / victim.name).read_bytes()
