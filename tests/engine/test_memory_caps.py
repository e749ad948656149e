"""Every streaming method holds its memory budget under an address-space cap (RLIMIT_AS).

Each test builds inputs at 10x the size of the default tests, then runs the method in a fresh
interpreter (:func:`run_helpers.memory_capped_subprocess` (tests/run_helpers.py)) whose address space is capped
at what it uses after a warm-up on tiny data (imports, numba caches, thread pools) plus a fixed
headroom.  The streamed run must finish under the cap with the right numbers, and a control — the
non-streaming way (decoding the whole genotype matrix, building the whole result in memory) —
must run out of memory under the same cap, proving the cap binds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from run_helpers import memory_capped_subprocess

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "POLGEN_PROGRESS": "0",
    "PYTHONPATH": str(ROOT),
    "NUMBA_NUM_THREADS": "2",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
MB = 1 << 20


def write_random_bed(stem: Path, n: int, p: int, seed: int = 0) -> Path:
    """A valid PLINK fileset with random packed genotypes (every 2-bit code, missing included)."""
    rng = np.random.default_rng(seed)
    bps = (n + 3) // 4
    with open(stem.with_suffix(".bed"), "wb") as fh:
        fh.write(b"\x6c\x1b\x01")
        for a in range(0, p, 4096):
            k = min(4096, p - a)
            # codes 00 (hom A1), 10 (het), 11 (hom A2) mostly, 01 (missing) rarely
            codes = rng.choice(np.array([0, 2, 3, 1], dtype=np.uint8), size=(k, bps * 4), p=[0.3, 0.4, 0.29, 0.01])
            packed = codes[:, 0::4] | (codes[:, 1::4] << 2) | (codes[:, 2::4] << 4) | (codes[:, 3::4] << 6)
            fh.write(packed.astype(np.uint8).tobytes())
    pl.DataFrame(
        {
            "CHR": ["1"] * p,
            "SNP": [f"rs{j}" for j in range(p)],
            "CM": [0] * p,
            "BP": np.arange(p) + 1,
            "A1": ["A"] * p,
            "A2": ["G"] * p,
        }
    ).write_csv(stem.with_suffix(".bim"), separator="\t", include_header=False)
    pl.DataFrame(
        {
            "FID": [f"f{i}" for i in range(n)],
            "IID": [f"i{i}" for i in range(n)],
            "PAT": ["0"] * n,
            "MAT": ["0"] * n,
            "SEX": [0] * n,
            "PHENO": ["-9"] * n,
        }
    ).write_csv(stem.with_suffix(".fam"), separator="\t", include_header=False)
    return stem.with_suffix(".bed")


PEAKS: dict[str, dict] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_peaks(request):
    """Peak RSS above the post-warm-up baseline of each capped run, kept in the pytest cache."""
    yield
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    if cache is not None:
        cache.set("polgen/memory_caps", PEAKS)


def capped(code: str, preamble: str, headroom: int, timeout: float = 240.0, label: str | None = None):
    res = memory_capped_subprocess(
        code, headroom_bytes=headroom, preamble=preamble, timeout=timeout, env=ENV, cwd=str(ROOT)
    )
    if label and res.ok:
        PEAKS[label] = {
            "headroom_mb": headroom / MB,
            "peak_above_baseline_mb": round((res.peak_rss - res.baseline_rss) / MB, 1),
            "baseline_rss_mb": round(res.baseline_rss / MB, 1),
        }
    return res


def oom(res) -> bool:
    """The capped run failed for lack of memory: a MemoryError, or a native allocator abort
    (Polars / Arrow abort the process when an allocation fails) -- not any other error."""
    if res.out_of_memory:
        return True
    if res.status != "crashed" or res.returncode is None:
        return False
    err = res.stderr.lower()
    if res.returncode < 0 and any(
        k in err for k in ("memory allocation", "out of memory", "bad_alloc", "cannot allocate")
    ):
        return True
    # OpenMP (numba's parallel kernels) exits 1 when it cannot map a new thread's stack under the
    # address-space cap: the same lack of memory, reported by libgomp instead of the allocator
    return "libgomp: thread creation failed" in err


# -- BedStream ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_bedstream_iteration_under_cap(tmp_path):
    n, p = 2000, 20_000  # 10x the SNPs of the demo-sized tests; decoded float64: 320 MB
    bed = write_random_bed(tmp_path / "g", n, p)
    pre = (
        f"import numpy as np\nfrom polgen.io.bed import BedStream\n"
        f"s = BedStream({str(bed)!r}, scale='raw', block_snps=500)\n"
        "next(iter(s.blocks(0, 500)))\n"
    )
    code = (
        "sums = np.empty(s.n_snps); freq = np.empty(s.n_snps)\n"
        "for b in s.blocks():\n"
        "    sums[b.start:b.stop] = np.nansum(b.data, axis=0)\n"
        "    freq[b.start:b.stop] = b.freq\n"
        "RESULT = {'sums': sums.tolist(), 'freq': freq.tolist()}\n"
    )
    headroom = 64 * MB
    res = capped(code, pre, headroom, label="BedStream")
    assert res.ok, (res.status, res.error, res.stderr[-2000:])
    assert res.peak_rss - res.baseline_rss < headroom
    # numbers: a random subset of SNPs against bed-reader
    bed_reader = pytest.importorskip("bed_reader")
    idx = np.sort(np.random.default_rng(1).choice(p, 40, replace=False))
    with bed_reader.open_bed(bed) as b:
        ref = b.read(index=np.s_[:, idx], dtype="float64")
    np.testing.assert_allclose(np.asarray(res.value["sums"])[idx], np.nansum(ref, axis=0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.asarray(res.value["freq"])[idx], np.nanmean(ref, axis=0) / 2, rtol=1e-12)
    # control: the whole matrix at once does not fit under the same cap
    hoard = capped("a = s.read_all()\nRESULT = float(a[0, 0])\n", pre, headroom)
    assert hoard.out_of_memory, (hoard.status, hoard.error)


# -- lfmm.test ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_lfmm_test_out_under_cap(tmp_path):
    import polgen.lfmm as lfmm

    n, p = 1000, 20_000  # 10x the SNPs of the small LFMM demo; decoded float64: 160 MB
    bed = write_random_bed(tmp_path / "g", n, p, seed=2)
    rng = np.random.default_rng(3)
    env = pl.DataFrame({"IID": [f"i{i}" for i in range(n)], "env": rng.standard_normal(n)})
    model = lfmm.fit(env, str(bed), K=2, progress=False)
    model.save(tmp_path / "model")
    small = write_random_bed(tmp_path / "w", n, 300, seed=4)
    pre = (
        "import polgen.lfmm as lfmm\n"
        f"lfmm.test({str(tmp_path / 'model')!r}, {str(small)!r}, out={str(tmp_path / 'warm')!r}, "
        "task_snps=100, batch_snps=100, overwrite=True, progress=False)\n"
    )
    out = tmp_path / "assoc"
    code = (
        f"r = lfmm.test({str(tmp_path / 'model')!r}, {str(bed)!r}, out={str(out)!r}, task_snps=2000, "
        "batch_snps=500, progress=False)\nRESULT = {'gif': r.gif}\n"
    )
    headroom = 96 * MB
    res = capped(code, pre, headroom, label="lfmm.test")
    assert res.ok, (res.status, res.error, res.stderr[-2000:])
    assert res.peak_rss - res.baseline_rss < headroom
    streamed = pl.scan_parquet(str(out / "part-*.parquet")).collect()
    assert streamed.height == p
    ref = lfmm.test(model, str(bed), task_snps=5000, progress=False).collect()
    num = [c for c, t in ref.schema.items() if t.is_float()]
    np.testing.assert_allclose(streamed.select(num).to_numpy(), ref.select(num).to_numpy(), rtol=1e-9, atol=1e-12)
    # control: a dense genotype matrix (what an in-memory LFMM starts from) does not fit
    hoard = capped(f"from polgen.io.bed import BedStream\na = BedStream({str(bed)!r}).read_all()\n", pre, headroom)
    assert hoard.out_of_memory, (hoard.status, hoard.error)


# -- user_gwas ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_user_gwas_out_under_cap(tmp_path):
    from tests.engine.test_scaleout_dask import USER_MODEL, gsem_inputs

    n = 20_000  # 10x the SNPs of the Dask / resume tests
    df, cov = gsem_inputs(n, seed=8)
    snps = tmp_path / "snps.parquet"
    df.write_parquet(snps)
    (tmp_path / "cov.json").write_text(json.dumps(cov))
    df.head(50).write_parquet(tmp_path / "warm.parquet")
    pre = (
        "import json\nfrom polgen.gsem import user_gwas\n"
        f"cov = json.loads(open({str(tmp_path / 'cov.json')!r}).read())\n"
        f"model = {USER_MODEL!r}\n"
        f"user_gwas({str(tmp_path / 'warm.parquet')!r}, cov, model, long=True, batch_size=25, "
        f"out={str(tmp_path / 'warm')!r}, overwrite=True, progress=False)\n"
    )
    out = tmp_path / "gwas"
    code = (
        f"lf = user_gwas({str(snps)!r}, cov, model, long=True, batch_size=1000, out={str(out)!r}, "
        "progress=False)\nRESULT = 1\n"
    )
    # measured here: the streamed run grows the address space by ~9 MB; the controls below by
    # ~55 MB (every result held in memory) and ~58 MB (batches 10x larger)
    headroom = 32 * MB
    res = capped(code, pre, headroom, label="user_gwas")
    assert res.ok, (res.status, res.error, res.stderr[-2000:])
    assert res.peak_rss - res.baseline_rss < headroom
    # controls: the same SNPs under the same cap, without streaming to disk, and with batches 10x
    # larger, both run out of memory -- the cap is tight enough to tell streaming from not
    hoard = capped(
        f"df = user_gwas({str(snps)!r}, cov, model, long=True, batch_size=1000, progress=False)\nRESULT = df.height\n",
        pre,
        headroom,
    )
    assert oom(hoard), (hoard.status, hoard.error, hoard.value)
    big = capped(
        f"lf = user_gwas({str(snps)!r}, cov, model, long=True, batch_size=10_000, "
        f"out={str(tmp_path / 'gwas_big')!r}, progress=False)\nRESULT = 1\n",
        pre,
        headroom,
    )
    assert oom(big), (big.status, big.error)
    got = pl.scan_parquet(str(out / "part-*.parquet")).collect()
    per_snp = got.height // n
    assert got.height == per_snp * n and per_snp >= 4  # long=True: every parameter per SNP
    # numbers: a slice recomputed in this process
    from polgen.gsem import user_gwas

    ref = user_gwas(df.slice(12_345, 40), cov, USER_MODEL, long=True)
    part = got.filter(pl.col("SNP").is_in(ref["SNP"].unique().implode()))
    assert part.height == ref.height
    np.testing.assert_allclose(part["est"].to_numpy(), ref["est"].to_numpy(), rtol=1e-12, equal_nan=True)


# -- stlr.perturb_batch ------------------------------------------------------------------------------
@pytest.mark.slow
def test_stlr_perturb_batch_out_under_cap(tmp_path):
    import polgen.stlr as stlr
    from polgen.demo import make_stlr_demo

    d = make_stlr_demo(tmp_path, n_cells=1200, small=True)  # 2x the cells of the small demo
    common = dict(
        lr=str(d.lr), radius=d.radius, contact_distance=d.contact_distance, layer=d.layer, cluster_key=d.cluster_key
    )
    stlr.fit(str(d.h5ad), d.targets, out=tmp_path / "betas", grn=str(d.grn_links), progress=False, **common)
    # 10x the targets of the default batch-perturb tests (4): every TF, target and ligand gene
    import anndata

    genes = [str(g) for g in anndata.read_h5ad(d.h5ad, backed="r").var_names]
    targets = (list(d.tfs) + list(d.targets) + [g for g in genes if g not in d.tfs and g not in d.targets])[:40]
    assert len(targets) == 40
    args = f"{str(d.h5ad)!r}, {str(tmp_path / 'betas')!r}"
    pre = (
        "import warnings\nwarnings.simplefilter('ignore')\nimport polgen.stlr as stlr\n"
        f"common = {common!r}\n"
        f"stlr.perturb_batch({args}, {targets[:1]!r}, {str(tmp_path / 'warm')!r}, overwrite=True, "
        "progress=False, **common)\n"
    )
    out = tmp_path / "pb"
    code = f"sink = stlr.perturb_batch({args}, {targets!r}, {str(out)!r}, progress=False, **common)\nRESULT = 1\n"
    # measured here: the streamed run grows the address space by ~2 MB, the control below by ~34 MB
    headroom = 16 * MB
    res = capped(code, pre, headroom, label="stlr.perturb_batch")
    assert res.ok, (res.status, res.error, res.stderr[-2000:])
    assert res.peak_rss - res.baseline_rss < headroom
    # control: the same 40 perturbations with their results kept in memory (what a loop over
    # stlr.perturb does) run out of memory under the same cap
    hoard = capped(
        "import polars as pl\nfrom polgen.stlr.perturb import Perturber\n"
        f"m = Perturber({args}, **common)\n"
        f"sims = [m.run(tg, 0.0).select(pl.lit(tg).alias('target'), pl.all()) for tg in {targets!r}]\n"
        "RESULT = pl.concat(sims).height\n",
        pre,
        headroom,
    )
    assert oom(hoard), (hoard.status, hoard.error, hoard.value)
    got = pl.scan_parquet(str(out / "part-*.parquet")).collect()
    assert got.height == 40 * d.n_cells
    assert got["target"].unique(maintain_order=True).to_list() == targets
    one = stlr.perturb(str(d.h5ad), str(tmp_path / "betas"), targets[5], 0.0, **common)
    mine = got.filter(pl.col("target") == targets[5]).drop("target")
    cols = [c for c in one.columns if c in mine.columns and one[c].dtype.is_float()]
    assert len(cols) >= 10
    np.testing.assert_allclose(mine.select(cols).to_numpy(), one.select(cols).to_numpy(), rtol=1e-10, atol=1e-12)
