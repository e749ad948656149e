"""Pictures of polgen results: run the small demo, then draw each kind of picture and the report.

    python examples/plot_results.py [OUT_DIR]

Needs the plot extra: pip install "polgen[plot]".
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from polgen import plot
from polgen.demo import run_demo


def main(out: Path) -> None:
    run_demo(out / "demo", small=True, progress=False)
    res = out / "demo"
    pics = out / "pictures"
    pics.mkdir(parents=True, exist_ok=True)

    # per-SNP results: a run folder, thinned to what the output resolution shows
    m = plot.manhattan(res / "lfmm" / "results" / "associations", pics / "lfmm_manhattan.png", annotate=3)
    q = plot.qq(res / "lfmm" / "results" / "associations", pics / "lfmm_qq.png")
    print(f"LFMM: {m.info['n_drawn']} of {m.info['n_total']} SNPs drawn; lambda_GC {q.info['lambda_gc']:.3f}")
    plot.qq(res / "gsem" / "results" / "commonfactor_gwas", pics / "gsem_qq.svg")

    # a SEM fit as a path diagram (standardised estimates on the arrows)
    plot.path_diagram(res / "gsem" / "results" / "commonfactor.parquet", pics / "commonfactor.svg")

    # the tissue: cell types, and a perturbation's expression change of one gene
    tissue = res / "stlr" / "tissue.h5ad"
    plot.spatial(tissue, "cell_type", pics / "cell_types.png")
    sim = pl.read_parquet(res / "stlr" / "results" / "perturb_Pax5_KO.parquet")
    from polgen.io.spatial import read_spatial

    sd = read_spatial(tissue, layer="imputed_count", cluster_key="cell_type")
    gene = "Cd68"
    plot.spatial(
        sd,
        sim[gene].to_numpy() - sd.gene(gene),
        pics / f"{gene}_delta.png",
        center=0.0,
        title=f"{gene}: change after the Pax5 knock-out",
    )

    # everything in one self-contained page
    print(plot.report(res, out / "report.html"))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "polgen-plots"))
