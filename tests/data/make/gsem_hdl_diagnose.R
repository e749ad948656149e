# Where polgen and R part ways in hdl(): R's optim inputs and every objective evaluation, for the
# abc_piecewise case of tests/data/gsem/r/hdl (R's hdl() as in gsem_hdl.R, 528 optim calls).
# Usage: Rscript gsem_hdl_diagnose.R <GenomicSEM R/ directory> <tests/data/gsem/r/hdl> <work dir> <output dir>
# <work dir>/calls.txt: per optim call its cell, piece, kind (0 h2, 1 gcov), start, parameters, lam, bstar(s)
#   and R's result (par, value, counts, convergence); <work dir>/evals.tsv: call, k, par, value of every
#   objective evaluation R made (the numerical gradient's included), 17 digits.  <output dir> gets the same
#   two files restricted to calls 89 and 184 (diag_calls.txt, diag_evals.tsv) for tests/gsem/test_hdl.py.
# tests/data/make/gsem_hdl_diagnose.py then compares polgen's kernels and optimiser with them.
suppressMessages({library(readr); library(dplyr); library(stringr); library(gdata)})
args <- commandArgs(TRUE); src <- args[1]; fix <- args[2]; work <- args[3]; out <- args[4]
dir.create(work, showWarnings = FALSE, recursive = TRUE)
eval(parse(text = readLines(file.path(src, "hdl.R"))), envir = globalenv())
REC <- list()
optim <- function(par, fn, ..., method, lower, upper) {  # records hdl()'s calls, then is stats::optim
  pf <- parent.frame()
  REC[[length(REC) + 1]] <<- list(s = get("s", pf), piece = get("counter", pf) + 1, par = par, fn = fn,
                                  args = list(...), lower = lower, upper = upper)
  stats::optim(par, fn, ..., method = method, lower = lower, upper = upper)
}
res <- suppressWarnings(hdl(file.path(fix, paste0(c("A", "B", "C"), ".sumstats.gz")), sample.prev = c(0.4, NA, NA),
  population.prev = c(0.05, NA, NA), trait.names = c("A", "B", "C"), LD.path = file.path(fix, "panel_r"),
  Nref = 335265, method = "piecewise"))
rm(optim)
f <- function(x) paste(sprintf("%.17g", x), collapse = " ")
lines <- character(0); evals <- NULL; pick <- c(89, 184)
for (i in seq_along(REC)) {
  r <- REC[[i]]; a <- r$args; LOG <- NULL
  fn <- function(par, ...) { v <- r$fn(par, ...); LOG <<- rbind(LOG, c(par, v)); v }
  o <- do.call(stats::optim, c(list(par = r$par, fn = fn), a, list(method = "L-BFGS-B", lower = r$lower,
                                                                     upper = r$upper)))
  kind <- if (is.null(a$h11)) 0 else 1
  p <- if (kind == 0) c(a$N, a$M, a$Nref, a$lim) else c(a$h11, a$h22, a$M, a$N1, a$N2, a$N0, a$Nref, a$lim)
  lines <- c(lines, paste("call", i, r$s, r$piece, kind), paste("par", f(r$par)), paste("p", f(p)),
             paste("lam", f(if (kind == 0) a$lam else a$lam1)),
             paste("b1", f(if (kind == 0) a$bstar else a$bstar1)),
             paste("b2", f(if (kind == 0) a$bstar else a$bstar2)),
             paste("res", f(c(o$par, o$value, o$counts, o$convergence))))
  evals <- rbind(evals, cbind(i, seq_len(nrow(LOG)), LOG))
}
writeLines(lines, file.path(work, "calls.txt"))
.w <- function(m, path) write.table(format(m, digits = 17), path, quote = FALSE, row.names = FALSE,
                                    col.names = FALSE, sep = "\t")
.w(evals, file.path(work, "evals.tsv"))
starts <- grep("^call ", lines)
keep <- unlist(lapply(pick, function(i) starts[i] + 0:6))
writeLines(lines[keep], file.path(out, "diag_calls.txt"))
.w(evals[evals[, 1] %in% pick, ], file.path(out, "diag_evals.tsv"))
