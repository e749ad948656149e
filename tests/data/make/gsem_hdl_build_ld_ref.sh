#!/usr/bin/env bash
# Build tests/data/gsem/hdl_build_ld_ref: a tiny HDL LD reference panel made by HDL's own
# build_ld_ref pipeline (github.com/zhenin/HDL, commit 65dae75, build_ld_ref/) from its 1000 Genomes
# demo genotypes (build_ld_ref/demo/test.*, 504 people): the first 90 SNPs of chromosomes 21 and 22.
#
#   bash tests/data/make/gsem_hdl_build_ld_ref.sh <HDL checkout> [out dir]
#
# Needs R with dplyr, tidyr, data.table, RSpectra, argparser (Debian r-cran-*), gfortran (R CMD SHLIB
# of the pipeline's Fortran helpers; the checkout ships macOS builds) and plink 1.9 (Debian plink1.9;
# the checkout's Linux binary is a Git LFS stub).  One change to the pipeline: plink 1.9's --r only
# reports pairs with r^2 >= 0.2 unless told otherwise, which leaves the banded LD file too short for
# the pipeline's eigen step (it stops in eigs_sym), so cal_ld.R's plink call gets --ld-window-r2 0.
set -euo pipefail
hdl=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")/../../.." && pwd)
out=${2:-$here/tests/data/gsem/hdl_build_ld_ref}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$hdl/build_ld_ref" "$work/"
B=$work/build_ld_ref
sed -i "s/' --r --ld-window '/' --r --ld-window-r2 0 --ld-window '/" "$B/utils/cal_ld.R"
(cd "$B/utils" && rm -f ./*.o ./*.so && R CMD SHLIB bmult.f90 && R CMD SHLIB ldscore.f90) >/dev/null
ln -sf "$(command -v plink1.9)" "$B/utils/plink_1.9_linux"
awk '($1 == 21 && n21++ < 90) || ($1 == 22 && n22++ < 90) { print $2 }' "$B/demo/test.bim" > "$work/keep.txt"
plink1.9 --silent --bfile "$B/demo/test" --extract "$work/keep.txt" --make-bed --out "$work/geno"
Rscript "$B/1_split_chroms.R" "$work/ld_ref/hdl_demo" "$work/geno.bim" --min 30 --max 45
bash "$B/2_cal_ld.sh" "$work/geno" "$work/ld_ref/hdl_demo" 50 1000000 21,22 | bash
bash "$B/3_build_ld_ref.sh" "$work/ld_ref/hdl_demo" | bash
mkdir -p "$out/ld_ref"
cp "$work"/ld_ref/*.rda "$work"/ld_ref/*.bim "$work"/ld_ref/*.RData "$out/ld_ref/"
cp "$work"/geno.bed "$work"/geno.bim "$work"/geno.fam "$out/"
