#!/usr/bin/env bash
# Regenerates the PLINK outputs in this folder (see ../PROVENANCE.md). Needs Debian's plink2
# (2.00~a3.5-220809) and plink1.9 (1.90~b6.26-220402) packages and, in $SAIGE_EXTDATA, SAIGE's
# extdata/input folder (saigegit/SAIGE, commit f0599a5b75eafcdb4c4865d1afb06ff31f230c17):
# genotype_100markers.{bed,bim,fam} and Prev_0.1_nfam_1000.pheno_positive_pheno.txt (y x1 x2 IID).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
in=${SAIGE_EXTDATA:?set SAIGE_EXTDATA to SAIGE extdata/input}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
ph="$in/Prev_0.1_nfam_1000.pheno_positive_pheno.txt"
awk 'BEGIN{OFS="\t"} NR==1{print "#FID","IID","y","x1"; next} {print $4,$4,$1,$2}' "$ph" > pheno.tsv
awk 'BEGIN{OFS="\t"} NR==1{print "#FID","IID","x1","x2"; next} {print $4,$4,$2,$3}' "$ph" > covar.tsv
g="$in/genotype_100markers"
# binary y (0/1 coded: --1), covariates x1 x2 reported (no hide-covar): three rows per variant
plink2 --bfile "$g" --pheno pheno.tsv --pheno-name y --1 --covar covar.tsv --covar-name x1 x2 --glm \
  --threads 1 --out p2_bin > /dev/null
# quantitative x1 with covariate x2, the other allele (AX) and A1's frequency as columns
plink2 --bfile "$g" --pheno pheno.tsv --pheno-name x1 --covar covar.tsv --covar-name x2 \
  --glm hide-covar cols=+a1freq,+ax --threads 1 --out p2_qt > /dev/null
plink1.9 --bfile "$g" --pheno pheno.tsv --pheno-name y --1 --covar covar.tsv --covar-name x1 x2 --logistic \
  --allow-no-sex --out p1_bin > /dev/null
head -121 p2_bin.y.glm.logistic.hybrid > "$here/p2_bin.y.glm.logistic.hybrid"    # the first 40 variants
cp p2_qt.x1.glm.linear "$here/p2_qt.x1.glm.linear"                               # all 100 variants
head -121 p1_bin.assoc.logistic > "$here/p1_bin.assoc.logistic"                  # the first 40 variants
