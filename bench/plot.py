"""Manhattan + QQ of 1M and 10M synthetic SNPs from parquet: time, points drawn, peak RSS.

    python bench/plot.py            # 1M and 10M
    python bench/plot.py 1000000    # one size

Each size is generated once (in a child process) and plotted in a fresh child process, so the
peak resident memory reported is that of plotting alone (ru_maxrss of the child, imports included).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

GEN = """
import sys, numpy as np, polars as pl
n, out = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
chrom = np.repeat(np.arange(1, 23), np.diff(np.linspace(0, n, 23).astype(np.int64)))
bp = np.concatenate([np.sort(rng.integers(1, 250_000_000 // c, (chrom == c).sum())) for c in range(1, 23)])
p = rng.uniform(size=n)
p[rng.choice(n, 2000, replace=False)] = 10.0 ** -rng.uniform(8, 40, 2000)
pl.DataFrame({"CHR": chrom.astype(str), "BP": bp, "SNP": pl.int_range(0, n, eager=True).cast(pl.String),
              "P": p}).write_parquet(out, row_group_size=500_000)
"""

RUN = """
import json, resource, sys, time
t0 = time.perf_counter()
from polgen.plot import manhattan, qq
t_import = time.perf_counter() - t0
src, out = sys.argv[1], sys.argv[2]
t0 = time.perf_counter(); m = manhattan(src, out + "/m.png"); t_m = time.perf_counter() - t0
t0 = time.perf_counter(); q = qq(src, out + "/q.png"); t_q = time.perf_counter() - t0
print(json.dumps({"import_s": round(t_import, 2), "manhattan_s": round(t_m, 2), "qq_s": round(t_q, 2),
                  "manhattan_points": m.info["n_drawn"], "qq_points": q.info["n_drawn"],
                  "lambda_gc": round(q.info["lambda_gc"], 4),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def main(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            f = Path(tmp) / f"gwas_{n}.parquet"
            subprocess.run([sys.executable, "-c", GEN, str(n), str(f)], check=True)
            out = subprocess.run([sys.executable, "-c", RUN, str(f), tmp], check=True, capture_output=True, text=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{n:>11,} SNPs ({f.stat().st_size / 2**20:.0f} MiB parquet): {res}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000_000, 10_000_000])
