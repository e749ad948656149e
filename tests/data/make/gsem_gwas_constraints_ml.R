# Constraints on parameters estimated per SNP under ML (issue 12): R GenomicSEM userGWAS with
# estimation = "ML", fix_measurement = FALSE, on the two-factor model of tests/data/gsem/r/ml_sign
# with 'F1 ~ b1*SNP; F2 ~ b2*SNP' and b1 == 2*b2, b1 > b2, b1 == b2^2 or no constraint.  Usage:
#   Rscript gsem_gwas_constraints_ml.R <GenomicSEM R/ directory> <input directory> <output directory>
# Reads S.csv, V.csv, I.csv, snps.csv from the input directory; writes cases.tsv (case, model) and
# usergwas.csv (every row of R's output, one userGWAS call per SNP: est / SE / chisq / df / warning, 17 digits) to the output
# directory.  GenomicSEM's R sources are sourced from the directory given (not part of polgen); the
# stringr / gdata helpers they call get base-R stand-ins.
suppressMessages({library(lavaan); library(Matrix)})
lowerTriangle <- function(x, diag = FALSE) x[lower.tri(x, diag = diag)]
str_detect <- function(s, p) grepl(p, s)
str_replace_all <- function(s, p, r) gsub(p, r, s, fixed = TRUE)
fixed <- function(x) x
args <- commandArgs(TRUE); src <- args[1]; d <- args[2]; out <- args[3]
for (f in c("utils.R", "utils_sanitychecks.R", "userGWAS.R", "userGWAS_main.R"))
  source(file.path(src, f))
S <- as.matrix(read.csv(file.path(d, "S.csv"))); V <- as.matrix(read.csv(file.path(d, "V.csv")))
I <- as.matrix(read.csv(file.path(d, "I.csv")))
snps <- read.csv(file.path(d, "snps.csv"), colClasses = c(SNP = "character", CHR = "character",
                 A1 = "character", A2 = "character"))
cs <- list(V = V, S = S, I = I)
num17 <- function(x) { n <- vapply(x, is.numeric, TRUE)
  x[n] <- lapply(x[n], function(v) ifelse(is.na(v), NA, sprintf("%.17g", v))); x }
BASE <- "F1 =~ NA*T1 + T2 + T3\nF2 =~ NA*T4 + T5\nF1 ~~ 1*F1\nF2 ~~ 1*F2\nF1 ~~ F2\nF1 ~ b1*SNP\nF2 ~ b2*SNP\n"
cases <- data.frame(
  case = c("none_ml", "eq_lin_ml", "ineq_12_ml", "ineq_21_ml", "nonlin_ml"),
  extra = c("", "b1 == 2*b2", "b1 > b2", "b2 > b1", "b1 == b2^2"),
  stringsAsFactors = FALSE)
g <- NULL
for (i in seq_len(nrow(cases))) for (j in seq_len(nrow(snps))) {  # one SNP at a time: an R error stops one SNP
  M <- paste0(BASE, cases$extra[i])
  res <- tryCatch({capture.output(x <- suppressWarnings(userGWAS(covstruc = cs, SNPs = snps[j, , drop = FALSE],
                   model = M, estimation = "ML", fix_measurement = FALSE, parallel = FALSE,
                   sub = FALSE))); x}, error = function(e) conditionMessage(e))
  if (is.character(res)) {  # R's userGWAS stops: recorded as one row with its message
    g <- rbind(g, data.frame(case = cases$case[i], SNP = snps$SNP[j], lhs = NA, op = NA, rhs = NA, est = NA,
               se = NA, chisq = NA, df = NA, warning = paste("R error:", gsub("[,\n]", ";", res))))
    next
  }
  for (r in res) {
    g <- rbind(g, data.frame(case = cases$case[i], SNP = r$SNP, lhs = r$lhs, op = r$op, rhs = r$rhs,
               est = r$est, se = suppressWarnings(as.numeric(r$SE)), chisq = r$chisq,
               df = r$chisq_df, warning = gsub("[,\n]", ";", as.character(r$warning))))
  }
}
write.csv(num17(g), file.path(out, "usergwas.csv"), row.names = FALSE, quote = FALSE)
cases$model <- gsub("\n", "\\n", paste0(BASE, cases$extra), fixed = TRUE)
write.table(cases[, c("case", "model")], file.path(out, "cases.tsv"), sep = "\t",
            row.names = FALSE, col.names = FALSE, quote = FALSE)
