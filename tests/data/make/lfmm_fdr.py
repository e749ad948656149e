"""Produce tests/data/lfmm/r/fdr/ once: LFMM p-values of the A. thaliana example and R's q-values.

    python tests/data/make/lfmm_fdr.py [--out DIR]

Fits polgen's LFMM (K=6) on tests/data/lfmm/athaliana (phenotype ~ genotypes), tests every SNP with
GIF calibration and writes p.csv (every 4th SNP): columns P, P_CALIBRATED (NA for the monomorphic SNPs) and
P_TIES (P_CALIBRATED rounded to 2 significant digits: many ties); then runs lfmm_fdr.R (R
p.adjust BH and qvalue) on them.  Needs ``Rscript`` with the qvalue package.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
ATH = ROOT / "tests" / "data" / "lfmm" / "athaliana" / "athaliana"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "lfmm" / "r" / "fdr")
    a = ap.parse_args(argv)
    import polgen.lfmm as L

    env = pl.read_csv(ATH.with_name("athaliana.env.tsv"), separator="\t")
    bed = str(ATH.with_suffix(".bed"))
    res = L.test(L.fit(env, bed, 6, progress=False), bed, progress=False).collect()
    res = res[::4]  # every 4th SNP: 3,368 p-values keep the stored reference small
    pc = res["P_CALIBRATED"].to_numpy()
    ties = np.array([float(f"{v:.2g}") if np.isfinite(v) else np.nan for v in pc])
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"P": res["P"].to_numpy(), "P_CALIBRATED": pc, "P_TIES": ties}).with_columns(
        pl.all().fill_nan(None)
    ).write_csv(out / "p.csv", null_value="NA", float_precision=None)
    r = subprocess.run(["Rscript", str(HERE / "lfmm_fdr.R"), str(out)], capture_output=True, text=True, timeout=600)
    if r.returncode:
        sys.exit(r.stderr[-3000:])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
