# R GenomicSEM usermodel on covstrucs with a Heywood solution (issue 12).  Usage:
#   Rscript gsem_heywood.R <GenomicSEM R/ directory> <data directory> SEED...
# reads s<SEED>_S.csv, s<SEED>_V.csv (written by tests/data/make/gsem_issue12.py) and writes
# usermodel.csv (results under DWLS and ML) and warnings.csv (R's warnings per fit) there.
# GenomicSEM's R sources are sourced from the directory given (not part of polgen); the stringr /
# gdata helpers they call are replaced by base-R stand-ins below.
suppressMessages({library(lavaan); library(Matrix)})
lowerTriangle <- function(x, diag = FALSE) x[lower.tri(x, diag = diag)]
str_detect <- function(s, p) grepl(p, s)
args <- commandArgs(TRUE); src <- args[1]; d <- args[2]; seeds <- args[-(1:2)]
for (f in c("utils.R", "usermodel.R")) source(file.path(src, f))
num17 <- function(x) { n <- vapply(x, is.numeric, TRUE)
  x[n] <- lapply(x[n], function(v) ifelse(is.na(v), NA, sprintf("%.17g", v))); x }
M <- "F1 =~ T1 + T2 + T3\nF2 =~ T4 + T5\nF1 ~~ F2"
res <- NULL; warn <- NULL
for (sd in seeds) {
  S <- as.matrix(read.csv(file.path(d, paste0("s", sd, "_S.csv"))))
  V <- as.matrix(read.csv(file.path(d, paste0("s", sd, "_V.csv"))))
  cs <- list(V = V, S = S, I = diag(ncol(S)))
  for (est in c("DWLS", "ML")) {
    w <- character(0)
    capture.output(r <- withCallingHandlers(usermodel(cs, estimation = est, model = M, std.lv = TRUE),
      warning = function(cond) { w <<- c(w, conditionMessage(cond)); invokeRestart("muffleWarning") }))
    x <- r$results; f <- r$modelfit
    res <- rbind(res, data.frame(seed = sd, estimation = est, lhs = x$lhs, op = x$op, rhs = x$rhs,
                 est = x$Unstand_Est, se = suppressWarnings(as.numeric(x$Unstand_SE)),
                 std = x$STD_Genotype, std_se = suppressWarnings(as.numeric(x$STD_Genotype_SE)),
                 chisq = f$chisq, df = f$df, CFI = f$CFI, SRMR = f$SRMR))
    warn <- rbind(warn, data.frame(seed = sd, estimation = est,
                  warning = if (length(w)) gsub("[\n,]", " ", w) else ""))
  }
}
write.csv(num17(res), file.path(d, "usermodel.csv"), row.names = FALSE, quote = FALSE)
write.csv(warn, file.path(d, "warnings.csv"), row.names = FALSE, quote = TRUE)
