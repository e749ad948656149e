# Times R GenomicSEM's own userGWAS / commonfactorGWAS (serial: parallel = FALSE) on the bench's
# sumstats, for bench/gsem_gwas.py (--r-snps).  GenomicSEM's R sources are sourced from the
# directory given (they are not part of polgen); the few stringr/gdata helpers they call are
# replaced by base-R stand-ins, as in tests/data/make/gsem_usergwas.R.  Usage:
#   Rscript gsem_gwas_r.R <GenomicSEM R/ directory> <data directory> <kind> <model file>
# kind: user (fix_measurement = TRUE, DWLS), full (fix_measurement = FALSE), ml (estimation = "ML"),
# cf (commonfactorGWAS).  Reads S.csv V.csv I.csv snps.csv; prints one line:
#   r_timing <seconds> <SNPs> <SNPs in a result> <whole|per-snp>
# R's userGWAS stops a whole run at the first SNP whose information matrix is singular (a Heywood
# covstruc with fix_measurement = FALSE does that); then every SNP is run on its own and the
# failed ones counted out ("per-snp": includes userGWAS's set-up per call, so R's time is
# overstated there, and said so).
suppressMessages({library(lavaan); library(Matrix)})
lowerTriangle <- function(x, diag = FALSE) x[lower.tri(x, diag = diag)]
str_detect <- function(s, p) grepl(p, s)
str_replace_all <- function(s, p, r) gsub(p, r, s, fixed = TRUE)
fixed <- function(x) x
args <- commandArgs(TRUE); src <- args[1]; d <- args[2]; kind <- args[3]
model <- paste(readLines(args[4]), collapse = "\n")
for (f in c("utils.R", "utils_sanitychecks.R", "userGWAS.R", "userGWAS_main.R", "commonfactorGWAS.R",
            "commonfactorGWAS_main.R")) source(file.path(src, f))
S_LD <- as.matrix(read.csv(file.path(d, "S.csv"))); V_LD <- as.matrix(read.csv(file.path(d, "V.csv")))
I_LD <- as.matrix(read.csv(file.path(d, "I.csv")))
snps <- read.csv(file.path(d, "snps.csv"), colClasses = c(SNP = "character", CHR = "character",
                 A1 = "character", A2 = "character"))
cov <- list(V = V_LD, S = S_LD, I = I_LD)
run <- function(s) {
  capture.output(res <- if (kind == "cf") {
    commonfactorGWAS(covstruc = cov, SNPs = s, parallel = FALSE)
  } else {
    userGWAS(covstruc = cov, SNPs = s, model = model, estimation = if (kind == "ml") "ML" else "DWLS",
             fix_measurement = kind != "full", parallel = FALSE)
  })
  res
}
t0 <- proc.time()[["elapsed"]]
mode <- "whole"
ok <- tryCatch({ run(snps); nrow(snps) }, error = function(e) NA)
if (is.na(ok)) {
  mode <- "per-snp"
  t0 <- proc.time()[["elapsed"]]
  ok <- 0
  for (i in seq_len(nrow(snps))) ok <- ok + tryCatch({ run(snps[i, ]); 1 }, error = function(e) 0)
}
cat(sprintf("r_timing %.3f %d %d %s\n", proc.time()[["elapsed"]] - t0, nrow(snps), ok, mode))
