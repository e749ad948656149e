"""Produce the stored R GenomicSEM hdl() reference outputs (tests/data/gsem/r/hdl/) once, with R.

    python tests/data/make/gsem_hdl.py GENOMICSEM_R_DIR [--out DIR]

GENOMICSEM_R_DIR is the ``R/`` directory of a checkout of the public GenomicSEM repository
(https://github.com/GenomicSEM/GenomicSEM, GPL-3.0; outputs made at commit 123ec96); hdl.R is sourced
from there at run time and never copied into polgen.  Needs ``Rscript`` with readr, dplyr, stringr, gdata.

Writes under ``--out`` (default tests/data/gsem/r/hdl):

* ``panel/``   a synthetic HDL panel in polgen's layout (:func:`polgen.gsem.hdl_panel.make_hdl_panel`:
  22 chromosomes x 2 pieces x 30 SNPs, AR(1) LD with decay 0.6, eigenpairs to 99% of the trace);
* ``panel_r/`` the same panel in R's ``LD.path`` layout, written by R's ``save()`` (gsem_hdl.R);
* ``A/B/C.sumstats.gz`` munged statistics drawn under the HDL model (genetic covariance ``S_TRUE``),
  B with 20% of SNPs allele-swapped (Z negated), C with per-SNP N, missing Z, SNPs absent from the
  panel and panel SNPs absent; ``D/E.sumstats.gz`` a weak-signal pair whose piece fits hit the box;
* ``cases.tsv`` and per case ``<case>_S.tsv``, ``_V.tsv``, ``_I.tsv``: R's hdl() output.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from polgen.gsem.hdl_panel import make_hdl_panel, simulate_hdl_sumstats

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
S_TRUE = np.array([[0.5, 0.2, 0.1], [0.2, 0.4, 0.15], [0.1, 0.15, 0.3]])
S_WEAK = np.array([[0.2, 0.05], [0.05, 0.15]])
CASES = [
    # case, files, names, sample_prev, population_prev, nref, method
    ("abc_piecewise", "A,B,C", "A,B,C", "0.4,-1,-1", "0.05,-1,-1", 335265, "piecewise"),
    ("abc_jackknife", "A,B,C", "A,B,C", "0.4,-1,-1", "0.05,-1,-1", 335265, "jackknife"),
    ("de_piecewise", "D,E", "D,E", "NA", "NA", 5000, "piecewise"),
    ("de_jackknife", "D,E", "D,E", "NA", "NA", 5000, "jackknife"),
]


def _write_munged(df: pl.DataFrame, path: Path) -> None:
    with path.open("wb") as fh:
        import gzip

        with gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
            df.write_csv(gz, separator="\t", null_value="NA", float_precision=None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gsem_r")
    ap.add_argument("--out", default=str(ROOT / "tests/data/gsem/r/hdl"))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    panel = make_hdl_panel(
        out / "panel", n_chromosomes=22, pieces_per_chromosome=2, snps_per_piece=30, decay=0.6, seed=11,
        overwrite=True,
    )  # fmt: skip
    rng = np.random.default_rng(2020)
    sims = simulate_hdl_sumstats(panel, S_TRUE, [200000, 150000, 100000], trait_names=["A", "B", "C"], seed=7)
    b = sims["B"]
    flip = rng.random(b.height) < 0.2
    sims["B"] = b.with_columns(
        A1=pl.when(pl.Series(flip)).then(pl.col("A2")).otherwise(pl.col("A1")),
        A2=pl.when(pl.Series(flip)).then(pl.col("A1")).otherwise(pl.col("A2")),
        Z=pl.when(pl.Series(flip)).then(-pl.col("Z")).otherwise(pl.col("Z")),
    )
    c = sims["C"]
    keep = rng.random(c.height) > 0.005
    c = c.with_columns(N=pl.col("N") + pl.Series(rng.integers(-5000, 5000, c.height)).cast(pl.Float64))
    nz = rng.choice(c.height, 3, replace=False)
    c = c.with_columns(Z=pl.when(pl.int_range(pl.len()).is_in(nz.tolist())).then(None).otherwise(pl.col("Z")))
    extra = pl.DataFrame({"SNP": [f"rsX{i}" for i in range(5)], "A1": ["A"] * 5, "A2": ["G"] * 5,
                          "N": [1e5] * 5, "Z": rng.standard_normal(5)})  # fmt: skip
    sims["C"] = pl.concat([c.filter(pl.Series(keep)), extra])
    weak = simulate_hdl_sumstats(panel, S_WEAK, [3000, 2500], trait_names=["D", "E"], seed=8)
    for name, df in {**sims, **weak}.items():
        _write_munged(df, out / f"{name}.sumstats.gz")
    pl.DataFrame(
        [dict(zip(("case", "files", "names", "sample_prev", "population_prev", "nref", "method"), c)) for c in CASES]
    ).with_columns(
        files=pl.col("files").str.split(",").list.eval(pl.element() + ".sumstats.gz").list.join(",")
    ).write_csv(out / "cases.tsv", separator="\t")
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp)
        rows = []
        for pc in panel:
            snps = pl.read_parquet(out / "panel/snps.parquet").filter(
                (pl.col("CHR") == pc.chrom) & (pl.col("PIECE") == pc.piece)
            )
            tab = pl.DataFrame({"SNP": pc.snps, "A1": snps["A1"], "A2": pc.a2, "BP": snps["BP"], "LDsc": pc.ldsc})
            tab = tab.with_columns([pl.Series(f"E{k + 1}", pc.V[:, k]) for k in range(pc.V.shape[1])])
            tab.write_csv(dump / f"chr{pc.chrom}.{pc.piece}.tsv", separator="\t", float_precision=None)
            (dump / f"chr{pc.chrom}.{pc.piece}.lam").write_text("\n".join(repr(float(v)) for v in pc.lam) + "\n")
            rows.append({"chr": pc.chrom, "piece": pc.piece})
        pl.DataFrame(rows).write_csv(dump / "pieces.tsv", separator="\t")
        (dump / "snp_list.txt").write_text("\n".join(panel.snp_list.tolist()) + "\n")
        res = subprocess.run(["Rscript", str(HERE / "gsem_hdl.R"), a.gsem_r, str(dump), str(out)],
                             capture_output=True, text=True)  # fmt: skip
        if res.returncode:
            sys.exit(f"gsem_hdl.R failed:\n{res.stderr[-4000:]}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
