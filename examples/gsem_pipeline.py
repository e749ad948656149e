"""Genomic SEM end to end on synthetic data: munge -> ldsc -> commonfactor -> sumstats -> GWAS.

python examples/gsem_pipeline.py [OUTDIR]
"""

import sys
from pathlib import Path

import polars as pl

import polgen  # noqa: F401  (registers df.gsem)
from polgen import gsem, sql
from polgen.demo import make_gsem_demo

out = Path(sys.argv[1] if len(sys.argv) > 1 else "example-gsem")
demo = make_gsem_demo(out / "inputs", small=True)
files = [str(p) for p in demo.sumstats]

munged, dropped = gsem.munge(files, hm3=str(demo.hm3), trait_names=demo.trait_names)
print(dropped.filter(pl.col("n_dropped") > 0))

covstruc = gsem.ldsc(munged, ld=demo.ld, trait_names=demo.trait_names)
covstruc.save(out / "covstruc.json")
print("genetic covariance S:\n", covstruc.S)

fit = gsem.commonfactor(covstruc)
print(fit.parameters.select("lhs", "op", "rhs", "est", "se", "p"))
print(fit.fit)

snps = gsem.sumstats(
    files,
    ref=str(demo.reference),
    trait_names=demo.trait_names,
    se_logit=demo.se_logit,
    OLS=demo.OLS,
    linprob=demo.linprob,
    out=out / "sumstats.parquet",
)

t = demo.trait_names
model = f"F1 =~ NA*{t[0]} + {t[1]} + {t[2]}\nF1 ~~ 1*F1\nF1 ~ SNP"
hits = (
    pl.scan_parquet(out / "sumstats.parquet")
    .head(2_000)
    .gsem.user_gwas(covstruc, model, out=out / "user_gwas", overwrite=True)
    .filter(pl.col("converged"))
    .sort("p")
    .collect()
)
print(hits.select("SNP", "CHR", "BP", "lhs", "op", "rhs", "est", "se", "p").head(5))
print(sql.run("per_chrom_summary", {"source": str(out / "user_gwas")}).head(5))
