"""polgen warmup also compiles what a covstruc with V or I not positive definite needs.

Such a covstruc (real LDSC output can have either) makes every GWAS configuration build V_full per
SNP and smooth it (the kernels' ``general`` and nearPD specialisations), which a positive-definite
warm-up covstruc never compiles: before the warm-up step for it, the first call on the PGC
ANX/OCD/PTSD covstruc with V or I made non-positive-definite compiled for 4-37 s after
``polgen warmup`` (issue 18).  Here the warm-up step runs (on its own synthetic covstruc), then a
fresh process makes the first call of each configuration on the PGC covstruc made
non-positive-definite two ways, and no polgen kernel may compile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from polgen.warmup import warmup
from run_helpers import COMPILE_RECORDER

DATA = Path(__file__).resolve().parent / "data" / "gsem" / "r" / "fm_false_cfu"
STEP = "gsem.user_gwas / commonfactor_gwas (V, I not positive definite)"

FIRST_CALLS = (
    COMPILE_RECORDER
    + r"""
import json, sys
from pathlib import Path
import numpy as np, polars as pl
from polgen.gsem import commonfactor_gwas, user_gwas
from polgen.warmup import GWAS_MODEL
d = Path(sys.argv[1])
read = lambda n: pl.read_csv(d / n).to_numpy()
snps = pl.read_csv(d / "snps.csv", schema_overrides={"SNP": pl.String, "CHR": pl.String})
rows = {}
for variant in ("V", "I"):
    cov = {"S": read("S.csv"), "V": read("V.csv"), "I": read("I.csv"), "trait_names": ["T1", "T2", "T3"]}
    if variant == "V":
        w, U = np.linalg.eigh(cov["V"])
        w[0] = -0.5 * w[1]
        cov["V"] = U @ np.diag(w) @ U.T
    else:
        cov["I"] = cov["I"].copy()
        cov["I"][0, 2] = cov["I"][2, 0] = 1.1
    for kw in ({}, {"estimation": "ML"}, {"fix_measurement": False}):
        rows[variant + str(kw)] = user_gwas(snps, cov, GWAS_MODEL, progress=False, **kw).height
    rows[variant + " cf"] = commonfactor_gwas(snps, cov, progress=False).height
print(json.dumps({"compiled": sorted(set(compiled)), "rows": rows}))
"""
)


def test_warmup_covers_covstrucs_not_positive_definite():
    timings = warmup(("gsem",), only=[STEP], progress=False)
    assert STEP in timings
    env = dict(os.environ, POLGEN_PROGRESS="0", POLGEN_PRECOMPILE="0")
    res = subprocess.run(
        [sys.executable, "-c", FIRST_CALLS, str(DATA)], capture_output=True, text=True, env=env, timeout=900
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(out["rows"]) == 8 and all(n > 0 for n in out["rows"].values()), out["rows"]
    assert out["compiled"] == [], f"compiled after the warm-up step: {out['compiled']}"
