# General constraints of the model language (issue 12): R GenomicSEM usermodel (and userGWAS with
# fix_measurement) on models with a == 2*b, a > b / b > a, a == b^2, := terms inside constraints,
# a == b + c and two inequalities.  Usage:
#   Rscript gsem_constraints.R <GenomicSEM R/ directory> <ml_sign data directory> <output directory>
# Reads S.csv V.csv I.csv snps.csv of tests/data/gsem/r/ml_sign (written by gsem_ml_sign.R) and writes
# cases.tsv (case, estimation, model), usermodel.csv and usergwas.csv to the output directory.
# GenomicSEM's R sources are sourced from the directory given (not part of polgen); the stringr /
# gdata helpers they call are replaced by base-R stand-ins below.
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
snps <- read.csv(file.path(d, "snps.csv"), colClasses = c(SNP = "character", CHR = "character",
                 A1 = "character", A2 = "character"))[1:4, ]
cs <- list(V = V, S = S, I = I)
num17 <- function(x) { n <- vapply(x, is.numeric, TRUE)
  x[n] <- lapply(x[n], function(v) ifelse(is.na(v), NA, sprintf("%.17g", v))); x }
BASE <- "F1 =~ NA*T1 + a*T2 + b*T3\nF2 =~ NA*T4 + c*T5\nF1 ~~ 1*F1\nF2 ~~ 1*F2\nF1 ~~ F2\n"
cases <- data.frame(
  case = c("eq_lin", "ineq_active", "ineq_inactive", "nonlin", "def_con", "sum", "two_ineq",
           "eq_lin_ml", "nonlin_ml"),
  estimation = c(rep("DWLS", 7), "ML", "ML"),
  extra = c("a == 2*b", "b > a", "a > b", "a == b^2", "d := a - b\nd == 0.1", "a == b + c",
            "b > a\na < c", "a == 2*b", "a == b^2"), stringsAsFactors = FALSE)
um <- NULL
for (i in seq_len(nrow(cases))) {
  M <- paste0(BASE, cases$extra[i])
  capture.output(r <- suppressWarnings(usermodel(cs, estimation = cases$estimation[i], model = M)))
  x <- r$results
  um <- rbind(um, data.frame(case = cases$case[i], lhs = x$lhs, op = x$op, rhs = x$rhs,
              est = x$Unstand_Est, se = suppressWarnings(as.numeric(x$Unstand_SE)),
              std = x$STD_Genotype, chisq = r$modelfit$chisq, df = r$modelfit$df))
}
write.csv(num17(um), file.path(out, "usermodel.csv"), row.names = FALSE, quote = FALSE)
cases$model <- gsub("\n", "\\n", paste0(BASE, cases$extra), fixed = TRUE)
write.table(cases[, c("case", "estimation", "model")], file.path(out, "cases.tsv"), sep = "\t",
            row.names = FALSE, col.names = FALSE, quote = FALSE)
g <- NULL
for (cfg in list(c("gw_eq_lin", "a == 2*b"), c("gw_ineq_active", "b > a"))) {
  M <- paste0(BASE, "F1 ~ SNP\nF2 ~ SNP\n", cfg[2])
  capture.output(res <- userGWAS(covstruc = cs, SNPs = snps, model = M, estimation = "DWLS",
                                 fix_measurement = TRUE, parallel = FALSE))
  res <- do.call(rbind, res)
  g <- rbind(g, data.frame(case = cfg[1], SNP = res$SNP, lhs = res$lhs, op = res$op, rhs = res$rhs,
             est = res$est, se = suppressWarnings(as.numeric(res$SE)), chisq = res$chisq,
             df = res$chisq_df))
}
write.csv(num17(g), file.path(out, "usergwas.csv"), row.names = FALSE, quote = FALSE)
