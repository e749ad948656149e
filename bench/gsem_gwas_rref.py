"""R GenomicSEM as a reference in bench/gsem_gwas.py: times R's own userGWAS / commonfactorGWAS
(bench/gsem_gwas_r.R, serial) on the first SNPs of the bench's sumstats, in a subprocess.

R and lavaan come from Debian (``apt-get install r-base-core r-cran-lavaan r-cran-matrix``);
GenomicSEM's R sources are read from ``POLGEN_GSEM_R`` (default ``/tmp/gsemR/R``, the directory
``fetch github:GenomicSEM/GenomicSEM`` unpacks to).  Without them the R column says why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
R_SCRIPT = HERE / "gsem_gwas_r.R"


def r_sources() -> Path | None:
    """GenomicSEM's R/ directory, or None when R or the sources are missing."""
    src = Path(os.environ.get("POLGEN_GSEM_R", "/tmp/gsemR/R"))
    if shutil.which("Rscript") is None or not (src / "userGWAS.R").exists():
        return None
    return src


def write_inputs(data: str | Path, cov: dict | str | Path, n: int, d: Path) -> None:
    """S.csv, V.csv, I.csv and snps.csv (the first ``n`` SNPs of ``data``) in ``d``."""
    if not isinstance(cov, dict):
        cov = json.loads(Path(cov).read_text())
    names = list(cov["trait_names"])
    S, V, I_ = (np.asarray(cov[key], float) for key in ("S", "V", "I"))
    pl.DataFrame(S, schema=names).write_csv(d / "S.csv", float_precision=17)
    kst = V.shape[0]
    pl.DataFrame(V, schema=[f"V{i + 1}" for i in range(kst)]).write_csv(d / "V.csv", float_precision=17)
    pl.DataFrame(I_, schema=names).write_csv(d / "I.csv", float_precision=17)
    pl.scan_parquet(data).head(n).collect().write_csv(d / "snps.csv", float_precision=17)


def r_gwas_rate(data: str | Path, cov: dict | str | Path, kind: str, model: str, n: int) -> dict:
    """Runs R on the first ``n`` SNPs; returns {"snps_per_s", "seconds", "ok", "mode"} or
    {"error": why}.  ``kind``: user, full, ml or cf (see gsem_gwas_r.R)."""
    src = r_sources()
    if src is None:
        return {"error": "R or GenomicSEM's R sources (POLGEN_GSEM_R) not found"}
    with tempfile.TemporaryDirectory(prefix="polgen_bench_r_") as tmp:
        d = Path(tmp)
        write_inputs(data, cov, n, d)
        (d / "model.txt").write_text(model)
        cmd = ["Rscript", str(R_SCRIPT), str(src), str(d), kind, str(d / "model.txt")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("r_timing ")), None)
    if proc.returncode != 0 or line is None:
        return {"error": f"Rscript failed ({proc.returncode}): {proc.stderr.strip()[-300:]}"}
    _, secs, n_snps, ok, mode = line.split()
    sec = float(secs)
    return {"snps_per_s": int(n_snps) / sec if sec > 0 else float("inf"), "seconds": sec, "ok": int(ok), "mode": mode}
