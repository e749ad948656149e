# Factor signs under ML (issue 12): R GenomicSEM usermodel and userGWAS on a two-factor model whose
# factor variances are fixed and whose loadings are all free (NA*), so only lavaan's starting values
# fix each factor's sign.  Usage:
#   Rscript gsem_ml_sign.R <GenomicSEM R/ directory> <usergwas data directory> <output directory>
# Inputs: S.csv V.csv I.csv snps.csv of tests/data/gsem/r/usergwas (written by gsem_r.py); S gets a
# small seeded symmetric perturbation (so the model does not fit exactly) and the first 6 SNPs are
# kept.  Writes S.csv V.csv I.csv snps.csv (the inputs used) and usermodel.csv, usergwas.csv to the
# output directory.  GenomicSEM's R sources are sourced from the directory given (not part of
# polgen); the few stringr/gdata helpers they call are replaced by base-R stand-ins below.
suppressMessages({library(lavaan); library(Matrix)})
lowerTriangle <- function(x, diag = FALSE) x[lower.tri(x, diag = diag)]
str_detect <- function(s, p) grepl(p, s)
str_replace_all <- function(s, p, r) gsub(p, r, s, fixed = TRUE)
fixed <- function(x) x
args <- commandArgs(TRUE); src <- args[1]; d <- args[2]; out <- args[3]
for (f in c("utils.R", "utils_sanitychecks.R", "userGWAS.R", "userGWAS_main.R", "usermodel.R"))
  source(file.path(src, f))
S <- as.matrix(read.csv(file.path(d, "S.csv"))); V <- as.matrix(read.csv(file.path(d, "V.csv")))
I <- as.matrix(read.csv(file.path(d, "I.csv")))
set.seed(12); k <- ncol(S)
E <- matrix(rnorm(k * k, sd = 0.01), k, k); E <- (E + t(E)) / 2; S <- S + E
stopifnot(min(eigen(S)$values) > 0)
snps <- read.csv(file.path(d, "snps.csv"), colClasses = c(SNP = "character", CHR = "character",
                 A1 = "character", A2 = "character"))[1:6, ]
num17 <- function(x) { n <- vapply(x, is.numeric, TRUE)
  x[n] <- lapply(x[n], function(v) ifelse(is.na(v), NA, sprintf("%.17g", v))); x }
write.csv(num17(as.data.frame(S)), file.path(out, "S.csv"), row.names = FALSE, quote = FALSE)
write.csv(num17(as.data.frame(V)), file.path(out, "V.csv"), row.names = FALSE, quote = FALSE)
write.csv(num17(as.data.frame(I)), file.path(out, "I.csv"), row.names = FALSE, quote = FALSE)
write.csv(num17(snps), file.path(out, "snps.csv"), row.names = FALSE, quote = FALSE)
cs <- list(V = V, S = S, I = I)
M <- "F1 =~ NA*T1 + T2 + T3\nF2 =~ NA*T4 + T5\nF1 ~~ 1*F1\nF2 ~~ 1*F2\nF1 ~~ F2"
um <- NULL
for (est in c("ML", "DWLS")) {
  capture.output(r <- usermodel(cs, estimation = est, model = M, CFIcalc = TRUE))
  x <- r$results
  um <- rbind(um, data.frame(estimation = est, lhs = x$lhs, op = x$op, rhs = x$rhs,
              est = x$Unstand_Est, se = suppressWarnings(as.numeric(x$Unstand_SE)),
              std = x$STD_Genotype, chisq = r$modelfit$chisq, df = r$modelfit$df))
}
write.csv(num17(um), file.path(out, "usermodel.csv"), row.names = FALSE, quote = FALSE)
MG <- paste0(M, "\nF1 ~ SNP\nF2 ~ SNP")
g <- NULL
for (cfg in list(c("ML", "TRUE"), c("ML", "FALSE"), c("DWLS", "FALSE"))) {
  capture.output(res <- userGWAS(covstruc = cs, SNPs = snps, model = MG, estimation = cfg[1],
                                 fix_measurement = as.logical(cfg[2]), parallel = FALSE))
  res <- do.call(rbind, res)
  g <- rbind(g, data.frame(estimation = cfg[1], fix_measurement = cfg[2], SNP = res$SNP,
             lhs = res$lhs, op = res$op, rhs = res$rhs, est = res$est,
             se = suppressWarnings(as.numeric(res$SE)), chisq = res$chisq, df = res$chisq_df))
}
write.csv(num17(g), file.path(out, "usergwas.csv"), row.names = FALSE, quote = FALSE)
