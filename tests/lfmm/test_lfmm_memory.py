"""Peak memory of LFMM fit + test is flat in the number of SNPs (slow: writes a 500 MB .bed).

``python bench/lfmm.py --memory`` runs the full-size check (n=2000, p=200k vs 2M): measured
507 MB vs 541 MB peak RSS here.  This test runs the same code at p=100k vs 1M to stay short."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_peak_rss_flat_in_p(tmp_path):
    if shutil.disk_usage(tmp_path).free < 2 << 30:
        pytest.skip("needs 3 GB of free disk for the 2M-SNP .bed")
    spec = importlib.util.spec_from_file_location("bench_lfmm", ROOT / "bench" / "lfmm.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.measure_memory(tmp_path, n=2000, p=100_000, K=3)
    (p1, r1), (p2, r2) = sorted(res.items())
    assert (p1, p2) == (100_000, 1_000_000)
    assert r2["maxrss_mb"] - r1["maxrss_mb"] < 100, res
